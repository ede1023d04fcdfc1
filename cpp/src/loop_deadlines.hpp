// Deadlines without a timer per deadline (issue 21, item 3): one native heap
// of deadlines per event loop behind one asyncio TimerHandle, and the native
// part of timeouts.TimeoutScope, which the awaitable of call_until
// (bind_awaitable.cpp) arms and ends with no Python frame.
//
//   _core._LoopDeadlines  the base of _loop_deadlines.LoopDeadlines: the
//       pending deadlines of one loop, an indexed binary heap (an entry that
//       ends first is removed at once: O(log n), nothing left for a sweep),
//       and the times of the TimerHandles pending on the loop. A handle is
//       scheduled only for a deadline earlier than every pending handle; a
//       handle whose deadline ended is not cancelled: it fires, finds
//       nothing due and re-arms for the earliest deadline left. Attempts one
//       after another, each with a 30 s deadline, schedule about one handle
//       every 30 s.
//   _core._DeadlineScope  the base of timeouts.TimeoutScope: its state and
//       its _start, _stop and _fire, in C++.
//
// Everything here runs on the loop's thread (a loop's deadlines are its
// own), under the GIL; a free-threaded build takes the slow path of the
// running-loop look-up every time (no process-wide cache).
//
// What only Python knows is installed once by timeouts.py
// (_install_deadlines): the TimeoutScope class, the two context variables
// (the enclosing deadline, the scopes the running code is inside), the
// look-up of the running loop's deadlines and the module whose _task_of
// finds the current task.

#pragma once

#include "binding.hpp"

namespace virtrigaud_bind {
namespace deadlines {
// Internal linkage: included by bind_awaitable.cpp alone.
namespace {

// ------------------------------------------------------------ the heap --

// A min-heap of (when, order) with removal by handle. Slots hold the
// entries; the heap orders slot indices, and each slot knows its place in
// the heap. A handle is (generation << 32 | slot): a slot reused after its
// entry ended or fired has another generation, so a stale handle ends nothing.
class DeadlineHeap {
   public:
    // Takes a reference to target. Returns the entry's handle.
    int64_t push(double when, PyObject* target) {
        int32_t slot;
        if (!free_.empty()) {
            slot = free_.back();
            free_.pop_back();
        } else {
            slot = static_cast<int32_t>(slots_.size());
            slots_.push_back(Slot{});
        }
        Slot& s = slots_[static_cast<size_t>(slot)];
        s.when = when;
        s.order = order_++;
        s.target = Py_NewRef(target);
        heap_.push_back(slot);
        s.position = static_cast<int32_t>(heap_.size() - 1);
        sift_up(heap_.size() - 1);
        return (static_cast<int64_t>(s.generation) << 32) | slot;
    }

    // The entry's target (a new reference) after removing it, or null when
    // the handle's entry already ended or fired.
    PyObject* remove(int64_t handle) {
        if (handle < 0) {
            return nullptr;
        }
        const auto slot = static_cast<size_t>(handle & 0xffffffff);
        if (slot >= slots_.size()) {
            return nullptr;
        }
        Slot& s = slots_[slot];
        if (s.target == nullptr || s.generation != static_cast<uint32_t>(handle >> 32)) {
            return nullptr;
        }
        const auto position = static_cast<size_t>(s.position);
        const int32_t last = heap_.back();
        heap_.pop_back();
        if (position < heap_.size()) {  // the last entry fills the hole
            place(position, last);
            sift_down(position);
            sift_up(static_cast<size_t>(slots_[static_cast<size_t>(last)].position));
        }
        return release(slot);
    }

    // The earliest entry's target (a new reference) after removing it, if it
    // is due at `due`; else null.
    PyObject* pop_due(double due) {
        if (heap_.empty() || slots_[static_cast<size_t>(heap_[0])].when > due) {
            return nullptr;
        }
        return remove(handle_of(heap_[0]));
    }

    bool empty() const { return heap_.empty(); }
    size_t size() const { return heap_.size(); }
    double earliest() const { return slots_[static_cast<size_t>(heap_[0])].when; }

    // The live entries in heap order: (when, order, target) each, or null
    // with an error set.
    PyObject* entries() const {
        PyObject* list = PyList_New(0);
        for (size_t i = 0; list != nullptr && i < heap_.size(); ++i) {
            const Slot& s = slots_[static_cast<size_t>(heap_[i])];
            PyObject* entry = Py_BuildValue("(dKO)", s.when,
                                            static_cast<unsigned long long>(s.order), s.target);
            if (entry == nullptr || PyList_Append(list, entry) != 0) {
                Py_XDECREF(entry);
                Py_CLEAR(list);
            }
            Py_XDECREF(entry);
        }
        return list;
    }

    int traverse(visitproc visit, void* arg) const {
        for (const Slot& s : slots_) {
            Py_VISIT(s.target);
        }
        return 0;
    }

    // Drops every entry (their targets' references go to `dropped`).
    void clear(std::vector<PyObject*>& dropped) {
        for (Slot& s : slots_) {
            if (s.target != nullptr) {
                dropped.push_back(s.target);
                s.target = nullptr;
            }
        }
        slots_.clear();
        heap_.clear();
        free_.clear();
    }

   private:
    struct Slot {
        double when = 0;
        uint64_t order = 0;
        PyObject* target = nullptr;  // null: a free slot
        uint32_t generation = 0;
        int32_t position = -1;
    };

    int64_t handle_of(int32_t slot) const {
        return (static_cast<int64_t>(slots_[static_cast<size_t>(slot)].generation) << 32) | slot;
    }

