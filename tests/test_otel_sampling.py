"""vr.otel's cheaper traced path and its sampling decisions: a sync call
that succeeds at once attaches one context (its attempt's); the execution's
span is current between attempts once one failed; a parent-based sampler's
unsampled parent sends the call down the native path, no span made."""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import Iterator
from types import FrameType
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
from opentelemetry.sdk.trace.sampling import (  # noqa: E402
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    TraceIdRatioBased,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags  # noqa: E402

import virtrigaud_resilience as vr  # noqa: E402
from virtrigaud_resilience import otel  # noqa: E402
from virtrigaud_resilience.otel import _context, _sampling  # noqa: E402

RETRY3 = vr.RetryConfig(max_attempts=3, base_delay=1.0, max_delay=10.0, jitter=False)


class Provider:
    """An SDK tracer provider (``sampler``) exporting to memory."""

    def __init__(self, sampler: Any = None) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(sampler=sampler)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def names(self) -> list[str]:
        return [span.name for span in self.exporter.get_finished_spans()]


@pytest.fixture
def instrumented(request: pytest.FixtureRequest) -> Iterator[Provider]:
    provider = Provider(getattr(request, "param", None))
    otel.instrument(tracer_provider=provider.provider)
    try:
        yield provider
    finally:
        otel.uninstrument()
        provider.provider.shutdown()


def calls_of(call: Any) -> tuple[Any, list[str]]:
    """The call's result and the Python functions it ran (sys.setprofile)."""
    called: list[str] = []

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call":
            called.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        result = call()
    finally:
        sys.setprofile(None)
    return result, called


def under(parent: trace.Span) -> Any:
    """Attaches ``parent`` as the current span (detach the token returned)."""
    return otel_context.attach(trace.set_span_in_context(parent))


def remote_parent(sampled: bool) -> NonRecordingSpan:
    return NonRecordingSpan(SpanContext(0x1234, 0x5678, is_remote=True,
                                        trace_flags=TraceFlags(int(sampled))))


# ------------------------------------------------- one context, not two --

def test_a_sync_call_that_succeeds_at_once_attaches_only_its_attempt_span(
        instrumented: Provider, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every attach and detach of ours goes through _context's (the native
    # attempt's too: it is given them when instrument() configures it).
    counted: list[str] = []

    def counting(name: str, operation: Any) -> Any:
        def counted_operation(value: Any) -> Any:
            counted.append(name)
            return operation(value)
        return counted_operation

    for name in ("attach", "detach"):
        monkeypatch.setattr(_context, name, counting(name, getattr(_context, name)))
    otel.instrument(tracer_provider=instrumented.provider)  # configured with the counters
    policy = vr.PolicyBuilder("once").build()
    seen: list[str] = []

    def fn() -> int:
        seen.append(trace.get_current_span().name)  # type: ignore[attr-defined]
        return 42

    assert policy.execute(fn) == 42 and seen == ["virtrigaud.attempt"]
    assert counted == ["attach", "detach"]
    attempt, execution = instrumented.exporter.get_finished_spans()
    assert attempt.parent is not None and attempt.parent.span_id == execution.context.span_id


def test_after_a_failed_attempt_the_execution_span_is_current_for_the_fallback(
        instrumented: Provider) -> None:
    tracer = instrumented.provider.get_tracer("test")

    def answer(error: BaseException) -> int:
        with tracer.start_as_current_span("fallback"):
            return 7

    policy = vr.PolicyBuilder("fb").with_fallback(answer).build()

    def gone() -> int:
        raise vr.NotFoundError("gone")

    outside = trace.get_current_span()
    assert policy.execute(gone) == 7
    assert trace.get_current_span() is outside  # every context detached
    spans = {span.name: span for span in instrumented.exporter.get_finished_spans()}
    execution = spans["virtrigaud.policy fb"]
    assert spans["fallback"].parent.span_id == execution.context.span_id  # type: ignore[union-attr]
    assert spans["virtrigaud.attempt"].parent.span_id == execution.context.span_id  # type: ignore[union-attr]


# ------------------------------------------- a parent-based sampler's parent --

@pytest.mark.parametrize("instrumented", [ParentBased(ALWAYS_ON)], indirect=True)
def test_an_unsampled_parent_sends_the_call_down_the_native_path(
        instrumented: Provider) -> None:
    policy = vr.PolicyBuilder("p").with_retry(RETRY3).with_clock(vr.ManualClock()).build()
    parent = remote_parent(sampled=False)
    token = under(parent)
    try:
        seen: list[Any] = []

        def fn() -> str:
            seen.append(trace.get_current_span())
            return "ok"

        result, called = calls_of(lambda: policy.execute(fn))
    finally:
        otel_context.detach(token)
    assert result == "ok" and seen == [parent]  # no span between the parent and the function
    # The native decision's one read of the parent's span context, then the
    # function: no frame of ours, no sampler consulted, no span made.
    assert called[:called.index("fn") + 1] == ["<lambda>", "get_span_context", "fn"]
    assert instrumented.names() == []


@pytest.mark.parametrize("instrumented", [ParentBased(ALWAYS_ON)], indirect=True)
def test_an_unsampled_parent_sends_an_async_call_down_the_native_path(
        instrumented: Provider) -> None:
    policy = vr.PolicyBuilder("p").build()

    async def fn() -> str:
        return "ok"

    async def main() -> tuple[Any, Any]:
        token = under(remote_parent(sampled=False))
        try:
            unsampled = policy.execute_async(fn)
        finally:
            otel_context.detach(token)
        return unsampled, policy.execute_async(fn)

    async def run() -> list[str]:
        unsampled, root = await main()
        assert not isinstance(unsampled, types.CoroutineType)  # the native awaitable
        return [await unsampled, await root]

    assert asyncio.run(run()) == ["ok", "ok"]
    assert instrumented.names() == ["virtrigaud.attempt", "virtrigaud.policy p"]  # the root's


@pytest.mark.parametrize("instrumented", [ParentBased(ALWAYS_ON)], indirect=True)
def test_a_sampled_parent_or_none_is_traced(instrumented: Provider) -> None:
    policy = vr.PolicyBuilder("p").build()
    token = under(remote_parent(sampled=True))
    try:
        assert policy.execute(lambda: 1) == 1
    finally:
        otel_context.detach(token)
    assert policy.execute(lambda: 2) == 2  # a root: ALWAYS_ON decides
    assert instrumented.names() == ["virtrigaud.attempt", "virtrigaud.policy p"] * 2
    parented = instrumented.exporter.get_finished_spans()[1]
    assert parented.parent is not None and parented.parent.span_id == 0x5678


@pytest.mark.parametrize("instrumented", [ParentBased(ALWAYS_OFF)], indirect=True)
def test_a_root_call_under_parent_based_always_off_is_native(instrumented: Provider) -> None:
    policy = vr.PolicyBuilder("p").build()
    result, called = calls_of(lambda: policy.execute(lambda: 3))
    assert result == 3 and "start_span" not in called and instrumented.names() == []


@pytest.mark.parametrize("sampler, drops", [
    (ParentBased(ALWAYS_ON), (False, ((True, False), (True, False)))),
    (ParentBased(ALWAYS_OFF), (True, ((True, False), (True, False)))),
    (ParentBased(TraceIdRatioBased(0.5)), (False, ((True, False), (True, False)))),
    (ParentBased(ParentBased(ALWAYS_OFF)), (False, ((True, False), (True, False)))),
    (ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON),
     (False, ((True, False), (False, False)))),
])
def test_the_rule_is_read_from_the_samplers_description(sampler: Any, drops: Any) -> None:
    rule = _sampling.rule(TracerProvider(sampler=sampler))
    assert rule is not None and (rule.root_off, rule.off) == drops


@pytest.mark.parametrize("layout", [True, False])
@pytest.mark.parametrize("remote", [True, False])
@pytest.mark.parametrize("sampled", [True, False])
def test_the_decision_reads_the_parent_alike_through_the_tuple_or_the_properties(
        monkeypatch: pytest.MonkeyPatch, layout: bool, remote: bool, sampled: bool) -> None:
    assert _sampling.TUPLE_LAYOUT  # the installed API's SpanContext is the tuple expected
    monkeypatch.setattr(_sampling, "TUPLE_LAYOUT", layout)
    rule = _sampling.SamplingRule(root_off=False, off=((True, False), (False, True)))
    parent = NonRecordingSpan(SpanContext(0x1234, 0x5678, is_remote=remote,
                                          trace_flags=TraceFlags(int(sampled))))
    assert not rule.drops()  # no parent: the root's delegate
    token = under(parent)
    try:
        assert rule.drops() == rule.off[remote][sampled]
    finally:
        otel_context.detach(token)
    token = under(trace.INVALID_SPAN)
    try:
        assert not rule.drops()  # an invalid parent: the root's delegate
    finally:
        otel_context.detach(token)


@pytest.mark.parametrize("sampler", [
    ALWAYS_ON, TraceIdRatioBased(0.5),
    ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON,
                local_parent_not_sampled=ALWAYS_ON),
])
def test_no_rule_where_nothing_can_be_decided_ahead(sampler: Any) -> None:
    assert _sampling.rule(TracerProvider(sampler=sampler)) is None
    assert _sampling.rule(trace.NoOpTracerProvider()) is None


def test_the_direct_context_operations_are_the_apis_own() -> None:
    from virtrigaud_resilience.otel import _context

    assert _context.DIRECT  # the API's default runtime context: its ContextVar's methods
    span = remote_parent(sampled=True)
    outer = otel_context.get_current()
    token = _context.attach(otel_context.Context({**_context.current(), _context.SPAN_KEY: span}))
    try:
        assert trace.get_current_span() is span  # the API sees what was attached
        assert otel_context.get_current() == trace.set_span_in_context(span, outer)
    finally:
        _context.detach(token)
    assert otel_context.get_current() is outer
