"""Members of a leased fleet, each its own process, for tests/distributed/test_fleet_faults.py.

Usage: ``python fleet_member.py``; then one scenario after another, each
told on stdin as one JSON line: ``id``, ``url``, ``key``, ``role``,
``delay`` and ``config`` (``qps``, ``burst``, ``lease``, ``refresh``, ``members``). The
process is started once for many scenarios (its imports take a second or
more on a loaded machine). Every time is ``time.monotonic()``, which on
Linux is one clock for every process.

- ``member``: takes its lease after ``delay`` seconds, prints ``{"id": ID, "ready": true}``
  once it has seen ``members`` members in the table and holds half an even
  share at least, then reads ``START
  END`` from stdin and tries to acquire from then until END.
- ``late``: prints the same at once, reads ``START END``, builds its bucket
  at START (joining the fleet then) and tries to acquire until END.

Then it prints one JSON line (with the scenario's ``id``): its admissions
(times), its share's changes (``[time, qps]``: a lowering stamped before it
takes effect, a raise after, so the shares the test adds up are never more
than those in force), when it joined, how many times it found its lease
table lost, and its members; and only then closes its bucket and client.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from virtrigaud_resilience.distributed import LeasedTokenBucket, RedisClientBreaker, connect


class LostTables(logging.Handler):
    """Counts the bucket's "lease table lost" records."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "redis_state", None) == "lost_table":
            self.count += 1


def record_shares(changes: list[list[float]]) -> None:
    """Stamps every change of a bucket's share into ``changes``."""
    set_share = LeasedTokenBucket._set_share

    def recording(bucket: LeasedTokenBucket, rate: float, burst: int, *, empty: bool) -> None:
        before, lowered_at = bucket.qps, time.monotonic()
        set_share(bucket, rate, burst, empty=empty)
        after = bucket.qps
        if after != before:
            changes.append([lowered_at if after < before else time.monotonic(), after])

    LeasedTokenBucket._set_share = recording  # type: ignore[method-assign,assignment]


def hammer(bucket: LeasedTokenBucket, end: float) -> list[float]:
    """Takes every token it can until ``end``; returns when each was taken."""
    admissions: list[float] = []
    while time.monotonic() < end:
        if bucket.try_acquire():
            admissions.append(time.monotonic())
        else:
            time.sleep(0.0005)
    return admissions


def settled(bucket: LeasedTokenBucket, config: dict[str, Any]) -> bool:
    """Whether the bucket sees every member and holds half an even share at least."""
    members = config["members"]
    return bool(bucket.members >= members and bucket.qps >= config["qps"] / (2 * members))


def scenario(command: dict[str, Any], lost: LostTables, shares: list[list[float]]) -> None:
    """Runs one scenario (see the module)."""
    config, ident = command["config"], command["id"]
    lost.count = 0
    shares.clear()
    client = connect(command["url"])
    client_breaker = RedisClientBreaker(client, probe_interval=0.05)

    def join() -> LeasedTokenBucket:
        return LeasedTokenBucket(client, command["key"], qps=config["qps"],
                                 burst=config["burst"], lease=config["lease"],
                                 refresh=config["refresh"], client_breaker=client_breaker)

    if command["role"] == "member":
        time.sleep(command["delay"])
        bucket: LeasedTokenBucket | None = join()
    else:
        bucket = None
    deadline = time.monotonic() + 20.0
    while bucket is not None and not settled(bucket, config):
        if time.monotonic() > deadline:
            sys.exit(f"not settled: {bucket!r}")
        time.sleep(0.01)
    print(json.dumps({"id": ident, "ready": True}), flush=True)
    start, end = (float(x) for x in sys.stdin.readline().split())
    if bucket is None:
        time.sleep(max(0.0, start - time.monotonic()))
    joined = time.monotonic()
    if bucket is None:
        bucket = join()
    admissions = hammer(bucket, end)
    print(json.dumps({"id": ident, "admissions": admissions, "shares": shares, "joined": joined,
                      "lost_tables": lost.count, "members": bucket.members}), flush=True)
    bucket.close()
    client.close()


def main() -> None:
    lost = LostTables()
    logger = logging.getLogger("virtrigaud_resilience")
    logger.addHandler(lost)
    logger.setLevel(logging.INFO)
    shares: list[list[float]] = []
    record_shares(shares)
    print(json.dumps({"id": None, "ready": True}), flush=True)  # imported
    for line in sys.stdin:
        scenario(json.loads(line), lost, shares)


if __name__ == "__main__":
    main()
