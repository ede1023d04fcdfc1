"""Policy / PolicyBuilder: composition, the guide's examples, every layer per attempt.

Time is a ManualClock shared by the policy, its breaker and its bucket, so
backoff sleeps and token waits advance virtual time and nothing really sleeps.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import warnings
from collections.abc import Awaitable
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
import virtrigaud_resilience as vr
from virtrigaud_resilience import BreakerState

NO_JITTER = vr.RetryConfig(max_attempts=3, base_delay=0.5, max_delay=30.0, multiplier=2.0,
                           jitter=False)


def builder(clock: vr.ManualClock, name: str = "test") -> vr.PolicyBuilder:
    return vr.PolicyBuilder(name).with_clock(clock)


def breaker(clock: vr.ManualClock, threshold: int = 10, reset: float = 60.0,
            half_open: int = 3) -> vr.CircuitBreaker:
    return vr.CircuitBreaker("provider-test", "fake", "prod",
                             vr.BreakerConfig(failure_threshold=threshold, reset_timeout=reset,
                                              half_open_max_calls=half_open), clock=clock)


class Script:
    """A provider call that raises the scripted errors, then returns ``result``."""

    def __init__(self, *errors: BaseException, result: object = "ok",
                 clock: vr.ManualClock | None = None, forever: BaseException | None = None):
        self.errors = list(errors)
        self.forever = forever
        self.result = result
        self.calls: list[tuple[tuple, dict]] = []
        self.times: list[float] = []
        self.raised: list[BaseException] = []
        self.clock = clock

    def _step(self, args: tuple, kwargs: dict) -> object:
        self.calls.append((args, kwargs))
        if self.clock is not None:
            self.times.append(self.clock.now())
        exc = self.errors.pop(0) if self.errors else None
        if exc is None and self.forever is not None:
            exc = type(self.forever)(*self.forever.args) if not isinstance(
                self.forever, vr.ProviderError) else vr.new_error(self.forever.type, "again")
        if exc is not None:
            self.raised.append(exc)
            raise exc
        return self.result

    def __call__(self, /, *args: object, **kwargs: object) -> object:
        return self._step(args, kwargs)

    async def call_async(self, /, *args: object, **kwargs: object) -> object:
        await asyncio.sleep(0)
        return self._step(args, kwargs)


def execute(policy: vr.Policy, script: Script, mode: str, /, *args, **kwargs):
    if mode == "sync":
        return policy.execute(script, *args, **kwargs)
    return asyncio.run(policy.execute_async(script.call_async, *args, **kwargs))


MODES = ["sync", "async"]


# ------------------------------------------------------------- the builder --


def test_builder_returns_a_policy(clock: vr.ManualClock) -> None:
    cb = breaker(clock)
    tb = vr.TokenBucket(10, 20, clock=clock)
    bh = vr.Bulkhead(4)
    policy = (vr.PolicyBuilder("create-vm").with_retry(NO_JITTER).with_circuit_breaker(cb)
              .with_rate_limiter(tb, wait=True, max_wait=2.0).with_timeout(30.0)
              .with_bulkhead(bh).with_clock(clock).build())
    assert isinstance(policy, vr.Policy)
    assert policy.name == "create-vm"
    assert policy.breaker is cb
    assert policy.limiter is tb
    assert policy.bulkhead is bh
    assert policy.wait is True
    assert policy.max_wait == 2.0
    assert policy.timeout == 30.0
    assert policy.retrier.config == NO_JITTER
    assert "create-vm" in repr(policy)


def test_builder_defaults(clock: vr.ManualClock) -> None:
    policy = vr.PolicyBuilder("plain").build()
    assert policy.breaker is None and policy.limiter is None and policy.bulkhead is None
    assert policy.retrier.config.max_attempts == 1  # no with_retry: one attempt
    assert vr.PolicyBuilder("r").with_retry().build().retrier.config == vr.RetryConfig.default()
    bh = vr.PolicyBuilder("b").with_bulkhead(3, max_queue=2).build().bulkhead
    assert isinstance(bh, vr.Bulkhead)
    assert (bh.max_concurrent, bh.max_queue) == (3, 2)


def test_builder_validates() -> None:
    with pytest.raises(TypeError, match="name"):
        vr.PolicyBuilder(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="breaker"):
        vr.PolicyBuilder("x").with_circuit_breaker("cb").build()  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="limiter"):
        vr.PolicyBuilder("x").with_rate_limiter(object()).build()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        vr.PolicyBuilder("x").with_timeout(0).build()
    with pytest.raises(ValueError, match="max_wait"):
        vr.PolicyBuilder("x").with_rate_limiter(vr.TokenBucket(), True, -1).build()
    with pytest.raises(TypeError, match="clock"):
        vr.PolicyBuilder("x").with_clock(object()).build()  # type: ignore[arg-type]
    for bad in (0, -1, float("nan"), float("inf"), "0s", "later"):
        with pytest.raises(ValueError, match=r"Policy attempt_timeout"):
            vr.PolicyBuilder("x").with_timeout(per_attempt=bad).build()
    with pytest.raises(TypeError, match=r"Policy attempt_timeout"):
        vr.PolicyBuilder("x").with_timeout(per_attempt=[1]).build()  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="rpc"):
        vr.PolicyBuilder("x").with_rpc_timeout({"describe": 1}, "Describe")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="operation"):
        vr.PolicyBuilder("x").with_rpc_timeout(vr.RPCConfig(), 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retry_on"):
        vr.PolicyBuilder("x").with_retry(retry_on=KeyboardInterrupt)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retry"):
        vr.PolicyBuilder("x").with_retry({"max_attempts": 2})  # type: ignore[arg-type]


# ---------------------------------------------- execute / async / decorator --


@pytest.mark.parametrize("mode", MODES)
def test_execute_returns_the_result_and_forwards_arguments(clock: vr.ManualClock,
                                                           mode: str) -> None:
    policy = builder(clock).with_retry(NO_JITTER).with_circuit_breaker(breaker(clock)).build()
    script = Script(result={"id": 1}, clock=clock)
    assert execute(policy, script, mode, 1, "two", three=3) == {"id": 1}
    assert script.calls == [((1, "two"), {"three": 3})]


# Keyword names that look like the machinery's own parameters must reach fn.
COLLIDING = {"fn": "F", "self": "S", "args": "A", "kwargs": "K", "stage": "ST", "exc": "E",
             "ticket": "T", "policy": "P", "attempt": "AT", "deadline": "D"}


def _paths(clock: vr.ManualClock) -> dict[str, vr.Policy]:
    return {
        "fast": builder(clock).with_retry(NO_JITTER).with_circuit_breaker(breaker(clock))
        .with_rate_limiter(vr.TokenBucket(100, 100, clock=clock)).with_bulkhead(4).build(),
        "python": builder(clock).with_retry(NO_JITTER).with_circuit_breaker(breaker(clock))
        .with_rate_limiter(vr.TokenBucket(100, 100, clock=clock)).with_timeout(1000.0).build(),
        "bare": vr.PolicyBuilder("bare").build(),
    }


@pytest.mark.parametrize("path", ["fast", "python", "bare"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fail_first", [False, True])
def test_colliding_keyword_names_are_forwarded(clock: vr.ManualClock, path: str, mode: str,
                                               fail_first: bool) -> None:
    policy = _paths(clock)[path]
    if path == "bare" and fail_first:
        policy = builder(clock).with_retry(NO_JITTER).build()
    errors = [vr.RetryableError("once")] if fail_first else []
    script = Script(*errors, result="done")
    assert execute(policy, script, mode, "pos", **COLLIDING) == "done"
    assert script.calls == [(("pos",), COLLIDING)] * (2 if fail_first else 1)


def test_fn_is_positional_only(clock: vr.ManualClock) -> None:
    policy = builder(clock).build()
    with pytest.raises(TypeError):
        policy.execute()  # type: ignore[call-arg]
    # fn= as a keyword is forwarded, not taken as the callable
    with pytest.raises(TypeError):
        policy.execute(fn=lambda: 1)  # type: ignore[call-arg]


def test_decorator_on_a_sync_function(clock: vr.ManualClock) -> None:
    cb = breaker(clock)
    policy = builder(clock).with_retry(NO_JITTER).with_circuit_breaker(cb).build()
    failures = [vr.UnavailableError("x")]

    @policy
    def create_vm(name: str, *, cpus: int = 1, fn: str = "", self: str = "") -> str:
        """Creates a VM."""
        if failures:
            raise failures.pop()
        return f"{name}:{cpus}:{fn}:{self}"

    assert create_vm.__name__ == "create_vm"
    assert create_vm.__doc__ == "Creates a VM."
    assert create_vm.__wrapped__.__name__ == "create_vm"
    assert not inspect.iscoroutinefunction(create_vm)
    assert inspect.signature(create_vm) == inspect.signature(create_vm.__wrapped__)
    assert create_vm("web", cpus=4, fn="f", self="s") == "web:4:f:s"
    assert clock.now() == 0.5
    assert cb.failures_total == 1 and cb.successes == 1


async def test_decorator_on_an_async_function(clock: vr.ManualClock) -> None:
    cb = breaker(clock)
    policy = builder(clock).with_retry(NO_JITTER).with_circuit_breaker(cb).build()
    failures = [vr.UnavailableError("x")]

    @policy
    async def create_vm(name: str, *, cpus: int = 1, args: str = "") -> str:
        """Creates a VM, asynchronously."""
        await asyncio.sleep(0)
        if failures:
            raise failures.pop()
        return f"{name}:{cpus}:{args}"

    assert create_vm.__name__ == "create_vm"
    assert create_vm.__doc__ == "Creates a VM, asynchronously."
    assert inspect.iscoroutinefunction(create_vm)
    assert await create_vm("db", cpus=2, args="a") == "db:2:a"
    assert clock.now() == 0.5
    assert cb.failures_total == 1 and cb.successes == 1


def test_decorated_method_gets_self(clock: vr.ManualClock) -> None:
    policy = builder(clock).with_retry(NO_JITTER).build()

    class Provider:
        def __init__(self) -> None:
            self.n = 0

        @policy
        def describe(self, vm: str) -> str:
            self.n += 1
            if self.n == 1:
                raise vr.RetryableError("flaky")
            return vm

    p = Provider()
    assert p.describe("vm-1") == "vm-1"
    assert p.n == 2


# ------------------------------------------------------ the guide's examples --


@pytest.mark.parametrize("mode", MODES)
def test_guide_policy_builder_example(clock: vr.ManualClock, mode: str) -> None:
    # policy := NewPolicyBuilder("vm-operations").WithRetry(DefaultRetryConfig()).
    #     WithCircuitBreaker(circuitBreaker).Build()
    circuit_breaker = vr.CircuitBreaker("provider-vsphere", "vsphere", "prod",
                                        vr.BreakerConfig(failure_threshold=10,
                                                         reset_timeout=60.0,
                                                         half_open_max_calls=3), clock=clock)
    policy = (vr.PolicyBuilder("vm-operations").with_retry(vr.RetryConfig.default())
              .with_circuit_breaker(circuit_breaker).with_clock(clock).build())
    request = {"name": "web-1"}
    create = Script(vr.UnavailableError("vCenter busy"), result="created")
    assert execute(policy, create, mode, request) == "created"
    assert create.calls == [((request,), {})] * 2
    assert 0.5 <= clock.now() <= 0.55  # one default backoff, with jitter
    assert circuit_breaker.state is BreakerState.CLOSED
    assert circuit_breaker.failures == 0  # the success reset the count
    assert circuit_breaker.failures_total == 1


@dataclass
class CreateRequest:
    name: str
    cpus: int


@dataclass
class CreateResponse:
    id: str
    task_ref: str


@dataclass
class VMStatus:
    id: str = ""
    task_ref: str = ""


@dataclass
class VirtualMachine:
    name: str
    cpus: int = 2
    status: VMStatus = field(default_factory=VMStatus)


class FakeProvider:
    """A provider whose Create fails with UnavailableError ``failures`` times."""

    def __init__(self, provider_type: str, name: str, failures: int = 2) -> None:
        self.spec = SimpleNamespace(type=provider_type)
        self.name = name
        self.failures = failures
        self.requests: list[CreateRequest] = []

    def _create(self, req: CreateRequest) -> CreateResponse:
        self.requests.append(req)
        if self.failures:
            self.failures -= 1
            raise vr.UnavailableError("provider unavailable", ConnectionRefusedError(111))
        return CreateResponse(id=f"vm-{len(self.requests)}", task_ref=f"task-{req.name}")

    def create(self, req: CreateRequest) -> CreateResponse:
        return self._create(req)

    async def create_async(self, req: CreateRequest) -> CreateResponse:
        await asyncio.sleep(0)
        return self._create(req)


class VirtualMachineReconciler:
    """The guide's controller, in Python."""

    def __init__(self, registry: vr.BreakerRegistry, provider: FakeProvider,
                 clock: vr.ManualClock) -> None:
        self.circuit_breaker_registry = registry
        self.provider = provider
        self.clock = clock

    def _policy(self) -> vr.Policy:
        cb = self.circuit_breaker_registry.get_or_create(
            "vm-operations", self.provider.spec.type, self.provider.name)
        return (vr.PolicyBuilder("create-vm")
                .with_retry(vr.RetryConfig(max_attempts=3, base_delay=1.0, max_delay=30.0,
                                           multiplier=2.0, jitter=True))
                .with_circuit_breaker(cb)
                .with_clock(self.clock)
                .build())

    def create_vm(self, vm: VirtualMachine) -> None:
        create_req = CreateRequest(vm.name, vm.cpus)

        def op() -> None:
            resp = self.provider.create(create_req)
            vm.status.id = resp.id
            vm.status.task_ref = resp.task_ref

        return self._policy().execute(op)

    async def create_vm_async(self, vm: VirtualMachine) -> None:
        create_req = CreateRequest(vm.name, vm.cpus)

        async def op() -> None:
            resp = await self.provider.create_async(create_req)
            vm.status.id = resp.id
            vm.status.task_ref = resp.task_ref

        return await self._policy().execute_async(op)


