"""virtrigaud-resilience: the Virtrigaud resilience guide's policies at native speed.

Circuit breakers, GCRA token buckets and backoff run in a lock-free C++ core
(``virtrigaud_resilience._core``); the error taxonomy, retries and policy
composition are Python around it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _deprecated, errors, events, testing
from .backoff import STRATEGIES, Backoff
from .breaker import (
    BreakerConfig,
    BreakerMode,
    BreakerRegistry,
    BreakerScope,
    BreakerState,
    CircuitBreaker,
    Permit,
    default_failure_predicate,
)
from .bulkhead import Bulkhead
from .clock import SYSTEM_CLOCK, ManualClock, SystemClock, monotonic
from .conditions import (
    Condition,
    ConditionStatus,
    ConditionType,
    Reason,
    find_condition,
    is_condition_true,
    map_error_to_condition,
    provider_available_condition,
    provider_runtime_ready_condition,
    provisioning_condition,
    ready_condition,
    remove_condition,
    set_condition,
)
from .config import Config, RateLimitConfig
from .durations import format_duration, parse_duration
from .errors import (
    RETRYABLE_TYPES,
    CircuitOpenError,
    ConflictError,
    ErrorType,
    InvalidSpecError,
    NotFoundError,
    NotSupportedError,
    OperationTimeoutError,
    ProviderError,
    QuotaExceededError,
    RateLimitError,
    RetryableError,
    UnauthorizedError,
    UnavailableError,
    classify,
    is_not_found,
    is_retryable,
    is_type,
    new_error,
)
from .policy import Policy, PolicyBuilder
from .ratelimit import RateLimiterRegistry, Reservation, TokenBucket
from .retry import Retrier, RetryConfig, current_attempt, retry, retry_async
from .retry_budget import RetryBudget
from .timeouts import RPCConfig, remaining
from .windows import CountWindow, TimeWindow

__version__ = "0.1.0"

__all__ = [
    "AIMD",
    "AdaptiveBulkhead",
    "AdaptiveRate",
    "AdaptiveSlot",
    "Gradient2",
    "Vegas",
    "Backoff",
    "BreakerConfig",
    "BreakerRegistry",
    "BreakerScope",
    "Bulkhead",
    "Condition",
    "ConditionStatus",
    "ConditionType",
    "Config",
    "Policy",
    "PolicyBuilder",
    "RPCConfig",
    "RateLimitConfig",
    "RateLimiterRegistry",
    "Reason",
    "Retrier",
    "RetryBudget",
    "current_attempt",
    "find_condition",
    "format_duration",
    "is_condition_true",
    "map_error_to_condition",
    "parse_duration",
    "provider_available_condition",
    "provider_runtime_ready_condition",
    "provisioning_condition",
    "ready_condition",
    "remaining",
    "remove_condition",
    "retry",
    "retry_async",
    "set_condition",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpenError",
    "ConflictError",
    "ErrorType",
    "InvalidSpecError",
    "ManualClock",
    "NotFoundError",
    "NotSupportedError",
    "OperationTimeoutError",
    "Permit",
    "ProviderError",
    "QuotaExceededError",
    "RETRYABLE_TYPES",
    "RateLimitError",
    "Reservation",
    "RetryConfig",
    "RetryableError",
    "STRATEGIES",
    "SYSTEM_CLOCK",
    "SystemClock",
    "TokenBucket",
    "UnauthorizedError",
    "UnavailableError",
    "classify",
    "default_failure_predicate",
    "errors",
    "is_not_found",
    "is_retryable",
    "is_type",
    "monotonic",
    "new_error",
    "events",
    "testing",
    "CountWindow",
    "TimeWindow",
    "BreakerMode",
]

if TYPE_CHECKING:
    from . import metrics  # noqa: F401  (not in __all__: it needs prometheus-client)
    from .adaptive_bulkhead import AdaptiveBulkhead, AdaptiveSlot
    from .adaptive_limits import AIMD, Gradient2, Vegas
    from .adaptive_rate import AdaptiveRate
    from .breaker import Guard  # noqa: F401  (deprecated: BreakerScope)


#: Public names imported on first use: the adaptive limits are few callers'
#: and would lengthen every import of the package (CI bounds its import time).
_LAZY_NAMES = {"AdaptiveBulkhead": ".adaptive_bulkhead", "AdaptiveSlot": ".adaptive_bulkhead",
               "AIMD": ".adaptive_limits", "Gradient2": ".adaptive_limits",
               "Vegas": ".adaptive_limits", "AdaptiveRate": ".adaptive_rate"}


def _lazy(name: str) -> Any:
    import importlib

    # metrics needs prometheus-client (an optional extra): import it on first use.
    if name == "metrics":
        return importlib.import_module(".metrics", __name__)
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(_LAZY_NAMES[name], __name__), name)
        globals()[name] = value  # served directly from now on
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: The lazy names, and the old public names, served (with a DeprecationWarning) until 0.3.0.
__getattr__ = _deprecated.module_getattr(__name__, {
    "Guard": f"{__name__}.BreakerScope",
}, otherwise=_lazy)
