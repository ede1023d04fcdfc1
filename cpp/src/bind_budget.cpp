// RetryBudget: retries as a share of calls (vr::RetryBudget), for users'
// own retry loops (deposit, try_withdraw, available) and for the Retrier
// (the _call_* methods: what a call's start, success and unretried failure
// mean to each kind).

#include "budget.hpp"

namespace virtrigaud_bind {

void bind_budget(nb::module_& m) {
    nb::class_<PyRetryBudget>(m, "RetryBudget", "A retry budget (native part).")
        .def(nb::init<int, int64_t, int64_t, int64_t, int64_t, int64_t, const vr::ManualClock*>(),
             "kind"_a, "a"_a, "b"_a, "c"_a, "d"_a, "ttl_ns"_a, "clock"_a.none() = nullptr,
             nb::keep_alive<1, 8>())
        .def("deposit", [](PyRetryBudget& b) { b.core.deposit(); },
             "Credits the budget. ratio: one call; tokens: one success (+token_ratio);\n"
             "quota: one success without retries (+refund). Never blocks.")
        .def("try_withdraw", [](PyRetryBudget& b, bool timeout) { return b.core.try_withdraw(timeout); },
             "timeout"_a = false,
             "Whether one retry may be made now, taking its share if so. ratio: 1/percent\n"
             "of a deposit; tokens: records a retryable failure (-1 token) and allows the\n"
             "retry while tokens stay above max_tokens / 2; quota: the retry's cost\n"
             "(timeout_cost when `timeout`). Never blocks.")
        .def_prop_ro("available", [](const PyRetryBudget& b) { return b.core.available(); },
                     "Retries allowed now (an int >= 0), if nothing else happened meanwhile.")
        .def_prop_ro("_kind", [](const PyRetryBudget& b) { return static_cast<int>(b.core.kind()); })
        .def("_balance", [](const PyRetryBudget& b) { return b.core.balance(); },
             "The raw balance: ratio units (window + reserve), milli-tokens, or quota units.")
        .def("_call_started", [](PyRetryBudget& b) { b.core.call_started(); },
             "A retry loop's call starts (ratio: a deposit).")
        .def("_call_succeeded", [](PyRetryBudget& b, int64_t last_cost) {
                 b.core.call_succeeded(last_cost);
             }, "last_cost"_a,
             "A call succeeded after a last retry that cost `last_cost` (0: no retries).")
        .def("_failed_without_retry", [](PyRetryBudget& b) { b.core.failed_without_retry(); },
             "A retryable failure not retried for want of attempts (tokens: -1 token).")
        .def("_retry_cost", [](const PyRetryBudget& b, bool timeout) {
                 return b.core.retry_cost(timeout);
             }, "timeout"_a, "What a retry takes (quota), to give back on success; else 0.")
        .def("_share", [](PyRetryBudget& b) { b.core.share(); },
             "Counts this process's amounts for _take_unsynced() from now on.")
        .def("_take_unsynced", [](PyRetryBudget& b) { return b.core.take_unsynced(); },
             "This process's net amounts (units) added since the last call.")
        .def("_take_wanted", [](PyRetryBudget& b) { return b.core.take_wanted(); },
             "Whether this process asked for a retry since the last call.")
        .def("_set_external", [](PyRetryBudget& b, int64_t units) { b.core.set_external(units); },
             "units"_a, "What the rest of the fleet adds to the balance (units, may be < 0).")
        .def("_own_window", [](const PyRetryBudget& b) { return b.core.own_window(); },
             "This process's own net amount over the window (units).");
}

}  // namespace virtrigaud_bind
