"""The adapters' cost on a real loopback call: ``bench --sections adapters``.

A thin entry point to the bench's ``adapters`` section
(:mod:`virtrigaud_resilience.bench.adapters`: loopback grpc.aio, sync grpc,
httpx async and sync calls, bare and guarded, interleaved round by round
against servers in a child process; the end-to-end ratio is the median of
the per-round ratios, and our own work is measured around a stub), so that
this script and ``virtrigaud-resilience bench --sections adapters`` are one
implementation with the same flags. The bench's primitives run with it.

    python benchmarks/adapters.py             # 15 rounds of 200 calls per case
    python benchmarks/adapters.py --quick     # 5 rounds of 50
    python benchmarks/adapters.py --json out.json --check
"""

from __future__ import annotations

import sys

from virtrigaud_resilience.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:], "--sections", "adapters"]))
