// A lock-free token bucket: GCRA over one "theoretical arrival time".
//
// GCRA (the generic cell rate algorithm) stores, instead of a token count,
// the time `tat` at which the bucket would be full again. With T = interval
// (ns per token) and tau = burst * T, a request for n tokens at time `now`
// conforms iff
//
//     max(tat, now) + n*T - now <= tau
//
// and admitting it sets tat = max(tat, now) + n*T. This is exactly a token
// bucket of capacity `burst` refilled at 1/T tokens per ns.
//
// `tat` only means something under the rate it was computed with, so it
// lives beside the packed (interval, burst) in one AtomicPair and every
// change is one 16-byte compare-and-swap of both: an acquirer that read the
// old rate cannot commit against a tat that set_rate() has already rescaled,
// and set_rate() cannot rescale a tat that an acquirer of the old rate is
// about to advance. Every sum saturates (atomic_pair.hpp): no input can
// overflow, and a debt too large to represent is clamped, never forgiven.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>

#include "atomic_pair.hpp"
#include "cas_backoff.hpp"
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
    /// 9 years.
    static constexpr int64_t kMaxTauNs = int64_t{1} << 58;
    /// Longest wait a reservation may be granted: 2^58 ns.
    static constexpr int64_t kMaxWaitNs = int64_t{1} << 58;
    /// Largest debt (tat - now) the bucket ever holds: a full refill plus the
    /// longest wait. With now <= kMaxClockNs (2^62), tat stays below 2^63.
    static constexpr int64_t kMaxDebtNs = kMaxTauNs + kMaxWaitNs;
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
        uint64_t config;      ///< the packed rate it was made under (to cancel it)
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
        : state_(0, pack(interval_ns, burst)), clock_(clock) {}

    /// Takes n tokens now if the bucket holds them; never waits. n in [1, burst];
    /// any other n can never conform and is rejected. `count_refusal` false
    /// leaves a refusal out of rejected(): the caller will wait for the
    /// tokens instead, and that reservation is counted.
    bool try_acquire(int64_t n = 1, bool count_refusal = true) noexcept {
        const int64_t now = now_ns(clock_);
        AtomicPair::Value s = state_.load();
        CasBackoff backoff;
        for (;;) {
            const uint64_t cfg = s.second;
            if (n < 1 || n > burst_of(cfg)) {
                rejected_.fetch_add(1, std::memory_order_relaxed);
                return false;
            }
            const int64_t interval = interval_of(cfg);
            const int64_t next = std::max(tat_of(s), now) + n * interval;
            if (next - now > burst_of(cfg) * interval) {
                if (!refusal_stands(s)) {
                    continue;  // a torn read: decide again on the pair as it is
                }
                if (count_refusal) {
                    rejected_.fetch_add(1, std::memory_order_relaxed);
                }
                return false;
            }
            if (state_.compare_exchange(s, {static_cast<uint64_t>(next), cfg})) {
                admitted_.fetch_add(1, std::memory_order_relaxed);
                return true;
            }
            lost_race(s, backoff);
        }
    }

    /// Reserves n tokens (n <= burst) and says how long to wait before using
    /// them, as golang.org/x/time/rate's ReserveN. If the wait would exceed
    /// `max_wait_ns` (itself clamped to [0, kMaxWaitNs]), or n is outside
    /// [1, burst], nothing is reserved and `ok` is false.
    Reservation reserve(int64_t n, int64_t max_wait_ns) noexcept {
        const int64_t now = now_ns(clock_);
        max_wait_ns = clamp64(max_wait_ns, 0, kMaxWaitNs);
        AtomicPair::Value s = state_.load();
        CasBackoff backoff;
        for (;;) {
            const uint64_t cfg = s.second;
            if (n < 1 || n > burst_of(cfg)) {
                rejected_.fetch_add(1, std::memory_order_relaxed);
                return Reservation{false, kMaxWaitNs, 0, 0, cfg};
            }
            const int64_t interval = interval_of(cfg);
            const int64_t next = std::max(tat_of(s), now) + n * interval;
            const int64_t delay = std::max<int64_t>(0, next - burst_of(cfg) * interval - now);
            if (delay > max_wait_ns) {
                if (!refusal_stands(s)) {
                    continue;
                }
                rejected_.fetch_add(1, std::memory_order_relaxed);
                return Reservation{false, delay, 0, 0, cfg};
            }
            if (state_.compare_exchange(s, {static_cast<uint64_t>(next), cfg})) {
                (delay > 0 ? reserved_ : admitted_).fetch_add(1, std::memory_order_relaxed);
                return Reservation{true, delay, next, now + delay, cfg};
            }
            lost_race(s, backoff);
        }
    }

    /// Gives back the tokens of a reservation that has not yet acted, minus
    /// those reserved after it (golang.org/x/time/rate's CancelAt): if nothing
    /// was reserved since, all n tokens return. Returns the tokens given back.
    int64_t cancel(int64_t n, int64_t tat_after, int64_t time_to_act, uint64_t config) noexcept {
        if (time_to_act <= now_ns(clock_)) {
            return 0;  // its time came: the tokens are spent
        }
        return refund(n, tat_after, config);
    }

    /// Gives back n tokens reserved (reserve's tat_after) for a call that then
    /// never ran, whether or not their time has come, minus those reserved
    /// after them. Returns the tokens given back. Nothing comes back once the
    /// rate has changed since the reservation (`config` is the rate it was
    /// made under): its arrival time belongs to the old rate, and giving back
    /// less than was taken is the safe side.
    int64_t refund(int64_t n, int64_t tat_after, uint64_t config) noexcept {
        AtomicPair::Value s = state_.load();
        CasBackoff backoff;
        for (;;) {
            const uint64_t cfg = s.second;
            if (cfg != config || n < 1 || n > burst_of(cfg)) {
                return 0;
            }
            const int64_t interval = interval_of(cfg);
            const int64_t tat = tat_of(s);
            // Time reserved by later callers stays theirs.
            const int64_t later = tat > tat_after ? sat_sub(tat, tat_after) : 0;
            const int64_t restore = n * interval - std::min(later, n * interval);
            if (restore <= 0) {
                return 0;
            }
            // Saturating: refunds of tokens nothing took (a made-up tat_after,
            // or one reservation refunded again and again) push tat back
            // without bound; wrapped past INT64_MIN it would read as ~2^63 ns
            // of debt (and is signed overflow). Any tat before now - tau
            // means a full bucket, so a saturated one is still exact.
            if (state_.compare_exchange(s, {static_cast<uint64_t>(sat_sub(tat, restore)), cfg})) {
                cancelled_.fetch_add(1, std::memory_order_relaxed);
                return restore / interval;
            }
            lost_race(s, backoff);
        }
    }

    /// Changes rate and burst, keeping the tokens available now (capped at
    /// the new burst, and at `max_tokens`, clamped to [0, new burst]) and any
    /// debt in tokens (reservations still waiting keep their place).
    /// Lock-free; an acquisition racing with this call is decided entirely
    /// under the old rate or entirely under the new one. `max_tokens` 0
    /// empties the bucket: a leased share starts with no tokens, so that
    /// joining a fleet adds none to what the fleet may admit.
    void set_rate(int64_t interval_ns, int64_t burst, int64_t max_tokens = kMaxBurst) noexcept {
        const uint64_t new_cfg = pack(interval_ns, burst);
        const int64_t new_interval = interval_of(new_cfg);
        const int64_t new_burst = burst_of(new_cfg);
        // At most max_tokens available = at least this much debt (<= tau).
        const int64_t min_debt = (new_burst - clamp64(max_tokens, 0, new_burst)) * new_interval;
        AtomicPair::Value s = state_.load();
        CasBackoff backoff;
        for (;;) {
            // The clock is read after the state, on every attempt: each
            // acquirer whose tat we see read its clock before we read ours,
            // so tat <= now + (old tau + waits) and the debt below is real.
            // Read once before a CAS that fails (or before a preemption), a
            // stale `now` counted the tokens that later acquirers took
            // (legitimately, at their later now) as debt, and converted it at
            // the new rate: 1e6 -> 1e3 qps left a bucket thousands of tokens
            // (seconds) in debt with no reservation made.
            const int64_t now = now_ns(clock_);
            const uint64_t old_cfg = s.second;
            const int64_t old_interval = interval_of(old_cfg);
            const int64_t debt_ns = std::max(tat_of(s), now) - now;
            // The tokens missing from the new burst carry over: missing =
            // new_burst - min(available, new_burst), available = old_burst -
            // debt / old_interval. Whole tokens convert exactly; the fraction
            // of one is rounded to the new interval.
            const int64_t whole = new_burst - burst_of(old_cfg) + debt_ns / old_interval;
            const int64_t fraction_ns = static_cast<int64_t>(std::llround(
                static_cast<double>(debt_ns % old_interval) * static_cast<double>(new_interval) /
                static_cast<double>(old_interval)));
            int64_t new_debt = 0;
            if (whole >= 0) {
                new_debt = std::min(sat_add(sat_mul_nonneg(whole, new_interval), fraction_ns),
                                    kMaxDebtNs);
            }
            new_debt = std::max(new_debt, min_debt);
            const AtomicPair::Value next{static_cast<uint64_t>(now + new_debt), new_cfg};
            if (state_.compare_exchange(s, next)) {
                return;
            }
            lost_race(s, backoff);
        }
    }

    /// Takes `cost_ns` nanoseconds of the bucket's capacity (a fraction of a
    /// token: n tokens cost n * interval) if it conforms at time `now` (ns on
    /// the caller's clock; < 0 reads the bucket's own): max(tat, now) + cost
    /// - now <= tau. For a leaky bucket of fractional amounts on a clock the
    /// caller owns (aiolimiter's: the event loop's). cost_ns in [0, tau]; any
    /// other cost never conforms. Counted as try_acquire counts.
    bool try_acquire_ns(int64_t cost_ns, int64_t now, bool count_refusal = true) noexcept {
        if (now < 0) {
            now = now_ns(clock_);
        }
        now = std::min(now, kMaxClockNs);
        AtomicPair::Value s = state_.load();
        CasBackoff backoff;
        for (;;) {
            const uint64_t cfg = s.second;
            const int64_t tau = burst_of(cfg) * interval_of(cfg);
            if (cost_ns < 0 || cost_ns > tau) {
                rejected_.fetch_add(1, std::memory_order_relaxed);
                return false;
            }
            const int64_t next = std::max(tat_of(s), now) + cost_ns;
            if (next - now > tau) {
                if (!refusal_stands(s)) {
                    continue;
                }
                if (count_refusal) {
                    rejected_.fetch_add(1, std::memory_order_relaxed);
                }
                return false;
            }
            if (state_.compare_exchange(s, {static_cast<uint64_t>(next), cfg})) {
                admitted_.fetch_add(1, std::memory_order_relaxed);
                return true;
            }
            lost_race(s, backoff);
        }
    }

    /// Nanoseconds of capacity in use at `now` (< 0: the bucket's clock):
    /// max(tat - now, 0), at most tau plus waiting reservations. A cost c
    /// conforms iff debt + c <= tau, so the wait for it is debt + c - tau.
    int64_t debt_ns(int64_t now) const noexcept {
        if (now < 0) {
            now = now_ns(clock_);
        }
        now = std::min(now, kMaxClockNs);
        const AtomicPair::Value s = state_.load_consistent();
        // max first: refunds saturate tat at INT64_MIN, and tat - now would
        // overflow (undefined) before any max could clamp it.
        return std::max(tat_of(s), now) - now;
    }

    /// Tokens available now; negative while reservations wait for tokens.
    double tokens() const noexcept {
        // One consistent pair: a torn read racing set_rate() could pair the
        // tat of one rate with the interval of another (a tat 4 tokens ahead
        // at 1 ms per token, read at 1 us per token, is 4,000 tokens of
        // debt), and retry_after() and monitoring act on this value.
        const AtomicPair::Value s = state_.load_consistent();
        const int64_t now = now_ns(clock_);
        const double debt =
            static_cast<double>(std::max(tat_of(s), now) - now) / static_cast<double>(interval_of(s.second));
        return static_cast<double>(burst_of(s.second)) - debt;
    }

    int64_t interval_ns() const noexcept { return interval_of(state_.second()); }
    int64_t burst() const noexcept { return burst_of(state_.second()); }
    /// The packed (interval, burst) now: what reserve() records and refund() checks.
    uint64_t config() const noexcept { return state_.second(); }
    const ManualClock* clock() const noexcept { return clock_; }

    // Counters (relaxed; exact once the writers are done).
    uint64_t admitted() const noexcept { return admitted_.load(std::memory_order_relaxed); }
    uint64_t rejected() const noexcept { return rejected_.load(std::memory_order_relaxed); }
    uint64_t reserved() const noexcept { return reserved_.load(std::memory_order_relaxed); }
    uint64_t cancelled() const noexcept { return cancelled_.load(std::memory_order_relaxed); }

