// Sliding windows of call outcomes for a rate-judging circuit breaker
// (resilience4j's COUNT_BASED and TIME_BASED sliding windows), lock-free.
//
// Each outcome is two bits: failed, slow. A window answers "how many
// outcomes, how many failed, how many slow" over
//   count: the last `size` outcomes recorded since the window's reset;
//   time:  the outcomes recorded in the last `size` whole seconds of the
//          breaker's clock (one bucket per second; the current second
//          included, so a 60 s window spans the 59 seconds before the
//          current one and the current one).
//
// Generations. A window belongs to one epoch (the low 24 bits of the
// breaker's generation in which it was reset). An outcome carries the epoch
// of its ticket; one of another epoch is stale and refused (record() returns
// false). A writer checks the epoch and then writes: one preempted between
// the two across a reset (an entire open period, or an operator's reset())
// lands its single outcome in the new window. That is tolerated, as the
// breaker's 24-bit tag is (circuit_breaker.hpp).
//
// Count window: a head word (epoch | position) advanced by one fetch_add
// (no retry, however many writers) hands each outcome a slot of a ring of
// 2-bit outcomes, 32 to a 64-bit word (inline for up to 128 outcomes, so a
// CountWindow(100) allocates no ring); the slot's bits are replaced by a
// compare-and-swap of its word, and the difference from the outcome replaced
// goes to the running failure and slow counts (fetch_add). An outcome equal
// to the one it replaces writes nothing (the common case: a success where a
// success was), so a steady stream of successes writes only the head.
// Nothing allocates after construction. With concurrent writers the counts
// read between two writes may be off by the writes in flight (read clamped
// to [0, outcomes]); once the writers are done they are exact.
//
// Time window: a ring of `size` per-second buckets, each a 16-byte atomic
// pair (epoch | second, calls | failures | slow) updated by one
// compare-and-swap; a bucket of an older second or epoch is rolled (replaced)
// by the first outcome of its new second. Running sums over the buckets up
// to the latest second recorded let a record judge in O(1): the first record
// of a new second rolls the buckets of the seconds the window moved past
// (resilience4j's moveWindowToCurrentEpochSecond). Reads at any other time
// sum the buckets of the window's seconds and skip the others: rolled on
// read, no timer. A bucket
// counts at most kMaxBucketCalls outcomes per second (more are dropped, so
// rates stay right at that cap).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>

#include "atomic_pair.hpp"
#include "backoff.hpp"

namespace virtrigaud {

/// The two bits an outcome is recorded as.
constexpr uint8_t kOutcomeFailed = 1;
constexpr uint8_t kOutcomeSlow = 2;

/// A window's contents at one moment.
struct WindowTotals {
    uint32_t calls = 0;
    uint32_t failures = 0;
    uint32_t slow = 0;
};

enum class WindowKind : uint8_t { kCount = 0, kTime = 1 };

class SlidingWindow {
public:
    /// Largest count window (outcomes) and time window (seconds).
    static constexpr uint32_t kMaxCountSize = 65535;
    static constexpr uint32_t kMaxTimeSize = 3600;
    /// Outcomes one second's bucket counts (2^21 - 1).
    static constexpr uint32_t kMaxBucketCalls = (1u << 21) - 1;
    static constexpr uint64_t kEpochMask = (uint64_t{1} << 24) - 1;

    /// `size` outcomes (count) or seconds (time), clamped to [1, the kind's
    /// maximum] (the binding validates). Allocates the ring once (nothrow: a
    /// failed allocation leaves ok() false).
    SlidingWindow(WindowKind kind, uint32_t size) noexcept
        : kind_(kind),
          size_(std::max<uint32_t>(
              1, std::min(size, kind == WindowKind::kCount ? kMaxCountSize : kMaxTimeSize))) {
        if (kind_ == WindowKind::kCount) {
            if (words_of(size_) <= kInlineWords) {
                words_ = inline_words_;
            } else {
                heap_words_.reset(new (std::nothrow) std::atomic<uint64_t>[words_of(size_)]);
                words_ = heap_words_.get();
            }
            clear_ring();
        } else {
            buckets_.reset(new (std::nothrow) Bucket[size_]);
        }
    }
    SlidingWindow(const SlidingWindow&) = delete;
    SlidingWindow& operator=(const SlidingWindow&) = delete;

