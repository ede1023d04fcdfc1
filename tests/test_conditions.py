"""Tests for virtrigaud_resilience.conditions: the guide's condition tables,
the error mapping, the metav1.Condition wire shape and SetStatusCondition."""

from __future__ import annotations

import asyncio
import inspect
import json
import pickle
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from virtrigaud_resilience import conditions as c
from virtrigaud_resilience.conditions import (
    Condition,
    ConditionStatus,
    ConditionType,
    Reason,
    find_condition,
    health_check_conditions,
    health_check_conditions_async,
    is_condition_false,
    is_condition_true,
    map_error_to_condition,
    provider_available_condition,
    provider_runtime_ready_condition,
    provisioning_condition,
    ready_condition,
    remove_condition,
    set_condition,
)
from virtrigaud_resilience.errors import ErrorType, ProviderError, new_error

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
T1 = T0 + timedelta(minutes=5)
T2 = T0 + timedelta(hours=1)


# --------------------------------------------------------------------------- constants


def test_condition_type_values() -> None:
    assert [t.value for t in ConditionType] == [
        "Ready",
        "Provisioning",
        "ProviderRuntimeReady",
        "ProviderAvailable",
    ]
    assert c.READY == "Ready"
    assert c.PROVISIONING == "Provisioning"
    assert c.PROVIDER_RUNTIME_READY == "ProviderRuntimeReady"
    assert c.PROVIDER_AVAILABLE == "ProviderAvailable"


def test_reason_values() -> None:
    expected = {
        "VM_READY": "VMReady",
        "PROVIDER_ERROR": "ProviderError",
        "VALIDATION_ERROR": "ValidationError",
        "CREATING": "Creating",
        "CREATE_FAILED": "CreateFailed",
        "DEPLOYMENT_READY": "DeploymentReady",
        "DEPLOYMENT_ERROR": "DeploymentError",
        "HEALTH_CHECK_PASSED": "HealthCheckPassed",
        "HEALTH_CHECK_FAILED": "HealthCheckFailed",
        "RESOURCE_NOT_FOUND": "ResourceNotFound",
        "AUTHENTICATION_FAILED": "AuthenticationFailed",
        "PROVIDER_UNAVAILABLE": "ProviderUnavailable",
        "INTERNAL_ERROR": "InternalError",
    }
    assert {r.name: r.value for r in Reason} == expected
    for name, value in expected.items():
        assert getattr(c, name) == value
        assert type(getattr(c, name)) is str  # plain str, safe for any serializer


def test_enums_compare_equal_to_strings() -> None:
    # Typed as str so the comparison is str == str, as in user code.
    members: list[str] = [
        ConditionType.READY,
        Reason.VM_READY,
        ConditionStatus.TRUE,
        ConditionStatus.FALSE,
        ConditionStatus.UNKNOWN,
    ]
    assert members == ["Ready", "VMReady", "True", "False", "Unknown"]
    by_type: dict[str, int] = {ConditionType.READY: 1}
    assert by_type["Ready"] == 1  # equal hashes too
    assert str(Reason.CREATE_FAILED) == "CreateFailed"
    assert f"{ConditionType.PROVIDER_AVAILABLE}" == "ProviderAvailable"


# --------------------------------------------------------------------------- guide tables

VM_TABLE = [
    (ready_condition(), "Ready", "True", "VMReady"),
    (ready_condition(ProviderError(ErrorType.CONFLICT, "x")), "Ready", "False", "ProviderError"),
    (
        ready_condition(ProviderError(ErrorType.INVALID_SPEC, "x")),
        "Ready",
        "False",
        "ValidationError",
    ),
    (provisioning_condition(), "Provisioning", "True", "Creating"),
    (provisioning_condition(RuntimeError("x")), "Provisioning", "False", "CreateFailed"),
]

PROVIDER_TABLE = [
    (provider_runtime_ready_condition(True), "ProviderRuntimeReady", "True", "DeploymentReady"),
    (provider_runtime_ready_condition(False), "ProviderRuntimeReady", "False", "DeploymentError"),
    (provider_available_condition(True), "ProviderAvailable", "True", "HealthCheckPassed"),
    (provider_available_condition(False), "ProviderAvailable", "False", "HealthCheckFailed"),
]


@pytest.mark.parametrize(("cond", "ctype", "status", "reason"), VM_TABLE + PROVIDER_TABLE)
def test_guide_table_rows(cond: Condition, ctype: str, status: str, reason: str) -> None:
    assert (cond.type, cond.status, cond.reason) == (ctype, status, reason)
    assert type(cond.type) is str
    assert type(cond.status) is str
    assert type(cond.reason) is str


def test_helper_default_messages_are_the_guide_descriptions() -> None:
    assert ready_condition().message == "VM is ready for use"
    assert provisioning_condition().message == "VM creation in progress"
    assert provider_runtime_ready_condition(True).message == "Remote runtime ready"
    assert provider_runtime_ready_condition(False).message == "Deployment failed"
    assert provider_available_condition(True).message == "Provider healthy"
    assert provider_available_condition(False).message == "Provider unhealthy"


def test_helper_explicit_messages() -> None:
    assert ready_condition(message="up").message == "up"
    assert provisioning_condition(message="").message == ""
    assert provider_available_condition(False, "dial tcp: refused").message == "dial tcp: refused"
    assert provider_runtime_ready_condition(False, "image pull").message == "image pull"


def test_helpers_observed_generation() -> None:
    assert ready_condition(observed_generation=3).observed_generation == 3
    assert ready_condition(RuntimeError("x"), observed_generation=4).observed_generation == 4
    assert provisioning_condition(observed_generation=5).observed_generation == 5
    assert provider_available_condition(True, observed_generation=6).observed_generation == 6
    assert ready_condition().observed_generation is None


