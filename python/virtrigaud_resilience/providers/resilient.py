"""``ResilientProvider``: every operation of a :class:`Provider` under the guide's policy.

Each operation runs under a :class:`~virtrigaud_resilience.Policy` built from
a :class:`~virtrigaud_resilience.Config` (default: the guide's production
ConfigMap, :meth:`Config.production`):

- the operation's RPC timeout per attempt (``config.rpc``: Describe 30 s,
  Create/Delete/Power/Reconfigure 4 min, Validate 10 s, TaskStatus 10 s;
  GetCapabilities, which the guide does not name, gets the mutating timeout);
- the provider's circuit breaker and token bucket from shared registries
  (``get_or_create("vm-operations", provider_type, name)`` as in the guide):
  every ResilientProvider, gRPC interceptor and httpx transport built from an
  equal ``Config`` for the same provider shares one breaker and one bucket;
- retries under ``config.retry``, with the errors classified into the
  taxonomy (:func:`~virtrigaud_resilience.classify`) before the breaker and
  the retry see them.

The recommended composition: a ResilientProvider over a provider client
whose channel uses ``aio_interceptors`` (or whose httpx client uses
``AsyncResilientTransport``), built from the same ``Config``. Each attempt is
admitted once, here: the adapter inside it sees that the attempt already
holds the shared breaker's permit and a token of the shared bucket
(:meth:`~virtrigaud_resilience.providers.call_step.CallStep.admit`), takes
neither again and leaves the outcome to this layer, so a call costs one
token, a failed attempt counts once, and a half-open probe reaches the
provider. A breaker or bucket of the adapter's own still applies.

Mutating operations are retried like the others, as the guide's controller
does (Create is idempotent by name in the contract). ``idempotent={"create":
False}`` restricts an operation's retries to errors that prove the call never
reached the provider (:func:`never_sent`, which answers for the whole call):
an open breaker, a token refused before sending, a refused connection.

Metrics (read at scrape time, see :mod:`virtrigaud_resilience.rpcstats`):
``virtrigaud_vm_operations_total{operation,provider_type,provider,outcome}``
per operation, and per attempt ``virtrigaud_provider_rpc_requests_total`` /
``virtrigaud_provider_rpc_latency_seconds`` with ``method`` the operation's
Go name. Pass ``rpc_metrics=False`` when the provider's transport records
those itself (the gRPC interceptors and the httpx transport of this package
do), so that no RPC is counted twice.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .._decorate import is_async_callable
from .._deprecated import renamed_keyword
from ..adaptive_rate import AdaptiveRate
from ..breaker import BreakerRegistry, CircuitBreaker
from ..clock import ManualClock, check_clock, sleeper_for
from ..config import Config
from ..errors import classify
from ..hedging import Hedging
from ..policy import Policy, PolicyBuilder
from ..ratelimit import RateLimiterRegistry, TokenBucket
from ..retry import RetryConfig
from ..retry_budget import RetryBudget, RetryBudgetRegistry
from .._sent import mark_call_reached, mark_never_sent, mark_reached, never_sent
from ..rpcstats import RPCStats, code_for_error, operation_stats, rpc_stats
from ..timeouts import attempt_outcome
from .options import SHARED, AdapterOptions, OptionKeywords
from .contract import (
    OPERATIONS,
    Capabilities,
    CreateRequest,
    CreateResponse,
    DescribeResponse,
    PowerOp,
    Provider,
    TaskStatus,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "BREAKER_NAME",
    "ResilientProvider",
    "mark_call_reached",
    "mark_never_sent",
    "mark_reached",
    "never_sent",
    "shared_breaker",
    "shared_limiter",
    "shared_registries",
    "shared_retry_budget",
]

T = TypeVar("T")

#: The breaker name of the guide's controller: ``GetOrCreate("vm-operations", type, name)``.
BREAKER_NAME = "vm-operations"

# ---------------------------------------------------------------------------
# Shared registries: one breaker and one bucket per provider and config.
# ---------------------------------------------------------------------------

_Key = tuple[Any, Any, "ManualClock | None"]
_REGISTRIES: dict[_Key, tuple[BreakerRegistry, RateLimiterRegistry]] = {}
_REGISTRIES_LOCK = threading.Lock()


def shared_registries(config: Config,
                      clock: ManualClock | None = None) -> tuple[BreakerRegistry,
                                                                 RateLimiterRegistry]:
    """The process-wide breaker and limiter registries for ``config`` and ``clock``.

    Equal ``config.breaker`` and ``config.rate_limit`` (and the same clock)
    give the same registries, so every component built from one ConfigMap
    shares one breaker and one bucket per provider.
    """
    if not isinstance(config, Config):
        raise TypeError(f"config must be a Config, got {type(config).__name__} {config!r}")
    clock = check_clock("shared_registries", clock)
    key: _Key = (config.breaker, config.rate_limit, clock)
    found = _REGISTRIES.get(key)
    if found is None:
        with _REGISTRIES_LOCK:
            found = _REGISTRIES.get(key)
            if found is None:
                found = (config.breaker_registry(clock), config.rate_limiter_registry(clock))
                _REGISTRIES[key] = found
    return found


def shared_breaker(config: Config, provider_type: str, provider: str,
                   clock: ManualClock | None = None) -> CircuitBreaker:
    """The shared ``"vm-operations"`` breaker of this provider (see :func:`shared_registries`)."""
    return shared_registries(config, clock)[0].get_or_create(BREAKER_NAME, provider_type, provider)


def shared_limiter(config: Config, provider_type: str, provider: str,
                   clock: ManualClock | None = None) -> TokenBucket:
    """The shared token bucket of this provider (see :func:`shared_registries`)."""
    return shared_registries(config, clock)[1].get(provider_type, provider)


_BUDGET_REGISTRIES: dict[_Key, RetryBudgetRegistry] = {}


def shared_retry_budget(config: Config, provider_type: str, provider: str,
                        clock: ManualClock | None = None) -> RetryBudget | None:
    """The shared retry budget of this provider when ``config`` turns one on
    (``RETRY_BUDGET``), else None: equal ``config.retry_budget`` (and the
    same clock) give the same budget per provider, as :func:`shared_registries`."""
    if not isinstance(config, Config):
        raise TypeError(f"config must be a Config, got {type(config).__name__} {config!r}")
    clock = check_clock("shared_retry_budget", clock)
    key: _Key = (config.retry_budget, None, clock)
    registry = _BUDGET_REGISTRIES.get(key)
    if registry is None:
        spec = config.retry_budget.spec()
        if spec is None:
            return None
        with _REGISTRIES_LOCK:
            registry = _BUDGET_REGISTRIES.setdefault(key, RetryBudgetRegistry(spec, clock=clock))
    return registry.get(provider_type, provider)


# ---------------------------------------------------------------------------
# Did a failed call reach the provider? (_sent.py: the retry loops ask too)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _UnsentOnlyRetry(RetryConfig):
    """A RetryConfig that retries only errors proving the call was never sent."""

    def should_retry(self, error: BaseException) -> bool:
        return never_sent(error) and super().should_retry(error)


def _unsent_only(config: RetryConfig) -> RetryConfig:
    return _UnsentOnlyRetry(**{f.name: getattr(config, f.name) for f in fields(config)})


# ---------------------------------------------------------------------------
# ResilientProvider
# ---------------------------------------------------------------------------

#: What each operation must return (checked, so a provider's bug is named).
_RESULTS: dict[str, type | None] = {
    "validate": None,
    "get_capabilities": Capabilities,
    "create": CreateResponse,
    "delete": str,
    "power": str,
    "reconfigure": str,
    "describe": DescribeResponse,
    "task_status": TaskStatus,
}


class ResilientProvider:
    """A :class:`Provider` whose every operation runs under a resilience policy.

    Args:
        provider: the provider to guard; an object with the contract's eight
            async methods (a missing or non-async one is a TypeError naming it).
        provider_type: the provider type label (``"vsphere"``); a str.
        name: the provider instance label (``"prod"``); a str.
        config: the settings; None for ``options.config``, whose None is
            :meth:`Config.production` (the guide's production ConfigMap:
            3 attempts from 1 s, breaker 15 / 120 s, 20 qps burst 50).
        options: an :class:`~.options.AdapterOptions` (None: the defaults),
            the same value the provider's transport adapters can take:
            ``breaker`` / ``limiter`` (:data:`~.options.SHARED`: from
            ``breakers`` / ``limiters``, or the shared registries; or an
            object; None is a ValueError here), ``wait`` (wait for a token up to the
            attempt's budget instead of raising RateLimitError, retryable
            with ``retry_after``), ``timeouts`` (per operation's Go name,
            the attempt's budget in seconds or None for none, instead of
            the RPC config's), ``idempotent`` (the operations retried on
            any retryable error, by name ``"create"`` or ``"Create"``; the
            others only on errors that prove the call was never sent,
            :func:`never_sent`; every operation by default), ``clock`` (a
            ManualClock for the policies and the shared registries),
            ``metrics`` (the per-attempt RPC series, see the module docstring).
        hedged: operations whose calls are hedged (``PolicyBuilder.with_hedging``,
            one hedge), by name (``"describe"`` or ``"Describe"``) to the
            delay (``"p95"``, or seconds); each must be idempotent (a
            ValueError otherwise: a hedge sends the call again). None: none.
        breakers, limiters: registries to take the shared breaker and bucket
            from; None for the shared ones (:func:`shared_registries`).
        budgets: a :class:`~virtrigaud_resilience.retry_budget.RetryBudgetRegistry`
            to take the provider's retry budget from; None for the shared one
            of ``config`` (:func:`shared_retry_budget`: none unless
            ``RETRY_BUDGET`` turns it on).
        wait_for_token, rpc_metrics: deprecated names of ``wait`` and
            ``metrics`` (a DeprecationWarning; removed in the next minor release).
        **overrides: any AdapterOptions field as a keyword, overriding that
            field of ``options``.

    Every operation validates its arguments (TypeError / ValueError naming
    them), and a provider returning the wrong type raises TypeError. A
    cancelled call records nothing and gives back its breaker slot.
    """

    def __init__(
        self,
        provider: Provider,
        provider_type: str,
        name: str,
        config: Config | None = None,
        *,
        options: AdapterOptions | None = None,
        breakers: BreakerRegistry | None = None,
        limiters: RateLimiterRegistry | None = None,
        budgets: RetryBudgetRegistry | None = None,
        wait_for_token: bool | None = None,
        rpc_metrics: bool | None = None,
        hedged: Mapping[str, str | float] | None = None,
        **overrides: Unpack[OptionKeywords],
    ) -> None:
        owner = "ResilientProvider"
        for field, value in (("provider_type", provider_type), ("name", name)):
            if not isinstance(value, str):
                raise TypeError(f"{owner} {field} must be a str, got {type(value).__name__} "
                                f"{value!r}")
        merged: dict[str, object] = {**overrides}
        renamed: tuple[tuple[str, str, bool | None], ...] = (
            ("wait_for_token", "wait", wait_for_token), ("rpc_metrics", "metrics", rpc_metrics))
        for old, new, flag in renamed:
            given = cast("bool | None", merged.get(new))
            chosen = renamed_keyword(owner, old, flag, new, given)
            if chosen is not None:
                merged[new] = chosen
        if config is not None:
            merged["config"] = config
        options = AdapterOptions.of(owner, options, merged)
        config = options.resolved_config
        clock = options.clock
        self._methods = _provider_methods(provider)
        self._idempotent = _idempotency(options)
        self._hedged = _hedged_operations(owner, hedged, self._idempotent)
        if breakers is not None and not isinstance(breakers, BreakerRegistry):
            raise TypeError(f"{owner} breakers must be a BreakerRegistry or None, got "
                            f"{type(breakers).__name__} {breakers!r}")
        if limiters is not None and not isinstance(limiters, RateLimiterRegistry):
            raise TypeError(f"{owner} limiters must be a RateLimiterRegistry or None, got "
                            f"{type(limiters).__name__} {limiters!r}")
        if breakers is None or limiters is None:
            shared = shared_registries(config, clock)
            breakers = breakers or shared[0]
            limiters = limiters or shared[1]
        self.provider = provider
        self.provider_type = provider_type
        self.name = name
        self.config = config
        self.options = options
        self.breaker: CircuitBreaker = _present(owner, "breaker", options.breaker) or \
            breakers.get_or_create(BREAKER_NAME, provider_type, name)
        self.limiter: TokenBucket = _present(owner, "limiter", options.limiter) or \
            limiters.get(provider_type, name)
        self._clock = sleeper_for(clock)
        #: The provider's shared retry budget (``RETRY_BUDGET``), or None.
        if budgets is not None and not isinstance(budgets, RetryBudgetRegistry):
            raise TypeError(f"{owner} budgets must be a RetryBudgetRegistry or None, got "
                            f"{type(budgets).__name__} {budgets!r}")
        self.retry_budget = (budgets.get(provider_type, name) if budgets is not None
                             else shared_retry_budget(config, provider_type, name, clock))
        self._policies = {op: self._build_policy(op, clock, options.wait) for op in OPERATIONS}
        self._rpc: dict[str, RPCStats | None] = {
            op: rpc_stats(provider_type, go) if options.metrics else None
            for op, go in OPERATIONS.items()}
        self._outcomes = {op: operation_stats(go, provider_type, name)
                          for op, go in OPERATIONS.items()}

    def _build_policy(self, op: str, clock: ManualClock | None, wait: bool) -> Policy:
        retry = self.config.retry
        if not self._idempotent[op]:
            retry = _unsent_only(retry)
        go = OPERATIONS[op]
        builder = (PolicyBuilder(f"{self.provider_type}/{self.name}:{go}")
                   .with_retry(retry)
                   .with_circuit_breaker(self.breaker)
                   .with_rate_limiter(self.limiter, wait=wait))
        if self.config.rate_limit.adaptive:  # RATE_LIMIT_ADAPTIVE: one controller per bucket
            builder.with_adaptive_rate(AdaptiveRate.for_bucket(self.limiter))
        timeouts = self.options.timeouts
        if go in timeouts:
            builder.with_timeout(per_attempt=timeouts[go])
        else:
            builder.with_rpc_timeout(self.config.rpc, go)
        if op in self._hedged:
            builder.with_hedging(1, self._hedged[op])
        return builder.with_retry_budget(self.retry_budget).with_clock(clock).build()

    def policy(self, operation: str) -> Policy:
        """The policy of ``operation`` (``"describe"`` or ``"Describe"``)."""
        return self._policies[_operation("ResilientProvider.policy", operation)]

    def is_idempotent(self, operation: str) -> bool:
        """Whether ``operation`` is retried on any retryable error."""
        return self._idempotent[_operation("ResilientProvider.is_idempotent", operation)]

    # -- the contract --------------------------------------------------------

    async def validate(self) -> None:
        """The provider's ``validate`` under its policy (Validate timeout, 10 s)."""
        await self._run("validate")

    async def get_capabilities(self) -> Capabilities:
        """The provider's ``get_capabilities`` under its policy."""
        return cast(Capabilities, await self._run("get_capabilities"))

    async def create(self, request: CreateRequest) -> CreateResponse:
        """The provider's ``create`` under its policy (mutating timeout, 4 min)."""
        if not isinstance(request, CreateRequest):
            raise TypeError(f"create request must be a CreateRequest, got "
                            f"{type(request).__name__} {request!r}")
        return cast(CreateResponse, await self._run("create", request))

    async def delete(self, vm_id: str) -> str:
        """The provider's ``delete`` under its policy; the task reference or ""."""
        return cast(str, await self._run("delete", _vm_id("delete", vm_id)))

    async def power(self, vm_id: str, op: PowerOp | str) -> str:
        """The provider's ``power`` under its policy; ``op`` a PowerOp or its value."""
        try:
            power_op = PowerOp(op)
        except ValueError:
            valid = ", ".join(p.value for p in PowerOp)
            raise ValueError(f"power op must be one of {valid}, got {op!r}") from None
        return cast(str, await self._run("power", _vm_id("power", vm_id), power_op))

    async def reconfigure(self, vm_id: str, desired: CreateRequest) -> str:
        """The provider's ``reconfigure`` under its policy."""
        if not isinstance(desired, CreateRequest):
            raise TypeError(f"reconfigure desired must be a CreateRequest, got "
                            f"{type(desired).__name__} {desired!r}")
        return cast(str, await self._run("reconfigure", _vm_id("reconfigure", vm_id), desired))

    async def describe(self, vm_id: str) -> DescribeResponse:
        """The provider's ``describe`` under its policy (Describe timeout, 30 s)."""
        return cast(DescribeResponse, await self._run("describe", _vm_id("describe", vm_id)))

    async def task_status(self, task_ref: str) -> TaskStatus:
        """The provider's ``task_status`` under its policy (TaskStatus timeout, 10 s)."""
        return cast(TaskStatus, await self._run("task_status",
                                                _vm_id("task_status", task_ref, "task_ref")))

    # -- one operation, one attempt --------------------------------------------

    async def _run(self, op: str, *args: object) -> object:
        try:
            result = await self._policies[op].execute_async(self._attempt, op, args)
        except asyncio.CancelledError:
            raise  # a cancellation is no outcome
        except BaseException:
            self._outcomes[op].record(False)
            raise
        self._outcomes[op].record(True)
        expected = _RESULTS[op]
        if expected is None:
            if result is not None:
                raise TypeError(f"{_describe(self.provider)}.{op}() must return None, got "
                                f"{type(result).__name__} {result!r}")
        elif not isinstance(result, expected):
            raise TypeError(f"{_describe(self.provider)}.{op}() must return "
                            f"{expected.__name__}, got {type(result).__name__} {result!r}")
        return result

    async def _attempt(self, op: str, args: tuple[object, ...]) -> object:
        stats = self._rpc[op]
        now = self._clock.now
        start = now()
        try:
            result = await self._methods[op](*args)
        except asyncio.CancelledError as exc:
            if stats is not None:  # cut off by a deadline: DeadlineExceeded, else Canceled
                stats.record(code_for_error(attempt_outcome(exc)), now() - start)
            raise
        except Exception as exc:
            error = mark_reached(classify(exc))  # the provider's own answer
            if stats is not None:
                stats.record(code_for_error(error), now() - start)
            if error is exc:
                raise
            raise error from exc
        if stats is not None:
            stats.record("OK", now() - start)
        return result

    def __repr__(self) -> str:
        return (f"ResilientProvider({_describe(self.provider)}, {self.provider_type!r}, "
                f"{self.name!r}, breaker={self.breaker.state.name})")


