// RetryCall: the function object a retry decorator returns (compat.tenacity's @retry,
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

#include "binding.hpp"

namespace virtrigaud_bind {
namespace {

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

using RetryCallRefs =
    References<RetryCallObject, &RetryCallObject::dict, &RetryCallObject::fn,
               &RetryCallObject::resume, &RetryCallObject::stats_key, &RetryCallObject::clock_key,
               &RetryCallObject::template_, &RetryCallObject::local, &RetryCallObject::retry_on,
               &RetryCallObject::check>;

int retry_call_clear(PyObject* self) {
    RetryCallRefs::clear(self);
    reinterpret_cast<RetryCallObject*>(self)->mode = kModePython;
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
    {"__reduce__", reduce_by_qualname, METH_NOARGS,
     "__reduce__(self, /)\n--\n\nPickled by reference (its __qualname__)."},
    {nullptr, nullptr, 0, nullptr}};

PyGetSetDef retry_call_getset[] = {
    {"_mode", retry_call_mode, nullptr, "The mode set by _configure (0, 1 or 2).", nullptr},
    {"_fn", retry_call_fn, nullptr, "The wrapped callable.", nullptr},
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, nullptr, nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

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
    {Py_tp_traverse, reinterpret_cast<void*>(RetryCallRefs::traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(retry_call_clear)},
    {Py_tp_call, reinterpret_cast<void*>(PyVectorcall_Call)},
    {Py_tp_descr_get, reinterpret_cast<void*>(bind_as_method)},
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

// ------------------------------------------------------------- RetryEntry --
//
// vr.retry(config, fn, *args, **kwargs), the guide's resilience.Retry: its
// first attempt runs as Policy.execute's does, in this one native call, and
// Python runs only when the call needs it. One call:
//   1. The config's Retrier, from a small cache keyed by the config object
//      (a hit compares pointers: no hash of the dataclass); on a miss
//      resolve(config) gives it, or None for a config whose every call runs
//      in Python, or raises the TypeError of a config that is no RetryConfig.
//   2. Every attempt in Python -- python_path(config, fn, *args, **kwargs),
//      the Python retry() -- when the config says so, when the call lacks
//      its two arguments (Python's own TypeError), or when the context asks
//      for more than a call: an enclosing deadline (checked before attempt
//      0, which then runs inside it) or an enclosing retry loop's attempt
//      number (current_attempt() must read 0 during this loop's attempt 0).
//   3. Otherwise fn(*args, **kwargs) here. A result is returned, unless it
//      is a coroutine: that is closed and refused at once (never retried,
//      as in the Python loop) with the TypeError naming retry_async. An
//      Exception continues in Python from attempt 1 with
//      after_first(retrier, exc, fn, *args, **kwargs); a BaseException that
//      is no Exception (KeyboardInterrupt, a cancellation) propagates at once.
//
// The cache holds strong references to at most kEntrySlots configs and their
// Retrier (the oldest entry goes first): a program's few configs stay, a
// config made per call is let go after kEntrySlots others. It is read and
// changed under the entry's critical section (free-threaded builds; nothing
// with the GIL).

constexpr int kEntrySlots = 8;

struct RetryEntryObject {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject* dict;
    PyObject* weakrefs;
    // Fixed at construction (null only after tp_clear).
    PyObject* resolve;       // resolve(config) -> Retrier | None
    PyObject* python_path;   // python_path(config, fn, *args, **kwargs)
    PyObject* after_first;   // after_first(retrier, exc, fn, *args, **kwargs)
    PyObject* attempt_var;   // ContextVar[int]: current_attempt()
    PyObject* deadline_var;  // ContextVar[tuple | None]: the enclosing deadline
    // config -> Retrier (Py_None: every call in Python); a null config is a free slot.
    PyObject* configs[kEntrySlots];
    PyObject* retriers[kEntrySlots];
    int next_slot;  // the slot the next miss fills
};

RetryEntryObject* as_entry(PyObject* self) { return reinterpret_cast<RetryEntryObject*>(self); }

PyObject* retry_entry_cleared_error() {
    PyErr_SetString(PyExc_RuntimeError, "RetryEntry was cleared");
    return nullptr;
}

// The cached Retrier of `config` as a new reference; nullptr on a miss.
PyObject* entry_lookup(RetryEntryObject* e, PyObject* config) {
    PyObject* found = nullptr;
    Py_BEGIN_CRITICAL_SECTION(reinterpret_cast<PyObject*>(e));
    for (int i = 0; i < kEntrySlots; ++i) {
        if (e->configs[i] == config) {
            found = Py_NewRef(e->retriers[i]);
            break;
        }
    }
    Py_END_CRITICAL_SECTION();
    return found;
}

// Caches config -> retrier in the next slot (unless another thread cached
// the config meanwhile); what the slot held is dropped outside the section.
void entry_remember(RetryEntryObject* e, PyObject* config, PyObject* retrier) {
    PyObject* old_config = nullptr;
    PyObject* old_retrier = nullptr;
    Py_BEGIN_CRITICAL_SECTION(reinterpret_cast<PyObject*>(e));
    bool known = false;
    for (int i = 0; i < kEntrySlots; ++i) {
        known = known || e->configs[i] == config;
    }
    if (!known) {
        const int slot = e->next_slot;
        e->next_slot = (slot + 1) % kEntrySlots;
        old_config = e->configs[slot];
        old_retrier = e->retriers[slot];
        e->configs[slot] = Py_NewRef(config);
        e->retriers[slot] = Py_NewRef(retrier);
    }
    Py_END_CRITICAL_SECTION();
    Py_XDECREF(old_config);
    Py_XDECREF(old_retrier);
}

// The Retrier for `config` (new reference): cached, or resolved and cached.
// nullptr with an error set (a bad config's TypeError).
PyObject* entry_retrier(RetryEntryObject* e, PyObject* config) {
    PyObject* retrier = entry_lookup(e, config);
    if (retrier != nullptr) {
        return retrier;
    }
    retrier = call_one(e->resolve, config);
    if (retrier != nullptr) {
        entry_remember(e, config, retrier);
    }
    return retrier;
}

// 1 when the context lets attempt 0 run here: no enclosing deadline, and
// current_attempt() reads 0 already; 0 when it needs Python; -1 on error.
int context_allows_native(RetryEntryObject* e) {
    PyObject* value = nullptr;
    if (!context_var_get(e->deadline_var, value)) {
        return -1;
    }
    if (value != nullptr) {
        Py_DECREF(value);
        return 0;
    }
    if (!context_var_get(e->attempt_var, value)) {
        return -1;
    }
    if (value == nullptr) {
        return 1;
    }
    const int zero = PyLong_Check(value) && PyObject_Not(value) == 1;
    Py_DECREF(value);
    return zero;
}

// Attempt 0 raised (the error is set): an Exception continues in Python's
// loop, after_first(retrier, exc, fn, *args, **kwargs); anything else
// propagates as it is.
PyObject* continue_after_first(RetryEntryObject* e, PyObject* retrier, PyObject* const* args,
                               Py_ssize_t nargs, PyObject* kwnames) {
    PyObject* exc = fetch_exception();
    if (exc == nullptr) {
        return nullptr;
    }
    if (!PyErr_GivenExceptionMatches(exc, PyExc_Exception)) {
        restore_exception(exc);
        return nullptr;
    }
    // [spare, retrier, exc, fn, *args, *kwargs values]: args[1:] behind two.
    const Py_ssize_t forwarded = nargs - 1 + (kwnames != nullptr ? PyTuple_Size(kwnames) : 0);
    std::unique_ptr<PyObject*[]> call(new (std::nothrow) PyObject*[forwarded + 3]);
    if (call == nullptr) {
        Py_DECREF(exc);
        return PyErr_NoMemory();
    }
    call[0] = nullptr;
    call[1] = retrier;
    call[2] = exc;
    std::copy(args + 1, args + 1 + forwarded, call.get() + 3);
    PyObject* result =
        PyObject_Vectorcall(e->after_first, call.get() + 1,
                            static_cast<size_t>(nargs + 1) | PY_VECTORCALL_ARGUMENTS_OFFSET,
                            kwnames);
    Py_DECREF(exc);
    return result;
}

PyObject* retry_entry_vectorcall(PyObject* self, PyObject* const* args, size_t nargsf,
                                 PyObject* kwnames) {
    auto* e = as_entry(self);
    if (e->python_path == nullptr) {
        return retry_entry_cleared_error();
    }
    const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 2) {
        return PyObject_Vectorcall(e->python_path, args, nargsf, kwnames);
    }
    PyObject* retrier = entry_retrier(e, args[0]);
    if (retrier == nullptr) {
        return nullptr;
    }
    const int native = retrier != Py_None ? context_allows_native(e) : 0;
    if (native <= 0) {
        Py_DECREF(retrier);
        return native < 0 ? nullptr : PyObject_Vectorcall(e->python_path, args, nargsf, kwnames);
    }
    // The slot before args + 2 is the caller's (args[1]): not offered (forward_call).
    PyObject* result = forward_call(args[1], args + 2, static_cast<size_t>(nargs - 2), kwnames);
    if (result == nullptr) {
        result = continue_after_first(e, retrier, args, nargs, kwnames);
    } else if (is_coroutine(result)) {
        // Raised at once, as the Python loop raises it: never retried.
        result = refuse_coroutine(result, "retry()", "'await vr.retry_async(...)'");
    }
    Py_DECREF(retrier);
    return result;
}

PyObject* retry_entry_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    PyObject *resolve, *python_path, *after_first, *attempt_var, *deadline_var;
    if ((kwargs != nullptr && PyDict_Size(kwargs) != 0) ||
        !PyArg_ParseTuple(args, "OOOOO:RetryEntry", &resolve, &python_path, &after_first,
                          &attempt_var, &deadline_var)) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "RetryEntry() takes positional arguments only");
        }
        return nullptr;
    }
    if (!PyCallable_Check(resolve) || !PyCallable_Check(python_path) ||
        !PyCallable_Check(after_first)) {
        PyErr_SetString(PyExc_TypeError,
                        "RetryEntry resolve, python_path and after_first must be callable");
        return nullptr;
    }
    for (PyObject* var : {attempt_var, deadline_var}) {
        if (!PyObject_TypeCheck(var, reinterpret_cast<PyTypeObject*>(g_context_var_type))) {
            PyErr_SetString(PyExc_TypeError,
                            "RetryEntry attempt_var and deadline_var must be ContextVars");
            return nullptr;
        }
    }
    auto* e = reinterpret_cast<RetryEntryObject*>(PyType_GenericAlloc(type, 0));
    if (e == nullptr) {
        return nullptr;
    }
    e->vectorcall = retry_entry_vectorcall;
    e->resolve = Py_NewRef(resolve);
    e->python_path = Py_NewRef(python_path);
    e->after_first = Py_NewRef(after_first);
    e->attempt_var = Py_NewRef(attempt_var);
    e->deadline_var = Py_NewRef(deadline_var);
    return reinterpret_cast<PyObject*>(e);
}

