"""Drop-in breakers and limiters never reach an adapter's admission check.

One admission per attempt (issue 18) works by the enclosing layer recording
what it holds (``_admission.hold``) and the adapter asking (``held``). The
drop-ins' own Python call paths (compat circuitbreaker's and pybreaker's
``call``, ``call_async``, generators, decorators; aiolimiter's
``acquire``) record nothing, and need not: every adapter, and Policy, takes
only this library's ``CircuitBreaker`` and ``TokenBucket`` and refuses a
drop-in with a TypeError before it registers anything for ``held``. So a
drop-in object cannot guard both a drop-in call and an adapter inside it.

If an adapter ever accepts a drop-in object, these tests fail: the drop-ins'
call paths must then record ``hold(self, None)`` around the user's call, as
``breaker.CircuitBreaker.call_async`` and ``Guard`` do, with tests of a
failure and a success counted once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

grpc = pytest.importorskip("grpc")
httpx = pytest.importorskip("httpx")

from virtrigaud_resilience import Policy, _admission  # noqa: E402
from virtrigaud_resilience.compat import aiolimiter, circuitbreaker, pybreaker  # noqa: E402
from virtrigaud_resilience.providers import grpc as vrg  # noqa: E402
from virtrigaud_resilience.providers import http as vrh  # noqa: E402
from virtrigaud_resilience.providers.call_step import CallStep  # noqa: E402

DROP_IN_BREAKERS: dict[str, Callable[[], Any]] = {
    "circuitbreaker": circuitbreaker.CircuitBreaker,
    "pybreaker": pybreaker.CircuitBreaker,
}


def _sync_channel(**guarded: Any) -> Any:
    channel = grpc.insecure_channel("127.0.0.1:1")
    try:
        return vrg.intercept_channel(channel, "t", "p", **guarded)
    finally:
        channel.close()


ADAPTERS: dict[str, tuple[str, Callable[..., Any]]] = {
    "CallStep": ("CallStep", lambda **guarded: CallStep("t", "p", **guarded)),
    "ResilientTransport": ("ResilientTransport",
                           lambda **guarded: vrh.ResilientTransport("t", "p", **guarded)),
    "AsyncResilientTransport": ("AsyncResilientTransport",
                                lambda **guarded: vrh.AsyncResilientTransport("t", "p",
                                                                              **guarded)),
    "ResilientClient": ("ResilientTransport",
                        lambda **guarded: vrh.ResilientClient("t", "p", **guarded)),
    "aio_interceptors": ("RpcCallStep", lambda **guarded: vrg.aio_interceptors("t", "p", **guarded)),
    "intercept_channel": ("RpcCallStep", _sync_channel),
}


@pytest.mark.parametrize("adapter", list(ADAPTERS))
@pytest.mark.parametrize("kind", list(DROP_IN_BREAKERS))
def test_adapter_refuses_a_drop_in_breaker(adapter: str, kind: str) -> None:
    owner, make = ADAPTERS[adapter]
    breaker = DROP_IN_BREAKERS[kind]()
    with pytest.raises(TypeError, match=rf"{owner} breaker must be a CircuitBreaker or None"):
        make(breaker=breaker, limiter=None)
    assert id(breaker) not in _admission._GUARDED  # nothing would ask held() about it


@pytest.mark.parametrize("adapter", list(ADAPTERS))
def test_adapter_refuses_a_drop_in_limiter(adapter: str) -> None:
    owner, make = ADAPTERS[adapter]
    limiter = aiolimiter.AsyncLimiter(10)
    with pytest.raises(TypeError, match=rf"{owner} limiter must be a TokenBucket or None"):
        make(breaker=None, limiter=limiter)
    assert id(limiter) not in _admission._GUARDED


@pytest.mark.parametrize("kind", list(DROP_IN_BREAKERS))
def test_policy_refuses_a_drop_in_breaker(kind: str) -> None:
    """A Policy records what it holds for adapters; it cannot hold a drop-in."""
    with pytest.raises(TypeError, match="Policy breaker must be a CircuitBreaker or None"):
        Policy("p", breaker=DROP_IN_BREAKERS[kind]())
