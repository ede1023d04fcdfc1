// AsyncCall: the awaitable Policy.execute_async() and CircuitBreaker.call_async()
// return. Awaiting it runs the call as `async def` code would, without a
// Python frame on the success path:
//
//   first send:  admit natively (the policy's enter(), or the breaker's
//                acquire), then fn(*args, **kwargs) and the iterator to drive:
//                the coroutine itself, or what the result's __await__ returns
//                (a Future, a class with __await__);
//   each send:   PyIter_Send on that iterator; what it yields goes to the
//                event loop unchanged;
//   it returns:  record the success natively (the policy's exit_success, the
//                breaker's record_success) and return its value.
//
// Anything else continues in a Python coroutine the awaitable then delegates
// to, yield-from style (every send, throw and close goes to it):
//   - a refused admission, or a policy that needs Python for every call (a
//     timeout): owner._resume_async(stage, None, fn, args, kwargs);
//   - the attempt raised (fn, its __await__, or the awaitable itself):
//     owner._attempt_raised_async(ticket, exc, fn, args, kwargs[, start_ns])
//     records the outcome as the Python path did (a cancellation by a
//     deadline is a Timeout, one from outside records nothing; start_ns, the
//     admission's clock time, is passed for a breaker timing slow calls),
//     then raises a BaseException again or returns the retry loop's coroutine.
// So every rule of the async path (cancellation gives back what the attempt
// held and is never retried, deadlines count as Timeout, one outcome per
// attempt) stays in the Python code that states it.
//
// Lifetime: nothing is admitted before the first send, so an awaitable never
// awaited holds nothing and is dropped quietly (fn never ran: there is no
// coroutine to warn about). One dropped or collected while suspended is
// closed, as a coroutine is: GeneratorExit goes to the attempt, which gives
// back its admission.
//
// An adapter guarding the same breaker or bucket (_core._track_held() set):
// the attempt awaits holding(breaker, bucket, fn, args, kwargs) instead of fn,
// as the Python path did, so the adapter sees what the attempt holds.

#include "loop_deadlines.hpp"
#include "policy.hpp"

