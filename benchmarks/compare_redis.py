"""Fleet-wide rate limits on Redis, side by side, in one run against one redis-server.

Cases, interleaved round by round (compare.py's machinery; a case's figure
is its best round), all against the same server and, where they take one,
the same redis-py client:

- a bare redis-py ``GET`` round trip (``client.get(key)``): the yardstick;
- our exact bucket, ``RedisTokenBucket.try_acquire()`` (sync), and a GET
  sent the way its decisions are (pre-encoded, over a held pooled
  connection), which shows what the script itself costs;
- ``limits`` on Redis (FixedWindow, its fastest strategy, and MovingWindow)
  and ``pyrate-limiter``'s ``RedisBucket``;
- our exact bucket on an asyncio client, many tasks of one loop deciding
  concurrently (``--tasks``), as decisions per second; and an asyncio GET
  by as many tasks, for reference;
- our leased bucket, ``LeasedTokenBucket.try_acquire()``, against a local
  ``TokenBucket.try_acquire()``;
- an outage (on a redis-server of its own): the decision that meets a
  killed or paused server, the slowest of the next ones, and the time until
  shared accounting resumes once it is back.

    python benchmarks/compare_redis.py                 # starts a redis-server on a free port
    python benchmarks/compare_redis.py --url redis://127.0.0.1:6379/0
    python benchmarks/compare_redis.py --quick --check

Rates are set so that no decision is refused (the cost of deciding is what
is measured). ``--check`` exits 1 if a target of the issue does not hold.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import virtrigaud_resilience as vr
from virtrigaud_resilience.bench import Case, Suite, Target, measure
from virtrigaud_resilience.bench.report import all_held, print_report

GROUP_SYNC, GROUP_ASYNC, GROUP_LEASED = "redis sync", "redis async", "leased"
BARE_GET = "bare redis-py GET round trip"
OURS_SYNC = "virtrigaud RedisTokenBucket.try_acquire()"
HELD_GET = "GET pre-encoded on a held connection (our transport)"
OURS_ASYNC = "virtrigaud await RedisTokenBucket.try_acquire_async()"
ASYNC_GET = "await redis.asyncio GET (same tasks)"
LOCAL = "local TokenBucket.try_acquire()"
OURS_LEASED = "virtrigaud LeasedTokenBucket.try_acquire()"
LIMITS_FIXED = "limits FixedWindow.hit() on Redis"
LIMITS_MOVING = "limits MovingWindow.hit() on Redis"
PYRATE = "pyrate-limiter RedisBucket try_acquire()"
HUGE = {"qps": 1e9, "burst": 1_000_000}


@contextlib.contextmanager
def server(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    from virtrigaud_resilience.distributed.testing import RedisServer

    with RedisServer() as started:
        yield started.url


def build(suite: Suite, url: str, tasks: int, cleanup: list[Any]) -> list[Target]:
    """Adds the cases; ``cleanup`` gets what to close before the server stops."""
    import redis

    from virtrigaud_resilience.distributed import LeasedTokenBucket, RedisTokenBucket, connect
    from virtrigaud_resilience.distributed.scripts import Pipe, pack_command

    prefix = f"bench:{uuid.uuid4().hex}"
    client = connect(url)
    client.set(prefix, "v")
    suite.add(GROUP_SYNC, BARE_GET, "get(key)", get=client.get, key=prefix)
    exact = RedisTokenBucket(client, prefix + ":exact", **HUGE)
    suite.add(GROUP_SYNC, OURS_SYNC, "try_acquire()", try_acquire=exact.try_acquire)
    # For transparency: a GET sent as our decisions are (pre-encoded, over a
    # held pooled connection), so the script's own cost shows.
    pipe, packed_get = Pipe(client), pack_command("GET", prefix)
    suite.add(GROUP_SYNC, HELD_GET, "send(packed)", send=pipe._send, packed=packed_get)
    _peers(suite, url, prefix, cleanup)

    # asyncio clients belong to the loop that first uses them: made in it.
    state: dict[str, Any] = {}

    async def decide_concurrently(n: int) -> None:
        if "bucket" not in state:
            state["bucket"] = RedisTokenBucket(connect(url, asynchronous=True),
                                               prefix + ":async", **HUGE)
        bucket = state["bucket"]

        async def worker(count: int) -> None:
            for _ in range(count):
                await bucket.try_acquire_async()

        await asyncio.gather(*(worker(n // tasks) for _ in range(tasks)))

    async def get_concurrently(n: int) -> None:
        if "client" not in state:
            # A reference, not a decision: a generous timeout, so that a loaded
            # machine's burst of connects does not fail it.
            state["client"] = connect(url, asynchronous=True, max_connections=tasks,
                                      socket_timeout=5.0)
        client = state["client"]

        async def worker(count: int) -> None:
            for _ in range(count):
                await client.get(prefix)

        await asyncio.gather(*(worker(n // tasks) for _ in range(tasks)))

    suite.cases.append(Case(GROUP_ASYNC, OURS_ASYNC, decide_concurrently, is_async=True,
                            role="ours"))
    suite.cases.append(Case(GROUP_ASYNC, ASYNC_GET, get_concurrently, is_async=True))

    local = vr.TokenBucket(**HUGE)
    leased = LeasedTokenBucket(connect(url), prefix + ":leased", **HUGE)
    leased._set_rate(1, 1_000_000)  # full at once: the benchmark measures deciding, not waiting
    cleanup.append(leased)
    suite.add(GROUP_LEASED, LOCAL, "bucket.try_acquire()", bucket=local)
    suite.add(GROUP_LEASED, OURS_LEASED, "bucket.try_acquire()", bucket=leased)
    suite.skipped.append(f"(redis-py {redis.__version__}, {tasks} asyncio tasks)")
    return [
        Target("exact sync >= 90% of a bare GET round trip's rate",
               (GROUP_SYNC, OURS_SYNC), (GROUP_SYNC, BARE_GET), 1 / 0.9),
        Target(">= 1.5x faster than limits FixedWindow on Redis",
               (GROUP_SYNC, OURS_SYNC), (GROUP_SYNC, LIMITS_FIXED), 1 / 1.5),
        Target(">= 1.5x faster than limits MovingWindow on Redis",
               (GROUP_SYNC, OURS_SYNC), (GROUP_SYNC, LIMITS_MOVING), 1 / 1.5),
        Target(">= 1.5x faster than pyrate-limiter on Redis",
               (GROUP_SYNC, OURS_SYNC), (GROUP_SYNC, PYRATE), 1 / 1.5),
        Target("leased within 3x of a local TokenBucket.try_acquire()",
               (GROUP_LEASED, OURS_LEASED), (GROUP_LEASED, LOCAL), 3.0),
    ]


def _peers(suite: Suite, url: str, prefix: str, cleanup: list[Any]) -> None:
    try:
        from limits import RateLimitItemPerSecond, storage, strategies

        limits_storage = storage.RedisStorage(url, key_prefix=prefix + ":limits")
        fixed = strategies.FixedWindowRateLimiter(limits_storage)
        moving = strategies.MovingWindowRateLimiter(limits_storage)
        suite.add(GROUP_SYNC, LIMITS_FIXED, "hit(item)", hit=fixed.hit,
                  item=RateLimitItemPerSecond(10**9))
        suite.add(GROUP_SYNC, LIMITS_MOVING, "hit(item)", hit=moving.hit,
                  item=RateLimitItemPerSecond(10**9 - 1))
    except Exception as exc:  # an absent or incompatible peer is reported, not fatal
        suite.skip("limits", exc)
    try:
        import redis
        from pyrate_limiter import Duration, Limiter, Rate, RedisBucket

        bucket = RedisBucket.init([Rate(10**9, Duration.SECOND)], redis.Redis.from_url(url),
                                  prefix + ":pyrate")
        limiter = Limiter(bucket)
        cleanup.append(limiter)  # its leaker thread would outlive the server
        suite.add(GROUP_SYNC, PYRATE, "try_acquire('bench', blocking=False)",
                  try_acquire=limiter.try_acquire)
    except Exception as exc:
        suite.skip("pyrate-limiter", exc)


def _decisions(bucket: Any, count: int = 2000) -> tuple[float, float, float]:
    """(first, 99th percentile of the rest, slowest of the rest), in seconds."""
    import time

    times = []
    for _ in range(count):
        started = time.perf_counter()
        bucket.try_acquire()
        times.append(time.perf_counter() - started)
    rest = sorted(times[1:])
    return times[0], rest[int(len(rest) * 0.99)], rest[-1]

def _until_shared(*buckets: Any) -> list[float]:
    """Seconds until each bucket decides by Redis again, all watched at once."""
    import time

    started = time.perf_counter()
    back: dict[int, float] = {}
    while len(back) < len(buckets):
        for i, bucket in enumerate(buckets):
            if i not in back and bucket.shared:
                back[i] = time.perf_counter() - started
        time.sleep(0.001)
    return [back[i] for i in range(len(buckets))]


def outage() -> tuple[list[str], bool]:
    """Redis killed, then paused, then back, under an exact and a leased bucket
    on fail-fast clients (defaults: 0.25 s socket timeout, probes every 0.5 s,
    leases refreshed every 1 s): how long decisions take, and how long until
    shared accounting resumes. Returns report lines and whether the targets held."""
    import time

    from virtrigaud_resilience.distributed import LeasedTokenBucket, RedisTokenBucket, connect
    from virtrigaud_resilience.distributed.testing import RedisServer

    lines, ok = [], True
    with RedisServer() as redis_server:
        exact = RedisTokenBucket(connect(redis_server.url), "outage:exact", qps=1000, burst=100)
        leased = LeasedTokenBucket(connect(redis_server.url), "outage:leased", qps=1000,
                                   burst=100)
        try:
            for how, lose, regain in (("killed", redis_server.kill, redis_server.start),
                                      ("paused (SIGSTOP)", redis_server.pause,
                                       redis_server.resume)):
                exact.try_acquire()
                lose()
                first, p99, rest = _decisions(exact)
                held = first <= 1.0 and rest <= 0.001
                ok &= held
                lines.append(f"  {'ok  ' if held else 'MISS'}  Redis {how}: first decision "
                             f"{first * 1e3:.1f} ms (<= 1 s), the next 1,999: 99% within "
                             f"{p99 * 1e6:.0f} us, the slowest {rest * 1e6:.0f} us (<= 1 ms)")
                lost = time.perf_counter()
                while leased.shared:  # it keeps deciding at its lease until that expires
                    leased.try_acquire()
                kept = time.perf_counter() - lost
                regain()
                back_exact, back_leased = _until_shared(exact, leased)
                held = back_exact <= exact.client_breaker.probe_interval + 0.05 and \
                    back_leased <= leased.refresh
                ok &= held
                lines.append(f"  {'ok  ' if held else 'MISS'}  back: exact bucket shared again "
                             f"after {back_exact * 1e3:.0f} ms (probe every "
                             f"{exact.client_breaker.probe_interval:g} s), leased after "
                             f"{back_leased * 1e3:.0f} ms (refresh {leased.refresh:g} s; it "
                             f"had kept its lease {kept:.2f} s of {leased.lease:g})")
        finally:
            leased.close()
    return lines, ok


def cluster_outage() -> tuple[list[str], bool]:
    """A one-node Redis Cluster killed, then paused, under an exact bucket on
    a fail-fast cluster client (``connect(cluster=True)``): the decision that
    meets it, the slowest of the next, and the time until shared again."""
    from virtrigaud_resilience.distributed import RedisTokenBucket, connect
    from virtrigaud_resilience.distributed.testing import RedisServer

    lines, ok = [], True
    with RedisServer(cluster=True) as node:
        exact = RedisTokenBucket(connect(node.url, cluster=True), "{outage}:exact", qps=1000,
                                 burst=100)
        for how, lose, regain in (("killed", node.kill, node.start),
                                  ("paused (SIGSTOP)", node.pause, node.resume)):
            exact.try_acquire()
            lose()
            first, p99, rest = _decisions(exact)
            regain()
            (back,) = _until_shared(exact)
            held = (first <= 1.0 and rest <= 0.001
                    and back <= exact.client_breaker.probe_interval + 0.05)
            ok &= held
            lines.append(f"  {'ok  ' if held else 'MISS'}  cluster node {how}: first decision "
                         f"{first * 1e3:.1f} ms, the next 1,999: 99% within {p99 * 1e6:.0f} us, "
                         f"the slowest {rest * 1e6:.0f} us; shared again "
                         f"{back * 1e3:.0f} ms after the node was ready")
    return lines, ok


def many_buckets() -> tuple[list[str], bool]:
    """10,000 exact buckets on one client (redis-py's default pool, 100
    connections): connections in use, and the time until all decide on Redis
    again after a restart (one probe interval, whatever their number)."""
    import time

    from virtrigaud_resilience.distributed import RedisTokenBucket, connect
    from virtrigaud_resilience.distributed.testing import RedisServer

    with RedisServer() as redis_server:
        client = connect(redis_server.url)
        buckets = [RedisTokenBucket(client, f"many:{i}", qps=1000, burst=100)
                   for i in range(10_000)]
        shared = sum(b.try_acquire() for b in buckets)
        in_use = len(client.connection_pool._in_use_connections)
        redis_server.kill()
        buckets[0].try_acquire()
        redis_server.start()
        started = time.perf_counter()
        while not buckets[0].client_breaker.up:
            time.sleep(0.001)
        back = time.perf_counter() - started
        again = sum(b.try_acquire() for b in buckets)
        opened = buckets[0].client_breaker.breaker.transitions[2]
        client.close()
    held = shared == again == 10_000 and in_use <= 1 and opened == 1 and \
        back <= buckets[0].client_breaker.probe_interval + 0.05
    return [f"  {'ok  ' if held else 'MISS'}  10,000 buckets on one client: {shared:,} decided "
            f"on Redis holding {in_use} connection(s); after a restart the client breaker "
            f"closed in {back * 1e3:.0f} ms (probe every "
            f"{buckets[0].client_breaker.probe_interval:g} s) and "
            f"{again:,} decided on Redis again, the client breaker opened {opened} time(s)"], held


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a Redis to use (default: start a redis-server)")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 1,000 calls")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=3000, help="round trips per round and case")
    parser.add_argument("--tasks", type=int, default=256, help="asyncio tasks deciding at once")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--no-outage", action="store_true",
                        help="skip the outage measurement (kills and pauses its own server)")
    args = parser.parse_args(argv)
    rounds, calls = (3, 1000) if args.quick else (args.rounds, args.calls)

    outage_lines, outage_held = ([], True) if args.no_outage else outage()
    if not args.no_outage:
        for more in (cluster_outage, many_buckets):
            lines, held = more()
            outage_lines += lines
            outage_held &= held
    with server(args.url) as url:
        suite = Suite()
        cleanup: list[Any] = []
        targets = build(suite, url, args.tasks, cleanup)
        # Round trips, interleaved; then the local cases (nanoseconds: more calls).
        measure(Suite(cases=[c for c in suite.cases if c.group != GROUP_LEASED]), rounds, calls)
        measure(Suite(cases=[c for c in suite.cases if c.group == GROUP_LEASED]), rounds,
                calls * 200)
        for thing in cleanup:
            close = getattr(thing, "close", None)
            if close is not None:
                close()
    ok = all_held(suite, targets)
    async_rate = 1e9 / suite.get(GROUP_ASYNC, OURS_ASYNC).best_ns
    held = async_rate >= 30_000
    ok &= held
    print_report(suite, targets,
                 f"Python {sys.version.split()[0]}, {rounds} rounds x {calls} round trips, "
                 "best round")
    print(f"  {'ok  ' if held else 'MISS'}  exact async >= 30,000 decisions/s from one process: "
          f"{async_rate:,.0f}/s ({args.tasks} tasks)")
    print("\n  rates (decisions or round trips per second):")
    for case in suite.cases:
        if case.group != GROUP_LEASED:
            print(f"    {case.name:<56} {1e9 / case.best_ns:>10,.0f}/s")
    get = suite.get(GROUP_SYNC, BARE_GET).best_ns
    ours = suite.get(GROUP_SYNC, OURS_SYNC).best_ns
    print(f"  exact sync decides at {get / ours:.0%} of the bare GET round trip's rate, and at "
          f"{suite.get(GROUP_SYNC, HELD_GET).best_ns / ours:.0%} of a GET sent as it is sent")
    if not args.no_outage:
        print("\n  outage (own redis-server, fail-fast clients):")
        ok &= outage_held
        print("\n".join(outage_lines))
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