def test_provisioning_failure_uses_error_message() -> None:
    cond = provisioning_condition(ProviderError(ErrorType.QUOTA_EXCEEDED, "no cpu left"))
    assert cond == Condition("Provisioning", "False", "CreateFailed", "no cpu left")
    assert provisioning_condition(ValueError("bad disk")).message == "bad disk"


def test_ready_failure_is_map_error_to_condition() -> None:
    err = new_error("NotFound", "vm-1 gone")
    assert ready_condition(err) == map_error_to_condition(err)
    assert ready_condition(err).reason == "ResourceNotFound"


@pytest.mark.parametrize("bad", [1, "yes", None])
def test_provider_helpers_need_bool(bad: Any) -> None:
    with pytest.raises(TypeError, match=r"provider_available_condition healthy must be a bool"):
        provider_available_condition(bad)
    with pytest.raises(TypeError, match=r"provider_runtime_ready_condition ready must be a bool"):
        provider_runtime_ready_condition(bad)


def test_provisioning_condition_rejects_non_exception() -> None:
    with pytest.raises(
        TypeError, match=r"provisioning_condition error must be an exception.*'oops'"
    ):
        provisioning_condition("oops")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- error mapping

EXPECTED_REASON = {
    ErrorType.NOT_FOUND: "ResourceNotFound",
    ErrorType.UNAUTHORIZED: "AuthenticationFailed",
    ErrorType.UNAVAILABLE: "ProviderUnavailable",
    ErrorType.INVALID_SPEC: "ValidationError",
    ErrorType.NOT_SUPPORTED: "ProviderError",
    ErrorType.RETRYABLE: "ProviderError",
    ErrorType.RATE_LIMIT: "ProviderError",
    ErrorType.TIMEOUT: "ProviderError",
    ErrorType.QUOTA_EXCEEDED: "ProviderError",
    ErrorType.CONFLICT: "ProviderError",
}


def test_expected_reason_covers_every_error_type() -> None:
    assert set(EXPECTED_REASON) == set(ErrorType)


@pytest.mark.parametrize("error_type", list(ErrorType))
def test_map_every_error_type(error_type: ErrorType) -> None:
    cause = OSError("socket closed")
    for err in (
        ProviderError(error_type, f"{error_type.value} happened", cause),
        new_error(error_type, f"{error_type.value} happened", cause),
    ):
        cond = map_error_to_condition(err)
        # The message is .message only: the cause's text is not appended (as in Go).
        assert cond == Condition(
            "Ready", "False", EXPECTED_REASON[error_type], f"{error_type.value} happened"
        )
        assert cond.last_transition_time is None
        assert cond.observed_generation is None


def test_map_error_custom_condition_type_and_generation() -> None:
    err = new_error(ErrorType.UNAUTHORIZED, "token expired")
    cond = map_error_to_condition(err, "ProviderAvailable", observed_generation=9)
    assert cond == Condition(
        "ProviderAvailable", "False", "AuthenticationFailed", "token expired", observed_generation=9
    )
    assert map_error_to_condition(err, ConditionType.PROVISIONING).type == "Provisioning"


def test_map_non_provider_error_is_internal_error() -> None:
    cond = map_error_to_condition(RuntimeError("disk on fire"))
    assert cond == Condition("Ready", "False", "InternalError", "disk on fire")


def test_map_builtin_timeout_is_internal_error_not_classified() -> None:
    # As in Go: only a ProviderError gets a specific reason.
    assert map_error_to_condition(TimeoutError("slow")).reason == "InternalError"


def test_map_empty_message_falls_back_to_class_name() -> None:
    assert map_error_to_condition(KeyError()).message == "KeyError"

    class Weird(Exception):
        def __str__(self) -> str:
            raise RuntimeError("broken __str__")

    assert map_error_to_condition(Weird()).message == "Weird"


def test_map_provider_error_empty_message_kept() -> None:
    # Go uses providerErr.Message as is.
    assert map_error_to_condition(new_error("NotFound", "")).message == ""


def test_map_huge_message_is_truncated() -> None:
    cond = map_error_to_condition(RuntimeError("x" * 100_000))
    assert len(cond.message) == c.MAX_MESSAGE_LENGTH
    assert cond.message.endswith("...")


def test_map_error_rejects_non_exception() -> None:
    with pytest.raises(TypeError, match=r"map_error_to_condition exc must be an exception.*'boom'"):
        map_error_to_condition("boom")  # type: ignore[arg-type]


def test_map_error_rejects_bad_condition_type() -> None:
    with pytest.raises(ValueError, match=r"Condition type .*'not a type'"):
        map_error_to_condition(RuntimeError("x"), "not a type")


# --------------------------------------------------------------------------- Condition


def test_condition_accepts_bool_status() -> None:
    assert Condition("Ready", True, "VMReady").status == "True"
    assert Condition("Ready", False, "ProviderError").status == "False"


def test_condition_unwraps_enums_to_plain_str() -> None:
    cond = Condition(ConditionType.READY, ConditionStatus.UNKNOWN, Reason.CREATING)
    assert (cond.type, cond.status, cond.reason) == ("Ready", "Unknown", "Creating")
    for value in (cond.type, cond.status, cond.reason):
        assert type(value) is str


def test_condition_normalizes_time_to_utc_seconds() -> None:
    plus2 = timezone(timedelta(hours=2))
    cond = Condition(
        "Ready",
        True,
        "VMReady",
        last_transition_time=datetime(2024, 5, 1, 14, 0, 0, 987654, tzinfo=plus2),
    )
    assert cond.last_transition_time == T0
    assert cond.last_transition_time is not None
    assert cond.last_transition_time.tzinfo is timezone.utc
    assert cond.last_transition_time.microsecond == 0


