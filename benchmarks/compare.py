"""Side-by-side costs of a guarded call: a bare call, our primitives, the peers.

Everything is measured in one process run, interleaved round by round (each
round times every case once; a case's figure is its best round), so the
ratios compare like with like on a noisy machine. Absolute ns/call vary from
machine to machine; the ratios are the result.

    python benchmarks/compare.py              # full run (about a minute)
    python benchmarks/compare.py --quick      # fewer rounds, for a smoke test
    python benchmarks/compare.py --json out.json
    python benchmarks/compare.py --sections metrics   # only the primitives + one section

Peers that are not installed (``pip install virtrigaud-resilience[bench]``)
are skipped and reported as such. ``--check`` exits non-zero if a target of
DESIGN.md does not hold in this run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import virtrigaud_resilience as vr


def noop() -> None:
    """The user's function: does nothing, so only the guard's cost shows."""


async def noop_async() -> None:
    """The user's coroutine function: returns at once."""


@dataclass
class Case:
    """One thing to time: `run(n)` performs n guarded calls."""

    group: str
    name: str
    run: Callable[[int], Any]
    is_async: bool = False
    best_ns: float = float("inf")
    #: Called before / after each timed round (untimed): a case's process-wide setting.
    setup: Callable[[], Any] | None = None
    teardown: Callable[[], Any] | None = None


@dataclass
class Suite:
    cases: list[Case] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    #: Measurements that are not per call: (what, milliseconds, bound in ms).
    timings: list[tuple[str, float, float]] = field(default_factory=list)

    def add(self, group: str, name: str, stmt: str, *,
            setup: Callable[[], Any] | None = None,
            teardown: Callable[[], Any] | None = None, **names: Any) -> None:
        """A sync case timing the statement `stmt` (over `names`) in a tight loop."""
        self.cases.append(Case(group, name, _compile_loop(stmt, names, is_async=False),
                               setup=setup, teardown=teardown))

    def add_async(self, group: str, name: str, stmt: str, **names: Any) -> None:
        """An async case timing `stmt` (an await expression) in a loop inside one task."""
        self.cases.append(Case(group, name, _compile_loop(stmt, names, is_async=True),
                               is_async=True))

    def skip(self, what: str, why: BaseException) -> None:
        self.skipped.append(f"{what}: {type(why).__name__}: {why}")

    def get(self, group: str, name: str) -> Case:
        return next(c for c in self.cases if c.group == group and c.name == name)


def _compile_loop(stmt: str, names: dict[str, Any], is_async: bool) -> Callable[[int], Any]:
    """`def run(n)` looping over `stmt`, with `names` bound as fast locals
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


def measure(suite: Suite, rounds: int, n: int) -> None:
    """Times every case once per round, interleaved; keeps each case's best."""
    loop = asyncio.new_event_loop()
    try:
        for case in suite.cases:  # warm up: specialise bytecode, fill caches
            _time_once(case, max(n // 10, 100), loop)
        for _ in range(rounds):
            for case in suite.cases:
                case.best_ns = min(case.best_ns, _time_once(case, n, loop))
    finally:
        loop.close()


# ----------------------------------------------------------------- cases --

BARE = "bare call"
BARE_AWAIT = "bare await"


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

    backoff = vr.Backoff()
    suite.add("backoff", "virtrigaud Backoff.delay(3)", "backoff.delay(3)", backoff=backoff)
    _backoff_peers(suite)


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


# --------------------------------------------------------------- targets --


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
]


def report(suite: Suite, targets: list[Target]) -> tuple[str, bool]:
    """The results table and whether every measurable target held."""
    lines = [f"{'group':<16} {'case':<48} {'ns/call':>9} {'vs ours':>9}"]
    for group in dict.fromkeys(c.group for c in suite.cases):
        cases = [c for c in suite.cases if c.group == group]
        ours = next((c for c in cases if c.name.startswith("virtrigaud")), None)
        for c in cases:
            versus = f"{c.best_ns / ours.best_ns:8.1f}x" if ours and c is not ours else ""
            lines.append(f"{group:<16} {c.name:<48} {c.best_ns:9.1f} {versus:>9}")
    lines.append("")
    ok = True
    for t in targets:
        ratio = t.ratio(suite)
        if ratio is None:
            lines.append(f"  n/a   {t.what} (peer not installed)")
            continue
        held = ratio <= t.bound
        ok &= held
        shown = f"{ratio:.2f}x" if t.bound >= 1 else f"{1 / ratio:.1f}x faster"
        lines.append(f"  {'ok  ' if held else 'MISS'}  {t.what}: {shown}")
    for what, ms, bound in suite.timings:
        held = ms <= bound
        ok &= held
        lines.append(f"  {'ok  ' if held else 'MISS'}  {what}: {ms:.1f} ms (target <= {bound:g} ms)")
    for s in suite.skipped:
        lines.append(f"  skipped {s}")
    return "\n".join(lines), ok


def build_suite(sections: list[str]) -> tuple[Suite, list[Target]]:
    suite = Suite()
    targets = list(TARGETS)
    primitive_cases(suite)
    for section in sections:
        extra = SECTIONS[section](suite)
        targets.extend(extra)
    return suite, targets


def composed() -> vr.Policy:
    """The guide's composed policy: retry + breaker + bucket."""
    return (vr.PolicyBuilder("bench").with_retry(vr.RetryConfig.default())
            .with_circuit_breaker(vr.CircuitBreaker("bench-policy"))
            .with_rate_limiter(vr.TokenBucket(qps=1e9, burst=1_000_000)).build())


def policy_cases(suite: Suite) -> list[Target]:
    """The composed policy's success path against a bare call and the peers."""
    ours_sync, ours_async = "virtrigaud Policy.execute(noop)", "virtrigaud await Policy.execute_async"
    suite.add("policy sync", ours_sync, "policy.execute(noop)", policy=composed(), noop=noop)
    # vr.retry(config, fn), the guide's Retry(ctx, config, fn): one Retrier per config.
    suite.add("policy sync", "virtrigaud vr.retry(config, noop)", "retry(config, noop)",
              retry=vr.retry, config=vr.RetryConfig.default(), noop=noop)
    suite.add_async("policy async", BARE_AWAIT, "await noop_async()", noop_async=noop_async)
    suite.add_async("policy async", ours_async, "await policy.execute_async(noop_async)",
                    policy=composed(), noop_async=noop_async)
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
        Target("async composed policy <= 4x a bare await",
               ("policy async", ours_async), ("policy async", BARE_AWAIT), 4.0),
        Target("async composed policy >= 50x faster than tenacity async",
               ("policy async", ours_async), ("policy async", "tenacity async @retry"), 1 / 50),
    ]


