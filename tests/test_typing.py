"""Types for users: the installed package (py.typed, the _core stub) under mypy --strict.

A user's script that forwards arguments through ``call`` / ``execute``, passes
durations as strings and timedeltas and takes tokens by keyword must check
cleanly; one with mistakes in those places must be caught, line by line.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent / "typing"

pytest.importorskip("mypy")


def _absolute_pythonpath() -> dict[str, str]:
    """The environment with PYTHONPATH's entries made absolute: mypy runs in
    ``tmp_path``, where a relative entry (``PYTHONPATH=python``) finds nothing."""
    env = dict(os.environ)
    if entries := env.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(
            str(Path(entry).resolve()) for entry in entries.split(os.pathsep) if entry)
    return env


def run_mypy(script: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental",
         "--cache-dir", str(tmp_path / "mypy-cache"), "--config-file", "/dev/null",
         "--show-error-codes", str(script)],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
        env=_absolute_pythonpath(),
    )


def test_a_users_script_passes_mypy_strict(tmp_path: Path) -> None:
    result = run_mypy(HERE / "good_user.py", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mistakes_through_forwarded_arguments_are_caught(tmp_path: Path) -> None:
    script = HERE / "bad_user.py"
    expected = {
        number: code
        for number, line in enumerate(script.read_text().splitlines(), start=1)
        if (match := re.search(r"# E: ([\w-]+)", line)) and (code := match.group(1))
    }
    result = run_mypy(script, tmp_path)
    found = {int(m.group(1)): m.group(2)
             for m in re.finditer(r"bad_user\.py:(\d+): error: .*\[([\w-]+)\]", result.stdout)}
    assert found == expected, result.stdout