def test_condition_is_frozen_hashable_and_picklable() -> None:
    cond = Condition("Ready", True, "VMReady", "ok", T0, 2)
    with pytest.raises(AttributeError):
        cond.status = "False"  # type: ignore[misc]
    assert hash(cond) == hash(Condition("Ready", True, "VMReady", "ok", T0, 2))
    assert pickle.loads(pickle.dumps(cond)) == cond
    assert cond.is_true
    assert not Condition("Ready", "Unknown", "Creating").is_true


def test_condition_accepts_qualified_type_and_reason_punctuation() -> None:
    assert Condition("example.com/Ready", "True", "A_b,c:d9").type == "example.com/Ready"
    assert Condition("Ready", "True", "X").reason == "X"


@pytest.mark.parametrize("status", ["maybe", "true", "TRUE", "", 1, None, 0.0])
def test_bad_status(status: Any) -> None:
    with pytest.raises(ValueError, match=r"Condition status must be .*, got " + _re_repr(status)):
        Condition("Ready", status, "VMReady")


@pytest.mark.parametrize("reason", ["has space", "", "9Lives", "Trailing,", "Ends:", "a-b", "Ok\n"])
def test_bad_reason(reason: str) -> None:
    with pytest.raises(ValueError, match=r"Condition reason must match .*got " + _re_repr(reason)):
        Condition("Ready", "True", reason)


def test_reason_too_long() -> None:
    with pytest.raises(ValueError, match=r"Condition reason .*1024"):
        Condition("Ready", "True", "A" * 1025)
    assert Condition("Ready", "True", "A" * 1024).reason == "A" * 1024


@pytest.mark.parametrize("ctype", ["", "has space", "-Ready", "Ready-", "a/b/c", "UPPER.com/Ready"])
def test_bad_type(ctype: str) -> None:
    with pytest.raises(
        ValueError, match=r"Condition type must be a qualified name.*got " + _re_repr(ctype)
    ):
        Condition(ctype, "True", "VMReady")


def test_message_too_long() -> None:
    with pytest.raises(
        ValueError, match=r"Condition message must be at most 32768 characters, got 32769"
    ):
        Condition("Ready", "True", "VMReady", "m" * 32769)


def test_naive_datetime_rejected() -> None:
    naive = datetime(2024, 5, 1, 12, 0, 0)
    with pytest.raises(
        ValueError,
        match=r"Condition last_transition_time must be timezone-aware.*2024, 5, 1, 12, 0",
    ):
        Condition("Ready", "True", "VMReady", last_transition_time=naive)


@pytest.mark.parametrize("generation", [-1, -100])
def test_negative_generation(generation: int) -> None:
    with pytest.raises(
        ValueError, match=rf"Condition observed_generation must be >= 0, got {generation}"
    ):
        Condition("Ready", "True", "VMReady", observed_generation=generation)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"type": 5}, r"Condition type must be a str, got int 5"),
        ({"reason": None}, r"Condition reason must be a str, got NoneType None"),
        ({"message": b"bytes"}, r"Condition message must be a str, got bytes b'bytes'"),
        (
            {"last_transition_time": "2024-05-01T12:00:00Z"},
            r"Condition last_transition_time must be a datetime, got str '2024-05-01T12:00:00Z'",
        ),
        (
            {"last_transition_time": 1714564800},
            r"Condition last_transition_time must be a datetime, got int 1714564800",
        ),
        (
            {"observed_generation": True},
            r"Condition observed_generation must be an int, got bool True",
        ),
        (
            {"observed_generation": 1.0},
            r"Condition observed_generation must be an int, got float 1.0",
        ),
    ],
)
def test_wrong_types(kwargs: dict[str, Any], pattern: str) -> None:
    args: dict[str, Any] = {"type": "Ready", "status": "True", "reason": "VMReady"}
    args.update(kwargs)
    with pytest.raises(TypeError, match=pattern):
        Condition(**args)


def _re_repr(value: Any) -> str:
    import re

    return re.escape(repr(value))


# --------------------------------------------------------------------------- wire shape


def test_to_dict_exact_shape() -> None:
    cond = Condition("Ready", False, "ProviderUnavailable", "vcenter down", T0, 7)
    d = cond.to_dict()
    assert d == {
        "type": "Ready",
        "status": "False",
        "reason": "ProviderUnavailable",
        "message": "vcenter down",
        "lastTransitionTime": "2024-05-01T12:00:00Z",
        "observedGeneration": 7,
    }
    assert list(d) == [
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    ]
    assert json.loads(json.dumps(d)) == d


def test_to_dict_without_generation_omits_key() -> None:
    d = Condition("Ready", True, "VMReady", "ok", T0).to_dict()
    assert list(d) == ["type", "status", "reason", "message", "lastTransitionTime"]


def test_to_dict_omits_generation_zero_like_go_omitempty() -> None:
    d = Condition("Ready", True, "VMReady", "ok", T0, observed_generation=0).to_dict()
    assert "observedGeneration" not in d
    one = Condition("Ready", True, "VMReady", "ok", T0, observed_generation=1).to_dict()
    assert one["observedGeneration"] == 1


def test_generation_zero_is_stored_as_none() -> None:
    # Go cannot tell 0 from absent, so neither do we: one value, equal conditions.
    zero = Condition("Ready", True, "VMReady", "ok", T0, observed_generation=0)
    assert zero.observed_generation is None
    assert zero == Condition("Ready", True, "VMReady", "ok", T0)


def test_from_dict_generation_zero_or_missing_round_trips_exactly() -> None:
    base = {"type": "Ready", "status": "True", "reason": "VMReady", "message": ""}
    from_zero = Condition.from_dict({**base, "observedGeneration": 0})
    assert from_zero.observed_generation is None
    assert from_zero == Condition.from_dict(base)
    assert Condition.from_dict(from_zero.to_dict()) == from_zero


def test_to_dict_unset_time_is_null() -> None:
    assert Condition("Ready", True, "VMReady").to_dict()["lastTransitionTime"] is None


