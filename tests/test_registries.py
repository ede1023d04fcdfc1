"""BreakerRegistry and RateLimiterRegistry: one object per key, manual overrides, back-pressure."""

from __future__ import annotations

import asyncio
import threading

import pytest
import virtrigaud_resilience as vr
from virtrigaud_resilience import BreakerState

CLOSED, HALF_OPEN, OPEN = BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN


def _trip(cb: vr.CircuitBreaker) -> None:
    for _ in range(cb.failure_threshold):
        with pytest.raises(vr.UnavailableError):
            cb.call(_raise, vr.UnavailableError("down"))
    assert cb.state is OPEN


def _raise(exc: BaseException) -> None:
    raise exc


# --------------------------------------------------------- BreakerRegistry --


def test_get_or_create_returns_the_same_breaker(clock: vr.ManualClock) -> None:
    cfg = vr.BreakerConfig(failure_threshold=2, reset_timeout=5.0, half_open_max_calls=1)
    reg = vr.BreakerRegistry(cfg, clock=clock)
    a = reg.get_or_create("vm-operations", "vsphere", "prod")
    assert isinstance(a, vr.CircuitBreaker)
    assert reg.get_or_create("vm-operations", "vsphere", "prod") is a
    assert (a.name, a.provider_type, a.provider) == ("vm-operations", "vsphere", "prod")
    assert a.config == cfg
    assert (a.failure_threshold, a.half_open_max_calls) == (2, 1)
    assert len(reg) == 1
    assert ("vm-operations", "vsphere", "prod") in reg


def test_each_key_gets_its_own_breaker(clock: vr.ManualClock) -> None:
    reg = vr.BreakerRegistry(vr.BreakerConfig(failure_threshold=1), clock=clock)
    keys = [("vm-operations", "vsphere", "prod"), ("vm-operations", "vsphere", "dev"),
            ("vm-operations", "libvirt", "prod"), ("snapshots", "vsphere", "prod")]
    breakers = [reg.get_or_create(*k) for k in keys]
    assert len({id(b) for b in breakers}) == 4
    assert reg.list() == breakers  # creation order
    # isolation: tripping one leaves the others closed
    _trip(breakers[0])
    assert [b.state for b in breakers] == [OPEN, CLOSED, CLOSED, CLOSED]


def test_registry_breakers_share_the_registry_clock(clock: vr.ManualClock) -> None:
    reg = vr.BreakerRegistry(vr.BreakerConfig(failure_threshold=1, reset_timeout=30.0),
                             clock=clock)
    cb = reg.get_or_create("ops", "t", "p")
    _trip(cb)
    clock.advance(30.0)
    assert cb.call(lambda: 1) == 1
    assert cb.state is not OPEN


def test_default_config() -> None:
    reg = vr.BreakerRegistry()
    cb = reg.get_or_create("x")
    assert (cb.failure_threshold, cb.reset_timeout, cb.half_open_max_calls) == (10, 60.0, 3)
    assert (cb.provider_type, cb.provider) == ("", "")
    assert reg.get("x") is cb


def test_get_returns_none_for_unknown(clock: vr.ManualClock) -> None:
    reg = vr.BreakerRegistry(clock=clock)
    assert reg.get("nope", "t", "p") is None
    cb = reg.get_or_create("ops", "t", "p")
    assert reg.get("ops", "t", "p") is cb
    assert reg.get("ops", "t", "other") is None
    assert len(reg) == 1  # get never creates


def test_remove(clock: vr.ManualClock) -> None:
    reg = vr.BreakerRegistry(clock=clock)
    old = reg.get_or_create("ops", "t", "p")
    assert reg.remove("ops", "t", "p") is True
    assert reg.remove("ops", "t", "p") is False
    assert reg.get("ops", "t", "p") is None
    assert reg.list() == []
    new = reg.get_or_create("ops", "t", "p")
    assert new is not old  # a fresh breaker after removal


def test_reset_all(clock: vr.ManualClock) -> None:
    reg = vr.BreakerRegistry(vr.BreakerConfig(failure_threshold=1), clock=clock)
    a = reg.get_or_create("ops", "t", "a")
    b = reg.get_or_create("ops", "t", "b")
    c = reg.get_or_create("ops", "t", "c")
    _trip(a)
    _trip(b)
    reg.reset()
    assert [x.state for x in (a, b, c)] == [CLOSED, CLOSED, CLOSED]
    assert a.failures == 0
    assert a.call(lambda: "ok") == "ok"


def test_reset_by_key(clock: vr.ManualClock) -> None:
    reg = vr.BreakerRegistry(vr.BreakerConfig(failure_threshold=1), clock=clock)
    a = reg.get_or_create("ops", "t", "a")
    b = reg.get_or_create("ops", "t", "b")
    _trip(a)
    _trip(b)
    reg.reset("ops", "t", "a")
    assert (a.state, b.state) == (CLOSED, OPEN)


