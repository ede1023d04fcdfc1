"""Kubernetes status conditions for VMs and providers (the guide's "Condition Mapping").

A :class:`Condition` mirrors ``metav1.Condition``: ``type``, ``status``
(the strings ``"True"``, ``"False"``, ``"Unknown"``), ``reason``, ``message``,
``last_transition_time`` and ``observed_generation``. :meth:`Condition.to_dict`
gives the exact JSON shape the API server stores, and :func:`set_condition`
has the semantics of apimachinery's ``meta.SetStatusCondition``, so a
controller that writes ``status.conditions`` with these helpers behaves like
one written in Go.

The guide's two tables:

======================  ======  =====================  =========================
condition               status  reason                 helper
======================  ======  =====================  =========================
``Ready``               True    ``VMReady``            ``ready_condition()``
``Ready``               False   ``ProviderError``      ``ready_condition(err)``
``Ready``               False   ``ValidationError``    ``ready_condition(err)``
``Provisioning``        True    ``Creating``           ``provisioning_condition()``
``Provisioning``        False   ``CreateFailed``       ``provisioning_condition(err)``
``ProviderRuntimeReady`` True   ``DeploymentReady``    ``provider_runtime_ready_condition(True)``
``ProviderRuntimeReady`` False  ``DeploymentError``    ``provider_runtime_ready_condition(False)``
``ProviderAvailable``   True    ``HealthCheckPassed``  ``provider_available_condition(True)``
``ProviderAvailable``   False   ``HealthCheckFailed``  ``provider_available_condition(False)``
======================  ======  =====================  =========================

and :func:`map_error_to_condition` turns any exception into a ``False``
condition (``ResourceNotFound``, ``AuthenticationFailed``,
``ProviderUnavailable``, ``ValidationError``, ``ProviderError`` or
``InternalError``).

The list helpers (:func:`set_condition`, :func:`find_condition`,
:func:`remove_condition`, :func:`is_condition_true`,
:func:`is_condition_false`) take a list of :class:`Condition` or a list of
plain dicts in the ``metav1.Condition`` JSON shape, the kind kopf and the
Kubernetes clients hold, and hand back the kind they were given. In a kopf
handler::

    conditions = list(status.get("conditions", []))   # status is the live body
    ready = vr.ready_condition(observed_generation=meta["generation"])
    if vr.set_condition(conditions, ready.to_dict()):  # a dict, for an empty list
        patch.status["conditions"] = conditions         # plain JSON, as is

Conditions are immutable (a frozen dataclass), and the list helpers replace
list elements rather than mutating them, dicts included.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import re
from collections.abc import Callable, Iterable, Mapping, MutableSequence, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Final, TypeAlias, TypeVar, cast

from . import _validate
from .errors import ErrorType, ProviderError

__all__ = [
    "AUTHENTICATION_FAILED",
    "CREATE_FAILED",
    "CREATING",
    "DEPLOYMENT_ERROR",
    "DEPLOYMENT_READY",
    "HEALTH_CHECK_FAILED",
    "HEALTH_CHECK_PASSED",
    "INTERNAL_ERROR",
    "MAX_MESSAGE_LENGTH",
    "PROVIDER_AVAILABLE",
    "PROVIDER_ERROR",
    "PROVIDER_RUNTIME_READY",
    "PROVIDER_UNAVAILABLE",
    "PROVISIONING",
    "READY",
    "RESOURCE_NOT_FOUND",
    "VALIDATION_ERROR",
    "VM_READY",
    "Condition",
    "ConditionDict",
    "ConditionStatus",
    "ConditionType",
    "Reason",
    "find_condition",
    "health_check_conditions",
    "health_check_conditions_async",
    "is_condition_false",
    "is_condition_true",
    "map_error_to_condition",
    "provider_available_condition",
    "provider_runtime_ready_condition",
    "provisioning_condition",
    "ready_condition",
    "remove_condition",
    "set_condition",
]


class ConditionType(str, enum.Enum):
    """The condition types of the guide; members compare equal to their strings."""

    READY = "Ready"
    PROVISIONING = "Provisioning"
    PROVIDER_RUNTIME_READY = "ProviderRuntimeReady"
    PROVIDER_AVAILABLE = "ProviderAvailable"

    def __str__(self) -> str:
        return self.value


class ConditionStatus(str, enum.Enum):
    """``metav1.ConditionStatus``: exactly these three strings."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"

    def __str__(self) -> str:
        return self.value


