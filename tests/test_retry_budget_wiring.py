"""A RetryBudget in the retry loops: RetryConfig(budget=...) for Retrier,
vr.retry / retry_async and PolicyBuilder.with_retry_budget. A refused retry
raises the attempt's own error marked budget_exhausted, with a note, an
event and a log line at most once per second per budget."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest

import virtrigaud_resilience as vr
from virtrigaud_resilience import events

NO_DELAY = dict(base_delay=0.0, max_delay=1.0, jitter=False)


class Failing:
    """Raises a fresh ``make()`` error until ``successes_after`` calls (never: None)."""

    def __init__(self, make: Any = lambda: vr.UnavailableError("down"),
                 successes_after: int | None = None) -> None:
        self.make, self.successes_after, self.calls = make, successes_after, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.successes_after is not None and self.calls > self.successes_after:
            return "ok"
        raise self.make()


@pytest.fixture
def refusals() -> Iterator[list[tuple[Any, str, BaseException]]]:
    seen: list[tuple[Any, str, BaseException]] = []

    def listener(budget: Any, name: str, error: BaseException) -> None:
        seen.append((budget, name, error))

    events.on_budget_exhausted(listener)
    yield seen
    assert events.remove_listener(listener)


def retrier(budget: vr.RetryBudget, clock: vr.ManualClock, attempts: int = 4) -> vr.Retrier:
    config = vr.RetryConfig(max_attempts=attempts, budget=budget, **NO_DELAY)
    return vr.Retrier(config, clock=clock, name="budgeted")


def test_a_refused_retry_raises_the_attempts_own_error_marked(
        refusals: list[Any], caplog: pytest.LogCaptureFixture) -> None:
    clock = vr.ManualClock()
    budget = vr.RetryBudget.ratio(0.2, min_per_second=0, clock=clock, provider="p1")
    fn = Failing()
    with caplog.at_level(logging.WARNING, "virtrigaud_resilience"):
        with pytest.raises(vr.UnavailableError) as caught:
            retrier(budget, clock).call(fn)
    error = caught.value
    assert fn.calls == 1  # one call deposits 1/5 of a retry: none allowed
    assert error.budget_exhausted is True
    assert error.attempts == 1
    assert any("retry budget ratio(percent=0.2" in note for note in error.__notes__)
    assert budget.refused == 1
    assert refusals == [(budget, "budgeted", error)]
    assert [r.getMessage() for r in caplog.records if "exhausted" in r.getMessage()] == [
        "retry budget ratio(percent=0.2, min_per_second=0, ttl=10.0) of -/p1 exhausted: "
        "budgeted not retried (1 refused so far)"]


def test_the_log_line_comes_at_most_once_per_second_per_budget(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = vr.ManualClock()
    budget = vr.RetryBudget.ratio(0.2, min_per_second=0, clock=clock)
    other = vr.RetryBudget.ratio(0.2, min_per_second=0, clock=clock)
    with caplog.at_level(logging.WARNING, "virtrigaud_resilience"):
        for _ in range(5):
            for each in (budget, other):
                with pytest.raises(vr.UnavailableError):
                    retrier(each, clock).call(Failing())
        clock.advance(0.99)
        with pytest.raises(vr.UnavailableError):
            retrier(budget, clock).call(Failing())
        clock.advance(0.01)
        with pytest.raises(vr.UnavailableError):
            retrier(budget, clock).call(Failing())
    lines = [r.getMessage() for r in caplog.records if "exhausted" in r.getMessage()]
    assert len(lines) == 3  # each budget once, then the first again a second later
    assert budget.refused == 7 and other.refused == 5


def test_retries_stop_at_the_share_under_a_full_outage() -> None:
    """100 calls at 100% failure, 4 attempts: ratio(0.2) allows 1 retry per
    5 calls (plus nothing in reserve): 120 attempts, not 400."""
    clock = vr.ManualClock()
    budget = vr.RetryBudget.ratio(0.2, min_per_second=0, clock=clock)
    fn = Failing()
    loop = retrier(budget, clock)
    for _ in range(100):
        with pytest.raises(vr.UnavailableError):
            loop.call(fn)
    assert fn.calls == 120
    assert budget.refused == 100  # every call ends refused (20 after their one retry)


def test_tokens_a6_counts_the_failures_without_a_retry_left() -> None:
    """A6 takes a token for every retryable failure, also the last attempt's."""
    clock = vr.ManualClock()
    budget = vr.RetryBudget.tokens(10, 0.1)
    fn = Failing()
    with pytest.raises(vr.UnavailableError):
        retrier(budget, clock, attempts=2).call(fn)
    assert fn.calls == 2 and budget._balance() == 8000  # both failures took a token
    with pytest.raises(vr.UnavailableError) as caught:
        retrier(budget, clock, attempts=10).call(fn)
    assert fn.calls == 2 + 3  # 7, 6 retried; 5 is not above half
    assert caught.value.budget_exhausted is True
    assert retrier(budget, clock).call(Failing(successes_after=0)) == "ok"
    assert budget._balance() == 5100  # a success adds token_ratio


