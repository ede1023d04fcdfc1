// virtrigaud_resilience._core: thin nanobind bindings over the header-only core.
//
// Constructors and cold methods are ordinary nanobind bindings. The hot
// methods (TokenBucket.try_acquire, CircuitBreaker.call) are raw
// METH_FASTCALL | METH_KEYWORDS functions installed as method descriptors:
// they skip nanobind's overload dispatch and forward the user's arguments
// with PyObject_Vectorcall, so a guarded call costs one extra C call rather
// than a tuple and a dict (measured: 34 ns against 106 ns for nb::args).
//
// Validation with field-naming messages happens in the Python layer; this
// layer clamps whatever it receives so no input can cause undefined
// behaviour, and validates the arguments of the raw hot methods itself.

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>

#if PY_VERSION_HEX < 0x030C0000
#include <structmember.h>  // T_PYSSIZET, READONLY (Py_T_PYSSIZET from 3.12)
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "virtrigaud/atomic_pair.hpp"
#include "virtrigaud/backoff.hpp"
#include "virtrigaud/bulkhead.hpp"
#include "virtrigaud/circuit_breaker.hpp"
#include "virtrigaud/clock.hpp"
#include "virtrigaud/token_bucket.hpp"

#include "contract.hpp"
#include "held_attempts.hpp"

namespace nb = nanobind;
using namespace nb::literals;
namespace vr = virtrigaud;
using namespace virtrigaud_contract;  // the codes shared with Python (contract.hpp)

namespace {

constexpr double kNsPerSecond = 1e9;

// ---------------------------------------------------------------- errors --

// The raised exception, normalised, as a new reference; clears the indicator.
PyObject* fetch_exception() {
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != nullptr) {
        PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

// Raises `exc` again (steals the reference).
void restore_exception(PyObject* exc) {
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(Py_NewRef(reinterpret_cast<PyObject*>(Py_TYPE(exc))), exc,
                  PyException_GetTraceback(exc));
#endif
}

// The stable ABI (abi3 wheels) hides PyTypeObject's fields and a few
// conveniences; these stand in for them in every build.

// The short name of value's type, as a new reference.
PyObject* type_name_of(PyObject* value) {
#if PY_VERSION_HEX >= 0x030B0000
    return PyType_GetName(Py_TYPE(value));
#else
    return PyUnicode_FromString(Py_TYPE(value)->tp_name);
#endif
}

// types.MethodType, set at import (PyMethod_Type is not in the stable ABI).
PyObject* g_method_type = nullptr;

// forward_call() for a bound method (a Python method object): its call puts
// its self in args[-1] when allowed to, or copies the arguments itself. The
// slot before args is not ours to offer (see forward_call), so the arguments
// are copied behind a spare slot of our own: on the stack up to kInlineArgs,
// on the heap beyond. Out of line: the other callees never pay its frame.
VIRTRIGAUD_NOINLINE PyObject* forward_call_with_slot(PyObject* fn, PyObject* const* args,
                                                     size_t nargsf, PyObject* kwnames) {
    constexpr size_t kInlineArgs = 8;
    const size_t n = static_cast<size_t>(PyVectorcall_NARGS(nargsf)) +
                     (kwnames != nullptr ? static_cast<size_t>(PyTuple_Size(kwnames)) : 0);
    if (n == 0) {
        return PyObject_Vectorcall(fn, args, nargsf, kwnames);  // nothing to copy
    }
    PyObject* inline_args[kInlineArgs + 1];
    std::unique_ptr<PyObject*[]> heap;
    PyObject** copy = inline_args;
    if (n > kInlineArgs) {
        heap.reset(new (std::nothrow) PyObject*[n + 1]);
        if (heap == nullptr) {
            return PyErr_NoMemory();
        }
        copy = heap.get();
    }
    copy[0] = nullptr;  // the spare slot
    std::copy(args, args + n, copy + 1);
    return PyObject_Vectorcall(fn, copy + 1, nargsf | PY_VECTORCALL_ARGUMENTS_OFFSET, kwnames);
}

// fn(*args, **kwargs) with the caller's arguments (args/nargsf/kwnames as
// fn is to get them). PY_VECTORCALL_ARGUMENTS_OFFSET lets the callee write
// args[-1] for the length of the call (a bound method puts its self there);
// where the caller did not grant it, the slot before args is someone else's
// (for `breaker.call(*t)` it is an item of the tuple t, which another thread
// may be unpacking), so it is never offered. Only a bound method gains from
// a spare slot (it would copy the arguments itself otherwise): it gets one
// of ours (forward_call_with_slot). Every other callee gets the caller's
// array as it is, without the flag: nothing is copied, nothing written.
inline PyObject* forward_call(PyObject* fn, PyObject* const* args, size_t nargsf,
                              PyObject* kwnames) {
    if ((nargsf & PY_VECTORCALL_ARGUMENTS_OFFSET) != 0 ||
        reinterpret_cast<PyObject*>(Py_TYPE(fn)) != g_method_type) {
        return PyObject_Vectorcall(fn, args, nargsf, kwnames);
    }
    return forward_call_with_slot(fn, args, nargsf, kwnames);
}

// fn(arg), through vectorcall.
PyObject* call_one(PyObject* fn, PyObject* arg) {
    PyObject* args[2] = {nullptr, arg};
    return PyObject_Vectorcall(fn, args + 1, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, nullptr);
}

// After a hook (Python code called from here) raised: an Exception is
// reported as unraisable and swallowed, so a broken listener never breaks a
// call; a BaseException that is not an Exception (KeyboardInterrupt,
// SystemExit) stays set for the caller to propagate, as Python code would.
// Returns false iff one stays set.
bool absorb_hook_error(PyObject* hook) {
    if (PyErr_ExceptionMatches(PyExc_Exception)) {
        PyErr_WriteUnraisable(hook);
        return true;
    }
    return false;
}

// The first BaseException a hook let through during a cleanup that must run
// to its end (give back every slot, record every outcome) before raising it.
struct HookError {
    PyObject* exc = nullptr;

    // Takes the raised exception; keeps the first of several.
    void take() {
        PyObject* e = fetch_exception();
        if (exc == nullptr) {
            exc = e;
        } else {
            Py_XDECREF(e);
        }
    }
    // Raises it, chained to `context` (stolen; may be null) as Python's
    // `raise` inside an except block would; returns whether there was one.
    bool raise(PyObject* context = nullptr) {
        if (exc == nullptr) {
            return false;
        }
        if (context != nullptr) {
            PyException_SetContext(exc, context);
        }
        restore_exception(exc);
        exc = nullptr;
        return true;
    }
};

// The type of coroutine objects (types.CoroutineType), set at import.
PyObject* g_coroutine_type = nullptr;

bool is_coroutine(PyObject* value) {
    return reinterpret_cast<PyObject*>(Py_TYPE(value)) == g_coroutine_type;
}

// types.GeneratorType, set at import (PyGen_Check is not in the stable ABI).
PyObject* g_generator_type = nullptr;

bool is_generator(PyObject* value) {
    return reinterpret_cast<PyObject*>(Py_TYPE(value)) == g_generator_type;
}

// A sync entry point got a coroutine back: the function is async. Closes the
// coroutine (its body never ran) and raises a TypeError that names the
// function and the async method to use. Steals `coro`; returns nullptr.
PyObject* refuse_coroutine(PyObject* coro, const char* entry, const char* instead) {
    PyObject* name = PyObject_GetAttrString(coro, "__qualname__");
    PyErr_Clear();
    PyObject* closed = PyObject_CallMethod(coro, "close", nullptr);
    Py_XDECREF(closed);
    PyErr_Clear();
    Py_DECREF(coro);
    if (name != nullptr) {
        PyErr_Format(PyExc_TypeError,
                     "%s cannot run async function %R: it returned a coroutine; use %s", entry,
                     name, instead);
        Py_DECREF(name);
    } else {
        PyErr_Format(PyExc_TypeError, "%s cannot run an async function; use %s", entry, instead);
    }
    return nullptr;
}

// Reads a Python int (not bool) into `out`, saturating at int64's range.
// Returns false with TypeError set for any other type.
bool int_arg(PyObject* value, const char* owner, const char* field, int64_t& out) {
    if (!PyLong_Check(value) || PyBool_Check(value)) {
        PyObject* type_name = type_name_of(value);
        if (type_name != nullptr) {
            PyErr_Format(PyExc_TypeError, "%s %s must be an int, got %U %R", owner, field,
                         type_name, value);
            Py_DECREF(type_name);
        }
        return false;
    }
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow != 0) {
        out = overflow > 0 ? std::numeric_limits<int64_t>::max()
                           : std::numeric_limits<int64_t>::min();
        return true;
    }
    if (v == -1 && PyErr_Occurred()) {
        return false;
    }
    out = v;
    return true;
}

// Finds the single optional argument `name` of a fastcall method that takes
// at most one. Returns false with TypeError set on a bad call.
bool one_optional_arg(const char* method, const char* name, PyObject* const* args,
                      Py_ssize_t nargs, PyObject* kwnames, PyObject*& out) {
    const Py_ssize_t nkw = kwnames != nullptr ? PyTuple_Size(kwnames) : 0;
    if (nargs + nkw > 1) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most 1 argument (%zd given)", method,
                     nargs + nkw);
        return false;
    }
    out = nullptr;
    if (nargs == 1) {
        out = args[0];
    } else if (nkw == 1) {
        PyObject* key = PyTuple_GetItem(kwnames, 0);
        if (PyUnicode_CompareWithASCIIString(key, name) != 0) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument %R", method,
                         key);
            return false;
        }
        out = args[0];
    }
    return true;
}

// Every descriptor add_fastcall_method() made (strong references: classes
// keep them alive anyway), so specialise() can tell ours from an override.
std::vector<PyObject*> g_fast_descriptors;

// Installs a raw fastcall function as a method of a nanobind class.
void add_fastcall_method(nb::handle cls, PyMethodDef* def) {
    PyObject* descr = PyDescr_NewMethod(reinterpret_cast<PyTypeObject*>(cls.ptr()), def);
    if (descr == nullptr || PyObject_SetAttrString(cls.ptr(), def->ml_name, descr) != 0) {
        Py_XDECREF(descr);
        throw nb::python_error();
    }
    g_fast_descriptors.push_back(descr);
}

// True iff `cls.<name>` resolves to one of our native hot methods, i.e. no
// class between it and the native base defines its own.
bool resolves_to_native(nb::handle cls, const char* name) {
    PyObject* attr = PyObject_GetAttrString(cls.ptr(), name);
    if (attr == nullptr) {
        PyErr_Clear();
        return false;
    }
    const bool ours = std::find(g_fast_descriptors.begin(), g_fast_descriptors.end(), attr) !=
                      g_fast_descriptors.end();
    Py_DECREF(attr);
    return ours;
}

// Installs `def` on a subclass unless the subclass (or a class between it
// and the native base) overrides it.
void specialise_method(nb::handle cls, PyMethodDef* def) {
    if (resolves_to_native(cls, def->ml_name)) {
        add_fastcall_method(cls, def);
    }
}

template <typename T>
T* ready_instance(PyObject* self, const char* type_name) {
    if (!nb::inst_ready(self)) {
        PyErr_Format(PyExc_RuntimeError,
                     "%s instance is not initialised (did a subclass skip super().__init__()?)",
                     type_name);
        return nullptr;
    }
    return nb::inst_ptr<T>(self);
}

// ----------------------------------------------------------------- hooks --

// A Python callable held by the module, called by any thread and replaced
// (or removed) by another at any time. A caller takes its own reference with
// get(), so a hook replaced meanwhile stays alive until that call is done.
// The window between loading the pointer and taking the reference is
// covered by `readers_`: set() swaps the pointer, then waits until no reader
// is inside that window before dropping the old reference (sequentially
// consistent on both sides: a reader either loaded the new pointer, or
// counted itself before set() looked). Readers hold nothing while they
// call, and the window is a load and an increment: set() never waits long.
// Under the GIL nobody is ever inside it when set() runs.
class Hook {
public:
    /// Whether a hook is installed (a hint: it may change at once).
    bool installed() const noexcept { return fn_.load(std::memory_order_relaxed) != nullptr; }

    /// The hook as a new reference, or nullptr if none is installed.
    PyObject* get() noexcept {
        readers_.fetch_add(1, std::memory_order_seq_cst);
        PyObject* fn = fn_.load(std::memory_order_seq_cst);
        Py_XINCREF(fn);
        readers_.fetch_sub(1, std::memory_order_seq_cst);
        return fn;
    }

    /// Installs `fn` (a new reference, stolen; nullptr removes the hook).
    void set(PyObject* fn) noexcept {
        PyObject* old = fn_.exchange(fn, std::memory_order_seq_cst);
        if (old == nullptr) {
            return;
        }
        while (readers_.load(std::memory_order_seq_cst) != 0) {
            std::this_thread::yield();
        }
        Py_DECREF(old);  // may run Python code: after the swap, never under a reader
    }

private:
    std::atomic<PyObject*> fn_{nullptr};
    std::atomic<int64_t> readers_{0};
};

// Python callables installed once by the package at import:
//   reject(breaker) -> exception instance   (an open breaker's error)
//   on_transition(breaker, old: int, new: int) -> None
Hook g_reject;
Hook g_on_transition;

// Both None uninstalls them (at interpreter exit, so nothing outlives it).
void install_hooks(nb::handle reject, nb::handle on_transition) {
    if (reject.is_none() && on_transition.is_none()) {
        g_reject.set(nullptr);
        g_on_transition.set(nullptr);
        return;
    }
    if (!PyCallable_Check(reject.ptr()) || !PyCallable_Check(on_transition.ptr())) {
        throw nb::type_error("_install_hooks() takes two callables (or two Nones)");
    }
    g_reject.set(Py_NewRef(reject.ptr()));
    g_on_transition.set(Py_NewRef(on_transition.ptr()));
}

// Called with (bucket, n) when a bucket refuses n tokens; installed only while
// someone listens (events.on_rate_limited), so a refusal costs nothing extra
// otherwise.
Hook g_on_rate_limited;

void set_rate_limited_hook(nb::handle hook) {
    if (hook.is_none()) {
        g_on_rate_limited.set(nullptr);
        return;
    }
    if (!PyCallable_Check(hook.ptr())) {
        throw nb::type_error("_set_rate_limited_hook() takes a callable or None");
    }
    g_on_rate_limited.set(Py_NewRef(hook.ptr()));
}

