"""LeasedTokenBucket against a real redis-server: native decisions, fair shares, the bound.

Several members of one fleet live in this process here (each bucket is a
member); tests/distributed/test_fleet.py runs them as separate processes.
Leases are short (refresh 50 ms, lease 0.2 s) so shares move quickly.
"""

from __future__ import annotations

import asyncio
import time
import types
import uuid
from collections.abc import Callable

import pytest
import redis
import redis.asyncio
import virtrigaud_resilience as vr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from virtrigaud_resilience.distributed import LeasedTokenBucket, connect
from virtrigaud_resilience.distributed.leased import LEASE

FAST = {"lease": 0.2, "refresh": 0.05}


def member(url: str, key: str, qps: float = 90, burst: int = 9, **options: object) -> LeasedTokenBucket:
    return LeasedTokenBucket(connect(url), key, qps=qps, burst=burst,
                             **{**FAST, **options})  # type: ignore[arg-type]


def run_for(seconds: float, step: Callable[[int], None]) -> None:
    """Calls step(i) about every millisecond for ``seconds``."""
    end, i = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        step(i)
        i += 1
        time.sleep(0.001)


def test_a_leased_bucket_is_a_native_token_bucket(redis_url: str, key: str) -> None:
    b = member(redis_url, key)
    try:
        assert isinstance(b, vr.TokenBucket)
        # try_acquire is the native method itself, not a Python override.
        assert not isinstance(LeasedTokenBucket.__dict__.get("try_acquire"), types.FunctionType)
        assert type(LeasedTokenBucket.try_acquire) is type(vr.TokenBucket.try_acquire)
        policy = vr.PolicyBuilder("leased").with_rate_limiter(b).build()
        time.sleep(0.05)
        assert policy.execute(lambda: 42) == 42
        with pytest.raises(TypeError, match="rate comes from the fleet's lease"):
            b.set_rate(10)
    finally:
        b.close()


def test_a_lone_member_gets_the_whole_rate_starting_empty(redis_url: str, key: str) -> None:
    t0 = time.monotonic()  # the lease (in the constructor) is granted after this
    b = member(redis_url, key, qps=50, burst=5)
    try:
        assert b.shared and b.members == 1
        assert b.qps == pytest.approx(50, rel=1e-6) and b.burst == 5
        # Joining brings no tokens (not the burst of 5): only those refilled
        # at 50/s since the lease (+ 1 for the clocks' rounding).
        assert b.tokens <= 1 + (time.monotonic() - t0) * 50
        granted = b.try_acquire()
        if (time.monotonic() - t0) * 50 < 1:  # not a whole token refilled yet: certain
            assert not granted
        time.sleep(0.12)
        assert b.try_acquire(5)  # refilled at the fleet's rate
    finally:
        b.close()


def test_shares_are_max_min_fair_by_demand(redis_url: str, key: str) -> None:
    greedy_a, modest, greedy_b = (member(redis_url, key) for _ in range(3))
    buckets = (greedy_a, modest, greedy_b)
    worst_sum = [0.0]
    modest_next = [time.monotonic()]

    def step(i: int) -> None:
        greedy_a.try_acquire()
        greedy_b.try_acquire()
        # 10 tokens/s, less than a third of 90, paced by time (not by the
        # loop's speed, which a loaded machine slows; a late one catches up).
        if time.monotonic() >= modest_next[0]:
            modest.try_acquire()
            modest_next[0] += 0.1
        worst_sum[0] = max(worst_sum[0], sum(b.qps for b in buckets))

    try:
        run_for(1.0, step)
        assert all(b.members == 3 for b in buckets)
        # The modest member gets about what it asks for; the greedy ones split the rest.
        assert 4 < modest.qps < 20
        assert greedy_a.qps == pytest.approx(greedy_b.qps, rel=0.25)
        assert greedy_a.qps + greedy_b.qps + modest.qps == pytest.approx(90, rel=0.1)
        # The shares held never add up to more than the fleet's rate (+ the
        # slowest native rate a member without a share keeps).
        assert worst_sum[0] <= 90 + 3 * vr.ratelimit.MIN_QPS
        assert sum(b.burst for b in buckets) <= 9
    finally:
        for b in buckets:
            b.close()


def test_a_closed_member_gives_its_share_back_at_once(redis_url: str, key: str) -> None:
    a, b = member(redis_url, key), member(redis_url, key)
    try:
        run_for(0.5, lambda i: (a.try_acquire(), b.try_acquire()))
        assert a.qps == pytest.approx(45, rel=0.2)
        b.close()
        assert b.mode == "closed" and not b.try_acquire()
        deadline = time.monotonic() + 2.0
        while a.members != 1:  # a refresh of a (every 50 ms)
            assert time.monotonic() < deadline, "a never saw b leave"
            time.sleep(0.005)
        assert a.qps == pytest.approx(90, rel=0.05) and a.members == 1
    finally:
        a.close()
        b.close()  # idempotent


