// TraceGate: what Policy.execute and execute_async are while vr.otel traces
// under a parent-based sampler that may drop a call (otel/_gate.py installs
// it). The most common production setting is a service whose callers sample
// a fraction of their traces: most calls arrive under a parent that is not
// sampled, and the SDK would make no span for them. The gate decides that
// here, before any Python frame: it reads the current OpenTelemetry context
// (the API's runtime ContextVar), the span the context holds (the API's
// key), and that span's SpanContext (the tuple (trace_id, span_id,
// is_remote, trace_flags, trace_state, is_valid)), and calls the native
// method when the sampler's delegate for such a parent (or for a root, when
// no valid parent is current) is ALWAYS_OFF; else the traced Python method,
// where the SDK's sampler decides as it always did. Both get the very
// arguments the gate got (self first), passed on without a copy.
//
// Reading a SpanContext is a Python call (get_span_context is a Python
// method of every span class), dearer than the rest of the decision
// together, and a dict lookup is a good part of that rest. Neither changes
// under the gate's feet (a Context is immutable, and so is a span's
// SpanContext), so the gate keeps the last Context it read and the last
// span, each with its decision (strong references: the identities stay
// unique). Calls under one parent (a request's) read it once. The
// free-threaded build keeps no cache (it would need a lock per call).
//
// A dropped call runs the native method's own function, self checked as
// its descriptor checks it: one native crossing, as uninstrumented.
//
// The stable ABI (the abi3 wheel) has no PyContextVar_Get: there the var's
// get method is called instead (context_var_get, binding.hpp: a method
// lookup and a call more, about 20 ns).

#include "policy.hpp"

