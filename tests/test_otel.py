"""vr.otel: a span per policy execution and per attempt, span events for the
decisions, and uninstrument() giving back the native path (issue 26).

Real SDK objects throughout: a TracerProvider exporting to the SDK's
InMemorySpanExporter, its spans read back after each call.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF  # noqa: E402

import virtrigaud_resilience as vr  # noqa: E402
from virtrigaud_resilience import events as events_module  # noqa: E402
from virtrigaud_resilience import otel  # noqa: E402
from virtrigaud_resilience.policy import Policy  # noqa: E402

from python_calls import python_calls  # noqa: E402

RETRY3 = vr.RetryConfig(max_attempts=3, base_delay=1.0, max_delay=10.0, jitter=False)
NATIVE = {name: Policy.__dict__[name] for name in ("execute", "execute_async")}


class Traced:
    """An SDK tracer provider and the spans it finished."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [span for span in self.exporter.get_finished_spans()
                if name is None or span.name.startswith(name)]

    def policy_span(self) -> ReadableSpan:
        (span,) = self.spans("virtrigaud.policy")
        return span

    def attempts(self) -> list[ReadableSpan]:
        return self.spans("virtrigaud.attempt")


@pytest.fixture
def traced() -> Iterator[Traced]:
    tracing = Traced()
    otel.instrument(tracer_provider=tracing.provider)
    try:
        yield tracing
    finally:
        otel.uninstrument()
        tracing.provider.shutdown()


def events(span: ReadableSpan, name: str) -> list[dict[str, Any]]:
    return [dict(event.attributes or {}) for event in span.events if event.name == name]


def flaky(failures: int, error: BaseException | None = None) -> Any:
    """A function that raises ``error`` (Unavailable) ``failures`` times, then returns 42."""
    calls: list[int] = []

    def fn() -> int:
        calls.append(1)
        if len(calls) <= failures:
            raise error or vr.UnavailableError("provider down")
        return 42

    return fn


async def as_async(fn: Any) -> Any:
    return fn()


def retrying_policy() -> vr.Policy:
    """Three attempts, 1 s doubling, on a ManualClock (its sleeps take no time)."""
    return vr.PolicyBuilder("create-vm").with_retry(RETRY3).with_clock(vr.ManualClock()).build()


# ------------------------------------------------------------------ spans --

def check_three_attempts(traced: Traced) -> None:
    policy_span = traced.policy_span()
    assert policy_span.kind is trace.SpanKind.INTERNAL
    assert policy_span.name == "virtrigaud.policy create-vm"
    assert policy_span.status.status_code is trace.StatusCode.UNSET
    attempts = traced.attempts()
    assert [span.attributes["virtrigaud.attempt.number"] for span in attempts] == [0, 1, 2]
    assert all(span.parent.span_id == policy_span.context.span_id for span in attempts)
    assert [span.attributes.get("error.type") for span in attempts] == [
        "Unavailable", "Unavailable", None]
    assert [span.status.status_code for span in attempts] == [
        trace.StatusCode.ERROR, trace.StatusCode.ERROR, trace.StatusCode.UNSET]
    # ManualClock: the backoff's exact delays, base 1 s doubling.
    assert events(policy_span, "retry.scheduled") == [
        {"virtrigaud.attempt.number": 1, "virtrigaud.retry.delay": 1.0,
         "virtrigaud.retry.reason": "Unavailable", "virtrigaud.retry.retry_after": False},
        {"virtrigaud.attempt.number": 2, "virtrigaud.retry.delay": 2.0,
         "virtrigaud.retry.reason": "Unavailable", "virtrigaud.retry.retry_after": False},
    ]


def test_a_call_that_succeeds_on_its_third_attempt_has_one_span_per_attempt(
        traced: Traced) -> None:
    assert retrying_policy().execute(flaky(2)) == 42
    check_three_attempts(traced)


async def test_the_same_async(traced: Traced) -> None:
    fn = flaky(2)
    assert await retrying_policy().execute_async(as_async, fn) == 42
    check_three_attempts(traced)


def test_the_execution_span_is_a_child_of_the_callers_span(traced: Traced) -> None:
    tracer = traced.provider.get_tracer("app")
    with tracer.start_as_current_span("reconcile") as parent:
        retrying_policy().execute(flaky(0))
    assert traced.policy_span().parent.span_id == parent.get_span_context().span_id


