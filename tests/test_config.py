"""Config.from_env / from_configmap / to_env (virtrigaud_resilience.config)."""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import sys
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from virtrigaud_resilience import _core
from virtrigaud_resilience import breaker as breaker_module
from virtrigaud_resilience.breaker import BreakerConfig
from virtrigaud_resilience.config import (
    DEVELOPMENT_CONFIGMAP,
    ENV_KEYS,
    PRODUCTION_CONFIGMAP,
    Config,
    RateLimitConfig,
)
from virtrigaud_resilience.ratelimit import MAX_BURST, MAX_QPS, MIN_QPS, TokenBucket
from virtrigaud_resilience.retry import RetryConfig
from virtrigaud_resilience.timeouts import RPCConfig
from virtrigaud_resilience.windows import CountWindow, TimeWindow

# ---------------------------------------------------------------------------
# Defaults
# ---------------------------------------------------------------------------


def _assert_go_defaults(config: Config) -> None:
    assert (config.rpc.describe, config.rpc.mutating) == (30.0, 240.0)
    assert (config.rpc.validate, config.rpc.task_status) == (10.0, 10.0)
    assert config.retry.max_attempts == 5
    assert config.retry.base_delay == 0.5
    assert config.retry.max_delay == 30.0
    assert config.retry.multiplier == 2.0
    assert config.retry.jitter is True
    assert config.breaker.failure_threshold == 10
    assert config.breaker.reset_timeout == 60.0
    assert config.breaker.half_open_max_calls == 3
    assert config.rate_limit.qps == 10.0
    assert config.rate_limit.burst == 20


def test_constructor_defaults_are_the_go_defaults() -> None:
    _assert_go_defaults(Config())


def test_empty_environment_gives_the_go_defaults() -> None:
    config = Config.from_env({})
    _assert_go_defaults(config)
    assert config == Config()


def test_unrelated_keys_are_ignored() -> None:
    assert Config.from_env({"PATH": "/bin", "HOME": "/root", "RETRYING": "x"}) == Config()


def test_none_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "7")
    monkeypatch.setenv("CB_RESET_SECONDS", "90s")
    config = Config.from_env()
    assert config.retry.max_attempts == 7
    assert config.breaker.reset_timeout == 90.0
    assert config.rpc == RPCConfig()


# ---------------------------------------------------------------------------
# Every key
# ---------------------------------------------------------------------------

# (key, text, path to the attribute, expected value)
EVERY_KEY = [
    ("RPC_TIMEOUT_DESCRIBE", "45s", "rpc.describe", 45.0),
    ("RPC_TIMEOUT_MUTATING", "10m", "rpc.mutating", 600.0),
    ("RPC_TIMEOUT_VALIDATE", "2.5s", "rpc.validate", 2.5),
    ("RPC_TIMEOUT_TASK_STATUS", "750ms", "rpc.task_status", 0.75),
    ("RETRY_MAX_ATTEMPTS", "10", "retry.max_attempts", 10),
    ("RETRY_BASE_DELAY", "100ms", "retry.base_delay", 0.1),
    ("RETRY_MAX_DELAY", "1m30s", "retry.max_delay", 90.0),
    ("RETRY_MULTIPLIER", "1.5", "retry.multiplier", 1.5),
    ("RETRY_JITTER", "false", "retry.jitter", False),
    ("CB_FAILURE_THRESHOLD", "15", "breaker.failure_threshold", 15),
    ("CB_RESET_SECONDS", "120s", "breaker.reset_timeout", 120.0),
    ("CB_HALF_OPEN_MAX_CALLS", "5", "breaker.half_open_max_calls", 5),
    ("RATE_LIMIT_QPS", "20", "rate_limit.qps", 20.0),
    ("RATE_LIMIT_BURST", "50", "rate_limit.burst", 50),
    ("RATE_LIMIT_ADAPTIVE", "true", "rate_limit.adaptive", True),
    ("RETRY_BUDGET", " ratio:0.5 ", "retry_budget.budget", "ratio:0.5"),
    ("RETRY_BUDGET_MIN_PER_SECOND", "0", "retry_budget.min_per_second", 0),
    ("RETRY_BUDGET_TTL", "30s", "retry_budget.ttl", 30.0),
    # window mode (issue 22): the other window keys need a window, which this sets alone
    ("CIRCUIT_BREAKER_WINDOW", "count:100", "breaker.window", CountWindow(100)),
    ("CIRCUIT_BREAKER_MINIMUM_CALLS", "none", "breaker.minimum_calls", None),
    ("CIRCUIT_BREAKER_FAILURE_RATE_THRESHOLD", "0.5", "breaker.failure_rate_threshold", 0.5),
    ("CIRCUIT_BREAKER_SLOW_CALL_DURATION", "None", "breaker.slow_call_duration", None),
    ("CIRCUIT_BREAKER_SLOW_CALL_RATE_THRESHOLD", "1", "breaker.slow_call_rate_threshold", 1.0),
    ("CIRCUIT_BREAKER_MAX_WAIT_IN_HALF_OPEN", "NONE", "breaker.max_wait_in_half_open", None),
]


def _get(config: Config, path: str) -> Any:
    section, field = path.split(".")
    return getattr(getattr(config, section), field)


def test_every_key_is_covered() -> None:
    assert sorted(key for key, *_ in EVERY_KEY) == sorted(ENV_KEYS)
    assert len(ENV_KEYS) == 24


@pytest.mark.parametrize(("key", "text", "path", "expected"), EVERY_KEY)
def test_each_key_sets_its_field_and_nothing_else(
    key: str, text: str, path: str, expected: object
) -> None:
    config = Config.from_env({key: text})
    value = _get(config, path)
    assert value == expected
    assert type(value) is type(expected)
    # Every other field keeps its default.
    default = Config()
    for _, _, other, _ in EVERY_KEY:
        if other != path:
            assert _get(config, other) == _get(default, other), other


def test_all_keys_together() -> None:
    config = Config.from_env({key: text for key, text, _, _ in EVERY_KEY})
    for _, _, path, expected in EVERY_KEY:
        assert _get(config, path) == expected, path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True), ("TRUE", True), ("True", True), ("1", True), (" true\n", True),
        ("false", False), ("FALSE", False), ("False", False), ("0", False), ("\tfalse ", False),
    ],
)
def test_retry_jitter_spellings(text: str, expected: bool) -> None:
    assert Config.from_env({"RETRY_JITTER": text}).retry.jitter is expected


