"""``virtrigaud-resilience demo | bench``: see the policies work, and what they cost."""

from __future__ import annotations

import argparse
import sys
import timeit
from collections.abc import Sequence

from . import (
    BreakerConfig,
    CircuitBreaker,
    ManualClock,
    PolicyBuilder,
    RetryConfig,
    TokenBucket,
    UnavailableError,
    map_error_to_condition,
)


class FlakyProvider:
    """A provider that is down for `outage` seconds of (virtual) time."""

    def __init__(self, clock: ManualClock, outage: float) -> None:
        self.clock = clock
        self.outage = outage
        self.calls = 0

    def create(self, name: str) -> str:
        self.calls += 1
        if self.clock.now() < self.outage:
            raise UnavailableError(f"vsphere unreachable creating {name}")
        return f"vm-{name}"


def demo() -> int:
    """An outage of 90 virtual seconds, ridden out by the guide's create-vm policy."""
    clock = ManualClock()
    provider = FlakyProvider(clock, outage=90.0)
    breaker = CircuitBreaker("vm-operations", "vsphere", "prod",
                             BreakerConfig(failure_threshold=3, reset_timeout=30.0), clock=clock)
    breaker.add_listener(lambda b, old, new: print(
        f"  t={clock.now():6.1f}s  breaker {old.name} -> {new.name}"))
    policy = (PolicyBuilder("create-vm")
              .with_retry(RetryConfig(max_attempts=8, base_delay=1.0, max_delay=30.0,
                                      jitter=False),
                          on_retry=lambda n, exc, delay: print(
                              f"  t={clock.now():6.1f}s  attempt {n} failed ({exc.__class__.__name__}),"
                              f" retrying in {delay:g}s"))
              .with_circuit_breaker(breaker)
              .with_rate_limiter(TokenBucket(qps=10, burst=20, clock=clock))
              .with_clock(clock)
              .build())
    print(f"{policy}\nprovider down for the first 90 s (virtual time):")
    try:
        vm = policy.execute(provider.create, "web-1")
    except UnavailableError as exc:
        print(f"  gave up: {exc}\n  condition: {map_error_to_condition(exc).to_dict()}")
        return 1
    print(f"  t={clock.now():6.1f}s  created {vm} after {provider.calls} provider calls "
          f"({breaker.rejected} attempts rejected by the open breaker)")
    return 0


def bench(number: int) -> int:
    """A quick look at the per-call cost (benchmarks/compare.py does it properly)."""
    def noop() -> None:
        pass

    bucket = TokenBucket(qps=1e9, burst=1_000_000)
    breaker = CircuitBreaker("bench")
    policy = (PolicyBuilder("bench").with_retry(RetryConfig.default())
              .with_circuit_breaker(CircuitBreaker("bench-policy"))
              .with_rate_limiter(TokenBucket(qps=1e9, burst=1_000_000)).build())
    names = {"noop": noop, "bucket": bucket, "breaker": breaker, "policy": policy}
    cases = [("bare call", "noop()"), ("TokenBucket.try_acquire()", "bucket.try_acquire()"),
             ("CircuitBreaker.call(noop)", "breaker.call(noop)"),
             ("Policy.execute(noop)", "policy.execute(noop)")]
    bare = 0.0
    for label, stmt in cases:
        ns = min(timeit.repeat(stmt, globals=names, number=number, repeat=5)) / number * 1e9
        bare = bare or ns
        print(f"{label:<28} {ns:7.1f} ns/call  {ns / bare:5.2f}x bare")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="virtrigaud-resilience", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="ride out a simulated provider outage (virtual time)")
    bench_parser = sub.add_parser("bench", help="per-call cost of the primitives")
    bench_parser.add_argument("--number", type=int, default=200_000)
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo()
    return bench(args.number)


if __name__ == "__main__":
    sys.exit(main())
