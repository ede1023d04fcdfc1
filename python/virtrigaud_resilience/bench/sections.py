"""What is measured: the primitives, and the sections a run can choose.

A section is one function ``section(suite) -> list[Target]`` that adds its
cases (ours, the peers', a baseline) to the suite and returns its targets,
registered with ``@section("name")``: that is all it takes to add one. A
peer that fails to import is skipped with ``suite.skip(what, exc)`` (a
missing module is listed with its pip command). The primitives (a bare
call, the token bucket, the breaker, the backoff, and their peers) always run.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from typing import Any

import virtrigaud_resilience as vr

from .suite import (BARE, BARE_AWAIT, Case, ExtraTarget, Skipped, Suite, Target, _compile_loop,
                    noop, noop_async)
from .threads import ONE, TWO

__all__ = ["SECTIONS", "TARGETS", "build_suite", "composed", "primitive_cases", "section"]

#: Sections by name, in the order they run: name -> function(suite) -> targets.
SECTIONS: dict[str, Callable[[Suite], list[Target]]] = {}


def section(name: str) -> Callable[[Callable[[Suite], list[Target]]],
                                   Callable[[Suite], list[Target]]]:
    """Registers a section function under ``name`` (``--sections name``)."""
    def register(fn: Callable[[Suite], list[Target]]) -> Callable[[Suite], list[Target]]:
        SECTIONS[name] = fn
        return fn
    return register


def build_suite(sections: list[str], repeats: int = 5) -> tuple[Suite, list[Target]]:
    """The primitives and the chosen sections' cases, and every target."""
    suite = Suite(repeats=repeats)
    targets = list(TARGETS)
    primitive_cases(suite)
    for name in sections:
        targets.extend(SECTIONS[name](suite))
    return suite, targets


# ------------------------------------------------------------ primitives --


def primitive_cases(suite: Suite) -> None:
    suite.add("call", BARE, "noop()", noop=noop)

    bucket = vr.TokenBucket(qps=1e9, burst=1_000_000)
    suite.add("rate limiter", "virtrigaud TokenBucket.try_acquire()", "bucket.try_acquire()",
              bucket=bucket)
    _limits_peers(suite)

    breaker = vr.CircuitBreaker("bench", "bench", "bench")
    suite.add("circuit breaker", "virtrigaud CircuitBreaker.call(noop)", "breaker.call(noop)",
              breaker=breaker, noop=noop)
    _breaker_peers(suite)
    _window_breakers(suite)

    backoff = vr.Backoff()
    suite.add("backoff", "virtrigaud Backoff.delay(3)", "backoff.delay(3)", backoff=backoff)
    _backoff_peers(suite)


def _window_breakers(suite: Suite) -> None:
    """Window-mode breakers (issue 22): a count and a time window, closed."""
    for label, window in ((WINDOW_COUNT, vr.CountWindow(100)), (WINDOW_TIME, vr.TimeWindow(60))):
        breaker = vr.CircuitBreaker("bench-window", "bench", "bench",
                                    vr.BreakerConfig(window=window))
        suite.add("circuit breaker", label, "breaker.call(noop)", breaker=breaker, noop=noop)


WINDOW_COUNT = "virtrigaud CircuitBreaker(CountWindow(100)).call(noop)"
WINDOW_TIME = "virtrigaud CircuitBreaker(TimeWindow(60)).call(noop)"


def _limits_peers(suite: Suite) -> None:
    try:
        from limits import RateLimitItemPerSecond, storage, strategies

        limiter = strategies.FixedWindowRateLimiter(storage.MemoryStorage())
        item = RateLimitItemPerSecond(10**9)
        suite.add("rate limiter", "limits FixedWindow.hit()", "limiter.hit(item)",
                  limiter=limiter, item=item)
    except Exception as exc:  # an absent or incompatible peer is reported, not fatal
        suite.skip("limits", exc)
    try:
        from pyrate_limiter import Duration, Limiter, Rate

        pyrate = Limiter(Rate(10**9, Duration.SECOND))
        suite.add("rate limiter", "pyrate-limiter Limiter.try_acquire()",
                  "pyrate.try_acquire('bench', blocking=False)", pyrate=pyrate)
    except Exception as exc:
        suite.skip("pyrate-limiter", exc)


