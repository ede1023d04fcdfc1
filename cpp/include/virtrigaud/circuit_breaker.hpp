// A lock-free circuit breaker: the state machine in one 16-byte atomic pair.
//
// First word (the state word):
//   bits  0..1   state: 0 closed, 1 half-open, 2 open, 3 held open (force_open)
//   bits  2..23  consecutive failures while closed (22 bits)
//   bits 24..39  half-open calls admitted and not released (16 bits)
//   bits 40..63  the generation's low 24 bits (its tag)
// Second word: the generation, bumped by every transition. It is 64 bits
// wide and only grows: an outcome reported with the ticket of an old
// generation is recognised as stale for the life of the process, however
// long the ticket was held. Every change is one 16-byte compare-and-swap of
// both words (atomic_pair.hpp), so no update of one generation can land in
// another. The common paths are two plain loads: a state word read after a
// ticket was issued, followed by a generation equal to the ticket's, belongs
// to the ticket's generation (the generation only grows: the ticket's <= the
// word's <= the one read next), and the tag turns a stale ticket away after
// one load; a closed word followed by a generation of its own tag is the
// pair to admit by (2^24 transitions between the two loads could fool the
// tag: a ticket admitted that way holds no half-open slot, and only a
// half-open slot's ticket can close or re-open a half-open breaker).
//
// The stamp of the failure that opened the breaker lives in a third word,
// written before the CAS that opens, so whoever sees "open" sees its stamp.
//
// Semantics (the Virtrigaud guide's Go implementation):
//   closed:    every counted failure increments; failures >= threshold opens;
//              a success resets the count.
//   open:      rejects until reset_timeout has passed since the opening
//              failure; then the admitting call moves it to half-open and is
//              itself the first half-open call.
//   half-open: admits up to half_open_max_calls; any failure re-opens; once
//              that many were admitted and one succeeds, it closes. A probe
//              whose outcome is never reported would hold its slot forever:
//              when every slot is taken and the newest was admitted more than
//              half_open_lease ago, the next call starts a fresh half-open
//              generation (the lost probes' outcomes become stale) and is its
//              first probe.
//   held open: rejects until reset(); never times out.
// Outcomes carry the generation of their admission (as sony/gobreaker): an
// outcome from an older generation is counted but moves nothing.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "atomic_pair.hpp"
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
    uint64_t generation = 0;
    Transition transition;   ///< open -> half-open happens on admission

    /// One int64 for bindings: -1 rejected, else generation << 1 | half_open
    /// (the generation's low 62 bits: 2^62 transitions, over a century at
    /// one per nanosecond).
    int64_t encode() const noexcept {
        return admitted ? static_cast<int64_t>(((generation & kGenerationMask) << 1) |
                                               (half_open ? 1u : 0u))
                        : -1;
    }
    static Ticket decode(int64_t code) noexcept {
        Ticket t;
        if (code >= 0) {
            t.admitted = true;
            t.half_open = (code & 1) != 0;
            t.generation = static_cast<uint64_t>(code) >> 1;
        }
        return t;
    }
    static constexpr uint64_t kGenerationMask = (uint64_t{1} << 62) - 1;
};

class CircuitBreaker {
public:
    static constexpr uint32_t kMaxFailureThreshold = (1u << 22) - 1;  // 4,194,303
    static constexpr uint32_t kMaxHalfOpenCalls = (1u << 16) - 1;     // 65,535
    /// Longest reset timeout or half-open lease: 2^60 ns (about 36 years).
    static constexpr int64_t kMaxTimeoutNs = int64_t{1} << 60;

    /// failure_threshold in [1, kMaxFailureThreshold], half_open_max_calls in
    /// [1, kMaxHalfOpenCalls], reset_timeout_ns in [0, kMaxTimeoutNs],
    /// half_open_lease_ns in [0, kMaxTimeoutNs] where 0 means no lease (the
    /// binding validates; out-of-range values are clamped, never undefined
    /// behaviour).
    CircuitBreaker(uint32_t failure_threshold, int64_t reset_timeout_ns,
                   uint32_t half_open_max_calls, const ManualClock* clock = nullptr,
                   int64_t half_open_lease_ns = 0) noexcept
        : state_(0, 0),
          opened_at_(0),
          clock_(clock),
          reset_timeout_ns_(clamp64(reset_timeout_ns, 0, kMaxTimeoutNs)),
          threshold_(clamp(failure_threshold, kMaxFailureThreshold)),
          half_open_max_(clamp(half_open_max_calls, kMaxHalfOpenCalls)),
          half_open_lease_ns_(clamp64(half_open_lease_ns, 0, kMaxTimeoutNs)) {}