def _describe(provider: object) -> str:
    return type(provider).__name__


def _provider_methods(provider: object) -> dict[str, Callable[..., Awaitable[Any]]]:
    """The provider's bound operation methods; TypeError naming what is missing."""
    missing = [op for op in OPERATIONS if not callable(getattr(provider, op, None))]
    if missing:
        raise TypeError(f"ResilientProvider provider {_describe(provider)} is missing the "
                        f"operation(s) {', '.join(missing)} of the Provider contract")
    methods = {op: getattr(provider, op) for op in OPERATIONS}
    sync = [op for op, method in methods.items() if not is_async_callable(method)]
    if sync:
        raise TypeError(f"ResilientProvider provider {_describe(provider)} operation(s) "
                        f"{', '.join(sync)} must be async (coroutine functions)")
    return methods


_BY_GO_NAME = {go: op for op, go in OPERATIONS.items()}


def _hedged_operations(owner: str, hedged: object,
                       idempotent: Mapping[str, bool]) -> dict[str, str | float]:
    """``hedged`` (operation name -> hedging delay) by operation, each one
    idempotent: a hedge sends the call again while the first may still land."""
    if hedged is None:
        return {}
    if not isinstance(hedged, Mapping):
        raise TypeError(f"{owner} hedged must be a mapping of operation to delay or None, "
                        f"got {type(hedged).__name__} {hedged!r}")
    by_op: dict[str, str | float] = {}
    for name, delay in hedged.items():
        op = _operation(f"{owner} hedged", name)
        if not idempotent[op]:
            raise ValueError(f"{owner} hedged names {name!r}, which is not idempotent "
                             f"(options.idempotent): a hedge would send it twice")
        Hedging(f"{owner} hedged {name!r}", 1, delay)  # the delay checked here, named
        by_op[op] = delay
    return by_op


