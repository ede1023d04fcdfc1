"""The contract between the native core and the Python layer holds.

The codes, flags and modes that cross the boundary as ints are defined once in
C++ (cpp/src/contract.hpp) and exported by ``_core`` as enums; ``_native``
binds each member to a module-level int and every other module imports them
from there. The methods the core calls by name on Python objects, and the
callables it calls by position, each have a Protocol in ``_native``. Here:

* every exported member has exactly one int in ``_native``, of its value, and
  ``_native`` holds no code the core does not export;
* no other module keeps a copy: an int literal assigned to a contract name,
  passed as a code to a native method, or compared with a state code or a
  stage is a copy (the source of the package is read);
* every class the core calls back provides the methods with signatures that
  accept the core's call, and every callable handed to it accepts its call.

Change a value on one side only, or add a code, a hook or a caller on one
side only, and one of these fails.
"""

from __future__ import annotations

import ast
import enum
import importlib
import inspect
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import virtrigaud_resilience
from virtrigaud_resilience import _core, _native

PACKAGE = Path(virtrigaud_resilience.__file__).resolve().parent

#: (exported enum, member) -> its name in _native: one line per code.
BOUND: dict[tuple[str, str], str] = {
    ("Hooks", "TRANSITION"): "HOOK_TRANSITION",
    ("Hooks", "REJECT"): "HOOK_REJECT",
    ("Hooks", "ERROR"): "HOOK_ERROR",
    ("Hooks", "GENERATOR"): "HOOK_GENERATOR",
    ("Hooks", "ACCEPT_COROUTINE"): "ACCEPT_COROUTINE",
    ("Hooks", "DELEGATE"): "DELEGATE",
    ("Outcome", "SUCCESS"): "SUCCESS",
    ("Outcome", "FAILURE"): "FAILURE",
    ("Outcome", "RELEASE"): "RELEASE",
    ("StateCode", "CLOSED"): "CLOSED",
    ("StateCode", "HALF_OPEN"): "HALF_OPEN",
    ("StateCode", "OPEN"): "OPEN",
    ("StateCode", "HELD_OPEN"): "HELD_OPEN",
    ("MoveKind", "CLOSE"): "MOVE_CLOSE",
    ("MoveKind", "HALF_OPEN"): "MOVE_HALF_OPEN",
    ("MoveKind", "OPEN"): "MOVE_OPEN",
    ("MoveKind", "OPEN_COUNTED"): "MOVE_OPEN_COUNTED",
    ("Stage", "PYTHON_PATH"): "STAGE_PYTHON_PATH",
    ("Stage", "CALLED"): "STAGE_CALLED",
    ("Stage", "BREAKER_OPEN"): "STAGE_BREAKER_OPEN",
    ("Stage", "RATE_LIMITED"): "STAGE_RATE_LIMITED",
    ("Stage", "BULKHEAD_FULL"): "STAGE_BULKHEAD_FULL",
    ("RetryCallMode", "PYTHON"): "MODE_PYTHON",
    ("RetryCallMode", "NATIVE"): "MODE_NATIVE",
    ("RetryCallMode", "PASSTHROUGH"): "MODE_PASSTHROUGH",
    ("RetryCallOutcome", "NOT_RUN"): "RESUME_NOT_RUN",
    ("RetryCallOutcome", "RAISED"): "RESUME_RAISED",
    ("RetryCallOutcome", "REJECTED"): "RESUME_REJECTED",
    ("Held", "BREAKER"): "HELD_BREAKER",
    ("Held", "BUCKET"): "HELD_BUCKET",
}
#: Plain int constants of _core that are codes -> their name in _native.
BOUND_CONSTANTS = {"POLICY_ENTER_PYTHON_PATH": "ENTER_PYTHON_PATH"}


def exported_enums() -> dict[str, type[enum.Enum]]:
    return {name: value for name, value in vars(_core).items()
            if isinstance(value, type) and issubclass(value, enum.Enum)}


