"""Fuzz target: Config.from_configmap and Config.from_env (virtrigaud_resilience.config).

Run with atheris (libFuzzer flags pass through), e.g.::

    python fuzz/fuzz_configmap.py -max_total_time=20 /tmp/work fuzz/corpus/fuzz_configmap

or replay files: ``python fuzz/fuzz_configmap.py crash-123``. Needs PyYAML.
``scripts/fuzz.sh`` runs every target for a bounded time.

Each input is used three ways:

1. decoded as UTF-8 (bad bytes replaced), as ConfigMap YAML text:
   ``Config.from_configmap(text)``;
2. the same text read as an env file, one ``KEY=VALUE`` or ``KEY: VALUE``
   per line, values kept verbatim: ``Config.from_env(dict_of_str)``;
3. the raw bytes driving a FuzzedDataProvider that builds a Python document
   (a whole ConfigMap, its ``data`` alone, or not a mapping at all) whose
   values may be any YAML scalar type and more: ``Config.from_configmap(doc)``.

What must hold, else the target raises and libFuzzer reports a crash:

* only ValueError or TypeError escape (ImportError only without PyYAML,
  which this target needs anyway); never anything else, and no hang;
* the message says what was wrong: with every value a str (2), it names a
  key given; for a document (1, 3) it names a key, or says the YAML or the
  document's shape is invalid;
* a Config that is returned works: its rate limiter registry hands out a
  full TokenBucket, its retry settings build a Retrier and a RetryConfig
  equal to themselves, its breaker settings a CircuitBreaker, and
  ``Config.from_env(config.to_env()) == config``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
from collections.abc import Callable
from typing import Any

import atheris
import yaml  # noqa: F401  (imported before instrumenting, so it is instrumented too)
from _instrument import instrument_packages
from virtrigaud_resilience.backoff import Backoff
from virtrigaud_resilience.breaker import BreakerConfig
from virtrigaud_resilience.clock import ManualClock
from virtrigaud_resilience.config import ENV_KEYS, Config
from virtrigaud_resilience.ratelimit import TokenBucket
from virtrigaud_resilience.retry import Retrier, RetryConfig

# Messages that blame the document rather than a key.
_DOCUMENT_ERRORS = (
    "invalid ConfigMap YAML",
    "a ConfigMap must be a mapping",
    "ConfigMap data must be a mapping",
)
# Keys the structured documents use: ours, the ConfigMap's own, a typo, others.
_NAMES = [*ENV_KEYS, "data", "kind", "apiVersion", "metadata", "RETRY_MAX_ATTEMPT", "PATH", ""]
_WRAPPINGS = ("data only", "whole ConfigMap", "data key only", "not a mapping")


class _Formatting(logging.Handler):
    """Formats each record (so building warnings is exercised) and drops it."""

    def emit(self, record: logging.LogRecord) -> None:
        record.getMessage()


def _quiet_logger() -> None:
    # Unknown keys are warned about; format the warnings, print nothing.
    logger = logging.getLogger("virtrigaud_resilience")
    logger.addHandler(_Formatting())
    logger.propagate = False


# ---------------------------------------------------------------------------
# What a returned Config must support
# ---------------------------------------------------------------------------


def check_config(config: Config) -> None:
    """A Config that validated builds every runtime object and round-trips."""
    assert isinstance(config, Config), config
    _check_rate_limit(config)
    _check_retry(config.retry_config())
    breaker_config = config.breaker_config()
    assert isinstance(breaker_config, BreakerConfig), breaker_config
    breaker = config.breaker_registry(clock=ManualClock()).get_or_create("fuzz", "t", "p")
    assert breaker.config is breaker_config
    env = config.to_env()
    assert sorted(env) == sorted(ENV_KEYS), env
    again = Config.from_env(env)
    assert again == config, (config, env, again)


def _check_rate_limit(config: Config) -> None:
    registry = config.rate_limiter_registry(clock=ManualClock())
    bucket = registry.get("fuzz", "p")
    assert isinstance(bucket, TokenBucket), bucket
    assert bucket.burst == config.rate_limit.burst, (bucket, config.rate_limit)
    # The bucket starts full: a whole burst is admitted at once, no more.
    assert bucket.try_acquire(bucket.burst), bucket
    assert not bucket.try_acquire(1), bucket


def _check_retry(retry: RetryConfig) -> None:
    assert isinstance(retry, RetryConfig), retry
    fields = {field.name: getattr(retry, field.name) for field in dataclasses.fields(retry)}
    assert RetryConfig(**fields) == retry, retry
    Retrier(retry, clock=ManualClock())
    backoff = Backoff(retry.base_delay, retry.max_delay, retry.multiplier, retry.jitter,
                      retry.strategy, seed=0)
    # DESIGN.md: capped at max_delay, jitter adds up to 10% after the cap.
    for attempt in (0, 1, 2, retry.max_attempts, 10_000):
        delay = backoff.delay(attempt)
        assert math.isfinite(delay) and 0 <= delay <= retry.max_delay * 1.1 + 1e-9, (
            retry, attempt, delay)


# ---------------------------------------------------------------------------
# Running one reader: only ValueError/TypeError, each saying what was wrong
# ---------------------------------------------------------------------------


def _run(read: Callable[[], Config], blame: Callable[[str], bool]) -> None:
    try:
        config = read()
    except (ValueError, TypeError) as exc:
        message = str(exc)
        assert blame(message), f"{type(exc).__name__} does not say what was wrong: {message!r}"
        return
    check_config(config)


def _names_a_key(message: str, keys: object) -> bool:
    return any(isinstance(key, str) and key in ENV_KEYS and key in message for key in keys)


def _names_a_key_or_the_document(message: str) -> bool:
    return message.startswith(_DOCUMENT_ERRORS) or any(key in message for key in ENV_KEYS)


# ---------------------------------------------------------------------------
# The three uses of one input
# ---------------------------------------------------------------------------


def check_yaml(text: str) -> None:
    """Mode 1: the text as ConfigMap YAML."""
    _run(lambda: Config.from_configmap(text), _names_a_key_or_the_document)


def env_file(text: str) -> dict[str, str]:
    """Mode 2's reading: one KEY=VALUE (or KEY: VALUE) per line, value verbatim."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        equals, colon = line.find("="), line.find(":")
        cut = min((i for i in (equals, colon) if i >= 0), default=-1)
        if cut > 0:
            env[line[:cut].strip()] = line[cut + 1 :]
    return env


