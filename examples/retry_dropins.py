"""tenacity and backoff code, unchanged but for the import, on the native core.

A flaky provider call fails twice, then answers. Both drop-ins retry it with
their peer's hooks and handlers; the successful calls after that run their
first attempt natively. Sleeps are skipped (``sleep=`` for tenacity, a
constant 0 s wait for backoff) so the example runs at once.

    python examples/retry_dropins.py
"""

from __future__ import annotations

import logging
import sys

from virtrigaud_resilience.compat import backoff, tenacity

logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s",
                    stream=sys.stdout)
log = logging.getLogger("example")


def flaky_provider() -> object:
    """Raises ConnectionError twice, then returns the VM's state."""
    failures = iter([ConnectionError("connection reset"), ConnectionError("timed out")])

    def describe(vm_id: str) -> str:
        error = next(failures, None)
        if error is not None:
            raise error
        return f"{vm_id}: running"

    return describe


describe = flaky_provider()


@tenacity.retry(stop=tenacity.stop_after_attempt(5),
                wait=tenacity.wait_exponential(multiplier=0.5, max=8),
                retry=tenacity.retry_if_exception_type(ConnectionError),
                before_sleep=tenacity.before_sleep_log(log, logging.INFO),
                sleep=lambda seconds: None)
def describe_with_tenacity(vm_id: str) -> str:
    return describe(vm_id)  # type: ignore[operator]


power = flaky_provider()


@backoff.on_exception(backoff.constant, ConnectionError, interval=0, jitter=None, max_tries=5)
def describe_with_backoff(vm_id: str) -> str:
    return power(vm_id)  # type: ignore[operator]


if __name__ == "__main__":
    print("tenacity:", describe_with_tenacity("vm-1"))
    stats = describe_with_tenacity.statistics
    print(f"tenacity statistics: attempt_number={stats['attempt_number']} "
          f"idle_for={stats['idle_for']}")
    print("tenacity again:", describe_with_tenacity("vm-2"))
    print(f"tenacity statistics: attempt_number={stats['attempt_number']} "
          f"idle_for={stats['idle_for']}")
    print("backoff:", describe_with_backoff("vm-3"))