def _breaker_peers(suite: Suite) -> None:
    try:
        import pybreaker

        pyb = pybreaker.CircuitBreaker(fail_max=10, reset_timeout=60)
        suite.add("circuit breaker", "pybreaker CircuitBreaker.call(noop)", "pyb.call(noop)",
                  pyb=pyb, noop=noop)
    except Exception as exc:
        suite.skip("pybreaker", exc)
    try:
        import circuitbreaker

        guarded = circuitbreaker.CircuitBreaker(failure_threshold=10, recovery_timeout=60)(noop)
        suite.add("circuit breaker", "circuitbreaker @circuit noop()", "guarded()",
                  guarded=guarded)
    except Exception as exc:
        suite.skip("circuitbreaker", exc)


def _backoff_peers(suite: Suite) -> None:
    import random

    def guide_formula_in_python(attempt: int) -> float:
        delay = min(0.5 * 2.0**attempt, 30.0)
        return delay + random.uniform(0, delay * 0.1)

    suite.add("backoff", "pure-Python guide formula", "formula(3)", formula=guide_formula_in_python)
    try:
        import tenacity

        wait = tenacity.wait_exponential(multiplier=0.5, max=30.0) + tenacity.wait_random(0, 0.1)
        state = tenacity.RetryCallState(tenacity.Retrying(), noop, (), {})
        state.attempt_number = 4
        suite.add("backoff", "tenacity wait_exponential + wait_random", "wait(state)",
                  wait=wait, state=state)
    except Exception as exc:
        suite.skip("tenacity (backoff)", exc)


TARGETS = [
    Target("TokenBucket.try_acquire() <= 2x a bare call",
           ("rate limiter", "virtrigaud TokenBucket.try_acquire()"), ("call", BARE), 2.0),
    Target("CircuitBreaker.call(noop) <= 2.5x a bare call of noop",
           ("circuit breaker", "virtrigaud CircuitBreaker.call(noop)"), ("call", BARE), 2.5),
    Target(">= 8x faster than circuitbreaker",
           ("circuit breaker", "virtrigaud CircuitBreaker.call(noop)"),
           ("circuit breaker", "circuitbreaker @circuit noop()"), 1 / 8),
    Target(">= 20x faster than pybreaker",
           ("circuit breaker", "virtrigaud CircuitBreaker.call(noop)"),
           ("circuit breaker", "pybreaker CircuitBreaker.call(noop)"), 1 / 20),
    Target("CircuitBreaker(CountWindow(100)).call(noop) <= 2.5x a bare call of noop",
           ("circuit breaker", WINDOW_COUNT), ("call", BARE), 2.5),
]


# -------------------------------------------------------------- sections --


def composed(budget: vr.RetryBudget | None = None) -> vr.Policy:
    """The guide's composed policy: retry + breaker + bucket (and ``budget``)."""
    return (vr.PolicyBuilder("bench").with_retry(vr.RetryConfig.default())
            .with_circuit_breaker(vr.CircuitBreaker("bench-policy"))
            .with_rate_limiter(vr.TokenBucket(qps=1e9, burst=1_000_000))
            .with_retry_budget(budget).build())


#: The composed policy with a retry budget (ratio): every call deposits.
BUDGETED_CASE = "virtrigaud Policy.execute(noop), ratio retry budget"


