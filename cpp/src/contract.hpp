// The contract between the bindings and the Python layer: every code, flag
// and mode that crosses the boundary as a plain int is defined here, once,
// and exported by bind_contract() as a _core enum (see _core.pyi). Python
// reads them only through python/virtrigaud_resilience/_native.py, which
// binds each member to a module-level int at import (a hot path compares
// ints, never enum members), and tests/test_native_contract.py pins every
// Python use to these values: change one here and the suite says where.
//
// The methods the bindings call by name on Python objects (_transition,
// _on_error, _resume ...) are the other half of the contract: each has a
// typing.Protocol in _native.py.

#pragma once

#include <nanobind/nanobind.h>

#include <cstdint>

#include "virtrigaud/circuit_breaker.hpp"

namespace virtrigaud_contract {

// What a breaker's owner (a drop-in module) takes over from the native call
// path, set with CircuitBreaker._set_hooks(). Each hook is a method of the
// breaker looked up by name when used; none is consulted on the success path
// of a closed breaker except the two flag tests. Python: _core.Hooks.
enum Hooks : uint32_t {
    // transitions go to self._transition(old, new) instead of the global
    // dispatcher, and what it raises (any exception) propagates to the caller
    kHookTransition = 1,
    // a rejected call returns self._on_reject(fn, *args, **kwargs)
    kHookReject = 2,
    // when fn raises: exc2 = self._on_error(ticket, exc) records the outcome
    // and returns the exception to raise (exc itself, or another chained to it)
    kHookError = 4,
    // a generator result is handed to self._on_generator(ticket, gen), whose
    // return value is the call's: the outcome comes when the generator ends
    kHookGenerator = 8,
    // a coroutine result is a plain value (recorded as a success), as the
    // pure-Python breakers treat it, instead of a TypeError
    kAcceptCoroutine = 16,
    // call() is self._call_python(fn, *args, **kwargs) altogether
    kDelegate = 32,
};

// A call's outcome, as classify(exc) returns it and _record / _record_quiet
// take it. kRaisedOutcome (C++ only): the classifier let a KeyboardInterrupt
// or SystemExit through (left set); the call is recorded as a failure.
// Python: _core.Outcome (without kRaisedOutcome).
enum Outcome : int { kRaisedOutcome = -1, kSuccess = 0, kFailure = 1, kRelease = 2 };

// Why Policy's native first attempt hands the call to the Python method
// `_resume(stage, exc, fn, args, kwargs)`; _enter() returns -stage for the
// three refusals. Python: _core.Stage (without kRaised).
enum Stage : int {
    kPythonPath = -1,   // the policy needs Python for every call (e.g. a timeout)
    kCalled = 0,        // attempt 0 ran and raised `exc` (already recorded)
    kBreakerOpen = 1,   // the breaker refused attempt 0
    kRateLimited = 2,   // the bucket had no token for attempt 0
    kBulkheadFull = 3,  // no bulkhead slot for attempt 0
    kRaised = 4,        // (C++ only) a hook raised KeyboardInterrupt / SystemExit (set);
                        // nothing held
};

// What Policy._enter() returns when every call needs Python (kPythonPath):
// below every -stage and every ticket (>= 0). Python: _core.POLICY_ENTER_PYTHON_PATH.
constexpr int kEnterPythonPath = -100;

// How a RetryCall runs a call, set with RetryCall._configure(mode, ...).
// Python: _core.RetryCallMode.
enum RetryCallMode : int { kModePython = 0, kModeNative = 1, kModePassthrough = 2 };

// Why a RetryCall calls resume(outcome, value, args, kwargs, t0): nothing ran
// yet (python mode), the first attempt raised `value`, or its result `value`
// was rejected. Python: _core.RetryCallOutcome.
enum RetryCallOutcome : int { kNotRun = 0, kResumeRaised = 1, kRejected = 2 };

// A breaker's state as the bindings report it (_state_code, transitions,
// _counters) and as _restore takes it. Reports say kStateOpen for a
// held-open breaker too (held_open tells them apart); only _restore takes
// kStateHeldOpen. The values are the metric's (BreakerState in breaker.py).
// Python: _core.StateCode.
enum StateCode : int {
    kStateClosed = static_cast<int>(virtrigaud::BreakerState::kClosed),
    kStateHalfOpen = static_cast<int>(virtrigaud::BreakerState::kHalfOpen),
    kStateOpen = static_cast<int>(virtrigaud::BreakerState::kOpen),
    kStateHeldOpen = static_cast<int>(virtrigaud::BreakerState::kHeldOpen),
};

// The manual transitions of CircuitBreaker._move(kind). Python: _core.MoveKind.
enum MoveKind : int {
    kMoveClose = 0,        // close (forget the failures)
    kMoveHalfOpen = 1,     // half-open with every probe slot free
    kMoveOpen = 2,         // open, timing out as a trip does
    kMoveOpenCounted = 3,  // open, counting one failure
};

// The bits of _core._held(breaker, bucket): what an enclosing native sync
// attempt of this thread holds (held_attempts.hpp). Python: _core.Held.
enum Held : int { kHeldBreaker = 1, kHeldBucket = 2 };

// Exports the contract: one _core enum per C++ enum above (members named
// without the k-prefix, in Python's style), and the one plain constant.
inline void bind_contract(nanobind::module_& m) {
    namespace nb = nanobind;
    nb::enum_<Hooks>(m, "Hooks", nb::is_flag(), nb::is_arithmetic(),
                     "CircuitBreaker._set_hooks() flags: the parts of the call path that go\n"
                     "to the breaker's own Python methods.")
        .value("TRANSITION", kHookTransition, "self._transition(old, new) gets every transition.")
        .value("REJECT", kHookReject,
               "A rejected call returns self._on_reject(fn, *args, **kwargs).")
        .value("ERROR", kHookError, "A raised call returns or raises self._on_error(ticket, exc).")
        .value("GENERATOR", kHookGenerator,
               "A generator result is self._on_generator(ticket, gen), the outcome when it ends.")
        .value("ACCEPT_COROUTINE", kAcceptCoroutine,
               "A coroutine result is a value (a success), not a TypeError.")
        .value("DELEGATE", kDelegate, "call() is self._call_python(fn, *args, **kwargs).");
    nb::enum_<Outcome>(m, "Outcome", nb::is_arithmetic(),
                       "A call's outcome: what classify(exc) returns and _record takes.")
        .value("SUCCESS", kSuccess, "Counts as a success.")
        .value("FAILURE", kFailure, "Counts toward opening.")
        .value("RELEASE", kRelease, "No outcome (cancelled): the slot is given back.");
    nb::enum_<Stage>(m, "Stage", nb::is_arithmetic(),
                     "Why Policy's native first attempt calls self._resume(stage, ...).")
        .value("PYTHON_PATH", kPythonPath, "Every call of this policy runs in Python.")
        .value("CALLED", kCalled, "Attempt 0 ran and raised exc (already recorded).")
        .value("BREAKER_OPEN", kBreakerOpen, "The breaker refused attempt 0.")
        .value("RATE_LIMITED", kRateLimited, "The bucket had no token for attempt 0.")
        .value("BULKHEAD_FULL", kBulkheadFull, "No bulkhead slot for attempt 0.");
    m.attr("POLICY_ENTER_PYTHON_PATH") = kEnterPythonPath;
    nb::enum_<RetryCallMode>(m, "RetryCallMode", nb::is_arithmetic(),
                             "How a RetryCall runs a call (RetryCall._configure).")
        .value("PYTHON", kModePython, "resume(NOT_RUN, ...) does it all.")
        .value("NATIVE", kModeNative, "The first attempt runs natively.")
        .value("PASSTHROUGH", kModePassthrough, "fn(*args, **kwargs), nothing else.");
    nb::enum_<RetryCallOutcome>(m, "RetryCallOutcome", nb::is_arithmetic(),
                                "Why a RetryCall calls resume(outcome, value, args, kwargs, t0).")
        .value("NOT_RUN", kNotRun, "Nothing ran yet.")
        .value("RAISED", kResumeRaised, "The first attempt raised value.")
        .value("REJECTED", kRejected, "The first attempt's result value was rejected.");
    nb::enum_<StateCode>(m, "StateCode", nb::is_arithmetic(),
                         "A breaker's state as _state_code, transitions and _counters report it\n"
                         "(OPEN for a held-open breaker too) and as _restore takes it.")
        .value("CLOSED", kStateClosed)
        .value("HALF_OPEN", kStateHalfOpen)
        .value("OPEN", kStateOpen)
        .value("HELD_OPEN", kStateHeldOpen, "Open until reset(): taken by _restore only.");
    nb::enum_<MoveKind>(m, "MoveKind", nb::is_arithmetic(),
                        "The manual transitions of CircuitBreaker._move(kind).")
        .value("CLOSE", kMoveClose, "Close (forget the failures).")
        .value("HALF_OPEN", kMoveHalfOpen, "Half-open with every probe slot free.")
        .value("OPEN", kMoveOpen, "Open, timing out as a trip does.")
        .value("OPEN_COUNTED", kMoveOpenCounted, "Open, counting one failure.");
    nb::enum_<Held>(m, "Held", nb::is_flag(), nb::is_arithmetic(),
                    "The bits of _held(breaker, bucket).")
        .value("BREAKER", kHeldBreaker, "An enclosing native attempt holds the breaker.")
        .value("BUCKET", kHeldBucket, "An enclosing native attempt holds a token of the bucket.");
}

}  // namespace virtrigaud_contract
