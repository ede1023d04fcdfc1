"""`import virtrigaud_resilience` stays light: no optional dependency, and none of
the standard library's heavy modules a sync program never needs.

Import time matters to CLIs and to controllers that start often; asyncio alone
(it loads ssl) used to be more than half of it. The wheel scripts time the
import (scripts/test-wheels.sh); this test pins what makes it fast, without
timing anything.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

#: Modules `import virtrigaud_resilience` must not load (each is imported
#: where it is used: asyncio inside the async paths, the extras in their
#: subpackages, difflib only to suggest a key on a typo, decimal when a
#: retry budget is built).
NOT_AT_IMPORT = ("asyncio", "ssl", "concurrent.futures", "difflib", "decimal", "yaml",
                 "prometheus_client", "grpc", "httpx", "kopf", "redis", "rich", "matplotlib")


def loaded_after(code: str) -> set[str]:
    probe = (f"import sys\n{code}\n"
             f"print('LOADED:', *(m for m in {NOT_AT_IMPORT!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=60, check=True)
    line = next(line for line in result.stdout.splitlines() if line.startswith("LOADED:"))
    return set(line.split()[1:])


def test_import_loads_no_heavy_or_optional_module() -> None:
    assert loaded_after("import virtrigaud_resilience") == set()


@pytest.mark.parametrize("use", [
    "vr.TokenBucket(10, 20).try_acquire()",
    "vr.CircuitBreaker('x').call(int)",
    "vr.PolicyBuilder('p').with_retry().with_timeout(1.0).build().execute(int)",
    "vr.retry(None, int)",
    "vr.Config.from_env({})",
    "vr.classify(TimeoutError())",
])
def test_sync_use_loads_no_asyncio(use: str) -> None:
    assert "asyncio" not in loaded_after(f"import virtrigaud_resilience as vr\n{use}")


def test_async_use_works_once_asyncio_is_there() -> None:
    code = ("import virtrigaud_resilience as vr, asyncio\n"
            "async def f(): return 1\n"
            "p = vr.PolicyBuilder('p').with_timeout(1.0).build()\n"
            "assert asyncio.run(p.execute_async(f)) == 1")
    assert "asyncio" in loaded_after(code)


def test_the_cli_imports_its_extras_only_when_used() -> None:
    """`virtrigaud-resilience --help`, the demo and the bench modules load no
    optional dependency until a command needs one (rich for a live view,
    matplotlib for --plot, prometheus-client for --metrics-port, the peers
    for the bench)."""
    code = ("import virtrigaud_resilience.cli, virtrigaud_resilience.demo, "
            "virtrigaud_resilience.bench, virtrigaud_resilience.demo.view, "
            "virtrigaud_resilience.demo.timeline, virtrigaud_resilience.bench.report")
    loaded = loaded_after(code)
    assert not loaded & {"rich", "matplotlib", "prometheus_client", "yaml", "grpc", "httpx",
                         "kopf", "redis"}
