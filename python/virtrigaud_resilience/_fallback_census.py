"""The census of limiters that decide by a fallback while a shared store is lost.

The distributed buckets (:mod:`virtrigaud_resilience.distributed`) put
themselves here when built and hand over their final counters when
collected; the metrics collector reads it at scrape time. It lives below
both (docs/architecture.md) so that ``metrics.py`` reads the distributed
buckets without importing a subpackage, and ``ratelimit.py`` (the
in-process bucket) holds nothing only the Redis code uses.
"""

from __future__ import annotations

from typing import Protocol

from ._tracking import Census, Counters, Labels


class FallbackCounted(Protocol):
    """A limiter that decides by a fallback while a shared store is lost:
    ``_fallback_counters()`` is (admitted by the fallback, rejected by the
    fallback, times it fell back, times it recovered)."""

    @property
    def provider_type(self) -> str: ...

    @property
    def provider(self) -> str: ...

    def _fallback_counters(self) -> tuple[int, int, int, int]: ...


def _final_fallback_counters(limiter: FallbackCounted) -> tuple[Labels, Counters]:
    """A dropped limiter's labels and its fallback counters."""
    return (limiter.provider_type, limiter.provider), limiter._fallback_counters()


#: Every live limiter with a fallback (the distributed buckets), for the
#: metrics collector (see _tracking.py).
FALLBACK_LIMITERS: Census[FallbackCounted] = Census(_final_fallback_counters)