def test_a_failed_call_sets_error_type_and_status_on_both_spans(traced: Traced) -> None:
    with pytest.raises(vr.NotFoundError):
        retrying_policy().execute(flaky(5, vr.NotFoundError("vm gone")))
    policy_span = traced.policy_span()
    assert policy_span.attributes["error.type"] == "NotFound"
    assert policy_span.status.status_code is trace.StatusCode.ERROR
    (attempt,) = traced.attempts()
    assert attempt.attributes["error.type"] == "NotFound"


def test_a_provider_retry_after_sets_the_delay_and_says_so(traced: Traced) -> None:
    throttled = vr.RateLimitError("slow down", retry_after=5.0)
    assert retrying_policy().execute(flaky(1, throttled)) == 42
    assert events(traced.policy_span(), "retry.scheduled") == [
        {"virtrigaud.attempt.number": 1, "virtrigaud.retry.delay": 5.0,
         "virtrigaud.retry.reason": "RateLimit", "virtrigaud.retry.retry_after": True}]


def test_a_builtin_error_gets_its_taxonomy_type(traced: Traced) -> None:
    with pytest.raises(ConnectionResetError):
        retrying_policy().execute(flaky(1, ConnectionResetError("reset")))
    (first,) = traced.attempts()
    assert first.attributes["error.type"] == "Unavailable"
    assert otel.error_type(KeyError("x")) == "KeyError"


# --------------------------------------------------------------- refusals --

def test_an_open_breaker_refusal_is_an_event_not_an_attempt_span(traced: Traced) -> None:
    breaker = vr.CircuitBreaker("vm-ops", "vsphere", "prod")
    policy = vr.PolicyBuilder("p").with_circuit_breaker(breaker).build()
    breaker.force_open()
    with pytest.raises(vr.CircuitOpenError):
        policy.execute(flaky(0))
    assert traced.attempts() == []
    (event,) = events(traced.policy_span(), "circuit_breaker.rejected")
    assert event == {"virtrigaud.circuit_breaker.name": "vm-ops",
                     "virtrigaud.provider_type": "vsphere", "virtrigaud.provider": "prod",
                     "virtrigaud.circuit_breaker.state": "open"}


def test_a_rate_limiter_refusal_is_an_event(traced: Traced) -> None:
    bucket = vr.TokenBucket(0.001, 1, provider_type="vsphere", provider="prod")
    policy = vr.PolicyBuilder("p").with_rate_limiter(bucket).build()
    assert policy.execute(flaky(0)) == 42  # the one token
    with pytest.raises(vr.RateLimitError):
        policy.execute(flaky(0))
    refused = traced.spans("virtrigaud.policy")[1]
    assert events(refused, "rate_limiter.rejected") == [
        {"virtrigaud.rate_limiter.tokens": 1, "virtrigaud.provider_type": "vsphere",
         "virtrigaud.provider": "prod"}]
    assert events(refused, "bulkhead.rejected") == []


def test_a_full_bulkhead_refusal_is_an_event(traced: Traced) -> None:
    bulkhead = vr.Bulkhead(1, provider_type="vsphere", provider="prod")
    policy = vr.PolicyBuilder("p").with_bulkhead(bulkhead).build()
    with bulkhead:  # the only slot
        with pytest.raises(vr.RateLimitError):
            policy.execute(flaky(0))
    assert events(traced.policy_span(), "bulkhead.rejected") == [
        {"virtrigaud.provider_type": "vsphere", "virtrigaud.provider": "prod"}]
    assert events(traced.policy_span(), "rate_limiter.rejected") == []


def test_a_refused_retry_is_an_event(traced: Traced) -> None:
    clock = vr.ManualClock()
    budget = vr.RetryBudget.ratio(0.2, min_per_second=0, clock=clock, provider="p1")
    policy = (vr.PolicyBuilder("budgeted").with_retry(RETRY3).with_retry_budget(budget)
              .with_clock(clock).build())
    with pytest.raises(vr.UnavailableError):
        policy.execute(flaky(5))
    assert events(traced.policy_span(), "retry_budget.exhausted") == [
        {"virtrigaud.policy.name": "budgeted", "virtrigaud.retry.reason": "Unavailable",
         "virtrigaud.provider_type": "", "virtrigaud.provider": "p1"}]


