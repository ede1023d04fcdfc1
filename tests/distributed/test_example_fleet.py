"""examples/fleet_rate_limit.py runs and shows what its docstring promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fleet_rate_limit.py"


def test_fleet_example(redis_server: Any) -> None:
    # redis_server only decides skip-or-fail; the example starts (and kills) its own.
    result = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    shared = re.search(r"shared: (\d+) tokens in ([\d.]+) s for the fleet \(bound (\d+)\)", out)
    assert shared is not None, out
    assert int(shared[1]) <= int(shared[3])
    assert "breaker opened by replica 0: ['OPEN', 'OPEN', 'OPEN']" in out
    assert "redis killed: shared=[False, False, False]" in out
    assert "redis back: shared=[True, True, True]" in out
