// TracedAttempt: a sampled sync attempt's work under vr.otel, natively
// (otel/_tracing.py makes one per configuration; Policy.execute's traced
// method gives it to the native execute as the function to call, with the
// execution and the caller's function as its first arguments).
//
// A sampled call's cost over the SDK's own spans was mostly our Python: in
// CPython a Python frame costs about what the whole native policy call does,
// and an attempt ran three (the attempt, its span's start and end) and a
// bound method. Here, per attempt: the attempt span started as a child of
// the execution's (its attributes prebuilt per attempt number: the SDK
// copies them), made current (a native copy of the execution's Context with
// the span under the API's key, attached through the API's own attach: its
// ContextVar's C method by default), the function called, the context
// detached and the span ended; only the SDK's Python runs. What is rare
// stays in Python: a failed attempt (its error.type and status, then the
// execution's span made current), a timed one (the attempt duration
// histogram's record), a tracer that failed to start the span (logged once,
// the function called untraced).
//
// The execution's state (its number, context, the running attempt's span)
// stays in the Python Execution, whose slots the decision listeners read
// (see otel_execution.hpp). Every object held across a call into Python is
// a strong reference (the free-threaded build may free a borrowed one meanwhile).

#include "otel_execution.hpp"

namespace virtrigaud_bind {

// A copy of the Context `context` that also maps key to value (bind_otel_gate.cpp).
PyObject* otel_context_with(PyObject* context, PyObject* key, PyObject* value);

namespace {

struct TracedAttemptObject {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject* start_span;   // the tracer's start_span (bound)
    PyObject* name;         // the attempt span's name
    PyObject* attributes;   // a tuple: the attributes dict of attempt number i
    PyObject* number_key;   // the attribute naming a later attempt's number
    PyObject* span_key;     // the key under which a Context holds its span
    PyObject* attach;       // the API's attach(context) -> token
    PyObject* detach;       // the API's detach(token)
    PyObject* clock;        // time.perf_counter when attempts are timed, else None
    PyObject* ended;        // ended(execution, number, span, error, started): Python
    PyObject* raised;       // raised(exception): the tracer failed (logged once)
    ExecutionSlots slots;   // the Execution's (execution_type's)
};

// Interned at import: the span's end, start_span's keywords.
PyObject* g_str_end = nullptr;
PyObject* g_start_span_kwnames = nullptr;  // ("context", "attributes")
PyObject* g_zero = nullptr;                // 0.0: `started` of an untimed attempt

// The attempt span's attributes for attempt `number` (a new reference).
PyObject* attributes_for(const TracedAttemptObject* a, PyObject* number) {
    const Py_ssize_t index = PyLong_AsSsize_t(number);
    if (index == -1 && PyErr_Occurred()) {
        return nullptr;
    }
    if (index >= 0 && index < PyTuple_Size(a->attributes)) {
        return Py_NewRef(PyTuple_GetItem(a->attributes, index));
    }
    PyObject* attributes = PyDict_New();
    if (attributes != nullptr && PyDict_SetItem(attributes, a->number_key, number) != 0) {
        Py_CLEAR(attributes);
    }
    return attributes;
}

// tracer.start_span(name, context=context, attributes=...) for the attempt
// `number` of `execution`, marked as the running one; nullptr with an error
// set when anything raised.
PyObject* start_attempt_span(const TracedAttemptObject* a, PyObject* execution,
                             PyObject* number, PyObject* context) {
    if (!a->slots.set(kSpanned, execution, number) ||
        !a->slots.set(kLimited, execution, Py_False)) {
        return nullptr;
    }
    PyObject* attributes = attributes_for(a, number);
    if (attributes == nullptr) {
        return nullptr;
    }
    PyObject* args[3] = {a->name, context, attributes};
    PyObject* span = PyObject_Vectorcall(a->start_span, args, 1, g_start_span_kwnames);
    Py_DECREF(attributes);
    return span;
}

// Calls raised(the exception the tracer raised) and then the function,
// untraced (a tracer's Exception never breaks a call; a BaseException
// passes, as Python's `except Exception` lets it).
PyObject* call_untraced(const TracedAttemptObject* a, PyObject* fn, PyObject* const* args,
                        size_t nargsf, PyObject* kwnames) {
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        return nullptr;
    }
    PyObject* exc = fetch_exception();
    PyObject* r = call_one(a->raised, exc);
    Py_DECREF(exc);
    if (r == nullptr) {
        return nullptr;
    }
    Py_DECREF(r);
    return PyObject_Vectorcall(fn, args, nargsf, kwnames);
}

// After the function raised: detaches, lets Python end the span (its
// error.type and status) and make the execution's span current, and raises
// the function's error again (or what the cleanup raised, chained to it).
PyObject* attempt_failed(const TracedAttemptObject* a, PyObject* execution, PyObject* number,
                         PyObject* span, PyObject* token, PyObject* started) {
    PyObject* error = fetch_exception();
    PyObject* r = call_one(a->detach, token);  // first: the contexts are a stack
    if (r != nullptr) {
        Py_DECREF(r);
        PyObject* args[5] = {execution, number, span, error, started};
        r = PyObject_Vectorcall(a->ended, args, 5, nullptr);
    }
    if (r == nullptr) {  // as a raise inside Python's except block: chained
        PyObject* cleanup = fetch_exception();
        PyException_SetContext(cleanup, error);  // steals error
        restore_exception(cleanup);
        return nullptr;
    }
    Py_DECREF(r);
    restore_exception(error);
    return nullptr;
}

// After the function returned: detaches and ends the span (through Python
// when the attempt is timed: the histogram's record). False with an error set.
bool attempt_succeeded(const TracedAttemptObject* a, PyObject* execution, PyObject* number,
                       PyObject* span, PyObject* token, PyObject* started) {
    PyObject* r = call_one(a->detach, token);
    if (r == nullptr) {
        return false;
    }
    Py_DECREF(r);
    if (a->clock != Py_None) {
        PyObject* args[5] = {execution, number, span, Py_None, started};
        r = PyObject_Vectorcall(a->ended, args, 5, nullptr);
    } else if (!a->slots.set(kAttemptSpan, execution, Py_None)) {
        return false;
    } else {
        PyObject* end_args[2] = {nullptr, span};
        r = PyObject_VectorcallMethod(g_str_end, end_args + 1,
                                      1 | PY_VECTORCALL_ARGUMENTS_OFFSET, nullptr);
    }
    Py_XDECREF(r);
    return r != nullptr;
}

// The traced attempt once its span is started: current while fn runs.
PyObject* run_in_span(const TracedAttemptObject* a, PyObject* execution, PyObject* number,
                      PyObject* context, PyObject* span, PyObject* fn,
                      PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    if (!a->slots.set(kAttemptSpan, execution, span)) {
        return nullptr;
    }
    PyObject* inner = otel_context_with(context, a->span_key, span);
    if (inner == nullptr) {
        return nullptr;
    }
    PyObject* token = call_one(a->attach, inner);
    Py_DECREF(inner);
    if (token == nullptr) {
        return nullptr;
    }
    PyObject* started = a->clock == Py_None ? Py_NewRef(g_zero) : PyObject_CallNoArgs(a->clock);
    PyObject* result = nullptr;
    if (started != nullptr) {
        result = PyObject_Vectorcall(fn, args, nargsf, kwnames);
        if (result == nullptr) {
            attempt_failed(a, execution, number, span, token, started);
        } else if (!attempt_succeeded(a, execution, number, span, token, started)) {
            Py_CLEAR(result);
        }
        Py_DECREF(started);
    } else {
        PyObject* error = fetch_exception();
        PyObject* r = call_one(a->detach, token);
        Py_XDECREF(r);
        restore_exception(error);
    }
    Py_DECREF(token);
    return result;
}

// attempt(execution, fn, *args, **kwargs): fn(*args, **kwargs) inside the
// attempt's span (Execution.attempt's semantics, see _tracing.py).
PyObject* traced_attempt_vectorcall(PyObject* self, PyObject* const* args, size_t nargsf,
                                    PyObject* kwnames) {
    auto* a = reinterpret_cast<TracedAttemptObject*>(self);
    const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 2) {
        PyErr_SetString(PyExc_TypeError, "TracedAttempt() takes the execution and the function");
        return nullptr;
    }
    PyObject* execution = args[0];
    PyObject* fn = args[1];
    PyObject* const* fn_args = args + 2;
    const size_t fn_nargs = static_cast<size_t>(nargs - 2);
    PyObject* number = a->slots.get(kNumber, execution);
    if (number == nullptr) {
        return nullptr;
    }
    PyObject* context = a->slots.get(kContext, execution);
    PyObject* result = nullptr;
    if (context != nullptr) {
        PyObject* span = start_attempt_span(a, execution, number, context);
        if (span == nullptr) {
            result = call_untraced(a, fn, fn_args, fn_nargs, kwnames);
        } else {
            result = run_in_span(a, execution, number, context, span, fn, fn_args, fn_nargs,
                                 kwnames);
            Py_DECREF(span);
        }
        Py_DECREF(context);
    }
    Py_DECREF(number);
    return result;
}