def _reconcile(reconciler: VirtualMachineReconciler, vm: VirtualMachine, mode: str) -> None:
    if mode == "sync":
        reconciler.create_vm(vm)
    else:
        asyncio.run(reconciler.create_vm_async(vm))


@pytest.mark.parametrize("mode", MODES)
def test_guide_integration_example(clock: vr.ManualClock, mode: str) -> None:
    registry = vr.BreakerRegistry(vr.BreakerConfig(), clock=clock)
    provider = FakeProvider("vsphere", "prod", failures=2)
    reconciler = VirtualMachineReconciler(registry, provider, clock)
    vm = VirtualMachine("web-1", cpus=4)

    assert _reconcile(reconciler, vm, mode) is None
    assert vm.status == VMStatus(id="vm-3", task_ref="task-web-1")
    assert provider.requests == [CreateRequest("web-1", 4)] * 3
    # backoff 1 s then 2 s, each plus up to 10% jitter
    assert 3.0 <= clock.now() <= 3.3
    cb = registry.get("vm-operations", "vsphere", "prod")
    assert cb is not None
    assert registry.list() == [cb]
    assert cb.state is BreakerState.CLOSED
    assert cb.failures == 0
    assert cb.failures_total == 2
    assert cb.successes == 1


@pytest.mark.parametrize("mode", MODES)
def test_guide_integration_example_provider_down(clock: vr.ManualClock, mode: str) -> None:
    registry = vr.BreakerRegistry(vr.BreakerConfig(failure_threshold=10), clock=clock)
    provider = FakeProvider("vsphere", "prod", failures=10**6)
    reconciler = VirtualMachineReconciler(registry, provider, clock)
    vm = VirtualMachine("web-1")

    # Three reconciles of 3 attempts: 9 failures, the breaker still closed.
    for n in range(3):
        with pytest.raises(vr.UnavailableError) as info:
            _reconcile(reconciler, vm, mode)
        assert not isinstance(info.value, vr.CircuitOpenError)
        assert info.value.attempts == 3
        assert isinstance(info.value.__cause__, ConnectionRefusedError)
    cb = registry.get_or_create("vm-operations", "vsphere", "prod")
    assert cb.failures == 9
    assert cb.state is BreakerState.CLOSED
    assert len(provider.requests) == 9
    # The tenth failure opens it; the next attempt fails fast without a call, and its
    # CircuitOpenError says the next probe is 60 s away, beyond the retry's max_delay:
    # the reconcile gives up at once, for the controller to requeue after retry_after.
    with pytest.raises(vr.CircuitOpenError) as info:
        _reconcile(reconciler, vm, mode)
    assert info.value.attempts == 2
    assert info.value.retry_after == pytest.approx(60.0, abs=1.5)
    assert len(provider.requests) == 10
    assert cb.state is BreakerState.OPEN
    assert cb.rejected == 1
    assert vm.status == VMStatus()