def test_force_open_by_key_holds_until_reset(clock: vr.ManualClock) -> None:
    reg = vr.BreakerRegistry(vr.BreakerConfig(reset_timeout=1.0), clock=clock)
    a = reg.get_or_create("ops", "t", "a")
    b = reg.get_or_create("ops", "t", "b")
    reg.force_open("ops", "t", "a")
    assert (a.state, b.state) == (OPEN, CLOSED)
    assert a.held_open
    calls = []
    with pytest.raises(vr.CircuitOpenError) as info:
        a.call(calls.append, 1)
    assert calls == []
    assert info.value.retry_after is None  # held: no probe is coming
    clock.advance(3600.0)  # a forced-open breaker ignores the reset timeout
    with pytest.raises(vr.CircuitOpenError):
        a.call(calls.append, 1)
    reg.reset("ops", "t", "a")
    assert a.state is CLOSED
    assert a.call(lambda: "ok") == "ok"


@pytest.mark.parametrize("op", ["reset", "force_open"])
def test_unknown_key_raises_key_error(clock: vr.ManualClock, op: str) -> None:
    reg = vr.BreakerRegistry(clock=clock)
    reg.get_or_create("ops", "t", "p")
    with pytest.raises(KeyError, match="ops"):
        getattr(reg, op)("ops", "t", "other")
    with pytest.raises(KeyError):
        getattr(reg, op)("missing")
    assert len(reg) == 1  # nothing created by the failed lookup


def test_reset_all_on_an_empty_registry_is_fine() -> None:
    vr.BreakerRegistry().reset()


def test_registry_validates() -> None:
    with pytest.raises(TypeError, match="config"):
        vr.BreakerRegistry({"failure_threshold": 3})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="clock"):
        vr.BreakerRegistry(clock="now")  # type: ignore[arg-type]


def test_get_or_create_is_thread_safe() -> None:
    reg = vr.BreakerRegistry()
    out: list[vr.CircuitBreaker] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for i in range(200):
            cb = reg.get_or_create("ops", "t", str(i % 10))
            with lock:
                out.append(cb)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(reg) == 10
    assert len({id(cb) for cb in out}) == 10


# ------------------------------------------------------ RateLimiterRegistry --


def test_one_bucket_per_provider(clock: vr.ManualClock) -> None:
    reg = vr.RateLimiterRegistry(qps=10, burst=20, clock=clock)
    a = reg.get("vsphere", "prod")
    assert isinstance(a, vr.TokenBucket)
    assert reg.get("vsphere", "prod") is a
    b = reg.get("vsphere", "dev")
    c = reg.get("libvirt", "prod")
    assert len({id(a), id(b), id(c)}) == 3
    assert (a.qps, a.burst, a.tokens) == (10.0, 20, 20.0)  # created full
    assert len(reg) == 3
    assert reg.list() == [("vsphere", "prod", a), ("vsphere", "dev", b), ("libvirt", "prod", c)]
    # isolation: draining one leaves the others full
    assert a.try_acquire(20)
    assert (b.tokens, c.tokens) == (20.0, 20.0)


def test_defaults_are_the_guides() -> None:
    reg = vr.RateLimiterRegistry()
    assert (reg.qps, reg.burst) == (10.0, 20)
    bucket = reg.get("t", "p")
    assert (bucket.qps, bucket.burst) == (10.0, 20)


def test_remove_and_recreate(clock: vr.ManualClock) -> None:
    reg = vr.RateLimiterRegistry(qps=1, burst=2, clock=clock)
    old = reg.get("t", "p")
    assert old.try_acquire(2)
    assert reg.remove("t", "p") is True
    assert reg.remove("t", "p") is False
    new = reg.get("t", "p")
    assert new is not old
    assert new.tokens == 2.0


def test_check_takes_tokens_then_raises(clock: vr.ManualClock) -> None:
    reg = vr.RateLimiterRegistry(qps=2, burst=3, clock=clock)
    for _ in range(3):
        reg.check("vsphere", "prod")
    with pytest.raises(vr.RateLimitError, match="vsphere:prod") as info:
        reg.check("vsphere", "prod")
    assert info.value.retry_after == pytest.approx(0.5)
    assert vr.is_retryable(info.value)
    reg.check("vsphere", "dev")  # another provider is unaffected


