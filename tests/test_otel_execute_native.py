"""vr.otel's native sync execution (_core.TracedExecute,
cpp/src/bind_otel_execute.cpp): what the Python ``execute`` of
otel/_tracing.py did, done natively. The execution's span under the
caller's, each attempt's under it, the call's arguments as given (past the
native call's stack array too), nothing left current after; a tracer failing
on the execution's span never breaks the call and is logged once; a
BaseException passes as Python's ``except Exception`` lets it; the
function's error comes out as raised, and an error of the cleanup is chained
to it; a configuration no longer active leaves the call to the Python path;
bad construction is a TypeError that names the field."""

from __future__ import annotations

import contextvars
import logging
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from otel_failing_tracer import (  # noqa: E402, F401
    ATTEMPT,
    POLICY_SPAN,
    Interrupted,
    Provider,
    instrument,
)

import virtrigaud_resilience as vr  # noqa: E402
from virtrigaud_resilience import _core  # noqa: E402
from virtrigaud_resilience.otel import _tracing  # noqa: E402
from virtrigaud_resilience.policy import Policy  # noqa: E402


def the_native_execution() -> Any:
    """What runs a sampled Policy.execute now (the gate's traced method, or the method)."""
    routed = Policy.__dict__["execute"]
    return getattr(routed, "traced", routed)


def retrying(name: str = "native", attempts: int = 3) -> vr.Policy:
    config = vr.RetryConfig(max_attempts=attempts, base_delay=1.0, max_delay=1.0, jitter=False)
    return vr.PolicyBuilder(name).with_retry(config).with_clock(vr.ManualClock()).build()


def test_a_sampled_call_runs_in_its_spans_with_its_arguments_as_given(instrument: Any) -> None:
    provider = instrument(Provider())
    assert type(the_native_execution()) is _core.TracedExecute
    seen: list[Any] = []

    def fn(*args: Any, **kwargs: Any) -> str:
        seen.append((args, kwargs, trace.get_current_span(), _tracing.CURRENT.get()))
        return "ok"

    many = tuple(range(20))  # past the native call's stack array
    policy = vr.PolicyBuilder("p").build()
    assert policy.execute(fn, 1, 2, key="v") == "ok"
    assert policy.execute(fn, *many, **{f"k{i}": i for i in range(5)}) == "ok"
    assert [(args, kwargs) for args, kwargs, _, _ in seen] == [
        ((1, 2), {"key": "v"}), (many, {f"k{i}": i for i in range(5)})]
    spans = provider.spans()
    assert [span.name for span in spans] == [ATTEMPT, "virtrigaud.policy p"] * 2
    for (_, _, current, execution), attempt, policy_span in zip(seen, spans[::2], spans[1::2]):
        assert current.get_span_context().span_id == attempt.context.span_id  # current in fn
        assert attempt.parent is not None and attempt.parent.span_id == policy_span.context.span_id
        assert isinstance(execution, _tracing.Execution) and execution.policy is policy
    assert trace.get_current_span() is trace.INVALID_SPAN and _tracing.CURRENT.get() is None


def test_the_native_execution_sets_every_slot_the_python_init_sets(instrument: Any) -> None:
    instrument(Provider())
    policy = vr.PolicyBuilder("p").build()
    native: list[Any] = []
    policy.execute(lambda: native.append(_tracing.CURRENT.get()))
    assert _tracing.active is not None
    made_by_init = _tracing.Execution(policy, _tracing.active)
    made_by_init.span.end()
    (execution,) = native
    for slot in _tracing.Execution.__slots__:
        getattr(execution, slot)  # set: an AttributeError here is a slot the native one misses
    assert execution.policy is policy and execution.tracing is _tracing.active
    for slot in ("token", "number", "spanned", "limited"):
        expected = getattr(made_by_init, slot)
        if slot == "spanned":
            expected = 0  # the first attempt reached the function since
        assert getattr(execution, slot) == expected, slot
    # timed (the global meter provider): both read the clock
    assert type(execution.started) is float and execution.started > 0.0
    assert made_by_init.started >= execution.started


def test_a_call_inside_a_call_nests_and_gives_the_outer_execution_back(instrument: Any) -> None:
    provider = instrument(Provider())
    outer, inner = vr.PolicyBuilder("outer").build(), vr.PolicyBuilder("inner").build()
    after: list[Any] = []

    def calls_inner() -> str:
        result = inner.execute(lambda: "inner")
        after.append(_tracing.CURRENT.get())
        return result

    assert outer.execute(calls_inner) == "inner"
    assert after[0] is not None and after[0].policy is outer
    spans = {span.name: span for span in provider.spans()}
    outer_attempt = [span for span in provider.spans() if span.name == ATTEMPT][1]
    inner_span = spans["virtrigaud.policy inner"]
    assert inner_span.parent is not None
    assert inner_span.parent.span_id == outer_attempt.context.span_id


