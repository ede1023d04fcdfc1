"""The demo's world: three faulty providers, a fleet of VMs, and the controller reconciling them.

Each provider is a seeded :class:`~virtrigaud_resilience.providers.fake.FaultInjectingProvider`
(a latency distribution, an error mix across the taxonomy) behind a
:class:`~virtrigaud_resilience.providers.ResilientProvider` built from the
profile's :class:`~virtrigaud_resilience.Config`: the RPC timeouts, one
breaker and one token bucket per provider, the retries. ``vsphere/prod`` has
a scripted outage (connections refused), ``libvirt/lab`` a quota of its own
that answers RateLimit with a Retry-After, ``proxmox/edge`` is slow and flaky:
its describes are hedged at their p95 (``ResilientProvider(hedged=...)``).

With ``slowdown=True`` (``--slowdown``) two more providers join,
:data:`SLOW_PLANS`: one provider of the same seed run twice, fast and
faultless but slow (latency x :data:`SLOWDOWN_FACTOR`) for
:data:`SLOWDOWN_SECONDS` from 30% of the run, without failing a call. The
first, ``openstack/slow``, keeps the profile's consecutive-failure breaker:
it never opens, for nothing fails. The second, ``openstack/slow-window``,
judges a slow-call rate over a window (:data:`WINDOW_BREAKER`): it opens
while the calls are slow and sheds them, probing until they are fast again.

The controller is one asyncio task per VM, as an operator runs one handler
per object: create the VM, poll its task, describe it, and set its ``Ready``
condition (``VMReady``, or what :func:`~virtrigaud_resilience.map_error_to_condition`
makes of the error); then requeue, as kopf and controller-runtime do: after
the resync period on success or a non-retryable error, after the error's
``retry_after`` (an open breaker's time to its next probe, a quota's wait)
when it has one, else after a backoff that grows with the VM's consecutive
failures. Spec changes now and then make it reconfigure a VM.

At the end of the run the controller stops resyncing; a VM whose last
reconcile failed keeps being retried for up to :data:`DRAIN_SECONDS`, so the
final ``Ready`` conditions are what the fleet settled on.

Everything random is seeded (the providers' faults, the controller's resync
jitter and spec changes, the retries' jitter via ``RetryConfig.seed``) and
time is the :class:`~.simloop.SimClock`, so a seed gives one history.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from array import array
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from ..backoff import Backoff
from ..breaker import BreakerConfig, BreakerState, CircuitBreaker
from ..conditions import Condition, map_error_to_condition, ready_condition, set_condition
from ..config import Config, RetryBudgetConfig
from ..errors import ErrorType, is_retryable
from ..policy import HedgedPolicy
from ..providers import (
    OPERATIONS,
    CreateRequest,
    FaultInjectingProvider,
    Latency,
    Outage,
    Quota,
    ResilientProvider,
)
from ..providers.fake import Slowdown
from ..windows import CountWindow
from .simloop import SimClock

__all__ = ["DRAIN_SECONDS", "PLANS", "SLOWDOWN_FACTOR", "SLOWDOWN_SECONDS", "SLOW_PLANS",
           "WINDOW_BREAKER", "Fleet", "ProviderPlan", "ProviderRun", "VM",
           "window_breaker_config"]

#: After the run's end, VMs whose last reconcile failed are retried for up to
#: this many simulated seconds (no more resyncs), so the fleet settles.
DRAIN_SECONDS = 300.0
#: Seconds a create or reconfigure task runs on the providers; polled every TASK_POLL.
TASK_SECONDS = 3.0
TASK_POLL = 1.0
#: The resync period fills this share of each provider's rate limit with the
#: fleet's describes, so the bucket has room for retries and bursts...
DEMAND = 0.75
#: ...but is never shorter than this (seconds): a small fleet stays quiet.
RESYNC_FLOOR = 5.0
#: Chance per successful resync that the VM's spec changes (a reconfigure follows).
SPEC_CHANGE = 0.01
#: Where simulated time starts for the conditions' lastTransitionTime.
EPOCH = datetime(2025, 1, 1, tzinfo=timezone.utc)
#: The demo's ConfigMap turns a retry budget on (``RETRY_BUDGET: ratio:0.1``,
#: ``RETRY_BUDGET_MIN_PER_SECOND: 1``): each provider's retries stay under a
#: tenth of its calls plus one a second, and the summary counts those refused.
DEMO_RETRY_BUDGET = RetryBudgetConfig("ratio:0.1", min_per_second=1)
#: The slow providers' slowdown: every call's latency times this...
SLOWDOWN_FACTOR = 100.0
#: ...for this many simulated seconds.
SLOWDOWN_SECONDS = 300.0
#: The window breaker of ``openstack/slow-window`` (the profile's breaker
#: otherwise): the ConfigMap's ``CIRCUIT_BREAKER_WINDOW: count:100``,
#: ``CIRCUIT_BREAKER_MINIMUM_CALLS: 20``, ``CIRCUIT_BREAKER_SLOW_CALL_DURATION:
#: 1s`` and ``CIRCUIT_BREAKER_SLOW_CALL_RATE_THRESHOLD: 0.5``: it opens when
#: half of the last 100 calls (20 at least) took a second or more.
WINDOW_BREAKER: Mapping[str, Any] = {
    "window": CountWindow(100), "minimum_calls": 20, "slow_call_duration": 1.0,
    "slow_call_rate_threshold": 0.5,
}


def window_breaker_config(profile: BreakerConfig) -> BreakerConfig:
    """``profile``'s breaker settings judging slow calls over a window
    (:data:`WINDOW_BREAKER`); its reset timeout and half-open probes kept."""
    return dataclasses.replace(profile, **WINDOW_BREAKER)


@dataclass(frozen=True)
class ProviderPlan:
    """One provider of the demo and the faults it injects.

    ``outage`` is a window as fractions of the run (``(0.3, 0.6)``: from 30%
    to 60% of the simulated time), connections refused meanwhile. ``hedged``:
    the operations hedged, by name to delay (``ResilientProvider(hedged=...)``).
    ``slowdown_at``: where (a fraction of the run) a slowdown of
    :data:`SLOWDOWN_SECONDS` begins, each call :data:`SLOWDOWN_FACTOR` times
    slower. ``windowed``: the breaker judges slow calls over a window
    (:func:`window_breaker_config`) instead of counting consecutive failures.
    """

    provider_type: str
    name: str
    latency: Latency
    errors: Mapping[ErrorType | str, float]
    outage: tuple[float, float] | None = None
    quota: Quota | None = None
    hedged: Mapping[str, str] | None = None
    slowdown_at: float | None = None
    windowed: bool = False

    @property
    def label(self) -> str:
        """``type/name``, as the view and the summary name the provider."""
        return f"{self.provider_type}/{self.name}"


#: The three providers. Transient errors (Unavailable, Timeout, Retryable)
#: are retried by the policies; the business errors (NotFound, Conflict,
#: InvalidSpec, ...) are not, and show in the VMs' conditions until the next resync.
PLANS: tuple[ProviderPlan, ...] = (
    ProviderPlan("vsphere", "prod", Latency(0.025, 0.15), {
        ErrorType.UNAVAILABLE: 0.01, ErrorType.TIMEOUT: 0.005, ErrorType.RETRYABLE: 0.01,
        ErrorType.NOT_FOUND: 0.001, ErrorType.CONFLICT: 0.001, ErrorType.UNAUTHORIZED: 0.0005,
    }, outage=(0.3, 0.6)),
    ProviderPlan("libvirt", "lab", Latency(0.008, 0.05), {
        ErrorType.UNAVAILABLE: 0.005, ErrorType.RETRYABLE: 0.005,
        ErrorType.CONFLICT: 0.001, ErrorType.QUOTA_EXCEEDED: 0.0005,
    }, quota=Quota(15, 20)),
    ProviderPlan("proxmox", "edge", Latency(0.06, 0.5), {
        ErrorType.UNAVAILABLE: 0.03, ErrorType.TIMEOUT: 0.02, ErrorType.RETRYABLE: 0.03,
        ErrorType.INVALID_SPEC: 0.001, ErrorType.NOT_SUPPORTED: 0.0005,
        ErrorType.NOT_FOUND: 0.001,
    }, hedged={"describe": "p95"}),
)

#: ``--slowdown``'s two providers: one provider (the same seed, so the same
#: latencies) behind the profile's consecutive breaker, and behind a window
#: breaker judging slow calls. It answers in 20 ms, never fails, and for five
#: minutes from 30% of the run answers in 2 s.
SLOW_PLANS: tuple[ProviderPlan, ...] = (
    ProviderPlan("openstack", "slow", Latency(0.02), {}, slowdown_at=0.3),
    ProviderPlan("openstack", "slow-window", Latency(0.02), {}, slowdown_at=0.3, windowed=True),
)


class ProviderRun:
    """One provider during a run: the fake, its ResilientProvider, and what
    the view reads (counters are read from the breaker, the bucket and the
    retriers when asked, never counted on the way)."""

    def __init__(self, plan: ProviderPlan, index: int, clock: SimClock, config: Config,
                 seed: int, span: float, hedging: bool = True) -> None:
        self.plan = plan
        self.label = plan.label
        self.outage = (None if plan.outage is None
                       else (round(plan.outage[0] * span), round(plan.outage[1] * span)))
        outages = () if self.outage is None else (Outage(*self.outage),)
        self.slowdown = (None if plan.slowdown_at is None
                         else (round(plan.slowdown_at * span),
                               round(plan.slowdown_at * span) + SLOWDOWN_SECONDS))
        slowdowns = (() if self.slowdown is None
                     else (Slowdown(*self.slowdown, factor=SLOWDOWN_FACTOR),))
        if plan.windowed:
            config = dataclasses.replace(config, breaker=window_breaker_config(config.breaker))
        # The slow pair is one provider run twice: the same faults' seed.
        fake_seed = seed * 1_000 + (len(PLANS) if plan.slowdown_at is not None else index)
        self.fake = FaultInjectingProvider(
            fake_seed, clock=clock, latency=plan.latency, errors=plan.errors,
            outages=outages, quota=plan.quota, task_duration=TASK_SECONDS,
            slowdowns=slowdowns)
        # Registries of this run (not the process-wide shared ones): a second
        # run in the same process starts from fresh breakers and buckets.
        self.resilient = ResilientProvider(
            self.fake, plan.provider_type, plan.name, config, clock=clock,
            breakers=config.breaker_registry(clock), limiters=config.rate_limiter_registry(clock),
            budgets=config.retry_budget_registry(clock), wait=True,
            hedged=plan.hedged if hedging else None)
        self.breaker: CircuitBreaker = self.resilient.breaker
        self._retriers = [self.resilient.policy(op).retrier for op in OPERATIONS]
        #: (simulated time, state entered), in order.
        self.transitions: list[tuple[float, BreakerState]] = []
        self.breaker.add_listener(
            lambda _b, _old, new: self.transitions.append((clock.now(), new)))
        #: Seconds each successful operation took, as the controller saw it
        #: (token waits, retries and backoff included).
        self.latencies = array("d")
        #: The same, of the describes alone (the operation the demo hedges).
        self.describe_latencies = array("d")
        #: VMs whose Ready condition is True now, of ``vms``.
        self.ready = 0
        self.vms = 0
        #: How often a VM's Ready condition changed to each reason.
        self.reasons_set: Counter[str] = Counter()

    @property
    def calls(self) -> int:
        """Calls the policies let through to the provider (refused connections included)."""
        return sum(self.fake.calls.values())

    @property
    def admitted(self) -> int:
        """Calls the breaker admitted whose outcome is recorded."""
        return self.breaker.successes + self.breaker.failures_total

    @property
    def rate_limited(self) -> int:
        """Calls that had to wait for a token of our bucket (or were refused one)."""
        bucket = self.resilient.limiter
        return bucket.reserved + bucket.rejected

    @property
    def quota_answers(self) -> int:
        """RateLimit answers of the provider's own quota."""
        return self.fake.injected[ErrorType.RATE_LIMIT]

    @property
    def retries(self) -> int:
        """Retries begun by this provider's policies."""
        return sum(retrier.retries for retrier in self._retriers)

    @property
    def hedges(self) -> int:
        """Hedges this provider's policies sent (0 when none is hedged)."""
        return sum(policy.hedging.hedges for policy in map(self.resilient.policy, OPERATIONS)
                   if isinstance(policy, HedgedPolicy))

    def describe_p99(self) -> float:
        """The p99 in seconds of the successful describes (0 before the first)."""
        ordered = sorted(self.describe_latencies)
        return _quantile(ordered, 0.99) if ordered else 0.0

    @property
    def retries_refused(self) -> int:
        """Retries the provider's retry budget refused (0 without one)."""
        budget = self.resilient.retry_budget
        return budget.refused if budget is not None else 0

    def latency_quantiles(self, last: int | None = None) -> tuple[float, float] | None:
        """(p50, p99) in seconds of the successful operations (the ``last``
        ones, or all); None before the first."""
        values = self.latencies if last is None else self.latencies[-last:]
        if not values:
            return None
        ordered = sorted(values)
        return _quantile(ordered, 0.50), _quantile(ordered, 0.99)

    def summary(self, last: int | None = None) -> dict[str, Any]:
        """This provider's totals (JSON-ready; the same for the same seed);
        the latency quantiles over the ``last`` operations, or all."""
        quantiles = self.latency_quantiles(last) or (0.0, 0.0)
        return {
            "provider": self.label,
            "breaker": self.breaker.state.name.lower(),
            "calls": self.calls,
            "admitted": self.admitted,
            "rejected_by_breaker": self.breaker.rejected,
            "rate_limited": self.rate_limited,
            "quota_rate_limit_answers": self.quota_answers,
            "rate_qps": round(self.resilient.limiter.qps, 3),
            "retries": self.retries,
            "retries_refused_by_budget": self.retries_refused,
            "breaker_failures": self.breaker.failures_total,
            "injected": {kind.value: n for kind, n in sorted(self.fake.injected.items())},
            "p50_ms": round(quantiles[0] * 1e3, 3),
            "p99_ms": round(quantiles[1] * 1e3, 3),
            "describe_p99_ms": round(self.describe_p99() * 1e3, 3),
            "describes": len(self.describe_latencies),
            "hedged": dict(self.plan.hedged or {}),
            "hedges": self.hedges,
            "outage": list(self.outage) if self.outage else None,
            "slowdown": list(self.slowdown) if self.slowdown else None,
            "breaker_window": self.breaker.windowed,
            "slow_calls": self.breaker.slow_calls,
            "quota_qps": self.plan.quota.qps if self.plan.quota else None,
            "transitions": [{"t": round(t, 3), "to": state.name.lower()}
                            for t, state in self.transitions],
            "vms": self.vms,
            "ready": self.ready,
            "ready_reasons_set": dict(sorted(self.reasons_set.items())),
        }


