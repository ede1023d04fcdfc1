"""``demo --slowdown`` (issue 22): a provider that turns slow without failing.

One provider (the same seed, so the same latencies) runs twice: behind the
profile's consecutive-failure breaker, which never opens since nothing
fails, and behind a breaker judging the slow-call rate over a window, which
opens while the calls are slow and closes once they are fast again. The
run is on virtual time: a few seconds of real time for ten simulated minutes.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from virtrigaud_resilience import BreakerState, ManualClock
from virtrigaud_resilience.cli import main
from virtrigaud_resilience.demo import profile_config
from virtrigaud_resilience.demo.fleet import SLOWDOWN_FACTOR, SLOWDOWN_SECONDS, Fleet
from virtrigaud_resilience.demo.simloop import SimClock, SimulatedLoop
from virtrigaud_resilience.demo.timeline import Timeline, state_spans
from virtrigaud_resilience.demo.view import scenario_text
from virtrigaud_resilience.providers import FaultInjectingProvider
from virtrigaud_resilience.providers.fake import Slowdown

#: A small fleet over 10 simulated minutes, the five slow ones from 3:00 to 8:00.
SLOW = ["--vms", "50", "--duration", "5", "--seed", "4", "--slowdown"]
CONSECUTIVE, WINDOWED = "openstack/slow", "openstack/slow-window"


def run_demo(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["demo", "--virtual-time", "--json", *args]) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


def provider(summary: dict[str, Any], label: str) -> dict[str, Any]:
    return next(p for p in summary["providers"] if p["provider"] == label)


def test_the_window_breaker_opens_on_slow_calls_the_consecutive_one_never_does(
        capsys: pytest.CaptureFixture[str]) -> None:
    summary = run_demo(capsys, *SLOW)["summary"]
    consecutive, windowed = provider(summary, CONSECUTIVE), provider(summary, WINDOWED)
    start, end = windowed["slowdown"]
    assert consecutive["slowdown"] == [start, end] and end - start == SLOWDOWN_SECONDS
    # Slow, never failing: the slow calls took 100 times their 20 ms.
    for p in (consecutive, windowed):
        assert p["breaker_failures"] == 0 and p["injected"] == {}
        assert p["p99_ms"] == pytest.approx(20.0 * SLOWDOWN_FACTOR)
    # The consecutive breaker saw nothing wrong: it never left closed.
    assert consecutive["transitions"] == [] and consecutive["rejected_by_breaker"] == 0
    assert not consecutive["breaker_window"] and consecutive["slow_calls"] == 0
    # The window breaker opened during the slowdown (not before), shed calls,
    # and closed for good once the calls were fast again.
    moves = [(t["t"], t["to"]) for t in windowed["transitions"]]
    opened = [t for t, to in moves if to == "open"]
    closed = [t for t, to in moves if to == "closed"]
    assert windowed["breaker_window"] and windowed["slow_calls"] >= 20
    assert opened and start <= opened[0] < end
    assert all(t < end for t in opened)  # its probes were slow while the slowdown lasted
    assert closed and closed[-1] >= end and moves[-1][1] == "closed"
    assert windowed["breaker"] == "closed" and windowed["rejected_by_breaker"] > 0
    assert windowed["admitted"] < consecutive["admitted"]  # the slow calls it shed


def test_without_slowdown_the_fleet_has_its_three_providers(
        capsys: pytest.CaptureFixture[str]) -> None:
    plain = run_demo(capsys, "--vms", "30", "--duration", "2", "--seed", "4")["summary"]
    assert [p["provider"] for p in plain["providers"]] == [
        "vsphere/prod", "libvirt/lab", "proxmox/edge"]
    assert all(p["slowdown"] is None and not p["breaker_window"] for p in plain["providers"])


def test_the_timeline_shows_both_breakers_and_the_slowdown() -> None:
    clock = SimClock()
    loop = SimulatedLoop(clock)
    fleet = Fleet(clock, profile_config("production"), 50, 4, 600.0, slowdown=True)
    timeline = Timeline.of(fleet)
    try:
        loop.run_until_complete(_gather(fleet, timeline))
    finally:
        loop.close()
    start, end = 180.0, 180.0 + SLOWDOWN_SECONDS
    assert {label for label, *_ in timeline.slowdowns} == {CONSECUTIVE, WINDOWED}
    assert all((s, e) == (start, end) for _label, s, e in timeline.slowdowns)
    spans = {label: state_spans(transitions, timeline.t[-1])
             for label, transitions in zip(timeline.labels, timeline.transitions)}
    assert [state for *_, state in spans[CONSECUTIVE]] == [BreakerState.CLOSED]
    open_spans = [(s, e) for s, e, state in spans[WINDOWED] if state is BreakerState.OPEN]
    assert open_spans and all(start <= s < end for s, _e in open_spans)
    # The window breaker's row admitted fewer calls per second while open.
    index = timeline.labels.index(WINDOWED)
    assert min(timeline.calls_per_second(index)[int(start) + 60:int(end)]) < 1.0


async def _gather(fleet: Fleet, timeline: Timeline) -> None:
    await asyncio.gather(fleet.run(), timeline.record(fleet))


def test_the_plot_draws_the_slow_pair(capsys: pytest.CaptureFixture[str],
                                     tmp_path: Path) -> None:
    image = pytest.importorskip("matplotlib.image")
    path = tmp_path / "timeline.png"
    run_demo(capsys, *SLOW, "--plot", str(path))
    pixels = image.imread(str(path))
    assert pixels.ndim == 3 and pixels.std() > 0.05


def test_the_view_names_the_slowdown_and_each_breaker() -> None:
    fleet = Fleet(SimClock(), profile_config("production"), 10, 1, 600.0, slowdown=True)
    text = scenario_text(fleet)
    assert "openstack/slow slow 3:00-8:00 (x100, consecutive breaker)" in text
    assert "openstack/slow-window slow 3:00-8:00 (x100, window breaker)" in text


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"start": 10.0, "end": 5.0}, "Slowdown end must be > start"),
    ({"start": 0.0, "end": 5.0, "factor": 0.5}, "Slowdown factor must be >= 1, got 0.5"),
    ({"start": 0.0, "end": 5.0, "factor": float("nan")}, "Slowdown factor"),
    ({"start": -1.0, "end": 5.0}, "Slowdown start"),
])
def test_a_bad_slowdown_names_its_field(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Slowdown(**kwargs)


def test_a_call_that_starts_in_a_slowdown_takes_factor_times_its_latency() -> None:
    clock = ManualClock()
    fake = FaultInjectingProvider(1, clock=clock, latency=0.02,
                                  slowdowns=[Slowdown(10.0, 20.0, factor=50.0)])

    async def latency_at(t: float) -> float:
        clock.advance(t - fake.now())
        start = fake.now()
        await fake.get_capabilities()
        return fake.now() - start

    assert asyncio.run(latency_at(5.0)) == pytest.approx(0.02)
    assert asyncio.run(latency_at(10.0)) == pytest.approx(1.0)
    assert asyncio.run(latency_at(15.0)) == pytest.approx(1.0)
    assert asyncio.run(latency_at(25.0)) == pytest.approx(0.02)
    with pytest.raises(TypeError, match="slowdowns item"):
        FaultInjectingProvider(1, slowdowns=[(10.0, 20.0)])  # type: ignore[list-item]