def test_to_dict_time_is_utc_z_second_precision() -> None:
    minus5 = timezone(timedelta(hours=-5))
    cond = Condition(
        "Ready",
        True,
        "VMReady",
        last_transition_time=datetime(2024, 1, 2, 3, 4, 5, 999999, tzinfo=minus5),
    )
    assert cond.to_dict()["lastTransitionTime"] == "2024-01-02T08:04:05Z"
    early = Condition(
        "Ready", True, "VMReady", last_transition_time=datetime(999, 1, 1, tzinfo=timezone.utc)
    )
    assert early.to_dict()["lastTransitionTime"] == "0999-01-01T00:00:00Z"


def test_to_dict_values_are_plain_types() -> None:
    d = Condition(ConditionType.READY, ConditionStatus.TRUE, Reason.VM_READY, "", T0, 1).to_dict()
    assert all(type(v) in (str, int) for v in d.values())


@pytest.mark.parametrize(
    "cond",
    [
        Condition("Ready", True, "VMReady", "ok", T0, 3),
        Condition("Provisioning", "Unknown", "Creating"),
        Condition("example.com/Thing", False, "InternalError", "ünïcödé \n text", T2, 0),
    ],
)
def test_from_dict_round_trip(cond: Condition) -> None:
    assert Condition.from_dict(cond.to_dict()) == cond
    assert Condition.from_dict(json.loads(json.dumps(cond.to_dict()))) == cond


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00Z", T0),
        ("2024-05-01t12:00:00z", T0),
        ("2024-05-01T12:00:00.123456789Z", T0),
        ("2024-05-01T14:00:00+02:00", T0),
        ("2024-05-01T07:30:00.5-04:30", T0),
    ],
)
def test_from_dict_parses_rfc3339(text: str, expected: datetime) -> None:
    d = {
        "type": "Ready",
        "status": "True",
        "reason": "VMReady",
        "message": "",
        "lastTransitionTime": text,
    }
    assert Condition.from_dict(d).last_transition_time == expected


def test_from_dict_defaults_and_extra_keys() -> None:
    cond = Condition.from_dict(
        {"type": "Ready", "status": "False", "reason": "InternalError", "extra": 1}
    )
    assert cond == Condition("Ready", "False", "InternalError", "", None, None)
    cond = Condition.from_dict(
        {
            "type": "Ready",
            "status": "True",
            "reason": "VMReady",
            "lastTransitionTime": T1,
            "observedGeneration": None,
        }
    )
    assert cond.last_transition_time == T1
    assert cond.observed_generation is None


def test_from_dict_missing_keys() -> None:
    with pytest.raises(
        ValueError,
        match=r"Condition.from_dict data is missing required key\(s\) \['status', 'reason'\]",
    ):
        Condition.from_dict({"type": "Ready"})


@pytest.mark.parametrize(
    ("value", "exc", "pattern"),
    [
        (
            "yesterday",
            ValueError,
            r"Condition.from_dict lastTransitionTime must be an RFC 3339 time.*'yesterday'",
        ),
        (
            "2024-05-01T12:00:00",
            ValueError,
            r"lastTransitionTime must be an RFC 3339 time.*'2024-05-01T12:00:00'",
        ),
        (
            "2024-13-01T12:00:00Z",
            ValueError,
            r"lastTransitionTime is not a valid time.*'2024-13-01T12:00:00Z'",
        ),
        (
            1714564800,
            TypeError,
            r"lastTransitionTime must be an RFC 3339 string, got int 1714564800",
        ),
    ],
)
def test_from_dict_bad_time(value: Any, exc: type[Exception], pattern: str) -> None:
    d = {"type": "Ready", "status": "True", "reason": "VMReady", "lastTransitionTime": value}
    with pytest.raises(exc, match=pattern):
        Condition.from_dict(d)


def test_from_dict_bad_values_name_field() -> None:
    # The parser names itself and the JSON key the user wrote.
    with pytest.raises(ValueError, match=r"Condition.from_dict status must be .*'maybe'"):
        Condition.from_dict({"type": "Ready", "status": "maybe", "reason": "VMReady"})
    with pytest.raises(TypeError, match=r"Condition.from_dict reason must be a str, got int 7"):
        Condition.from_dict({"type": "Ready", "status": "True", "reason": 7})
    with pytest.raises(
        ValueError, match=r"Condition.from_dict observedGeneration must be >= 0, got -2"
    ):
        Condition.from_dict(
            {"type": "Ready", "status": "True", "reason": "VMReady", "observedGeneration": -2}
        )
    with pytest.raises(TypeError, match=r"Condition.from_dict data must be a mapping, got list"):
        Condition.from_dict([("type", "Ready")])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- set_condition


def test_set_condition_appends_new_type_with_now() -> None:
    conds: list[Condition] = []
    assert set_condition(conds, Condition("Ready", True, "VMReady", "ok"), now=T0) is True
    assert conds == [Condition("Ready", True, "VMReady", "ok", T0)]


def test_set_condition_appends_keeping_given_time() -> None:
    conds: list[Condition] = [Condition("Provisioning", True, "Creating", "", T0)]
    assert set_condition(conds, Condition("Ready", True, "VMReady", "", T1), now=T2) is True
    assert [x.type for x in conds] == ["Provisioning", "Ready"]
    assert conds[1].last_transition_time == T1


def test_set_condition_default_now_is_utc_whole_seconds() -> None:
    before = datetime.now(timezone.utc).replace(microsecond=0)
    conds: list[Condition] = []
    set_condition(conds, Condition("Ready", True, "VMReady"))
    after = datetime.now(timezone.utc)
    stamp = conds[0].last_transition_time
    assert stamp is not None
    assert stamp.microsecond == 0
    assert stamp.tzinfo is timezone.utc
    assert before <= stamp <= after


