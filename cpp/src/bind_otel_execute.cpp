// TracedExecute: Policy.execute under vr.otel while it traces, natively
// (otel/_tracing.py makes one per configuration; routed as the method, or as
// what the sampling gate calls for a call it does not drop).
//
// A sampled call's cost over the SDK's own two spans was mostly Python
// frames: in CPython one costs about what the whole native policy call does.
// The attempts were native already (bind_otel_attempt.cpp); this does the
// execution's part of otel/_tracing.execute without a frame of ours: the
// Execution made without its __init__ (its slots set through their
// descriptors, see otel_execution.hpp), its span started under the caller's
// context (given: the SDK would read it again), the context with that span
// built natively, the CURRENT contextvar set, the native execute run with the
// native attempt as the function, and on success the contextvar reset and the
// span ended. What is rare stays in Python, as there: a failed call, or one
// that attached the execution's span or times the execution, ends through
// Execution.exit; a configuration no longer active, through the Python
// execute (which finds the active one); a tracer that raised is logged once
// and the call runs untraced.

#include "otel_execution.hpp"

namespace virtrigaud_bind {

// A copy of the Context `context` that also maps key to value (bind_otel_gate.cpp).
PyObject* otel_context_with(PyObject* context, PyObject* key, PyObject* value);

namespace {

struct TracedExecuteObject {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject* native;          // _core.Policy.execute
    PyObject* fallback;        // otel/_tracing.execute (Python)
    PyObject* active_in;       // the dict whose "active" says which configuration is active
    PyObject* tracing;         // this one's configuration (a Tracing)
    PyObject* attempt;         // its native attempt (a TracedAttempt)
    PyObject* start_span;      // its tracer's start_span (bound)
    PyObject* kind;            // SpanKind.INTERNAL
    PyObject* constants;       // a dict: policy name -> (span name, attributes)
    PyObject* make_constants;  // name -> (span name, attributes), kept in `constants`
    PyObject* current;         // the current Context: () -> Context
    PyObject* span_key;        // the key under which a Context holds its span
    PyObject* current_set;     // CURRENT.set (the contextvar of the running execution)
    PyObject* current_reset;   // CURRENT.reset
    PyObject* clock;           // time.perf_counter when executions are timed, else None
    PyObject* raised;          // raised(exception): the tracer failed (logged once)
    PyObject* execution_type;  // Execution
    ExecutionSlots slots;
};

// Interned at import.
PyObject* g_str_active = nullptr;
PyObject* g_str_name = nullptr;   // "_name": the policy's name
PyObject* g_str_exit = nullptr;
PyObject* g_str_end = nullptr;
PyObject* g_execution_span_kwnames = nullptr;  // ("context", "kind", "attributes")
PyObject* g_zero = nullptr;       // 0
PyObject* g_minus_one = nullptr;  // -1
PyObject* g_zero_seconds = nullptr;  // 0.0: `started` of an untimed execution

// constants[name], a new reference; nullptr without an error when absent.
PyObject* constants_get(const TracedExecuteObject* t, PyObject* name) {
#if PY_VERSION_HEX >= 0x030D0000 && (!defined(Py_LIMITED_API) || Py_LIMITED_API >= 0x030D0000)
    PyObject* found = nullptr;  // strong at once: another thread may clear the dict
    PyDict_GetItemRef(t->constants, name, &found);
    return found;
#else
    return Py_XNewRef(PyDict_GetItemWithError(t->constants, name));  // the GIL holds it
#endif
}

// (span name, attributes) of the policy named `name` (a new reference;
// nullptr with an error set).
PyObject* constants_for(const TracedExecuteObject* t, PyObject* name) {
    PyObject* found = constants_get(t, name);
    if (found != nullptr || PyErr_Occurred()) {
        return found;
    }
    return call_one(t->make_constants, name);  // keeps them in the dict too
}

// The execution's span, started under `caller` (a new reference).
PyObject* start_execution_span(const TracedExecuteObject* t, PyObject* policy, PyObject* caller) {
    PyObject* name = PyObject_GetAttr(policy, g_str_name);
    if (name == nullptr) {
        return nullptr;
    }
    PyObject* constants = constants_for(t, name);
    Py_DECREF(name);
    if (constants == nullptr) {
        return nullptr;
    }
    if (!PyTuple_Check(constants) || PyTuple_Size(constants) != 2) {
        PyErr_Format(PyExc_TypeError, "TracedExecute constants must be (name, attributes), got %R",
                     constants);
        Py_DECREF(constants);
        return nullptr;
    }
    PyObject* args[4] = {PyTuple_GetItem(constants, 0), caller, t->kind,
                         PyTuple_GetItem(constants, 1)};
    PyObject* span = PyObject_Vectorcall(t->start_span, args, 1, g_execution_span_kwnames);
    Py_DECREF(constants);
    return span;
}

// Sets what Execution.__init__ sets, on a fresh instance.
bool init_execution(const TracedExecuteObject* t, PyObject* execution, PyObject* policy,
                    PyObject* span, PyObject* context, PyObject* started) {
    const ExecutionSlots& s = t->slots;
    return s.set(kSpan, execution, span) && s.set(kPolicy, execution, policy) &&
           s.set(kTracing, execution, t->tracing) && s.set(kContext, execution, context) &&
           s.set(kToken, execution, Py_None) && s.set(kNumber, execution, g_zero) &&
           s.set(kSpanned, execution, g_minus_one) && s.set(kLimited, execution, Py_False) &&
           s.set(kStarted, execution, started) && s.set(kAttemptSpan, execution, Py_None);
}

// A new Execution of `policy` with its span started (a new reference), or
// nullptr with an error set.
PyObject* new_execution(const TracedExecuteObject* t, PyObject* policy) {
    PyObject* caller = PyObject_CallNoArgs(t->current);
    if (caller == nullptr) {
        return nullptr;
    }
    PyObject* execution = nullptr;
    PyObject* span = start_execution_span(t, policy, caller);
    if (span != nullptr) {
        PyObject* context = otel_context_with(caller, t->span_key, span);
        PyObject* started =
            t->clock == Py_None ? Py_NewRef(g_zero_seconds) : PyObject_CallNoArgs(t->clock);
        if (context != nullptr && started != nullptr) {
            auto* type = reinterpret_cast<PyTypeObject*>(t->execution_type);
            auto* alloc = reinterpret_cast<allocfunc>(PyType_GetSlot(type, Py_tp_alloc));
            execution = alloc(type, 0);
            if (execution != nullptr &&
                !init_execution(t, execution, policy, span, context, started)) {
                Py_CLEAR(execution);
            }
        }
        Py_XDECREF(started);
        Py_XDECREF(context);
        Py_DECREF(span);
    }
    Py_DECREF(caller);
    return execution;
}

// The native execute of args[0] (the policy) with the native attempt as the
// function, given the execution and the caller's function and arguments.
PyObject* run_attempts(const TracedExecuteObject* t, PyObject* execution,
                       PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    const Py_ssize_t nkw = kwnames != nullptr ? PyTuple_Size(kwnames) : 0;
    const Py_ssize_t total = nargs + 2 + nkw;  // policy, attempt, execution, fn, ...
    constexpr Py_ssize_t kOnStack = 12;
    PyObject* on_stack[kOnStack];
    PyObject** call = total <= kOnStack ? on_stack
                                        : static_cast<PyObject**>(PyMem_Malloc(
                                              static_cast<size_t>(total) * sizeof(PyObject*)));
    if (call == nullptr) {
        return PyErr_NoMemory();
    }
    call[0] = args[0];
    call[1] = t->attempt;
    call[2] = execution;
    for (Py_ssize_t i = 1; i < nargs + nkw; ++i) {
        call[2 + i] = args[i];
    }
    PyObject* r = PyObject_Vectorcall(t->native, call, static_cast<size_t>(nargs + 2), kwnames);
    if (call != on_stack) {
        PyMem_Free(call);
    }
    return r;
}

// After the native execute raised: execution.exit(token, error), then the
// error again (or what exit raised, chained to it, as from an except block).
PyObject* execution_failed(PyObject* execution, PyObject* token) {
    PyObject* error = fetch_exception();
    PyObject* exit_args[3] = {execution, token, error};
    PyObject* r = PyObject_VectorcallMethod(g_str_exit, exit_args, 3, nullptr);
    if (r == nullptr) {
        PyObject* cleanup = fetch_exception();
        PyException_SetContext(cleanup, error);  // steals error
        restore_exception(cleanup);
        return nullptr;
    }
    Py_DECREF(r);
    restore_exception(error);
    return nullptr;
}

// After the native execute returned: what Execution.exit does for a success
// that attached nothing and times nothing (the common call), else exit().
bool execution_succeeded(const TracedExecuteObject* t, PyObject* execution, PyObject* token) {
    PyObject* attached = t->slots.get(kToken, execution);
    if (attached == nullptr) {
        return false;
    }
    const bool plain = attached == Py_None && t->clock == Py_None;
    Py_DECREF(attached);
    PyObject* r;
    if (plain) {
        r = call_one(t->current_reset, token);
        if (r == nullptr) {
            return false;
        }
        Py_DECREF(r);
        PyObject* span = t->slots.get(kSpan, execution);
        if (span == nullptr) {
            return false;
        }
        PyObject* end_args[1] = {span};
        r = PyObject_VectorcallMethod(g_str_end, end_args, 1, nullptr);
        Py_DECREF(span);
    } else {
        PyObject* exit_args[3] = {execution, token, Py_None};
        r = PyObject_VectorcallMethod(g_str_exit, exit_args, 3, nullptr);
    }
    Py_XDECREF(r);
    return r != nullptr;
}

// The tracer raised an Exception while the execution was made: logged (once)
// and the call runs untraced (a BaseException passes).
PyObject* run_untraced(const TracedExecuteObject* t, PyObject* const* args, size_t nargsf,
                       PyObject* kwnames) {
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        return nullptr;
    }
    PyObject* exc = fetch_exception();
    PyObject* r = call_one(t->raised, exc);
    Py_DECREF(exc);
    if (r == nullptr) {
        return nullptr;
    }
    Py_DECREF(r);
    return PyObject_Vectorcall(t->native, args, nargsf, kwnames);
}

// execute(policy, fn, *args, **kwargs), as otel/_tracing.execute.
PyObject* traced_execute_vectorcall(PyObject* self, PyObject* const* args, size_t nargsf,
                                    PyObject* kwnames) {
    auto* t = reinterpret_cast<TracedExecuteObject*>(self);
    const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject* active = PyDict_GetItemWithError(t->active_in, g_str_active);  // borrowed
    if (active != t->tracing || nargs < 2) {
        // Another configuration, none, or arguments the Python execute names
        // the error of: its path decides.
        return PyErr_Occurred() ? nullptr : PyObject_Vectorcall(t->fallback, args, nargsf, kwnames);
    }
    PyObject* execution = new_execution(t, args[0]);
    if (execution == nullptr) {
        return run_untraced(t, args, nargsf, kwnames);
    }
    PyObject* token = call_one(t->current_set, execution);
    PyObject* result = nullptr;
    if (token != nullptr) {
        result = run_attempts(t, execution, args, nargs, kwnames);
        if (result == nullptr) {
            execution_failed(execution, token);
        } else if (!execution_succeeded(t, execution, token)) {
            Py_CLEAR(result);
        }
        Py_DECREF(token);
    }
    Py_DECREF(execution);
    return result;
}

const char* const traced_execute_keywords[] = {
    "native", "fallback", "active_in", "tracing", "attempt", "start_span", "kind",
    "constants", "make_constants", "current", "span_key", "current_set", "current_reset",
    "clock", "raised", "execution_type", nullptr};

// Its references, in the keywords' order (the constructor assigns them so).
using TracedExecuteRefs =
    References<TracedExecuteObject, &TracedExecuteObject::native, &TracedExecuteObject::fallback,
               &TracedExecuteObject::active_in, &TracedExecuteObject::tracing,
               &TracedExecuteObject::attempt, &TracedExecuteObject::start_span,
               &TracedExecuteObject::kind, &TracedExecuteObject::constants,
               &TracedExecuteObject::make_constants, &TracedExecuteObject::current,
               &TracedExecuteObject::span_key, &TracedExecuteObject::current_set,
               &TracedExecuteObject::current_reset, &TracedExecuteObject::clock,
               &TracedExecuteObject::raised, &TracedExecuteObject::execution_type>;
using TracedExecuteType = TracedObject<TracedExecuteObject, TracedExecuteRefs>;

PyObject* traced_execute_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    PyObject* f[TracedExecuteRefs::kCount] = {};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO!OOOOO!OOUOOOOO!:TracedExecute",
                                     const_cast<char**>(traced_execute_keywords), &f[0], &f[1],
                                     &PyDict_Type, &f[2], &f[3], &f[4], &f[5], &f[6],
                                     &PyDict_Type, &f[7], &f[8], &f[9], &f[10], &f[11], &f[12],
                                     &f[13], &f[14], &PyType_Type, &f[15])) {
        return nullptr;
    }
    for (const int callable : {0, 1, 4, 5, 8, 9, 11, 12, 14}) {
        if (!PyCallable_Check(f[callable])) {
            PyErr_Format(PyExc_TypeError, "TracedExecute %s must be callable, got %R",
                         traced_execute_keywords[callable], f[callable]);
            return nullptr;
        }
    }
    if (f[13] != Py_None && !PyCallable_Check(f[13])) {
        PyErr_Format(PyExc_TypeError, "TracedExecute clock must be callable or None, got %R",
                     f[13]);
        return nullptr;
    }
    PyObject* execution_type = f[TracedExecuteRefs::kCount - 1];  // the last keyword
    return TracedExecuteType::make(type, traced_execute_vectorcall, f, execution_type,
                                   "TracedExecute");
}