    PyObject* release(size_t slot) {
        Slot& s = slots_[slot];
        PyObject* target = s.target;
        s.target = nullptr;
        s.position = -1;
        ++s.generation;
        free_.push_back(static_cast<int32_t>(slot));
        return target;
    }

    bool before(int32_t a, int32_t b) const {
        const Slot& x = slots_[static_cast<size_t>(a)];
        const Slot& y = slots_[static_cast<size_t>(b)];
        return x.when < y.when || (x.when == y.when && x.order < y.order);
    }

    void place(size_t position, int32_t slot) {
        heap_[position] = slot;
        slots_[static_cast<size_t>(slot)].position = static_cast<int32_t>(position);
    }

    void sift_up(size_t i) {
        const int32_t moving = heap_[i];
        while (i > 0) {
            const size_t parent = (i - 1) / 2;
            if (!before(moving, heap_[parent])) {
                break;
            }
            place(i, heap_[parent]);
            i = parent;
        }
        place(i, moving);
    }

    void sift_down(size_t i) {
        const int32_t moving = heap_[i];
        const size_t n = heap_.size();
        for (;;) {
            size_t child = 2 * i + 1;
            if (child >= n) {
                break;
            }
            if (child + 1 < n && before(heap_[child + 1], heap_[child])) {
                ++child;
            }
            if (!before(heap_[child], moving)) {
                break;
            }
            place(i, heap_[child]);
            i = child;
        }
        place(i, moving);
    }