@pytest.mark.parametrize("mode", MODES)
def test_guide_integration_example_recovers_after_reset_timeout(clock: vr.ManualClock,
                                                                 mode: str) -> None:
    registry = vr.BreakerRegistry(vr.BreakerConfig(failure_threshold=2, reset_timeout=60.0),
                                  clock=clock)
    provider = FakeProvider("libvirt", "lab", failures=2)
    reconciler = VirtualMachineReconciler(registry, provider, clock)
    vm = VirtualMachine("db-1")
    with pytest.raises(vr.CircuitOpenError):
        _reconcile(reconciler, vm, mode)
    assert len(provider.requests) == 2
    clock.advance(60.0)
    _reconcile(reconciler, vm, mode)  # the half-open probe succeeds
    assert vm.status.id == "vm-3"
    cb = registry.get("vm-operations", "libvirt", "lab")
    assert cb is not None and cb.half_open_calls == 1


# -------------------------------------------- every attempt passes every layer --


@pytest.mark.parametrize("path", ["fast", "python"])
@pytest.mark.parametrize("mode", MODES)
def test_every_attempt_passes_breaker_and_limiter(clock: vr.ManualClock, mode: str,
                                                  path: str) -> None:
    cb = breaker(clock)
    tb = vr.TokenBucket(qps=1, burst=10, clock=clock)
    bh = vr.Bulkhead(2)
    b = (builder(clock).with_retry(NO_JITTER.replace(max_attempts=4)).with_circuit_breaker(cb)
         .with_rate_limiter(tb).with_bulkhead(bh))
    if path == "python":
        b = b.with_timeout(1000.0)
    policy = b.build()
    script = Script(vr.UnavailableError("a"), vr.RetryableError("b"), vr.OperationTimeoutError("c"),
                    clock=clock)
    assert execute(policy, script, mode) == "ok"
    assert len(script.calls) == 4
    assert tb.admitted == 4
    assert tb.rejected == 0
    # 10 -1 (t=0) +.5 -1 (t=.5) +1 -1 (t=1.5) +2, capped at 10, -1 (t=3.5)
    assert tb.tokens == pytest.approx(9.0)
    assert cb.failures_total == 3
    assert cb.successes == 1
    assert cb.failures == 0
    assert bh.admitted == 4
    assert bh.in_flight == 0
    assert clock.now() == 3.5