def native_codes() -> dict[str, int]:
    """_native's public ints: its codes."""
    return {name: getattr(_native, name) for name in _native.__all__
            if isinstance(getattr(_native, name), int)}


# -- the values ----------------------------------------------------------------


def test_every_exported_member_has_its_int_in_native() -> None:
    members = {(name, member.name) for name, kind in exported_enums().items() for member in kind}
    assert members == set(BOUND), "a code exported by _core without its int in _native (or gone)"
    for (kind, member), name in BOUND.items():
        value = getattr(_native, name)
        # a plain int, so that a hot path compares ints, never an enum member
        assert type(value) is int, (name, type(value))
        assert value == int(getattr(exported_enums()[kind], member)), name
    for constant, name in BOUND_CONSTANTS.items():
        assert type(getattr(_native, name)) is int
        assert getattr(_native, name) == getattr(_core, constant)


def test_native_holds_no_code_the_core_does_not_export() -> None:
    assert set(native_codes()) == set(BOUND.values()) | set(BOUND_CONSTANTS.values())


def test_the_codes_of_one_kind_are_distinct() -> None:
    for name, kind in exported_enums().items():
        values = [int(member) for member in kind]
        assert len(set(values)) == len(values), name
    hooks = [int(member) for member in _core.Hooks]
    assert all(value & (value - 1) == 0 for value in hooks), "a hook flag is not one bit"
    # _enter() returns a ticket (>= 0), -stage for a refusal, or ENTER_PYTHON_PATH
    refusals = {-int(stage) for stage in _core.Stage if stage > _core.Stage.CALLED}
    assert _native.ENTER_PYTHON_PATH < 0 and _native.ENTER_PYTHON_PATH not in refusals


def test_the_state_codes_are_the_metric_and_breaker_state() -> None:
    from virtrigaud_resilience.breaker import BreakerState

    assert [(s.name, s.value) for s in BreakerState] == [
        ("CLOSED", _native.CLOSED), ("HALF_OPEN", _native.HALF_OPEN), ("OPEN", _native.OPEN)]
    # metrics.py reports a label set's worst state as the largest code
    assert _native.CLOSED < _native.HALF_OPEN < _native.OPEN


def test_the_codes_mean_what_native_does_with_them() -> None:
    """A round trip through a real breaker for the codes Python sends and reads."""
    from virtrigaud_resilience.clock import ManualClock

    clock = ManualClock()
    breaker = _core.CircuitBreaker("contract", "", "", 1, 1_000_000_000, 1, clock,
                                   lambda exc: _native.FAILURE)
    assert breaker._state_code == _native.CLOSED
    ticket = breaker._try_admit()
    assert ticket >= 0 and not _native.is_half_open_probe(ticket)
    assert breaker._record_undispatched(ticket, _native.FAILURE) == (_native.CLOSED, _native.OPEN)
    assert breaker._try_admit() == -1  # refused
    assert breaker._set_state_undispatched(_native.MOVE_HALF_OPEN) == (_native.OPEN,
                                                                       _native.HALF_OPEN)
    probe = breaker._try_admit()
    assert _native.is_half_open_probe(probe)
    breaker._record_undispatched(probe, _native.RELEASE)
    assert breaker._state_code == _native.HALF_OPEN  # a release is no outcome
    breaker._record_undispatched(breaker._try_admit(), _native.SUCCESS)
    assert breaker._state_code == _native.CLOSED
    assert breaker._set_state_undispatched(_native.MOVE_OPEN_COUNTED) == (_native.CLOSED,
                                                                          _native.OPEN)
    assert breaker._set_state_undispatched(_native.MOVE_CLOSE) == (_native.OPEN, _native.CLOSED)
    assert breaker._set_state_undispatched(_native.MOVE_OPEN) == (_native.CLOSED, _native.OPEN)
    breaker._restore_undispatched(_native.HELD_OPEN, 0, 0, 0)
    assert breaker.held_open and breaker._state_code == _native.OPEN