class Reason(str, enum.Enum):
    """Every reason of the guide's tables and of its error mapping."""

    # VM conditions.
    VM_READY = "VMReady"
    PROVIDER_ERROR = "ProviderError"
    VALIDATION_ERROR = "ValidationError"
    CREATING = "Creating"
    CREATE_FAILED = "CreateFailed"
    # Provider conditions.
    DEPLOYMENT_READY = "DeploymentReady"
    DEPLOYMENT_ERROR = "DeploymentError"
    HEALTH_CHECK_PASSED = "HealthCheckPassed"
    HEALTH_CHECK_FAILED = "HealthCheckFailed"
    # mapErrorToCondition.
    RESOURCE_NOT_FOUND = "ResourceNotFound"
    AUTHENTICATION_FAILED = "AuthenticationFailed"
    PROVIDER_UNAVAILABLE = "ProviderUnavailable"
    INTERNAL_ERROR = "InternalError"

    def __str__(self) -> str:
        return self.value


# Plain-str constants (not enum members) so they survive yaml.safe_dump and
# any serializer that checks for exactly ``str``.
READY: Final[str] = ConditionType.READY.value
PROVISIONING: Final[str] = ConditionType.PROVISIONING.value
PROVIDER_RUNTIME_READY: Final[str] = ConditionType.PROVIDER_RUNTIME_READY.value
PROVIDER_AVAILABLE: Final[str] = ConditionType.PROVIDER_AVAILABLE.value

VM_READY: Final[str] = Reason.VM_READY.value
PROVIDER_ERROR: Final[str] = Reason.PROVIDER_ERROR.value
VALIDATION_ERROR: Final[str] = Reason.VALIDATION_ERROR.value
CREATING: Final[str] = Reason.CREATING.value
CREATE_FAILED: Final[str] = Reason.CREATE_FAILED.value
DEPLOYMENT_READY: Final[str] = Reason.DEPLOYMENT_READY.value
DEPLOYMENT_ERROR: Final[str] = Reason.DEPLOYMENT_ERROR.value
HEALTH_CHECK_PASSED: Final[str] = Reason.HEALTH_CHECK_PASSED.value
HEALTH_CHECK_FAILED: Final[str] = Reason.HEALTH_CHECK_FAILED.value
RESOURCE_NOT_FOUND: Final[str] = Reason.RESOURCE_NOT_FOUND.value
AUTHENTICATION_FAILED: Final[str] = Reason.AUTHENTICATION_FAILED.value
PROVIDER_UNAVAILABLE: Final[str] = Reason.PROVIDER_UNAVAILABLE.value
INTERNAL_ERROR: Final[str] = Reason.INTERNAL_ERROR.value

#: metav1.Condition's limits (kubebuilder markers); the API server rejects more.
MAX_TYPE_LENGTH: Final = 316
MAX_REASON_LENGTH: Final = 1024
MAX_MESSAGE_LENGTH: Final = 32768

# The patterns of metav1.Condition's kubebuilder markers. Matched with
# fullmatch: Python's "$" would also accept a trailing newline.
_TYPE_PATTERN: Final = re.compile(
    r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])"
)
_REASON_PATTERN: Final = re.compile(r"[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?")

# RFC 3339 as metav1.Time parses it: any fraction and any offset are accepted
# (then dropped to whole UTC seconds). A hand-written pattern because
# datetime.fromisoformat on 3.10 rejects "Z" and fractions other than 3 or 6 digits.
_RFC3339: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)

_STATUS_VALUES: Final = tuple(s.value for s in ConditionStatus)

# The guide's Description column, used when a helper is given no message.
_DESCRIPTIONS: Final[dict[tuple[str, str], str]] = {
    (READY, VM_READY): "VM is ready for use",
    (PROVISIONING, CREATING): "VM creation in progress",
    (PROVIDER_RUNTIME_READY, DEPLOYMENT_READY): "Remote runtime ready",
    (PROVIDER_RUNTIME_READY, DEPLOYMENT_ERROR): "Deployment failed",
    (PROVIDER_AVAILABLE, HEALTH_CHECK_PASSED): "Provider healthy",
    (PROVIDER_AVAILABLE, HEALTH_CHECK_FAILED): "Provider unhealthy",
}

# mapErrorToCondition's switch, then the VM table's rows for the rest.
_REASON_BY_ERROR_TYPE: Final[dict[ErrorType, str]] = {
    ErrorType.NOT_FOUND: RESOURCE_NOT_FOUND,
    ErrorType.UNAUTHORIZED: AUTHENTICATION_FAILED,
    ErrorType.UNAVAILABLE: PROVIDER_UNAVAILABLE,
    ErrorType.INVALID_SPEC: VALIDATION_ERROR,
}


# --------------------------------------------------------------------------- validation


def _kind(value: object) -> str:
    return type(value).__name__


