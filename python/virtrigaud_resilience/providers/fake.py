"""``FaultInjectingProvider``: an in-memory provider that fails on purpose, deterministically.

It implements the whole :class:`~virtrigaud_resilience.providers.Provider`
contract over an in-memory inventory of VMs, and misbehaves as told:

- **latency**: each call waits a draw from :class:`Latency` (log-normal by
  its median and 99th percentile, or fixed);
- **an error mix** across the taxonomy: ``errors={ErrorType.UNAVAILABLE:
  0.1, "Timeout": 0.05}`` makes each call fail with that probability;
- **scripted outages**: ``Outage(start, end, error)`` windows, in seconds on
  the provider's clock since it was built. In an ``Unavailable`` outage the
  connection is refused: the call fails at once and never reaches the
  provider (its cause is a ``ConnectionRefusedError``). Any other type is
  the provider answering with that error after its latency;
- **scripted slowdowns**: ``Slowdown(start, end, factor)`` windows: each
  call that starts in one takes ``factor`` times its latency, and answers as
  it would have (a provider that turns slow without failing);
- **a quota**: ``Quota(qps, burst)`` answers calls beyond it with
  ``RateLimitError`` whose ``retry_after`` is the wait for the quota;
- **a capacity**: ``Capacity(knee, latency_growth)``: beyond ``knee`` calls
  in flight, each call's latency grows (the provider queues them);
- **a schedule**: ``Schedule([(t, Quota(...)), (t, Capacity(...)), ...])``
  replaces the quota or the capacity at ``t`` seconds since the provider was
  built (on its clock: a ManualClock makes it deterministic);
- ``fail_next(error_type, times)`` queues failures for the next calls that
  reach the provider (before the random mix).

Everything random comes from ``random.Random(seed)``, drawn in a fixed order
per call (one number for the error mix, then the latency), so the same seed
and the same sequence of calls give the same outcomes and latencies. On a
:class:`~virtrigaud_resilience.ManualClock` the latency advances virtual time
instead of sleeping: a day of traffic runs in milliseconds. An injected
``Timeout`` is the provider reporting one (``OperationTimeoutError`` after
the latency); to hang a call past a deadline, give it a latency longer than
the deadline on the real clock.

Counters for assertions: ``calls[op]`` (every call), ``served[op]`` (calls
that reached the provider), ``injected[ErrorType]`` (failures injected).
"""

from __future__ import annotations

import collections
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from .. import _validate
from ..clock import ManualClock, check_clock, sleeper_for
from ..errors import ErrorType, RateLimitError, UnavailableError, new_error
from ..ratelimit import TokenBucket, validate_rate
from .resilient import mark_reached
from .contract import (
    Capabilities,
    CreateRequest,
    CreateResponse,
    DescribeResponse,
    PowerOp,
    TaskStatus,
)

__all__ = ["Capacity", "FaultInjectingProvider", "Latency", "Outage", "Quota", "Schedule",
           "Slowdown"]

#: z of the 99th percentile of the standard normal distribution.
_Z99 = 2.3263478740408408
#: The longest latency a draw may give, as a multiple of the 99th percentile:
#: the log-normal tail is unbounded, a test's patience is not.
_TAIL_CAP = 10.0
#: The longest latency or time value accepted, in seconds (a day).
_MAX_SECONDS = 86_400.0


@dataclass(frozen=True)
class Latency:
    """A call's latency in seconds: log-normal with ``median`` and ``p99``, or fixed.

    ``Latency(0.02, 0.2)``: half the calls take under 20 ms, 1% over 200 ms
    (draws are capped at 10 x p99). ``Latency(0.05)`` (``p99`` None or equal
    to the median): always 50 ms. Both finite, >= 0 and <= 86400;
    ``p99 >= median``, and a spread (``p99 > median``) needs ``median > 0``.
    """

    median: float = 0.0
    p99: float | None = None

    def __post_init__(self) -> None:
        median = _validate.non_negative("Latency", "median", self.median, maximum=_MAX_SECONDS)
        object.__setattr__(self, "median", median)
        if self.p99 is not None:
            p99 = _validate.non_negative("Latency", "p99", self.p99, maximum=_MAX_SECONDS)
            if p99 < median:
                raise ValueError(f"Latency p99 must be >= median ({median:g}), got {self.p99!r}")
            if p99 > median == 0:
                raise ValueError(f"Latency median must be > 0 when p99 > median, got "
                                 f"{self.median!r}")
            object.__setattr__(self, "p99", p99)

    def draw(self, rng: random.Random) -> float:
        """One latency in seconds (consumes one normal draw when spread)."""
        if self.p99 is None or self.p99 == self.median:
            return self.median
        sigma = math.log(self.p99 / self.median) / _Z99
        return min(self.median * math.exp(sigma * rng.normalvariate(0.0, 1.0)),
                   self.p99 * _TAIL_CAP)