    bool ok() const noexcept {
        return kind_ == WindowKind::kCount ? words_ != nullptr : !!buckets_;
    }
    WindowKind kind() const noexcept { return kind_; }
    uint32_t size() const noexcept { return size_; }
    uint32_t epoch() const noexcept {
        return static_cast<uint32_t>(epoch_.load(std::memory_order_acquire));
    }
    /// Bytes this window allocated beside itself (0 for a count window of
    /// up to 128 outcomes: its ring is inline).
    size_t ring_bytes() const noexcept {
        if (kind_ == WindowKind::kTime) {
            return size_ * sizeof(Bucket);
        }
        return heap_words_ ? words_of(size_) * sizeof(std::atomic<uint64_t>) : 0;
    }

    /// Records one outcome (`bits`: kOutcomeFailed | kOutcomeSlow) of epoch
    /// `epoch` at clock time `now_ns` (>= 0; used by the time window).
    /// Returns false, recording nothing, when the epoch is not the window's.
    bool record(uint32_t epoch, uint8_t bits, int64_t now_ns) noexcept {
        return kind_ == WindowKind::kCount ? record_count(epoch, bits)
                                           : record_time(epoch, bits, now_ns);
    }

    /// The window's contents at `now_ns` (count: the last outcomes; time:
    /// the buckets of the last size() seconds up to now's).
    WindowTotals totals(int64_t now_ns) const noexcept {
        return kind_ == WindowKind::kCount ? count_totals() : time_totals(now_ns);
    }

    /// The window's contents right after a record() at `now_ns`, in O(1):
    /// the time window's running sums (they hold the seconds up to the
    /// latest recorded one, exact then), the count window's totals(). What
    /// the breaker judges by.
    WindowTotals judged_totals(int64_t now_ns) const noexcept {
        if (kind_ == WindowKind::kCount) {
            return count_totals();
        }
        return judged_time_totals(now_ns);
    }

    /// The count window's contents counted from its ring (O(size); the
    /// time window's totals): equal to totals() once the writers are done.
    /// For tests and audits.
    WindowTotals recount(int64_t now_ns) const noexcept {
        if (kind_ == WindowKind::kTime) {
            return time_totals(now_ns);
        }
        // An empty slot reads as a success that was not slow: it adds nothing.
        WindowTotals t;
        t.calls = static_cast<uint32_t>(
            std::min<uint64_t>(head_.load(std::memory_order_acquire) & kPositionMask, size_));
        for (uint32_t i = 0; i < size_; ++i) {
            const unsigned v = slot_bits(i);
            t.failures += (v & kOutcomeFailed) != 0 ? 1 : 0;
            t.slow += (v & kOutcomeSlow) != 0 ? 1 : 0;
        }
        return t;
    }

    /// Empties the window and moves it to `epoch` (the caller does this
    /// before the transition that starts the epoch's generation).
    void reset(uint32_t epoch) noexcept {
        const uint64_t e = epoch & kEpochMask;
        epoch_.store(e, std::memory_order_release);
        if (kind_ == WindowKind::kCount) {
            head_.store(e << kEpochShift, std::memory_order_release);
            clear_ring();
        }
        failures_.store(0, std::memory_order_relaxed);
        slow_.store(0, std::memory_order_relaxed);
        calls_.store(0, std::memory_order_relaxed);
        head_second_.store(-1, std::memory_order_relaxed);
        // Time buckets of other epochs are skipped on read and rolled on write.
    }

private:
    static constexpr int kEpochShift = 40;
    static constexpr uint64_t kPositionMask = (uint64_t{1} << kEpochShift) - 1;
    static constexpr int64_t kNsPerSecond = 1'000'000'000;
    /// The count window's ring: 2-bit outcomes, 32 to a word; inline up to
    /// kInlineWords words (128 outcomes).
    static constexpr uint32_t kOutcomesPerWord = 32;
    static constexpr uint32_t kInlineWords = 4;
    static constexpr uint32_t words_of(uint32_t outcomes) noexcept {
        return (outcomes + kOutcomesPerWord - 1) / kOutcomesPerWord;
    }