    /// Asks to make a call. Closed: always admitted (two loads, no write).
    Ticket acquire() noexcept {
        const uint64_t word = state_.first();
        if (state_of(word) == BreakerState::kClosed) {
            const uint64_t gen = state_.second();
            if (tag_of(gen) == tag_of_word(word)) {
                return admitted(gen, false);
            }
        }
        AtomicPair::Value s = snapshot();
        for (;;) {
            const uint64_t w = s.first;
            const uint64_t gen = s.second;
            switch (state_of(w)) {
                case BreakerState::kClosed:
                    return admitted(gen, false);
                case BreakerState::kHalfOpen: {
                    if (half_open_of(w) < half_open_max_) {
                        stamp_probe(now_ns(clock_));
                        if (state_.compare_exchange(s, {w + kHalfOpenOne, gen})) {
                            return admitted(gen, true);
                        }
                        break;
                    }
                    const int64_t now = now_ns(clock_);
                    if (!lease_expired(now)) {
                        return reject();
                    }
                    // Every slot is held by probes older than the lease: start
                    // a fresh half-open generation and be its first probe.
                    stamp_probe(now);
                    if (state_.compare_exchange(s, make(BreakerState::kHalfOpen, 0, 1, gen + 1))) {
                        cold_.reclaimed.fetch_add(1, std::memory_order_relaxed);
                        return admitted(gen + 1, true);
                    }
                    break;
                }
                case BreakerState::kOpen: {
                    const int64_t now = now_ns(clock_);
                    if (now - opened_at_.load(std::memory_order_relaxed) < reset_timeout_ns_) {
                        return reject();
                    }
                    stamp_probe(now);
                    if (state_.compare_exchange(s, make(BreakerState::kHalfOpen, 0, 1, gen + 1))) {
                        Ticket t = admitted(gen + 1, true);
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
        AtomicPair::Value s;
        if (!read_for(ticket, s)) {
            return {};  // stale
        }
        for (;;) {
            const uint64_t w = s.first;
            if (!current(s, ticket)) {
                return {};
            }
            AtomicPair::Value next{0, s.second};
            if (state_of(w) == BreakerState::kClosed) {
                if (failures_of(w) == 0) {
                    return {};  // the common case: nothing to write
                }
                next.first = w & ~kFailuresMask;
            } else if (state_of(w) == BreakerState::kHalfOpen && ticket.half_open &&
                       half_open_of(w) >= half_open_max_) {
                // Only a probe closes it (a ticket of this generation admitted
                // without a slot can only come from a torn read: ignore it).
                next = make(BreakerState::kClosed, 0, 0, s.second + 1);
            } else {
                return {};  // half-open, not all probes admitted yet
            }
            if (state_.compare_exchange(s, next)) {
                if (next.second == s.second) {
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
        AtomicPair::Value s;
        if (!read_for(ticket, s)) {
            return {};  // stale
        }
        for (;;) {
            const uint64_t w = s.first;
            if (!current(s, ticket)) {
                return {};
            }
            const BreakerState state = state_of(w);
            if (state == BreakerState::kHalfOpen && !ticket.half_open) {
                return {};  // not a probe (see record_success)
            }
            if (state == BreakerState::kClosed && failures_of(w) + 1 < threshold_) {
                if (state_.compare_exchange(s, {w + kFailureOne, s.second})) {
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
            advance_to(opened_at_, now);
            if (state_.compare_exchange(s, make(BreakerState::kOpen, 0, 0, s.second + 1))) {
                return transitioned(state, BreakerState::kOpen, now);
            }
        }
    }

    /// The admitted call ended without an outcome (cancelled): gives its
    /// half-open slot back and counts nothing else. `counted` false leaves it
    /// out of released() too: the caller is about to be admitted again for
    /// the same call (it waits for a token first), which is no cancellation.
    void release(const Ticket& ticket, bool counted = true) noexcept {
        if (counted) {
            cold_.released.fetch_add(1, std::memory_order_relaxed);
        }
        AtomicPair::Value s;
        if (!ticket.half_open || !read_for(ticket, s)) {
            return;
        }
        while (current(s, ticket) && state_of(s.first) == BreakerState::kHalfOpen &&
               half_open_of(s.first) > 0) {
            if (state_.compare_exchange(s, {s.first - kHalfOpenOne, s.second})) {
                return;
            }
        }
    }

    /// Closes the breaker, forgetting failures. Starts a new generation.
    Transition reset() noexcept { return move_to(BreakerState::kClosed); }

    /// Opens the breaker and holds it open until reset() (a manual override).
    Transition force_open() noexcept { return move_to(BreakerState::kHeldOpen); }

    /// Opens the breaker so that it admits its next probe `open_for_ns` from
    /// now (clamped to [0, kMaxTimeoutNs]), whatever its reset timeout. A
    /// closed or half-open breaker opens (a new generation: outcomes of calls
    /// admitted before are stale), and that counts as a transition to open;
    /// an open one is only re-timed, earlier or later. A breaker held open by
    /// force_open() stays held. This is how processes share one breaker: one
    /// whose peer opened trips its own for the time the peer's has left.
    Transition trip(int64_t open_for_ns) noexcept {
        const int64_t now = now_ns(clock_);
        const int64_t stamp = now + clamp64(open_for_ns, 0, kMaxTimeoutNs) - reset_timeout_ns_;
        AtomicPair::Value s = snapshot();
        for (;;) {
            const BreakerState from = state_of(s.first);
            if (from == BreakerState::kHeldOpen) {
                return {};
            }
            // The stamp goes first, so a reader of "open" sees it. Unlike a
            // failure's, it may move back: the end asked for is the one kept.
            // A failure racing with us may open with this stamp; we then
            // re-time its opening (open -> open), which changes nothing else.
            opened_at_.store(stamp, std::memory_order_relaxed);
            if (state_.compare_exchange(s, make(BreakerState::kOpen, 0, 0, s.second + 1))) {
                if (from == BreakerState::kOpen) {
                    return {};
                }
                return transitioned(from, BreakerState::kOpen, now);
            }
        }
    }

    BreakerState state() const noexcept { return state_of(state_.first()); }
    uint32_t consecutive_failures() const noexcept { return failures_of(state_.first()); }
    uint32_t half_open_calls() const noexcept { return half_open_of(state_.first()); }
    uint64_t generation() const noexcept { return state_.second(); }
    /// Nanoseconds until an open breaker admits a probe (0 if not open).
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
    int64_t half_open_lease_ns() const noexcept { return half_open_lease_ns_; }
    const ManualClock* clock() const noexcept { return clock_; }

    // Counters (relaxed). Outcomes are counted even when stale.
    uint64_t successes() const noexcept { return successes_.load(std::memory_order_relaxed); }
    uint64_t failures_total() const noexcept {
        return failures_total_.load(std::memory_order_relaxed);
    }
    uint64_t rejected() const noexcept { return cold_.rejected.load(std::memory_order_relaxed); }
    uint64_t released() const noexcept { return cold_.released.load(std::memory_order_relaxed); }
    /// Half-open generations started because every probe outlived its lease.
    uint64_t reclaimed() const noexcept { return cold_.reclaimed.load(std::memory_order_relaxed); }
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
    static constexpr int kTagShift = 40;
    static constexpr uint64_t kTagMask = (uint64_t{1} << 24) - 1;

    /// The pair for a new state of generation `gen` (the word carries its tag).
    static AtomicPair::Value make(BreakerState s, uint32_t failures, uint32_t half_open,
                                  uint64_t gen) noexcept {
        return {static_cast<uint64_t>(s) | (static_cast<uint64_t>(failures) << kFailuresShift) |
                    (static_cast<uint64_t>(half_open) << kHalfOpenShift) |
                    (tag_of(gen) << kTagShift),
                gen};
    }
    static uint64_t tag_of(uint64_t gen) noexcept { return gen & kTagMask; }
    static uint64_t tag_of_word(uint64_t w) noexcept { return w >> kTagShift; }
    static bool current(const AtomicPair::Value& s, const Ticket& t) noexcept {
        return t.admitted && (s.second & Ticket::kGenerationMask) == t.generation;
    }
    static size_t index_of(BreakerState s) noexcept {
        return s == BreakerState::kHeldOpen ? 2 : static_cast<size_t>(s);
    }
    static Ticket admitted(uint64_t generation, bool half_open) noexcept {
        Ticket t;
        t.admitted = true;
        t.half_open = half_open;
        t.generation = generation & Ticket::kGenerationMask;
        return t;
    }
    /// Moves `stamp` forward to `now` (never back: a caller that loses its CAS,
    /// or a stale one preempted, must not rewind a newer stamp).
    static void advance_to(std::atomic<int64_t>& stamp, int64_t now) noexcept {
        int64_t t = stamp.load(std::memory_order_relaxed);
        while (t < now && !stamp.compare_exchange_weak(t, now, std::memory_order_relaxed)) {
        }
    }

    /// The pair an outcome of `ticket` acts on, in two loads: false if the
    /// ticket is stale. The word is read after the ticket was issued and
    /// before the generation, so its generation lies between the ticket's and
    /// the one read: equal to both when the one read is the ticket's.
    bool read_for(const Ticket& ticket, AtomicPair::Value& s) const noexcept {
        if (!ticket.admitted) {
            return false;
        }
        const uint64_t w = state_.first();
        if (tag_of_word(w) != tag_of(ticket.generation)) {
            return false;
        }
        const uint64_t gen = state_.second();
        if ((gen & Ticket::kGenerationMask) != ticket.generation) {
            return false;
        }
        s = {w, gen};
        return true;
    }

    /// A consistent (state word, generation): the generation only grows, so a
    /// state word read between two equal reads of it belongs to it.
    AtomicPair::Value snapshot() const noexcept {
        uint64_t gen = state_.second();
        for (;;) {
            const uint64_t w = state_.first();
            const uint64_t again = state_.second();
            if (again == gen) {
                return {w, gen};
            }
            gen = again;
        }
    }
    /// Stamps a half-open admission before the CAS that makes it, so a caller
    /// that sees the slot taken also sees how recent it is.
    void stamp_probe(int64_t now) noexcept {
        if (half_open_lease_ns_ > 0) {
            advance_to(cold_.last_probe_at, now);
        }
    }
    bool lease_expired(int64_t now) const noexcept {
        return half_open_lease_ns_ > 0 &&
               now - cold_.last_probe_at.load(std::memory_order_relaxed) >= half_open_lease_ns_;
    }
    Ticket reject() noexcept {
        cold_.rejected.fetch_add(1, std::memory_order_relaxed);
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
            advance_to(opened_at_, now);
        }
        AtomicPair::Value s = snapshot();
        for (;;) {
            if (state_.compare_exchange(s, make(to, 0, 0, s.second + 1))) {
                // Open -> held open is no visible change: both read as open.
                if (index_of(state_of(s.first)) == index_of(to)) {
                    return {};
                }
                return transitioned(state_of(s.first), to, now);
            }
        }
    }

    // Hot: read or written by calls. Exactly one cache line (asserted below).
    alignas(64) AtomicPair state_;  // (state word, generation)
    std::atomic<int64_t> opened_at_;
    const ManualClock* clock_;
    const int64_t reset_timeout_ns_;
    const uint32_t threshold_;
    const uint32_t half_open_max_;
    std::atomic<uint64_t> successes_{0};
    std::atomic<uint64_t> failures_total_{0};

    // Cold: written on rejections, transitions, probes and cancellations.
    const int64_t half_open_lease_ns_;
    struct alignas(64) Cold {
        std::atomic<uint64_t> rejected{0};
        std::atomic<uint64_t> transitions[3] = {};
        std::atomic<uint64_t> released{0};
        std::atomic<uint64_t> reclaimed{0};
        std::atomic<int64_t> last_transition_ns{0};
        std::atomic<int64_t> last_probe_at{0};
    } cold_;
};

static_assert(sizeof(std::atomic<uint64_t>) == 8, "lock-free 64-bit atomics required");
// The hot fields fill the first 64-byte line; the lease and the cold counters
// take the next two.
static_assert(sizeof(CircuitBreaker) == 192, "CircuitBreaker hot state must fit one cache line");

}  // namespace virtrigaud
