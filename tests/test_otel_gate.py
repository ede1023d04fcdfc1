"""vr.otel's native sampling gate (_core.TraceGate, otel/_gate.py): under a
parent-based sampler, a call the sampler drops runs the native method with
no Python frame of ours; every other call is traced as before. Sync and
async, a parent sampled, not sampled, remote or local, invalid or absent,
the gate's caches of the last Context and span, and its bad input."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import context as otel_context  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased  # noqa: E402
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags  # noqa: E402

import virtrigaud_resilience as vr  # noqa: E402
from virtrigaud_resilience import _core, otel  # noqa: E402
from virtrigaud_resilience.otel import _context, _gate, _tracing  # noqa: E402
from virtrigaud_resilience.policy import Policy  # noqa: E402

from python_calls import python_calls  # noqa: E402

TRACED = ["virtrigaud.attempt", "virtrigaud.policy p"]
#: Policy's native methods, uninstrumented.
NATIVE = {name: Policy.__dict__[name] for name in ("execute", "execute_async")}


class Provider:
    """An SDK tracer provider (``sampler``) exporting to memory."""

    def __init__(self, sampler: Any) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(sampler=sampler)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def names(self) -> list[str]:
        names = [span.name for span in self.exporter.get_finished_spans()]
        self.exporter.clear()
        return names


@pytest.fixture
def gated(request: pytest.FixtureRequest) -> Iterator[Provider]:
    """Instrumented with ``ParentBased(<param>)`` (ALWAYS_ON by default)."""
    provider = Provider(ParentBased(getattr(request, "param", ALWAYS_ON)))
    otel.instrument(tracer_provider=provider.provider)
    try:
        yield provider
    finally:
        otel.uninstrument()
        provider.provider.shutdown()


def parent(sampled: bool, remote: bool = True) -> NonRecordingSpan:
    return NonRecordingSpan(SpanContext(0x1234, 0x5678, is_remote=remote,
                                        trace_flags=TraceFlags(int(sampled))))


def under(span: trace.Span, call: Any) -> Any:
    """``call()`` with ``span`` the current span."""
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        return call()
    finally:
        otel_context.detach(token)


def ok() -> str:
    return "ok"


async def ok_async() -> str:
    return "ok"


def test_the_gates_are_the_policys_methods_while_a_sampler_may_drop(gated: Provider) -> None:
    for name in ("execute", "execute_async"):
        gate = Policy.__dict__[name]
        assert type(gate) is _core.TraceGate
        assert gate.native is _gate.NATIVE[name]
        assert _tracing.active is not None and gate.traced is _tracing.active.methods[name]
    assert type(Policy.__dict__["execute"].traced) is _core.TracedExecute  # sync: native
    otel.uninstrument()
    assert {name: Policy.__dict__[name] for name in NATIVE} == NATIVE


def test_a_sampler_that_never_drops_ahead_routes_the_traced_methods_ungated() -> None:
    provider = Provider(ALWAYS_ON)  # no parent-based rule: nothing for a gate to decide
    otel.instrument(tracer_provider=provider.provider)
    try:
        assert _tracing.active is not None
        assert Policy.__dict__["execute"] is _tracing.active.methods["execute"]
        assert type(Policy.__dict__["execute"]) is _core.TracedExecute
        assert Policy.__dict__["execute_async"] is _tracing.TRACED["execute_async"]
    finally:
        otel.uninstrument()


# ------------------------------------------------- a dropped call is native --

def test_a_call_under_an_unsampled_parent_runs_no_python_frame_of_ours(
        gated: Provider) -> None:
    policy = vr.PolicyBuilder("p").build()
    unsampled = parent(sampled=False)
    # The first call reads the parent's span context (a Python method of
    # the API's span); later calls under it read nothing.
    assert under(unsampled, lambda: python_calls(partial(policy.execute, ok))) == (
        "ok", ["get_span_context", "ok"])
    assert under(unsampled, lambda: python_calls(partial(policy.execute, ok))) == ("ok", ["ok"])
    assert gated.names() == []


def test_an_async_call_under_an_unsampled_parent_is_the_native_awaitable(
        gated: Provider) -> None:
    policy = vr.PolicyBuilder("p").build()
    unsampled = parent(sampled=False)

    async def main() -> list[str]:
        under(unsampled, partial(policy.execute_async, ok_async)).close()  # reads the parent
        call, frames = under(unsampled, lambda: python_calls(
            partial(policy.execute_async, ok_async)))
        assert frames == [] and type(call) is not types.CoroutineType  # native, no frame
        return [await call]

    assert asyncio.run(main()) == ["ok"]
    assert gated.names() == []


def test_a_subclass_and_a_bound_method_are_gated_alike(gated: Provider) -> None:
    class Mine(Policy):
        __slots__ = ()

    mine = Mine("p")
    execute = mine.execute  # bound through the gate's __get__
    unsampled = parent(sampled=False)
    under(unsampled, partial(execute, ok))
    assert under(unsampled, lambda: python_calls(partial(execute, ok))) == ("ok", ["ok"])
    assert under(unsampled, lambda: Policy.execute(mine, ok)) == "ok"
    assert gated.names() == []
    assert execute(ok) == "ok" and gated.names() == TRACED  # a root: ALWAYS_ON


# ----------------------------------------------------------- the decision --

@pytest.mark.parametrize("remote", [True, False], ids=["remote", "local"])
@pytest.mark.parametrize("run", ["sync", "async"])
def test_sampled_traced_unsampled_dropped_root_by_the_root_sampler(
        gated: Provider, remote: bool, run: str) -> None:
    policy = vr.PolicyBuilder("p").build()

    def call() -> Any:
        if run == "sync":
            return policy.execute(ok)
        return asyncio.run(policy.execute_async(ok_async))

    assert under(parent(sampled=True, remote=remote), call) == "ok"
    assert gated.names() == TRACED
    sampled_parent = parent(sampled=True, remote=remote)
    assert under(parent(sampled=False, remote=remote), call) == "ok"
    assert gated.names() == []
    assert call() == "ok"  # no parent: ParentBased(ALWAYS_ON)'s root samples
    assert gated.names() == TRACED
    assert under(trace.INVALID_SPAN, call) == "ok"  # an invalid parent: as a root
    assert gated.names() == TRACED
    assert under(sampled_parent, call) == "ok"
    spans = gated.exporter.get_finished_spans()
    assert [span.name for span in spans] == TRACED
    assert spans[1].parent is not None and spans[1].parent.span_id == 0x5678


@pytest.mark.parametrize("gated", [ALWAYS_OFF], indirect=True)
@pytest.mark.parametrize("run", ["sync", "async"])
def test_under_parent_based_always_off_a_root_is_dropped_a_sampled_parent_traced(
        gated: Provider, run: str) -> None:
    policy = vr.PolicyBuilder("p").build()

    def call() -> Any:
        if run == "sync":
            return policy.execute(ok)
        return asyncio.run(policy.execute_async(ok_async))

    assert call() == "ok" and gated.names() == []
    assert under(trace.INVALID_SPAN, call) == "ok" and gated.names() == []
    assert under(parent(sampled=True), call) == "ok" and gated.names() == TRACED
    if run == "sync":  # a root runs no Python frame of ours
        assert python_calls(partial(policy.execute, ok)) == ("ok", ["ok"])


def test_the_caches_follow_the_parent_from_call_to_call(gated: Provider) -> None:
    """The gate remembers the last Context and span it read: each new one is
    read again, and one seen before is decided as it was."""
    policy = vr.PolicyBuilder("p").build()
    unsampled, sampled = parent(sampled=False), parent(sampled=True)
    expected: list[str] = []
    for span in (unsampled, sampled, unsampled, unsampled, sampled, sampled, unsampled):
        assert under(span, partial(policy.execute, ok)) == "ok"
        expected += TRACED if span is sampled else []
    assert gated.names() == expected
    # The same span under a new Context (another key set beside it): the
    # span's decision, its context not read again.
    context = trace.set_span_in_context(unsampled, otel_context.set_value("other", 1))
    token = otel_context.attach(context)
    try:
        assert python_calls(partial(policy.execute, ok)) == ("ok", ["ok"])
    finally:
        otel_context.detach(token)
    assert gated.names() == []


def test_a_call_made_while_the_cache_releases_a_span_is_decided_by_its_own_parent(
        gated: Provider) -> None:
    """A span the gate released when it cached a newer one may run code
    (here a call of the policy, in its finaliser): that call finds each
    cached object with its own decision, not the released one's."""
    policy = vr.PolicyBuilder("p").build()
    finalised: list[str] = []

    class Finalised(NonRecordingSpan):
        def __del__(self) -> None:
            finalised.append(policy.execute(ok))

    released = Finalised(parent(sampled=False).get_span_context())
    assert under(released, partial(policy.execute, ok)) == "ok"  # cached, and dropped
    assert gated.names() == []
    del released  # the gate's cache holds it now, and nothing else
    assert under(parent(sampled=True), partial(policy.execute, ok)) == "ok"
    assert finalised == ["ok"]  # ran while the gate replaced its cache
    assert gated.names() == TRACED * 2  # under the sampled parent: traced, as the call itself