def test_set_condition_status_change_moves_time_to_now() -> None:
    conds = [Condition("Ready", True, "VMReady", "ok", T0, 1)]
    changed = set_condition(
        conds, Condition("Ready", False, "ProviderError", "broke", None, 2), now=T1
    )
    assert changed is True
    assert conds == [Condition("Ready", False, "ProviderError", "broke", T1, 2)]


def test_set_condition_status_change_uses_new_time_when_given() -> None:
    conds = [Condition("Ready", True, "VMReady", "ok", T0)]
    assert set_condition(conds, Condition("Ready", False, "ProviderError", "", T2), now=T1) is True
    assert conds[0].last_transition_time == T2


def test_set_condition_same_status_keeps_time_updates_rest() -> None:
    conds = [Condition("Ready", False, "ProviderError", "first", T0, 1)]
    # new carries its own time: ignored, because the status did not change.
    new = Condition("Ready", False, "ProviderUnavailable", "second", T2, 5)
    assert set_condition(conds, new, now=T1) is True
    assert conds == [Condition("Ready", False, "ProviderUnavailable", "second", T0, 5)]


@pytest.mark.parametrize(
    "new",
    [
        Condition("Ready", False, "Other", "m", None, 1),
        Condition("Ready", False, "R", "other", None, 1),
        Condition("Ready", False, "R", "m", None, 2),
        Condition("Ready", False, "R", "m", None, None),
    ],
)
def test_set_condition_each_field_change_is_reported(new: Condition) -> None:
    conds = [Condition("Ready", False, "R", "m", T0, 1)]
    assert set_condition(conds, new, now=T1) is True
    assert conds[0].last_transition_time == T0
    assert (conds[0].reason, conds[0].message, conds[0].observed_generation) == (
        new.reason,
        new.message,
        new.observed_generation,
    )


def test_set_condition_identical_returns_false() -> None:
    existing = Condition("Ready", True, "VMReady", "ok", T0, 3)
    conds = [existing]
    assert set_condition(conds, Condition("Ready", True, "VMReady", "ok", None, 3), now=T1) is False
    assert set_condition(conds, Condition("Ready", True, "VMReady", "ok", T2, 3), now=T1) is False
    assert conds == [existing]
    assert conds[0] is existing


def test_set_condition_generation_zero_against_none_is_no_change() -> None:
    # Both serialize without observedGeneration: no status update is needed.
    existing = Condition("Ready", True, "VMReady", "ok", T0)
    conds = [existing]
    assert set_condition(conds, Condition("Ready", True, "VMReady", "ok", None, 0), now=T1) is False
    assert conds[0] is existing


def test_set_condition_only_touches_matching_type() -> None:
    other = Condition("Provisioning", True, "Creating", "", T0)
    conds = [other, Condition("Ready", "Unknown", "Creating", "", T0)]
    set_condition(conds, Condition("Ready", True, "VMReady"), now=T1)
    assert conds[0] is other
    assert conds[1] == Condition("Ready", True, "VMReady", "", T1)


def test_set_condition_updates_first_duplicate_only() -> None:
    conds = [
        Condition("Ready", True, "VMReady", "a", T0),
        Condition("Ready", True, "VMReady", "b", T0),
    ]
    set_condition(conds, Condition("Ready", False, "InternalError", "c"), now=T1)
    assert [x.message for x in conds] == ["c", "b"]


def test_set_condition_bad_input() -> None:
    with pytest.raises(
        TypeError, match=r"set_condition new must be a Condition or a dict, got str 'Ready'"
    ):
        set_condition([], "Ready")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"set_condition now must be timezone-aware"):
        set_condition([], Condition("Ready", True, "VMReady"), now=datetime(2024, 1, 1))
    with pytest.raises(
        TypeError,
        match=r"set_condition conditions\[0\] must be a Condition or a dict, got str 'Ready'",
    ):
        set_condition(["Ready"], Condition("Ready", True, "VMReady"))  # type: ignore[arg-type]


def test_set_condition_full_lifecycle() -> None:
    conds: list[Condition] = []
    assert set_condition(conds, provisioning_condition(), now=T0)
    assert set_condition(conds, ready_condition(new_error("Unavailable", "vcenter down")), now=T0)
    assert not set_condition(
        conds, ready_condition(new_error("Unavailable", "vcenter down")), now=T1
    )
    assert set_condition(conds, ready_condition(), now=T2)
    assert [x.to_dict() for x in conds] == [
        {
            "type": "Provisioning",
            "status": "True",
            "reason": "Creating",
            "message": "VM creation in progress",
            "lastTransitionTime": "2024-05-01T12:00:00Z",
        },
        {
            "type": "Ready",
            "status": "True",
            "reason": "VMReady",
            "message": "VM is ready for use",
            "lastTransitionTime": "2024-05-01T13:00:00Z",
        },
    ]


# --------------------------------------------------------------------------- find / remove / is_true


def test_find_remove_is_true() -> None:
    ready = Condition("Ready", True, "VMReady", "", T0)
    avail = Condition("ProviderAvailable", False, "HealthCheckFailed", "", T0)
    unknown = Condition("Provisioning", "Unknown", "Creating", "", T0)
    conds = [ready, avail, unknown]
    assert find_condition(conds, "Ready") is ready
    assert find_condition(conds, ConditionType.PROVIDER_AVAILABLE) is avail
    assert find_condition(conds, "Missing") is None
    assert is_condition_true(conds, "Ready") is True
    assert is_condition_true(conds, "ProviderAvailable") is False
    assert is_condition_true(conds, "Provisioning") is False
    assert is_condition_true(conds, "Missing") is False
    assert is_condition_false(conds, "ProviderAvailable") is True
    assert is_condition_false(conds, "Provisioning") is False
    assert is_condition_false(conds, "Missing") is False
    assert remove_condition(conds, "ProviderAvailable") is True
    assert conds == [ready, unknown]
    assert remove_condition(conds, "ProviderAvailable") is False
    assert conds == [ready, unknown]


