"""FaultInjectingProvider's Capacity (latency beyond a knee) and Schedule
(the quota and the capacity changing over time), on virtual time."""

from __future__ import annotations

import asyncio

import pytest
import virtrigaud_resilience as vr
from virtrigaud_resilience.providers.fake import (
    Capacity,
    FaultInjectingProvider,
    Quota,
    Schedule,
)


class HeldClock(vr.ManualClock):
    """A ManualClock whose sleeps record their length and wait for ``gate``:
    calls stay in flight together, as they would in real time."""

    __slots__ = ("slept", "gate")

    def __init__(self) -> None:
        super().__init__()
        self.slept: list[float] = []
        self.gate = asyncio.Event()

    async def sleep_async(self, seconds: float) -> None:
        self.slept.append(seconds)
        await self.gate.wait()


async def test_latency_grows_beyond_the_knee() -> None:
    clock = HeldClock()
    fake = FaultInjectingProvider(clock=clock, latency=0.1,
                                  capacity=Capacity(knee=8, latency_growth=1.0))
    tasks = [asyncio.create_task(fake.validate()) for _ in range(16)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert fake.in_flight == 16
    expected = [0.1 if n <= 8 else 0.1 * (1 + (n - 8) / 8) for n in range(1, 17)]
    assert clock.slept == pytest.approx(expected)
    assert clock.slept[-1] == pytest.approx(0.2)  # twice the knee: twice the latency
    clock.gate.set()
    await asyncio.gather(*tasks)
    assert fake.in_flight == 0


async def test_no_capacity_means_no_growth() -> None:
    clock = HeldClock()
    fake = FaultInjectingProvider(clock=clock, latency=0.1)
    tasks = [asyncio.create_task(fake.validate()) for _ in range(50)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert set(clock.slept) == {0.1}
    clock.gate.set()
    await asyncio.gather(*tasks)


async def test_the_schedule_changes_quota_and_capacity_at_their_times() -> None:
    clock = vr.ManualClock()
    fake = FaultInjectingProvider(clock=clock, quota=Quota(1, 1), capacity=Capacity(64),
                                  schedule=Schedule([(10.0, Quota(100, 5)),
                                                     (20.0, Capacity(16, 2.0))]))
    await fake.validate()
    with pytest.raises(vr.RateLimitError):
        await fake.validate()  # 1/s, burst 1
    clock.advance(10)
    for _ in range(5):  # 100/s from t=10 (the tokens it had are kept: one)
        await fake.validate()
        clock.advance(0.01)
    assert fake.quota == Quota(100, 5) and fake.capacity == Capacity(64)
    clock.advance(10)
    await fake.validate()
    assert fake.capacity == Capacity(16, 2.0)


def test_capacity_latency_formula() -> None:
    capacity = Capacity(16, latency_growth=4.0)
    assert capacity.latency(0.05, 16) == 0.05
    assert capacity.latency(0.05, 20) == pytest.approx(0.05 * 2)


@pytest.mark.parametrize(("make", "error", "message"), [
    (lambda: Capacity(0), ValueError, "Capacity knee must be >= 1"),
    (lambda: Capacity(8, float("nan")), ValueError, "Capacity latency_growth must be finite"),
    (lambda: Capacity(8, -1), ValueError, "Capacity latency_growth must be >= 0"),
    (lambda: Capacity(2.5), TypeError, "Capacity knee must be an int"),
    (lambda: Schedule("x"), TypeError, "Schedule changes must be a sequence"),
    (lambda: Schedule([(1.0,)]), TypeError, r"Schedule changes\[0\] must be a"),
    (lambda: Schedule([(float("inf"), Quota(1))]), ValueError, r"changes\[0\] time must be fin"),
    (lambda: Schedule([(5, Quota(1)), (2, Quota(2))]), ValueError, "must be in time order"),
    (lambda: Schedule([(5, 3)]), TypeError, r"changes\[0\] must change a Quota or a Capacity"),
    (lambda: FaultInjectingProvider(capacity=64), TypeError,
     "FaultInjectingProvider capacity must be a Capacity"),
    (lambda: FaultInjectingProvider(schedule=[]), TypeError,
     "FaultInjectingProvider schedule must be a Schedule"),
])
def test_bad_input_names_the_field(make: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        make()  # type: ignore[operator]
