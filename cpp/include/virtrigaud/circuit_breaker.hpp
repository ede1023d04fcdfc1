// A lock-free circuit breaker: the whole state machine in one atomic word.
//
// Word layout (64 bits):
//   bits  0..1   state: 0 closed, 1 half-open, 2 open, 3 held open (force_open)
//   bits  2..23  consecutive failures while closed (22 bits)
//   bits 24..39  half-open calls admitted and not released (16 bits)
//   bits 40..63  generation (24 bits, wraps), bumped by every transition
//
// The stamp of the failure that opened the breaker lives in a second word,
// written before the CAS that opens, so whoever sees "open" sees its stamp.
//
// Semantics (the Virtrigaud guide's Go implementation):
//   closed:    every counted failure increments; failures >= threshold opens;
//              a success resets the count.
//   open:      rejects until reset_timeout has passed since the opening
//              failure; then the admitting call moves it to half-open and is
//              itself the first half-open call.
//   half-open: admits up to half_open_max_calls; any failure re-opens; once
//              that many were admitted and one succeeds, it closes.
//   held open: rejects until reset(); never times out.
// Outcomes carry the generation of their admission (as sony/gobreaker): an
// outcome from an older generation is counted but moves nothing.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "clock.hpp"

namespace virtrigaud {

enum class BreakerState : uint8_t { kClosed = 0, kHalfOpen = 1, kOpen = 2, kHeldOpen = 3 };

/// A state change caused by one call: `changed` false means none.
struct Transition {
    bool changed = false;
    BreakerState from = BreakerState::kClosed;
    BreakerState to = BreakerState::kClosed;
};

/// An admission decision. Pass it back to exactly one record/release call.
struct Ticket {
    bool admitted = false;
    bool half_open = false;  ///< holds one of the half-open slots
    uint32_t generation = 0;
    Transition transition;   ///< open -> half-open happens on admission

    /// One int64 for bindings: -1 rejected, else generation << 1 | half_open.
    int64_t encode() const noexcept {
        return admitted ? (static_cast<int64_t>(generation) << 1) | (half_open ? 1 : 0) : -1;
    }
    static Ticket decode(int64_t code) noexcept {
        Ticket t;
        if (code >= 0) {
            t.admitted = true;
            t.half_open = (code & 1) != 0;
            t.generation = static_cast<uint32_t>(code >> 1) & kGenerationMask;
        }
        return t;
    }
    static constexpr uint32_t kGenerationMask = (1u << 24) - 1;
};

class CircuitBreaker {
public:
    static constexpr uint32_t kMaxFailureThreshold = (1u << 22) - 1;  // 4,194,303
    static constexpr uint32_t kMaxHalfOpenCalls = (1u << 16) - 1;     // 65,535

    /// failure_threshold in [1, kMaxFailureThreshold], half_open_max_calls in
    /// [1, kMaxHalfOpenCalls], reset_timeout_ns >= 0 (the binding validates;
    /// out-of-range values are clamped, never undefined behaviour).
    CircuitBreaker(uint32_t failure_threshold, int64_t reset_timeout_ns,
                   uint32_t half_open_max_calls, const ManualClock* clock = nullptr) noexcept
        : word_(0),
          opened_at_(0),
          clock_(clock),
          reset_timeout_ns_(reset_timeout_ns < 0 ? 0 : reset_timeout_ns),
          threshold_(clamp(failure_threshold, kMaxFailureThreshold)),
          half_open_max_(clamp(half_open_max_calls, kMaxHalfOpenCalls)) {}

    /// Asks to make a call. Closed: always admitted (one load, no write).
    Ticket acquire() noexcept {
        uint64_t w = word_.load(std::memory_order_acquire);
        for (;;) {
            switch (state_of(w)) {
                case BreakerState::kClosed:
                    return admitted(w, false);
                case BreakerState::kHalfOpen: {
                    if (half_open_of(w) >= half_open_max_) {
                        return reject();
                    }
                    if (word_.compare_exchange_weak(w, w + kHalfOpenOne, std::memory_order_acq_rel,
                                                    std::memory_order_acquire)) {
                        return admitted(w, true);
                    }
                    break;
                }
                case BreakerState::kOpen: {
                    const int64_t now = now_ns(clock_);
                    if (now - opened_at_.load(std::memory_order_relaxed) < reset_timeout_ns_) {
                        return reject();
                    }
                    const uint64_t next = make(BreakerState::kHalfOpen, 0, 1, generation_of(w) + 1);
                    if (word_.compare_exchange_weak(w, next, std::memory_order_acq_rel,
                                                    std::memory_order_acquire)) {
                        Ticket t = admitted(next, true);
                        t.transition = transitioned(BreakerState::kOpen, BreakerState::kHalfOpen, now);
                        return t;
                    }
                    break;
                }
                case BreakerState::kHeldOpen:
                    return reject();
            }
        }
    }