def check_env(env: dict[str, str]) -> None:
    """Mode 2: a dict of str, as ``os.environ`` would be."""
    _run(lambda: Config.from_env(env), lambda message: _names_a_key(message, env))


def _scalar(fdp: atheris.FuzzedDataProvider, depth: int) -> Any:
    """A value of any type a YAML document (or a careless caller) might hold."""
    kind = fdp.ConsumeIntInRange(0, 11)
    if kind == 0:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 24))
    if kind == 1:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 10))
    if kind == 2:
        return fdp.ConsumeRegularFloat()
    if kind == 3:
        return fdp.PickValueInList([math.nan, math.inf, -math.inf, -0.0, 1e-300, 2e9])
    if kind == 4:
        return fdp.ConsumeBool()
    if kind == 5:
        return None
    if kind == 6:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 8))
    if kind == 7 and depth < 3:
        return [_scalar(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    if kind == 8 and depth < 3:
        return _mapping(fdp, depth + 1)
    if kind == 9:
        # A number as text, near the limits every key has.
        return fdp.PickValueInList(["0", "1", "-1", "1e9", "1e10", "0.0002", "1048576",
                                    "9" * 30, "1" * 5000, "1s", "-1s", "25h", "nan"])
    if kind == 10:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 4)) * 10 ** fdp.ConsumeIntInRange(0, 5000)
    return fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 24))


def _mapping(fdp: atheris.FuzzedDataProvider, depth: int) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for _ in range(fdp.ConsumeIntInRange(0, 8)):
        if fdp.ConsumeIntInRange(0, 3):
            key: Any = fdp.PickValueInList(_NAMES)
        else:
            key = _scalar(fdp, 3)  # anything hashable YAML might produce
            if isinstance(key, (list, dict)):
                continue
        mapping[key] = _scalar(fdp, depth)
    return mapping


def document(data: bytes) -> Any:
    """Mode 3's document."""
    fdp = atheris.FuzzedDataProvider(data)
    wrapping = fdp.PickValueInList(list(_WRAPPINGS))
    data_ = _mapping(fdp, 0)
    if wrapping == "data only":
        return data_
    if wrapping == "whole ConfigMap":
        return {"apiVersion": "v1", "kind": "ConfigMap", "data": data_}
    if wrapping == "data key only":
        return {"data": data_}
    return _scalar(fdp, 3)  # not a mapping (a str is read as YAML text)


def _keys_within(value: Any, depth: int = 0) -> set[str]:
    """The str keys of every mapping in ``value`` (the data may be nested
    under a "data" key the fuzzer drew itself)."""
    if depth > 4:
        return set()
    if isinstance(value, dict):
        keys = {key for key in value if isinstance(key, str)}
        for item in value.values():
            keys |= _keys_within(item, depth + 1)
        return keys
    if isinstance(value, list):
        return set().union(*(_keys_within(item, depth + 1) for item in value))
    return set()


def check_document(data: bytes) -> None:
    """Mode 3: a built document."""
    doc = document(data)
    keys = ENV_KEYS if isinstance(doc, str) else _keys_within(doc)
    _run(
        lambda: Config.from_configmap(doc),
        lambda message: message.startswith(_DOCUMENT_ERRORS) or _names_a_key(message, keys),
    )


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    check_yaml(text)
    check_env(env_file(text))
    check_document(data)


def main() -> None:
    _quiet_logger()
    instrument_packages("virtrigaud_resilience", "yaml")
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
