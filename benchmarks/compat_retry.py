"""The retry drop-ins' success path against the real tenacity and backoff
(a section of compare.py: ``python benchmarks/compare.py --sections retry-dropins``).

The issue's configurations: ``@retry(stop=stop_after_attempt(3),
wait=wait_exponential())`` (sync and async) and ``@on_exception(expo,
Exception, max_tries=3)``, decorating a function that returns at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from virtrigaud_resilience.compat import backoff as compat_backoff
from virtrigaud_resilience.compat import tenacity as compat_tenacity

if TYPE_CHECKING:
    from compare import Suite, Target

SYNC, ASYNC = "retry drop-ins", "retry drop-ins async"
OURS_TENACITY = "virtrigaud compat.tenacity @retry"
OURS_TENACITY_ASYNC = "virtrigaud compat.tenacity async @retry"
OURS_BACKOFF = "virtrigaud compat.backoff @on_exception"
OURS_BACKOFF_ASYNC = "virtrigaud compat.backoff async @on_exception"


def _tenacity_retry(lib: Any) -> Any:
    return lib.retry(stop=lib.stop_after_attempt(3), wait=lib.wait_exponential())


def _backoff_retry(lib: Any) -> Any:
    return lib.on_exception(lib.expo, Exception, max_tries=3)


def retry_dropin_cases(suite: Suite) -> list[Target]:
    from compare import BARE, BARE_AWAIT, Target, noop, noop_async

    suite.add(SYNC, BARE, "noop()", noop=noop)
    suite.add(SYNC, OURS_TENACITY, "f()", f=_tenacity_retry(compat_tenacity)(noop))
    suite.add(SYNC, OURS_BACKOFF, "f()", f=_backoff_retry(compat_backoff)(noop))
    suite.add_async(ASYNC, BARE_AWAIT, "await noop_async()", noop_async=noop_async)
    suite.add_async(ASYNC, OURS_TENACITY_ASYNC, "await f()",
                    f=_tenacity_retry(compat_tenacity)(noop_async))
    suite.add_async(ASYNC, OURS_BACKOFF_ASYNC, "await f()",
                    f=_backoff_retry(compat_backoff)(noop_async))
    try:
        import tenacity

        suite.add(SYNC, "tenacity @retry", "f()", f=_tenacity_retry(tenacity)(noop))
        suite.add_async(ASYNC, "tenacity async @retry", "await f()",
                        f=_tenacity_retry(tenacity)(noop_async))
    except Exception as exc:  # an absent peer is reported, not fatal
        suite.skip("tenacity (retry drop-ins)", exc)
    try:
        import backoff

        suite.add(SYNC, "backoff @on_exception", "f()", f=_backoff_retry(backoff)(noop))
        suite.add_async(ASYNC, "backoff async @on_exception", "await f()",
                        f=_backoff_retry(backoff)(noop_async))
    except Exception as exc:
        suite.skip("backoff (retry drop-ins)", exc)
    return [
        Target("compat.tenacity @retry >= 20x faster than tenacity's",
               (SYNC, OURS_TENACITY), (SYNC, "tenacity @retry"), 1 / 20),
        Target("compat.tenacity async @retry >= 10x faster than tenacity's",
               (ASYNC, OURS_TENACITY_ASYNC), (ASYNC, "tenacity async @retry"), 1 / 10),
        Target("compat.backoff @on_exception >= 10x faster than backoff's",
               (SYNC, OURS_BACKOFF), (SYNC, "backoff @on_exception"), 1 / 10),
    ]