const char* const traced_attempt_keywords[] = {"start_span", "name", "attributes", "number_key",
                                               "span_key", "attach", "detach", "clock",
                                               "ended", "raised", "execution_type", nullptr};

// Its references, in the keywords' order (the constructor assigns them so;
// of execution_type, `slots` keeps the slots' descriptors).
using TracedAttemptRefs =
    References<TracedAttemptObject, &TracedAttemptObject::start_span, &TracedAttemptObject::name,
               &TracedAttemptObject::attributes, &TracedAttemptObject::number_key,
               &TracedAttemptObject::span_key, &TracedAttemptObject::attach,
               &TracedAttemptObject::detach, &TracedAttemptObject::clock,
               &TracedAttemptObject::ended, &TracedAttemptObject::raised>;
using TracedAttemptType = TracedObject<TracedAttemptObject, TracedAttemptRefs>;

PyObject* traced_attempt_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    PyObject* fields[TracedAttemptRefs::kCount] = {};
    PyObject* execution_type = nullptr;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OUO!UUOOOOOO!:TracedAttempt",
                                     const_cast<char**>(traced_attempt_keywords), &fields[0],
                                     &fields[1], &PyTuple_Type, &fields[2], &fields[3],
                                     &fields[4], &fields[5], &fields[6], &fields[7], &fields[8],
                                     &fields[9], &PyType_Type, &execution_type)) {
        return nullptr;
    }
    for (const int callable : {0, 5, 6, 8, 9}) {
        if (!PyCallable_Check(fields[callable])) {
            PyErr_Format(PyExc_TypeError, "TracedAttempt %s must be callable, got %R",
                         traced_attempt_keywords[callable], fields[callable]);
            return nullptr;
        }
    }
    if (fields[7] != Py_None && !PyCallable_Check(fields[7])) {
        PyErr_Format(PyExc_TypeError, "TracedAttempt clock must be callable or None, got %R",
                     fields[7]);
        return nullptr;
    }
    return TracedAttemptType::make(type, traced_attempt_vectorcall, fields, execution_type,
                                   "TracedAttempt");
}

