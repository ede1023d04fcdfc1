"""The error taxonomy: ErrorType, ProviderError and its subclasses, classify()."""

from __future__ import annotations

import asyncio
import concurrent.futures
import pickle

import pytest
import virtrigaud_resilience as vr
from virtrigaud_resilience import ErrorType

# The guide's table: type, Go constant string, retryable, subclass.
TABLE = [
    (ErrorType.NOT_FOUND, "NotFound", False, vr.NotFoundError),
    (ErrorType.INVALID_SPEC, "InvalidSpec", False, vr.InvalidSpecError),
    (ErrorType.UNAUTHORIZED, "Unauthorized", False, vr.UnauthorizedError),
    (ErrorType.NOT_SUPPORTED, "NotSupported", False, vr.NotSupportedError),
    (ErrorType.RETRYABLE, "Retryable", True, vr.RetryableError),
    (ErrorType.UNAVAILABLE, "Unavailable", True, vr.UnavailableError),
    (ErrorType.RATE_LIMIT, "RateLimit", True, vr.RateLimitError),
    (ErrorType.TIMEOUT, "Timeout", True, vr.OperationTimeoutError),
    (ErrorType.QUOTA_EXCEEDED, "QuotaExceeded", False, vr.QuotaExceededError),
    (ErrorType.CONFLICT, "Conflict", False, vr.ConflictError),
]
IDS = [row[1] for row in TABLE]


def test_ten_error_types() -> None:
    assert len(ErrorType) == 10
    assert {t.value for t in ErrorType} == {row[1] for row in TABLE}
    assert vr.RETRYABLE_TYPES == {row[0] for row in TABLE if row[2]}


@pytest.mark.parametrize(("error_type", "value", "retryable", "cls"), TABLE, ids=IDS)
def test_error_type_is_a_str_enum(
    error_type: ErrorType, value: str, retryable: bool, cls: type
) -> None:
    assert error_type.value == value
    assert error_type == value  # a str enum compares equal to the Go string
    assert str(error_type) == value
    assert ErrorType(value) is error_type
    assert isinstance(error_type, str)


@pytest.mark.parametrize(("error_type", "value", "retryable", "cls"), TABLE, ids=IDS)
def test_retryable_column(error_type: ErrorType, value: str, retryable: bool, cls: type) -> None:
    assert vr.ProviderError(error_type, "m").retryable is retryable
    assert vr.ProviderError(value, "m").retryable is retryable  # the string works too
    assert vr.is_retryable(vr.ProviderError(error_type, "m")) is retryable
    assert cls("m").retryable is retryable
    assert vr.is_retryable(cls("m")) is retryable


def test_provider_error_attributes() -> None:
    cause = ConnectionResetError("peer reset")
    err = vr.ProviderError(ErrorType.UNAVAILABLE, "vcenter unreachable", cause=cause)
    assert err.type is ErrorType.UNAVAILABLE
    assert err.message == "vcenter unreachable"
    assert err.cause is cause
    assert err.__cause__ is cause
    assert err.retryable is True
    assert str(err) == "Unavailable: vcenter unreachable: peer reset"
    assert isinstance(err, Exception)
    with pytest.raises(vr.ProviderError) as info:
        raise err
    assert info.value.__cause__ is cause


def test_provider_error_without_cause() -> None:
    err = vr.ProviderError("NotFound", "vm-1 not found")
    assert err.type is ErrorType.NOT_FOUND
    assert err.cause is None and err.__cause__ is None
    assert str(err) == "NotFound: vm-1 not found"
    assert "NotFound" in repr(err) and "vm-1 not found" in repr(err)


@pytest.mark.parametrize(("error_type", "value", "retryable", "cls"), TABLE, ids=IDS)
def test_subclasses(error_type: ErrorType, value: str, retryable: bool, cls: type) -> None:
    cause = RuntimeError("inner")
    err = cls("message", cause)
    assert isinstance(err, vr.ProviderError)
    assert err.type is error_type
    assert (err.message, err.cause, err.__cause__) == ("message", cause, cause)
    assert vr.is_type(err, error_type)
    assert type(vr.new_error(error_type, "m")) is cls
    assert type(vr.new_error(value, "m")) is cls
    assert vr.new_error(value, "m", cause).cause is cause
    # exactly one subclass per type
    others = [row[3] for row in TABLE if row[3] is not cls]
    assert not any(isinstance(err, other) for other in others)


@pytest.mark.parametrize(("error_type", "value", "retryable", "cls"), TABLE, ids=IDS)
def test_retryable_override(error_type: ErrorType, value: str, retryable: bool, cls: type) -> None:
    forced = cls("m", retryable=True)
    assert forced.retryable is True and vr.is_retryable(forced)
    assert forced.type is error_type  # the type stays
    assert vr.ProviderError(error_type, "m", retryable=True).retryable is True
    assert cls("m", retryable=False).retryable is False


def test_operation_timeout_error_is_a_builtin_timeout_error() -> None:
    err = vr.OperationTimeoutError("deadline exceeded")
    assert isinstance(err, TimeoutError)
    with pytest.raises(TimeoutError):
        raise err
    try:
        raise err
    except TimeoutError as caught:  # code catching builtins still works
        assert caught is err
    assert str(err) == "Timeout: deadline exceeded"


