"""FaultInjectingProvider: deterministic faults on a ManualClock (or real time)."""

from __future__ import annotations

import math
import statistics
from typing import Any

import pytest

import virtrigaud_resilience as vr
from virtrigaud_resilience.providers import (
    CreateRequest,
    FaultInjectingProvider,
    Latency,
    Outage,
    Quota,
    never_sent,
)

E = vr.ErrorType


async def outcomes(fake: FaultInjectingProvider, clock: vr.ManualClock,
                   calls: int) -> list[tuple[str, float]]:
    """What each of ``calls`` describes did, and when it finished."""
    seen = []
    for _ in range(calls):
        try:
            await fake.describe("vm-0001")
            what = "ok"
        except vr.ProviderError as exc:
            what = exc.type.value
        seen.append((what, round(clock.now(), 9)))
    return seen


def fault_mix(seed: int, clock: vr.ManualClock) -> FaultInjectingProvider:
    return FaultInjectingProvider(seed, clock=clock, latency=Latency(0.02, 0.2),
                                  errors={E.UNAVAILABLE: 0.2, "Timeout": 0.1, E.NOT_FOUND: 0.05})


async def test_the_same_seed_gives_the_same_run() -> None:
    first, second, third = vr.ManualClock(), vr.ManualClock(), vr.ManualClock()
    run_a = await outcomes(fault_mix(42, first), first, 300)
    run_b = await outcomes(fault_mix(42, second), second, 300)
    run_c = await outcomes(fault_mix(43, third), third, 300)
    assert run_a == run_b
    assert run_a != run_c


async def test_latency_follows_its_median_and_p99() -> None:
    clock = vr.ManualClock()
    fake = FaultInjectingProvider(7, clock=clock, latency=Latency(0.02, 0.2))
    latencies = []
    for _ in range(4000):
        before = clock.now()
        await fake.validate()
        latencies.append(clock.now() - before)
    latencies.sort()
    assert statistics.median(latencies) == pytest.approx(0.02, rel=0.1)
    assert latencies[int(len(latencies) * 0.99)] == pytest.approx(0.2, rel=0.25)
    assert max(latencies) <= 2.0  # capped at 10 x p99


async def test_fixed_latency() -> None:
    clock = vr.ManualClock()
    fake = FaultInjectingProvider(clock=clock, latency=0.25)
    await fake.validate()
    await fake.validate()
    assert clock.now() == pytest.approx(0.5)


async def test_the_error_mix_has_its_frequencies() -> None:
    clock = vr.ManualClock()
    fake = fault_mix(1, clock)
    counts: dict[str, int] = {}
    n = 5000
    for what, _ in await outcomes(fake, clock, n):
        counts[what] = counts.get(what, 0) + 1
    for kind, p in (("Unavailable", 0.2), ("Timeout", 0.1), ("NotFound", 0.05), ("ok", 0.65)):
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(counts[kind] - n * p) < 4 * sigma, (kind, counts)
    assert fake.injected[E.UNAVAILABLE] == counts["Unavailable"]


async def test_every_type_can_be_injected() -> None:
    for kind in E:
        fake = FaultInjectingProvider(clock=vr.ManualClock(), errors={kind: 1.0})
        with pytest.raises(vr.ProviderError) as info:
            await fake.validate()
        assert info.value.type is kind


async def test_outages_refuse_connections_inside_their_window() -> None:
    clock = vr.ManualClock()
    fake = FaultInjectingProvider(clock=clock, latency=0.1,
                                  outages=[Outage(10, 20), Outage(30, 40, E.TIMEOUT)])
    await fake.validate()
    clock.set(10)
    with pytest.raises(vr.UnavailableError) as info:
        await fake.validate()
    assert never_sent(info.value) and isinstance(info.value.__cause__, ConnectionRefusedError)
    assert clock.now() == 10  # refused at once: no latency
    assert (fake.calls["validate"], fake.served["validate"]) == (2, 1)
    clock.set(20)
    await fake.validate()
    clock.set(35)
    with pytest.raises(vr.OperationTimeoutError) as timeout:
        await fake.validate()
    assert not never_sent(timeout.value) and clock.now() == pytest.approx(35.1)


async def test_the_quota_answers_rate_limit_with_retry_after() -> None:
    clock = vr.ManualClock()
    fake = FaultInjectingProvider(clock=clock, quota=Quota(qps=2, burst=2))
    await fake.validate()
    await fake.validate()
    with pytest.raises(vr.RateLimitError) as info:
        await fake.validate()
    assert info.value.retry_after == pytest.approx(0.5)
    assert not never_sent(info.value)  # the provider itself refused
    clock.advance(info.value.retry_after)
    await fake.validate()


