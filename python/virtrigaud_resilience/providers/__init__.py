"""Provider adapters: the contract, ``ResilientProvider``, and transports that guard calls.

- :class:`Provider` (the contract's async operations) and its dataclasses;
- :class:`ResilientProvider`: each operation under the guide's policy;
- :class:`AdapterOptions`: the settings every adapter takes (``options=``);
- :class:`~virtrigaud_resilience.providers.fake.FaultInjectingProvider`: a
  deterministic provider that fails on purpose (tests, demos);
- ``providers.grpc`` (the ``grpc`` extra): client interceptors for
  ``grpc.aio`` and sync channels;
- ``providers.http`` (the ``http`` extra): an httpx transport, sync and async.

This package imports no optional dependency; ``providers.grpc`` and
``providers.http`` import grpcio and httpx themselves.
"""

from __future__ import annotations

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
from .fake import FaultInjectingProvider, Latency, Outage, Quota
from .options import SHARED, AdapterOptions
from .resilient import (
    BREAKER_NAME,
    ResilientProvider,
    mark_call_reached,
    mark_never_sent,
    mark_reached,
    never_sent,
    shared_breaker,
    shared_limiter,
    shared_registries,
    shared_retry_budget,
)
from .retry_after import parse_retry_after

__all__ = [
    "BREAKER_NAME",
    "OPERATIONS",
    "SHARED",
    "AdapterOptions",
    "Capabilities",
    "CreateRequest",
    "CreateResponse",
    "DescribeResponse",
    "FaultInjectingProvider",
    "Latency",
    "Outage",
    "PowerOp",
    "Provider",
    "Quota",
    "ResilientProvider",
    "TaskStatus",
    "mark_call_reached",
    "mark_never_sent",
    "mark_reached",
    "never_sent",
    "parse_retry_after",
    "shared_breaker",
    "shared_limiter",
    "shared_registries",
    "shared_retry_budget",
]
