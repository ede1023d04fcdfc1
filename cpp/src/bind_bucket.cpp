// TokenBucket: the GCRA bucket (vr::TokenBucket) and its raw hot method
// try_acquire; the reservations and the lease arithmetic are cold methods.

#include "binding.hpp"

namespace virtrigaud_bind {
namespace {

PyObject* bucket_try_acquire(PyObject* self, PyObject* const* args, Py_ssize_t nargsf,
                             PyObject* kwnames) {
    auto* b = ready_instance<PyTokenBucket>(self, "TokenBucket");
    if (b == nullptr) {
        return nullptr;
    }
    const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    int64_t n = 1;
    if (nargs != 0 || kwnames != nullptr) {
        PyObject* arg = nullptr;
        if (!one_optional_arg("try_acquire", "n", args, nargs, kwnames, arg)) {
            return nullptr;
        }
        if (arg != nullptr && !int_arg(arg, "TokenBucket", "n", n)) {
            return nullptr;
        }
        if (n < 1) {
            PyErr_Format(PyExc_ValueError, "TokenBucket n must be >= 1, got %R", arg);
            return nullptr;
        }
        if (n > b->core.burst()) {
            PyErr_Format(PyExc_ValueError, "TokenBucket n must be <= burst (%lld), got %R",
                         static_cast<long long>(b->core.burst()), arg);
            return nullptr;
        }
    }
    if (b->core.try_acquire(n)) {
        Py_RETURN_TRUE;
    }
    if (b->refusal_calls_python().load(std::memory_order_relaxed)) {
        return PyObject_CallMethod(self, "_refused", "L", static_cast<long long>(n));
    }
    if (!notify_rate_limited(self, n)) {
        return nullptr;
    }
    Py_RETURN_FALSE;
}

PyMethodDef bucket_try_acquire_def = {
    "try_acquire", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(bucket_try_acquire)),
    METH_FASTCALL | METH_KEYWORDS,
    "try_acquire(self, n=1)\n--\n\n"
    "Takes n tokens (1 <= n <= burst) if the bucket holds them now and returns\n"
    "True; otherwise takes nothing and returns False. Never waits."};

}  // namespace

bool specialise_bucket(nb::handle cls) {
    if (!is_subclass(cls, nb::type<PyTokenBucket>())) {
        return false;
    }
    specialise_method(cls, &bucket_try_acquire_def);
    return true;
}

