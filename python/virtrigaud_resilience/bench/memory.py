"""The ``memory`` bench section: what a fleet of breakers and buckets holds.

A controller with a breaker per VM holds 100,000 of them. For each kind of
object (ours and the peer it replaces) a fresh process (``spawn``: nothing
allocated before is there to reuse) makes a few untimed objects (imports,
first-use caches), then :data:`OBJECTS` more (:data:`QUICK_OBJECTS` with
``--quick``), each with a distinct name made beforehand (the name's own
string is not the object's), held in a list allocated beforehand, and
reports:

- the growth of the resident set size per object (``/proc/self/statm``;
  the peak of ``getrusage`` where there is no ``/proc``): what the machine
  pays, allocator slack and native memory included, the figure judged;
- the growth of tracemalloc's traced memory per object, over another batch
  as many: Python's allocators only (native ``new`` is not traced), so a
  gap between the two is memory allocated outside Python's heap or slack.

Targets (issue 21): a breaker <= :data:`BREAKER_LIMIT` bytes, a bucket <=
:data:`BUCKET_LIMIT` bytes of RSS growth each. Shown beside pybreaker's
``CircuitBreaker`` and aiolimiter's ``AsyncLimiter``, which are not judged.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from .suite import Suite, Target

__all__ = ["BREAKER_LIMIT", "BUCKET_LIMIT", "GROUP", "KINDS", "OBJECTS", "QUICK_OBJECTS",
           "Footprint", "MemoryTarget", "footprint", "memory_targets", "rss_bytes"]

GROUP = "memory"
#: Objects per kind: a full run, and ``--quick``.
OBJECTS, QUICK_OBJECTS = 100_000, 5_000
#: Targets: RSS growth per object, bytes.
BREAKER_LIMIT, BUCKET_LIMIT = 512, 256
#: Untimed objects made first (imports, type caches, first-use allocations).
_WARM_UP = 16
#: Seconds a child process may take for one kind (100,000 objects twice).
_TIMEOUT_S = 300.0


def _our_breaker(name: str) -> Any:
    import virtrigaud_resilience as vr

    return vr.CircuitBreaker(name, "bench", "memory")


def _pybreaker(name: str) -> Any:
    import pybreaker

    return pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60, name=name)


def _our_bucket(name: str) -> Any:
    import virtrigaud_resilience as vr

    return vr.TokenBucket(qps=10.0, burst=10)


def _aiolimiter(name: str) -> Any:
    import aiolimiter

    return aiolimiter.AsyncLimiter(10, 1)


#: Kind (its row's name) -> (the module it needs, a factory ``make(name)``).
KINDS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "virtrigaud CircuitBreaker": ("virtrigaud_resilience", _our_breaker),
    "pybreaker CircuitBreaker": ("pybreaker", _pybreaker),
    "virtrigaud TokenBucket": ("virtrigaud_resilience", _our_bucket),
    "aiolimiter AsyncLimiter": ("aiolimiter", _aiolimiter),
}


@dataclass(frozen=True)
class Footprint:
    """Bytes per object over ``objects`` objects: RSS growth and tracemalloc's."""

    objects: int
    rss: float
    traced: float


