"""virtrigaud-resilience: the Virtrigaud resilience guide's policies at native speed.

Circuit breakers, GCRA token buckets and backoff run in a lock-free C++ core
(``virtrigaud_resilience._core``); the error taxonomy, retries and policy
composition are Python around it.
"""

from __future__ import annotations

from . import errors
from .backoff import STRATEGIES, Backoff
from .breaker import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    Guard,
    Permit,
    add_global_listener,
    default_failure_predicate,
    remove_global_listener,
)
from .clock import SYSTEM_CLOCK, ManualClock, SystemClock, monotonic
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
from .ratelimit import Reservation, TokenBucket
from .retry import RetryConfig

__version__ = "0.1.0"

__all__ = [
    "Backoff",
    "BreakerConfig",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpenError",
    "ConflictError",
    "ErrorType",
    "Guard",
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
    "add_global_listener",
    "classify",
    "default_failure_predicate",
    "errors",
    "is_not_found",
    "is_retryable",
    "is_type",
    "monotonic",
    "new_error",
    "remove_global_listener",
]
