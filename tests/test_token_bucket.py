"""TokenBucket: GCRA admission, reservations, waiting, set_rate and counters.

Driven by ManualClock; the only real waiting is the cancellation of
acquire_async on the system clock, at most a few tens of milliseconds.
"""

from __future__ import annotations

import asyncio

import pytest
import virtrigaud_resilience as vr
from hypothesis import given, settings
from hypothesis import strategies as st

S = 1_000_000_000  # ns per second


def empty_bucket(clock: vr.ManualClock, qps: float = 10.0, burst: int = 5) -> vr.TokenBucket:
    tb = vr.TokenBucket(qps=qps, burst=burst, clock=clock)
    assert tb.try_acquire(burst)
    assert tb.tokens == 0
    return tb


# --------------------------------------------------------------- admission --


@pytest.mark.parametrize(("qps", "burst"), [(10.0, 20), (1.0, 1), (1000.0, 7), (0.5, 3)])
def test_starts_full(clock: vr.ManualClock, qps: float, burst: int) -> None:
    tb = vr.TokenBucket(qps=qps, burst=burst, clock=clock)
    assert tb.burst == burst
    assert tb.tokens == burst
    assert [tb.try_acquire() for _ in range(burst)] == [True] * burst
    assert tb.try_acquire() is False
    assert tb.tokens == 0


def test_starts_full_on_the_system_clock() -> None:
    tb = vr.TokenBucket(qps=10, burst=5)
    assert tb.tokens == 5.0
    assert tb.try_acquire(5) is True


def test_defaults_are_the_guides(clock: vr.ManualClock) -> None:
    tb = vr.TokenBucket(clock=clock)
    assert (tb.qps, tb.burst) == (10.0, 20)


@pytest.mark.parametrize("qps", [1.0, 3.0, 10.0, 7.5, 1000.0, 0.25])
def test_refills_at_exactly_qps(clock: vr.ManualClock, qps: float) -> None:
    tb = empty_bucket(clock, qps=qps, burst=2)
    interval = tb.interval_ns
    assert interval == round(S / qps)
    clock.advance((interval - 1) / S)  # one nanosecond short of a token
    assert tb.try_acquire() is False
    clock.advance(1 / S)
    assert tb.try_acquire() is True
    assert tb.try_acquire() is False
    clock.advance(1 / qps)
    assert tb.try_acquire() is True


def test_refill_is_capped_at_burst(clock: vr.ManualClock) -> None:
    tb = empty_bucket(clock, qps=10, burst=5)
    clock.advance(3600.0)
    assert tb.tokens == 5
    assert tb.try_acquire(5) is True
    assert tb.try_acquire() is False


def test_fractional_tokens(clock: vr.ManualClock) -> None:
    tb = empty_bucket(clock, qps=10, burst=5)
    clock.advance(0.25)
    assert tb.tokens == pytest.approx(2.5)
    assert tb.try_acquire(2) is True
    assert tb.try_acquire() is False
    assert tb.tokens == pytest.approx(0.5)


def test_n_tokens_at_once(clock: vr.ManualClock) -> None:
    tb = vr.TokenBucket(qps=10, burst=5, clock=clock)
    assert tb.try_acquire(3) is True
    assert tb.try_acquire(3) is False  # 2 left: all or nothing
    assert tb.tokens == 2
    assert tb.try_acquire(n=2) is True
    assert tb.tokens == 0
    clock.advance(0.5)
    assert tb.try_acquire(5) is True


@st.composite
def bucket_ops(draw: st.DrawFn) -> tuple[int, int, list[tuple[str, int]]]:
    interval = draw(st.integers(1, 10**9))
    burst = draw(st.integers(1, 8))
    ops = draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("try"), st.integers(1, burst)),
                st.tuples(st.just("reserve"), st.integers(1, burst)),
                st.tuples(st.just("advance"), st.integers(0, 3 * burst * interval)),
            ),
            max_size=40,
        )
    )
    return interval, burst, ops


