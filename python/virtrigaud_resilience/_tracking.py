"""Live objects of one kind, and the final counters of those dropped.

Breakers, buckets, bulkheads and retriers put themselves in their kind's
:class:`Census` when constructed and hand over their final counters when
garbage-collected (from ``__del__``), so the metrics collector can report
the live ones and fold the dropped ones into per-label totals: a breaker per
VM can come and go without leaking, and no counter goes backwards. Nothing
here runs on a call's path; only construction, collection and scrapes.
"""

from __future__ import annotations

import collections
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from . import _validate

__all__ = ["Census", "Counters", "Labels", "ProviderLabelled", "add_counters",
           "provider_labels"]

T = TypeVar("T")
Labels = tuple[str, ...]
Counters = tuple[int, ...]

# Dropped objects wait in a queue until folded; past this many, the dropping
# thread folds them itself (so a program that never scrapes stays bounded).
_FOLD_AT = 256


class ProviderLabelled:
    """The ``provider_type`` and ``provider`` labels an object's metrics are
    summed by (read-only for that reason). A class using it lists
    ``_provider_type`` and ``_provider`` in its own ``__slots__`` (if any)
    and sets them from :func:`provider_labels` in its constructor."""

    __slots__ = ()
    _provider_type: str
    _provider: str

    @property
    def provider_type(self) -> str:
        """The provider type label (read-only: metrics sum by it)."""
        return self._provider_type

    @property
    def provider(self) -> str:
        """The provider label (read-only: metrics sum by it)."""
        return self._provider


def provider_labels(owner: str, provider_type: Any, provider: Any) -> tuple[str, str]:
    """Both labels, validated (TypeError naming ``owner`` and the field for a
    non-str)."""
    return (_validate.string(owner, "provider_type", provider_type),
            _validate.string(owner, "provider", provider))


def add_counters(sums: dict[Labels, list[int]], labels: Labels, counters: Iterable[int]) -> None:
    """Adds ``counters`` element-wise to ``sums[labels]`` (created on first use)."""
    total = sums.get(labels)
    if total is None:
        sums[labels] = list(counters)
    else:
        for i, value in enumerate(counters):
            total[i] += value


