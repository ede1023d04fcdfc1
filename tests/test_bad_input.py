"""Bad input: every constructor and method refuses it with a message naming the
parameter and showing the value; nothing, not even the raw native classes,
crashes the interpreter (those checks run in a subprocess).
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

import pytest
import virtrigaud_resilience as vr

NAN = math.nan
INF = math.inf


class Case:
    """One bad call: `call()` must raise `exc` with `field` and `shown` in the message."""

    def __init__(
        self, id: str, call: Callable[[], Any], exc: type[Exception], field: str, shown: str
    ) -> None:
        self.id, self.call, self.exc, self.field, self.shown = id, call, exc, field, shown

    @property
    def pattern(self) -> str:
        return rf"\b{re.escape(self.field)}\b.*{re.escape(self.shown)}"


def check(case: Case) -> None:
    with pytest.raises(case.exc, match=case.pattern):
        case.call()


def cases(
    owner: str, field: str, make: Callable[[Any], Any], values: list[tuple[Any, type[Exception]]]
) -> list[Any]:
    return [
        pytest.param(
            Case(f"{owner}.{field}={v!r}", (lambda v=v: make(v)), exc, field, repr(v)),
            id=f"{owner}.{field}={v!r}"[:60],
        )
        for v, exc in values
    ]


# -------------------------------------------------------------- TokenBucket --

BAD_QPS = [
    (0, ValueError), (0.0, ValueError), (-1, ValueError), (NAN, ValueError), (INF, ValueError),
    (-INF, ValueError), (1e10, ValueError), (1e-9, ValueError), ("10", TypeError),
    (None, TypeError), (True, TypeError), (10**400, ValueError), ([10], TypeError),
]
BAD_BURST = [
    (0, ValueError), (-1, ValueError), (1.5, TypeError), (20.0, TypeError), ("20", TypeError),
    (2**64, ValueError), (10**7, ValueError), (None, TypeError), (True, TypeError),
]
BAD_N = [
    (0, ValueError), (-1, ValueError), (6, ValueError), (2**70, ValueError), (-(2**70), ValueError),
    (1.5, TypeError), (1.0, TypeError), ("1", TypeError), (None, TypeError), (True, TypeError),
]
BAD_TIMEOUT = [
    (-1, ValueError), (-0.001, ValueError), (NAN, ValueError), (INF, ValueError),
    (True, TypeError), ([1], TypeError),
]


def bucket(clock: vr.ManualClock | None = None) -> vr.TokenBucket:
    return vr.TokenBucket(qps=10, burst=5, clock=clock or vr.ManualClock())


TOKEN_BUCKET_CASES = [
    *cases("TokenBucket", "qps", lambda v: vr.TokenBucket(qps=v, burst=5), BAD_QPS),
    *cases("TokenBucket", "burst", lambda v: vr.TokenBucket(qps=10, burst=v), BAD_BURST),
    *cases("TokenBucket.try_acquire", "n", lambda v: bucket().try_acquire(v), BAD_N),
    *cases("TokenBucket.try_acquire(n=)", "n", lambda v: bucket().try_acquire(n=v), BAD_N),
    *cases("TokenBucket.reserve", "n", lambda v: bucket().reserve(v), BAD_N),
    *cases("TokenBucket.acquire", "n", lambda v: bucket().acquire(v), BAD_N),
    *cases("TokenBucket.acquire", "timeout", lambda v: bucket().acquire(1, v), BAD_TIMEOUT),
    *cases("TokenBucket.set_rate", "qps", lambda v: bucket().set_rate(v), BAD_QPS),
    *cases("TokenBucket.set_rate", "burst", lambda v: bucket().set_rate(10, v),
           [(v, e) for v, e in BAD_BURST if v is not None]),  # None keeps the burst
]


@pytest.mark.parametrize("case", TOKEN_BUCKET_CASES)
def test_token_bucket_bad_values(case: Case) -> None:
    check(case)


@pytest.mark.parametrize("n", [v for v, _ in BAD_N])
async def test_acquire_async_bad_n(n: Any) -> None:
    exc = next(e for v, e in BAD_N if v is n)
    with pytest.raises(exc, match=rf"\bn\b.*{re.escape(repr(n))}"):
        await bucket().acquire_async(n)


@pytest.mark.parametrize("timeout", [v for v, _ in BAD_TIMEOUT])
async def test_acquire_async_bad_timeout(timeout: Any) -> None:
    exc = next(e for v, e in BAD_TIMEOUT if v is timeout)
    with pytest.raises(exc, match=rf"\btimeout\b.*{re.escape(repr(timeout))}"):
        await bucket().acquire_async(1, timeout)


def test_bad_calls_take_no_tokens_and_leave_the_state() -> None:
    clock = vr.ManualClock()
    tb = vr.TokenBucket(qps=10, burst=5, clock=clock)
    for bad in (0, 6, 1.5, "1"):
        with pytest.raises((ValueError, TypeError)):
            tb.try_acquire(bad)
        with pytest.raises((ValueError, TypeError)):
            tb.reserve(bad)
    with pytest.raises(ValueError):
        tb.set_rate(0)
    assert (tb.qps, tb.burst, tb.tokens) == (10.0, 5, 5)
    assert (tb.admitted, tb.rejected, tb.reserved) == (0, 0, 0)


def test_refill_time_too_long_names_burst_and_qps() -> None:
    qps = vr.ratelimit.MIN_QPS
    with pytest.raises(ValueError, match=r"burst.*1000000.*qps"):
        vr.TokenBucket(qps=qps, burst=1_000_000)


@pytest.mark.parametrize("clock", ["clock", 5, time.monotonic, vr.SYSTEM_CLOCK, object()])
def test_token_bucket_bad_clock(clock: Any) -> None:
    with pytest.raises(TypeError, match=rf"\bclock\b.*{re.escape(repr(clock))}"):
        vr.TokenBucket(qps=10, burst=5, clock=clock)


def test_try_acquire_bad_arity() -> None:
    tb = bucket()
    with pytest.raises(TypeError, match="at most 1 argument"):
        tb.try_acquire(1, 2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'count'"):
        tb.try_acquire(count=1)  # type: ignore[call-arg]


# ------------------------------------------------------------ BreakerConfig --

BREAKER_CONFIG_CASES = [
    *cases("BreakerConfig", "failure_threshold",
           lambda v: vr.BreakerConfig(failure_threshold=v),
           [(0, ValueError), (-1, ValueError), (2**22, ValueError), (1.5, TypeError),
            (10.0, TypeError), ("10", TypeError), (True, TypeError), (None, TypeError)]),
    *cases("BreakerConfig", "reset_timeout",
           lambda v: vr.BreakerConfig(reset_timeout=v),
           [(-1, ValueError), (-0.5, ValueError), (NAN, ValueError), (INF, ValueError),
            (-INF, ValueError), (1e10, ValueError), (None, TypeError), (True, TypeError),
            ("soon", ValueError), ("-1s", ValueError), ([60], TypeError)]),
    *cases("BreakerConfig", "half_open_max_calls",
           lambda v: vr.BreakerConfig(half_open_max_calls=v),
           [(0, ValueError), (-3, ValueError), (2**16, ValueError), (1.5, TypeError),
            ("3", TypeError), (False, TypeError), (None, TypeError)]),
    *cases("BreakerConfig", "failure_predicate",
           lambda v: vr.BreakerConfig(failure_predicate=v),
           [(5, TypeError), ("isinstance", TypeError), (True, TypeError)]),
    *cases("BreakerConfig", "half_open_lease",
           lambda v: vr.BreakerConfig(half_open_lease=v),
           [(0, ValueError), (-1, ValueError), (NAN, ValueError), (INF, ValueError),
            (1e10, ValueError), ("0s", ValueError), ("never", ValueError), (True, TypeError),
            ([300], TypeError)]),
]


@pytest.mark.parametrize("case", BREAKER_CONFIG_CASES)
def test_breaker_config_bad_values(case: Case) -> None:
    check(case)


# ----------------------------------------------------------- CircuitBreaker --

CIRCUIT_BREAKER_CASES = [
    *cases("CircuitBreaker", "name", lambda v: vr.CircuitBreaker(v),
           [(5, TypeError), (None, TypeError), (b"cb", TypeError)]),
    *cases("CircuitBreaker", "provider_type", lambda v: vr.CircuitBreaker("cb", v),
           [(1, TypeError), (None, TypeError)]),
    *cases("CircuitBreaker", "provider", lambda v: vr.CircuitBreaker("cb", "t", v),
           [(1, TypeError), (["p"], TypeError)]),
    *cases("CircuitBreaker", "config", lambda v: vr.CircuitBreaker("cb", "t", "p", v),
           [({"failure_threshold": 3}, TypeError), (5, TypeError), ("cfg", TypeError),
            (vr.RetryConfig(), TypeError)]),
    *cases("CircuitBreaker", "clock", lambda v: vr.CircuitBreaker("cb", clock=v),
           [("clock", TypeError), (5, TypeError), (vr.SYSTEM_CLOCK, TypeError)]),
]


@pytest.mark.parametrize("case", CIRCUIT_BREAKER_CASES)
def test_circuit_breaker_bad_values(case: Case) -> None:
    check(case)


def test_circuit_breaker_call_without_fn() -> None:
    cb = vr.CircuitBreaker("cb")
    with pytest.raises(TypeError, match="'fn'"):
        cb.call()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="'fn'"):
        cb.call(fn=print)  # type: ignore[call-arg]
    assert cb.successes == cb.failures_total == cb.rejected == 0


# ------------------------------------------------------------------ Backoff --

BACKOFF_CASES = [
    *cases("Backoff", "multiplier", lambda v: vr.Backoff(multiplier=v),
           [(0.5, ValueError), (0, ValueError), (-2, ValueError), (NAN, ValueError),
            (INF, ValueError), ("2", TypeError), (None, TypeError), (True, TypeError)]),
    *cases("Backoff", "base_delay", lambda v: vr.Backoff(base_delay=v),
           [(-1, ValueError), (-0.1, ValueError), (NAN, ValueError), (INF, ValueError),
            (None, TypeError), (True, TypeError), ("soon", ValueError)]),
    *cases("Backoff", "max_delay", lambda v: vr.Backoff(base_delay=1.0, max_delay=v),
           [(0.5, ValueError), (0, ValueError), (-1, ValueError), (NAN, ValueError),
            (INF, ValueError), (1e6, ValueError), (None, TypeError)]),
    *cases("Backoff", "strategy", lambda v: vr.Backoff(strategy=v),
           [("linear", ValueError), ("EXPONENTIAL", ValueError), ("", ValueError),
            (None, ValueError), (1, ValueError)]),
    *cases("Backoff", "jitter", lambda v: vr.Backoff(jitter=v),
           [("yes", TypeError), ("false", TypeError), (1, TypeError), (0, TypeError),
            (None, TypeError)]),
    *cases("Backoff", "seed", lambda v: vr.Backoff(seed=v),
           [(-1, ValueError), (2**64, ValueError), (-(2**70), ValueError), ("x", TypeError),
            (1.0, TypeError), (True, TypeError)]),
    *cases("Backoff.delay", "attempt", lambda v: vr.Backoff().delay(v),
           [(-1, ValueError), (-(2**70), ValueError), (1.5, TypeError), (1.0, TypeError),
            ("1", TypeError), (True, TypeError)]),
    *cases("Backoff.delays", "attempts", lambda v: list(vr.Backoff().delays(v)),
           [(-1, ValueError), (1.5, TypeError), ("3", TypeError)]),
]


@pytest.mark.parametrize("case", BACKOFF_CASES)
def test_backoff_bad_values(case: Case) -> None:
    check(case)


def test_backoff_delay_none() -> None:
    with pytest.raises(TypeError, match=r"Backoff attempt must be an int, got NoneType None"):
        vr.Backoff().delay(None)  # type: ignore[arg-type]


# -------------------------------------------------------------- RetryConfig --

RETRY_CONFIG_CASES = [
    *cases("RetryConfig", "max_attempts", lambda v: vr.RetryConfig(max_attempts=v),
           [(0, ValueError), (-1, ValueError), (10**7, ValueError), (1.5, TypeError),
            ("5", TypeError), (True, TypeError), (None, TypeError)]),
    *cases("RetryConfig", "base_delay", lambda v: vr.RetryConfig(base_delay=v),
           [(-1, ValueError), (NAN, ValueError), (INF, ValueError), (None, TypeError),
            (True, TypeError), ("soon", ValueError)]),
    *cases("RetryConfig", "max_delay", lambda v: vr.RetryConfig(base_delay=1.0, max_delay=v),
           [(0.5, ValueError), (-1, ValueError), (NAN, ValueError), (1e6, ValueError),
            (None, TypeError)]),
    *cases("RetryConfig", "multiplier", lambda v: vr.RetryConfig(multiplier=v),
           [(0.9, ValueError), (0, ValueError), (NAN, ValueError), ("2", TypeError),
            (None, TypeError)]),
    *cases("RetryConfig", "jitter", lambda v: vr.RetryConfig(jitter=v),
           [("yes", TypeError), (1, TypeError), (None, TypeError)]),
    *cases("RetryConfig", "strategy", lambda v: vr.RetryConfig(strategy=v),
           [("linear", ValueError), (None, ValueError)]),
    *cases("RetryConfig", "seed", lambda v: vr.RetryConfig(seed=v),
           [(-1, ValueError), (2**64, ValueError), (1.5, TypeError), ("7", TypeError),
            (True, TypeError), (NAN, TypeError)]),
]


@pytest.mark.parametrize("case", RETRY_CONFIG_CASES)
def test_retry_config_bad_values(case: Case) -> None:
    check(case)


# -------------------------------------------------------------- ManualClock --

MANUAL_CLOCK_CASES = [
    *cases("ManualClock", "start", lambda v: vr.ManualClock(v),
           [(-1, ValueError), (NAN, ValueError), (INF, ValueError), (1e300, ValueError),
            ("0", TypeError), (None, TypeError), (True, TypeError)]),
    *cases("ManualClock.advance", "seconds", lambda v: vr.ManualClock().advance(v),
           [(-1, ValueError), (-1e-9, ValueError), (NAN, ValueError), (INF, ValueError),
            (-INF, ValueError), (1e300, ValueError), (None, TypeError), (True, TypeError),
            ("later", ValueError)]),
    *cases("ManualClock.set", "seconds", lambda v: vr.ManualClock().set(v),
           [(-1, ValueError), (NAN, ValueError), (INF, ValueError), (None, TypeError)]),
]


@pytest.mark.parametrize("case", MANUAL_CLOCK_CASES)
def test_manual_clock_bad_values(case: Case) -> None:
    check(case)


def test_manual_clock_refuses_to_go_backwards() -> None:
    clock = vr.ManualClock(5.0)
    with pytest.raises(ValueError, match=r"ManualClock.*backwards.*1\.0"):
        clock.set(1.0)
    assert clock.now() == 5.0
    clock.set(5.0)  # the present is fine
    clock.set(7.5)
    assert clock.now() == 7.5
    with pytest.raises(ValueError):
        clock.advance(-0.5)
    assert clock.now() == 7.5


# ------------------------------------------------------------ ProviderError --

ERROR_CASES = [
    *cases("ProviderError", "type", lambda v: vr.ProviderError(v, "m"),
           [("Bogus", ValueError), ("notfound", ValueError), (None, ValueError), (3, ValueError)]),
    *cases("ProviderError", "message", lambda v: vr.ProviderError("NotFound", v),
           [(5, TypeError), (None, TypeError), (b"m", TypeError)]),
    *cases("ProviderError", "cause", lambda v: vr.ProviderError("NotFound", "m", v),
           [("boom", TypeError), (5, TypeError), (ValueError, TypeError)]),
    *cases("ProviderError", "retryable",
           lambda v: vr.ProviderError("NotFound", "m", retryable=v),
           [("yes", TypeError), (1, TypeError)]),
    *cases("new_error", "type", lambda v: vr.new_error(v, "m"), [("Bogus", ValueError)]),
    # retry_after: finite, >= 0, at most MAX_RETRY_AFTER (1e9 s), on every error type
    *cases("RateLimitError", "retry_after", lambda v: vr.RateLimitError("m", retry_after=v),
           [(1e11, ValueError), (1e9 + 1, ValueError), (NAN, ValueError), (INF, ValueError),
            (-1, ValueError), (-INF, ValueError), ("60", TypeError), (True, TypeError),
            ([1], TypeError)]),
    *cases("UnavailableError", "retry_after", lambda v: vr.UnavailableError("m", retry_after=v),
           [(1e11, ValueError), (NAN, ValueError), ("60", TypeError)]),
    *cases("ProviderError", "retry_after",
           lambda v: vr.ProviderError("Unavailable", "m", retry_after=v),
           [(7e9, ValueError), (-0.1, ValueError)]),
    *cases("CircuitOpenError", "retry_after", lambda v: vr.CircuitOpenError("b", retry_after=v),
           [(1e11, ValueError), (NAN, ValueError), (-5, ValueError), ("soon", TypeError)]),
]


@pytest.mark.parametrize("case", ERROR_CASES)
def test_error_bad_values(case: Case) -> None:
    check(case)


# ------------------------------------------------- nothing crashes (natively) --


def run_isolated(code: str) -> subprocess.CompletedProcess[str]:
    """Runs `code` in a fresh interpreter; a crash shows as a negative return code."""
    return subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    detail = f"rc={result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}"
    assert result.returncode == 0, detail
    assert result.stdout.strip().endswith("DONE"), detail


PRELUDE = """
import gc, sys, warnings
warnings.simplefilter("ignore")
import virtrigaud_resilience as vr
from virtrigaud_resilience import _core

