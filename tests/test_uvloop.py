"""The async policy's key cases on uvloop's event loop (skipped without uvloop).

The native awaitable (``_core.AsyncCall``) is driven by whatever loop runs the
task: these are the suite's own tests of the async path (success, Futures
and other awaitables, retries, deadlines counted as Timeout, cancellation at
each await point), run again, each in a fresh uvloop loop.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import test_async_call as async_call
import test_cancellation as cancellation
import test_policy as policy

import virtrigaud_resilience as vr

uvloop = pytest.importorskip("uvloop")


class Fresh:
    """An argument made anew for each run, as its fixture would be."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


rig = Fresh(lambda: async_call.Rig(vr.ManualClock()))
clock = Fresh(vr.ManualClock)


def case(test: Callable[..., Coroutine[Any, Any, None]], **kwargs: Any) -> Any:
    """One test with its arguments."""
    label = ",".join(f"{k}={v}" for k, v in kwargs.items() if isinstance(v, str))
    return pytest.param(test, kwargs, id=f"{test.__name__}[{label}]" if label else test.__name__)


CASES = [
    *[case(async_call.test_a_future_as_the_result_of_fn, rig=rig, owner=owner)
      for owner in async_call.OWNERS],
    case(async_call.test_a_failed_future_is_recorded_as_the_attempt_failing, rig=rig, owner="policy"),
    case(async_call.test_an_awaitable_that_is_no_coroutine, rig=rig, owner="policy",
         make=async_call.AwaitMe),
    case(async_call.test_a_plain_function_keeps_pythons_own_error, rig=rig, owner="policy"),
    *[case(test, path=path) for path in cancellation.PATHS for test in (
        cancellation.test_cancel_while_waiting_for_tokens,
        cancellation.test_cancel_while_queued_for_the_bulkhead,
        cancellation.test_cancel_inside_the_users_coroutine,
        cancellation.test_cancel_while_sleeping_in_backoff)],
    case(cancellation.test_timeout_cancels_the_users_coroutine_and_leaks_nothing),
    case(cancellation.test_timeout_inside_a_retrying_call),
    case(cancellation.test_breaker_call_async_cancel_releases_the_half_open_slot),
    case(policy.test_decorator_on_an_async_function, clock=clock),
    case(policy.test_queued_async_call_takes_one_token, clock=clock),
    case(policy.test_timeouts_count_as_breaker_failures),
    case(policy.test_per_attempt_timeout_cuts_one_attempt_and_retries),
    case(policy.test_asyncio_timeout_around_execute_async_counts_as_a_failure),
    case(policy.test_outside_cancellation_records_nothing_and_is_not_retried),
]


@pytest.mark.parametrize(("test", "kwargs"), CASES)
def test_on_uvloop(test: Callable[..., Coroutine[Any, Any, None]], kwargs: dict[str, Any]) -> None:
    arguments = {k: v.make() if isinstance(v, Fresh) else v for k, v in kwargs.items()}
    loop = uvloop.new_event_loop()
    try:
        assert type(loop).__module__.startswith("uvloop")
        loop.run_until_complete(test(**arguments))
    finally:
        loop.close()
