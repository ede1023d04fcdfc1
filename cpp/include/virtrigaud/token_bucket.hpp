// A lock-free token bucket: GCRA over one atomic "theoretical arrival time".
//
// GCRA (the generic cell rate algorithm) stores, instead of a token count,
// the time `tat` at which the bucket would be full again. With T = interval
// (ns per token) and tau = burst * T, a request for n tokens at time `now`
// conforms iff
//
//     max(tat, now) + n*T - now <= tau
//
// and admitting it sets tat = max(tat, now) + n*T. This is exactly a token
// bucket of capacity `burst` refilled at 1/T tokens per ns, kept in one
// 64-bit word, so admission is one load, some arithmetic and one CAS.
//
// Rate and burst live together in a second word so a reader never sees the
// rate of one configuration with the burst of another.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>

#include "clock.hpp"

namespace virtrigaud {

class TokenBucket {
public:
    /// Bits of the interval (ns per token) in the packed configuration.
    static constexpr int kIntervalBits = 42;
    /// Longest interval: 2^42-1 ns, about 73 minutes per token.
    static constexpr int64_t kMaxIntervalNs = (int64_t{1} << kIntervalBits) - 1;
    /// Largest burst: 2^20-1 tokens.
    static constexpr int64_t kMaxBurst = (int64_t{1} << 20) - 1;
    /// Longest time to refill a whole bucket (burst * interval): 2^58 ns, about
    /// 9 years. With kMaxWaitNs it keeps every sum below 2^61: no overflow.
    static constexpr int64_t kMaxTauNs = int64_t{1} << 58;
    /// Longest wait a reservation may be granted: 2^58 ns.
    static constexpr int64_t kMaxWaitNs = int64_t{1} << 58;
    /// Highest rate: one token per nanosecond.
    static constexpr double kMaxQps = 1e9;
    /// Lowest rate: one token per kMaxIntervalNs.
    static constexpr double kMinQps = 1e9 / static_cast<double>(kMaxIntervalNs);

    /// The outcome of reserve(). `ok` false means nothing was reserved.
    struct Reservation {
        bool ok;
        int64_t delay_ns;     ///< how long the caller must wait before acting
        int64_t tat_after;    ///< tat this reservation set (to cancel it)
        int64_t time_to_act;  ///< now + delay_ns
    };

    /// Nanoseconds per token for `qps`, rounded to a whole nanosecond and
    /// clamped to [1, kMaxIntervalNs]. The caller validates qps first.
    static int64_t interval_for(double qps) noexcept {
        if (!(qps > 0)) {
            return kMaxIntervalNs;
        }
        const double interval = std::clamp(1e9 / qps, 1.0, static_cast<double>(kMaxIntervalNs));
        return static_cast<int64_t>(std::llround(interval));
    }

    /// A full bucket. interval_ns in [1, kMaxIntervalNs], burst in [1, kMaxBurst],
    /// burst * interval_ns <= kMaxTauNs (the binding validates; out-of-range
    /// values are clamped, never undefined behaviour).
    TokenBucket(int64_t interval_ns, int64_t burst, const ManualClock* clock = nullptr) noexcept
        : tat_(0), config_(pack(interval_ns, burst)), clock_(clock) {}

    /// Takes n tokens now if the bucket holds them; never waits. n in [1, burst];
    /// a larger n can never conform and is rejected. `count_refusal` false
    /// leaves a refusal out of rejected(): the caller will wait for the
    /// tokens instead, and that reservation is counted.
    bool try_acquire(int64_t n = 1, bool count_refusal = true) noexcept {
        const int64_t now = now_ns(clock_);
        const uint64_t cfg = config_.load(std::memory_order_acquire);
        if (n < 1 || n > burst_of(cfg)) {
            rejected_.fetch_add(1, std::memory_order_relaxed);
            return false;
        }
        const int64_t interval = interval_of(cfg);
        const int64_t tau = burst_of(cfg) * interval;
        const int64_t need = n * interval;
        int64_t tat = tat_.load(std::memory_order_relaxed);
        for (;;) {
            const int64_t next = std::max(tat, now) + need;
            if (next - now > tau) {
                if (count_refusal) {
                    rejected_.fetch_add(1, std::memory_order_relaxed);
                }
                return false;
            }
            if (tat_.compare_exchange_weak(tat, next, std::memory_order_acq_rel,
                                           std::memory_order_relaxed)) {
                admitted_.fetch_add(1, std::memory_order_relaxed);
                return true;
            }
        }
    }

    /// Reserves n tokens (n <= burst) and says how long to wait before using
    /// them, as golang.org/x/time/rate's ReserveN. If the wait would exceed
    /// `max_wait_ns` (itself capped at kMaxWaitNs), or n is outside [1, burst],
    /// nothing is reserved and `ok` is false.
    Reservation reserve(int64_t n, int64_t max_wait_ns) noexcept {
        const int64_t now = now_ns(clock_);
        const uint64_t cfg = config_.load(std::memory_order_acquire);
        if (n < 1 || n > burst_of(cfg)) {
            rejected_.fetch_add(1, std::memory_order_relaxed);
            return Reservation{false, kMaxWaitNs, 0, 0};
        }
        max_wait_ns = std::min(max_wait_ns, kMaxWaitNs);
        const int64_t interval = interval_of(cfg);
        const int64_t tau = burst_of(cfg) * interval;
        const int64_t need = n * interval;
        int64_t tat = tat_.load(std::memory_order_relaxed);
        for (;;) {
            const int64_t next = std::max(tat, now) + need;
            const int64_t delay = std::max<int64_t>(0, next - tau - now);
            if (delay > max_wait_ns) {
                rejected_.fetch_add(1, std::memory_order_relaxed);
                return Reservation{false, delay, 0, 0};
            }
            if (tat_.compare_exchange_weak(tat, next, std::memory_order_acq_rel,
                                           std::memory_order_relaxed)) {
                (delay > 0 ? reserved_ : admitted_).fetch_add(1, std::memory_order_relaxed);
                return Reservation{true, delay, next, now + delay};
            }
        }
    }