PyType_Slot traced_attempt_type_slots[] = {
    {Py_tp_new, reinterpret_cast<void*>(traced_attempt_new)},
    {Py_tp_dealloc, reinterpret_cast<void*>(dealloc_cleared<TracedAttemptType::clear>)},
    {Py_tp_traverse, reinterpret_cast<void*>(TracedAttemptType::traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(TracedAttemptType::clear)},
    {Py_tp_call, reinterpret_cast<void*>(PyVectorcall_Call)},
    {Py_tp_members, vectorcall_members<TracedAttemptObject>},
    {Py_tp_doc, const_cast<char*>(
                    "TracedAttempt(start_span, name, attributes, number_key, span_key, attach,\n"
                    "detach, clock, ended, raised, execution_type): called as (execution, fn,\n"
                    "*args, **kwargs) with an execution_type instance (its slots number,\n"
                    "context, spanned, limited, attempt_span read and written),\n"
                    "runs fn(*args, **kwargs) inside a span start_span(name,\n"
                    "context=execution.context, attributes=attributes[execution.number])\n"
                    "made current (attach/detach), ended after; ended(execution, number, span,\n"
                    "error, started) ends it instead when fn raised or clock is not None;\n"
                    "raised(exception) when start_span raised an Exception (fn then runs\n"
                    "untraced).")},
    {0, nullptr}};

PyType_Spec traced_attempt_spec = {
    "TracedAttempt",  // the module's name is prefixed at import (type_from_spec)
    sizeof(TracedAttemptObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
        Py_TPFLAGS_IMMUTABLETYPE,
    traced_attempt_type_slots};

}  // namespace

void bind_otel_attempt(nb::module_& m) {
    g_str_end = interned("end");
    g_start_span_kwnames = interned_tuple({"context", "attributes"});
    g_zero = PyFloat_FromDouble(0.0);
    if (g_zero == nullptr) {
        throw nb::python_error();
    }
    m.attr("TracedAttempt") = type_from_spec(m, &traced_attempt_spec);
}

}  // namespace virtrigaud_bind
