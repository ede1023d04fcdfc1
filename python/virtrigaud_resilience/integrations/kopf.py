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

The requeue delay is capped at ``max_delay`` (default one hour): a breaker
held open for long, or a provider's Retry-After of days, never parks an
object beyond it. Messages the cluster stores (the condition's, the kopf
error's, which kopf posts as an event) hold at most
:data:`MAX_ERROR_MESSAGE` characters of the error, with URLs cut to scheme,
host and path: no query string (tokens, signatures) and no user info.

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
import re
import threading
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, ParamSpec, TypeVar, Union

from .._extras import require

require("kopf", "kopf", "kopf", __name__)
import kopf  # noqa: E402

from .. import _validate
from .._decorate import is_async_callable
from ..backoff import Backoff
from ..breaker import BreakerState, CircuitBreaker
from ..conditions import READY, map_error_to_condition, ready_condition, set_condition
from ..durations import Seconds
from ..errors import classify, is_retryable
from ..retry import RetryConfig

__all__ = [
    "DEFAULT_MAX_DELAY",
    "MAX_ERROR_MESSAGE",
    "BreakerSource",
    "error_message",
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

#: The longest requeue delay by default, in seconds (one hour).
DEFAULT_MAX_DELAY = 3600.0
#: At most this many characters of an error go into a condition or a kopf error.
MAX_ERROR_MESSAGE = 256

# A URL's query string and fragment, and its user info: never shown to the cluster.
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?:[^\s/@?#]*@)?"
                  r"(?P<rest>[^\s?#]*)(?:[?#][^\s]*)?")

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
                    retry_config: RetryConfig | None = None,
                    max_delay: Seconds = DEFAULT_MAX_DELAY) -> float:
    """Seconds kopf should wait before retrying a handler that failed with ``error``.

    ``error.retry_after`` when it has one (> 0); else the remaining open time
    of ``breaker`` when it is open (not held open by ``force_open``); else
    ``retry_config``'s backoff delay for kopf's retry count ``retry`` (0 for
    the first failure; None for :meth:`RetryConfig.default`). At most
    ``max_delay`` seconds (> 0: float seconds, timedelta or a Go duration
    string; default one hour).
    """
    retry = _validate.integer("temporary_delay", "retry", retry, 0)
    cap = _max_delay("temporary_delay", max_delay)
    return min(_uncapped_delay(error, retry, breaker, retry_config), cap)


def _uncapped_delay(error: BaseException, retry: int, breaker: CircuitBreaker | None,
                    retry_config: RetryConfig | None) -> float:
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


def _max_delay(owner: str, value: object) -> float:
    return _validate.seconds(owner, "max_delay", value, allow_zero=False)


def to_kopf_error(exc: BaseException, retry: int = 0, *,
                  breaker: CircuitBreaker | None = None,
                  retry_config: RetryConfig | None = None,
                  max_delay: Seconds = DEFAULT_MAX_DELAY,
                  ) -> kopf.TemporaryError | kopf.PermanentError:
    """The kopf error to raise for ``exc``: TemporaryError with
    :func:`temporary_delay` (at most ``max_delay`` seconds) for a retryable
    error (after :func:`classify`: a raw httpx or grpc error included),
    PermanentError otherwise; its message is :func:`error_message`. kopf's
    own errors are returned as they are."""
    if isinstance(exc, (kopf.TemporaryError, kopf.PermanentError)):
        return exc
    error = classify(exc)
    if is_retryable(error):
        delay = temporary_delay(error, retry, breaker=breaker, retry_config=retry_config,
                                max_delay=max_delay)
        return kopf.TemporaryError(error_message(error), delay=delay)
    return kopf.PermanentError(error_message(error))


def error_message(error: BaseException) -> str:
    """``str(error)`` as the cluster may store it: every URL cut to scheme,
    host and path (no query string, fragment or user info), then at most
    :data:`MAX_ERROR_MESSAGE` characters (the last three ``...`` when cut).
    An error whose ``__str__`` fails gives its class name."""
    try:
        text = str(error) or type(error).__name__
    except Exception:  # noqa: BLE001 (a broken __str__ must not break the requeue)
        text = type(error).__name__
    return _bounded(text)


def _bounded(text: str) -> str:
    # Cut first: a huge message is not scanned whole (the URL pattern is linear anyway).
    text = _URL.sub(r"\g<scheme>\g<rest>", text[: MAX_ERROR_MESSAGE * 16])
    if len(text) > MAX_ERROR_MESSAGE:
        text = text[: MAX_ERROR_MESSAGE - 3] + "..."
    return text


def write_condition(patch: MutableMapping[str, Any], status: Mapping[str, Any] | None,
                    error: BaseException | None = None, *,
                    generation: int | None = None, condition_type: str = READY) -> bool:
    """Writes the outcome's condition into ``patch.status["conditions"]``.

    ``error`` None: ``Ready=True VMReady``; else the guide's mapping of the
    (classified) error, its message bounded as :func:`error_message`'s. The
    list starts from the conditions already in the
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
    entry = condition.to_dict()
    if error is not None:
        entry["message"] = _bounded(str(entry.get("message", "")))
    patch_status = _status_of(patch)
    current = patch_status.get("conditions")
    if current is None and status is not None:
        current = status.get("conditions")
    conditions = [dict(entry) for entry in (current or [])]
    changed = set_condition(conditions, entry)
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
                      condition: str | None = READY,
                      max_delay: Seconds = DEFAULT_MAX_DELAY) -> Any:
    """Decorates a kopf handler (sync or async); see the module docstring.

    Args:
        breaker: the breaker whose open time sets a retry's delay; or a
            function of the handler's kwargs returning it (or None).
        retry_config: the backoff for kopf's retry count (None: the guide's default).
        condition: the condition type to write (``"Ready"``), or None for none.
        max_delay: the longest requeue delay, in seconds (> 0; default one hour).

    Works bare (``@resilient_handler``) or with arguments.
    """
    if breaker is not None and not (isinstance(breaker, CircuitBreaker) or callable(breaker)):
        raise TypeError(f"resilient_handler breaker must be a CircuitBreaker, a callable or "
                        f"None, got {type(breaker).__name__} {breaker!r}")
    _validate.optional_instance("resilient_handler", "retry_config", retry_config, RetryConfig)
    if condition is not None:
        _validate.string("resilient_handler", "condition", condition)
    cap = _max_delay("resilient_handler", max_delay)

    def decorate(handler: Callable[P, T]) -> Callable[P, T]:
        if not callable(handler):
            raise TypeError(f"resilient_handler needs a callable, got "
                            f"{type(handler).__name__} {handler!r}")
        outcome = _Outcome(breaker, retry_config, condition, cap)
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
                 condition: str | None, max_delay: float) -> None:
        self._breaker = breaker
        self._retry_config = retry_config
        self._condition = condition
        self._max_delay = max_delay

    def failed(self, exc: BaseException, kwargs: Mapping[str, Any]) -> BaseException:
        self._write(kwargs, exc)
        retry = kwargs.get("retry", 0)
        return to_kopf_error(exc, retry if isinstance(retry, int) and retry >= 0 else 0,
                             breaker=self._breaker_for(kwargs), retry_config=self._retry_config,
                             max_delay=self._max_delay)

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
