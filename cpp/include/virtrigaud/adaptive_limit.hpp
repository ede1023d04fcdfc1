// An adaptive concurrency limit: a bulkhead whose maximum moves.
//
// The in-flight count, the limit and the count of queued waiters are
// atomics, in the SlotPool a Bulkhead is too (slot_pool.hpp): taking a slot
// is one CAS, giving it back another, and first come, first served holds the
// same way (while a waiter is registered a newcomer is refused). What differs:
//
// * the limit is an atomic a controller stores (set_limit()), so a slot is
//   free while in_flight < limit. A limit lowered below the calls in flight
//   takes nothing away from them: slots freed go back to the pool, and
//   none is handed to a waiter, until in_flight is under the new limit.
// * each call that gives its slot back records a sample (its round-trip
//   time, the calls in flight when it started, whether it was a drop) into
//   the current sampling window: a few relaxed atomics, no lock. Once per
//   window the controller takes the window (take_window()) and computes the
//   next limit; the per-call path never runs a limit algorithm.
// * its time is an IntervalClock's (interval_clock.hpp) unless a ManualClock
//   is given: a round trip takes two clock reads, and the steady clock's
//   cost more than the rest of an acquire and release.
//
// The window's fields are read and reset one by one, not as one snapshot: a
// sample recorded while the window is taken may land half in the old window
// and half in the new one (its RTT counted in one, its count in the other).
// That skews one window's mean by at most one sample in many; the limit
// algorithms this feeds smooth far more than that.
#pragma once

#include <atomic>
#include <cstdint>
#include <limits>

#include "clock.hpp"
#include "interval_clock.hpp"
#include "slot_pool.hpp"

namespace virtrigaud {

class AdaptiveLimit : public SlotPool<AdaptiveLimit> {
public:
    static constexpr int64_t kMaxLimit = int64_t{1} << 30;
    static constexpr int64_t kNoRtt = std::numeric_limits<int64_t>::max();

    /// One sampling window's aggregate (take_window()).
    struct Window {
        int64_t samples;        ///< calls that recorded an RTT (drops included)
        int64_t rtt_sum_ns;     ///< sum of their RTTs
        int64_t min_rtt_ns;     ///< the smallest (kNoRtt when no sample)
        int64_t max_in_flight;  ///< the most calls in flight any of them started with
        int64_t drops;          ///< how many were drops
    };

    /// limit clamped to [1, kMaxLimit]; `clock` null: the IntervalClock.
    explicit AdaptiveLimit(int64_t limit, const ManualClock* clock = nullptr) noexcept
        : clock_(clock),
          interval_(clock == nullptr ? &IntervalClock::instance() : nullptr),
          limit_(clamp_limit(limit)) {}

    /// SlotPool's limit: the one the controller stored last.
    int64_t slot_limit() const noexcept { return limit_.load(std::memory_order_relaxed); }

    /// Whether an exiting caller may hand its slot straight to a waiter:
    /// only while the calls in flight (its own included) are within the
    /// limit, so a lowered limit is reached by not handing slots on.
    bool may_hand_over() const noexcept {
        return in_flight() <= limit_.load(std::memory_order_relaxed);
    }

    /// Records one finished call into the current window. `rtt_ns` < 0 is
    /// taken as 0; `in_flight` is what the call saw when it started.
    void record(int64_t rtt_ns, int64_t in_flight, bool dropped) noexcept {
        if (rtt_ns < 0) {
            rtt_ns = 0;
        }
        rtt_sum_ns_.fetch_add(rtt_ns, std::memory_order_relaxed);
        samples_.fetch_add(1, std::memory_order_relaxed);
        if (dropped) {
            drops_.fetch_add(1, std::memory_order_relaxed);
        }
        lower_to(min_rtt_ns_, rtt_ns);
        raise_to(max_in_flight_, in_flight);
    }

    /// Whether the window is due at `now_ns`: its end has passed and it
    /// holds at least `min_samples` samples. Claims it (true for one caller
    /// per window): the claimant takes the window and sets the next end.
    bool claim_window(int64_t now_ns, int64_t min_samples) noexcept {
        int64_t end = window_end_ns_.load(std::memory_order_relaxed);
        if (now_ns < end || samples_.load(std::memory_order_relaxed) < min_samples) {
            return false;
        }
        // The end moves far ahead until the claimant sets the real one, so
        // that no second caller claims the same window meanwhile.
        return window_end_ns_.compare_exchange_strong(end, kMaxClockNs, std::memory_order_acq_rel,
                                                      std::memory_order_relaxed);
    }

    /// Takes the current window's aggregate and starts a fresh one.
    Window take_window() noexcept {
        Window w;
        w.samples = samples_.exchange(0, std::memory_order_relaxed);
        w.rtt_sum_ns = rtt_sum_ns_.exchange(0, std::memory_order_relaxed);
        w.min_rtt_ns = min_rtt_ns_.exchange(kNoRtt, std::memory_order_relaxed);
        w.max_in_flight = max_in_flight_.exchange(0, std::memory_order_relaxed);
        w.drops = drops_.exchange(0, std::memory_order_relaxed);
        return w;
    }

    /// The next window ends at `end_ns` (and may be claimed from then on).
    void set_window_end(int64_t end_ns) noexcept {
        window_end_ns_.store(end_ns, std::memory_order_relaxed);
    }

    /// Stores a new limit (clamped to [1, kMaxLimit]).
    void set_limit(int64_t limit) noexcept {
        limit_.store(clamp_limit(limit), std::memory_order_relaxed);
    }

    int64_t limit() const noexcept { return limit_.load(std::memory_order_relaxed); }
    int64_t now() const noexcept { return clock_ != nullptr ? clock_->now() : interval_->now(); }
    const ManualClock* clock() const noexcept { return clock_; }

private:
    static int64_t clamp_limit(int64_t v) noexcept {
        return v < 1 ? 1 : (v > kMaxLimit ? kMaxLimit : v);
    }

    // A load first: the usual sample changes neither, and a plain load
    // costs far less than a CAS on a line other threads write.
    static void lower_to(std::atomic<int64_t>& a, int64_t v) noexcept {
        int64_t cur = a.load(std::memory_order_relaxed);
        while (v < cur && !a.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
        }
    }
    static void raise_to(std::atomic<int64_t>& a, int64_t v) noexcept {
        int64_t cur = a.load(std::memory_order_relaxed);
        while (v > cur && !a.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
        }
    }

    const ManualClock* clock_;
    const IntervalClock* interval_;  // when clock_ is null
    std::atomic<int64_t> limit_;
    // The sampling window.
    std::atomic<int64_t> window_end_ns_{0};
    std::atomic<int64_t> samples_{0};
    std::atomic<int64_t> rtt_sum_ns_{0};
    std::atomic<int64_t> min_rtt_ns_{kNoRtt};
    std::atomic<int64_t> max_in_flight_{0};
    std::atomic<int64_t> drops_{0};
};

}  // namespace virtrigaud