def _quantile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank quantile of sorted values."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(eq=False)
class VM:
    """A VirtualMachine object and its status, as the controller holds it."""

    name: str
    provider: ProviderRun
    cpus: int = 2
    id: str = ""
    task: str = ""
    configured_cpus: int = 2
    conditions: list[Condition] = field(default_factory=list)
    ready_reason: str = ""
    ready: bool = False
    failures: int = 0


class Fleet:
    """The providers, the VMs and the controller of one run.

    Args:
        clock: the run's SimClock (its loop must be running when :meth:`run` is awaited).
        config: the profile (``Config.production()`` or ``.development()``).
        vms: how many VMs, spread evenly over the providers.
        seed: seeds everything random.
        span: simulated seconds of the run (the drain comes after).
        hedging: False: the plans' hedged operations are not hedged (the
            replay that the summary compares the hedged describes with).
        slowdown: True: :data:`SLOW_PLANS` join :data:`PLANS`.
    """

    def __init__(self, clock: SimClock, config: Config, vms: int, seed: int,
                 span: float, hedging: bool = True, slowdown: bool = False) -> None:
        self.clock = clock
        self.span = span
        self.seed = seed
        config = dataclasses.replace(config, retry=config.retry.replace(seed=seed))
        if config.retry_budget.spec() is None:  # the demo's ConfigMap adds RETRY_BUDGET
            config = dataclasses.replace(config, retry_budget=DEMO_RETRY_BUDGET)
        self.config = config
        plans = PLANS + SLOW_PLANS if slowdown else PLANS
        self.providers = [ProviderRun(plan, i, clock, config, seed, span, hedging)
                          for i, plan in enumerate(plans)]
        self.vms = [VM(f"{self.providers[i % len(plans)].plan.provider_type}-vm-{i:04d}",
                       self.providers[i % len(plans)]) for i in range(vms)]
        for vm in self.vms:
            vm.provider.vms += 1
        self._rng = random.Random(seed)
        retry = config.retry
        self._backoff = Backoff(retry.base_delay, retry.max_delay, retry.multiplier,
                                retry.jitter, seed=seed)
        qps = config.rate_limit.qps
        #: The resync period (see DEMAND and RESYNC_FLOOR).
        self.resync = max(RESYNC_FLOOR, max(p.vms for p in self.providers) / (DEMAND * qps))
        self.done = False

    @property
    def ready(self) -> int:
        """VMs whose Ready condition is True now."""
        return sum(p.ready for p in self.providers)

    @property
    def calls(self) -> int:
        """Calls the policies let through to the providers, so far."""
        return sum(p.calls for p in self.providers)

    async def run(self) -> None:
        """Reconciles every VM until the end of the run and the drain."""
        tasks = [asyncio.ensure_future(self._run_vm(vm)) for vm in self.vms]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            self.done = True

    async def _run_vm(self, vm: VM) -> None:
        clock = self.clock
        end, hard_end = self.span, self.span + DRAIN_SECONDS
        while True:
            delay = await self._reconcile(vm)
            now = clock.now()
            if now >= hard_end or (now >= end and vm.ready):
                return
            await asyncio.sleep(delay)

    async def _reconcile(self, vm: VM) -> float:
        """One reconcile of ``vm``; returns the seconds until the next one."""
        provider = vm.provider
        resilient = provider.resilient
        clock = self.clock
        try:
            if not vm.id:
                start = clock.now()
                created = await resilient.create(CreateRequest(vm.name, cpus=vm.cpus))
                provider.latencies.append(clock.now() - start)
                vm.id, vm.task, vm.configured_cpus = created.id, created.task_ref, vm.cpus
            elif vm.configured_cpus != vm.cpus and not vm.task:
                start = clock.now()
                vm.task = await resilient.reconfigure(vm.id, CreateRequest(vm.name, cpus=vm.cpus))
                provider.latencies.append(clock.now() - start)
                vm.configured_cpus = vm.cpus
            if vm.task:
                start = clock.now()
                status = await resilient.task_status(vm.task)
                provider.latencies.append(clock.now() - start)
                if not status.done:
                    return TASK_POLL
                vm.task = ""
            start = clock.now()
            described = await resilient.describe(vm.id)
            provider.latencies.append(clock.now() - start)
            provider.describe_latencies.append(clock.now() - start)
            if not described.exists:
                vm.id = ""  # gone behind our back: create it again
                return 0.0
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure becomes the VM's condition
            return self._failed(vm, exc)
        vm.failures = 0
        if not vm.ready:
            self._set_ready(vm, ready_condition(), True)
        if self._rng.random() < SPEC_CHANGE:
            vm.cpus = 2 + (vm.cpus % 6)  # the user edits the spec: reconfigure next time
            return 0.0
        return self.resync * self._rng.uniform(0.9, 1.1)

    def _failed(self, vm: VM, exc: Exception) -> float:
        condition = map_error_to_condition(exc)
        if vm.ready or condition.reason != vm.ready_reason:
            self._set_ready(vm, condition, False)
        vm.failures += 1
        retry_after = getattr(exc, "retry_after", None)
        if retry_after:
            return float(retry_after)  # kopf.TemporaryError(delay=exc.retry_after)
        if not is_retryable(exc):
            return self.resync  # kopf.PermanentError: wait for the next resync
        return self._backoff.delay(min(vm.failures - 1, 30))

    def _set_ready(self, vm: VM, condition: Condition, ready: bool) -> None:
        stamp = EPOCH + timedelta(seconds=self.clock.now())
        set_condition(vm.conditions, condition, stamp)
        if ready != vm.ready:
            vm.provider.ready += 1 if ready else -1
        vm.provider.reasons_set[condition.reason] += 1
        vm.ready = ready
        vm.ready_reason = condition.reason

    def ready_by_reason(self) -> dict[str, int]:
        """The VMs' Ready conditions counted by reason (never reconciled: ``Pending``)."""
        counts = Counter(vm.ready_reason or "Pending" for vm in self.vms)
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    def summary(self) -> dict[str, Any]:
        """What the run did (JSON-ready): the same seed and arguments give the same one."""
        by_provider: dict[str, Counter[str]] = {p.label: Counter() for p in self.providers}
        for vm in self.vms:
            by_provider[vm.provider.label][vm.ready_reason or "Pending"] += 1
        return {
            "simulated_seconds": self.span,
            "ended_at": round(self.clock.now(), 3),
            "resync_seconds": round(self.resync, 6),
            "vms": len(self.vms),
            "ready": self.ready,
            "ready_by_reason": self.ready_by_reason(),
            "ready_by_provider": {label: dict(sorted(c.items()))
                                  for label, c in by_provider.items()},
            "calls": self.calls,
            "providers": [p.summary() for p in self.providers],
        }