# -- no copies -------------------------------------------------------------------

#: Native methods whose argument at this position is a code.
CODE_ARGUMENTS = {"_record": 1, "_record_undispatched": 1, "_set_hooks": 0,
                  "_set_state_undispatched": 0, "_restore_undispatched": 0, "_resume": 0,
                  "_resume_async": 0}
#: Names whose comparison with an int literal reads a code.
CODE_HOLDERS = {"_state_code", "stage", "outcome", "mode"}


def contract_words() -> set[str]:
    """The names a copy of a code would go by: _native's, and each without its
    prefix (HOOK_TRANSITION, TRANSITION; RESUME_NOT_RUN, NOT_RUN; ...)."""
    words = set(native_codes())
    for name in list(words):
        for prefix in ("HOOK_", "MOVE_", "STAGE_", "ENTER_", "MODE_", "RESUME_", "HELD_"):
            if name.startswith(prefix):
                words.add(name[len(prefix):])
    return words


def is_int_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    return (isinstance(node, ast.Constant) and isinstance(node.value, int)
            and not isinstance(node.value, bool))


def assigned(target: ast.AST, value: ast.AST) -> Iterator[tuple[str, ast.AST]]:
    """(name, value) for each name bound by ``target = value``."""
    if isinstance(target, ast.Name):
        yield target.id, value
    elif isinstance(target, (ast.Tuple, ast.List)):
        values = value.elts if isinstance(value, (ast.Tuple, ast.List)) else [value] * len(
            target.elts)
        for element, element_value in zip(target.elts, values):
            yield from assigned(element, element_value)


def holder_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def copies_in(tree: ast.AST, words: set[str]) -> Iterator[tuple[int, str]]:
    """(line, what) for each hand-kept copy of a code in a module's tree."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name, value in assigned(target, node.value):
                    if name.lstrip("_") in words and is_int_literal(value):
                        yield node.lineno, f"{name} = {ast.unparse(value)}"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            position = CODE_ARGUMENTS.get(node.func.attr)
            if position is not None and position < len(node.args) and is_int_literal(
                    node.args[position]):
                yield node.lineno, ast.unparse(node)
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(holder_name(side) in CODE_HOLDERS for side in sides) and any(
                    is_int_literal(side) for side in sides):
                yield node.lineno, ast.unparse(node)
        elif isinstance(node, (ast.If, ast.While, ast.IfExp)) and holder_name(
                node.test) == "_state_code":
            yield node.lineno, f"truth of {ast.unparse(node.test)} (CLOSED taken as 0)"


def package_sources() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if path != PACKAGE / "_native.py")


def test_no_module_keeps_a_copy_of_a_code() -> None:
    words = contract_words()
    found = [f"{path.relative_to(PACKAGE)}:{line}: {what}"
             for path in package_sources()
             for line, what in copies_in(ast.parse(path.read_text(), str(path)), words)]
    assert not found, "copies of native codes (import them from _native):\n" + "\n".join(found)


@pytest.mark.parametrize("copy", [
    "_SUCCESS, _FAILURE, _RELEASE = 0, 1, 2",
    "HOOK_ERROR = 4",
    "class BreakerState:\n    OPEN = 2",
    "NOT_RUN: int = 0",
    "_ENTER_PYTHON_PATH = -100",
    "breaker._record(ticket, 2)",
    "self._set_hooks(6)",
    "up = breaker._state_code == 0",
    "if breaker._state_code:\n    pass",
    "if stage == 3:\n    pass",
])
def test_the_scan_finds_each_kind_of_copy(copy: str) -> None:
    assert list(copies_in(ast.parse(copy), contract_words()))


def test_the_scan_lets_the_imports_and_other_ints_be() -> None:
    fine = ("from .._native import CLOSED, RELEASE as _RELEASE\n"
            "_RELEASE = _native.RELEASE\n"
            "OPEN = 'open'\n"
            "_ADMITTED, _REJECTED = range(2)\n"
            "breaker._configure(5, 10, 1)\n"
            "breaker._record(ticket, RELEASE)\n"
            "if ticket >= 0:\n    pass\n")
    assert list(copies_in(ast.parse(fine), contract_words())) == []


# -- the methods and callables the core calls ---------------------------------------


def core_call(protocol_method: Callable[..., Any]) -> tuple[list[Any], bool, bool]:
    """(positional arguments, extra *args?, **kwargs?) of the core's call that
    a protocol's method (or __call__) states, without self."""
    parameters = list(inspect.signature(protocol_method).parameters.values())[1:]
    positional = [object() for p in parameters if p.kind is inspect.Parameter.POSITIONAL_ONLY]
    assert len(positional) + sum(
        p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        for p in parameters) == len(parameters), "the core passes arguments by position only"
    varargs = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)
    varkw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    return positional, varargs, varkw