def test_a_span_whose_context_cannot_be_read_never_breaks_a_call(gated: Provider) -> None:
    class Broken(NonRecordingSpan):
        def get_span_context(self) -> SpanContext:
            raise RuntimeError("unreadable")

    policy = vr.PolicyBuilder("p").build()
    # Left to the traced path, whose tracer fails on it too: the call runs untraced.
    assert under(Broken(trace.INVALID_SPAN_CONTEXT), partial(policy.execute, ok)) == "ok"
    assert policy.execute(ok) == "ok" and gated.names() == TRACED  # nothing left behind


def test_without_the_apis_context_var_the_python_decision_stands(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_context, "VAR", None)
    provider = Provider(ParentBased(ALWAYS_ON))
    otel.instrument(tracer_provider=provider.provider)
    try:
        # The rule applied in Python: the Python execute, which applies it.
        assert Policy.__dict__["execute"] is _tracing.TRACED["execute"]
        policy = vr.PolicyBuilder("p").build()
        assert under(parent(sampled=False), partial(policy.execute, ok)) == "ok"
        assert provider.names() == []
        assert under(parent(sampled=True), partial(policy.execute, ok)) == "ok"
        assert provider.names() == TRACED
    finally:
        otel.uninstrument()


# -------------------------------------------------------------- bad input --

