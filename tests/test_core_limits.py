"""The native core at the edges of its ranges: tiny leases, huge openings, saturated refunds."""

from __future__ import annotations

import pytest
import virtrigaud_resilience as vr
from virtrigaud_resilience import _core
from virtrigaud_resilience.errors import MAX_RETRY_AFTER


def test_a_lease_under_half_a_nanosecond_is_still_a_lease() -> None:
    # round(lease * 1e9) made it 0, which the core reads as "no lease".
    breaker = vr.CircuitBreaker("tiny-lease", config=vr.BreakerConfig(half_open_lease=1e-10))
    assert breaker.half_open_lease == pytest.approx(1e-9)
    assert breaker.config.half_open_lease == 1e-10


def test_a_lease_reclaims_a_lost_probe_even_when_tiny() -> None:
    clock = vr.ManualClock()
    config = vr.BreakerConfig(failure_threshold=1, reset_timeout=1.0, half_open_max_calls=1,
                              half_open_lease=1e-10)
    breaker = vr.CircuitBreaker("tiny-lease-reclaim", config=config, clock=clock)
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)
    clock.advance(1.0)
    lost = breaker.try_acquire()  # the probe whose outcome never comes
    assert lost is not None
    clock.advance(1e-9)
    assert breaker.call(lambda: "reclaimed") == "reclaimed"
    assert breaker.reclaimed == 1
    lost.release()


@pytest.mark.parametrize("open_for_ns", [2**60, int(1.5e18)])
def test_an_opening_beyond_the_largest_retry_after_still_rejects_with_circuit_open(
        open_for_ns: int) -> None:
    # An opening timed from elsewhere (a peer's, through _open_for_ns) may end more than
    # 1e9 s from now; the rejection raised ValueError from retry_after's validation.
    breaker = vr.CircuitBreaker("long-open", clock=vr.ManualClock())
    breaker._open_for_ns(open_for_ns)
    with pytest.raises(vr.CircuitOpenError) as info:
        breaker.call(lambda: None)
    assert info.value.retry_after == MAX_RETRY_AFTER
    assert breaker.rejected == 1


def test_debt_after_saturating_refunds_is_none() -> None:
    # Refunds of tokens nothing took saturate the arrival time at INT64_MIN;
    # debt = tat - now then overflowed (undefined; in practice ~2**63 ns of debt).
    clock = vr.ManualClock()
    clock.advance(1.0)
    interval = _core.TOKEN_BUCKET_MAX_INTERVAL_NS
    burst = _core.TOKEN_BUCKET_MAX_TAU_NS // interval
    bucket = vr.TokenBucket(1e9 / interval, burst=burst, clock=clock)
    config = bucket.reserve(1)._config  # the packed rate a refund must name
    for _ in range(64):
        bucket._refund(burst, 2**62, config)
    assert bucket._debt_ns() == 0
    assert bucket.tokens == burst
