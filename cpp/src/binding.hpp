// The shared part of the _core bindings (cpp/src/bind_*.cpp): the helpers
// every bound type uses, the module's hooks into Python, the codes shared
// with Python, and the native objects one type's binding reaches into from
// another's (the policy drives a breaker, a bucket and a bulkhead).
//
// Constructors and cold methods are ordinary nanobind bindings. The hot
// methods (TokenBucket.try_acquire, CircuitBreaker.call) are raw
// METH_FASTCALL | METH_KEYWORDS functions installed as method descriptors:
// they skip nanobind's overload dispatch and forward the user's arguments
// with PyObject_Vectorcall, so a call through a breaker costs one extra C
// call rather than a tuple and a dict (measured: 34 ns against 106 ns for
// nb::args).
//
// Validation with field-naming messages happens in the Python layer; this
// layer clamps whatever it receives so no input can cause undefined
// behaviour, and validates the arguments of the raw hot methods itself.
//
// The functions here are static: each translation unit has its own copy,
// which the compiler inlines into the hot paths by the rules it applied when
// all the bindings were one file (link-time optimisation is on besides).
// Declared `inline` instead, they changed those rules: the cold helpers were
// inlined everywhere, and Policy.execute lost the inlining of its admission
// and of the breaker's record_success (+23 instructions per call, callgrind).
// The globals are `inline` variables: one of each across the files.

#pragma once

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
#include <deque>
#include <initializer_list>
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

#include "census.hpp"
#include "contract.hpp"
#include "held_attempts.hpp"

namespace nb = nanobind;
using namespace nb::literals;
namespace vr = virtrigaud;

// Inlined whatever the compiler's heuristics say: for a hot-path function
// that callgrind showed paying a call's prologue and epilogue around little
// more than stores (AsyncCall's constructor, and its clear_call(), which
// GCC's heuristics inline or not depending on the rest of the file).
#if defined(_MSC_VER) && !defined(__clang__)
#define VIRTRIGAUD_ALWAYS_INLINE __forceinline
#else
#define VIRTRIGAUD_ALWAYS_INLINE __attribute__((always_inline)) inline
#endif

// A translation unit uses some of the static functions below, not all.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#endif