private:
    static uint64_t pack(int64_t interval_ns, int64_t burst) noexcept {
        const int64_t interval = clamp64(interval_ns, 1, kMaxIntervalNs);
        const int64_t b = clamp64(burst, 1, std::min(kMaxBurst, kMaxTauNs / interval));
        return (static_cast<uint64_t>(b) << kIntervalBits) | static_cast<uint64_t>(interval);
    }
    static int64_t interval_of(uint64_t cfg) noexcept {
        return static_cast<int64_t>(cfg & static_cast<uint64_t>(kMaxIntervalNs));
    }
    static int64_t burst_of(uint64_t cfg) noexcept {
        return static_cast<int64_t>(cfg >> kIntervalBits);
    }
    static int64_t tat_of(const AtomicPair::Value& s) noexcept {
        return static_cast<int64_t>(s.first);
    }

    /// Whether a refusal decided on `s` stands. `s` came from two plain loads
    /// and may be torn: the tat of one rate beside the configuration of
    /// another (racing set_rate(), a tat ahead by 4 tokens at 1 ms per token
    /// read at 1 us per token is 4,000 tokens of debt), which refuses calls
    /// that either rate admits. A compare-and-swap of `s` with itself
    /// succeeds only if `s` is the bucket's pair at one instant; otherwise
    /// it loads the current pair into `s` for the caller to decide again.
    /// Admissions need no such check (their own CAS validates the pair), and
    /// a refusal already writes this line (the counter), so the cost is one
    /// locked instruction on the refusal path only.
    bool refusal_stands(AtomicPair::Value& s) noexcept { return state_.compare_exchange(s, s); }

    /// After a mutation's CAS failed: another thread changed the pair since
    /// `s` was read. Retrying at once would take the cache line back from a
    /// winner that is about to write it again (two threads hammering one
    /// bucket then get less done than one), so wait a little, longer each
    /// time (cas_backoff.hpp), then read the pair as it is by now: the one
    /// the failed CAS handed back is likely stale after the wait. Only the
    /// timing of the retry changes; it still decides on the pair it commits.
    /// (refusal_stands() is not followed by this: its CAS stores what it
    /// read, so it fails only on a real change, and the pair it hands back is
    /// the newest there is.)
    void lost_race(AtomicPair::Value& s, CasBackoff& backoff) const noexcept {
        backoff.pause();
        s = state_.load();
    }

    // The hot fields: 56 bytes, nothing else is written per call. Aligned to
    // 16 (the pair's compare-and-swap needs it), not to a cache line: a
    // fleet holds 100,000 buckets, and padding each to a line cost up to
    // 56 bytes of alignment slack plus the line's tail (issue 21). Other
    // objects are at least a Python object header away, and a thread calling
    // a bucket writes that object's header line anyway (its reference count).
    mutable AtomicPair state_;  // (tat, packed interval and burst); mutable for tokens()
    const ManualClock* clock_;
    std::atomic<uint64_t> admitted_{0};
    std::atomic<uint64_t> rejected_{0};
    std::atomic<uint64_t> reserved_{0};
    std::atomic<uint64_t> cancelled_{0};

public:
    /// A flag the bucket never reads, for its owner (the Python binding's
    /// "a refusal calls Python"): it lives in the bytes the pair's
    /// alignment leaves after the counters, so the owner adds none.
    std::atomic<bool> owner_flag{false};
};

static_assert(sizeof(TokenBucket) == 64 && alignof(TokenBucket) == 16,
              "TokenBucket: 56 bytes of state and the owner's flag, aligned for the pair's "
              "compare-and-swap");

}  // namespace virtrigaud