// Tells Python that `bucket` refused n tokens. Call it with no Python error
// set (the hook is Python code). Returns false iff the hook let a
// KeyboardInterrupt or SystemExit through (left set); see absorb_hook_error.
bool notify_rate_limited(PyObject* bucket, int64_t n) {
    if (!g_on_rate_limited.installed()) {
        return true;
    }
    PyObject* hook = g_on_rate_limited.get();  // ours: the hook may uninstall itself
    if (hook == nullptr) {
        return true;
    }
    PyObject* r = PyObject_CallFunction(hook, "OL", bucket, static_cast<long long>(n));
    const bool ok = r != nullptr || absorb_hook_error(hook);
    Py_XDECREF(r);
    Py_DECREF(hook);
    return ok;
}

bool notify(PyObject* breaker, const vr::Transition& t);

// ------------------------------------------------------------ TokenBucket --

struct PyTokenBucket {
    vr::TokenBucket core;
    // Set by an owner for whom a refusal is an error, not a "no" (a leased
    // bucket denied by its fallback): try_acquire then returns what
    // self._refused(n) returns, or raises what it raises. Read only after
    // the core refused, so an admitted call never looks at it.
    std::atomic<bool> refusal_calls_python{false};
    PyTokenBucket(int64_t interval_ns, int64_t burst, const vr::ManualClock* clock)
        : core(interval_ns, burst, clock) {}
};

PyObject* bucket_try_acquire(PyObject* self, PyObject* const* args, Py_ssize_t nargsf,
                             PyObject* kwnames) {
    auto* b = ready_instance<PyTokenBucket>(self, "TokenBucket");
    if (b == nullptr) {
        return nullptr;
    }
    const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    int64_t n = 1;
    if (nargs != 0 || kwnames != nullptr) {
        PyObject* arg = nullptr;
        if (!one_optional_arg("try_acquire", "n", args, nargs, kwnames, arg)) {
            return nullptr;
        }
        if (arg != nullptr && !int_arg(arg, "TokenBucket", "n", n)) {
            return nullptr;
        }
        if (n < 1) {
            PyErr_Format(PyExc_ValueError, "TokenBucket n must be >= 1, got %R", arg);
            return nullptr;
        }
        if (n > b->core.burst()) {
            PyErr_Format(PyExc_ValueError, "TokenBucket n must be <= burst (%lld), got %R",
                         static_cast<long long>(b->core.burst()), arg);
            return nullptr;
        }
    }
    if (b->core.try_acquire(n)) {
        Py_RETURN_TRUE;
    }
    if (b->refusal_calls_python.load(std::memory_order_relaxed)) {
        return PyObject_CallMethod(self, "_refused", "L", static_cast<long long>(n));
    }
    if (!notify_rate_limited(self, n)) {
        return nullptr;
    }
    Py_RETURN_FALSE;
}

PyMethodDef bucket_try_acquire_def = {
    "try_acquire", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(bucket_try_acquire)),
    METH_FASTCALL | METH_KEYWORDS,
    "try_acquire(self, n=1)\n--\n\n"
    "Takes n tokens (1 <= n <= burst) if the bucket holds them now and returns\n"
    "True; otherwise takes nothing and returns False. Never waits."};

// --------------------------------------------------------- CircuitBreaker --

// The hooks a drop-in sets with _set_hooks(): Hooks in contract.hpp.

struct PyCircuitBreaker {
    vr::CircuitBreaker core;
    std::string name;
    std::string provider_type;
    std::string provider;
    nb::object classify;  // classify(exc) -> 0 success, 1 failure, 2 release
    // Hooks; atomic for free-threaded builds (set rarely, read by every call).
    std::atomic<uint32_t> hooks{0};

    PyCircuitBreaker(std::string name_, std::string provider_type_, std::string provider_,
                     uint32_t threshold, int64_t reset_ns, uint32_t half_open_max,
                     const vr::ManualClock* clock, nb::object classify_, int64_t lease_ns)
        : core(threshold, reset_ns, half_open_max, clock, lease_ns),
          name(std::move(name_)),
          provider_type(std::move(provider_type_)),
          provider(std::move(provider_)),
          classify(std::move(classify_)) {}
};

int state_code(vr::BreakerState s) {
    return s == vr::BreakerState::kHeldOpen ? kStateOpen : static_cast<int>(s);
}

// Tells Python about a state change: the dispatcher logs and runs the
// listeners, swallowing what they raise (as absorb_hook_error does), or the
// breaker's own _transition() (kHookTransition), whose exceptions propagate.
// Returns false iff an exception was left set.
bool notify(PyObject* breaker, const vr::Transition& t) {
    if (!t.changed) {
        return true;
    }
    const int from = state_code(t.from);
    const int to = state_code(t.to);
    if ((nb::inst_ptr<PyCircuitBreaker>(breaker)->hooks.load(std::memory_order_relaxed) &
         kHookTransition) != 0) {
        PyObject* r = PyObject_CallMethod(breaker, "_transition", "ii", from, to);
        Py_XDECREF(r);
        return r != nullptr;
    }
    PyObject* hook = g_on_transition.get();  // ours: the hook may be uninstalled meanwhile
    if (hook == nullptr) {
        return true;
    }
    PyObject* r = PyObject_CallFunction(hook, "Oii", breaker, from, to);
    const bool ok = r != nullptr || absorb_hook_error(hook);
    Py_XDECREF(r);
    Py_DECREF(hook);
    return ok;
}

// Records `outcome` for `ticket` and tells Python about any transition.
// Returns false iff a state listener let a BaseException through (left set).
bool record(PyObject* self, PyCircuitBreaker* b, const vr::Ticket& ticket, int outcome) {
    switch (outcome) {
        case kSuccess:
            return notify(self, b->core.record_success(ticket));
        case kRelease:
            b->core.release(ticket);
            return true;
        default:
            return notify(self, b->core.record_failure(ticket));
    }
}

// Raises the open breaker's error. Always returns nullptr.
PyObject* raise_rejected(PyObject* self) {
    PyObject* reject = g_reject.get();
    if (reject == nullptr) {
        PyErr_SetString(PyExc_RuntimeError, "circuit breaker is open");
        return nullptr;
    }
    PyObject* exc = call_one(reject, self);
    Py_DECREF(reject);
    if (exc != nullptr) {
        PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc)), exc);
        Py_DECREF(exc);
    }
    return nullptr;
}

// Asks the breaker's classifier what `exc` means. A classifier that raises an
// Exception is reported as unraisable and the error counts as a failure; one
// that raises a KeyboardInterrupt or SystemExit returns kRaisedOutcome with
// it set.
int outcome_of(PyCircuitBreaker* b, PyObject* exc) {
    PyObject* r = call_one(b->classify.ptr(), exc);
    long code = r != nullptr ? PyLong_AsLong(r) : -1;
    Py_XDECREF(r);
    if (code < kSuccess || code > kRelease) {
        if (PyErr_Occurred() && !absorb_hook_error(b->classify.ptr())) {
            return kRaisedOutcome;
        }
        code = kFailure;
    }
    return static_cast<int>(code);
}

// Classifies `exc` and records the ticket's outcome; a BaseException from a
// hook lands in `error`. No Python error may be set when this runs.
void record_exception(PyObject* self, PyCircuitBreaker* b, const vr::Ticket& ticket,
                      PyObject* exc, HookError& error) {
    int outcome = outcome_of(b, exc);
    if (outcome == kRaisedOutcome) {
        error.take();
        outcome = kFailure;
    }
    if (!record(self, b, ticket, outcome)) {
        error.take();
    }
}

// The call raised: classify, record, and raise the same exception again (or
// a hook's KeyboardInterrupt / SystemExit, chained to it).
PyObject* record_raised(PyObject* self, PyCircuitBreaker* b, const vr::Ticket& ticket) {
    PyObject* exc = fetch_exception();
    HookError error;
    record_exception(self, b, ticket, exc, error);
    if (!error.raise(exc)) {
        restore_exception(exc);
    }
    return nullptr;
}

// Admits or raises; reports an open -> half-open transition. A listener's
// BaseException gives the slot back and is raised.
bool admit(PyObject* self, PyCircuitBreaker* b, vr::Ticket& ticket) {
    ticket = b->core.acquire();
    if (!ticket.admitted) {
        raise_rejected(self);
        return false;
    }
    if (!notify(self, ticket.transition)) {
        b->core.release(ticket);
        return false;
    }
    return true;
}

// self.<method>(fn, *args, **kwargs) for a hook that takes the call's own
// arguments (args/nargsf/kwnames as the caller passed them to fn).
PyObject* call_hook_with_args(PyObject* self, const char* method, PyObject* fn,
                              PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    const Py_ssize_t nkw = kwnames != nullptr ? PyTuple_Size(kwnames) : 0;
    std::vector<PyObject*> all(static_cast<size_t>(nargs + nkw + 2));
    all[0] = self;
    all[1] = fn;
    std::copy(args, args + nargs + nkw, all.begin() + 2);
    PyObject* name = PyUnicode_FromString(method);
    if (name == nullptr) {
        return nullptr;
    }
    PyObject* r = PyObject_VectorcallMethod(name, all.data(), static_cast<size_t>(nargs + 2),
                                            kwnames);
    Py_DECREF(name);
    return r;
}

// fn raised (set): self._on_error(ticket, exc) records it and returns the
// exception to raise; another one than exc is chained to it, as a `raise`
// in an except block would.
PyObject* hand_error_to_python(PyObject* self, const vr::Ticket& ticket) {
    PyObject* exc = fetch_exception();
    PyObject* raised = PyObject_CallMethod(self, "_on_error", "LO",
                                           static_cast<long long>(ticket.encode()), exc);
    if (raised == nullptr) {
        PyObject* hook_exc = fetch_exception();
        if (hook_exc != exc) {
            PyException_SetContext(hook_exc, Py_NewRef(exc));
        }
        restore_exception(hook_exc);
        Py_DECREF(exc);
        return nullptr;
    }
    if (!PyExceptionInstance_Check(raised)) {
        Py_DECREF(raised);
        restore_exception(exc);
        return nullptr;
    }
    if (raised != exc) {
        PyException_SetContext(raised, exc);  // steals exc
    } else {
        Py_DECREF(exc);
    }
    restore_exception(raised);
    return nullptr;
}

// The guarded call: admit, fn(*args, **kwargs) (args/nargsf/kwnames exactly
// as fn gets them), record. Shared by CircuitBreaker.call and Guarded.
PyObject* guarded_call(PyObject* self, PyCircuitBreaker* b, PyObject* fn, PyObject* const* args,
                       size_t nargsf, PyObject* kwnames) {
    const uint32_t hooks = b->hooks.load(std::memory_order_relaxed);
    if ((hooks & kDelegate) != 0) {
        return call_hook_with_args(self, "_call_python", fn, args, nargsf, kwnames);
    }
    vr::Ticket ticket = b->core.acquire();
    if (!ticket.admitted) {
        if ((hooks & kHookReject) != 0) {
            return call_hook_with_args(self, "_on_reject", fn, args, nargsf, kwnames);
        }
        return raise_rejected(self);
    }
    if (!notify(self, ticket.transition)) {
        b->core.release(ticket);
        return nullptr;
    }
    PyObject* result;
    {
        const virtrigaud_held::Scope held(self, nullptr);  // adapters inside: admitted
        result = forward_call(fn, args, nargsf, kwnames);
    }
    if (result == nullptr) {
        if ((hooks & kHookError) != 0) {
            return hand_error_to_python(self, ticket);
        }
        return record_raised(self, b, ticket);
    }
    if ((hooks & kHookGenerator) != 0 && is_generator(result)) {
        PyObject* r = PyObject_CallMethod(self, "_on_generator", "LO",
                                          static_cast<long long>(ticket.encode()), result);
        Py_DECREF(result);
        if (r == nullptr) {
            b->core.release(ticket);  // nothing will report it
        }
        return r;
    }
    if (is_coroutine(result) && (hooks & kAcceptCoroutine) == 0) {
        b->core.release(ticket);  // nothing ran: no outcome
        return refuse_coroutine(result, "CircuitBreaker.call()",
                                "'await breaker.call_async(fn, ...)'");
    }
    if (!notify(self, b->core.record_success(ticket))) {
        Py_DECREF(result);
        return nullptr;
    }
    return result;
}

// admit() that leaves a rejection as a ticket that is not admitted.
bool admit_quietly_rejected(PyObject* self, PyCircuitBreaker* b, vr::Ticket& ticket) {
    ticket = b->core.acquire();
    if (ticket.admitted && !notify(self, ticket.transition)) {
        b->core.release(ticket);
        return false;
    }
    return true;
}

PyObject* breaker_call(PyObject* self, PyObject* const* args, Py_ssize_t nargsf,
                       PyObject* kwnames) {
    auto* b = ready_instance<PyCircuitBreaker>(self, "CircuitBreaker");
    if (b == nullptr) {
        return nullptr;
    }
    const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "CircuitBreaker.call() missing required argument 'fn'");
        return nullptr;
    }
    // fn's slot, args[0], is the caller's (an item of the tuple of
    // `breaker.call(*t)`): no PY_VECTORCALL_ARGUMENTS_OFFSET over it, so the
    // call copies the arguments behind a slot of its own (forward_call).
    return guarded_call(self, b, args[0], args + 1, static_cast<size_t>(nargs - 1), kwnames);
}

PyMethodDef breaker_call_def = {
    "call", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(breaker_call)),
    METH_FASTCALL | METH_KEYWORDS,
    "call(self, fn, /, *args, **kwargs)\n--\n\n"
    "Calls fn(*args, **kwargs) through the breaker and returns its result.\n"
    "Raises UnavailableError without calling fn while the breaker is open.\n"
    "An exception from fn is recorded (failure, success or nothing, as the\n"
    "breaker's failure predicate says) and re-raised unchanged."};


// ---------------------------------------------------------------- Guarded --
//
// fn bound to a breaker: calling it is breaker.call(fn, ...) in one native
// crossing, with no Python wrapper frame and no *args packing (the
// decorators of the drop-ins return it for plain functions). It binds as a
// method does (a descriptor like a function), and has a __dict__ for
// functools.update_wrapper's __name__, __doc__, __wrapped__.


struct GuardedObject {
    PyObject_HEAD
    PyObject* breaker;
    PyObject* fn;
    PyObject* dict;
    PyObject* weaklist;
    vectorcallfunc vectorcall;
};