    std::vector<Slot> slots_;
    std::vector<int32_t> heap_;  // slot indices
    std::vector<int32_t> free_;
    uint64_t order_ = 0;  // ties fire in the order they were added
};

// --------------------------------------------------- _core._LoopDeadlines --

struct LoopDeadlinesObject {
    PyObject_HEAD
    PyObject* loop_ref;  // a weak reference to the loop (the loop holds our handles)
    PyObject* time_fn;   // the loop's time(), or null: time.monotonic read here, or
                         // loop.time() asked of the loop itself (ask_loop)
    bool ask_loop;
    DeadlineHeap* heap;
    std::vector<double>* timers;  // when our pending TimerHandles fire (a min-heap)
};

inline PyObject* g_loop_deadlines_type = nullptr;
inline PyObject* g_str_call_at = nullptr;
inline PyObject* g_str_fire_due = nullptr;
inline PyObject* g_str_fire = nullptr;
inline PyObject* g_str_time = nullptr;

// `slot` = value (a new reference), dropping what it held (Py_XSETREF is
// not in the stable ABI).
static void replace_ref(PyObject*& slot, PyObject* value) {
    PyObject* old = slot;
    slot = value;
    Py_XDECREF(old);
}

static LoopDeadlinesObject* as_deadlines(PyObject* self) {
    return reinterpret_cast<LoopDeadlinesObject*>(self);
}

// A weak reference's target as a new reference, or null when it is gone.
static PyObject* weak_target(PyObject* ref) {
    if (ref == nullptr) {  // a _LoopDeadlines whose __init__ never ran
        return nullptr;
    }
#if PY_VERSION_HEX >= 0x030D0000 && (!defined(Py_LIMITED_API) || Py_LIMITED_API + 0 >= 0x030D0000)
    PyObject* target = nullptr;
    if (PyWeakref_GetRef(ref, &target) < 0) {
        PyErr_Clear();
        return nullptr;
    }
    return target;
#else
    PyObject* target = PyWeakref_GetObject(ref);  // borrowed
    if (target == nullptr) {
        PyErr_Clear();
        return nullptr;
    }
    return target == Py_None ? nullptr : Py_NewRef(target);
#endif
}

// The loop's time now in seconds, or -1 with an error set.
static double loop_time(LoopDeadlinesObject* d) {
    PyObject* now = nullptr;
    if (d->ask_loop) {
        PyObject* loop = weak_target(d->loop_ref);
        if (loop == nullptr) {
            PyErr_SetString(PyExc_RuntimeError, "the event loop of these deadlines is gone");
            return -1;
        }
        PyObject* args[1] = {loop};
        now = PyObject_VectorcallMethod(g_str_time, args, 1, nullptr);
        Py_DECREF(loop);
    } else if (d->time_fn == nullptr) {
        return static_cast<double>(vr::steady_now_ns()) / kNsPerSecond;
    } else {
        now = PyObject_CallNoArgs(d->time_fn);
    }
    if (now == nullptr) {
        return -1;
    }
    const double seconds = PyFloat_AsDouble(now);
    Py_DECREF(now);
    return seconds == -1 && PyErr_Occurred() ? -1 : seconds;
}

// A TimerHandle for `when` on the loop: loop.call_at(when, self._fire_due).
static bool schedule(LoopDeadlinesObject* d, double when) {
    PyObject* loop = weak_target(d->loop_ref);
    if (loop == nullptr) {
        return true;  // the loop is gone: nothing will run its deadlines
    }
    PyObject* fire_due = PyObject_GetAttr(reinterpret_cast<PyObject*>(d), g_str_fire_due);
    PyObject* at = fire_due != nullptr ? PyFloat_FromDouble(when) : nullptr;
    PyObject* handle = nullptr;
    if (at != nullptr) {
        PyObject* args[3] = {loop, at, fire_due};
        handle = PyObject_VectorcallMethod(g_str_call_at, args, 3, nullptr);
    }
    Py_XDECREF(at);
    Py_XDECREF(fire_due);
    Py_DECREF(loop);
    if (handle == nullptr) {
        return false;
    }
    Py_DECREF(handle);
    d->timers->push_back(when);
    std::push_heap(d->timers->begin(), d->timers->end(), std::greater<>());
    return true;
}

// Fires target._fire() `delay` seconds of loop time from now unless
// end_deadline() is called with the handle first. -1 with an error set.
static int64_t add_deadline(LoopDeadlinesObject* d, double delay, PyObject* target) {
    const double now = loop_time(d);
    if (now == -1 && PyErr_Occurred()) {
        return -1;
    }
    const double when = now + delay;
    const int64_t handle = d->heap->push(when, target);
    const std::vector<double>& timers = *d->timers;
    if (timers.empty() || when < timers.front()) {
        if (!schedule(d, when)) {
            Py_XDECREF(d->heap->remove(handle));
            return -1;
        }
    }
    return handle;
}

// The deadline will not fire (it ended first); nothing if it fired or ended.
// The pending TimerHandle stays: it fires, finds nothing due and re-arms.
static void end_deadline(LoopDeadlinesObject* d, int64_t handle) {
    Py_XDECREF(d->heap->remove(handle));
}

PyObject* loop_deadlines_new(PyTypeObject* type, PyObject*, PyObject*) {
    auto alloc = reinterpret_cast<allocfunc>(PyType_GetSlot(type, Py_tp_alloc));
    PyObject* self = alloc(type, 0);
    if (self == nullptr) {
        return nullptr;
    }
    LoopDeadlinesObject* d = as_deadlines(self);
    d->heap = new (std::nothrow) DeadlineHeap();
    d->timers = new (std::nothrow) std::vector<double>();
    if (d->heap == nullptr || d->timers == nullptr) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return self;
}

// __init__(loop_ref, time, ask_loop=False): the loop (weakly) and its
// time(): `time` (None: time.monotonic), or with ask_loop, loop.time() of
// the loop itself (a C method, uvloop's: no Python frame to call it).
int loop_deadlines_init(PyObject* self, PyObject* args, PyObject* kwargs) {
    PyObject* ref = nullptr;
    PyObject* time_fn = nullptr;
    int ask_loop = 0;
    static const char* names[] = {"loop_ref", "time", "ask_loop", nullptr};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|p:_LoopDeadlines",
                                     const_cast<char**>(names), &ref, &time_fn, &ask_loop)) {
        return -1;
    }
    if (!PyWeakref_CheckRef(ref)) {
        PyErr_SetString(PyExc_TypeError, "_LoopDeadlines loop_ref must be a weakref.ref");
        return -1;
    }
    if (time_fn != Py_None && !PyCallable_Check(time_fn)) {
        PyErr_SetString(PyExc_TypeError, "_LoopDeadlines time must be callable or None");
        return -1;
    }
    LoopDeadlinesObject* d = as_deadlines(self);
    replace_ref(d->loop_ref, Py_NewRef(ref));
    replace_ref(d->time_fn, time_fn == Py_None ? nullptr : Py_NewRef(time_fn));
    d->ask_loop = ask_loop != 0;
    return 0;
}

using LoopDeadlinesRefs = References<LoopDeadlinesObject, &LoopDeadlinesObject::loop_ref,
                                     &LoopDeadlinesObject::time_fn>;

int loop_deadlines_traverse(PyObject* self, visitproc visit, void* arg) {
    if (const int r = LoopDeadlinesRefs::traverse(self, visit, arg)) {
        return r;
    }
    LoopDeadlinesObject* d = as_deadlines(self);
    return d->heap != nullptr ? d->heap->traverse(visit, arg) : 0;
}

int loop_deadlines_clear(PyObject* self) {
    LoopDeadlinesRefs::clear(self);
    LoopDeadlinesObject* d = as_deadlines(self);
    if (d->heap != nullptr) {
        std::vector<PyObject*> dropped;
        d->heap->clear(dropped);
        for (PyObject* target : dropped) {
            Py_DECREF(target);
        }
    }
    return 0;
}

void loop_deadlines_dealloc(PyObject* self) {
    PyTypeObject* type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    loop_deadlines_clear(self);
    LoopDeadlinesObject* d = as_deadlines(self);
    delete d->heap;
    delete d->timers;
    reinterpret_cast<freefunc>(PyType_GetSlot(type, Py_tp_free))(self);
    Py_DECREF(type);
}

PyObject* loop_deadlines_add(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "add() takes 2 arguments (delay, target), got %zd", nargs);
        return nullptr;
    }
    const double delay = PyFloat_AsDouble(args[0]);
    if (delay == -1 && PyErr_Occurred()) {
        return nullptr;
    }
    const int64_t handle = add_deadline(as_deadlines(self), delay, args[1]);
    return handle < 0 ? nullptr : PyLong_FromLongLong(handle);
}

PyObject* loop_deadlines_end(PyObject* self, PyObject* handle) {
    const long long h = PyLong_AsLongLong(handle);
    if (h == -1 && PyErr_Occurred()) {
        return nullptr;
    }
    end_deadline(as_deadlines(self), h);
    Py_RETURN_NONE;
}

