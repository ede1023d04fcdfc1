"""The provider contract: the operations a controller calls and their data.

:class:`Provider` is Virtrigaud's ``contracts.Provider`` in asyncio form:
``validate``, ``get_capabilities``, ``create``, ``delete``, ``power``,
``reconfigure``, ``describe`` and ``task_status``. Mutating operations
(``create``, ``delete``, ``power``, ``reconfigure``) may finish
asynchronously: they return a task reference (``""`` when done at once) to
poll with ``task_status``. Failures are raised as the taxonomy's
:class:`~virtrigaud_resilience.ProviderError` subclasses.

The dataclasses are frozen and validate on construction: a wrong type is a
``TypeError`` and a bad value a ``ValueError``, both naming the field and
the value.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "OPERATIONS",
    "Capabilities",
    "CreateRequest",
    "CreateResponse",
    "DescribeResponse",
    "PowerOp",
    "Provider",
    "TaskStatus",
]

#: The contract's operations: Python method name -> Go method name (the
#: ``RPCConfig`` timeout key, the metrics' ``method``/``operation`` label).
OPERATIONS: Mapping[str, str] = MappingProxyType({
    "validate": "Validate",
    "get_capabilities": "GetCapabilities",
    "create": "Create",
    "delete": "Delete",
    "power": "Power",
    "reconfigure": "Reconfigure",
    "describe": "Describe",
    "task_status": "TaskStatus",
})


class PowerOp(str, enum.Enum):
    """A power operation (Go's ``contracts.PowerOp``; the value is Go's string)."""

    ON = "On"
    OFF = "Off"
    REBOOT = "Reboot"
    SHUTDOWN_GRACEFUL = "ShutdownGraceful"

    def __str__(self) -> str:
        return self.value


def _kind(value: object) -> str:
    return type(value).__name__


def _str(owner: str, name: str, value: Any, *, empty: bool = True) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{owner} {name} must be a str, got {_kind(value)} {value!r}")
    if not empty and not value:
        raise ValueError(f"{owner} {name} must not be empty, got {value!r}")
    return value


def _strings(owner: str, name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, frozenset, set)):
        raise TypeError(f"{owner} {name} must be a list or tuple of str, got {_kind(value)} "
                        f"{value!r}")
    for item in value:
        _str(owner, f"{name} item", item)
    return tuple(value)


def _count(owner: str, name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner} {name} must be an int, got {_kind(value)} {value!r}")
    if value < minimum:
        raise ValueError(f"{owner} {name} must be >= {minimum}, got {value!r}")
    return value


def _flag(owner: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{owner} {name} must be a bool, got {_kind(value)} {value!r}")
    return value


def _string_map(owner: str, name: str, value: Any) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{owner} {name} must be a mapping of str to str, got {_kind(value)} "
                        f"{value!r}")
    for key, item in value.items():
        _str(owner, f"{name} key", key)
        _str(owner, f"{name}[{key!r}]", item)
    return MappingProxyType(dict(value))


@dataclass(frozen=True)
class CreateRequest:
    """What to create (Go's ``contracts.CreateRequest``, trimmed to its essentials).

    Attributes:
        name: the VM's name; a non-empty str.
        cpus: virtual CPUs; int >= 1.
        memory_mib: memory in MiB; int >= 1.
        image: the base image or template; a str.
        networks: network names to attach; a tuple of str.
        tags: tags to apply; a tuple of str.
        user_data: cloud-init or ignition data; a str ("" for none).
    """

    name: str
    cpus: int = 1
    memory_mib: int = 1024
    image: str = ""
    networks: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    user_data: str = ""

    def __post_init__(self) -> None:
        owner = "CreateRequest"
        _str(owner, "name", self.name, empty=False)
        _count(owner, "cpus", self.cpus, 1)
        _count(owner, "memory_mib", self.memory_mib, 1)
        _str(owner, "image", self.image)
        object.__setattr__(self, "networks", _strings(owner, "networks", self.networks))
        object.__setattr__(self, "tags", _strings(owner, "tags", self.tags))
        _str(owner, "user_data", self.user_data)


@dataclass(frozen=True)
class CreateResponse:
    """The result of ``create``: the provider's VM id and a task to poll ("" if done)."""

    id: str
    task_ref: str = ""

    def __post_init__(self) -> None:
        _str("CreateResponse", "id", self.id, empty=False)
        _str("CreateResponse", "task_ref", self.task_ref)


@dataclass(frozen=True)
class DescribeResponse:
    """The current state of a VM (Go's ``contracts.DescribeResponse``).

    ``exists`` False means the provider does not know the VM (describe does
    not raise NotFound for it, as in Go).
    """

    exists: bool
    power_state: str = ""
    ips: tuple[str, ...] = ()
    console_url: str = ""
    provider_raw: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        owner = "DescribeResponse"
        _flag(owner, "exists", self.exists)
        _str(owner, "power_state", self.power_state)
        object.__setattr__(self, "ips", _strings(owner, "ips", self.ips))
        _str(owner, "console_url", self.console_url)
        object.__setattr__(self, "provider_raw",
                           _string_map(owner, "provider_raw", self.provider_raw))


@dataclass(frozen=True)
class TaskStatus:
    """The state of an asynchronous task: ``done``, and ``error`` ("" if it succeeded)."""

    done: bool
    error: str = ""
    message: str = ""

    def __post_init__(self) -> None:
        _flag("TaskStatus", "done", self.done)
        _str("TaskStatus", "error", self.error)
        _str("TaskStatus", "message", self.message)

    @property
    def succeeded(self) -> bool:
        """Done without an error."""
        return self.done and not self.error


@dataclass(frozen=True)
class Capabilities:
    """What a provider supports (Go's ``ProviderCapabilities``, trimmed)."""

    supports_reconfigure: bool = False
    supports_snapshots: bool = False
    supports_linked_clones: bool = False
    power_ops: tuple[PowerOp, ...] = (PowerOp.ON, PowerOp.OFF)

    def __post_init__(self) -> None:
        owner = "Capabilities"
        for name in ("supports_reconfigure", "supports_snapshots", "supports_linked_clones"):
            _flag(owner, name, getattr(self, name))
        ops = self.power_ops
        if isinstance(ops, (str, bytes)) or not isinstance(ops, (list, tuple, frozenset, set)):
            raise TypeError(f"{owner} power_ops must be a tuple of PowerOp, got {_kind(ops)} "
                            f"{ops!r}")
        try:
            object.__setattr__(self, "power_ops", tuple(PowerOp(op) for op in ops))
        except ValueError:
            valid = ", ".join(op.value for op in PowerOp)
            raise ValueError(f"{owner} power_ops must be PowerOps ({valid}), got {ops!r}") from None


@runtime_checkable
class Provider(Protocol):
    """The provider contract (Virtrigaud's ``contracts.Provider``), async.

    Every operation raises a :class:`~virtrigaud_resilience.ProviderError`
    subclass on failure. ``describe`` of an unknown VM returns
    ``DescribeResponse(exists=False)``; ``delete`` of an unknown VM succeeds
    (both are idempotent, as in Go); ``create`` of a name that exists
    returns the existing VM.
    """

    async def validate(self) -> None:
        """Checks the provider's session and credentials; raises if unhealthy."""

    async def get_capabilities(self) -> Capabilities:
        """What the provider supports."""

    async def create(self, request: CreateRequest) -> CreateResponse:
        """Creates the VM unless it exists (idempotent by name)."""

    async def delete(self, vm_id: str) -> str:
        """Deletes the VM (succeeds if absent); returns a task reference or ""."""

    async def power(self, vm_id: str, op: PowerOp) -> str:
        """Runs a power operation; returns a task reference or ""."""

    async def reconfigure(self, vm_id: str, desired: CreateRequest) -> str:
        """Changes the VM's resources toward ``desired``; returns a task reference or ""."""

    async def describe(self, vm_id: str) -> DescribeResponse:
        """The VM's current state."""

    async def task_status(self, task_ref: str) -> TaskStatus:
        """The state of the task ``task_ref`` (NotFound if unknown)."""
