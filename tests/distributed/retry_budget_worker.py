"""One replica of a fleet sharing a RedisRetryBudget, for
tests/distributed/test_retry_budget_fleet.py (run as a process).

Usage: ``python retry_budget_worker.py URL KEY SECONDS RATE``. Prints
``ready``, reads the fleet's start time (``time.time()``) from stdin, then
makes ``RATE`` calls per second for ``SECONDS`` seconds, each retried up to
4 attempts under the shared budget against a provider that always fails,
and prints one JSON line: its calls and attempts.
"""

from __future__ import annotations

import json
import sys
import time

import virtrigaud_resilience as vr
from virtrigaud_resilience.distributed import RedisRetryBudget, connect

#: The fleet's budget: 20%, no reserve (the bound is then exact), a short ttl.
PERCENT, TTL, REFRESH = 0.2, 2.0, 0.05


def main() -> None:
    url, key, seconds, rate = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    budget = RedisRetryBudget(connect(url), key, PERCENT, min_per_second=0, ttl=TTL,
                              refresh=REFRESH)
    retrier = vr.Retrier(vr.RetryConfig(max_attempts=4, base_delay=0, max_delay=0,
                                        jitter=False, budget=budget))
    attempts = 0

    def down() -> None:
        nonlocal attempts
        attempts += 1
        raise vr.UnavailableError("down")

    print("ready", flush=True)
    start = float(sys.stdin.readline())
    time.sleep(max(0.0, start - time.time()))
    calls = 0
    while time.time() < start + seconds:
        due = start + calls / rate
        time.sleep(max(0.0, due - time.time()))
        try:
            retrier.call(down)
        except vr.UnavailableError:
            pass
        calls += 1
    budget.close()
    print(json.dumps({"calls": calls, "attempts": attempts}), flush=True)


if __name__ == "__main__":
    main()
