"""Timing a statement run by one thread or by two at once, and how well it scales.

A :class:`Crew` of two parked threads runs a case's loops: with one thread
(the other idles) or with both, each doing half of the calls. Both kinds of
case start and stop the same way (through the same barrier), so the ratio of
their ns per call (the 1-thread figure over the 2-thread one) is how much
more the pair gets done per second: about 2.0 where two threads run truly in
parallel, about 1.0 or less where they take turns (a GIL, or a cache line
both threads write). A :class:`ScalingTarget` bounds one workload's scaling
against a reference workload's, measured in the same run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .suite import Suite, Target

__all__ = ["Crew", "ScalingTarget", "one_thread", "two_threads"]

#: The case names' suffixes: a workload ``w`` is measured as ``w + ONE`` and ``w + TWO``.
ONE = ", 1 thread"
TWO = ", 2 threads"


class Crew:
    """Two daemon threads parked on a barrier; :meth:`run` hands them loops.

    Runs are serialised by the suite (one case at a time), so one crew
    serves every case of a run.
    """

    def __init__(self) -> None:
        self._start = threading.Barrier(3)
        self._done = threading.Barrier(3)
        self._jobs: list[tuple[Callable[[int], Any], int] | None] = [None, None]
        self._workers = [threading.Thread(target=self._work, args=(i,), daemon=True,
                                          name=f"bench-crew-{i}") for i in range(2)]
        for worker in self._workers:
            worker.start()

    def run(self, loops: list[Callable[[int], Any]], n: int) -> None:
        """Runs ``loops[i](n // len(loops))`` in worker ``i``, all at once; returns when all end."""
        share = max(n // len(loops), 1)
        self._jobs[:] = [(loop, share) for loop in loops] + [None] * (2 - len(loops))
        self._start.wait()
        self._done.wait()

    def _work(self, index: int) -> None:
        while True:
            self._start.wait()
            job = self._jobs[index]
            try:
                if job is not None:
                    loop, share = job
                    loop(share)
            finally:
                self._done.wait()


def one_thread(crew: Crew, loop: Callable[[int], Any]) -> Callable[[int], None]:
    """A case's ``run(n)``: ``n`` calls of ``loop`` in one worker."""
    return lambda n: crew.run([loop], n)


def two_threads(crew: Crew, loops: tuple[Callable[[int], Any], Callable[[int], Any]]
                ) -> Callable[[int], None]:
    """A case's ``run(n)``: ``n`` calls in all, half in each worker, each its own loop."""
    return lambda n: crew.run(list(loops), n)


def scaling(suite: Suite, group: str, workload: str) -> float | None:
    """Calls per second with two threads over calls per second with one."""
    try:
        return suite.get(group, workload + ONE).best_ns / suite.get(group, workload + TWO).best_ns
    except StopIteration:
        return None


@dataclass
class ScalingTarget(Target):
    """``workload`` must scale at least ``1 / bound`` times as well as ``case``'s
    reference: ``ratio`` is the reference's scaling over the workload's.
    (``case`` and ``against`` name the two workloads, without the suffixes.)"""

    def ratio(self, suite: Suite) -> float | None:
        ours = scaling(suite, *self.case)
        reference = scaling(suite, *self.against)
        if ours is None or reference is None:
            return None
        return reference / ours

    def detail(self, suite: Suite) -> str:
        ours = scaling(suite, *self.case)
        reference = scaling(suite, *self.against)
        if ours is None or reference is None:
            return ""
        return (f"2 threads vs 1: {ours:.2f}x against {reference:.2f}x, "
                f"{ours / reference:.2f} of it; target >= {1 / self.bound:.2f}")