def test_the_fleet_stays_within_the_bound_as_members_join_and_leave(redis_url: str,
                                                                      key: str) -> None:
    # Members come and go while everyone asks for tokens as fast as it can;
    # the fleet's admissions never exceed qps * t + burst.
    qps, burst = 200, 10
    members: list[LeasedTokenBucket] = [member(redis_url, key, qps=qps, burst=burst)]
    admitted = 0
    started = time.monotonic()

    def step(i: int) -> None:
        nonlocal admitted
        if i in (60, 120):
            members.append(member(redis_url, key, qps=qps, burst=burst))
        if i == 250:
            members.pop(0).close()
        for b in members:
            while b.try_acquire():
                admitted += 1

    try:
        run_for(0.5, step)
        elapsed = time.monotonic() - started
        assert admitted <= qps * elapsed + burst
        assert admitted >= 0.6 * qps * elapsed  # and the fleet used most of its rate
    finally:
        for b in members:
            b.close()


async def test_an_asyncio_client_leases_in_a_task(redis_url: str, key: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    b = LeasedTokenBucket(client, key, qps=40, burst=4, **FAST)  # type: ignore[arg-type]
    assert b.mode == "starting" and not b.try_acquire()  # no share before start()
    async with b:
        assert b.shared and b.qps == pytest.approx(40, rel=1e-6)
        other = await LeasedTokenBucket(client, key, qps=40, burst=4, **FAST).start()  # type: ignore[arg-type]
        for _ in range(50):
            b.try_acquire()
            other.try_acquire()
            await asyncio.sleep(0.01)
        assert b.members == 2 and b.qps == pytest.approx(20, rel=0.25)
        assert await b.acquire_async(timeout=1.0)
        await other.aclose()
    assert b.mode == "closed"
    with pytest.raises(TypeError, match="sync client"):
        b.close()
    await client.aclose()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from([0.0, 1.0, 5.0, 30.0, 90.0, 1e4])),
                min_size=1, max_size=40))
def test_the_lease_script_never_promises_more_than_the_fleets_rate(
        redis_url: str, calls: list[tuple[int, float]]) -> None:
    # The core of the bound, at the script: four members ask in any order
    # with any demands. With a lease long enough that nothing expires, every
    # lease a member was ever granted is still counted for it (it may still
    # be using it), and what is counted adds up to at most the fleet's rate
    # and burst.
    qps, burst, lease_us = 90.0, 9, 60_000_000
    client = redis.Redis.from_url(redis_url)
    key = f"test:{uuid.uuid4().hex}"
    granted: dict[int, tuple[float, int]] = {}
    for who, demand in calls:
        rate, share_burst, *_ = LEASE.run(client, key, "lease", f"m{who}", repr(demand), qps,
                                          burst, lease_us, "", 0)
        old_rate, old_burst = granted.get(who, (0.0, 0))
        granted[who] = (max(old_rate, float(rate)), max(old_burst, int(share_burst)))
        counted = {}
        for member, value in client.hgetall(key).items():
            if member == b"~epoch":
                continue
            f = [float(x) for x in value.split()]
            counted[int(member[1:])] = (max(f[1], f[4]), max(f[2], f[5]))
        for member, (most_rate, most_burst) in granted.items():
            assert counted[member][0] >= most_rate - 1e-9
            assert counted[member][1] >= most_burst
        assert sum(r for r, _ in counted.values()) <= qps + 1e-9
        assert sum(b for _, b in counted.values()) <= burst
    client.delete(key)


def test_leases_in_use_never_add_up_to_more_than_the_rate_as_they_expire(
        redis_url: str, key: str) -> None:
    # The same at the script, in real time: A lowers its share twice within
    # a lease. Every lease a member was granted counts until it expires
    # (granted + lease); at no moment may those in force exceed the rate.
    qps, lease = 90.0, 0.4
    client = redis.Redis.from_url(redis_url)
    leases: list[tuple[str, float, float]] = []  # (member, rate, granted no later than)

    def server_time() -> float:
        seconds, micros = client.time()
        return seconds + micros / 1e6

    def ask(member: str, demand: float) -> float:
        before = server_time()
        rate = float(LEASE.run(client, key, "lease", member, repr(demand), qps, 9,
                               round(lease * 1e6))[0])
        leases.append((member, rate, before))
        now = server_time()
        in_force: dict[str, float] = {}
        for who, granted, at in leases:
            if at + lease > now:  # certainly not expired yet
                in_force[who] = max(in_force.get(who, 0.0), granted)
        assert sum(in_force.values()) <= qps + 1e-9, (leases, now)
        return rate

    assert ask("a", 90) == 90
    assert ask("b", 90) == 0  # a holds it all
    time.sleep(0.05)
    assert ask("a", 90) == 45  # lowered to its fair share; its 90 still counts
    time.sleep(0.05)
    ask("a", 9)  # asks for less again, within the same lease
    time.sleep(0.32)  # the 90 lease has expired, the 45 one has not
    ask("b", 90)
    time.sleep(0.05)
    ask("b", 90)
