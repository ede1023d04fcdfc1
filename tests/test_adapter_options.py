"""AdapterOptions: one frozen settings object that every provider adapter takes.

Each constructor takes ``options=``; a keyword overrides its field; an unknown
keyword and a bad value are named; the object is frozen.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings
from collections.abc import Callable
from typing import Any

import pytest

grpc = pytest.importorskip("grpc")
httpx = pytest.importorskip("httpx")

import virtrigaud_resilience as vr  # noqa: E402
from virtrigaud_resilience.providers import (  # noqa: E402
    SHARED,
    AdapterOptions,
    FaultInjectingProvider,
    ResilientProvider,
    shared_breaker,
)
from virtrigaud_resilience.providers import grpc as vrg  # noqa: E402
from virtrigaud_resilience.providers import http as vrh  # noqa: E402
from virtrigaud_resilience.providers.call_step import CallStep  # noqa: E402

_labels = itertools.count()


def _sync_guard(options: AdapterOptions | None = None, **keywords: Any) -> Any:
    channel = grpc.insecure_channel("127.0.0.1:1")
    try:
        guarded = vrg.intercept_channel(channel, "opts", f"p{next(_labels)}",
                                        options=options, **keywords)
        return guarded.step
    finally:
        channel.close()


#: adapter -> (the name its messages use, make(options, **keywords) -> its guard)
GUARDS: dict[str, tuple[str, Callable[..., Any]]] = {
    "CallStep": ("CallStep", lambda options=None, **kw: CallStep(
        "opts", f"p{next(_labels)}", options=options, **kw)),
    "aio_interceptors": ("RpcCallStep", lambda options=None, **kw: vrg.aio_interceptors(
        "opts", f"p{next(_labels)}", options=options, **kw)[0].step),
    "intercept_channel": ("RpcCallStep", _sync_guard),
    "ResilientTransport": ("ResilientTransport", lambda options=None, **kw: vrh.ResilientTransport(
        "opts", f"p{next(_labels)}", options=options, **kw).step),
    "AsyncResilientTransport": ("AsyncResilientTransport",
                                lambda options=None, **kw: vrh.AsyncResilientTransport(
                                    "opts", f"p{next(_labels)}", options=options, **kw).step),
    "ResilientClient": ("ResilientTransport", lambda options=None, **kw: vrh.ResilientClient(
        "opts", f"p{next(_labels)}", options=options, **kw).resilient_transport.step),
    "AsyncResilientClient": ("AsyncResilientTransport",
                             lambda options=None, **kw: vrh.AsyncResilientClient(
                                 "opts", f"p{next(_labels)}", options=options,
                                 **kw).resilient_transport.step),
}


def _provider(options: AdapterOptions | None = None, **keywords: Any) -> ResilientProvider:
    return ResilientProvider(FaultInjectingProvider(), "opts", f"p{next(_labels)}",
                             options=options, **keywords)


# -- the object itself ----------------------------------------------------------------------


def test_defaults_are_documented_values() -> None:
    options = AdapterOptions()
    assert (options.config, options.breaker, options.limiter, options.wait, dict(options.timeouts),
            options.idempotent, options.clock, options.metrics) == (
        None, SHARED, SHARED, False, {}, None, None, True)
    assert options.resolved_config == vr.Config.production()


def test_frozen_and_normalised() -> None:
    options = AdapterOptions(timeouts={"/pkg.Service/Describe": 5, "Create": None},
                             idempotent=["Power", "/pkg.Service/Create"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.wait = True  # type: ignore[misc]
    assert dict(options.timeouts) == {"Describe": 5.0, "Create": None}  # stored by short name
    with pytest.raises(TypeError):
        options.timeouts["Describe"] = 1  # type: ignore[index]  # read-only
    assert options.idempotent == frozenset({"Power", "/pkg.Service/Create"})
    mapped = AdapterOptions(idempotent={"Describe": False})
    with pytest.raises(TypeError):
        mapped.idempotent["Describe"] = True  # type: ignore[index]
    assert AdapterOptions(wait=True) == AdapterOptions(wait=True) != AdapterOptions()
    assert hash(options) == hash(AdapterOptions(timeouts={"Describe": 5, "Create": None},
                                                idempotent={"/pkg.Service/Create", "Power"}))
    assert len({mapped, AdapterOptions(idempotent={"Describe": False}), AdapterOptions()}) == 2


@pytest.mark.parametrize(("fields", "error", "message"), [
    ({"wait": "yes"}, TypeError, "AdapterOptions wait must be a bool, got str 'yes'"),
    ({"metrics": 1}, TypeError, "AdapterOptions metrics must be a bool, got int 1"),
    ({"config": {}}, TypeError, "AdapterOptions config must be a Config or None, got dict {}"),
    ({"breaker": "mine"}, TypeError, "AdapterOptions breaker must be a CircuitBreaker or None"),
    ({"limiter": object()}, TypeError, "AdapterOptions limiter must be a TokenBucket or None"),
    ({"clock": 3}, TypeError, "AdapterOptions clock must be a ManualClock or None, got int 3"),
    ({"timeouts": [("Describe", 5)]}, TypeError, "AdapterOptions timeouts must be a mapping"),
    ({"timeouts": {"Describe": -1}}, ValueError, r"AdapterOptions timeouts\['Describe'\]"),
    ({"timeouts": {"Describe": 0}}, ValueError, r"AdapterOptions timeouts\['Describe'\]"),
    ({"timeouts": {"Describe": math.inf}}, ValueError, r"timeouts\['Describe'\].*inf"),
    ({"timeouts": {5: 1.0}}, TypeError, "AdapterOptions timeouts key must be a str, got int 5"),
    ({"idempotent": 42}, TypeError, "AdapterOptions idempotent must be a collection of method "
                                    "names, a mapping of name to bool, a predicate"),
    ({"idempotent": "Create"}, TypeError, "AdapterOptions idempotent must be .* got str"),
    ({"idempotent": {"Create": "no"}}, TypeError,
     r"AdapterOptions idempotent\['Create'\] must be a bool, got str 'no'"),
    ({"idempotent": [7]}, TypeError, "AdapterOptions idempotent item must be a str, got int 7"),
])
def test_bad_values_name_the_field_and_the_value(fields: dict[str, Any], error: type[Exception],
                                                 message: str) -> None:
    with pytest.raises(error, match=message):
        AdapterOptions(**fields)


def test_idempotent_marks() -> None:
    def mark(idempotent: Any, full: str = "/pkg.Svc/Create", short: str = "Create") -> Any:
        return AdapterOptions(idempotent=idempotent).idempotent_mark(full, short)

    assert [mark(None), mark(True), mark(False)] == [None, True, False]
    assert [mark({"Create"}), mark({"/pkg.Svc/Create"}), mark({"Delete"})] == [True, True, None]
    assert [mark({"Create": False}), mark({"/pkg.Svc/Create": True}), mark({"X": True})] == [
        False, True, None]
    assert mark({"/pkg.Svc/Create": False, "Create": True}) is False  # the full name first
    assert [mark(lambda name: name.endswith("/Create")), mark(lambda name: False)] == [True, None]
    with pytest.raises(TypeError, match=r"idempotent\('/pkg.Svc/Create'\) must return a bool"):
        mark(lambda name: "yes")


# -- every adapter takes it ------------------------------------------------------------------


@pytest.mark.parametrize("adapter", list(GUARDS))
def test_every_adapter_takes_options(adapter: str) -> None:
    _, make = GUARDS[adapter]
    breaker = vr.CircuitBreaker("mine", "opts", "p")
    config = vr.Config.development()
    options = AdapterOptions(config=config, breaker=breaker, limiter=None, wait=True,
                             timeouts={"Describe": 7}, metrics=False)
    guard = make(options)
    assert guard.options == options
    assert (guard.config, guard.breaker, guard.limiter, guard.wait, guard.metrics) == (
        config, breaker, None, True, False)
    assert guard.method(("Describe", "GET") if "Resilient" in adapter else "Describe").timeout == 7
    shared = make(AdapterOptions(config=config, limiter=None))
    assert shared.breaker is shared_breaker(config, "opts", shared.provider)


@pytest.mark.parametrize("adapter", list(GUARDS))
def test_keywords_override_options(adapter: str) -> None:
    _, make = GUARDS[adapter]
    options = AdapterOptions(breaker=None, limiter=None, wait=False, metrics=True,
                             timeouts={"Describe": 7})
    guard = make(options, wait=True, metrics=False, timeouts={"Describe": 3})
    assert (guard.wait, guard.metrics, guard.breaker, guard.limiter) == (True, False, None, None)
    assert dict(guard.options.timeouts) == {"Describe": 3.0}
    assert options.wait is False and dict(options.timeouts) == {"Describe": 7.0}  # untouched
    assert make(breaker=None, limiter=None).options == AdapterOptions(breaker=None, limiter=None)


@pytest.mark.parametrize("adapter", list(GUARDS))
def test_adapters_name_themselves_in_bad_keywords(adapter: str) -> None:
    owner, make = GUARDS[adapter]
    with pytest.raises(TypeError, match=rf"{owner} wait must be a bool, got str 'yes'"):
        make(breaker=None, limiter=None, wait="yes")
    with pytest.raises(ValueError, match=rf"{owner} timeouts\['Create'\] must be > 0"):
        make(breaker=None, limiter=None, timeouts={"Create": -1})
    with pytest.raises(TypeError, match=rf"{owner} options must be an AdapterOptions or None, "
                                        r"got dict \{\}"):
        make({})


@pytest.mark.parametrize("adapter", [name for name in GUARDS if "Client" not in name])
def test_an_unknown_keyword_is_named(adapter: str) -> None:
    owner, make = GUARDS[adapter]
    with pytest.raises(TypeError, match=rf"{owner} got an unexpected keyword argument "
                                        r"'retries' \(the AdapterOptions fields: config, "):
        make(retries=3)


def test_the_clients_pass_unknown_keywords_to_httpx() -> None:
    with pytest.raises(TypeError, match="retries"):  # httpx.Client's own TypeError
        vrh.ResilientClient("opts", "p", breaker=None, limiter=None, retries=3)


# -- ResilientProvider ------------------------------------------------------------------------


def test_resilient_provider_takes_options() -> None:
    clock = vr.ManualClock()
    config = vr.Config.development()
    options = AdapterOptions(config=config, clock=clock, wait=True, metrics=False,
                             timeouts={"Describe": 2.5}, idempotent={"create": False})
    rp = _provider(options)
    assert rp.config is config and rp.options == options
    assert rp.breaker is shared_breaker(config, "opts", rp.name, clock)
    assert rp.policy("describe").attempt_timeout == 2.5
    assert rp.policy("create").attempt_timeout == config.rpc.timeout_for("Create")
    assert not rp.is_idempotent("create") and rp.is_idempotent("describe")
    assert all(stats is None for stats in rp._rpc.values())  # metrics=False
    overridden = _provider(options, idempotent=None, timeouts={})
    assert overridden.is_idempotent("create")
    assert overridden.policy("describe").attempt_timeout == config.rpc.timeout_for("Describe")
    assert not _provider(idempotent=False).is_idempotent("describe")


def test_one_options_value_serves_the_composed_setup() -> None:
    """The same options for the provider and its channel: one shared breaker and bucket."""
    options = AdapterOptions(config=vr.Config.development(), clock=vr.ManualClock())
    rp = ResilientProvider(FaultInjectingProvider(), "opts", "composed", options=options)
    guard = vrg.aio_interceptors("opts", "composed", options=options)[0].step
    assert guard.breaker is rp.breaker and guard.limiter is rp.limiter


def test_resilient_provider_needs_a_breaker_and_a_bucket() -> None:
    with pytest.raises(ValueError, match="ResilientProvider breaker must be a breaker object or "
                                         "'shared'.*got None"):
        _provider(breaker=None)
    with pytest.raises(ValueError, match="ResilientProvider limiter must be .* got None"):
        _provider(AdapterOptions(limiter=None))


@pytest.mark.parametrize(("old", "new", "read"), [
    ("wait_for_token", "wait", lambda rp: rp.options.wait),
    ("rpc_metrics", "metrics", lambda rp: rp.options.metrics),
])
def test_resilient_provider_old_keywords_warn(old: str, new: str,
                                              read: Callable[[ResilientProvider], bool]) -> None:
    with pytest.warns(DeprecationWarning, match=rf"ResilientProvider\({old}=...\) is "
                                                rf"deprecated: use ResilientProvider\({new}=...\)"):
        rp = _provider(**{old: not getattr(AdapterOptions(), new)})
    assert read(rp) is not getattr(AdapterOptions(), new)
    with pytest.raises(TypeError, match=rf"ResilientProvider got both {new}= and its deprecated "
                                        rf"name {old}="):
        _provider(**{old: True, new: True})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _provider(**{new: True})  # the new name is quiet


# -- the httpx transports: idempotent= per operation ------------------------------------------


def test_http_idempotent_marks_operations() -> None:
    guard = vrh.ResilientTransport("opts", "marks", breaker=None, limiter=None,
                                   idempotent={"Create": True, "GET": False}).step
    create = httpx.Request("POST", "http://h/vms",
                           extensions={vrh.OPERATION_EXTENSION: "Create"})
    plain_post = httpx.Request("POST", "http://h/vms")
    get = httpx.Request("GET", "http://h/vms")
    forced = httpx.Request("GET", "http://h/vms", extensions={vrh.IDEMPOTENT_EXTENSION: True})
    assert [guard.idempotent(r) for r in (create, plain_post, get, forced)] == [
        True, False, False, True]  # the request's own extension still decides first
    default = vrh.ResilientTransport("opts", "marks", breaker=None, limiter=None).step
    assert [default.idempotent(r) for r in (create, plain_post, get)] == [False, False, True]


# -- the old "guard" names: one minor release, each warning with its new name ------------------


@pytest.mark.parametrize(("module", "old", "new"), [
    ("virtrigaud_resilience.providers.guard", "CallGuard",
     "virtrigaud_resilience.providers.call_step.CallStep"),
    ("virtrigaud_resilience.providers.guard", "Method",
     "virtrigaud_resilience.providers.call_step.Method"),
    ("virtrigaud_resilience.providers.guard", "SHARED",
     "virtrigaud_resilience.providers.options.SHARED"),
    ("virtrigaud_resilience.providers.grpc", "RpcGuard",
     "virtrigaud_resilience.providers.grpc.RpcCallStep"),
    ("virtrigaud_resilience.providers.http", "HttpGuard",
     "virtrigaud_resilience.providers.http.HttpCallStep"),
])
def test_old_names_warn_and_serve_the_new_ones(module: str, old: str, new: str) -> None:
    import importlib

    where, _, name = new.rpartition(".")
    with pytest.warns(DeprecationWarning, match=rf"{module}.{old} is deprecated: use {new}"):
        value = getattr(importlib.import_module(module), old)
    assert value is getattr(importlib.import_module(where), name)


def test_old_guard_attributes_warn_and_serve_the_step() -> None:
    transport = vrh.AsyncResilientTransport("opts", "renamed", breaker=None, limiter=None)
    interceptors = vrg.aio_interceptors("opts", "renamed", breaker=None, limiter=None)
    sync = vrg.SyncInterceptor(interceptors[0].step)
    for owner, holder in (("AsyncResilientTransport", transport),
                          ("AioUnaryUnaryInterceptor", interceptors[0]),
                          ("AioUnaryStreamInterceptor", interceptors[1]),
                          ("SyncInterceptor", sync)):
        with pytest.warns(DeprecationWarning, match=rf"{owner}.guard is deprecated: use "
                                                    rf"{owner}.step"):
            assert holder.guard is holder.step
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert isinstance(transport.step, vrh.HttpCallStep)  # the new names are quiet
        assert isinstance(interceptors[1].step, vrg.RpcCallStep)
