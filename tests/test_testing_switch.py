"""vr.testing: retries capped, backoff sleeps and token waits skipped, for
every retry made before or after the switch; off restores them.

The retries here are configured for long real sleeps (30 s and more): a test
that finishes at all within the bound measured against them proves no
sleep ran. Bounds are from the configured sleeps, never absolute timings.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import virtrigaud_resilience as vr
from virtrigaud_resilience.compat import backoff as compat_backoff
from virtrigaud_resilience.compat import tenacity as compat_tenacity

pytest_plugins = ["pytester"]

LONG = 30.0  # seconds: a backoff sleep that no passing test could have slept
PATIENT = vr.RetryConfig(max_attempts=5, base_delay=LONG, max_delay=LONG, jitter=False)


@pytest.fixture(autouse=True)
def switch_off_after() -> Iterator[None]:
    yield
    vr.testing.off()


class AlwaysFailing:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        raise vr.UnavailableError("down")

    async def call_async(self) -> Any:
        return self()


def timed(fn: Any) -> tuple[Any, float]:
    start = time.monotonic()
    try:
        fn()
    except vr.UnavailableError as exc:
        return exc, time.monotonic() - start
    raise AssertionError("the call did not fail")


# -- the targets: one attempt, no sleep -----------------------------

def test_a_policy_made_before_the_switch_makes_one_attempt() -> None:
    policy = vr.PolicyBuilder("switch").with_retry(PATIENT).build()
    vr.testing.set(attempts=1)
    failing = AlwaysFailing()
    _, took = timed(lambda: policy.execute(failing))
    assert failing.calls == 1 and took < LONG


def test_a_policy_made_after_the_switch_makes_one_attempt_async() -> None:
    vr.testing.set(attempts=1)
    policy = vr.PolicyBuilder("switch").with_retry(PATIENT).build()
    failing = AlwaysFailing()
    _, took = timed(lambda: asyncio.run(policy.execute_async(failing.call_async)))
    assert failing.calls == 1 and took < LONG


def test_vr_retry_makes_one_attempt() -> None:
    failing = AlwaysFailing()
    with vr.testing.set(attempts=1):
        error, took = timed(lambda: vr.retry(PATIENT, failing))
    assert failing.calls == 1 and took < LONG
    assert error.attempts == 1


def test_the_tenacity_drop_in_makes_one_attempt() -> None:
    failing = AlwaysFailing()

    @compat_tenacity.retry(stop=compat_tenacity.stop_after_attempt(5),
                           wait=compat_tenacity.wait_fixed(LONG), reraise=True)
    def call() -> Any:
        return failing()

    with vr.testing.set(attempts=1):
        _, took = timed(call)
    assert failing.calls == 1 and took < LONG


def test_the_backoff_drop_in_makes_one_attempt() -> None:
    failing = AlwaysFailing()

    @compat_backoff.on_exception(compat_backoff.constant, vr.UnavailableError, max_tries=5,
                                 interval=LONG, jitter=None)
    def call() -> Any:
        return failing()

    with vr.testing.set(attempts=1):
        _, took = timed(call)
    assert failing.calls == 1 and took < LONG


# -- sleep=False alone: every attempt, no sleeping ---------------------------

def test_sleep_false_keeps_the_attempts_and_skips_the_sleeps() -> None:
    three = vr.RetryConfig(max_attempts=3, base_delay=LONG, max_delay=LONG, jitter=False)
    failing = AlwaysFailing()
    with vr.testing.set(attempts=None, sleep=False):
        _, took = timed(lambda: vr.retry(three, failing))
    assert failing.calls == 3 and took < 2 * LONG


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_sleep_false_skips_the_drop_ins_sleeps(mode: str) -> None:
    failing = AlwaysFailing()
    tenacity = compat_tenacity.retry(stop=compat_tenacity.stop_after_attempt(2),
                                     wait=compat_tenacity.wait_fixed(LONG), reraise=True)
    backoff = compat_backoff.on_exception(compat_backoff.constant, vr.UnavailableError,
                                          max_tries=2, interval=LONG, jitter=None)

    def call() -> Any:
        return failing()

    async def call_async() -> Any:
        return failing()

    with vr.testing.set(attempts=None, sleep=False):
        for decorate in (tenacity, backoff):
            if mode == "sync":
                _, took = timed(decorate(call))
            else:
                decorated = decorate(call_async)
                _, took = timed(lambda: asyncio.run(decorated()))
            assert took < LONG
    assert failing.calls == 4


def test_a_token_wait_returns_at_once() -> None:
    bucket = vr.TokenBucket(qps=1 / LONG, burst=1)
    policy = vr.PolicyBuilder("switch").with_rate_limiter(bucket, wait=True).build()
    assert policy.execute(lambda: "first") == "first"
    with vr.testing.set(sleep=False):
        start = time.monotonic()
        assert policy.execute(lambda: "second") == "second"
        assert asyncio.run(policy.execute_async(_async_value)) == "third"
    assert time.monotonic() - start < LONG


async def _async_value() -> str:
    return "third"


def test_a_manual_clock_still_advances(clock: vr.ManualClock) -> None:
    three = vr.RetryConfig(max_attempts=3, base_delay=LONG, max_delay=LONG, jitter=False)
    retrier = vr.Retrier(three, clock=clock)
    failing = AlwaysFailing()
    with vr.testing.set(attempts=None, sleep=False), pytest.raises(vr.UnavailableError):
        retrier.call(failing)
    assert failing.calls == 3 and clock.now() == 2 * LONG


# -- off, nesting, state ------------------------------------------------------

def test_off_restores_the_configured_behaviour(clock: vr.ManualClock) -> None:
    retrier = vr.Retrier(PATIENT, clock=clock)
    with vr.testing.set(attempts=2):
        capped = AlwaysFailing()
        with pytest.raises(vr.UnavailableError):
            retrier.call(capped)
    assert capped.calls == 2
    assert vr.testing.active() == (None, True)
    configured = AlwaysFailing()
    with pytest.raises(vr.UnavailableError):
        retrier.call(configured)
    assert configured.calls == 5


def test_a_cap_above_the_configured_attempts_keeps_the_config(clock: vr.ManualClock) -> None:
    retrier = vr.Retrier(vr.RetryConfig(max_attempts=2, base_delay=0), clock=clock)
    failing = AlwaysFailing()
    with vr.testing.set(attempts=10), pytest.raises(vr.UnavailableError):
        retrier.call(failing)
    assert failing.calls == 2


def test_nested_settings_restore_in_turn() -> None:
    with vr.testing.set(attempts=3, sleep=True):
        with vr.testing.set(attempts=1):
            assert vr.testing.active() == (1, False)
        assert vr.testing.active() == (3, True)
    assert vr.testing.active() == (None, True)


@pytest.mark.parametrize(("kwargs", "error", "field"), [
    ({"attempts": 0}, ValueError, "attempts"),
    ({"attempts": "1"}, TypeError, "attempts"),
    ({"attempts": True}, TypeError, "attempts"),
    ({"sleep": 0}, TypeError, "sleep"),
])
def test_bad_settings_name_the_field(kwargs: dict[str, Any], error: type[Exception],
                                     field: str) -> None:
    with pytest.raises(error, match=f"vr.testing.set {field}"):
        vr.testing.set(**kwargs)
    assert vr.testing.active() == (None, True)


# -- the pytest plugin ----------------------------------------------------------

def test_the_fixture_switches_on_for_its_test_only(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import virtrigaud_resilience as vr

        def test_with(vr_testing):
            assert vr.testing.active() == (1, False)
            vr_testing.set(attempts=3)
            assert vr.testing.active() == (3, False)

        def test_after():
            assert vr.testing.active() == (None, True)
    """)
    # Installed, the package's pytest11 entry point loads the plugin; from a
    # source tree nothing does, so the run names it (naming it twice fails).
    installed = any(entry.name == "virtrigaud_resilience"
                    for entry in importlib.metadata.entry_points(group="pytest11"))
    plugin = () if installed else ("-p", "virtrigaud_resilience.integrations.pytest_plugin")
    result = pytester.runpytest_inprocess(*plugin, "-p", "no:randomly", "-p", "no:asyncio")
    result.assert_outcomes(passed=2)


def test_the_plugin_is_an_entry_point() -> None:
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("pyproject.toml is not next to the tests (an installed wheel's run)")
    entry_points = tomllib.loads(pyproject.read_text())["project"]["entry-points"]
    assert entry_points["pytest11"]["virtrigaud_resilience"] == \
        "virtrigaud_resilience.integrations.pytest_plugin"


def test_an_adapter_made_before_the_switch_makes_one_attempt() -> None:
    from virtrigaud_resilience.providers import FaultInjectingProvider, Latency, ResilientProvider

    fake = FaultInjectingProvider(1, latency=Latency(0.001, 0.002),
                                  errors={vr.ErrorType.UNAVAILABLE: 1.0})
    config = vr.Config.production()  # 3 attempts, 1 s apart and more
    provider = ResilientProvider(fake, "fake", "switch", config,
                                 breakers=vr.BreakerRegistry(config.breaker_config()),
                                 limiters=vr.RateLimiterRegistry(1000, 1000))
    with vr.testing.set(attempts=1):
        start = time.monotonic()
        with pytest.raises(vr.UnavailableError):
            asyncio.run(provider.describe("vm-1"))
        took = time.monotonic() - start
    assert fake.calls["describe"] == 1 and took < config.retry.base_delay