namespace virtrigaud_bind {

inline constexpr double kNsPerSecond = 1e9;

// ---------------------------------------------------------------- errors --

// The raised exception, normalised, as a new reference; clears the indicator.
static PyObject* fetch_exception() {
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
static void restore_exception(PyObject* exc) {
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
static PyObject* type_name_of(PyObject* value) {
#if PY_VERSION_HEX >= 0x030B0000
    return PyType_GetName(Py_TYPE(value));
#else
    return PyUnicode_FromString(Py_TYPE(value)->tp_name);
#endif
}

// types.MethodType, set at import (PyMethod_Type is not in the stable ABI).
inline PyObject* g_method_type = nullptr;

// forward_call() for a bound method (a Python method object): its call puts
// its self in args[-1] when allowed to, or copies the arguments itself. The
// slot before args is not ours to offer (see forward_call), so the arguments
// are copied behind a spare slot of our own: on the stack up to kInlineArgs,
// on the heap beyond. Out of line: the other callees never pay its frame.
VIRTRIGAUD_NOINLINE static PyObject* forward_call_with_slot(PyObject* fn, PyObject* const* args,
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
static PyObject* forward_call(PyObject* fn, PyObject* const* args, size_t nargsf,
                              PyObject* kwnames) {
    if ((nargsf & PY_VECTORCALL_ARGUMENTS_OFFSET) != 0 ||
        reinterpret_cast<PyObject*>(Py_TYPE(fn)) != g_method_type) {
        return PyObject_Vectorcall(fn, args, nargsf, kwnames);
    }
    return forward_call_with_slot(fn, args, nargsf, kwnames);
}

// fn(arg), through vectorcall.
static PyObject* call_one(PyObject* fn, PyObject* arg) {
    PyObject* args[2] = {nullptr, arg};
    return PyObject_Vectorcall(fn, args + 1, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, nullptr);
}

// A vectorcall's arguments (args/nargs/kwnames as a callee gets them) as the
// (tuple, dict) pair a Python continuation takes: new references in `args`
// and `kwargs`, or false with an error set (and both null).
static bool pack_arguments(PyObject* const* argv, Py_ssize_t nargs, PyObject* kwnames,
                           PyObject*& args, PyObject*& kwargs) {
    args = PyTuple_New(nargs);
    kwargs = PyDict_New();
    bool ok = args != nullptr && kwargs != nullptr;
    for (Py_ssize_t i = 0; ok && i < nargs; ++i) {
        PyTuple_SetItem(args, i, Py_NewRef(argv[i]));
    }
    const Py_ssize_t nkw = ok && kwnames != nullptr ? PyTuple_Size(kwnames) : 0;
    for (Py_ssize_t i = 0; ok && i < nkw; ++i) {
        ok = PyDict_SetItem(kwargs, PyTuple_GetItem(kwnames, i), argv[nargs + i]) == 0;
    }
    if (!ok) {
        Py_CLEAR(args);
        Py_CLEAR(kwargs);
    }
    return ok;
}

// After a hook (Python code called from here) raised: an Exception is
// reported as unraisable and swallowed, so a broken listener never breaks a
// call; a BaseException that is not an Exception (KeyboardInterrupt,
// SystemExit) stays set for the caller to propagate, as Python code would.
// Returns false iff one stays set.
static bool absorb_hook_error(PyObject* hook) {
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
inline PyObject* g_coroutine_type = nullptr;

static bool is_coroutine(PyObject* value) {
    return reinterpret_cast<PyObject*>(Py_TYPE(value)) == g_coroutine_type;
}

// types.GeneratorType, set at import (PyGen_Check is not in the stable ABI).
inline PyObject* g_generator_type = nullptr;

static bool is_generator(PyObject* value) {
    return reinterpret_cast<PyObject*>(Py_TYPE(value)) == g_generator_type;
}

// A sync entry point got a coroutine back: the function is async. Closes the
// coroutine (its body never ran) and raises a TypeError that names the
// function and the async method to use. Steals `coro`; returns nullptr.
static PyObject* refuse_coroutine(PyObject* coro, const char* entry, const char* instead) {
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
static bool int_arg(PyObject* value, const char* owner, const char* field, int64_t& out) {
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
static bool one_optional_arg(const char* method, const char* name, PyObject* const* args,
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

// A new reference to the interned str `s` (module lifetime where it is
// kept in a global); throws what CPython raised (out of memory).
inline PyObject* interned(const char* s) {
    PyObject* str = PyUnicode_InternFromString(s);
    if (str == nullptr) {
        throw nb::python_error();
    }
    return str;
}

// A new tuple of the interned strs `names` (a vectorcall's keyword names,
// kept in a global); throws what CPython raised.
inline PyObject* interned_tuple(std::initializer_list<const char*> names) {
    PyObject* tuple = PyTuple_New(static_cast<Py_ssize_t>(names.size()));
    if (tuple == nullptr) {
        throw nb::python_error();
    }
    Py_ssize_t i = 0;
    for (const char* name : names) {
        PyObject* str = PyUnicode_InternFromString(name);
        if (str == nullptr) {
            Py_DECREF(tuple);
            throw nb::python_error();
        }
        PyTuple_SetItem(tuple, i++, str);  // steals
    }
    return tuple;
}

// Every descriptor add_fastcall_method() made (strong references: classes
// keep them alive anyway), so specialise() can tell ours from an override.
inline std::vector<PyObject*> g_fast_descriptors;

// Installs a raw fastcall function as a method of a nanobind class.
static void add_fastcall_method(nb::handle cls, PyMethodDef* def) {
    PyObject* descr = PyDescr_NewMethod(reinterpret_cast<PyTypeObject*>(cls.ptr()), def);
    if (descr == nullptr || PyObject_SetAttrString(cls.ptr(), def->ml_name, descr) != 0) {
        Py_XDECREF(descr);
        throw nb::python_error();
    }
    g_fast_descriptors.push_back(descr);
}

// True iff `cls.<name>` resolves to one of our native hot methods, i.e. no
// class between it and the native base defines its own.
static bool resolves_to_native(nb::handle cls, const char* name) {
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
static void specialise_method(nb::handle cls, PyMethodDef* def) {
    if (resolves_to_native(cls, def->ml_name)) {
        add_fastcall_method(cls, def);
    }
}

template <typename T>
static T* ready_instance(PyObject* self, const char* type_name) {
    if (!nb::inst_ready(self)) {
        PyErr_Format(PyExc_RuntimeError,
                     "%s instance is not initialised (did a subclass skip super().__init__()?)",
                     type_name);
        return nullptr;
    }
    return nb::inst_ptr<T>(self);
}

// The prologue of a raw fastcall method whose first argument is fn
// (Policy.execute, Policy.execute_async, CircuitBreaker.call and
// call_async): self's native instance, initialised, and an fn passed.
// nullptr with the error set otherwise; `method` names the method in the
// TypeError ("Policy.execute()").
template <typename T>
static T* fn_method_target(PyObject* self, Py_ssize_t nargsf, const char* type_name,
                           const char* method) {
    T* target = ready_instance<T>(self, type_name);
    if (target != nullptr && PyVectorcall_NARGS(nargsf) < 1) {
        PyErr_Format(PyExc_TypeError, "%s missing required argument 'fn'", method);
        return nullptr;
    }
    return target;
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
inline Hook g_reject;
inline Hook g_on_transition;

// Called with (bucket, n) when a bucket refuses n tokens; installed only while
// someone listens (events.on_rate_limited), so a refusal costs nothing extra
// otherwise.
inline Hook g_on_rate_limited;

// Tells Python that `bucket` refused n tokens. Call it with no Python error
// set (the hook is Python code). Returns false iff the hook let a
// KeyboardInterrupt or SystemExit through (left set); see absorb_hook_error.
static bool notify_rate_limited(PyObject* bucket, int64_t n) {
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

// The codes and flags the Python layer passes to and reads from these
// bindings (Hooks, Outcome, Stage, ...): contract.hpp, exported by bind_contract().
using namespace virtrigaud_contract;

// ------------------------------------------------------------ TokenBucket --

struct PyTokenBucket {
    // core.owner_flag, "a refusal calls Python": set by an owner for whom a
    // refusal is an error, not a "no" (a leased bucket denied by its
    // fallback): try_acquire then returns what self._refused(n) returns, or
    // raises what it raises. Read only after the core refused, so an
    // admitted call never looks at it.
    vr::TokenBucket core;
    CensusLinks census;  // its place among the live buckets (census.hpp)
    std::atomic<bool>& refusal_calls_python() noexcept { return core.owner_flag; }
    PyTokenBucket(int64_t interval_ns, int64_t burst, const vr::ManualClock* clock)
        : core(interval_ns, burst, clock) {}
    PyTokenBucket(const PyTokenBucket&) = delete;
    PyTokenBucket& operator=(const PyTokenBucket&) = delete;
    ~PyTokenBucket() { Census<PyTokenBucket>::unlink(this); }
};
// 64 bytes of state (the flag included) and the census links: 80 (a Python
// object of 160 bytes with the subclass's slots).
static_assert(sizeof(PyTokenBucket) <= 80, "PyTokenBucket grew");

// --------------------------------------------------------- CircuitBreaker --

// A _core.WindowSettings: one reference to settings that the breakers made
// with it share (each breaker holds a reference of its own).
struct PyWindowSettings {
    vr::SharedWindowSettings* shared;

    explicit PyWindowSettings(vr::SharedWindowSettings* s) noexcept : shared(s) {}
    PyWindowSettings(const PyWindowSettings&) = delete;
    PyWindowSettings& operator=(const PyWindowSettings&) = delete;
    ~PyWindowSettings() { shared->release(); }
    const vr::WindowSettings& get() const noexcept { return shared->get(); }
};

// The native breaker's Python-facing part. The core wants its three cache
// lines 64-byte aligned, but nanobind places an object aligned to 64 at a
// varying distance behind its header and reserves the worst case, 56 bytes,
// in every object. So this type is aligned to 8 only: the core sits at the
// first 64-byte boundary inside space_, and two rarely used fields
// (provider, listeners) take the bytes the alignment leaves free, before or
// after it (spare()). 296 bytes where the aligned layout took 312 + 24:
// the Python object is one pymalloc size class (16 bytes) smaller.
class PyCircuitBreaker {
    static constexpr size_t kCoreAlign = alignof(vr::CircuitBreaker);
    static constexpr size_t kSpare = kCoreAlign - alignof(void*);  // what the alignment leaves
    static_assert(kCoreAlign == 64 && sizeof(vr::CircuitBreaker) % kCoreAlign == 0,
                  "the core is whole cache lines");
    static_assert(2 * sizeof(nb::object) <= kSpare, "the spare fields fit what is left");

public:
    // The caller's str objects, held (not copied: three std::strings were
    // 96 bytes, and each read made a new str). Labels shared by a fleet's
    // breakers are then one object for all of them.
    nb::str name;
    nb::str provider_type;
    nb::object classify;  // classify(exc) -> 0 success, 1 failure, 2 release
    CensusLinks census;   // its place among the live breakers (census.hpp)
    // Hooks; atomic for free-threaded builds (set rarely, read by every call).
    std::atomic<uint32_t> hooks{0};

    PyCircuitBreaker(nb::str name_, nb::str provider_type_, nb::str provider_,
                     uint32_t threshold, int64_t reset_ns, uint32_t half_open_max,
                     const vr::ManualClock* clock, nb::object classify_, int64_t lease_ns,
                     const vr::SharedWindowSettings* window = nullptr)
        : name(std::move(name_)),
          provider_type(std::move(provider_type_)),
          classify(std::move(classify_)) {
        new (core_address()) vr::CircuitBreaker(threshold, reset_ns, half_open_max, clock,
                                                lease_ns);
        new (spare(kProviderSlot)) nb::str(std::move(provider_));
        new (spare(kListenersSlot)) nb::object(nb::none());
        if (window != nullptr) {
            core().use_window(*window);
        }
    }
    PyCircuitBreaker(const PyCircuitBreaker&) = delete;
    PyCircuitBreaker& operator=(const PyCircuitBreaker&) = delete;
    ~PyCircuitBreaker() {
        Census<PyCircuitBreaker>::unlink(this);
        listeners().~object();
        provider().~str();
        core().~CircuitBreaker();
    }

    vr::CircuitBreaker& core() noexcept {
        return *std::launder(reinterpret_cast<vr::CircuitBreaker*>(core_address()));
    }
    const vr::CircuitBreaker& core() const noexcept {
        return const_cast<PyCircuitBreaker*>(this)->core();
    }
    nb::str& provider() noexcept {
        return *std::launder(reinterpret_cast<nb::str*>(spare(kProviderSlot)));
    }
    const nb::str& provider() const noexcept {
        return const_cast<PyCircuitBreaker*>(this)->provider();
    }
    // breaker.py's listeners (a list, made on first use, or None): native,
    // rather than a Python slot of 8 more bytes per breaker (_listeners).
    nb::object& listeners() noexcept {
        return *std::launder(reinterpret_cast<nb::object*>(spare(kListenersSlot)));
    }

private:
    static constexpr size_t kProviderSlot = 0;
    static constexpr size_t kListenersSlot = 1;

    unsigned char* core_address() noexcept {
        // The first 64-byte boundary at or after space_ (kCoreAlign is a power of two).
        const uintptr_t at = reinterpret_cast<uintptr_t>(space_);
        return space_ + (((at + kCoreAlign - 1) & ~(kCoreAlign - 1)) - at);
    }
    // The spare bytes are those of space_ before the core, then those after
    // it: slot k is the k-th 8 bytes of them.
    void* spare(size_t slot) noexcept {
        const size_t before = static_cast<size_t>(core_address() - space_);
        const size_t at = slot * sizeof(void*);
        return space_ + at + (at < before ? 0 : sizeof(vr::CircuitBreaker));
    }

    alignas(void*) unsigned char space_[sizeof(vr::CircuitBreaker) + kSpare];
};
static_assert(alignof(PyCircuitBreaker) == alignof(void*),
              "nanobind must not pad the object for the core's alignment");

static int state_code(vr::BreakerState s) {
    return s == vr::BreakerState::kHeldOpen ? kStateOpen : static_cast<int>(s);
}

// Tells Python about a state change: the dispatcher logs and runs the
// listeners, swallowing what they raise (as absorb_hook_error does), or the
// breaker's own _transition() (kHookTransition), whose exceptions propagate.
// Returns false iff an exception was left set.
static bool notify(PyObject* breaker, const vr::Transition& t) {
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

// self.<method>(fn, *args, **kwargs) for a hook that takes the call's own
// arguments (args/nargsf/kwnames as the caller passed them to fn).
static PyObject* call_hook_with_args(PyObject* self, const char* method, PyObject* fn,
                                     PyObject* const* args, size_t nargsf,
                                     PyObject* kwnames) {
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

// Raises the open breaker's error. Always returns nullptr.
static PyObject* raise_rejected(PyObject* self) {
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

// Records `outcome` for `ticket` and tells Python about any transition.
// Returns false iff a state listener let a BaseException through (left set).
static bool record(PyObject* self, PyCircuitBreaker* b, const vr::Ticket& ticket, int outcome) {
    switch (outcome) {
        case kSuccess:
            return notify(self, b->core().record_success(ticket));
        case kRelease:
            b->core().release(ticket);
            return true;
        default:
            return notify(self, b->core().record_failure(ticket));
    }
}

// Asks the breaker's classifier what `exc` means. A classifier that raises an
// Exception is reported as unraisable and the error counts as a failure; one
// that raises a KeyboardInterrupt or SystemExit returns kRaisedOutcome with
// it set.
static int outcome_of(PyCircuitBreaker* b, PyObject* exc) {
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
static void record_exception(PyObject* self, PyCircuitBreaker* b, const vr::Ticket& ticket,
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

inline PyObject* g_one_shot_type = nullptr;

// True for exactly one caller per object.
static bool claim(PyObject* self) {
    return reinterpret_cast<OneShotObject*>(self)->done.exchange(1, std::memory_order_acq_rel) ==
           0;
}

// ------------------------------------------------------------- ContextVar --
//
// ContextVar access (a bulkhead's held slots, the retry entry's reads of the
// enclosing deadline and attempt). The C API where the build has it; the
// stable ABI (abi3 wheels) has no contextvars functions, so those builds call
// the var's methods instead (a method lookup more per access).

inline PyObject* g_str_get = nullptr;  // "get" and "set", interned at import
inline PyObject* g_str_set = nullptr;  // (bind_bulkhead_slot)

#if defined(Py_LIMITED_API) || defined(VIRTRIGAUD_CONTEXTVAR_BY_METHOD)
#define VIRTRIGAUD_CONTEXTVAR_METHODS 1
#endif

// The var's value in the current context as a new reference, nullptr when
// it is None or unset (a var made with a default may give that instead of
// nullptr when unset: the C API does, the methods do not). Returns false
// with an error set.
static bool context_var_get(PyObject* var, PyObject*& value) {
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
static bool context_var_set(PyObject* var, PyObject* value) {
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

// --------------------------------------------------------------- Bulkhead --

inline PyObject* g_context_var_type = nullptr;  // contextvars.ContextVar, set at import

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
static bool call_queue(PyObject* obj, const char* method, bool& result) {
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
static bool bulkhead_exit(PyObject* obj, PyBulkhead* b) {
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

// ------------------------------------------------------- the bound types --

// The members of the plain C types (vectorcall, __dict__ and weakref offsets).
#if PY_VERSION_HEX >= 0x030C0000
#define VR_T_PYSSIZET Py_T_PYSSIZET
#define VR_READONLY Py_READONLY
#else
#define VR_T_PYSSIZET T_PYSSIZET
#define VR_READONLY READONLY
#endif

// A type made from a spec, with the module's name as its __module__ (as
// nanobind's classes: stubgen reads it), as a new reference; throws when
// the interpreter refuses it. `bases` may be null. An immutable type's
// __module__ cannot be set afterwards: its spec's short name is prefixed
// with the module's first (the type keeps pointing into that string).
static nb::object type_from_spec(nb::module_& m, PyType_Spec* spec, PyObject* bases = nullptr) {
    const bool immutable = (spec->flags & Py_TPFLAGS_IMMUTABLETYPE) != 0;
    if (immutable) {
        static std::deque<std::string> qualified;  // module lifetime: the types point here
        qualified.push_back(nb::cast<std::string>(m.attr("__name__")) + "." + spec->name);
        spec->name = qualified.back().c_str();
    }
    PyObject* type = bases != nullptr ? PyType_FromSpecWithBases(spec, bases)
                                      : PyType_FromSpec(spec);
    if (type == nullptr) {
        throw nb::python_error();
    }
    nb::object result = nb::steal(type);
    if (!immutable) {
        result.attr("__module__") = m.attr("__name__");
    }
    return result;
}

// The plain C types that stand for a function (BreakerCall, RetryCall) share
// a function's __get__ and its pickling.

// tp_descr_get: bound to an instance as a method when looked up through one,
// as a Python function is.
static PyObject* bind_as_method(PyObject* self, PyObject* obj, PyObject*) {
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

// The references a raw GC'd type holds (members of T, each a PyObject* or
// null), listed once: traverse() visits the type and each of them, clear()
// drops each of them, so tp_traverse and tp_clear cannot disagree on a field
// (and assign() sets them all, for a type built from as many arguments).
// A type holding more (a variable part, a nested struct) calls these first.
inline void clear_reference(PyObject*& ref) { Py_CLEAR(ref); }

template <typename T, PyObject* T::*... Fields>
struct References {
    static constexpr int kCount = static_cast<int>(sizeof...(Fields));

    // Sets the fields, in the list's order, to new references to values[0 .. kCount).
    static void assign(T* t, PyObject* const* values) {
        int i = 0;
        ((t->*Fields = Py_NewRef(values[i++])), ...);
    }
    static int traverse(PyObject* self, visitproc visit, void* arg) {
        Py_VISIT(Py_TYPE(self));
        T* t = reinterpret_cast<T*>(self);
        int r = 0;
        static_cast<void>(((t->*Fields != nullptr && (r = visit(t->*Fields, arg)) != 0) || ...));
        return r;
    }
    static int clear(PyObject* self) {
        T* t = reinterpret_cast<T*>(self);
        (clear_reference(t->*Fields), ...);
        return 0;
    }
};

// The Py_tp_members of a raw type whose one member is the offset of its
// vectorcall (T::vectorcall), which the type's creation reads.
template <typename T>
inline PyMemberDef vectorcall_members[2] = {
    {"__vectorcalloffset__", VR_T_PYSSIZET, offsetof(T, vectorcall), VR_READONLY, nullptr},
    {nullptr, 0, 0, 0, nullptr}};

// tp_dealloc of a GC'd heap type whose tp_clear (`Clear`) drops every
// reference it holds: untracked, cleared, freed, its type released.
template <int (*Clear)(PyObject*)>
void dealloc_cleared(PyObject* self) {
    PyTypeObject* type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Clear(self);
    reinterpret_cast<freefunc>(PyType_GetSlot(type, Py_tp_free))(self);
    Py_DECREF(type);
}

// __reduce__: pickled by reference, as the function it stands for
// (functools.wraps gave it the function's __qualname__ and __module__):
// pickle looks the name up.
static PyObject* reduce_by_qualname(PyObject* self, PyObject*) {
    return PyObject_GetAttrString(self, "__qualname__");
}

// Whether cls is base or a subclass of it.
static bool is_subclass(nb::handle cls, nb::handle base) {
    return PyType_IsSubtype(reinterpret_cast<PyTypeObject*>(cls.ptr()),
                            reinterpret_cast<PyTypeObject*>(base.ptr())) != 0;
}

// Each adds its type(s) to the module (bind_<file>.cpp); NB_MODULE calls them
// in this order (a base before its subclass: OneShot before BulkheadSlot).
void bind_retry(nb::module_& m);       // RetryCall, RetryEntry
void bind_one_shot(nb::module_& m);    // OneShot
void bind_bulkhead_slot(nb::module_& m);  // BulkheadSlot
void bind_clock(nb::module_& m);       // ManualClock
void bind_bucket(nb::module_& m);      // TokenBucket
void bind_breaker(nb::module_& m);     // CircuitBreaker, BreakerCall
void bind_bulkhead(nb::module_& m);    // Bulkhead
void bind_policy(nb::module_& m);      // Policy
void bind_awaitable(nb::module_& m);   // AsyncCall, CircuitBreaker.call_async
void bind_backoff(nb::module_& m);     // Backoff
void bind_histogram(nb::module_& m);   // LatencyHistogram
void bind_adaptive(nb::module_& m);    // AdaptiveBulkhead
void bind_budget(nb::module_& m);      // RetryBudget

// For _core._specialise(cls): each installs its type's raw hot methods on
// cls when cls subclasses that type, and says whether it did.
bool specialise_bucket(nb::handle cls);
bool specialise_breaker(nb::handle cls);
bool specialise_policy(nb::handle cls);

}  // namespace virtrigaud_bind

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
