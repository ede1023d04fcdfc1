// CircuitBreaker: the lock-free breaker (vr::CircuitBreaker), its raw hot
// method call(), the hooks a drop-in hands parts of the call path to, and
// BreakerCall, a function bound to a breaker.

#include "binding.hpp"
#include "samples.hpp"

namespace virtrigaud_bind {
namespace {

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
    ticket = b->core().acquire();
    if (!ticket.admitted) {
        if (notify(self, ticket.transition)) {  // window mode: a half-open wait ran out
            raise_rejected(self);
        }
        return false;
    }
    if (!notify(self, ticket.transition)) {
        b->core().release(ticket);
        return false;
    }
    return true;
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

// A call through the breaker: admit, fn(*args, **kwargs) (args/nargsf/kwnames
// exactly as fn gets them), record. Shared by CircuitBreaker.call and
// BreakerCall, and inlined into each: a call between them cost a frame's
// prologue and epilogue on every call (~25 instructions of ~150).
#if defined(__GNUC__) || defined(__clang__)
__attribute__((always_inline)) inline
#endif
PyObject* call_through(PyObject* self, PyCircuitBreaker* b, PyObject* fn, PyObject* const* args,
                       size_t nargsf, PyObject* kwnames) {
    const uint32_t hooks = b->hooks.load(std::memory_order_relaxed);
    if ((hooks & kDelegate) != 0) {
        return call_hook_with_args(self, "_call_python", fn, args, nargsf, kwnames);
    }
    vr::Ticket ticket = b->core().acquire();
    if (!ticket.admitted) {
        if (!notify(self, ticket.transition)) {  // window mode: a half-open wait ran out
            return nullptr;
        }
        if ((hooks & kHookReject) != 0) {
            return call_hook_with_args(self, "_on_reject", fn, args, nargsf, kwnames);
        }
        return raise_rejected(self);
    }
    if (ticket.transition.changed && !notify(self, ticket.transition)) {
        b->core().release(ticket);
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
            b->core().release(ticket);  // nothing will report it
        }
        return r;
    }
    if (is_coroutine(result) && (hooks & kAcceptCoroutine) == 0) {
        b->core().release(ticket);  // nothing ran: no outcome
        return refuse_coroutine(result, "CircuitBreaker.call()",
                                "'await breaker.call_async(fn, ...)'");
    }
    const vr::Transition moved = b->core().record_success(ticket);
    if (moved.changed && !notify(self, moved)) {  // the check inline: none on most calls
        Py_DECREF(result);
        return nullptr;
    }
    return result;
}

// admit() that leaves a rejection as a ticket that is not admitted.
bool admit_quietly_rejected(PyObject* self, PyCircuitBreaker* b, vr::Ticket& ticket) {
    ticket = b->core().acquire();
    if (!notify(self, ticket.transition)) {
        if (ticket.admitted) {
            b->core().release(ticket);
        }
        return false;
    }
    return true;
}

// A ticket from Python with the clock time of its admission (window mode's
// slow calls; -1: unknown, never slow).
vr::Ticket timed_ticket(int64_t ticket, int64_t start_ns) {
    vr::Ticket t = vr::Ticket::decode(ticket);
    t.start_ns = start_ns;
    return t;
}

vr::WindowSettings window_settings(int kind, uint32_t size, uint32_t minimum_calls,
                                   double failure_rate, int64_t slow_call_ns,
                                   double slow_call_rate, int64_t max_wait_half_open_ns,
                                   std::optional<std::tuple<int, double, double, double, bool>>
                                       open_backoff) {
    vr::WindowSettings w;
    if (kind != 0 && kind != 1) {
        throw nb::value_error("WindowSettings kind must be 0 (count) or 1 (time)");
    }
    w.kind = static_cast<vr::WindowKind>(kind);
    w.size = size;
    w.minimum_calls = minimum_calls;
    w.failure_rate = failure_rate;
    w.slow_call_ns = slow_call_ns;
    w.slow_call_rate = slow_call_rate;
    w.max_wait_half_open_ns = max_wait_half_open_ns;
    if (open_backoff) {
        const auto& [strategy, base, cap, multiplier, jitter] = *open_backoff;
        w.open_backoff = true;
        w.backoff_strategy = static_cast<vr::Strategy>(strategy & 3);
        w.backoff_base = base;
        w.backoff_cap = cap;
        w.backoff_multiplier = multiplier;
        w.backoff_jitter = jitter;
    }
    return w;
}

PyObject* circuit_breaker_call(PyObject* self, PyObject* const* args, Py_ssize_t nargsf,
                               PyObject* kwnames) {
    auto* b = fn_method_target<PyCircuitBreaker>(self, nargsf, "CircuitBreaker",
                                                 "CircuitBreaker.call()");
    if (b == nullptr) {
        return nullptr;
    }
    const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    // fn's slot, args[0], is the caller's (an item of the tuple of
    // `breaker.call(*t)`): no PY_VECTORCALL_ARGUMENTS_OFFSET over it, so the
    // call copies the arguments behind a slot of its own (forward_call).
    return call_through(self, b, args[0], args + 1, static_cast<size_t>(nargs - 1), kwnames);
}

PyMethodDef circuit_breaker_call_def = {
    "call", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(circuit_breaker_call)),
    METH_FASTCALL | METH_KEYWORDS,
    "call(self, fn, /, *args, **kwargs)\n--\n\n"
    "Calls fn(*args, **kwargs) through the breaker and returns its result.\n"
    "Raises UnavailableError without calling fn while the breaker is open.\n"
    "An exception from fn is recorded (failure, success or nothing, as the\n"
    "breaker's failure predicate says) and re-raised unchanged."};