def _plain(value: str) -> str:
    # An exact str: a str-enum member would otherwise leak into to_dict().
    return str.__str__(value)


def _string(owner: str, field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{owner} {field} must be a str, got {_kind(value)} {value!r}")
    return _plain(value)


def _condition_type(owner: str, value: Any) -> str:
    text = _string(owner, "type", value)
    if len(text) > MAX_TYPE_LENGTH or not _TYPE_PATTERN.fullmatch(text):
        raise ValueError(
            f"{owner} type must be a qualified name (e.g. 'Ready' or 'example.com/Ready') "
            f"of at most {MAX_TYPE_LENGTH} characters, got {value!r}"
        )
    return text


def _status(owner: str, value: Any) -> str:
    if isinstance(value, bool):
        return ConditionStatus.TRUE.value if value else ConditionStatus.FALSE.value
    if isinstance(value, str) and value in _STATUS_VALUES:
        return _plain(value)
    raise ValueError(f'{owner} status must be "True", "False", "Unknown" or a bool, got {value!r}')


def _reason(owner: str, value: Any) -> str:
    text = _string(owner, "reason", value)
    if len(text) > MAX_REASON_LENGTH or not _REASON_PATTERN.fullmatch(text):
        raise ValueError(
            f"{owner} reason must match ^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$ "
            f"(CamelCase, at most {MAX_REASON_LENGTH} characters), got {value!r}"
        )
    return text


def _message(owner: str, value: Any) -> str:
    text = _string(owner, "message", value)
    if len(text) > MAX_MESSAGE_LENGTH:
        raise ValueError(
            f"{owner} message must be at most {MAX_MESSAGE_LENGTH} characters, "
            f"got {len(text)} characters starting {text[:40]!r}"
        )
    return text


def _utc_seconds(owner: str, field: str, value: Any) -> datetime:
    """An aware datetime converted to UTC with the microseconds dropped.

    metav1.Time serializes whole seconds, so keeping more would make a
    condition differ from its own round trip through the API server.
    """
    if not isinstance(value, datetime):
        raise TypeError(f"{owner} {field} must be a datetime, got {_kind(value)} {value!r}")
    if value.utcoffset() is None:
        raise ValueError(
            f"{owner} {field} must be timezone-aware (e.g. datetime.now(timezone.utc)), "
            f"got naive {value!r}"
        )
    try:
        utc = value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError(f"{owner} {field} is out of range in UTC, got {value!r}") from None
    return utc.replace(microsecond=0)


def _optional_time(owner: str, field: str, value: Any) -> datetime | None:
    return None if value is None else _utc_seconds(owner, field, value)


def _optional_generation(owner: str, value: Any, field: str = "observed_generation") -> int | None:
    """An int >= 0, with 0 stored as None.

    Go's ``ObservedGeneration int64 `json:"observedGeneration,omitempty"``` cannot
    tell 0 from absent, and a real object's generation starts at 1. One value
    for "not tracked" keeps ``from_dict(to_dict(c)) == c`` exact and stops
    :func:`set_condition` reporting a change that the wire would not show.
    """
    if value is None:
        return None
    generation = _validate.integer(owner, field, value, 0)
    return generation or None


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _format_time(value: datetime) -> str:
    # Formatted by hand: strftime("%Y") does not zero-pad years < 1000 everywhere.
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
        f"T{value.hour:02d}:{value.minute:02d}:{value.second:02d}Z"
    )


def _parse_time(owner: str, field: str, value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return _optional_time(owner, field, value)
    if not isinstance(value, str):
        raise TypeError(f"{owner} {field} must be an RFC 3339 string, got {_kind(value)} {value!r}")
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise ValueError(
            f"{owner} {field} must be an RFC 3339 time like '2024-05-01T12:00:00Z', got {value!r}"
        )
    year, month, day, hour, minute, second, zulu, sign, off_h, off_m = match.groups()
    try:
        offset = timedelta(0) if zulu else timedelta(hours=int(off_h), minutes=int(off_m))
        tz = timezone(-offset if sign == "-" else offset)
        parsed = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=tz
        )
    except ValueError as exc:
        raise ValueError(f"{owner} {field} is not a valid time ({exc}), got {value!r}") from None
    return _utc_seconds(owner, field, parsed)


# --------------------------------------------------------------------------- Condition


