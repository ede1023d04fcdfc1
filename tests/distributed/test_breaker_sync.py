"""RedisBreakerSync in one process: several registries, each with its own client and sync.

(test_fleet.py runs replicas as processes.) Breakers reset after 0.2 s;
the probe permit lives 0.3 s.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
import redis.asyncio
import virtrigaud_resilience as vr
from virtrigaud_resilience.distributed import RedisBreakerSync, connect

CONFIG = vr.BreakerConfig(failure_threshold=1, reset_timeout=0.2, half_open_max_calls=1)
VM = ("vm-operations", "vsphere", "prod")


def eventually(condition: Callable[[], bool], within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.002)


class Fleet:
    """Registries joined by syncs on one key."""

    def __init__(self, url: str, key: str, size: int, **options: Any) -> None:
        self.url, self.key, self.options = url, key, options
        self.registries: list[vr.BreakerRegistry] = []
        self.syncs: list[RedisBreakerSync] = []
        for _ in range(size):
            self.join()

    def join(self) -> vr.BreakerRegistry:
        registry = vr.BreakerRegistry(CONFIG)
        options = {"permit_ttl": 0.3, "probe_lead": 0.05, **self.options}
        self.syncs.append(RedisBreakerSync(connect(self.url), registry, key=self.key, **options))
        self.registries.append(registry)
        return registry

    def states(self) -> list[vr.BreakerState | None]:
        return [None if (b := r.get(*VM)) is None else b.state for r in self.registries]

    def all_in(self, state: vr.BreakerState) -> bool:
        return all(s is state for s in self.states())

    def close(self) -> None:
        with ThreadPoolExecutor(len(self.syncs)) as pool:  # each waits for its threads
            list(pool.map(RedisBreakerSync.close, self.syncs))


@pytest.fixture
def fleet(request: pytest.FixtureRequest, redis_url: str, key: str) -> Iterator[Fleet]:
    """Three registries; a test may pass options with indirect parametrization."""
    f = Fleet(redis_url, key, 3, **getattr(request, "param", {}))
    time.sleep(0.1)  # subscribed
    yield f
    f.close()


def fail() -> None:
    raise vr.UnavailableError("provider down")


def trip(registry: vr.BreakerRegistry) -> vr.CircuitBreaker:
    breaker = registry.get_or_create(*VM)
    with pytest.raises(vr.UnavailableError):
        breaker.call(fail)
    return breaker


def test_an_open_breaker_opens_everywhere_with_the_same_time_left(fleet: Fleet) -> None:
    breaker = trip(fleet.registries[0])
    eventually(lambda: fleet.all_in(vr.BreakerState.OPEN), within=0.5)  # 0.1 s: compare_redis.py
    left = [r.get(*VM).remaining_open for r in fleet.registries]  # type: ignore[union-attr]
    assert max(left) - min(left) < 0.15
    # A peer's breaker opened by the fleet counts a transition, not failures.
    peer = fleet.registries[1].get(*VM)
    assert peer is not None and peer.failures_total == 0 and peer.transitions[2] == 1
    with pytest.raises(vr.CircuitOpenError) as info:
        peer.call(lambda: None)
    assert info.value.retry_after is not None and 0 < info.value.retry_after <= 0.2
    assert breaker.failures_total == 1


# The probe limit holds while each sync thread runs its permit timer within
# probe_lead of its schedule (before the breaker is due): 0.15 s of the 0.2 s
# reset timeout lets a loaded machine run it late without a second prober.
@pytest.mark.parametrize("fleet", [{"probe_lead": 0.15}], indirect=True)
def test_one_process_probes_and_its_success_closes_the_fleet(fleet: Fleet) -> None:
    trip(fleet.registries[0])
    eventually(lambda: fleet.all_in(vr.BreakerState.OPEN))
    probes: list[int] = []

    def caller(i: int) -> None:
        breaker = fleet.registries[i].get(*VM)
        assert breaker is not None
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and breaker.state is not vr.BreakerState.CLOSED:
            try:
                breaker.call(lambda: probes.append(i) or time.sleep(0.02))
            except vr.CircuitOpenError:
                time.sleep(0.002)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(probes) == 1  # half_open_max_calls for the whole fleet
    eventually(lambda: fleet.all_in(vr.BreakerState.CLOSED))


def test_a_failed_probe_reopens_the_fleet(fleet: Fleet) -> None:
    trip(fleet.registries[0])
    eventually(lambda: fleet.all_in(vr.BreakerState.OPEN))
    time.sleep(0.2)
    prober = None
    for _ in range(300):
        for registry in fleet.registries:
            breaker = registry.get(*VM)
            assert breaker is not None
            try:
                breaker.call(fail)
            except vr.CircuitOpenError:
                continue
            except vr.UnavailableError:
                prober = breaker
                break
        if prober is not None:
            break
        time.sleep(0.002)
    assert prober is not None and prober.state is vr.BreakerState.OPEN
    eventually(lambda: fleet.all_in(vr.BreakerState.OPEN))
    left = [r.get(*VM).remaining_open for r in fleet.registries]  # type: ignore[union-attr]
    assert min(left) > 0.1  # a full reset timeout again, everywhere


def test_a_dead_probers_permit_passes_to_another(redis_url: str, key: str) -> None:
    fleet = Fleet(redis_url, key, 2)
    client = redis.Redis.from_url(redis_url)

    def permit_holder() -> str:
        state = client.hget(key, json.dumps(list(VM), separators=(",", ":")))
        return "" if state is None else str(json.loads(state)["p"])

    try:
        time.sleep(0.1)
        trip(fleet.registries[0])
        eventually(lambda: fleet.all_in(vr.BreakerState.OPEN))
        # The first to ask gets the permit; stop it at once, as if it died.
        eventually(lambda: permit_holder() != "")
        holder = [sync.member for sync in fleet.syncs].index(permit_holder())
        fleet.syncs[holder].close()
        other = fleet.registries[1 - holder].get(*VM)
        assert other is not None
        # The other stays open while the permit lives (0.3 s), then takes it and probes.
        time.sleep(0.15)
        assert other.state is vr.BreakerState.OPEN and other.remaining_open > 0
        eventually(lambda: other.remaining_open == 0, within=1.0)
        assert permit_holder() == fleet.syncs[1 - holder].member
        other.call(lambda: None)
        assert other.state is vr.BreakerState.CLOSED
    finally:
        fleet.close()


def test_a_late_joiner_reads_the_open_breaker(fleet: Fleet) -> None:
    trip(fleet.registries[0])
    eventually(lambda: fleet.all_in(vr.BreakerState.OPEN))
    late = fleet.join()
    eventually(lambda: (b := late.get(*VM)) is not None and b.state is vr.BreakerState.OPEN,
               within=0.5)
    breaker = late.get(*VM)
    assert breaker is not None and 0 < breaker.remaining_open <= 0.2


def test_force_open_and_reset_are_fleet_wide(fleet: Fleet) -> None:
    fleet.registries[1].get_or_create(*VM)
    fleet.registries[1].force_open(*VM)
    eventually(lambda: fleet.all_in(vr.BreakerState.OPEN))
    time.sleep(0.3)  # held open: never due
    assert fleet.all_in(vr.BreakerState.OPEN)
    assert all(r.get(*VM).held_open for r in fleet.registries)  # type: ignore[union-attr]
    fleet.registries[2].reset(*VM)
    eventually(lambda: fleet.all_in(vr.BreakerState.CLOSED))


def test_the_hot_path_never_waits_on_redis(fleet: Fleet) -> None:
    # Calls through a synced breaker are native: a paused Redis is not on their path.
    breaker = fleet.registries[0].get_or_create(*VM)
    started = time.perf_counter()
    for _ in range(10_000):
        breaker.call(lambda: None)
    assert time.perf_counter() - started < 1.0


def test_bad_arguments(redis_url: str, key: str) -> None:
    registry = vr.BreakerRegistry()
    client = connect(redis_url)
    with pytest.raises(TypeError, match="sync client"):
        RedisBreakerSync(redis.asyncio.Redis.from_url(redis_url), registry)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="registry must be a BreakerRegistry, got dict"):
        RedisBreakerSync(client, {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key must be a non-empty str, got ''"):
        RedisBreakerSync(client, registry, key="")
    for field, value in (("probe_lead", 0), ("probe_lead", float("nan")), ("permit_ttl", -1),
                         ("permit_ttl", float("inf"))):
        with pytest.raises(ValueError, match=f"{field} must be"):
            RedisBreakerSync(client, registry, key=key, **{field: value})
    with pytest.raises(TypeError, match="probe_lead must be a number, got str"):
        RedisBreakerSync(client, registry, key=key, probe_lead="1")  # type: ignore[arg-type]