def test_remove_condition_removes_duplicates_in_place() -> None:
    a = Condition("Ready", True, "VMReady")
    b = Condition("Other", True, "VMReady")
    conds = [a, b, a]
    alias = conds
    assert remove_condition(conds, "Ready") is True
    assert alias == [b]
    assert remove_condition([], "Ready") is False


# --------------------------------------------------------------------------- plain dicts


def ready_dict(status: str = "True", reason: str = "VMReady", **extra: Any) -> dict[str, Any]:
    """A Ready entry as the API server returns it (to_dict form, whole-second Z time)."""
    return {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": "ok",
        "lastTransitionTime": "2024-05-01T12:00:00Z",
        **extra,
    }


def test_set_condition_on_empty_dict_list_with_dict_new_appends_a_dict() -> None:
    conds: list[dict[str, Any]] = []
    new = {"type": "Ready", "status": "True", "reason": "VMReady", "message": "ok"}
    assert set_condition(conds, new, now=T0) is True
    assert conds == [ready_dict()]
    assert type(conds[0]) is dict
    assert list(conds[0]) == ["type", "status", "reason", "message", "lastTransitionTime"]


def test_set_condition_condition_new_into_dict_list_appends_a_dict() -> None:
    # The list decides: a Condition from the helpers lands as a dict.
    conds: list[dict[str, Any]] = [ready_dict()]
    assert set_condition(conds, provisioning_condition(observed_generation=4), now=T1) is True
    assert conds[1] == {
        "type": "Provisioning",
        "status": "True",
        "reason": "Creating",
        "message": "VM creation in progress",
        "lastTransitionTime": "2024-05-01T12:05:00Z",
        "observedGeneration": 4,
    }
    assert type(conds[1]) is dict


def test_set_condition_dict_new_into_condition_list_appends_a_condition() -> None:
    conds = [Condition("Provisioning", True, "Creating", "", T0)]
    assert set_condition(conds, ready_dict(), now=T1) is True
    assert conds[1] == Condition("Ready", True, "VMReady", "ok", T0)


def test_set_condition_dict_same_status_keeps_transition_time_updates_rest() -> None:
    conds = [ready_dict(status="False", reason="ProviderError", observedGeneration=1)]
    new = map_error_to_condition(new_error("Unavailable", "vcenter down"), observed_generation=2)
    assert set_condition(conds, new, now=T2) is True
    assert conds == [
        {
            "type": "Ready",
            "status": "False",
            "reason": "ProviderUnavailable",
            "message": "vcenter down",
            "lastTransitionTime": "2024-05-01T12:00:00Z",
            "observedGeneration": 2,
        }
    ]


def test_set_condition_dict_status_change_moves_transition_time() -> None:
    conds = [ready_dict()]
    assert set_condition(conds, ready_condition(RuntimeError("boom")), now=T1) is True
    assert conds[0]["status"] == "False"
    assert conds[0]["lastTransitionTime"] == "2024-05-01T12:05:00Z"
    # new's own time wins when it carries one, as in Go.
    back = {"type": "Ready", "status": "True", "reason": "VMReady", "lastTransitionTime": T2}
    assert set_condition(conds, back, now=T1) is True
    assert conds[0]["lastTransitionTime"] == "2024-05-01T13:00:00Z"


def test_set_condition_dict_unchanged_returns_false_and_leaves_entry_alone() -> None:
    # Same values written differently (offset time, generation 0 vs absent):
    # nothing changes on the wire, so nothing is touched.
    entry = ready_dict(lastTransitionTime="2024-05-01T14:00:00+02:00", observedGeneration=0)
    conds = [entry]
    assert set_condition(conds, ready_condition(message="ok"), now=T1) is False
    assert conds[0] is entry
    assert entry["lastTransitionTime"] == "2024-05-01T14:00:00+02:00"


def test_set_condition_dict_keeps_extra_keys_in_order() -> None:
    entry = {"severity": "Info", **ready_dict(), "lastProbeTime": None}
    conds = [entry]
    assert set_condition(conds, ready_condition(message="changed"), now=T1) is True
    assert list(conds[0]) == [
        "severity",
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "lastProbeTime",
    ]
    assert conds[0]["severity"] == "Info"
    assert conds[0]["lastProbeTime"] is None
    assert conds[0]["message"] == "changed"


def test_set_condition_dict_drops_generation_when_new_has_none_or_zero() -> None:
    for generation in (None, 0):
        conds = [ready_dict(observedGeneration=3)]
        new = ready_condition(message="ok", observed_generation=generation)
        assert set_condition(conds, new, now=T1) is True
        assert "observedGeneration" not in conds[0]


def test_set_condition_dict_new_extra_keys_are_ignored() -> None:
    conds: list[dict[str, Any]] = []
    set_condition(conds, ready_dict(severity="Info", observedGeneration=0), now=T1)
    assert conds == [ready_dict()]


def test_set_condition_replaces_dict_entries_never_mutates_them() -> None:
    # kopf's status is the live body: a shallow copy of its list must be enough.
    body_entry = ready_dict()
    snapshot = dict(body_entry)
    conds = [body_entry]
    set_condition(conds, ready_condition(RuntimeError("boom")), now=T1)
    assert conds[0] is not body_entry
    assert body_entry == snapshot


def test_set_condition_mixed_list_each_entry_keeps_its_kind() -> None:
    as_condition = Condition("Provisioning", True, "Creating", "", T0)
    conds: list[Condition | dict[str, Any]] = [as_condition, ready_dict()]
    set_condition(conds, Condition("Provisioning", False, "CreateFailed", "x"), now=T1)
    set_condition(conds, ready_condition(RuntimeError("boom")), now=T1)
    assert isinstance(conds[0], Condition)
    assert conds[0].status == "False"
    assert type(conds[1]) is dict
    assert conds[1]["status"] == "False"
    # Appending to a mixed list: new's kind.
    set_condition(conds, provider_available_condition(True), now=T1)
    set_condition(conds, provider_runtime_ready_condition(True).to_dict(), now=T1)
    assert isinstance(conds[2], Condition)
    assert type(conds[3]) is dict