def test_quota_gives_back_what_the_last_retry_took() -> None:
    clock = vr.ManualClock()
    budget = vr.RetryBudget.quota(capacity=100, retry_cost=5, timeout_cost=10, refund=1)
    timeouts = Failing(lambda: vr.OperationTimeoutError("slow"), successes_after=2)
    assert retrier(budget, clock).call(timeouts) == "ok"
    assert budget._balance() == 100 - 10 - 10 + 10  # the last retry's timeout cost back
    assert retrier(budget, clock).call(Failing(successes_after=1)) == "ok"
    assert budget._balance() == 90 - 5 + 5
    assert retrier(budget, clock).call(Failing(successes_after=0)) == "ok"
    assert budget._balance() == 91  # a success without retries: refund


def test_non_retryable_errors_leave_the_budget_alone() -> None:
    clock = vr.ManualClock()
    budget = vr.RetryBudget.tokens(10, 0.1)
    with pytest.raises(vr.NotFoundError) as caught:
        retrier(budget, clock).call(Failing(lambda: vr.NotFoundError("gone")))
    assert budget._balance() == 10000
    assert not hasattr(caught.value, "budget_exhausted")


def test_vr_retry_and_retry_async_use_the_configs_budget() -> None:
    budget = vr.RetryBudget.quota(capacity=5, retry_cost=5)
    config = vr.RetryConfig(max_attempts=3, budget=budget, **NO_DELAY)
    fn = Failing()
    with pytest.raises(vr.UnavailableError) as caught:
        vr.retry(config, fn)
    assert fn.calls == 2 and caught.value.budget_exhausted is True

    async def failing() -> str:
        return fn()

    with pytest.raises(vr.UnavailableError) as caught_async:
        asyncio.run(vr.retry_async(config, failing))
    assert fn.calls == 3 and caught_async.value.budget_exhausted is True
    assert budget.refused == 2


def test_vr_retrys_successes_count_in_the_configs_budget() -> None:
    """A success without retries refunds the quota, also through vr.retry,
    whose first attempt is otherwise native (and would count nothing)."""
    budget = vr.RetryBudget.quota(capacity=100, retry_cost=5, refund=1)
    config = vr.RetryConfig(max_attempts=3, budget=budget, **NO_DELAY)
    assert vr.retry(config, Failing(successes_after=1)) == "ok"
    assert budget._balance() == 100 - 5 + 5  # the retry's cost back
    budget.try_withdraw()  # 95: room for a refund
    for _ in range(3):
        assert vr.retry(config, Failing(successes_after=0)) == "ok"
    assert budget._balance() == 98


