// virtrigaud_resilience._core: thin nanobind bindings over the header-only
// core, one file per bound type (bind_*.cpp) around binding.hpp, the helpers
// and shared objects they use. This file defines the module: its functions,
// the hooks Python installs, and the order the types are added in.

#include "binding.hpp"

namespace virtrigaud_bind {

void bind_otel_gate(nb::module_& m);  // TraceGate (vr.otel's sampling decision)
void bind_otel_attempt(nb::module_& m);  // TracedAttempt (vr.otel's sampled sync attempt)
void bind_otel_execute(nb::module_& m);  // TracedExecute (vr.otel's sampled sync execution)

namespace {

// Both None uninstalls them (at interpreter exit, so nothing outlives it).
void install_hooks(nb::handle reject, nb::handle on_transition) {
    if (reject.is_none() && on_transition.is_none()) {
        g_reject.set(nullptr);
        g_on_transition.set(nullptr);
        return;
    }
    if (!PyCallable_Check(reject.ptr()) || !PyCallable_Check(on_transition.ptr())) {
        throw nb::type_error("_install_hooks() takes two callables (or two Nones)");
    }
    g_reject.set(Py_NewRef(reject.ptr()));
    g_on_transition.set(Py_NewRef(on_transition.ptr()));
}

// Installs (or, with None, removes) g_on_rate_limited.
void set_rate_limited_hook(nb::handle hook) {
    if (hook.is_none()) {
        g_on_rate_limited.set(nullptr);
        return;
    }
    if (!PyCallable_Check(hook.ptr())) {
        throw nb::type_error("_set_rate_limited_hook() takes a callable or None");
    }
    g_on_rate_limited.set(Py_NewRef(hook.ptr()));
}

// Installs the raw hot methods on a Python subclass too. CPython specialises
// a call of a method descriptor only when self's type is exactly the
// descriptor's type; without this, a subclass pays ~10 ns more per call. A
// method the subclass overrides is left alone: its override must win.
void specialise(nb::handle cls) {
    if (!PyType_Check(cls.ptr())) {
        throw nb::type_error("_specialise() takes a class");
    }
    if (!specialise_bucket(cls) && !specialise_breaker(cls) && !specialise_policy(cls)) {
        throw nb::type_error("_specialise() takes a subclass of TokenBucket, CircuitBreaker or Policy");
    }
}

// The types the hot paths compare results and callees with (the stable ABI
// has no PyCoro_CheckExact, PyGen_Check or PyMethod_Type).
void import_types() {
    nb::module_ types = nb::module_::import_("types");
    g_coroutine_type = types.attr("CoroutineType").inc_ref().ptr();
    g_generator_type = types.attr("GeneratorType").inc_ref().ptr();
    g_method_type = types.attr("MethodType").inc_ref().ptr();
}

}  // namespace
}  // namespace virtrigaud_bind

NB_MODULE(_core, m) {
    using namespace virtrigaud_bind;
    m.doc() = "Lock-free circuit breaker, GCRA token bucket and backoff (C++ core).";
    // Breakers and buckets held by module globals (registries, policies) are
    // legitimately alive when nanobind checks for leaks at shutdown; its
    // warning would be noise in every user's program.
    nb::set_leak_warnings(false);
    bind_contract(m);

    m.def("monotonic_ns", &vr::steady_now_ns,
          "Nanoseconds of the monotonic clock every primitive uses when it has no ManualClock.");
    m.def("_install_hooks", &install_hooks, "reject"_a.none(), "on_transition"_a.none(),
          "Installed once by the package: the open breaker's error factory and the\n"
          "state-change dispatcher.");
    m.def("_set_rate_limited_hook", &set_rate_limited_hook, "hook"_a.none(),
          "Installs hook(bucket, n), called when a bucket refuses n tokens (None removes it).");
    m.attr("MAX_CLOCK_NS") = vr::kMaxClockNs;
    import_types();

    bind_retry(m);
    bind_one_shot(m);
    bind_bulkhead_slot(m);
    bind_clock(m);
    bind_bucket(m);
    bind_breaker(m);
    bind_bulkhead(m);
    bind_policy(m);
    bind_awaitable(m);  // after the breaker and the policy: adds call_async to one

    m.def(
        "_held",
        [](nb::handle breaker, nb::handle bucket) {
            return virtrigaud_held::held(breaker.is_none() ? nullptr : breaker.ptr(),
                                         bucket.is_none() ? nullptr : bucket.ptr());
        },
        "breaker"_a.none(), "bucket"_a.none(),
        "Whether a native sync attempt of this thread (Policy.execute's first,\n"
        "CircuitBreaker.call) is running inside its call and holds `breaker`\n"
        "(Held.BREAKER) or a token of `bucket` (Held.BUCKET).");
    m.def(
        "_track_held",
        [] { virtrigaud_held::g_tracking.store(true, std::memory_order_relaxed); },
        "From now on native sync attempts record what they hold, for _held()\n"
        "(an adapter exists).");
    m.def("_specialise", &specialise, "cls"_a,
          "Installs the fast hot methods on a subclass of TokenBucket, CircuitBreaker or Policy.");

    bind_backoff(m);
    bind_histogram(m);
    bind_adaptive(m);
    bind_budget(m);
    bind_otel_gate(m);  // after bind_bulkhead_slot: it reads ContextVars as the bulkheads do
    bind_otel_attempt(m);
    bind_otel_execute(m);
}