@settings(max_examples=300, deadline=None)
@given(bucket_ops())
def test_matches_a_token_bucket_model(case: tuple[int, int, list[tuple[str, int]]]) -> None:
    """GCRA is exactly a token bucket: compare with one counted in nanoseconds of credit."""
    interval, burst, ops = case
    clock = vr.ManualClock()
    tb = vr.TokenBucket(qps=S / interval, burst=burst, clock=clock)
    assert tb.interval_ns == interval
    tau = burst * interval
    credit = tau  # ns of credit; one token = `interval` ns; negative = reserved ahead
    admitted = rejected = reserved = 0
    for op, value in ops:
        if op == "advance":
            before = clock.now_ns()
            clock.advance(value / S)
            credit = min(tau, credit + clock.now_ns() - before)
        elif op == "try":
            ok = credit >= value * interval
            assert tb.try_acquire(value) is ok
            if ok:
                credit -= value * interval
                admitted += 1
            else:
                rejected += 1
        else:
            need = value * interval
            delay = max(0, need - credit)
            r = tb.reserve(value)
            assert round(r.delay * S) == delay
            credit -= need
            if delay:
                reserved += 1
            else:
                admitted += 1
        assert tb.tokens == pytest.approx(credit / interval, abs=1e-9)
    assert (tb.admitted, tb.rejected, tb.reserved) == (admitted, rejected, reserved)


# ------------------------------------------------------------- reservations --


def test_reserve_on_a_full_bucket_has_no_delay(clock: vr.ManualClock) -> None:
    tb = vr.TokenBucket(qps=10, burst=5, clock=clock)
    r = tb.reserve(3)
    assert r.delay == 0.0
    assert r.tokens == 3
    assert tb.tokens == 2
    assert (tb.admitted, tb.reserved) == (1, 0)


def test_reserve_delay_is_exact(clock: vr.ManualClock) -> None:
    tb = vr.TokenBucket(qps=10, burst=5, clock=clock)
    assert all(tb.reserve().delay == 0 for _ in range(5))
    r = tb.reserve()  # the 6th token
    assert r.delay == 0.1
    assert tb.tokens == -1


def test_reserve_n_on_empty_waits_n_intervals(clock: vr.ManualClock) -> None:
    tb = empty_bucket(clock, qps=10, burst=5)
    r = tb.reserve(2)
    assert r.delay == 0.2
    assert r.time_to_act == 0.2
    assert tb.tokens == -2  # tokens go negative while reservations wait


def test_reservations_queue_fairly(clock: vr.ManualClock) -> None:
    tb = empty_bucket(clock, qps=10, burst=5)
    delays = [tb.reserve().delay for _ in range(5)]
    assert delays == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5], abs=1e-12)
    assert delays == sorted(delays) and len(set(delays)) == 5
    big = tb.reserve(5)
    assert big.delay == pytest.approx(1.0, abs=1e-12)
    after = tb.reserve()
    assert after.delay == pytest.approx(1.1, abs=1e-12)


def test_try_acquire_does_not_jump_the_queue(clock: vr.ManualClock) -> None:
    tb = empty_bucket(clock, qps=10, burst=5)
    r = tb.reserve(3)
    assert r.delay == pytest.approx(0.3, abs=1e-12)
    clock.advance(0.3)
    assert tb.try_acquire() is False  # those tokens are the reservation's
    clock.advance(0.1)
    assert tb.try_acquire() is True


def test_delay_from_now(clock: vr.ManualClock) -> None:
    tb = empty_bucket(clock, qps=10, burst=5)
    r = tb.reserve(2)
    clock.advance(0.05)
    assert r.delay == 0.2  # fixed at reservation time
    assert r.delay_from_now() == pytest.approx(0.15, abs=1e-12)
    clock.advance(1.0)
    assert r.delay_from_now() == 0.0