@section("policy")
def policy_cases(suite: Suite) -> list[Target]:
    """The composed policy's success path against a bare call and the peers."""
    ours_sync, ours_async = "virtrigaud Policy.execute(noop)", "virtrigaud await Policy.execute_async"
    suite.add("policy sync", ours_sync, "policy.execute(noop)", policy=composed(), noop=noop)
    # vr.retry(config, fn), the guide's Retry(ctx, config, fn): one Retrier per config.
    suite.add("policy sync", "virtrigaud vr.retry(config, noop)", "retry(config, noop)",
              retry=vr.retry, config=vr.RetryConfig.default(), noop=noop)
    # The same policy counting every call in a ratio retry budget (issue 23).
    suite.add("policy sync", BUDGETED_CASE, "policy.execute(noop)",
              policy=composed(vr.RetryBudget.ratio(0.2)), noop=noop)
    suite.add_async("policy async", BARE_AWAIT, "await noop_async()", noop_async=noop_async)
    suite.add_async("policy async", ours_async, "await policy.execute_async(noop_async)",
                    policy=composed(), noop_async=noop_async)
    _deadline_case(suite)
    stacked = "tenacity + pybreaker + limits stacked"
    try:
        import pybreaker
        import tenacity
        from limits import RateLimitItemPerSecond, storage, strategies

        limiter = strategies.FixedWindowRateLimiter(storage.MemoryStorage())
        item = RateLimitItemPerSecond(10**9)
        pyb = pybreaker.CircuitBreaker(fail_max=10, reset_timeout=60)
        retrying = tenacity.retry(stop=tenacity.stop_after_attempt(5),
                                  wait=tenacity.wait_exponential(multiplier=0.5, max=30))

        @retrying
        def guarded() -> None:
            if not limiter.hit(item):
                raise RuntimeError("rate limited")
            pyb.call(noop)

        suite.add("policy sync", stacked, "guarded()", guarded=guarded)
        suite.add("policy sync", "tenacity @retry alone", "plain()", plain=retrying(noop))

        @retrying
        async def tenacity_async() -> None:
            await noop_async()

        suite.add_async("policy async", "tenacity async @retry", "await tenacity_async()",
                        tenacity_async=tenacity_async)
    except Exception as exc:
        suite.skip("tenacity/pybreaker/limits (policy)", exc)
    try:
        import backoff

        suite.add("policy sync", "backoff @on_exception alone", "plain()",
                  plain=backoff.on_exception(backoff.expo, Exception, max_tries=5)(noop))
    except Exception as exc:
        suite.skip("backoff (policy)", exc)
    try:
        import stamina

        suite.add("policy sync", "stamina @retry alone", "plain()",
                  plain=stamina.retry(on=Exception, attempts=5)(noop))
    except Exception as exc:
        suite.skip("stamina (policy)", exc)
    return [
        Target("sync composed policy <= 4x a bare call",
               ("policy sync", ours_sync), ("call", BARE), 4.0),
        Target("sync composed policy >= 100x faster than tenacity + pybreaker + limits",
               ("policy sync", ours_sync), ("policy sync", stacked), 1 / 100),
        Target("async composed policy <= 2x a bare await",  # issue 21: the native awaitable
               ("policy async", ours_async), ("policy async", BARE_AWAIT), 2.0),
        Target("async composed policy >= 50x faster than tenacity async",
               ("policy async", ours_async), ("policy async", "tenacity async @retry"), 1 / 50),
        Target("a retry budget adds <= 10% to the sync composed policy",
               ("policy sync", BUDGETED_CASE), ("policy sync", ours_sync), 1.10),
        Target("vr.retry(config, noop) <= 3x a bare call",
               ("policy sync", "virtrigaud vr.retry(config, noop)"), ("call", BARE), 3.0),
        ExtraTarget("a per-attempt deadline adds <= 2 us to an async attempt",
                    ("policy async", DEADLINE_CASE), ("policy async", BARE_AWAIT), 2_000.0),
    ]