PyType_Slot traced_execute_type_slots[] = {
    {Py_tp_new, reinterpret_cast<void*>(traced_execute_new)},
    {Py_tp_dealloc, reinterpret_cast<void*>(dealloc_cleared<TracedExecuteType::clear>)},
    {Py_tp_traverse, reinterpret_cast<void*>(TracedExecuteType::traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(TracedExecuteType::clear)},
    {Py_tp_call, reinterpret_cast<void*>(PyVectorcall_Call)},
    {Py_tp_descr_get, reinterpret_cast<void*>(bind_as_method)},
    {Py_tp_members, vectorcall_members<TracedExecuteObject>},
    {Py_tp_doc, const_cast<char*>(
                    "TracedExecute(native, fallback, active_in, tracing, attempt, start_span,\n"
                    "kind, constants, make_constants, current, span_key, current_set,\n"
                    "current_reset, clock, raised, execution_type): called as (policy, fn,\n"
                    "*args, **kwargs) while active_in['active'] is tracing (else fallback is),\n"
                    "makes an execution_type instance without its __init__ (its span from\n"
                    "start_span(constants[policy._name][0], context=current(), kind=kind,\n"
                    "attributes=constants[...][1])), sets it in current_set, and returns\n"
                    "native(policy, attempt, execution, fn, *args, **kwargs); then\n"
                    "current_reset and the span's end(), or execution.exit(token, error).\n"
                    "Binds as a method when it is a class attribute.")},
    {0, nullptr}};

PyType_Spec traced_execute_spec = {
    "TracedExecute",  // the module's name is prefixed at import (type_from_spec)
    sizeof(TracedExecuteObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
        Py_TPFLAGS_IMMUTABLETYPE,
    traced_execute_type_slots};

}  // namespace

void bind_otel_execute(nb::module_& m) {
    g_str_active = interned("active");
    g_str_name = interned("_name");
    g_str_exit = interned("exit");
    g_str_end = interned("end");
    g_execution_span_kwnames = interned_tuple({"context", "kind", "attributes"});
    g_zero = PyLong_FromLong(0);
    g_minus_one = PyLong_FromLong(-1);
    g_zero_seconds = PyFloat_FromDouble(0.0);
    if (g_zero == nullptr || g_minus_one == nullptr || g_zero_seconds == nullptr) {
        throw nb::python_error();
    }
    m.attr("TracedExecute") = type_from_spec(m, &traced_execute_spec);
}

}  // namespace virtrigaud_bind