namespace virtrigaud_bind {
namespace {

// kPlain: call_until's awaitable. No owner (`owner` holds the `what` its
// deadline's error names), nothing admitted or recorded; its deadline, if
// any, is armed around the attempt (see the deadline part below).
enum : uint8_t { kOwnerPolicy = 0, kOwnerBreaker = 1, kPlain = 2 };

enum : uint8_t {
    kNew = 0,        // not sent to yet: nothing admitted, fn not called
    kAttempt = 1,    // `iter` is the native attempt's; `ticket` is held
    kDelegated = 2,  // `iter` is the Python continuation's coroutine
    kDone = 3,       // returned, raised or closed
};

struct AsyncCallObject {
    PyObject_VAR_HEAD
    PyObject* owner;    // the Policy or CircuitBreaker
    void* native;       // its native part (PyPolicy or PyCircuitBreaker), alive with it
    PyObject* iter;     // what a send drives (see the states), or null
    PyObject* kwnames;  // the call's keyword names, or null
    // The admitted attempt's; its start_ns is the admission's clock time for
    // a breaker timing slow calls, else -1.
    vr::Ticket ticket;
    PyObject* clock;    // kPlain: the clock `deadline` is on (null: no deadline)
    PyObject* scope;    // the attempt's TimeoutScope while its deadline is armed, else null
    PyObject* deadline_token;  // timeouts._DEADLINE's token while it is set, else null
    double deadline;    // kPlain: when, on `clock`, the attempt is cut off
    Py_ssize_t nargs;   // fn's positional arguments: call[1 .. nargs]
    uint8_t kind;
    uint8_t state;
    uint8_t finalized;  // tp_finalize ran (the collector will not run it again)
    std::atomic<uint8_t> running;  // inside a send, throw or close
    // fn, its positional arguments, its keyword values (ob_size of them;
    // cleared once the call no longer needs them).
    PyObject* call[1];
};

PyObject* g_async_call_type = nullptr;
// _admission.holding and _admission.awaited (_install_async_helpers).
PyObject* g_holding = nullptr;
PyObject* g_awaited = nullptr;
PyObject* g_str_resume_async = nullptr;
PyObject* g_str_attempt_raised_async = nullptr;
PyObject* g_str_throw = nullptr;
PyObject* g_str_close = nullptr;

AsyncCallObject* as_call(PyObject* self) { return reinterpret_cast<AsyncCallObject*>(self); }

// -------------------------------------------------------------- creating --

// An AsyncCall is allocated and freed once per await. With the full API on a
// GIL build (the cp310/cp311 wheels), the last few freed ones with room for
// fn and up to three arguments are kept for the next calls, as CPython keeps
// freed tuples and floats: no allocator round trip on the hot path.
#if !defined(Py_LIMITED_API) && !defined(Py_GIL_DISABLED)
#define VIRTRIGAUD_ASYNC_CALL_REUSE 1
constexpr Py_ssize_t kReusedItems = 4;
constexpr int kKeptForReuse = 16;
AsyncCallObject* g_kept[kKeptForReuse];
int g_kept_count = 0;
#endif

// An untracked object for `items` items, with its references unset.
AsyncCallObject* allocate(Py_ssize_t items) {
    auto* type = reinterpret_cast<PyTypeObject*>(g_async_call_type);
#ifdef VIRTRIGAUD_ASYNC_CALL_REUSE
    if (items <= kReusedItems) {
        if (g_kept_count > 0) {
            AsyncCallObject* self = g_kept[--g_kept_count];
            // A new reference to the type and to self, ob_size = items.
            PyObject_InitVar(reinterpret_cast<PyVarObject*>(self), type, items);
            return self;
        }
        AsyncCallObject* self = PyObject_GC_NewVar(AsyncCallObject, type, kReusedItems);
        if (self != nullptr) {
            Py_SET_SIZE(self, items);
        }
        return self;
    }
#endif
    // Not PyType_GenericAlloc: every field is set by the caller, no need to zero them.
    return PyObject_GC_NewVar(AsyncCallObject, type, items);
}

// Frees (or keeps for reuse) an untracked object whose references are cleared.
void release(AsyncCallObject* self) {
    PyTypeObject* type = Py_TYPE(reinterpret_cast<PyObject*>(self));
#ifdef VIRTRIGAUD_ASYNC_CALL_REUSE
    // One the collector finalized keeps the collector's "finalized" mark: freed.
    if (Py_SIZE(self) <= kReusedItems && !self->finalized && g_kept_count < kKeptForReuse) {
        g_kept[g_kept_count++] = self;
        Py_DECREF(type);
        return;
    }
#endif
    PyObject_GC_Del(self);  // its tp_free (allocated by PyObject_GC_NewVar)
    Py_DECREF(type);
}

VIRTRIGAUD_ALWAYS_INLINE PyObject* new_async_call(uint8_t kind, PyObject* owner, void* native,
                                                PyObject* fn, PyObject* const* args,
                                                Py_ssize_t nargs, PyObject* kwnames) {
    const Py_ssize_t nkw = kwnames != nullptr ? PyTuple_Size(kwnames) : 0;
    AsyncCallObject* self = allocate(1 + nargs + nkw);
    if (self == nullptr) {
        return nullptr;
    }
    self->owner = Py_NewRef(owner);
    self->native = native;
    self->iter = nullptr;
    self->kwnames = Py_XNewRef(kwnames);
    self->ticket.admitted = false;
    self->ticket.start_ns = -1;
    self->clock = nullptr;
    self->scope = nullptr;
    self->deadline_token = nullptr;
    self->deadline = 0;
    self->nargs = nargs;
    self->kind = kind;
    self->state = kNew;
    self->finalized = 0;
    new (&self->running) std::atomic<uint8_t>(0);
    self->call[0] = Py_NewRef(fn);
    for (Py_ssize_t i = 0; i < nargs + nkw; ++i) {
        self->call[1 + i] = Py_NewRef(args[i]);
    }
    PyObject_GC_Track(self);
    return reinterpret_cast<PyObject*>(self);
}

// Drops fn and its arguments (the call is over, or a continuation has them).
VIRTRIGAUD_ALWAYS_INLINE void clear_call(AsyncCallObject* self) {
    for (Py_ssize_t i = 0; i < Py_SIZE(reinterpret_cast<PyObject*>(self)); ++i) {
        Py_CLEAR(self->call[i]);
    }
    Py_CLEAR(self->kwnames);
}

// owner.<name>(first, second, fn, args, kwargs[, extra]): a continuation in
// Python (`extra` null: not passed).
PyObject* call_owner(AsyncCallObject* self, PyObject* name, PyObject* first, PyObject* second,
                     PyObject* extra = nullptr) {
    if (self->call[0] == nullptr) {
        PyErr_SetString(PyExc_RuntimeError, "AsyncCall lost its call");
        return nullptr;
    }
    PyObject* args = nullptr;
    PyObject* kwargs = nullptr;
    if (!pack_arguments(self->call + 1, self->nargs, self->kwnames, args, kwargs)) {
        return nullptr;
    }
    // A null `extra` ends the argument list where the sentinel would.
    PyObject* r = PyObject_CallMethodObjArgs(self->owner, name, first, second, self->call[0],
                                             args, kwargs, extra, nullptr);
    Py_DECREF(args);
    Py_DECREF(kwargs);
    return r;
}

// ------------------------------------------------------------- the owner --

bool attempt_deadline_ahead(AsyncCallObject* self, bool& ahead);

// Admits the attempt natively: kCalled (self->ticket set), a refusal stage
// for the Python continuation, kPythonPath, or kRaised (error set).
int admit(AsyncCallObject* self) {
    if (self->kind == kPlain) {
        return kCalled;
    }
    if (self->kind == kOwnerPolicy) {
        auto* p = static_cast<PyPolicy*>(self->native);
        if (!p->fast) {
            bool ahead = false;
            if (!p->attempt_clock.is_valid()) {
                return kPythonPath;
            }
            if (!attempt_deadline_ahead(self, ahead)) {
                return kRaised;
            }
            if (!ahead) {  // already past: the Python path says so, calling nothing
                Py_CLEAR(self->clock);
                return kPythonPath;
            }
        }
        return p->enter(self->ticket);
    }
    auto* b = static_cast<PyCircuitBreaker*>(self->native);
    self->ticket = b->core().acquire();
    if (!self->ticket.admitted) {
        raise_rejected(self->owner);
        return kRaised;
    }
    if (!notify(self->owner, self->ticket.transition)) {
        b->core().release(self->ticket);
        return kRaised;
    }
    return kCalled;
}

// The attempt returned: record its success. False with an error set (a
// state listener's KeyboardInterrupt or SystemExit).
bool record_success(AsyncCallObject* self) {
    if (self->kind == kOwnerPolicy) {
        auto* p = static_cast<PyPolicy*>(self->native);
        p->count_first_attempt_success();
        return p->exit_success(self->ticket);
    }
    return record(self->owner, static_cast<PyCircuitBreaker*>(self->native), self->ticket,
                  kSuccess);
}

// What the attempt's holding() records as held (None: nothing of that kind).
void held_by_attempt(AsyncCallObject* self, PyObject*& breaker, PyObject*& bucket) {
    breaker = bucket = Py_None;
    if (self->kind == kOwnerBreaker) {
        breaker = self->owner;
        return;
    }
    auto* p = static_cast<PyPolicy*>(self->native);
    if (p->breaker_obj.is_valid()) {
        breaker = p->breaker_obj.ptr();
    }
    if (p->bucket_obj.is_valid()) {
        bucket = p->bucket_obj.ptr();
    }
}

// ----------------------------------------------------------- the attempt --

// The result of fn(*args, **kwargs): an awaitable to drive.
PyObject* call_attempt(AsyncCallObject* self) {
    if (self->kind == kPlain || !virtrigaud_held::g_tracking.load(std::memory_order_relaxed)) {
        return forward_call(self->call[0], self->call + 1, static_cast<size_t>(self->nargs),
                            self->kwnames);
    }
    // An adapter exists: it may ask what this attempt holds.
    PyObject *breaker, *bucket;
    held_by_attempt(self, breaker, bucket);
    PyObject* args = nullptr;
    PyObject* kwargs = nullptr;
    if (!pack_arguments(self->call + 1, self->nargs, self->kwnames, args, kwargs)) {
        return nullptr;
    }
    PyObject* call_args[5] = {breaker, bucket, self->call[0], args, kwargs};
    PyObject* r = PyObject_Vectorcall(g_holding, call_args, 5, nullptr);
    Py_DECREF(args);
    Py_DECREF(kwargs);
    return r;
}

unaryfunc await_slot(PyObject* value) {
#ifdef Py_LIMITED_API
    return reinterpret_cast<unaryfunc>(PyType_GetSlot(Py_TYPE(value), Py_am_await));
#else
    PyAsyncMethods* am = Py_TYPE(value)->tp_as_async;
    return am != nullptr ? am->am_await : nullptr;
#endif
}

// The iterator `await value` drives (steals value): a coroutine itself, else
// what its __await__ returns, checked as `await` checks it. A value with no
// __await__ slot (a generator-based coroutine, or nothing awaitable) is
// awaited by Python's own `await`, in _admission.awaited(): its rules and
// its TypeError are the interpreter's.
PyObject* await_iterator(PyObject* value) {
    if (is_coroutine(value)) {
        return value;
    }
    const unaryfunc slot = await_slot(value);
    PyObject* it = slot != nullptr ? slot(value) : call_one(g_awaited, value);
    Py_DECREF(value);
    if (it == nullptr || slot == nullptr) {
        return it;
    }
    if (is_coroutine(it)) {
        Py_DECREF(it);
        PyErr_SetString(PyExc_TypeError, "__await__() returned a coroutine");
        return nullptr;
    }
    if (!PyIter_Check(it)) {
        PyObject* name = type_name_of(it);
        Py_DECREF(it);
        if (name != nullptr) {
            PyErr_Format(PyExc_TypeError, "__await__() returned non-iterator of type '%U'", name);
            Py_DECREF(name);
        }
        return nullptr;
    }
    return it;
}

// ---------------------------------------------------------- the deadline --
//
// call_until's deadline, as its Python version kept it: while the attempt
// is called and awaited, timeouts._DEADLINE holds (clock, deadline) (for
// nested policies and remaining()) and a TimeoutScope of the time left is
// entered, its deadline armed on the loop's one heap (loop_deadlines.hpp).
// An attempt that ends first removes its entry: no TimerHandle, no Python
// frame. Only a deadline that fired, or one already past, calls Python.

namespace dl = deadlines;

// The clock's time now in seconds (the system clock's read here); false
// with an error set.
bool clock_now(PyObject* clock, double& now) {
    if (clock == dl::g_system_clock) {
        now = static_cast<double>(vr::steady_now_ns()) / kNsPerSecond;
        return true;
    }
    PyObject* args[1] = {clock};
    PyObject* r = PyObject_VectorcallMethod(dl::g_str_now, args, 1, nullptr);
    if (r == nullptr) {
        return false;
    }
    now = PyFloat_AsDouble(r);
    Py_DECREF(r);
    return !(now == -1 && PyErr_Occurred());
}

// What the deadline's error names: call_until's `what`, or the policy's attempt.
PyObject* what_of(AsyncCallObject* self) {
    return self->kind == kPlain ? self->owner
                                : static_cast<PyPolicy*>(self->native)->attempt_what.ptr();
}

// Raises timeouts.deadline_exceeded(what, cause) (cause null: none) from cause.
void raise_deadline_exceeded(AsyncCallObject* self, PyObject* cause) {
    PyObject* args[2] = {what_of(self), cause};
    PyObject* error = PyObject_Vectorcall(dl::g_deadline_exceeded, args, cause ? 2 : 1, nullptr);
    if (error == nullptr) {
        return;
    }
    if (cause != nullptr) {
        PyException_SetCause(error, Py_NewRef(cause));
        PyException_SetContext(error, Py_NewRef(cause));
    }
    restore_exception(error);
}

// deadline_for(clock, timeout) (has_timeout false: None): the enclosing
// deadline on `clock` (borrowed from `outer`, the value of
// timeouts._DEADLINE), and now + timeout tightened by it. A new reference
// (None: no deadline), or null with an error set.
PyObject* deadline_on(PyObject* outer, PyObject* clock, bool has_timeout, double timeout) {
    PyObject* inherited = nullptr;  // borrowed from outer: the enclosing deadline on clock
    if (PyTuple_Check(outer) && PyTuple_Size(outer) == 2 && PyTuple_GetItem(outer, 0) == clock) {
        inherited = PyTuple_GetItem(outer, 1);
    }
    if (!has_timeout) {
        return Py_NewRef(inherited != nullptr ? inherited : Py_None);
    }
    double now = 0;
    if (!clock_now(clock, now)) {
        return nullptr;
    }
    const double own = now + timeout;
    if (inherited != nullptr) {
        const double bound = PyFloat_AsDouble(inherited);
        if (bound == -1 && PyErr_Occurred()) {
            return nullptr;
        }
        if (bound <= own) {
            return Py_NewRef(inherited);
        }
    }
    return PyFloat_FromDouble(own);
}

// Before the attempt: a deadline already past raises its error (fn is never
// called); else the deadline is made visible and armed. False with an error set.
bool arm_deadline(AsyncCallObject* self) {
    double now = 0;
    if (!clock_now(self->clock, now)) {
        return false;
    }
    const double left = self->deadline - now;
    if (!(left > 0)) {
        raise_deadline_exceeded(self, nullptr);
        return false;
    }
    PyObject* when = PyFloat_FromDouble(self->deadline);
    PyObject* visible = when != nullptr ? PyTuple_Pack(2, self->clock, when) : nullptr;
    Py_XDECREF(when);
    PyObject* token = visible != nullptr ? dl::context_set(dl::g_deadline_var, visible) : nullptr;
    Py_XDECREF(visible);
    if (token == nullptr) {
        return false;
    }
    PyObject* scope = dl::new_scope(left);
    if (scope == nullptr || !dl::scope_start(dl::as_scope(scope))) {
        Py_XDECREF(scope);
        PyObject* error = fetch_exception();
        dl::context_reset(dl::g_deadline_var, token);
        PyErr_Clear();
        Py_DECREF(token);
        restore_exception(error);
        return false;
    }
    self->deadline_token = token;
    self->scope = scope;
    return true;
}

// Before a policy's first attempt under its per-attempt timeout: its
// deadline, deadline_for(clock, attempt_timeout), goes to self->clock and
// self->deadline; `ahead` tells whether it is still ahead (else the
// attempt is not admitted: an enclosing deadline already past). False with
// an error set.
bool attempt_deadline_ahead(AsyncCallObject* self, bool& ahead) {
    auto* p = static_cast<PyPolicy*>(self->native);
    self->clock = Py_NewRef(p->attempt_clock.ptr());
    PyObject* outer = dl::context_get(dl::g_deadline_var);
    PyObject* deadline = outer != nullptr ? deadline_on(outer, self->clock, true, p->attempt_timeout)
                                          : nullptr;
    Py_XDECREF(outer);
    if (deadline == nullptr) {
        return false;
    }
    self->deadline = PyFloat_AsDouble(deadline);
    Py_DECREF(deadline);
    double now = 0;
    if ((self->deadline == -1 && PyErr_Occurred()) || !clock_now(self->clock, now)) {
        return false;
    }
    ahead = self->deadline > now;
    return true;
}

// After the attempt, which raised `exc` (null: returned): leaves the scope
// and hides the deadline again. Returns the exception the call raises (a
// new reference; null: none, or with an error set when leaving failed on a
// return). A cancellation that was the deadline's alone becomes
// deadline_exceeded(what) from asyncio.TimeoutError, as does any
// asyncio.TimeoutError once the deadline fired; anything else stays.
PyObject* disarm_deadline(AsyncCallObject* self, PyObject* exc) {
    PyObject* raised = exc != nullptr ? Py_NewRef(exc) : nullptr;
    bool fired = false;
    if (self->scope != nullptr) {
        dl::ScopeObject* scope = dl::as_scope(self->scope);
        if (!dl::scope_stop(scope, exc)) {
            dl::replace_ref(raised, fetch_exception());
        }
        fired = scope->fired != 0;
        Py_CLEAR(self->scope);
    }
    if (fired && raised != nullptr && PyErr_GivenExceptionMatches(raised, PyExc_Exception) &&
        dl::resolve_asyncio_errors()) {
        if (PyErr_GivenExceptionMatches(raised, dl::g_timeout_error)) {
            raise_deadline_exceeded(self, raised);
            dl::replace_ref(raised, fetch_exception());
        }
    }
    PyErr_Clear();  // a failed look-up of asyncio's errors: raised stays
    if (self->deadline_token != nullptr) {
        PyObject* token = self->deadline_token;
        self->deadline_token = nullptr;
        const bool reset = dl::context_reset(dl::g_deadline_var, token);
        Py_DECREF(token);
        if (!reset) {  // as a `finally` that raises: its error replaces the call's
            PyObject* error = fetch_exception();
            if (raised != nullptr) {
                PyException_SetContext(error, raised);
            }
            raised = error;
        }
    }
    return raised;
}

// ------------------------------------------------------------ the states --

PySendResult continue_in(AsyncCallObject* self, PyObject* continuation, PyObject** out);

// The continuation (or the delegated iterator) answered `status`.
PySendResult delegated(AsyncCallObject* self, PySendResult status) {
    if (status != PYGEN_NEXT) {
        Py_CLEAR(self->iter);
        self->state = kDone;
    }
    return status;
}

// The attempt raised (the error is set): the owner records it and says how
// the call continues. An attempt timed for slow calls passes its admission's
// clock time too (start_ns), so that a failure is timed as a success is.
PySendResult attempt_raised(AsyncCallObject* self, PyObject** out) {
    Py_CLEAR(self->iter);
    PyObject* exc = fetch_exception();
    if (self->kind == kPlain) {  // raised to the awaiting code as it is, or as its deadline's
        PyObject* raised = self->clock != nullptr ? disarm_deadline(self, exc) : Py_NewRef(exc);
        Py_DECREF(exc);
        self->state = kDone;
        clear_call(self);
        *out = nullptr;
        restore_exception(raised);
        return PYGEN_ERROR;
    }
    if (self->clock != nullptr) {  // the policy's attempt deadline: what the attempt raised
        PyObject* raised = disarm_deadline(self, exc);
        Py_DECREF(exc);
        exc = raised;
    }
    // A policy without a breaker admits with no ticket: the Python side reads 0.
    const bool no_breaker = self->kind == kOwnerPolicy &&
                            static_cast<PyPolicy*>(self->native)->breaker == nullptr;
    const int64_t start_ns = self->ticket.start_ns;
    PyObject* ticket = PyLong_FromLongLong(no_breaker ? 0 : self->ticket.encode());
    PyObject* start = start_ns >= 0 ? PyLong_FromLongLong(start_ns) : nullptr;
    PyObject* continuation = nullptr;
    if (ticket != nullptr && (start_ns < 0 || start != nullptr)) {
        continuation = call_owner(self, g_str_attempt_raised_async, ticket, exc, start);
    }
    Py_XDECREF(ticket);
    Py_XDECREF(start);
    Py_DECREF(exc);
    return continue_in(self, continuation, out);
}

// The attempt's iterator answered `status`.
PySendResult attempt_answered(AsyncCallObject* self, PySendResult status, PyObject** out) {
    if (status == PYGEN_NEXT) {
        return PYGEN_NEXT;
    }
    if (status == PYGEN_ERROR) {
        return attempt_raised(self, out);
    }
    if (self->kind == kOwnerPolicy && self->clock != nullptr) {  // its attempt deadline
        PyObject* raised = disarm_deadline(self, nullptr);
        if (raised != nullptr) {  // leaving it failed: so did the attempt
            Py_CLEAR(*out);
            restore_exception(raised);
            return attempt_raised(self, out);
        }
    }
    Py_CLEAR(self->iter);
    self->state = kDone;
    clear_call(self);
    if (self->kind == kPlain) {
        PyObject* raised = self->clock != nullptr ? disarm_deadline(self, nullptr) : nullptr;
        if (raised != nullptr) {
            restore_exception(raised);
        }
        if (PyErr_Occurred()) {
            Py_CLEAR(*out);
            return PYGEN_ERROR;
        }
        return PYGEN_RETURN;
    }
    if (!record_success(self)) {
        Py_CLEAR(*out);
        return PYGEN_ERROR;
    }
    return PYGEN_RETURN;
}

// Delegates the rest of the call to `continuation` (a new reference; null
// with an error set: the call raises it) and runs it to its first yield.
PySendResult continue_in(AsyncCallObject* self, PyObject* continuation, PyObject** out) {
    clear_call(self);  // the continuation has what it needs
    self->state = kDone;
    *out = nullptr;
    PyObject* it = continuation != nullptr ? await_iterator(continuation) : nullptr;
    if (it == nullptr) {
        return PYGEN_ERROR;
    }
    self->iter = it;
    self->state = kDelegated;
    return delegated(self, PyIter_Send(it, Py_None, out));
}

// The first send: admit, call, drive.
PySendResult start(AsyncCallObject* self, PyObject** out) {
    *out = nullptr;
    self->state = kDone;  // unless an attempt or a continuation runs
    const int stage = admit(self);
    if (stage == kRaised) {
        clear_call(self);
        return PYGEN_ERROR;
    }
    if (stage != kCalled) {
        PyObject* code = PyLong_FromLong(stage);
        PyObject* continuation =
            code != nullptr ? call_owner(self, g_str_resume_async, code, Py_None) : nullptr;
        Py_XDECREF(code);
        return continue_in(self, continuation, out);
    }
    if (self->clock != nullptr && !arm_deadline(self)) {
        if (self->kind == kOwnerPolicy) {  // the deadline passed since admission: a failed attempt
            return attempt_raised(self, out);
        }
        clear_call(self);
        return PYGEN_ERROR;
    }
    PyObject* result = call_attempt(self);
    // A coroutine (the common case) is its own iterator: no call to ask so.
    PyObject* it = result == nullptr || is_coroutine(result) ? result : await_iterator(result);
    if (it == nullptr) {
        return attempt_raised(self, out);
    }
    self->iter = it;
    self->state = kAttempt;
    return attempt_answered(self, PyIter_Send(it, Py_None, out), out);
}

// Only one send, throw or close at a time (a coroutine's rule).
bool enter_running(AsyncCallObject* self) {
#ifdef Py_GIL_DISABLED
    const bool busy = self->running.exchange(1, std::memory_order_acquire) != 0;
#else
    const bool busy = self->running.load(std::memory_order_relaxed) != 0;
    self->running.store(1, std::memory_order_relaxed);
#endif
    if (busy) {
        PyErr_SetString(PyExc_ValueError, "coroutine already executing");
        return false;
    }
    return true;
}

void leave_running(AsyncCallObject* self) { self->running.store(0, std::memory_order_release); }

PySendResult send_value(AsyncCallObject* self, PyObject* value, PyObject** out) {
    *out = nullptr;
    if (!enter_running(self)) {
        return PYGEN_ERROR;
    }
    PySendResult status = PYGEN_ERROR;
    switch (self->state) {
        case kNew:
            if (value != Py_None) {
                PyErr_SetString(PyExc_TypeError,
                                "can't send non-None value to a just-started coroutine");
                break;
            }
            status = start(self, out);
            break;
        case kAttempt:
            status = attempt_answered(self, PyIter_Send(self->iter, value, out), out);
            break;
        case kDelegated:
            status = delegated(self, PyIter_Send(self->iter, value, out));
            break;
        default:
            PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
            break;
    }
    leave_running(self);
    return status;
}

// ------------------------------------------------------------ throw/close --

// Raises what throw(typ[, val[, tb]]) was given, as a generator's throw()
// would raise it at its start. Always returns PYGEN_ERROR.
PySendResult raise_thrown(PyObject* typ, PyObject* val, PyObject* tb) {
    PyObject* exc = nullptr;
    if (PyExceptionClass_Check(typ)) {
        PyErr_SetObject(typ, val != nullptr ? val : Py_None);
        exc = fetch_exception();  // instantiated, as `raise typ(val)`
    } else if (PyExceptionInstance_Check(typ)) {
        if (val != nullptr && val != Py_None) {
            PyErr_SetString(PyExc_TypeError, "instance exception may not have a separate value");
            return PYGEN_ERROR;
        }
        exc = Py_NewRef(typ);
    } else {
        PyObject* name = type_name_of(typ);
        if (name != nullptr) {
            PyErr_Format(PyExc_TypeError,
                         "exceptions must be classes or instances deriving from BaseException, "
                         "not %U",
                         name);
            Py_DECREF(name);
        }
        return PYGEN_ERROR;
    }
    if (exc == nullptr) {
        return PYGEN_ERROR;
    }
    if (tb != nullptr && tb != Py_None && PyException_SetTraceback(exc, tb) != 0) {
        Py_DECREF(exc);
        return PYGEN_ERROR;
    }
    restore_exception(exc);
    return PYGEN_ERROR;
}

// it.close(), if it has one. False with an error set.
bool close_iterator(PyObject* it) {
    PyObject* close = PyObject_GetAttr(it, g_str_close);
    if (close == nullptr) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return false;
        }
        PyErr_Clear();
        return true;
    }
    PyObject* r = PyObject_CallNoArgs(close);
    Py_DECREF(close);
    Py_XDECREF(r);
    return r != nullptr;
}