// _fire_until(due): the TimerHandle that called fires (its time leaves the
// pending ones); every deadline due at `due` fires, earliest first, each
// once; then a handle is scheduled for the earliest one left unless a
// pending handle comes first. A target whose _fire raises stops this round
// (the error goes to the loop): the ones after it fire at the next handle,
// scheduled for at once.
PyObject* loop_deadlines_fire_until(PyObject* self, PyObject* due_arg) {
    const double due = PyFloat_AsDouble(due_arg);
    if (due == -1 && PyErr_Occurred()) {
        return nullptr;
    }
    LoopDeadlinesObject* d = as_deadlines(self);
    std::vector<double>& timers = *d->timers;
    if (!timers.empty()) {
        std::pop_heap(timers.begin(), timers.end(), std::greater<>());
        timers.pop_back();
    }
    PyObject* error = nullptr;
    while (PyObject* target = d->heap->pop_due(due)) {
        PyObject* args[1] = {target};
        PyObject* r = PyObject_VectorcallMethod(g_str_fire, args, 1, nullptr);
        Py_DECREF(target);
        if (r == nullptr) {
            error = fetch_exception();
            break;
        }
        Py_DECREF(r);
    }
    if (!d->heap->empty() && (timers.empty() || d->heap->earliest() < timers.front()) &&
        !schedule(d, d->heap->earliest())) {
        if (error == nullptr) {
            error = fetch_exception();
        } else {
            PyErr_WriteUnraisable(self);  // the first error is the one raised
        }
    }
    if (error != nullptr) {
        restore_exception(error);
        return nullptr;
    }
    Py_RETURN_NONE;
}

Py_ssize_t loop_deadlines_len(PyObject* self) {
    return static_cast<Py_ssize_t>(as_deadlines(self)->heap->size());
}

PyObject* loop_deadlines_get_heap(PyObject* self, void*) {
    return as_deadlines(self)->heap->entries();
}

PyObject* loop_deadlines_get_loop(PyObject* self, void*) {
    PyObject* ref = as_deadlines(self)->loop_ref;
    return Py_NewRef(ref != nullptr ? ref : Py_None);
}

PyMethodDef loop_deadlines_methods[] = {
    {"add", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(loop_deadlines_add)),
     METH_FASTCALL,
     "add(self, delay, target, /)\n--\n\n"
     "Fires target._fire() delay seconds of loop time from now, unless end() is\n"
     "called with the handle returned (an int) first."},
    {"end", loop_deadlines_end, METH_O,
     "end(self, handle, /)\n--\n\n"
     "The deadline will not fire (it ended first): removed now. Nothing happens\n"
     "if it fired or ended already."},
    {"_fire_until", loop_deadlines_fire_until, METH_O,
     "_fire_until(self, due, /)\n--\n\n"
     "A TimerHandle of ours fired: fires every deadline due at `due` (loop\n"
     "time) and schedules a handle for the earliest left if none comes first."},
    {nullptr, nullptr, 0, nullptr}};

