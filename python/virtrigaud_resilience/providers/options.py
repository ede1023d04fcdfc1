"""``AdapterOptions``: the settings every provider adapter takes, in one frozen object.

As gobreaker's ``Settings``, one value describes how an adapter guards the
calls of one provider, and the same value can be handed to each adapter of
that provider::

    options = AdapterOptions(config=Config.from_configmap(data), wait=True)
    channel = grpc.aio.insecure_channel(target,
                                        interceptors=aio_interceptors("vsphere", "prod",
                                                                      options=options))
    provider = ResilientProvider(client, "vsphere", "prod", options=options)

Every adapter (:func:`~virtrigaud_resilience.providers.grpc.aio_interceptors`,
:func:`~virtrigaud_resilience.providers.grpc.intercept_channel`, the httpx
transports and clients, :class:`~virtrigaud_resilience.providers.ResilientProvider`)
takes ``options=`` and each field as a keyword too; a keyword overrides the
field of ``options`` (:meth:`AdapterOptions.merged`), and a keyword that is
no field is a TypeError naming it. The fields are checked once, here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal, TypedDict, Union

from .. import _validate
from ..breaker import CircuitBreaker
from ..clock import ManualClock, check_clock
from ..config import Config
from ..ratelimit import TokenBucket

__all__ = ["SHARED", "AdapterOptions", "Idempotent", "OptionKeywords", "Shared"]

#: ``breaker=`` / ``limiter=`` default: the provider's shared one
#: (:func:`~virtrigaud_resilience.providers.shared_registries`).
SHARED: Final = "shared"
Shared = Literal["shared"]

#: ``idempotent=`` as given: None, a bool, a mapping of name to bool, a
#: collection of names, or a predicate of the full method name.
Idempotent = Union[None, bool, Mapping[str, bool], Iterable[str], Callable[[str], bool]]

_OWNER = "AdapterOptions"


def _no_timeouts() -> Mapping[str, float | None]:
    return MappingProxyType({})


@dataclass(frozen=True)
class AdapterOptions:
    """How an adapter guards the calls of one provider (frozen, hashable, compared by value).

    Attributes:
        config: the settings the adapter reads: the RPC timeouts per
            operation, and the shared breaker's and token bucket's
            configuration. None (default): :meth:`Config.production`.
        breaker: the circuit breaker every call passes. :data:`SHARED`
            (default): the provider's shared ``"vm-operations"`` breaker
            (:func:`~virtrigaud_resilience.providers.shared_breaker` of
            ``config`` and ``clock``); a :class:`CircuitBreaker`: that one;
            None: no breaker.
        limiter: the token bucket every call takes one token from, as
            ``breaker``: :data:`SHARED` (default), a :class:`TokenBucket`, or None.
        wait: False (default): a call finding no token fails at once with a
            ``RateLimitError`` (retryable, ``retry_after`` the wait). True:
            the call waits for its token, at most until its deadline.
        timeouts: per method or operation name, its deadline in seconds
            (a finite number > 0), or None for no deadline of the adapter's;
            overrides the RPC config for the names it holds. Keys are short
            names (``"Create"``); a full gRPC name (``"/pkg.Service/Create"``)
            is stored by its short name. Default: empty (the RPC config's
            timeouts). Stored as a read-only mapping.
        idempotent: the methods a policy may repeat after the call reached
            the provider, beyond the adapter's own defaults (the gRPC
            interceptors: the reads Describe, Validate and TaskStatus;
            ResilientProvider: every operation). None (default): the
            defaults; True: every method; False: no method; a collection
            of names (short or full): those too; a mapping of name to bool:
            each named method as given, True or False, overriding the
            default (the others keep it); a predicate of the full method
            name returning a bool: those for which it answers True, asked
            once per method. Collections are stored as a frozenset, mappings
            read-only. The httpx transports decide per request instead
            (RFC 9110 methods, ``Idempotency-Key``, the request's
            ``virtrigaud.idempotent`` extension) and refuse this field.
        clock: a :class:`ManualClock` for the shared breaker and bucket and
            the policies (tests, simulations); None (default): the system clock.
        metrics: True (default): record the per-call RPC series
            (``virtrigaud_provider_rpc_requests_total`` and the latency
            histogram); False: record none.

    Raises TypeError (wrong type) or ValueError (out of range) naming the
    field and the value, at construction.
    """

    config: Config | None = None
    breaker: CircuitBreaker | None | Shared = SHARED
    limiter: TokenBucket | None | Shared = SHARED
    wait: bool = False
    timeouts: Mapping[str, float | None] = field(default_factory=_no_timeouts)
    idempotent: Idempotent = None
    clock: ManualClock | None = None
    metrics: bool = True

    def __post_init__(self) -> None:
        self._check(_OWNER)

    def merged(self, owner: str, overrides: Mapping[str, object]) -> AdapterOptions:
        """These options with the fields ``overrides`` names replaced: what an
        adapter ``owner`` does with ``options=`` and its keywords.

        Raises TypeError for a key that is no field (naming it and
        ``owner``), and TypeError / ValueError naming ``owner``, the field
        and the value for a bad value. Returns ``self`` when ``overrides``
        is empty.
        """
        if not overrides:
            return self
        unknown = [name for name in overrides if name not in _FIELDS]
        if unknown:
            raise TypeError(f"{owner} got an unexpected keyword argument {unknown[0]!r} "
                            f"(the AdapterOptions fields: {', '.join(_FIELDS)})")
        merged = object.__new__(AdapterOptions)  # checked below, with owner's name
        for name in _FIELDS:
            object.__setattr__(merged, name, overrides.get(name, getattr(self, name)))
        merged._check(owner)
        return merged

    @classmethod
    def of(cls, owner: str, options: AdapterOptions | None,
           overrides: Mapping[str, object]) -> AdapterOptions:
        """``options`` (None: the defaults) with ``overrides`` applied, for
        adapter ``owner``; TypeError naming ``owner`` when ``options`` is not
        an AdapterOptions (see :meth:`merged`)."""
        if options is None:
            options = _DEFAULT
        elif not isinstance(options, AdapterOptions):
            raise TypeError(f"{owner} options must be an AdapterOptions or None, got "
                            f"{type(options).__name__} {options!r}")
        return options.merged(owner, overrides)

    def idempotent_mark(self, full: str, short: str) -> bool | None:
        """What ``idempotent`` says of a method: True (idempotent), False
        (not, a mapping's False), or None (the adapter's default applies).

        ``full`` is the method's full name (gRPC ``"/pkg.Service/Create"``),
        ``short`` its last part. Raises TypeError when a predicate answers
        anything but a bool.
        """
        marks = self.idempotent
        if marks is None or isinstance(marks, bool):
            return marks
        if isinstance(marks, frozenset):
            return True if (full in marks or short in marks) else None
        if isinstance(marks, Mapping):
            found = marks.get(full)
            return marks.get(short) if found is None else bool(found)
        assert callable(marks)
        answer = marks(full)
        if not isinstance(answer, bool):
            raise TypeError(f"{_OWNER} idempotent({full!r}) must return a bool, got "
                            f"{type(answer).__name__} {answer!r}")
        return True if answer else None

    # -- the checks (the only ones: every adapter relies on them) -----------------------

    def _check(self, owner: str) -> None:
        """Checks every field (naming ``owner``) and stores its normalised value."""
        def store(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        store("config", _validate.optional_instance(owner, "config", self.config, Config))
        store("breaker", _shared_or(owner, "breaker", self.breaker, CircuitBreaker))
        store("limiter", _shared_or(owner, "limiter", self.limiter, TokenBucket))
        store("wait", _validate.boolean(owner, "wait", self.wait))
        store("timeouts", _timeouts(owner, self.timeouts))
        store("idempotent", _idempotent(owner, self.idempotent))
        store("clock", check_clock(owner, self.clock))
        store("metrics", _validate.boolean(owner, "metrics", self.metrics))

    def __hash__(self) -> int:  # the read-only mappings hash by their items
        return hash(tuple(frozenset(value.items()) if isinstance(value, Mapping) else value
                          for value in (getattr(self, name) for name in _FIELDS)))

    @property
    def resolved_config(self) -> Config:
        """``config``, or :meth:`Config.production` when it is None."""
        return self.config if self.config is not None else Config.production()


_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(AdapterOptions))


class OptionKeywords(TypedDict, total=False):
    """The fields of :class:`AdapterOptions` as the keywords adapters take
    (``config`` is every adapter's third parameter, named on its own)."""

    breaker: CircuitBreaker | None | Shared
    limiter: TokenBucket | None | Shared
    wait: bool
    timeouts: Mapping[str, float | None]
    idempotent: Idempotent
    clock: ManualClock | None
    metrics: bool


def _shared_or(owner: str, name: str, value: Any, cls: type) -> Any:
    if isinstance(value, str) and value == SHARED:
        return SHARED
    if value is not None and not isinstance(value, cls):
        raise TypeError(f"{owner} {name} must be a {cls.__name__} or None (or {SHARED!r} for "
                        f"the provider's shared one), got {type(value).__name__} {value!r}")
    return value


def _timeouts(owner: str, timeouts: Any) -> Mapping[str, float | None]:
    if timeouts is None:
        return _no_timeouts()
    if not isinstance(timeouts, Mapping):
        raise TypeError(f"{owner} timeouts must be a mapping of method name to seconds or None, "
                        f"got {type(timeouts).__name__} {timeouts!r}")
    result: dict[str, float | None] = {}
    for name, seconds in timeouts.items():
        _validate.string(owner, "timeouts key", name)
        result[name.rsplit("/", 1)[-1]] = (
            None if seconds is None else
            _validate.seconds(owner, f"timeouts[{name!r}]", seconds, allow_zero=False))
    return MappingProxyType(result)


def _idempotent(owner: str, marks: Any) -> Idempotent:
    if marks is None or isinstance(marks, bool) or callable(marks):
        return marks  # type: ignore[no-any-return]
    if isinstance(marks, Mapping):
        checked: dict[str, bool] = {}
        for name, flag in marks.items():
            _validate.string(owner, "idempotent key", name)
            checked[name] = _validate.boolean(owner, f"idempotent[{name!r}]", flag)
        return MappingProxyType(checked)
    if isinstance(marks, (str, bytes)) or not isinstance(marks, Iterable):
        raise TypeError(f"{owner} idempotent must be a collection of method names, a mapping of "
                        f"name to bool, a predicate of the full method name, a bool or None, "
                        f"got {type(marks).__name__} {marks!r}")
    return frozenset(_validate.string(owner, "idempotent item", name) for name in marks)


_DEFAULT: Final = AdapterOptions()
