"""Retry budgets: retries capped to a share of calls, so retries never multiply an outage.

Three known semantics, each a constructor of :class:`RetryBudget`:

- :meth:`RetryBudget.ratio` -- Finagle's ``RetryBudget`` (Linkerd, Gateway API
  GEP-3388): every call deposits, a retry withdraws ``1 / percent`` of a
  deposit, deposits expire after ``ttl`` seconds, and ``min_per_second``
  retries per second are always allowed (the reserve).
- :meth:`RetryBudget.tokens` -- gRPC A6 ``retryThrottling``: tokens start at
  ``max_tokens``; each retryable failure takes one, each success adds
  ``token_ratio`` (to 3 decimals); no retry while tokens <= ``max_tokens / 2``.
- :meth:`RetryBudget.quota` -- the AWS SDKs' standard-mode retry quota: a
  retry takes its cost from ``capacity`` (a timeout the higher cost), a
  success without retries puts back ``refund``, a success after retries puts
  back what its last retry took.

The counters live in the native core: lock-free, no allocation
(``cpp/include/virtrigaud/retry_budget.hpp``). A budget is shared by every
retry loop given it: ``RetryConfig(budget=...)``,
``PolicyBuilder.with_retry_budget(...)``, or users' own loops through
:meth:`~RetryBudget.deposit`, :meth:`~RetryBudget.try_withdraw` and
:attr:`~RetryBudget.available`.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import _core, _validate, events
from .errors import ErrorType, _is_timeout, is_type
from ._tracking import Census, Counters, Labels, ProviderLabelled, provider_labels
from .clock import ManualClock, check_clock
from .durations import Seconds

__all__ = ["RetryBudget", "BudgetSpec", "RetryBudgetRegistry", "parse_budget", "RATIO", "TOKENS",
           "QUOTA"]

logger = logging.getLogger("virtrigaud_resilience")

#: The kinds, as the native core numbers them.
RATIO, TOKENS, QUOTA = 0, 1, 2
_KIND_NAMES = {RATIO: "ratio", TOKENS: "tokens", QUOTA: "quota"}

# Finagle's units: a deposit is 1000, a withdrawal int(1000 / percent),
# saturated as Scala's Double.toInt saturates.
_SCALE = 1000
_INT_MAX = 2**31 - 1
#: The largest ``min_per_second`` (so the reserve fits the native counters).
MAX_MIN_PER_SECOND = 1_000_000
#: The largest quota capacity, cost or refund.
MAX_QUOTA_UNITS = 10**12
_NS = 1_000_000_000
#: A refused retry is logged at most this often per budget (seconds).
LOG_INTERVAL = 1.0


def _not_nan(owner: str, field: str, value: Any) -> None:
    if isinstance(value, float) and math.isnan(value):
        raise ValueError(f"{owner} {field} must not be NaN, got {value!r}")


def _whole(owner: str, field: str, value: Any, minimum: int, maximum: int) -> int:
    """An int in [minimum, maximum]; a float with no fraction (500.0) is
    accepted as that int; NaN and fractions are a ValueError naming ``field``."""
    _not_nan(owner, field, value)
    if isinstance(value, float) and not isinstance(value, bool):
        if not value.is_integer():
            raise ValueError(f"{owner} {field} must be a whole number, got {value!r}")
        value = int(value)
    return _validate.integer(owner, field, value, minimum, maximum)


def _milli(owner: str, field: str, value: Any, minimum: str, maximum: str) -> int:
    """``value`` truncated to 3 decimals, in thousandths (A6's precision),
    within [minimum, maximum] (decimal strings) after truncation."""
    # Here, not at import: decimal costs a few ms of every import of the
    # package, and only a budget's construction needs it.
    from decimal import ROUND_DOWN, Decimal

    number = _validate.number(owner, field, value)
    # repr() is the shortest string that reads back as the float, so 0.1
    # is 0.1 here, not 0.1000000000000000055...
    truncated = Decimal(repr(number)).quantize(Decimal("0.001"), rounding=ROUND_DOWN)
    if truncated < Decimal(minimum):
        raise ValueError(f"{owner} {field} must be >= {minimum} (3 decimals count), got {value!r}")
    if truncated > Decimal(maximum):
        raise ValueError(f"{owner} {field} must be <= {maximum}, got {value!r}")
    return int(truncated * 1000)


@dataclass(frozen=True)
class BudgetSpec:
    """A validated budget description; :meth:`build` makes budgets of it
    (one per provider, as the registries and ``Config`` do).

    ``native`` holds the core's parameters in its units (see
    :class:`RetryBudget`); ``params`` the ones given, for ``repr``.
    """

    kind: int
    native: tuple[int, int, int, int, int]
    params: tuple[tuple[str, float], ...]

    @classmethod
    def ratio(cls, percent: float = 0.2, min_per_second: int = 10,
              ttl: Seconds = 10.0) -> BudgetSpec:
        """Finagle's semantics; see :meth:`RetryBudget.ratio`."""
        owner = "RetryBudget.ratio"
        _not_nan(owner, "percent", percent)
        share = _validate.positive(owner, "percent", percent, maximum=10.0)
        per_second = _whole(owner, "min_per_second", min_per_second, 0, MAX_MIN_PER_SECOND)
        _not_nan(owner, "ttl", ttl)
        seconds = _validate.seconds(owner, "ttl", ttl, maximum=60.0)
        if seconds < 1.0:
            raise ValueError(f"{owner} ttl must be >= 1 seconds, got {ttl!r}")
        withdrawal = min(int(_SCALE / share), _INT_MAX)
        reserve = round(per_second * seconds * withdrawal)
        return cls(RATIO, (_SCALE, withdrawal, reserve, 0, round(seconds * _NS)),
                   (("percent", share), ("min_per_second", per_second), ("ttl", seconds)))

    @classmethod
    def tokens(cls, max_tokens: float = 10, token_ratio: float = 0.1) -> BudgetSpec:
        """gRPC A6's semantics; see :meth:`RetryBudget.tokens`."""
        owner = "RetryBudget.tokens"
        _not_nan(owner, "max_tokens", max_tokens)
        _validate.positive(owner, "max_tokens", max_tokens, maximum=1000.0)
        max_milli = _milli(owner, "max_tokens", max_tokens, "0.001", "1000")
        _not_nan(owner, "token_ratio", token_ratio)
        _validate.positive(owner, "token_ratio", token_ratio)
        ratio_milli = _milli(owner, "token_ratio", token_ratio, "0.001", "1000")
        return cls(TOKENS, (max_milli, ratio_milli, 0, 0, 0),
                   (("max_tokens", max_milli / 1000), ("token_ratio", ratio_milli / 1000)))

    @classmethod
    def quota(cls, capacity: int = 500, retry_cost: int = 5, timeout_cost: int = 10,
              refund: int = 1) -> BudgetSpec:
        """The AWS SDKs' semantics; see :meth:`RetryBudget.quota`."""
        owner = "RetryBudget.quota"
        values = [_whole(owner, field, value, 0, MAX_QUOTA_UNITS) for field, value in (
            ("capacity", capacity), ("retry_cost", retry_cost), ("timeout_cost", timeout_cost),
            ("refund", refund))]
        return cls(QUOTA, (values[0], values[1], values[2], values[3], 0),
                   tuple(zip(("capacity", "retry_cost", "timeout_cost", "refund"), values)))

    def build(self, *, clock: ManualClock | None = None, provider_type: str = "",
              provider: str = "") -> RetryBudget:
        """A fresh budget of this description."""
        return RetryBudget(self, clock=clock, provider_type=provider_type, provider=provider)

    def describe(self) -> str:
        """``ratio(percent=0.2, min_per_second=10, ttl=10.0)`` and the like."""
        args = ", ".join(f"{name}={value!r}" for name, value in self.params)
        return f"{_KIND_NAMES[self.kind]}({args})"


