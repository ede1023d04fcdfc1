"""A pybreaker program switched to the native drop-in by one import.

The program below is written for pybreaker. Run as it is, it uses
``virtrigaud_resilience.compat.pybreaker``; with ``--real`` it uses the real
pybreaker (when installed), and prints the same transcript:

    python examples/drop_in_pybreaker.py
    python examples/drop_in_pybreaker.py --real
"""

from __future__ import annotations

import sys
import time

if "--real" in sys.argv:
    import pybreaker
else:
    from virtrigaud_resilience.compat import pybreaker  # the only line that changes


class LogListener(pybreaker.CircuitBreakerListener):
    def state_change(self, cb, old_state, new_state):  # type: ignore[no-untyped-def]
        print(f"  state: {old_state.name} -> {new_state.name}")


db_breaker = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=0.05, success_threshold=2,
                                      exclude=[KeyError], listeners=[LogListener()])
database_up = False


@db_breaker
def fetch_customer(customer_id: int) -> str:
    if customer_id < 0:
        raise KeyError(customer_id)  # a business error: excluded
    if not database_up:
        raise ConnectionError("database down")
    return f"customer {customer_id}"


def attempt(customer_id: int) -> None:
    try:
        print(f"fetch({customer_id}) -> {fetch_customer(customer_id)}")
    except (pybreaker.CircuitBreakerError, ConnectionError, KeyError) as exc:
        print(f"fetch({customer_id}) raised {type(exc).__name__}: {exc}")
    print(f"  fail_counter={db_breaker.fail_counter} success_counter="
          f"{db_breaker.success_counter} state={db_breaker.current_state}")


for customer in (1, -1, 2, 3):
    attempt(customer)
time.sleep(0.06)
database_up = True
for customer in (4, 5, 6):
    attempt(customer)
