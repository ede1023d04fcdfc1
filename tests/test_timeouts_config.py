"""RPCConfig: per-operation timeouts (virtrigaud_resilience.timeouts)."""

from __future__ import annotations

import dataclasses
import math
import re
from datetime import timedelta

import pytest
from virtrigaud_resilience.timeouts import MUTATING_OPERATIONS, RPCConfig

FIELDS = ("describe", "mutating", "validate", "task_status")


def test_defaults_are_the_go_defaults() -> None:
    config = RPCConfig()
    assert config.describe == 30.0
    assert config.mutating == 240.0
    assert config.validate == 10.0
    assert config.task_status == 10.0


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        ("Describe", 30.0),
        ("Validate", 10.0),
        ("TaskStatus", 10.0),
        ("Create", 240.0),
        ("Delete", 240.0),
        ("Power", 240.0),
        ("Reconfigure", 240.0),
    ],
)
def test_timeout_for_known_operations(operation: str, expected: float) -> None:
    assert RPCConfig().timeout_for(operation) == expected


def test_each_field_drives_its_operations() -> None:
    config = RPCConfig(describe=1.0, mutating=2.0, validate=3.0, task_status=4.0)
    assert config.timeout_for("Describe") == 1.0
    assert config.timeout_for("Validate") == 3.0
    assert config.timeout_for("TaskStatus") == 4.0
    for operation in MUTATING_OPERATIONS:
        assert config.timeout_for(operation) == 2.0


@pytest.mark.parametrize(
    "operation",
    ["Snapshot", "Clone", "", "describe", "DESCRIBE", "taskstatus", " Describe", "Describe "],
)
def test_unknown_operations_get_the_mutating_timeout(operation: str) -> None:
    # Unknown (and differently cased: the Go switch is case-sensitive)
    # operations get the longest, conservative timeout.
    config = RPCConfig(describe=1.0, mutating=2.0, validate=3.0, task_status=4.0)
    assert config.timeout_for(operation) == 2.0


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("/provider.v1.Provider/Describe", 1.0),
        ("/provider.v1.Provider/Validate", 3.0),
        ("/provider.v1.Provider/TaskStatus", 4.0),
        ("/provider.v1.Provider/Create", 2.0),
        ("/provider.v1.Provider/ListCapabilities", 2.0),
        ("provider.v1.Provider/Describe", 1.0),
        ("/Describe", 1.0),
        ("/provider.v1.Provider/", 2.0),
    ],
)
def test_grpc_full_method_names(method: str, expected: float) -> None:
    config = RPCConfig(describe=1.0, mutating=2.0, validate=3.0, task_status=4.0)
    assert config.timeout_for(method) == expected


@pytest.mark.parametrize("operation", [None, 1, b"Describe", ["Describe"]])
def test_timeout_for_rejects_non_str(operation: object) -> None:
    with pytest.raises(TypeError, match="operation must be a str"):
        RPCConfig().timeout_for(operation)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (45, 45.0),
        (0.25, 0.25),
        ("45s", 45.0),
        ("4m", 240.0),
        ("1m30s", 90.0),
        ("100ms", 0.1),
        ("1.5", 1.5),
        (timedelta(minutes=10), 600.0),
        (timedelta(milliseconds=1), 0.001),
    ],
)
@pytest.mark.parametrize("field", FIELDS)
def test_accepts_numbers_timedelta_and_go_strings(field: str, value: object, seconds: float) -> None:
    config = RPCConfig(**{field: value})  # type: ignore[arg-type]
    stored = getattr(config, field)
    assert stored == seconds
    assert type(stored) is float


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (0, ValueError),
        (0.0, ValueError),
        ("0s", ValueError),
        ("0", ValueError),
        (-1, ValueError),
        ("-1s", ValueError),
        (timedelta(0), ValueError),
        (timedelta(seconds=-5), ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        (-math.inf, ValueError),
        (1e300, ValueError),
        ("NaN", ValueError),
        ("inf", ValueError),
        ("", ValueError),
        ("abc", ValueError),
        ("1e400", ValueError),
        ("999999999999h", ValueError),
        ("10 seconds", ValueError),
        (None, TypeError),
        (True, TypeError),
        (b"30s", TypeError),
        ([30], TypeError),
    ],
)
@pytest.mark.parametrize("field", FIELDS)
def test_rejects_bad_values_naming_field_and_value(
    field: str, value: object, error: type[Exception]
) -> None:
    shown = repr(value)
    with pytest.raises(error, match=rf"RPCConfig {field}\b.*{re.escape(shown)}"):
        RPCConfig(**{field: value})  # type: ignore[arg-type]


def test_frozen_and_hashable() -> None:
    config = RPCConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.describe = 1.0  # type: ignore[misc]
    # The fields are typed float; strings and timedeltas are a runtime convenience.
    same = RPCConfig(describe="30s", mutating="4m", validate="10s", task_status=10)  # type: ignore[arg-type]
    assert config == same
    assert hash(config) == hash(RPCConfig(mutating=timedelta(minutes=4)))  # type: ignore[arg-type]


def test_replace_validates() -> None:
    config = dataclasses.replace(RPCConfig(), describe="5s")  # type: ignore[arg-type]
    assert config.describe == 5.0
    with pytest.raises(ValueError, match="RPCConfig describe"):
        dataclasses.replace(config, describe=-1)
