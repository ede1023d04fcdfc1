"""kopf integration: handler errors become kopf's requeues, outcomes the ``Ready`` condition.

A decorated handler::

    import kopf
    from virtrigaud_resilience.integrations.kopf import resilient_handler

    @kopf.on.create("infra.virtrigaud.io", "v1beta1", "virtualmachines")
    @resilient_handler(breaker=provider.breaker)
    async def create_vm(spec, name, patch, **_):
        vm = await provider.create(CreateRequest(name=name, cpus=spec["cpus"]))
        patch.status["vmId"] = vm.id

When the handler raises, the error is classified
(:func:`~virtrigaud_resilience.classify`) and:

- a **retryable** error becomes ``kopf.TemporaryError(delay=...)``: the delay
  is the error's ``retry_after`` (a provider's Retry-After, a rate limiter's
  wait, an open breaker's time to its next probe); else, if the handler's
  breaker is open, its remaining open time; else the backoff delay of
  ``retry_config`` for kopf's ``retry`` count (0.5, 1, 2, 4 s ... with the
  guide's defaults);
- any other error becomes ``kopf.PermanentError``: kopf stops retrying.
  Exceptions that are not ProviderErrors and that :func:`classify` does not
  map (a ``KeyError`` in the handler, say) are not retryable, as in the Go
  code;
- the guide's ``Ready`` condition for the error (``map_error_to_condition``:
  ``ProviderUnavailable``, ``ResourceNotFound``, ...) is written into
  ``patch.status["conditions"]``, with ``set_condition``'s semantics (the
  transition time changes only when the status does), and kopf applies the
  patch with the handler's outcome.

On success the handler's ``Ready=True VMReady`` condition is written the same
way. kopf's own ``TemporaryError`` / ``PermanentError`` raised by the
handler, and cancellations, pass through untouched. ``condition=None`` writes
no condition (a deletion handler, say).

Users who catch errors themselves use the plain functions:
:func:`to_kopf_error` and :func:`write_condition`.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, ParamSpec, TypeVar, Union

try:
    import kopf
except ImportError as exc:  # pragma: no cover - exercised without the extra only
    raise ImportError(
        "virtrigaud_resilience.integrations.kopf needs kopf: "
        "pip install 'virtrigaud-resilience[kopf]'"
    ) from exc

from .. import _validate
from .._decorate import is_async_callable
from ..backoff import Backoff
from ..breaker import BreakerState, CircuitBreaker
from ..conditions import READY, map_error_to_condition, ready_condition, set_condition
from ..errors import classify, is_retryable
from ..retry import RetryConfig

__all__ = [
    "BreakerSource",
    "resilient_handler",
    "temporary_delay",
    "to_kopf_error",
    "write_condition",
]

P = ParamSpec("P")
T = TypeVar("T")

#: A handler's breaker: one breaker, or a function of the handler's kwargs
#: (kopf's ``body``, ``spec``, ``meta`` ...) that picks it, or None.
BreakerSource = Union[CircuitBreaker, Callable[..., Union[CircuitBreaker, None]], None]

_BACKOFFS: dict[RetryConfig, Backoff] = {}
_BACKOFFS_LOCK = threading.Lock()


def _backoff(config: RetryConfig) -> Backoff:
    backoff = _BACKOFFS.get(config)
    if backoff is None:
        with _BACKOFFS_LOCK:
            backoff = _BACKOFFS.setdefault(config, Backoff(
                config.base_delay, config.max_delay, config.multiplier, config.jitter,
                config.strategy))
    return backoff


def temporary_delay(error: BaseException, retry: int = 0, *,
                    breaker: CircuitBreaker | None = None,
                    retry_config: RetryConfig | None = None) -> float:
    """Seconds kopf should wait before retrying a handler that failed with ``error``.

    ``error.retry_after`` when it has one (> 0); else the remaining open time
    of ``breaker`` when it is open (not held open by ``force_open``); else
    ``retry_config``'s backoff delay for kopf's retry count ``retry`` (0 for
    the first failure; None for :meth:`RetryConfig.default`).
    """
    retry = _validate.integer("temporary_delay", "retry", retry, 0)
    retry_after = getattr(error, "retry_after", None)
    if isinstance(retry_after, (int, float)) and retry_after > 0:
        return float(retry_after)
    if breaker is not None and breaker.state is BreakerState.OPEN and not breaker.held_open:
        remaining = breaker.remaining_open
        if remaining > 0:
            return remaining
    config = _validate.optional_instance("temporary_delay", "retry_config", retry_config,
                                         RetryConfig) or RetryConfig.default()
    return _backoff(config).delay(retry)


def to_kopf_error(exc: BaseException, retry: int = 0, *,
                  breaker: CircuitBreaker | None = None,
                  retry_config: RetryConfig | None = None) -> kopf.TemporaryError | kopf.PermanentError:
    """The kopf error to raise for ``exc``: TemporaryError with
    :func:`temporary_delay` for a retryable error (after :func:`classify`),
    PermanentError otherwise. kopf's own errors are returned as they are."""
    if isinstance(exc, (kopf.TemporaryError, kopf.PermanentError)):
        return exc
    error = classify(exc)
    if is_retryable(error):
        delay = temporary_delay(error, retry, breaker=breaker, retry_config=retry_config)
        return kopf.TemporaryError(str(error), delay=delay)
    return kopf.PermanentError(str(error))