def test_a_budgeted_policys_success_runs_natively_and_counts() -> None:
    """A budget keeps the policy's native first attempt: no Python frame but
    fn's on success, and the call still counts (a quota's refund)."""
    import sys

    budget = vr.RetryBudget.quota(capacity=100, retry_cost=5, refund=1)
    policy = (vr.PolicyBuilder("budgeted-fast").with_retry_budget(budget)
              .with_retry(vr.RetryConfig(max_attempts=3, **NO_DELAY)).build())
    budget.try_withdraw()  # 95: room for refunds

    def ok() -> str:
        return "ok"

    frames: list[str] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            frames.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        result = policy.execute(ok)
    finally:
        sys.setprofile(None)
    assert result == "ok" and frames == ["ok"]
    assert budget._balance() == 96
    assert asyncio.run(policy.execute_async(asyncio.sleep, 0, "ok")) == "ok"
    assert budget._balance() == 97


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_policy_with_a_retry_budget(mode: str) -> None:
    """The policy's first attempts count (ratio: each call deposits, also a
    successful one), and its retries stop when the budget refuses."""
    clock = vr.ManualClock()
    budget = vr.RetryBudget.ratio(0.5, min_per_second=0, clock=clock)
    policy = (vr.PolicyBuilder("budgeted").with_retry_budget(budget)
              .with_retry(vr.RetryConfig(max_attempts=3, **NO_DELAY)).with_clock(clock).build())
    assert policy.retrier.config.budget is budget

    def execute(fn: Failing) -> Any:
        if mode == "sync":
            return policy.execute(fn)

        async def call() -> Any:
            return fn()

        return asyncio.run(policy.execute_async(call))

    for _ in range(4):
        assert execute(Failing(successes_after=0)) == "ok"
    assert budget.available == 2  # 4 calls at half a retry each
    fn = Failing()
    with pytest.raises(vr.UnavailableError) as caught:
        execute(fn)
    assert fn.calls == 3  # 5 calls: 2.5 retries, both taken by this one
    assert budget.available == 0
    with pytest.raises(vr.UnavailableError) as caught:
        execute(Failing())
    assert caught.value.budget_exhausted is True


def test_bad_budget_values_name_the_field() -> None:
    with pytest.raises(TypeError, match="RetryConfig budget must be a RetryBudget or None"):
        vr.RetryConfig(budget="ratio:0.2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="PolicyBuilder budget"):
        vr.PolicyBuilder("p").with_retry_budget(0.2)  # type: ignore[arg-type]


def test_metrics_count_refusals_and_show_what_is_available() -> None:
    """virtrigaud_retry_budget_exhausted_total and _available by provider,
    summed over budgets sharing the labels; a dropped budget's refusals stay."""
    prometheus_client = pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    registry = prometheus_client.CollectorRegistry()
    vr.metrics.register(registry)

    def scrape() -> dict[tuple[str, str], float]:
        text = prometheus_client.generate_latest(registry).decode()
        return {(s.name, s.labels.get("provider", "")): s.value
                for family in text_string_to_metric_families(text) for s in family.samples
                if s.labels.get("provider_type") == "budget-metrics"}

    try:
        clock = vr.ManualClock()
        budgets = [vr.RetryBudget.ratio(0.2, min_per_second=1, ttl=10, clock=clock,
                                        provider_type="budget-metrics", provider="p")
                   for _ in range(2)]
        assert scrape() == {("virtrigaud_retry_budget_exhausted_total", "p"): 0,
                            ("virtrigaud_retry_budget_available", "p"): 20}
        for budget in budgets:
            for _ in range(14):  # 12 retries (10 the reserve, 2.4 deposited), 2 refusals
                with pytest.raises(vr.UnavailableError):
                    retrier(budget, clock, attempts=2).call(Failing())
        samples = scrape()
        assert samples[("virtrigaud_retry_budget_exhausted_total", "p")] == 2 * 2
        assert samples[("virtrigaud_retry_budget_available", "p")] == 0
        del budgets, budget
        import gc

        gc.collect()
        assert scrape() == {("virtrigaud_retry_budget_exhausted_total", "p"): 4}
    finally:
        vr.metrics.unregister(registry)