@dataclass(frozen=True)
class Outage:
    """Calls between ``start`` and ``end`` (seconds since the provider was
    built, on its clock; ``start <= t < end``) fail with ``error``.

    ``Unavailable`` (the default) refuses the connection: the call fails at
    once and never reaches the provider. Any other type is the provider's
    answer, after the call's latency.
    """

    start: float
    end: float
    error: ErrorType = ErrorType.UNAVAILABLE

    def __post_init__(self) -> None:
        start = _validate.non_negative("Outage", "start", self.start, maximum=_MAX_SECONDS * 365)
        end = _validate.non_negative("Outage", "end", self.end, maximum=_MAX_SECONDS * 365)
        if end <= start:
            raise ValueError(f"Outage end must be > start ({start:g}), got {self.end!r}")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        object.__setattr__(self, "error", _error_type("Outage", "error", self.error))

    def covers(self, t: float) -> bool:
        """Whether time ``t`` (seconds since the provider was built) is in the outage."""
        return self.start <= t < self.end


@dataclass(frozen=True)
class Slowdown:
    """Calls that start between ``start`` and ``end`` (seconds since the
    provider was built, on its clock; ``start <= t < end``) take ``factor``
    times the latency drawn for them (``factor`` finite, >= 1), and succeed
    or fail as they would have: the provider turns slow without failing.
    """

    start: float
    end: float
    factor: float = 100.0

    def __post_init__(self) -> None:
        start = _validate.non_negative("Slowdown", "start", self.start,
                                       maximum=_MAX_SECONDS * 365)
        end = _validate.non_negative("Slowdown", "end", self.end, maximum=_MAX_SECONDS * 365)
        if end <= start:
            raise ValueError(f"Slowdown end must be > start ({start:g}), got {self.end!r}")
        factor = _validate.non_negative("Slowdown", "factor", self.factor, maximum=1e6)
        if factor < 1.0:
            raise ValueError(f"Slowdown factor must be >= 1, got {self.factor!r}")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        object.__setattr__(self, "factor", factor)

    def covers(self, t: float) -> bool:
        """Whether time ``t`` (seconds since the provider was built) is in the slowdown."""
        return self.start <= t < self.end


@dataclass(frozen=True)
class Quota:
    """The provider's own rate limit: ``qps`` calls per second, bursts of ``burst``.

    Validated as a :class:`~virtrigaud_resilience.TokenBucket`'s rate.
    """

    qps: float
    burst: int = 1

    def __post_init__(self) -> None:
        qps, burst = validate_rate("Quota", self.qps, self.burst)
        object.__setattr__(self, "qps", qps)
        object.__setattr__(self, "burst", burst)


@dataclass(frozen=True)
class Capacity:
    """How many calls in flight the provider serves at its base latency.

    A call that finds ``n`` calls in flight (itself included) beyond the
    ``knee`` takes ``base * (1 + latency_growth * (n - knee) / knee)``, its
    base latency drawn from the provider's :class:`Latency`: with the
    default growth of 1, twice the knee in flight doubles every call's
    latency (a saturated server's queue, by Little's law). ``knee`` an int
    in ``[1, 2**30]``; ``latency_growth`` finite, >= 0.
    """

    knee: int
    latency_growth: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "knee", _validate.integer("Capacity", "knee", self.knee, 1,
                                                           1 << 30))
        object.__setattr__(self, "latency_growth", _validate.non_negative(
            "Capacity", "latency_growth", self.latency_growth, maximum=1e6))

    def latency(self, base: float, in_flight: int) -> float:
        """The latency of a call that found ``in_flight`` calls (itself included)."""
        beyond = in_flight - self.knee
        if beyond <= 0:
            return base
        return base * (1.0 + self.latency_growth * beyond / self.knee)


