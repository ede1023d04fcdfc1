"""Reading a provider's Retry-After: HTTP's header, gRPC's ``retry-after`` metadata.

Both forms of RFC 9110 are read: delta-seconds (``"120"``; a decimal
fraction such as ``"1.5"`` is accepted too, as gRPC servers send) and an
HTTP-date (``"Wed, 21 Oct 2015 07:28:00 GMT"``, converted against the wall
clock: a date in the past means 0). Anything else, a negative number, NaN or
an empty value, is malformed: :func:`parse_retry_after` returns None and the
retry falls back to its own backoff delay (logged at DEBUG). A value beyond
:data:`~virtrigaud_resilience.errors.MAX_RETRY_AFTER` is clamped to it.
"""

from __future__ import annotations

import logging
import math
import re
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from ..errors import MAX_RETRY_AFTER

__all__ = ["parse_retry_after"]

_LOG = logging.getLogger("virtrigaud_resilience")

_DELTA = re.compile(r"([0-9]+)(?:\.[0-9]+)?")
# More whole digits than this are beyond MAX_RETRY_AFTER (1e9 s): clamped
# without converting (float() of a 10,000-digit string is slow).
_MAX_DIGITS = 12


def parse_retry_after(value: str | bytes | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After value, or None when absent or malformed.

    ``now`` is the wall-clock time an HTTP-date is measured from (default:
    the current UTC time). Never raises for any str or bytes.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text:
        return None
    delta = _DELTA.fullmatch(text)
    if delta is not None:
        if len(delta.group(1).lstrip("0")) > _MAX_DIGITS:
            return MAX_RETRY_AFTER
        return min(float(text), MAX_RETRY_AFTER)
    seconds = _http_date_delay(text, now)
    if seconds is None:
        _LOG.debug("ignoring malformed Retry-After %r: the backoff delay is used", value[:100])
    return seconds


def _http_date_delay(text: str, now: datetime | None) -> float | None:
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:  # pragma: no cover - older Pythons returned None
        return None
    if when.tzinfo is None:  # RFC 9110: HTTP-dates are GMT ("-0000" parses naive)
        when = when.replace(tzinfo=timezone.utc)
    reference = now if now is not None else datetime.now(timezone.utc)
    if reference.tzinfo is None:
        reference = reference.replace(tzinfo=timezone.utc)
    seconds = (when - reference).total_seconds()
    if not math.isfinite(seconds):  # pragma: no cover - timedelta is always finite
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)
