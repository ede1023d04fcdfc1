"""Retry budgets where the providers retry: ResilientProvider takes one
budget per provider from the Config (RETRY_BUDGET), shared like its breaker
and bucket; kopf's requeue delay for a budget-refused error is the
breaker's or the backoff's, never 0."""

from __future__ import annotations

import itertools

import pytest

import virtrigaud_resilience as vr
from virtrigaud_resilience.providers import (
    FaultInjectingProvider,
    ResilientProvider,
    shared_retry_budget,
)

_names = itertools.count()
E = vr.ErrorType


def config(**keys: str) -> vr.Config:
    return vr.Config.from_env({"RETRY_JITTER": "false", **keys})


async def test_providers_share_one_budget_per_provider_and_stop_retrying() -> None:
    clock = vr.ManualClock()
    fake = FaultInjectingProvider(clock=clock, errors={E.UNAVAILABLE: 1.0})
    settings = config(RETRY_BUDGET="ratio:0.5", RETRY_BUDGET_MIN_PER_SECOND="0",
                      CB_FAILURE_THRESHOLD="1000", RATE_LIMIT_QPS="1000", RATE_LIMIT_BURST="1000")
    name = f"rpb-{next(_names)}"
    first = ResilientProvider(fake, "fake", name, settings, clock=clock)
    second = ResilientProvider(fake, "fake", name, settings, clock=clock)
    other = ResilientProvider(fake, "fake", f"rpb-{next(_names)}", settings, clock=clock)
    assert first.retry_budget is not None and first.retry_budget is second.retry_budget
    assert other.retry_budget is not first.retry_budget
    assert first.retry_budget is shared_retry_budget(settings, "fake", name, clock)
    assert first.policy("describe").retrier.config.budget is first.retry_budget
    for rp in (first, second, first, second):
        with pytest.raises(vr.UnavailableError) as caught:
            await rp.describe("vm-0001")
    # 4 calls at half a retry each: 2 retries (3 attempts, the production
    # config's) for the first; the others refused at once.
    assert fake.calls["describe"] == 4 + 2
    assert caught.value.budget_exhausted is True
    assert first.retry_budget.refused == 4


async def test_no_budget_unless_configured() -> None:
    clock = vr.ManualClock()
    rp = ResilientProvider(FaultInjectingProvider(clock=clock), "fake", f"rpb-{next(_names)}",
                           config(), clock=clock)
    assert rp.retry_budget is None
    assert rp.policy("create").retrier.config.budget is None
    assert shared_retry_budget(config(RETRY_BUDGET="off"), "fake", "x") is None


def test_kopf_requeue_of_a_refused_retry_waits_for_the_backoff_or_the_breaker() -> None:
    kopf = pytest.importorskip("kopf")
    from virtrigaud_resilience.integrations.kopf import to_kopf_error

    clock = vr.ManualClock()
    budget = vr.RetryBudget.tokens(2, 0.1)  # one failure leaves 1 = max / 2: no retry
    retrier = vr.Retrier(vr.RetryConfig(max_attempts=3, budget=budget), clock=clock)

    def down() -> None:
        raise vr.UnavailableError("down")

    with pytest.raises(vr.UnavailableError) as caught:
        retrier.call(down)
    assert caught.value.budget_exhausted is True
    retry_config = vr.RetryConfig(base_delay=2.0, jitter=False)
    requeue = to_kopf_error(caught.value, 1, retry_config=retry_config)
    assert isinstance(requeue, kopf.TemporaryError) and requeue.delay == 4.0
    breaker = vr.CircuitBreaker("kopf-budget", "fake", "p",
                                vr.BreakerConfig(failure_threshold=1, reset_timeout=30.0),
                                clock=clock)
    with pytest.raises(vr.UnavailableError):
        breaker.call(down)
    assert to_kopf_error(caught.value, 1, breaker=breaker).delay == 30.0


def test_the_demo_turns_a_ratio_budget_on_and_counts_its_refusals(
        capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from virtrigaud_resilience.cli import main

    # A static rate (--no-adaptive), so libvirt's quota answers keep coming:
    # an adaptive rate learns the quota and leaves the budget little to refuse.
    args = ["demo", "--virtual-time", "--vms", "60", "--duration", "5", "--no-adaptive"]
    assert main([*args, "--json", "-"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    refused = {p["provider"]: p["retries_refused_by_budget"] for p in summary["providers"]}
    assert refused["libvirt/lab"] > 0  # its quota's RateLimit answers: more retries than 10%
    assert summary["ready"] == 60  # requeued, every VM still gets Ready
    assert main(args) == 0
    assert "libvirt/lab retry budget refused" in capsys.readouterr().out