def expect(excs, f, *args, **kwargs):
    try:
        f(*args, **kwargs)
    except excs:
        return
    raise AssertionError(f"{f!r}{args} did not raise {excs}")
"""

NATIVE_SNIPPETS = {
    "token_bucket_extremes": """
        b = _core.TokenBucket(0, 0, None)             # clamped: 1 ns/token, burst 1
        assert (b.interval_ns, b.burst) == (1, 1), (b.interval_ns, b.burst)
        assert b.try_acquire() in (True, False)
        b = _core.TokenBucket(2**62, 2**40, None)     # clamped to the limits
        assert b.interval_ns == _core.TOKEN_BUCKET_MAX_INTERVAL_NS
        assert 1 <= b.burst <= _core.TOKEN_BUCKET_MAX_BURST
        assert b.burst * b.interval_ns <= _core.TOKEN_BUCKET_MAX_TAU_NS
        assert b.try_acquire() is True
        b._reserve(1, 2**62); b._reserve(2**62, 2**62); b._reserve(1, -2**63)
        b._cancel(2**62, 2**62, 2**62, 0); b._cancel(-1, 0, 0, 2**64 - 1)
        config = b._reserve(1, 0)[4]
        b._refund(1, -2**63, config); b._refund(1, 2**63 - 1, config); b._refund(2**63 - 1, 0, config)
        b._cancel(1, -2**63, 2**63 - 1, config)
        b._set_rate(2**63 - 1, 2**63 - 1); b._set_rate(-2**63, -2**63); b._set_rate(0, 0)
        b.tokens; b.qps
        for interval, burst in [(-2**63, -2**63), (2**63 - 1, 2**63 - 1), (1, 2**63 - 1)]:
            b = _core.TokenBucket(interval, burst, None)
            b.try_acquire(); b.tokens
        expect(TypeError, _core.TokenBucket, 2**64, 1, None)
        expect(TypeError, _core.TokenBucket, 1, 1, "clock")
        expect(ValueError, b.try_acquire, 2**63)
        expect(ValueError, b.try_acquire, -2**63 - 1)
    """,
    "raw_methods_without_self": """
        expect(TypeError, _core.CircuitBreaker.call)
        expect(TypeError, _core.TokenBucket.try_acquire)
        expect(TypeError, _core.CircuitBreaker.call, object(), print)
        expect(TypeError, _core.TokenBucket.try_acquire, object())
        expect(TypeError, vr.TokenBucket.try_acquire, vr.CircuitBreaker("x"))
        expect(TypeError, vr.CircuitBreaker.call, vr.TokenBucket(), print)
        expect(TypeError, _core._specialise, int)
        expect(TypeError, _core._specialise, 5)
    """,
    "uninitialised_instances": """
        for cls in (vr.TokenBucket, _core.TokenBucket):
            b = cls.__new__(cls)
            expect(RuntimeError, b.try_acquire)
            expect(RuntimeError, b.try_acquire, 1)
            expect(Exception, lambda: b.tokens)
            expect(Exception, b._reserve, 1, 0)
        for cls in (vr.CircuitBreaker, _core.CircuitBreaker):
            c = cls.__new__(cls)
            expect(RuntimeError, c.call, print)
            expect(Exception, c._admit)
            expect(Exception, c.reset)
            expect(Exception, lambda: c.failures)
        expect(Exception, vr.CircuitBreaker.__new__(vr.CircuitBreaker).try_acquire)
        expect(Exception, repr, vr.CircuitBreaker.__new__(vr.CircuitBreaker))
        expect(Exception, repr, vr.TokenBucket.__new__(vr.TokenBucket))
        expect(Exception, vr.Backoff.__new__(vr.Backoff).delay, 1)
        expect(Exception, vr.ManualClock.__new__(vr.ManualClock).now)

        class Lazy(vr.TokenBucket):
            def __init__(self):  # forgets super().__init__()
                pass

        class LazyBreaker(vr.CircuitBreaker):
            def __init__(self):
                pass

        expect(RuntimeError, Lazy().try_acquire)
        expect(RuntimeError, LazyBreaker().call, print)
        gc.collect()
    """,
    "reinitialising": """
        clock = vr.ManualClock()
        b = vr.TokenBucket(qps=10, burst=5, clock=clock)
        expect(TypeError, _core.TokenBucket.__init__, b, 1, 1, None)
        assert b.burst == 5 and b.try_acquire()
        c = vr.CircuitBreaker("x", clock=clock)
        expect(TypeError, c.__init__, "y")
        assert c.name == "x"
        assert c.call(int, 3) == 3
    """,
    "breaker_extremes": """
        c = _core.CircuitBreaker("n", "t", "p", 2**32 - 1, 2**63 - 1, 2**32 - 1, None, print)
        assert c.failure_threshold == _core.BREAKER_MAX_FAILURE_THRESHOLD
        assert c.half_open_max_calls == _core.BREAKER_MAX_HALF_OPEN_CALLS
        c = _core.CircuitBreaker("n", "t", "p", 0, -2**63, 0, None, print)
        assert (c.failure_threshold, c.half_open_max_calls, c.reset_timeout) == (1, 1, 0.0)
        expect(TypeError, _core.CircuitBreaker, "n", "t", "p", -1, 0, 1, None, print)
        expect(TypeError, _core.CircuitBreaker, "n", "t", "p", 1, 2**63, 1, None, print)
        c._record(-1, 0); c._record(2**62, 1); c._record(-2**63, 2); c._record(0, 99)
        c._record_exception(2**62, ValueError()); expect(TypeError, c._record_exception, -1, None)
        c.reset(); c.force_open(); c.reset()
        # a huge reset timeout (or lease) is clamped: remaining_open never overflows
        c = _core.CircuitBreaker("n", "t", "p", 1, 2**63 - 1, 1, _core.ManualClock(2**63 - 1),
                                 print, 2**63 - 1)
        assert c.reset_timeout == _core.BREAKER_MAX_TIMEOUT_NS / 1e9
        assert c.half_open_lease == _core.BREAKER_MAX_TIMEOUT_NS / 1e9
        c.force_open(); c.reset()
        c._record(c._admit(), 1)
        assert c.remaining_open == c.reset_timeout
    """,
    "clock_saturates": """
        clock = _core.ManualClock(2**63 - 1)
        assert clock.now_ns() == _core.MAX_CLOCK_NS
        clock = _core.ManualClock(-2**63)
        assert clock.now_ns() == 0
        clock._advance_ns(2**63 - 1); clock._advance_ns(2**63 - 1)
        assert clock.now_ns() == _core.MAX_CLOCK_NS
        clock._advance_ns(-2**63)
        assert clock.now_ns() == _core.MAX_CLOCK_NS
        assert clock._set_ns(2**63 - 1) is True and clock.now_ns() == _core.MAX_CLOCK_NS
        b = _core.TokenBucket(1, 1000, clock)      # at the end of time, sums still fit
        assert b.try_acquire() and b._reserve(1000, 2**63 - 1)[0]
        assert b.tokens < 0
    """,
    "refund_saturates": """
        clock = _core.ManualClock(10**9)
        b = _core.TokenBucket(1000, 5, clock)
        config = b._reserve(1, 0)[4]
        assert b._refund(1, -2**63, config) == 0       # no overflow, nothing forged
        assert b._refund(2**63 - 1, 0, config) == 0    # more tokens than the burst
        assert b._refund(1, 2**63 - 1, config) == 1    # a bogus tat_after gives back <= n
        assert b.tokens == 5.0
        assert b._cancel(1, 0, 2**63 - 1, config + 1) == 0  # another rate's reservation
    """,
    "classifier_returning_garbage": """
        def boom():
            raise ValueError("v")
        sys.unraisablehook = lambda args: None
        for classify in (lambda e: "x", lambda e: 2**100, lambda e: -5, lambda e: 1 / 0,
                         lambda e: None, 5):
            c = _core.CircuitBreaker("n", "t", "p", 1, 0, 1, None, classify)
            expect(ValueError, c.call, boom)   # the call's own error, unchanged
            assert c.failures_total == 1       # an unusable answer counts as a failure
    """,
    "call_forwarding": """
        cb = vr.CircuitBreaker("x")
        def f(*a, **k):
            return a, k
        kw = {f"k{i}": i for i in range(50)}
        assert cb.call(f, *range(100), **kw) == (tuple(range(100)), kw)
        assert cb.call(f) == ((), {})
        assert cb.call(f, k=1) == ((), {"k": 1})
        assert cb.call(sorted, [3, 1, 2], reverse=True) == [3, 2, 1]
        assert cb.call(dict, a=1) == {"a": 1}
        assert cb.call(vr.CircuitBreaker("y").call, int, "7") == 7   # nested breakers
        expect(TypeError, cb.call, None)                               # not callable
        def recurse(n):
            return cb.call(recurse, n - 1) if n else "bottom"
        assert cb.call(recurse, 100) == "bottom"
        sys.unraisablehook = lambda args: None
        expect(RecursionError, cb.call, recurse, 10**6)
    """,
    "hooks_misbehaving": """
        sys.unraisablehook = lambda args: None
        def boom():
            raise ValueError("v")
        cb = vr.CircuitBreaker("w", config=vr.BreakerConfig(failure_threshold=1))
        cb.add_listener(lambda b, o, n: b.reset() if n == vr.BreakerState.OPEN else None)
        def interrupt(b, o, n):
            raise KeyboardInterrupt
        cb.add_listener(interrupt)
        expect(KeyboardInterrupt, cb.call, boom)  # a listener's interrupt propagates
        _core._install_hooks(lambda b: 5, lambda *a: 1 / 0)
        c = vr.CircuitBreaker("z", config=vr.BreakerConfig(failure_threshold=1))
        expect(ValueError, c.call, boom)
        expect(Exception, c.call, print)          # reject hook returned a non-exception
        _core._install_hooks(lambda b: 1 / 0, lambda *a: None)
        expect(ZeroDivisionError, c.call, print)
        expect(TypeError, _core._install_hooks, 1, 2)
    """,
    "clock_lifetime": """
        b = _core.TokenBucket(10**8, 5, _core.ManualClock(0))
        c = _core.CircuitBreaker("n", "t", "p", 1, 10, 1, _core.ManualClock(0), print)
        bb = vr.TokenBucket(qps=10, burst=5, clock=vr.ManualClock())
        gc.collect()
        assert b.tokens == 5.0 and b.try_acquire()
        assert c.remaining_open == 0.0 and c.call(int) == 0
        assert bb.try_acquire(5)
    """,
    "backoff_extremes": """
        for args in [(float("nan"), float("inf"), -1.0, True, 99, True, 2**64 - 1),
                     (-1.0, -5.0, 0.0, False, -7, False, 0),
                     (1e308, 1e308, 1e308, True, 3, True, 0)]:
            bo = _core.Backoff(*args)
            for attempt in (0, 1, 2**62, 2**200):
                bo.delay(attempt, float("nan")); bo.delay(attempt, -1.0); bo.delay(attempt, 1e308)
        expect(TypeError, _core.Backoff, 1.0, 1.0, 1.0, True, 0, True, 2**64)
        expect(TypeError, _core.Backoff, 1.0, 1.0, 1.0, True, 0, True, -1)
    """,
    "histogram_extremes": """
        h = _core.LatencyHistogram(3)
        for seconds in (float("nan"), float("inf"), -1.0, 1e308, -1e308, 0.0, 5e-10):
            h.record(seconds)                         # NaN and negatives as 0, huge ones clamped
        assert h.count == 3 and h.recorded == 7
        for percent in (1e-300, 50.0, 100 - 1e-12):
            assert 0 <= h.percentile(percent) < 1e-8
        assert h.percentile(50, -5) >= 0 and h.percentile(50, 2**62) != h.percentile(50, 2**62)
        for percent in (float("nan"), 0.0, 100.0, -1.0, float("inf")):
            expect(ValueError, h.percentile, percent)
        for window in (0, -1, 10**6 + 1):
            expect(ValueError, _core.LatencyHistogram, window)
        expect(TypeError, _core.LatencyHistogram, 2**70)
        expect(TypeError, h.record, "1")
        big = _core.LatencyHistogram(10**6)
        big.record(1.0)
        assert big.percentile(50) > 0.9
    """,
}


@pytest.mark.parametrize("name", list(NATIVE_SNIPPETS))
def test_native_layer_never_crashes(name: str) -> None:
    code = PRELUDE + textwrap.dedent(NATIVE_SNIPPETS[name]) + "\nprint('DONE')\n"
    assert_clean(run_isolated(code))


def test_native_layer_concurrent_abuse_never_crashes() -> None:
    """Threads racing set_rate, reserve/cancel and breaker transitions."""
    code = PRELUDE + textwrap.dedent(
        """
        import threading
        sys.setswitchinterval(1e-6)
        clock = vr.ManualClock()
        tb = vr.TokenBucket(qps=1000, burst=10, clock=clock)
        cb = vr.CircuitBreaker("x", config=vr.BreakerConfig(1, 0.0, 2), clock=clock)

        def fail():
            raise ValueError

        def worker(i):
            for k in range(3000):
                tb.try_acquire()
                r = tb.reserve()
                if k % 2:
                    r.cancel()
                if k % 97 == 0:
                    tb.set_rate(10 + (i * k) % 1000, 1 + k % 20)
                p = cb.try_acquire()
                if p is not None:
                    (p.success, p.failure, p.release)[k % 3]()
                if k % 50 == 0:
                    (cb.reset, cb.force_open)[i % 2]()
                    clock.advance(0.001)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
        assert 1 <= tb.burst <= 20
        """
    ) + "\nprint('DONE')\n"
    assert_clean(run_isolated(code))