@pytest.mark.parametrize("mode", MODES)
def test_open_breaker_is_retried_until_half_open(clock: vr.ManualClock, mode: str) -> None:
    cb = breaker(clock, threshold=1, reset=10.0)
    with pytest.raises(vr.UnavailableError):
        cb.call(Script(vr.UnavailableError("trip")))
    assert cb.state is BreakerState.OPEN
    cfg = vr.RetryConfig(max_attempts=5, base_delay=4.0, max_delay=30.0, multiplier=2.0,
                         jitter=False)
    delays: list[tuple[int, type, float]] = []
    policy = (vr.PolicyBuilder("p").with_retry(cfg, on_retry=lambda a, e, d: delays.append(
        (a, type(e), d))).with_circuit_breaker(cb).with_clock(clock).build())
    script = Script(result="probed", clock=clock)
    assert execute(policy, script, mode) == "probed"
    # rejected at t=0 with retry_after 10 s (the breaker's remaining open time), a floor
    # on the 4 s backoff: the retry waits exactly until the probe is admitted, at t=10
    assert delays == [(1, vr.CircuitOpenError, 10.0)]
    assert script.times == [10.0]
    assert cb.rejected == 1
    assert cb.successes == 1
    assert cb.half_open_calls == 1
    assert cb.state is BreakerState.HALF_OPEN  # 1 of 3 probes so far


@pytest.mark.parametrize("mode", MODES)
def test_open_breaker_probe_failure_reopens(clock: vr.ManualClock, mode: str) -> None:
    cb = breaker(clock, threshold=1, reset=10.0)
    with pytest.raises(vr.UnavailableError):
        cb.call(Script(vr.UnavailableError("trip")))
    cfg = vr.RetryConfig(max_attempts=4, base_delay=6.0, max_delay=30.0, multiplier=1.0,
                         jitter=False)
    policy = builder(clock).with_retry(cfg).with_circuit_breaker(cb).build()
    # t=0 rejected (retry_after 10 floors the 6 s backoff); t=10 the probe fails and
    # re-opens it until t=20; t=16 rejected (retry_after 4 < 6: the backoff wins);
    # t=22 the next probe fails: attempts are used up
    script = Script(result="never", clock=clock, forever=vr.UnavailableError("still down"))
    with pytest.raises(vr.UnavailableError, match="again") as info:
        execute(policy, script, mode)
    assert script.times == [10.0, 22.0]
    assert info.value.attempts == 4
    assert cb.state is BreakerState.OPEN
    assert cb.rejected == 2


def test_circuit_open_error_without_retry(clock: vr.ManualClock) -> None:
    cb = breaker(clock)
    cb.force_open()
    policy = builder(clock).with_circuit_breaker(cb).build()
    script = Script()
    with pytest.raises(vr.CircuitOpenError) as info:
        policy.execute(script)
    assert script.calls == []
    assert info.value.breaker == "provider-test"
    assert (info.value.provider_type, info.value.provider) == ("fake", "prod")
    assert vr.is_retryable(info.value)


# --------------------------------------------------------------- the limiter --


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("advance", "retry_after"), [(0.0, 0.5), (0.2, 0.3), (0.45, 0.05)])
def test_limiter_without_wait_raises_rate_limit_error(clock: vr.ManualClock, mode: str,
                                                      advance: float,
                                                      retry_after: float) -> None:
    tb = vr.TokenBucket(qps=2, burst=1, clock=clock)
    assert tb.try_acquire()
    clock.advance(advance)
    policy = builder(clock).with_rate_limiter(tb).build()
    script = Script()
    with pytest.raises(vr.RateLimitError) as info:
        execute(policy, script, mode)
    assert info.value.retry_after == pytest.approx(retry_after, abs=1e-9)
    assert script.calls == []
    assert tb.rejected == 1


@pytest.mark.parametrize("path", ["fast", "python"])
@pytest.mark.parametrize("mode", MODES)
def test_rate_limit_is_retried_after_the_token_wait(clock: vr.ManualClock, mode: str,
                                                    path: str) -> None:
    tb = vr.TokenBucket(qps=2, burst=1, clock=clock)
    assert tb.try_acquire()
    clock.advance(0.1)
    b = builder(clock).with_retry(NO_JITTER.replace(base_delay=0.01)).with_rate_limiter(tb)
    if path == "python":
        b = b.with_timeout(100.0)
    delays: list[float] = []
    policy = b.build()
    policy.retrier.on_retry = lambda a, e, d: delays.append(d)
    script = Script(clock=clock)
    assert execute(policy, script, mode) == "ok"
    # retry_after (0.4 s: the time to the next token) beats the 10 ms backoff
    assert delays == [pytest.approx(0.4)]
    assert script.times == [pytest.approx(0.5)]
    assert tb.admitted == 2


@pytest.mark.parametrize("path", ["fast", "python"])
@pytest.mark.parametrize("mode", MODES)
def test_limiter_with_wait_waits_exactly_the_token_wait(clock: vr.ManualClock, mode: str,
                                                        path: str) -> None:
    tb = vr.TokenBucket(qps=4, burst=2, clock=clock)
    assert tb.try_acquire(2)
    clock.advance(0.05)
    b = builder(clock).with_rate_limiter(tb, wait=True)
    if path == "python":
        b = b.with_timeout(100.0)
    policy = b.build()
    script = Script(clock=clock)
    assert execute(policy, script, mode) == "ok"
    assert clock.now() == pytest.approx(0.25, abs=1e-9)  # waited 0.2 s, no more
    assert script.times == [pytest.approx(0.25, abs=1e-9)]
    # the next call waits one full interval
    assert execute(policy, script, mode) == "ok"
    assert clock.now() == pytest.approx(0.5, abs=1e-9)
    assert tb.reserved == 2  # one reservation per waiting call


@pytest.mark.parametrize("mode", MODES)
def test_limiter_with_wait_and_a_full_bucket_does_not_wait(clock: vr.ManualClock,
                                                           mode: str) -> None:
    tb = vr.TokenBucket(qps=4, burst=2, clock=clock)
    policy = builder(clock).with_rate_limiter(tb, wait=True).build()
    assert execute(policy, Script(), mode) == "ok"
    assert clock.now() == 0.0


@pytest.mark.parametrize("mode", MODES)
def test_max_wait_bounds_the_token_wait(clock: vr.ManualClock, mode: str) -> None:
    tb = vr.TokenBucket(qps=1, burst=1, clock=clock)
    assert tb.try_acquire()
    policy = builder(clock).with_rate_limiter(tb, wait=True, max_wait=0.5).build()
    script = Script()
    with pytest.raises(vr.RateLimitError) as info:
        execute(policy, script, mode)
    assert script.calls == []
    assert clock.now() == 0.0          # did not wait at all: the wait (1 s) > max_wait
    assert tb.tokens == 0.0            # and took nothing
    assert info.value.retry_after == pytest.approx(1.0)
    clock.advance(0.6)                 # now the wait is 0.4 s <= max_wait
    assert execute(policy, script, mode) == "ok"
    assert clock.now() == pytest.approx(1.0)