async def test_fail_next_comes_before_the_mix() -> None:
    fake = FaultInjectingProvider(clock=vr.ManualClock())
    fake.fail_next("Conflict", times=2)
    for _ in range(2):
        with pytest.raises(vr.ConflictError):
            await fake.create(CreateRequest("x"))
    assert (await fake.create(CreateRequest("x"))).id == "vm-0001"
    assert fake.vms == {"vm-0001": "x"}


async def test_inventory_semantics() -> None:
    clock = vr.ManualClock()
    fake = FaultInjectingProvider(clock=clock, task_duration=3)
    created = await fake.create(CreateRequest("db"))
    assert created.task_ref == "task-0001"
    assert await fake.delete("vm-9999") == "task-0002"  # deleting nothing succeeds
    with pytest.raises(vr.NotFoundError):
        await fake.power("vm-9999", vr.providers.PowerOp.ON)
    with pytest.raises(vr.NotFoundError):
        await fake.task_status("task-9999")
    assert not (await fake.task_status("task-0001")).done
    clock.advance(3)
    assert (await fake.task_status("task-0001")).done


async def test_real_time_latency_sleeps() -> None:
    import time

    fake = FaultInjectingProvider(latency=0.05)
    start = time.monotonic()
    await fake.validate()
    assert time.monotonic() - start >= 0.045


@pytest.mark.parametrize(("make", "error", "text"), [
    (lambda: Latency(-1), ValueError, "median"),
    (lambda: Latency(float("nan")), ValueError, "median"),
    (lambda: Latency(1.0, 0.5), ValueError, "p99"),
    (lambda: Latency(0.0, 1.0), ValueError, "median"),
    (lambda: Latency(1e9), ValueError, "median"),
    (lambda: Latency("1s"), TypeError, "median"),  # type: ignore[arg-type]
    (lambda: Outage(5, 5), ValueError, "end"),
    (lambda: Outage(-1, 5), ValueError, "start"),
    (lambda: Outage(0, float("inf")), ValueError, "end"),
    (lambda: Outage(0, 5, "Meltdown"), ValueError, "error"),  # type: ignore[arg-type]
    (lambda: Quota(0), ValueError, "qps"),
    (lambda: Quota(1, 0), ValueError, "burst"),
    (lambda: FaultInjectingProvider("seed"), TypeError, "seed"),  # type: ignore[arg-type]
    (lambda: FaultInjectingProvider(errors={E.TIMEOUT: 0.7, E.UNAVAILABLE: 0.7}), ValueError,
     "add up"),
    (lambda: FaultInjectingProvider(errors={"Gremlins": 0.1}), ValueError, "errors key"),
    (lambda: FaultInjectingProvider(errors={E.TIMEOUT: -0.1}), ValueError, "Timeout"),
    (lambda: FaultInjectingProvider(errors={E.TIMEOUT: float("nan")}), ValueError, "Timeout"),
    (lambda: FaultInjectingProvider(errors=[0.1]), TypeError, "errors"),  # type: ignore[arg-type]
    (lambda: FaultInjectingProvider(outages=Outage(0, 1)), TypeError, "outages"),  # type: ignore[arg-type]
    (lambda: FaultInjectingProvider(outages=[(0, 1)]), TypeError, "outages"),  # type: ignore[list-item]
    (lambda: FaultInjectingProvider(latency=-0.1), ValueError, "latency"),
    (lambda: FaultInjectingProvider(task_duration=float("inf")), ValueError, "task_duration"),
    (lambda: FaultInjectingProvider(clock="now"), TypeError, "clock"),  # type: ignore[arg-type]
    (lambda: FaultInjectingProvider().fail_next("Nope"), ValueError, "error"),
    (lambda: FaultInjectingProvider().fail_next(E.TIMEOUT, 0), ValueError, "times"),
])
def test_bad_input_is_named(make: Any, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        make()


async def test_describe_answers_what_the_vm_is_now(clock: vr.ManualClock) -> None:
    """describe's answer is reused while the VM is unchanged and follows every change."""
    fake = FaultInjectingProvider(clock=clock)
    vm = (await fake.create(CreateRequest("web", cpus=2))).id
    first = await fake.describe(vm)
    assert first is await fake.describe(vm)  # unchanged: the same frozen answer
    assert first.provider_raw["cpus"] == "2" and first.power_state == "On"
    await fake.reconfigure(vm, CreateRequest("web", cpus=4))
    assert (await fake.describe(vm)).provider_raw["cpus"] == "4"
    await fake.power(vm, "Off")
    assert (await fake.describe(vm)).power_state == "Off"
    await fake.delete(vm)
    assert (await fake.describe(vm)).exists is False