@pytest.mark.parametrize(
    ("key", "text", "path", "expected"),
    [
        ("CB_RESET_SECONDS", "30", "breaker.reset_timeout", 30.0),  # bare number = seconds
        ("CB_RESET_SECONDS", "2m", "breaker.reset_timeout", 120.0),
        ("CB_RESET_SECONDS", "0.5", "breaker.reset_timeout", 0.5),
        ("RPC_TIMEOUT_DESCRIBE", " 30s ", "rpc.describe", 30.0),
        ("RPC_TIMEOUT_MUTATING", "1h2m3.5s", "rpc.mutating", 3723.5),
        ("RETRY_BASE_DELAY", "0", "retry.base_delay", 0.0),  # RetryConfig allows no delay
        ("CB_RESET_SECONDS", "0s", "breaker.reset_timeout", 0.0),  # so does BreakerConfig
        ("RETRY_MAX_ATTEMPTS", " 3 ", "retry.max_attempts", 3),
        ("RETRY_MAX_ATTEMPTS", "+3", "retry.max_attempts", 3),
        ("RETRY_MULTIPLIER", "3", "retry.multiplier", 3.0),
        ("RETRY_MULTIPLIER", "1e1", "retry.multiplier", 10.0),
        ("RATE_LIMIT_QPS", "0.5", "rate_limit.qps", 0.5),
        ("RATE_LIMIT_QPS", "2.5e3", "rate_limit.qps", 2500.0),
        ("RATE_LIMIT_BURST", "1", "rate_limit.burst", 1),
        ("RATE_LIMIT_QPS", "1e9", "rate_limit.qps", 1e9),  # MAX_QPS itself
        ("RATE_LIMIT_QPS", "0.00023", "rate_limit.qps", 0.00023),  # just above MIN_QPS
        ("RATE_LIMIT_BURST", "1048575", "rate_limit.burst", 1_048_575),  # MAX_BURST itself
    ],
)
def test_accepted_spellings(key: str, text: str, path: str, expected: object) -> None:
    assert _get(Config.from_env({key: text}), path) == expected


# ---------------------------------------------------------------------------
# Bad input, for every key
# ---------------------------------------------------------------------------

_GARBAGE = ["NaN", "nan", "inf", "-inf", "", "   ", "abc", "1e400"]
_NON_NEGATIVE_DURATION = [*_GARBAGE, "-1s", "-0.5", "999999999999h", "1x", "1.", "10 s", "1e3s"]
_POSITIVE_DURATION = [*_NON_NEGATIVE_DURATION, "0", "0s", "0ms"]
_POSITIVE_INT = [*_GARBAGE, "-1", "0", "1.5", "2.0", "1_000", "0x10", "5s", "true",
                 "99999999999999999999999"]

BAD = {
    "RPC_TIMEOUT_DESCRIBE": _POSITIVE_DURATION,
    "RPC_TIMEOUT_MUTATING": _POSITIVE_DURATION,
    "RPC_TIMEOUT_VALIDATE": _POSITIVE_DURATION,
    "RPC_TIMEOUT_TASK_STATUS": _POSITIVE_DURATION,
    "RETRY_MAX_ATTEMPTS": _POSITIVE_INT,
    # base 0 is valid (no delay); above the default 30 s cap it is not.
    "RETRY_BASE_DELAY": [*_NON_NEGATIVE_DURATION, "31s", "25h"],
    # zero (or anything) below the default 500 ms base delay is a contradiction;
    # RetryConfig caps any delay at one day.
    "RETRY_MAX_DELAY": [*_NON_NEGATIVE_DURATION, "0", "0s", "100ms", "25h"],
    "RETRY_MULTIPLIER": [*_GARBAGE, "0", "-2", "0.5", "1,5", "2x", "0x10", "1_0"],
    "RETRY_JITTER": [*_GARBAGE, "yes", "no", "on", "2", "-1", "truee", "t", "1.0"],
    "CB_FAILURE_THRESHOLD": _POSITIVE_INT,
    # 0 is valid: BreakerConfig allows an immediate probe (reset_timeout >= 0).
    "CB_RESET_SECONDS": [*_NON_NEGATIVE_DURATION, "400000000h"],
    "CB_HALF_OPEN_MAX_CALLS": _POSITIVE_INT,
    # TokenBucket's limits: MIN_QPS (~2.27e-4) to 1e9; burst up to 1048575.
    "RATE_LIMIT_QPS": [*_GARBAGE, "0", "-1", "0.0", "1e-300", "10/s", "1_0", "-0", "2e9",
                       "1000000001", "0.0002", "1e10"],
    "RATE_LIMIT_BURST": [*_POSITIVE_INT, "1048576", "2000000"],
    "RATE_LIMIT_ADAPTIVE": [*_GARBAGE, "yes", "on", "2", "adaptive"],
    # "" and "off" are valid (no budget); each kind's fields as RetryBudget's.
    "RETRY_BUDGET": ["NaN", "abc", "ratio", "ratio:", "ratio:0", "ratio:11", "ratio:nan",
                     "ratio:-1", "ratio:inf", "ratio:1_0", "ratio:0.2,1", "tokens:0",
                     "tokens:1001", "tokens:10,0", "tokens:10,0.0001", "tokens:10,nan",
                     "quota:-1", "quota:1.5", "quota:500,5", "quota:500,-5,10,1", "bogus:1"],
    "RETRY_BUDGET_MIN_PER_SECOND": [*_GARBAGE, "-1", "1.5", "1_000", "0x10", "true",
                                    "1000001", "99999999999999999999999"],
    "RETRY_BUDGET_TTL": [*_POSITIVE_DURATION, "0.5s", "999ms", "61s", "2m"],
    # window mode (issue 22): the window keys are refused without a window too
    "CIRCUIT_BREAKER_WINDOW": [*_GARBAGE, "count:0", "count:65536", "time:0s", "time:3601s",
                               "time:1.5s", "time:-5s", "count:1.5", "rows:5", "count", "100"],
    "CIRCUIT_BREAKER_MINIMUM_CALLS": [*_POSITIVE_INT, "5"],
    "CIRCUIT_BREAKER_FAILURE_RATE_THRESHOLD": [*_GARBAGE, "0", "-0.5", "1.5", "0.4"],
    "CIRCUIT_BREAKER_SLOW_CALL_DURATION": [*_NON_NEGATIVE_DURATION, "2s"],
    "CIRCUIT_BREAKER_SLOW_CALL_RATE_THRESHOLD": [*_GARBAGE, "0", "-1", "1.01", "0.5"],
    "CIRCUIT_BREAKER_MAX_WAIT_IN_HALF_OPEN": [*_POSITIVE_DURATION, "10s"],
}

