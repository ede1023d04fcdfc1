"""What one breaker and one bucket hold (issue 21: a fleet holds 100,000).

The bytes are counted with tracemalloc, which sees every allocation on
Python's heap (the native state lives inside the Python object, so it is
counted too) and nothing else: exact and independent of the machine's load,
unlike the resident set size the bench judges. The parts a fleet's objects
can share (the default config, the failure classifier, the label strings)
are shared, the optional ones (listeners) made on first use, and the census
of live objects kept in the objects themselves (cpp/src/census.hpp).
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
import weakref
from collections.abc import Callable
from typing import Any

import pytest

import virtrigaud_resilience as vr
from virtrigaud_resilience import _core, breaker, ratelimit

#: Objects per measurement: enough to average away a dict's or list's growth.
OBJECTS = 2_000
#: Bytes on Python's heap per object. Before issue 21: 1,019 and 427.
BREAKER_TRACED_LIMIT = 400
BUCKET_TRACED_LIMIT = 192


def traced_bytes_per_object(make: Callable[[int], Any]) -> float:
    """Python-heap bytes each of OBJECTS objects made by ``make(i)`` holds."""
    held: list[Any] = [None] * OBJECTS
    make(-1)  # first-use allocations (caches, interned names) are not the object's
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for i in range(OBJECTS):
            held[i] = make(i)
        return (tracemalloc.get_traced_memory()[0] - start) / OBJECTS
    finally:
        tracemalloc.stop()


def test_a_breaker_holds_under_400_bytes_of_pythons_heap() -> None:
    names = [f"vm-{i}" for i in range(OBJECTS)]
    size = traced_bytes_per_object(lambda i: vr.CircuitBreaker(names[i], "fleet", "prod"))
    assert size <= BREAKER_TRACED_LIMIT


def test_a_bucket_holds_under_192_bytes_of_pythons_heap() -> None:
    size = traced_bytes_per_object(lambda i: vr.TokenBucket(qps=10.0, burst=10))
    assert size <= BUCKET_TRACED_LIMIT


def test_breakers_given_no_config_share_the_default_one() -> None:
    a, b = vr.CircuitBreaker("a"), vr.CircuitBreaker("b")
    assert a.config is b.config
    assert a.config == vr.BreakerConfig()


def test_breakers_of_one_config_share_its_classifier() -> None:
    def predicate(exc: BaseException) -> bool:
        return isinstance(exc, OSError)

    default = breaker._classifier(None)
    assert breaker._classifier(breaker.default_failure_predicate) is default
    assert default in gc.get_referents(vr.CircuitBreaker("c"))
    config = vr.BreakerConfig(failure_predicate=predicate)
    a, b = vr.CircuitBreaker("a", config=config), vr.CircuitBreaker("b", config=config)
    hook = breaker._classifier_of(config)
    assert hook is not default
    assert hook in gc.get_referents(a) and hook in gc.get_referents(b)
    # An equal config (the same predicate) gets the same hook.
    assert breaker._classifier_of(vr.BreakerConfig(failure_predicate=predicate)) is hook


def test_a_dropped_config_takes_its_classifier_and_predicate_with_it() -> None:
    def make_predicate() -> Any:
        return lambda exc: isinstance(exc, OSError)

    predicate = make_predicate()
    gone = weakref.ref(predicate)
    cb = vr.CircuitBreaker("dropped", config=vr.BreakerConfig(failure_predicate=predicate))
    del predicate, cb
    gc.collect()
    assert gone() is None


def test_an_unhashable_predicate_gets_a_hook_of_its_own() -> None:
    class Unhashable:
        __hash__ = None  # type: ignore[assignment]

        def __call__(self, exc: BaseException) -> bool:
            return isinstance(exc, KeyError)

    config = vr.BreakerConfig(1, failure_predicate=Unhashable())
    with pytest.raises(TypeError):
        hash(config)
    cb = vr.CircuitBreaker("unhashable", config=config)
    with pytest.raises(ValueError):
        cb.call(int, "x")
    assert cb.state is vr.BreakerState.CLOSED  # a ValueError does not count
    with pytest.raises(KeyError):
        cb.call({}.__getitem__, "x")
    assert cb.state is vr.BreakerState.OPEN


def test_listeners_are_made_on_first_use() -> None:
    cb = vr.CircuitBreaker("listened", config=vr.BreakerConfig(1))
    assert cb._listeners is None
    seen: list[tuple[str, str]] = []

    def listener(b: vr.CircuitBreaker, old: vr.BreakerState, new: vr.BreakerState) -> None:
        seen.append((old.name, new.name))

    with pytest.raises(ValueError, match="is not a listener of circuit breaker 'listened'"):
        cb.remove_listener(listener)
    cb.add_listener(listener)
    cb.force_open()
    cb.remove_listener(listener)
    cb.reset()
    assert seen == [("CLOSED", "OPEN")]


def test_names_and_labels_are_the_callers_strings() -> None:
    name, kind, provider = (f"{part}-{id(object())}" for part in ("vm", "vsphere", "prod"))
    cb = vr.CircuitBreaker(name, kind, provider)
    assert cb.name is name and cb.provider_type is kind and cb.provider is provider


@pytest.mark.parametrize("bad", [b"bytes", 1, None])
def test_a_native_breaker_refuses_a_name_that_is_not_a_str(bad: object) -> None:
    with pytest.raises(TypeError):
        _core.CircuitBreaker(bad, "", "", 1, 0, 1, None, breaker._classifier(None))


def tracked(census: Any, obj: object) -> bool:
    return any(live is obj for live in census.live())


@pytest.mark.parametrize(("census", "make"), [
    (breaker.BREAKERS, lambda: vr.CircuitBreaker("census", "census-test", "x")),
    (ratelimit.BUCKETS, lambda: vr.TokenBucket(1.0, 1, provider_type="census-test")),
])
def test_the_census_holds_a_live_object_until_it_is_dropped(census: Any,
                                                            make: Callable[[], Any]) -> None:
    before = len(census)
    obj = make()
    assert tracked(census, obj) and len(census) == before + 1
    assert sys.getrefcount(obj) == 2  # the census holds no reference of its own
    obj._counters()
    del obj
    gc.collect()
    assert len(census) == before
    assert census.dropped_totals()[("census-test", "x" if census is breaker.BREAKERS else "")]


def test_the_census_forgets_an_object_whose_del_skipped_retire() -> None:
    class Forgetful(vr.CircuitBreaker):
        def __del__(self) -> None:  # no super().__del__(): never retired
            pass

    before = len(breaker.BREAKERS)
    objects = [Forgetful(f"f{i}") for i in range(3)]
    middle = objects[1]
    assert len(breaker.BREAKERS) == before + 3
    del objects[1]
    assert sys.getrefcount(middle) == 2
    del middle  # the native destructor takes it out of the list
    assert len(breaker.BREAKERS) == before + 2
    assert all(tracked(breaker.BREAKERS, obj) for obj in objects)
    objects.clear()
    assert len(breaker.BREAKERS) == before


def test_a_bare_native_object_is_not_in_the_census() -> None:
    before = len(breaker.BREAKERS), len(ratelimit.BUCKETS)
    held = (_core.CircuitBreaker("bare", "", "", 1, 0, 1, None, breaker._classifier(None)),
            _core.TokenBucket(1, 1))
    assert (len(breaker.BREAKERS), len(ratelimit.BUCKETS)) == before
    assert not any(tracked(breaker.BREAKERS, obj) for obj in held)


def test_linking_twice_and_unlinking_twice_change_nothing() -> None:
    bucket = vr.TokenBucket(1.0, 1)
    before = len(ratelimit.BUCKETS)
    assert bucket._census_link() is False  # already linked by its constructor
    assert len(ratelimit.BUCKETS) == before
    assert bucket._census_unlink() is True and bucket._census_unlink() is False
    assert len(ratelimit.BUCKETS) == before - 1
    with pytest.raises(TypeError):
        _core.TokenBucket._census_unlink(vr.CircuitBreaker("not a bucket"))


def test_a_refusing_bucket_calls_python_after_the_layout_change() -> None:
    # The flag now lives in the native bucket's spare bytes (token_bucket.hpp).
    class Refusing(vr.TokenBucket):
        def _refused(self, n: int) -> str:
            return f"refused {n}"

    bucket = Refusing(1.0, 1, clock=vr.ManualClock())
    assert bucket.try_acquire() is True
    assert bucket.try_acquire() is False
    bucket._set_refusal_calls_python(True)
    assert bucket.try_acquire() == "refused 1"  # type: ignore[comparison-overlap]
    bucket._set_refusal_calls_python(False)
    assert bucket.try_acquire() is False


def test_the_census_lists_live_objects_in_the_order_they_were_made() -> None:
    # As the dict it replaced did: the exposition keeps its order.
    made = [vr.CircuitBreaker(f"order-{i}") for i in range(5)]
    mine = [obj for obj in breaker.BREAKERS.live() if any(obj is m for m in made)]
    assert [obj.name for obj in mine] == [obj.name for obj in made]


#: CPython 3.12's Py_TPFLAGS_MANAGED_WEAKREF: the weak-reference list two
#: words before the object (a bit unused before 3.12).
_MANAGED_WEAKREF = 1 << 3


@pytest.mark.parametrize("make", [
    lambda: vr.CircuitBreaker("weak"),
    lambda: vr.TokenBucket(1.0, 1),
], ids=["breaker", "bucket"])
def test_the_fleet_objects_keep_their_weak_references_inside_the_object(
        make: Callable[[], Any]) -> None:
    """A Python subclass's __weakref__ is "managed" from 3.12: two words in
    front of the object, which took the breaker a pymalloc size class up
    (530 B per window breaker in CI's 3.12 run against 513 B on 3.11). The
    native types hold the list themselves, at a fixed offset, on every
    version."""
    obj = make()
    cls = type(obj)
    assert cls.__weakrefoffset__ > 0
    assert not cls.__flags__ & _MANAGED_WEAKREF
    assert "__weakref__" not in cls.__dict__.get("__slots__", ())
    ref = weakref.ref(obj)
    assert ref() is obj
    del obj
    gc.collect()
    assert ref() is None


#: sys.getsizeof of a breaker (GC header included): one pymalloc size
#: class. 368 while the native object reserved 56 bytes to align its core.
BREAKER_OBJECT_BYTES = 352


def test_a_breaker_object_is_one_size_class_smaller_than_an_aligned_core_needs() -> None:
    assert sys.getsizeof(vr.CircuitBreaker("sized")) <= BREAKER_OBJECT_BYTES


def test_breakers_at_every_alignment_keep_their_core_and_fields_apart() -> None:
    """The core sits at the object's first 64-byte boundary and the provider
    and listeners in the bytes left before or after it, which differ with
    the object's address: 64 breakers land at every offset pymalloc gives."""
    config = vr.BreakerConfig(1)
    fleet = [vr.CircuitBreaker(f"vm-{i}", "vsphere", f"dc-{i}", config=config)
             for i in range(64)]
    assert len({id(cb) % 64 for cb in fleet}) > 1
    heard: list[int] = []
    for i, cb in enumerate(fleet):
        cb.add_listener(lambda b, old, new, i=i: heard.append(i))
        with pytest.raises(KeyError):
            cb.call({}.__getitem__, "missing")
    assert heard == list(range(64))
    assert all(cb.state is vr.BreakerState.OPEN for cb in fleet)
    assert [cb.provider for cb in fleet] == [f"dc-{i}" for i in range(64)]
    assert [cb.name for cb in fleet] == [f"vm-{i}" for i in range(64)]
    assert all(len(cb._listeners or ()) == 1 for cb in fleet)
    for cb in fleet:
        cb.reset()
    assert heard == list(range(64)) * 2


#: RSS growth per window breaker (issue 22's target, the bench's judge for
#: the consecutive breaker): the window's memory is native (operator new),
#: which tracemalloc does not see, so it is measured as the bench measures.
#: Of the ~496 B, 352 are the Python object's (its pymalloc size class), 80
#: the window's allocation (72 B asked) and ~63 nanobind's table of
#: instances (2^18 entries at 100,000 objects; how many of its pages a run
#: touches varies by a few bytes per object). 496.4 B measured on 3.11 and
#: 3.12; 508-530 B before the native object stopped padding for the core's
#: alignment and held its weak references itself.
WINDOW_BREAKER_RSS_LIMIT = 512
_WINDOW_FOOTPRINT_SCRIPT = """
import gc, sys
import virtrigaud_resilience as vr
from virtrigaud_resilience.bench.memory import rss_bytes

objects = int(sys.argv[1])
config = vr.BreakerConfig(window=vr.CountWindow(100))
make = lambda name: vr.CircuitBreaker(name, "bench", "memory", config=config)
warm = [make(f"warm-{i}") for i in range(16)]
names = [f"vm-{i}" for i in range(objects)]
held = [None] * objects
gc.collect()
before = rss_bytes()
for i, name in enumerate(names):
    held[i] = make(name)
print((rss_bytes() - before) / objects)
"""


def test_a_count_window_breaker_grows_the_rss_by_at_most_512_bytes() -> None:
    """100,000 breakers with CountWindow(100) in a fresh process (the bench's
    method): the Python object, its native window (one 72-byte allocation;
    the settings are shared by the config's breakers) and nanobind's entry.
    709 B before the window was sized to its ring and the settings shared."""
    import os
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", _WINDOW_FOOTPRINT_SCRIPT, "100000"], capture_output=True,
        text=True, timeout=300, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        check=False)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) <= WINDOW_BREAKER_RSS_LIMIT