def test_cancel_gives_tokens_back(clock: vr.ManualClock) -> None:
    tb = empty_bucket(clock, qps=10, burst=5)
    r = tb.reserve(2)
    assert tb.tokens == -2
    assert r.cancel() == 2
    assert tb.tokens == 0
    assert tb.cancelled == 1
    assert tb.reserve().delay == 0.1  # the next reservation is first in line again


def test_cancel_keeps_tokens_reserved_after_it(clock: vr.ManualClock) -> None:
    tb = empty_bucket(clock, qps=10, burst=5)
    first = tb.reserve(1)
    later = tb.reserve(1)
    assert first.cancel() == 0  # the later reservation's time stays its own
    assert tb.tokens == -2
    assert later.delay == 0.2
    assert tb.cancelled == 0


def test_cancel_gives_back_what_later_reservations_do_not_hold(clock: vr.ManualClock) -> None:
    tb = empty_bucket(clock, qps=10, burst=5)
    first = tb.reserve(3)
    tb.reserve(1)
    assert first.cancel() == 2  # 3 reserved, minus the 1 reserved since (CancelAt)
    assert tb.tokens == -2
    assert tb.cancelled == 1


def test_cancel_in_reverse_order_gives_everything_back(clock: vr.ManualClock) -> None:
    tb = empty_bucket(clock, qps=10, burst=5)
    first = tb.reserve(2)
    second = tb.reserve(1)
    assert second.cancel() == 1
    assert first.cancel() == 2  # nothing reserved after it any more
    assert tb.tokens == 0
    assert tb.cancelled == 2


@pytest.mark.parametrize("extra", [0.0, 0.05, 10.0])
def test_cancel_after_its_time_has_come_gives_nothing(clock: vr.ManualClock, extra: float) -> None:
    tb = empty_bucket(clock, qps=10, burst=5)
    r = tb.reserve(2)
    clock.advance(r.delay + extra)
    before = tb.tokens
    assert r.cancel() == 0
    assert tb.tokens == before
    assert tb.cancelled == 0


def test_cancel_of_an_immediate_reservation_gives_nothing(clock: vr.ManualClock) -> None:
    tb = vr.TokenBucket(qps=10, burst=5, clock=clock)
    r = tb.reserve(2)
    assert r.delay == 0
    assert r.cancel() == 0  # its time came at once: the tokens are spent
    assert tb.tokens == 3


def test_cancel_is_idempotent(clock: vr.ManualClock) -> None:
    tb = empty_bucket(clock, qps=10, burst=5)
    r = tb.reserve(2)
    assert r.cancel() == 2
    assert r.cancel() == 0
    assert r.cancel() == 0
    assert tb.tokens == 0
    assert tb.cancelled == 1


# ------------------------------------------------------------------ waiting --


def test_acquire_without_wait_leaves_the_clock(clock: vr.ManualClock) -> None:
    tb = vr.TokenBucket(qps=10, burst=5, clock=clock)
    assert tb.acquire(5, timeout=0) is True
    assert clock.now_ns() == 0


