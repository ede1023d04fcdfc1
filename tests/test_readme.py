"""The README is a landing page a newcomer can act on.

It stays short (at most 200 lines) with its first code block within the first
40 lines; its test command is the one CI runs; its example runs and prints
what its last comment says; and every relative link in it names a file of
the repository (the guide itself lives in docs/, built by `mkdocs build
--strict` in CI, which checks the site's links).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

if not README.is_file():
    pytest.skip("README.md is not next to the tests", allow_module_level=True)

TEXT = README.read_text(encoding="utf-8")
LINES = TEXT.splitlines()
FENCE = re.compile(r"^```(\w*)$")


def code_blocks() -> list[tuple[int, str, str]]:
    """(line number of the opening fence, language, body) of each fenced block."""
    blocks, start, language, body = [], 0, "", []
    for number, line in enumerate(LINES, start=1):
        fence = FENCE.match(line)
        if fence and not start:
            start, language, body = number, fence.group(1), []
        elif line == "```" and start:
            blocks.append((start, language, "\n".join(body) + "\n"))
            start = 0
        elif start:
            body.append(line)
    assert not start, f"README.md: the code block opened at line {start} is never closed"
    return blocks


def test_a_landing_page_with_code_early() -> None:
    assert len(LINES) <= 200, f"README.md has {len(LINES)} lines: the guide belongs in docs/"
    first = code_blocks()[0][0]
    assert first <= 40, f"README.md's first code block opens at line {first}, past line 40"


def test_its_test_command_is_the_one_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    command = "bash scripts/test.sh"
    first_shell = next(body for _, language, body in code_blocks() if language == "bash")
    assert command in first_shell.splitlines()
    assert command in ci.splitlines()


def test_the_example_prints_what_it_says() -> None:
    example = next(body for _, language, body in code_blocks() if language == "python")
    printed = [line for line in example.splitlines() if line.startswith("print(")]
    assert len(printed) == 1, "the example ends with one print(...)  # its output"
    expected = printed[0].split("#", 1)[1].strip()
    run = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == expected


def test_relative_links_name_files() -> None:
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", TEXT)
    relative = [t for t in targets if "://" not in t]
    assert relative, "README.md links into docs/"
    missing = [t for t in relative if not (ROOT / t).is_file()]
    assert not missing, f"README.md links to files that do not exist: {missing}"