// throw() into the iterator a yield-from is suspended in, by the rules of
// CPython's generators: GeneratorExit closes it and is raised here; another
// exception goes to its throw() (raised here when it has none).
PySendResult throw_into(PyObject* it, PyObject* typ, PyObject* val, PyObject* tb,
                        PyObject** out) {
    *out = nullptr;
    if (PyErr_GivenExceptionMatches(typ, PyExc_GeneratorExit)) {
        return close_iterator(it) ? raise_thrown(typ, val, tb) : PYGEN_ERROR;
    }
    PyObject* thrower = PyObject_GetAttr(it, g_str_throw);
    if (thrower == nullptr) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return PYGEN_ERROR;
        }
        PyErr_Clear();
        return raise_thrown(typ, val, tb);
    }
    PyObject* args[3] = {typ, val, tb};
    const size_t n = tb != nullptr ? 3 : val != nullptr ? 2 : 1;
    PyObject* r = PyObject_Vectorcall(thrower, args, n, nullptr);
    Py_DECREF(thrower);
    if (r != nullptr) {
        *out = r;
        return PYGEN_NEXT;
    }
    if (!PyErr_ExceptionMatches(PyExc_StopIteration)) {
        return PYGEN_ERROR;
    }
    PyObject* stop = fetch_exception();
    *out = PyObject_GetAttrString(stop, "value");
    Py_DECREF(stop);
    return *out != nullptr ? PYGEN_RETURN : PYGEN_ERROR;
}