# ------------------------------------------------------ breaker transitions --

def opening_breaker() -> vr.CircuitBreaker:
    return vr.CircuitBreaker("vm-ops", "vsphere", "prod", vr.BreakerConfig(failure_threshold=1))


def test_a_transition_inside_a_span_is_an_event_on_it(traced: Traced) -> None:
    policy = vr.PolicyBuilder("p").with_circuit_breaker(opening_breaker()).build()
    with pytest.raises(vr.UnavailableError):
        policy.execute(flaky(1))
    assert events(traced.policy_span(), "circuit_breaker.state_change") == [
        {"virtrigaud.circuit_breaker.name": "vm-ops", "virtrigaud.provider_type": "vsphere",
         "virtrigaud.provider": "prod", "virtrigaud.circuit_breaker.from": "closed",
         "virtrigaud.circuit_breaker.to": "open"}]


def test_a_transition_of_a_breaker_called_in_an_application_span(traced: Traced) -> None:
    breaker = opening_breaker()
    with traced.provider.get_tracer("app").start_as_current_span("reconcile"):
        with pytest.raises(vr.UnavailableError):
            breaker.call(flaky(1))
    (span,) = traced.spans("reconcile")
    assert [event["virtrigaud.circuit_breaker.to"]
            for event in events(span, "circuit_breaker.state_change")] == ["open"]


def test_a_transition_outside_any_span_is_a_log_record(
        traced: Traced, caplog: pytest.LogCaptureFixture) -> None:
    breaker = opening_breaker()
    with caplog.at_level(logging.INFO, logger="virtrigaud_resilience.otel"):
        with pytest.raises(vr.UnavailableError):
            breaker.call(flaky(1))
    (record,) = [r for r in caplog.records if r.name == "virtrigaud_resilience.otel"]
    assert record.getMessage() == "circuit breaker 'vm-ops' (vsphere/prod): closed -> open"
    assert record.otel_event == "circuit_breaker.state_change"  # type: ignore[attr-defined]


# ----------------------------------------------- every kind of policy is traced --

def test_fallback_and_adaptive_policies_are_traced(traced: Traced) -> None:
    fallback = (vr.PolicyBuilder("fb").with_fallback(7).build())
    assert fallback.execute(flaky(1, vr.NotFoundError("gone"))) == 7
    adaptive = (vr.PolicyBuilder("ad").with_retry(RETRY3).with_clock(vr.ManualClock())
                .with_adaptive_bulkhead(vr.AdaptiveBulkhead()).build())
    assert adaptive.execute(flaky(1)) == 42
    assert [span.name for span in traced.spans("virtrigaud.policy")] == [
        "virtrigaud.policy fb", "virtrigaud.policy ad"]
    assert len(traced.attempts()) == 3


def test_a_subclass_defined_while_instrumented_is_traced_and_then_native(
        traced: Traced) -> None:
    class Mine(Policy):
        __slots__ = ()

    assert Mine("mine").execute(flaky(0)) == 42
    assert [span.name for span in traced.spans()] == ["virtrigaud.attempt",
                                                      "virtrigaud.policy mine"]
    otel.uninstrument()
    mine = Mine("mine")
    assert python_calls(partial(mine.execute, ok)) == ("ok", ["ok"])


# -------------------------------------------------- the native path, restored --

def ok() -> str:
    return "ok"


def test_uninstrument_restores_the_native_methods_and_the_native_path() -> None:
    tracing = Traced()
    policy = vr.PolicyBuilder("p").build()
    fallback = vr.PolicyBuilder("fb").with_fallback(7).build()
    assert python_calls(partial(policy.execute, ok)) == ("ok", ["ok"])
    otel.instrument(tracer_provider=tracing.provider)
    assert otel.traces_calls()
    assert python_calls(partial(policy.execute, ok))[1] != ["ok"]  # the check can fail
    otel.uninstrument()
    assert not otel.is_instrumented() and not otel.traces_calls()
    assert events_module.request_listeners == []  # the adapters check nothing more
    assert {name: Policy.__dict__[name] for name in NATIVE} == NATIVE
    assert python_calls(partial(policy.execute, ok)) == ("ok", ["ok"])
    assert python_calls(partial(fallback.execute, ok)) == ("ok", ["ok"])
    spans = len(tracing.spans())
    policy.execute(ok)
    assert len(tracing.spans()) == spans  # nothing traced any more