PyObject* guarded_vectorcall(PyObject* self, PyObject* const* args, size_t nargsf,
                             PyObject* kwnames) {
    auto* g = reinterpret_cast<GuardedObject*>(self);
    auto* b = ready_instance<PyCircuitBreaker>(g->breaker, "CircuitBreaker");
    if (b == nullptr) {
        return nullptr;
    }
    return guarded_call(g->breaker, b, g->fn, args, nargsf, kwnames);
}

PyObject* guarded_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    PyObject* breaker = nullptr;
    PyObject* fn = nullptr;
    if ((kwargs != nullptr && PyDict_Size(kwargs) != 0) ||
        !PyArg_UnpackTuple(args, "Guarded", 2, 2, &breaker, &fn)) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "Guarded(breaker, fn) takes two positional arguments");
        }
        return nullptr;
    }
    if (!nb::isinstance<PyCircuitBreaker>(breaker)) {
        PyErr_SetString(PyExc_TypeError, "Guarded breaker must be a CircuitBreaker");
        return nullptr;
    }
    if (!PyCallable_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "Guarded fn must be callable");
        return nullptr;
    }
    auto* alloc = reinterpret_cast<allocfunc>(PyType_GetSlot(type, Py_tp_alloc));
    auto* g = reinterpret_cast<GuardedObject*>(alloc(type, 0));
    if (g == nullptr) {
        return nullptr;
    }
    g->breaker = Py_NewRef(breaker);
    g->fn = Py_NewRef(fn);
    g->dict = nullptr;
    g->weaklist = nullptr;
    g->vectorcall = guarded_vectorcall;
    return reinterpret_cast<PyObject*>(g);
}

int guarded_traverse(PyObject* self, visitproc visit, void* arg) {
    auto* g = reinterpret_cast<GuardedObject*>(self);
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(g->breaker);
    Py_VISIT(g->fn);
    Py_VISIT(g->dict);
    return 0;
}

int guarded_clear(PyObject* self) {
    auto* g = reinterpret_cast<GuardedObject*>(self);
    Py_CLEAR(g->breaker);
    Py_CLEAR(g->fn);
    Py_CLEAR(g->dict);
    return 0;
}

void guarded_dealloc(PyObject* self) {
    PyTypeObject* type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (reinterpret_cast<GuardedObject*>(self)->weaklist != nullptr) {
        PyObject_ClearWeakRefs(self);
    }
    guarded_clear(self);
    auto* free_fn = reinterpret_cast<freefunc>(PyType_GetSlot(type, Py_tp_free));
    free_fn(self);
    Py_DECREF(type);
}

// As a function: bound to an instance when looked up through one.
PyObject* guarded_descr_get(PyObject* self, PyObject* obj, PyObject*) {
    if (obj == nullptr || obj == Py_None) {
        return Py_NewRef(self);
    }
    return PyObject_CallFunctionObjArgs(g_method_type, self, obj, nullptr);
}

PyObject* guarded_get_breaker(PyObject* self, void*) {
    return Py_NewRef(reinterpret_cast<GuardedObject*>(self)->breaker);
}

PyObject* guarded_get_fn(PyObject* self, void*) {
    return Py_NewRef(reinterpret_cast<GuardedObject*>(self)->fn);
}

#if PY_VERSION_HEX < 0x030C0000
#include <structmember.h>
#define Py_T_PYSSIZET T_PYSSIZET
#define Py_READONLY READONLY
#endif

// Pickled by reference, as the function it stands for (functools.wraps gave
// it the function's __qualname__ and __module__): pickle looks the name up.
PyObject* guarded_reduce(PyObject* self, PyObject*) {
    return PyObject_GetAttrString(self, "__qualname__");
}

PyMethodDef guarded_methods[] = {
    {"__reduce__", guarded_reduce, METH_NOARGS, "Pickled by its qualified name."},
    {nullptr, nullptr, 0, nullptr}};

PyMemberDef guarded_members[] = {
    {"__vectorcalloffset__", Py_T_PYSSIZET, offsetof(GuardedObject, vectorcall), Py_READONLY,
     nullptr},
    {"__dictoffset__", Py_T_PYSSIZET, offsetof(GuardedObject, dict), Py_READONLY, nullptr},
    {"__weaklistoffset__", Py_T_PYSSIZET, offsetof(GuardedObject, weaklist), Py_READONLY, nullptr},
    {nullptr, 0, 0, 0, nullptr}};