@pytest.mark.parametrize(("advance", "n"), [(0.0, 1), (0.1, 1), (0.2, 1), (0.0, 2), (0.3, 2), (0.15, 3)])
def test_check_retry_after_equals_the_reservation_wait(clock: vr.ManualClock, advance: float,
                                                       n: int) -> None:
    reg = vr.RateLimiterRegistry(qps=4, burst=3, clock=clock)
    bucket = reg.get("t", "p")
    assert bucket.try_acquire(3)
    clock.advance(advance)
    tokens_before = bucket.tokens
    with pytest.raises(vr.RateLimitError) as info:
        reg.check("t", "p", n)
    assert bucket.tokens == tokens_before  # a failed check takes nothing
    reservation = bucket.reserve(n)
    assert info.value.retry_after == pytest.approx(reservation.delay, abs=1e-9)
    assert info.value.retry_after == pytest.approx((n - tokens_before) / 4, abs=1e-9)
    reservation.cancel()


def test_check_retry_after_drives_a_retry(clock: vr.ManualClock) -> None:
    reg = vr.RateLimiterRegistry(qps=2, burst=1, clock=clock)
    calls = []

    def call_provider() -> str:
        reg.check("vsphere", "prod")
        calls.append(clock.now())
        return "ok"

    assert call_provider() == "ok"
    cfg = vr.RetryConfig(max_attempts=3, base_delay=0.01, jitter=False)
    assert vr.Retrier(cfg, clock=clock).call(call_provider) == "ok"
    assert calls == [0.0, pytest.approx(0.5)]


def test_wait_waits_for_the_token(clock: vr.ManualClock) -> None:
    reg = vr.RateLimiterRegistry(qps=10, burst=1, clock=clock)
    reg.wait("t", "p")
    assert clock.now() == 0.0
    reg.wait("t", "p")
    assert clock.now() == pytest.approx(0.1)
    reg.wait("t", "p", max_wait=0.1)  # exactly max_wait is allowed
    assert clock.now() == pytest.approx(0.2)


def test_wait_with_max_wait_raises_and_takes_nothing(clock: vr.ManualClock) -> None:
    reg = vr.RateLimiterRegistry(qps=10, burst=2, clock=clock)
    bucket = reg.get("t", "p")
    assert bucket.try_acquire(2)
    with pytest.raises(vr.RateLimitError) as info:
        reg.wait("t", "p", n=2, max_wait=0.15)
    assert clock.now() == 0.0
    assert bucket.tokens == 0.0
    assert info.value.retry_after == pytest.approx(0.2)
    reg.wait("t", "p", n=2, max_wait=0.2)
    assert clock.now() == pytest.approx(0.2)
    assert bucket.tokens == pytest.approx(0.0)


async def test_wait_async(clock: vr.ManualClock) -> None:
    reg = vr.RateLimiterRegistry(qps=5, burst=1, clock=clock)
    await reg.wait_async("t", "p")
    assert clock.now() == 0.0
    with pytest.raises(vr.RateLimitError) as info:
        await reg.wait_async("t", "p", max_wait=0.1)
    assert info.value.retry_after == pytest.approx(0.2)
    assert clock.now() == 0.0
    await reg.wait_async("t", "p", max_wait=0.2)
    assert clock.now() == pytest.approx(0.2)
    await reg.wait_async("t", "p")
    assert clock.now() == pytest.approx(0.4)


class GatedClock(vr.ManualClock):
    """A ManualClock whose async sleeps suspend until cancelled, without moving time."""

    __slots__ = ()

    async def sleep_async(self, seconds: float) -> None:
        await asyncio.Event().wait()


async def test_wait_async_cancel_gives_tokens_back() -> None:
    reg = vr.RateLimiterRegistry(qps=50, burst=2, clock=GatedClock())
    bucket = reg.get("t", "p")
    assert bucket.try_acquire(2)
    task = asyncio.create_task(reg.wait_async("t", "p", n=2))
    for _ in range(3):
        await asyncio.sleep(0)
    assert bucket.reserved == 1
    assert bucket.tokens == pytest.approx(-2.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert bucket.tokens == pytest.approx(0.0, abs=1e-6)
    assert bucket.cancelled == 1


def test_registry_validates_rate() -> None:
    with pytest.raises(ValueError, match="qps"):
        vr.RateLimiterRegistry(qps=0)
    with pytest.raises(ValueError, match="burst"):
        vr.RateLimiterRegistry(qps=1, burst=0)
    with pytest.raises(TypeError, match="clock"):
        vr.RateLimiterRegistry(clock=1)  # type: ignore[arg-type]


def test_get_is_thread_safe() -> None:
    reg = vr.RateLimiterRegistry()
    seen: list[vr.TokenBucket] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for i in range(200):
            b = reg.get("t", str(i % 10))
            with lock:
                seen.append(b)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(reg) == 10
    assert len({id(b) for b in seen}) == 10