def test_functions_decorated_before_instrument_are_traced_then_native_again() -> None:
    policy = vr.PolicyBuilder("decorated").build()

    @policy
    def ok() -> str:
        return "ok"

    @policy
    async def ok_async() -> str:
        return "ok"

    assert python_calls(ok) == ("ok", ["wrapper", "ok"])  # the wrapper and the function
    tracing = Traced()
    otel.instrument(tracer_provider=tracing.provider)
    try:
        assert ok() == "ok"
        assert asyncio.run(ok_async()) == "ok"
    finally:
        otel.uninstrument()
    assert [span.name for span in tracing.spans("virtrigaud.policy")] == [
        "virtrigaud.policy decorated", "virtrigaud.policy decorated"]
    assert python_calls(ok) == ("ok", ["wrapper", "ok"])


@pytest.mark.parametrize("provider", [
    trace.NoOpTracerProvider(), TracerProvider(sampler=ALWAYS_OFF)], ids=["no-op", "always-off"])
def test_a_tracer_that_records_nothing_keeps_the_native_path(provider: Any) -> None:
    policy = vr.PolicyBuilder("p").build()
    otel.instrument(tracer_provider=provider)
    try:
        assert otel.is_instrumented() and not otel.traces_calls()
        assert Policy.__dict__["execute"] is NATIVE["execute"]
        assert python_calls(partial(policy.execute, ok)) == ("ok", ["ok"])
    finally:
        otel.uninstrument()


# -------------------------------------------------------------- bad input --

def test_instrument_twice_is_idempotent(traced: Traced) -> None:
    otel.instrument(tracer_provider=traced.provider)
    assert retrying_policy().execute(flaky(2)) == 42
    check_three_attempts(traced)  # one policy span, two retry events: nothing doubled
    otel.uninstrument()
    assert Policy.__dict__["execute"] is NATIVE["execute"]


class RaisingTracer(trace.Tracer):
    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        raise RuntimeError("exporter misconfigured")

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("exporter misconfigured")


class RaisingProvider(trace.TracerProvider):
    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return RaisingTracer()


async def test_a_tracer_that_raises_never_breaks_a_call(caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    otel.instrument(tracer_provider=RaisingProvider())
    try:
        with caplog.at_level(logging.ERROR, logger="virtrigaud_resilience.otel"):
            policy = retrying_policy()
            assert policy.execute(flaky(2)) == 42
            assert policy.execute(flaky(0)) == 42
            assert await policy.execute_async(as_async, flaky(1)) == 42
    finally:
        otel.uninstrument()
    (record,) = caplog.records
    assert "logged once" in record.getMessage() and record.exc_info is not None
    caplog.clear()
    otel.instrument(tracer_provider=RaisingProvider())  # a new configuration: logged again
    try:
        with caplog.at_level(logging.ERROR, logger="virtrigaud_resilience.otel"):
            assert retrying_policy().execute(flaky(0)) == 42
    finally:
        otel.uninstrument()
    assert len(caplog.records) == 1


@pytest.mark.parametrize("field, value", [("tracer_provider", "jaeger"),
                                          ("meter_provider", object())])
def test_instrument_refuses_what_is_no_provider(field: str, value: Any) -> None:
    with pytest.raises(TypeError, match=f"otel.instrument\\(\\) {field} must be an "
                                        f"opentelemetry .*Provider or None, got"):
        otel.instrument(**{field: value})
    assert not otel.is_instrumented()


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)


def test_the_package_never_imports_opentelemetry() -> None:
    result = run_python("import sys, virtrigaud_resilience as vr\n"
                        "vr.PolicyBuilder('p').with_retry().build().execute(int)\n"
                        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))")
    assert result.stdout.strip() == "[]", result.stderr


def test_without_the_api_the_import_error_names_the_extra() -> None:
    result = run_python("import sys\n"
                        "sys.modules['opentelemetry'] = None  # as if not installed\n"
                        "import virtrigaud_resilience.otel\n")
    assert result.returncode != 0
    assert "ImportError: virtrigaud_resilience.otel needs opentelemetry-api: " \
           "pip install 'virtrigaud-resilience[otel]'" in result.stderr
