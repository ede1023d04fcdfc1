"""policy.describe() and repr(policy): the stages in order, settings and live state."""

from __future__ import annotations

import asyncio
import json

import pytest
import virtrigaud_resilience as vr


def full_policy(clock: vr.ManualClock) -> vr.Policy:
    return (vr.PolicyBuilder("create-vm").with_clock(clock)
            .with_retry(vr.RetryConfig(max_attempts=3, base_delay=1.0, jitter=False),
                        retry_on=KeyError)
            .with_circuit_breaker(vr.CircuitBreaker(
                "vm-operations", "vsphere", "prod",
                vr.BreakerConfig(failure_threshold=2, reset_timeout=60.0), clock=clock))
            .with_rate_limiter(vr.TokenBucket(qps=10, burst=20, clock=clock), wait=True,
                               max_wait=5.0)
            .with_bulkhead(4)
            .with_timeout(300.0, per_attempt="4m")
            .with_fallback("cached", on=vr.ErrorType.UNAVAILABLE)
            .build())


def stage(described: dict, name: str) -> dict:
    (found,) = [s for s in described["stages"] if s["stage"] == name]
    return found


def test_the_stages_in_the_order_a_call_passes_them(clock: vr.ManualClock) -> None:
    described = full_policy(clock).describe()
    assert described["name"] == "create-vm" and described["kind"] == "FallbackPolicy"
    assert [s["stage"] for s in described["stages"]] == [
        "fallback", "timeout", "retry", "circuit_breaker", "rate_limiter", "bulkhead",
        "attempt_timeout"]


def test_the_settings(clock: vr.ManualClock) -> None:
    described = full_policy(clock).describe()
    assert stage(described, "timeout") == {"stage": "timeout", "seconds": 300.0}
    assert stage(described, "attempt_timeout") == {"stage": "attempt_timeout", "seconds": 240.0}
    retry = stage(described, "retry")
    assert (retry["max_attempts"], retry["base_delay"], retry["jitter"], retry["retry_on"]) == \
        (3, 1.0, False, "KeyError")
    breaker = stage(described, "circuit_breaker")
    assert (breaker["name"], breaker["provider_type"], breaker["failure_threshold"],
            breaker["reset_timeout"]) == ("vm-operations", "vsphere", 2, 60.0)
    limiter = stage(described, "rate_limiter")
    assert (limiter["qps"], limiter["burst"], limiter["wait"], limiter["max_wait"]) == \
        (10.0, 20, True, 5.0)
    bulkhead = stage(described, "bulkhead")
    assert (bulkhead["max_concurrent"], bulkhead["provider"]) == (4, "prod")
    assert stage(described, "fallback")["answer"] == "'cached'"


def test_a_bare_policy_has_one_attempt_and_nothing_else() -> None:
    described = vr.PolicyBuilder("bare").build().describe()
    assert described["kind"] == "Policy"
    assert [s["stage"] for s in described["stages"]] == ["retry"]
    assert described["stages"][0]["max_attempts"] == 1


def test_the_live_state_is_read_now(clock: vr.ManualClock) -> None:
    policy = full_policy(clock)
    assert policy.execute(lambda: "ok") == "ok"
    assert stage(policy.describe(), "rate_limiter")["tokens"] == 19

    def fail() -> None:
        raise vr.UnavailableError("down")

    assert policy.execute(fail) == "cached"  # 2 attempts open the breaker; 3rd rejected
    described = policy.describe()
    assert stage(described, "circuit_breaker")["state"] == "open"
    assert stage(described, "circuit_breaker")["remaining_open"] > 0
    assert stage(described, "retry")["retries"] == 2


def test_bulkhead_occupancy_while_a_call_holds_a_slot(clock: vr.ManualClock) -> None:
    policy = full_policy(clock)
    seen = {}

    async def call() -> str:
        seen.update(stage(policy.describe(), "bulkhead"))
        return "done"

    assert asyncio.run(policy.execute_async(call)) == "done"
    assert seen["in_flight"] == 1
    assert stage(policy.describe(), "bulkhead")["in_flight"] == 0


def test_the_description_is_plain_data(clock: vr.ManualClock) -> None:
    described = full_policy(clock).describe()
    assert json.loads(json.dumps(described)) == described


def test_repr_is_one_line_of_the_stages(clock: vr.ManualClock) -> None:
    text = repr(full_policy(clock))
    assert "\n" not in text
    assert text == ("FallbackPolicy('create-vm': fallback 'cached' > timeout 300s > retry 3x > "
                    "breaker 'vm-operations' closed > limiter 10/s 20/20 tokens wait > "
                    "bulkhead 0/4 > attempt_timeout 240s)")


@pytest.mark.parametrize("answer", [len, "x"])
def test_a_function_is_named_not_held(answer: object) -> None:
    described = vr.PolicyBuilder("f").with_fallback(answer, on=(KeyError, OSError)).build()
    fallback = stage(described.describe(), "fallback")
    assert fallback["answer"] == ("len" if answer is len else "'x'")
    assert fallback["on"] == "(KeyError, OSError)"
