"""``vr.testing``: retries capped and backoff sleeps skipped in users' tests.

Tests of code that retries want the retries off (or capped) and no real
sleeping, without editing the code under test (stamina's ``set_testing``)::

    import virtrigaud_resilience as vr

    vr.testing.set(attempts=1, sleep=False)     # from here on
    ...
    vr.testing.off()                            # as configured again

    with vr.testing.set(attempts=2):            # for a block: restored after
        ...

or the ``vr_testing`` pytest fixture, which the package ships as a pytest
plugin (``virtrigaud_resilience.integrations.pytest_plugin``, inactive
unless a test asks for it).

Every :class:`~virtrigaud_resilience.Retrier` and :class:`~virtrigaud_resilience.Policy`
(the adapters' included), ``vr.retry``, and the tenacity and backoff
drop-ins honour it, whether made before or after the switch: they read it
after a failed attempt, never on a first attempt. ``attempts`` caps the
attempts of each retry (a retry configured for fewer keeps its own);
``sleep=False`` makes backoff sleeps and token waits on the system clock
return at once (a ``ManualClock`` advances as always: its waits are
virtual already). The switch is process-wide (every thread and task).
"""

from __future__ import annotations

from types import TracebackType

from . import _testing_switch, _validate

__all__ = ["Setting", "active", "off", "set"]

#: Far beyond any sane retry budget (as RetryConfig's own bound).
_MAX_ATTEMPTS = 1_000_000


class Setting:
    """What :func:`set` applied; a context manager that restores what it replaced.

    Attributes:
        attempts: the cap on each retry's attempts, or None (as configured).
        sleep: whether backoff sleeps and token waits really wait.
    """

    __slots__ = ("attempts", "sleep", "_previous")

    def __init__(self, attempts: int | None, sleep: bool,
                 previous: tuple[int | None, bool]) -> None:
        self.attempts = attempts
        self.sleep = sleep
        self._previous = previous

    def __enter__(self) -> Setting:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        _apply(*self._previous)

    def __repr__(self) -> str:
        return f"vr.testing.Setting(attempts={self.attempts!r}, sleep={self.sleep!r})"


def set(attempts: int | None = 1, sleep: bool = False) -> Setting:  # noqa: A001 (stamina's name)
    """Caps every retry at ``attempts`` (None: as configured) and, with
    ``sleep=False``, skips backoff sleeps and token waits, from now on.

    Returns a :class:`Setting`; used as a context manager (``with
    vr.testing.set(...):``) it restores the previous state on exit.
    ``attempts`` is an int in [1, 1_000_000] or None; ``sleep`` a bool
    (TypeError or ValueError naming the field otherwise).
    """
    if attempts is not None:
        attempts = _validate.integer("vr.testing.set", "attempts", attempts, 1, _MAX_ATTEMPTS)
    sleep = _validate.boolean("vr.testing.set", "sleep", sleep)
    setting = Setting(attempts, sleep, active())
    _apply(attempts, sleep)
    return setting


def off() -> None:
    """Every retry as configured again: no cap, real sleeps."""
    _apply(None, True)


def active() -> tuple[int | None, bool]:
    """The current ``(attempts, sleep)``; ``(None, True)`` when off."""
    return _testing_switch.attempts, _testing_switch.sleep


def _apply(attempts: int | None, sleep: bool) -> None:
    _testing_switch.attempts = attempts
    _testing_switch.sleep = sleep
