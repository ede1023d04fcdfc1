"""``virtrigaud-resilience bench``: the per-call cost of a guarded call, side by side with the peers.

Everything is measured in one process run, interleaved round by round (each
round times every case once; a case's figure is its best round), so the
ratios compare like with like on a noisy machine. Absolute ns/call vary from
machine to machine; the ratios are the result.

    virtrigaud-resilience bench              # full run (minutes: the fleets of tasks)
    virtrigaud-resilience bench --quick      # fewer rounds, for a smoke test
    virtrigaud-resilience bench --json       # the results as JSON on stdout
    virtrigaud-resilience bench --plot bench.png --sections policy

``benchmarks/compare.py`` is this same command. Peers that are not installed
(``pip install 'virtrigaud-resilience[bench]'``) are listed as skipped with
the command that installs them. ``--check`` exits 1 if a target of
DESIGN.md does not hold in this run. Adding a section is one function in
:mod:`.sections`.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..cli._args import bounded_int, check_writable, require_module
from ..cli._console import is_terminal
from .sections import SECTIONS, TARGETS, build_suite, composed, section
from .suite import BARE, BARE_AWAIT, Case, Skipped, Suite, Target, measure, noop, noop_async

__all__ = ["BARE", "BARE_AWAIT", "SECTIONS", "TARGETS", "Case", "Skipped", "Suite", "Target",
           "add_arguments", "build_suite", "composed", "measure", "noop", "noop_async", "run",
           "section"]

#: --quick: rounds, calls per round and case, repeats of the scrape timings.
QUICK = (3, 20_000, 1)
#: The default: rounds and calls per round and case.
FULL = (7, 200_000)
INSTALL = "pip install 'virtrigaud-resilience[bench]'"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The bench's command-line options (also ``benchmarks/compare.py``'s)."""
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK[0]} rounds of {QUICK[1]:,} calls (unless given), one scrape")
    parser.add_argument("--rounds", type=bounded_int(1, 1_000),
                        help=f"rounds (default {FULL[0]})")
    parser.add_argument("--calls", type=bounded_int(1, 100_000_000),
                        help=f"calls per round and case (default {FULL[1]:,})")
    parser.add_argument("--json", nargs="?", const="-", metavar="FILE",
                        help="write the results as JSON to FILE, or alone to stdout")
    parser.add_argument("--plot", metavar="PNG", help="write a bar chart (log scale) as a PNG")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--sections", nargs="*", choices=list(SECTIONS), default=list(SECTIONS),
                        help="sections to run besides the primitives (default: all)")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Runs the bench for parsed ``args`` (usage errors: ``parser.error``);
    returns the exit status (1 under ``--check`` when a target is missed)."""
    if args.plot:
        require_module("matplotlib", "--plot", "pip install matplotlib", parser)
        check_writable(args.plot, "--plot", parser)
    if args.json not in (None, "-"):
        check_writable(args.json, "--json", parser)
    rounds, calls, repeats = QUICK if args.quick else (*FULL, 5)
    rounds = args.rounds or rounds
    calls = args.calls or calls
    json_only = args.json == "-"
    suite, targets = build_suite(args.sections, repeats)
    measure(suite, rounds, calls, _progress if is_terminal(sys.stderr) else None)
    header = {"python": sys.version.split()[0], "rounds": rounds, "calls": calls}
    title = f"Python {header['python']}, {rounds} rounds x {calls:,} calls, best round"
    from . import report

    if json_only:
        print(json.dumps(report.to_json(suite, targets, header), indent=2))
    else:
        report.print_report(suite, targets, title)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(report.to_json(suite, targets, header), f, indent=2)
    if args.plot:
        report.plot(suite, args.plot, f"ns per call, {title}")
        if not json_only:
            print(f"chart written to {args.plot}")
    return 0 if report.all_held(suite, targets) or not args.check else 1


def _progress(done: int, total: int) -> None:
    """The round under way, on a terminal's stderr: a minute-long run shows it is alive."""
    end = "\n" if done == total else ""
    print(f"\rmeasuring: round {done}/{total}", end=end, file=sys.stderr, flush=True)