@pytest.mark.parametrize("mode", MODES)
def test_max_wait_with_retry(clock: vr.ManualClock, mode: str) -> None:
    tb = vr.TokenBucket(qps=1, burst=1, clock=clock)
    assert tb.try_acquire()
    policy = (builder(clock).with_retry(NO_JITTER.replace(base_delay=0.1))
              .with_rate_limiter(tb, wait=True, max_wait=0.5).build())
    script = Script(clock=clock)
    # attempt 0: wait 1 s > 0.5 -> RateLimitError(retry_after=1) -> sleep 1 s -> token
    assert execute(policy, script, mode) == "ok"
    assert script.times == [pytest.approx(1.0)]


# --------------------------------------------------------------- the bulkhead --


@pytest.mark.parametrize("path", ["fast", "python"])
@pytest.mark.parametrize("mode", MODES)
def test_full_bulkhead_raises_rate_limit_error(clock: vr.ManualClock, mode: str,
                                               path: str) -> None:
    bh = vr.Bulkhead(1)
    b = builder(clock).with_retry(NO_JITTER).with_bulkhead(bh)
    if path == "python":
        b = b.with_timeout(100.0)
    policy = b.build()
    bh.enter()
    script = Script()
    with pytest.raises(vr.RateLimitError, match="bulkhead") as info:
        execute(policy, script, mode)
    assert script.calls == []
    assert info.value.attempts == 3
    assert bh.rejected == 3
    assert bh.in_flight == 1
    bh.exit()
    assert execute(policy, script, mode) == "ok"
    assert bh.in_flight == 0


@pytest.mark.parametrize("mode", MODES)
def test_bulkhead_slot_returned_on_failure(clock: vr.ManualClock, mode: str) -> None:
    bh = vr.Bulkhead(1)
    policy = builder(clock).with_retry(NO_JITTER).with_bulkhead(bh).build()
    script = Script(forever=vr.UnavailableError("x"))
    with pytest.raises(vr.UnavailableError):
        execute(policy, script, mode)
    assert len(script.calls) == 3
    assert bh.in_flight == 0
    assert bh.admitted == 3


def test_bulkhead_rejection_takes_no_token(clock: vr.ManualClock) -> None:
    tb = vr.TokenBucket(qps=1, burst=5, clock=clock)
    bh = vr.Bulkhead(1)
    policy = builder(clock).with_rate_limiter(tb).with_bulkhead(bh).build()
    bh.enter()
    with pytest.raises(vr.RateLimitError, match="bulkhead"):
        policy.execute(Script())
    assert tb.tokens == 5.0
    assert (tb.admitted, bh.rejected) == (0, 1)  # the bulkhead refused before the bucket


def test_full_bulkhead_and_empty_bucket_report_the_bulkhead(clock: vr.ManualClock) -> None:
    # The native first attempt asks the bulkhead before the bucket: a refused
    # slot never costs (or even asks for) a token.
    tb = vr.TokenBucket(qps=1, burst=1, clock=clock)
    assert tb.try_acquire()
    bh = vr.Bulkhead(1)
    policy = builder(clock).with_rate_limiter(tb).with_bulkhead(bh).build()
    bh.enter()
    with pytest.raises(vr.RateLimitError, match="bulkhead full"):
        policy.execute(Script())
    assert tb.rejected == 0
    bh.exit()
    with pytest.raises(vr.RateLimitError, match="rate limit exceeded"):
        policy.execute(Script())
    assert (bh.in_flight, tb.rejected) == (0, 1)  # the slot went back with the refusal


async def test_queued_async_call_takes_one_token(clock: vr.ManualClock) -> None:
    tb = vr.TokenBucket(qps=1, burst=5, clock=clock)
    bh = vr.Bulkhead(1, max_queue=1)
    policy = builder(clock).with_rate_limiter(tb).with_bulkhead(bh).build()
    bh.enter()
    script = Script()
    task = asyncio.create_task(policy.execute_async(script.call_async))
    for _ in range(5):
        await asyncio.sleep(0)
    assert bh.waiting == 1
    bh.exit()
    assert await task == "ok"
    assert len(script.calls) == 1
    assert tb.tokens == 4.0  # one call, one token
    assert (tb.admitted, tb.rejected, bh.rejected) == (1, 0, 0)  # and counted once


# ------------------------------------------------ what passes straight through --