    /// The admitted call succeeded (or failed in a way that does not count).
    Transition record_success(const Ticket& ticket) noexcept {
        successes_.fetch_add(1, std::memory_order_relaxed);
        uint64_t w = word_.load(std::memory_order_acquire);
        for (;;) {
            if (!current(w, ticket)) {
                return {};
            }
            uint64_t next;
            if (state_of(w) == BreakerState::kClosed) {
                if (failures_of(w) == 0) {
                    return {};  // the common case: nothing to write
                }
                next = w & ~kFailuresMask;
            } else if (state_of(w) == BreakerState::kHalfOpen && half_open_of(w) >= half_open_max_) {
                next = make(BreakerState::kClosed, 0, 0, generation_of(w) + 1);
            } else {
                return {};  // half-open, not all probes admitted yet
            }
            if (word_.compare_exchange_weak(w, next, std::memory_order_acq_rel,
                                            std::memory_order_acquire)) {
                if (state_of(next) == state_of(w)) {
                    return {};
                }
                return transitioned(BreakerState::kHalfOpen, BreakerState::kClosed, now_ns(clock_));
            }
        }
    }

    /// The admitted call failed in a way that counts.
    Transition record_failure(const Ticket& ticket) noexcept {
        failures_total_.fetch_add(1, std::memory_order_relaxed);
        const int64_t now = now_ns(clock_);
        uint64_t w = word_.load(std::memory_order_acquire);
        for (;;) {
            if (!current(w, ticket)) {
                return {};
            }
            const BreakerState state = state_of(w);
            if (state == BreakerState::kClosed && failures_of(w) + 1 < threshold_) {
                if (word_.compare_exchange_weak(w, w + kFailureOne, std::memory_order_acq_rel,
                                                std::memory_order_acquire)) {
                    return {};
                }
                continue;
            }
            if (state != BreakerState::kClosed && state != BreakerState::kHalfOpen) {
                return {};
            }
            // Trip: the stamp goes first, so a reader of "open" sees it. It only
            // moves forward: a caller that loses the CAS below (or a stale one
            // preempted here) must not rewind the stamp of a newer opening.
            int64_t stamp = opened_at_.load(std::memory_order_relaxed);
            while (stamp < now &&
                   !opened_at_.compare_exchange_weak(stamp, now, std::memory_order_relaxed)) {
            }
            const uint64_t next = make(BreakerState::kOpen, 0, 0, generation_of(w) + 1);
            if (word_.compare_exchange_weak(w, next, std::memory_order_acq_rel,
                                            std::memory_order_acquire)) {
                return transitioned(state, BreakerState::kOpen, now);
            }
        }
    }

    /// The admitted call ended without an outcome (cancelled): gives its
    /// half-open slot back and counts nothing else.
    void release(const Ticket& ticket) noexcept {
        cold_.released.fetch_add(1, std::memory_order_relaxed);
        if (!ticket.half_open) {
            return;
        }
        uint64_t w = word_.load(std::memory_order_acquire);
        while (current(w, ticket) && state_of(w) == BreakerState::kHalfOpen &&
               half_open_of(w) > 0) {
            if (word_.compare_exchange_weak(w, w - kHalfOpenOne, std::memory_order_acq_rel,
                                            std::memory_order_acquire)) {
                return;
            }
        }
    }

    /// Closes the breaker, forgetting failures. Starts a new generation.
    Transition reset() noexcept { return move_to(BreakerState::kClosed); }

    /// Opens the breaker and holds it open until reset() (a manual override).
    Transition force_open() noexcept { return move_to(BreakerState::kHeldOpen); }

    BreakerState state() const noexcept { return state_of(word_.load(std::memory_order_acquire)); }
    uint32_t consecutive_failures() const noexcept {
        return failures_of(word_.load(std::memory_order_acquire));
    }
    uint32_t half_open_calls() const noexcept {
        return half_open_of(word_.load(std::memory_order_acquire));
    }
    uint32_t generation() const noexcept {
        return generation_of(word_.load(std::memory_order_acquire));
    }
    /// Seconds-worth of nanoseconds until an open breaker admits a probe (0 if not open).
    int64_t remaining_open_ns() const noexcept {
        if (state() != BreakerState::kOpen) {
            return 0;
        }
        const int64_t left =
            opened_at_.load(std::memory_order_relaxed) + reset_timeout_ns_ - now_ns(clock_);
        return left > 0 ? left : 0;
    }

    uint32_t failure_threshold() const noexcept { return threshold_; }
    uint32_t half_open_max_calls() const noexcept { return half_open_max_; }
    int64_t reset_timeout_ns() const noexcept { return reset_timeout_ns_; }
    const ManualClock* clock() const noexcept { return clock_; }

