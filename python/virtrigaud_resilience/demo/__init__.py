"""``virtrigaud-resilience demo``: a controller fleet riding out provider faults, live.

An asyncio controller reconciles a fleet of VMs (default 300) across three
providers (``vsphere/prod``, ``libvirt/lab``, ``proxmox/edge``), each a
seeded :class:`~virtrigaud_resilience.providers.fake.FaultInjectingProvider`
behind a :class:`~virtrigaud_resilience.providers.ResilientProvider`
configured by the guide's production ConfigMap (``--profile development``
for the other one). ``vsphere/prod`` goes down for a while, ``libvirt/lab``
answers beyond its quota with RateLimit and a Retry-After, every provider
fails now and then across the error taxonomy (see :mod:`.fleet`).
``proxmox/edge``'s describes are hedged at their p95: the summary compares
their p99 with a replay of the same seed without hedging (virtual time,
after the run) and counts the hedges sent. ``--slowdown`` adds one provider
that turns slow without failing (latency x100 for five simulated minutes),
run twice: behind the profile's consecutive breaker, which never opens, and
behind a breaker judging slow calls over a window, which does.

Time is simulated (:mod:`.simloop`): by default each real second shows
:data:`TIME_SCALE` simulated seconds, so the default 15 s show 25 minutes of
the fleet's life, long enough for the production breaker (15 failures, 120 s
reset) to open, probe and close. ``--virtual-time`` runs the same history at
once; the same arguments and seed give the same summary either way.

Needs the ``demo`` extra for the live view (rich), ``--plot`` (matplotlib)
and ``--metrics-port`` (prometheus-client); without rich it prints a plain
line per second, as it does when stdout is not a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from ..cli._args import bounded_int, check_writable, positive_seconds, require_module
from ..config import Config
from .fleet import Fleet
from .simloop import SimClock, SimulatedLoop
from .timeline import Timeline

__all__ = ["INSTALL", "PROFILES", "TIME_SCALE", "add_arguments", "profile_config", "run"]

#: Simulated seconds per real second in a live run.
TIME_SCALE = 120.0
#: The profiles ``--profile`` chooses from: the guide's two ConfigMaps.
PROFILES = {"production": Config.production, "development": Config.development}
#: How to get what the demo needs beyond the core.
INSTALL = "pip install 'virtrigaud-resilience[demo]'"


def profile_config(profile: str, *, adaptive: bool = True) -> Config:
    """The guide's ConfigMap of ``profile`` as the demo runs it: with
    RATE_LIMIT_ADAPTIVE=true (each provider's rate learns its quota) unless
    ``adaptive`` is False (``--no-adaptive``: the static rates of before)."""
    config = PROFILES[profile]()
    return dataclasses.replace(
        config, rate_limit=dataclasses.replace(config.rate_limit, adaptive=adaptive))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's command-line options."""
    parser.add_argument("--vms", type=bounded_int(1, 100_000), default=300,
                        help="VMs in the fleet, spread over the three providers (default 300)")
    parser.add_argument("--duration", type=positive_seconds(3600), default=15.0,
                        help=f"seconds of real time (default 15), each showing {TIME_SCALE:g} "
                             "simulated seconds; --virtual-time simulates as much at once")
    parser.add_argument("--seed", type=bounded_int(0, 2**32 - 1), default=1,
                        help="seeds every fault, jitter and decision (default 1)")
    parser.add_argument("--profile", choices=list(PROFILES), default="production",
                        help="the guide's ConfigMap to run under (default production)")
    parser.add_argument("--virtual-time", action="store_true",
                        help="run at once on the simulated clock (no live view)")
    parser.add_argument("--metrics-port", type=bounded_int(1, 65535), metavar="PORT",
                        help="serve Prometheus /metrics on 127.0.0.1:PORT while running")
    parser.add_argument("--plot", metavar="PNG",
                        help="write the timeline (admitted calls/s, breaker states) as a PNG")
    parser.add_argument("--json", nargs="?", const="-", metavar="FILE",
                        help="write the summary as JSON to FILE, or alone to stdout")
    parser.add_argument("--no-adaptive", action="store_true",
                        help="a static rate per provider (RATE_LIMIT_ADAPTIVE=false), as "
                             "before adaptive rates: compare the quota 429s")
    parser.add_argument("--slowdown", action="store_true",
                        help="add a provider that turns slow without failing (latency x100 "
                             "for 5 simulated minutes), behind the profile's consecutive "
                             "breaker and behind a slow-call window breaker: compare them")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Runs the demo for parsed ``args``; usage errors go to ``parser.error``
    (one line, exit status 2). Returns the exit status."""
    if args.plot:
        require_module("matplotlib", "--plot", INSTALL, parser)
        check_writable(args.plot, "--plot", parser)
    if args.json not in (None, "-"):
        check_writable(args.json, "--json", parser)
    json_only = args.json == "-"
    server = _serve_metrics(args.metrics_port, parser) if args.metrics_port else None
    try:
        return _run(args, json_only)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()


def _run(args: argparse.Namespace, json_only: bool) -> int:
    clock = SimClock()
    scale = None if args.virtual_time else TIME_SCALE
    loop = SimulatedLoop(clock, scale)
    span = args.duration * TIME_SCALE
    fleet = Fleet(clock, profile_config(args.profile, adaptive=not args.no_adaptive), args.vms,
                  args.seed, span, slowdown=args.slowdown)
    timeline = Timeline.of(fleet)
    title = (f"virtrigaud-resilience demo: {args.vms} VMs on {len(fleet.providers)} providers, "
             f"{args.profile} profile, seed {args.seed}"
             f"{', static rates' if args.no_adaptive else ''}")
    work = loop.create_task(_simulate(fleet, timeline))
    view = None
    interrupted = False
    start = time.perf_counter()
    try:
        # Ctrl-C is handled before anything is shown: a user who interrupts
        # as soon as the title appears gets the summary, not a traceback.
        with _interrupt_cancels(loop, work):
            view = None if json_only or args.virtual_time else _view(fleet, title)
            if view is not None:
                view.start()
                loop.every(view.period, view.update)
            loop.run_until_complete(work)
    except asyncio.CancelledError:
        interrupted = True  # Ctrl-C: stop, and show what the fleet did so far
    finally:
        wall = time.perf_counter() - start
        try:
            if view is not None:
                view.stop()
        finally:
            _close(loop, work)
    hedging = [] if interrupted else _hedging_against_a_replay(fleet, args)
    result = {
        "summary": {"seed": args.seed, "profile": args.profile,
                    "duration": args.duration, **fleet.summary(), "hedging": hedging},
        "measured": {"virtual_time": args.virtual_time, "time_scale": scale,
                     "wall_seconds": round(wall, 3),
                     "provider_calls_per_second": round(fleet.calls / wall) if wall else None,
                     "interrupted": interrupted},
    }
    if args.plot:
        from .timeline import plot

        plot(timeline, args.plot, title)
    if json_only:
        print(json.dumps(result, indent=2))
    else:
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(result, f, indent=2)
        from .view import print_summary

        print_summary(result)
        if args.plot:
            print(f"timeline written to {args.plot}")
    return 130 if interrupted else 0


def _hedging_against_a_replay(fleet: Fleet, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per provider with hedged operations: its describes' p99 in the run,
    and in a replay of the same seed without hedging (at once, on a clock of
    its own), and the hedges the run sent."""
    hedged = [p for p in fleet.providers if p.plan.hedged]
    if not hedged:
        return []
    clock = SimClock()
    loop = SimulatedLoop(clock)
    replay = Fleet(clock, PROFILES[args.profile](), args.vms, args.seed, fleet.span,
                   hedging=False, slowdown=args.slowdown)
    try:
        loop.run_until_complete(replay.run())
    finally:
        loop.close()
    unhedged = {p.label: p for p in replay.providers}
    return [{"provider": p.label, "hedged": dict(p.plan.hedged or {}),
             "describes": len(p.describe_latencies), "hedges": p.hedges,
             "describe_p99_ms": round(p.describe_p99() * 1e3, 3),
             "unhedged_describe_p99_ms": round(unhedged[p.label].describe_p99() * 1e3, 3)}
            for p in hedged]


async def _simulate(fleet: Fleet, timeline: Timeline) -> None:
    await asyncio.gather(fleet.run(), timeline.record(fleet))


def _close(loop: asyncio.AbstractEventLoop, work: asyncio.Task[None]) -> None:
    """Closes the loop, first cancelling ``work`` if something (a closed
    pipe under the view, say) stopped the loop with the fleet still running."""
    if not work.done():
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(work)
    loop.close()


@contextlib.contextmanager
def _interrupt_cancels(loop: asyncio.AbstractEventLoop,
                       task: asyncio.Task[None]) -> Iterator[None]:
    """Ctrl-C cancels ``task`` (as ``asyncio.run`` does), rather than raising
    KeyboardInterrupt wherever the program happens to be; a second Ctrl-C
    interrupts for real. Only the main thread receives signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    asked: list[int] = []

    def on_sigint(signum: int, frame: object) -> None:
        if asked:
            raise KeyboardInterrupt
        asked.append(signum)
        loop.call_soon_threadsafe(task.cancel)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _view(fleet: Fleet, title: str) -> Any:
    from ..cli._console import have_rich, is_terminal
    from .view import LiveView, PlainView

    if is_terminal():
        if have_rich():
            return LiveView(fleet, title)
        print(f"(a plain line per second: install rich for the live view: {INSTALL})",
              file=sys.stderr)
    print(title, flush=True)
    return PlainView(fleet)


def _serve_metrics(port: int, parser: argparse.ArgumentParser) -> Any:
    """Starts /metrics on 127.0.0.1:port (a thread of prometheus_client's);
    returns its server."""
    try:
        import prometheus_client

        from .. import metrics
    except ImportError:
        parser.error(f"--metrics-port needs prometheus-client: {INSTALL}")
    registry = prometheus_client.CollectorRegistry()
    metrics.register(registry)
    try:
        server, _thread = prometheus_client.start_http_server(port, addr="127.0.0.1",
                                                             registry=registry)
    except OSError as exc:
        parser.error(f"--metrics-port {port}: cannot listen on 127.0.0.1:{port}: "
                     f"{exc.strerror or exc}")
    return server