def _final_counters(budget: RetryBudget) -> tuple[Labels, Counters]:
    """A dropped budget's labels and (refused,)."""
    return (budget.provider_type, budget.provider), (budget.refused,)


#: Every live budget, for the metrics collector (see _tracking.py).
BUDGETS: Census[RetryBudget] = Census(_final_counters)


class RetryBudget(_core.RetryBudget, ProviderLabelled):
    """A cap on retries as a share of calls; build one with :meth:`ratio`,
    :meth:`tokens` or :meth:`quota`. Thread-safe and lock-free; share one
    per provider among every retry loop that calls it.

    In a user's own loop: call :meth:`deposit` as the semantics says (ratio:
    for every call; tokens and quota: for every success) and ask
    :meth:`try_withdraw` before each retry; retry only when it says True.

    Args (of every constructor besides its own):
        clock: a :class:`ManualClock` (the ratio kind's window reads it), or
            None for the monotonic clock.
        provider_type, provider: labels for metrics and events (str).

    Raises:
        ValueError, TypeError: naming the field and the value.
    """

    __slots__ = ("_provider_type", "_provider", "_spec", "_clock", "refused", "_logged_at",
                 "__weakref__")

    #: Retries refused by this budget (a Python int; counted by the retry
    #: loops that asked, for ``virtrigaud_retry_budget_exhausted_total``).
    refused: int

    def __init__(self, spec: BudgetSpec, *, clock: ManualClock | None = None,
                 provider_type: str = "", provider: str = "") -> None:
        _validate.optional_instance("RetryBudget", "spec", spec, BudgetSpec)
        if spec is None:
            raise TypeError("RetryBudget spec must be a BudgetSpec (use RetryBudget.ratio(), "
                            ".tokens() or .quota())")
        clock = check_clock("RetryBudget", clock)
        self._provider_type, self._provider = provider_labels("RetryBudget", provider_type,
                                                              provider)
        a, b, c, d, ttl_ns = spec.native
        super().__init__(spec.kind, a, b, c, d, ttl_ns, clock)
        self._spec = spec
        self._clock = clock
        self.refused = 0
        self._logged_at: float | None = None
        BUDGETS.track(self)

    def __del__(self, _retire: Callable[[RetryBudget], None] = BUDGETS.retire) -> None:
        # Bound at definition: module globals may be gone at interpreter exit.
        _retire(self)

    @classmethod
    def ratio(cls, percent: float = 0.2, min_per_second: int = 10, ttl: Seconds = 10.0, *,
              clock: ManualClock | None = None, provider_type: str = "",
              provider: str = "") -> RetryBudget:
        """Finagle's budget: retries up to ``percent`` of calls over ``ttl``.

        Each call deposits 1000 units; a retry withdraws
        ``int(1000 / percent)`` units when the units deposited minus
        withdrawn over the last ``ttl`` seconds, plus a reserve of
        ``min_per_second * ttl`` withdrawals, cover it. The window is 10
        slots of ``ttl / 10`` aligned to the clock: an amount counts for
        between 0.9 ``ttl`` and ``ttl`` (as Finagle's WindowedAdder).

        Args:
            percent: retries per call, a float in (0, 10] (0.2: one retry
                per five calls).
            min_per_second: retries per second always allowed, an int in
                [0, 1_000_000] (the reserve for clients with few calls).
            ttl: how long a deposit counts, in seconds, within [1, 60]
                (float, timedelta or Go string).
        """
        return BudgetSpec.ratio(percent, min_per_second, ttl).build(
            clock=clock, provider_type=provider_type, provider=provider)

    @classmethod
    def tokens(cls, max_tokens: float = 10, token_ratio: float = 0.1, *,
               provider_type: str = "", provider: str = "") -> RetryBudget:
        """gRPC A6 ``retryThrottling``, exactly (grpc-core's integer milli-tokens).

        Tokens start at ``max_tokens``. Each retryable failure takes one
        token (never below 0) and may be retried only while the tokens left
        are above ``max_tokens / 2``; each success adds ``token_ratio``
        (never above ``max_tokens``).

        Args:
            max_tokens: a number in (0, 1000], kept to 3 decimals.
            token_ratio: a number > 0, kept to 3 decimals (truncated, as
                grpc-core ignores further digits): at least 0.001, at most 1000.
        """
        return BudgetSpec.tokens(max_tokens, token_ratio).build(
            provider_type=provider_type, provider=provider)

    @classmethod
    def quota(cls, capacity: int = 500, retry_cost: int = 5, timeout_cost: int = 10,
              refund: int = 1, *, provider_type: str = "", provider: str = "") -> RetryBudget:
        """The AWS SDKs' standard-mode retry quota (botocore ``retries/quota.py``).

        A retry takes ``retry_cost`` units (``timeout_cost`` after a
        timeout) if that many are left; a success without retries puts back
        ``refund`` units, a success after retries puts back what its last
        retry took; never above ``capacity``.

        Args:
            capacity, retry_cost, timeout_cost, refund: whole numbers in
                [0, 10**12].
        """
        return BudgetSpec.quota(capacity, retry_cost, timeout_cost, refund).build(
            provider_type=provider_type, provider=provider)

    # deposit(), try_withdraw(timeout=False) and available are native: see _core.pyi.

    @property
    def kind(self) -> str:
        """``"ratio"``, ``"tokens"`` or ``"quota"``."""
        return _KIND_NAMES[self._kind]

    @property
    def spec(self) -> BudgetSpec:
        """The description this budget was built from."""
        return self._spec

    def _allows_retry_of(self, error: BaseException) -> bool:
        """:meth:`try_withdraw` for a retry of ``error`` (a timeout costs the
        quota's ``timeout_cost``)."""
        return self.try_withdraw(self._kind == QUOTA and _is_timeout_error(error))

    def _cost_of(self, error: BaseException | None) -> int:
        """What the retry of ``error`` took (quota), to give back on success; else 0."""
        if self._kind != QUOTA or error is None:
            return 0
        return self._retry_cost(_is_timeout_error(error))

    def _refuse(self, retrier_name: str, error: BaseException, attempts: int) -> None:
        """A retry loop asked and was refused: marks ``error`` (the attempt's
        own, raised next) ``budget_exhausted=True`` with a note, counts the
        refusal, tells the listeners and logs at most once per second."""
        try:
            error.budget_exhausted = True  # type: ignore[attr-defined]
        except AttributeError:
            pass  # an exception type with __slots__: the note still says it
        add_note = getattr(error, "add_note", None)
        if add_note is not None:
            add_note(f"virtrigaud_resilience: no retry after {attempts} attempt(s): "
                     f"retry budget {self._spec.describe()} exhausted")
        with _REFUSED_LOCK:
            self.refused += 1
            now = self._clock.now() if self._clock is not None else _core.monotonic_ns() / _NS
            log = self._logged_at is None or now - self._logged_at >= LOG_INTERVAL
            if log:
                self._logged_at = now
        if log:
            logger.warning("retry budget %s of %s/%s exhausted: %s not retried (%d refused so far)",
                           self._spec.describe(), self._provider_type or "-",
                           self._provider or "-", retrier_name, self.refused)
        events._emit_budget_exhausted(self, retrier_name, error)

    def __repr__(self) -> str:
        return f"RetryBudget.{self._spec.describe()}(available={self.available})"


