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
    # A full reset timeout again, everywhere (once the reopening reached each:
    # until then a peer's breaker is kept open a probe lead at a time).
    eventually(lambda: fleet.all_in(vr.BreakerState.OPEN) and min(
        r.get(*VM).remaining_open for r in fleet.registries) > 0.1,  # type: ignore[union-attr]
        within=1.0)


def permit_holder(client: redis.Redis, key: str) -> str:
    state = client.hget(key, json.dumps(list(VM), separators=(",", ":")))
    return "" if state is None else str(json.loads(state).get("p", ""))


def test_a_dead_probers_permit_passes_to_another(redis_url: str, key: str) -> None:
    fleet = Fleet(redis_url, key, 2)
    client = redis.Redis.from_url(redis_url)
    try:
        time.sleep(0.1)
        trip(fleet.registries[0])
        eventually(lambda: fleet.all_in(vr.BreakerState.OPEN))
        # Both want a probe (a call each was refused); the first to ask gets
        # the permit: stop it at once, as if it died before its call.
        for registry in fleet.registries:
            with pytest.raises(vr.CircuitOpenError):
                registry.get(*VM).call(lambda: None)  # type: ignore[union-attr]
        eventually(lambda: permit_holder(client, key) != "")
        holder = [sync.member for sync in fleet.syncs].index(permit_holder(client, key))
        fleet.syncs[holder].close()
        other = fleet.registries[1 - holder].get(*VM)
        assert other is not None
        # Unused, the permit lapses a lead (0.05 s) after it was due; the other
        # process, whose call still wants it, takes it and probes.
        eventually(lambda: permit_holder(client, key) == fleet.syncs[1 - holder].member,
                   within=1.0)
        eventually(lambda: other.remaining_open == 0, within=1.0)
        other.call(lambda: None)
        assert other.state is vr.BreakerState.CLOSED
    finally:
        fleet.close()
        client.close()


SLOW = vr.BreakerConfig(failure_threshold=1, reset_timeout=0.5, half_open_max_calls=1)


@pytest.mark.parametrize("permit_to", ["caller", "idle"])
def test_a_caller_sees_it_closed_within_two_reset_timeouts_whoever_holds_the_permit(
        redis_url: str, key: str, permit_to: str) -> None:
    """A trips the breaker and keeps calling a healthy provider; B made one
    call while it was open (so it wanted a probe once) and then none."""
    client = redis.Redis.from_url(redis_url)
    a, b = vr.BreakerRegistry(SLOW), vr.BreakerRegistry(SLOW)
    with RedisBreakerSync(connect(redis_url), a, key=key, probe_lead=0.05), \
            RedisBreakerSync(connect(redis_url), b, key=key, probe_lead=0.05) as sync_b:
        time.sleep(0.1)
        breaker = a.get_or_create(*VM)
        with pytest.raises(vr.UnavailableError):
            breaker.call(fail)
        tripped = time.monotonic()
        eventually(lambda: (p := b.get(*VM)) is not None and p.state is vr.BreakerState.OPEN)
        with pytest.raises(vr.CircuitOpenError):
            b.get(*VM).call(lambda: None)  # type: ignore[union-attr]
        if permit_to == "idle":  # B asks first (A has not called yet) and never calls again
            eventually(lambda: permit_holder(client, key) == sync_b.member, within=1.0)
        while breaker.state is not vr.BreakerState.CLOSED and time.monotonic() - tripped < 3:
            try:
                breaker.call(lambda: None)
            except vr.CircuitOpenError:
                time.sleep(0.002)
        closed_after = time.monotonic() - tripped
        assert breaker.state is vr.BreakerState.CLOSED
        assert closed_after < 2 * SLOW.reset_timeout
        eventually(lambda: b.get(*VM).state is vr.BreakerState.CLOSED)  # type: ignore[union-attr]
    client.close()


def test_a_missed_close_is_read_from_the_hash_not_undone(redis_url: str, key: str) -> None:
    from virtrigaud_resilience.distributed.breaker_sync import BREAKERS_LUA

    fleet = Fleet(redis_url, key, 2)
    admin = redis.Redis.from_url(redis_url)
    try:
        time.sleep(0.1)
        trip(fleet.registries[0])
        eventually(lambda: fleet.all_in(vr.BreakerState.OPEN))
        # The fleet's breaker closes and every process misses the message
        # (published on a channel nobody hears); then the subscriptions drop.
        bid = json.dumps(list(VM), separators=(",", ":"))
        BREAKERS_LUA.run(admin, key, "close", "nobody-listens", bid, "elsewhere")
        admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        # Resubscribed at once, each reads the close from the hash: nobody
        # publishes its stale open again.
        eventually(lambda: fleet.all_in(vr.BreakerState.CLOSED), within=1.0)
        time.sleep(0.3)
        assert fleet.all_in(vr.BreakerState.CLOSED)
        assert json.loads(admin.hget(key, bid))["s"] == "closed"  # type: ignore[arg-type]
    finally:
        fleet.close()
        admin.close()


def test_opens_reach_peers_across_a_pubsub_client_kill(fleet: Fleet) -> None:
    admin = redis.Redis.from_url(fleet.url)
    fleet.registries[2].get_or_create(*VM)
    admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    started = time.monotonic()
    trip(fleet.registries[0])
    eventually(lambda: fleet.all_in(vr.BreakerState.OPEN), within=1.0)
    assert time.monotonic() - started < 1.0
    # Subscribed again: the next transition arrives by message.
    time.sleep(0.1)
    fleet.registries[1].reset(*VM)
    eventually(lambda: fleet.all_in(vr.BreakerState.CLOSED), within=1.0)
    admin.close()


def test_a_silent_subscription_is_found_by_its_health_check(
        redis_url: str, key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from virtrigaud_resilience.distributed import breaker_sync

    monkeypatch.setattr(breaker_sync, "HEALTH_INTERVAL", 0.1)
    registry = vr.BreakerRegistry(CONFIG)
    sync = RedisBreakerSync(connect(redis_url), registry, key=key)
    admin = redis.Redis.from_url(redis_url)
    try:
        time.sleep(0.2)
        # Pongs flow: the subscription is kept (the same pub/sub client).
        before = {c["id"] for c in admin.client_list() if c.get("sub") == "1"}
        time.sleep(0.5)
        after = {c["id"] for c in admin.client_list() if c.get("sub") == "1"}
        assert before & after, "a healthy subscription was dropped"
        # Silent (its PINGs get no answer, as on a half-open connection):
        # dropped and made again within two health intervals.
        monkeypatch.setattr(redis.client.PubSub, "ping", lambda self, message=None: None)
        started = time.monotonic()
        eventually(lambda: not ({c["id"] for c in admin.client_list()
                                 if c.get("sub") == "1"} & after), within=2.0)
        assert time.monotonic() - started < 1.0  # within two health intervals, and a bit
    finally:
        sync.close()
        admin.close()


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