PySendResult throw_value(AsyncCallObject* self, PyObject* typ, PyObject* val, PyObject* tb,
                         PyObject** out) {
    *out = nullptr;
    if (!enter_running(self)) {
        return PYGEN_ERROR;
    }
    PySendResult status;
    switch (self->state) {
        case kAttempt:
            status = attempt_answered(self, throw_into(self->iter, typ, val, tb, out), out);
            break;
        case kDelegated:
            status = delegated(self, throw_into(self->iter, typ, val, tb, out));
            break;
        default:  // not started (it never will be) or finished: raised here
            self->state = kDone;
            clear_call(self);
            status = raise_thrown(typ, val, tb);
            break;
    }
    leave_running(self);
    return status;
}

// close(): GeneratorExit into a suspended call; nothing to do otherwise (a
// call never sent to has admitted nothing). Returns false with an error set.
bool close_call(AsyncCallObject* self) {
    if (self->state == kNew || self->state == kDone) {
        if (!enter_running(self)) {
            return false;
        }
        self->state = kDone;
        clear_call(self);
        leave_running(self);
        return true;
    }
    PyObject* out = nullptr;
    const PySendResult status = throw_value(self, PyExc_GeneratorExit, nullptr, nullptr, &out);
    if (status != PYGEN_ERROR) {
        Py_XDECREF(out);
        if (status == PYGEN_NEXT) {
            PyErr_SetString(PyExc_RuntimeError, "coroutine ignored GeneratorExit");
            return false;
        }
        return true;
    }
    if (PyErr_ExceptionMatches(PyExc_GeneratorExit) || PyErr_ExceptionMatches(PyExc_StopIteration)) {
        PyErr_Clear();
        return true;
    }
    return false;
}