@pytest.mark.parametrize("path", ["fast", "python"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("error_type", [vr.ErrorType.NOT_FOUND, vr.ErrorType.INVALID_SPEC,
                                        vr.ErrorType.UNAUTHORIZED, vr.ErrorType.NOT_SUPPORTED,
                                        vr.ErrorType.QUOTA_EXCEEDED, vr.ErrorType.CONFLICT])
def test_business_errors_pass_through_and_count_as_success(
        clock: vr.ManualClock, mode: str, path: str, error_type: vr.ErrorType) -> None:
    cb = breaker(clock, threshold=1)
    tb = vr.TokenBucket(10, 10, clock=clock)
    b = builder(clock).with_retry(NO_JITTER).with_circuit_breaker(cb).with_rate_limiter(tb)
    if path == "python":
        b = b.with_timeout(100.0)
    policy = b.build()
    err = vr.new_error(error_type, "answer")
    script = Script(err)
    with pytest.raises(vr.ProviderError) as info:
        execute(policy, script, mode)
    assert info.value is err
    assert len(script.calls) == 1
    assert clock.now() == 0.0
    assert cb.state is BreakerState.CLOSED  # threshold 1, yet not opened
    assert cb.successes == 1
    assert cb.failures_total == 0


@pytest.mark.parametrize("path", ["fast", "python"])
@pytest.mark.parametrize("mode", MODES)
def test_plain_exceptions_pass_through_and_count_as_failure(clock: vr.ManualClock, mode: str,
                                                            path: str) -> None:
    cb = breaker(clock, threshold=1)
    b = builder(clock).with_retry(NO_JITTER).with_circuit_breaker(cb)
    if path == "python":
        b = b.with_timeout(100.0)
    err = ValueError("bug")
    script = Script(err)
    with pytest.raises(ValueError) as info:
        execute(b.build(), script, mode)
    assert info.value is err
    assert len(script.calls) == 1
    assert cb.state is BreakerState.OPEN


@pytest.mark.parametrize("path", ["fast", "python"])
def test_keyboard_interrupt_passes_through_and_releases(clock: vr.ManualClock,
                                                        path: str) -> None:
    cb = breaker(clock, threshold=1)
    bh = vr.Bulkhead(1)
    b = builder(clock).with_retry(NO_JITTER).with_circuit_breaker(cb).with_bulkhead(bh)
    if path == "python":
        b = b.with_timeout(100.0)
    script = Script(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        b.build().execute(script)
    assert len(script.calls) == 1
    assert cb.state is BreakerState.CLOSED
    assert cb.failures_total == 0 and cb.successes == 0
    assert cb.released == 1
    assert bh.in_flight == 0


# ---------------------------------------- sync == async, fast path == Python path --


def _scenarios() -> list:
    return [
        pytest.param(lambda: Script(), id="success"),
        pytest.param(lambda: Script(vr.UnavailableError("a"), vr.RetryableError("b")),
                     id="two-transient"),
        pytest.param(lambda: Script(forever=vr.UnavailableError("down")), id="exhausted"),
        pytest.param(lambda: Script(vr.NotFoundError("gone")), id="not-found"),
        pytest.param(lambda: Script(ValueError("bug")), id="plain-exception"),
        pytest.param(lambda: Script(vr.RateLimitError("slow", retry_after=4.0)),
                     id="retry-after"),
        pytest.param(lambda: Script(vr.ConflictError("dup")), id="conflict"),
        pytest.param(lambda: Script(forever=vr.OperationTimeoutError("provider timeout")),
                     id="provider-timeouts"),
    ]


def _run_scenario(make_script, mode: str, path: str) -> tuple:
    clock = vr.ManualClock()
    cb = breaker(clock, threshold=100)
    tb = vr.TokenBucket(100, 100, clock=clock)
    bh = vr.Bulkhead(4)
    b = (builder(clock).with_retry(NO_JITTER).with_circuit_breaker(cb).with_rate_limiter(tb)
         .with_bulkhead(bh))
    if path == "python":
        b = b.with_timeout(1000.0)
    script = make_script()
    script.clock = clock
    try:
        outcome: tuple = ("ok", execute(b.build(), script, mode))
    except Exception as exc:  # noqa: BLE001
        last = script.raised[-1] if script.raised else None
        outcome = ("raised", type(exc).__name__, exc is last, getattr(exc, "attempts", None),
                   exc.__cause__ is (last.__cause__ if last is not None else None))
    return (outcome, len(script.calls), script.times, clock.now(), cb.successes,
            cb.failures_total, cb.state, tb.admitted, bh.admitted, bh.in_flight)


@pytest.mark.parametrize("make_script", _scenarios())
@pytest.mark.parametrize("path", ["fast", "python"])
def test_sync_and_async_agree(make_script, path: str) -> None:
    assert _run_scenario(make_script, "async", path) == _run_scenario(make_script, "sync", path)


@pytest.mark.parametrize("make_script", _scenarios())
@pytest.mark.parametrize("mode", MODES)
def test_fast_and_python_paths_agree(make_script, mode: str) -> None:
    # provider-timeouts: the Python path's overall timeout (call_until) must not mistake the
    # provider's own OperationTimeoutError for its deadline (a regression test).
    assert _run_scenario(make_script, mode, "python") == _run_scenario(make_script, mode, "fast")


def test_scenario_outcomes_are_the_expected_ones() -> None:
    # Pin the shared outcomes down, so that "agree" cannot mean "agree on nonsense".
    outcomes = {p.id: _run_scenario(p.values[0], "sync", "fast") for p in _scenarios()}
    assert outcomes["success"][0] == ("ok", "ok")
    assert outcomes["two-transient"][:4] == (("ok", "ok"), 3, [0.0, 0.5, 1.5], 1.5)
    assert outcomes["exhausted"][0] == ("raised", "UnavailableError", True, 3, True)
    assert outcomes["exhausted"][1:4] == (3, [0.0, 0.5, 1.5], 1.5)
    assert outcomes["not-found"][:4] == (("raised", "NotFoundError", True, None, True), 1,
                                         [0.0], 0.0)
    assert outcomes["retry-after"][:4] == (("ok", "ok"), 2, [0.0, 4.0], 4.0)
    assert outcomes["provider-timeouts"][0] == ("raised", "OperationTimeoutError", True, 3,
                                                True)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_last_error_keeps_its_own_context(clock: vr.ManualClock, mode: str) -> None:
    policy = builder(clock).with_retry(NO_JITTER.replace(max_attempts=2)).build()
    raised: list[BaseException] = []

    def step():
        try:
            {}["missing"]
        except KeyError:
            raised.append(vr.RetryableError(f"e{len(raised)}"))
            raise raised[-1]  # implicit chaining (__context__) is the point

    async def astep():
        return step()

    with pytest.raises(vr.RetryableError) as info:
        if mode == "sync":
            policy.execute(step)
        else:
            asyncio.run(policy.execute_async(astep))
    assert info.value is raised[-1]
    assert isinstance(info.value.__context__, KeyError)


# --------------------------------------------------------------------- threads --


def test_threads_share_one_policy_exactly() -> None:
    clock = vr.ManualClock()  # frozen: no refill during the test
    cb = vr.CircuitBreaker("shared", "fake", "prod", clock=clock)
    tb = vr.TokenBucket(qps=1, burst=1000, clock=clock)
    policy = (vr.PolicyBuilder("threads").with_circuit_breaker(cb).with_rate_limiter(tb)
              .with_clock(clock).build())
    ok = [0] * 4
    limited = [0] * 4
    other: list[BaseException] = []
    barrier = threading.Barrier(4)

    def worker(i: int) -> None:
        barrier.wait()
        for _ in range(2000):
            try:
                assert policy.execute(int, "7") == 7
                ok[i] += 1
            except vr.RateLimitError:
                limited[i] += 1
            except BaseException as exc:  # noqa: BLE001
                other.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert other == []
    assert sum(ok) == 1000
    assert sum(limited) == 7000
    assert tb.admitted == 1000
    assert tb.rejected == 7000
    assert tb.tokens == 0.0
    assert cb.successes == 1000
    assert cb.failures_total == 0
    assert cb.released == 7000  # every rate-limited call gave its breaker ticket back
    assert cb.rejected == 0
    assert cb.state is BreakerState.CLOSED


def test_policy_is_reusable_and_independent_of_calls(clock: vr.ManualClock) -> None:
    policy = builder(clock).with_retry(NO_JITTER).build()
    results = [policy.execute(functools.partial(pow, 2), n) for n in range(5)]
    assert results == [1, 2, 4, 8, 16]


# --------------------------------------------- deadlines trip the breaker --


async def hang() -> None:
    await asyncio.Event().wait()


async def test_timeouts_count_as_breaker_failures() -> None:
    # Each attempt is cut off by the policy's deadline: the provider did not answer
    # in time, a Timeout, which is a breaker failure (DEADLINE_EXCEEDED in the Go
    # interceptor). Three of them open a threshold-3 breaker.
    cb = vr.CircuitBreaker("slow", "fake", "prod", vr.BreakerConfig(failure_threshold=3))
    policy = vr.PolicyBuilder("slow").with_circuit_breaker(cb).with_timeout(0.005).build()
    for n in range(3):
        with pytest.raises(vr.OperationTimeoutError) as info:
            await policy.execute_async(hang)
        assert info.value.type is vr.ErrorType.TIMEOUT
        assert cb.failures_total == n + 1
    assert cb.state is BreakerState.OPEN
    assert cb.released == 0
    with pytest.raises(vr.CircuitOpenError):
        await policy.execute_async(hang)


async def test_per_attempt_timeout_cuts_one_attempt_and_retries() -> None:
    cb = vr.CircuitBreaker("hung", "fake", "prod", vr.BreakerConfig(failure_threshold=5))
    retry = vr.RetryConfig(max_attempts=3, base_delay=0.0, max_delay=0.0, jitter=False)
    policy = (vr.PolicyBuilder("hung").with_retry(retry).with_circuit_breaker(cb)
              .with_timeout(5.0, per_attempt=0.005).build())
    calls: list[int] = []

    async def first_hangs() -> str:
        calls.append(vr.current_attempt())
        if len(calls) == 1:
            await hang()
        return "second"

    assert await policy.execute_async(first_hangs) == "second"
    assert calls == [0, 1]
    assert (cb.failures_total, cb.successes, cb.failures) == (1, 1, 0)
    assert policy.attempt_timeout == 0.005


async def test_asyncio_timeout_around_execute_async_counts_as_a_failure() -> None:
    if not hasattr(asyncio, "timeout"):
        pytest.skip("asyncio.timeout: Python 3.11+")
    cb = vr.CircuitBreaker("outer", "fake", "prod", vr.BreakerConfig(failure_threshold=1))
    policy = vr.PolicyBuilder("outer").with_circuit_breaker(cb).build()  # the fast path
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.005):
            await policy.execute_async(hang)
    assert cb.state is BreakerState.OPEN
    assert (cb.failures_total, cb.released) == (1, 0)


async def test_outside_cancellation_records_nothing_and_is_not_retried() -> None:
    retry = vr.RetryConfig(max_attempts=5, base_delay=0.0, max_delay=0.0, jitter=False)
    policy = vr.PolicyBuilder("cancel").with_retry(retry).with_timeout(5.0).build()
    calls: list[int] = []

    async def converts_its_cancellation() -> None:
        # A library that turns the cancellation into an error of its own: the task is
        # still being cancelled, and a cancelled task must stop, not retry.
        calls.append(1)
        try:
            await hang()
        except asyncio.CancelledError:
            raise vr.UnavailableError("connection closed") from None

    if hasattr(asyncio.Task, "cancelling"):  # Python 3.10 cannot tell (documented)
        task = asyncio.create_task(policy.execute_async(converts_its_cancellation))
        await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises((asyncio.CancelledError, vr.UnavailableError)):
            await task
        assert calls == [1]

    cb = vr.CircuitBreaker("cancel", "fake", "prod", vr.BreakerConfig(failure_threshold=1))
    policy = (vr.PolicyBuilder("cancel").with_retry(retry).with_circuit_breaker(cb)
              .with_timeout(5.0).build())
    task = asyncio.create_task(policy.execute_async(hang))
    await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cb.state is BreakerState.CLOSED
    assert cb.failures_total == 0


@pytest.mark.skipif(not hasattr(asyncio.Task, "cancelling"), reason="Task.cancelling: 3.11+")
async def test_deadline_coinciding_with_an_outside_cancel_stays_cancelled(
        deadline_with_outside_cancel: None) -> None:
    retry = vr.RetryConfig(max_attempts=5, base_delay=0.0, max_delay=0.0, jitter=False)
    policy = vr.PolicyBuilder("both").with_retry(retry).with_timeout(0.005).build()
    calls: list[int] = []

    async def slow() -> None:
        calls.append(1)
        await hang()

    task = asyncio.create_task(policy.execute_async(slow))
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5.0)  # bounded: a regression must fail, not hang
    assert calls == [1]


# ------------------------------------------------------------- retry_after --


@pytest.mark.parametrize("mode", MODES)
def test_retry_after_beyond_max_delay_gives_up_at_once(clock: vr.ManualClock, mode: str) -> None:
    # A provider says "come back in 7 days"; the policy may wait 1 s at most: it must
    # not sleep 7 days, and the caller gets the error itself to requeue.
    week = 7 * 86400.0
    retry = vr.RetryConfig(max_attempts=5, base_delay=0.1, max_delay=1.0, jitter=False)
    policy = builder(clock).with_retry(retry).build()
    script = Script(vr.RateLimitError("quota", retry_after=week), clock=clock)
    with pytest.raises(vr.RateLimitError) as info:
        execute(policy, script, mode)
    assert info.value.retry_after == week
    assert info.value.attempts == 1
    assert len(script.calls) == 1
    assert clock.now() == 0.0
    assert policy.retrier.exhausted == 1


@pytest.mark.parametrize("mode", MODES)
def test_retry_after_within_max_delay_is_a_floor(clock: vr.ManualClock, mode: str) -> None:
    retry = vr.RetryConfig(max_attempts=3, base_delay=0.1, max_delay=5.0, jitter=False)
    policy = builder(clock).with_retry(retry).build()
    script = Script(vr.UnavailableError("busy", retry_after=2.5), clock=clock)
    assert execute(policy, script, mode) == "ok"
    assert script.times == [0.0, 2.5]


def test_open_breaker_longer_than_max_delay_is_not_retried_into(clock: vr.ManualClock) -> None:
    # The defaults: max_delay 30 s, reset_timeout 60 s. Retrying into the open breaker
    # cannot succeed before it half-opens: give up with its CircuitOpenError at once.
    cb = breaker(clock, threshold=1, reset=60.0)
    with pytest.raises(vr.UnavailableError):
        cb.call(Script(vr.UnavailableError("trip")))
    policy = builder(clock).with_retry(vr.RetryConfig.default()).with_circuit_breaker(cb).build()
    with pytest.raises(vr.CircuitOpenError) as info:
        policy.execute(Script())
    assert info.value.retry_after == pytest.approx(60.0)
    assert cb.rejected == 1
    assert clock.now() == 0.0


def test_retry_after_on_the_system_clock_never_sleeps_past_max_delay() -> None:
    # The largest retry_after an error may carry (1e9 s: time.sleep would overflow
    # a few orders of magnitude further) with max_delay 1 s: no sleep at all.
    retry = vr.RetryConfig(max_attempts=3, base_delay=0.01, max_delay=1.0)
    policy = vr.PolicyBuilder("sys").with_retry(retry).build()
    script = Script(vr.RateLimitError("x", retry_after=vr.errors.MAX_RETRY_AFTER))
    with pytest.raises(vr.RateLimitError) as info:
        policy.execute(script)
    assert info.value.retry_after == vr.errors.MAX_RETRY_AFTER
    assert len(script.calls) == 1


# ------------------------------------------------------------ async refused --


async def _async_fn() -> str:
    return "never"


class _AsyncCallable:
    async def __call__(self) -> str:
        return "never"


@pytest.mark.parametrize("fn", [_async_fn, _AsyncCallable(), functools.partial(_async_fn)],
                         ids=["coroutine-function", "async-__call__", "partial"])
@pytest.mark.parametrize("path", ["fast", "python"])
def test_execute_refuses_an_async_function(clock: vr.ManualClock, fn: object, path: str) -> None:
    cb = breaker(clock)
    bh = vr.Bulkhead(2)
    b = builder(clock).with_circuit_breaker(cb).with_bulkhead(bh)
    policy = (b.with_timeout(30.0) if path == "python" else b).build()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "coroutine was never awaited"
        with pytest.raises(TypeError, match=r"execute_async"):
            policy.execute(fn)  # type: ignore[arg-type]
    assert (cb.successes, cb.failures_total, bh.in_flight) == (0, 0, 0)


def test_decorator_on_an_async_callable_object_is_async(clock: vr.ManualClock) -> None:
    policy = builder(clock).build()
    wrapped = policy(_AsyncCallable())
    assert inspect.iscoroutinefunction(wrapped)
    assert asyncio.run(wrapped()) == "never"


# -------------------------------------------------------------- retry_on --


@pytest.mark.parametrize("mode", MODES)
def test_retry_on_extends_what_is_retried(clock: vr.ManualClock, mode: str) -> None:
    retry = vr.RetryConfig(max_attempts=3, base_delay=1.0, max_delay=1.0, jitter=False)
    plain = builder(clock).with_retry(retry).build()
    script = Script(ConnectionResetError("reset"), clock=clock)
    with pytest.raises(ConnectionResetError):
        execute(plain, script, mode)
    extended = builder(clock).with_retry(retry, retry_on=ConnectionError).build()
    script = Script(ConnectionResetError("reset"), clock=clock)
    assert execute(extended, script, mode) == "ok"
    assert len(script.calls) == 2
    assert extended.retrier.config.retry_on is ConnectionError


# -------------------------------------------------------- per-RPC timeout --


def test_with_rpc_timeout_gives_each_attempt_the_operations_timeout(clock: vr.ManualClock) -> None:
    rpc = vr.RPCConfig(describe=12.0)
    policy = builder(clock).with_timeout(100.0).with_rpc_timeout(rpc, "Describe").build()
    assert (policy.timeout, policy.attempt_timeout) == (100.0, 12.0)
    seen: list[float | None] = []
    policy.execute(lambda: seen.append(vr.remaining(clock)))
    assert seen == [12.0]  # the tighter budget, for a blocking call's own timeout
    assert builder(clock).with_rpc_timeout(vr.RPCConfig(), "Create").build().attempt_timeout == 240


async def test_async_attempts_see_their_deadline_when_called_and_while_awaited() -> None:
    """A gRPC stub reads its ``timeout=vr.remaining()`` when called, before
    the returned call is awaited: both moments must see the attempt's budget."""
    clock = vr.ManualClock()
    seen: list[tuple[str, float | None]] = []

    async def describe() -> str:
        seen.append(("awaited", vr.remaining(clock)))
        return "ok"

    def stub_call() -> Awaitable[str]:
        seen.append(("called", vr.remaining(clock)))
        return describe()

    policy = builder(clock).with_timeout(100.0).with_rpc_timeout(vr.RPCConfig(describe=12.0),
                                                                   "Describe").build()
    assert await policy.execute_async(stub_call) == "ok"
    overall = builder(clock).with_timeout(100.0).build()
    assert await overall.execute_async(stub_call) == "ok"
    retrier = vr.Retrier(vr.RetryConfig(), clock=clock, timeout=7.0)
    assert await retrier.call_async(stub_call) == "ok"
    assert seen == [("called", 12.0), ("awaited", 12.0), ("called", 100.0), ("awaited", 100.0),
                    ("called", 7.0), ("awaited", 7.0)]
    assert vr.remaining(clock) is None  # nothing left behind


async def test_an_attempt_past_its_deadline_is_not_called() -> None:
    clock = vr.ManualClock()
    calls: list[int] = []

    async def work() -> None:
        calls.append(1)

    policy = builder(clock).with_timeout(None, per_attempt=5.0).build()
    outer = builder(clock).with_timeout(1.0).build()

    async def past_deadline() -> None:
        clock.advance(2.0)  # the outer budget is spent before the inner attempt starts
        await policy.execute_async(work)

    with pytest.raises(vr.OperationTimeoutError):
        await outer.execute_async(past_deadline)
    assert calls == []


# ------------------------------------------------- fixed composition, subclasses --


@pytest.mark.parametrize("attribute", ["name", "retrier", "breaker", "limiter", "bulkhead", "wait",
                                       "max_wait", "timeout", "attempt_timeout"])
def test_policy_attributes_are_read_only(clock: vr.ManualClock, attribute: str) -> None:
    # The native layer holds the same breaker, bucket and bulkhead: a Python attribute
    # that could be replaced would let the two disagree (a slot taken from one
    # bulkhead and returned to another).
    bh = vr.Bulkhead(1)
    policy = builder(clock).with_bulkhead(bh).build()
    before = getattr(policy, attribute)
    with pytest.raises(AttributeError):
        setattr(policy, attribute, vr.Bulkhead(5))
    assert getattr(policy, attribute) is before


def test_a_subclass_override_of_execute_wins(clock: vr.ManualClock) -> None:
    calls: list[str] = []

    class Audited(vr.Policy):
        def execute(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def,override]
            calls.append(fn.__name__)
            return super().execute(fn, *args, **kwargs)

    class MoreAudited(Audited):
        pass

    for cls in (Audited, MoreAudited):
        policy = cls("audited", clock=clock)
        assert policy.execute(len, "abc") == 3
    assert calls == ["len", "len"]


def test_a_subclass_without_an_override_keeps_the_native_fast_path(clock: vr.ManualClock) -> None:
    class Plain(vr.Policy):
        pass

    assert "execute" in Plain.__dict__  # the specialised native descriptor
    assert type(Plain.__dict__["execute"]) is type(vr.Policy.__dict__["execute"])
    assert Plain("plain", clock=clock).execute(len, "ab") == 2