@dataclasses.dataclass(frozen=True, init=False)
class Condition:
    """One entry of ``status.conditions``, shaped like ``metav1.Condition``.

    Attributes:
        type: CamelCase condition type, e.g. ``"Ready"`` (a Kubernetes
            qualified name, at most 316 characters).
        status: ``"True"``, ``"False"`` or ``"Unknown"``. The constructor also
            takes a bool (True -> "True", False -> "False"); anything else is a
            ValueError naming the field and value.
        reason: machine-readable CamelCase reason matching
            ``^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`` (at most 1024 characters).
        message: human-readable text, at most 32768 characters ("" allowed).
        last_transition_time: when ``status`` last changed, a timezone-aware
            datetime, stored in UTC with whole seconds (like metav1.Time), or
            None until :func:`set_condition` stamps it. Naive datetimes are
            rejected.
        observed_generation: the ``metadata.generation`` the condition was
            computed from (int >= 1), or None when not tracked. 0 is accepted
            and stored as None: metav1.Condition omits a 0 (``omitempty``),
            so on the wire the two are the same value.

    Every str field is stored as an exact ``str`` (enum members are unwrapped),
    so :meth:`to_dict` output serializes with any JSON or YAML dumper.
    """

    type: str
    status: str
    reason: str
    message: str
    last_transition_time: datetime | None
    observed_generation: int | None

    def __init__(
        self,
        type: str,
        status: str | bool,
        reason: str,
        message: str = "",
        last_transition_time: datetime | None = None,
        observed_generation: int | None = None,
    ) -> None:
        self._assign(
            "Condition", type, status, reason, message, last_transition_time, observed_generation
        )

    def _assign(
        self,
        owner: str,
        type: Any,
        status: Any,
        reason: Any,
        message: Any,
        last_transition_time: Any,
        observed_generation: Any,
    ) -> None:
        # Separate from __init__ so a parser can name itself (and the list
        # entry it is reading) in every error message.
        values = {
            "type": _condition_type(owner, type),
            "status": _status(owner, status),
            "reason": _reason(owner, reason),
            "message": _message(owner, message),
            "last_transition_time": _optional_time(
                owner, "last_transition_time", last_transition_time
            ),
            "observed_generation": _optional_generation(owner, observed_generation),
        }
        # Frozen dataclass: fields can only be set through object.__setattr__.
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @property
    def is_true(self) -> bool:
        """``status == "True"``."""
        return self.status == ConditionStatus.TRUE.value

    def to_dict(self) -> dict[str, Any]:
        """The ``metav1.Condition`` JSON shape.

        Keys ``type``, ``status``, ``reason``, ``message`` and
        ``lastTransitionTime`` always appear, in that order;
        ``lastTransitionTime`` is an RFC 3339 UTC string with whole seconds and
        a ``Z`` suffix (``"2024-05-01T12:00:00Z"``), or None when unset (Go's
        zero metav1.Time also marshals to ``null``). ``observedGeneration`` is
        added only when it is set, as Go's ``omitempty`` does (a generation
        of 0 is stored as None, so it is omitted too).
        """
        result: dict[str, Any] = {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": (
                None
                if self.last_transition_time is None
                else _format_time(self.last_transition_time)
            ),
        }
        if self.observed_generation is not None:
            result["observedGeneration"] = self.observed_generation
        return result

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Condition:
        """Parse the ``metav1.Condition`` shape that :meth:`to_dict` produces.

        ``type``, ``status`` and ``reason`` are required; ``message`` defaults
        to ""; ``lastTransitionTime`` may be missing or null (-> None), an RFC
        3339 string with any fraction and offset (-> UTC, whole seconds) or an
        aware datetime; ``observedGeneration`` may be missing, null or 0
        (all -> None).
        Unknown keys are ignored, as Go's JSON decoding does.
        ``Condition.from_dict(c.to_dict()) == c`` for every condition.
        """
        owner = "Condition.from_dict"
        if not isinstance(data, Mapping):
            raise TypeError(f"{owner} data must be a mapping, got {_kind(data)} {data!r}")
        missing = _missing_keys(data)
        if missing:
            raise ValueError(f"{owner} data is missing required key(s) {missing}, got {data!r}")
        return _from_json_fields(owner, data)


_REQUIRED_KEYS: Final = ("type", "status", "reason")


def _missing_keys(data: Mapping[str, Any]) -> list[str]:
    return [key for key in _REQUIRED_KEYS if key not in data]


def _from_json_fields(owner: str, data: Mapping[str, Any]) -> Condition:
    """A Condition from a mapping that has the required keys.

    Errors name ``owner`` and the JSON key (``observedGeneration``, not
    ``observed_generation``): that is what the user sees in their dict.
    """
    generation = _optional_generation(owner, data.get("observedGeneration"), "observedGeneration")
    condition = Condition.__new__(Condition)
    condition._assign(
        owner,
        data["type"],
        data["status"],
        data["reason"],
        data.get("message", ""),
        _parse_time(owner, "lastTransitionTime", data.get("lastTransitionTime")),
        generation,
    )
    return condition