    // ---- count window: head = epoch << 40 | position. The position is
    // congruent to the next slot modulo size: below size the ring is filling
    // (that many outcomes), from size on it is full. It is kept below
    // 2 * size: the writer that takes it to 2 * size or beyond subtracts
    // size (one compare-and-swap; if another writer moved it meanwhile, that
    // writer is past 2 * size too and subtracts instead). A writer reads the
    // epoch before taking a position; one preempted between the two across a
    // reset lands its outcome in the new window (see the file comment).
    bool record_count(uint32_t epoch, uint8_t bits) noexcept {
        if (epoch_.load(std::memory_order_acquire) != (epoch & kEpochMask)) {
            return false;
        }
        const uint64_t h = head_.fetch_add(1, std::memory_order_acq_rel);
        const uint64_t pos = h & kPositionMask;
        if (pos + 1 >= 2 * uint64_t{size_}) {
            uint64_t expected = h + 1;
            head_.compare_exchange_strong(expected, expected - size_, std::memory_order_acq_rel,
                                          std::memory_order_relaxed);
        }
        const uint32_t slot = slot_of(pos);
        std::atomic<uint64_t>& word = words_[slot / kOutcomesPerWord];
        const unsigned shift = 2 * (slot % kOutcomesPerWord);
        const uint64_t mask = uint64_t{3} << shift;
        const uint64_t mine = static_cast<uint64_t>(bits & 3u) << shift;
        uint64_t w = word.load(std::memory_order_acquire);
        // Equal bits: nothing to write (this outcome takes the slot as it is;
        // a writer that replaces it later accounts for what it finds).
        while ((w & mask) != mine &&
               !word.compare_exchange_weak(w, (w & ~mask) | mine, std::memory_order_acq_rel,
                                           std::memory_order_acquire)) {
        }
        const int old = static_cast<int>((w & mask) >> shift);
        add(failures_, (bits & kOutcomeFailed) - (old & kOutcomeFailed));
        add(slow_, ((bits & kOutcomeSlow) - (old & kOutcomeSlow)) / kOutcomeSlow);
        return true;
    }
    /// The slot of position `pos` (pos modulo size; pos is below 2 * size
    /// but for the writers in flight while it is brought back).
    uint32_t slot_of(uint64_t pos) const noexcept {
        if (pos < size_) {
            return static_cast<uint32_t>(pos);
        }
        pos -= size_;
        return static_cast<uint32_t>(pos < size_ ? pos : pos % size_);
    }
    unsigned slot_bits(uint32_t slot) const noexcept {
        const uint64_t w = words_[slot / kOutcomesPerWord].load(std::memory_order_acquire);
        return static_cast<unsigned>(w >> (2 * (slot % kOutcomesPerWord))) & 3u;
    }
    void clear_ring() noexcept {
        if (words_ != nullptr) {
            for (uint32_t i = 0; i < words_of(size_); ++i) {
                words_[i].store(0, std::memory_order_relaxed);
            }
        }
    }
    static void add(std::atomic<int64_t>& counter, int delta) noexcept {
        if (delta != 0) {
            counter.fetch_add(delta, std::memory_order_relaxed);
        }
    }
    WindowTotals count_totals() const noexcept {
        const uint64_t pos = head_.load(std::memory_order_acquire) & kPositionMask;
        WindowTotals t;
        t.calls = static_cast<uint32_t>(std::min<uint64_t>(pos, size_));
        t.failures = clamped(failures_.load(std::memory_order_relaxed), t.calls);
        t.slow = clamped(slow_.load(std::memory_order_relaxed), t.calls);
        return t;
    }
    static uint32_t clamped(int64_t v, uint32_t max) noexcept {
        return v < 0 ? 0 : static_cast<uint32_t>(std::min<int64_t>(v, max));
    }