BAD_CASES = [(key, text) for key, texts in BAD.items() for text in texts]


def test_bad_cases_cover_every_key() -> None:
    assert set(BAD) == set(ENV_KEYS)


@pytest.mark.parametrize(("key", "text"), BAD_CASES)
def test_bad_value_is_a_value_error_naming_key_and_value(key: str, text: str) -> None:
    with pytest.raises(ValueError, match=rf"\b{key}\b.*{re.escape(repr(text))}"):
        Config.from_env({key: text})


@pytest.mark.parametrize("key", ENV_KEYS)
@pytest.mark.parametrize("value", [5, 1.5, None, b"5", True, ["5"]])
def test_non_str_value_is_a_type_error_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(TypeError, match=rf"^{key} must be a str"):
        Config.from_env({key: value})  # type: ignore[dict-item]


_INT_KEYS = ["RETRY_MAX_ATTEMPTS", "CB_FAILURE_THRESHOLD", "CB_HALF_OPEN_MAX_CALLS",
             "RATE_LIMIT_BURST"]


@pytest.mark.parametrize("key", _INT_KEYS)
@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1" * 5000, "is too large"),
        ("+" + "9" * 4301, "is too large"),
        ("-" + "1" * 5000, "must be an integer >= 1"),
    ],
    ids=["5000 digits", "plus 4301 digits", "minus 5000 digits"],
)
def test_int_with_more_digits_than_int_converts_names_the_key(
    key: str, text: str, reason: str
) -> None:
    # Regression: int() refuses more than
    # sys.get_int_max_str_digits() digits with a ValueError naming no key.
    with pytest.raises(ValueError, match=rf"^{key} {reason}.*{re.escape(repr(text))}$"):
        Config.from_env({key: text})


@pytest.mark.parametrize("key", _INT_KEYS)
def test_int_with_thousands_of_leading_zeros_is_read(key: str) -> None:
    env = Config.from_env({key: "0" * 5000 + "3"}).to_env()
    assert env[key] == "3"


def test_example_message() -> None:
    with pytest.raises(ValueError) as info:
        Config.from_env({"RETRY_MAX_ATTEMPTS": "abc"})
    assert str(info.value) == "RETRY_MAX_ATTEMPTS must be an integer >= 1, got 'abc'"


def test_duration_message_says_why() -> None:
    with pytest.raises(ValueError, match=r"RPC_TIMEOUT_DESCRIBE .*'1x'.*unknown unit 'x'"):
        Config.from_env({"RPC_TIMEOUT_DESCRIBE": "1x"})


def test_contradiction_names_both_keys_and_chains_the_original() -> None:
    with pytest.raises(ValueError) as info:
        Config.from_env({"RETRY_BASE_DELAY": "10s", "RETRY_MAX_DELAY": "5s"})
    message = str(info.value)
    assert "RETRY_BASE_DELAY='10s'" in message
    assert "RETRY_MAX_DELAY='5s'" in message
    assert isinstance(info.value.__cause__, ValueError)
    assert "RetryConfig" in str(info.value.__cause__)


def test_contradiction_with_a_default_names_the_unset_key() -> None:
    with pytest.raises(ValueError) as info:
        Config.from_env({"RETRY_BASE_DELAY": "1m"})
    message = str(info.value)
    assert "RETRY_BASE_DELAY='1m'" in message
    assert "RETRY_MAX_DELAY unset (default 30s)" in message


def test_rejection_in_one_section_does_not_blame_another() -> None:
    with pytest.raises(ValueError) as info:
        Config.from_env({"RETRY_MULTIPLIER": "0.5", "CB_FAILURE_THRESHOLD": "5"})
    assert "RETRY_MULTIPLIER='0.5'" in str(info.value)
    assert "CB_" not in str(info.value)


# ---------------------------------------------------------------------------
# Unknown keys with our prefixes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("RETRY_MAX_ATTEMPT", "RETRY_MAX_ATTEMPTS"),
        ("CB_RESET_TIMEOUT", "CB_RESET_SECONDS"),
        ("RPC_TIMEOUT_CREATE", None),
        ("RATE_LIMIT_QPM", "RATE_LIMIT_QPS"),
    ],
)
def test_unknown_prefixed_key_warns_but_does_not_fail(
    key: str, hint: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="virtrigaud_resilience"):
        config = Config.from_env({key: "garbage", "RETRY_MAX_ATTEMPTS": "4"})
    assert config.retry.max_attempts == 4
    records = [r for r in caplog.records if r.name == "virtrigaud_resilience"]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    assert key in records[0].getMessage()
    if hint is not None:
        assert f"did you mean {hint}" in records[0].getMessage()


def test_known_and_unrelated_keys_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="virtrigaud_resilience"):
        Config.from_env({"RETRY_JITTER": "1", "PATH": "/bin", "CBX": "1", "RETRYING": "x"})
    assert [r for r in caplog.records if r.name == "virtrigaud_resilience"] == []


# ---------------------------------------------------------------------------
# The guide's ConfigMaps
# ---------------------------------------------------------------------------


def _assert_development(config: Config) -> None:
    assert config.rpc == RPCConfig(mutating=600.0)
    assert config.retry.max_attempts == 10
    assert config.retry.base_delay == 0.1
    assert config.retry.max_delay == 30.0
    assert config.retry.multiplier == 2.0
    assert config.retry.jitter is True
    assert config.breaker.failure_threshold == 5
    assert config.breaker.reset_timeout == 30.0
    assert config.breaker.half_open_max_calls == 3
    assert config.rate_limit == RateLimitConfig(qps=10.0, burst=20)


