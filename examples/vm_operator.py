"""A kopf operator that reconciles VirtualMachine objects through a ResilientProvider.

The provider is a FaultInjectingProvider (this repository has no hypervisor)
that starts with an outage, so the operator has something to ride out:

- ``create``: ``provider.create`` under the guide's policy (RPC timeout,
  breaker, rate limit, retries). While the provider is down the handler
  fails with a retryable error; kopf requeues it after the error's
  ``retry_after`` (the breaker's time to its next probe), or the backoff
  delay, and ``status.conditions`` carries ``Ready=False
  ProviderUnavailable``. Once the provider is back, ``status.vmId`` is set
  and ``Ready=True VMReady``.
- ``delete``: ``provider.delete``; a non-retryable error would stop kopf's
  retries (``kopf.PermanentError``).

Against a cluster (the CRD ``virtualmachines.infra.virtrigaud.io``)::

    kopf run --standalone -A examples/vm_operator.py

Settings come from the guide's ConfigMap keys in the environment
(``Config.from_env``: RETRY_*, CB_*, RATE_LIMIT_*, RPC_TIMEOUT_*), and
``VM_OPERATOR_OUTAGE_SECONDS`` (default 1) sets the initial outage.

``python examples/vm_operator.py`` runs one VirtualMachine through the
handlers without a cluster: kopf's retries are played by hand on a
ManualClock, and each attempt's outcome and Ready condition is printed.
"""

from __future__ import annotations

import asyncio
import functools
import os
from typing import Any

import kopf

import virtrigaud_resilience as vr
from virtrigaud_resilience.integrations.kopf import resilient_handler
from virtrigaud_resilience.providers import (
    CreateRequest,
    FaultInjectingProvider,
    Latency,
    Outage,
    ResilientProvider,
)

GROUP, VERSION, PLURAL = "infra.virtrigaud.io", "v1beta1", "virtualmachines"


def build_provider(config: vr.Config, outage: float,
                   clock: vr.ManualClock | None = None) -> ResilientProvider:
    """The guarded provider: a fake one, down for its first ``outage`` seconds."""
    fake = FaultInjectingProvider(seed=7, clock=clock, latency=Latency(0.002, 0.01),
                                  outages=[Outage(0, outage)] if outage > 0 else ())
    return ResilientProvider(fake, "fake", "lab", config, clock=clock,
                             idempotent={"create": False})


async def create_vm(provider: ResilientProvider, spec: Any, name: str, namespace: str | None,
                    patch: kopf.Patch, **_: Any) -> dict[str, str]:
    """Creates the VM and records its id; the decorator writes the Ready condition."""
    request = CreateRequest(name=f"{namespace}-{name}" if namespace else name,
                            cpus=int(spec.get("cpus", 1)),
                            memory_mib=int(spec.get("memoryMiB", 1024)),
                            image=str(spec.get("image", "")))
    created = await provider.create(request)
    patch.status["vmId"] = created.id
    return {"vmId": created.id}


async def delete_vm(provider: ResilientProvider, status: Any, **_: Any) -> None:
    """Deletes the VM the object recorded (nothing to do if it has none)."""
    vm_id = status.get("vmId")
    if vm_id:
        await provider.delete(vm_id)


# -- the operator (registered when kopf imports this file) --------------------------

CONFIG = vr.Config.from_env()
PROVIDER = build_provider(CONFIG, float(os.environ.get("VM_OPERATOR_OUTAGE_SECONDS", "1")))


@kopf.on.create(GROUP, VERSION, PLURAL)
@resilient_handler(breaker=PROVIDER.breaker, retry_config=CONFIG.retry)
async def on_create(**kwargs: Any) -> dict[str, str]:
    return await create_vm(PROVIDER, **kwargs)


@kopf.on.delete(GROUP, VERSION, PLURAL)
@resilient_handler(breaker=PROVIDER.breaker, retry_config=CONFIG.retry, condition=None)
async def on_delete(**kwargs: Any) -> None:
    await delete_vm(PROVIDER, **kwargs)


# -- a dry run without a cluster ---------------------------------------------------------


async def dry_run() -> None:
    clock = vr.ManualClock()
    config = vr.Config.from_env({"CB_FAILURE_THRESHOLD": "3", "CB_RESET_SECONDS": "20s",
                                 "CB_HALF_OPEN_MAX_CALLS": "1", "RETRY_MAX_ATTEMPTS": "2",
                                 "RETRY_JITTER": "false"})
    provider = build_provider(config, outage=45.0, clock=clock)
    handler = resilient_handler(breaker=provider.breaker, retry_config=config.retry)(
        functools.partial(create_vm, provider))
    status: dict[str, Any] = {}
    for retry in range(10):
        started = clock.now()
        patch = kopf.Patch()
        try:
            await handler(spec={"cpus": 2}, name="web-1", namespace="default", patch=patch,
                          status=status, meta={"generation": 1}, retry=retry)
            outcome = "succeeded"
        except kopf.TemporaryError as exc:
            outcome = f"TemporaryError(delay={exc.delay:g})"
            clock.advance(exc.delay or 0)  # kopf sleeps, then retries
        status = {**status, **patch.get("status", {})}
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        print(f"t={started:5.1f}s attempt {retry + 1}: {outcome}; "
              f"Ready={ready['status']} {ready['reason']}; breaker {provider.breaker.state.name}")
        if outcome == "succeeded":
            break
    print(f"vmId={status['vmId']}")


if __name__ == "__main__":
    asyncio.run(dry_run())
