// AdaptiveBulkhead: the adaptive concurrency limit (vr::AdaptiveLimit).
//
// The queue of asyncio waiters lives in Python, as Bulkhead's does (the same
// code: _fifo_queue.py), and is driven through the same hooks (_hand_off,
// _wake). The limit algorithms live in Python too (adaptive_limits.py): the
// native release records a sample and, once per sampling window, calls
// self._on_window() to take the window and store the next limit.

#include <virtrigaud/adaptive_limit.hpp>

#include "binding.hpp"

namespace virtrigaud_bind {
namespace {

struct PyAdaptiveLimit {
    vr::AdaptiveLimit core;
    int64_t min_samples = 1;  // a window closes with at least this many samples
    PyAdaptiveLimit(int64_t limit, const vr::ManualClock* clock) : core(limit, clock) {}
};

// Gives a slot back: to the longest waiter while the calls in flight are
// within the limit (the slot stays in flight), else to the pool, waking the
// first waiter if one is registered. Returns false with an error set.
bool adaptive_exit(PyObject* obj, PyAdaptiveLimit* a) {
    bool done = false;
    if (a->core.waiters() > 0 && a->core.in_flight() > 0 && a->core.may_hand_over()) {
        if (!call_queue(obj, "_hand_off", done)) {
            return false;
        }
        if (done) {
            a->core.hand_over();
            return true;
        }
    }
    switch (a->core.exit()) {
        case vr::AdaptiveLimit::Exit::kUnmatched:
            PyErr_SetString(PyExc_RuntimeError,
                            "AdaptiveBulkhead: a slot given back with no call in flight");
            return false;
        case vr::AdaptiveLimit::Exit::kFreedWaiting:
            return call_queue(obj, "_wake", done);
        case vr::AdaptiveLimit::Exit::kFreed:
            break;
    }
    return true;
}

// Gives a slot back and records its sample; once per window, self._on_window().
void release(nb::pointer_and_handle<PyAdaptiveLimit> self, int64_t start_ns, int64_t in_flight,
             bool dropped, bool sample) {
    vr::AdaptiveLimit& core = self.p->core;
    const int64_t now = core.now();
    if (sample) {
        core.record(now - start_ns, in_flight, dropped);
    }
    if (!adaptive_exit(self.h.ptr(), self.p)) {
        throw nb::python_error();
    }
    if (sample && core.claim_window(now, self.p->min_samples)) {
        PyObject* r = PyObject_CallMethod(self.h.ptr(), "_on_window", "L",
                                          static_cast<long long>(now));
        if (r == nullptr) {
            throw nb::python_error();
        }
        Py_DECREF(r);
    }
}

}  // namespace

void bind_adaptive(nb::module_& m) {
    m.attr("ADAPTIVE_MAX_LIMIT") = vr::AdaptiveLimit::kMaxLimit;
    nb::class_<PyAdaptiveLimit> adaptive(m, "AdaptiveBulkhead",
                                         "Adaptive concurrency limit (native part).");
    adaptive
        .def(nb::init<int64_t, const vr::ManualClock*>(), "limit"_a, "clock"_a.none() = nullptr,
             nb::keep_alive<1, 3>())
        .def("_try_take", [](PyAdaptiveLimit& a) { return a.core.try_enter(); },
             "A newcomer's slot if one is free and nobody is queued (a refusal is not counted).")
        .def("_take_as_waiter", [](PyAdaptiveLimit& a) { return a.core.take(); },
             "Takes a free slot whoever is queued: for the waiter at the head.")
        .def("_count_rejection", [](PyAdaptiveLimit& a) { a.core.count_rejection(); })
        .def("_add_waiter", [](PyAdaptiveLimit& a, int64_t delta) { a.core.add_waiter(delta); },
             "delta"_a)
        .def(
            "_free",
            [](nb::pointer_and_handle<PyAdaptiveLimit> self) {
                if (!adaptive_exit(self.h.ptr(), self.p)) {
                    throw nb::python_error();
                }
            },
            "Gives a slot back without a sample (a slot handed to a waiter that left).")
        .def("_release", &release, "start_ns"_a, "in_flight"_a, "dropped"_a, "sample"_a,
             "Gives a slot back; with `sample`, records (now - start_ns, in_flight,\n"
             "dropped) and, when the window is due, calls self._on_window(now_ns).")
        .def(
            "_take_window",
            [](PyAdaptiveLimit& a) {
                const auto w = a.core.take_window();
                return std::make_tuple(w.samples, w.rtt_sum_ns, w.min_rtt_ns, w.max_in_flight,
                                       w.drops);
            },
            "(samples, rtt_sum_ns, min_rtt_ns, max_in_flight, drops) of the window, reset.")
        .def("_set_window_end", [](PyAdaptiveLimit& a, int64_t end_ns) {
                 a.core.set_window_end(end_ns);
             }, "end_ns"_a)
        .def("_set_min_samples", [](PyAdaptiveLimit& a, int64_t n) {
                 a.min_samples = n < 1 ? 1 : n;
             }, "n"_a)
        .def("_set_limit", [](PyAdaptiveLimit& a, int64_t limit) { a.core.set_limit(limit); },
             "limit"_a)
        .def("_now_ns", [](const PyAdaptiveLimit& a) { return a.core.now(); })
        .def_prop_ro("limit", [](const PyAdaptiveLimit& a) { return a.core.limit(); },
                     "The concurrency limit now.")
        .def_prop_ro("in_flight", [](const PyAdaptiveLimit& a) { return a.core.in_flight(); },
                     "Calls holding a slot now.")
        .def_prop_ro("waiting", [](const PyAdaptiveLimit& a) { return a.core.waiters(); },
                     "asyncio tasks queued for a slot.")
        .def_prop_ro("admitted", [](const PyAdaptiveLimit& a) { return a.core.admitted(); },
                     "Slots granted.")
        .def_prop_ro("rejected", [](const PyAdaptiveLimit& a) { return a.core.rejected(); },
                     "Attempts turned away (full, queue full, or a queued wait timed out).");
}

}  // namespace virtrigaud_bind
