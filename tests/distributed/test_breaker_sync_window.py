"""RedisBreakerSync with window-mode breakers (issue 22): the fleet shares the
state, each replica judges its own window."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import virtrigaud_resilience as vr
from virtrigaud_resilience.distributed import RedisBreakerSync, connect

CONFIG = vr.BreakerConfig(window=vr.CountWindow(4), minimum_calls=4, failure_rate_threshold=0.5,
                          reset_timeout=0.2, half_open_max_calls=1)
VM = ("vm-operations", "vsphere", "prod")


def eventually(condition: Callable[[], bool], within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.002)


def fail() -> None:
    raise vr.UnavailableError("provider down")


def run(breaker: vr.CircuitBreaker, pattern: str) -> None:
    """One call per character: 'f' fails, 's' succeeds."""
    for c in pattern:
        if c == "f":
            with pytest.raises(vr.UnavailableError):
                breaker.call(fail)
        else:
            breaker.call(lambda: None)


def test_each_replica_judges_its_own_window_and_the_fleet_shares_the_opening(
        redis_url: str, key: str) -> None:
    a, b = vr.BreakerRegistry(CONFIG), vr.BreakerRegistry(CONFIG)
    with RedisBreakerSync(connect(redis_url), a, key=key, permit_ttl=0.3, probe_lead=0.05), \
            RedisBreakerSync(connect(redis_url), b, key=key, permit_ttl=0.3, probe_lead=0.05):
        time.sleep(0.1)  # subscribed
        mine, theirs = a.get_or_create(*VM), b.get_or_create(*VM)
        run(mine, "sfs")
        run(theirs, "ff")
        # Five outcomes in the fleet, 3 of them failures: neither window holds 4 yet.
        assert mine.window_calls == (3, 1, 0) and theirs.window_calls == (2, 2, 0)
        assert mine.state is vr.BreakerState.CLOSED and theirs.state is vr.BreakerState.CLOSED
        run(mine, "f")  # 2 of 4 failed in its own window: opens, and the fleet with it
        assert mine.state is vr.BreakerState.OPEN
        eventually(lambda: theirs.state is vr.BreakerState.OPEN, within=0.5)
        assert theirs.failures_total == 2  # the fleet's opening counted nothing there