// A call dropped or collected while suspended is closed, as a coroutine is;
// what that raises is reported as unraisable (with `context`), and the
// exception being handled meanwhile is kept.
void close_abandoned(AsyncCallObject* self, PyObject* context) {
    if (self->state != kAttempt && self->state != kDelegated) {
        return;
    }
    PyObject* pending = fetch_exception();
    if (!close_call(self)) {
        PyErr_WriteUnraisable(context);
    }
    if (pending != nullptr) {
        restore_exception(pending);
    }
}

// ------------------------------------------------------ the Python faces --

// StopIteration(value) raised (steals value), as a generator's return raises it.
void raise_stop_iteration(PyObject* value) {
    if (PyTuple_Check(value) || PyExceptionInstance_Check(value)) {
        PyObject* stop = call_one(PyExc_StopIteration, value);  // not unpacked, not raised
        Py_DECREF(value);
        if (stop != nullptr) {
            PyErr_SetObject(PyExc_StopIteration, stop);
            Py_DECREF(stop);
        }
        return;
    }
    PyErr_SetObject(PyExc_StopIteration, value);
    Py_DECREF(value);
}

// A send()/throw() method's result: the value yielded, or StopIteration.
PyObject* as_method_result(PySendResult status, PyObject* out) {
    if (status == PYGEN_RETURN) {
        raise_stop_iteration(out);
        return nullptr;
    }
    return out;  // yielded, or null with the error set
}