// ------------------------------------------------------------ BreakerCall --
//
// fn bound to a breaker: calling it is breaker.call(fn, ...) in one native
// crossing, with no Python wrapper frame and no *args packing (the
// decorators of the drop-ins return it for plain functions, as the retry
// decorators return a RetryCall). It binds as a method does (a descriptor
// like a function), and has a __dict__ for functools.update_wrapper's
// __name__, __doc__, __wrapped__. It was called Guarded: _core.Guarded stays
// an alias of it for one minor release.

struct BreakerCallObject {
    PyObject_HEAD
    PyObject* breaker;
    PyObject* fn;
    PyObject* dict;
    PyObject* weaklist;
    vectorcallfunc vectorcall;
};

PyObject* breaker_call_vectorcall(PyObject* self, PyObject* const* args, size_t nargsf,
                             PyObject* kwnames) {
    auto* g = reinterpret_cast<BreakerCallObject*>(self);
    auto* b = ready_instance<PyCircuitBreaker>(g->breaker, "CircuitBreaker");
    if (b == nullptr) {
        return nullptr;
    }
    return call_through(g->breaker, b, g->fn, args, nargsf, kwnames);
}

PyObject* breaker_call_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    PyObject* breaker = nullptr;
    PyObject* fn = nullptr;
    if ((kwargs != nullptr && PyDict_Size(kwargs) != 0) ||
        !PyArg_UnpackTuple(args, "BreakerCall", 2, 2, &breaker, &fn)) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "BreakerCall(breaker, fn) takes two positional arguments");
        }
        return nullptr;
    }
    if (!nb::isinstance<PyCircuitBreaker>(breaker)) {
        PyErr_SetString(PyExc_TypeError, "BreakerCall breaker must be a CircuitBreaker");
        return nullptr;
    }
    if (!PyCallable_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "BreakerCall fn must be callable");
        return nullptr;
    }
    auto* alloc = reinterpret_cast<allocfunc>(PyType_GetSlot(type, Py_tp_alloc));
    auto* g = reinterpret_cast<BreakerCallObject*>(alloc(type, 0));
    if (g == nullptr) {
        return nullptr;
    }
    g->breaker = Py_NewRef(breaker);
    g->fn = Py_NewRef(fn);
    g->dict = nullptr;
    g->weaklist = nullptr;
    g->vectorcall = breaker_call_vectorcall;
    return reinterpret_cast<PyObject*>(g);
}

using BreakerCallRefs = References<BreakerCallObject, &BreakerCallObject::breaker,
                                   &BreakerCallObject::fn, &BreakerCallObject::dict>;

void breaker_call_dealloc(PyObject* self) {
    PyTypeObject* type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (reinterpret_cast<BreakerCallObject*>(self)->weaklist != nullptr) {
        PyObject_ClearWeakRefs(self);
    }
    BreakerCallRefs::clear(self);
    auto* free_fn = reinterpret_cast<freefunc>(PyType_GetSlot(type, Py_tp_free));
    free_fn(self);
    Py_DECREF(type);
}

PyObject* breaker_call_get_breaker(PyObject* self, void*) {
    return Py_NewRef(reinterpret_cast<BreakerCallObject*>(self)->breaker);
}

PyObject* breaker_call_get_fn(PyObject* self, void*) {
    return Py_NewRef(reinterpret_cast<BreakerCallObject*>(self)->fn);
}

PyMethodDef breaker_call_methods[] = {
    {"__reduce__", reduce_by_qualname, METH_NOARGS, "Pickled by its qualified name."},
    {nullptr, nullptr, 0, nullptr}};

PyMemberDef breaker_call_members[] = {
    {"__vectorcalloffset__", VR_T_PYSSIZET, offsetof(BreakerCallObject, vectorcall), VR_READONLY,
     nullptr},
    {"__dictoffset__", VR_T_PYSSIZET, offsetof(BreakerCallObject, dict), VR_READONLY, nullptr},
    {"__weaklistoffset__", VR_T_PYSSIZET, offsetof(BreakerCallObject, weaklist), VR_READONLY, nullptr},
    {nullptr, 0, 0, 0, nullptr}};