def return_hint(fn: Callable[..., Any]) -> Any:
    try:
        return typing.get_type_hints(fn).get("return", Any)
    except NameError:  # a name imported for type checking only
        return Any


def check_accepts(implementation: Callable[..., Any], protocol_method: Callable[..., Any], *,
                  method: bool, owner: str) -> None:
    """``implementation`` (a function; with ``method``, a method taking self)
    accepts every call the core makes per ``protocol_method``, and returns
    what it says."""
    positional, varargs, varkw = core_call(protocol_method)
    signature = inspect.signature(implementation)
    head = [object()] if method else []
    calls = [positional]
    if varargs:
        calls.append([*positional, object(), object()])
    for arguments in calls:
        try:
            signature.bind(*head, *arguments, **({"key": object()} if varkw else {}))
        except TypeError as error:
            pytest.fail(f"{owner}{signature} does not accept the core's call "
                        f"{protocol_method.__qualname__}: {error}")
    wanted, given = return_hint(protocol_method), return_hint(implementation)
    if isinstance(wanted, type) and isinstance(given, type):
        assert issubclass(given, wanted), f"{owner} returns {given}, the core wants {wanted}"


def check_conforms(cls: type, protocol: type) -> None:
    for name, member in vars(protocol).items():
        if not name.startswith("_") or name.startswith("__") or not callable(member):
            continue
        implementation = getattr(cls, name, None)
        assert implementation is not None, f"{cls.__qualname__} lacks {name} ({protocol.__name__})"
        check_accepts(implementation, member, method=True, owner=f"{cls.__qualname__}.{name}")


def load(path: str) -> Any:
    module, _, attribute = path.rpartition(".")
    return getattr(importlib.import_module(module), attribute)


#: The breakers that hand parts of the call path to Python: class -> the flags
#: it may set (the module constants it passes to _set_hooks, and DELEGATE where
#: it sets that one per call).
HOOKED_BREAKERS = {
    "virtrigaud_resilience.compat.pybreaker.CircuitBreaker":
        ("virtrigaud_resilience.compat.pybreaker._NATIVE_HOOKS", _native.DELEGATE),
    "virtrigaud_resilience.compat.circuitbreaker.CircuitBreaker":
        ("virtrigaud_resilience.compat.circuitbreaker._HOOKS", 0),
}
#: The token buckets that set _set_refusal_calls_python(True).
REFUSING_BUCKETS = ["virtrigaud_resilience.distributed.leased.LeasedTokenBucket"]


def sources_calling(method: str) -> set[str]:
    """The modules (dotted) whose source calls ``.method(``."""
    return {".".join(("virtrigaud_resilience", *path.relative_to(PACKAGE).with_suffix("").parts))
            for path in package_sources() if f".{method}(" in path.read_text()}


def test_the_lists_of_callers_are_complete() -> None:
    assert sources_calling("_set_hooks") == {path.rpartition(".")[0] for path in HOOKED_BREAKERS}
    assert sources_calling("_set_refusal_calls_python") == {
        path.rpartition(".")[0] for path in REFUSING_BUCKETS}