void bind_bucket(nb::module_& m) {
    m.attr("TOKEN_BUCKET_MAX_BURST") = vr::TokenBucket::kMaxBurst;
    m.attr("TOKEN_BUCKET_MAX_INTERVAL_NS") = vr::TokenBucket::kMaxIntervalNs;
    m.attr("TOKEN_BUCKET_MAX_TAU_NS") = vr::TokenBucket::kMaxTauNs;
    m.attr("TOKEN_BUCKET_MAX_WAIT_NS") = vr::TokenBucket::kMaxWaitNs;

    // Weak references native, as the breaker's (bind_breaker.cpp says why).
    nb::class_<PyTokenBucket> bucket(m, "TokenBucket", "GCRA token bucket (native part).",
                                     nb::is_weak_referenceable());
    bucket
        .def(nb::init<int64_t, int64_t, const vr::ManualClock*>(), "interval_ns"_a, "burst"_a,
             "clock"_a.none() = nullptr, nb::keep_alive<1, 4>())
        .def(
            "_reserve",
            [](nb::pointer_and_handle<PyTokenBucket> self, int64_t n, int64_t max_wait_ns) {
                const auto r = self.p->core.reserve(n, max_wait_ns);
                if (!r.ok && !notify_rate_limited(self.h.ptr(), n)) {
                    throw nb::python_error();
                }
                return std::make_tuple(r.ok, r.delay_ns, r.tat_after, r.time_to_act, r.config);
            },
            "n"_a, "max_wait_ns"_a,
            "Reserves n tokens: (ok, delay_ns, tat_after, time_to_act, config). ok is\n"
            "False, and nothing is reserved, when the wait would exceed max_wait_ns.")
        .def(
            "_cancel",
            [](PyTokenBucket& b, int64_t n, int64_t tat_after, int64_t time_to_act,
               uint64_t config) { return b.core.cancel(n, tat_after, time_to_act, config); },
            "n"_a, "tat_after"_a, "time_to_act"_a, "config"_a)
        .def(
            "_refund",
            [](PyTokenBucket& b, int64_t n, int64_t tat_after, uint64_t config) {
                return b.core.refund(n, tat_after, config);
            },
            "n"_a, "tat_after"_a, "config"_a,
            "Gives back n tokens taken for a call that never ran (minus those taken\n"
            "since; nothing once the rate changed); returns the tokens given back.")
        .def(
            "_set_rate",
            [](PyTokenBucket& b, int64_t interval_ns, int64_t burst, int64_t max_tokens) {
                b.core.set_rate(interval_ns, burst, max_tokens);
            },
            "interval_ns"_a, "burst"_a, "max_tokens"_a = vr::TokenBucket::kMaxBurst,
            "Changes the rate; the tokens available now are kept, at most the new burst\n"
            "and at most max_tokens (0 empties the bucket).")
        .def(
            "_set_refusal_calls_python",
            [](PyTokenBucket& b, bool on) {
                b.refusal_calls_python().store(on, std::memory_order_relaxed);
            },
            "on"_a,
            "While on, a refusal by try_acquire returns (or raises) what\n"
            "self._refused(n) does; an admission never looks at the flag.")
        .def("_now_ns", [](const PyTokenBucket& b) { return vr::now_ns(b.core.clock()); })
        .def(
            "_try_acquire_ns",
            [](PyTokenBucket& b, int64_t cost_ns, int64_t now_ns) {
                return b.core.try_acquire_ns(cost_ns, now_ns);
            },
            "cost_ns"_a, "now_ns"_a = -1,
            "Takes cost_ns of capacity (n tokens cost n * interval_ns) if it conforms at\n"
            "now_ns (< 0: the bucket's clock); never waits.")
        .def(
            "_debt_ns",
            [](const PyTokenBucket& b, int64_t now_ns) { return b.core.debt_ns(now_ns); },
            "now_ns"_a = -1,
            "Capacity in use at now_ns, in ns: a cost c conforms iff debt + c <= burst * interval.")
        .def_prop_ro("tokens", [](const PyTokenBucket& b) { return b.core.tokens(); },
                     "Tokens available now (a float); negative while reservations wait.")
        .def_prop_ro("burst", [](const PyTokenBucket& b) { return b.core.burst(); },
                     "Bucket capacity in tokens.")
        .def_prop_ro("interval_ns", [](const PyTokenBucket& b) { return b.core.interval_ns(); },
                     "Nanoseconds per token.")
        .def_prop_ro(
            "qps",
            [](const PyTokenBucket& b) {
                return kNsPerSecond / static_cast<double>(b.core.interval_ns());
            },
            "Tokens per second (as rounded to a whole nanosecond per token).")
        .def_prop_ro("admitted", [](const PyTokenBucket& b) { return b.core.admitted(); },
                     "Acquisitions granted at once (try_acquire True, reserve with no wait).")
        .def_prop_ro("rejected", [](const PyTokenBucket& b) { return b.core.rejected(); },
                     "Acquisitions refused (try_acquire False, reserve over its max wait).")
        .def_prop_ro("reserved", [](const PyTokenBucket& b) { return b.core.reserved(); },
                     "Reservations granted with a wait.")
        .def_prop_ro("cancelled", [](const PyTokenBucket& b) { return b.core.cancelled(); },
                     "Reservations cancelled, and acquisitions refunded (a policy's call that\n"
                     "never ran), that gave tokens back.")
        .def(
            "_counters",
            [](const PyTokenBucket& b) {
                return std::make_tuple(b.core.admitted(), b.core.rejected(), b.core.reserved());
            },
            "(admitted, rejected, reserved) in one call, for the metrics collector.");
    bind_census<PyTokenBucket>(bucket);
    add_fastcall_method(bucket, &bucket_try_acquire_def);

}

}  // namespace virtrigaud_bind