PyGetSetDef guarded_getset[] = {
    {"breaker", guarded_get_breaker, nullptr, "The CircuitBreaker every call goes through.",
     nullptr},
    {"fn", guarded_get_fn, nullptr, "The guarded callable.", nullptr},
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, nullptr, nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyType_Slot guarded_type_slots[] = {
    {Py_tp_new, reinterpret_cast<void*>(guarded_new)},
    {Py_tp_dealloc, reinterpret_cast<void*>(guarded_dealloc)},
    {Py_tp_traverse, reinterpret_cast<void*>(guarded_traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(guarded_clear)},
    {Py_tp_call, reinterpret_cast<void*>(PyVectorcall_Call)},
    {Py_tp_descr_get, reinterpret_cast<void*>(guarded_descr_get)},
    {Py_tp_members, guarded_members},
    {Py_tp_methods, guarded_methods},
    {Py_tp_getset, guarded_getset},
    {Py_tp_doc, const_cast<char*>(
                    "Guarded(breaker, fn): fn whose every call is breaker.call(fn, ...), in one\n"
                    "native call; binds as a method when it is a class attribute.")},
    {0, nullptr}};

PyType_Spec guarded_spec = {
    "virtrigaud_resilience._core.Guarded", sizeof(GuardedObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
        Py_TPFLAGS_METHOD_DESCRIPTOR,
    guarded_type_slots};

int breaker_traverse(PyObject* self, visitproc visit, void* arg) {
#if PY_VERSION_HEX >= 0x03090000
    Py_VISIT(Py_TYPE(self));
#endif
    if (!nb::inst_ready(self)) {
        return 0;
    }
    auto* b = nb::inst_ptr<PyCircuitBreaker>(self);
    Py_VISIT(b->classify.ptr());
    return 0;
}

int breaker_clear(PyObject* self) {
    if (nb::inst_ready(self)) {
        nb::inst_ptr<PyCircuitBreaker>(self)->classify = nb::none();
    }
    return 0;
}

PyType_Slot breaker_slots[] = {{Py_tp_traverse, reinterpret_cast<void*>(breaker_traverse)},
                               {Py_tp_clear, reinterpret_cast<void*>(breaker_clear)},
                               {0, nullptr}};

// A method's self as both the C++ object and the Python instance (for hooks).
using Self = nb::pointer_and_handle<PyCircuitBreaker>;

// A transition as (old, new) state codes, or None: for the quiet methods,
// whose caller (a drop-in) dispatches the change itself, in its own order.
using MaybeTransition = std::optional<std::tuple<int, int>>;

MaybeTransition transition_tuple(const vr::Transition& t) {
    if (!t.changed) {
        return std::nullopt;
    }
    return std::make_tuple(state_code(t.from), state_code(t.to));
}

vr::BreakerState state_from_code(int code) {
    if (code < kStateClosed || code > kStateHeldOpen) {
        throw nb::value_error("breaker state code must be 0 closed, 1 half-open, 2 open or 3 held open");
    }
    return static_cast<vr::BreakerState>(code);
}


// ---------------------------------------------------------------- OneShot --
//
// A flag set once, by whichever thread gets there first: the base of the
// Python objects that give something back exactly once (a Reservation's
// tokens, a Permit's outcome, a Bulkhead slot). Check-then-set in Python
// lets two threads both see "not yet" and refund twice (with the GIL, a
// switch between the test and the store is enough); one atomic exchange
// cannot. A plain C type so that Python subclasses add their __slots__.

struct OneShotObject {
    PyObject_HEAD
    std::atomic<uint8_t> done;  // zeroed by tp_alloc: not yet
};

PyObject* g_one_shot_type = nullptr;

// True for exactly one caller per object.
bool claim(PyObject* self) {
    return reinterpret_cast<OneShotObject*>(self)->done.exchange(1, std::memory_order_acq_rel) ==
           0;
}

PyObject* one_shot_claim(PyObject* self, PyObject*) { return PyBool_FromLong(claim(self)); }

PyObject* one_shot_claimed(PyObject* self, void*) {
    return PyBool_FromLong(
        reinterpret_cast<OneShotObject*>(self)->done.load(std::memory_order_acquire) != 0);
}

void one_shot_dealloc(PyObject* self) {
    PyTypeObject* type = Py_TYPE(self);
    auto* free_fn = reinterpret_cast<freefunc>(PyType_GetSlot(type, Py_tp_free));
    free_fn(self);
    Py_DECREF(type);
}

PyMethodDef one_shot_methods[] = {
    {"_claim", one_shot_claim, METH_NOARGS,
     "_claim(self, /)\n--\n\n"
     "True for the first call on this object (any thread), False for every later one."},
    {nullptr, nullptr, 0, nullptr}};

PyGetSetDef one_shot_getset[] = {
    {"_claimed", one_shot_claimed, nullptr, "Whether _claim() was called.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyType_Slot one_shot_slots[] = {
    {Py_tp_new, reinterpret_cast<void*>(PyType_GenericNew)},
    {Py_tp_dealloc, reinterpret_cast<void*>(one_shot_dealloc)},
    {Py_tp_methods, one_shot_methods},
    {Py_tp_getset, one_shot_getset},
    {Py_tp_doc, const_cast<char*>(
                    "OneShot(): a flag that _claim() sets once, atomically (the base of objects\n"
                    "that give something back exactly once).")},
    {0, nullptr}};

PyType_Spec one_shot_spec = {"virtrigaud_resilience._core.OneShot", sizeof(OneShotObject), 0,
                             Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, one_shot_slots};

// --------------------------------------------------------------- Bulkhead --

// ContextVar access for the slots a thread or task holds (below). The C API
// where the build has it; the stable ABI (abi3 wheels) has no contextvars
// functions, so those builds call the var's methods instead (a method lookup
// more per access).
PyObject* g_context_var_type = nullptr;  // contextvars.ContextVar
PyObject* g_str_get = nullptr;
PyObject* g_str_set = nullptr;

#if defined(Py_LIMITED_API) || defined(VIRTRIGAUD_CONTEXTVAR_BY_METHOD)
#define VIRTRIGAUD_CONTEXTVAR_METHODS 1
#endif

// The var's value in the current context as a new reference, nullptr when
// it is unset or None. Returns false with an error set.
bool context_var_get(PyObject* var, PyObject*& value) {
#ifdef VIRTRIGAUD_CONTEXTVAR_METHODS
    PyObject* args[2] = {var, Py_None};
    value = PyObject_VectorcallMethod(g_str_get, args, 2, nullptr);
    if (value == nullptr) {
        return false;
    }
#else
    if (PyContextVar_Get(var, nullptr, &value) != 0) {
        return false;
    }
    if (value == nullptr) {
        return true;
    }
#endif
    if (value == Py_None) {
        Py_DECREF(value);
        value = nullptr;
    }
    return true;
}

// Sets the var to `value` (nullptr: None) in the current context. Returns
// false with an error set.
bool context_var_set(PyObject* var, PyObject* value) {
    if (value == nullptr) {
        value = Py_None;
    }
#ifdef VIRTRIGAUD_CONTEXTVAR_METHODS
    PyObject* args[2] = {var, value};
    PyObject* token = PyObject_VectorcallMethod(g_str_set, args, 2, nullptr);
#else
    PyObject* token = PyContextVar_Set(var, value);
#endif
    Py_XDECREF(token);
    return token != nullptr;
}

struct PyBulkhead {
    vr::Bulkhead core;
    // The slots the current thread or task holds, latest first (each links
    // to the one below it): what a tokenless exit() gives back. One var per
    // bulkhead, so a context's chain holds this bulkhead's slots only.
    nb::object held_var;
    explicit PyBulkhead(int64_t max_concurrent)
        : core(max_concurrent),
          held_var(nb::steal(PyObject_CallFunction(g_context_var_type, "s",
                                                   "virtrigaud_bulkhead_slots"))) {
        if (!held_var.is_valid()) {
            throw nb::python_error();
        }
    }
};

// Calls a bulkhead's queue method (Python: the waiters live there). Returns
// its result as a bool; false with an error set iff it let a BaseException
// through (see absorb_hook_error).
bool call_queue(PyObject* obj, const char* method, bool& result) {
    PyObject* r = PyObject_CallMethod(obj, method, nullptr);
    result = r == Py_True;
    Py_XDECREF(r);
    return r != nullptr || absorb_hook_error(obj);
}

// Gives a slot back: straight to the longest asyncio waiter if one is queued
// (the slot stays in flight, so no newcomer can take it in between),
// otherwise to the pool, waking the first waiter if one registered
// meanwhile. An exit with nothing in flight raises RuntimeError and changes
// nothing. Returns false with an error set.
bool bulkhead_exit(PyObject* obj, PyBulkhead* b) {
    bool done = false;
    if (b->core.waiters() > 0 && b->core.in_flight() > 0) {
        if (!call_queue(obj, "_hand_off", done)) {
            return false;
        }
        if (done) {
            b->core.hand_over();
            return true;
        }
    }
    switch (b->core.exit()) {
        case vr::Bulkhead::Exit::kUnmatched:
            PyErr_SetString(PyExc_RuntimeError,
                            "Bulkhead.exit() without a matching enter: no call is in flight");
            return false;
        case vr::Bulkhead::Exit::kFreedWaiting:
            return call_queue(obj, "_wake", done);
        case vr::Bulkhead::Exit::kFreed:
            break;
    }
    return true;
}

// ----------------------------------------------------------- BulkheadSlot --
//
// One slot of a bulkhead, taken by enter(), try_enter(), enter_async() or
// `with bulkhead:`: a OneShot (the flag decides which of several exits gives
// it back) that names its bulkhead and the slot its context held before it.
// The context's latest slot is in the bulkhead's ContextVar; a tokenless
// exit() gives back the latest one not given back yet. All of it native:
// `with bulkhead:` is two native calls, with no Python frame or object.

struct BulkheadSlotObject {
    OneShotObject flag;   // first: claim() and OneShot's methods work on it
    PyObject* bulkhead;   // strong; set at creation, never changed
    PyObject* below;      // strong or nullptr; set at creation, never changed
};

PyObject* g_bulkhead_slot_type = nullptr;

BulkheadSlotObject* as_slot(PyObject* obj) { return reinterpret_cast<BulkheadSlotObject*>(obj); }

bool slot_claimed(PyObject* slot) {
    return as_slot(slot)->flag.done.load(std::memory_order_acquire) != 0;
}

int bulkhead_slot_traverse(PyObject* self, visitproc visit, void* arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(as_slot(self)->bulkhead);
    Py_VISIT(as_slot(self)->below);
    return 0;
}

int bulkhead_slot_clear(PyObject* self) {
    Py_CLEAR(as_slot(self)->bulkhead);
    Py_CLEAR(as_slot(self)->below);
    return 0;
}

void bulkhead_slot_dealloc(PyObject* self) {
    PyTypeObject* type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    // A long chain (a context that entered many times and never exited)
    // is unlinked iteratively: recursive deallocation could overflow the
    // C stack. A slot only we reference gives up its `below` to us first.
    PyObject* below = as_slot(self)->below;
    as_slot(self)->below = nullptr;
    while (below != nullptr && Py_TYPE(below) == type && Py_REFCNT(below) == 1) {
        PyObject* next = as_slot(below)->below;
        as_slot(below)->below = nullptr;
        Py_DECREF(below);
        below = next;
    }
    Py_XDECREF(below);
    Py_CLEAR(as_slot(self)->bulkhead);
    PyObject_GC_Del(self);
    Py_DECREF(type);
}

PyObject* bulkhead_slot_get_bulkhead(PyObject* self, void*) {
    return Py_NewRef(as_slot(self)->bulkhead);
}

PyObject* bulkhead_slot_get_below(PyObject* self, void*) {
    PyObject* below = as_slot(self)->below;
    return Py_NewRef(below != nullptr ? below : Py_None);
}

PyObject* bulkhead_slot_get_released(PyObject* self, void*) {
    return PyBool_FromLong(slot_claimed(self));
}

PyObject* bulkhead_slot_repr(PyObject* self) {
    return PyUnicode_FromFormat("BulkheadSlot(released=%s)",
                                slot_claimed(self) ? "True" : "False");
}

PyObject* bulkhead_slot_new(PyTypeObject*, PyObject*, PyObject*) {
    PyErr_SetString(PyExc_TypeError,
                    "BulkheadSlot cannot be created: enter() and enter_async() return them");
    return nullptr;
}

PyGetSetDef bulkhead_slot_getset[] = {
    {"bulkhead", bulkhead_slot_get_bulkhead, nullptr, "The Bulkhead this is a slot of.",
     nullptr},
    {"released", bulkhead_slot_get_released, nullptr, "Whether the slot was given back.",
     nullptr},
    {"_below", bulkhead_slot_get_below, nullptr,
     "The slot its context held before this one (None if none).", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyType_Slot bulkhead_slot_slots[] = {
    {Py_tp_new, reinterpret_cast<void*>(bulkhead_slot_new)},
    {Py_tp_dealloc, reinterpret_cast<void*>(bulkhead_slot_dealloc)},
    {Py_tp_traverse, reinterpret_cast<void*>(bulkhead_slot_traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(bulkhead_slot_clear)},
    {Py_tp_free, reinterpret_cast<void*>(PyObject_GC_Del)},
    {Py_tp_repr, reinterpret_cast<void*>(bulkhead_slot_repr)},
    {Py_tp_getset, bulkhead_slot_getset},
    {Py_tp_doc, const_cast<char*>(
                    "One slot of a Bulkhead, taken by enter() / enter_async(): give it back with\n"
                    "bulkhead.exit(slot), exactly once (a native atomic flag decides which of\n"
                    "several exits counts).")},
    {0, nullptr}};

PyType_Spec bulkhead_slot_spec = {"virtrigaud_resilience._core.BulkheadSlot",
                                  sizeof(BulkheadSlotObject), 0,
                                  Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, bulkhead_slot_slots};

// Raises the full bulkhead's error, counted: self._reject() builds it (labels,
// in-flight count). Always returns nullptr.
PyObject* raise_bulkhead_full(PyObject* self) {
    PyObject* exc = PyObject_CallMethod(self, "_reject", nullptr);
    if (exc != nullptr) {
        PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc)), exc);
        Py_DECREF(exc);
    }
    return nullptr;
}

// Records a slot just taken as the current context's latest and returns its
// token (new reference). On failure (out of memory) the slot goes back and
// nullptr is returned with the error set: nothing is held that nobody knows.
PyObject* hold_slot(PyObject* self, PyBulkhead* b) {
    PyObject* below = nullptr;
    PyObject* slot = nullptr;
    if (context_var_get(b->held_var.ptr(), below)) {
        while (below != nullptr && slot_claimed(below)) {  // given back through its token
            PyObject* next = Py_XNewRef(as_slot(below)->below);
            Py_DECREF(below);
            below = next;
        }
        slot = PyType_GenericAlloc(reinterpret_cast<PyTypeObject*>(g_bulkhead_slot_type), 0);
        if (slot != nullptr) {
            as_slot(slot)->bulkhead = Py_NewRef(self);
            as_slot(slot)->below = below;  // ours now
            below = nullptr;
            if (context_var_set(b->held_var.ptr(), slot)) {
                return slot;
            }
            Py_CLEAR(slot);
        }
    }
    Py_XDECREF(below);
    PyObject* exc = fetch_exception();
    HookError error;
    if (!bulkhead_exit(self, b)) {
        error.take();
    }
    if (!error.raise(exc)) {
        restore_exception(exc);
    }
    return nullptr;
}

// Takes a slot for a newcomer and records it, or raises RateLimitError.
PyObject* take_and_hold(PyObject* self, PyBulkhead* b) {
    if (!b->core.try_enter()) {
        return raise_bulkhead_full(self);
    }
    return hold_slot(self, b);
}

// Gives back the latest slot the current context holds and has not given
// back; RuntimeError, changing nothing, when there is none.
bool exit_latest(PyObject* self, PyBulkhead* b) {
    PyObject* latest = nullptr;
    if (!context_var_get(b->held_var.ptr(), latest)) {
        return false;
    }
    if (latest == nullptr) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Bulkhead.exit() without a matching enter: this thread or task holds "
                        "no slot");
        return false;
    }
    PyObject* found = latest;  // `latest` keeps the whole chain alive
    while (found != nullptr && !claim(found)) {
        found = as_slot(found)->below;  // given back already, through its token
    }
    // The context now holds what lies below the slot given back (nothing,
    // if none was left: the chain of spent slots is dropped).
    HookError error;
    if (!context_var_set(b->held_var.ptr(), found != nullptr ? as_slot(found)->below : nullptr)) {
        error.take();
    }
    Py_DECREF(latest);
    if (found == nullptr) {
        if (error.raise()) {
            return false;
        }
        PyErr_SetString(PyExc_RuntimeError,
                        "Bulkhead.exit() without a matching enter: this thread or task holds "
                        "no slot");
        return false;
    }
    if (!bulkhead_exit(self, b)) {
        error.take();
    }
    return !error.raise();
}

// Gives back the slot `slot` stands for (its token), once.
bool exit_token(PyObject* self, PyBulkhead* b, PyObject* slot) {
    if (!PyObject_TypeCheck(slot, reinterpret_cast<PyTypeObject*>(g_bulkhead_slot_type))) {
        PyObject* name = type_name_of(slot);
        PyErr_Format(PyExc_TypeError,
                     "Bulkhead.exit() slot must be the BulkheadSlot its enter returned, got %S",
                     name != nullptr ? name : Py_None);
        Py_XDECREF(name);
        return false;
    }
    if (as_slot(slot)->bulkhead != self) {
        PyErr_SetString(PyExc_RuntimeError, "Bulkhead.exit() got the slot of another bulkhead");
        return false;
    }
    if (!claim(slot)) {
        PyErr_SetString(PyExc_RuntimeError, "Bulkhead.exit(): this slot was already given back");
        return false;
    }
    HookError error;
    if (!bulkhead_exit(self, b)) {
        error.take();
    }
    PyObject* latest = nullptr;
    if (!context_var_get(b->held_var.ptr(), latest)) {
        error.take();
    } else if (latest == slot && !context_var_set(b->held_var.ptr(), as_slot(slot)->below)) {
        error.take();
    }
    Py_XDECREF(latest);
    return !error.raise();
}

PyObject* bulkhead_enter(PyObject* self, PyObject*) {
    auto* b = ready_instance<PyBulkhead>(self, "Bulkhead");
    return b != nullptr ? take_and_hold(self, b) : nullptr;
}

PyObject* bulkhead_dunder_enter(PyObject* self, PyObject*) {
    auto* b = ready_instance<PyBulkhead>(self, "Bulkhead");
    PyObject* slot = b != nullptr ? take_and_hold(self, b) : nullptr;
    if (slot == nullptr) {
        return nullptr;
    }
    Py_DECREF(slot);  // the context holds it
    return Py_NewRef(self);
}

PyObject* bulkhead_try_enter(PyObject* self, PyObject*) {
    auto* b = ready_instance<PyBulkhead>(self, "Bulkhead");
    if (b == nullptr) {
        return nullptr;
    }
    if (!b->core.try_enter()) {
        b->core.count_rejection();
        Py_RETURN_FALSE;
    }
    PyObject* slot = hold_slot(self, b);
    if (slot == nullptr) {
        return nullptr;
    }
    Py_DECREF(slot);
    Py_RETURN_TRUE;
}

PyObject* bulkhead_hold(PyObject* self, PyObject*) {
    auto* b = ready_instance<PyBulkhead>(self, "Bulkhead");
    return b != nullptr ? hold_slot(self, b) : nullptr;
}

PyObject* bulkhead_exit_method(PyObject* self, PyObject* const* args, Py_ssize_t nargs,
                               PyObject* kwnames) {
    auto* b = ready_instance<PyBulkhead>(self, "Bulkhead");
    PyObject* slot = nullptr;
    if (b == nullptr || !one_optional_arg("Bulkhead.exit", "slot", args, nargs, kwnames, slot)) {
        return nullptr;
    }
    const bool ok = slot == nullptr || slot == Py_None ? exit_latest(self, b)
                                                       : exit_token(self, b, slot);
    if (!ok) {
        return nullptr;
    }
    Py_RETURN_NONE;
}

// __exit__(exc_type, exc, tb): the slot its __enter__ took goes back
// whatever the block raised (never suppressed).
PyObject* bulkhead_dunder_exit(PyObject* self, PyObject* const*, Py_ssize_t) {
    auto* b = ready_instance<PyBulkhead>(self, "Bulkhead");
    if (b == nullptr || !exit_latest(self, b)) {
        return nullptr;
    }
    Py_RETURN_NONE;
}

PyMethodDef bulkhead_enter_def = {
    "enter", bulkhead_enter, METH_NOARGS,
    "enter(self, /)\n--\n\n"
    "Takes a slot or raises RateLimitError; never waits (and never barges past\n"
    "queued asyncio waiters). Returns its token (a BulkheadSlot), for exit(),\n"
    "which also finds it without being passed it."};

PyMethodDef bulkhead_try_enter_def = {
    "try_enter", bulkhead_try_enter, METH_NOARGS,
    "try_enter(self, /)\n--\n\n"
    "Takes a slot if one is free and nobody is queued for one, and returns True;\n"
    "otherwise counts a rejection and returns False. Never waits. The slot goes\n"
    "back with exit() from this thread or task."};

PyMethodDef bulkhead_hold_def = {
    "_hold", bulkhead_hold, METH_NOARGS,
    "_hold(self, /)\n--\n\n"
    "Records a slot just taken (by a waiter) as the current thread's or task's\n"
    "latest, and returns its token. Out of memory, the slot goes back."};

PyMethodDef bulkhead_exit_def = {
    "exit", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(bulkhead_exit_method)),
    METH_FASTCALL | METH_KEYWORDS,
    "exit(self, slot=None)\n--\n\n"
    "Gives a slot back: to the longest asyncio waiter if one is queued, else to\n"
    "the pool. `slot` is the token enter() or enter_async() returned; None gives\n"
    "back the latest slot the calling thread or task took and still holds. Each\n"
    "token goes back once, whichever threads try.\n\n"
    "Raises RuntimeError, changing nothing, when there is nothing to give back\n"
    "(no slot held here, or the token was given back already, or is another\n"
    "bulkhead's); TypeError when `slot` is not a BulkheadSlot."};

PyMethodDef bulkhead_dunder_enter_def = {
    "__enter__", bulkhead_dunder_enter, METH_NOARGS,
    "__enter__(self, /)\n--\n\n"
    "enter(), returning the bulkhead: `with bulkhead:` rejects when full."};

PyMethodDef bulkhead_dunder_exit_def = {
    "__exit__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(bulkhead_dunder_exit)),
    METH_FASTCALL,
    "__exit__(self, /, *exc_info)\n--\n\n"
    "exit(): gives back the latest slot this thread or task holds."};

// ----------------------------------------------------------------- Policy --
//
// The sync success path of a composed policy in one native crossing:
// breaker admit -> token bucket -> bulkhead -> call -> record. Anything else
// (a rejection, an exception to retry, a timeout to enforce) is handed to the
// Python method `_resume(stage, exc, fn, args, kwargs)`, which owns the retry
// loop, waiting and error construction.

// The stages: Stage in contract.hpp.

struct PyPolicy {
    nb::object breaker_obj, bucket_obj, bulkhead_obj;
    PyCircuitBreaker* breaker = nullptr;
    PyTokenBucket* bucket = nullptr;
    PyBulkhead* bulkhead = nullptr;
    bool fast = true;
    bool waits = false;  // a refused token is waited for in Python: not a refusal yet

    PyPolicy(nb::handle breaker_, nb::handle bucket_, nb::handle bulkhead_, bool fast_,
             bool waits_)
        : fast(fast_), waits(waits_) {
        if (!breaker_.is_none()) {
            breaker = nb::inst_ptr<PyCircuitBreaker>(checked<PyCircuitBreaker>(breaker_, "breaker"));
            breaker_obj = nb::borrow(breaker_);
        }
        if (!bucket_.is_none()) {
            bucket = nb::inst_ptr<PyTokenBucket>(checked<PyTokenBucket>(bucket_, "bucket"));
            bucket_obj = nb::borrow(bucket_);
        }
        if (!bulkhead_.is_none()) {
            bulkhead = nb::inst_ptr<PyBulkhead>(checked<PyBulkhead>(bulkhead_, "bulkhead"));
            bulkhead_obj = nb::borrow(bulkhead_);
        }
    }

    template <typename T>
    static nb::handle checked(nb::handle h, const char* field) {
        if (!nb::isinstance<T>(h) || !nb::inst_ready(h)) {
            throw nb::type_error(
                (std::string("Policy ") + field + " has the wrong type").c_str());
        }
        return h;
    }

    // Admits attempt 0 everywhere or undoes what it took; returns the Stage.
    // The bulkhead is asked before the bucket (the layers' effect is the
    // same: all must admit) so that a refused slot never costs a token: a
    // slot is cheap to give back, a token is not.
    int enter(vr::Ticket& ticket) {
        if (breaker != nullptr) {
            ticket = breaker->core.acquire();
            if (!ticket.admitted) {
                return kBreakerOpen;
            }
            if (!notify(breaker_obj.ptr(), ticket.transition)) {
                release(ticket);
                return kRaised;
            }
        }
        if (bulkhead != nullptr && !bulkhead->core.try_enter()) {
            release(ticket);
            return kBulkheadFull;
        }
        if (bucket != nullptr && !bucket->core.try_acquire(1, !waits)) {
            HookError error;
            if (bulkhead != nullptr && !bulkhead_exit(bulkhead_obj.ptr(), bulkhead)) {
                error.take();
            }
            // A waiting policy continues in Python with the same call: no
            // cancellation, nothing to count (as for the token refusal).
            release(ticket, !waits);
            if (!waits && !notify_rate_limited(bucket_obj.ptr(), 1)) {
                error.take();
            }
            return error.raise() ? kRaised : kRateLimited;
        }
        return kCalled;
    }

    void release(const vr::Ticket& ticket, bool counted = true) {
        if (breaker != nullptr) {
            breaker->core.release(ticket, counted);
        }
    }

    // The attempt ran and returned: record a success, free the slot. Returns
    // false with an error set (a hook's BaseException).
    bool exit_success(const vr::Ticket& ticket) {
        HookError error;
        if (breaker != nullptr && !notify(breaker_obj.ptr(), breaker->core.record_success(ticket))) {
            error.take();
        }
        free_slot(error);
        return !error.raise();
    }

    // The attempt raised exc: record it as classified, free the slot. No
    // Python error may be set when this runs (it calls hooks); a hook's
    // BaseException lands in `error`.
    void exit_raised(const vr::Ticket& ticket, PyObject* exc, HookError& error) {
        if (breaker != nullptr) {
            record_exception(breaker_obj.ptr(), breaker, ticket, exc, error);
        }
        free_slot(error);
    }

    // The attempt did not run after all (it was async): no outcome.
    bool exit_unrun(const vr::Ticket& ticket) {
        HookError error;
        release(ticket);
        free_slot(error);
        return !error.raise();
    }

    void free_slot(HookError& error) {
        if (bulkhead != nullptr && !bulkhead_exit(bulkhead_obj.ptr(), bulkhead)) {
            error.take();
        }
    }
};

// Calls self._resume(stage, exc, fn, args, kwargs) with the forwarded arguments.
PyObject* resume(PyObject* self, int stage, PyObject* exc, PyObject* const* args,
                 Py_ssize_t nargs, PyObject* kwnames) {
    PyObject* tuple = PyTuple_New(nargs - 1);
    PyObject* kwargs = PyDict_New();
    if (tuple == nullptr || kwargs == nullptr) {
        Py_XDECREF(tuple);
        Py_XDECREF(kwargs);
        return nullptr;
    }
    for (Py_ssize_t i = 1; i < nargs; ++i) {
        PyTuple_SetItem(tuple, i - 1, Py_NewRef(args[i]));
    }
    const Py_ssize_t nkw = kwnames != nullptr ? PyTuple_Size(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nkw; ++i) {
        if (PyDict_SetItem(kwargs, PyTuple_GetItem(kwnames, i), args[nargs + i]) != 0) {
            Py_DECREF(tuple);
            Py_DECREF(kwargs);
            return nullptr;
        }
    }
    PyObject* r = PyObject_CallMethod(self, "_resume", "iOOOO", stage, exc ? exc : Py_None,
                                      args[0], tuple, kwargs);
    Py_DECREF(tuple);
    Py_DECREF(kwargs);
    return r;
}

PyObject* policy_execute(PyObject* self, PyObject* const* args, Py_ssize_t nargsf,
                         PyObject* kwnames) {
    auto* p = ready_instance<PyPolicy>(self, "Policy");
    if (p == nullptr) {
        return nullptr;
    }
    const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "Policy.execute() missing required argument 'fn'");
        return nullptr;
    }
    if (!p->fast) {
        return resume(self, kPythonPath, nullptr, args, nargs, kwnames);
    }
    vr::Ticket ticket;
    const int stage = p->enter(ticket);
    if (stage == kRaised) {
        return nullptr;
    }
    if (stage != kCalled) {
        return resume(self, stage, nullptr, args, nargs, kwnames);
    }
    PyObject* result;
    {
        const virtrigaud_held::Scope held(p->breaker_obj.ptr(), p->bucket_obj.ptr());
        // Not args[0] as the callee's spare slot: it is the caller's (see forward_call).
        result = forward_call(args[0], args + 1, static_cast<size_t>(nargs - 1), kwnames);
    }
    if (result != nullptr) {
        if (is_coroutine(result)) {
            if (!p->exit_unrun(ticket)) {
                Py_DECREF(result);
                return nullptr;
            }
            return refuse_coroutine(result, "Policy.execute()",
                                    "'await policy.execute_async(fn, ...)'");
        }
        if (!p->exit_success(ticket)) {
            Py_DECREF(result);
            return nullptr;
        }
        return result;
    }
    PyObject* exc = fetch_exception();
    HookError error;
    p->exit_raised(ticket, exc, error);
    if (error.raise(exc)) {
        return nullptr;
    }
    result = resume(self, kCalled, exc, args, nargs, kwnames);
    Py_DECREF(exc);
    return result;
}