#: An async attempt under a per-attempt deadline (every ResilientProvider
#: call has one), as a policy's attempt runs it: the await inside call_until.
DEADLINE_CASE = "virtrigaud await under a per-attempt deadline"


def _deadline_case(suite: Suite) -> None:
    from virtrigaud_resilience.clock import SYSTEM_CLOCK
    from virtrigaud_resilience.timeouts import call_until, deadline_for

    suite.add_async("policy async", DEADLINE_CASE,
                    "await call_until(clock, deadline_for(clock, 30.0), 'attempt', "
                    "noop_async, (), {})",
                    call_until=call_until, deadline_for=deadline_for, clock=SYSTEM_CLOCK,
                    noop_async=noop_async)


SCRAPE_BREAKERS = 10_000
#: Targets in ms: a whole scrape (prometheus_client's exposition included)
#: of 10,000 breakers over 100 label sets, and our collector's collect()
#: alone over 10,000 label sets (issue 21). The whole scrape over 10,000
#: label sets is reported without a target: its text exposition, which is
#: prometheus_client's, writes some 130,000 lines and takes most of it.
SCRAPE_MS, COLLECT_MS = 100.0, 50.0


@section("metrics")
def metrics_cases(suite: Suite) -> list[Target]:
    """The composed policy with the Prometheus collector registered and not,
    interleaved (registered only during its own rounds), and the time of one
    scrape of 10,000 breakers, and of our collect() alone."""
    try:
        import prometheus_client

        from virtrigaud_resilience import metrics
    except ImportError as exc:
        suite.skip("metrics (prometheus-client)", exc)
        return []
    registry = prometheus_client.CollectorRegistry()

    def register() -> None:
        metrics.register(registry)
        prometheus_client.generate_latest(registry)  # the collector has run once

    registered = "virtrigaud Policy.execute(noop), metrics registered"
    unregistered = "Policy.execute(noop), metrics not registered"
    policy = composed()  # one policy for both: registration is the only difference
    suite.add("metrics", registered, "policy.execute(noop)", policy=policy, noop=noop,
              setup=register, teardown=lambda: metrics.unregister(registry))
    suite.add("metrics", unregistered, "policy.execute(noop)", policy=policy, noop=noop,
              role="reference")
    for providers in (100, SCRAPE_BREAKERS):
        collect_ms, scrape_ms = _scrape_ms(metrics, providers, suite.repeats)
        over = f"{SCRAPE_BREAKERS:,} breakers over {providers:,} label sets"
        bound = SCRAPE_MS if providers < SCRAPE_BREAKERS else None
        suite.timings.append((f"scrape of {over} (collect + exposition)", scrape_ms, bound))
        if providers == SCRAPE_BREAKERS:
            suite.timings.append((f"our collect() of {over}", collect_ms, COLLECT_MS))
    return [Target("registering metrics changes the policy success path by <= 5%",
                   ("metrics", registered), ("metrics", unregistered), 1.05)]


def _scrape_ms(metrics: Any, providers: int, repeats: int) -> tuple[float, float]:
    """Best of ``repeats`` of our collector's collect() (every family
    listed) and of a whole scrape (generate_latest) of a registry, over
    10,000 live breakers, in ms."""
    import prometheus_client

    registry = prometheus_client.CollectorRegistry()
    collector = metrics.register(registry)
    config = vr.BreakerConfig(failure_threshold=1)
    breakers = [vr.CircuitBreaker(f"vm-{i}", "bench-scrape", f"p{i % providers}", config)
                for i in range(SCRAPE_BREAKERS)]
    for breaker in breakers[::7]:  # some open, so the worst-state logic has work
        breaker.force_open()
    best_collect = best_scrape = float("inf")
    for _ in range(repeats):
        best_collect = min(best_collect, _seconds(lambda: list(collector.collect())))
        best_scrape = min(best_scrape, _seconds(lambda: prometheus_client.generate_latest(
            registry)))
    metrics.unregister(registry)
    del breakers
    gc.collect()
    return best_collect * 1e3, best_scrape * 1e3