@pytest.mark.parametrize(("n", "wait_ns"), [(1, S // 10), (2, S // 5), (5, S // 2)])
def test_acquire_waits_on_the_clock(clock: vr.ManualClock, n: int, wait_ns: int) -> None:
    tb = empty_bucket(clock, qps=10, burst=5)
    assert tb.acquire(n) is True
    assert clock.now_ns() == wait_ns
    assert tb.tokens == 0


@pytest.mark.parametrize(("n", "timeout"), [(1, 0.0), (1, 0.0999), (2, 0.1), (5, 0.49)])
def test_acquire_past_timeout_returns_false_at_once(
    clock: vr.ManualClock, n: int, timeout: float
) -> None:
    tb = empty_bucket(clock, qps=10, burst=5)
    rejected = tb.rejected
    assert tb.acquire(n, timeout=timeout) is False
    assert clock.now_ns() == 0
    assert tb.tokens == 0  # nothing taken
    assert tb.rejected == rejected + 1
    assert tb.reserved == 0


@pytest.mark.parametrize(("n", "timeout"), [(1, 0.1), (2, 0.2), (2, 5.0), (5, 0.5)])
def test_acquire_within_timeout_waits_and_succeeds(
    clock: vr.ManualClock, n: int, timeout: float
) -> None:
    tb = empty_bucket(clock, qps=10, burst=5)
    assert tb.acquire(n, timeout=timeout) is True
    assert clock.now_ns() == n * S // 10
    assert tb.tokens == 0
    assert tb.reserved == 1


async def test_acquire_async_timeout(clock: vr.ManualClock) -> None:
    tb = empty_bucket(clock, qps=10, burst=5)
    assert await tb.acquire_async(2, timeout=0.15) is False
    assert clock.now_ns() == 0
    assert tb.tokens == 0
    assert await tb.acquire_async(2, timeout=0.2) is True
    assert clock.now_ns() == S // 5
    assert await tb.acquire_async() is True
    assert clock.now_ns() == 3 * S // 10


async def test_acquire_async_without_wait(clock: vr.ManualClock) -> None:
    tb = vr.TokenBucket(qps=10, burst=5, clock=clock)
    assert await tb.acquire_async(5) is True
    assert clock.now_ns() == 0


class InterruptedClock(vr.ManualClock):
    """A clock whose sleeps are interrupted before any time passes."""

    __slots__ = ()

    def sleep(self, seconds: float) -> None:
        raise KeyboardInterrupt

    async def sleep_async(self, seconds: float) -> None:
        raise asyncio.CancelledError


def test_interrupted_acquire_gives_tokens_back() -> None:
    tb = empty_bucket(InterruptedClock(), qps=10, burst=5)
    with pytest.raises(KeyboardInterrupt):
        tb.acquire(3)
    assert tb.tokens == 0
    assert tb.cancelled == 1


async def test_cancelled_acquire_async_gives_tokens_back_manual_clock() -> None:
    tb = empty_bucket(InterruptedClock(), qps=10, burst=5)
    with pytest.raises(asyncio.CancelledError):
        await tb.acquire_async(3)
    assert tb.tokens == 0
    assert tb.cancelled == 1


async def test_cancelling_acquire_async_gives_tokens_back() -> None:
    tb = vr.TokenBucket(qps=0.1, burst=2)  # the system clock: a real (short) wait
    assert tb.try_acquire(2)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(tb.acquire_async(2), timeout=0.02)
    # Without the cancel the bucket would be ~2 tokens in debt.
    assert -0.5 < tb.tokens <= 2
    assert (tb.reserved, tb.cancelled) == (1, 1)


async def test_task_cancel_of_acquire_async_gives_tokens_back() -> None:
    tb = vr.TokenBucket(qps=0.1, burst=1)
    assert tb.try_acquire()
    task = asyncio.create_task(tb.acquire_async())
    await asyncio.sleep(0.01)
    assert tb.tokens < -0.5  # reserved while waiting
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert -0.5 < tb.tokens <= 1
    assert tb.cancelled == 1


def test_acquire_zero_timeout_on_the_system_clock() -> None:
    tb = vr.TokenBucket(qps=1.0, burst=1)
    assert tb.acquire(timeout=0) is True
    assert tb.acquire(timeout=0) is False


# ------------------------------------------------------------------ set_rate --


def test_set_rate_keeps_tokens_and_changes_refill(clock: vr.ManualClock) -> None:
    tb = vr.TokenBucket(qps=10, burst=20, clock=clock)
    assert tb.try_acquire(15)
    tb.set_rate(100)
    assert (tb.qps, tb.burst) == (100.0, 20)
    assert tb.tokens == pytest.approx(5)
    clock.advance(0.01)
    assert tb.tokens == pytest.approx(6)
    assert tb.try_acquire(6)
    assert not tb.try_acquire()


def test_set_rate_caps_tokens_at_the_new_burst(clock: vr.ManualClock) -> None:
    tb = vr.TokenBucket(qps=10, burst=20, clock=clock)
    tb.set_rate(10, 3)
    assert tb.burst == 3
    assert tb.tokens == 3
    assert tb.try_acquire(3)
    assert not tb.try_acquire()
    clock.advance(10.0)
    assert tb.tokens == 3


def test_set_rate_larger_burst_does_not_add_tokens(clock: vr.ManualClock) -> None:
    tb = vr.TokenBucket(qps=10, burst=5, clock=clock)
    assert tb.try_acquire(2)
    tb.set_rate(20, 40)
    assert tb.tokens == pytest.approx(3)
    clock.advance(0.5)
    assert tb.tokens == pytest.approx(13)
    clock.advance(100.0)
    assert tb.tokens == 40


def test_set_rate_keeps_reservation_debt(clock: vr.ManualClock) -> None:
    tb = empty_bucket(clock, qps=10, burst=5)
    tb.reserve(2)
    tb.set_rate(20)
    assert tb.tokens == pytest.approx(-2)
    assert tb.reserve().delay == pytest.approx(0.15, abs=1e-12)  # 3 tokens at 20/s


# ------------------------------------------------------------------ counters --


def test_counters_are_exact(clock: vr.ManualClock) -> None:
    tb = vr.TokenBucket(qps=10, burst=3, clock=clock)
    assert tb.try_acquire(2)  # admitted 1
    assert tb.try_acquire()  # admitted 2
    assert not tb.try_acquire()  # rejected 1
    r1 = tb.reserve()  # reserved 1
    tb.reserve()  # reserved 2
    assert not tb.acquire(1, timeout=0.1)  # rejected 2 (waits 0.3)
    assert r1.cancel() == 0  # a later one holds its time: not counted
    clock.advance(10.0)
    tb.reserve()  # admitted 3 (no wait)
    assert (tb.admitted, tb.rejected, tb.reserved, tb.cancelled) == (3, 2, 2, 0)
    r = tb.reserve(3)  # reserved 3
    assert r.cancel() == 3
    assert (tb.admitted, tb.rejected, tb.reserved, tb.cancelled) == (3, 2, 3, 1)


# --------------------------------------------------------------------- rates --


@pytest.mark.parametrize(
    "qps",
    [1.0, 3.0, 7.0, 10.0, 0.3, 6e8, 7e8, 1e9, vr.ratelimit.MIN_QPS],
)
def test_qps_is_rounded_to_whole_nanoseconds(clock: vr.ManualClock, qps: float) -> None:
    tb = vr.TokenBucket(qps=qps, burst=1, clock=clock)
    interval = max(1, round(1e9 / qps))
    assert tb.interval_ns == interval
    assert tb.qps == 1e9 / interval
    # the rate is off by at most half a nanosecond per token
    assert abs(tb.qps - qps) / qps <= 0.5 / interval + 1e-12


def test_repr(clock: vr.ManualClock) -> None:
    tb = vr.TokenBucket(qps=10, burst=5, clock=clock)
    assert repr(tb) == "TokenBucket(qps=10.0, burst=5, tokens=5.000)"
    assert repr(tb.reserve(2)) == "Reservation(tokens=2, delay=0.0)"


def test_subclass_keeps_working(clock: vr.ManualClock) -> None:
    class Named(vr.TokenBucket):
        __slots__ = ("label",)

        def __init__(self, label: str, **kwargs: object) -> None:
            super().__init__(**kwargs)  # type: ignore[arg-type]
            self.label = label

    tb = Named("p", qps=10, burst=2, clock=clock)
    assert tb.try_acquire(2) is True
    assert tb.try_acquire() is False
    assert tb.rejected == 1


# ------------------------------------------------------- set_rate never forgives --


def test_set_rate_keeps_a_debt_too_large_to_rescale(clock: vr.ManualClock) -> None:
    # qps 1e9 (1 ns per token) with four maximal reservations: ~4M tokens of debt.
    # Rescaled to the slowest rate, that debt in nanoseconds overflows int64; the
    # old arithmetic wrapped around and forgave it all (try_acquire() returned True).
    bucket = vr.TokenBucket(qps=1e9, burst=vr.ratelimit.MAX_BURST, clock=clock)
    for _ in range(4):
        bucket.reserve(vr.ratelimit.MAX_BURST)
    assert bucket.tokens == pytest.approx(-3 * vr.ratelimit.MAX_BURST)
    bucket.set_rate(vr.ratelimit.MIN_QPS, 1)
    assert not bucket.try_acquire()
    assert bucket.tokens < -1000
    assert bucket.retry_after() > 365 * 86400  # years: saturated, not forgiven


def test_set_rate_keeps_tokens_and_debt_in_tokens(clock: vr.ManualClock) -> None:
    bucket = vr.TokenBucket(qps=1000, burst=10, clock=clock)
    bucket.reserve(10)
    bucket.reserve(5)          # 5 tokens of debt
    bucket.set_rate(1, 10)     # a thousand times slower: still 5 tokens of debt
    assert bucket.tokens == pytest.approx(-5.0)
    clock.advance(5.0)
    assert bucket.tokens == pytest.approx(0.0)
    bucket.set_rate(100, 4)    # available capped at the new burst
    clock.advance(1.0)
    assert bucket.tokens == pytest.approx(4.0)


def test_a_reservation_made_before_set_rate_gives_nothing_back(clock: vr.ManualClock) -> None:
    bucket = vr.TokenBucket(qps=10, burst=2, clock=clock)
    bucket.try_acquire(2)
    reservation = bucket.reserve(1)
    bucket.set_rate(20, 2)
    assert reservation.cancel() == 0  # its arrival time belonged to the old rate
    assert bucket.tokens == pytest.approx(-1.0)


# ------------------------------------------------------------- huge timeouts --


@pytest.mark.parametrize("timeout", [1e300, 1e20, float(2**70), "2562047h"])
def test_acquire_timeout_beyond_any_wait_means_no_limit(clock: vr.ManualClock,
                                                        timeout: object) -> None:
    bucket = empty_bucket(clock, qps=10, burst=5)
    assert bucket.acquire(1, timeout=timeout)  # type: ignore[arg-type]
    assert clock.now() == pytest.approx(0.1)
    assert asyncio.run(bucket.acquire_async(1, timeout=timeout))  # type: ignore[arg-type]


def test_acquire_timeout_still_validated(clock: vr.ManualClock) -> None:
    bucket = empty_bucket(clock)
    for bad in (float("inf"), float("nan"), -1.0):
        with pytest.raises(ValueError, match="TokenBucket timeout"):
            bucket.acquire(1, timeout=bad)


# ----------------------------------------------------------- async with bucket --


async def test_async_with_waits_for_one_token(clock: vr.ManualClock) -> None:
    bucket = vr.TokenBucket(qps=10, burst=2, clock=clock)
    for _ in range(3):
        async with bucket as entered:
            assert entered is bucket
    assert clock.now() == pytest.approx(0.1)  # the third waited one interval
    assert bucket.tokens == pytest.approx(0.0)


async def test_async_with_cancelled_while_waiting_gives_the_token_back() -> None:
    bucket = vr.TokenBucket(qps=1, burst=1)
    assert bucket.try_acquire()

    async def limited() -> None:
        async with bucket:
            pytest.fail("entered without a token")

    task = asyncio.create_task(limited())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert bucket.cancelled == 1


# --------------------------------------------------------- subclass override --


def test_a_subclass_override_of_try_acquire_wins(clock: vr.ManualClock) -> None:
    class Never(vr.TokenBucket):
        def try_acquire(self, n: int = 1) -> bool:
            return False

    class Child(Never):
        pass

    for cls in (Never, Child):
        assert cls(qps=10, burst=5, clock=clock).try_acquire() is False
    plain = type("Plain", (vr.TokenBucket,), {})(qps=10, burst=5, clock=clock)
    assert plain.try_acquire(n=5) is True  # keyword n, on the native fast path