def _assert_production(config: Config) -> None:
    assert config.rpc == RPCConfig(describe=30.0, mutating=240.0, validate=10.0, task_status=10.0)
    assert config.retry.max_attempts == 3
    assert config.retry.base_delay == 1.0
    assert config.retry.max_delay == 60.0
    assert config.retry.multiplier == 2.0
    assert config.retry.jitter is True
    assert config.breaker.failure_threshold == 15
    assert config.breaker.reset_timeout == 120.0
    assert config.breaker.half_open_max_calls == 3
    assert config.rate_limit.qps == 20.0
    assert config.rate_limit.burst == 50


def test_development() -> None:
    _assert_development(Config.development())


def test_production() -> None:
    _assert_production(Config.production())


def test_guide_yaml_parses_to_the_same_configs() -> None:
    pytest.importorskip("yaml")
    _assert_development(Config.from_configmap(DEVELOPMENT_CONFIGMAP))
    _assert_production(Config.from_configmap(PRODUCTION_CONFIGMAP))
    assert Config.from_configmap(DEVELOPMENT_CONFIGMAP) == Config.development()
    assert Config.from_configmap(PRODUCTION_CONFIGMAP) == Config.production()


def test_embedded_dicts_match_the_yaml() -> None:
    yaml = pytest.importorskip("yaml")
    from virtrigaud_resilience import config as config_module

    assert yaml.safe_load(DEVELOPMENT_CONFIGMAP)["data"] == config_module._DEVELOPMENT_DATA
    assert yaml.safe_load(PRODUCTION_CONFIGMAP)["data"] == config_module._PRODUCTION_DATA
    for text in (DEVELOPMENT_CONFIGMAP, PRODUCTION_CONFIGMAP):
        document = yaml.safe_load(text)
        assert document["kind"] == "ConfigMap"
        assert document["metadata"] == {"name": "virtrigaud-config"}


def test_presets_work_without_pyyaml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # makes `import yaml` fail
    _assert_development(Config.development())
    _assert_production(Config.production())
    with pytest.raises(ImportError, match=r"pip install virtrigaud-resilience\[yaml\]"):
        Config.from_configmap(DEVELOPMENT_CONFIGMAP)


# ---------------------------------------------------------------------------
# from_configmap shapes
# ---------------------------------------------------------------------------


def test_configmap_as_dict_whole_or_data_only() -> None:
    data = {"RETRY_MAX_ATTEMPTS": "4", "CB_RESET_SECONDS": "45s"}
    whole = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": data}
    for document in (whole, data):
        config = Config.from_configmap(document)
        assert config.retry.max_attempts == 4
        assert config.breaker.reset_timeout == 45.0


@pytest.mark.parametrize(
    "document",
    [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}},
        {"kind": "ConfigMap", "data": None},
        {"data": {}},
        {},
    ],
)
def test_configmap_without_data_is_the_defaults(document: dict[str, Any]) -> None:
    assert Config.from_configmap(document) == Config()


def test_unquoted_yaml_scalars_are_converted() -> None:
    pytest.importorskip("yaml")
    text = """
data:
  CB_FAILURE_THRESHOLD: 5
  CB_RESET_SECONDS: 30
  RETRY_MULTIPLIER: 1.5
  RETRY_JITTER: no
  RATE_LIMIT_QPS: 20
  RPC_TIMEOUT_DESCRIBE: 1m
  SOMETHING_ELSE: [1, 2]
"""
    config = Config.from_configmap(text)
    assert config.breaker.failure_threshold == 5
    assert config.breaker.reset_timeout == 30.0
    assert config.retry.multiplier == 1.5
    assert config.retry.jitter is False
    assert config.rate_limit.qps == 20.0
    assert config.rpc.describe == 60.0


def test_dict_scalars_are_converted() -> None:
    config = Config.from_configmap(
        {"CB_FAILURE_THRESHOLD": 7, "RETRY_JITTER": False, "RATE_LIMIT_QPS": 2.5}
    )
    assert config.breaker.failure_threshold == 7
    assert config.retry.jitter is False
    assert config.rate_limit.qps == 2.5


@pytest.mark.parametrize(
    ("key", "value", "error", "shown"),
    [
        ("CB_FAILURE_THRESHOLD", 0, ValueError, "'0'"),
        ("CB_FAILURE_THRESHOLD", 2.5, ValueError, "'2.5'"),
        ("CB_FAILURE_THRESHOLD", True, ValueError, "'true'"),
        ("RATE_LIMIT_QPS", float("nan"), ValueError, "'nan'"),
        ("RATE_LIMIT_QPS", float("inf"), ValueError, "'inf'"),
        ("RETRY_MAX_ATTEMPTS", None, TypeError, "None"),
        ("RETRY_MAX_ATTEMPTS", [3], TypeError, "[3]"),
        ("RETRY_MAX_ATTEMPTS", {"a": 1}, TypeError, "{'a': 1}"),
    ],
)
def test_configmap_bad_values_name_the_key(
    key: str, value: object, error: type[Exception], shown: str
) -> None:
    with pytest.raises(error, match=rf"{key}.*{re.escape(shown)}"):
        Config.from_configmap({"data": {key: value}})


class _MustNotBeLookedAt:
    def __str__(self) -> str:
        raise AssertionError("a value of a key not ours was stringified")

    __repr__ = __str__


def test_values_of_keys_not_ours_are_never_looked_at() -> None:
    # Regression: every value was str()'d, so a YAML alias tree under any
    # key ("billion laughs") took hours and an odd object's __str__ could raise.
    config = Config.from_configmap(
        {"data": {"SOMETHING_ELSE": _MustNotBeLookedAt(), "RETRY_MAX_ATTEMPTS": "4"}}
    )
    assert config.retry.max_attempts == 4


def test_keys_that_are_not_str_are_ignored() -> None:
    data = {5: "x", None: _MustNotBeLookedAt(), b"RETRY_MAX_ATTEMPTS": "0", 1.5: [1]}
    assert Config.from_configmap({"data": data}) == Config()


