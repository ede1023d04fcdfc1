"""Three replicas share one rate limit and one breaker through Redis, and ride out its loss.

    python examples/fleet_rate_limit.py              # starts a throwaway redis-server
    REDIS_URL=redis://127.0.0.1:6379/0 python examples/fleet_rate_limit.py

The replicas are threads here, each with its own Redis client (as separate
processes would be). Each asks for tokens as fast as it can for 0.6 s from an
exact fleet-wide bucket of 50/s, burst 5: together they get at most
``qps * t + burst``. One replica's provider breaker opens, and so do the
others'. Then Redis dies (the example's own server only): every replica
falls back to a third of the rate, locally, at once; Redis comes back and
they share again. Needs the ``redis`` extra and, without REDIS_URL, a
redis-server on PATH.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator

import virtrigaud_resilience as vr
from virtrigaud_resilience.distributed import (
    RedisBreakerSync,
    RedisClientBreaker,
    RedisTokenBucket,
    connect,
)
from virtrigaud_resilience.distributed.testing import RedisServer

QPS, BURST, REPLICAS = 50, 5, 3
VM = ("vm-operations", "vsphere", "prod")


@contextlib.contextmanager
def redis_url() -> Iterator[tuple[str, RedisServer | None]]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url, None
        return
    with RedisServer() as server:
        yield server.url, server


def replica_bucket(url: str, key: str) -> RedisTokenBucket:
    client = connect(url)
    # Probe a lost Redis every 50 ms (the default is 0.5 s), to keep the example short.
    return RedisTokenBucket(client, key, qps=QPS, burst=BURST, local_share=1 / REPLICAS,
                            client_breaker=RedisClientBreaker(client, probe_interval=0.05))


def hammer(buckets: list[RedisTokenBucket], seconds: float) -> list[int]:
    """Every replica asks for tokens as fast as it can; returns what each got."""
    admitted = [0] * len(buckets)

    def replica(i: int) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            admitted[i] += buckets[i].try_acquire()

    threads = [threading.Thread(target=replica, args=(i,)) for i in range(len(buckets))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return admitted


def main() -> None:
    with redis_url() as (url, server):
        key = f"example:{time.time_ns()}"
        buckets = [replica_bucket(url, key) for _ in range(REPLICAS)]
        started = time.monotonic()
        admitted = hammer(buckets, 0.6)
        elapsed = time.monotonic() - started
        print(f"shared: {sum(admitted)} tokens in {elapsed:.2f} s for the fleet "
              f"(bound {QPS * elapsed + BURST:.0f}), per replica {admitted}")

        registries = [vr.BreakerRegistry(vr.BreakerConfig(failure_threshold=1))
                      for _ in range(REPLICAS)]
        syncs = [RedisBreakerSync(connect(url), r, key=key + ":breakers") for r in registries]
        time.sleep(0.2)  # subscribed
        try:
            registries[0].get_or_create(*VM).call(lambda: 1 / 0)
        except ZeroDivisionError:
            pass
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and not all(
                (b := r.get(*VM)) is not None and b.state is vr.BreakerState.OPEN
                for r in registries):
            time.sleep(0.005)
        states = [r.get(*VM).state.name for r in registries]  # type: ignore[union-attr]
        print(f"breaker opened by replica 0: {states}")
        for sync in syncs:
            sync.close()

        if server is None:
            return
        server.kill()
        admitted = hammer(buckets, 0.3)
        shared = [b.shared for b in buckets]
        print(f"redis killed: shared={shared}, each replica decides locally at "
              f"{QPS / REPLICAS:.3g}/s, burst {BURST // REPLICAS}: {admitted}")
        server.start()
        deadline = time.monotonic() + 2.0
        while not all(b.shared for b in buckets) and time.monotonic() < deadline:
            time.sleep(0.01)
        print(f"redis back: shared={[b.shared for b in buckets]}")


if __name__ == "__main__":
    main()
