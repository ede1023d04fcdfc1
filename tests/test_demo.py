"""``virtrigaud-resilience demo``: the fleet rides out the outage, reproducibly, and shows it.

Runs go through the command line (``cli.main``) as a user's do, mostly on
virtual time with a small fleet (a few tenths of a second each); one paced
run checks that real time replays the virtual history exactly, and one
serves /metrics, scraped over HTTP while it runs.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from virtrigaud_resilience.cli import main
from virtrigaud_resilience.demo.simloop import SimClock, SimulatedLoop

#: A small fleet over 10 simulated minutes: the outage is 3:00-6:00 and the
#: production breaker (15 failures, 120 s) opens, fails a probe and closes.
SMALL = ["--vms", "60", "--duration", "5"]
HEALTHY = ("libvirt/lab", "proxmox/edge")


def run_demo(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    """The demo's JSON result for ``args`` (run on virtual time)."""
    assert main(["demo", "--virtual-time", "--json", *args]) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


def provider(summary: dict[str, Any], label: str) -> dict[str, Any]:
    return next(p for p in summary["providers"] if p["provider"] == label)


def test_fleet_rides_out_the_outage(capsys: pytest.CaptureFixture[str]) -> None:
    summary = run_demo(capsys, *SMALL)["summary"]
    vsphere = provider(summary, "vsphere/prod")
    start, end = vsphere["outage"]
    moves = [(t["t"], t["to"]) for t in vsphere["transitions"]]
    opened = [t for t, to in moves if to == "open"]
    closed = [t for t, to in moves if to == "closed"]
    # The breaker opened during the outage (not before), and closed after it, for good.
    assert opened and start <= opened[0] < end
    assert closed and closed[-1] >= end and moves[-1][1] == "closed"
    assert all(t >= end for t in closed)
    assert vsphere["breaker"] == "closed" and vsphere["rejected_by_breaker"] > 0
    # The conditions told the truth meanwhile: every vsphere VM was ProviderUnavailable.
    assert vsphere["ready_reasons_set"]["ProviderUnavailable"] >= vsphere["vms"]
    # No VM on a healthy provider ends not Ready; the outage's VMs recovered too.
    for label in HEALTHY:
        assert summary["ready_by_provider"][label] == {"VMReady": 20}
    assert summary["ready_by_reason"] == {"VMReady": 60} and summary["ready"] == 60
    # The faults happened: the quota answered RateLimit, the policies retried.
    assert provider(summary, "libvirt/lab")["quota_rate_limit_answers"] > 0
    assert all(p["retries"] > 0 and p["admitted"] > 0 for p in summary["providers"])
    assert summary["calls"] == sum(p["calls"] for p in summary["providers"])


def test_same_seed_same_summary(capsys: pytest.CaptureFixture[str]) -> None:
    first = run_demo(capsys, *SMALL, "--seed", "7")["summary"]
    again = run_demo(capsys, *SMALL, "--seed", "7")["summary"]
    other = run_demo(capsys, *SMALL, "--seed", "8")["summary"]
    assert first == again
    assert other != first and other["calls"] != first["calls"]


def test_development_profile(capsys: pytest.CaptureFixture[str]) -> None:
    """The development ConfigMap: breaker 5 failures / 30 s, so more probes."""
    summary = run_demo(capsys, *SMALL, "--profile", "development")["summary"]
    vsphere = provider(summary, "vsphere/prod")
    assert summary["profile"] == "development"
    probes = [t for t in vsphere["transitions"] if t["to"] == "half_open"]
    assert len(probes) >= 5  # every 30 s of a 3-minute outage
    assert vsphere["breaker"] == "closed" and summary["ready"] == 60


def test_live_run_replays_the_virtual_history(capsys: pytest.CaptureFixture[str]) -> None:
    """Pacing decides when the simulated clock moves, never where to: a
    real-time run (stdout not a terminal: a plain line per second) does
    exactly what the virtual run does."""
    args = ["--vms", "30", "--duration", "0.5", "--seed", "3"]
    virtual = run_demo(capsys, *args)
    assert main(["demo", *args, "--json", "-"]) == 0
    live = json.loads(capsys.readouterr().out)
    assert live["summary"] == virtual["summary"]
    assert live["measured"]["virtual_time"] is False and live["measured"]["time_scale"] == 120
    assert live["measured"]["wall_seconds"] >= 0.5  # paced: 60 simulated seconds took 0.5 s+


def test_plain_lines_when_stdout_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--vms", "30", "--duration", "1"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("t=")]
    assert len(lines) >= 2  # the first frame, one a second, and the last one
    assert all("vsphere/prod" in line and "calls/s" in line for line in lines)
    assert "VMs by Ready condition reason" in out and "VMReady" in out