PyGetSetDef breaker_call_getset[] = {
    {"breaker", breaker_call_get_breaker, nullptr, "The CircuitBreaker every call goes through.",
     nullptr},
    {"fn", breaker_call_get_fn, nullptr, "The callable every call runs.", nullptr},
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, nullptr, nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyType_Slot breaker_call_type_slots[] = {
    {Py_tp_new, reinterpret_cast<void*>(breaker_call_new)},
    {Py_tp_dealloc, reinterpret_cast<void*>(breaker_call_dealloc)},
    {Py_tp_traverse, reinterpret_cast<void*>(BreakerCallRefs::traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(BreakerCallRefs::clear)},
    {Py_tp_call, reinterpret_cast<void*>(PyVectorcall_Call)},
    {Py_tp_descr_get, reinterpret_cast<void*>(bind_as_method)},
    {Py_tp_members, breaker_call_members},
    {Py_tp_methods, breaker_call_methods},
    {Py_tp_getset, breaker_call_getset},
    {Py_tp_doc, const_cast<char*>(
                    "BreakerCall(breaker, fn): fn whose every call is breaker.call(fn, ...), in one\n"
                    "native call; binds as a method when it is a class attribute.")},
    {0, nullptr}};

PyType_Spec breaker_call_spec = {
    "virtrigaud_resilience._core.BreakerCall", sizeof(BreakerCallObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
        Py_TPFLAGS_METHOD_DESCRIPTOR,
    breaker_call_type_slots};

int breaker_traverse(PyObject* self, visitproc visit, void* arg) {
#if PY_VERSION_HEX >= 0x03090000
    Py_VISIT(Py_TYPE(self));
#endif
    if (!nb::inst_ready(self)) {
        return 0;
    }
    auto* b = nb::inst_ptr<PyCircuitBreaker>(self);
    Py_VISIT(b->classify.ptr());
    Py_VISIT(b->listeners().ptr());
    return 0;
}

int breaker_clear(PyObject* self) {
    if (nb::inst_ready(self)) {
        auto* b = nb::inst_ptr<PyCircuitBreaker>(self);
        b->classify = nb::none();
        b->listeners() = nb::none();
    }
    return 0;
}

// Two attributes breaker.py reads and writes as it did its slots, kept
// natively so that a breaker's Python object is 16 bytes smaller (a smaller
// size class): plain getset descriptors, about as fast as a slot (a
// nanobind property costs a call more), for _timing is read by every call
// through the Python paths.
PyObject* breaker_get_timing(PyObject* self, void*) {
    return PyBool_FromLong(nb::inst_ready(self) &&
                           nb::inst_ptr<PyCircuitBreaker>(self)->core().timed());
}

PyObject* breaker_get_listeners(PyObject* self, void*) {
    if (!nb::inst_ready(self)) {
        Py_RETURN_NONE;
    }
    return nb::inst_ptr<PyCircuitBreaker>(self)->listeners().inc_ref().ptr();
}

int breaker_set_listeners(PyObject* self, PyObject* value, void*) {
    if (!nb::inst_ready(self)) {
        PyErr_SetString(PyExc_TypeError,
                        "CircuitBreaker._listeners: the breaker is not initialised");
        return -1;
    }
    if (value != nullptr && value != Py_None && !PyList_Check(value)) {
        // The type's __name__, not tp_name: PyTypeObject is opaque in the limited API.
        PyObject* name = PyObject_GetAttrString(reinterpret_cast<PyObject*>(Py_TYPE(value)),
                                                "__name__");
        if (name != nullptr) {
            PyErr_Format(PyExc_TypeError,
                         "CircuitBreaker._listeners must be a list or None, got %S", name);
            Py_DECREF(name);
        }
        return -1;
    }
    nb::inst_ptr<PyCircuitBreaker>(self)->listeners() =
        nb::borrow(value != nullptr ? value : Py_None);
    return 0;
}

PyGetSetDef breaker_getset[] = {
    {"_timing", breaker_get_timing, nullptr,
     "Whether the Python call paths time their calls (window mode with slow calls).", nullptr},
    {"_listeners", breaker_get_listeners, breaker_set_listeners,
     "This breaker's state listeners (a list), or None before the first.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyType_Slot breaker_slots[] = {{Py_tp_traverse, reinterpret_cast<void*>(breaker_traverse)},
                               {Py_tp_clear, reinterpret_cast<void*>(breaker_clear)},
                               {Py_tp_getset, breaker_getset},
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

// For the metrics collectors: the breakers of a list the caller holds,
// summed by their labels (provider_type, provider), in the order the labels
// first appear. One pass reads each breaker once, for every series.
using LabelKey = nb::typed<nb::tuple, nb::str, nb::ellipsis>;

// The operator's mode as BreakerMode's value (3: forced open).
int mode_code(const vr::CircuitBreaker& c) {
    return c.state() == vr::BreakerState::kHeldOpen ? 3 : static_cast<int>(c.mode());
}

// [successes, failures_total, rejected, to_closed, to_half_open, to_open,
// slow_calls, ignored]: a row's counters, and a dropped breaker's final ones
// (breaker.py's _final_counters).
constexpr size_t kCounters = 8;
constexpr size_t kSlowCalls = 6;

// The type of the breakers (a lookup in nanobind's type map: once a sum).
PyTypeObject* breaker_type() {
    return reinterpret_cast<PyTypeObject*>(nb::type<PyCircuitBreaker>().ptr());
}

// The breaker of `h` (`type`: breaker_type()), or a TypeError naming `who`
// for anything else.
const PyCircuitBreaker* checked_breaker(nb::handle h, PyTypeObject* type, const char* who) {
    if (!PyObject_TypeCheck(h.ptr(), type) || !nb::inst_ready(h)) {
        throw nb::type_error((std::string(who) + " takes a list of initialised CircuitBreakers").c_str());
    }
    return nb::inst_ptr<PyCircuitBreaker>(h);
}

// The counters of `c`, in a row's order.
void read_counters(const vr::CircuitBreaker& c, uint64_t (&out)[kCounters]) {
    const uint64_t read[kCounters] = {c.successes(),
                                      c.failures_total(),
                                      c.rejected(),
                                      c.transitions_to(vr::BreakerState::kClosed),
                                      c.transitions_to(vr::BreakerState::kHalfOpen),
                                      c.transitions_to(vr::BreakerState::kOpen),
                                      c.slow_calls(),
                                      c.ignored()};
    std::copy(std::begin(read), std::end(read), std::begin(out));
}

// Calls add(key, counters) for each entry of `dropped` (labels -> a dropped
// breaker's summed final counters, kCounters ints); `who` names the caller
// in the ValueError for anything else.
template <typename Add>
void for_each_dropped(nb::dict dropped, const char* who, Add&& add) {
    PyObject* key;
    PyObject* counters;
    Py_ssize_t pos = 0;
    while (PyDict_Next(dropped.ptr(), &pos, &key, &counters)) {
        nb::object values = nb::steal(PySequence_Tuple(counters));
        if (!values.is_valid()) {
            throw nb::python_error();
        }
        if (!PyTuple_Check(key) ||
            PyTuple_Size(values.ptr()) != static_cast<Py_ssize_t>(kCounters)) {
            throw nb::value_error((std::string(who) + " dropped maps label tuples to " +
                                   std::to_string(kCounters) + " counters").c_str());
        }
        uint64_t read[kCounters];
        for (size_t k = 0; k < kCounters; ++k) {
            PyObject* item = PyTuple_GetItem(values.ptr(), static_cast<Py_ssize_t>(k));
            read[k] = PyLong_AsUnsignedLongLong(item);
            if (read[k] == static_cast<uint64_t>(-1) && PyErr_Occurred()) {
                throw nb::python_error();
            }
        }
        add(nb::borrow(key), read);
    }
}

// One label set's breakers, summed.
struct LabelRow {
    nb::object key;
    uint64_t counters[kCounters] = {};
    int worst = 0;         // the highest state code (0 closed, 1 half-open, 2 open)
    int mode = 0;          // the highest mode_code()
    bool live = false;     // a live breaker has these labels: the gauges apply
    bool windowed = false; // one of them judges a window: the rates apply
    double failure_rate = -1.0;  // the highest among the windowed, -1 below minimum_calls
    double slow_rate = -1.0;
};

// Rows by labels, in the order the labels first appear.
class LabelRows {
public:
    /// The row of `key` (a new reference, kept), made on first use.
    LabelRow& row(nb::object key) {
        PyObject* at = PyDict_GetItemWithError(position_.ptr(), key.ptr());  // borrowed
        if (at == nullptr && PyErr_Occurred()) {
            throw nb::python_error();
        }
        if (at != nullptr) {
            return rows_[PyLong_AsSize_t(at)];
        }
        nb::object index = nb::steal(PyLong_FromSize_t(rows_.size()));
        if (!index.is_valid() || PyDict_SetItem(position_.ptr(), key.ptr(), index.ptr()) < 0) {
            throw nb::python_error();
        }
        rows_.push_back(LabelRow{std::move(key)});
        return rows_.back();
    }

    /// Adds each live breaker of `breakers` to its labels' row; `who` names
    /// the caller in the TypeError for anything else.
    void add_live(nb::handle breakers, const char* who) {
        PyTypeObject* type = breaker_type();
        for (nb::handle h : breakers) {
            const PyCircuitBreaker* b = checked_breaker(h, type, who);
            nb::object key = nb::steal(PyTuple_Pack(2, b->provider_type.ptr(), b->provider().ptr()));
            if (!key.is_valid()) {
                throw nb::python_error();
            }
            add(row(std::move(key)), b->core());
        }
    }

    /// Adds `dropped` (labels -> a dropped breaker's summed final counters,
    /// kCounters ints) to the rows' counters.
    void add_dropped(nb::dict dropped, const char* who) {
        for_each_dropped(dropped, who, [this](nb::object key, const uint64_t (&counters)[kCounters]) {
            LabelRow& r = row(std::move(key));
            for (size_t k = 0; k < kCounters; ++k) {
                r.counters[k] += counters[k];
            }
        });
    }

    const std::vector<LabelRow>& rows() const { return rows_; }

private:
    static void add(LabelRow& row, const vr::CircuitBreaker& c) {
        uint64_t read[kCounters];
        read_counters(c, read);
        for (size_t k = 0; k < kCounters; ++k) {
            row.counters[k] += read[k];
        }
        row.live = true;
        row.worst = std::max(row.worst, state_code(c.state()));
        row.mode = std::max(row.mode, mode_code(c));
        if (c.windowed()) {
            row.windowed = true;
            row.failure_rate = std::max(row.failure_rate, c.failure_rate());
            row.slow_rate = std::max(row.slow_rate, c.slow_call_rate());
        }
    }

    std::vector<LabelRow> rows_;
    nb::dict position_;  // key -> index in rows_
};

using BreakerSums = nb::typed<nb::dict, LabelKey, nb::typed<nb::list, int>>;

// A new list [the kCounters counters, state, mode]: a row of the sums.
nb::object sums_row(const uint64_t (&counters)[kCounters], int state, int mode) {
    nb::object values = nb::steal(PyList_New(kCounters + 2));
    if (!values.is_valid()) {
        throw nb::python_error();
    }
    for (size_t k = 0; k < kCounters; ++k) {
        PyObject* value = PyLong_FromUnsignedLongLong(counters[k]);
        if (value == nullptr) {
            throw nb::python_error();
        }
        PyList_SetItem(values.ptr(), static_cast<Py_ssize_t>(k), value);
    }
    PyList_SetItem(values.ptr(), kCounters, PyLong_FromLong(state));  // small: cached
    PyList_SetItem(values.ptr(), kCounters + 1, PyLong_FromLong(mode));
    return values;
}

void set_row(nb::dict& sums, nb::handle key, const nb::object& values) {
    if (PyDict_SetItem(sums.ptr(), key.ptr(), values.ptr()) < 0) {
        throw nb::python_error();
    }
}

// By labels: [the kCounters counters, the highest state code, the highest
// mode] (the OpenTelemetry instruments').
VIRTRIGAUD_COLD BreakerSums sum_by_labels(nb::typed<nb::sequence, PyCircuitBreaker> breakers) {
    const samples::GcPaused paused;  // a key tuple per breaker, a list per row: no cycles
    LabelRows rows;
    rows.add_live(breakers, "_sum_by_labels()");
    nb::dict sums;
    for (const LabelRow& row : rows.rows()) {
        set_row(sums, row.key, sums_row(row.counters, row.worst, row.mode));
    }
    return BreakerSums(std::move(sums));
}

// The rows of _sum_by_name, in the order their keys first appear. With a
// name per VM most rows are one breaker's: each goes straight into the
// result (no index of rows, as LabelRows keeps); a key seen again (two
// breakers of one name, a dropped total) is merged into the row there.
class NamedSums {
public:
    /// Adds counters, state and mode to the row of `key`.
    void add(nb::handle key, const uint64_t (&counters)[kCounters], int state, int mode) {
        PyObject* at = PyDict_GetItemWithError(sums_.ptr(), key.ptr());  // borrowed
        if (at == nullptr) {
            if (PyErr_Occurred()) {
                throw nb::python_error();
            }
            set_row(sums_, key, sums_row(counters, state, mode));
            return;
        }
        uint64_t merged[kCounters];
        for (size_t k = 0; k < kCounters; ++k) {
            merged[k] = counters[k] + PyLong_AsUnsignedLongLong(
                PyList_GetItem(at, static_cast<Py_ssize_t>(k)));  // ours: never fails
        }
        constexpr auto kState = static_cast<Py_ssize_t>(kCounters);
        state = std::max(state, static_cast<int>(PyLong_AsLong(PyList_GetItem(at, kState))));
        mode = std::max(mode, static_cast<int>(PyLong_AsLong(PyList_GetItem(at, kState + 1))));
        set_row(sums_, key, sums_row(merged, state, mode));
    }

    BreakerSums take() { return BreakerSums(std::move(sums_)); }

private:
    nb::dict sums_;
};

// By (provider_type, provider, name), the dropped totals added to the rows
// of their keys (a key of another length is a row of its own: the dropped
// breakers whose names were not kept). A row only dropped breakers have
// has state and mode 0.
VIRTRIGAUD_COLD BreakerSums sum_by_name(nb::typed<nb::sequence, PyCircuitBreaker> breakers,
                                        nb::typed<nb::dict, LabelKey, nb::any> dropped) {
    const samples::GcPaused paused;  // a key tuple and a list per breaker: no cycles
    NamedSums sums;
    PyTypeObject* type = breaker_type();
    for (nb::handle h : breakers) {
        const PyCircuitBreaker* b = checked_breaker(h, type, "_sum_by_name()");
        nb::object key = nb::steal(
            PyTuple_Pack(3, b->provider_type.ptr(), b->provider().ptr(), b->name.ptr()));
        if (!key.is_valid()) {
            throw nb::python_error();
        }
        uint64_t counters[kCounters];
        read_counters(b->core(), counters);
        sums.add(key, counters, state_code(b->core().state()), mode_code(b->core()));
    }
    for_each_dropped(dropped, "_sum_by_name()",
                     [&sums](nb::object key, const uint64_t (&counters)[kCounters]) {
                         sums.add(key, counters, 0, 0);
                     });
    return sums.take();
}

// A row's values for the Prometheus collector's samples (samples::Emitter):
// [the kCounters counters, then with a live breaker the highest state code
// and the highest mode, then with a window-mode breaker the highest failure
// rate and slow-call rate]. The slow calls are None (no series) for labels
// that never judged one: no window-mode breaker, and none counted.
class RowObjects {
public:
    explicit RowObjects(const LabelRow& row) {
        for (size_t k = 0; k < kCounters; ++k) {
            put(PyLong_FromUnsignedLongLong(row.counters[k]));  // mostly small: cached
        }
        if (!row.windowed && row.counters[kSlowCalls] == 0) {
            values_[kSlowCalls] = nb::none();
        }
        if (row.live) {
            put(PyLong_FromLong(row.worst));
            put(PyLong_FromLong(row.mode));
        }
        if (row.windowed) {
            put(PyFloat_FromDouble(row.failure_rate));
            put(PyFloat_FromDouble(row.slow_rate));
        }
    }
    size_t size() const { return size_; }
    /// Borrowed. i < size().
    PyObject* operator[](size_t i) const { return values_[i].ptr(); }

private:
    void put(PyObject* value) {
        if (value == nullptr) {
            throw nb::python_error();
        }
        values_[size_++] = nb::steal(value);
    }

    nb::object values_[kCounters + 4];
    size_t size_ = 0;
};

// The Prometheus collector's breaker series in one pass over the breakers
// and one over their label sets: the live breakers and the dropped ones'
// totals (labels -> kCounters counters) summed by labels, each label set's
// RowObjects emitted as samples (samples::Emitter: columns index them).
VIRTRIGAUD_COLD void emit_by_labels(nb::typed<nb::sequence, PyCircuitBreaker> breakers,
                                    nb::typed<nb::dict, LabelKey, nb::any> dropped,
                                    samples::LabelValues label_names, samples::Columns columns,
                                    samples::Proto proto, samples::Reported reported) {
    samples::Emitter emitter(std::move(label_names), std::move(columns), std::move(proto),
                             std::move(reported));
    const samples::GcPaused paused;  // a key tuple per breaker, the samples: no cycles
    LabelRows rows;
    rows.add_live(breakers, "_emit_by_labels()");
    rows.add_dropped(dropped, "_emit_by_labels()");
    emitter.reserve(rows.rows().size());
    for (const LabelRow& row : rows.rows()) {
        emitter.row(row.key.ptr(), RowObjects(row));
    }
    emitter.finish();
}

}  // namespace

bool specialise_breaker(nb::handle cls) {
    if (!is_subclass(cls, nb::type<PyCircuitBreaker>())) {
        return false;
    }
    specialise_method(cls, &circuit_breaker_call_def);
    return true;
}

void bind_breaker(nb::module_& m) {
    m.attr("BREAKER_MAX_FAILURE_THRESHOLD") = vr::CircuitBreaker::kMaxFailureThreshold;
    m.attr("BREAKER_MAX_HALF_OPEN_CALLS") = vr::CircuitBreaker::kMaxHalfOpenCalls;
    m.attr("BREAKER_MAX_TIMEOUT_NS") = vr::CircuitBreaker::kMaxTimeoutNs;
    m.attr("BREAKER_MAX_SUCCESS_THRESHOLD") = vr::CircuitBreaker::kMaxSuccessThreshold;

    m.attr("WINDOW_MAX_COUNT") = vr::SlidingWindow::kMaxCountSize;
    m.attr("WINDOW_MAX_SECONDS") = vr::SlidingWindow::kMaxTimeSize;

    nb::class_<PyWindowSettings>(m, "WindowSettings",
                                 "A window-mode breaker's settings (sliding_window.hpp), shared\n"
                                 "by the breakers made with it (one per BreakerConfig).")
        .def("__init__",
             [](PyWindowSettings* self, int kind, uint32_t size, uint32_t minimum_calls,
                double failure_rate, int64_t slow_call_ns, double slow_call_rate,
                int64_t max_wait_half_open_ns,
                std::optional<std::tuple<int, double, double, double, bool>> open_backoff) {
                 vr::SharedWindowSettings* shared =
                     vr::SharedWindowSettings::create(window_settings(
                         kind, size, minimum_calls, failure_rate, slow_call_ns, slow_call_rate,
                         max_wait_half_open_ns, open_backoff));
                 if (shared == nullptr) {
                     throw std::bad_alloc();
                 }
                 new (self) PyWindowSettings(shared);
             },
             "kind"_a, "size"_a, "minimum_calls"_a, "failure_rate"_a, "slow_call_ns"_a,
             "slow_call_rate"_a, "max_wait_half_open_ns"_a, "open_backoff"_a.none(),
             "kind 0 count / 1 time; slow_call_ns < 0 off; max_wait_half_open_ns 0 off;\n"
             "open_backoff (strategy, base, cap, multiplier, jitter) or None. Unchecked:\n"
             "the caller (BreakerConfig) validates.")
        .def_prop_ro("size", [](const PyWindowSettings& w) { return w.get().size; })
        .def_prop_ro("minimum_calls",
                     [](const PyWindowSettings& w) { return w.get().minimum_calls; });

    // Weak references in the native object, not declared by breaker.py:
    // from 3.12 a subclass's __weakref__ is "managed", two words before
    // the object, which took the breaker a size class up (368 -> 384 B).
    nb::class_<PyCircuitBreaker> breaker(m, "CircuitBreaker",
                                         "Lock-free circuit breaker (native part).",
                                         nb::type_slots(breaker_slots),
                                         nb::is_weak_referenceable());
    breaker
        .def("__init__",
             [](PyCircuitBreaker* self, nb::str name, nb::str provider_type,
                nb::str provider, uint32_t failure_threshold, int64_t reset_timeout_ns,
                uint32_t half_open_max_calls, const vr::ManualClock* clock, nb::object classify,
                int64_t half_open_lease_ns, const PyWindowSettings* window) {
                 new (self) PyCircuitBreaker(std::move(name), std::move(provider_type),
                                             std::move(provider), failure_threshold,
                                             reset_timeout_ns, half_open_max_calls, clock,
                                             std::move(classify), half_open_lease_ns,
                                             window != nullptr ? window->shared : nullptr);
                 if (self->core().window_failed()) {
                     self->~PyCircuitBreaker();
                     throw std::bad_alloc();
                 }
             },
             "name"_a, "provider_type"_a, "provider"_a, "failure_threshold"_a,
             "reset_timeout_ns"_a, "half_open_max_calls"_a, "clock"_a.none(), "classify"_a,
             "half_open_lease_ns"_a = 0, "window"_a.none() = nullptr, nb::keep_alive<1, 8>())
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
                if (!notify(self.h.ptr(), self.p->core().reset())) {
                    throw nb::python_error();
                }
            },
            "Closes the breaker and forgets its failures (manual override).")
        .def(
            "force_open",
            [](Self self) {
                if (!notify(self.h.ptr(), self.p->core().force_open())) {
                    throw nb::python_error();
                }
            },
            "Opens the breaker and holds it open until reset() (manual override).")
        .def(
            "disable",
            [](Self self) {
                if (!notify(self.h.ptr(), self.p->core().disable())) {
                    throw nb::python_error();
                }
            },
            "Admits every call and judges no outcome until reset() (an operator's override).")
        .def(
            "metrics_only",
            [](Self self) {
                if (!notify(self.h.ptr(), self.p->core().metrics_only())) {
                    throw nb::python_error();
                }
            },
            "Admits every call, records outcomes (rates, streak) and never opens, until\n"
            "reset() (an operator's override).")
        .def_prop_ro("_mode", [](const PyCircuitBreaker& b) { return static_cast<int>(b.core().mode()); },
                     "0 normal, 1 disabled, 2 metrics only.")
        .def(
            "_record_since",
            [](Self self, int64_t ticket, int outcome, int64_t start_ns) {
                if (!record(self.h.ptr(), self.p, timed_ticket(ticket, start_ns), outcome)) {
                    throw nb::python_error();
                }
            },
            "ticket"_a, "outcome"_a, "start_ns"_a,
            "_record() of a call admitted at clock time start_ns (window mode times it).")
        .def(
            "_record_exception_since",
            [](Self self, int64_t ticket, nb::handle exc, int64_t start_ns) {
                HookError error;
                record_exception(self.h.ptr(), self.p, timed_ticket(ticket, start_ns), exc.ptr(),
                                 error);
                if (error.raise()) {
                    throw nb::python_error();
                }
            },
            "ticket"_a, "exc"_a, "start_ns"_a,
            "_record_exception() of a call admitted at clock time start_ns.")
        .def_prop_ro("windowed", [](const PyCircuitBreaker& b) { return b.core().windowed(); },
                     "True for a breaker judging rates over a window.")
        .def_prop_ro("_timed",
                     [](const PyCircuitBreaker& b) {
                         const vr::WindowSettings* w = b.core().window_settings();
                         return w != nullptr && w->slow_call_ns >= 0;
                     },
                     "Whether outcomes are timed (window mode with slow calls).")
        .def_prop_ro("failure_rate", [](const PyCircuitBreaker& b) { return b.core().failure_rate(); },
                     "Failed / outcomes in the window; -1 below minimum_calls or without one.")
        .def_prop_ro("slow_call_rate",
                     [](const PyCircuitBreaker& b) { return b.core().slow_call_rate(); },
                     "Slow / outcomes in the window; -1 below minimum_calls or without one.")
        .def_prop_ro("window_calls",
                     [](const PyCircuitBreaker& b) {
                         const vr::WindowTotals t = b.core().window_totals();
                         return std::make_tuple(t.calls, t.failures, t.slow);
                     },
                     "(outcomes, failed, slow) in the window now; zeros without one.")
        .def_prop_ro("slow_calls", [](const PyCircuitBreaker& b) { return b.core().slow_calls(); },
                     "Outcomes judged slow (window mode).")
        .def_prop_ro("ignored", [](const PyCircuitBreaker& b) { return b.core().ignored(); },
                     "Outcomes that moved nothing: reported while disabled, or (window mode)\n"
                     "stale.")
        .def_prop_ro("openings", [](const PyCircuitBreaker& b) { return b.core().openings(); },
                     "Window mode: openings since the breaker last closed.")
        .def(
            "_open_for_ns",
            [](Self self, int64_t open_for_ns) {
                if (!notify(self.h.ptr(), self.p->core().trip_for(open_for_ns))) {
                    throw nb::python_error();
                }
            },
            "open_for_ns"_a,
            "Opens the breaker (or re-times an open one) to admit its next probe\n"
            "open_for_ns from now; a held-open breaker stays held.")
        .def_prop_ro("_state_code",
                     [](const PyCircuitBreaker& b) { return state_code(b.core().state()); })
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
            "_record_undispatched",
            [](PyCircuitBreaker& b, int64_t ticket, int outcome, int64_t storage_count) {
                const vr::Ticket t = vr::Ticket::decode(ticket);
                switch (outcome) {
                    case kSuccess:
                        return transition_tuple(b.core().record_success(t, storage_count));
                    case kFailure:
                        return transition_tuple(b.core().record_failure(t, storage_count));
                    default:
                        b.core().release(t);
                        return MaybeTransition();
                }
            },
            "ticket"_a, "outcome"_a, "storage_count"_a = -1,
            "Records a ticket's outcome (0 success, 1 failure, 2 release) without\n"
            "dispatching the transition it makes: returns it (old, new) or None, for the\n"
            "caller (a drop-in) to dispatch in its own order. `storage_count` >= 0 is a\n"
            "shared store's count after this outcome (successful probes, or the failure\n"
            "streak), which the breaker adopts.")
        .def(
            "_set_state_undispatched",
            [](PyCircuitBreaker& b, int kind) {
                switch (kind) {
                    case kMoveClose:
                        return transition_tuple(b.core().reset());
                    case kMoveHalfOpen:
                        return transition_tuple(b.core().to_half_open());
                    case kMoveOpen:
                        return transition_tuple(b.core().trip(false));
                    case kMoveOpenCounted:
                        return transition_tuple(b.core().trip(true));
                    default:
                        throw nb::value_error(
                            "_set_state_undispatched kind must be 0 close, 1 half-open, 2 open, "
                            "3 open + failure");
                }
            },
            "kind"_a,
            "A manual transition, not dispatched: 0 close, 1 half-open (slots\n"
            "free), 2 open (times out as a trip does), 3 open counting one failure.\n"
            "Returns the visible transition (old, new) or None.")
        .def(
            "_restore_undispatched",
            [](PyCircuitBreaker& b, int state, int64_t streak, int64_t successes,
               int64_t opened_at_ns) {
                return transition_tuple(
                    b.core().restore(state_from_code(state), streak, successes, opened_at_ns));
            },
            "state"_a, "streak"_a, "successes"_a, "opened_at_ns"_a,
            "Sets state, failure streak, half-open successes and the opening stamp at\n"
            "once, not dispatched; returns the visible transition (old, new) or None.")
        .def(
            "_configure",
            [](PyCircuitBreaker& b, uint32_t failure_threshold, int64_t reset_timeout_ns,
               uint32_t success_threshold) {
                b.core().set_failure_threshold(failure_threshold);
                b.core().set_reset_timeout_ns(reset_timeout_ns);
                b.core().set_success_threshold(success_threshold);
            },
            "failure_threshold"_a, "reset_timeout_ns"_a, "success_threshold"_a,
            "Changes the thresholds at run time (clamped; the caller validates).")
        .def_prop_ro("failure_streak", [](const PyCircuitBreaker& b) { return b.core().failure_streak(); },
                     "Counted failures since the last success or close, across opening.")
        .def_prop_ro("half_open_successes",
                     [](const PyCircuitBreaker& b) { return b.core().half_open_successes(); },
                     "Successful probes of the current half-open round.")
        .def_prop_ro("success_threshold",
                     [](const PyCircuitBreaker& b) { return b.core().success_threshold(); },
                     "0: the guide's half-open rule; S: the S-th successful probe closes.")
        .def_prop_ro("opened_at_ns", [](const PyCircuitBreaker& b) { return b.core().opened_at_ns(); },
                     "Clock time (ns) of the last opening; 0 if none.")
        .def("_now_ns", [](const PyCircuitBreaker& b) { return b.core().now(); },
             "The breaker's clock, in ns.")
        .def_prop_ro("held_open", [](const PyCircuitBreaker& b) {
            return b.core().state() == vr::BreakerState::kHeldOpen;
        }, "True while force_open() holds the breaker open.")
        .def_prop_ro("failures",
                     [](const PyCircuitBreaker& b) { return b.core().consecutive_failures(); },
                     "Consecutive counted failures while closed.")
        .def_prop_ro("half_open_calls",
                     [](const PyCircuitBreaker& b) { return b.core().half_open_calls(); },
                     "Half-open probe calls admitted and not released.")
        .def_prop_ro("generation", [](const PyCircuitBreaker& b) { return b.core().generation(); },
                     "Bumped by every transition (64 bits: it never wraps in practice).")
        .def_prop_ro(
            "remaining_open",
            [](const PyCircuitBreaker& b) {
                return static_cast<double>(b.core().remaining_open_ns()) / kNsPerSecond;
            },
            "Seconds until an open breaker admits a probe; 0 when not open.")
        .def_ro("name", &PyCircuitBreaker::name)
        .def_ro("provider_type", &PyCircuitBreaker::provider_type)
        .def_prop_ro("provider", [](const PyCircuitBreaker& b) { return b.provider(); })
        .def_prop_ro("failure_threshold",
                     [](const PyCircuitBreaker& b) { return b.core().failure_threshold(); })
        .def_prop_ro("half_open_max_calls",
                     [](const PyCircuitBreaker& b) { return b.core().half_open_max_calls(); })
        .def_prop_ro("reset_timeout",
                     [](const PyCircuitBreaker& b) {
                         return static_cast<double>(b.core().reset_timeout_ns()) / kNsPerSecond;
                     })
        .def_prop_ro("successes", [](const PyCircuitBreaker& b) { return b.core().successes(); },
                     "Outcomes recorded as success (stale ones included).")
        .def_prop_ro("failures_total",
                     [](const PyCircuitBreaker& b) { return b.core().failures_total(); },
                     "Outcomes recorded as failure (stale ones included).")
        .def_prop_ro("rejected", [](const PyCircuitBreaker& b) { return b.core().rejected(); },
                     "Calls refused without running.")
        .def_prop_ro("released", [](const PyCircuitBreaker& b) { return b.core().released(); },
                     "Admitted calls that ended without an outcome (cancelled).")
        .def_prop_ro("reclaimed", [](const PyCircuitBreaker& b) { return b.core().reclaimed(); },
                     "Half-open rounds restarted because every probe outlived its lease.")
        .def_prop_ro(
            "half_open_lease",
            [](const PyCircuitBreaker& b) -> std::optional<double> {
                if (b.core().half_open_lease_ns() == 0) {
                    return std::nullopt;
                }
                return static_cast<double>(b.core().half_open_lease_ns()) / kNsPerSecond;
            },
            "Seconds a half-open probe may go unreported before its slot is reclaimed;\n"
            "None for no lease.")
        .def_prop_ro(
            "transitions",
            [](const PyCircuitBreaker& b) {
                return std::make_tuple(b.core().transitions_to(vr::BreakerState::kClosed),
                                       b.core().transitions_to(vr::BreakerState::kHalfOpen),
                                       b.core().transitions_to(vr::BreakerState::kOpen));
            },
            "Transitions into (closed, half-open, open).")
        .def_prop_ro("last_transition_ns",
                     [](const PyCircuitBreaker& b) { return b.core().last_transition_ns(); },
                     "Clock time of the last transition in ns, 0 if none.")
        .def(
            "_counters",
            [](const PyCircuitBreaker& b) {
                const auto& c = b.core();
                return std::make_tuple(state_code(c.state()), c.successes(), c.failures_total(),
                                       c.rejected(), c.transitions_to(vr::BreakerState::kClosed),
                                       c.transitions_to(vr::BreakerState::kHalfOpen),
                                       c.transitions_to(vr::BreakerState::kOpen), c.slow_calls(),
                                       c.ignored());
            },
            "(state, successes, failures_total, rejected, to_closed, to_half_open, to_open,\n"
            "slow_calls, ignored) in one call, for the metrics collector.");
    breaker.def(
        "_window_report",
        [](const PyCircuitBreaker& b) {
            const auto& c = b.core();
            const int mode = c.state() == vr::BreakerState::kHeldOpen ? 3 : static_cast<int>(c.mode());
            return std::make_tuple(mode, c.windowed(), c.failure_rate(), c.slow_call_rate(),
                                   c.successes(), c.failures_total(), c.slow_calls(), c.rejected(),
                                   c.ignored());
        },
        "(mode, windowed, failure_rate, slow_call_rate, successes, failures_total, slow_calls,\n"
        "rejected, ignored) in one call, for the metrics collector (mode as BreakerMode:\n"
        "3 forced open).");
    bind_census<PyCircuitBreaker>(breaker);
    breaker.def_static("_sum_by_labels", &sum_by_labels, "breakers"_a,
                       "For the metrics collector: these breakers summed by (provider_type,\n"
                       "provider): [successes, failures_total, rejected, to_closed,\n"
                       "to_half_open, to_open, slow_calls, ignored, the highest state code,\n"
                       "the highest mode].");
    breaker.def_static("_sum_by_name", &sum_by_name, "breakers"_a, "dropped"_a,
                       "For the OpenTelemetry instruments: these breakers summed by\n"
                       "(provider_type, provider, name) as _sum_by_labels sums them, and\n"
                       "dropped (key tuple -> 8 counters) added to the rows of their keys\n"
                       "(state and mode 0 in a row of dropped breakers only).");
    breaker.def_static(
        "_emit_by_labels", &emit_by_labels, "breakers"_a, "dropped"_a, "label_names"_a,
        "columns"_a, "proto"_a, "reported"_a.none(),
        "For the Prometheus collector, in one pass: these breakers and the dropped\n"
        "ones' totals (labels -> 8 counters) summed by (provider_type, provider),\n"
        "emitted as by _emit_samples from the rows [the 8 counters of _sum_by_labels\n"
        "(slow_calls None for labels without a window-mode breaker or a slow call),\n"
        "then for labels with a live breaker the highest state code and mode, then\n"
        "for labels with a window-mode breaker the highest failure rate and\n"
        "slow-call rate (-1 below minimum_calls)].");
    m.def("_emit_samples", &samples::emit, "rows"_a, "label_names"_a, "columns"_a, "proto"_a,
          "reported"_a.none(),
          "For the metrics collector: for each (key, values) of rows and each column\n"
          "(samples, name, extra label or None, its value, index, clamped), appends\n"
          "to samples a sample like proto named name, labelled label_names = key (and\n"
          "the extra label), valued values[index] (none where the row has no such\n"
          "value, or None). With reported (key -> the list of the samples reported\n"
          "before, one per column, None where none was), an unchanged series is\n"
          "reported by the same sample, a clamped column's value never goes below\n"
          "the one reported before nor disappears, and reported is updated.");
    add_fastcall_method(breaker, &circuit_breaker_call_def);
    {
        PyObject* breaker_call_type = PyType_FromSpec(&breaker_call_spec);
        if (breaker_call_type == nullptr) {
            throw nb::python_error();
        }
        m.attr("BreakerCall") = nb::steal(breaker_call_type);
        m.attr("Guarded") = m.attr("BreakerCall");  // its former name (deprecated alias)
    }
}

}  // namespace virtrigaud_bind