class Schedule:
    """Changes of the provider's quota and capacity over time.

    ``Schedule([(30.0, Capacity(16)), (120.0, Quota(30, 30))])``: from 30 s
    (since the provider was built) the knee is 16, from 120 s the quota is
    30/s. Times finite, >= 0 and not decreasing; each change a
    :class:`Quota` or a :class:`Capacity`.
    """

    __slots__ = ("changes",)

    def __init__(self, changes: Sequence[tuple[float, Quota | Capacity]]) -> None:
        if isinstance(changes, (str, bytes)) or not isinstance(changes, Sequence):
            raise TypeError(f"Schedule changes must be a sequence of (seconds, Quota or "
                            f"Capacity), got {type(changes).__name__} {changes!r}")
        checked: list[tuple[float, Quota | Capacity]] = []
        for i, change in enumerate(changes):
            if not isinstance(change, tuple) or len(change) != 2:
                raise TypeError(f"Schedule changes[{i}] must be a (seconds, Quota or Capacity) "
                                f"pair, got {type(change).__name__} {change!r}")
            t = _validate.non_negative("Schedule", f"changes[{i}] time", change[0],
                                       maximum=_MAX_SECONDS * 365)
            if checked and t < checked[-1][0]:
                raise ValueError(f"Schedule changes must be in time order: changes[{i}] at "
                                 f"{t:g} s comes after {checked[-1][0]:g} s")
            if not isinstance(change[1], (Quota, Capacity)):
                raise TypeError(f"Schedule changes[{i}] must change a Quota or a Capacity, got "
                                f"{type(change[1]).__name__} {change[1]!r}")
            checked.append((t, change[1]))
        self.changes: tuple[tuple[float, Quota | Capacity], ...] = tuple(checked)

    def due(self, after: int, t: float) -> int:
        """The index past the last change due at ``t``, from index ``after``."""
        while after < len(self.changes) and self.changes[after][0] <= t:
            after += 1
        return after

    def __repr__(self) -> str:
        return f"Schedule({list(self.changes)!r})"


def _error_type(owner: str, field_name: str, value: object) -> ErrorType:
    try:
        return ErrorType(value)
    except ValueError:
        valid = ", ".join(t.value for t in ErrorType)
        raise ValueError(f"{owner} {field_name} must be an ErrorType ({valid}), "
                         f"got {value!r}") from None


_Item = TypeVar("_Item")