    // ---- time window: key = epoch << 40 | second (40 bits: 34,000 years);
    // counts = calls << 42 | failures << 21 | slow.
    struct Bucket {
        AtomicPair pair{0, 0};
    };
    static constexpr uint64_t kField = (uint64_t{1} << 21) - 1;
    static uint64_t key_of(uint64_t epoch, int64_t second) noexcept {
        return (epoch & kEpochMask) << kEpochShift |
               (static_cast<uint64_t>(second) & kPositionMask);
    }
    static uint32_t calls_of(uint64_t c) noexcept { return static_cast<uint32_t>(c >> 42); }
    static uint32_t failures_of(uint64_t c) noexcept {
        return static_cast<uint32_t>((c >> 21) & kField);
    }
    static uint32_t slow_of(uint64_t c) noexcept { return static_cast<uint32_t>(c & kField); }
    /// Whether epoch `a` is later than `b` (24-bit tags, compared modulo 2^24).
    static bool epoch_after(uint64_t a, uint64_t b) noexcept {
        const uint64_t d = (a - b) & kEpochMask;
        return d != 0 && d < (uint64_t{1} << 23);
    }

    bool record_time(uint32_t epoch, uint8_t bits, int64_t now_ns) noexcept {
        const uint64_t e = epoch & kEpochMask;
        if (epoch_.load(std::memory_order_acquire) != e) {
            return false;
        }
        const int64_t second = (now_ns < 0 ? 0 : now_ns) / kNsPerSecond;
        advance_head(e, second);
        const uint64_t key = key_of(e, second);
        const uint64_t one = uint64_t{1} << 42 | static_cast<uint64_t>(bits & kOutcomeFailed) << 21 |
                             uint64_t{(bits & kOutcomeSlow) != 0 ? 1u : 0u};
        Bucket& b = buckets_[static_cast<uint64_t>(second) % size_];
        AtomicPair::Value v = b.pair.load();
        for (;;) {
            AtomicPair::Value next{key, one};
            if (v.first == key) {
                if (calls_of(v.second) >= kMaxBucketCalls) {
                    return true;  // this second's bucket is full: dropped
                }
                next.second = v.second + one;
            } else {
                const uint64_t their_epoch = v.first >> kEpochShift;
                const bool older = their_epoch == e
                                       ? (v.first & kPositionMask) < (key & kPositionMask)
                                       : !epoch_after(their_epoch, e);
                if (!older) {
                    // A later second (or epoch) holds the bucket: this outcome's
                    // second has left the window already (or it is stale).
                    return their_epoch == e;
                }
            }
            if (b.pair.compare_exchange(v, next)) {
                if (v.first != key) {
                    forget(e, v);  // rolled: the old second leaves the running sums
                }
                add_time(static_cast<int64_t>(one >> 42), (bits & kOutcomeFailed) != 0 ? 1 : 0,
                         (bits & kOutcomeSlow) != 0 ? 1 : 0);
                return true;
            }
        }
    }

    // Out of line: judged_totals() stays small enough to inline into the
    // breaker's record, so the count window's totals come back in registers.
#if defined(_MSC_VER)
    __declspec(noinline)
#else
    __attribute__((noinline))
#endif
    WindowTotals judged_time_totals(int64_t now_ns) const noexcept {
        const int64_t second = (now_ns < 0 ? 0 : now_ns) / kNsPerSecond;
        if (head_second_.load(std::memory_order_acquire) != second) {
            return time_totals(now_ns);  // the head is elsewhere: sum the buckets
        }
        return running_totals();
    }