def _laughs(levels: int) -> list[Any]:
    # Each level holds the one below ten times: 10**levels leaves, shared.
    tree: list[Any] = ["lol"] * 10
    for _ in range(levels - 1):
        tree = [tree] * 10
    return tree


def test_billion_laughs_yaml_under_a_key_not_ours_is_cheap() -> None:
    pytest.importorskip("yaml")
    lines = ["data:", "  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        lines.append(f"  {level}: &{level} [" + ", ".join([f"*{previous}"] * 10) + "]")
    lines.append("  RETRY_MAX_ATTEMPTS: '4'")
    # 10**9 leaves under "i": stringified, as before, this never finishes.
    assert Config.from_configmap("\n".join(lines)).retry.max_attempts == 4


@pytest.mark.parametrize("key", ["RETRY_MAX_ATTEMPTS", "RATE_LIMIT_QPS"])
def test_a_huge_value_of_ours_is_shown_short(key: str) -> None:
    # Regression: the TypeError quoted repr(value) whole; 10**6 leaves here.
    with pytest.raises(TypeError, match=rf"^{key} must be a str, got list \[\[\[") as info:
        Config.from_configmap({"data": {key: _laughs(6)}})
    assert len(str(info.value)) < 1000


def test_a_huge_document_that_is_not_a_mapping_is_shown_short() -> None:
    with pytest.raises(TypeError, match=r"^a ConfigMap must be a mapping, got list ") as info:
        Config.from_configmap(_laughs(6))  # type: ignore[arg-type]
    assert len(str(info.value)) < 1000


@pytest.mark.parametrize("key", ["RETRY_MAX_ATTEMPTS", "RATE_LIMIT_BURST", "CB_RESET_SECONDS"])
@pytest.mark.parametrize(
    "value", [10**5000, -(10**5000), 2**63], ids=["1e5000", "-1e5000", "2**63"]
)
def test_an_int_beyond_int64_names_the_key(key: str, value: int) -> None:
    # Regression (found by fuzz/fuzz_configmap.py): str() of an int over 4300
    # digits raised a ValueError naming no key.
    pattern = rf"^{key} is out of range \(beyond Go's int64\), got an int of \d+ bits$"
    with pytest.raises(ValueError, match=pattern):
        Config.from_configmap({"data": {key: value}})


def test_an_int_within_int64_is_read() -> None:
    assert Config.from_configmap({"CB_RESET_SECONDS": 600}).breaker.reset_timeout == 600.0
    with pytest.raises(ValueError, match=r"^CB_RESET_SECONDS .*'9223372036854775807'"):
        Config.from_configmap({"CB_RESET_SECONDS": 2**63 - 1})


@pytest.mark.parametrize("document", [["a"], "- a\n- b\n", 42, "just text"])
def test_configmap_that_is_not_a_mapping(document: Any) -> None:
    if isinstance(document, str):
        pytest.importorskip("yaml")
    with pytest.raises(TypeError, match="ConfigMap must be a mapping"):
        Config.from_configmap(document)


def test_configmap_data_that_is_not_a_mapping() -> None:
    with pytest.raises(TypeError, match="ConfigMap data must be a mapping"):
        Config.from_configmap({"kind": "ConfigMap", "data": ["RETRY_MAX_ATTEMPTS=3"]})


def test_malformed_yaml_is_a_value_error() -> None:
    pytest.importorskip("yaml")
    with pytest.raises(ValueError, match="invalid ConfigMap YAML"):
        Config.from_configmap("data: {RETRY_MAX_ATTEMPTS: [")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[" * 100_000, "nested too deeply"),
        ("data:\n  X: " + "[" * 600 + "]" * 600, "nested too deeply"),
        ("data:\n  X: " + "{a: " * 600 + "1" + "}" * 600, "nested too deeply"),
        ("data:\n  X: 2001-02-30", "day is out of range for month"),
        ("data:\n  RETRY_MAX_ATTEMPTS: " + "1" * 5000, "Exceeds the limit"),
    ],
    ids=["deep flow list", "deep list under a key", "deep mapping", "bad date", "5000 digits"],
)
def test_yaml_that_pyyaml_cannot_build_is_a_value_error(text: str, reason: str) -> None:
    # Regression: PyYAML's RecursionError (found probing) and the ValueError
    # its constructors let through (found by fuzz/fuzz_configmap.py) escaped
    # unexplained.
    pytest.importorskip("yaml")
    with pytest.raises(ValueError, match=rf"^invalid ConfigMap YAML: .*{reason}"):
        Config.from_configmap(text)