# --------------------------------------------------------------------------- error mapping


def _error_message(exc: BaseException) -> str:
    """The text a condition shows for ``exc``.

    A ProviderError's ``.message`` (the Go code uses ``providerErr.Message``,
    without the cause), else ``str(exc)``, else the class name when that is
    empty or ``__str__`` itself fails. Cut to MAX_MESSAGE_LENGTH so a huge
    error text cannot make the API server reject the whole status update.
    """
    if isinstance(exc, ProviderError):
        text = exc.message
    else:
        try:
            text = str(exc)
        except Exception:  # noqa: BLE001 (a broken __str__ must not break status reporting)
            text = ""
        text = text or _kind(exc)
    if len(text) > MAX_MESSAGE_LENGTH:
        text = text[: MAX_MESSAGE_LENGTH - 3] + "..."
    return text


def _error_reason(exc: BaseException) -> str:
    if isinstance(exc, ProviderError):
        return _REASON_BY_ERROR_TYPE.get(exc.type, PROVIDER_ERROR)
    return INTERNAL_ERROR


def _require_exception(owner: str, field: str, value: Any) -> BaseException:
    if not isinstance(value, BaseException):
        raise TypeError(f"{owner} {field} must be an exception, got {_kind(value)} {value!r}")
    return value


def map_error_to_condition(
    exc: BaseException,
    condition_type: str = READY,
    *,
    observed_generation: int | None = None,
) -> Condition:
    """The ``status: "False"`` condition describing ``exc`` (the guide's mapErrorToCondition).

    ==========================================  ========================
    exception                                   reason
    ==========================================  ========================
    ProviderError ``NotFound``                  ``ResourceNotFound``
    ProviderError ``Unauthorized``              ``AuthenticationFailed``
    ProviderError ``Unavailable``               ``ProviderUnavailable``
    ProviderError ``InvalidSpec``               ``ValidationError``
    any other ProviderError type                ``ProviderError``
    anything that is not a ProviderError        ``InternalError``
    ==========================================  ========================

    The first three rows are the guide's Go switch, the next two its VM
    table. Like Go's type assertion, only ``exc`` itself is inspected (not
    its ``__cause__``), and builtin exceptions are not run through
    :func:`~virtrigaud_resilience.errors.classify`: a ``TimeoutError`` is an
    ``InternalError``. The message is the ProviderError's ``.message``, else
    ``str(exc)``, else the exception's class name. ``last_transition_time``
    is left None for :func:`set_condition` to stamp.
    """
    error = _require_exception("map_error_to_condition", "exc", exc)
    return Condition(
        type=condition_type,
        status=ConditionStatus.FALSE.value,
        reason=_error_reason(error),
        message=_error_message(error),
        observed_generation=observed_generation,
    )


# --------------------------------------------------------------------------- list operations

#: One condition as kopf and the Kubernetes clients hold it: a plain dict in
#: the ``metav1.Condition`` JSON shape, e.g. one entry of kopf's
#: ``status.get("conditions", [])``.
ConditionDict: TypeAlias = dict[str, Any]

# The lists set_condition and remove_condition change in place. Three members,
# not MutableSequence[Condition | ConditionDict] alone: MutableSequence is
# invariant, so a list[Condition] would not match that.
_ConditionList: TypeAlias = (
    MutableSequence[Condition]
    | MutableSequence[ConditionDict]
    | MutableSequence[Condition | ConditionDict]
)

# An entry of a list the read-only helpers take; a TypeVar so find_condition
# returns the kind it was given (a dict from a list[dict], and so on).
_Entry = TypeVar("_Entry", bound=Condition | Mapping[str, Any])


def _require_list(owner: str, conditions: object, *, mutable: bool) -> None:
    # A str or a single dict is iterable too, and would otherwise fail later
    # with a message about one of its characters or keys.
    expected = MutableSequence if mutable else Iterable
    if isinstance(conditions, (str, bytes, Mapping)) or not isinstance(conditions, expected):
        kind = "list" if mutable else "list or other iterable"
        raise TypeError(
            f"{owner} conditions must be a {kind} of Conditions or dicts, "
            f"got {_kind(conditions)} {conditions!r}"
        )


def _parse_entry(owner: str, entry: object) -> Condition:
    """``entry`` as a validated Condition: a Condition as is, a mapping parsed.

    ``owner`` names the entry in errors, e.g. ``"set_condition conditions[2]"``.
    """
    if isinstance(entry, Condition):
        return entry
    if isinstance(entry, Mapping):
        missing = _missing_keys(entry)
        if missing:
            raise ValueError(f"{owner} is missing required key(s) {missing}, got {entry!r}")
        return _from_json_fields(owner, entry)
    raise TypeError(f"{owner} must be a Condition or a dict, got {_kind(entry)} {entry!r}")


