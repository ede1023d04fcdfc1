// The native part of a Policy (its breaker, bucket and bulkhead), shared by
// its bindings (bind_policy.cpp: execute(), _enter(), _exit()) and by the
// awaitable execute_async() returns (bind_awaitable.cpp), which admit and
// record an attempt the same way. Its member functions are inline: both
// files' hot paths inline them.

#pragma once

#include "binding.hpp"
#include "budget.hpp"

namespace virtrigaud_bind {

struct PyPolicy {
    nb::object breaker_obj, bucket_obj, bulkhead_obj, budget_obj;
    PyCircuitBreaker* breaker = nullptr;
    PyTokenBucket* bucket = nullptr;
    PyBulkhead* bulkhead = nullptr;
    vr::RetryBudget* budget = nullptr;  // the retry config's: a call counts in it
    bool fast = true;
    bool waits = false;  // a refused token is waited for in Python: not a refusal yet
    // A per-attempt timeout (and no overall one): the AsyncCall of
    // execute_async arms the first attempt's deadline itself on `attempt_clock`
    // (set by _core._policy_attempt_deadline; unset: such a policy is not
    // `fast`, and every call continues in Python). `attempt_what` names the
    // attempt in its deadline's error.
    nb::object attempt_clock, attempt_what;
    double attempt_timeout = -1;

    PyPolicy(nb::handle breaker_, nb::handle bucket_, nb::handle bulkhead_, bool fast_,
             bool waits_, nb::handle budget_)
        : fast(fast_), waits(waits_) {
        if (!breaker_.is_none()) {
            breaker = nb::inst_ptr<PyCircuitBreaker>(checked<PyCircuitBreaker>(breaker_, "breaker"));
            breaker_obj = nb::borrow(breaker_);
        }
        if (!bucket_.is_none()) {
            bucket = nb::inst_ptr<PyTokenBucket>(checked<PyTokenBucket>(bucket_, "bucket"));
            bucket_obj = nb::borrow(bucket_);
        }
        if (!bulkhead_.is_none()) {
            bulkhead = nb::inst_ptr<PyBulkhead>(checked<PyBulkhead>(bulkhead_, "bulkhead"));
            bulkhead_obj = nb::borrow(bulkhead_);
        }
        if (!budget_.is_none()) {
            budget = &nb::inst_ptr<PyRetryBudget>(checked<PyRetryBudget>(budget_, "budget"))->core;
            budget_obj = nb::borrow(budget_);
        }
    }

    template <typename T>
    static nb::handle checked(nb::handle h, const char* field) {
        if (!nb::isinstance<T>(h) || !nb::inst_ready(h)) {
            throw nb::type_error(
                (std::string("Policy ") + field + " has the wrong type").c_str());
        }
        return h;
    }

    // Admits attempt 0 everywhere or undoes what it took; returns the Stage.
    // The bulkhead is asked before the bucket (the layers' effect is the
    // same: all must admit) so that a refused slot never costs a token: a
    // slot is cheap to give back, a token is not.
    int enter(vr::Ticket& ticket) {
        if (breaker != nullptr) {
            ticket = breaker->core().acquire();
            if (!ticket.admitted) {
                return kBreakerOpen;
            }
            if (ticket.transition.changed) {
                return announce_admission(ticket);
            }
        }
        return enter_bulkhead_and_bucket(ticket);
    }

    // The rest of enter() past the breaker, out of line on a refusal only:
    // the admission inlines into the hot paths, the refusals' hooks do not.
    int enter_bulkhead_and_bucket(const vr::Ticket& ticket) {
        if (bulkhead != nullptr && !bulkhead->core.try_enter()) {
            release(ticket);
            return kBulkheadFull;
        }
        if (bucket != nullptr && !bucket->core.try_acquire(1, !waits)) {
            return refused_a_token(ticket);
        }
        return kCalled;
    }

    // The admission moved the breaker (open -> half-open): its listeners
    // hear it before the other layers are asked.
    VIRTRIGAUD_NOINLINE int announce_admission(const vr::Ticket& ticket) {
        if (!notify(breaker_obj.ptr(), ticket.transition)) {
            release(ticket);
            return kRaised;
        }
        return enter_bulkhead_and_bucket(ticket);
    }

    // The bucket refused the token: give back the slot and the admission.
    VIRTRIGAUD_NOINLINE int refused_a_token(const vr::Ticket& ticket) {
        HookError error;
        if (bulkhead != nullptr && !bulkhead_exit(bulkhead_obj.ptr(), bulkhead)) {
            error.take();
        }
        // A waiting policy continues in Python with the same call: no
        // cancellation, nothing to count (as for the token refusal).
        release(ticket, !waits);
        if (!waits && !notify_rate_limited(bucket_obj.ptr(), 1)) {
            error.take();
        }
        return error.raise() ? kRaised : kRateLimited;
    }

    // notify() for the breaker, called only for a change: the test inlines
    // into the hot paths, which otherwise pay a call per admission and per
    // record (notify() is not inlined).
    bool notify_changed(const vr::Transition& t) {
        return !t.changed || notify(breaker_obj.ptr(), t);
    }

    void release(const vr::Ticket& ticket, bool counted = true) {
        if (breaker != nullptr) {
            breaker->core().release(ticket, counted);
        }
    }

    // Attempt 0 succeeded natively: the call counts in the retry budget as the
    // Retrier counts one (started, then succeeded without a retry). A call
    // whose attempt 0 did not succeed here is counted by the Retrier's loop.
    void count_first_attempt_success() noexcept {
        if (budget != nullptr) {
            budget->call_started();
            budget->call_succeeded(0);
        }
    }

    // The attempt ran and returned: record a success, free the slot. Returns
    // false with an error set (a hook's BaseException).
    bool exit_success(const vr::Ticket& ticket) {
        HookError error;
        if (breaker != nullptr && !notify_changed(breaker->core().record_success(ticket))) {
            error.take();
        }
        free_slot(error);
        return !error.raise();
    }

    // The attempt raised exc: record it as classified, free the slot. No
    // Python error may be set when this runs (it calls hooks); a hook's
    // BaseException lands in `error`.
    void exit_raised(const vr::Ticket& ticket, PyObject* exc, HookError& error) {
        if (breaker != nullptr) {
            record_exception(breaker_obj.ptr(), breaker, ticket, exc, error);
        }
        free_slot(error);
    }

    // The attempt did not run after all (it was async): no outcome.
    bool exit_unrun(const vr::Ticket& ticket) {
        HookError error;
        release(ticket);
        free_slot(error);
        return !error.raise();
    }

    void free_slot(HookError& error) {
        if (bulkhead != nullptr && !bulkhead_exit(bulkhead_obj.ptr(), bulkhead)) {
            error.take();
        }
    }
};

// Policy.execute_async(fn, /, *args, **kwargs): a new AsyncCall for the call
// (bind_awaitable.cpp); a raw fastcall method.
PyObject* policy_execute_async(PyObject* self, PyObject* const* args, Py_ssize_t nargsf,
                               PyObject* kwnames);

// Policy.execute(fn, /, *args, **kwargs) (bind_policy.cpp); a raw fastcall
// method (the trace gate calls it too: bind_otel_gate.cpp).
PyObject* policy_execute(PyObject* self, PyObject* const* args, Py_ssize_t nargsf,
                         PyObject* kwnames);

}  // namespace virtrigaud_bind
