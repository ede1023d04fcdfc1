// A lock-free circuit breaker: the state machine in one 16-byte atomic pair.
//
// First word (the state word):
//   bits  0..1   state: 0 closed, 1 half-open, 2 open, 3 held open (force_open)
//   bits  2..23  the failure streak (22 bits): consecutive counted failures
//                while closed, the streak it opened with while open; while
//                half-open, bit 23 set means "a probe of this round
//                succeeded" and bits 2..22 count those probes, else bits
//                2..22 carry the streak (saturated at 2^21-1)
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
// A success threshold S > 0 (set_success_threshold; 0, the default, is the
// rule above) closes a half-open breaker on the S-th successful probe of
// the round instead; each earlier successful probe gives its slot back, so
// up to half_open_max_calls probes run at once and the round goes on until
// S succeed or one fails (pybreaker's success_threshold with one slot,
// circuitbreaker's "first success closes" with S = 1 and many slots).
// The failure streak survives opening (the drop-ins report it as their
// failure counter): a failed probe re-opens with the streak + 1, a
// successful one ends it, closing resets it.
// Outcomes carry the generation of their admission (as sony/gobreaker): an
// outcome from an older generation is counted but moves nothing.
//
// Window mode (a WindowSettings at construction; sliding_window.hpp): instead
// of the streak, resilience4j's rules. Closed: each outcome goes into a count
// or time window; once it holds minimum_calls outcomes, a failure rate or a
// slow-call rate at or above its threshold opens. Half-open: the
// half_open_max_calls probes are judged together when all have reported
// (the same thresholds over the probes); at or above either it opens, else
// it closes with an empty window. A half-open breaker undecided for
// max_wait_half_open opens (when the next call asks). Each opening lasts the
// reset timeout, or with an open backoff the backoff's delay for the number of
// openings since the breaker last closed. Everything window mode needs lives
// behind one pointer, null in consecutive mode.
//
// Operator modes (both kinds): disable() admits everything and judges
// nothing; metrics_only() admits everything, records (the window's rates, the
// streak) and never opens; reset() returns to normal. Both are a closed
// state word with the mode beside it; force_open() is held open.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>

#include "atomic_pair.hpp"
#include "clock.hpp"
#include "sliding_window.hpp"

#if defined(_MSC_VER) && !defined(__clang__)
#define VIRTRIGAUD_NOINLINE __declspec(noinline)
#else
#define VIRTRIGAUD_NOINLINE __attribute__((noinline))
#endif

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
    /// Clock time of admission in window mode with slow calls on (else -1):
    /// the native call paths time the call with it. Not in encode().
    int64_t start_ns = -1;

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
    /// Largest success threshold (and the largest streak a half-open word carries).
    static constexpr uint32_t kMaxSuccessThreshold = (1u << 21) - 1;  // 2,097,151
    /// Longest reset timeout or half-open lease: 2^60 ns (about 36 years).
    static constexpr int64_t kMaxTimeoutNs = int64_t{1} << 60;

    /// failure_threshold in [1, kMaxFailureThreshold], half_open_max_calls in
    /// [1, kMaxHalfOpenCalls], reset_timeout_ns in [0, kMaxTimeoutNs],
    /// half_open_lease_ns in [0, kMaxTimeoutNs] where 0 means no lease (the
    /// binding validates; out-of-range values are clamped, never undefined
    /// behaviour).
    CircuitBreaker(const CircuitBreaker&) = delete;
    CircuitBreaker& operator=(const CircuitBreaker&) = delete;
    ~CircuitBreaker() {
        delete stripes_.load(std::memory_order_acquire);
        BreakerWindow::destroy(window_);
    }

    /// Operator modes (see the file comment).
    enum Mode : uint32_t { kNormal = 0, kDisabled = 1, kMetricsOnly = 2 };

    CircuitBreaker(uint32_t failure_threshold, int64_t reset_timeout_ns,
                   uint32_t half_open_max_calls, const ManualClock* clock = nullptr,
                   int64_t half_open_lease_ns = 0,
                   const WindowSettings* window = nullptr) noexcept
        : state_(0, 0),
          opened_at_(0),
          clock_(clock),
          reset_timeout_ns_(clamp64(reset_timeout_ns, 0, kMaxTimeoutNs)),
          threshold_(clamp(failure_threshold, kMaxFailureThreshold)),
          half_open_max_(clamp(half_open_max_calls, kMaxHalfOpenCalls)),
          half_open_lease_ns_(clamp64(half_open_lease_ns, 0, kMaxTimeoutNs)) {
        if (window != nullptr) {
            SharedWindowSettings* own = SharedWindowSettings::create(*window);
            attach_window(own);
            if (own != nullptr) {
                own->release();  // the window holds its own reference
            }
        }
    }

    /// Puts a breaker just made in consecutive mode into window mode with
    /// `settings` shared by other breakers (retained while this breaker
    /// lives: one allocation, the window). Only before the breaker's first
    /// use; window_failed() if out of memory.
    void use_window(const SharedWindowSettings& settings) noexcept { attach_window(&settings); }

    /// Asks to make a call. Closed: always admitted (two loads, no write).
    /// That case is inlined into every caller, in consecutive mode behind
    /// one predictable branch, in window mode without slow calls behind the
    /// settings' read; the rest (timed calls, half-open, open) is out of line.
    Ticket acquire() noexcept {
        if (window_ == nullptr || !window_->timed()) {
            const uint64_t word = state_.first();
            if (state_of(word) == BreakerState::kClosed) {
                const uint64_t gen = state_.second();
                if (tag_of(gen) == tag_of_word(word)) {
                    return admitted(gen, false);
                }
            }
        }
        return acquire_past_closed();
    }