def test_configmap_unknown_key_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="virtrigaud_resilience"):
        Config.from_configmap({"data": {"CB_FAILURE_TRESHOLD": "5"}})
    assert any("CB_FAILURE_TRESHOLD" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------
# to_env and the round trip
# ---------------------------------------------------------------------------


def test_to_env_of_the_defaults() -> None:
    assert Config().to_env() == {
        "RPC_TIMEOUT_DESCRIBE": "30s",
        "RPC_TIMEOUT_MUTATING": "4m0s",
        "RPC_TIMEOUT_VALIDATE": "10s",
        "RPC_TIMEOUT_TASK_STATUS": "10s",
        "RETRY_MAX_ATTEMPTS": "5",
        "RETRY_BASE_DELAY": "500ms",
        "RETRY_MAX_DELAY": "30s",
        "RETRY_MULTIPLIER": "2.0",
        "RETRY_JITTER": "true",
        "CB_FAILURE_THRESHOLD": "10",
        "CB_RESET_SECONDS": "1m0s",
        "CB_HALF_OPEN_MAX_CALLS": "3",
        "RATE_LIMIT_QPS": "10.0",
        "RATE_LIMIT_BURST": "20",
        "RATE_LIMIT_ADAPTIVE": "false",
        "RETRY_BUDGET": "",
        "RETRY_BUDGET_MIN_PER_SECOND": "10",
        "RETRY_BUDGET_TTL": "10s",
        "CIRCUIT_BREAKER_WINDOW": "none",
        "CIRCUIT_BREAKER_MINIMUM_CALLS": "none",
        "CIRCUIT_BREAKER_FAILURE_RATE_THRESHOLD": "0.5",
        "CIRCUIT_BREAKER_SLOW_CALL_DURATION": "none",
        "CIRCUIT_BREAKER_SLOW_CALL_RATE_THRESHOLD": "1.0",
        "CIRCUIT_BREAKER_MAX_WAIT_IN_HALF_OPEN": "none",
    }


def test_to_env_of_development() -> None:
    env = Config.development().to_env()
    assert env["RPC_TIMEOUT_MUTATING"] == "10m0s"
    assert env["RETRY_MAX_ATTEMPTS"] == "10"
    assert env["RETRY_BASE_DELAY"] == "100ms"
    assert env["CB_FAILURE_THRESHOLD"] == "5"
    assert env["CB_RESET_SECONDS"] == "30s"


@pytest.mark.parametrize("factory", [Config, Config.development, Config.production])
def test_round_trip_presets(factory: Any) -> None:
    config = factory()
    assert Config.from_env(config.to_env()) == config


def test_round_trip_with_jitter_off_and_odd_values() -> None:
    config = Config(
        rpc=RPCConfig(describe=0.001, mutating=3723.5, validate=1e-9, task_status=86400.0),
        retry=RetryConfig(max_attempts=1, base_delay=0.0, max_delay=0.0, multiplier=1.0,
                          jitter=False),
        breaker=BreakerConfig(failure_threshold=1, reset_timeout=0.25, half_open_max_calls=1),
        rate_limit=RateLimitConfig(qps=0.1, burst=1),
    )
    assert Config.from_env(config.to_env()) == config


_nanos = st.integers(min_value=1, max_value=86_400 * 10**9)


@given(
    rpc=st.tuples(_nanos, _nanos, _nanos, _nanos),
    attempts=st.integers(min_value=1, max_value=1000),
    delays=st.tuples(_nanos, _nanos).map(sorted),
    multiplier=st.floats(min_value=1.0, max_value=100.0),
    jitter=st.booleans(),
    threshold=st.integers(min_value=1, max_value=1000),
    reset=_nanos,
    half_open=st.integers(min_value=1, max_value=100),
    qps=st.floats(min_value=0.01, max_value=1e6),
    burst=st.integers(min_value=1, max_value=10_000),
)
def test_round_trip_property(
    rpc: tuple[int, int, int, int],
    attempts: int,
    delays: list[int],
    multiplier: float,
    jitter: bool,
    threshold: int,
    reset: int,
    half_open: int,
    qps: float,
    burst: int,
) -> None:
    # Durations that are whole nanoseconds (as any Go duration is) round-trip exactly.
    ns = 10**9
    config = Config(
        rpc=RPCConfig(*(n / ns for n in rpc)),
        retry=RetryConfig(max_attempts=attempts, base_delay=delays[0] / ns,
                          max_delay=delays[1] / ns, multiplier=multiplier, jitter=jitter),
        breaker=BreakerConfig(failure_threshold=threshold, reset_timeout=reset / ns,
                              half_open_max_calls=half_open),
        rate_limit=RateLimitConfig(qps=qps, burst=burst),
    )
    env = config.to_env()
    assert set(env) == set(ENV_KEYS)
    assert all(isinstance(v, str) for v in env.values())
    assert Config.from_env(env) == config


def test_window_keys_round_trip() -> None:
    config = Config(breaker=BreakerConfig(
        window=TimeWindow(90), minimum_calls=20, failure_rate_threshold=0.25,
        slow_call_duration=1.5, slow_call_rate_threshold=0.75, max_wait_in_half_open=30))
    env = config.to_env()
    assert env["CIRCUIT_BREAKER_WINDOW"] == "time:1m30s"
    assert Config.from_env(env) == config
    counted = Config(breaker=BreakerConfig(window=CountWindow(50)))
    assert counted.to_env()["CIRCUIT_BREAKER_WINDOW"] == "count:50"
    assert Config.from_env(counted.to_env()) == counted


def test_to_env_drops_what_has_no_key() -> None:
    config = Config(retry=RetryConfig(strategy="full_jitter"))
    assert Config.from_env(config.to_env()).retry.strategy == "exponential"


# ---------------------------------------------------------------------------
# The dataclasses themselves
# ---------------------------------------------------------------------------


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.rpc = RPCConfig()  # type: ignore[misc]


@pytest.mark.parametrize("field", ["rpc", "retry", "breaker", "rate_limit"])
@pytest.mark.parametrize("value", [None, {}, "30s", RateLimitConfig(), RPCConfig()])
def test_config_checks_section_types(field: str, value: object) -> None:
    if type(value) is type(getattr(Config(), field)):
        return  # the right type: nothing to reject
    with pytest.raises(TypeError, match=rf"^Config {field} must be a "):
        Config(**{field: value})  # type: ignore[arg-type]


def test_rate_limit_config_defaults_and_normalisation() -> None:
    assert RateLimitConfig() == RateLimitConfig(qps=10.0, burst=20)
    config = RateLimitConfig(qps=5, burst=3)
    assert type(config.qps) is float and config.qps == 5.0
    assert config.burst == 3


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"qps": 0}, ValueError, r"RateLimitConfig qps must be > 0, got 0"),
        ({"qps": -1.0}, ValueError, r"RateLimitConfig qps must be > 0, got -1\.0"),
        ({"qps": float("nan")}, ValueError, r"RateLimitConfig qps must be finite, got nan"),
        ({"qps": float("inf")}, ValueError, r"RateLimitConfig qps must be finite, got inf"),
        ({"qps": "10"}, TypeError, r"RateLimitConfig qps must be a number, got str '10'"),
        ({"qps": True}, TypeError, r"RateLimitConfig qps must be a number, got bool True"),
        ({"qps": 1e-300}, ValueError, r"RateLimitConfig qps must be >= 0\.000227374 .*got 1e-300$"),
        ({"qps": 2e9}, ValueError, r"RateLimitConfig qps must be <= 1e\+09, got 2000000000\.0$"),
        ({"qps": 10**400}, ValueError, r"RateLimitConfig qps must be finite"),
        ({"qps": None}, TypeError, r"RateLimitConfig qps must be a number, got NoneType None"),
        ({"qps": [10]}, TypeError, r"RateLimitConfig qps must be a number, got list \[10\]"),
        ({"qps": Decimal("10")}, TypeError, r"RateLimitConfig qps must be a number, got Decimal"),
        ({"burst": 0}, ValueError, r"RateLimitConfig burst must be >= 1, got 0"),
        ({"burst": -5}, ValueError, r"RateLimitConfig burst must be >= 1, got -5"),
        ({"burst": 2.0}, TypeError, r"RateLimitConfig burst must be an int, got float 2\.0"),
        ({"burst": True}, TypeError, r"RateLimitConfig burst must be an int, got bool True"),
        ({"burst": 10**30}, ValueError, r"RateLimitConfig burst must be <= 1048575, got 10{30}$"),
        ({"burst": "20"}, TypeError, r"RateLimitConfig burst must be an int, got str '20'"),
        ({"burst": None}, TypeError, r"RateLimitConfig burst must be an int, got NoneType None"),
        (
            {"qps": 0.001, "burst": 1_000_000},
            ValueError,
            r"RateLimitConfig burst / qps \(the refill time\) must be <= 2\.882e\+08 s,"
            r" got burst=1000000, qps=0\.001$",
        ),
    ],
)
def test_rate_limit_config_rejects(
    kwargs: dict[str, Any], error: type[Exception], pattern: str
) -> None:
    with pytest.raises(error, match=pattern):
        RateLimitConfig(**kwargs)