int retry_entry_traverse(PyObject* self, visitproc visit, void* arg) {
    auto* e = as_entry(self);
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(e->dict);
    Py_VISIT(e->resolve);
    Py_VISIT(e->python_path);
    Py_VISIT(e->after_first);
    Py_VISIT(e->attempt_var);
    Py_VISIT(e->deadline_var);
    for (int i = 0; i < kEntrySlots; ++i) {
        Py_VISIT(e->configs[i]);
        Py_VISIT(e->retriers[i]);
    }
    return 0;
}

int retry_entry_clear(PyObject* self) {
    auto* e = as_entry(self);
    Py_CLEAR(e->dict);
    Py_CLEAR(e->python_path);  // first: a call after this raises at once
    Py_CLEAR(e->resolve);
    Py_CLEAR(e->after_first);
    Py_CLEAR(e->attempt_var);
    Py_CLEAR(e->deadline_var);
    for (int i = 0; i < kEntrySlots; ++i) {
        Py_CLEAR(e->configs[i]);
        Py_CLEAR(e->retriers[i]);
    }
    return 0;
}

void retry_entry_dealloc(PyObject* self) {
    PyObject_GC_UnTrack(self);
    if (as_entry(self)->weakrefs != nullptr) {
        PyObject_ClearWeakRefs(self);
    }
    retry_entry_clear(self);
    PyTypeObject* type = Py_TYPE(self);
    auto* free_fn = reinterpret_cast<freefunc>(PyType_GetSlot(type, Py_tp_free));
    free_fn(self);
    Py_DECREF(type);
}

