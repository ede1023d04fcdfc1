"""One replica of a fleet, for tests/distributed/test_fleet.py (run as a process).

Usage: ``python fleet_worker.py ROLE URL KEY_PREFIX``. The worker imports
everything, prints ``ready``, reads the fleet's start time (``time.time()``
seconds) from stdin, then runs its phases at fixed offsets from it, all
replicas together, and prints one JSON line of results per phase.

Roles: ``replica`` (every phase), ``leaver`` (the leased phase only, and it
dies half-way through it without giving its lease back), ``late`` (joins the
breaker phase after the breaker opened).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import virtrigaud_resilience as vr
from virtrigaud_resilience.distributed import (
    LeasedTokenBucket,
    RedisBreakerSync,
    RedisTokenBucket,
    connect,
)

# Phases, in seconds from the start time.
EXACT = (0.0, 0.5)
LEASED = (0.6, 1.8)
LEAVE = 1.0  # the leaver dies here
BREAKER = 2.1  # the opener trips the breaker here
LATE = BREAKER + 0.12
END = BREAKER + 1.2

EXACT_RATE = (300, 30)
LEASED_RATE = (200, 20)
LEASE = {"lease": 0.25, "refresh": 0.08}
BREAKER_CONFIG = vr.BreakerConfig(failure_threshold=2, reset_timeout=0.4, half_open_max_calls=2)
# The fleet's probe limit holds while each sync thread runs its permit timer
# within PROBE_LEAD of its schedule (before the breaker is due): room for a
# loaded machine. The late joiner's timer runs reset_timeout - PROBE_LEAD
# - (LATE - BREAKER) = 0.13 s after it read the open breaker: its main
# thread has that long to record the time left before a "busy" answer
# extends it.
PROBE_LEAD = 0.15
BREAKER_KEY = ("vm-operations", "vsphere", "prod")


def wait_until(t: float) -> None:
    delay = t - time.time()
    if delay > 0:
        time.sleep(delay)


def emit(phase: str, **results: Any) -> None:
    print(json.dumps({"phase": phase, **results}), flush=True)


def exact_phase(url: str, key: str, start: float) -> None:
    qps, burst = EXACT_RATE
    bucket = RedisTokenBucket(connect(url), key, qps=qps, burst=burst)
    wait_until(start + EXACT[0])
    first = time.time()
    admitted = 0
    while time.time() < start + EXACT[1]:
        admitted += bucket.try_acquire()
    emit("exact", admitted=admitted, first=first, last=time.time(), decided=sum(bucket._counters()))


def leased_phase(url: str, key: str, start: float, leaver: bool) -> None:
    qps, burst = LEASED_RATE
    wait_until(start + LEASED[0])
    first = time.time()
    bucket = LeasedTokenBucket(connect(url), key, qps=qps, burst=burst, **LEASE)  # type: ignore[arg-type]
    admissions: list[float] = []
    end = start + (LEAVE if leaver else LEASED[1])
    while time.time() < end:
        while bucket.try_acquire():
            admissions.append(time.time())
        time.sleep(0.0005)
    emit("leased", admissions=admissions, first=first, last=time.time(), members=bucket.members,
         qps=bucket.qps)
    if leaver:
        os._exit(0)  # a crash: no close(), the lease is not given back
    bucket.close()


def breaker_phase(url: str, key: str, start: float, role: str) -> None:
    registry = vr.BreakerRegistry(BREAKER_CONFIG)
    if role == "late":
        wait_until(start + LATE)
    sync = RedisBreakerSync(connect(url), registry, key=key, probe_lead=PROBE_LEAD)
    wait_until(start + BREAKER)
    if role == "opener":
        breaker = registry.get_or_create(*BREAKER_KEY)
        for _ in range(BREAKER_CONFIG.failure_threshold):
            try:
                breaker.call(fail)
            except vr.UnavailableError:
                pass
    opened_at = remaining = None
    while time.time() < start + END and opened_at is None:
        breaker = registry.get(*BREAKER_KEY)
        if breaker is not None and breaker.state is vr.BreakerState.OPEN:
            opened_at, remaining = time.time(), breaker.remaining_open
        else:
            time.sleep(0.001)
    probes = [0]
    closed_at = None
    breaker = registry.get(*BREAKER_KEY)
    while breaker is not None and time.time() < start + END:
        try:
            breaker.call(probe, breaker, probes)
        except vr.CircuitOpenError:
            pass
        if closed_at is None and breaker.state is vr.BreakerState.CLOSED:
            closed_at = time.time()
        if closed_at is not None and time.time() > closed_at + 0.15:
            break  # closed for good: every replica's probes are over
        time.sleep(0.002)
    emit("breaker", opened_at=opened_at, remaining=remaining, probes=probes[0],
         closed_at=closed_at, state=None if breaker is None else int(breaker.state))
    sync.close()


def fail() -> None:
    raise vr.UnavailableError("provider down")


def probe(breaker: vr.CircuitBreaker, probes: list[int]) -> None:
    if breaker.state is vr.BreakerState.HALF_OPEN:
        probes[0] += 1
    time.sleep(0.01)


def main() -> None:
    role, url, prefix = sys.argv[1:4]
    print("ready", flush=True)
    start = float(sys.stdin.readline())
    if role in ("replica", "opener"):
        exact_phase(url, prefix + ":exact", start)
    if role in ("replica", "opener", "leaver"):
        leased_phase(url, prefix + ":leased", start, leaver=role == "leaver")
    if role in ("replica", "opener", "late"):
        breaker_phase(url, prefix + ":breakers", start, role)


if __name__ == "__main__":
    main()
