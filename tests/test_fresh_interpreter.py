"""The ``fresh_interpreter`` marker (tests/fresh_interpreter.py): a marked
module runs in a child pytest when the session holds other tests, its
failures fail the session, and alone it runs in the session's interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent
CHILD = "VR_TEST_FRESH_INTERPRETER"

IN_CHILD = f"""
import os
import pytest
pytestmark = pytest.mark.fresh_interpreter

def test_runs_in_the_child():
    assert os.environ.get({CHILD!r}) == "1"
"""


def session(tmp_path: Path, files: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Runs pytest over ``files`` written to ``tmp_path`` with the marker's hooks."""
    (tmp_path / "conftest.py").write_text(
        "from fresh_interpreter import pytest_collection_modifyitems, pytest_configure"
        "  # noqa: F401\n")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k != CHILD}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)


def other_module() -> str:
    return (f"import os\n\ndef test_in_the_session():\n"
            f"    assert {CHILD!r} not in os.environ\n")


def test_a_marked_module_beside_others_runs_in_a_child(tmp_path: Path) -> None:
    result = session(tmp_path, {
        "test_marked.py": IN_CHILD,
        "test_other.py": other_module(),
    })
    assert result.returncode == 0, result.stdout + result.stderr
    # The other module's test, and one item for the marked module's test
    # (which fails outside the child).
    assert "2 passed" in result.stdout, result.stdout


def test_a_failure_in_the_child_fails_the_session_with_its_output(tmp_path: Path) -> None:
    failing = ("import pytest\npytestmark = pytest.mark.fresh_interpreter\n\n"
               "def test_fine():\n    pass\n\n"
               "def test_broken():\n    assert 6 * 7 == 41, 'the child said so'\n")
    result = session(tmp_path, {"test_marked.py": failing, "test_other.py": other_module()})
    assert result.returncode == 1
    assert "1 failed, 1 passed" in result.stdout, result.stdout
    assert "the child said so" in result.stdout  # the child's own report


def test_a_marked_module_alone_runs_in_the_session(tmp_path: Path) -> None:
    alone = ("import os\nimport pytest\npytestmark = pytest.mark.fresh_interpreter\n\n"
             f"def test_in_the_session():\n    assert {CHILD!r} not in os.environ\n")
    result = session(tmp_path, {"test_marked.py": alone}, "test_marked.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
