"""Configuration from environment variables and Kubernetes ConfigMaps.

The Go controller reads its resilience settings from environment variables
that usually come from a ConfigMap (the guide's "Configuration Examples").
:class:`Config` reads the same keys with the same syntax, so one ConfigMap
can configure a Go controller and a Python one alike:

=========================  ==========================  ========================
key                        meaning                     default
=========================  ==========================  ========================
RPC_TIMEOUT_DESCRIBE       Describe timeout            30s
RPC_TIMEOUT_MUTATING       Create/Delete/Power/...     4m
RPC_TIMEOUT_VALIDATE       Validate timeout            10s
RPC_TIMEOUT_TASK_STATUS    TaskStatus timeout          10s
RETRY_MAX_ATTEMPTS         calls in all (int >= 1)     5
RETRY_BASE_DELAY           first retry delay           500ms
RETRY_MAX_DELAY            cap on one delay            30s
RETRY_MULTIPLIER           growth per attempt          2.0
RETRY_JITTER               true/false/1/0              true
CB_FAILURE_THRESHOLD       failures that open (int)    10
CB_RESET_SECONDS           open -> half-open after     60s
CB_HALF_OPEN_MAX_CALLS     half-open trial calls       3
RATE_LIMIT_QPS             tokens per second           10
                           (MIN_QPS ~2.27e-4 to 1e9)
RATE_LIMIT_BURST           bucket size (int)           20
                           (1 to 1048575)
RATE_LIMIT_ADAPTIVE        learn the provider's quota  false
                           (true/false/1/0: AdaptiveRate)
RETRY_BUDGET               one per provider: off,      off
                           ratio:0.2, tokens:10,0.1,
                           quota:500 (RetryBudget)
RETRY_BUDGET_MIN_PER_SECOND  ratio's reserve (int >= 0)  10
RETRY_BUDGET_TTL           ratio's window (1s to 60s)  10s
=========================  ==========================  ========================

Durations use Go syntax ("30s", "1m30s", "100ms"); a bare number means
seconds. Every value is validated and a bad one raises ``ValueError`` naming
the key and the value.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import re
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .breaker import BreakerConfig
from .durations import format_duration, parse_duration
from .ratelimit import validate_rate
from .retry import RetryConfig
from .retry_budget import BudgetSpec, parse_budget
from .timeouts import RPCConfig

if TYPE_CHECKING:
    from .breaker import BreakerRegistry
    from .ratelimit import RateLimiterRegistry
    from .retry_budget import RetryBudgetRegistry

__all__ = [
    "DEVELOPMENT_CONFIGMAP",
    "ENV_KEYS",
    "PRODUCTION_CONFIGMAP",
    "Config",
    "RateLimitConfig",
    "RetryBudgetConfig",
]

_LOG = logging.getLogger("virtrigaud_resilience")

#: Keys with these prefixes belong to us; an unknown one is probably a typo.
_PREFIXES = ("RPC_TIMEOUT_", "RETRY_", "CB_", "RATE_LIMIT_", "CIRCUIT_BREAKER_")


# ---------------------------------------------------------------------------
# RateLimitConfig
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RateLimitConfig:
    """Per-provider token bucket settings (the guide's ``RateLimit`` block).

    Attributes:
        qps: tokens added per second (sustained requests per second); a finite
            number in ``[ratelimit.MIN_QPS, ratelimit.MAX_QPS]`` (one token
            per ~73 minutes to 1e9 per second); stored as a float.
        burst: bucket size, the most requests admitted at once; an int in
            ``[1, ratelimit.MAX_BURST]`` (1_048_575).
        adaptive: whether the bucket's rate learns the provider's quota
            (:class:`~virtrigaud_resilience.AdaptiveRate`: CUBIC on the
            provider's throttles, never above ``qps``); a bool.

    The refill time (``burst`` tokens at ``qps`` rounded to whole nanoseconds
    per token) must be at most ``ratelimit.MAX_REFILL_SECONDS`` (~9 years).
    This is :class:`~virtrigaud_resilience.ratelimit.TokenBucket`'s own rule
    (one function checks both), so every ``RateLimitConfig`` builds its
    buckets. A bad value raises ``ValueError`` (``TypeError`` for a wrong
    type) naming the field and value.
    """

    qps: float = 10.0
    burst: int = 20
    adaptive: bool = False

    def __post_init__(self) -> None:
        qps, burst = validate_rate("RateLimitConfig", self.qps, self.burst)
        object.__setattr__(self, "qps", qps)
        object.__setattr__(self, "burst", burst)
        if not isinstance(self.adaptive, bool):
            raise TypeError(f"RateLimitConfig adaptive must be a bool, got "
                            f"{type(self.adaptive).__name__} {self.adaptive!r}")


# ---------------------------------------------------------------------------
# RetryBudgetConfig
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryBudgetConfig:
    """The retry budget each provider gets (``RETRY_BUDGET*``; see
    :class:`~virtrigaud_resilience.RetryBudget`).

    Attributes:
        budget: ``""`` (none, the default), ``"ratio:PERCENT"``,
            ``"tokens:MAX_TOKENS[,TOKEN_RATIO]"`` or
            ``"quota:CAPACITY[,RETRY_COST,TIMEOUT_COST,REFUND]"``
            (:func:`~virtrigaud_resilience.retry_budget.parse_budget`).
        min_per_second: the ratio kind's reserve, retries per second; int >= 0.
        ttl: the ratio kind's window, in seconds within [1, 60].

    A bad value raises ``ValueError`` naming the field and the value.
    """

    budget: str = ""
    min_per_second: int = 10
    ttl: float = 10.0

    def __post_init__(self) -> None:
        self.spec()  # validates all three together

    def spec(self) -> BudgetSpec | None:
        """The budget's description, or None when there is none."""
        if not isinstance(self.budget, str):
            raise TypeError(f"RetryBudgetConfig budget must be a str, "
                            f"got {type(self.budget).__name__} {self.budget!r}")
        try:
            spec = parse_budget(self.budget, self.min_per_second, self.ttl)
        except ValueError as exc:
            raise ValueError(f"RetryBudgetConfig budget={self.budget!r}: {exc}") from None
        if spec is None:  # the other fields must be valid even when unused
            BudgetSpec.ratio(0.2, self.min_per_second, self.ttl)
        return spec


# ---------------------------------------------------------------------------
# Parsing one environment value. Each parser takes (key, text), returns the
# value for the dataclass field, and raises ValueError naming key and text.
# ---------------------------------------------------------------------------

_INT = re.compile(r"[+-]?[0-9]+")
# A decimal float as Go's strconv.ParseFloat reads it, minus nan/inf/hex/"_".
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
#: Digits of 2**63 - 1, the largest Go int64.
_INT64_DIGITS = 19
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})
_DURATION_SYNTAX = "Go syntax such as '30s', '1m30s', '100ms'; a bare number is seconds"


