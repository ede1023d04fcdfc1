"""Did a failed call reach the provider? (:func:`never_sent`)

A non-idempotent request (a create, an HTTP POST) may be retried only when
its failure proves it never left: an open breaker, our own rate limit or
bulkhead, a refused connection. The adapters mark their own rejections
(:func:`mark_never_sent`), a ``ResilientProvider`` marks every answer of its
provider (:func:`mark_reached`), and a retry loop marks the error it finally
raises when an earlier attempt of the same call reached the provider
(:func:`mark_call_reached`): the answer is for the whole call.

Public as ``virtrigaud_resilience.providers.never_sent``; here so that the
retry loop can ask without importing the providers package.
"""

from __future__ import annotations

import sys
from typing import TypeVar

from .errors import CircuitOpenError, RateLimitError

__all__ = ["is_provider_rate_limit", "mark_call_reached", "mark_never_sent", "mark_reached",
           "never_sent"]

E = TypeVar("E", bound=BaseException)

_UNSENT = "_virtrigaud_unsent"
_REACHED = "_virtrigaud_reached"
_CALL_REACHED = "_virtrigaud_call_reached"

#: Links of a cause chain looked at (chains can be cyclic).
_MAX_CHAIN = 32


def mark_never_sent(exc: E) -> E:
    """Marks ``exc`` as proof that its call never reached the provider (the
    adapters mark their breaker and limiter rejections and refused
    connections); returns ``exc``."""
    setattr(exc, _UNSENT, True)
    return exc


def mark_reached(exc: E) -> E:
    """Marks ``exc`` as the provider's own answer (unless it is marked never
    sent): a ``RateLimitError`` so marked is the provider's rate limit, not
    ours. ResilientProvider marks every error its provider raises; returns ``exc``."""
    if not getattr(exc, _UNSENT, False):
        setattr(exc, _REACHED, True)
    return exc


def mark_call_reached(exc: E) -> E:
    """Marks ``exc``, the error a call ends with, as coming from a call of
    which some attempt reached the provider (the retry loops do this), so
    :func:`never_sent` is False for it whatever its last attempt was; returns ``exc``."""
    setattr(exc, _CALL_REACHED, True)
    return exc


def never_sent(exc: BaseException) -> bool:
    """True iff ``exc`` proves its whole call never reached the provider.

    False once any attempt of the call reached it (the retry loops mark the
    error they raise: :func:`mark_call_reached`). Otherwise True for: an open
    breaker (:class:`CircuitOpenError`), a rate limit or full bulkhead of our
    own (a ``RateLimitError`` that is not the provider's: not marked
    :func:`mark_reached`, and not carrying an HTTP 429 response or a gRPC
    ``RESOURCE_EXHAUSTED`` status), an error marked by
    :func:`mark_never_sent` (the adapters' rejections and refused
    connections), or a ``ConnectionRefusedError`` anywhere in its cause
    chain. A timeout, a dropped connection or any answer of the provider is
    no such proof: the provider may have acted.
    """
    if getattr(exc, _CALL_REACHED, False):
        return False
    if isinstance(exc, CircuitOpenError) or getattr(exc, _UNSENT, False):
        return True
    if isinstance(exc, RateLimitError) and not getattr(exc, _REACHED, False):
        return not _provider_answered(exc)
    seen = 0
    link: BaseException | None = exc
    while link is not None and seen < _MAX_CHAIN:
        if isinstance(link, ConnectionRefusedError) or getattr(link, _UNSENT, False):
            return True
        link = link.__cause__ or link.__context__
        seen += 1
    return False


def is_provider_rate_limit(exc: BaseException) -> bool:
    """Whether ``exc`` is the provider throttling this attempt: a
    ``RateLimitError`` marked :func:`mark_reached`, or carrying an HTTP 429
    response or a gRPC ``RESOURCE_EXHAUSTED`` status, and not marked never
    sent. Our own limiter's and bulkhead's refusals are not (AdaptiveRate's
    throttle signal: adaptive_rate.py)."""
    if not isinstance(exc, RateLimitError) or getattr(exc, _UNSENT, False):
        return False
    return bool(getattr(exc, _REACHED, False)) or _provider_answered(exc)


def _provider_answered(exc: BaseException) -> bool:
    """Whether ``exc`` or its cause chain is the provider's own answer: an
    httpx error carrying a response, or a gRPC error with a status of the
    server. Looked up only where httpx / grpc are loaded (never imported)."""
    httpx = sys.modules.get("httpx")
    grpc = sys.modules.get("grpc")
    if httpx is None and grpc is None:
        return False
    seen = 0
    link: BaseException | None = exc
    while link is not None and seen < _MAX_CHAIN:
        if getattr(link, _UNSENT, False):
            return False
        if httpx is not None and isinstance(link, httpx.HTTPStatusError):
            return True
        if grpc is not None and isinstance(link, grpc.RpcError):
            if _status(link) is grpc.StatusCode.RESOURCE_EXHAUSTED:
                return True
        link = link.__cause__ or link.__context__
        seen += 1
    return False


def _status(error: BaseException) -> object:
    """A gRPC error's ``code()``, or None when it has none (or fails to say)."""
    code = getattr(error, "code", None)
    if not callable(code):
        return None
    try:
        return code()
    except Exception:  # a half-built call object: no status to go by
        return None