PySendResult async_call_am_send(PyObject* self, PyObject* value, PyObject** out) {
    return send_value(as_call(self), value, out);
}

PyObject* async_call_iternext(PyObject* self) {
    PyObject* out = nullptr;
    const PySendResult status = send_value(as_call(self), Py_None, &out);
    if (status == PYGEN_RETURN) {
        if (out == Py_None) {
            Py_DECREF(out);
            return nullptr;  // exhausted with no value: StopIteration(None)
        }
        raise_stop_iteration(out);
        return nullptr;
    }
    return out;
}

PyObject* async_call_await(PyObject* self) { return Py_NewRef(self); }

PyObject* async_call_send(PyObject* self, PyObject* value) {
    PyObject* out = nullptr;
    const PySendResult status = send_value(as_call(self), value, &out);
    return as_method_result(status, out);
}

PyObject* async_call_throw(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 3) {
        PyErr_Format(PyExc_TypeError, "throw expected between 1 and 3 arguments, got %zd", nargs);
        return nullptr;
    }
    PyObject* out = nullptr;
    const PySendResult status =
        throw_value(as_call(self), args[0], nargs > 1 ? args[1] : nullptr,
                    nargs > 2 ? args[2] : nullptr, &out);
    return as_method_result(status, out);
}

PyObject* async_call_close(PyObject* self, PyObject*) {
    if (!close_call(as_call(self))) {
        return nullptr;
    }
    Py_RETURN_NONE;
}

void async_call_finalize(PyObject* self) {
    as_call(self)->finalized = 1;
    close_abandoned(as_call(self), self);
}

// Its references but the call's (fn, its arguments and keyword names:
// clear_call() drops them), which are visited besides.
using AsyncCallRefs =
    References<AsyncCallObject, &AsyncCallObject::iter, &AsyncCallObject::owner,
               &AsyncCallObject::clock, &AsyncCallObject::scope, &AsyncCallObject::deadline_token>;

int async_call_traverse(PyObject* self, visitproc visit, void* arg) {
    if (const int r = AsyncCallRefs::traverse(self, visit, arg)) {
        return r;
    }
    AsyncCallObject* c = as_call(self);
    Py_VISIT(c->kwnames);
    for (Py_ssize_t i = 0; i < Py_SIZE(self); ++i) {
        Py_VISIT(c->call[i]);
    }
    return 0;
}