def _is_timeout_error(error: BaseException) -> bool:
    """A Timeout of the taxonomy, or a builtin / asyncio TimeoutError."""
    return is_type(error, ErrorType.TIMEOUT) or _is_timeout(error)


# Guards the refusal counters and log times: taken only on a refusal.
_REFUSED_LOCK = threading.Lock()


def parse_budget(text: str, min_per_second: int = 10, ttl: Seconds = 10.0) -> BudgetSpec | None:
    """A budget from its configuration text (the ``RETRY_BUDGET`` key):
    ``""`` or ``off`` for none, ``ratio:PERCENT`` (``min_per_second`` and
    ``ttl`` complete it), ``tokens:MAX_TOKENS[,TOKEN_RATIO]`` (ratio 0.1 by
    default) or ``quota:CAPACITY[,RETRY_COST,TIMEOUT_COST,REFUND]``.

    Raises:
        ValueError: malformed text, or a value out of its range (the
            message names the field).
    """
    stripped = text.strip()
    if stripped.lower() in ("", "off", "none"):
        return None
    kind, colon, rest = stripped.partition(":")
    kind = kind.strip().lower()
    if not colon or kind not in _PARSERS:
        raise ValueError("must be 'ratio:PERCENT', 'tokens:MAX_TOKENS[,TOKEN_RATIO]', "
                         "'quota:CAPACITY[,RETRY_COST,TIMEOUT_COST,REFUND]' or 'off'")
    parts = [part.strip() for part in rest.split(",")]
    parser, counts = _PARSERS[kind]
    if len(parts) not in counts:
        raise ValueError(f"{kind} takes {' or '.join(map(str, counts))} number(s) after "
                         f"'{kind}:', got {len(parts)}")
    numbers = [_number(kind, part) for part in parts]
    return parser(numbers, min_per_second, ttl)