PyGetSetDef loop_deadlines_getset[] = {
    {"_heap", loop_deadlines_get_heap, nullptr,
     "The pending deadlines, (when, order, target) each, in heap order (a copy).", nullptr},
    {"_loop", loop_deadlines_get_loop, nullptr, "The weak reference to the loop.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyType_Slot loop_deadlines_slots[] = {
    {Py_tp_doc, const_cast<char*>("The pending deadlines of one event loop (native part of\n"
                                  "_loop_deadlines.LoopDeadlines).")},
    {Py_tp_new, reinterpret_cast<void*>(loop_deadlines_new)},
    {Py_tp_init, reinterpret_cast<void*>(loop_deadlines_init)},
    {Py_tp_dealloc, reinterpret_cast<void*>(loop_deadlines_dealloc)},
    {Py_tp_traverse, reinterpret_cast<void*>(loop_deadlines_traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(loop_deadlines_clear)},
    {Py_tp_methods, loop_deadlines_methods},
    {Py_tp_getset, loop_deadlines_getset},
    {Py_sq_length, reinterpret_cast<void*>(loop_deadlines_len)},
    {0, nullptr}};

PyType_Spec loop_deadlines_spec = {
    "virtrigaud_resilience._core._LoopDeadlines", static_cast<int>(sizeof(LoopDeadlinesObject)),
    0, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE, loop_deadlines_slots};

// ------------------------------------------ what timeouts.py installs --

inline PyObject* g_scope_type = nullptr;      // timeouts.TimeoutScope
inline PyObject* g_scopes_var = nullptr;      // timeouts._SCOPES
inline PyObject* g_deadline_var = nullptr;    // timeouts._DEADLINE
inline PyObject* g_find_deadlines = nullptr;  // timeouts._find_deadlines() -> (loop, deadlines)
inline PyObject* g_timeouts = nullptr;        // the module (its _task_of is rebound once)
inline PyObject* g_system_clock = nullptr;    // clock.SYSTEM_CLOCK: its now() is read here
inline PyObject* g_deadline_exceeded = nullptr;  // timeouts.deadline_exceeded(what, cause)
inline bool g_tasks_count_cancels = false;    // Task.cancelling() exists (3.11+)
inline PyObject* g_str_task_of = nullptr;
inline PyObject* g_str_cancelling = nullptr;
inline PyObject* g_str_uncancel = nullptr;
inline PyObject* g_str_cancel = nullptr;
inline PyObject* g_str_now = nullptr;
inline PyObject* g_str_thread_id = nullptr;
inline PyObject* g_str_reset = nullptr;
// asyncio.CancelledError and asyncio.TimeoutError, looked up when a
// deadline first fires (asyncio is not imported before a loop runs).
inline PyObject* g_cancelled_error = nullptr;
inline PyObject* g_timeout_error = nullptr;

// True once timeouts.py installed what the deadlines need; else false with
// RuntimeError set.
static bool installed() {
    if (g_scopes_var != nullptr) {
        return true;
    }
    PyErr_SetString(PyExc_RuntimeError, "virtrigaud_resilience.timeouts is not imported yet");
    return false;
}

// ---------------------------------------------------------- ContextVar --

// var.set(value): the token, or null with an error set.
static PyObject* context_set(PyObject* var, PyObject* value) {
#ifdef VIRTRIGAUD_CONTEXTVAR_METHODS
    PyObject* args[2] = {var, value};
    return PyObject_VectorcallMethod(g_str_set, args, 2, nullptr);
#else
    return PyContextVar_Set(var, value);
#endif
}

// var.reset(token); false with an error set.
static bool context_reset(PyObject* var, PyObject* token) {
#ifdef VIRTRIGAUD_CONTEXTVAR_METHODS
    PyObject* args[2] = {var, token};
    PyObject* r = PyObject_VectorcallMethod(g_str_reset, args, 2, nullptr);
    Py_XDECREF(r);
    return r != nullptr;
#else
    return PyContextVar_Reset(var, token) == 0;
#endif
}

// var.get() of a var with a default, as a new reference (null: an error).
static PyObject* context_get(PyObject* var) {
#ifdef VIRTRIGAUD_CONTEXTVAR_METHODS
    PyObject* args[1] = {var};
    return PyObject_VectorcallMethod(g_str_get, args, 1, nullptr);
#else
    PyObject* value = nullptr;
    if (PyContextVar_Get(var, nullptr, &value) != 0) {
        return nullptr;
    }
    return value;
#endif
}

// ------------------------------------------------- the running loop's --

// The deadlines of the loop last found, on the thread it ran on: asked
// again on that thread while that loop still runs there (its _thread_id,
// which asyncio's loops set in run_forever() and clear when they stop), it
// is the running loop (a thread runs one loop at a time), found without a
// call. A loop with no _thread_id (uvloop's) is the running loop when
// asyncio's C get_running_loop() says so (a getpid() on 3.11, as asyncio's
// own look-up). Anything else asks Python (timeouts._find_deadlines). A
// fork forgets it (timeouts._forget_loop). Not kept on a free-threaded build.
inline PyObject* g_last_deadlines = nullptr;
inline unsigned long g_last_thread = 0;
inline bool g_last_has_thread_id = false;  // the loop is asyncio's (has _thread_id)
inline PyObject* g_get_running_loop = nullptr;  // _asyncio.get_running_loop, found on first use

// True iff `loop` is the running loop by asyncio's C get_running_loop();
// false (no error set) otherwise, or when that cannot be asked.
static bool is_running_loop(PyObject* loop) {
    if (g_get_running_loop == nullptr) {
        PyObject* native = PyImport_ImportModule("_asyncio");  // loaded with asyncio
        g_get_running_loop = native != nullptr ? PyObject_GetAttrString(native, "get_running_loop")
                                               : nullptr;
        Py_XDECREF(native);
        if (g_get_running_loop == nullptr) {
            PyErr_Clear();
            g_get_running_loop = Py_NewRef(Py_None);  // not there: never asked again
        }
    }
    if (g_get_running_loop == Py_None) {
        return false;
    }
    PyObject* running = PyObject_CallNoArgs(g_get_running_loop);
    if (running == nullptr) {
        PyErr_Clear();  // no running loop: the Python look-up raises its error
        return false;
    }
    Py_DECREF(running);
    return running == loop;
}

// True iff `loop` says it runs on thread `ident` (false with no error set
// for a loop with no _thread_id).
static bool runs_on(PyObject* loop, unsigned long ident) {
    PyObject* id = PyObject_GetAttr(loop, g_str_thread_id);
    if (id == nullptr) {
        PyErr_Clear();
        return false;
    }
    bool same = false;
    if (PyLong_Check(id)) {
        const unsigned long value = PyLong_AsUnsignedLong(id);
        same = !(value == static_cast<unsigned long>(-1) && PyErr_Occurred()) && value == ident;
        PyErr_Clear();
    }
    Py_DECREF(id);
    return same;
}

static void forget_running_loop() {
    Py_CLEAR(g_last_deadlines);
    g_last_thread = 0;
}

// The running loop and its deadlines (new references), or false with an
// error set (RuntimeError: no running event loop).
static bool running_deadlines(PyObject*& loop, LoopDeadlinesObject*& deadlines) {
#ifndef Py_GIL_DISABLED
    const unsigned long ident = PyThread_get_thread_ident();
    if (g_last_deadlines != nullptr && g_last_thread == ident) {
        PyObject* last = weak_target(as_deadlines(g_last_deadlines)->loop_ref);
        if (last != nullptr &&
            (g_last_has_thread_id ? runs_on(last, ident) : is_running_loop(last))) {
            loop = last;
            deadlines = as_deadlines(Py_NewRef(g_last_deadlines));
            return true;
        }
        Py_XDECREF(last);
    }
#endif
    PyObject* found = PyObject_CallNoArgs(g_find_deadlines);
    if (found == nullptr) {
        return false;
    }
    PyObject* found_loop = nullptr;
    PyObject* found_deadlines = nullptr;
    if (!PyTuple_Check(found) || PyTuple_Size(found) != 2 ||
        !PyObject_TypeCheck(found_deadlines = PyTuple_GetItem(found, 1),
                            reinterpret_cast<PyTypeObject*>(g_loop_deadlines_type))) {
        Py_DECREF(found);
        PyErr_SetString(PyExc_TypeError, "_find_deadlines() must return (loop, LoopDeadlines)");
        return false;
    }
    found_loop = PyTuple_GetItem(found, 0);
    loop = Py_NewRef(found_loop);
    deadlines = as_deadlines(Py_NewRef(found_deadlines));
    Py_DECREF(found);
#ifndef Py_GIL_DISABLED
    replace_ref(g_last_deadlines, Py_NewRef(reinterpret_cast<PyObject*>(deadlines)));
    g_last_thread = ident;
    g_last_has_thread_id = PyObject_HasAttr(loop, g_str_thread_id) == 1;
#endif
    return true;
}

// ---------------------------------------------------- _core._DeadlineScope --

struct ScopeObject {
    PyObject_HEAD
    double timeout;         // seconds; < 0: no limit
    PyObject* task;         // the task it cancels (set by _start)
    PyObject* token;        // _SCOPES's token while inside
    PyObject* deadlines;    // the loop's LoopDeadlines while its deadline is pending
    int64_t entry;          // the deadline's handle there
    long cancelling;        // the task's cancellation requests at _start
    uint8_t fired;          // the deadline fired (cancelled the task)
    uint8_t exited;         // _stop ran
};

inline PyObject* g_scope_base_type = nullptr;

static ScopeObject* as_scope(PyObject* self) { return reinterpret_cast<ScopeObject*>(self); }

// A new TimeoutScope (the installed class, without its __init__: nothing of
// Python's to set) of `timeout` seconds, or null with an error set.
static PyObject* new_scope(double timeout) {
    auto* type = reinterpret_cast<PyTypeObject*>(g_scope_type);
    auto alloc = reinterpret_cast<allocfunc>(PyType_GetSlot(type, Py_tp_alloc));
    PyObject* self = alloc(type, 0);
    if (self != nullptr) {
        as_scope(self)->timeout = timeout;
        as_scope(self)->entry = -1;
    }
    return self;
}

static bool resolve_asyncio_errors() {
    if (g_cancelled_error != nullptr) {
        return true;
    }
    PyObject* asyncio = PyImport_ImportModule("asyncio");
    if (asyncio == nullptr) {
        return false;
    }
    PyObject* cancelled = PyObject_GetAttrString(asyncio, "CancelledError");
    PyObject* timeout = cancelled != nullptr ? PyObject_GetAttrString(asyncio, "TimeoutError")
                                             : nullptr;
    Py_DECREF(asyncio);
    if (timeout == nullptr) {
        Py_XDECREF(cancelled);
        return false;
    }
    g_timeout_error = timeout;
    g_cancelled_error = cancelled;
    return true;
}

// Enters the scope: finds the task, is seen by deadline_expired() (in
// _SCOPES), and arms the loop's deadline. False with an error set
// (RuntimeError outside a running loop or outside a task).
static bool scope_start(ScopeObject* self) {
    if (self->timeout < 0) {
        return true;
    }
    if (!installed()) {
        return false;
    }
    PyObject* loop = nullptr;
    LoopDeadlinesObject* deadlines = nullptr;
    if (!running_deadlines(loop, deadlines)) {
        return false;
    }
    PyObject* task_of = PyObject_GetAttr(g_timeouts, g_str_task_of);
    PyObject* task = task_of != nullptr ? call_one(task_of, loop) : nullptr;
    Py_XDECREF(task_of);
    Py_DECREF(loop);
    if (task == nullptr || task == Py_None) {
        if (task != nullptr) {
            PyErr_SetString(PyExc_RuntimeError, "TimeoutScope must be used inside an asyncio task");
        }
        Py_XDECREF(task);
        Py_DECREF(deadlines);
        return false;
    }
    long cancelling = 0;
    if (g_tasks_count_cancels) {
        PyObject* args[1] = {task};
        PyObject* count = PyObject_VectorcallMethod(g_str_cancelling, args, 1, nullptr);
        cancelling = count != nullptr ? PyLong_AsLong(count) : -1;
        Py_XDECREF(count);
        if (cancelling == -1 && PyErr_Occurred()) {
            Py_DECREF(task);
            Py_DECREF(deadlines);
            return false;
        }
    }
    replace_ref(self->task, task);
    self->cancelling = cancelling;
    // _SCOPES: the scopes around, and this one innermost.
    PyObject* outer = context_get(g_scopes_var);
    PyObject* inside = nullptr;
    if (outer != nullptr && PyTuple_Check(outer)) {
        const Py_ssize_t n = PyTuple_Size(outer);
        inside = PyTuple_New(n + 1);
        for (Py_ssize_t i = 0; inside != nullptr && i < n; ++i) {
            PyTuple_SetItem(inside, i, Py_NewRef(PyTuple_GetItem(outer, i)));
        }
        if (inside != nullptr) {
            PyTuple_SetItem(inside, n, Py_NewRef(reinterpret_cast<PyObject*>(self)));
        }
    } else if (outer != nullptr) {
        PyErr_SetString(PyExc_TypeError, "timeouts._SCOPES must hold a tuple");
    }
    Py_XDECREF(outer);
    PyObject* token = inside != nullptr ? context_set(g_scopes_var, inside) : nullptr;
    Py_XDECREF(inside);
    if (token == nullptr) {
        Py_DECREF(deadlines);
        return false;
    }
    const int64_t entry = add_deadline(deadlines, self->timeout, reinterpret_cast<PyObject*>(self));
    if (entry < 0) {
        PyObject* error = fetch_exception();
        context_reset(g_scopes_var, token);
        PyErr_Clear();
        Py_DECREF(token);
        Py_DECREF(deadlines);
        restore_exception(error);
        return false;
    }
    replace_ref(self->token, token);
    replace_ref(self->deadlines, reinterpret_cast<PyObject*>(deadlines));
    self->entry = entry;
    return true;
}

// Leaves the scope, which `exc` (null: none) is leaving it by. False with an
// error set: asyncio.TimeoutError from exc when the cancellation ending it
// was this deadline's alone (a cancel from outside too keeps the
// CancelledError, as asyncio.timeout does), or the error of a reset.
static bool scope_stop(ScopeObject* self, PyObject* exc) {
    self->exited = 1;
    if (self->deadlines != nullptr) {
        end_deadline(as_deadlines(self->deadlines), self->entry);
        Py_CLEAR(self->deadlines);
        self->entry = -1;
    }
    if (self->token != nullptr) {
        PyObject* token = self->token;
        self->token = nullptr;
        const bool reset = context_reset(g_scopes_var, token);
        Py_DECREF(token);
        if (!reset) {
            return false;
        }
    }
    if (!self->fired || self->task == nullptr) {
        return true;
    }
    bool outside = false;
    PyObject* uncancel = PyObject_GetAttr(self->task, g_str_uncancel);
    if (uncancel == nullptr) {
        PyErr_Clear();  // a task without uncancel() (3.10): no count to compare
    } else {
        PyObject* left = PyObject_CallNoArgs(uncancel);
        Py_DECREF(uncancel);
        const long count = left != nullptr ? PyLong_AsLong(left) : -1;
        Py_XDECREF(left);
        if (count == -1 && PyErr_Occurred()) {
            return false;
        }
        outside = count > self->cancelling;
    }
    if (exc == nullptr || outside) {
        return true;
    }
    if (!resolve_asyncio_errors()) {
        return false;
    }
    const int cancelled = PyObject_IsInstance(exc, g_cancelled_error);
    if (cancelled <= 0) {
        return cancelled == 0;
    }
    PyObject* timeout = PyObject_CallNoArgs(g_timeout_error);
    if (timeout == nullptr) {
        return false;
    }
    PyException_SetCause(timeout, Py_NewRef(exc));  // `raise asyncio.TimeoutError from exc`
    PyException_SetContext(timeout, Py_NewRef(exc));
    restore_exception(timeout);
    return false;
}

// _fire(): the deadline passed: cancels the task.
static PyObject* scope_fire(PyObject* self, PyObject*) {
    ScopeObject* s = as_scope(self);
    s->fired = 1;
    if (s->task == nullptr) {
        Py_RETURN_NONE;
    }
    PyObject* args[1] = {s->task};
    return PyObject_VectorcallMethod(g_str_cancel, args, 1, nullptr);
}

PyObject* scope_new(PyTypeObject* type, PyObject*, PyObject*) {
    auto alloc = reinterpret_cast<allocfunc>(PyType_GetSlot(type, Py_tp_alloc));
    PyObject* self = alloc(type, 0);
    if (self != nullptr) {
        as_scope(self)->timeout = -1;
        as_scope(self)->entry = -1;
    }
    return self;
}

// __init__(timeout): seconds (a float >= 0) or None (no limit). TimeoutScope
// validates what users pass, naming its owner, before this.
int scope_init(PyObject* self, PyObject* args, PyObject* kwargs) {
    PyObject* timeout = nullptr;
    static const char* names[] = {"timeout", nullptr};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:_DeadlineScope", const_cast<char**>(names),
                                     &timeout)) {
        return -1;
    }
    double seconds = -1;
    if (timeout != Py_None) {
        seconds = PyFloat_AsDouble(timeout);
        if (seconds == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (!(seconds >= 0)) {
            PyErr_Format(PyExc_ValueError, "_DeadlineScope timeout must be >= 0, got %R", timeout);
            return -1;
        }
    }
    as_scope(self)->timeout = seconds;
    return 0;
}

using ScopeRefs =
    References<ScopeObject, &ScopeObject::task, &ScopeObject::token, &ScopeObject::deadlines>;

PyObject* scope_start_method(PyObject* self, PyObject*) {
    if (!scope_start(as_scope(self))) {
        return nullptr;
    }
    Py_RETURN_NONE;
}

PyObject* scope_stop_method(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "_stop() takes 2 arguments (exc_type, exc), got %zd", nargs);
        return nullptr;
    }
    PyObject* exc = args[1] != Py_None && PyExceptionInstance_Check(args[1]) ? args[1] : nullptr;
    if (!scope_stop(as_scope(self), exc)) {
        return nullptr;
    }
    Py_RETURN_NONE;
}

