"""The layers of docs/architecture.md hold: import-linter's contracts
(``[tool.importlinter]`` in pyproject.toml) pass on the package, and fail on a
copy of it with one forbidden import added, so a violation fails the suite.

The contracts read the source (grimp), which cannot see the compiled
``_core``: ``from . import _core`` reads as an import of the package root, so
the contracts ignore imports of the root from inside, and
:func:`test_the_root_is_imported_from_inside_only_for_the_extension` checks,
by reading the source too, that such an import is only ever that one.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import virtrigaud_resilience

pytest.importorskip("importlinter")

PACKAGE = Path(virtrigaud_resilience.__file__).resolve().parent
CONFIG = Path(__file__).resolve().parent.parent / "pyproject.toml"
#: The CLI layer: it may import anything, the package root included.
CLI_LAYER = ("cli", "bench", "demo")


def lint_imports(source_root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the repository's contracts on the package under ``source_root``."""
    if not CONFIG.is_file():
        pytest.skip("pyproject.toml is not next to the tests (an installed wheel's run)")
    # lint_imports puts the working directory first on sys.path: the package
    # analysed is the one under source_root, whatever else is installed.
    code = ("import sys\nfrom importlinter.cli import lint_imports\n"
            f"sys.exit(lint_imports(config_filename={str(CONFIG)!r}, no_cache=True))")
    return subprocess.run([sys.executable, "-c", code], cwd=source_root, capture_output=True,
                          text=True, timeout=300, check=False)


def test_the_contracts_hold() -> None:
    result = lint_imports(PACKAGE.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


#: (file, line added, the contract that must break): one per kind of rule.
VIOLATIONS = [
    pytest.param("breaker.py", "from .providers import fake", "Layers",
                 id="a primitive imports a subpackage"),
    pytest.param("metrics.py", "from .distributed import exact", "Layers",
                 id="the metrics collector imports a subpackage"),
    pytest.param("events.py", "from .breaker import CircuitBreaker", "Layers",
                 id="the events <-> breaker cycle"),
    pytest.param("ratelimit.py", "from .cli import _console", "Layers",
                 id="the core imports the CLI"),
    pytest.param("bench/__init__.py", "from ..cli import main", "no cli <-> bench loop",
                 id="the cli <-> bench loop"),
    pytest.param("demo/view.py", "from ..bench import report", "do not import each other",
                 id="one CLI command imports another"),
    pytest.param("compat/aiolimiter.py", "import aiolimiter", "never import the peers",
                 id="a drop-in imports its peer"),
    pytest.param("timeouts.py", "import httpx", "no optional dependency",
                 id="the core imports httpx"),
    pytest.param("policy.py", "import redis", "no optional dependency",
                 id="policy imports redis"),
    pytest.param("distributed/client_breaker.py", "import grpc", "grpc and httpx only in providers",
                 id="distributed imports grpc"),
    pytest.param("distributed/client_breaker.py", "import kopf", "kopf only in integrations",
                 id="distributed imports kopf"),
    pytest.param("providers/fake.py", "import redis", "redis only in distributed",
                 id="providers import redis"),
    pytest.param("integrations/kopf.py", "import rich", "only in the CLI layer",
                 id="an integration imports rich"),
    pytest.param("events.py", "import opentelemetry", "no optional dependency",
                 id="the core imports opentelemetry"),
    pytest.param("providers/http.py", "import opentelemetry", "opentelemetry only in otel",
                 id="an adapter imports opentelemetry"),
]


@pytest.mark.parametrize(("module", "line", "contract"), VIOLATIONS)
def test_a_forbidden_import_breaks_a_contract(tmp_path: Path, module: str, line: str,
                                              contract: str) -> None:
    copy = tmp_path / PACKAGE.name
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    target = copy / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    broken = [row for row in result.stdout.splitlines() if " BROKEN" in row]
    assert any(contract in row for row in broken), result.stdout


def test_a_new_module_must_be_placed_in_a_layer(tmp_path: Path) -> None:
    """The layers contract is exhaustive: a module of the top level that no
    layer names breaks it, so a new module is placed on purpose."""
    copy = tmp_path / PACKAGE.name
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    (copy / "unplaced.py").write_text('"""A module no layer names."""\n', encoding="utf-8")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "unplaced" in result.stdout


def imports_of_the_root(source: str, depth: int) -> list[tuple[int, str]]:
    """``(line, name)`` for each name ``source`` imports from the package root,
    for a module ``depth`` packages deep (1: a module of the top level)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name == PACKAGE.name]
        elif isinstance(node, ast.ImportFrom):
            relative = node.level == depth and not node.module
            if relative or (node.level == 0 and node.module == PACKAGE.name):
                found += [(node.lineno, a.name) for a in node.names]
    return found


def test_the_root_is_imported_from_inside_only_for_the_extension() -> None:
    """Below the CLI layer, what is imported from the package root is a
    submodule or ``_core`` (which the contracts cannot see), never a name the
    root's ``__init__`` re-exports, nor the root itself."""
    submodules = {p.stem for p in PACKAGE.glob("*.py")} | {
        p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()} | {"_core"}
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in CLI_LAYER or relative == Path("__init__.py"):
            continue
        found = imports_of_the_root(path.read_text(encoding="utf-8"), len(relative.parts))
        wrong += [f"{relative}:{line}: {name}" for line, name in found
                  if name not in submodules]
    assert wrong == []


@pytest.mark.parametrize(("source", "depth", "found"), [
    ("from . import _core, clock", 1, [(1, "_core"), (1, "clock")]),
    ("from .. import _core", 2, [(1, "_core")]),
    ("from .. import sibling", 1, []),  # above the root: not the root
    ("from . import x", 2, []),  # the subpackage, not the root
    ("from .clock import SYSTEM_CLOCK", 1, []),
    ("import virtrigaud_resilience", 3, [(1, "virtrigaud_resilience")]),
    ("import virtrigaud_resilience.clock", 1, []),
    ("from virtrigaud_resilience import Policy", 2, [(1, "Policy")]),
])
def test_the_root_check_reads_relative_and_absolute_imports(source: str, depth: int,
                                                            found: list[tuple[int, str]]) -> None:
    assert imports_of_the_root(source, depth) == found