def _number(kind: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{kind}: {text!r} is not a number") from None
    if math.isnan(value) or math.isinf(value) or "_" in text:
        raise ValueError(f"{kind}: {text!r} is not a finite number")
    return value


_PARSERS: dict[str, tuple[Callable[[list[float], int, Seconds], BudgetSpec], tuple[int, ...]]] = {
    "ratio": (lambda n, per_second, ttl: BudgetSpec.ratio(n[0], per_second, ttl), (1,)),
    "tokens": (lambda n, _, __: BudgetSpec.tokens(*n), (1, 2)),
    # floats here: BudgetSpec.quota takes 500.0 as 500 and refuses 500.5.
    "quota": (lambda n, _, __: BudgetSpec.quota(*n), (1, 4)),  # type: ignore[arg-type]
}


class RetryBudgetRegistry:
    """One budget per (provider_type, provider), created once from ``spec``
    (the registries' rule: each provider has its own). Thread-safe."""

    def __init__(self, spec: BudgetSpec, *, clock: ManualClock | None = None) -> None:
        if not isinstance(spec, BudgetSpec):
            raise TypeError(f"RetryBudgetRegistry spec must be a BudgetSpec, "
                            f"got {type(spec).__name__} {spec!r}")
        self.spec = spec
        self._clock = check_clock("RetryBudgetRegistry", clock)
        self._budgets: dict[tuple[str, str], RetryBudget] = {}
        self._lock = threading.Lock()

    def get(self, provider_type: str, provider: str) -> RetryBudget:
        """The budget for this provider, created on first use."""
        key = (provider_type, provider)
        budget = self._budgets.get(key)
        if budget is None:
            with self._lock:
                budget = self._budgets.get(key)
                if budget is None:
                    budget = self.spec.build(clock=self._clock, provider_type=provider_type,
                                             provider=provider)
                    self._budgets[key] = budget
        return budget