// The async path's two crossings, raw for the same reason as execute().
PyObject* policy_enter(PyObject* self, PyObject* const*, Py_ssize_t nargsf, PyObject* kwnames) {
    auto* p = ready_instance<PyPolicy>(self, "Policy");
    if (p == nullptr) {
        return nullptr;
    }
    if (PyVectorcall_NARGS(nargsf) != 0 || kwnames != nullptr) {
        PyErr_SetString(PyExc_TypeError, "Policy._enter() takes no arguments");
        return nullptr;
    }
    if (!p->fast) {
        return PyLong_FromLong(kEnterPythonPath);
    }
    vr::Ticket ticket;
    const int stage = p->enter(ticket);
    if (stage == kRaised) {
        return nullptr;
    }
    if (stage != kCalled) {
        return PyLong_FromLong(-stage);
    }
    return PyLong_FromLongLong(p->breaker != nullptr ? ticket.encode() : 0);
}

PyObject* policy_exit(PyObject* self, PyObject* const* args, Py_ssize_t nargsf,
                      PyObject* kwnames) {
    auto* p = ready_instance<PyPolicy>(self, "Policy");
    if (p == nullptr) {
        return nullptr;
    }
    int64_t ticket = 0;
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != nullptr ||
        !int_arg(args[0], "Policy", "ticket", ticket)) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "Policy._exit() takes one ticket");
        }
        return nullptr;
    }
    if (!p->exit_success(vr::Ticket::decode(ticket))) {
        return nullptr;
    }
    Py_RETURN_NONE;
}

PyMethodDef policy_enter_def = {
    "_enter", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(policy_enter)),
    METH_FASTCALL | METH_KEYWORDS,
    "_enter(self, /)\n--\n\n"
    "Admits an attempt: a ticket >= 0; or -1 breaker open, -2 rate limited,\n"
    "-3 bulkhead full (nothing held); or -100 when every call needs Python."};

PyMethodDef policy_exit_def = {
    "_exit", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(policy_exit)),
    METH_FASTCALL | METH_KEYWORDS,
    "_exit(self, ticket, /)\n--\n\n"
    "The attempt succeeded: record it and free its slot."};

PyMethodDef policy_execute_def = {
    "execute", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(policy_execute)),
    METH_FASTCALL | METH_KEYWORDS,
    "execute(self, fn, /, *args, **kwargs)\n--\n\n"
    "Runs fn(*args, **kwargs) under the policy and returns its result. The\n"
    "first attempt's admit -> call -> record runs natively; rejections,\n"
    "retries and timeouts continue in Policy._resume."};

int policy_traverse(PyObject* self, visitproc visit, void* arg) {
#if PY_VERSION_HEX >= 0x03090000
    Py_VISIT(Py_TYPE(self));
#endif
    if (!nb::inst_ready(self)) {
        return 0;
    }
    auto* p = nb::inst_ptr<PyPolicy>(self);
    Py_VISIT(p->breaker_obj.ptr());
    Py_VISIT(p->bucket_obj.ptr());
    Py_VISIT(p->bulkhead_obj.ptr());
    return 0;
}

int policy_clear(PyObject* self) {
    if (nb::inst_ready(self)) {
        auto* p = nb::inst_ptr<PyPolicy>(self);
        p->breaker = nullptr;
        p->bucket = nullptr;
        p->bulkhead = nullptr;
        p->breaker_obj = nb::object();
        p->bucket_obj = nb::object();
        p->bulkhead_obj = nb::object();
    }
    return 0;
}

PyType_Slot policy_slots[] = {{Py_tp_traverse, reinterpret_cast<void*>(policy_traverse)},
                              {Py_tp_clear, reinterpret_cast<void*>(policy_clear)},
                              {0, nullptr}};

// -------------------------------------------------------------- RetryCall --
//
// The function object a retry decorator returns (compat.tenacity's @retry,
// compat.backoff's decorators): calling it runs the first attempt in one
// native crossing, as Policy.execute does, and enters Python only when the
// attempt needs it. It is a plain C type rather than a nanobind class because
// it must be a vectorcall callable with a __dict__ (functools.wraps writes
// __name__, __doc__, __wrapped__ ... there) and a __get__ (it binds as a
// method, as a function does).
//
// One call, by mode:
//   passthrough: fn(*args, **kwargs), nothing else (a disabled retry).
//   python:      resume(NOT_RUN, None, args, kwargs, 0.0): Python does it all.
//   native:      [t0 = monotonic] [statistics reset] result = fn(*args, **kwargs);
//                an exception that matches `retry_on` (every one when retry_on
//                is None) -> resume(RAISED, exc, args, kwargs, t0); any other
//                is raised as is; a result that `check` accepts (check(result)
//                true, or `not result` for operator.not_) ->
//                resume(REJECTED, result, args, kwargs, t0); else the result.
//
// The statistics reset (tenacity's begin()): d = self.__dict__[stats_key];
// d.clear(); d[clock_key] = t0; d.update(template); local.statistics = d.

// The modes and outcomes: RetryCallMode and RetryCallOutcome in contract.hpp.

#if PY_VERSION_HEX < 0x030D0000
#ifndef Py_BEGIN_CRITICAL_SECTION
#define Py_BEGIN_CRITICAL_SECTION(op) {
#define Py_END_CRITICAL_SECTION() }
#endif
#endif

struct RetryCallObject {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject* dict;
    PyObject* weakrefs;
    // Fixed at construction.
    PyObject* fn;
    PyObject* resume;
    PyObject* stats_key;  // str or null: the __dict__ key of the statistics dict
    PyObject* clock_key;  // str or null: the key that receives t0
    PyObject* template_;  // tuple of (key, value) pairs
    PyObject* local;      // null, or the object whose `statistics` is set to the dict
    int clock;            // read the monotonic clock before the attempt
    // Changed by _configure (under a critical section in free-threaded builds).
    int mode;
    PyObject* retry_on;   // null: every exception resumes; else a type or tuple of them
    PyObject* check;      // null, or a predicate on the result
    int check_not;        // check is operator.not_: done natively
};

PyObject* g_operator_not = nullptr;  // operator.not_, set at import
PyObject* g_statistics_str = nullptr;

// The per-call part of the config, with strong references.
struct RetryCallPlan {
    int mode = kModePython;
    PyObject* retry_on = nullptr;
    PyObject* check = nullptr;
    int check_not = 0;
    ~RetryCallPlan() {
        Py_XDECREF(retry_on);
        Py_XDECREF(check);
    }
};

void read_plan(RetryCallObject* rc, RetryCallPlan& plan) {
    Py_BEGIN_CRITICAL_SECTION(reinterpret_cast<PyObject*>(rc));
    plan.mode = rc->mode;
    plan.retry_on = Py_XNewRef(rc->retry_on);
    plan.check = Py_XNewRef(rc->check);
    plan.check_not = rc->check_not;
    Py_END_CRITICAL_SECTION();
}

// tenacity's begin(), natively. Returns false with an error set.
bool retry_call_begin(RetryCallObject* rc, double t0) {
    if (rc->stats_key == nullptr) {
        return true;
    }
    PyObject* stats = nullptr;
    if (rc->dict != nullptr) {
        stats = PyDict_GetItemWithError(rc->dict, rc->stats_key);  // borrowed
    }
    if (stats == nullptr) {
        if (!PyErr_Occurred()) {
            PyErr_Format(PyExc_AttributeError, "the retry wrapper has no attribute %R",
                         rc->stats_key);
        }
        return false;
    }
    Py_INCREF(stats);
    bool ok = true;
    const bool exact = PyDict_CheckExact(stats);
    PyObject* cleared = nullptr;
    if (exact) {
        PyDict_Clear(stats);
    } else {
        cleared = PyObject_CallMethod(stats, "clear", nullptr);
        ok = cleared != nullptr;
        Py_XDECREF(cleared);
    }
    const auto set = [&](PyObject* key, PyObject* value) {
        return exact ? PyDict_SetItem(stats, key, value) == 0
                     : PyObject_SetItem(stats, key, value) == 0;
    };
    if (ok && rc->clock_key != nullptr) {
        PyObject* now = PyFloat_FromDouble(t0);
        ok = now != nullptr && set(rc->clock_key, now);
        Py_XDECREF(now);
    }
    const Py_ssize_t n = ok ? PyTuple_Size(rc->template_) : 0;
    for (Py_ssize_t i = 0; ok && i < n; ++i) {
        PyObject* pair = PyTuple_GetItem(rc->template_, i);
        ok = set(PyTuple_GetItem(pair, 0), PyTuple_GetItem(pair, 1));
    }
    if (ok && rc->local != nullptr) {
        ok = PyObject_SetAttr(rc->local, g_statistics_str, stats) == 0;
    }
    Py_DECREF(stats);
    return ok;
}