def test_plot_is_a_png_matplotlib_reads(capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path) -> None:
    image = pytest.importorskip("matplotlib.image")
    path = tmp_path / "timeline.png"
    run_demo(capsys, *SMALL, "--plot", str(path))
    pixels = image.imread(str(path))
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 400
    assert pixels.std() > 0.05  # something is drawn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_metrics_scraped_during_a_run() -> None:
    """/metrics serves every provider's series while the demo runs, and is
    gone when the run ends. The demo runs in a process of its own, for as
    long as the scrapes need (a run of fixed length sharing the test's GIL
    ended before a loaded CI machine's first scrape, twice), then Ctrl-C."""
    import os
    import signal
    import subprocess
    import sys

    parser = pytest.importorskip("prometheus_client.parser")
    port = free_port()
    env = {**os.environ, "SKBUILD_EDITABLE_VERBOSE": "0"}  # an editable install's chatter
    process = subprocess.Popen([sys.executable, "-m", "virtrigaud_resilience.cli", "demo",
                                "--vms", "30", "--duration", "300", "--metrics-port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env=env)
    try:
        samples = scrape_until_all_providers_worked(parser, port, process,
                                                    deadline=time.monotonic() + 120)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, err
    providers = {("vsphere", "prod"), ("libvirt", "lab"), ("proxmox", "edge")}
    for name in ("virtrigaud_circuit_breaker_state", "virtrigaud_circuit_breaker_failures_total"):
        assert {(s.labels["provider_type"], s.labels["provider"])
                for s in samples if s.name == name} >= providers, name
    per_call = {s.name for s in samples if s.labels.get("provider_type") == "vsphere"}
    assert VSPHERE_PER_CALL <= per_call
    assert any(s.name == "virtrigaud_vm_operations_total" and s.value > 0
               and s.labels["operation"] == "Describe" for s in samples)
    # The server is gone once the run is over.
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


#: The per-call series a vsphere call leaves (rpcstats).
VSPHERE_PER_CALL = {"virtrigaud_provider_rpc_requests_total", "virtrigaud_vm_operations_total",
                    "virtrigaud_provider_rpc_latency_seconds_bucket"}


def scrape_until_all_providers_worked(parser: Any, port: int, process: Any,
                                      deadline: float) -> list[Any]:
    """Scrapes the demo ``process``'s /metrics until breakers of all three
    providers show up (the collector sees every breaker of the process) and
    a Describe operation and vsphere's per-call series have been counted."""
    last: object = "no answer"
    while True:
        if process.poll() is not None:
            raise AssertionError(f"the demo ended (status {process.returncode}) before a "
                                 f"complete scrape; last: {last}; stderr: "
                                 f"{process.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                text = r.read().decode()
            samples = [s for family in parser.text_string_to_metric_families(text)
                       for s in family.samples]
            last = sorted({s.labels.get("provider") for s in samples
                           if s.name == "virtrigaud_circuit_breaker_state"}, key=str)
            described = any(s.name == "virtrigaud_vm_operations_total" and s.value > 0
                            and s.labels["operation"] == "Describe" for s in samples)
            vsphere_called = {s.name for s in samples
                              if s.labels.get("provider_type") == "vsphere"} >= VSPHERE_PER_CALL
            if {"prod", "lab", "edge"} <= set(last) and described and vsphere_called:
                return samples
        except urllib.error.HTTPError as exc:  # the collector raised: say what it said
            last = f"{exc}: {exc.read().decode(errors='replace')[-2000:]}"
        except OSError as exc:
            last = exc  # not listening yet
        if time.monotonic() > deadline:
            raise AssertionError(f"no complete scrape during the run; last: {last}")
        time.sleep(0.05)


# ---------------------------------------------------------------- the loop --


def test_simulated_loop_runs_tasks_concurrently_in_simulated_time() -> None:
    clock = SimClock()
    loop = SimulatedLoop(clock)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep_async(seconds)
        woke.append((name, clock.now()))

    async def both() -> None:
        await asyncio.gather(sleeper("long", 3600.0), sleeper("short", 60.0))

    started = time.perf_counter()
    loop.run_until_complete(both())
    loop.close()
    # Concurrent, not one after the other: the hour-long sleep ends at 3600 s, not 3660.
    assert woke == [("short", 60.0), ("long", 3600.0)]
    assert clock.now() == 3600.0
    assert time.perf_counter() - started < 5  # an hour of sleeping never waited for real


@pytest.mark.parametrize("scale", [0, -1, float("nan"), float("inf")])
def test_simulated_loop_rejects_a_bad_time_scale(scale: float) -> None:
    with pytest.raises(ValueError, match="time_scale must be > 0 and finite"):
        SimulatedLoop(SimClock(), scale)


def test_simulated_loop_needs_a_sim_clock() -> None:
    import virtrigaud_resilience as vr

    with pytest.raises(TypeError, match="SimulatedLoop clock must be a SimClock"):
        SimulatedLoop(vr.ManualClock())  # type: ignore[arg-type]


def test_ctrl_c_stops_with_a_summary_not_a_traceback() -> None:
    """SIGINT cancels the run; what the fleet did so far is summarised, exit status 130."""
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "SKBUILD_EDITABLE_VERBOSE": "0"}  # an editable install's chatter
    process = subprocess.Popen([sys.executable, "-m", "virtrigaud_resilience.cli", "demo",
                                "--vms", "30", "--duration", "60"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # the title: the run has started
        assert first.startswith("virtrigaud-resilience demo:")
        process.stdout.readline()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "Traceback" not in err + out
    assert "interrupted at" in out and "VMs by Ready condition reason" in out


def test_proxmox_describes_are_hedged_and_compared_with_a_replay(
        capsys: pytest.CaptureFixture[str]) -> None:
    summary = run_demo(capsys, *SMALL)["summary"]
    (hedging,) = summary["hedging"]
    proxmox = provider(summary, "proxmox/edge")
    assert hedging["provider"] == "proxmox/edge" and hedging["hedged"] == {"describe": "p95"}
    assert hedging["hedges"] == proxmox["hedges"] > 0
    assert hedging["describes"] == proxmox["describes"] > hedging["hedges"]
    assert hedging["describe_p99_ms"] == proxmox["describe_p99_ms"]
    assert 0 < hedging["describe_p99_ms"] < hedging["unhedged_describe_p99_ms"]
    assert all(provider(summary, label)["hedges"] == 0
               for label in ("vsphere/prod", "libvirt/lab"))
    assert main(["demo", "--virtual-time", *SMALL]) == 0
    assert "proxmox/edge hedges its describes at p95: describe p99 " in capsys.readouterr().out
