"""Renamed public names: the new ones work; the old ones still work for one
minor release and warn with a DeprecationWarning that names the replacement;
importing a module that serves old names warns about nothing.

The distributed primitives' old names are tested in
tests/distributed/test_renamed_distributed.py (they need redis-py).
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from typing import Any

import pytest
import virtrigaud_resilience as vr
from virtrigaud_resilience import _deprecated, breaker


def read_warning(read: Any) -> tuple[Any, warnings.WarningMessage]:
    """``read()``'s value and the one DeprecationWarning it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = read()
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(deprecations) == 1, [str(w.message) for w in caught]
    return value, deprecations[0]


def test_breaker_scope_is_what_breaker_guard_returns() -> None:
    cb = vr.CircuitBreaker("renamed", config=vr.BreakerConfig(failure_threshold=1))
    scope = cb.guard()
    assert type(scope) is vr.BreakerScope is breaker.BreakerScope
    with pytest.raises(vr.UnavailableError), scope:
        raise vr.UnavailableError("down")
    assert cb.state is vr.BreakerState.OPEN
    assert "BreakerScope" in vr.__all__ and "Guard" not in vr.__all__


@pytest.mark.parametrize(("module", "old", "new"), [
    (vr, "Guard", "virtrigaud_resilience.BreakerScope"),
    (breaker, "Guard", "virtrigaud_resilience.breaker.BreakerScope"),
])
def test_an_old_name_still_works_and_warns_naming_the_new_one(module: Any, old: str,
                                                              new: str) -> None:
    value, warning = read_warning(lambda: getattr(module, old))
    assert value is vr.BreakerScope
    message = str(warning.message)
    assert message == (f"{module.__name__}.{old} is deprecated: use {new} "
                       f"(the old name goes in {_deprecated.REMOVED_IN})")
    assert warning.filename == __file__  # it points at the line that read the name


def test_from_import_of_an_old_name_warns_at_the_import() -> None:
    def imported() -> Any:
        from virtrigaud_resilience import Guard

        return Guard

    value, warning = read_warning(imported)
    assert value is vr.BreakerScope
    assert "use virtrigaud_resilience.BreakerScope" in str(warning.message)
    assert warning.filename == __file__


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'Gaurd'"):
        vr.Gaurd  # noqa: B018
    with pytest.raises(AttributeError, match="'virtrigaud_resilience.breaker' has no attribute"):
        breaker.Nothing  # noqa: B018
    assert vr.metrics.__name__ == "virtrigaud_resilience.metrics"  # the lazy one still loads


def test_importing_the_modules_warns_about_nothing() -> None:
    """Only reading an old name warns: a plain import, ``from ... import *``
    and the new names do not (checked in a fresh interpreter, warnings as errors)."""
    code = ("import virtrigaud_resilience, virtrigaud_resilience.breaker\n"
            "from virtrigaud_resilience import *\n"
            "from virtrigaud_resilience import BreakerScope\n")
    result = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


class Holder:
    new = 42
    old: _deprecated.RenamedAttribute[int] = _deprecated.RenamedAttribute("new")


def test_a_renamed_attribute_reads_the_new_one_and_warns() -> None:
    value, warning = read_warning(lambda: Holder().old)
    assert value == 42
    assert str(warning.message).startswith("Holder.old is deprecated: use Holder.new ")
    assert warning.filename == __file__
    assert isinstance(Holder.old, _deprecated.RenamedAttribute)  # on the class: the descriptor


def construct(**kwargs: Any) -> Any:
    """A function whose ``old=`` keyword was renamed ``new=``."""
    return _deprecated.renamed_keyword("construct", "old", kwargs.get("old"), "new",
                                       kwargs.get("new"))


def test_a_renamed_keyword_is_used_and_warns_at_the_caller() -> None:
    assert construct(new=1) == 1
    value, warning = read_warning(lambda: construct(old=2))
    assert value == 2
    assert str(warning.message).startswith(
        "construct(old=...) is deprecated: use construct(new=...) ")
    assert warning.filename == __file__


def test_a_renamed_keyword_given_twice_is_a_type_error_naming_both() -> None:
    with pytest.raises(TypeError, match=r"construct got both new= and its deprecated name old=, "
                                        r"got new=1, old=2"):
        construct(new=1, old=2)
