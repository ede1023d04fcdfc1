// Bulkhead: the bounded concurrency counter (vr::Bulkhead), its slots
// (BulkheadSlot) and its raw methods: `with bulkhead:` is two native calls.

#include "binding.hpp"

namespace virtrigaud_bind {
namespace {

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

using BulkheadSlotRefs =
    References<BulkheadSlotObject, &BulkheadSlotObject::bulkhead, &BulkheadSlotObject::below>;

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
    {Py_tp_traverse, reinterpret_cast<void*>(BulkheadSlotRefs::traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(BulkheadSlotRefs::clear)},
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

}  // namespace

void bind_bulkhead_slot(nb::module_& m) {
    nb::object bases = nb::steal(PyTuple_Pack(1, g_one_shot_type));
    if (!bases.is_valid()) {
        throw nb::python_error();
    }
    nb::object type = type_from_spec(m, &bulkhead_slot_spec, bases.ptr());
    m.attr("BulkheadSlot") = type;
    g_bulkhead_slot_type = type.inc_ref().ptr();  // module lifetime
    g_context_var_type = nb::module_::import_("contextvars").attr("ContextVar").inc_ref().ptr();
    g_str_get = interned("get");
    g_str_set = interned("set");
}

void bind_bulkhead(nb::module_& m) {
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
}

}  // namespace virtrigaud_bind