    /// Gives back the tokens of a reservation that has not yet acted, minus
    /// those reserved after it (golang.org/x/time/rate's CancelAt): if nothing
    /// was reserved since, all n tokens return. Returns the tokens given back.
    int64_t cancel(int64_t n, int64_t tat_after, int64_t time_to_act) noexcept {
        if (time_to_act <= now_ns(clock_)) {
            return 0;  // its time came: the tokens are spent
        }
        return refund(n, tat_after);
    }

    /// Gives back n tokens reserved (reserve's tat_after) for a call that then
    /// never ran, whether or not their time has come, minus those reserved
    /// after them. Returns the tokens given back.
    int64_t refund(int64_t n, int64_t tat_after) noexcept {
        if (n < 1 || n > kMaxBurst) {
            return 0;
        }
        const int64_t interval = interval_of(config_.load(std::memory_order_acquire));
        int64_t tat = tat_.load(std::memory_order_relaxed);
        for (;;) {
            // Time reserved by later callers stays theirs.
            const int64_t restore = n * interval - std::max<int64_t>(0, tat - tat_after);
            if (restore <= 0) {
                return 0;
            }
            if (tat_.compare_exchange_weak(tat, tat - restore, std::memory_order_acq_rel,
                                           std::memory_order_relaxed)) {
                cancelled_.fetch_add(1, std::memory_order_relaxed);
                return restore / interval;
            }
        }
    }

    /// Changes rate and burst, keeping the tokens now available (capped at the
    /// new burst). Lock-free for acquirers; setters are serialised among
    /// themselves. An acquisition racing with this call sees the old or the
    /// new rate.
    void set_rate(int64_t interval_ns, int64_t burst) noexcept {
        while (setting_.test_and_set(std::memory_order_acquire)) {
        }
        const int64_t now = now_ns(clock_);
        const uint64_t old_cfg = config_.load(std::memory_order_relaxed);
        const uint64_t new_cfg = pack(interval_ns, burst);
        const double new_interval = static_cast<double>(interval_of(new_cfg));
        const double new_burst = static_cast<double>(burst_of(new_cfg));
        int64_t tat = tat_.load(std::memory_order_relaxed);
        for (;;) {
            const double available = std::min(tokens_at(tat, old_cfg, now), new_burst);
            const int64_t next =
                now + static_cast<int64_t>(std::llround((new_burst - available) * new_interval));
            config_.store(new_cfg, std::memory_order_release);
            if (tat_.compare_exchange_weak(tat, next, std::memory_order_acq_rel,
                                           std::memory_order_relaxed)) {
                break;
            }
        }
        setting_.clear(std::memory_order_release);
    }

    /// Tokens available now; negative while reservations wait for tokens.
    double tokens() const noexcept {
        return tokens_at(tat_.load(std::memory_order_acquire),
                         config_.load(std::memory_order_acquire), now_ns(clock_));
    }

    int64_t interval_ns() const noexcept {
        return interval_of(config_.load(std::memory_order_acquire));
    }
    int64_t burst() const noexcept { return burst_of(config_.load(std::memory_order_acquire)); }
    const ManualClock* clock() const noexcept { return clock_; }

    // Counters (relaxed; exact once the writers are done).
    uint64_t admitted() const noexcept { return admitted_.load(std::memory_order_relaxed); }
    uint64_t rejected() const noexcept { return rejected_.load(std::memory_order_relaxed); }
    uint64_t reserved() const noexcept { return reserved_.load(std::memory_order_relaxed); }
    uint64_t cancelled() const noexcept { return cancelled_.load(std::memory_order_relaxed); }

private:
    static uint64_t pack(int64_t interval_ns, int64_t burst) noexcept {
        const int64_t interval = std::clamp<int64_t>(interval_ns, 1, kMaxIntervalNs);
        const int64_t b = std::clamp<int64_t>(burst, 1, std::min(kMaxBurst, kMaxTauNs / interval));
        return (static_cast<uint64_t>(b) << kIntervalBits) | static_cast<uint64_t>(interval);
    }
    static int64_t interval_of(uint64_t cfg) noexcept {
        return static_cast<int64_t>(cfg & static_cast<uint64_t>(kMaxIntervalNs));
    }
    static int64_t burst_of(uint64_t cfg) noexcept {
        return static_cast<int64_t>(cfg >> kIntervalBits);
    }
    static double tokens_at(int64_t tat, uint64_t cfg, int64_t now) noexcept {
        const double interval = static_cast<double>(interval_of(cfg));
        const double debt = static_cast<double>(std::max(tat, now) - now) / interval;
        return static_cast<double>(burst_of(cfg)) - debt;
    }

    // The hot fields share one cache line; nothing else is written per call.
    alignas(64) std::atomic<int64_t> tat_;
    std::atomic<uint64_t> config_;
    const ManualClock* clock_;
    std::atomic<uint64_t> admitted_{0};
    std::atomic<uint64_t> rejected_{0};
    std::atomic<uint64_t> reserved_{0};
    std::atomic<uint64_t> cancelled_{0};
    std::atomic_flag setting_ = ATOMIC_FLAG_INIT;
};

static_assert(sizeof(TokenBucket) == 64, "TokenBucket state must fit one cache line");

}  // namespace virtrigaud