def _seconds(work: Callable[[], Any]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


# -------------------------------------------------------------- drop-ins --


@section("compat")
def compat_cases(suite: Suite) -> list[Target]:
    """The breaker and limiter drop-ins (virtrigaud_resilience.compat) against
    the peers they replace, each used as its users use it."""
    from ..compat import aiolimiter as c_aiolimiter
    from ..compat import circuitbreaker as c_circuitbreaker
    from ..compat import pybreaker as c_pybreaker

    targets = []
    #: (peer, what, target factor, build(module) -> (callable, statement), our module)
    drop_ins: list[tuple[str, str, float, Callable[[Any], tuple[Any, str]], Any]] = [
        ("pybreaker", "CircuitBreaker.call(noop)", 10.0,
         lambda m: (m.CircuitBreaker(fail_max=10, reset_timeout=60).call, "call(noop)"),
         c_pybreaker),
        ("circuitbreaker", "@circuit noop()", 5.0,
         lambda m: (m.CircuitBreaker(failure_threshold=10, recovery_timeout=60)(noop),
                    "call()"), c_circuitbreaker),
    ]
    for peer, what, factor, build, ours in drop_ins:
        group = f"drop-in {peer}"
        call, stmt = build(ours)
        suite.add(group, f"virtrigaud compat.{peer} {what}", stmt, call=call, noop=noop)
        try:
            module = __import__(peer)
            call, stmt = build(module)
            suite.add(group, f"{peer} {what}", stmt, call=call, noop=noop)
        except Exception as exc:
            suite.skip(f"{peer} (drop-in)", exc)
        targets.append(Target(f"compat.{peer} {what} >= {factor:g}x faster than {peer}",
                              (group, f"virtrigaud compat.{peer} {what}"),
                              (group, f"{peer} {what}"), 1 / factor))
    group = "drop-in aiolimiter"
    suite.add_async(group, "virtrigaud compat.aiolimiter async with limiter",
                    "async with limiter: pass", limiter=c_aiolimiter.AsyncLimiter(1e9, 1))
    try:
        import aiolimiter

        suite.add_async(group, "aiolimiter async with limiter", "async with limiter: pass",
                        limiter=aiolimiter.AsyncLimiter(1e9, 1))
    except Exception as exc:
        suite.skip("aiolimiter (drop-in)", exc)
    targets.append(Target("compat.aiolimiter async with >= 3x faster than aiolimiter",
                          (group, "virtrigaud compat.aiolimiter async with limiter"),
                          (group, "aiolimiter async with limiter"), 1 / 3))
    return targets


_RETRY_SYNC, _RETRY_ASYNC = "retry drop-ins", "retry drop-ins async"


def _tenacity_retry(lib: Any) -> Any:
    """The issue's configuration: @retry(stop=stop_after_attempt(3), wait=wait_exponential())."""
    return lib.retry(stop=lib.stop_after_attempt(3), wait=lib.wait_exponential())


def _backoff_retry(lib: Any) -> Any:
    """@on_exception(expo, Exception, max_tries=3)."""
    return lib.on_exception(lib.expo, Exception, max_tries=3)


@section("retry-dropins")
def retry_dropin_cases(suite: Suite) -> list[Target]:
    """The tenacity and backoff drop-ins' success path against the real libraries."""
    from ..compat import backoff as c_backoff
    from ..compat import tenacity as c_tenacity

    ours = {"tenacity": "virtrigaud compat.tenacity @retry",
            "tenacity async": "virtrigaud compat.tenacity async @retry",
            "backoff": "virtrigaud compat.backoff @on_exception",
            "backoff async": "virtrigaud compat.backoff async @on_exception"}
    suite.add(_RETRY_SYNC, BARE, "noop()", noop=noop)
    suite.add(_RETRY_SYNC, ours["tenacity"], "f()", f=_tenacity_retry(c_tenacity)(noop))
    suite.add(_RETRY_SYNC, ours["backoff"], "f()", f=_backoff_retry(c_backoff)(noop))
    suite.add_async(_RETRY_ASYNC, BARE_AWAIT, "await noop_async()", noop_async=noop_async)
    suite.add_async(_RETRY_ASYNC, ours["tenacity async"], "await f()",
                    f=_tenacity_retry(c_tenacity)(noop_async))
    suite.add_async(_RETRY_ASYNC, ours["backoff async"], "await f()",
                    f=_backoff_retry(c_backoff)(noop_async))
    try:
        import tenacity

        suite.add(_RETRY_SYNC, "tenacity @retry", "f()", f=_tenacity_retry(tenacity)(noop))
        suite.add_async(_RETRY_ASYNC, "tenacity async @retry", "await f()",
                        f=_tenacity_retry(tenacity)(noop_async))
    except Exception as exc:  # an absent peer is reported, not fatal
        suite.skip("tenacity (retry drop-ins)", exc)
    try:
        import backoff

        suite.add(_RETRY_SYNC, "backoff @on_exception", "f()", f=_backoff_retry(backoff)(noop))
        suite.add_async(_RETRY_ASYNC, "backoff async @on_exception", "await f()",
                        f=_backoff_retry(backoff)(noop_async))
    except Exception as exc:
        suite.skip("backoff (retry drop-ins)", exc)
    return [
        Target("compat.tenacity @retry >= 20x faster than tenacity's",
               (_RETRY_SYNC, ours["tenacity"]), (_RETRY_SYNC, "tenacity @retry"), 1 / 20),
        Target("compat.tenacity async @retry >= 10x faster than tenacity's",
               (_RETRY_ASYNC, ours["tenacity async"]), (_RETRY_ASYNC, "tenacity async @retry"),
               1 / 10),
        Target("compat.backoff @on_exception >= 10x faster than backoff's",
               (_RETRY_SYNC, ours["backoff"]), (_RETRY_SYNC, "backoff @on_exception"), 1 / 10),
    ]


THREADS = "threads"


@section(THREADS)
def threads_cases(suite: Suite) -> list[Target]:
    """Total calls/s of two threads against one: separate objects per thread,
    and one object shared by both, beside a bare call and a plain Python
    object's method shared by both threads (the interpreter's own limit: on
    a free-threaded 3.13 every call of a shared object writes its reference
    count from both threads). Targets only on a free-threaded build (with the
    GIL, two threads take turns and nothing scales). Added once: ``concurrency``
    includes this section when it is not chosen."""
    from .threads import Crew, ScalingTarget, one_thread, two_threads  # only when asked for

    if any(case.group == THREADS for case in suite.cases):
        return []

    crew = Crew()
    plain = "plain object's method, shared"

    def add(name: str, stmt: str, make: Callable[[], dict[str, Any]], shared: bool,
            role: str) -> None:
        first = make()
        loops = (_compile_loop(stmt, first, is_async=False),
                 _compile_loop(stmt, first if shared else make(), is_async=False))
        suite.cases.append(Case(THREADS, name + ONE, one_thread(crew, loops[0]), role=role))
        suite.cases.append(Case(THREADS, name + TWO, two_threads(crew, loops), role=role))

    add(BARE, "noop()", lambda: {"noop": noop}, True, "baseline")
    add(plain, "obj.method()", lambda: {"obj": _Plain()}, True, "reference")
    workloads: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
        "CircuitBreaker.call(noop)": ("breaker.call(noop)", lambda: {
            "breaker": vr.CircuitBreaker("bench-threads"), "noop": noop}),
        "Policy.execute(noop)": ("policy.execute(noop)", lambda: {
            "policy": vr.Policy("bench-threads", retry=vr.RetryConfig.default(),
                                breaker=vr.CircuitBreaker("bench-threads")), "noop": noop}),
        "TokenBucket.try_acquire()": ("bucket.try_acquire()", lambda: {
            "bucket": vr.TokenBucket(qps=1e9, burst=1_000_000)}),
    }
    targets: list[Target] = []
    for what, (stmt, make) in workloads.items():
        separate, shared = f"virtrigaud {what}, one per thread", f"virtrigaud {what}, shared"
        add(separate, stmt, make, False, "ours")
        add(shared, stmt, make, True, "ours")
        targets.append(ScalingTarget(f"{what}, one per thread: scales >= 0.93x a bare call's",
                                     (THREADS, separate), (THREADS, BARE), 1 / 0.93))
        targets.append(ScalingTarget(f"{what}, one shared: scales >= 0.9x a plain shared "
                                     "object's", (THREADS, shared), (THREADS, plain), 1 / 0.9))
    if getattr(sys, "_is_gil_enabled", lambda: True)():
        suite.skipped.append(Skipped("threads targets", "the GIL is enabled: two threads "
                                     "take turns, so nothing scales (measured, not judged)"))
        return []
    return targets