// A call after tp_clear (a cycle being collected) has nothing to call.
PyObject* retry_call_cleared_error() {
    PyErr_SetString(PyExc_RuntimeError, "RetryCall was cleared");
    return nullptr;
}

double monotonic_seconds() {
    return static_cast<double>(vr::steady_now_ns()) / kNsPerSecond;
}

// resume(outcome, value, args, kwargs, t0) with the forwarded arguments.
PyObject* retry_call_resume(RetryCallObject* rc, int outcome, PyObject* value,
                            PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames,
                            double t0) {
    PyObject* tuple = PyTuple_New(nargs);
    PyObject* kwargs = PyDict_New();
    PyObject* code = PyLong_FromLong(outcome);
    PyObject* start = PyFloat_FromDouble(t0);
    PyObject* result = nullptr;
    if (tuple != nullptr && kwargs != nullptr && code != nullptr && start != nullptr) {
        for (Py_ssize_t i = 0; i < nargs; ++i) {
            PyTuple_SetItem(tuple, i, Py_NewRef(args[i]));
        }
        const Py_ssize_t nkw = kwnames != nullptr ? PyTuple_Size(kwnames) : 0;
        bool ok = true;
        for (Py_ssize_t i = 0; ok && i < nkw; ++i) {
            ok = PyDict_SetItem(kwargs, PyTuple_GetItem(kwnames, i), args[nargs + i]) == 0;
        }
        if (ok) {
            PyObject* call_args[5] = {code, value, tuple, kwargs, start};
            result = PyObject_Vectorcall(rc->resume, call_args, 5, nullptr);
        }
    }
    Py_XDECREF(tuple);
    Py_XDECREF(kwargs);
    Py_XDECREF(code);
    Py_XDECREF(start);
    return result;
}

PyObject* retry_call_vectorcall(PyObject* self, PyObject* const* args, size_t nargsf,
                                PyObject* kwnames) {
    auto* rc = reinterpret_cast<RetryCallObject*>(self);
    if (rc->fn == nullptr) {
        return retry_call_cleared_error();
    }
    const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    RetryCallPlan plan;
    read_plan(rc, plan);
    if (plan.mode == kModePassthrough) {
        return PyObject_Vectorcall(rc->fn, args, nargsf, kwnames);
    }
    if (plan.mode != kModeNative) {
        return retry_call_resume(rc, kNotRun, Py_None, args, nargs, kwnames, 0.0);
    }
    const double t0 = rc->clock ? monotonic_seconds() : 0.0;
    if (!retry_call_begin(rc, t0)) {
        return nullptr;
    }
    PyObject* result = PyObject_Vectorcall(rc->fn, args, nargsf, kwnames);
    if (result == nullptr) {
        PyObject* exc = fetch_exception();
        if (exc == nullptr) {
            return nullptr;
        }
        if (plan.retry_on != nullptr && !PyErr_GivenExceptionMatches(exc, plan.retry_on)) {
            restore_exception(exc);  // not retried: raised as the call raised it
            return nullptr;
        }
        result = retry_call_resume(rc, kResumeRaised, exc, args, nargs, kwnames, t0);
        Py_DECREF(exc);
        return result;
    }
    if (plan.check != nullptr) {
        int rejected;
        if (plan.check_not) {
            rejected = PyObject_Not(result);
        } else {
            PyObject* verdict = call_one(plan.check, result);
            rejected = verdict != nullptr ? PyObject_IsTrue(verdict) : -1;
            Py_XDECREF(verdict);
        }
        if (rejected != 0) {
            PyObject* resumed = rejected > 0 ? retry_call_resume(rc, kRejected, result, args,
                                                                 nargs, kwnames, t0)
                                             : nullptr;
            Py_DECREF(result);
            return resumed;
        }
    }
    return result;
}

bool set_plan(RetryCallObject* rc, int mode, PyObject* retry_on, PyObject* check) {
    if (mode != kModePython && mode != kModeNative && mode != kModePassthrough) {
        PyErr_Format(PyExc_ValueError, "RetryCall mode must be 0, 1 or 2, got %d", mode);
        return false;
    }
    if (retry_on == Py_None) {
        retry_on = nullptr;
    }
    if (retry_on != nullptr && !PyType_Check(retry_on) && !PyTuple_Check(retry_on)) {
        PyErr_SetString(PyExc_TypeError,
                        "RetryCall retry_on must be None, an exception type or a tuple of them");
        return false;
    }
    if (check == Py_None) {
        check = nullptr;
    }
    if (check != nullptr && !PyCallable_Check(check)) {
        PyErr_SetString(PyExc_TypeError, "RetryCall check must be None or callable");
        return false;
    }
    PyObject* old_retry_on;
    PyObject* old_check;
    Py_BEGIN_CRITICAL_SECTION(reinterpret_cast<PyObject*>(rc));
    old_retry_on = rc->retry_on;
    old_check = rc->check;
    rc->mode = mode;
    rc->retry_on = Py_XNewRef(retry_on);
    rc->check = Py_XNewRef(check);
    rc->check_not = check != nullptr && check == g_operator_not;
    Py_END_CRITICAL_SECTION();
    Py_XDECREF(old_retry_on);
    Py_XDECREF(old_check);
    return true;
}

PyObject* retry_call_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    static const char* kwlist[] = {"fn",    "resume", "clock", "stats_key", "clock_key",
                                   "template", "local", nullptr};
    PyObject *fn, *resume, *stats_key = Py_None, *clock_key = Py_None, *template_ = nullptr,
                            *local = Py_None;
    int clock = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|$pOOOO", const_cast<char**>(kwlist), &fn,
                                     &resume, &clock, &stats_key, &clock_key, &template_,
                                     &local)) {
        return nullptr;
    }
    if (!PyCallable_Check(fn) || !PyCallable_Check(resume)) {
        PyErr_SetString(PyExc_TypeError, "RetryCall fn and resume must be callable");
        return nullptr;
    }
    for (PyObject* key : {stats_key, clock_key}) {
        if (key != Py_None && !PyUnicode_Check(key)) {
            PyErr_SetString(PyExc_TypeError, "RetryCall stats_key and clock_key must be str or None");
            return nullptr;
        }
    }
    if (template_ != nullptr) {
        bool ok = PyTuple_Check(template_);
        for (Py_ssize_t i = 0; ok && i < PyTuple_Size(template_); ++i) {
            PyObject* pair = PyTuple_GetItem(template_, i);
            ok = PyTuple_Check(pair) && PyTuple_Size(pair) == 2;
        }
        if (!ok) {
            PyErr_SetString(PyExc_TypeError, "RetryCall template must be a tuple of (key, value) pairs");
            return nullptr;
        }
    }
    auto* rc = reinterpret_cast<RetryCallObject*>(PyType_GenericAlloc(type, 0));
    if (rc == nullptr) {
        return nullptr;
    }
    rc->vectorcall = retry_call_vectorcall;
    rc->fn = Py_NewRef(fn);
    rc->resume = Py_NewRef(resume);
    rc->stats_key = stats_key != Py_None ? Py_NewRef(stats_key) : nullptr;
    rc->clock_key = clock_key != Py_None ? Py_NewRef(clock_key) : nullptr;
    rc->template_ = template_ != nullptr ? Py_NewRef(template_) : PyTuple_New(0);
    rc->local = local != Py_None ? Py_NewRef(local) : nullptr;
    rc->clock = clock;
    rc->mode = kModePython;
    if (rc->template_ == nullptr) {
        Py_DECREF(rc);
        return nullptr;
    }
    return reinterpret_cast<PyObject*>(rc);
}

int retry_call_traverse(PyObject* self, visitproc visit, void* arg) {
    auto* rc = reinterpret_cast<RetryCallObject*>(self);
#if PY_VERSION_HEX >= 0x03090000
    Py_VISIT(Py_TYPE(self));
#endif
    Py_VISIT(rc->dict);
    Py_VISIT(rc->fn);
    Py_VISIT(rc->resume);
    Py_VISIT(rc->template_);
    Py_VISIT(rc->local);
    Py_VISIT(rc->retry_on);
    Py_VISIT(rc->check);
    return 0;
}

int retry_call_clear(PyObject* self) {
    auto* rc = reinterpret_cast<RetryCallObject*>(self);
    Py_CLEAR(rc->dict);
    Py_CLEAR(rc->fn);
    Py_CLEAR(rc->resume);
    Py_CLEAR(rc->stats_key);
    Py_CLEAR(rc->clock_key);
    Py_CLEAR(rc->template_);
    Py_CLEAR(rc->local);
    Py_CLEAR(rc->retry_on);
    Py_CLEAR(rc->check);
    rc->mode = kModePython;
    return 0;
}

void retry_call_dealloc(PyObject* self) {
    PyObject_GC_UnTrack(self);
    auto* rc = reinterpret_cast<RetryCallObject*>(self);
    if (rc->weakrefs != nullptr) {
        PyObject_ClearWeakRefs(self);
    }
    retry_call_clear(self);
    PyTypeObject* type = Py_TYPE(self);
    auto* free_fn = reinterpret_cast<freefunc>(PyType_GetSlot(type, Py_tp_free));
    free_fn(self);
    Py_DECREF(type);
}

// Binds as a method, as a Python function does.
PyObject* retry_call_get(PyObject* self, PyObject* obj, PyObject*) {
    if (obj == nullptr || obj == Py_None) {
        return Py_NewRef(self);
    }
#ifdef Py_LIMITED_API
    PyObject* call_args[2] = {self, obj};
    return PyObject_Vectorcall(g_method_type, call_args, 2, nullptr);
#else
    return PyMethod_New(self, obj);
#endif
}

// <function qualname at 0x...>, as a function's repr.
PyObject* retry_call_repr(PyObject* self) {
    PyObject* name = PyObject_GetAttrString(self, "__qualname__");
    if (name == nullptr) {
        PyErr_Clear();
        return PyUnicode_FromFormat("<RetryCall object at %p>", self);
    }
    PyObject* repr = PyUnicode_FromFormat("<function %S at %p>", name, self);
    Py_DECREF(name);
    return repr;
}

PyObject* retry_call_configure(PyObject* self, PyObject* args) {
    int mode;
    PyObject *retry_on, *check;
    if (!PyArg_ParseTuple(args, "iOO:_configure", &mode, &retry_on, &check)) {
        return nullptr;
    }
    if (!set_plan(reinterpret_cast<RetryCallObject*>(self), mode, retry_on, check)) {
        return nullptr;
    }
    Py_RETURN_NONE;
}

PyObject* retry_call_begin_method(PyObject* self, PyObject*) {
    auto* rc = reinterpret_cast<RetryCallObject*>(self);
    const double t0 = monotonic_seconds();
    if (!retry_call_begin(rc, t0)) {
        return nullptr;
    }
    return PyFloat_FromDouble(t0);
}

// Pickled by reference, as a module-level function is.
PyObject* retry_call_reduce(PyObject* self, PyObject*) {
    return PyObject_GetAttrString(self, "__qualname__");
}

PyObject* retry_call_mode(PyObject* self, void*) {
    RetryCallPlan plan;
    read_plan(reinterpret_cast<RetryCallObject*>(self), plan);
    return PyLong_FromLong(plan.mode);
}

PyObject* retry_call_fn(PyObject* self, void*) {
    auto* rc = reinterpret_cast<RetryCallObject*>(self);
    if (rc->fn == nullptr) {
        return retry_call_cleared_error();
    }
    return Py_NewRef(rc->fn);
}

PyMethodDef retry_call_methods[] = {
    {"_configure", retry_call_configure, METH_VARARGS,
     "_configure(self, mode, retry_on, check, /)\n--\n\n"
     "Sets how calls run: mode 0 all in Python (resume), 1 first attempt native,\n"
     "2 passthrough (fn only); retry_on (None, a type or a tuple) says which\n"
     "exceptions resume (the others are raised as is); check(result) true (or\n"
     "`not result` for operator.not_) resumes with the result."},
    {"_begin", retry_call_begin_method, METH_NOARGS,
     "_begin(self, /)\n--\n\n"
     "Resets the statistics as a native call does; returns the monotonic time."},
    {"__reduce__", retry_call_reduce, METH_NOARGS,
     "__reduce__(self, /)\n--\n\nPickled by reference (its __qualname__)."},
    {nullptr, nullptr, 0, nullptr}};