// Drops every reference the call holds (tp_clear, and dealloc's, inlined there).
inline void clear_references(AsyncCallObject* c) {
    c->state = kDone;
    clear_call(c);
    AsyncCallRefs::clear(reinterpret_cast<PyObject*>(c));
}

int async_call_clear(PyObject* self) {
    clear_references(as_call(self));
    return 0;
}

void async_call_dealloc(PyObject* self) {
    PyObject_GC_UnTrack(self);
    AsyncCallObject* c = as_call(self);
    // Dropped while suspended: give back what the attempt holds. Nothing can
    // reach self any more (untracked, no references), so it is not revived;
    // an error is reported with the owner, not self (whose repr would revive it).
    close_abandoned(c, c->owner);
    clear_references(c);
    release(c);
}

PyObject* async_call_repr(PyObject* self) {
    AsyncCallObject* c = as_call(self);
    PyObject* fn = c->call[0];
    if (fn == nullptr) {
        return PyUnicode_FromFormat("<AsyncCall object at %p>", self);
    }
    return PyUnicode_FromFormat("<AsyncCall %R at %p>", fn, self);
}

PyMethodDef async_call_methods[] = {
    {"send", async_call_send, METH_O,
     "send(self, value, /)\n--\n\n"
     "Sends value into the call: the next value it yields, or StopIteration\n"
     "with its result (a coroutine's send())."},
    {"throw", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(async_call_throw)),
     METH_FASTCALL,
     "throw(self, typ, val=None, tb=None, /)\n--\n\n"
     "Raises an exception where the call is suspended (a coroutine's throw())."},
    {"close", async_call_close, METH_NOARGS,
     "close(self, /)\n--\n\n"
     "Raises GeneratorExit where the call is suspended, giving back what its\n"
     "attempt holds; a call never awaited admitted nothing and is just dropped."},
    {nullptr, nullptr, 0, nullptr}};

PyType_Slot async_call_slots[] = {
    {Py_tp_doc, const_cast<char*>(
                    "The awaitable of Policy.execute_async() and CircuitBreaker.call_async():\n"
                    "a coroutine whose success path runs natively.")},
    {Py_tp_dealloc, reinterpret_cast<void*>(async_call_dealloc)},
    {Py_tp_finalize, reinterpret_cast<void*>(async_call_finalize)},
    {Py_tp_traverse, reinterpret_cast<void*>(async_call_traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(async_call_clear)},
    {Py_tp_iternext, reinterpret_cast<void*>(async_call_iternext)},
    {Py_tp_repr, reinterpret_cast<void*>(async_call_repr)},
    {Py_tp_methods, async_call_methods},
    {Py_am_await, reinterpret_cast<void*>(async_call_await)},
    {Py_am_send, reinterpret_cast<void*>(async_call_am_send)},
    {0, nullptr}};

PyType_Spec async_call_spec = {"virtrigaud_resilience._core.AsyncCall",
                               static_cast<int>(offsetof(AsyncCallObject, call)),
                               static_cast<int>(sizeof(PyObject*)),
                               Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, async_call_slots};

// --------------------------------------------------- CircuitBreaker.call_async --

PyObject* breaker_call_async(PyObject* self, PyObject* const* args, Py_ssize_t nargsf,
                             PyObject* kwnames) {
    auto* b = fn_method_target<PyCircuitBreaker>(self, nargsf, "CircuitBreaker",
                                                 "CircuitBreaker.call_async()");
    if (b == nullptr) {
        return nullptr;
    }
    const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    return new_async_call(kOwnerBreaker, self, b, args[0], args + 1, nargs - 1, kwnames);
}

PyMethodDef breaker_call_async_def = {
    "call_async",
    reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(breaker_call_async)),
    METH_FASTCALL | METH_KEYWORDS,
    "call_async(self, fn, /, *args, **kwargs)\n--\n\n"
    "Awaits fn(*args, **kwargs) through the breaker (await the awaitable\n"
    "returned). Raises the open breaker's error without calling fn while\n"
    "open. A call cut off by a deadline is recorded as a Timeout (a failure);\n"
    "cancelling the awaiting task from outside records nothing and frees its\n"
    "half-open slot."};

void install_async_helpers(nb::handle holding, nb::handle awaited) {
    if (!PyCallable_Check(holding.ptr()) || !PyCallable_Check(awaited.ptr())) {
        throw nb::type_error("_install_async_helpers() takes two callables");
    }
    PyObject* old_holding = g_holding;
    PyObject* old_awaited = g_awaited;
    g_holding = Py_NewRef(holding.ptr());
    g_awaited = Py_NewRef(awaited.ptr());
    Py_XDECREF(old_holding);
    Py_XDECREF(old_awaited);
}

// --------------------------------------------------------- call_until --

// _call_until(clock, deadline, what, fn, args, kwargs): the awaitable of
// timeouts.call_until (documented there).
PyObject* call_until(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError,
                     "call_until() takes 6 arguments (clock, deadline, what, fn, args, kwargs), "
                     "got %zd", nargs);
        return nullptr;
    }
    if (!dl::installed()) {
        return nullptr;
    }
    PyObject* const clock = args[0];
    PyObject* const deadline = args[1];
    PyObject* const fn_args = args[4];
    PyObject* const fn_kwargs = args[5];
    if (!PyTuple_Check(fn_args) || !PyDict_Check(fn_kwargs)) {
        PyErr_SetString(PyExc_TypeError, "call_until() args must be a tuple and kwargs a dict");
        return nullptr;
    }
    double when = 0;
    if (deadline != Py_None) {
        when = PyFloat_AsDouble(deadline);
        if (when == -1 && PyErr_Occurred()) {
            return nullptr;
        }
    }
    // fn's arguments as a vectorcall passes them: positional, then keyword values.
    const Py_ssize_t npos = PyTuple_Size(fn_args);
    const Py_ssize_t nkw = PyDict_Size(fn_kwargs);
    std::vector<PyObject*> values(static_cast<size_t>(npos + nkw));
    for (Py_ssize_t i = 0; i < npos; ++i) {
        values[static_cast<size_t>(i)] = PyTuple_GetItem(fn_args, i);
    }
    PyObject* kwnames = nkw > 0 ? PyTuple_New(nkw) : nullptr;
    if (nkw > 0 && kwnames == nullptr) {
        return nullptr;
    }
    Py_ssize_t pos = 0, i = 0;
    PyObject *key, *value;
    while (PyDict_Next(fn_kwargs, &pos, &key, &value)) {
        if (!PyUnicode_Check(key)) {
            Py_DECREF(kwnames);
            PyErr_SetString(PyExc_TypeError, "call_until() keywords must be strings");
            return nullptr;
        }
        PyTuple_SetItem(kwnames, i, Py_NewRef(key));
        values[static_cast<size_t>(npos + i)] = value;
        ++i;
    }
    PyObject* call = new_async_call(kPlain, args[2], nullptr, args[3], values.data(), npos,
                                    kwnames);
    Py_XDECREF(kwnames);
    if (call != nullptr && deadline != Py_None) {
        as_call(call)->clock = Py_NewRef(clock);
        as_call(call)->deadline = when;
    }
    return call;
}