def rss_bytes() -> int:
    """The resident set size now, in bytes (Linux's ``/proc/self/statm``);
    where there is no ``/proc``, the peak so far (``getrusage``), which
    equals it while a process only grows."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes there, KiB elsewhere


def measure_here(kind: str, objects: int) -> Footprint:
    """:class:`Footprint` of ``objects`` objects of ``kind`` made in this process."""
    import tracemalloc

    make = KINDS[kind][1]
    warm = [make(f"warm-{i}") for i in range(_WARM_UP)]
    names = [f"vm-{i}" for i in range(objects)]
    held: list[Any] = [None] * objects
    gc.collect()
    before = rss_bytes()
    for i, name in enumerate(names):
        held[i] = make(name)
    rss = (rss_bytes() - before) / objects
    traced_held: list[Any] = [None] * objects
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for i, name in enumerate(names):
            traced_held[i] = make(name)
        traced = (tracemalloc.get_traced_memory()[0] - start) / objects
    finally:
        tracemalloc.stop()
    del warm, held, traced_held
    return Footprint(objects, rss, traced)


def _child(kind: str, objects: int, conn: Connection) -> None:
    try:
        conn.send(measure_here(kind, objects))
    except BaseException as exc:  # reported by the parent, which raises it
        conn.send(f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def footprint(kind: str, objects: int) -> Footprint:
    """:class:`Footprint` of ``kind`` measured in a fresh (spawned) process.
    Raises RuntimeError with the child's error if it fails or takes over
    :data:`_TIMEOUT_S` seconds."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(kind, objects, send), daemon=True,
                            name=f"bench-memory-{kind}")
    child.start()
    send.close()
    try:
        if not receive.poll(_TIMEOUT_S):
            raise RuntimeError(f"memory of {kind}: no answer within {_TIMEOUT_S:g} s")
        result = receive.recv()
    except EOFError:
        result = f"the child process ended with status {child.exitcode}"
    finally:
        receive.close()
        child.join(10)
        if child.is_alive():
            child.kill()
            child.join()
    if isinstance(result, Footprint):
        return result
    raise RuntimeError(f"memory of {kind}: {result}")


def memory_targets(suite: Suite) -> list[Target]:
    """Measures every kind now (peers that are not installed are skipped)
    and returns the two targets, ours against each limit."""
    objects = QUICK_OBJECTS if suite.repeats == 1 else OBJECTS
    measured: dict[str, Footprint] = {}
    for kind, (module, _) in KINDS.items():
        try:
            __import__(module)
        except Exception as exc:
            suite.skip(f"{module} (memory)", exc)
            continue
        measured[kind] = footprint(kind, objects)
    return [
        MemoryTarget(f"CircuitBreaker: RSS growth per object <= {BREAKER_LIMIT} B",
                     (GROUP, "virtrigaud CircuitBreaker"), (GROUP, "pybreaker CircuitBreaker"),
                     1.0, BREAKER_LIMIT, measured),
        MemoryTarget(f"TokenBucket: RSS growth per object <= {BUCKET_LIMIT} B",
                     (GROUP, "virtrigaud TokenBucket"), (GROUP, "aiolimiter AsyncLimiter"),
                     1.0, BUCKET_LIMIT, measured),
    ]


@dataclass
class MemoryTarget(Target):
    """``case``'s RSS growth per object against ``limit`` bytes: the ratio
    is growth / limit (held at <= ``bound``, 1). ``case`` and ``against``
    name kinds of :data:`KINDS` (``against``, the peer, is shown, not judged)."""

    limit: float = 0.0
    measured: dict[str, Footprint] | None = None

    def _footprint(self, which: tuple[str, str]) -> Footprint | None:
        return (self.measured or {}).get(which[1])

    def ratio(self, suite: Suite) -> float | None:
        ours = self._footprint(self.case)
        return None if ours is None else ours.rss / self.limit

    def shown(self, ratio: float) -> str:
        return f"{ratio * self.limit:,.0f} B ({ratio:.2f}x the target)"

    def detail(self, suite: Suite) -> str:
        ours, peer = self._footprint(self.case), self._footprint(self.against)
        if ours is None:
            return ""
        text = f"tracemalloc {ours.traced:,.0f} B"
        if peer is not None:
            text += f"; {self.against[1]} {peer.rss:,.0f} B, tracemalloc {peer.traced:,.0f} B"
        return f"{text}; {ours.objects:,} objects, a fresh process each"

    def figures(self, suite: Suite) -> dict[str, float]:
        ours, peer = self._footprint(self.case), self._footprint(self.against)
        if ours is None:
            return {}
        result = {"objects": float(ours.objects), "rss_bytes": ours.rss,
                  "traced_bytes": ours.traced, "limit_bytes": self.limit}
        if peer is not None:
            result.update(peer_rss_bytes=peer.rss, peer_traced_bytes=peer.traced)
        return result
