"""Finalisers stay silent at interpreter exit.

At exit CPython clears the modules still alive, setting their globals to
None, and objects they held (breakers in module globals, in the closures of
threads) are finalised afterwards. A ``__del__`` that reads a module global
then prints ``Exception ignored in ... __del__`` on stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import virtrigaud_resilience as vr
from virtrigaud_resilience import breaker, ratelimit


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """Runs ``code`` in a fresh interpreter importing the package under test."""
    env = dict(os.environ)
    package_dir = str(Path(vr.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_dir, env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-X", "dev", "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=120, env=env)


def test_objects_held_at_exit_are_finalised_silently() -> None:
    result = run_python("""
        import threading
        import virtrigaud_resilience as vr
        from virtrigaud_resilience import _tracking

        # More than the census folds at once, in every place exit clears late.
        def kit(tag):
            return ([vr.CircuitBreaker(f"{tag}{i}") for i in range(300)]
                    + [vr.TokenBucket(qps=1, burst=1) for _ in range(300)]
                    + [vr.Bulkhead(1) for _ in range(300)]
                    + [vr.Retrier(vr.RetryConfig.none()) for _ in range(300)])

        held_by_main = kit("main")
        _tracking.held_by_tracking = kit("tracking")  # cleared with the module

        def closure(objects):
            return lambda: len(objects)

        workers = [threading.Thread(target=closure(kit(f"t{n}")), daemon=True)
                   for n in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        pending = [closure(kit(f"c{n}")) for n in range(4)]
        parked = threading.Event()
        threading.Thread(target=closure(kit("daemon")), daemon=True).start()
        threading.Thread(target=lambda held=kit("parked"): parked.wait(), daemon=True).start()
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
    assert result.stderr == ""


def test_census_retire_survives_its_module_globals_cleared() -> None:
    # What the interpreter does to a module it clears at exit, done on purpose:
    # every global of _tracking set to None, then the objects dropped.
    result = run_python("""
        import virtrigaud_resilience as vr
        from virtrigaud_resilience import _tracking

        objects = ([vr.CircuitBreaker(f"b{i}") for i in range(600)]
                   + [vr.TokenBucket(qps=1, burst=1) for _ in range(600)])
        for name in list(vars(_tracking)):
            if not name.startswith("__"):
                setattr(_tracking, name, None)
        del objects
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
    assert result.stderr == ""


def drop(make: object, count: int) -> None:
    """Builds ``count`` objects with ``make`` (each used once), then drops them."""
    objects = [make() for _ in range(count)]  # type: ignore[operator]
    for obj in objects:
        if isinstance(obj, vr.CircuitBreaker):
            obj.call(int)
        else:
            obj.try_acquire()


def test_dropped_counters_still_fold_into_their_totals() -> None:
    # Past the census's batch size the dropping thread folds: still summed right.
    count = breaker.BREAKERS._fold_at + 5
    drop(lambda: vr.CircuitBreaker("x", provider_type="exit-test", provider="b"), count)
    drop(lambda: vr.TokenBucket(qps=1, burst=1, provider_type="exit-test", provider="t"),
         count)
    assert breaker.BREAKERS.dropped_totals()[("exit-test", "b")][0] == count  # successes
    assert ratelimit.BUCKETS.dropped_totals()[("exit-test", "t")][0] == count  # admitted