def test_find_condition_on_dicts_returns_the_dict_itself() -> None:
    ready = ready_dict()
    avail = {"type": "ProviderAvailable", "status": "False", "reason": "HealthCheckFailed"}
    conds = [ready, avail]
    assert find_condition(conds, "Ready") is ready
    assert find_condition(conds, ConditionType.PROVIDER_AVAILABLE) is avail
    assert find_condition(conds, "Provisioning") is None
    # Any iterable, read once.
    assert find_condition(iter(conds), "ProviderAvailable") is avail


def test_is_condition_true_false_on_dicts() -> None:
    conds = [
        ready_dict(),
        {"type": "ProviderAvailable", "status": "False", "reason": "HealthCheckFailed"},
        {"type": "Provisioning", "status": "Unknown", "reason": "Creating"},
    ]
    assert is_condition_true(conds, "Ready") is True
    assert is_condition_true(conds, "ProviderAvailable") is False
    assert is_condition_false(conds, "ProviderAvailable") is True
    assert is_condition_false(conds, "Ready") is False
    assert is_condition_true(conds, "Provisioning") is False
    assert is_condition_false(conds, "Provisioning") is False
    assert is_condition_true(conds, "Missing") is False


def test_remove_condition_on_dicts_keeps_the_other_entries() -> None:
    avail = {"type": "ProviderAvailable", "status": "True", "reason": "HealthCheckPassed"}
    conds = [ready_dict(), avail, ready_dict(message="dup")]
    alias = conds
    assert remove_condition(conds, "Ready") is True
    assert alias == [avail]
    assert alias[0] is avail
    assert remove_condition(conds, "Ready") is False


BAD_ENTRIES: list[tuple[Any, type[Exception], str]] = [
    (
        {"type": "Ready", "reason": "VMReady"},
        ValueError,
        r"conditions\[1\] is missing required key\(s\) \['status'\], got \{'type': 'Ready'",
    ),
    (
        {"type": "Ready", "status": "yes", "reason": "VMReady"},
        ValueError,
        r"conditions\[1\] status must be \"True\", \"False\", \"Unknown\" or a bool, got 'yes'",
    ),
    (
        {"type": "Ready", "status": "True", "reason": 7},
        TypeError,
        r"conditions\[1\] reason must be a str, got int 7",
    ),
    (
        {"type": "Ready", "status": "True", "reason": "has space"},
        ValueError,
        r"conditions\[1\] reason must match .*got 'has space'",
    ),
    (
        {"type": "Ready", "status": "True", "reason": "VMReady", "lastTransitionTime": "noon"},
        ValueError,
        r"conditions\[1\] lastTransitionTime must be an RFC 3339 time .*got 'noon'",
    ),
    (
        {"type": "Ready", "status": "True", "reason": "VMReady", "observedGeneration": -1},
        ValueError,
        r"conditions\[1\] observedGeneration must be >= 0, got -1",
    ),
    (
        {"type": "Ready", "status": "True", "reason": "VMReady", "observedGeneration": "3"},
        TypeError,
        r"conditions\[1\] observedGeneration must be an int, got str '3'",
    ),
    ("Ready", TypeError, r"conditions\[1\] must be a Condition or a dict, got str 'Ready'"),
    (None, TypeError, r"conditions\[1\] must be a Condition or a dict, got NoneType None"),
]


@pytest.mark.parametrize(("bad", "exc", "pattern"), BAD_ENTRIES)
def test_set_and_remove_reject_bad_entries_and_change_nothing(
    bad: Any, exc: type[Exception], pattern: str
) -> None:
    # The bad entry sits after the one being set: it is reported all the same.
    conds: list[Any] = [ready_dict(), bad]
    before = [dict(conds[0]), bad]
    with pytest.raises(exc, match=r"^set_condition " + pattern):
        set_condition(conds, ready_condition(RuntimeError("boom")), now=T1)
    with pytest.raises(exc, match=r"^remove_condition " + pattern):
        remove_condition(conds, "Ready")
    assert conds == before


@pytest.mark.parametrize(("bad", "exc", "pattern"), BAD_ENTRIES)
def test_readers_reject_bad_entries(bad: Any, exc: type[Exception], pattern: str) -> None:
    conds: list[Any] = [ready_dict(), bad]
    with pytest.raises(exc, match=r"^find_condition " + pattern):
        find_condition(conds, "Ready")
    with pytest.raises(exc, match=r"^is_condition_true " + pattern):
        is_condition_true(conds, "Ready")
    with pytest.raises(exc, match=r"^is_condition_false " + pattern):
        is_condition_false(conds, "Ready")


def test_set_condition_rejects_bad_dict_new() -> None:
    with pytest.raises(
        ValueError, match=r"set_condition new is missing required key\(s\) \['status', 'reason'\]"
    ):
        set_condition([], {"type": "Ready"})
    with pytest.raises(ValueError, match=r"set_condition new status must be .*got 'yes'"):
        set_condition([], {"type": "Ready", "status": "yes", "reason": "VMReady"})


@pytest.mark.parametrize("not_a_list", [None, ready_dict(), "Ready", ("tuple",)])
def test_writers_need_a_list(not_a_list: Any) -> None:
    # kopf's status.get("conditions") is None before the first write.
    for fn, args in ((set_condition, (ready_condition(),)), (remove_condition, ("Ready",))):
        with pytest.raises(
            TypeError,
            match=rf"{fn.__name__} conditions must be a list of Conditions or dicts, "
            rf"got {type(not_a_list).__name__}",
        ):
            fn(not_a_list, *args)


