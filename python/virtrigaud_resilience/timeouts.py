"""Timeout policies: per-operation RPC timeouts (the guide's ``RPCConfig``)."""

from __future__ import annotations

from dataclasses import dataclass

from . import _validate
from .durations import MAX_DURATION

__all__ = ["MUTATING_OPERATIONS", "RPCConfig"]

# ---------------------------------------------------------------------------
# RPCConfig: which timeout each provider operation gets.
# ---------------------------------------------------------------------------

#: The operations the Go code names as mutating. Informational: any operation
#: other than Describe, Validate and TaskStatus gets the mutating timeout.
MUTATING_OPERATIONS: frozenset[str] = frozenset({"Create", "Delete", "Power", "Reconfigure"})


@dataclass(frozen=True)
class RPCConfig:
    """Per-operation RPC timeouts, in float seconds (Go's ``config.RPCConfig``).

    Attributes:
        describe: timeout of ``Describe`` (a quick status read); default 30 s.
        mutating: timeout of ``Create``, ``Delete``, ``Power``, ``Reconfigure``
            and of any operation this class does not know; default 240 s (4 min).
        validate: timeout of ``Validate`` (provider validation); default 10 s.
        task_status: timeout of ``TaskStatus`` (task polling); default 10 s.

    Each field accepts a number of seconds, a :class:`datetime.timedelta` or
    a Go duration string ("30s", "4m"); it is stored as a float. A timeout
    must be > 0 and fit Go's ``time.Duration`` (about 292 years). A bad value
    raises ``ValueError`` (or ``TypeError`` for a wrong type) naming the field
    and the value.
    """

    describe: float = 30.0
    mutating: float = 240.0
    validate: float = 10.0
    task_status: float = 10.0

    def __post_init__(self) -> None:
        for field in ("describe", "mutating", "validate", "task_status"):
            value = _validate.seconds(
                "RPCConfig", field, getattr(self, field), allow_zero=False, maximum=MAX_DURATION
            )
            # Frozen dataclass: the normalised float replaces what was passed.
            object.__setattr__(self, field, value)

    def timeout_for(self, operation: str) -> float:
        """The timeout in seconds for ``operation`` (Go's ``GetRPCTimeout``).

        ``operation`` is a provider method name, case-sensitive as in Go:
        "Describe" -> :attr:`describe`, "Validate" -> :attr:`validate`,
        "TaskStatus" -> :attr:`task_status`, and "Create", "Delete", "Power",
        "Reconfigure" -> :attr:`mutating`. An unknown operation also gets
        :attr:`mutating`, the longest timeout: cutting a slow call short is
        worse than waiting a little longer for a fast one.

        A gRPC full method name ("/provider.v1.Provider/Describe") is accepted
        too; its last path segment is the operation.

        Raises:
            TypeError: ``operation`` is not a ``str``.
        """
        if not isinstance(operation, str):
            raise TypeError(
                f"operation must be a str, got {type(operation).__name__} {operation!r}"
            )
        # Plain comparisons: this runs once per guarded call.
        method = operation.rsplit("/", 1)[-1] if "/" in operation else operation
        if method == "Describe":
            return self.describe
        if method == "Validate":
            return self.validate
        if method == "TaskStatus":
            return self.task_status
        return self.mutating
