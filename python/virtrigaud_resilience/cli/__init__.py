"""``virtrigaud-resilience demo | bench``: see the policies work, and what they cost.

``demo`` (:mod:`virtrigaud_resilience.demo`): a controller reconciling a
fleet of VMs across three faulty providers, live. ``bench``
(:mod:`virtrigaud_resilience.bench`): the per-call cost of the primitives
and policies against a bare call and the pure-Python peers.

A bad argument is one line on stderr and exit status 2, never a traceback.

This package is the top layer (docs/architecture.md): the command and the
helpers its commands share (``_args``: argument checks, ``_console``: tables,
``_plotting``: charts). ``demo`` and ``bench`` import those helpers; nothing
below the CLI layer imports anything from here.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line: ``prog: error: message``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    # Imported per call, not at the top: demo and bench import this package's
    # helpers (cli._args, ...), so importing them here at import time would
    # run them inside this package's own initialisation; and `import
    # virtrigaud_resilience.cli` stays cheap (the demo loads asyncio).
    from .. import bench, demo

    parser = _Parser(prog="virtrigaud-resilience",
                     description="See the resilience policies work, and what they cost.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo_parser = sub.add_parser(
        "demo", help="a controller fleet riding out provider faults, live",
        description=(demo.__doc__ or "").split("\n\n")[0])
    demo.add_arguments(demo_parser)
    bench_parser = sub.add_parser(
        "bench", help="per-call cost against a bare call and the pure-Python peers",
        description=(bench.__doc__ or "").split("\n\n")[0])
    bench.add_arguments(bench_parser)
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return demo.run(args, demo_parser)
        return bench.run(args, bench_parser)
    except BrokenPipeError:
        # Piped into `head` and the reader left: stop quietly, as Unix tools do
        # (and keep Python from failing again when it flushes stdout at exit).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