def _parse_go_duration(key: str, text: str, bound: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ValueError(
            f"{key} must be a duration {bound} ({_DURATION_SYNTAX}), got {text!r}: {exc}"
        ) from None


def _positive_duration(key: str, text: str) -> float:
    result = _parse_go_duration(key, text, "> 0")
    if result <= 0:
        raise ValueError(f"{key} must be a duration > 0 ({_DURATION_SYNTAX}), got {text!r}")
    return result


def _non_negative_duration(key: str, text: str) -> float:
    result = _parse_go_duration(key, text, ">= 0")
    if result < 0:
        raise ValueError(f"{key} must be a duration >= 0 ({_DURATION_SYNTAX}), got {text!r}")
    return result


def _positive_int(key: str, text: str) -> int:
    stripped = text.strip()
    # The regex first: int() would also take "1_000" and non-ASCII digits.
    if not _INT.fullmatch(stripped):
        raise ValueError(f"{key} must be an integer >= 1, got {text!r}")
    negative = stripped.startswith("-")
    digits = stripped.lstrip("+-").lstrip("0") or "0"
    # Every integer key's range ends far below Go's int64 (19 digits). Beyond
    # it, say so without int(): it refuses more than
    # sys.get_int_max_str_digits() digits (leading zeros too) with a message
    # that names no key.
    if len(digits) > _INT64_DIGITS:
        if negative:
            raise ValueError(f"{key} must be an integer >= 1, got {text!r}")
        raise ValueError(f"{key} is too large (beyond Go's int64), got {text!r}")
    value = -int(digits) if negative else int(digits)
    if value < 1:
        raise ValueError(f"{key} must be an integer >= 1, got {text!r}")
    return value


def _non_negative_int(key: str, text: str) -> int:
    stripped = text.strip()
    if _INT.fullmatch(stripped) and not stripped.lstrip("+-").lstrip("0"):
        return 0
    try:
        return _positive_int(key, text)
    except ValueError as exc:
        if "too large" in str(exc):
            raise
        raise ValueError(f"{key} must be an integer >= 0, got {text!r}") from None


def _budget_text(key: str, text: str) -> str:
    try:
        parse_budget(text)
    except ValueError as exc:
        raise ValueError(f"{key}={text!r}: {exc}") from None
    return text.strip()


def _finite_float(key: str, text: str, *, positive: bool) -> float:
    bound = "a finite number > 0" if positive else "a finite number"
    stripped = text.strip()
    # The regex first: float() would also take "nan", "inf" and "1_0".
    if not _FLOAT.fullmatch(stripped):
        raise ValueError(f"{key} must be {bound}, got {text!r}")
    result = float(stripped)
    if not math.isfinite(result) or (positive and result <= 0):
        raise ValueError(f"{key} must be {bound}, got {text!r}")
    return result


def _positive_float(key: str, text: str) -> float:
    return _finite_float(key, text, positive=True)


def _any_float(key: str, text: str) -> float:
    # The range (multiplier >= 1) is RetryConfig's rule; its error is
    # re-raised naming the key, so the rule lives in one place. Likewise the
    # upper bounds of every field are the dataclasses' (checked by them).
    return _finite_float(key, text, positive=False)


def _bool(key: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{key} must be one of true, false, 1, 0, got {text!r}")


def _render_bool(value: Any) -> str:
    return "true" if value else "false"


def _render_float(value: Any) -> str:
    # repr() round-trips a float exactly and _FLOAT accepts all its forms.
    return repr(float(value))


# ---------------------------------------------------------------------------
# The window-mode breaker's keys (issue 22): "none" leaves a setting unset.
# ---------------------------------------------------------------------------

_NONE = "none"


def _optional(parse: Callable[[str, str], Any]) -> Callable[[str, str], Any]:
    """``parse``, with "none" (any case) read as None (the setting unset)."""
    def parse_optional(key: str, text: str) -> Any:
        return None if text.strip().lower() == _NONE else parse(key, text)
    return parse_optional


def _window(key: str, text: str) -> Any:
    from .windows import parse_window

    try:
        return parse_window(text)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{key} must be 'count:N', 'time:DURATION' or 'none', got {text!r}: {exc}"
        ) from None


def _render_window(value: Any) -> str:
    if value is None:
        return _NONE
    if hasattr(value, "seconds"):
        return f"time:{format_duration(float(value.seconds))}"
    return f"count:{value.size}"


def _render_optional(render: Callable[[Any], str]) -> Callable[[Any], str]:
    return lambda value: _NONE if value is None else render(value)


@dataclass(frozen=True)
class _Key:
    """One environment key: where its value goes and how it is read and written."""

    name: str
    section: str  # the Config field: "rpc", "retry", "breaker", "rate_limit"
    field: str  # the field of that section's dataclass
    parse: Callable[[str, str], Any]
    render: Callable[[Any], str]


_KEYS: tuple[_Key, ...] = (
    _Key("RPC_TIMEOUT_DESCRIBE", "rpc", "describe", _positive_duration, format_duration),
    _Key("RPC_TIMEOUT_MUTATING", "rpc", "mutating", _positive_duration, format_duration),
    _Key("RPC_TIMEOUT_VALIDATE", "rpc", "validate", _positive_duration, format_duration),
    _Key("RPC_TIMEOUT_TASK_STATUS", "rpc", "task_status", _positive_duration, format_duration),
    _Key("RETRY_MAX_ATTEMPTS", "retry", "max_attempts", _positive_int, str),
    _Key("RETRY_BASE_DELAY", "retry", "base_delay", _non_negative_duration, format_duration),
    _Key("RETRY_MAX_DELAY", "retry", "max_delay", _non_negative_duration, format_duration),
    _Key("RETRY_MULTIPLIER", "retry", "multiplier", _any_float, _render_float),
    _Key("RETRY_JITTER", "retry", "jitter", _bool, _render_bool),
    _Key("CB_FAILURE_THRESHOLD", "breaker", "failure_threshold", _positive_int, str),
    # >= 0 here: BreakerConfig accepts 0 (probe at once), and it has the last word.
    _Key("CB_RESET_SECONDS", "breaker", "reset_timeout", _non_negative_duration, format_duration),
    _Key("CB_HALF_OPEN_MAX_CALLS", "breaker", "half_open_max_calls", _positive_int, str),
    _Key("RATE_LIMIT_QPS", "rate_limit", "qps", _positive_float, _render_float),
    _Key("RATE_LIMIT_BURST", "rate_limit", "burst", _positive_int, str),
    _Key("RATE_LIMIT_ADAPTIVE", "rate_limit", "adaptive", _bool, _render_bool),
    _Key("RETRY_BUDGET", "retry_budget", "budget", _budget_text, str),
    _Key("RETRY_BUDGET_MIN_PER_SECOND", "retry_budget", "min_per_second", _non_negative_int, str),
    _Key("RETRY_BUDGET_TTL", "retry_budget", "ttl", _positive_duration, format_duration),
    # Window mode (issue 22). The ranges are BreakerConfig's; its error is
    # re-raised naming the key.
    _Key("CIRCUIT_BREAKER_WINDOW", "breaker", "window", _optional(_window), _render_window),
    _Key("CIRCUIT_BREAKER_MINIMUM_CALLS", "breaker", "minimum_calls",
         _optional(_positive_int), _render_optional(str)),
    _Key("CIRCUIT_BREAKER_FAILURE_RATE_THRESHOLD", "breaker", "failure_rate_threshold",
         _positive_float, _render_float),
    _Key("CIRCUIT_BREAKER_SLOW_CALL_DURATION", "breaker", "slow_call_duration",
         _optional(_non_negative_duration), _render_optional(format_duration)),
    _Key("CIRCUIT_BREAKER_SLOW_CALL_RATE_THRESHOLD", "breaker", "slow_call_rate_threshold",
         _positive_float, _render_float),
    _Key("CIRCUIT_BREAKER_MAX_WAIT_IN_HALF_OPEN", "breaker", "max_wait_in_half_open",
         _optional(_positive_duration), _render_optional(format_duration)),
)
_BY_NAME: dict[str, _Key] = {key.name: key for key in _KEYS}

#: Every environment key :meth:`Config.from_env` reads, in documentation order.
ENV_KEYS: tuple[str, ...] = tuple(key.name for key in _KEYS)

_SECTIONS: dict[str, type[Any]] = {
    "rpc": RPCConfig,
    "retry": RetryConfig,
    "breaker": BreakerConfig,
    "rate_limit": RateLimitConfig,
    "retry_budget": RetryBudgetConfig,
}


# ---------------------------------------------------------------------------
# The guide's two ConfigMaps (trailing blanks on the guide's lines dropped).
# ---------------------------------------------------------------------------

#: The guide's development ConfigMap: relaxed timeouts, aggressive retries.
DEVELOPMENT_CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: virtrigaud-config
data:
  # Relaxed timeouts for development
  RPC_TIMEOUT_MUTATING: "10m"

  # Aggressive retries for flaky dev environments
  RETRY_MAX_ATTEMPTS: "10"
  RETRY_BASE_DELAY: "100ms"

  # Lower circuit breaker threshold
  CB_FAILURE_THRESHOLD: "5"
  CB_RESET_SECONDS: "30s"
"""

#: The guide's production ConfigMap: strict timeouts, conservative retries.
PRODUCTION_CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: virtrigaud-config
data:
  # Strict timeouts
  RPC_TIMEOUT_MUTATING: "4m"
  RPC_TIMEOUT_DESCRIBE: "30s"

  # Conservative retries
  RETRY_MAX_ATTEMPTS: "3"
  RETRY_BASE_DELAY: "1s"
  RETRY_MAX_DELAY: "60s"

  # Higher circuit breaker threshold
  CB_FAILURE_THRESHOLD: "15"
  CB_RESET_SECONDS: "120s"

  # Rate limiting
  RATE_LIMIT_QPS: "20"
  RATE_LIMIT_BURST: "50"
"""

# The same data as dicts, so development()/production() work without PyYAML.
# tests/test_config.py checks they equal the YAML above.
_DEVELOPMENT_DATA: dict[str, str] = {
    "RPC_TIMEOUT_MUTATING": "10m",
    "RETRY_MAX_ATTEMPTS": "10",
    "RETRY_BASE_DELAY": "100ms",
    "CB_FAILURE_THRESHOLD": "5",
    "CB_RESET_SECONDS": "30s",
}
_PRODUCTION_DATA: dict[str, str] = {
    "RPC_TIMEOUT_MUTATING": "4m",
    "RPC_TIMEOUT_DESCRIBE": "30s",
    "RETRY_MAX_ATTEMPTS": "3",
    "RETRY_BASE_DELAY": "1s",
    "RETRY_MAX_DELAY": "60s",
    "CB_FAILURE_THRESHOLD": "15",
    "CB_RESET_SECONDS": "120s",
    "RATE_LIMIT_QPS": "20",
    "RATE_LIMIT_BURST": "50",
}


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """All resilience settings of a controller; the defaults are the Go defaults.

    Attributes:
        rpc: per-operation timeouts (:class:`RPCConfig`).
        retry: retry and backoff (:class:`RetryConfig`).
        breaker: circuit breaker (:class:`BreakerConfig`).
        rate_limit: per-provider token bucket (:class:`RateLimitConfig`).
        retry_budget: per-provider retry budget (:class:`RetryBudgetConfig`; none by default).

    Build one with :meth:`from_env`, :meth:`from_configmap`,
    :meth:`development`, :meth:`production` or the constructor.
    """

    rpc: RPCConfig = field(default_factory=RPCConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)
    retry_budget: RetryBudgetConfig = field(default_factory=RetryBudgetConfig)

    def __post_init__(self) -> None:
        for name, cls in _SECTIONS.items():
            value = getattr(self, name)
            if not isinstance(value, cls):
                raise TypeError(
                    f"Config {name} must be a {cls.__name__},"
                    f" got {type(value).__name__} {value!r}"
                )

    # -- reading ------------------------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Read the keys listed in the module docstring from ``environ``.

        ``environ`` defaults to ``os.environ``. A missing key keeps its default.
        Values are stripped of surrounding whitespace; durations use Go syntax
        (a bare number is seconds); RETRY_JITTER takes true/false/1/0 in any case.
        A key with one of our prefixes (RPC_TIMEOUT_, RETRY_, CB_, RATE_LIMIT_)
        that is not known is logged as a warning on the
        ``virtrigaud_resilience`` logger and otherwise ignored; other keys are
        ignored silently.

        Raises:
            TypeError: a known key's value is not a ``str``; the message names the key.
            ValueError: a value is malformed or out of range, or the values of
                one section contradict each other (RETRY_BASE_DELAY above
                RETRY_MAX_DELAY); the message names the key(s) and value(s).
        """
        env: Mapping[str, str] = os.environ if environ is None else environ
        texts = _known_texts(env)
        sections: dict[str, Any] = {}
        for section, cls_ in _SECTIONS.items():
            given = {name: text for name, text in texts.items() if _BY_NAME[name].section == section}
            sections[section] = _build_section(section, cls_, given)
        return cls(**sections)

    @classmethod
    def from_configmap(cls, configmap: str | Mapping[str, Any]) -> Config:
        """Read a Kubernetes ConfigMap: YAML text, or an already parsed mapping.

        ``configmap`` is either a whole ConfigMap (a mapping with ``data``, or
        with ``kind: ConfigMap`` and no data) or its ``data`` mapping itself.
        YAML text needs PyYAML (``pip install virtrigaud-resilience[yaml]``).

        Values are read as :meth:`from_env` reads them. Unquoted YAML scalars
        arrive as int, float or bool (``CB_FAILURE_THRESHOLD: 5``,
        ``RETRY_JITTER: yes``); kubectl would refuse them, but we accept them
        and convert: numbers with ``str()`` (so ``CB_RESET_SECONDS: 30`` is
        30 seconds), bools to "true"/"false". Only our keys' values are
        read; other keys' values are never looked at, and keys that are not
        str (YAML ``5:`` or ``~:``) are ignored.

        Raises:
            ImportError: ``configmap`` is text and PyYAML is not installed.
            TypeError: the document or ``data`` is not a mapping, or a known
                key's value is not a str, int, float or bool.
            ValueError: the YAML is malformed, a known key's int is beyond
                Go's int64, or a value is invalid (as in :meth:`from_env`).
                Messages quote at most ~200 characters of a non-str value.
        """
        document = _load_yaml(configmap) if isinstance(configmap, str) else configmap
        return cls.from_env(_configmap_data(document))

    @classmethod
    def development(cls) -> Config:
        """The guide's development ConfigMap (:data:`DEVELOPMENT_CONFIGMAP`).

        Mutating RPCs get 10 minutes, 10 retry attempts from 100 ms, and the
        breaker opens after 5 failures for 30 s; everything else is default.
        Works without PyYAML (the data is also embedded as a dict).
        """
        return cls.from_configmap(_DEVELOPMENT_DATA)

    @classmethod
    def production(cls) -> Config:
        """The guide's production ConfigMap (:data:`PRODUCTION_CONFIGMAP`).

        Mutating RPCs 4 min, Describe 30 s; 3 retry attempts from 1 s up to
        60 s; the breaker opens after 15 failures for 120 s; 20 qps with a
        burst of 50; everything else is default. Works without PyYAML.
        """
        return cls.from_configmap(_PRODUCTION_DATA)

    # -- writing ------------------------------------------------------------

    def to_env(self) -> dict[str, str]:
        """Every key of :data:`ENV_KEYS` with this config's value as a string.

        Durations are Go strings ("4m0s", "500ms"), so ``from_env(to_env())``
        gives back an equal config (durations to the nanosecond). Settings
        with no key (``RetryConfig.strategy``, ``BreakerConfig.failure_predicate``)
        are not written and come back as their defaults.
        """
        return {
            key.name: key.render(getattr(getattr(self, key.section), key.field)) for key in _KEYS
        }

    # -- building the runtime objects ---------------------------------------

    def retry_config(self) -> RetryConfig:
        """The retry settings, for ``retry(config.retry_config(), fn)`` or a policy."""
        return self.retry

    def breaker_config(self) -> BreakerConfig:
        """The circuit breaker settings, for ``CircuitBreaker(..., config)``."""
        return self.breaker

    def breaker_registry(self, clock: Any = None) -> BreakerRegistry:
        """A new ``BreakerRegistry`` creating breakers with :attr:`breaker`.

        ``clock`` (e.g. a ``ManualClock``) is passed on; ``None`` is the
        monotonic clock.
        """
        # Looked up at call time, so a test can substitute the class.
        from .breaker import BreakerRegistry

        return BreakerRegistry(self.breaker, clock=clock)

    def rate_limiter_registry(self, clock: Any = None) -> RateLimiterRegistry:
        """A new ``RateLimiterRegistry``: one bucket per provider with :attr:`rate_limit`.

        ``clock`` (e.g. a ``ManualClock``) is passed on; ``None`` is the
        monotonic clock. Never fails for a valid ``clock``: :class:`RateLimitConfig`
        applies the registry's own rule (``ratelimit.validate_rate``).
        """
        from .ratelimit import RateLimiterRegistry

        return RateLimiterRegistry(
            qps=self.rate_limit.qps, burst=self.rate_limit.burst, clock=clock
        )

    def retry_budget_registry(self, clock: Any = None) -> RetryBudgetRegistry | None:
        """A new registry of one retry budget per provider (:attr:`retry_budget`),
        or None when ``RETRY_BUDGET`` is off. ``clock`` (a ``ManualClock``)
        is passed on."""
        spec = self.retry_budget.spec()
        if spec is None:
            return None
        from .retry_budget import RetryBudgetRegistry

        return RetryBudgetRegistry(spec, clock=clock)


# ---------------------------------------------------------------------------
# from_env / from_configmap helpers
# ---------------------------------------------------------------------------


def _known_texts(env: Mapping[str, str]) -> dict[str, str]:
    """The known keys present in ``env``; warn about unknown keys with our prefixes."""
    texts: dict[str, str] = {}
    for name, text in env.items():
        if name in _BY_NAME:
            if not isinstance(text, str):
                raise TypeError(f"{name} must be a str, got {type(text).__name__} {_show(text)}")
            texts[name] = text
        elif isinstance(name, str) and name.startswith(_PREFIXES):
            _warn_unknown(name)
    return texts


def _warn_unknown(name: str) -> None:
    # A typo'd key would otherwise silently leave the default in force.
    import difflib  # only for a typo's hint: not worth its import time up front

    guess = difflib.get_close_matches(name, ENV_KEYS, n=1)
    hint = f"; did you mean {guess[0]}?" if guess else ""
    _LOG.warning("ignoring unknown configuration key %s%s", name, hint)


def _build_section(section: str, cls: type[Any], given: dict[str, str]) -> Any:
    """Parse ``given`` (key -> text) and construct the section's dataclass."""
    kwargs = {_BY_NAME[name].field: _BY_NAME[name].parse(name, text) for name, text in given.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        # Each value was fine alone; the dataclass found a rule or a
        # combination it rejects. Name the keys, since the user wrote keys.
        raise ValueError(f"invalid {_describe_keys(section, given, exc)}: {exc}") from exc


def _describe_keys(section: str, given: dict[str, str], exc: BaseException) -> str:
    """Name the keys behind ``exc`` with their values.

    E.g. "RETRY_BASE_DELAY='60s', RETRY_MAX_DELAY unset (default 30s)": the
    keys whose field ``exc`` mentions, or else every key of the section given.
    """
    message = str(exc)
    keys = [key for key in _KEYS if key.section == section]
    involved = [key for key in keys if re.search(rf"\b{key.field}\b", message)]
    if not any(key.name in given for key in involved):
        involved = [key for key in keys if key.name in given]
    default = _SECTIONS[section]()
    return ", ".join(
        f"{key.name}={given[key.name]!r}"
        if key.name in given
        else f"{key.name} unset (default {key.render(getattr(default, key.field))})"
        for key in involved
    )


def _load_yaml(text: str) -> Any:
    try:
        # import_module rather than `import yaml`: PyYAML ships no type hints
        # and types-PyYAML is optional; this keeps mypy --strict clean either way.
        yaml: Any = importlib.import_module("yaml")
    except ImportError as exc:
        raise ImportError(
            "reading ConfigMap YAML needs PyYAML: pip install virtrigaud-resilience[yaml]"
        ) from exc
    try:
        return yaml.safe_load(text)
    except RecursionError:
        # PyYAML composes and constructs nodes recursively: "[[[[..." a few
        # thousand deep exhausts the stack.
        raise ValueError("invalid ConfigMap YAML: nested too deeply") from None
    except (yaml.YAMLError, ValueError, OverflowError) as exc:
        # PyYAML's constructors let a bad scalar's own error through: a date
        # "2001-02-30" (ValueError), an int of more digits than int() reads.
        raise ValueError(f"invalid ConfigMap YAML: {exc}") from exc


def _configmap_data(document: Any) -> dict[str, str]:
    """The ``data`` of a ConfigMap (or the mapping itself) as ``from_env`` reads it.

    Our keys' values become strings (see :func:`_configmap_value`). Other
    str keys map to "" (``from_env`` only looks at their names, to warn
    about typos); keys that are not str cannot be ours and are dropped.
    Values that are not ours are never looked at: a YAML alias tree (the
    "billion laughs") would take hours to stringify.
    """
    if not isinstance(document, Mapping):
        raise TypeError(
            f"a ConfigMap must be a mapping, got {type(document).__name__} {_show(document)}"
        )
    data: Any = document
    if "data" in document or document.get("kind") == "ConfigMap":
        # A ConfigMap without data (or with an empty "data:") is valid and empty.
        data = document.get("data") or {}
        if not isinstance(data, Mapping):
            raise TypeError(f"ConfigMap data must be a mapping, got {type(data).__name__}")
    return {
        name: _configmap_value(name, value) if name in _BY_NAME else ""
        for name, value in data.items()
        if isinstance(name, str)
    }


def _configmap_value(name: str, value: Any) -> str:
    """One of our keys' value as text: a str as is, a YAML bool, int or float converted."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, int):
        # Out of range for every key; and str() refuses more than
        # sys.get_int_max_str_digits() digits with a message naming no key.
        if value.bit_length() > 63:
            raise ValueError(
                f"{name} is out of range (beyond Go's int64),"
                f" got an int of {value.bit_length()} bits"
            )
        return str(value)
    if isinstance(value, float):
        return str(value)
    raise TypeError(f"{name} must be a str, got {type(value).__name__} {_show(value)}")


# Shown in messages: a few items of each container, two levels deep.
_SHORT = reprlib.Repr()
_SHORT.maxlevel = 2
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 4
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = 80
_MAX_SHOWN = 200


def _show(value: Any) -> str:
    """``value``'s repr for a message: at most ~200 characters, in bounded time.

    A YAML document can nest aliases so that its full repr is gigabytes long;
    an int past sys.get_int_max_str_digits() digits has none at all.
    """
    try:
        shown = _SHORT.repr(value)
    except ValueError:
        return f"<{type(value).__name__}>"
    return shown if len(shown) <= _MAX_SHOWN else shown[:_MAX_SHOWN] + "..."