def write_condition(patch: MutableMapping[str, Any], status: Mapping[str, Any] | None,
                    error: BaseException | None = None, *,
                    generation: int | None = None, condition_type: str = READY) -> bool:
    """Writes the outcome's condition into ``patch.status["conditions"]``.

    ``error`` None: ``Ready=True VMReady``; else the guide's mapping of the
    (classified) error. The list starts from the conditions already in the
    patch, else those of ``status`` (the object's current status), so other
    conditions are kept; ``set_condition`` semantics decide whether anything
    changed. Returns whether the patch was changed.
    """
    if condition_type == READY:
        condition = ready_condition(None if error is None else classify(error),
                                    observed_generation=generation)
    elif error is None:
        raise ValueError(f"write_condition needs an error for condition_type "
                         f"{condition_type!r} (only Ready has a success condition)")
    else:
        condition = map_error_to_condition(classify(error), condition_type,
                                           observed_generation=generation)
    patch_status = _status_of(patch)
    current = patch_status.get("conditions")
    if current is None and status is not None:
        current = status.get("conditions")
    conditions = [dict(entry) for entry in (current or [])]
    changed = set_condition(conditions, condition.to_dict())
    if changed:
        patch_status["conditions"] = conditions
    return changed


def _status_of(patch: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    status = getattr(patch, "status", None)  # kopf.Patch has a status view
    if status is None:
        status = patch.setdefault("status", {})
    if not isinstance(status, MutableMapping):
        raise TypeError(f"patch status must be a mutable mapping, got {type(status).__name__}")
    return status


def resilient_handler(fn: Callable[P, T] | None = None, *, breaker: BreakerSource = None,
                      retry_config: RetryConfig | None = None,
                      condition: str | None = READY) -> Any:
    """Decorates a kopf handler (sync or async); see the module docstring.

    Args:
        breaker: the breaker whose open time sets a retry's delay; or a
            function of the handler's kwargs returning it (or None).
        retry_config: the backoff for kopf's retry count (None: the guide's default).
        condition: the condition type to write (``"Ready"``), or None for none.

    Works bare (``@resilient_handler``) or with arguments.
    """
    if breaker is not None and not (isinstance(breaker, CircuitBreaker) or callable(breaker)):
        raise TypeError(f"resilient_handler breaker must be a CircuitBreaker, a callable or "
                        f"None, got {type(breaker).__name__} {breaker!r}")
    _validate.optional_instance("resilient_handler", "retry_config", retry_config, RetryConfig)
    if condition is not None:
        _validate.string("resilient_handler", "condition", condition)

    def decorate(handler: Callable[P, T]) -> Callable[P, T]:
        if not callable(handler):
            raise TypeError(f"resilient_handler needs a callable, got "
                            f"{type(handler).__name__} {handler!r}")
        outcome = _Outcome(breaker, retry_config, condition)
        if is_async_callable(handler):
            async_handler: Any = handler

            @functools.wraps(handler)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                try:
                    result = await async_handler(*args, **kwargs)
                except (kopf.TemporaryError, kopf.PermanentError, asyncio.CancelledError):
                    raise
                except Exception as exc:
                    raise outcome.failed(exc, kwargs) from exc
                outcome.succeeded(kwargs)
                return result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(handler)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                result = handler(*args, **kwargs)
            except (kopf.TemporaryError, kopf.PermanentError):
                raise
            except Exception as exc:
                raise outcome.failed(exc, kwargs) from exc
            outcome.succeeded(kwargs)
            return result

        return wrapper

    return decorate if fn is None else decorate(fn)


class _Outcome:
    """What a decorated handler does with its outcome."""

    def __init__(self, breaker: BreakerSource, retry_config: RetryConfig | None,
                 condition: str | None) -> None:
        self._breaker = breaker
        self._retry_config = retry_config
        self._condition = condition

    def failed(self, exc: BaseException, kwargs: Mapping[str, Any]) -> BaseException:
        self._write(kwargs, exc)
        retry = kwargs.get("retry", 0)
        return to_kopf_error(exc, retry if isinstance(retry, int) and retry >= 0 else 0,
                             breaker=self._breaker_for(kwargs), retry_config=self._retry_config)

    def succeeded(self, kwargs: Mapping[str, Any]) -> None:
        self._write(kwargs, None)

    def _breaker_for(self, kwargs: Mapping[str, Any]) -> CircuitBreaker | None:
        source = self._breaker
        if source is None or isinstance(source, CircuitBreaker):
            return source
        found = source(**kwargs)
        if found is not None and not isinstance(found, CircuitBreaker):
            raise TypeError(f"resilient_handler breaker function must return a CircuitBreaker "
                            f"or None, got {type(found).__name__} {found!r}")
        return found

    def _write(self, kwargs: Mapping[str, Any], error: BaseException | None) -> None:
        patch = kwargs.get("patch")
        if self._condition is None or patch is None:
            return
        if error is None and self._condition != READY:
            return  # only Ready has a success condition in the guide's tables
        write_condition(patch, kwargs.get("status"), error, condition_type=self._condition,
                        generation=_generation(kwargs))


def _generation(kwargs: Mapping[str, Any]) -> int | None:
    meta = kwargs.get("meta")
    generation = meta.get("generation") if isinstance(meta, Mapping) else None
    return generation if isinstance(generation, int) and not isinstance(generation, bool) else None