namespace virtrigaud_bind {

PyObject* otel_context_with(PyObject* context, PyObject* key, PyObject* value);

namespace {

using RawMethod = PyObject* (*)(PyObject*, PyObject* const*, Py_ssize_t, PyObject*);

struct TraceGateObject {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject* native;     // the native method descriptor (Policy.execute)
    RawMethod raw;        // its function when it is the Policy's own, else nullptr
    PyObject* traced;     // the traced Python function (otel/_tracing.py)
    PyObject* var;        // the API's runtime ContextVar: the current Context
    PyObject* span_key;   // the key under which a Context holds its span
    bool root_off;        // whether the root's delegate is ALWAYS_OFF
    bool off[2][2];       // [is_remote][sampled]: whether that parent's delegate is
#ifndef Py_GIL_DISABLED
    PyObject* cached_context;  // the Context read last (strong), or nullptr
    bool cached_context_drops; // its decision
    PyObject* cached_span;     // the span read last (strong), or nullptr
    bool cached_span_drops;    // its decision
#endif
};

inline PyObject* g_str_get_span_context = nullptr;  // interned at import
inline PyTypeObject* g_policy_type = nullptr;       // _core.Policy

// Whether the sampler drops a call under `span` (a valid parent: its
// delegate; an invalid one: the root's). A span whose context cannot be
// read (it raised, or is not the API's tuple) is left to the traced path:
// false, the error cleared.
bool drops_under(const TraceGateObject* g, PyObject* span) {
    PyObject* args[1] = {span};
    PyObject* context = PyObject_VectorcallMethod(g_str_get_span_context, args, 1, nullptr);
    if (context == nullptr) {
        PyErr_Clear();
        return false;
    }
    bool drops = false;
    if (PyTuple_Check(context) && PyTuple_Size(context) == 6) {
        PyObject* flags = PyTuple_GetItem(context, 3);
        if (PyTuple_GetItem(context, 5) != Py_True) {
            drops = g->root_off;  // an invalid parent: as a root
        } else if (PyLong_Check(flags)) {
            const long value = PyLong_AsLong(flags);
            if (value == -1 && PyErr_Occurred()) {
                PyErr_Clear();
            } else {
                drops = g->off[PyTuple_GetItem(context, 2) == Py_True][value & 1];
            }
        }
    }
    Py_DECREF(context);
    return drops;
}

// Replaces a cache entry's object by `value` (a new reference, stolen); its
// decision is stored before, so that a gate called while the old object is
// released (a finaliser) finds each object with its own decision.
void replace_cached(PyObject*& slot, PyObject* value) {
    PyObject* old = slot;
    slot = value;
    Py_XDECREF(old);  // last: its finaliser may run Python code
}

// Whether the sampler drops a call under the Context `current` (a new
// reference, stolen; nullptr: unset).
bool drops_in(TraceGateObject* g, PyObject* current) {
    if (current == nullptr || !PyDict_Check(current)) {  // unset: no parent
        Py_XDECREF(current);
        return g->root_off;
    }
#ifndef Py_GIL_DISABLED
    if (current == g->cached_context) {
        Py_DECREF(current);
        return g->cached_context_drops;
    }
#endif
    PyObject* span = PyDict_GetItemWithError(current, g->span_key);  // borrowed
    bool drops;
    if (span == nullptr) {
        PyErr_Clear();
        drops = g->root_off;
#ifndef Py_GIL_DISABLED
    } else if (span == g->cached_span) {
        drops = g->cached_span_drops;
    } else {
        Py_INCREF(span);  // get_span_context may change the context meanwhile
        drops = drops_under(g, span);
        g->cached_span_drops = drops;  // first: the old span's release may call a gate
        replace_cached(g->cached_span, span);
    }
    g->cached_context_drops = drops;
    replace_cached(g->cached_context, current);
#else
    } else {
        Py_INCREF(span);
        drops = drops_under(g, span);
        Py_DECREF(span);
    }
    Py_DECREF(current);
#endif
    return drops;
}

// Whether the sampler drops a call started now. Never leaves an error set:
// whatever cannot be read is left to the traced path (false). Both caches
// hold one object each, by identity (held: its address stays its own):
// Contexts are immutable, and so is a span's SpanContext.
bool drops_now(TraceGateObject* g) {
    PyObject* current = nullptr;
    if (!context_var_get(g->var, current)) {
        PyErr_Clear();
        return false;
    }
    return drops_in(g, current);
}

PyObject* trace_gate_vectorcall(PyObject* self, PyObject* const* args, size_t nargsf,
                                PyObject* kwnames) {
    auto* g = reinterpret_cast<TraceGateObject*>(self);
    if (!drops_now(g)) {
        return PyObject_Vectorcall(g->traced, args, nargsf, kwnames);
    }
    const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (g->raw != nullptr && nargs >= 1 && PyObject_TypeCheck(args[0], g_policy_type)) {
        return g->raw(args[0], args + 1, nargs - 1, kwnames);  // what the descriptor calls
    }
    return PyObject_Vectorcall(g->native, args, nargsf, kwnames);  // it raises the TypeError
}

// The raw function behind `native` when it is one of the Policy's own methods.
RawMethod raw_method_of(PyObject* native) {
    const std::pair<const char*, RawMethod> methods[] = {{"execute", policy_execute},
                                                         {"execute_async", policy_execute_async}};
    for (const auto& [name, raw] : methods) {
        PyObject* method = PyObject_GetAttrString(reinterpret_cast<PyObject*>(g_policy_type), name);
        Py_XDECREF(method);  // the class holds it: only its identity is compared
        if (method == native) {
            return raw;
        }
    }
    PyErr_Clear();
    return nullptr;
}

const char* const trace_gate_keywords[] = {"native", "traced", "var", "span_key", "root_off",
                                           "off", nullptr};

PyObject* trace_gate_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    PyObject* native = nullptr;
    PyObject* traced = nullptr;
    PyObject* var = nullptr;
    PyObject* span_key = nullptr;
    int root_off = 0;
    int off[2][2] = {{0, 0}, {0, 0}};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOUp((pp)(pp)):TraceGate",
                                     const_cast<char**>(trace_gate_keywords), &native, &traced,
                                     &var, &span_key, &root_off, &off[0][0], &off[0][1],
                                     &off[1][0], &off[1][1])) {
        return nullptr;
    }
    if (!PyCallable_Check(native) || !PyCallable_Check(traced)) {
        PyErr_SetString(PyExc_TypeError, "TraceGate native and traced must be callable");
        return nullptr;
    }
    const int is_var = PyObject_IsInstance(var, g_context_var_type);
    if (is_var != 1) {
        if (is_var == 0) {
            PyErr_SetString(PyExc_TypeError, "TraceGate var must be a contextvars.ContextVar");
        }
        return nullptr;
    }
    auto* alloc = reinterpret_cast<allocfunc>(PyType_GetSlot(type, Py_tp_alloc));
    auto* g = reinterpret_cast<TraceGateObject*>(alloc(type, 0));
    if (g == nullptr) {
        return nullptr;
    }
    g->vectorcall = trace_gate_vectorcall;
    g->native = Py_NewRef(native);
    g->raw = raw_method_of(native);
    g->traced = Py_NewRef(traced);
    g->var = Py_NewRef(var);
    g->span_key = Py_NewRef(span_key);
    g->root_off = root_off != 0;
    for (int remote = 0; remote < 2; ++remote) {
        for (int sampled = 0; sampled < 2; ++sampled) {
            g->off[remote][sampled] = off[remote][sampled] != 0;
        }
    }
#ifndef Py_GIL_DISABLED
    g->cached_context = nullptr;
    g->cached_context_drops = false;
    g->cached_span = nullptr;
    g->cached_span_drops = false;
#endif
    return reinterpret_cast<PyObject*>(g);
}

#ifndef Py_GIL_DISABLED
using TraceGateRefs =
    References<TraceGateObject, &TraceGateObject::native, &TraceGateObject::traced,
               &TraceGateObject::var, &TraceGateObject::span_key,
               &TraceGateObject::cached_context, &TraceGateObject::cached_span>;