    // The time window's running sums (calls_, failures_, slow_) hold the
    // buckets of the seconds up to head_second_: moving the head rolls the
    // buckets of the seconds it passes (resilience4j's
    // moveWindowToCurrentEpochSecond), so a record judges in O(1), not by
    // summing every bucket. Whoever replaces a bucket's key subtracts what
    // the bucket held (once: only the winning CAS does).
    void advance_head(uint64_t e, int64_t second) noexcept {
        int64_t head = head_second_.load(std::memory_order_acquire);
        if (second <= head ||
            !head_second_.compare_exchange_strong(head, second, std::memory_order_acq_rel)) {
            return;  // not later, or another thread moves it
        }
        const int64_t from = std::max(head + 1, second - static_cast<int64_t>(size_) + 1);
        for (int64_t x = from; x <= second; ++x) {
            roll(e, x);
        }
    }
    /// Gives the bucket of second `x` to `x`, empty, unless it holds `x` or later.
    void roll(uint64_t e, int64_t x) noexcept {
        Bucket& b = buckets_[static_cast<uint64_t>(x) % size_];
        const uint64_t key = key_of(e, x);
        AtomicPair::Value v = b.pair.load();
        for (;;) {
            const uint64_t their_epoch = v.first >> kEpochShift;
            if (their_epoch == e ? (v.first & kPositionMask) >= (key & kPositionMask)
                                 : epoch_after(their_epoch, e)) {
                return;
            }
            if (b.pair.compare_exchange(v, {key, 0})) {
                forget(e, v);
                return;
            }
        }
    }
    /// Takes a replaced bucket's counts out of the running sums (only a
    /// bucket of this epoch is in them: a reset zeroed the sums).
    void forget(uint64_t e, const AtomicPair::Value& old) noexcept {
        if ((old.first >> kEpochShift) == e && old.second != 0) {
            add_time(-static_cast<int64_t>(calls_of(old.second)),
                     -static_cast<int64_t>(failures_of(old.second)),
                     -static_cast<int64_t>(slow_of(old.second)));
        }
    }
    void add_time(int64_t calls, int64_t failed, int64_t slow) noexcept {
        calls_.fetch_add(calls, std::memory_order_relaxed);
        if (failed != 0) {
            failures_.fetch_add(failed, std::memory_order_relaxed);
        }
        if (slow != 0) {
            slow_.fetch_add(slow, std::memory_order_relaxed);
        }
    }
    /// The running sums, clamped (exact once the writers are done).
    WindowTotals running_totals() const noexcept {
        WindowTotals t;
        const int64_t calls = calls_.load(std::memory_order_relaxed);
        t.calls = calls <= 0 ? 0 : static_cast<uint32_t>(std::min<int64_t>(calls, UINT32_MAX));
        t.failures = clamped(failures_.load(std::memory_order_relaxed), t.calls);
        t.slow = clamped(slow_.load(std::memory_order_relaxed), t.calls);
        return t;
    }
    WindowTotals time_totals(int64_t now_ns) const noexcept {
        const uint64_t e = epoch_.load(std::memory_order_acquire);
        const int64_t now_second = (now_ns < 0 ? 0 : now_ns) / kNsPerSecond;
        const int64_t oldest = now_second - static_cast<int64_t>(size_) + 1;
        WindowTotals t;
        for (uint32_t i = 0; i < size_; ++i) {
            // Both words of one moment: the second word is read again after
            // the key, and the key once more (a bucket only ever changes by a
            // CAS of both, so equal keys around an equal count are one state).
            const AtomicPair& p = buckets_[i].pair;
            uint64_t key = p.first();
            uint64_t counts;
            for (;;) {
                counts = p.second();
                const uint64_t again = p.first();
                if (again == key) {
                    break;
                }
                key = again;
            }
            if ((key >> kEpochShift) != e) {
                continue;
            }
            const int64_t second = static_cast<int64_t>(key & kPositionMask);
            if (second < oldest || second > now_second) {
                continue;
            }
            t.calls += calls_of(counts);
            t.failures += failures_of(counts);
            t.slow += slow_of(counts);
        }
        return t;
    }