def _parse_entries(owner: str, entries: Iterable[object]) -> list[Condition]:
    # Every entry, not only those before the match: whether a malformed entry
    # is reported must not depend on where it sits in the list.
    return [
        _parse_entry(f"{owner} conditions[{index}]", entry) for index, entry in enumerate(entries)
    ]


def _index_of(parsed: Sequence[Condition], condition_type: str) -> int | None:
    for index, condition in enumerate(parsed):
        if condition.type == condition_type:
            return index
    return None


def _dict_like(template: Mapping[str, Any], condition: Condition) -> ConditionDict:
    """``condition``'s metav1 fields written over a copy of ``template``.

    The template's other keys are kept, in their order, so fields this
    library does not know survive an update.
    """
    result = {**template, **condition.to_dict()}
    if condition.observed_generation is None:
        # omitempty: a generation the template had must not linger.
        result.pop("observedGeneration", None)
    return result


def _in_kind_of(entry: object, condition: Condition) -> Condition | ConditionDict:
    """``condition`` as the same kind as ``entry``: a Condition, or a dict shaped like it."""
    if isinstance(entry, Condition):
        return condition
    return _dict_like(cast("Mapping[str, Any]", entry), condition)


def _holds_conditions(entries: Sequence[object], new: object) -> bool:
    """Whether an entry appended to ``entries`` should be a Condition (else a dict).

    The kind every entry already has; for an empty or mixed list, ``new``'s kind.
    """
    kinds = {isinstance(entry, Condition) for entry in entries}
    if len(kinds) == 1:
        return kinds.pop()
    return isinstance(new, Condition)


def _stamped(condition: Condition, stamp: datetime) -> Condition:
    if condition.last_transition_time is not None:
        return condition
    return dataclasses.replace(condition, last_transition_time=stamp)


def set_condition(
    conditions: _ConditionList,
    new: Condition | Mapping[str, Any],
    now: datetime | None = None,
) -> bool:
    """Set ``new`` in ``conditions`` in place, exactly like ``meta.SetStatusCondition``.

    ``conditions`` is a list of :class:`Condition`, or of plain dicts in the
    ``metav1.Condition`` JSON shape (what kopf's ``status.get("conditions", [])``
    and the Kubernetes clients hold), or a mix. ``new`` is a Condition or
    such a dict.

    * No condition of ``new``'s type yet: append ``new``, its
      ``lastTransitionTime`` set to ``now`` when unset. Returns True.
    * Otherwise, for the first condition of that type:
      ``lastTransitionTime`` changes only when ``status`` changes (to
      ``new``'s, or ``now`` when ``new`` has none); ``status``, ``reason``,
      ``message`` and ``observedGeneration`` are set to ``new``'s. Returns
      whether any of them changed, so an identical ``new`` returns False and
      the caller can skip the status update. Later duplicates are left alone.

    Entries are replaced, never changed in place, so a shallow copy is enough
    to keep a list you must not change intact (in kopf,
    ``list(status.get("conditions", []))``: ``status`` is the live body).

    The kind of each entry is kept:

    * An updated entry keeps its kind. An updated dict keeps its other keys,
      in their order, and gets the metav1 fields in the form the API server
      stores (the :meth:`Condition.to_dict` form: ``lastTransitionTime`` as
      ``"2024-05-01T12:00:00Z"``, ``observedGeneration`` dropped when unset
      or 0). An entry that does not change is not touched at all.
    * An appended entry takes the kind of the entries already in the list;
      when the list is empty or holds both kinds, the kind of ``new``. So
      give a dict list that may be empty (kopf's is, on the first reconcile)
      a dict ``new``, e.g. ``ready_condition().to_dict()``.
    * Only the metav1 fields of a dict ``new`` are used; other keys in it
      are ignored, as Go's JSON decoding ignores them.

    ``new`` and every entry are validated before anything changes: a dict
    missing ``type``, ``status`` or ``reason``, or with a bad value, raises
    ValueError (TypeError for a value of the wrong type) naming the entry,
    the key and the value, e.g. ``set_condition conditions[1] status must be
    "True", "False", "Unknown" or a bool, got 'yes'``.

    ``now`` defaults to the current UTC time in whole seconds; it must be
    timezone-aware.
    """
    owner = "set_condition"
    _require_list(owner, conditions, mutable=True)
    wanted = _parse_entry(f"{owner} new", new)
    stamp = _now() if now is None else _utc_seconds(owner, "now", now)
    # One untyped view: which kind goes where is decided at run time, above.
    entries: MutableSequence[Any] = conditions
    parsed = _parse_entries(owner, entries)
    index = _index_of(parsed, wanted.type)
    if index is None:
        appended = _stamped(wanted, stamp)
        entries.append(appended if _holds_conditions(entries, new) else _dict_like({}, appended))
        return True
    existing = parsed[index]
    updated = _merge(existing, wanted, stamp)
    if updated == existing:
        return False
    entries[index] = _in_kind_of(entries[index], updated)
    return True


