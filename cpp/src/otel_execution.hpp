// The Python Execution of vr.otel (otel/_tracing.py) as the native traced
// path reads and writes it: its slots, through the slots' own descriptors,
// found once per native object (by attribute, each access is a type lookup,
// and in the traced path's working set most missed CPython's method cache:
// ~200 instructions each). The Execution stays a Python object: the decision
// listeners (retries, refusals) read and write the same slots.
#pragma once

#include "binding.hpp"

namespace virtrigaud_bind {

// The Execution's slots used natively, in the order of kExecutionSlotNames.
enum ExecutionSlot {
    kPolicy, kTracing, kSpan, kContext, kToken, kNumber, kSpanned, kLimited, kStarted,
    kAttemptSpan, kExecutionSlots
};
inline const char* const kExecutionSlotNames[kExecutionSlots] = {
    "policy", "tracing", "span", "context", "token", "number", "spanned", "limited", "started",
    "attempt_span"};

class ExecutionSlots {
public:
    // Finds the slots of execution_type; false with a TypeError naming the
    // slot (and `owner`) when one is not a data descriptor.
    bool find(PyObject* execution_type, const char* owner) {
        for (int i = 0; i < kExecutionSlots; ++i) {
            PyObject* descr = PyObject_GetAttrString(execution_type, kExecutionSlotNames[i]);
            if (descr == nullptr) {
                PyErr_Clear();
            }
            descrgetfunc get = nullptr;
            descrsetfunc set = nullptr;
            if (descr != nullptr) {
                PyTypeObject* kind = Py_TYPE(descr);
                get = reinterpret_cast<descrgetfunc>(PyType_GetSlot(kind, Py_tp_descr_get));
                set = reinterpret_cast<descrsetfunc>(PyType_GetSlot(kind, Py_tp_descr_set));
            }
            if (get == nullptr || set == nullptr) {
                Py_XDECREF(descr);
                clear();
                PyErr_Format(PyExc_TypeError, "%s execution_type must have a slot %s, got %R",
                             owner, kExecutionSlotNames[i], execution_type);
                return false;
            }
            slots_[i] = {descr, get, set};
        }
        return true;
    }

    // execution.<slot>, a new reference (nullptr with an error: unset, or
    // not an instance of the execution type).
    PyObject* get(ExecutionSlot slot, PyObject* execution) const {
        const Access& access = slots_[slot];
        return access.get(access.descr, execution,
                          reinterpret_cast<PyObject*>(Py_TYPE(execution)));
    }

    // execution.<slot> = value; false with an error set.
    bool set(ExecutionSlot slot, PyObject* execution, PyObject* value) const {
        const Access& access = slots_[slot];
        return access.set(access.descr, execution, value) == 0;
    }

    int traverse(visitproc visit, void* arg) const {
        for (const Access& access : slots_) {
            Py_VISIT(access.descr);
        }
        return 0;
    }

    void clear() {
        for (Access& access : slots_) {
            Py_CLEAR(access.descr);
        }
    }

private:
    // A slot's descriptor (a strong reference) and its type's get and set.
    struct Access {
        PyObject* descr;
        descrgetfunc get;
        descrsetfunc set;
    };
    Access slots_[kExecutionSlots] = {};
};

// What the two traced types (TracedAttempt, TracedExecute) share: T is a
// raw object with `vectorcall`, the references `Refs` lists and an
// ExecutionSlots `slots`. make() allocates one of `type` with new
// references to `fields` (in Refs' order) and the slots of `execution_type`
// (null with a TypeError naming `owner` when it lacks one); traverse() and
// clear() cover the references and the slots' descriptors.
template <typename T, typename Refs>
struct TracedObject {
    static PyObject* make(PyTypeObject* type, vectorcallfunc vectorcall, PyObject* const* fields,
                          PyObject* execution_type, const char* owner) {
        auto* alloc = reinterpret_cast<allocfunc>(PyType_GetSlot(type, Py_tp_alloc));
        auto* t = reinterpret_cast<T*>(alloc(type, 0));
        if (t == nullptr) {
            return nullptr;
        }
        new (&t->slots) ExecutionSlots();
        t->vectorcall = vectorcall;
        Refs::assign(t, fields);
        if (!t->slots.find(execution_type, owner)) {
            Py_DECREF(t);
            return nullptr;
        }
        return reinterpret_cast<PyObject*>(t);
    }
    static int traverse(PyObject* self, visitproc visit, void* arg) {
        if (const int r = Refs::traverse(self, visit, arg)) {
            return r;
        }
        return reinterpret_cast<T*>(self)->slots.traverse(visit, arg);
    }
    static int clear(PyObject* self) {
        Refs::clear(self);
        reinterpret_cast<T*>(self)->slots.clear();
        return 0;
    }
};

}  // namespace virtrigaud_bind