// _deadline_for(clock, timeout): timeouts.deadline_for.
PyObject* deadline_for(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "deadline_for() takes 2 arguments (clock, timeout), got %zd",
                     nargs);
        return nullptr;
    }
    if (!dl::installed()) {
        return nullptr;
    }
    const bool has_timeout = args[1] != Py_None;
    const double timeout = has_timeout ? PyFloat_AsDouble(args[1]) : 0;
    if (timeout == -1 && PyErr_Occurred()) {
        return nullptr;
    }
    PyObject* outer = dl::context_get(dl::g_deadline_var);
    if (outer == nullptr) {
        return nullptr;
    }
    PyObject* result = deadline_on(outer, args[0], has_timeout, timeout);
    Py_DECREF(outer);
    return result;
}

PyMethodDef deadline_for_def = {
    "_deadline_for", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(deadline_for)),
    METH_FASTCALL,
    "_deadline_for(clock, timeout, /)\n--\n\n"
    "The absolute deadline (seconds on clock) for a call starting now: now +\n"
    "timeout, tightened by any enclosing deadline on the same clock (timeout\n"
    "None: that enclosing deadline, or None): timeouts.deadline_for."};

// _policy_attempt_deadline(policy, clock, timeout, what): see PyPolicy::attempt_clock.
PyObject* policy_attempt_deadline(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError,
                     "_policy_attempt_deadline() takes 4 arguments (policy, clock, timeout, "
                     "what), got %zd", nargs);
        return nullptr;
    }
    if (!nb::isinstance<PyPolicy>(args[0]) || !nb::inst_ready(args[0])) {
        PyErr_SetString(PyExc_TypeError, "_policy_attempt_deadline() policy must be a Policy");
        return nullptr;
    }
    const double timeout = PyFloat_AsDouble(args[2]);
    if (timeout == -1 && PyErr_Occurred()) {
        return nullptr;
    }
    if (!(timeout >= 0) || !PyUnicode_Check(args[3])) {
        PyErr_Format(PyExc_ValueError,
                     "_policy_attempt_deadline() needs a timeout >= 0 and a str what, got %R, %R",
                     args[2], args[3]);
        return nullptr;
    }
    auto* p = nb::inst_ptr<PyPolicy>(args[0]);
    p->attempt_clock = nb::borrow(args[1]);
    p->attempt_what = nb::borrow(args[3]);
    p->attempt_timeout = timeout;
    Py_RETURN_NONE;
}

PyMethodDef policy_attempt_deadline_def = {
    "_policy_attempt_deadline",
    reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(policy_attempt_deadline)),
    METH_FASTCALL,
    "_policy_attempt_deadline(policy, clock, timeout, what, /)\n--\n\n"
    "Set once by a Policy with a per-attempt timeout and no overall one: its\n"
    "execute_async() awaitable arms the first attempt's deadline (timeout\n"
    "seconds on clock, tightened by an enclosing one) itself; `what` names the\n"
    "attempt in the deadline's error."};

PyMethodDef call_until_def = {
    "_call_until", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(call_until)),
    METH_FASTCALL,
    "_call_until(clock, deadline, what, fn, args, kwargs, /)\n--\n\n"
    "Awaits fn(*args, **kwargs), cut off at deadline (seconds on clock; None: no\n"
    "limit): timeouts.call_until."};

}  // namespace

PyObject* policy_execute_async(PyObject* self, PyObject* const* args, Py_ssize_t nargsf,
                               PyObject* kwnames) {
    auto* p = fn_method_target<PyPolicy>(self, nargsf, "Policy", "Policy.execute_async()");
    if (p == nullptr) {
        return nullptr;
    }
    const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    return new_async_call(kOwnerPolicy, self, p, args[0], args + 1, nargs - 1, kwnames);
}

void bind_awaitable(nb::module_& m) {
    g_str_resume_async = interned("_resume_async");
    g_str_attempt_raised_async = interned("_attempt_raised_async");
    g_str_throw = interned("throw");
    g_str_close = interned("close");
    nb::object type = type_from_spec(m, &async_call_spec);
    g_async_call_type = type.inc_ref().ptr();
    m.attr("AsyncCall") = type;
    // Not a method of _core.CircuitBreaker (the drop-ins subclass that and
    // define call_async their own way): breaker.py's CircuitBreaker takes it.
    PyObject* call_async = PyDescr_NewMethod(
        reinterpret_cast<PyTypeObject*>(nb::type<PyCircuitBreaker>().ptr()), &breaker_call_async_def);
    if (call_async == nullptr) {
        throw nb::python_error();
    }
    m.attr("_breaker_call_async") = nb::steal(call_async);
    dl::bind_deadlines(m);
    for (PyMethodDef* def : {&call_until_def, &deadline_for_def, &policy_attempt_deadline_def}) {
        PyObject* fn = PyCFunction_NewEx(def, nullptr, m.attr("__name__").ptr());
        if (fn == nullptr) {
            throw nb::python_error();
        }
        m.attr(def->ml_name) = nb::steal(fn);
    }
    m.def("_install_async_helpers", &install_async_helpers, "holding"_a, "awaited"_a,
          "Installed once by the package: _admission.holding (an attempt an adapter\n"
          "may ask about) and _admission.awaited (`await` of what has no __await__).");
}

}  // namespace virtrigaud_bind