def _merge(existing: Condition, new: Condition, stamp: datetime) -> Condition:
    transition = existing.last_transition_time
    if existing.status != new.status:
        transition = new.last_transition_time if new.last_transition_time is not None else stamp
    return dataclasses.replace(
        existing,
        status=new.status,
        reason=new.reason,
        message=new.message,
        observed_generation=new.observed_generation,
        last_transition_time=transition,
    )


def _lookup(owner: str, conditions: object, condition_type: object) -> tuple[Any, Condition] | None:
    """The first entry of ``condition_type`` and its parsed form, every entry validated."""
    _require_list(owner, conditions, mutable=False)
    wanted = _string(owner, "condition_type", condition_type)
    entries = list(cast("Iterable[object]", conditions))  # an iterator can be read only once
    parsed = _parse_entries(owner, entries)
    index = _index_of(parsed, wanted)
    return None if index is None else (entries[index], parsed[index])


def find_condition(conditions: Iterable[_Entry], condition_type: str) -> _Entry | None:
    """The first condition of ``condition_type``, or None (``meta.FindStatusCondition``).

    Returns the entry itself, of its own kind: a Condition from a list of
    Conditions, the very dict from a list of dicts (so ``found["message"]``
    reads it). Every entry is validated as in :func:`set_condition`;
    ``condition_type`` must be a str (a :class:`ConditionType` is one).
    """
    found = _lookup("find_condition", conditions, condition_type)
    return None if found is None else cast(_Entry, found[0])


def remove_condition(conditions: _ConditionList, condition_type: str) -> bool:
    """Remove every condition of ``condition_type`` in place; True iff any was removed.

    Like ``meta.RemoveStatusCondition``, which also drops duplicates. Takes
    the same lists as :func:`set_condition`; the entries kept are the same
    objects, in the same order. Every entry is validated first, so a
    malformed list raises and is left unchanged.
    """
    owner = "remove_condition"
    _require_list(owner, conditions, mutable=True)
    wanted = _string(owner, "condition_type", condition_type)
    entries: MutableSequence[Any] = conditions
    parsed = _parse_entries(owner, entries)
    kept = [entry for entry, condition in zip(entries, parsed) if condition.type != wanted]
    if len(kept) == len(entries):
        return False
    entries[:] = kept
    return True


def is_condition_true(
    conditions: Iterable[Condition | Mapping[str, Any]], condition_type: str
) -> bool:
    """True iff a condition of ``condition_type`` exists with status ``"True"``.

    Reads lists of Conditions, of dicts, or both, validated as in
    :func:`find_condition`.
    """
    found = _lookup("is_condition_true", conditions, condition_type)
    return found is not None and found[1].status == ConditionStatus.TRUE.value


def is_condition_false(
    conditions: Iterable[Condition | Mapping[str, Any]], condition_type: str
) -> bool:
    """True iff a condition of ``condition_type`` exists with status ``"False"``.

    Not the negation of :func:`is_condition_true`: a missing or ``"Unknown"``
    condition is neither. Reads the same lists as :func:`is_condition_true`.
    """
    found = _lookup("is_condition_false", conditions, condition_type)
    return found is not None and found[1].status == ConditionStatus.FALSE.value


# --------------------------------------------------------------------------- table helpers


def _described(
    condition_type: str,
    status: bool,
    reason: str,
    message: str | None,
    observed_generation: int | None,
) -> Condition:
    text = _DESCRIPTIONS.get((condition_type, reason), "") if message is None else message
    return Condition(
        type=condition_type,
        status=status,
        reason=reason,
        message=text,
        observed_generation=observed_generation,
    )


def ready_condition(
    error: BaseException | None = None,
    *,
    message: str | None = None,
    observed_generation: int | None = None,
) -> Condition:
    """The VM's ``Ready`` condition.

    No error: ``Ready True VMReady`` with ``message`` (default "VM is ready
    for use"). An error: :func:`map_error_to_condition` (``message`` is
    ignored; the error's own text is used).
    """
    if error is not None:
        return map_error_to_condition(error, READY, observed_generation=observed_generation)
    return _described(READY, True, VM_READY, message, observed_generation)