#else
using TraceGateRefs = References<TraceGateObject, &TraceGateObject::native,
                                 &TraceGateObject::traced, &TraceGateObject::var,
                                 &TraceGateObject::span_key>;
#endif

PyObject* trace_gate_get_native(PyObject* self, void*) {
    return Py_NewRef(reinterpret_cast<TraceGateObject*>(self)->native);
}

PyObject* trace_gate_get_traced(PyObject* self, void*) {
    return Py_NewRef(reinterpret_cast<TraceGateObject*>(self)->traced);
}

PyGetSetDef trace_gate_getset[] = {
    {"native", trace_gate_get_native, nullptr, "The method a call the sampler drops runs.",
     nullptr},
    {"traced", trace_gate_get_traced, nullptr, "The method every other call runs.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyType_Slot trace_gate_type_slots[] = {
    {Py_tp_new, reinterpret_cast<void*>(trace_gate_new)},
    {Py_tp_dealloc, reinterpret_cast<void*>(dealloc_cleared<TraceGateRefs::clear>)},
    {Py_tp_traverse, reinterpret_cast<void*>(TraceGateRefs::traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(TraceGateRefs::clear)},
    {Py_tp_call, reinterpret_cast<void*>(PyVectorcall_Call)},
    {Py_tp_descr_get, reinterpret_cast<void*>(bind_as_method)},
    {Py_tp_members, vectorcall_members<TraceGateObject>},
    {Py_tp_getset, trace_gate_getset},
    {Py_tp_doc, const_cast<char*>(
                    "TraceGate(native, traced, var, span_key, root_off, off): a method that\n"
                    "calls native(self, ...) when a parent-based sampler drops the call (the\n"
                    "current span of the Context in var, under span_key: a valid parent's\n"
                    "delegate off[is_remote][sampled], a root's root_off, is ALWAYS_OFF),\n"
                    "else traced(self, ...). Binds as a method when it is a class attribute.")},
    {0, nullptr}};

PyType_Spec trace_gate_spec = {
    "TraceGate",  // the module's name is prefixed at import
    sizeof(TraceGateObject), 0,
    // Immutable: CPython specialises the lookup of a method only when its
    // descriptor's type is (a mutable one costs a full lookup per call).
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
        Py_TPFLAGS_METHOD_DESCRIPTOR | Py_TPFLAGS_IMMUTABLETYPE,
    trace_gate_type_slots};

// _context_with(context, key, value): a copy of `context` (its own type: the
// API's Context) that also maps key to value; the traced path's contexts
// (the execution's span, each attempt's: see otel_context_with).
PyObject* context_with(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "_context_with() takes context, key and value");
        return nullptr;
    }
    return otel_context_with(args[0], args[1], args[2]);
}

PyMethodDef context_with_def = {
    "_context_with", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(context_with)),
    METH_FASTCALL,
    "_context_with(context, key, value, /)\n--\n\n"
    "A copy of context (of its type: an OpenTelemetry Context) that also maps\n"
    "key to value."};

}  // namespace

// Context({**context, key: value}) in Python copies the items twice (into a
// dict, then into the Context) and runs a few opcodes more: about 2,900
// instructions against 1,600.
PyObject* otel_context_with(PyObject* context, PyObject* key, PyObject* value) {
    if (!PyDict_Check(context)) {
        PyErr_SetString(PyExc_TypeError, "_context_with() context must be a dict (a Context)");
        return nullptr;
    }
    // An empty Context filled by PyDict_Update, not Context(context): given
    // a dict subclass, the dict's constructor looks up its `keys` method
    // first (a type lookup that mostly misses CPython's method cache in the
    // traced path: ~200 instructions a copy); the update merges a subclass
    // that keeps the dict's iteration as a dict.
    PyObject* copy = PyObject_CallNoArgs(reinterpret_cast<PyObject*>(Py_TYPE(context)));
    if (copy != nullptr && !PyDict_Check(copy)) {
        Py_DECREF(copy);
        PyErr_SetString(PyExc_TypeError, "_context_with() context's type must make a dict");
        return nullptr;
    }
    // PyDict_Update and PyDict_SetItem, not the item assignment a Context
    // refuses: the copy is nobody else's yet.
    if (copy != nullptr &&
        (PyDict_Update(copy, context) != 0 || PyDict_SetItem(copy, key, value) != 0)) {
        Py_CLEAR(copy);
    }
    return copy;
}

void bind_otel_gate(nb::module_& m) {
    g_policy_type = reinterpret_cast<PyTypeObject*>(nb::type<PyPolicy>().ptr());
    g_str_get_span_context = interned("get_span_context");
    m.attr("TraceGate") = type_from_spec(m, &trace_gate_spec);
    PyObject* function = PyCFunction_NewEx(&context_with_def, nullptr, m.attr("__name__").ptr());
    if (function == nullptr) {
        throw nb::python_error();
    }
    m.attr("_context_with") = nb::steal(function);
}

}  // namespace virtrigaud_bind
