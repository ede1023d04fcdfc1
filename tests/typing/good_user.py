"""What a user writes, type-checked with ``mypy --strict`` against the installed package.

tests/test_typing.py runs mypy on this file: it must pass with no error.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import virtrigaud_resilience as vr


def describe(vm_id: str, *, verbose: bool = False) -> dict[str, str]:
    return {"id": vm_id, "verbose": str(verbose)}


async def describe_async(vm_id: str) -> dict[str, str]:
    return {"id": vm_id}


def main() -> None:
    # Durations: float seconds, Go strings or timedelta, wherever a duration goes.
    config = vr.BreakerConfig(failure_threshold=5, reset_timeout="1m30s",
                              half_open_lease=timedelta(minutes=5))
    retry = vr.RetryConfig(max_attempts=3, base_delay="100ms", max_delay=timedelta(seconds=5),
                           retry_on=ConnectionError)
    cb = vr.CircuitBreaker("provider-vsphere", "vsphere", "prod", config)
    bucket = vr.TokenBucket(qps=10, burst=20)

    # call / execute forward their arguments: the types flow through.
    vm: dict[str, str] = cb.call(describe, "vm-1", verbose=True)
    ok: bool = bucket.try_acquire(n=2)
    policy = (vr.PolicyBuilder("describe").with_retry(retry).with_circuit_breaker(cb)
              .with_rate_limiter(bucket, wait=True, max_wait="2s")
              .with_timeout("30s", per_attempt=timedelta(seconds=10))
              .with_rpc_timeout(vr.RPCConfig(), "Describe").build())
    same: dict[str, str] = policy.execute(describe, "vm-2")
    again: dict[str, str] = vr.retry(retry, describe, "vm-3", verbose=False)
    permit = cb.try_acquire()
    if permit is not None:
        with permit:
            pass
    print(vm, ok, same, again, bucket.acquire(1, timeout="250ms"))

    async def run() -> None:
        async with bucket:
            result: dict[str, str] = await policy.execute_async(describe_async, "vm-4")
            print(result, await cb.call_async(describe_async, "vm-5"))

    asyncio.run(run())


if __name__ == "__main__":
    main()