@pytest.mark.parametrize("error_type", list(ErrorType))
def test_every_error_carries_retry_after(error_type: ErrorType) -> None:
    # A 503 with Retry-After is an UnavailableError that says when to come back.
    assert vr.new_error(error_type, "x").retry_after is None
    err = vr.ProviderError(error_type, "x", retry_after=30)
    assert err.retry_after == 30.0 and isinstance(err.retry_after, float)
    assert pickle.loads(pickle.dumps(err)).retry_after == 30.0
    assert vr.errors.MAX_RETRY_AFTER == 1e9
    assert vr.ProviderError(error_type, "x", retry_after=1e9).retry_after == 1e9


def test_rate_limit_error_retry_after() -> None:
    assert vr.RateLimitError("slow down").retry_after is None
    err = vr.RateLimitError("slow down", retry_after=2.5)
    assert err.retry_after == 2.5
    assert vr.RateLimitError("x", retry_after=0).retry_after == 0.0
    with pytest.raises(ValueError, match=r"retry_after.*-1"):
        vr.RateLimitError("x", retry_after=-1)
    with pytest.raises(TypeError, match=r"retry_after.*'soon'"):
        vr.RateLimitError("x", retry_after="soon")  # type: ignore[arg-type]


def test_circuit_open_error() -> None:
    err = vr.CircuitOpenError("provider-vsphere", "vsphere", "prod", retry_after=12.0)
    assert isinstance(err, vr.UnavailableError)
    assert vr.is_retryable(err)
    assert err.retry_after == 12.0
    assert "provider-vsphere" in str(err)
    assert (err.breaker, err.provider_type, err.provider) == ("provider-vsphere", "vsphere", "prod")


# ------------------------------------------------------------------ classify --

CLASSIFY = [
    (TimeoutError("t"), vr.OperationTimeoutError),
    (asyncio.TimeoutError(), vr.OperationTimeoutError),
    (concurrent.futures.TimeoutError(), vr.OperationTimeoutError),
    (ConnectionError("c"), vr.UnavailableError),
    (ConnectionRefusedError("c"), vr.UnavailableError),
    (ConnectionResetError("c"), vr.UnavailableError),
    (ConnectionAbortedError("c"), vr.UnavailableError),
    (BrokenPipeError("c"), vr.UnavailableError),
    (PermissionError("p"), vr.UnauthorizedError),
    (NotImplementedError("n"), vr.NotSupportedError),
]


@pytest.mark.parametrize(("exc", "cls"), CLASSIFY, ids=lambda v: type(v).__name__)
def test_classify_maps_builtins(exc: BaseException, cls: type) -> None:
    mapped = vr.classify(exc)
    assert type(mapped) is cls
    assert mapped.cause is exc  # type: ignore[attr-defined]
    assert mapped.__cause__ is exc
    assert vr.is_retryable(mapped) is (cls is not vr.UnauthorizedError and cls is not vr.NotSupportedError)


class CustomTimeout(TimeoutError):
    pass


def test_classify_maps_subclasses() -> None:
    assert isinstance(vr.classify(CustomTimeout()), vr.OperationTimeoutError)


@pytest.mark.parametrize(
    "exc",
    [ValueError("v"), KeyError("k"), RuntimeError("r"), OSError("o"), FileNotFoundError("f"),
     Exception("e"), KeyboardInterrupt()],
    ids=lambda v: type(v).__name__,
)
def test_classify_leaves_other_exceptions_unchanged(exc: BaseException) -> None:
    assert vr.classify(exc) is exc
    assert vr.is_retryable(exc) is False


@pytest.mark.parametrize(("error_type", "value", "retryable", "cls"), TABLE, ids=IDS)
def test_classify_returns_provider_errors_unchanged(
    error_type: ErrorType, value: str, retryable: bool, cls: type
) -> None:
    err = cls("m")
    assert vr.classify(err) is err


def test_builtin_timeout_is_not_retryable_until_classified() -> None:
    exc = TimeoutError("t")
    assert vr.is_retryable(exc) is False
    assert vr.is_retryable(vr.classify(exc)) is True
    assert vr.is_retryable(None) is False


def test_is_not_found() -> None:
    assert vr.is_not_found(vr.NotFoundError("gone"))
    assert vr.is_not_found(vr.ProviderError("NotFound", "gone"))
    assert not vr.is_not_found(vr.ConflictError("x"))
    assert not vr.is_not_found(KeyError("gone"))
    assert not vr.is_not_found(FileNotFoundError("gone"))
    assert not vr.is_not_found(None)


# ------------------------------------------------------------------ pickling --

PICKLED = [
    vr.ProviderError(ErrorType.CONFLICT, "exists", ValueError("dup")),
    *(row[3]("m", RuntimeError("inner")) for row in TABLE),
    vr.NotFoundError("forced", retryable=True),
    vr.RateLimitError("slow", retry_after=3.0),
    vr.CircuitOpenError("provider-x", "fake", "p", retry_after=4.0),
]


@pytest.mark.parametrize("err", PICKLED, ids=lambda e: type(e).__name__)
def test_pickle_round_trip(err: vr.ProviderError) -> None:
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is type(err)
    assert (copy.type, copy.message, copy.retryable) == (err.type, err.message, err.retryable)
    assert str(copy) == str(err)
    assert copy.args == err.args
    if err.cause is not None:
        assert type(copy.cause) is type(err.cause)
        assert copy.cause.args == err.cause.args
    for attr in ("retry_after", "breaker", "provider_type", "provider"):
        assert getattr(copy, attr, None) == getattr(err, attr, None)


def test_pickle_keeps_cause_chain() -> None:
    err = vr.UnavailableError("down", ConnectionResetError("reset"))
    copy = pickle.loads(pickle.dumps(err))
    assert copy.cause is not None
    assert copy.__cause__ is copy.cause
