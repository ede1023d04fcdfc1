"""An optional dependency that is missing names the extra to install."""

from __future__ import annotations

import subprocess
import sys

import pytest

from virtrigaud_resilience._extras import require


def test_a_missing_dependency_names_the_extra() -> None:
    with pytest.raises(ImportError, match=r"^x\.y needs no-such-dist: pip install "
                                          r"'virtrigaud-resilience\[nope\]'$") as raised:
        require("virtrigaud_no_such_module", "no-such-dist", "nope", "x.y")
    assert isinstance(raised.value.__cause__, ModuleNotFoundError)


def test_a_present_dependency_is_the_module() -> None:
    assert require("json", "json", "none", "x.y") is sys.modules["json"]


@pytest.mark.parametrize(("subpackage", "blocked", "extra"), [
    ("virtrigaud_resilience.providers.grpc", "grpc", "grpc"),
    ("virtrigaud_resilience.providers.http", "httpx", "http"),
    ("virtrigaud_resilience.integrations.kopf", "kopf", "kopf"),
    ("virtrigaud_resilience.distributed", "redis", "redis"),
])
def test_each_subpackage_asks_for_its_extra(subpackage: str, blocked: str, extra: str) -> None:
    """In a fresh interpreter where the dependency cannot be imported."""
    script = (f"import sys; sys.modules[{blocked!r}] = None\n"
              f"try:\n    import {subpackage}\n"
              f"except ImportError as exc:\n    print(exc)\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    assert f"pip install 'virtrigaud-resilience[{extra}]'" in run.stdout