class Census(Generic[T]):
    """The live objects of one kind and the summed final counters of dropped ones.

    Args:
        final: ``obj -> (labels, counters)``, read from an object as it is
            dropped; counters are summed per labels.
        native: a ``_core`` type with a native census (``_census_link``,
            ``_census_unlink``, ``_census_live``: cpp/src/census.hpp), or
            None. Its instances are kept in its intrusive list (16 bytes an
            object) instead of this census's dict of weak references (about
            180); other objects of the kind use the dict.
        name: ``obj -> str``, the name its dropped totals are kept under
            besides their labels while :meth:`keep_names` is on (the
            OpenTelemetry instruments' breaker names), or None.
    """

    # retire() runs from __del__, possibly at interpreter exit after this
    # module's globals were cleared (set to None): it and what it calls read
    # only these class attributes, never a module global.
    _fold_at = _FOLD_AT
    _add_counters = staticmethod(add_counters)

    def __init__(self, final: Callable[[T], tuple[Labels, Counters]],
                 native: type | None = None, name: Callable[[T], str] | None = None) -> None:
        self._final = final
        self._native: Any = native  # its _census_* methods are native
        self._name = name
        # id -> weak reference: an entry is removed by retire(), so only
        # objects that finished __init__ (track()) are ever retired.
        self._live: dict[int, weakref.ref[T]] = {}
        # (labels, counters, the name while names are kept else None)
        self._dropped: collections.deque[tuple[Labels, Counters, str | None]] = \
            collections.deque()
        self._totals: dict[Labels, list[int]] = {}
        # While keep_names() is on: labels + (name,) -> the totals of those
        # dropped since, and labels -> the totals from before (None when off:
        # a name per dropped VM would otherwise be kept for good).
        self._by_name: dict[Labels, list[int]] | None = None
        # retire() (pop + queue) and snapshot() (live + fold) exclude each
        # other, so a dying object is either live or dropped in a snapshot,
        # never both. Reentrant: garbage collection inside a snapshot runs
        # retire() in the same thread; it then only queues (see _folding).
        self._lock = threading.RLock()
        self._folding = False

    def track(self, obj: T) -> None:
        """Counts ``obj`` as live (the last step of its constructor)."""
        if self._native is not None and isinstance(obj, self._native):
            obj._census_link()
        else:
            self._live[id(obj)] = weakref.ref(obj)

    def retire(self, obj: T) -> None:
        """Hands over ``obj``'s final counters (from its ``__del__``).

        A subclass that overrides ``__del__`` must call ``super().__del__()``.
        """
        with self._lock:
            if self._native is not None and isinstance(obj, self._native):
                if not obj._census_unlink():
                    return  # its constructor failed before track()
            elif not self._forget(obj):
                return
            try:
                labels, counters = self._final(obj)
                name = None if self._by_name is None or self._name is None else self._name(obj)
            except Exception:
                # A half-built object under a stale id (its predecessor's
                # __del__ never reached us): nothing to count.
                return
            self._dropped.append((labels, counters, name))
            if len(self._dropped) >= self._fold_at and not self._folding:
                self._fold()

    def _forget(self, obj: T) -> bool:
        """Takes ``obj`` out of the dict (under the lock); False if it was not there."""
        ref = self._live.pop(id(obj), None)
        if ref is None:
            return False  # its constructor failed before track()
        if ref() is not obj and ref() is not None:
            self._live[id(obj)] = ref  # not ours: an entry of a live object
            return False
        return True

    def snapshot(self) -> tuple[list[T], dict[Labels, Counters]]:
        """The live objects and the dropped totals, read together.

        Hold the returned list until the objects' counters have been read:
        an object dropped by its owner meanwhile is retired only when the
        list goes, into the totals of the *next* snapshot, so each object is
        counted once per snapshot, live or dropped. (A garbage-collected
        cycle clears weak references before it finalizes, so such an object
        may be missing from one snapshot; the collector's clamp covers it.)
        """
        with self._lock:
            return self.live(), self.dropped_totals()

    def live(self) -> list[T]:
        """Strong references to the live objects (held, they cannot be dropped meanwhile)."""
        objects: list[T] = [] if self._native is None else self._native._census_live()
        for ref in list(self._live.values()):
            obj = ref()
            if obj is not None:
                objects.append(obj)
        return objects

    def dropped_totals(self, by_name: bool = False) -> dict[Labels, Counters]:
        """Summed final counters of the dropped objects, by labels (with
        ``by_name``, as :meth:`snapshot_by_name` keys them)."""
        with self._lock:
            self._fold()
            totals = self._totals if not by_name or self._by_name is None else self._by_name
            self._folding = True  # the copy below must not see a fold
            try:
                return {labels: tuple(counters) for labels, counters in totals.items()}
            finally:
                self._folding = False

    def keep_names(self, on: bool) -> None:
        """Starts (``on``) or stops keeping the dropped totals by labels and
        name too, for :meth:`snapshot_by_name`; those dropped before start
        stay under their labels alone. Stopping forgets the names."""
        with self._lock:
            self._fold()
            if not on:
                self._by_name = None
            elif self._by_name is None:
                self._by_name = {labels: list(counters)
                                 for labels, counters in self._totals.items()}

    def snapshot_by_name(self) -> tuple[list[T], dict[Labels, Counters]]:
        """As :meth:`snapshot`, the dropped totals keyed by labels + (name,)
        for those dropped while :meth:`keep_names` was on, by labels for the
        rest (all of them by labels while it is off)."""
        with self._lock:
            return self.live(), self.dropped_totals(by_name=True)

    def __len__(self) -> int:
        linked: int = 0 if self._native is None else self._native._census_size()
        return len(self._live) + linked

    def _fold(self) -> None:
        """Moves the queued final counters into the totals (under the lock)."""
        self._folding = True
        try:
            while self._dropped:
                labels, counters, name = self._dropped.popleft()
                self._add_counters(self._totals, labels, counters)
                if self._by_name is not None:
                    key = labels if name is None else labels + (name,)
                    self._add_counters(self._by_name, key, counters)
        finally:
            self._folding = False