def test_a_tracer_failing_on_the_execution_span_runs_the_call_untraced_and_logs_once(
        instrument: Any, caplog: pytest.LogCaptureFixture) -> None:
    provider = instrument(Provider(RuntimeError("execution spans are broken"), fails=POLICY_SPAN))
    with caplog.at_level(logging.ERROR, logger="virtrigaud_resilience.otel"):
        assert retrying().execute(lambda: 42) == 42
        assert retrying().execute(lambda: 43) == 43
    (record,) = caplog.records
    assert "policy span" in record.getMessage() and "logged once" in record.getMessage()
    assert isinstance(record.exc_info[1], RuntimeError)  # type: ignore[index]
    assert provider.spans() == []  # untraced: no attempt span without its execution's
    assert _tracing.CURRENT.get() is None


def test_a_base_exception_from_the_tracer_passes_as_python_lets_it(instrument: Any) -> None:
    instrument(Provider(Interrupted(), fails=POLICY_SPAN))
    called: list[int] = []
    with pytest.raises(Interrupted):
        retrying().execute(lambda: called.append(1))
    assert called == []  # as `except Exception` would: the function never ran
    assert _tracing.CURRENT.get() is None


def test_the_functions_error_comes_out_as_raised_after_the_execution_ends(
        instrument: Any) -> None:
    provider = instrument(Provider())
    error = vr.NotFoundError("gone")

    def gone() -> None:
        raise error

    with pytest.raises(vr.NotFoundError) as raised:
        vr.PolicyBuilder("once").build().execute(gone)
    assert raised.value is error
    assert raised.traceback[-1].name == "gone"
    attempt, execution = provider.spans()
    assert execution.attributes is not None and execution.attributes["error.type"] == "NotFound"
    assert execution.status.status_code is trace.StatusCode.ERROR
    assert trace.get_current_span() is trace.INVALID_SPAN and _tracing.CURRENT.get() is None


def test_an_error_of_the_cleanup_is_chained_to_the_functions(
        instrument: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    instrument(Provider())
    error = vr.NotFoundError("gone")

    def broken_exit(self: _tracing.Execution, *args: Any) -> None:
        raise RuntimeError("exit broke")

    def gone() -> None:
        raise error

    monkeypatch.setattr(_tracing.Execution, "exit", broken_exit)
    policy = vr.PolicyBuilder("once").build()
    with pytest.raises(RuntimeError, match="exit broke") as raised:
        # In a context of its own: the broken exit leaves its span attached there.
        contextvars.copy_context().run(policy.execute, gone)
    assert raised.value.__context__ is error


def test_a_retried_and_timed_call_ends_through_the_execution(instrument: Any) -> None:
    reader = InMemoryMetricReader()
    provider = instrument(Provider(), meter_provider=MeterProvider(metric_readers=[reader]))
    calls: list[int] = []

    def twice() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise vr.UnavailableError("down")
        return 7

    assert retrying().execute(twice) == 7
    assert [span.name for span in provider.spans()] == [ATTEMPT, ATTEMPT,
                                                        "virtrigaud.policy native"]
    data = reader.get_metrics_data()
    assert data is not None
    outcomes = [point.attributes["virtrigaud.outcome"]  # type: ignore[index]
                for resource in data.resource_metrics for scope in resource.scope_metrics
                for metric in scope.metrics
                if metric.name == "virtrigaud.resilience.execution.duration"
                for point in metric.data.data_points]
    assert outcomes == ["success"]
    assert trace.get_current_span() is trace.INVALID_SPAN and _tracing.CURRENT.get() is None


def fields(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = dict(
        native=print, fallback=print, active_in={}, tracing=None, attempt=print,
        start_span=print, kind=None, constants={}, make_constants=print, current=print,
        span_key="s", current_set=print, current_reset=print, clock=None, raised=print,
        execution_type=_tracing.Execution)
    values.update(overrides)
    return values


def test_a_configuration_no_longer_active_leaves_the_call_to_the_python_path() -> None:
    calls: list[Any] = []

    def fallback(*args: Any, **kwargs: Any) -> str:
        calls.append((args, kwargs))
        return "python"

    execute = _core.TracedExecute(**fields(fallback=fallback, active_in={"active": None},
                                           tracing=object()))
    assert execute("policy", print, 1, key=2) == "python"
    assert calls == [(("policy", print, 1), {"key": 2})]
    assert execute.__get__("policy")(print) == "python"  # binds as a method
    assert calls[-1] == (("policy", print), {})


@pytest.mark.parametrize("field", ["native", "fallback", "attempt", "start_span",
                                   "make_constants", "current", "current_set",
                                   "current_reset", "raised", "clock"])
def test_a_traced_execute_refuses_what_is_not_callable(field: str) -> None:
    with pytest.raises(TypeError, match=f"TracedExecute {field} must be callable.*got 7"):
        _core.TracedExecute(**fields(**{field: 7}))


@pytest.mark.parametrize("field", ["active_in", "constants", "span_key", "execution_type"])
def test_a_traced_execute_refuses_a_wrong_type(field: str) -> None:
    with pytest.raises(TypeError):
        _core.TracedExecute(**fields(**{field: 7}))


class Unslotted:
    policy = None  # a plain class attribute: no slot to write


def test_a_traced_execute_needs_an_execution_type_with_the_slots() -> None:
    with pytest.raises(TypeError, match="TracedExecute execution_type must have a slot policy, "
                                        "got <class .*Unslotted'>"):
        _core.TracedExecute(**fields(execution_type=Unslotted))