def test_the_breakers_of_one_window_config_share_its_native_settings() -> None:
    config = vr.BreakerConfig(window=vr.CountWindow(100))
    shared = breaker._window_settings_of(config)
    assert shared is not None and shared.size == 100
    assert breaker._window_settings_of(config) is shared
    assert breaker._window_settings_of(vr.BreakerConfig(window=vr.CountWindow(100))) is shared
    assert breaker._window_settings_of(vr.BreakerConfig()) is None
    # Each breaker holds the settings natively: they outlive the config's entry.
    cb = vr.CircuitBreaker("shared", config=config)
    del config, shared
    gc.collect()
    assert cb.window_calls == (0, 0, 0) and cb.windowed
    cb.call(int)
    assert cb.window_calls == (1, 0, 0)


def test_a_breaker_whose_listener_holds_it_is_collected() -> None:
    """The listeners live natively (not in a slot): the collector still sees
    them, so a cycle through a listener goes (tp_traverse visits the list)."""
    cb = vr.CircuitBreaker("cycle", config=vr.BreakerConfig(1))

    def listener(b: vr.CircuitBreaker, old: vr.BreakerState, new: vr.BreakerState) -> None:
        assert cb is b

    cb.add_listener(listener)
    assert cb._listeners == [listener]
    with pytest.raises(TypeError, match="_listeners must be a list or None, got tuple"):
        cb._listeners = ()  # type: ignore[assignment]
    gone = weakref.ref(cb)
    del cb, listener
    gc.collect()
    assert gone() is None