PyObject* scope_get_fired(PyObject* self, void*) { return PyBool_FromLong(as_scope(self)->fired); }

int scope_set_fired(PyObject* self, PyObject* value, void*) {
    const int truth = value != nullptr ? PyObject_IsTrue(value) : -1;
    if (truth < 0) {
        if (value == nullptr) {
            PyErr_SetString(PyExc_AttributeError, "cannot delete fired");
        }
        return -1;
    }
    as_scope(self)->fired = static_cast<uint8_t>(truth);
    return 0;
}

PyObject* scope_get_expiring(PyObject* self, void*) {
    return PyBool_FromLong(as_scope(self)->fired && !as_scope(self)->exited);
}

PyObject* scope_get_task(PyObject* self, void*) {
    PyObject* task = as_scope(self)->task;
    return Py_NewRef(task != nullptr ? task : Py_None);
}

PyObject* scope_get_timeout(PyObject* self, void*) {
    const double timeout = as_scope(self)->timeout;
    return timeout < 0 ? Py_NewRef(Py_None) : PyFloat_FromDouble(timeout);
}

PyMethodDef scope_methods[] = {
    {"_start", scope_start_method, METH_NOARGS,
     "_start(self, /)\n--\n\n"
     "Enters the scope inside the running task: its deadline is armed on the\n"
     "loop's deadlines. RuntimeError outside a running loop or a task."},
    {"_stop", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(scope_stop_method)),
     METH_FASTCALL,
     "_stop(self, exc_type, exc, /)\n--\n\n"
     "Leaves the scope; raises asyncio.TimeoutError from exc if the cancellation\n"
     "ending it was this deadline's (and not also one from outside)."},
    {"_fire", scope_fire, METH_NOARGS,
     "_fire(self, /)\n--\n\n"
     "The deadline passed: marks the scope fired and cancels its task."},
    {nullptr, nullptr, 0, nullptr}};