class _Plain:
    """A plain Python object: the reference for a method call on a shared object."""

    def method(self) -> None:
        pass


# -------------------------------------------------------------- adapters --


@section("adapters")
def adapters_section(suite: Suite) -> list[Target]:
    """Loopback grpc.aio, sync grpc and httpx calls, bare and through our
    adapters, interleaved; medians end to end, and our own work per call
    (see :mod:`.adapters`). Needs grpcio and httpx (skipped without)."""
    from .adapters import adapter_cases

    return adapter_cases(suite)


# ----------------------------------------------------------------- fleets --


@section("concurrency")
def concurrency_section(suite: Suite) -> list[Target]:
    """500 asyncio tasks x 200 calls of a provider that yields once: bare,
    through our policy, through tenacity + aiolimiter + aiobreaker (see
    :mod:`.concurrency`); and two threads on separate and shared objects
    (the ``threads`` section, included when not chosen)."""
    from .concurrency import fleet_cases

    return fleet_cases(suite) + threads_cases(suite)


@section("memory")
def memory_section(suite: Suite) -> list[Target]:
    """RSS growth (and tracemalloc's) per object over 100,000 breakers and
    buckets, ours against pybreaker and aiolimiter, each kind in a fresh
    process (see :mod:`.memory`)."""
    from .memory import memory_targets

    return memory_targets(suite)


