"""Window-mode breakers (issue 22): resilience4j's failure-rate and slow-call
rules over a count or time window, against a plain-Python reference model
(tests/window_model.py), plus the scenarios the issue names and bad input.

The hypothesis machine drives a real breaker and the model with random
outcomes, call durations (ManualClock advances between admission and
outcome), clock moves, released probes and the operator's overrides, and
compares state, mode, half-open slots, the window's contents and rates and
the counters after every step. It runs 5,000 sequences of 12 steps (derandomized, so CI
explores the same ones each run); ``VR_WINDOW_EXAMPLES=N`` runs N random ones.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from datetime import timedelta

import pytest
import virtrigaud_resilience as vr
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from virtrigaud_resilience.breaker import BreakerConfig, BreakerMode, BreakerState, CircuitBreaker
from virtrigaud_resilience.windows import CountWindow, TimeWindow, parse_window
from window_model import (
    CLOSED,
    HALF_OPEN,
    HELD,
    NS,
    OPEN,
    ModelConfig,
    Ticket,
    WindowBreakerModel,
)

# ------------------------------------------------------------ the machine --

settings.register_profile(
    "vr-window-ci", max_examples=5000, stateful_step_count=12, deadline=None,
    derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
settings.register_profile(
    "vr-window-hunt", max_examples=int(os.environ.get("VR_WINDOW_EXAMPLES") or "5000"),
    stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROFILE = "vr-window-hunt" if os.environ.get("VR_WINDOW_EXAMPLES") else "vr-window-ci"

LOGGER = logging.getLogger("virtrigaud_resilience")
STATES = {CLOSED: BreakerState.CLOSED, HALF_OPEN: BreakerState.HALF_OPEN,
          OPEN: BreakerState.OPEN, HELD: BreakerState.OPEN}
#: Clock moves that land on and beside the one-second buckets' edges.
ADVANCES = st.sampled_from([0, 1, 250_000_000, 499_999_999, 500_000_000, 999_999_999, NS,
                            2 * NS, 3 * NS + 1, 7 * NS])


@dataclass
class Call:
    permit: vr.Permit
    ticket: Ticket


@st.composite
def window_configs(draw: st.DrawFn) -> tuple[BreakerConfig, ModelConfig]:
    kind = draw(st.sampled_from(["count", "time"]))
    size = draw(st.integers(1, 8 if kind == "count" else 4))
    minimum = draw(st.integers(1, size if kind == "count" else 8))
    failure_rate = draw(st.sampled_from([0.2, 1 / 3, 0.5, 0.75, 1.0]))
    slow_ns = draw(st.sampled_from([None, 0, 500_000_000, NS]))
    slow_rate = draw(st.sampled_from([0.25, 0.5, 1.0]))
    reset_s = draw(st.sampled_from([0, 1, 2]))
    half_open_max = draw(st.integers(1, 3))
    max_wait_s = draw(st.sampled_from([None, 1, 3]))
    backoff = draw(st.sampled_from([None, (1.0, 4.0, 2.0), (0.5, 0.5, 1.0)]))
    config = BreakerConfig(
        reset_timeout=reset_s, half_open_max_calls=half_open_max, half_open_lease=None,
        window=CountWindow(size) if kind == "count" else TimeWindow(size),
        minimum_calls=minimum, failure_rate_threshold=failure_rate,
        slow_call_duration=None if slow_ns is None else slow_ns / NS,
        slow_call_rate_threshold=slow_rate, max_wait_in_half_open=max_wait_s,
        open_backoff=None if backoff is None else vr.Backoff(
            base_delay=backoff[0], max_delay=backoff[1], multiplier=backoff[2], jitter=False))
    model = ModelConfig(kind, size, minimum, failure_rate, slow_ns, slow_rate, reset_s * NS,
                        half_open_max, None if max_wait_s is None else max_wait_s * NS, backoff)
    return config, model


class WindowMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = vr.ManualClock()
        self.calls: list[Call] = []
        # Thousands of transitions: their log records would take most of the time.
        LOGGER.disabled = True

    @initialize(configs=window_configs())
    def make(self, configs: tuple[BreakerConfig, ModelConfig]) -> None:
        config, model_config = configs
        self.breaker = CircuitBreaker("window-model", config=config, clock=self.clock)
        self.model = WindowBreakerModel(model_config)

    def now(self) -> int:
        return self.clock.now_ns()

    @rule()
    def acquire(self) -> None:
        permit = self.breaker.try_acquire()
        ticket = self.model.acquire(self.now())
        assert (permit is None) == (ticket is None)
        if permit is not None and ticket is not None:
            self.calls.append(Call(permit, ticket))

    @rule(calls=st.lists(st.tuples(st.booleans(), ADVANCES), min_size=1, max_size=8))
    def calls_in_turn(self, calls: list[tuple[bool, int]]) -> None:
        """Calls one after another (most traffic): admitted ones report at once."""
        for failed, took in calls:
            permit = self.breaker.try_acquire()
            ticket = self.model.acquire(self.now())
            assert (permit is None) == (ticket is None)
            if permit is None or ticket is None:
                continue
            self.clock._advance_ns(took)
            (permit.failure if failed else permit.success)()
            self.model.record(ticket, failed, self.now())
            self.agree()

    @precondition(lambda self: self.calls)
    @rule(data=st.data(), failed=st.booleans(), took=ADVANCES)
    def report(self, data: st.DataObject, failed: bool, took: int) -> None:
        call = self.calls.pop(data.draw(st.integers(0, len(self.calls) - 1)))
        self.clock._advance_ns(took)
        (call.permit.failure if failed else call.permit.success)()
        self.model.record(call.ticket, failed, self.now())

    @precondition(lambda self: self.calls)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        call = self.calls.pop(data.draw(st.integers(0, len(self.calls) - 1)))
        call.permit.release()
        self.model.release(call.ticket)

    @rule(dt=ADVANCES)
    def advance(self, dt: int) -> None:
        self.clock._advance_ns(dt)

    @rule(op=st.sampled_from(["reset", "disable", "metrics_only", "force_open"]))
    def operator(self, op: str) -> None:
        getattr(self.breaker, op)()
        if op == "force_open":
            self.model.force_open(self.now())
        else:
            getattr(self.model, op)()

    @invariant()
    def agree(self) -> None:
        if not hasattr(self, "model"):
            return
        b, m, now = self.breaker, self.model, self.now()
        assert b.state is STATES[m.state]
        assert b.held_open == (m.state == HELD)
        assert b.mode is (BreakerMode.FORCED_OPEN if m.state == HELD else BreakerMode(m.mode))
        assert b.half_open_calls == (m.slots if m.state == HALF_OPEN else 0)
        assert b.window_calls == m.totals(now)
        assert b.failure_rate == m.rate(now, 1)
        assert b.slow_call_rate == m.rate(now, 2)
        assert (b.slow_calls, b.ignored, b.openings) == (m.slow_calls, m.ignored, m.openings)
        assert b.remaining_open == pytest.approx(
            max(0, m.opened_at + m.open_timeout() - now) / NS if m.state == OPEN else 0.0)

    def teardown(self) -> None:
        for call in self.calls:
            call.permit.release()
        LOGGER.disabled = False


WindowMachine.TestCase.settings = settings.get_profile(PROFILE)
TestWindowModel = pytest.mark.slow(WindowMachine.TestCase)


# ------------------------------------------------------------- scenarios --

def window_breaker(clock: vr.ManualClock, **fields: object) -> CircuitBreaker:
    fields.setdefault("half_open_lease", None)
    return CircuitBreaker("w", "vsphere", "prod", BreakerConfig(**fields),  # type: ignore[arg-type]
                          clock=clock)


def fail() -> None:
    raise vr.UnavailableError("down")


def run(breaker: CircuitBreaker, pattern: str) -> None:
    """One call per character: 'f' fails, 's' succeeds."""
    for c in pattern:
        if c == "f":
            with pytest.raises(vr.UnavailableError):
                breaker.call(fail)
        else:
            breaker.call(lambda: None)


def test_a_30_percent_failure_rate_opens_the_window_breaker_and_never_the_consecutive_one() -> None:
    clock = vr.ManualClock()
    pattern = "sfsssfssfs" * 10  # 30 %: never two failures in a row
    windowed = window_breaker(clock, window=CountWindow(20), minimum_calls=20,
                              failure_rate_threshold=0.3)
    consecutive = CircuitBreaker("c", config=BreakerConfig(failure_threshold=2), clock=clock)
    run(consecutive, pattern)
    assert consecutive.state is BreakerState.CLOSED
    run(windowed, pattern[:19])
    assert windowed.failure_rate == -1.0  # below minimum_calls: no judgement
    assert windowed.state is BreakerState.CLOSED
    run(windowed, pattern[19])
    assert windowed.state is BreakerState.OPEN
    with pytest.raises(vr.CircuitOpenError):
        windowed.call(lambda: None)


def test_slow_successes_open_on_the_slow_call_rate() -> None:
    clock = vr.ManualClock()
    breaker = window_breaker(clock, window=CountWindow(10), minimum_calls=4,
                             slow_call_duration=2.0, slow_call_rate_threshold=0.5)

    def slow() -> str:
        clock._advance_ns(2 * NS)  # exactly the slow-call duration: slow
        return "ok"

    def quick() -> str:
        clock._advance_ns(2 * NS - 1)
        return "ok"

    assert breaker.call(quick) == "ok"
    assert breaker.call(slow) == "ok"
    assert breaker.call(quick) == "ok"
    assert breaker.state is BreakerState.CLOSED and breaker.slow_call_rate == -1.0
    assert breaker.call(slow) == "ok"  # 2 slow of 4 >= 0.5
    assert breaker.state is BreakerState.OPEN
    assert breaker.slow_calls == 2 and breaker.failures_total == 0


@pytest.mark.parametrize("path", ["call", "call_async", "guard", "permit"])
def test_every_call_path_times_its_calls(path: str) -> None:
    import asyncio

    clock = vr.ManualClock()
    breaker = window_breaker(clock, window=CountWindow(2), minimum_calls=1,
                             slow_call_duration=1.0)

    def body() -> None:
        clock._advance_ns(NS)

    async def abody() -> None:
        clock._advance_ns(NS)

    if path == "call":
        breaker.call(body)
    elif path == "call_async":
        asyncio.run(breaker.call_async(abody))
    elif path == "guard":
        with breaker.guard():
            body()
    else:
        permit = breaker.try_acquire()
        assert permit is not None
        body()
        permit.success()
    assert breaker.slow_calls == 1
    assert breaker.state is BreakerState.OPEN


@pytest.mark.parametrize("nesting", [False, True])
def test_an_async_call_that_fails_slowly_is_slow_too(nesting: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """call_async's failures keep their admission time as its successes do
    (the native awaitable passes it to the Python hook that records a
    failure), also where an adapter may ask what the call holds (nesting)."""
    import asyncio

    from virtrigaud_resilience import _admission

    monkeypatch.setattr(_admission, "nesting", nesting)

    clock = vr.ManualClock()
    breaker = window_breaker(clock, window=CountWindow(2), minimum_calls=1,
                             slow_call_duration=1.0, failure_rate_threshold=1.0)

    async def fails_slowly() -> None:
        clock._advance_ns(NS)
        raise vr.UnavailableError("down, slowly")

    with pytest.raises(vr.UnavailableError):
        asyncio.run(breaker.call_async(fails_slowly))
    assert breaker.slow_calls == 1 and breaker.failures_total == 1


def test_half_open_probes_are_judged_together_as_a_rate() -> None:
    clock = vr.ManualClock()
    breaker = window_breaker(clock, window=CountWindow(4), minimum_calls=2, reset_timeout=1,
                             half_open_max_calls=4, failure_rate_threshold=0.5)
    run(breaker, "ff")
    assert breaker.state is BreakerState.OPEN
    clock._advance_ns(NS)
    permits = [breaker.try_acquire() for _ in range(5)]
    assert permits[4] is None and all(permits[:4])
    permits[0].failure()  # type: ignore[union-attr]  # one failure does not re-open
    assert breaker.state is BreakerState.HALF_OPEN
    for p in permits[1:4]:
        p.success()  # type: ignore[union-attr]
    assert breaker.state is BreakerState.CLOSED  # 1 of 4 < 0.5
    assert breaker.window_calls == (0, 0, 0)  # closes with an empty window
    run(breaker, "ff")
    clock._advance_ns(NS)
    permits = [breaker.try_acquire() for _ in range(4)]
    for p, failed in zip(permits, (True, True, False, False)):
        (p.failure if failed else p.success)()  # type: ignore[union-attr]
    assert breaker.state is BreakerState.OPEN  # 2 of 4 >= 0.5


def test_max_wait_in_half_open_opens_again() -> None:
    clock = vr.ManualClock()
    seen: list[tuple[BreakerState, BreakerState]] = []
    breaker = window_breaker(clock, window=CountWindow(2), minimum_calls=1, reset_timeout=1,
                             half_open_max_calls=2, max_wait_in_half_open=5)
    breaker.add_listener(lambda b, old, new: seen.append((old, new)))
    run(breaker, "f")
    clock._advance_ns(NS)
    probe = breaker.try_acquire()
    assert probe is not None and breaker.state is BreakerState.HALF_OPEN
    clock._advance_ns(5 * NS - 1)
    assert breaker.try_acquire() is not None  # still within the wait: the second probe
    clock._advance_ns(1)
    with pytest.raises(vr.CircuitOpenError):
        breaker.call(lambda: None)
    assert breaker.state is BreakerState.OPEN
    assert seen[-1] == (BreakerState.HALF_OPEN, BreakerState.OPEN)
    probe.success()  # stale now: moves nothing
    assert breaker.state is BreakerState.OPEN


def test_open_backoff_lengthens_each_reopening_until_it_closes() -> None:
    clock = vr.ManualClock()
    breaker = window_breaker(clock, window=CountWindow(1), minimum_calls=1, reset_timeout=60,
                             half_open_max_calls=1,
                             open_backoff=vr.Backoff(base_delay=1, max_delay=4, multiplier=2,
                                                     jitter=False))
    run(breaker, "f")
    for expected in (1.0, 2.0, 4.0, 4.0):
        assert breaker.remaining_open == expected
        clock._advance_ns(round(expected * NS))
        run(breaker, "f")  # the probe fails: re-open, longer
    clock._advance_ns(4 * NS)
    run(breaker, "s")
    assert breaker.state is BreakerState.CLOSED and breaker.openings == 0
    run(breaker, "f")
    assert breaker.remaining_open == 1.0  # the backoff starts over


def test_time_window_forgets_outcomes_older_than_its_seconds() -> None:
    clock = vr.ManualClock()
    breaker = window_breaker(clock, window=TimeWindow(3), minimum_calls=4)
    run(breaker, "ff")
    clock._advance_ns(NS)
    run(breaker, "s")
    assert breaker.window_calls == (3, 2, 0)
    clock._advance_ns(2 * NS)  # the first second leaves the window
    assert breaker.window_calls == (1, 0, 0)
    run(breaker, "sss")
    assert breaker.state is BreakerState.CLOSED  # 0 of 4 failed
    run(breaker, "ff")
    assert breaker.failure_rate == pytest.approx(2 / 6)
    assert breaker.state is BreakerState.CLOSED
    run(breaker, "f")  # 3 of 7 < 0.5
    assert breaker.state is BreakerState.CLOSED
    run(breaker, "f")  # 4 of 8 >= 0.5
    assert breaker.state is BreakerState.OPEN


def test_operator_modes() -> None:
    clock = vr.ManualClock()
    breaker = window_breaker(clock, window=CountWindow(2), minimum_calls=1)
    breaker.disable()
    assert breaker.mode is BreakerMode.DISABLED and breaker.state is BreakerState.CLOSED
    run(breaker, "fff")
    assert breaker.state is BreakerState.CLOSED and breaker.window_calls == (0, 0, 0)
    assert breaker.ignored == 3
    breaker.metrics_only()
    run(breaker, "ff")
    assert breaker.mode is BreakerMode.METRICS_ONLY and breaker.state is BreakerState.CLOSED
    assert breaker.failure_rate == 1.0
    breaker.force_open()
    assert breaker.mode is BreakerMode.FORCED_OPEN and breaker.state is BreakerState.OPEN
    clock._advance_ns(10**6 * NS)
    with pytest.raises(vr.CircuitOpenError):
        breaker.call(lambda: None)
    breaker.reset()
    assert breaker.mode is BreakerMode.NORMAL and breaker.window_calls == (0, 0, 0)
    run(breaker, "f")
    assert breaker.state is BreakerState.OPEN
    assert "mode=" not in repr(breaker)
    breaker.disable()
    assert "mode=DISABLED" in repr(breaker)


def test_consecutive_breakers_take_the_operator_modes_too() -> None:
    breaker = CircuitBreaker("c", config=BreakerConfig(failure_threshold=2))
    assert not breaker.windowed and breaker.failure_rate == -1.0
    breaker.metrics_only()
    run(breaker, "fff")
    assert breaker.state is BreakerState.CLOSED and breaker.failure_streak == 3
    breaker.disable()
    run(breaker, "ff")
    assert breaker.state is BreakerState.CLOSED and breaker.failure_streak == 0
    assert breaker.ignored == 2
    breaker.reset()
    run(breaker, "ff")
    assert breaker.state is BreakerState.OPEN


def test_stale_outcomes_move_nothing() -> None:
    clock = vr.ManualClock()
    breaker = window_breaker(clock, window=CountWindow(4), minimum_calls=2)
    old = [breaker.try_acquire() for _ in range(2)]
    breaker.reset()
    for p in old:
        p.failure()  # type: ignore[union-attr]
    assert breaker.state is BreakerState.CLOSED and breaker.window_calls == (0, 0, 0)
    assert breaker.ignored == 2


def test_minimum_calls_defaults_to_100_capped_at_a_count_window() -> None:
    assert BreakerConfig(window=CountWindow(10)).minimum_calls_in_force == 10
    assert BreakerConfig(window=CountWindow(1000)).minimum_calls_in_force == 100
    assert BreakerConfig(window=TimeWindow(60)).minimum_calls_in_force == 100
    assert BreakerConfig(window=TimeWindow(60), minimum_calls=7).minimum_calls_in_force == 7
    assert BreakerConfig().minimum_calls_in_force is None
    assert BreakerConfig(window=CountWindow(10)).minimum_calls is None  # as given
    clock = vr.ManualClock()
    breaker = window_breaker(clock, window=CountWindow(3))  # minimum 3, not 100
    run(breaker, "fff")
    assert breaker.state is BreakerState.OPEN


def test_windows() -> None:
    assert parse_window("count:100") == CountWindow(100)
    assert parse_window(" time:60s ") == TimeWindow(60)
    assert parse_window("time:2m") == TimeWindow(120)
    assert parse_window("time:30") == TimeWindow(timedelta(seconds=30))
    assert TimeWindow(60).size == 60 and repr(CountWindow(5)) == "CountWindow(5)"
    assert vr.CountWindow is CountWindow and vr.TimeWindow is TimeWindow


# ------------------------------------------------------------- bad input --

@pytest.mark.parametrize(("fields", "error", "names"), [
    ({"failure_rate_threshold": 0}, ValueError, "failure_rate_threshold"),
    ({"failure_rate_threshold": 1.5}, ValueError, "failure_rate_threshold"),
    ({"failure_rate_threshold": math.nan}, ValueError, "failure_rate_threshold"),
    ({"failure_rate_threshold": "0.5"}, TypeError, "failure_rate_threshold"),
    ({"slow_call_rate_threshold": -0.1}, ValueError, "slow_call_rate_threshold"),
    ({"slow_call_rate_threshold": 1.01}, ValueError, "slow_call_rate_threshold"),
    ({"slow_call_duration": -1}, ValueError, "slow_call_duration"),
    ({"slow_call_duration": math.nan}, ValueError, "slow_call_duration"),
    ({"max_wait_in_half_open": 0}, ValueError, "max_wait_in_half_open"),
    ({"max_wait_in_half_open": -2}, ValueError, "max_wait_in_half_open"),
    ({"minimum_calls": 11}, ValueError, "minimum_calls"),
    ({"minimum_calls": 0}, ValueError, "minimum_calls"),
    ({"minimum_calls": 2.0}, TypeError, "minimum_calls"),
    ({"open_backoff": 3}, TypeError, "open_backoff"),
])
def test_bad_window_fields_name_the_field_and_value(
        fields: dict[str, object], error: type[Exception], names: str) -> None:
    with pytest.raises(error, match=names) as info:
        BreakerConfig(window=CountWindow(10), **fields)  # type: ignore[arg-type]
    assert "BreakerConfig" in str(info.value)
    assert repr(next(iter(fields.values()))) in str(info.value)


@pytest.mark.parametrize(("make", "error", "names"), [
    (lambda: CountWindow(0), ValueError, "size"),
    (lambda: CountWindow(65_536), ValueError, "size"),
    (lambda: CountWindow(1.5), TypeError, "size"),
    (lambda: TimeWindow(0), ValueError, "seconds"),
    (lambda: TimeWindow(3_601), ValueError, "seconds"),
    (lambda: TimeWindow(-5), ValueError, "seconds"),
    (lambda: TimeWindow(math.nan), ValueError, "seconds"),
    (lambda: TimeWindow(1.5), ValueError, "seconds"),
    (lambda: BreakerConfig(window=5), TypeError, "window"),  # type: ignore[arg-type]
    (lambda: BreakerConfig(minimum_calls=5), ValueError, "minimum_calls"),
    (lambda: BreakerConfig(slow_call_duration=1), ValueError, "slow_call_duration"),
    (lambda: parse_window("rows:5"), ValueError, "window"),
    (lambda: parse_window("count:x"), ValueError, "count"),
])
def test_bad_windows_name_the_field(make: object, error: type[Exception], names: str) -> None:
    with pytest.raises(error, match=names):
        make()  # type: ignore[operator]


def test_a_policy_judges_its_window_breaker() -> None:
    """The policy's native path records into the window and times its calls."""
    clock = vr.ManualClock()
    breaker = window_breaker(clock, window=CountWindow(10), minimum_calls=4,
                             failure_rate_threshold=0.5, slow_call_duration=1.0)
    policy = vr.PolicyBuilder("window").with_circuit_breaker(breaker).build()

    def slow() -> str:
        clock._advance_ns(NS)
        return "ok"

    assert policy.execute(slow) == "ok"
    assert breaker.slow_calls == 1 and breaker.window_calls == (1, 0, 1)
    for _ in range(2):
        with pytest.raises(vr.UnavailableError):
            policy.execute(fail)
    assert breaker.state is BreakerState.CLOSED  # 3 outcomes: below minimum_calls
    with pytest.raises(vr.UnavailableError):
        policy.execute(fail)
    assert breaker.state is BreakerState.OPEN  # 3 of 4 failed