PyGetSetDef scope_getset[] = {
    {"fired", scope_get_fired, scope_set_fired, "Whether the deadline fired.", nullptr},
    {"expiring", scope_get_expiring, nullptr,
     "True between the deadline firing and this scope's exit: the\n"
     "cancellation under way is (at least in part) this deadline's.",
     nullptr},
    {"_task", scope_get_task, nullptr, "The task the deadline cancels (None before _start).",
     nullptr},
    {"_timeout", scope_get_timeout, nullptr, "The timeout in seconds, or None.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyType_Slot scope_slots[] = {
    {Py_tp_doc, const_cast<char*>("The native part of timeouts.TimeoutScope.")},
    {Py_tp_new, reinterpret_cast<void*>(scope_new)},
    {Py_tp_init, reinterpret_cast<void*>(scope_init)},
    {Py_tp_dealloc, reinterpret_cast<void*>(dealloc_cleared<ScopeRefs::clear>)},
    {Py_tp_traverse, reinterpret_cast<void*>(ScopeRefs::traverse)},
    {Py_tp_clear, reinterpret_cast<void*>(ScopeRefs::clear)},
    {Py_tp_methods, scope_methods},
    {Py_tp_getset, scope_getset},
    {0, nullptr}};

PyType_Spec scope_spec = {"virtrigaud_resilience._core._DeadlineScope",
                          static_cast<int>(sizeof(ScopeObject)), 0,
                          Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
                          scope_slots};

// ------------------------------------------------------------ installing --

static void install_deadlines(nb::handle scope_type, nb::handle scopes_var,
                              nb::handle deadline_var, nb::handle find_deadlines,
                              nb::handle timeouts, nb::handle system_clock,
                              nb::handle deadline_exceeded, bool tasks_count_cancels) {
    if (!PyType_Check(scope_type.ptr()) ||
        !PyType_IsSubtype(reinterpret_cast<PyTypeObject*>(scope_type.ptr()),
                          reinterpret_cast<PyTypeObject*>(g_scope_base_type))) {
        throw nb::type_error("_install_deadlines() scope_type must subclass _DeadlineScope");
    }
    if (!PyCallable_Check(find_deadlines.ptr()) || !PyCallable_Check(deadline_exceeded.ptr())) {
        throw nb::type_error("_install_deadlines() find_deadlines and deadline_exceeded must be "
                             "callable");
    }
    PyObject** slots[] = {&g_scope_type, &g_scopes_var, &g_deadline_var, &g_find_deadlines,
                          &g_timeouts, &g_system_clock, &g_deadline_exceeded};
    nb::handle values[] = {scope_type, scopes_var, deadline_var, find_deadlines,
                           timeouts, system_clock, deadline_exceeded};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); ++i) {
        replace_ref(*slots[i], Py_NewRef(values[i].ptr()));
    }
    g_tasks_count_cancels = tasks_count_cancels;
    forget_running_loop();
}