@section("hedging")
def hedging_section(suite: Suite) -> list[Target]:
    """A p95 hedge against none, in virtual time: p99 and extra requests over
    200,000 calls of a log-normal provider (p50 60 ms, p99 500 ms; see
    :mod:`.hedging`)."""
    from .hedging import hedging_targets

    return hedging_targets(suite)


@section("adaptive")
def adaptive_section(suite: Suite) -> list[Target]:
    """Issue 24's scenarios on virtual time: the adaptive rate against a
    provider's quota, the adaptive bulkhead against a provider whose
    capacity changes (see :mod:`.adaptive`)."""
    from .adaptive import adaptive_targets

    return adaptive_targets(suite)


@section("amplification")
def amplification_section(suite: Suite) -> list[Target]:
    """Attempts per original call, and success rates, with and without each
    retry budget kind: 2,000 calls/s for 60 simulated s at 100% and 10%
    failure, 4 attempts (see :mod:`.amplification`)."""
    from .amplification import amplification_targets

    return amplification_targets(suite)


@section("otel")
def otel_section(suite: Suite) -> list[Target]:
    """vr.otel's cost on the composed policy: not instrumented, the API
    without an SDK, SDK metrics with traces sampled out, every span sampled
    (see :mod:`.otel`). Needs opentelemetry-sdk (skipped without)."""
    from .otel import otel_cases

    return otel_cases(suite)
