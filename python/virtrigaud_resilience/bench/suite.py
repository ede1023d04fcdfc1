"""How cases are timed: interleaved rounds, best round per case, in one process.

A :class:`Suite` holds :class:`Case` s (a statement looped in a compiled
function, sync or inside one asyncio task) and :func:`measure` times every
case once per round, round after round, keeping each case's best: so the
ratios compare like with like on a noisy machine. A :class:`Target` is a
bound on the ratio of two cases (DESIGN.md's "How fast" table).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BARE", "BARE_AWAIT", "PIP_NAMES", "Case", "ExtraTarget", "Skipped", "Suite", "Target",
           "measure", "noop", "noop_async"]

BARE = "bare call"
BARE_AWAIT = "bare await"

#: The pip name of a peer whose import name differs (an import name not
#: listed here is its own pip name).
PIP_NAMES = {"pyrate_limiter": "pyrate-limiter", "prometheus_client": "prometheus-client"}


def noop() -> None:
    """The user's function: does nothing, so only the cost of guarding it shows."""


async def noop_async() -> None:
    """The user's coroutine function: returns at once."""


@dataclass
class Case:
    """One thing to time: ``run(n)`` performs n guarded calls.

    ``role``: ``ours`` (a virtrigaud case), ``peer`` (a library we compare
    with), ``baseline`` (a bare call or await) or ``reference`` (a variant
    of ours that is no peer).
    """

    group: str
    name: str
    run: Callable[[int], Any]
    is_async: bool = False
    best_ns: float = float("inf")
    #: Called before / after each timed round (untimed): a case's process-wide setting.
    setup: Callable[[], Any] | None = None
    teardown: Callable[[], Any] | None = None
    role: str = "peer"
    #: A case whose every run performs this many calls whatever ``n`` (a fleet
    #: of tasks, see :mod:`.concurrency`): timed per run, divided by this.
    calls: int | None = None


@dataclass(frozen=True)
class Skipped:
    """A peer (or section) that could not be measured, and how to install it."""

    what: str
    why: str
    install: str | None = None

    def __str__(self) -> str:
        return f"{self.what}: {self.why}" + (f" ({self.install})" if self.install else "")


def _role(name: str) -> str:
    if name in (BARE, BARE_AWAIT):
        return "baseline"
    return "ours" if name.startswith("virtrigaud") else "peer"


@dataclass
class Suite:
    cases: list[Case] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    #: Measurements that are not per call: (what, milliseconds, bound in ms,
    #: or None for a figure reported without a target).
    timings: list[tuple[str, float, float | None]] = field(default_factory=list)
    #: How many times a non-per-call measurement repeats (best of): 5, 1 when quick.
    repeats: int = 5

    def add(self, group: str, name: str, stmt: str, *,
            setup: Callable[[], Any] | None = None,
            teardown: Callable[[], Any] | None = None,
            role: str | None = None, **names: Any) -> None:
        """A sync case timing the statement ``stmt`` (over ``names``) in a tight
        loop. ``role`` defaults from the name (see :class:`Case`)."""
        self.cases.append(Case(group, name, _compile_loop(stmt, names, is_async=False),
                               setup=setup, teardown=teardown, role=role or _role(name)))

    def add_async(self, group: str, name: str, stmt: str, *, role: str | None = None,
                  **names: Any) -> None:
        """An async case timing ``stmt`` (an await expression) in a loop inside one task."""
        self.cases.append(Case(group, name, _compile_loop(stmt, names, is_async=True),
                               is_async=True, role=role or _role(name)))

    def skip(self, what: str, why: BaseException) -> None:
        """Records a peer that could not be set up: a missing module is listed
        with the pip command that installs it, anything else with its error."""
        if isinstance(why, ModuleNotFoundError) and why.name:
            module = why.name.split(".")[0]
            self.skipped.append(Skipped(what, f"{module} is not installed",
                                        f"pip install {PIP_NAMES.get(module, module)}"))
        else:
            self.skipped.append(Skipped(what, f"{type(why).__name__}: {why}"))

    def get(self, group: str, name: str) -> Case:
        return next(c for c in self.cases if c.group == group and c.name == name)


def _compile_loop(stmt: str, names: dict[str, Any], is_async: bool) -> Callable[[int], Any]:
    """``def run(n)`` looping over ``stmt``, with ``names`` bound as fast locals
    (as timeit does), so no global look-up or extra frame muddies the figure."""
    params = "".join(f", {k}={k}" for k in names)
    source = (f"{'async ' if is_async else ''}def run(n{params}):\n"
              f"    for _ in range(n):\n"
              f"        {stmt}\n")
    namespace = dict(names)
    exec(source, namespace)
    run: Callable[[int], Any] = namespace["run"]
    return run


def _time_once(case: Case, n: int, loop: asyncio.AbstractEventLoop) -> float:
    n = case.calls or n
    if case.setup is not None:
        case.setup()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        if case.is_async:
            loop.run_until_complete(case.run(n))
        else:
            case.run(n)
        return (time.perf_counter_ns() - start) / n
    finally:
        gc.enable()
        if case.teardown is not None:
            case.teardown()


def measure(suite: Suite, rounds: int, n: int,
            progress: Callable[[int, int], None] | None = None) -> None:
    """Times every case once per round, interleaved; keeps each case's best.
    ``progress(done, total)`` is told after each round (the warm-up is round 0)."""
    loop = asyncio.new_event_loop()
    try:
        for case in suite.cases:  # warm up: specialise bytecode, fill caches
            _time_once(case, max(n // 10, 100), loop)
        if progress is not None:
            progress(0, rounds)
        for done in range(1, rounds + 1):
            for case in suite.cases:
                case.best_ns = min(case.best_ns, _time_once(case, n, loop))
            if progress is not None:
                progress(done, rounds)
    finally:
        loop.close()


@dataclass
class Target:
    what: str
    case: tuple[str, str]
    against: tuple[str, str]
    bound: float  # case/against must be <= bound (a "faster than" target uses 1/x)

    def ratio(self, suite: Suite) -> float | None:
        try:
            return suite.get(*self.case).best_ns / suite.get(*self.against).best_ns
        except StopIteration:
            return None

    def detail(self, suite: Suite) -> str:
        """What the report shows beside the ratio (nothing, unless a subclass says)."""
        return ""

    def shown(self, ratio: float) -> str:
        """The measured ratio as the report prints it."""
        return f"{ratio:.2f}x" if self.bound >= 1 else f"{1 / ratio:.1f}x faster"

    def figures(self, suite: Suite) -> dict[str, float]:
        """The measured figures behind the ratio, for ``--json`` (none, unless a subclass says)."""
        return {}


class ExtraTarget(Target):
    """A bound on what a case costs more than another, in ns per call (its
    ``bound``), not on their ratio: for a cost added to calls whatever
    their own cost (a deadline per attempt)."""

    def ratio(self, suite: Suite) -> float | None:
        try:
            return suite.get(*self.case).best_ns - suite.get(*self.against).best_ns
        except StopIteration:
            return None

    def shown(self, ratio: float) -> str:
        return f"{ratio:+,.0f} ns"