    // Counters (relaxed). Outcomes are counted even when stale.
    uint64_t successes() const noexcept { return successes_.load(std::memory_order_relaxed); }
    uint64_t failures_total() const noexcept {
        return failures_total_.load(std::memory_order_relaxed);
    }
    uint64_t rejected() const noexcept { return rejected_.load(std::memory_order_relaxed); }
    uint64_t released() const noexcept { return cold_.released.load(std::memory_order_relaxed); }
    /// Transitions into `to` (held open counts as open).
    uint64_t transitions_to(BreakerState to) const noexcept {
        return cold_.transitions[index_of(to)].load(std::memory_order_relaxed);
    }
    /// Clock time of the last transition, or 0 if there was none.
    int64_t last_transition_ns() const noexcept {
        return cold_.last_transition_ns.load(std::memory_order_relaxed);
    }

private:
    static constexpr uint64_t kStateMask = 0x3;
    static constexpr int kFailuresShift = 2;
    static constexpr uint64_t kFailureOne = uint64_t{1} << kFailuresShift;
    static constexpr uint64_t kFailuresMask = uint64_t{(1u << 22) - 1} << kFailuresShift;
    static constexpr int kHalfOpenShift = 24;
    static constexpr uint64_t kHalfOpenOne = uint64_t{1} << kHalfOpenShift;
    static constexpr int kGenerationShift = 40;

    static uint32_t clamp(uint32_t v, uint32_t max) noexcept {
        return v < 1 ? 1 : (v > max ? max : v);
    }
    static BreakerState state_of(uint64_t w) noexcept {
        return static_cast<BreakerState>(w & kStateMask);
    }
    static uint32_t failures_of(uint64_t w) noexcept {
        return static_cast<uint32_t>((w & kFailuresMask) >> kFailuresShift);
    }
    static uint32_t half_open_of(uint64_t w) noexcept {
        return static_cast<uint32_t>((w >> kHalfOpenShift) & 0xFFFF);
    }
    static uint32_t generation_of(uint64_t w) noexcept {
        return static_cast<uint32_t>(w >> kGenerationShift) & Ticket::kGenerationMask;
    }
    static uint64_t make(BreakerState s, uint32_t failures, uint32_t half_open,
                         uint32_t generation) noexcept {
        return static_cast<uint64_t>(s) | (static_cast<uint64_t>(failures) << kFailuresShift) |
               (static_cast<uint64_t>(half_open) << kHalfOpenShift) |
               (static_cast<uint64_t>(generation & Ticket::kGenerationMask) << kGenerationShift);
    }
    static bool current(uint64_t w, const Ticket& t) noexcept {
        return t.admitted && generation_of(w) == t.generation;
    }
    static size_t index_of(BreakerState s) noexcept {
        return s == BreakerState::kHeldOpen ? 2 : static_cast<size_t>(s);
    }
    static Ticket admitted(uint64_t w, bool half_open) noexcept {
        Ticket t;
        t.admitted = true;
        t.half_open = half_open;
        t.generation = generation_of(w);
        return t;
    }
    Ticket reject() noexcept {
        rejected_.fetch_add(1, std::memory_order_relaxed);
        return Ticket{};
    }
    Transition transitioned(BreakerState from, BreakerState to, int64_t now) noexcept {
        cold_.transitions[index_of(to)].fetch_add(1, std::memory_order_relaxed);
        cold_.last_transition_ns.store(now, std::memory_order_relaxed);
        return Transition{true, from, to};
    }
    Transition move_to(BreakerState to) noexcept {
        const int64_t now = now_ns(clock_);
        if (to != BreakerState::kClosed) {
            opened_at_.store(now, std::memory_order_relaxed);
        }
        uint64_t w = word_.load(std::memory_order_acquire);
        for (;;) {
            const uint64_t next = make(to, 0, 0, generation_of(w) + 1);
            if (word_.compare_exchange_weak(w, next, std::memory_order_acq_rel,
                                            std::memory_order_acquire)) {
                // Open -> held open is no visible change: both read as open.
                if (index_of(state_of(w)) == index_of(to)) {
                    return {};
                }
                return transitioned(state_of(w), to, now);
            }
        }
    }

    // Hot: read or written by calls. Exactly one cache line (asserted below).
    alignas(64) std::atomic<uint64_t> word_;
    std::atomic<int64_t> opened_at_;
    const ManualClock* clock_;
    const int64_t reset_timeout_ns_;
    const uint32_t threshold_;
    const uint32_t half_open_max_;
    std::atomic<uint64_t> successes_{0};
    std::atomic<uint64_t> failures_total_{0};
    std::atomic<uint64_t> rejected_{0};

    // Cold: written only on transitions and cancellations, on its own line.
    struct alignas(64) Cold {
        std::atomic<uint64_t> transitions[3] = {};
        std::atomic<uint64_t> released{0};
        std::atomic<int64_t> last_transition_ns{0};
    } cold_;
};

static_assert(sizeof(std::atomic<uint64_t>) == 8, "lock-free 64-bit atomics required");
// The hot fields (the first line) fill 64 bytes; the cold ones take a second line.
static_assert(sizeof(CircuitBreaker) == 128,
              "CircuitBreaker hot state must fit one cache line");

}  // namespace virtrigaud
