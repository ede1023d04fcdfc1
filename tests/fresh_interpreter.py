"""The ``fresh_interpreter`` marker: a module's tests run in an interpreter of
their own when the session holds other tests too.

For tests that see the whole process, not only their own objects: the
metrics collector reports every breaker and bucket alive and the totals of
every one dropped, so in a long suite each scrape also renders (and the test
parses) the series of the thousand tests before it; and threads that earlier
tests' libraries keep for the process (grpc.aio's poller) take part in every
GIL switch of a thread-hammering test. In the whole suite test_metrics.py took
100 s and one of its tests 157 s; alone, 10 s. The marked tests run in one
``python -m pytest`` child per module (same interpreter, environment and
working directory, the selected tests only), reported as one test per module
whose failure shows the child's output. A session of that module alone runs
it as usual.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import pytest

MARKER = "fresh_interpreter"
_CHILD = "VR_TEST_FRESH_INTERPRETER"  # set in the child: run the tests themselves
_TIMEOUT_S = 900


class ChildFailed(Exception):
    """The child pytest failed; its output is the message."""


class FreshInterpreterRun(pytest.Item):
    """Runs ``nodeids`` (one module's selected tests) in a child pytest."""

    def __init__(self, *, nodeids: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.nodeids = nodeids

    def runtest(self) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *self.nodeids],
            cwd=self.config.rootpath, env={**os.environ, _CHILD: "1"},
            capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
        if result.returncode != 0 or self._ran(result.stdout) != len(self.nodeids):
            raise ChildFailed(result.stdout[-20_000:] + result.stderr[-5_000:])

    @staticmethod
    def _ran(stdout: str) -> int:
        """Tests the child's summary line says passed, skipped or xfailed."""
        lines = stdout.strip().splitlines()
        counts = re.findall(r"(\d+) (passed|skipped|xfailed)", lines[-1] if lines else "")
        return sum(int(n) for n, _ in counts)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> str:
        if isinstance(excinfo.value, ChildFailed):
            return f"{len(self.nodeids)} tests in a fresh interpreter:\n{excinfo.value}"
        return str(super().repr_failure(excinfo, style=style))

    def reportinfo(self) -> tuple[Any, int, str]:
        return self.path, 0, f"{len(self.nodeids)} tests of {self.path.name}, fresh interpreter"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}: the module's tests run in a child interpreter of their own "
        "when the session holds other tests (tests/fresh_interpreter.py)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(_CHILD):
        return
    modules = {item.path for item in items}
    if len(modules) < 2:
        return
    marked: dict[pytest.Module, list[pytest.Item]] = {}
    for item in items:
        if item.get_closest_marker(MARKER):
            module = item.getparent(pytest.Module)
            assert module is not None
            marked.setdefault(module, []).append(item)
    replaced: dict[pytest.Module, pytest.Item] = {
        module: FreshInterpreterRun.from_parent(
            module, name="[fresh interpreter]", nodeids=[i.nodeid for i in tests])
        for module, tests in marked.items()}
    kept: list[pytest.Item] = []
    for item in items:
        if not item.get_closest_marker(MARKER):
            kept.append(item)
            continue
        run = replaced.pop(item.getparent(pytest.Module), None)  # type: ignore[arg-type]
        if run is not None:  # at the place of the module's first marked test
            kept.append(run)
    items[:] = kept
