"""ResilientProvider: every operation of a Provider under the guide's policy.

Driven on a ManualClock against the FaultInjectingProvider: timeouts per
operation, retries, idempotency, the shared breaker and bucket, the
classification of errors, the per-call metrics, and bad input.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

import virtrigaud_resilience as vr
from virtrigaud_resilience import rpcstats
from virtrigaud_resilience.providers import (
    Capabilities,
    CreateRequest,
    CreateResponse,
    DescribeResponse,
    FaultInjectingProvider,
    Latency,
    Outage,
    PowerOp,
    Quota,
    ResilientProvider,
    TaskStatus,
    mark_never_sent,
    never_sent,
)

_names = itertools.count()
E = vr.ErrorType


def fresh(fake: Any = None, config: vr.Config | None = None, clock: vr.ManualClock | None = None,
          **options: Any) -> ResilientProvider:
    """A ResilientProvider of its own provider name (its own shared breaker and metrics)."""
    clock = clock or vr.ManualClock()
    fake = fake if fake is not None else FaultInjectingProvider(clock=clock)
    return ResilientProvider(fake, "fake", f"rp-{next(_names)}", config, clock=clock, **options)


def env_config(**keys: str) -> vr.Config:
    return vr.Config.from_env(keys)


# -- the contract passes through ------------------------------------------------------------


async def test_every_operation_passes_through() -> None:
    clock = vr.ManualClock()
    fake = FaultInjectingProvider(clock=clock, task_duration=5)
    rp = fresh(fake, clock=clock)
    await rp.validate()
    assert await rp.get_capabilities() == Capabilities()
    created = await rp.create(CreateRequest("web-1", cpus=2))
    assert isinstance(created, CreateResponse) and created.id == "vm-0001" and created.task_ref
    assert (await rp.create(CreateRequest("web-1"))).id == "vm-0001"  # idempotent by name
    assert await rp.task_status(created.task_ref) == TaskStatus(done=False)
    clock.advance(5)
    assert (await rp.task_status(created.task_ref)).succeeded
    assert await rp.power("vm-0001", PowerOp.OFF)
    assert (await rp.describe("vm-0001")).power_state == "Off"
    assert await rp.power("vm-0001", "On")
    await rp.reconfigure("vm-0001", CreateRequest("web-1", cpus=4))
    described = await rp.describe("vm-0001")
    assert described.exists and described.provider_raw["cpus"] == "4"
    await rp.delete("vm-0001")
    assert await rp.describe("vm-0001") == DescribeResponse(exists=False)
    assert isinstance(rp, vr.providers.Provider)


def test_each_operation_gets_its_rpc_timeout() -> None:
    rp = fresh()
    assert {op: rp.policy(op).attempt_timeout for op in (
        "describe", "create", "delete", "power", "reconfigure", "validate", "task_status",
        "get_capabilities")} == {
        "describe": 30.0, "create": 240.0, "delete": 240.0, "power": 240.0,
        "reconfigure": 240.0, "validate": 10.0, "task_status": 10.0, "get_capabilities": 240.0}
    assert rp.policy("Describe") is rp.policy("describe")
    dev = fresh(config=vr.Config.development())
    assert dev.policy("create").attempt_timeout == 600.0
    assert dev.policy("create").retrier.config.max_attempts == 10


def test_default_config_is_the_guides_production_configmap() -> None:
    rp = fresh()
    assert rp.config == vr.Config.production()
    assert rp.breaker.failure_threshold == 15 and rp.breaker.config.reset_timeout == 120
    assert (rp.limiter.qps, rp.limiter.burst) == (20.0, 50)
    assert rp.breaker.name == "vm-operations"


# -- retries ----------------------------------------------------------------------------------


async def test_retryable_errors_are_retried_with_the_configs_backoff() -> None:
    clock = vr.ManualClock()
    fake = FaultInjectingProvider(clock=clock)
    rp = fresh(fake, env_config(RETRY_JITTER="false"), clock)  # 5 attempts, 0.5 s, x2
    fake.fail_next(E.UNAVAILABLE, 2)
    assert (await rp.create(CreateRequest("retried"))).id == "vm-0001"
    assert fake.calls["create"] == 3 and clock.now() == pytest.approx(1.5)


async def test_business_errors_are_not_retried() -> None:
    clock = vr.ManualClock()
    fake = FaultInjectingProvider(clock=clock)
    rp = fresh(fake, clock=clock)
    with pytest.raises(vr.NotFoundError):
        await rp.power("vm-missing", PowerOp.ON)
    assert fake.calls["power"] == 1 and rp.breaker.failures == 0


async def test_attempts_run_out() -> None:
    clock = vr.ManualClock()
    fake = FaultInjectingProvider(clock=clock, errors={E.TIMEOUT: 1.0})
    rp = fresh(fake, clock=clock)
    with pytest.raises(vr.OperationTimeoutError) as info:
        await rp.describe("vm-0001")
    assert info.value.attempts == 3 and fake.calls["describe"] == 3


# -- idempotent=False ------------------------------------------------------------------------


@pytest.mark.parametrize(("scenario", "calls", "served", "outcome"), [
    # the provider answered with a retryable error: it may have acted; not retried
    ("unavailable", 1, 1, vr.UnavailableError),
    ("quota", 1, 1, vr.RateLimitError),
    # a refused connection proves the call never arrived: retried until it succeeds
    ("outage", 2, 1, None),
])
async def test_non_idempotent_operations_retry_only_unsent_calls(
        scenario: str, calls: int, served: int, outcome: type[Exception] | None) -> None:
    clock = vr.ManualClock()
    fake = FaultInjectingProvider(clock=clock, outages=[Outage(0, 0.5)] if scenario == "outage"
                                  else (), quota=Quota(0.01, 1) if scenario == "quota" else None)
    if scenario == "quota":
        await fake.validate()  # spends the provider's quota
    if scenario == "unavailable":
        fake.fail_next(E.UNAVAILABLE)
    rp = fresh(fake, clock=clock, idempotent={"Create": False})
    assert not rp.is_idempotent("create") and rp.is_idempotent("delete")
    if outcome is None:
        assert (await rp.create(CreateRequest("once"))).id == "vm-0001"
    else:
        with pytest.raises(outcome):
            await rp.create(CreateRequest("once"))
    assert (fake.calls["create"], fake.served["create"]) == (calls, served)


async def test_non_idempotent_operations_retry_our_own_rate_limit() -> None:
    clock = vr.ManualClock()
    fake = FaultInjectingProvider(clock=clock)
    rp = fresh(fake, env_config(RATE_LIMIT_QPS="1", RATE_LIMIT_BURST="1"), clock,
               idempotent={"create": False})
    await rp.validate()  # takes the bucket's only token
    assert (await rp.create(CreateRequest("limited"))).id == "vm-0001"
    assert fake.calls["create"] == 1 and clock.now() >= 1.0  # waited out retry_after, then sent


async def test_non_idempotent_operations_retry_across_an_open_breaker() -> None:
    clock = vr.ManualClock()
    fake = FaultInjectingProvider(clock=clock)
    config = env_config(CB_RESET_SECONDS="0.4", RETRY_BASE_DELAY="0.5", RETRY_JITTER="false")
    rp = fresh(fake, config, clock, idempotent={"create": False})
    rp.breaker.force_open()
    rp.breaker.reset()
    for _ in range(rp.breaker.failure_threshold):
        permit = rp.breaker.try_acquire()
        assert permit is not None
        permit.failure()
    assert (await rp.create(CreateRequest("after-open"))).id == "vm-0001"
    assert fake.calls["create"] == 1  # the refusal was retried; the call was sent once


def test_never_sent() -> None:
    assert never_sent(vr.CircuitOpenError("b"))
    assert never_sent(vr.RateLimitError("ours"))
    assert never_sent(vr.UnavailableError("refused", ConnectionRefusedError()))
    assert never_sent(mark_never_sent(vr.UnavailableError("adapter")))
    assert not never_sent(vr.UnavailableError("dropped"))
    assert not never_sent(vr.OperationTimeoutError("slow"))
    wrapped = RuntimeError("wrapper")
    wrapped.__cause__ = ConnectionRefusedError()
    assert never_sent(wrapped)
    loop = RuntimeError("a")
    loop.__context__ = RuntimeError("b")
    loop.__context__.__context__ = loop  # a cycle must not hang the walk
    assert not never_sent(loop)


# -- timeouts and cancellation (real time) ---------------------------------------------------


async def test_a_hung_attempt_is_cut_off_and_counts_as_a_failure() -> None:
    fake = FaultInjectingProvider(latency=Latency(5.0))  # real time
    rp = ResilientProvider(fake, "fake", f"rp-{next(_names)}",
                           env_config(RPC_TIMEOUT_DESCRIBE="50ms", RETRY_MAX_ATTEMPTS="1"))
    with pytest.raises(vr.OperationTimeoutError):
        await rp.describe("vm-0001")
    assert rp.breaker.failures == 1
    assert rpcstats.rpc_stats("fake", "Describe").requests("DeadlineExceeded") >= 1


async def test_a_cancelled_call_records_nothing_and_frees_its_slot() -> None:
    fake = FaultInjectingProvider(latency=Latency(5.0))
    rp = ResilientProvider(fake, "fake", f"rp-{next(_names)}",
                           env_config(CB_FAILURE_THRESHOLD="1", CB_HALF_OPEN_MAX_CALLS="1",
                                      CB_RESET_SECONDS="0.01"))
    permit = rp.breaker.try_acquire()
    assert permit is not None
    permit.failure()
    await asyncio.sleep(0.02)
    outcomes = rpcstats.operation_stats("Describe", "fake", rp.name)
    task = asyncio.ensure_future(rp.describe("vm-0001"))
    await asyncio.sleep(0.05)
    assert rp.breaker.half_open_calls == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rp.breaker.half_open_calls == 0 and rp.breaker.state is vr.BreakerState.HALF_OPEN
    assert (outcomes.success, outcomes.error) == (0, 0)


# -- the shared breaker and bucket -------------------------------------------------------------


async def test_providers_of_one_config_share_breaker_and_bucket() -> None:
    clock = vr.ManualClock()
    config = env_config(CB_FAILURE_THRESHOLD="2", RETRY_MAX_ATTEMPTS="1")
    name = f"rp-{next(_names)}"
    fake = FaultInjectingProvider(clock=clock, errors={E.UNAVAILABLE: 1.0})
    first = ResilientProvider(fake, "fake", name, config, clock=clock)
    second = ResilientProvider(fake, "fake", name, config, clock=clock)
    other = ResilientProvider(fake, "fake", name, vr.Config(), clock=clock)
    assert first.breaker is second.breaker and first.limiter is second.limiter
    assert other.breaker is not first.breaker
    for rp in (first, second):
        with pytest.raises(vr.UnavailableError):
            await rp.describe("vm-0001")
    with pytest.raises(vr.CircuitOpenError):
        await first.describe("vm-0001")
    assert fake.calls["describe"] == 2  # the third call never reached the provider


async def test_explicit_registries_are_used() -> None:
    breakers = vr.BreakerRegistry(vr.BreakerConfig(failure_threshold=1))
    limiters = vr.RateLimiterRegistry(qps=5, burst=1)
    rp = fresh(breakers=breakers, limiters=limiters)
    assert rp.breaker is breakers.get("vm-operations", "fake", rp.name)
    assert rp.limiter is limiters.get("fake", rp.name)


# -- classification ----------------------------------------------------------------------------


class Raising(FaultInjectingProvider):
    """A provider whose describe raises what it is told."""

    def __init__(self, exc: BaseException, clock: vr.ManualClock) -> None:
        super().__init__(clock=clock)
        self.exc = exc

    async def describe(self, vm_id: str) -> DescribeResponse:
        self.calls["describe"] += 1
        raise self.exc


@pytest.mark.parametrize(("raised", "expected", "attempts", "breaker_failures"), [
    (ConnectionResetError("reset"), vr.UnavailableError, 3, 3),
    (TimeoutError("slow"), vr.OperationTimeoutError, 3, 3),
    (PermissionError("denied"), vr.UnauthorizedError, 1, 0),
    (NotImplementedError("no"), vr.NotSupportedError, 1, 0),
    (KeyError("bug"), KeyError, 1, 1),
])
async def test_errors_are_classified_before_breaker_and_retry(
        raised: BaseException, expected: type[BaseException], attempts: int,
        breaker_failures: int) -> None:
    clock = vr.ManualClock()
    fake = Raising(raised, clock)
    rp = fresh(fake, clock=clock)
    with pytest.raises(expected) as info:
        await rp.describe("vm-0001")
    assert info.value is raised or info.value.__cause__ is raised
    assert fake.calls["describe"] == attempts and rp.breaker.failures == breaker_failures


class WrongType(FaultInjectingProvider):
    async def describe(self, vm_id: str) -> Any:
        return {"exists": True}


async def test_a_wrong_return_type_is_named() -> None:
    rp = fresh(WrongType())
    with pytest.raises(TypeError, match=r"WrongType.describe\(\) must return DescribeResponse"):
        await rp.describe("vm-0001")


# -- metrics -----------------------------------------------------------------------------------


async def test_operations_and_attempts_are_counted() -> None:
    pytest.importorskip("prometheus_client")
    import prometheus_client

    from virtrigaud_resilience import metrics

    clock = vr.ManualClock()
    fake = FaultInjectingProvider(clock=clock, latency=Latency(0.003))
    rp = fresh(fake, env_config(RETRY_JITTER="false"), clock)
    fake.fail_next(E.UNAVAILABLE)
    await rp.create(CreateRequest("counted"))
    with pytest.raises(vr.NotFoundError):
        await rp.power("vm-9999", PowerOp.ON)
    registry = prometheus_client.CollectorRegistry()
    metrics.register(registry)
    labels = {"provider_type": "fake", "provider": rp.name}
    assert registry.get_sample_value("virtrigaud_vm_operations_total",
                                     {**labels, "operation": "Create", "outcome": "success"}) == 1
    assert registry.get_sample_value("virtrigaud_vm_operations_total",
                                     {**labels, "operation": "Power", "outcome": "error"}) == 1
    create = rpcstats.rpc_stats("fake", "Create")
    assert create.requests("Unavailable") >= 1 and create.requests("OK") >= 1
    assert registry.get_sample_value("virtrigaud_provider_rpc_latency_seconds_bucket",
                                     {"provider_type": "fake", "method": "Power",
                                      "le": "0.004"}) >= 1
    quiet = fresh(metrics=False, config=vr.Config.from_env({}))
    before = rpcstats.rpc_stats("fake", "Validate").requests()
    await quiet.validate()
    assert rpcstats.rpc_stats("fake", "Validate").requests() == before


# -- bad input ---------------------------------------------------------------------------------


class Missing:
    async def validate(self) -> None:
        return None


class SyncOps(FaultInjectingProvider):
    def describe(self, vm_id: str) -> Any:  # type: ignore[override]
        return DescribeResponse(exists=False)


@pytest.mark.parametrize(("make", "error", "text"), [
    (lambda: ResilientProvider(Missing(), "t", "n"), TypeError, "missing the operation"),  # type: ignore[arg-type]
    (lambda: ResilientProvider(SyncOps(), "t", "n"), TypeError, "describe must be async"),
    (lambda: ResilientProvider(FaultInjectingProvider(), 5, "n"), TypeError, "provider_type"),  # type: ignore[arg-type]
    (lambda: ResilientProvider(FaultInjectingProvider(), "t", "n", {}), TypeError, "config"),  # type: ignore[arg-type]
    (lambda: fresh(idempotent={"launch": False}), ValueError, "launch"),
    (lambda: fresh(idempotent={"create": "no"}), TypeError, "idempotent"),
    (lambda: fresh(idempotent=["launch"]), ValueError, "launch"),
    (lambda: fresh(idempotent=42), TypeError, "ResilientProvider idempotent must be"),
    (lambda: fresh(wait=1), TypeError, "ResilientProvider wait must be a bool, got int 1"),
    (lambda: fresh(wait_for_token=1), TypeError, "ResilientProvider wait must be a bool"),
    (lambda: fresh(retries=3), TypeError, "ResilientProvider got an unexpected keyword "
                                          "argument 'retries'"),
    (lambda: fresh(options={}), TypeError, "ResilientProvider options must be an "
                                           "AdapterOptions"),
    (lambda: fresh(breakers={}), TypeError, "breakers"),
    (lambda: fresh(clock=object()), TypeError, "clock"),
])
@pytest.mark.filterwarnings("ignore:ResilientProvider\\(wait_for_token=:DeprecationWarning")
def test_bad_construction_is_named(make: Any, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        make()


@pytest.mark.parametrize(("call", "error", "text"), [
    (lambda rp: rp.describe(""), ValueError, "vm_id"),
    (lambda rp: rp.describe(7), TypeError, "vm_id"),
    (lambda rp: rp.power("vm-1", "Sideways"), ValueError, "Sideways"),
    (lambda rp: rp.create({"name": "x"}), TypeError, "CreateRequest"),
    (lambda rp: rp.reconfigure("vm-1", None), TypeError, "CreateRequest"),
    (lambda rp: rp.task_status(""), ValueError, "task_ref"),
])
async def test_bad_calls_are_named(call: Any, error: type[Exception], text: str) -> None:
    rp = fresh()
    with pytest.raises(error, match=text):
        await call(rp)
    assert rp.breaker.successes == rp.breaker.failures_total == 0  # nothing was called


@pytest.mark.parametrize(("make", "error", "text"), [
    (lambda: CreateRequest(""), ValueError, "name"),
    (lambda: CreateRequest(5), TypeError, "name"),  # type: ignore[arg-type]
    (lambda: CreateRequest("x", cpus=0), ValueError, "cpus"),
    (lambda: CreateRequest("x", cpus=True), TypeError, "cpus"),
    (lambda: CreateRequest("x", cpus=2.0), TypeError, "cpus"),  # type: ignore[arg-type]
    (lambda: CreateRequest("x", memory_mib=-1), ValueError, "memory_mib"),
    (lambda: CreateRequest("x", networks="lan"), TypeError, "networks"),  # type: ignore[arg-type]
    (lambda: CreateRequest("x", tags=[1]), TypeError, "tags"),  # type: ignore[list-item]
    (lambda: CreateResponse(""), ValueError, "id"),
    (lambda: DescribeResponse(exists=1), TypeError, "exists"),  # type: ignore[arg-type]
    (lambda: DescribeResponse(True, provider_raw={"a": 1}), TypeError, "provider_raw"),  # type: ignore[dict-item]
    (lambda: TaskStatus(done="yes"), TypeError, "done"),  # type: ignore[arg-type]
    (lambda: Capabilities(power_ops=("Explode",)), ValueError, "power_ops"),  # type: ignore[arg-type]
    (lambda: Capabilities(supports_snapshots=None), TypeError, "supports_snapshots"),  # type: ignore[arg-type]
])
def test_contract_dataclasses_validate(make: Any, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        make()


def test_contract_dataclasses_are_frozen_and_normalised() -> None:
    request = CreateRequest("x", networks=["a", "b"])
    assert request.networks == ("a", "b")
    with pytest.raises(AttributeError):
        request.name = "y"  # type: ignore[misc]
    assert Capabilities(power_ops=["On", PowerOp.REBOOT]).power_ops == (PowerOp.ON, PowerOp.REBOOT)
    assert str(PowerOp.SHUTDOWN_GRACEFUL) == "ShutdownGraceful"