# -- RateLimitConfig is TokenBucket's rule, exactly ----------------------------

# The longest burst TokenBucket takes at MIN_QPS (one token per MAX_INTERVAL_NS).
_MAX_BURST_AT_MIN_QPS = _core.TOKEN_BUCKET_MAX_TAU_NS // _core.TOKEN_BUCKET_MAX_INTERVAL_NS

RATE_LIMIT_LIMITS = [
    (MIN_QPS, 1),
    (MAX_QPS, 1),
    (10.0, MAX_BURST),
    (MAX_QPS, MAX_BURST),
    (MIN_QPS, _MAX_BURST_AT_MIN_QPS),
]
# One step past each limit above.
RATE_LIMIT_BEYOND = [
    (math.nextafter(MIN_QPS, 0.0), 1, r"qps must be >= "),
    (math.nextafter(MAX_QPS, math.inf), 1, r"qps must be <= "),
    (10.0, MAX_BURST + 1, r"burst must be <= "),
    (MIN_QPS, _MAX_BURST_AT_MIN_QPS + 1, r"burst / qps \(the refill time\)"),
]


def test_the_limits_are_what_the_docs_say() -> None:
    # The docstrings quote these numbers; a change in the core must show here.
    assert MAX_QPS == 1e9
    assert MAX_BURST == 1_048_575
    assert 2.27e-4 < MIN_QPS < 2.28e-4
    assert _MAX_BURST_AT_MIN_QPS == 65_536


@pytest.mark.parametrize(("qps", "burst"), RATE_LIMIT_LIMITS)
def test_rate_limit_at_the_limits_is_accepted_everywhere(qps: float, burst: int) -> None:
    config = Config(rate_limit=RateLimitConfig(qps=qps, burst=burst))
    assert (config.rate_limit.qps, config.rate_limit.burst) == (qps, burst)
    env = config.to_env()
    assert Config.from_env(env) == config
    assert Config.from_env({"RATE_LIMIT_QPS": repr(qps), "RATE_LIMIT_BURST": str(burst)}) == config
    bucket = config.rate_limiter_registry().get("vsphere", "prod")
    assert bucket.burst == burst
    TokenBucket(qps, burst)


@pytest.mark.parametrize(("qps", "burst", "reason"), RATE_LIMIT_BEYOND)
def test_rate_limit_one_beyond_is_rejected_everywhere(qps: float, burst: int, reason: str) -> None:
    with pytest.raises(ValueError, match=r"^TokenBucket " + reason):
        TokenBucket(qps, burst)
    with pytest.raises(ValueError, match=r"^RateLimitConfig " + reason):
        RateLimitConfig(qps=qps, burst=burst)
    env = {"RATE_LIMIT_QPS": repr(qps), "RATE_LIMIT_BURST": str(burst)}
    with pytest.raises(ValueError, match=r"^invalid RATE_LIMIT_.*: RateLimitConfig " + reason):
        Config.from_env(env)


def _outcome(build: Any, owner: str) -> tuple[type[Exception] | None, str]:
    try:
        build()
    except (TypeError, ValueError) as exc:
        message = str(exc)
        assert message.startswith(owner + " "), message
        return type(exc), message[len(owner) :]
    return None, ""


_near_limits = st.sampled_from(
    [MIN_QPS, MAX_QPS, math.nextafter(MIN_QPS, 0.0), math.nextafter(MAX_QPS, math.inf),
     0.0, -0.0, -1.0, math.nan, math.inf, -math.inf, 0.001, 0.00364, 1e-300, 2e9]
)
_any_qps = st.one_of(_near_limits, st.floats(), st.integers(), st.floats(1e-5, 1e10), st.none(),
                     st.booleans(), st.text(max_size=3))
_any_burst = st.one_of(
    st.sampled_from([0, 1, MAX_BURST, MAX_BURST + 1, _MAX_BURST_AT_MIN_QPS,
                     _MAX_BURST_AT_MIN_QPS + 1, 10**30, -1]),
    st.integers(-10, 2 * MAX_BURST), st.floats(0, 100), st.booleans(), st.none(),
)


@given(qps=_any_qps, burst=_any_burst)
def test_rate_limit_config_accepts_exactly_what_token_bucket_accepts(qps: Any, burst: Any) -> None:
    config = _outcome(lambda: RateLimitConfig(qps=qps, burst=burst), "RateLimitConfig")
    bucket = _outcome(lambda: TokenBucket(qps, burst), "TokenBucket")
    # The same verdict and the same message, but for the owner's name.
    assert config == bucket


@given(qps=st.one_of(_near_limits, st.floats(1e-6, 1e11)), burst=_any_burst.filter(
    lambda b: isinstance(b, int) and not isinstance(b, bool) and b >= 1))