@pytest.mark.parametrize("not_a_list", [None, ready_dict(), "Ready", 5])
def test_readers_need_an_iterable_of_conditions(not_a_list: Any) -> None:
    for fn in (find_condition, is_condition_true, is_condition_false):
        with pytest.raises(
            TypeError,
            match=rf"{fn.__name__} conditions must be a list or other iterable of Conditions "
            rf"or dicts, got {type(not_a_list).__name__}",
        ):
            fn(not_a_list, "Ready")


def test_condition_type_must_be_a_str() -> None:
    for fn in (find_condition, is_condition_true, is_condition_false, remove_condition):
        pattern = rf"{fn.__name__} condition_type must be a str, got int 5"
        with pytest.raises(TypeError, match=pattern):
            fn([ready_dict()], 5)  # type: ignore[arg-type]


def test_kopf_like_round_trip_is_plain_json() -> None:
    # A kopf handler: status is the live body parsed from JSON; patch it back.
    body = json.loads(json.dumps({"metadata": {"generation": 3}, "status": {"phase": "Running"}}))
    status = body["status"]

    def reconcile(error: Exception | None, now: datetime) -> dict[str, Any] | None:
        conditions = list(status.get("conditions", []))
        generation = body["metadata"]["generation"]
        ready = ready_condition(error, observed_generation=generation)
        if not set_condition(conditions, ready.to_dict(), now=now):
            return None
        return {"status": {"conditions": conditions}}

    first = reconcile(None, T0)
    assert first is not None
    assert "conditions" not in status  # the live body was not touched
    wire = json.dumps(first)  # serializable as is: only dicts, str and int
    status.update(json.loads(wire)["status"])
    assert status["conditions"] == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "VMReady",
            "message": "VM is ready for use",
            "lastTransitionTime": "2024-05-01T12:00:00Z",
            "observedGeneration": 3,
        }
    ]
    assert reconcile(None, T1) is None  # nothing changed: skip the patch
    failed = reconcile(new_error("Unavailable", "vcenter down"), T2)
    assert failed is not None
    assert json.loads(json.dumps(failed)) == failed
    assert failed["status"]["conditions"][0]["lastTransitionTime"] == "2024-05-01T13:00:00Z"
    assert failed["status"]["conditions"][0]["reason"] == "ProviderUnavailable"
    assert status["conditions"][0]["status"] == "True"  # still the live body's own


# --------------------------------------------------------------------------- health checks


def test_health_check_passes() -> None:
    calls: list[int] = []
    cond = health_check_conditions(lambda: calls.append(1))
    assert calls == [1]
    assert cond == Condition("ProviderAvailable", True, "HealthCheckPassed", "Provider healthy")


def test_health_check_exception_fails_with_message() -> None:
    def check() -> None:
        raise ConnectionRefusedError("dial tcp 10.0.0.1:443: connection refused")

    cond = health_check_conditions(check, observed_generation=2)
    assert cond == Condition(
        "ProviderAvailable",
        False,
        "HealthCheckFailed",
        "dial tcp 10.0.0.1:443: connection refused",
        observed_generation=2,
    )


def test_health_check_provider_error_uses_message() -> None:
    def check() -> None:
        raise new_error("Unavailable", "vcenter down", OSError("x"))

    assert health_check_conditions(check).message == "vcenter down"


def test_health_check_returning_false_fails() -> None:
    cond = health_check_conditions(lambda: False)
    assert (cond.status, cond.reason, cond.message) == (
        "False",
        "HealthCheckFailed",
        "health check returned False",
    )
    # Other falsy values are not a failure signal.
    assert health_check_conditions(lambda: None).status == "True"
    assert health_check_conditions(lambda: 0).status == "True"


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, asyncio.CancelledError])
def test_health_check_base_exceptions_propagate(exc: type[BaseException]) -> None:
    def check() -> None:
        raise exc()

    with pytest.raises(exc):
        health_check_conditions(check)


def test_health_check_rejects_async_check_and_closes_it() -> None:
    async def check() -> None:
        return None

    coro = check()
    with pytest.raises(
        TypeError, match=r"health_check_conditions check returned an awaitable.*_async"
    ):
        health_check_conditions(lambda: coro)
    # Closed, so no "coroutine was never awaited" warning later.
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


def test_health_check_rejects_non_callable() -> None:
    with pytest.raises(
        TypeError, match=r"health_check_conditions check must be callable, got int 3"
    ):
        health_check_conditions(3)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_health_check_async_with_async_check() -> None:
    async def ok() -> str:
        await asyncio.sleep(0)
        return "SERVING"

    async def bad() -> None:
        await asyncio.sleep(0)
        raise asyncio.TimeoutError()

    assert await health_check_conditions_async(ok) == Condition(
        "ProviderAvailable", True, "HealthCheckPassed", "Provider healthy"
    )
    failed = await health_check_conditions_async(bad)
    assert (failed.status, failed.reason, failed.message) == (
        "False",
        "HealthCheckFailed",
        "TimeoutError",
    )


@pytest.mark.asyncio
async def test_health_check_async_with_sync_check() -> None:
    def bad() -> None:
        raise RuntimeError("sync boom")

    assert (await health_check_conditions_async(lambda: "ok")).status == "True"
    assert (await health_check_conditions_async(bad)).message == "sync boom"
    assert (await health_check_conditions_async(lambda: False)).status == "False"


@pytest.mark.asyncio
async def test_health_check_async_cancellation_propagates() -> None:
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.sleep(3600)

    task = asyncio.ensure_future(health_check_conditions_async(hang))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.asyncio
async def test_health_check_async_keyboard_interrupt_propagates() -> None:
    async def check() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await health_check_conditions_async(check)