PyGetSetDef retry_call_getset[] = {
    {"_mode", retry_call_mode, nullptr, "The mode set by _configure (0, 1 or 2).", nullptr},
    {"_fn", retry_call_fn, nullptr, "The wrapped callable.", nullptr},
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, nullptr, nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

#if PY_VERSION_HEX >= 0x030C0000
#define VR_T_PYSSIZET Py_T_PYSSIZET
#define VR_READONLY Py_READONLY
#else
#define VR_T_PYSSIZET T_PYSSIZET
#define VR_READONLY READONLY
#endif

PyMemberDef retry_call_members[] = {
    {"__vectorcalloffset__", VR_T_PYSSIZET, offsetof(RetryCallObject, vectorcall), VR_READONLY,
     nullptr},
    {"__dictoffset__", VR_T_PYSSIZET, offsetof(RetryCallObject, dict), VR_READONLY, nullptr},
    {"__weaklistoffset__", VR_T_PYSSIZET, offsetof(RetryCallObject, weakrefs), VR_READONLY,
     nullptr},
    {nullptr, 0, 0, 0, nullptr}};

PyType_Slot retry_call_type_slots[] = {
    {Py_tp_doc, const_cast<char*>(
                    "RetryCall(fn, resume, *, clock=False, stats_key=None, clock_key=None,\n"
                    "          template=(), local=None)\n\n"
                    "The function a retry decorator returns: its first attempt runs in one\n"
                    "native call (see _configure); Python continues through resume(outcome,\n"
                    "value, args, kwargs, t0) with outcome 0 not run, 1 raised, 2 rejected.")},
    {Py_tp_new, reinterpret_cast<void*>(retry_call_new)},
    {Py_tp_dealloc, reinterpret_cast<void*>(retry_call_dealloc)},
    {Py_tp_traverse, reinterpret_cast<void*>(retry_call_traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(retry_call_clear)},
    {Py_tp_call, reinterpret_cast<void*>(PyVectorcall_Call)},
    {Py_tp_descr_get, reinterpret_cast<void*>(retry_call_get)},
    {Py_tp_repr, reinterpret_cast<void*>(retry_call_repr)},
    {Py_tp_methods, retry_call_methods},
    {Py_tp_getset, retry_call_getset},
    {Py_tp_members, retry_call_members},
    {0, nullptr}};

PyType_Spec retry_call_spec = {
    "virtrigaud_resilience._core.RetryCall", sizeof(RetryCallObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL
#ifdef Py_TPFLAGS_METHOD_DESCRIPTOR
        | Py_TPFLAGS_METHOD_DESCRIPTOR
#endif
    ,
    retry_call_type_slots};

// ---------------------------------------------------------------- Backoff --

struct PyBackoff {
    vr::Backoff core;
    PyBackoff(double base, double cap, double multiplier, bool jitter, int strategy,
              bool seeded, uint64_t seed)
        : core(base, cap, multiplier, jitter, static_cast<vr::Strategy>(strategy & 3), seeded,
               seed) {}
};

double backoff_delay(PyBackoff& b, nb::handle attempt, double previous) {
    int64_t n = 0;
    if (!int_arg(attempt.ptr(), "Backoff", "attempt", n)) {
        throw nb::python_error();
    }
    if (n < 0) {
        throw nb::value_error(("Backoff attempt must be >= 0, got " +
                               std::string(nb::str(nb::repr(attempt)).c_str()))
                                  .c_str());
    }
    if (!std::isfinite(previous) || previous < 0) {
        previous = 0;
    }
    return b.core.delay(n, previous);
}

// Installs the raw hot methods on a Python subclass too. CPython specialises
// a call of a method descriptor only when self's type is exactly the
// descriptor's type; without this, a subclass pays ~10 ns more per call. A
// method the subclass overrides is left alone: its override must win.
void specialise(nb::handle cls) {
    if (!PyType_Check(cls.ptr())) {
        throw nb::type_error("_specialise() takes a class");
    }
    auto* type = reinterpret_cast<PyTypeObject*>(cls.ptr());
    const auto is = [type](nb::handle base) {
        return PyType_IsSubtype(type, reinterpret_cast<PyTypeObject*>(base.ptr())) != 0;
    };
    if (is(nb::type<PyTokenBucket>())) {
        specialise_method(cls, &bucket_try_acquire_def);
    } else if (is(nb::type<PyCircuitBreaker>())) {
        specialise_method(cls, &breaker_call_def);
    } else if (is(nb::type<PyPolicy>())) {
        specialise_method(cls, &policy_execute_def);
        specialise_method(cls, &policy_enter_def);
        specialise_method(cls, &policy_exit_def);
    } else {
        throw nb::type_error("_specialise() takes a subclass of TokenBucket, CircuitBreaker or Policy");
    }
}

}  // namespace

NB_MODULE(_core, m) {
    m.doc() = "Lock-free circuit breaker, GCRA token bucket and backoff (C++ core).";
    // Breakers and buckets held by module globals (registries, policies) are
    // legitimately alive when nanobind checks for leaks at shutdown; its
    // warning would be noise in every user's program.
    nb::set_leak_warnings(false);
    bind_contract(m);

    m.def("monotonic_ns", &vr::steady_now_ns,
          "Nanoseconds of the monotonic clock every primitive uses when it has no ManualClock.");
    m.def("_install_hooks", &install_hooks, "reject"_a.none(), "on_transition"_a.none(),
          "Installed once by the package: the open breaker's error factory and the\n"
          "state-change dispatcher.");
    m.def("_set_rate_limited_hook", &set_rate_limited_hook, "hook"_a.none(),
          "Installs hook(bucket, n), called when a bucket refuses n tokens (None removes it).");
    m.attr("TOKEN_BUCKET_MAX_BURST") = vr::TokenBucket::kMaxBurst;
    m.attr("TOKEN_BUCKET_MAX_INTERVAL_NS") = vr::TokenBucket::kMaxIntervalNs;
    m.attr("TOKEN_BUCKET_MAX_TAU_NS") = vr::TokenBucket::kMaxTauNs;
    m.attr("TOKEN_BUCKET_MAX_WAIT_NS") = vr::TokenBucket::kMaxWaitNs;
    m.attr("BREAKER_MAX_FAILURE_THRESHOLD") = vr::CircuitBreaker::kMaxFailureThreshold;
    m.attr("BREAKER_MAX_HALF_OPEN_CALLS") = vr::CircuitBreaker::kMaxHalfOpenCalls;
    m.attr("BREAKER_MAX_TIMEOUT_NS") = vr::CircuitBreaker::kMaxTimeoutNs;
    m.attr("MAX_CLOCK_NS") = vr::kMaxClockNs;

    g_coroutine_type = nb::module_::import_("types").attr("CoroutineType").inc_ref().ptr();
    g_generator_type = nb::module_::import_("types").attr("GeneratorType").inc_ref().ptr();
    g_method_type = nb::module_::import_("types").attr("MethodType").inc_ref().ptr();
    g_operator_not = nb::module_::import_("operator").attr("not_").inc_ref().ptr();
    g_statistics_str = PyUnicode_InternFromString("statistics");
    {
        PyObject* retry_call_type = PyType_FromSpec(&retry_call_spec);
        if (retry_call_type == nullptr) {
            throw nb::python_error();
        }
        nb::object type = nb::steal(retry_call_type);
        type.attr("__module__") = m.attr("__name__");  // as nanobind's classes (stubgen reads it)
        m.attr("RetryCall") = type;
    }
    {
        PyObject* one_shot_type = PyType_FromSpec(&one_shot_spec);
        if (one_shot_type == nullptr) {
            throw nb::python_error();
        }
        nb::object type = nb::steal(one_shot_type);
        type.attr("__module__") = m.attr("__name__");
        m.attr("OneShot") = type;
        g_one_shot_type = type.inc_ref().ptr();  // module lifetime
    }
    {
        PyObject* bases = PyTuple_Pack(1, g_one_shot_type);
        PyObject* slot_type =
            bases != nullptr ? PyType_FromSpecWithBases(&bulkhead_slot_spec, bases) : nullptr;
        Py_XDECREF(bases);
        if (slot_type == nullptr) {
            throw nb::python_error();
        }
        nb::object type = nb::steal(slot_type);
        type.attr("__module__") = m.attr("__name__");
        m.attr("BulkheadSlot") = type;
        g_bulkhead_slot_type = type.inc_ref().ptr();  // module lifetime
        g_context_var_type =
            nb::module_::import_("contextvars").attr("ContextVar").inc_ref().ptr();
        g_str_get = PyUnicode_InternFromString("get");
        g_str_set = PyUnicode_InternFromString("set");
    }

    nb::class_<vr::ManualClock>(m, "ManualClock",
                                "A clock that moves only when told to (native part).")
        .def(nb::init<int64_t>(), "start_ns"_a = 0)
        .def("now_ns", &vr::ManualClock::now, "The current time in nanoseconds.")
        .def(
            "now", [](const vr::ManualClock& c) { return static_cast<double>(c.now()) / kNsPerSecond; },
            "The current time in seconds.")
        .def("_advance_ns", &vr::ManualClock::advance, "delta_ns"_a,
             "Moves time forward (a negative delta does nothing; time stops at MAX_CLOCK_NS).")
        .def("_set_ns", &vr::ManualClock::set, "t_ns"_a,
             "Sets the time (clamped to [0, MAX_CLOCK_NS]) if it is not in the past;\n"
             "returns whether it moved.");

    nb::class_<PyTokenBucket> bucket(m, "TokenBucket", "GCRA token bucket (native part).");
    bucket
        .def(nb::init<int64_t, int64_t, const vr::ManualClock*>(), "interval_ns"_a, "burst"_a,
             "clock"_a.none() = nullptr, nb::keep_alive<1, 4>())
        .def(
            "_reserve",
            [](nb::pointer_and_handle<PyTokenBucket> self, int64_t n, int64_t max_wait_ns) {
                const auto r = self.p->core.reserve(n, max_wait_ns);
                if (!r.ok && !notify_rate_limited(self.h.ptr(), n)) {
                    throw nb::python_error();
                }
                return std::make_tuple(r.ok, r.delay_ns, r.tat_after, r.time_to_act, r.config);
            },
            "n"_a, "max_wait_ns"_a,
            "Reserves n tokens: (ok, delay_ns, tat_after, time_to_act, config). ok is\n"
            "False, and nothing is reserved, when the wait would exceed max_wait_ns.")
        .def(
            "_cancel",
            [](PyTokenBucket& b, int64_t n, int64_t tat_after, int64_t time_to_act,
               uint64_t config) { return b.core.cancel(n, tat_after, time_to_act, config); },
            "n"_a, "tat_after"_a, "time_to_act"_a, "config"_a)
        .def(
            "_refund",
            [](PyTokenBucket& b, int64_t n, int64_t tat_after, uint64_t config) {
                return b.core.refund(n, tat_after, config);
            },
            "n"_a, "tat_after"_a, "config"_a,
            "Gives back n tokens taken for a call that never ran (minus those taken\n"
            "since; nothing once the rate changed); returns the tokens given back.")
        .def(
            "_set_rate",
            [](PyTokenBucket& b, int64_t interval_ns, int64_t burst, int64_t max_tokens) {
                b.core.set_rate(interval_ns, burst, max_tokens);
            },
            "interval_ns"_a, "burst"_a, "max_tokens"_a = vr::TokenBucket::kMaxBurst,
            "Changes the rate; the tokens available now are kept, at most the new burst\n"
            "and at most max_tokens (0 empties the bucket).")
        .def(
            "_set_refusal_calls_python",
            [](PyTokenBucket& b, bool on) {
                b.refusal_calls_python.store(on, std::memory_order_relaxed);
            },
            "on"_a,
            "While on, a refusal by try_acquire returns (or raises) what\n"
            "self._refused(n) does; an admission never looks at the flag.")
        .def("_now_ns", [](const PyTokenBucket& b) { return vr::now_ns(b.core.clock()); })
        .def(
            "_try_acquire_ns",
            [](PyTokenBucket& b, int64_t cost_ns, int64_t now_ns) {
                return b.core.try_acquire_ns(cost_ns, now_ns);
            },
            "cost_ns"_a, "now_ns"_a = -1,
            "Takes cost_ns of capacity (n tokens cost n * interval_ns) if it conforms at\n"
            "now_ns (< 0: the bucket's clock); never waits.")
        .def(
            "_debt_ns",
            [](const PyTokenBucket& b, int64_t now_ns) { return b.core.debt_ns(now_ns); },
            "now_ns"_a = -1,
            "Capacity in use at now_ns, in ns: a cost c conforms iff debt + c <= burst * interval.")
        .def_prop_ro("tokens", [](const PyTokenBucket& b) { return b.core.tokens(); },
                     "Tokens available now (a float); negative while reservations wait.")
        .def_prop_ro("burst", [](const PyTokenBucket& b) { return b.core.burst(); },
                     "Bucket capacity in tokens.")
        .def_prop_ro("interval_ns", [](const PyTokenBucket& b) { return b.core.interval_ns(); },
                     "Nanoseconds per token.")
        .def_prop_ro(
            "qps",
            [](const PyTokenBucket& b) {
                return kNsPerSecond / static_cast<double>(b.core.interval_ns());
            },
            "Tokens per second (as rounded to a whole nanosecond per token).")
        .def_prop_ro("admitted", [](const PyTokenBucket& b) { return b.core.admitted(); },
                     "Acquisitions granted at once (try_acquire True, reserve with no wait).")
        .def_prop_ro("rejected", [](const PyTokenBucket& b) { return b.core.rejected(); },
                     "Acquisitions refused (try_acquire False, reserve over its max wait).")
        .def_prop_ro("reserved", [](const PyTokenBucket& b) { return b.core.reserved(); },
                     "Reservations granted with a wait.")
        .def_prop_ro("cancelled", [](const PyTokenBucket& b) { return b.core.cancelled(); },
                     "Reservations cancelled, and acquisitions refunded (a policy's call that\n"
                     "never ran), that gave tokens back.")
        .def(
            "_counters",
            [](const PyTokenBucket& b) {
                return std::make_tuple(b.core.admitted(), b.core.rejected(), b.core.reserved());
            },
            "(admitted, rejected, reserved) in one call, for the metrics collector.");
    add_fastcall_method(bucket, &bucket_try_acquire_def);

    nb::class_<PyCircuitBreaker> breaker(m, "CircuitBreaker",
                                         "Lock-free circuit breaker (native part).",
                                         nb::type_slots(breaker_slots));
    breaker
        .def(nb::init<std::string, std::string, std::string, uint32_t, int64_t, uint32_t,
                      const vr::ManualClock*, nb::object, int64_t>(),
             "name"_a, "provider_type"_a, "provider"_a, "failure_threshold"_a,
             "reset_timeout_ns"_a, "half_open_max_calls"_a, "clock"_a.none(), "classify"_a,
             "half_open_lease_ns"_a = 0, nb::keep_alive<1, 8>())
        .def(
            "_admit",
            [](Self self) {
                vr::Ticket ticket;
                if (!admit(self.h.ptr(), self.p, ticket)) {
                    throw nb::python_error();
                }
                return ticket.encode();
            },
            "Admits a call and returns its ticket, or raises the open breaker's error.")
        .def(
            "_record",
            [](Self self, int64_t ticket, int outcome) {
                if (!record(self.h.ptr(), self.p, vr::Ticket::decode(ticket), outcome)) {
                    throw nb::python_error();
                }
            },
            "ticket"_a, "outcome"_a,
            "Records a ticket's outcome: 0 success, 1 failure, 2 release (cancelled).")
        .def(
            "_record_exception",
            [](Self self, int64_t ticket, nb::handle exc) {
                HookError error;
                record_exception(self.h.ptr(), self.p, vr::Ticket::decode(ticket), exc.ptr(),
                                 error);
                if (error.raise()) {
                    throw nb::python_error();
                }
            },
            "ticket"_a, "exc"_a, "Records a ticket whose call raised exc, as classify says.")
        .def(
            "reset",
            [](Self self) {
                if (!notify(self.h.ptr(), self.p->core.reset())) {
                    throw nb::python_error();
                }
            },
            "Closes the breaker and forgets its failures (manual override).")
        .def(
            "force_open",
            [](Self self) {
                if (!notify(self.h.ptr(), self.p->core.force_open())) {
                    throw nb::python_error();
                }
            },
            "Opens the breaker and holds it open until reset() (manual override).")
        .def(
            "_trip",
            [](Self self, int64_t open_for_ns) {
                if (!notify(self.h.ptr(), self.p->core.trip_for(open_for_ns))) {
                    throw nb::python_error();
                }
            },
            "open_for_ns"_a,
            "Opens the breaker (or re-times an open one) to admit its next probe\n"
            "open_for_ns from now; a held-open breaker stays held.")
        .def_prop_ro("_state_code",
                     [](const PyCircuitBreaker& b) { return state_code(b.core.state()); })
        .def(
            "_set_hooks",
            [](PyCircuitBreaker& b, uint32_t hooks) {
                b.hooks.store(hooks, std::memory_order_relaxed);
            },
            "hooks"_a,
            "Hands parts of the call path to Python methods (Hooks flags): TRANSITION\n"
            "_transition, REJECT _on_reject, ERROR _on_error, GENERATOR _on_generator,\n"
            "ACCEPT_COROUTINE coroutine results are values, DELEGATE call() is _call_python().")
        .def(
            "_try_admit",
            [](Self self) -> int64_t {
                vr::Ticket ticket;
                if (!admit_quietly_rejected(self.h.ptr(), self.p, ticket)) {
                    throw nb::python_error();
                }
                return ticket.encode();
            },
            "Admits a call: its ticket, or -1 when the breaker refuses it (nothing raised).")
        .def(
            "_record_quiet",
            [](PyCircuitBreaker& b, int64_t ticket, int outcome, int64_t synced) {
                const vr::Ticket t = vr::Ticket::decode(ticket);
                switch (outcome) {
                    case kSuccess:
                        return transition_tuple(b.core.record_success(t, synced));
                    case kFailure:
                        return transition_tuple(b.core.record_failure(t, synced));
                    default:
                        b.core.release(t);
                        return MaybeTransition();
                }
            },
            "ticket"_a, "outcome"_a, "synced"_a = -1,
            "Records a ticket's outcome (0 success, 1 failure, 2 release) without telling\n"
            "anyone; returns the transition (old, new) or None. `synced` >= 0 is the\n"
            "storage's count after this outcome (successful probes, or the failure streak).")
        .def(
            "_move",
            [](PyCircuitBreaker& b, int kind) {
                switch (kind) {
                    case kMoveClose:
                        return transition_tuple(b.core.reset());
                    case kMoveHalfOpen:
                        return transition_tuple(b.core.to_half_open());
                    case kMoveOpen:
                        return transition_tuple(b.core.trip(false));
                    case kMoveOpenCounted:
                        return transition_tuple(b.core.trip(true));
                    default:
                        throw nb::value_error("_move kind must be 0 close, 1 half-open, 2 open, 3 open + failure");
                }
            },
            "kind"_a,
            "A manual transition without telling anyone: 0 close, 1 half-open (slots\n"
            "free), 2 open (times out as a trip does), 3 open counting one failure.\n"
            "Returns the visible transition (old, new) or None.")
        .def(
            "_restore",
            [](PyCircuitBreaker& b, int state, int64_t streak, int64_t successes,
               int64_t opened_at_ns) {
                return transition_tuple(
                    b.core.restore(state_from_code(state), streak, successes, opened_at_ns));
            },
            "state"_a, "streak"_a, "successes"_a, "opened_at_ns"_a,
            "Sets state, failure streak, half-open successes and the opening stamp at\n"
            "once (quiet); returns the visible transition (old, new) or None.")
        .def(
            "_configure",
            [](PyCircuitBreaker& b, uint32_t failure_threshold, int64_t reset_timeout_ns,
               uint32_t success_threshold) {
                b.core.set_failure_threshold(failure_threshold);
                b.core.set_reset_timeout_ns(reset_timeout_ns);
                b.core.set_success_threshold(success_threshold);
            },
            "failure_threshold"_a, "reset_timeout_ns"_a, "success_threshold"_a,
            "Changes the thresholds at run time (clamped; the caller validates).")
        .def_prop_ro("failure_streak", [](const PyCircuitBreaker& b) { return b.core.failure_streak(); },
                     "Counted failures since the last success or close, across opening.")
        .def_prop_ro("half_open_successes",
                     [](const PyCircuitBreaker& b) { return b.core.half_open_successes(); },
                     "Successful probes of the current half-open round.")
        .def_prop_ro("success_threshold",
                     [](const PyCircuitBreaker& b) { return b.core.success_threshold(); },
                     "0: the guide's half-open rule; S: the S-th successful probe closes.")
        .def_prop_ro("opened_at_ns", [](const PyCircuitBreaker& b) { return b.core.opened_at_ns(); },
                     "Clock time (ns) of the last opening; 0 if none.")
        .def("_now_ns", [](const PyCircuitBreaker& b) { return b.core.now(); },
             "The breaker's clock, in ns.")
        .def_prop_ro("held_open", [](const PyCircuitBreaker& b) {
            return b.core.state() == vr::BreakerState::kHeldOpen;
        }, "True while force_open() holds the breaker open.")
        .def_prop_ro("failures",
                     [](const PyCircuitBreaker& b) { return b.core.consecutive_failures(); },
                     "Consecutive counted failures while closed.")
        .def_prop_ro("half_open_calls",
                     [](const PyCircuitBreaker& b) { return b.core.half_open_calls(); },
                     "Half-open probe calls admitted and not released.")
        .def_prop_ro("generation", [](const PyCircuitBreaker& b) { return b.core.generation(); },
                     "Bumped by every transition (64 bits: it never wraps in practice).")
        .def_prop_ro(
            "remaining_open",
            [](const PyCircuitBreaker& b) {
                return static_cast<double>(b.core.remaining_open_ns()) / kNsPerSecond;
            },
            "Seconds until an open breaker admits a probe; 0 when not open.")
        .def_ro("name", &PyCircuitBreaker::name)
        .def_ro("provider_type", &PyCircuitBreaker::provider_type)
        .def_ro("provider", &PyCircuitBreaker::provider)
        .def_prop_ro("failure_threshold",
                     [](const PyCircuitBreaker& b) { return b.core.failure_threshold(); })
        .def_prop_ro("half_open_max_calls",
                     [](const PyCircuitBreaker& b) { return b.core.half_open_max_calls(); })
        .def_prop_ro("reset_timeout",
                     [](const PyCircuitBreaker& b) {
                         return static_cast<double>(b.core.reset_timeout_ns()) / kNsPerSecond;
                     })
        .def_prop_ro("successes", [](const PyCircuitBreaker& b) { return b.core.successes(); },
                     "Outcomes recorded as success (stale ones included).")
        .def_prop_ro("failures_total",
                     [](const PyCircuitBreaker& b) { return b.core.failures_total(); },
                     "Outcomes recorded as failure (stale ones included).")
        .def_prop_ro("rejected", [](const PyCircuitBreaker& b) { return b.core.rejected(); },
                     "Calls refused without running.")
        .def_prop_ro("released", [](const PyCircuitBreaker& b) { return b.core.released(); },
                     "Admitted calls that ended without an outcome (cancelled).")
        .def_prop_ro("reclaimed", [](const PyCircuitBreaker& b) { return b.core.reclaimed(); },
                     "Half-open rounds restarted because every probe outlived its lease.")
        .def_prop_ro(
            "half_open_lease",
            [](const PyCircuitBreaker& b) -> std::optional<double> {
                if (b.core.half_open_lease_ns() == 0) {
                    return std::nullopt;
                }
                return static_cast<double>(b.core.half_open_lease_ns()) / kNsPerSecond;
            },
            "Seconds a half-open probe may go unreported before its slot is reclaimed;\n"
            "None for no lease.")
        .def_prop_ro(
            "transitions",
            [](const PyCircuitBreaker& b) {
                return std::make_tuple(b.core.transitions_to(vr::BreakerState::kClosed),
                                       b.core.transitions_to(vr::BreakerState::kHalfOpen),
                                       b.core.transitions_to(vr::BreakerState::kOpen));
            },
            "Transitions into (closed, half-open, open).")
        .def_prop_ro("last_transition_ns",
                     [](const PyCircuitBreaker& b) { return b.core.last_transition_ns(); },
                     "Clock time of the last transition in ns, 0 if none.")
        .def(
            "_counters",
            [](const PyCircuitBreaker& b) {
                const auto& c = b.core;
                return std::make_tuple(state_code(c.state()), c.successes(), c.failures_total(),
                                       c.rejected(), c.transitions_to(vr::BreakerState::kClosed),
                                       c.transitions_to(vr::BreakerState::kHalfOpen),
                                       c.transitions_to(vr::BreakerState::kOpen));
            },
            "(state, successes, failures_total, rejected, to_closed, to_half_open, to_open)\n"
            "in one call, for the metrics collector.");
    add_fastcall_method(breaker, &breaker_call_def);
    m.attr("BREAKER_MAX_SUCCESS_THRESHOLD") = vr::CircuitBreaker::kMaxSuccessThreshold;
    {
        PyObject* guarded_type = PyType_FromSpec(&guarded_spec);
        if (guarded_type == nullptr) {
            throw nb::python_error();
        }
        m.attr("Guarded") = nb::steal(guarded_type);
    }


    nb::class_<PyBulkhead> bulkhead(m, "Bulkhead", "Bounded concurrency counter (native part).");
    bulkhead
        .def(nb::init<int64_t>(), "max_concurrent"_a)
        .def("_try_take", [](PyBulkhead& b) { return b.core.try_enter(); },
             "try_enter() without counting a refusal (the caller may queue).")
        .def("_take_as_waiter", [](PyBulkhead& b) { return b.core.take(); },
             "Takes a free slot whoever is queued: for the waiter at the head.")
        .def("_count_rejection", [](PyBulkhead& b) { b.core.count_rejection(); })
        .def(
            "_free",
            [](nb::pointer_and_handle<PyBulkhead> self) {
                if (!bulkhead_exit(self.h.ptr(), self.p)) {
                    throw nb::python_error();
                }
            },
            "Gives a slot back without a token (a slot handed to a waiter that left):\n"
            "to the longest waiter if one is queued, else to the pool. Raises\n"
            "RuntimeError, changing nothing, when no call is in flight.")
        .def("_add_waiter", [](PyBulkhead& b, int64_t delta) { b.core.add_waiter(delta); },
             "delta"_a)
        .def_prop_ro("max_concurrent", [](const PyBulkhead& b) { return b.core.max_concurrent(); })
        .def_prop_ro("in_flight", [](const PyBulkhead& b) { return b.core.in_flight(); },
                     "Calls holding a slot now.")
        .def_prop_ro("waiting", [](const PyBulkhead& b) { return b.core.waiters(); },
                     "asyncio tasks queued for a slot.")
        .def_prop_ro("admitted", [](const PyBulkhead& b) { return b.core.admitted(); },
                     "Slots granted.")
        .def_prop_ro("rejected", [](const PyBulkhead& b) { return b.core.rejected(); },
                     "Attempts turned away: try_enter() False, a full bulkhead raised, or a\n"
                     "queued wait that timed out. A waiter admitted later is not one.");
    for (PyMethodDef* def : {&bulkhead_enter_def, &bulkhead_try_enter_def, &bulkhead_hold_def,
                             &bulkhead_exit_def, &bulkhead_dunder_enter_def,
                             &bulkhead_dunder_exit_def}) {
        add_fastcall_method(bulkhead, def);
    }

    nb::class_<PyPolicy> policy(m, "Policy", "Composed policy (native part).",
                                nb::type_slots(policy_slots));
    policy
        .def(nb::init<nb::handle, nb::handle, nb::handle, bool, bool>(), "breaker"_a.none(),
             "bucket"_a.none(), "bulkhead"_a.none(), "fast"_a, "waits"_a)
        .def(
            "_exit_exception",
            [](PyPolicy& p, int64_t ticket, nb::handle exc) {
                HookError error;
                p.exit_raised(vr::Ticket::decode(ticket), exc.ptr(), error);
                if (error.raise()) {
                    throw nb::python_error();
                }
            },
            "ticket"_a, "exc"_a, "The attempt raised exc: record it and free its slot.")
        .def(
            "_exit_unrun",
            [](PyPolicy& p, int64_t ticket) {
                if (!p.exit_unrun(vr::Ticket::decode(ticket))) {
                    throw nb::python_error();
                }
            },
            "ticket"_a, "The attempt did not run after all: give its slots back, record nothing.");
    add_fastcall_method(policy, &policy_execute_def);
    add_fastcall_method(policy, &policy_enter_def);
    add_fastcall_method(policy, &policy_exit_def);

    m.def(
        "_held",
        [](nb::handle breaker, nb::handle bucket) {
            return virtrigaud_held::held(breaker.is_none() ? nullptr : breaker.ptr(),
                                         bucket.is_none() ? nullptr : bucket.ptr());
        },
        "breaker"_a.none(), "bucket"_a.none(),
        "Whether a native sync attempt of this thread (Policy.execute's first,\n"
        "CircuitBreaker.call) is running inside its call and holds `breaker`\n"
        "(Held.BREAKER) or a token of `bucket` (Held.BUCKET).");
    m.def(
        "_track_held",
        [] { virtrigaud_held::g_tracking.store(true, std::memory_order_relaxed); },
        "From now on native sync attempts record what they hold, for _held()\n"
        "(an adapter exists).");
    m.def("_specialise", &specialise, "cls"_a,
          "Installs the fast hot methods on a subclass of TokenBucket, CircuitBreaker or Policy.");

    nb::class_<PyBackoff>(m, "Backoff", "Backoff delay calculator (native part).")
        .def(nb::init<double, double, double, bool, int, bool, uint64_t>(), "base_delay"_a,
             "max_delay"_a, "multiplier"_a, "jitter"_a, "strategy"_a, "seeded"_a, "seed"_a)
        .def("delay", &backoff_delay, "attempt"_a.none(), "previous"_a = 0.0,
             "Seconds to wait before retry `attempt` (an int >= 0; attempts beyond\n"
             "int64 saturate at max_delay). `previous` is the delay used before, for\n"
             "decorrelated_jitter.")
        .def("uniform", [](PyBackoff& b) { return b.core.uniform(); },
             "One draw in [0, 1) from this calculator's generator.");
}