def test_from_env_rate_limit_accepts_exactly_what_token_bucket_accepts(
    qps: float, burst: int
) -> None:
    env = {"RATE_LIMIT_QPS": repr(qps), "RATE_LIMIT_BURST": str(burst)}
    try:
        TokenBucket(qps, burst)
    except ValueError:
        with pytest.raises(ValueError) as info:
            Config.from_env(env)
        message = str(info.value)
        assert any(key in message and repr(text) in message for key, text in env.items())
    else:
        config = Config.from_env(env)
        assert config.rate_limiter_registry().get("t", "p").burst == burst


@pytest.mark.parametrize(
    ("env", "pattern"),
    [
        ({"RATE_LIMIT_QPS": "2e9"},
         r"^invalid RATE_LIMIT_QPS='2e9': "
         r"RateLimitConfig qps must be <= 1e\+09, got 2000000000\.0$"),
        ({"RATE_LIMIT_QPS": "1000000000.5"}, r"^invalid RATE_LIMIT_QPS='1000000000\.5': "),
        ({"RATE_LIMIT_QPS": "1e-300"},
         r"^invalid RATE_LIMIT_QPS='1e-300': RateLimitConfig qps must be >= 0\.000227374"),
        ({"RATE_LIMIT_QPS": "0.0002"}, r"^invalid RATE_LIMIT_QPS='0\.0002': "),
        ({"RATE_LIMIT_BURST": "2000000"},
         r"^invalid RATE_LIMIT_BURST='2000000': RateLimitConfig burst must be <= 1048575,"),
        ({"RATE_LIMIT_QPS": "0.001", "RATE_LIMIT_BURST": "1000000"},
         r"^invalid RATE_LIMIT_QPS='0\.001', RATE_LIMIT_BURST='1000000': "
         r"RateLimitConfig burst / qps \(the refill time\)"),
    ],
)
def test_from_env_rate_limit_errors_name_the_keys(env: dict[str, str], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern) as info:
        Config.from_env(env)
    # Only the keys given are blamed (an unset key is never the culprit here).
    for key in ("RATE_LIMIT_QPS", "RATE_LIMIT_BURST"):
        assert (key in str(info.value)) == (key in env), key


@pytest.mark.parametrize(
    ("data", "shown"),
    [
        ({"RATE_LIMIT_QPS": 2e9}, "RATE_LIMIT_QPS='2000000000.0'"),
        ({"RATE_LIMIT_QPS": 2_000_000_000}, "RATE_LIMIT_QPS='2000000000'"),
        ({"RATE_LIMIT_BURST": 2_000_000}, "RATE_LIMIT_BURST='2000000'"),
        ({"RATE_LIMIT_QPS": "1e-300"}, "RATE_LIMIT_QPS='1e-300'"),
    ],
)
def test_from_configmap_rate_limit_errors_name_the_key(data: dict[str, Any], shown: str) -> None:
    with pytest.raises(ValueError, match=re.escape(shown)):
        Config.from_configmap({"kind": "ConfigMap", "data": data})


def test_rate_limit_yaml_beyond_the_limit_names_the_key() -> None:
    pytest.importorskip("yaml")
    with pytest.raises(ValueError, match=r"RATE_LIMIT_QPS='2000000000\.0'"):
        Config.from_configmap("data:\n  RATE_LIMIT_QPS: 2.0e+9\n")


def test_retry_and_breaker_config_accessors() -> None:
    config = Config.development()
    assert config.retry_config() is config.retry
    assert config.breaker_config() is config.breaker
    assert isinstance(config.retry_config(), RetryConfig)
    assert isinstance(config.breaker_config(), BreakerConfig)


# ---------------------------------------------------------------------------
# Registries (need the lead's breaker.py / ratelimit.py)
# ---------------------------------------------------------------------------


class _Recorder:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs


def test_breaker_registry_gets_the_breaker_config_and_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # raising=False: the wiring is testable before the registry class exists.
    monkeypatch.setattr(breaker_module, "BreakerRegistry", _Recorder, raising=False)
    config = Config.production()
    clock = object()
    registry: Any = config.breaker_registry(clock=clock)
    assert isinstance(registry, _Recorder)
    assert registry.args == (config.breaker,)
    assert registry.kwargs == {"clock": clock}


def test_rate_limiter_registry_gets_qps_burst_and_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    ratelimit_module = pytest.importorskip("virtrigaud_resilience.ratelimit")
    monkeypatch.setattr(ratelimit_module, "RateLimiterRegistry", _Recorder, raising=False)
    config = Config.production()
    registry: Any = config.rate_limiter_registry()
    assert isinstance(registry, _Recorder)
    assert registry.args == ()
    assert registry.kwargs == {"qps": 20.0, "burst": 50, "clock": None}


def test_real_registries_can_be_built() -> None:
    ratelimit_module = pytest.importorskip("virtrigaud_resilience.ratelimit")
    config = Config.development()
    assert isinstance(config.breaker_registry(), breaker_module.BreakerRegistry)
    assert isinstance(config.rate_limiter_registry(), ratelimit_module.RateLimiterRegistry)


def test_retry_budget_keys_build_one_budget_per_provider() -> None:
    config = Config.from_env({"RETRY_BUDGET": "ratio:0.5", "RETRY_BUDGET_MIN_PER_SECOND": "2",
                              "RETRY_BUDGET_TTL": "20s"})
    registry = config.retry_budget_registry()
    assert registry is not None
    budget = registry.get("vsphere", "prod")
    assert registry.get("vsphere", "prod") is budget
    assert registry.get("vsphere", "dev") is not budget
    assert (budget.kind, budget.provider_type, budget.provider) == ("ratio", "vsphere", "prod")
    assert budget.available == 2 * 20  # the reserve: 2/s over 20 s
    assert Config.from_env({"RETRY_BUDGET": "tokens:10"}).retry_budget_registry().get(
        "a", "b").spec.params == (("max_tokens", 10.0), ("token_ratio", 0.1))
    assert Config.from_env({"RETRY_BUDGET": "quota:500,5,10,1"}).retry_budget.spec() == (
        Config.from_env({"RETRY_BUDGET": "quota:500"}).retry_budget.spec())
    assert Config.from_env({"RETRY_BUDGET": "off"}).retry_budget_registry() is None
    assert Config().retry_budget_registry() is None