SCRAPE_BREAKERS = 10_000


def metrics_cases(suite: Suite) -> list[Target]:
    """The composed policy with the Prometheus collector registered and not,
    interleaved (registered only during its own rounds), and the time of one
    scrape of 10,000 breakers."""
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
    suite.add("metrics", unregistered, "policy.execute(noop)", policy=policy, noop=noop)
    for providers in (100, SCRAPE_BREAKERS):
        what = (f"scrape of {SCRAPE_BREAKERS:,} breakers over {providers:,} "
                "label sets (collect + exposition)")
        suite.timings.append((what, _scrape_ms(metrics, providers), 100.0))
    return [Target("registering metrics changes the policy success path by <= 5%",
                   ("metrics", registered), ("metrics", unregistered), 1.05)]


def _scrape_ms(metrics: Any, providers: int) -> float:
    """Best of 5 scrapes (generate_latest) of a registry over 10,000 live breakers."""
    import prometheus_client

    registry = prometheus_client.CollectorRegistry()
    metrics.register(registry)
    config = vr.BreakerConfig(failure_threshold=1)
    breakers = [vr.CircuitBreaker(f"vm-{i}", "bench-scrape", f"p{i % providers}", config)
                for i in range(SCRAPE_BREAKERS)]
    for breaker in breakers[::7]:  # some open, so the worst-state logic has work
        breaker.force_open()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        prometheus_client.generate_latest(registry)
        best = min(best, time.perf_counter() - start)
    metrics.unregister(registry)
    del breakers
    gc.collect()
    return best * 1e3


def compat_cases(suite: Suite) -> list[Target]:
    """The drop-ins (virtrigaud_resilience.compat) against the peers they replace,
    each used as its users use it."""
    from virtrigaud_resilience.compat import aiolimiter as c_aiolimiter
    from virtrigaud_resilience.compat import circuitbreaker as c_circuitbreaker
    from virtrigaud_resilience.compat import pybreaker as c_pybreaker

    targets = []
    drop_ins = [
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
    limiter = c_aiolimiter.AsyncLimiter(1e9, 1)
    suite.add_async(group, "virtrigaud compat.aiolimiter async with limiter",
                    "async with limiter: pass", limiter=limiter)
    try:
        import aiolimiter

        peer_limiter = aiolimiter.AsyncLimiter(1e9, 1)
        suite.add_async(group, "aiolimiter async with limiter", "async with limiter: pass",
                        limiter=peer_limiter)
    except Exception as exc:
        suite.skip("aiolimiter (drop-in)", exc)
    targets.append(Target("compat.aiolimiter async with >= 3x faster than aiolimiter",
                          (group, "virtrigaud compat.aiolimiter async with limiter"),
                          (group, "aiolimiter async with limiter"), 1 / 3))
    return targets


def retry_dropin_cases(suite: Suite) -> list[Target]:
    from compat_retry import retry_dropin_cases as cases  # benchmarks/compat_retry.py

    return cases(suite)


#: Further sections register here: name -> function(suite) -> targets.
SECTIONS: dict[str, Callable[[Suite], list[Target]]] = {
    "policy": policy_cases,
    "metrics": metrics_cases,
    "compat": compat_cases,
    "retry-dropins": retry_dropin_cases,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 20k calls")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200_000, help="calls per round and case")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--sections", nargs="*", choices=list(SECTIONS), default=list(SECTIONS),
                        help="sections to run besides the primitives (default: all)")
    args = parser.parse_args(argv)
    rounds, calls = (3, 20_000) if args.quick else (args.rounds, args.calls)

    suite, targets = build_suite(args.sections)
    measure(suite, rounds, calls)
    text, ok = report(suite, targets)
    print(f"Python {sys.version.split()[0]}, {rounds} rounds x {calls} calls, best round\n")
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"cases": [{"group": c.group, "name": c.name, "ns": c.best_ns}
                                 for c in suite.cases],
                       "targets": [{"what": t.what, "ratio": t.ratio(suite)} for t in targets],
                       "timings": [{"what": w, "ms": ms, "bound_ms": b}
                                   for w, ms, b in suite.timings]},
                      f, indent=2)
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