def provisioning_condition(
    error: BaseException | None = None,
    *,
    message: str | None = None,
    observed_generation: int | None = None,
) -> Condition:
    """The VM's ``Provisioning`` condition.

    No error: ``Provisioning True Creating`` with ``message`` (default "VM
    creation in progress"). An error: ``Provisioning False CreateFailed``
    with the error's message (as in :func:`map_error_to_condition`).
    """
    if error is None:
        return _described(PROVISIONING, True, CREATING, message, observed_generation)
    failure = _require_exception("provisioning_condition", "error", error)
    return Condition(
        type=PROVISIONING,
        status=False,
        reason=CREATE_FAILED,
        message=_error_message(failure),
        observed_generation=observed_generation,
    )


def provider_available_condition(
    healthy: bool,
    message: str | None = None,
    *,
    observed_generation: int | None = None,
) -> Condition:
    """``ProviderAvailable``: True ``HealthCheckPassed`` or False ``HealthCheckFailed``.

    ``message`` None means the guide's description ("Provider healthy" /
    "Provider unhealthy"); pass "" for an empty one.
    """
    ok = _validate.boolean("provider_available_condition", "healthy", healthy)
    reason = HEALTH_CHECK_PASSED if ok else HEALTH_CHECK_FAILED
    return _described(PROVIDER_AVAILABLE, ok, reason, message, observed_generation)


def provider_runtime_ready_condition(
    ready: bool,
    message: str | None = None,
    *,
    observed_generation: int | None = None,
) -> Condition:
    """``ProviderRuntimeReady``: True ``DeploymentReady`` or False ``DeploymentError``.

    ``message`` None means the guide's description ("Remote runtime ready" /
    "Deployment failed"); pass "" for an empty one.
    """
    ok = _validate.boolean("provider_runtime_ready_condition", "ready", ready)
    reason = DEPLOYMENT_READY if ok else DEPLOYMENT_ERROR
    return _described(PROVIDER_RUNTIME_READY, ok, reason, message, observed_generation)


def _health_outcome(result: object, observed_generation: int | None) -> Condition:
    # An explicit False is a failed check: a boolean ping reported as
    # "healthy" would be a silent lie. Every other return value is success.
    if result is False:
        return provider_available_condition(
            False, "health check returned False", observed_generation=observed_generation
        )
    return provider_available_condition(True, observed_generation=observed_generation)


def _health_failure(exc: Exception, observed_generation: int | None) -> Condition:
    return provider_available_condition(
        False, _error_message(exc), observed_generation=observed_generation
    )


def _require_callable(owner: str, check: Any) -> Callable[[], object]:
    if not callable(check):
        raise TypeError(f"{owner} check must be callable, got {_kind(check)} {check!r}")
    return check  # type: ignore[no-any-return]


def health_check_conditions(
    check: Callable[[], object],
    *,
    observed_generation: int | None = None,
) -> Condition:
    """Run ``check()`` and report ``ProviderAvailable``.

    Returns True ``HealthCheckPassed`` when ``check`` returns (anything but
    ``False``), False ``HealthCheckFailed`` when it returns ``False`` or
    raises an ``Exception`` (message: the error's text, as in
    :func:`map_error_to_condition`). ``BaseException``s that are not
    ``Exception`` (KeyboardInterrupt, SystemExit, asyncio.CancelledError)
    propagate. ``check`` must be synchronous: if it returns an awaitable the
    awaitable is closed and TypeError raised; use
    :func:`health_check_conditions_async` instead.
    """
    owner = "health_check_conditions"
    fn = _require_callable(owner, check)
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001 (any failure of the check means unhealthy)
        return _health_failure(exc, observed_generation)
    if inspect.isawaitable(result):
        close = getattr(result, "close", None)
        if callable(close):
            close()  # avoid "coroutine was never awaited"
        raise TypeError(
            f"{owner} check returned an awaitable ({_kind(result)}); "
            "use health_check_conditions_async for async checks"
        )
    return _health_outcome(result, observed_generation)


async def health_check_conditions_async(
    check: Callable[[], object],
    *,
    observed_generation: int | None = None,
) -> Condition:
    """Like :func:`health_check_conditions`, for a sync or async ``check``.

    If ``check()`` returns an awaitable it is awaited; an ``Exception`` from
    the call or the await gives ``HealthCheckFailed``. Cancellation
    (``asyncio.CancelledError``) propagates, so a cancelled controller stops.
    """
    fn = _require_callable("health_check_conditions_async", check)
    try:
        result = fn()
        if inspect.isawaitable(result):
            result = await result
    except Exception as exc:  # noqa: BLE001 (any failure of the check means unhealthy)
        return _health_failure(exc, observed_generation)
    return _health_outcome(result, observed_generation)
