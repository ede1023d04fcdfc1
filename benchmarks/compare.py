"""Side-by-side costs of a guarded call: a bare call, our primitives, the peers.

The machinery is the package's (``virtrigaud_resilience.bench``), so this
script and ``virtrigaud-resilience bench`` are one implementation with the
same flags:

    python benchmarks/compare.py              # full run (minutes: the fleets of tasks)
    python benchmarks/compare.py --quick      # fewer rounds, for a smoke test
    python benchmarks/compare.py --json out.json
    python benchmarks/compare.py --sections metrics   # only the primitives + one section
    python benchmarks/compare.py --rounds 5 --calls 50000 --check --plot bench.png

Peers that are not installed (``pip install virtrigaud-resilience[bench]``)
are skipped and listed with the command that installs them. ``--check``
exits non-zero if a target of DESIGN.md does not hold in this run. To add
cases, add a section (one function) to ``virtrigaud_resilience/bench/sections.py``.
"""

from __future__ import annotations

import sys

from virtrigaud_resilience.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