// How many configs the cache holds (for tests).
PyObject* retry_entry_cached(PyObject* self, void*) {
    auto* e = as_entry(self);
    long n = 0;
    Py_BEGIN_CRITICAL_SECTION(self);
    for (int i = 0; i < kEntrySlots; ++i) {
        n += e->configs[i] != nullptr ? 1 : 0;
    }
    Py_END_CRITICAL_SECTION();
    return PyLong_FromLong(n);
}

PyMethodDef retry_entry_methods[] = {
    {"__reduce__", reduce_by_qualname, METH_NOARGS,
     "__reduce__(self, /)\n--\n\nPickled by reference (its __qualname__)."},
    {nullptr, nullptr, 0, nullptr}};

PyGetSetDef retry_entry_getset[] = {
    {"_cached", retry_entry_cached, nullptr,
     "How many configs the cache holds now (at most _SLOTS).", nullptr},
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, nullptr, nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyMemberDef retry_entry_members[] = {
    {"__vectorcalloffset__", VR_T_PYSSIZET, offsetof(RetryEntryObject, vectorcall), VR_READONLY,
     nullptr},
    {"__dictoffset__", VR_T_PYSSIZET, offsetof(RetryEntryObject, dict), VR_READONLY, nullptr},
    {"__weaklistoffset__", VR_T_PYSSIZET, offsetof(RetryEntryObject, weakrefs), VR_READONLY,
     nullptr},
    {nullptr, 0, 0, 0, nullptr}};

PyType_Slot retry_entry_type_slots[] = {
    {Py_tp_doc, const_cast<char*>(
                    "RetryEntry(resolve, python_path, after_first, attempt_var, deadline_var)\n\n"
                    "retry(config, fn, *args, **kwargs) with its first attempt in one native\n"
                    "call: resolve(config) gives the config's Retrier (cached by identity) or\n"
                    "None (every call in Python); python_path(config, fn, *args, **kwargs)\n"
                    "runs a call that needs Python (an enclosing deadline, an outer loop's\n"
                    "attempt number); after_first(retrier, exc, fn, *args, **kwargs)\n"
                    "continues from attempt 1 after attempt 0 raised an Exception.")},
    {Py_tp_new, reinterpret_cast<void*>(retry_entry_new)},
    {Py_tp_dealloc, reinterpret_cast<void*>(retry_entry_dealloc)},
    {Py_tp_traverse, reinterpret_cast<void*>(retry_entry_traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(retry_entry_clear)},
    {Py_tp_call, reinterpret_cast<void*>(PyVectorcall_Call)},
    {Py_tp_descr_get, reinterpret_cast<void*>(bind_as_method)},
    {Py_tp_repr, reinterpret_cast<void*>(retry_call_repr)},
    {Py_tp_methods, retry_entry_methods},
    {Py_tp_getset, retry_entry_getset},
    {Py_tp_members, retry_entry_members},
    {0, nullptr}};

PyType_Spec retry_entry_spec = {
    "virtrigaud_resilience._core.RetryEntry", sizeof(RetryEntryObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL
#ifdef Py_TPFLAGS_METHOD_DESCRIPTOR
        | Py_TPFLAGS_METHOD_DESCRIPTOR
#endif
    ,
    retry_entry_type_slots};
}  // namespace

void bind_retry(nb::module_& m) {
    g_operator_not = nb::module_::import_("operator").attr("not_").inc_ref().ptr();
    g_statistics_str = interned("statistics");
    m.attr("RetryCall") = type_from_spec(m, &retry_call_spec);
    m.attr("RetryEntry") = type_from_spec(m, &retry_entry_spec);
    m.attr("RetryEntry").attr("_SLOTS") = kEntrySlots;
}

}  // namespace virtrigaud_bind
