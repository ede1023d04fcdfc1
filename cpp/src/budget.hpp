// PyRetryBudget: the native part of vr.RetryBudget, shared by its binding
// (bind_budget.cpp) and the policy's first attempt (policy.hpp), which
// counts a call that succeeded natively in its retry config's budget.

#pragma once

#include "binding.hpp"
#include "virtrigaud/retry_budget.hpp"

namespace virtrigaud_bind {

struct PyRetryBudget {
    vr::RetryBudget core;
    PyRetryBudget(int kind, int64_t a, int64_t b, int64_t c, int64_t d, int64_t ttl_ns,
                  const vr::ManualClock* clock)
        : core(make(kind, a, b, c, d, ttl_ns, clock)) {}

    // The Python layer validated every value (retry_budget.py); this checks
    // only what would break the arithmetic, so a bad call cannot crash.
    static vr::RetryBudget make(int kind, int64_t a, int64_t b, int64_t c, int64_t d,
                                int64_t ttl_ns, const vr::ManualClock* clock) {
        switch (kind) {
            case 0:
                if (a < 0 || b < 1 || c < 0 || ttl_ns < vr::RetryBudget::kSlots) {
                    throw nb::value_error("RetryBudget ratio: deposit >= 0, withdrawal >= 1, "
                                          "reserve >= 0 and ttl_ns >= 10 required");
                }
                return vr::RetryBudget::ratio(a, b, c, ttl_ns, clock);
            case 1:
                if (a < 1 || b < 1) {
                    throw nb::value_error("RetryBudget tokens: max and ratio (milli) must be >= 1");
                }
                return vr::RetryBudget::tokens(a, b);
            case 2:
                if (a < 0 || b < 0 || c < 0 || d < 0) {
                    throw nb::value_error("RetryBudget quota: capacity, costs and refund must be >= 0");
                }
                return vr::RetryBudget::quota(a, b, c, d);
            default:
                throw nb::value_error("RetryBudget kind must be 0 (ratio), 1 (tokens) or 2 (quota)");
        }
    }
};


}  // namespace virtrigaud_bind
