"""What a member knows of the server's clock: steps of TIME, found against its own monotonic clock.

The scripts take time from the server (``TIME``), so every member agrees on
it; but an operator or NTP may step the server's wall clock. A member
remembers the server time of its last reply and the monotonic moment it
was taken (the middle of the round trip); its next call sends what the
server's time should then be. The script compares it with ``TIME``: a gap
beyond :data:`STEP_TOLERANCE_US` (either way) is a step, which the scripts
bound (see the exact and leased buckets). Smaller steps, and a clock that
NTP slews, are not told apart from the round trip's own delay.

Test hook: a script adds to ``TIME`` the offset (us) stored by a test in a
field it documents (``~test-time-offset-us``); no production code writes it.
"""

from __future__ import annotations

import time

__all__ = ["ServerClock", "STEP_TOLERANCE_US", "TEST_TIME_OFFSET"]

#: A gap between the server's TIME and what a member expected of it that
#: counts as a step (us): above a loaded round trip, below any step NTP makes.
STEP_TOLERANCE_US = 500_000
#: The field (a hash field, or a sorted set member) a test sets to simulate a step.
TEST_TIME_OFFSET = "~test-time-offset-us"


class ServerClock:
    """The server time a member saw last, and when (its monotonic clock)."""

    __slots__ = ("_server_us", "_at")

    def __init__(self) -> None:
        self._server_us: int | None = None
        self._at = 0.0

    def expected_us(self) -> str:
        """The server's time now as this member expects it (us, as the
        scripts count it), or '' before any reply."""
        if self._server_us is None:
            return ""
        return str(self._server_us + round((time.monotonic() - self._at) * 1e6))

    def last_us(self) -> str:
        """The server time of the last reply (us), or '' before any."""
        return "" if self._server_us is None else str(self._server_us)

    def learn(self, server_us: object, sent: float) -> None:
        """A reply's server time (us), to a call sent at ``sent`` (monotonic)."""
        self._server_us = int(float(str(server_us if not isinstance(server_us, bytes)
                                        else server_us.decode())))
        self._at = (sent + time.monotonic()) / 2
