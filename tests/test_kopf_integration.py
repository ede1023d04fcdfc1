"""The kopf integration: at the handler level, and end to end with KopfRunner
against kmock's Kubernetes API emulator on 127.0.0.1."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

kopf = pytest.importorskip("kopf")

import virtrigaud_resilience as vr  # noqa: E402
from virtrigaud_resilience.integrations.kopf import (  # noqa: E402
    resilient_handler,
    temporary_delay,
    to_kopf_error,
    write_condition,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "vm_operator.py"


def kwargs(**extra: Any) -> dict[str, Any]:
    """What kopf passes a handler (the parts the decorator reads)."""
    return {"patch": kopf.Patch(), "status": {}, "meta": {"generation": 2}, "retry": 0,
            "spec": {}, "body": {}, **extra}


def ready_of(patch: Any) -> dict[str, Any]:
    return next(c for c in patch["status"]["conditions"] if c["type"] == "Ready")


# -- the decorator ----------------------------------------------------------------------------


async def test_success_writes_ready_true() -> None:
    @resilient_handler
    async def handler(**_: Any) -> str:
        return "done"

    args = kwargs()
    assert await handler(**args) == "done"
    ready = ready_of(args["patch"])
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == (
        "True", "VMReady", 2)


@pytest.mark.parametrize(("error", "reason", "permanent"), [
    (vr.NotFoundError("gone"), "ResourceNotFound", True),
    (vr.UnauthorizedError("bad token"), "AuthenticationFailed", True),
    (vr.UnavailableError("down"), "ProviderUnavailable", False),
    (vr.CircuitOpenError("b", retry_after=12.0), "ProviderUnavailable", False),
    (vr.InvalidSpecError("cpus"), "ValidationError", True),
    (vr.ConflictError("dup"), "ProviderError", True),
    (vr.QuotaExceededError("disk"), "ProviderError", True),
    (vr.NotSupportedError("snap"), "ProviderError", True),
    (vr.RateLimitError("slow down", retry_after=3.0), "ProviderError", False),
    (vr.OperationTimeoutError("slow"), "ProviderError", False),
    (vr.RetryableError("flaky"), "ProviderError", False),
    (ConnectionResetError("reset"), "ProviderUnavailable", False),  # classified
    (KeyError("bug"), "InternalError", True),
])
async def test_errors_become_kopf_errors_and_conditions(error: Exception, reason: str,
                                                        permanent: bool) -> None:
    @resilient_handler
    async def handler(**_: Any) -> None:
        raise error

    args = kwargs()
    with pytest.raises(kopf.PermanentError if permanent else kopf.TemporaryError) as info:
        await handler(**args)
    assert info.value.__cause__ is error
    ready = ready_of(args["patch"])
    assert (ready["status"], ready["reason"]) == ("False", reason)
    if not permanent:
        assert info.value.delay > 0


def test_sync_handlers_too() -> None:
    @resilient_handler(condition=None)
    def handler(**_: Any) -> None:
        raise vr.UnavailableError("down")

    args = kwargs(retry=3)
    with pytest.raises(kopf.TemporaryError) as info:
        handler(**args)
    assert 4.0 <= info.value.delay <= 4.4  # backoff for kopf's retry 3: 0.5 * 2**3 (+10%)
    assert "status" not in args["patch"]  # condition=None writes nothing


async def test_kopf_errors_and_cancellation_pass_through() -> None:
    own = kopf.TemporaryError("mine", delay=99)

    @resilient_handler
    async def handler(**_: Any) -> None:
        raise own

    args = kwargs()
    with pytest.raises(kopf.TemporaryError) as info:
        await handler(**args)
    assert info.value is own and "status" not in args["patch"]

    @resilient_handler
    async def cancelled(**_: Any) -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await cancelled(**kwargs())


async def test_the_condition_keeps_its_transition_time_while_unchanged() -> None:
    @resilient_handler
    async def handler(**_: Any) -> None:
        raise vr.UnavailableError("down")

    first = kwargs()
    with pytest.raises(kopf.TemporaryError):
        await handler(**first)
    stamp = ready_of(first["patch"])["lastTransitionTime"]
    other = {"type": "Provisioning", "status": "True", "reason": "Creating", "message": "",
             "lastTransitionTime": "2020-01-01T00:00:00Z"}
    status = {"conditions": [other, ready_of(first["patch"])]}
    second = kwargs(status=status, retry=1)
    with pytest.raises(kopf.TemporaryError):
        await handler(**second)
    # same status: set_condition changes nothing, so nothing is patched
    assert "status" not in second["patch"]
    assert write_condition(second["patch"], status, None)  # True: now it changes
    conditions = second["patch"]["status"]["conditions"]
    assert conditions[0] == other and conditions[1]["reason"] == "VMReady"
    assert stamp.endswith("Z")


async def test_the_breaker_can_be_chosen_per_object() -> None:
    breakers = {"a": vr.CircuitBreaker("a", config=vr.BreakerConfig(reset_timeout=30))}
    breakers["a"].force_open()
    breakers["a"].reset()
    for _ in range(breakers["a"].failure_threshold):
        permit = breakers["a"].try_acquire()
        assert permit is not None
        permit.failure()

    @resilient_handler(breaker=lambda spec, **_: breakers.get(spec["provider"]))
    async def handler(**_: Any) -> None:
        raise vr.UnavailableError("down")

    with pytest.raises(kopf.TemporaryError) as info:
        await handler(**kwargs(spec={"provider": "a"}))
    assert 29 < info.value.delay <= 30  # the breaker's remaining open time
    with pytest.raises(kopf.TemporaryError) as other:
        await handler(**kwargs(spec={"provider": "b"}))
    assert other.value.delay <= 0.55  # no breaker: the backoff for retry 0


def test_temporary_delay_precedence() -> None:
    cb = vr.CircuitBreaker("delay", config=vr.BreakerConfig(failure_threshold=1,
                                                             reset_timeout=60))
    config = vr.RetryConfig(base_delay=2.0, jitter=False)
    assert temporary_delay(vr.UnavailableError("x"), 2, retry_config=config) == 8.0
    permit = cb.try_acquire()
    assert permit is not None
    permit.failure()
    assert 59 < temporary_delay(vr.UnavailableError("x"), breaker=cb) <= 60
    assert temporary_delay(vr.RateLimitError("x", retry_after=5), breaker=cb) == 5.0
    assert temporary_delay(vr.RateLimitError("x", retry_after=0), 0,
                           retry_config=config) == 2.0  # 0 is no hint
    cb.force_open()  # held open: no time to tell
    assert temporary_delay(vr.UnavailableError("x"), 1, breaker=cb, retry_config=config) == 4.0
    with pytest.raises(ValueError, match="retry"):
        temporary_delay(vr.UnavailableError("x"), -1)
    with pytest.raises(TypeError, match="retry_config"):
        temporary_delay(vr.UnavailableError("x"), retry_config={})  # type: ignore[arg-type]


def test_to_kopf_error_plain_function() -> None:
    assert isinstance(to_kopf_error(ValueError("bug")), kopf.PermanentError)
    temporary = to_kopf_error(TimeoutError("slow"), 1)
    assert isinstance(temporary, kopf.TemporaryError) and 1.0 <= temporary.delay <= 1.1
    assert "Timeout" in str(temporary)


@pytest.mark.parametrize(("make", "error", "text"), [
    (lambda: resilient_handler(breaker="b"), TypeError, "breaker"),
    (lambda: resilient_handler(retry_config=3), TypeError, "retry_config"),
    (lambda: resilient_handler(condition=5), TypeError, "condition"),
    (lambda: resilient_handler()(42), TypeError, "callable"),
    (lambda: write_condition(kopf.Patch(), {}, None, condition_type="Provisioning"), ValueError,
     "Provisioning"),
])
def test_bad_arguments_are_named(make: Any, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        make()


# -- end to end: kopf against kmock's Kubernetes API emulator -------------------------------


class Cluster:
    """kmock's KubernetesEmulator served on 127.0.0.1, in a thread of its own."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)
        self.url = ""
        self.handler: Any = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _serve(self) -> None:
        import kmock

        async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
            # What kopf discovers before it watches: its resource, namespaces, CRDs, events.
            info = kmock.ResourceInfo
            emulator.resources["infra.virtrigaud.io/v1beta1/virtualmachines"] = info(
                kind="VirtualMachine", namespaced=True,
                verbs={"list", "watch", "get", "patch", "create", "delete"})
            emulator.resources["v1/namespaces"] = info(kind="Namespace", namespaced=False,
                                                       verbs={"list", "watch", "get"})
            emulator.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = info(
                kind="CustomResourceDefinition", namespaced=False, verbs={"list", "watch"})
            emulator.resources["v1/events"] = info(kind="Event", namespaced=True,
                                                   verbs={"create"})
            self.url = str(server.url).rstrip("/")
            self.handler = emulator
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await self._stop.wait()

    def start(self) -> Cluster:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("kmock did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    pytest.importorskip("kmock")
    srv = Cluster().start()
    yield srv
    srv.stop()


def test_kopf_operator_rides_out_an_outage_end_to_end(cluster: Cluster,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    httpx = pytest.importorskip("httpx")
    from kopf.testing import KopfRunner

    # The example operator reads the ConfigMap keys from the environment. The outage
    # (counted from the import) outlasts a slow start of the watch by far.
    for key, value in {"VM_OPERATOR_OUTAGE_SECONDS": "2", "CB_FAILURE_THRESHOLD": "2",
                       "CB_RESET_SECONDS": "200ms", "RETRY_MAX_ATTEMPTS": "2",
                       "RETRY_BASE_DELAY": "50ms", "RETRY_MAX_DELAY": "100ms"}.items():
        monkeypatch.setenv(key, value)
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> Any:
        return kopf.ConnectionInfo(server=cluster.url)

    settings = kopf.OperatorSettings()
    settings.posting.enabled = False
    vms = f"{cluster.url}/apis/infra.virtrigaud.io/v1beta1/namespaces/lab/virtualmachines"
    with KopfRunner(["run", "--standalone", "-A", "--verbose", str(EXAMPLE)],
                    registry=registry, settings=settings, timeout=30) as runner:
        time.sleep(0.3)  # the operator discovers the API and starts watching
        created = httpx.post(vms, json={
            "apiVersion": "infra.virtrigaud.io/v1beta1", "kind": "VirtualMachine",
            # kmock keeps resourceVersion as given; kopf's JSON-patch tests it (finalizers)
            "metadata": {"name": "web-1", "namespace": "lab", "uid": "u-1", "generation": 1,
                         "resourceVersion": "1"},
            "spec": {"cpus": 2, "memoryMiB": 2048}})
        assert created.status_code == 200
        status: dict[str, Any] = {}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            status = httpx.get(f"{vms}/web-1").json().get("status", {})
            if status.get("vmId"):
                break
            time.sleep(0.05)
    assert runner.exception is None, runner.output
    assert status.get("vmId") == "vm-0001", runner.output
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == (
        "True", "VMReady", 1)
    # Before that, the outage was reported and kopf was asked to come back later.
    merge_patches = [req.data for req in cluster.handler["patch"] if isinstance(req.data, dict)]
    reasons = [c["reason"] for p in merge_patches
               for c in p.get("status", {}).get("conditions", []) if c["type"] == "Ready"]
    assert reasons[0] == "ProviderUnavailable" and reasons[-1] == "VMReady", reasons
    assert "failed temporarily" in runner.output and "delay" in runner.output


# -- the requeue delay is capped; messages are bounded and carry no secrets ------------------


def test_the_requeue_delay_is_capped() -> None:
    days = vr.RateLimitError("provider says come back tomorrow", retry_after=86_400)
    assert to_kopf_error(days).delay == 3600.0  # the default cap: one hour
    assert to_kopf_error(days, max_delay=10).delay == 10.0
    assert temporary_delay(days, max_delay="1m") == 60.0
    short = vr.RateLimitError("soon", retry_after=2)
    assert to_kopf_error(short, max_delay=10).delay == 2.0  # a cap, not a floor
    with pytest.raises(ValueError, match="max_delay"):
        to_kopf_error(days, max_delay=0)
    with pytest.raises(TypeError, match="max_delay"):
        resilient_handler(max_delay=[60])  # type: ignore[arg-type]


async def test_the_handler_caps_an_open_breakers_delay() -> None:
    clock = vr.ManualClock()
    cb = vr.CircuitBreaker("long", config=vr.BreakerConfig(failure_threshold=1,
                                                            reset_timeout=7200), clock=clock)
    permit = cb.try_acquire()
    assert permit is not None
    permit.failure()

    @resilient_handler(breaker=cb, max_delay=300)
    async def handler(**_: Any) -> None:
        raise vr.UnavailableError("down")

    with pytest.raises(kopf.TemporaryError) as info:
        await handler(**kwargs())
    assert info.value.delay == 300.0

    @resilient_handler(breaker=cb)
    async def default(**_: Any) -> None:
        raise vr.UnavailableError("down")

    with pytest.raises(kopf.TemporaryError) as info:
        await default(**kwargs())
    assert info.value.delay == 3600.0  # not the breaker's two hours


async def test_condition_and_kopf_messages_are_bounded_without_query_strings() -> None:
    url = "https://admin:hunter2@vcenter.local/sdk/vm?token=SECRET&sig=abc#frag"

    @resilient_handler
    async def handler(**_: Any) -> None:
        raise vr.UnavailableError(f"GET {url} failed: " + "x" * 5000)

    kw = kwargs()
    with pytest.raises(kopf.TemporaryError) as info:
        await handler(**kw)
    message = ready_of(kw["patch"])["message"]
    for text in (message, str(info.value)):
        assert len(text) <= 256 and text.endswith("...")
        assert "SECRET" not in text and "hunter2" not in text and "?" not in text
        assert "https://vcenter.local/sdk/vm" in text