def _sequence_of(owner: str, field: str, value: object, kind: type[_Item]) -> tuple[_Item, ...]:
    """``value`` as a tuple of ``kind``; TypeError naming ``field`` when it is
    no sequence (a str is none here) or holds anything else."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{owner} {field} must be a sequence of {kind.__name__}, got "
                        f"{type(value).__name__} {value!r}")
    for item in value:
        _validate.optional_instance(owner, f"{field} item", item, kind)
    return tuple(value)


def _error_mix(errors: Mapping[ErrorType | str, float] | None) -> list[tuple[float, ErrorType]]:
    """Cumulative thresholds of the error mix, validated."""
    if errors is None:
        return []
    if not isinstance(errors, Mapping):
        raise TypeError(f"FaultInjectingProvider errors must be a mapping of ErrorType to "
                        f"probability, got {type(errors).__name__} {errors!r}")
    total = 0.0
    thresholds = []
    for key, probability in errors.items():
        kind = _error_type("FaultInjectingProvider", "errors key", key)
        p = _validate.non_negative("FaultInjectingProvider", f"errors[{kind.value!r}]",
                                   probability, maximum=1.0)
        total += p
        thresholds.append((total, kind))
    if total > 1.0 + 1e-12:
        raise ValueError(f"FaultInjectingProvider errors must add up to <= 1, got {total:g} "
                         f"({dict(errors)!r})")
    return thresholds


@dataclass
class _VM:
    id: str
    spec: CreateRequest
    power_state: str = "On"
    ips: tuple[str, ...] = ()
    #: The last answer to describe (frozen), until the VM changes: a fleet
    #: describes far more often than it changes, and building one is most
    #: of the fake's own cost per call.
    described: DescribeResponse | None = None


_ABSENT = DescribeResponse(exists=False)


@dataclass
class _Task:
    done_at: float
    error: str = ""


@dataclass
class _Inventory:
    vms: dict[str, _VM] = field(default_factory=dict)
    ids_by_name: dict[str, str] = field(default_factory=dict)
    tasks: dict[str, _Task] = field(default_factory=dict)
    created: int = 0
    task_count: int = 0


class FaultInjectingProvider:
    """A deterministic in-memory provider that injects faults (see the module docstring).

    Args:
        seed: seeds the random draws (an int).
        clock: a ManualClock (virtual time), or None for real time.
        latency: a :class:`Latency`, or a number of seconds (fixed).
        errors: probability per call of each error type (adding up to <= 1).
        outages: :class:`Outage` windows.
        quota: the provider's :class:`Quota`, or None for none.
        capacity: the provider's :class:`Capacity`, or None for unlimited.
        schedule: a :class:`Schedule` of later quotas and capacities.
        slowdowns: :class:`Slowdown` windows.
        task_duration: seconds a mutating operation's task takes to finish;
            0 finishes at once and returns no task reference.
        capabilities: what ``get_capabilities`` answers.

    Every argument is validated (TypeError / ValueError naming it).
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        clock: ManualClock | None = None,
        latency: Latency | float = 0.0,
        errors: Mapping[ErrorType | str, float] | None = None,
        outages: Sequence[Outage] = (),
        quota: Quota | None = None,
        task_duration: float = 0.0,
        capabilities: Capabilities | None = None,
        capacity: Capacity | None = None,
        schedule: Schedule | None = None,
        slowdowns: Sequence[Slowdown] = (),
    ) -> None:
        owner = "FaultInjectingProvider"
        self._rng = random.Random(_validate.integer(owner, "seed", seed, -(2**63), 2**63))
        clock = check_clock(owner, clock)
        self._clock = sleeper_for(clock)
        self._t0 = self._clock.now()
        self.latency = latency if isinstance(latency, Latency) else Latency(
            _validate.non_negative(owner, "latency", latency, maximum=_MAX_SECONDS))
        self._mix = _error_mix(errors)
        self.outages: tuple[Outage, ...] = _sequence_of(owner, "outages", outages, Outage)
        self.slowdowns: tuple[Slowdown, ...] = _sequence_of(owner, "slowdowns", slowdowns,
                                                            Slowdown)
        self.quota = _validate.optional_instance(owner, "quota", quota, Quota)
        self._quota_bucket = (None if quota is None
                              else TokenBucket(quota.qps, quota.burst, clock=clock))
        self._native_clock = clock
        self.capacity = _validate.optional_instance(owner, "capacity", capacity, Capacity)
        self.schedule = _validate.optional_instance(owner, "schedule", schedule, Schedule)
        self._next_change = 0
        #: Calls inside their latency now (what a Capacity counts).
        self.in_flight = 0
        self.task_duration = _validate.non_negative(owner, "task_duration", task_duration,
                                                    maximum=_MAX_SECONDS)
        self.capabilities = (_validate.optional_instance(owner, "capabilities", capabilities,
                                                         Capabilities) or Capabilities())
        self._queued: collections.deque[ErrorType] = collections.deque()
        self._inventory = _Inventory()
        #: Every call, by operation (the Python method name).
        self.calls: collections.Counter[str] = collections.Counter()
        #: Calls that reached the provider (not refused by an outage), by operation.
        self.served: collections.Counter[str] = collections.Counter()
        #: Failures injected, by error type.
        self.injected: collections.Counter[ErrorType] = collections.Counter()

    # -- scripting --------------------------------------------------------------

    def fail_next(self, error: ErrorType | str, times: int = 1) -> None:
        """The next ``times`` calls that reach the provider fail with ``error``
        (after their latency), before the random mix is consulted."""
        kind = _error_type("fail_next", "error", error)
        count = _validate.integer("fail_next", "times", times, 1, 1_000_000)
        self._queued.extend([kind] * count)

    def now(self) -> float:
        """Seconds since the provider was built, on its clock."""
        return self._clock.now() - self._t0

    @property
    def vms(self) -> dict[str, str]:
        """The VMs the provider holds: id -> name (a copy)."""
        return {vm.id: vm.spec.name for vm in self._inventory.vms.values()}

    # -- the contract -------------------------------------------------------------

    async def validate(self) -> None:
        """Succeeds unless a fault is injected."""
        await self._enter("validate")

    async def get_capabilities(self) -> Capabilities:
        """The configured capabilities."""
        await self._enter("get_capabilities")
        return self.capabilities

    async def create(self, request: CreateRequest) -> CreateResponse:
        """Creates the VM, or returns the existing one of that name."""
        await self._enter("create")
        inventory = self._inventory
        existing = inventory.ids_by_name.get(request.name)
        if existing is not None:
            return CreateResponse(existing)
        inventory.created += 1
        vm_id = f"vm-{inventory.created:04d}"
        inventory.vms[vm_id] = _VM(vm_id, request, "On",
                                   (f"10.0.{inventory.created // 256}.{inventory.created % 256}",))
        inventory.ids_by_name[request.name] = vm_id
        return CreateResponse(vm_id, self._start_task())

    async def delete(self, vm_id: str) -> str:
        """Deletes the VM; succeeds if it does not exist."""
        await self._enter("delete")
        vm = self._inventory.vms.pop(vm_id, None)
        if vm is not None:
            self._inventory.ids_by_name.pop(vm.spec.name, None)
        return self._start_task()

    async def power(self, vm_id: str, op: PowerOp) -> str:
        """Sets the VM's power state (NotFound if it does not exist)."""
        await self._enter("power")
        vm = self._find(vm_id)
        vm.power_state = "Off" if PowerOp(op) in (PowerOp.OFF, PowerOp.SHUTDOWN_GRACEFUL) else "On"
        vm.described = None
        return self._start_task()

    async def reconfigure(self, vm_id: str, desired: CreateRequest) -> str:
        """Replaces the VM's spec (NotFound if it does not exist)."""
        await self._enter("reconfigure")
        vm = self._find(vm_id)
        vm.spec, vm.described = desired, None
        return self._start_task()

    async def describe(self, vm_id: str) -> DescribeResponse:
        """The VM's state; ``exists=False`` if unknown."""
        await self._enter("describe")
        vm = self._inventory.vms.get(vm_id)
        if vm is None:
            return _ABSENT
        if vm.described is None:
            vm.described = DescribeResponse(
                exists=True, power_state=vm.power_state, ips=vm.ips,
                provider_raw={"name": vm.spec.name, "cpus": str(vm.spec.cpus)})
        return vm.described

    async def task_status(self, task_ref: str) -> TaskStatus:
        """Whether the task has finished (NotFound if unknown)."""
        await self._enter("task_status")
        task = self._inventory.tasks.get(task_ref)
        if task is None:
            raise new_error(ErrorType.NOT_FOUND, f"task {task_ref!r} not found")
        return TaskStatus(done=self.now() >= task.done_at, error=task.error)

    # -- faults -------------------------------------------------------------------

    async def _enter(self, op: str) -> None:
        """One call's faults: outage, quota, latency, scripted or random error."""
        self.calls[op] += 1
        roll = self._rng.random()  # drawn first and always: the sequence stays the seed's
        latency = self.latency.draw(self._rng)
        t = self.now()
        outage = next((o for o in self.outages if o.covers(t)), None)
        if outage is not None and outage.error is ErrorType.UNAVAILABLE:
            self.injected[ErrorType.UNAVAILABLE] += 1
            raise UnavailableError(f"{op}: connection refused (outage {outage.start:g}-"
                                   f"{outage.end:g} s)", ConnectionRefusedError(111, "refused"))
        self.served[op] += 1
        if self.schedule is not None:
            self._apply_schedule(t)
        bucket = self._quota_bucket
        if bucket is not None and not bucket.try_acquire():
            self.injected[ErrorType.RATE_LIMIT] += 1
            raise mark_reached(RateLimitError(f"{op}: quota exceeded ({bucket.qps:g}/s)",
                                              retry_after=bucket.retry_after()))
        if self.capacity is not None:
            latency = self.capacity.latency(latency, self.in_flight + 1)
        for slowdown in self.slowdowns:
            if slowdown.covers(t):
                latency *= slowdown.factor
        self.in_flight += 1
        try:
            await self._clock.sleep_async(latency)
        finally:
            self.in_flight -= 1
        kind = outage.error if outage is not None else self._draw_error(roll)
        if kind is not None:
            self.injected[kind] += 1
            raise new_error(kind, f"{op}: injected {kind.value} fault")

    def _apply_schedule(self, t: float) -> None:
        """The quota and capacity changes due by ``t``, in order. A new quota
        changes the rate of the provider's bucket (race-free: set_rate)."""
        schedule = self.schedule
        if schedule is None:
            return
        due = schedule.due(self._next_change, t)
        for _, change in schedule.changes[self._next_change:due]:
            if isinstance(change, Capacity):
                self.capacity = change
            else:
                self.quota = change
                if self._quota_bucket is None:
                    self._quota_bucket = TokenBucket(change.qps, change.burst,
                                                     clock=self._native_clock)
                else:
                    self._quota_bucket.set_rate(change.qps, change.burst)
        self._next_change = due

    def _draw_error(self, roll: float) -> ErrorType | None:
        if self._queued:
            return self._queued.popleft()
        for threshold, kind in self._mix:
            if roll < threshold:
                return kind
        return None

    def _find(self, vm_id: str) -> _VM:
        vm = self._inventory.vms.get(vm_id)
        if vm is None:
            raise new_error(ErrorType.NOT_FOUND, f"VM {vm_id!r} not found")
        return vm

    def _start_task(self) -> str:
        if self.task_duration == 0:
            return ""
        inventory = self._inventory
        inventory.task_count += 1
        ref = f"task-{inventory.task_count:04d}"
        inventory.tasks[ref] = _Task(self.now() + self.task_duration)
        return ref

    def __repr__(self) -> str:
        return (f"FaultInjectingProvider(calls={sum(self.calls.values())}, "
                f"vms={len(self._inventory.vms)})")