    // What a record touches first, together: the epoch, the count window's
    // head, the running sums and its inline ring.
    std::atomic<uint64_t> epoch_{0};
    std::atomic<uint64_t> head_{0};
    std::atomic<int64_t> failures_{0};  // both kinds' running sums
    std::atomic<int64_t> slow_{0};
    std::atomic<uint64_t> inline_words_[kInlineWords] = {};
    const WindowKind kind_;
    const uint32_t size_;
    // count window: its ring (inline_words_, or heap_words_ beyond 128 outcomes)
    std::atomic<uint64_t>* words_ = nullptr;
    std::unique_ptr<std::atomic<uint64_t>[]> heap_words_;
    // time window
    std::atomic<int64_t> calls_{0};
    std::atomic<int64_t> head_second_{-1};
    std::unique_ptr<Bucket[]> buckets_;
};

/// A rate-judging breaker's settings (resilience4j's names in brackets).
struct WindowSettings {
    WindowKind kind = WindowKind::kCount;
    uint32_t size = 100;               ///< outcomes or seconds [slidingWindowSize]
    uint32_t minimum_calls = 100;      ///< outcomes before any judgement [minimumNumberOfCalls]
    double failure_rate = 0.5;         ///< (0, 1]: opens at failures / outcomes >= it
    int64_t slow_call_ns = -1;         ///< a call this long or longer is slow; < 0: off
    double slow_call_rate = 1.0;       ///< (0, 1]: opens at slow / outcomes >= it
    int64_t max_wait_half_open_ns = 0; ///< > 0: a half-open breaker undecided this long opens
    // Open durations growing per consecutive opening (backoff.hpp's rules;
    // attempt 0 is the first opening since the breaker closed).
    bool open_backoff = false;
    Strategy backoff_strategy = Strategy::kExponential;
    double backoff_base = 0.0;         ///< seconds
    double backoff_cap = 0.0;          ///< seconds
    double backoff_multiplier = 1.0;
    bool backoff_jitter = false;

    /// Whether `t` (judged over at least `minimum` outcomes) crosses a threshold.
    bool exceeded(const WindowTotals& t, uint32_t minimum) const noexcept {
        if (t.calls == 0 || t.calls < minimum) {
            return false;
        }
        const double calls = static_cast<double>(t.calls);
        return static_cast<double>(t.failures) >= failure_rate * calls ||
               (slow_call_ns >= 0 && static_cast<double>(t.slow) >= slow_call_rate * calls);
    }
};

/// What a breaker in window mode holds beside its state word: allocated
/// once, only for such a breaker (the consecutive breaker carries a null
/// pointer).
struct BreakerWindow {
    explicit BreakerWindow(const WindowSettings& s) noexcept
        : settings(s), window(s.kind, s.size) {}

    const WindowSettings settings;
    SlidingWindow window;
    /// The half-open round: epoch (16 bits of the generation) << 48 |
    /// reported << 32 | failed << 16 | slow. A round of another epoch reads
    /// as empty.
    std::atomic<uint64_t> round{0};
    /// Openings since the breaker last closed (the backoff's attempt).
    std::atomic<uint32_t> openings{0};
    /// How long the current opening lasts (open_backoff only).
    std::atomic<int64_t> open_for_ns{0};
    /// Clock time the breaker last moved to half-open.
    std::atomic<int64_t> half_open_since{0};
    std::atomic<uint64_t> slow_calls{0};

    bool timed() const noexcept { return settings.slow_call_ns >= 0; }
};

}  // namespace virtrigaud