def _operation(owner: str, name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{owner} operation must be a str, got {type(name).__name__} {name!r}")
    op = name if name in OPERATIONS else _BY_GO_NAME.get(name)
    if op is None:
        valid = ", ".join(OPERATIONS)
        raise ValueError(f"{owner} operation must be one of {valid} (or their Go names), "
                         f"got {name!r}")
    return op


def _present(owner: str, field: str, value: T | None | str) -> T | None:
    """An AdapterOptions breaker or limiter for a ResilientProvider: the
    object, or None for the shared one; None (no breaker, no bucket) is a
    ValueError: the guide's policy always has both."""
    if value is None:
        raise ValueError(f"{owner} {field} must be a {field} object or {SHARED!r} (every "
                         f"operation runs under the provider's {field}), got None")
    return None if isinstance(value, str) else value


def _idempotency(options: AdapterOptions) -> dict[str, bool]:
    """Whether each operation is idempotent, per ``options.idempotent``
    (every one by default); ValueError for a name that is no operation."""
    marks = options.idempotent
    if isinstance(marks, (frozenset, Mapping)):
        for name in marks:
            _operation("ResilientProvider idempotent", name)
    result = {}
    for op, go in OPERATIONS.items():
        mark = options.idempotent_mark(go, op)
        result[op] = True if mark is None else mark
    return result


def _vm_id(op: str, value: object, field: str = "vm_id") -> str:
    if not isinstance(value, str):
        raise TypeError(f"{op} {field} must be a str, got {type(value).__name__} {value!r}")
    if not value:
        raise ValueError(f"{op} {field} must not be empty, got {value!r}")
    return value