static void bind_deadlines(nb::module_& m) {
    g_str_call_at = interned("call_at");
    g_str_fire_due = interned("_fire_due");
    g_str_fire = interned("_fire");
    g_str_time = interned("time");
    g_str_task_of = interned("_task_of");
    g_str_cancelling = interned("cancelling");
    g_str_uncancel = interned("uncancel");
    g_str_cancel = interned("cancel");
    g_str_now = interned("now");
    g_str_thread_id = interned("_thread_id");
    g_str_reset = interned("reset");
    nb::object deadlines_type = type_from_spec(m, &loop_deadlines_spec);
    g_loop_deadlines_type = deadlines_type.inc_ref().ptr();
    m.attr("_LoopDeadlines") = deadlines_type;
    nb::object scope_type = type_from_spec(m, &scope_spec);
    g_scope_base_type = scope_type.inc_ref().ptr();
    g_scope_type = Py_NewRef(g_scope_base_type);  // until timeouts.py installs its subclass
    m.attr("_DeadlineScope") = scope_type;
    m.def("_install_deadlines", &install_deadlines, "scope_type"_a, "scopes_var"_a,
          "deadline_var"_a, "find_deadlines"_a, "timeouts"_a, "system_clock"_a,
          "deadline_exceeded"_a, "tasks_count_cancels"_a,
          "Installed once by timeouts.py: what call_until's awaitable needs of Python.");
    m.def("_forget_running_loop", &forget_running_loop,
          "Forgets the loop last found running (after a fork: the child must ask again).");
}

}  // namespace
}  // namespace deadlines
}  // namespace virtrigaud_bind