def test_a_dropped_call_on_something_else_than_a_policy_is_a_type_error(
        gated: Provider) -> None:
    with pytest.raises(TypeError, match="Policy"):
        Policy.execute(object(), ok)  # a root: ALWAYS_ON traces it, the traced path raises
    unsampled = parent(sampled=False)
    with pytest.raises(TypeError, match="Policy"):
        under(unsampled, partial(Policy.execute, object(), ok))
    with pytest.raises(TypeError):
        under(unsampled, Policy.execute)  # no self at all
    with pytest.raises(TypeError, match="'fn'"):
        under(unsampled, partial(Policy.execute, vr.PolicyBuilder("p").build()))


@pytest.mark.parametrize("field, args, message", [
    ("native", (1, ok, _context.VAR, "k", False, ((False, False), (False, False))),
     "native and traced must be callable"),
    ("traced", (ok, None, _context.VAR, "k", False, ((False, False), (False, False))),
     "native and traced must be callable"),
    ("var", (ok, ok, {}, "k", False, ((False, False), (False, False))),
     "var must be a contextvars.ContextVar"),
    ("span_key", (ok, ok, _context.VAR, 3, False, ((False, False), (False, False))),
     "must be str"),
    ("off", (ok, ok, _context.VAR, "k", False, (False, False)), "must be"),
])
def test_a_gate_refuses_bad_input_naming_it(field: str, args: tuple[Any, ...],
                                            message: str) -> None:
    with pytest.raises(TypeError, match=message):
        _core.TraceGate(*args)


# ------------------------------------------- the traced path's context copy --

def test_with_value_copies_the_context_and_maps_the_key() -> None:
    span = parent(sampled=True)
    outer = otel_context.set_value("other", 1)
    inner = _context.with_value(outer, _context.SPAN_KEY, span)
    assert type(inner) is otel_context.Context and inner is not outer
    assert inner == trace.set_span_in_context(span, outer)  # what the API would build
    assert dict(outer) == {"other": 1}  # the original untouched
    assert trace.get_current_span(inner) is span


@pytest.mark.parametrize("args, message", [
    ((), "takes context, key and value"),
    (([], "k", 1), "context must be a dict"),
])
def test_with_value_refuses_bad_input(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        _core._context_with(*args)
