"""The bench's ``adapters`` section: real loopback calls in a child process,
bare and guarded, reported as the median of per-round ratios end to end and our own work per call."""

from __future__ import annotations

import pytest

pytest.importorskip("grpc")
pytest.importorskip("httpx")

from virtrigaud_resilience.bench import SECTIONS  # noqa: E402
from virtrigaud_resilience.bench import adapters as section  # noqa: E402
from virtrigaud_resilience.bench.suite import Suite  # noqa: E402

PAIRS = ("grpc.aio unary via aio_channel", "sync grpc unary via intercept_channel",
         "httpx.AsyncClient GET via AsyncResilientTransport",
         "httpx.Client GET via ResilientTransport")


def test_the_adapters_section_measures_every_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(section, "_QUICK", (3, 5, 50))  # rounds, loopback calls, stub calls
    suite = Suite(repeats=1)
    assert SECTIONS["adapters"](suite) == []
    assert not suite.skipped
    whats = [what for what, _, _ in suite.timings]
    for pair in PAIRS:
        end_to_end = next(t for t in suite.timings if t[0].startswith(f"{pair}: end to end"))
        _, guarded_ms, bound_ms = end_to_end
        assert "median of 3 interleaved rounds of 5 calls, quartiles " in end_to_end[0]
        assert guarded_ms > 0 and bound_ms > 0
        own = next(t for t in suite.timings if t[0].startswith(f"{pair}: our own work"))
        assert "% of the loopback call" in own[0] and own[2] > 0
    assert len(whats) == 2 * len(PAIRS)