private:
    VIRTRIGAUD_NOINLINE Ticket acquire_past_closed() noexcept {
        Ticket t = admit();
        if (window_ != nullptr && t.admitted && window_->timed()) {
            t.start_ns = now_ns(clock_);
        }
        return t;
    }

    Ticket admit() noexcept {
        const uint64_t word = state_.first();
        if (state_of(word) == BreakerState::kClosed) {
            const uint64_t gen = state_.second();
            if (tag_of(gen) == tag_of_word(word)) {
                return admitted(gen, false);
            }
        }
        return admit_past_closed();
    }
    // Out of line, so that admit()'s closed case inlines into
    // acquire_past_closed(): a window-mode breaker's every admission.
    VIRTRIGAUD_NOINLINE Ticket admit_past_closed() noexcept {
        AtomicPair::Value s = snapshot();
        for (;;) {
            const uint64_t w = s.first;
            const uint64_t gen = s.second;
            switch (state_of(w)) {
                case BreakerState::kClosed:
                    return admitted(gen, false);
                case BreakerState::kHalfOpen: {
                    if (window_ != nullptr && half_open_overdue()) {
                        Ticket t = reject();
                        t.transition = open_from(s, gen, BreakerState::kHalfOpen,
                                                 now_ns(clock_));
                        return t;
                    }
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
                    if (state_.compare_exchange(
                            s, make(BreakerState::kHalfOpen, carried(streak_of(w)), 1, gen + 1))) {
                        cold_.reclaimed.fetch_add(1, std::memory_order_relaxed);
                        return admitted(gen + 1, true);
                    }
                    break;
                }
                case BreakerState::kOpen: {
                    const int64_t now = now_ns(clock_);
                    if (now - opened_at_.load(std::memory_order_relaxed) < open_timeout_ns()) {
                        return reject();
                    }
                    stamp_probe(now);
                    stamp_half_open(now);
                    if (state_.compare_exchange(
                            s, make(BreakerState::kHalfOpen, carried(failures_of(w)), 1, gen + 1))) {
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

public:
    /// The admitted call succeeded (or failed in a way that does not count).
    /// `synced_successes` >= 0 replaces a half-open probe's count of
    /// successful probes (this one included) with a value kept elsewhere (a
    /// storage shared by processes); < 0 counts here.
    Transition record_success(const Ticket& ticket, int64_t synced_successes = -1) noexcept {
        count_success();
        if (window_ != nullptr) {
            return unpacked(record_windowed(ticket, 0));
        }
        AtomicPair::Value s;
        if (!read_for(ticket, s) || !current(s, ticket)) {
            return {};  // stale
        }
        if (state_of(s.first) == BreakerState::kClosed && failures_of(s.first) == 0) {
            return {};  // the common case: nothing to write
        }
        return record_success_changing(ticket, s, synced_successes);
    }

private:
    // record_success() past its common case (a streak to reset, a probe to
    // count): out of line, so that the common case inlines into every
    // caller's success path, the policy's as well as the breaker's.
    VIRTRIGAUD_NOINLINE Transition record_success_changing(const Ticket& ticket,
                                                           AtomicPair::Value s,
                                                           int64_t synced_successes) noexcept {
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
            } else if (state_of(w) == BreakerState::kHalfOpen && ticket.half_open) {
                // Only a probe closes it (a ticket of this generation admitted
                // without a slot can only come from a torn read: ignore it).
                const uint32_t needed = success_threshold_.load(std::memory_order_relaxed);
                if (needed == 0) {
                    if (half_open_of(w) < half_open_max_) {
                        return {};  // not all probes admitted yet
                    }
                    next = make(BreakerState::kClosed, 0, 0, s.second + 1);
                } else {
                    const uint64_t won =
                        synced_successes >= 0 ? static_cast<uint64_t>(synced_successes)
                                              : uint64_t{probe_successes_of(w)} + 1;
                    if (won >= needed) {
                        next = make(BreakerState::kClosed, 0, 0, s.second + 1);
                    } else if (half_open_of(w) == 0) {
                        return {};  // the slot is not held: a probe reported twice
                    } else {
                        // Count it and give the slot back for the next probe.
                        next.first = ((w & ~kFailuresMask) - kHalfOpenOne) |
                                     field(kProbeSucceeded | static_cast<uint32_t>(won));
                    }
                }
            } else {
                return {};
            }
            if (state_.compare_exchange(s, next)) {
                if (next.second == s.second) {
                    return {};
                }
                return transitioned(BreakerState::kHalfOpen, BreakerState::kClosed, now_ns(clock_));
            }
        }
    }

public:
    /// The admitted call failed in a way that counts. `synced_streak` >= 0
    /// replaces the failure streak this failure makes (this one included)
    /// with a value kept elsewhere (a storage shared by processes); < 0
    /// counts here.
    Transition record_failure(const Ticket& ticket, int64_t synced_streak = -1) noexcept {
        failures_total_.fetch_add(1, std::memory_order_relaxed);
        if (window_ != nullptr) {
            return unpacked(record_windowed(ticket, kOutcomeFailed));
        }
        const int64_t now = now_ns(clock_);
        AtomicPair::Value s;
        if (!read_for(ticket, s)) {
            return {};  // stale
        }
        const uint32_t mode = mode_.load(std::memory_order_relaxed);
        if (mode == kDisabled) {
            ignored_.fetch_add(1, std::memory_order_relaxed);
            return {};
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
            if (state != BreakerState::kClosed && state != BreakerState::kHalfOpen) {
                return {};
            }
            const uint32_t streak =
                synced_streak >= 0
                    ? static_cast<uint32_t>(std::min<int64_t>(synced_streak, kMaxStreak))
                    : std::min<uint32_t>(streak_of(w) + 1, kMaxStreak);
            if (state == BreakerState::kClosed &&
                (streak < threshold_.load(std::memory_order_relaxed) || mode == kMetricsOnly)) {
                if (state_.compare_exchange(s, {(w & ~kFailuresMask) | field(streak), s.second})) {
                    return {};
                }
                continue;
            }
            // Trip: the stamp goes first, so a reader of "open" sees it. It only
            // moves forward: a caller that loses the CAS below (or a stale one
            // preempted here) must not rewind the stamp of a newer opening.
            advance_to(opened_at_, now);
            if (state_.compare_exchange(s, make(BreakerState::kOpen, streak, 0, s.second + 1))) {
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

    /// Closes the breaker, forgetting failures (and emptying the window),
    /// back in the normal mode. Starts a new generation.
    Transition reset() noexcept { return move_to(BreakerState::kClosed, 0, kNormal); }

    /// Opens the breaker and holds it open until reset() (a manual override).
    Transition force_open() noexcept {
        return move_to(BreakerState::kHeldOpen, 0, kNormal);
    }

    /// Closes the breaker in the disabled mode: every call admitted, no
    /// outcome judged (ignored()), until reset() or another mode.
    Transition disable() noexcept { return move_to(BreakerState::kClosed, 0, kDisabled); }

    /// Closes the breaker in the metrics-only mode: every call admitted,
    /// outcomes recorded (streak, window, rates), never opens.
    Transition metrics_only() noexcept {
        return move_to(BreakerState::kClosed, 0, kMetricsOnly);
    }

    Mode mode() const noexcept { return static_cast<Mode>(mode_.load(std::memory_order_relaxed)); }

    /// Opens the breaker as a failure would (it half-opens after the reset
    /// timeout, counted from now), keeping the failure streak, plus one when
    /// `add_failure` (a failure reported without a ticket: circuitbreaker's
    /// `with breaker:` body that ran while open). pybreaker's open().
    Transition trip(bool add_failure = false) noexcept {
        return move_to(BreakerState::kOpen, add_failure ? 1 : 0);
    }

    /// Moves to half-open with every slot free, keeping the failure streak
    /// (pybreaker's half_open()).
    Transition to_half_open() noexcept { return move_to(BreakerState::kHalfOpen); }

    /// Sets the whole state at once (a storage's view adopted, or synced from
    /// another process): `state`, the failure `streak`, the half-open round's
    /// successful probes `successes` (a positive count means the streak is
    /// 0), and the stamp of the last opening (nanoseconds on this breaker's
    /// clock, clamped to [-2^61, 2^62]; it may move back here, unlike
    /// anywhere else). A new
    /// generation: outcomes of calls admitted before are stale.
    Transition restore(BreakerState state, int64_t streak, int64_t successes,
                       int64_t opened_at_ns) noexcept {
        uint32_t f = static_cast<uint32_t>(clamp64(streak, 0, kMaxStreak));
        if (state == BreakerState::kHalfOpen) {
            f = successes > 0 ? kProbeSucceeded | static_cast<uint32_t>(clamp64(
                                                      successes, 1, kMaxSuccessThreshold))
                              : carried(f);
        }
        // Clamped so that now - stamp fits int64 (now is in [0, kMaxClockNs]).
        opened_at_.store(clamp64(opened_at_ns, -(kMaxClockNs / 2), kMaxClockNs),
                         std::memory_order_relaxed);
        const int64_t now = now_ns(clock_);
        AtomicPair::Value s = snapshot();
        for (;;) {
            prepare_move(state, s.second + 1, now);
            if (state_.compare_exchange(s, make(state, f, 0, s.second + 1))) {
                return changed(state_of(s.first), state, now);
            }
        }
    }

    /// Opens the breaker so that it admits its next probe `open_for_ns` from
    /// now (clamped to [0, kMaxTimeoutNs]), whatever its reset timeout; the
    /// failure streak is kept. A closed or half-open breaker opens (a new
    /// generation: outcomes of calls admitted before are stale), and that
    /// counts as a transition to open; an open one is only re-timed, earlier
    /// or later. A breaker held open by force_open() stays held. This is how
    /// processes share one breaker: one whose peer opened trips its own for
    /// the time the peer's has left.
    Transition trip_for(int64_t open_for_ns) noexcept {
        const int64_t now = now_ns(clock_);
        const int64_t stamp = now + clamp64(open_for_ns, 0, kMaxTimeoutNs) - open_timeout_ns();
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
            const uint32_t streak = std::min<uint32_t>(streak_of(s.first), kMaxStreak);
            if (state_.compare_exchange(s, make(BreakerState::kOpen, streak, 0, s.second + 1))) {
                return changed(from, BreakerState::kOpen, now);
            }
        }
    }

    BreakerState state() const noexcept { return state_of(state_.first()); }
    /// Consecutive counted failures while closed (0 when not closed).
    uint32_t consecutive_failures() const noexcept {
        const uint64_t w = state_.first();
        return state_of(w) == BreakerState::kClosed ? failures_of(w) : 0;
    }
    /// Counted failures since the last success or close, across opening:
    /// the drop-ins' failure counter (pybreaker's fail_counter,
    /// circuitbreaker's failure_count).
    uint32_t failure_streak() const noexcept { return streak_of(state_.first()); }
    /// Successful probes of the current half-open round (0 when not half-open).
    uint32_t half_open_successes() const noexcept { return probe_successes_of(state_.first()); }
    /// Clock time of the last opening (a trip, trip(), force_open() or
    /// restore()), 0 if there was none.
    int64_t opened_at_ns() const noexcept { return opened_at_.load(std::memory_order_relaxed); }
    int64_t now() const noexcept { return now_ns(clock_); }
    uint32_t half_open_calls() const noexcept { return half_open_of(state_.first()); }
    uint64_t generation() const noexcept { return state_.second(); }
    /// Nanoseconds until an open breaker admits a probe (0 if not open).
    int64_t remaining_open_ns() const noexcept {
        if (state() != BreakerState::kOpen) {
            return 0;
        }
        const int64_t left =
            opened_at_.load(std::memory_order_relaxed) + open_timeout_ns() - now_ns(clock_);
        return left > 0 ? left : 0;
    }

    uint32_t failure_threshold() const noexcept {
        return threshold_.load(std::memory_order_relaxed);
    }
    uint32_t half_open_max_calls() const noexcept { return half_open_max_; }
    int64_t reset_timeout_ns() const noexcept {
        return reset_timeout_ns_.load(std::memory_order_relaxed);
    }
    /// 0: the guide's rule; S: the S-th successful probe of a round closes.
    uint32_t success_threshold() const noexcept {
        return success_threshold_.load(std::memory_order_relaxed);
    }

    // Run-time changes (clamped as in the constructor). Each takes effect for
    // the decisions made after it; a decision racing with it uses either value.
    void set_failure_threshold(uint32_t v) noexcept {
        threshold_.store(clamp(v, kMaxFailureThreshold), std::memory_order_relaxed);
    }
    void set_reset_timeout_ns(int64_t v) noexcept {
        reset_timeout_ns_.store(clamp64(v, 0, kMaxTimeoutNs), std::memory_order_relaxed);
    }
    void set_success_threshold(uint32_t v) noexcept {
        success_threshold_.store(std::min(v, kMaxSuccessThreshold), std::memory_order_relaxed);
    }
    int64_t half_open_lease_ns() const noexcept { return half_open_lease_ns_; }
    const ManualClock* clock() const noexcept { return clock_; }

    // Counters (relaxed). Outcomes are counted even when stale.
    /// Summed over the stripes (exact once the writers are done).
    uint64_t successes() const noexcept {
        uint64_t total = successes_.load(std::memory_order_relaxed);
        if (const SuccessStripes* stripes = stripes_.load(std::memory_order_acquire)) {
            for (const auto& stripe : stripes->stripe) {
                total += stripe.count.load(std::memory_order_relaxed);
            }
        }
        return total;
    }
    /// Whether successes are counted in per-thread stripes (after contention).
    bool successes_striped() const noexcept {
        return stripes_.load(std::memory_order_acquire) != nullptr;
    }
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

    // Window mode.
    bool windowed() const noexcept { return window_ != nullptr; }
    /// Whether calls are timed (window mode with slow calls on).
    bool timed() const noexcept { return window_ != nullptr && window_->timed(); }
    /// True if window mode was asked for and its memory could not be had
    /// (the breaker then counts consecutive failures; the binding raises).
    bool window_failed() const noexcept { return window_failed_; }
    const WindowSettings* window_settings() const noexcept {
        return window_ != nullptr ? &window_->settings() : nullptr;
    }
    /// The window's contents now (all zero in consecutive mode).
    WindowTotals window_totals() const noexcept {
        return window_ != nullptr ? window_->window.totals(window_now()) : WindowTotals{};
    }
    /// The window itself (null in consecutive mode): for tests and audits.
    const SlidingWindow* window() const noexcept {
        return window_ != nullptr ? &window_->window : nullptr;
    }
    /// Bytes of window mode's one allocation (0 in consecutive mode).
    size_t window_allocation_bytes() const noexcept {
        return window_ != nullptr ? window_->allocated_bytes() : 0;
    }
    /// failures / outcomes in the window, or -1 below minimum_calls (and in
    /// consecutive mode); slow_call_rate() likewise for slow outcomes.
    double failure_rate() const noexcept { return rate_of(&WindowTotals::failures); }
    double slow_call_rate() const noexcept { return rate_of(&WindowTotals::slow); }
    /// Outcomes judged slow (window mode; stale ones left out).
    uint64_t slow_calls() const noexcept {
        return slow_calls_.load(std::memory_order_relaxed);
    }
    /// Outcomes that moved nothing and were counted nowhere: reported while
    /// disabled, and in window mode stale ones.
    uint64_t ignored() const noexcept { return ignored_.load(std::memory_order_relaxed); }
    /// Openings since the breaker last closed (window mode; 0 otherwise).
    uint32_t openings() const noexcept {
        return openings_.load(std::memory_order_relaxed);
    }

private:
    double rate_of(uint32_t WindowTotals::*field) const noexcept {
        if (window_ == nullptr) {
            return -1.0;
        }
        const WindowTotals t = window_->window.totals(window_now());
        if (t.calls == 0 || t.calls < window_->settings().minimum_calls) {
            return -1.0;
        }
        return static_cast<double>(t.*field) / static_cast<double>(t.calls);
    }

    // ---- window mode (see the file comment) ----

    // One outcome of `ticket` in window mode, its transition packed (see
    // packed()). Out of line: the consecutive paths inline into every caller
    // and only test the pointer.
    VIRTRIGAUD_NOINLINE uint32_t record_windowed(const Ticket& ticket, uint8_t bits) noexcept {
        BreakerWindow& bw = *window_;
        const uint32_t mode = mode_.load(std::memory_order_relaxed);
        if (mode == kDisabled) {
            ignored_.fetch_add(1, std::memory_order_relaxed);
            return 0;
        }
        // The settings' address is read once, before the window's head is
        // written: it shares the head's line, which another thread's record
        // may take away meanwhile (the settings themselves are read-only).
        const WindowSettings& settings = bw.settings();
        // The clock only when something needs it (a count window without
        // slow calls records without reading it), and first, while little
        // is live across its call. `now` is the breaker's clock (-1:
        // unread), `at` the window's (window_now()).
        int64_t now = -1;
        int64_t at = -1;
        if (settings.slow_call_ns >= 0) {
            now = at = now_ns(clock_);
            if (ticket.start_ns >= 0 && now - ticket.start_ns >= settings.slow_call_ns) {
                bits |= kOutcomeSlow;
            }
        } else if (bw.window.kind() == WindowKind::kTime) {
            at = clock_ != nullptr ? clock_->now() : coarse_now_ns();  // window_now(), untimed
        }
        AtomicPair::Value s;
        if (!read_for(ticket, s)) {
            ignored_.fetch_add(1, std::memory_order_relaxed);
            return 0;
        }
        switch (state_of(s.first)) {
            case BreakerState::kClosed: {
                WindowTotals judged;  // the window right after this outcome
                if (!bw.window.record(static_cast<uint32_t>(tag_of(s.second)), bits, at,
                                      judged)) {
                    break;  // stale: the window moved on
                }
                count_slow(bits);
                if (mode == kMetricsOnly) {
                    return 0;
                }
                if (!settings.exceeded(judged, settings.minimum_calls)) {
                    return 0;
                }
                return packed(open_by_window(s, now));
            }
            case BreakerState::kHalfOpen:
                if (ticket.half_open) {
                    count_slow(bits);
                    return packed(judge_probe(s, bits, now));
                }
                break;
            default:
                break;
        }
        ignored_.fetch_add(1, std::memory_order_relaxed);
        return 0;
    }
    /// A Transition in one word, changed | from << 8 | to << 16: how
    /// record_windowed() returns it. GCC returns the 3-byte struct by storing
    /// its bytes apart and loading them as one, a load spanning two stores
    /// that the CPU cannot forward: a stall on every window outcome.
    static uint32_t packed(Transition t) noexcept {
        return (t.changed ? 1u : 0u) | static_cast<uint32_t>(t.from) << 8 |
               static_cast<uint32_t>(t.to) << 16;
    }
    static Transition unpacked(uint32_t p) noexcept {
        Transition t;
        t.changed = (p & 1u) != 0;
        t.from = static_cast<BreakerState>((p >> 8) & 0xFFu);
        t.to = static_cast<BreakerState>((p >> 16) & 0xFFu);
        return t;
    }
    // The ways a window outcome moves the breaker are out of line, keeping
    // record_windowed() small for its common case.
    VIRTRIGAUD_NOINLINE Transition open_by_window(AtomicPair::Value s, int64_t now) noexcept {
        return open_from(s, s.second, BreakerState::kClosed, read_if_unread(now));
    }
    void count_slow(uint8_t bits) noexcept {
        if ((bits & kOutcomeSlow) != 0) {
            slow_calls_.fetch_add(1, std::memory_order_relaxed);
        }
    }
    int64_t read_if_unread(int64_t now) const noexcept { return now >= 0 ? now : now_ns(clock_); }

    /// The time the window's buckets go by: the breaker's clock, but for a
    /// time window on the default clock that does not time calls: the coarse
    /// steady clock (clock.hpp's coarse_now_ns(): the steady clock as of the
    /// kernel's last tick, about 6 ns a read against 12 ns for the
    /// time-stamp counter and 20-60 for a steady read in this project's VM). Every
    /// record and read of such a window uses it, so its seconds are one
    /// clock's; being up to a tick (1-10 ms) behind the steady clock moves a
    /// one-second bucket's edge by that much. Openings, the reset timeout
    /// and slow calls keep the breaker's clock (the opening's stamp is read
    /// from it when the window opens the breaker).
    int64_t window_now() const noexcept {
        return on_coarse_clock() ? coarse_now_ns() : now_ns(clock_);
    }
    /// Whether the window goes by the coarse clock (see window_now()); a
    /// count window needs no time at all.
    bool on_coarse_clock() const noexcept {
        return clock_ == nullptr && !window_->timed() &&
               window_->window.kind() == WindowKind::kTime;
    }

    /// A probe's outcome: counted in its generation's round; the probe that
    /// completes the round judges it.
    VIRTRIGAUD_NOINLINE Transition judge_probe(AtomicPair::Value s, uint8_t bits,
                                               int64_t now) noexcept {
        BreakerWindow& bw = *window_;
        BreakerWindow::Round& round = bw.round();
        const uint64_t epoch = s.second & kRoundEpochMask;
        uint64_t r = round.load(std::memory_order_acquire);
        uint64_t next;
        for (;;) {
            uint64_t current_round = r;
            const uint64_t theirs = r >> kRoundEpochShift;
            if (theirs != epoch) {
                if (((epoch - theirs) & kRoundEpochMask) >= (kRoundEpochMask + 1) / 2) {
                    return {};  // a later round's: this probe is stale
                }
                current_round = epoch << kRoundEpochShift;  // an earlier round's: start afresh
            }
            if (round_field(current_round, 32) >= half_open_max_) {
                return {};  // the round is complete (judged by its last probe)
            }
            next = current_round + (uint64_t{1} << 32) +
                   ((bits & kOutcomeFailed) != 0 ? uint64_t{1} << 16 : 0) +
                   ((bits & kOutcomeSlow) != 0 ? 1 : 0);
            if (round.compare_exchange_weak(r, next, std::memory_order_acq_rel,
                                            std::memory_order_acquire)) {
                break;
            }
        }
        WindowTotals t;
        t.calls = round_field(next, 32);
        t.failures = round_field(next, 16);
        t.slow = round_field(next, 0);
        if (t.calls < half_open_max_) {
            return {};
        }
        now = read_if_unread(now);
        if (bw.settings().exceeded(t, half_open_max_)) {
            return open_from(s, s.second, BreakerState::kHalfOpen, now);
        }
        return close_half_open(s, now);
    }
    static constexpr int kRoundEpochShift = 48;
    static constexpr uint64_t kRoundEpochMask = 0xFFFF;
    static uint32_t round_field(uint64_t r, int shift) noexcept {
        return static_cast<uint32_t>((r >> shift) & 0xFFFF);
    }

    /// Opens a breaker in state `from` of generation `gen` (seen in `s`);
    /// nothing if it has moved on.
    Transition open_from(AtomicPair::Value s, uint64_t gen, BreakerState from,
                         int64_t now) noexcept {
        for (;;) {
            if (s.second != gen || state_of(s.first) != from) {
                return {};
            }
            prepare_open();
            advance_to(opened_at_, now);  // the stamp first, as for a trip
            if (state_.compare_exchange(s, make(BreakerState::kOpen, streak_of(s.first), 0,
                                                gen + 1))) {
                openings_.fetch_add(1, std::memory_order_relaxed);
                return transitioned(from, BreakerState::kOpen, now);
            }
        }
    }
    Transition close_half_open(AtomicPair::Value s, int64_t now) noexcept {
        const uint64_t gen = s.second;
        for (;;) {
            if (s.second != gen || state_of(s.first) != BreakerState::kHalfOpen) {
                return {};
            }
            prepare_move(BreakerState::kClosed, gen + 1, now);
            if (state_.compare_exchange(s, make(BreakerState::kClosed, 0, 0, gen + 1))) {
                return transitioned(BreakerState::kHalfOpen, BreakerState::kClosed, now);
            }
        }
    }
    /// Window-mode bookkeeping before a move into `to` as generation
    /// `next_gen`: closing empties the window (before any outcome of the new
    /// generation can arrive) and restarts the backoff; half-opening stamps
    /// the start of the max-wait; opening times the opening.
    void prepare_move(BreakerState to, uint64_t next_gen, int64_t now) noexcept {
        if (window_ == nullptr) {
            return;
        }
        switch (to) {
            case BreakerState::kClosed:
                window_->window.reset(static_cast<uint32_t>(tag_of(next_gen)));
                openings_.store(0, std::memory_order_relaxed);
                break;
            case BreakerState::kHalfOpen:
                stamp_half_open(now);
                break;
            default:
                prepare_open();
                break;
        }
    }
    /// With an open backoff: how long the opening about to happen lasts.
    void prepare_open() noexcept {
        const WindowSettings& w = window_->settings();
        if (!w.open_backoff) {
            return;
        }
        const double previous =
            static_cast<double>(window_->open_for_ns.load(std::memory_order_relaxed)) / 1e9;
        const double seconds =
            backoff_delay(w.backoff_strategy, w.backoff_base, w.backoff_cap, w.backoff_multiplier,
                          w.backoff_jitter, openings_.load(std::memory_order_relaxed),
                          previous, thread_uniform());
        const double ns = seconds * 1e9;
        window_->open_for_ns.store(
            ns >= static_cast<double>(kMaxTimeoutNs) ? kMaxTimeoutNs
                                                      : (ns > 0 ? static_cast<int64_t>(ns) : 0),
            std::memory_order_relaxed);
    }
    /// Window mode with `settings` (null: out of memory, so window_failed()).
    void attach_window(const SharedWindowSettings* settings) noexcept {
        BreakerWindow::destroy(window_);
        window_ = settings != nullptr ? BreakerWindow::create(*settings) : nullptr;
        window_failed_ = window_ == nullptr;
    }
    void stamp_half_open(int64_t now) noexcept {
        if (window_ != nullptr) {
            half_open_since_.store(now, std::memory_order_relaxed);
        }
    }
    bool half_open_overdue() const noexcept {
        const int64_t wait = window_->settings().max_wait_half_open_ns;
        return wait > 0 &&
               now_ns(clock_) - half_open_since_.load(std::memory_order_relaxed) >= wait;
    }
    /// How long an opening lasts: the reset timeout, or the open backoff's delay.
    int64_t open_timeout_ns() const noexcept {
        if (window_ != nullptr && window_->settings().open_backoff) {
            return window_->open_for_ns.load(std::memory_order_relaxed);
        }
        return reset_timeout_ns_.load(std::memory_order_relaxed);
    }

    // Four stripes (256 bytes) allocated only for a breaker on which two
    // threads succeeded at once: the other breakers carry one pointer.
    // Four covers the cores that plausibly share one breaker's success path;
    // more threads share stripes (still none shares the admission line).
    static constexpr size_t kSuccessStripes = 4;
    struct alignas(64) SuccessStripe {
        std::atomic<uint64_t> count{0};
    };
    struct SuccessStripes {
        SuccessStripe stripe[kSuccessStripes];
    };

    static constexpr uint64_t kStateMask = 0x3;
    static constexpr int kFailuresShift = 2;
    static constexpr uint64_t kFailureOne = uint64_t{1} << kFailuresShift;
    static constexpr uint64_t kFailuresMask = uint64_t{(1u << 22) - 1} << kFailuresShift;
    /// Half-open: the field counts successful probes, not the carried streak.
    static constexpr uint32_t kProbeSucceeded = uint32_t{1} << 21;
    static constexpr uint32_t kMaxStreak = (1u << 22) - 1;
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
    static uint64_t field(uint32_t v) noexcept {
        return static_cast<uint64_t>(v) << kFailuresShift & kFailuresMask;
    }
    /// The streak a half-open word can carry (21 bits).
    static uint32_t carried(uint32_t streak) noexcept {
        return std::min(streak, kMaxSuccessThreshold);
    }
    static uint32_t streak_of(uint64_t w) noexcept {
        const uint32_t f = failures_of(w);
        if (state_of(w) != BreakerState::kHalfOpen) {
            return f;
        }
        return (f & kProbeSucceeded) != 0 ? 0 : f;
    }
    static uint32_t probe_successes_of(uint64_t w) noexcept {
        const uint32_t f = failures_of(w);
        if (state_of(w) != BreakerState::kHalfOpen || (f & kProbeSucceeded) == 0) {
            return 0;
        }
        return f & ~kProbeSucceeded;
    }
    static uint32_t half_open_of(uint64_t w) noexcept {
        return static_cast<uint32_t>((w >> kHalfOpenShift) & 0xFFFF);
    }
    static constexpr int kTagShift = 40;
    static constexpr uint64_t kTagMask = (uint64_t{1} << 24) - 1;

    /// The pair for a new state of generation `gen` (the word carries its tag).
    static AtomicPair::Value make(BreakerState s, uint32_t failures, uint32_t half_open,
                                  uint64_t gen) noexcept {
        return {static_cast<uint64_t>(s) | field(failures) |
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
    /// Counts a success without writing the admission line. Uncontended, one
    /// compare-and-swap of successes_ (on the second line). The first time
    /// it fails (another thread counted in between: two threads succeed on
    /// this breaker at once), the stripes are allocated, and from then on
    /// each thread adds to its own padded stripe: no line is written by two
    /// threads, and the admission line is only read.
    void count_success() noexcept {
        if (SuccessStripes* stripes = stripes_.load(std::memory_order_acquire)) {
            count_striped(stripes);
            return;
        }
        uint64_t n = successes_.load(std::memory_order_relaxed);
        if (!successes_.compare_exchange_strong(n, n + 1, std::memory_order_relaxed)) {
            count_contended();
        }
    }
    // Out of line, so that the uncontended path above stays small enough to
    // inline into record_success().
    VIRTRIGAUD_NOINLINE void count_contended() noexcept {
        SuccessStripes* stripes = add_stripes();
        if (stripes == nullptr) {
            successes_.fetch_add(1, std::memory_order_relaxed);  // out of memory
            return;
        }
        count_striped(stripes);
    }
    VIRTRIGAUD_NOINLINE static void count_striped(SuccessStripes* stripes) noexcept {
        stripes->stripe[stripe_of_this_thread() % kSuccessStripes].count.fetch_add(
            1, std::memory_order_relaxed);
    }
    SuccessStripes* add_stripes() noexcept {
        auto* fresh = new (std::nothrow) SuccessStripes();
        SuccessStripes* expected = nullptr;
        if (fresh == nullptr ||
            stripes_.compare_exchange_strong(expected, fresh, std::memory_order_acq_rel)) {
            return fresh;
        }
        delete fresh;  // another thread's won
        return expected;
    }
    /// A small number per thread, handed out in order of first use, so that
    /// the first kSuccessStripes threads to count get a stripe each.
    static unsigned stripe_of_this_thread() noexcept {
        static std::atomic<unsigned> next{0};
        thread_local const unsigned mine = next.fetch_add(1, std::memory_order_relaxed);
        return mine;
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
    /// A transition reported only if it is visible: open -> held open is
    /// none (both read as open), nor is a move to the same state.
    Transition changed(BreakerState from, BreakerState to, int64_t now) noexcept {
        if (index_of(from) == index_of(to)) {
            return {};
        }
        return transitioned(from, to, now);
    }
    /// A manual move to `to` in a new generation with every slot free:
    /// closing forgets the streak, anything else keeps it (+ `add`).
    Transition move_to(BreakerState to, uint32_t add = 0, int mode = -1) noexcept {
        const int64_t now = now_ns(clock_);
        if (to == BreakerState::kOpen || to == BreakerState::kHeldOpen) {
            advance_to(opened_at_, now);
        }
        if (mode >= 0) {
            // Before the move, so the new generation's outcomes see it.
            mode_.store(static_cast<uint32_t>(mode), std::memory_order_relaxed);
        }
        AtomicPair::Value s = snapshot();
        for (;;) {
            prepare_move(to, s.second + 1, now);
            uint32_t f = 0;
            if (to != BreakerState::kClosed) {
                f = std::min<uint32_t>(streak_of(s.first) + add, kMaxStreak);
                if (to == BreakerState::kHalfOpen) {
                    f = carried(f);
                }
            }
            if (state_.compare_exchange(s, make(to, f, 0, s.second + 1))) {
                return changed(state_of(s.first), to, now);
            }
        }
    }

    // Hot: read or written by calls. Exactly one cache line (asserted below).
    alignas(64) AtomicPair state_;  // (state word, generation)
    std::atomic<int64_t> opened_at_;
    const ManualClock* clock_;
    std::atomic<int64_t> reset_timeout_ns_;
    std::atomic<uint32_t> threshold_;
    const uint32_t half_open_max_;
    std::atomic<uint64_t> failures_total_{0};
    BreakerWindow* window_ = nullptr;  // window mode only (read by every outcome)

    // Second line: read by half-open calls, written by successes until the
    // first contention, then only read (see count_success()).
    const int64_t half_open_lease_ns_;
    std::atomic<uint32_t> success_threshold_{0};  // read by half-open successes only
    std::atomic<uint32_t> mode_{kNormal};          // read by failures and window outcomes
    std::atomic<uint64_t> successes_{0};
    std::atomic<SuccessStripes*> stripes_{nullptr};
    std::atomic<uint64_t> ignored_{0};
    bool window_failed_ = false;
    // Window mode's own counters, in this line's spare bytes rather than
    // in the window's allocation (0 in consecutive mode).
    std::atomic<uint32_t> openings_{0};         // since the breaker last closed
    std::atomic<uint64_t> slow_calls_{0};       // outcomes judged slow (stale ones left out)
    std::atomic<int64_t> half_open_since_{0};   // clock time of the last move to half-open

    // Cold: written on rejections, transitions, probes and cancellations.
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
// The hot fields fill the first 64-byte line (admission only reads it while
// closed); the lease, the success counter and the stripes' pointer take the
// second, the cold counters the third.
static_assert(sizeof(CircuitBreaker) == 192, "CircuitBreaker hot state must fit one cache line");

}  // namespace virtrigaud