@pytest.mark.parametrize("path", sorted(HOOKED_BREAKERS))
def test_a_hooked_breaker_has_the_method_of_each_hook_it_sets(path: str) -> None:
    if path.endswith("pybreaker.CircuitBreaker"):
        pytest.importorskip("virtrigaud_resilience.compat.pybreaker")
    cls = load(path)
    constant, extra = HOOKED_BREAKERS[path]
    flags = load(constant) | extra
    assert flags, "sets no hook"
    known = 0
    for flag, protocol in _native.HOOK_PROTOCOLS.items():
        known |= flag
        if flags & flag:
            check_conforms(cls, protocol)
    assert flags & ~(known | _native.ACCEPT_COROUTINE) == 0, "a flag without a protocol"


def test_each_hook_flag_has_a_protocol() -> None:
    assert set(_native.HOOK_PROTOCOLS) | {_native.ACCEPT_COROUTINE} == {
        int(flag) for flag in _core.Hooks}


def package_subclasses(base: type) -> list[type]:
    found, todo = [], [base]
    while todo:
        for cls in todo.pop().__subclasses__():
            todo.append(cls)
            if cls.__module__.startswith("virtrigaud_resilience."):
                found.append(cls)
    return found


def test_the_policies_and_bulkheads_have_what_the_core_calls() -> None:
    # The package loads some of these on first use: import every module that subclasses.
    for module in ("policy", "adaptive_bulkhead", "adaptive_rate", "fallback", "hedging"):
        importlib.import_module(f"virtrigaud_resilience.{module}")
    policies = package_subclasses(_core.Policy)
    bulkheads = package_subclasses(_core.Bulkhead)
    assert policies and bulkheads
    for cls in policies:
        check_conforms(cls, _native.PolicyResume)
    for cls in bulkheads:
        check_conforms(cls, _native.BulkheadQueue)
    adaptive = package_subclasses(_core.AdaptiveBulkhead)
    assert adaptive
    for cls in adaptive:
        check_conforms(cls, _native.AdaptiveWindow)


@pytest.mark.parametrize("path", REFUSING_BUCKETS)
def test_a_refusing_bucket_has_refused(path: str) -> None:
    pytest.importorskip("redis")
    check_conforms(load(path), _native.RefusalHook)


def test_the_callables_handed_to_the_core_accept_its_call() -> None:
    from virtrigaud_resilience import breaker, events

    retry = importlib.import_module("virtrigaud_resilience.retry")  # vr.retry is the function

    handed: list[tuple[Callable[..., Any], type]] = [
        (breaker._classifier(None), _native.Classifier),
        (breaker._reject, _native.RejectFactory),
        (breaker._on_transition, _native.TransitionDispatcher),
        (events._emit_rate_limited, _native.RateLimitedHook),
        (retry._native_retrier, _native.RetryResolve),
        (retry._retry_in_python, _native.RetryInPython),
        (retry._after_first_attempt, _native.RetryAfterFirst),
    ]
    for fn, protocol in handed:
        check_accepts(fn, vars(protocol)["__call__"], method=False, owner=fn.__qualname__)


def test_the_check_catches_a_signature_the_core_cannot_call() -> None:
    class Wrong:
        def _on_error(self, ticket: int) -> BaseException:
            raise AssertionError

        def _transition(self, old: int, new: int) -> None:
            pass

        def _on_reject(self, fn: Any, *args: Any) -> None:  # no **kwargs
            pass

        def _refused(self, n: int) -> str:  # not a bool
            return ""

    for protocol in (_native.ErrorHook, _native.RejectHook, _native.RefusalHook):
        with pytest.raises(BaseException, match="does not accept|returns"):
            check_conforms(Wrong, protocol)
    check_conforms(Wrong, _native.TransitionHook)
    with pytest.raises(AssertionError, match="lacks _call_python"):
        check_conforms(Wrong, _native.DelegateHook)
