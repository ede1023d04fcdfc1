"""vr.otel's native sync attempt (_core.TracedAttempt, cpp/src/bind_otel_attempt.cpp):
what the Python attempt did, done natively: a tracer that fails on the
attempt's span only never breaks the call, a BaseException it raises passes
as Python's ``except Exception`` lets it, the function's error comes out as
raised, attempt numbers past the prebuilt attributes are still numbered,
timed attempts record their durations, and bad construction is a TypeError
that names the field."""

from __future__ import annotations

import logging
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from otel_failing_tracer import ATTEMPT, Interrupted, Provider, instrument  # noqa: E402, F401

import virtrigaud_resilience as vr  # noqa: E402
from virtrigaud_resilience import _core  # noqa: E402
from virtrigaud_resilience.otel import _tracing  # noqa: E402


def retrying(name: str = "native", attempts: int = 3) -> vr.Policy:
    config = vr.RetryConfig(max_attempts=attempts, base_delay=1.0, max_delay=1.0, jitter=False)
    return vr.PolicyBuilder(name).with_retry(config).with_clock(vr.ManualClock()).build()


def failing(times: int) -> Any:
    calls: list[int] = []

    def fn() -> int:
        calls.append(1)
        if len(calls) <= times:
            raise vr.UnavailableError("down")
        return 42

    return fn


def test_a_tracer_failing_on_the_attempt_span_runs_the_call_untraced_and_logs_once(
        instrument: Any, caplog: pytest.LogCaptureFixture) -> None:
    provider = instrument(Provider(RuntimeError("attempt spans are broken")))
    with caplog.at_level(logging.ERROR, logger="virtrigaud_resilience.otel"):
        assert retrying().execute(failing(2)) == 42
        assert retrying().execute(failing(0)) == 42
    (record,) = caplog.records
    assert "attempt span" in record.getMessage() and "logged once" in record.getMessage()
    assert isinstance(record.exc_info[1], RuntimeError)  # type: ignore[index]
    # the executions' spans are whole; no attempt span was made
    assert [span.name for span in provider.spans()] == ["virtrigaud.policy native"] * 2


def test_a_base_exception_from_the_tracer_passes_as_python_lets_it(instrument: Any) -> None:
    provider = instrument(Provider(Interrupted()))
    called: list[int] = []
    with pytest.raises(Interrupted):
        retrying().execute(lambda: called.append(1))
    assert called == []  # as `except Exception` would: the function never ran
    (span,) = provider.spans()
    assert span.attributes is not None and span.attributes["error.type"] == "Interrupted"
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing left attached


def test_the_functions_error_comes_out_as_raised(instrument: Any) -> None:
    provider = instrument(Provider())
    error = vr.NotFoundError("gone")

    def gone() -> None:
        raise error

    with pytest.raises(vr.NotFoundError) as raised:
        vr.PolicyBuilder("once").build().execute(gone)
    assert raised.value is error
    assert raised.traceback[-1].name == "gone"  # its own traceback, through the native attempt
    attempt, execution = provider.spans()
    assert attempt.attributes is not None and attempt.attributes["error.type"] == "NotFound"
    assert attempt.status.status_code is trace.StatusCode.ERROR
    assert attempt.parent is not None and attempt.parent.span_id == execution.context.span_id
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_attempts_past_the_prebuilt_attributes_are_numbered(instrument: Any) -> None:
    provider = instrument(Provider())
    assert retrying(attempts=20).execute(failing(19)) == 42
    numbers = [span.attributes["virtrigaud.attempt.number"]  # type: ignore[index]
               for span in provider.spans() if span.name == ATTEMPT]
    assert numbers == list(range(20))


def test_timed_attempts_record_their_durations(instrument: Any) -> None:
    reader = InMemoryMetricReader()
    instrument(Provider(), meter_provider=MeterProvider(metric_readers=[reader]))
    assert retrying().execute(failing(1)) == 42
    data = reader.get_metrics_data()
    assert data is not None
    points = [point for resource in data.resource_metrics for scope in resource.scope_metrics
              for metric in scope.metrics
              if metric.name == "virtrigaud.resilience.attempt.duration"
              for point in metric.data.data_points]
    outcomes = sorted((point.attributes["virtrigaud.attempt.number"],  # type: ignore[index]
                       point.attributes["virtrigaud.outcome"], point.count)  # type: ignore[index]
                      for point in points)
    assert outcomes == [(0, "failure", 1), (1, "success", 1)]


def fields(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = dict(
        start_span=print, name=ATTEMPT, attributes=(), number_key="n", span_key="s",
        attach=print, detach=print, clock=None, ended=print, raised=print,
        execution_type=_tracing.Execution)
    values.update(overrides)
    return values


@pytest.mark.parametrize("field", ["start_span", "attach", "detach", "ended", "raised", "clock"])
def test_a_traced_attempt_refuses_what_is_not_callable(field: str) -> None:
    with pytest.raises(TypeError, match=f"TracedAttempt {field} must be callable.*got 7"):
        _core.TracedAttempt(**fields(**{field: 7}))


def test_a_traced_attempt_needs_the_execution_and_the_function() -> None:
    attempt = _core.TracedAttempt(**fields())
    with pytest.raises(TypeError, match="takes the execution and the function"):
        attempt(object())


class Unslotted:
    policy = None  # a plain class attribute: no slot to write


def test_a_traced_attempt_needs_an_execution_type_with_the_slots() -> None:
    with pytest.raises(TypeError, match="TracedAttempt execution_type must have a slot policy, "
                                        "got <class .*Unslotted'>"):
        _core.TracedAttempt(**fields(execution_type=Unslotted))


def test_a_traced_attempt_refuses_an_execution_of_another_type() -> None:
    attempt = _core.TracedAttempt(**fields())
    with pytest.raises(TypeError, match="doesn't apply to a 'object' object"):
        attempt(object(), print)
