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
// Count window: a head word (epoch | shape | position) advanced by one
// fetch_add (no retry, however many writers) hands each outcome a slot of a
// ring of 2-bit outcomes, 32 to a 64-bit word, right behind the window in
// its allocation (a breaker's CountWindow(100) is one 72-byte allocation,
// its settings shared); the slot's bits are replaced by a compare-and-swap
// of its word, and the difference from the outcome replaced goes to the
// running failure and slow counts (one fetch_add of one word). An outcome equal
// to the one it replaces writes nothing (the common case: a success where a
// success was), so a steady stream of successes writes only the head.
// Nothing allocates after construction. With concurrent writers the counts
// read between two writes may be off by the writes in flight (read clamped
// to [0, outcomes]); once the writers are done they are exact.
//
// Time window: running sums, then a ring of `size` per-second buckets, each a 16-byte atomic
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

/// A window of outcomes (see the file comment). It lives in one allocation
/// with its ring (or buckets) right behind it: make() for a window of its
/// own, BreakerWindow::create() for a breaker's. Not copyable or movable.
class SlidingWindow {
public:
    /// Largest count window (outcomes) and time window (seconds).
    static constexpr uint32_t kMaxCountSize = 65535;
    static constexpr uint32_t kMaxTimeSize = 3600;
    /// Outcomes one second's bucket counts (2^21 - 1).
    static constexpr uint32_t kMaxBucketCalls = (1u << 21) - 1;
    static constexpr uint64_t kEpochMask = (uint64_t{1} << 24) - 1;

    /// `size` clamped to [1, the kind's maximum] (the binding validates).
    static uint32_t clamped_size(WindowKind kind, uint32_t size) noexcept {
        return std::max<uint32_t>(
            1, std::min(size, kind == WindowKind::kCount ? kMaxCountSize : kMaxTimeSize));
    }
    /// Bytes a window of `kind` and `size` (clamped) needs behind itself:
    /// the count window's ring (2-bit outcomes, 32 to a word), the time
    /// window's running sums and buckets (plus room to align them).
    static size_t bytes_behind(WindowKind kind, uint32_t size) noexcept {
        size = clamped_size(kind, size);
        if (kind == WindowKind::kCount) {
            return words_of(size) * sizeof(std::atomic<uint64_t>);
        }
        return sizeof(TimeSums) + alignof(Bucket) + size * sizeof(Bucket);
    }

    /// Constructs the window at `this`, which must be followed by
    /// bytes_behind(kind, size) bytes of the same allocation, aligned to 16.
    SlidingWindow(WindowKind kind, uint32_t size) noexcept
        : head_(shape_of(kind, clamped_size(kind, size))) {
        if (kind == WindowKind::kCount) {
            for (uint32_t i = 0; i < words_of(this->size()); ++i) {
                new (&words()[i]) std::atomic<uint64_t>(0);
            }
        } else {
            new (sums()) TimeSums();
            for (uint32_t i = 0; i < this->size(); ++i) {
                new (&buckets()[i]) Bucket();
            }
        }
    }
    SlidingWindow(const SlidingWindow&) = delete;
    SlidingWindow& operator=(const SlidingWindow&) = delete;

    struct Free {
        void operator()(SlidingWindow* w) const noexcept {
            w->~SlidingWindow();
            ::operator delete(static_cast<void*>(w));
        }
    };
    using Owned = std::unique_ptr<SlidingWindow, Free>;
    /// A window of its own (tests, benchmarks); null if out of memory.
    static Owned make(WindowKind kind, uint32_t size) noexcept {
        static_assert(sizeof(SlidingWindow) % 16 == 0, "what follows must stay aligned");
        void* p = ::operator new(sizeof(SlidingWindow) + bytes_behind(kind, size), std::nothrow);
        return Owned(p != nullptr ? new (p) SlidingWindow(kind, size) : nullptr);
    }

    WindowKind kind() const noexcept {
        return (head_.load(std::memory_order_relaxed) & kTimeBit) != 0 ? WindowKind::kTime
                                                                        : WindowKind::kCount;
    }
    uint32_t size() const noexcept { return size_of(head_.load(std::memory_order_relaxed)); }
    uint32_t epoch() const noexcept {
        return static_cast<uint32_t>(head_.load(std::memory_order_acquire) >> kEpochShift);
    }
    /// Bytes this window holds behind itself (its ring or buckets).
    size_t ring_bytes() const noexcept { return bytes_behind(kind(), size()); }

    /// Records one outcome (`bits`: kOutcomeFailed | kOutcomeSlow) of epoch
    /// `epoch` at clock time `now_ns` (>= 0; used by the time window).
    /// Returns false, recording nothing, when the epoch is not the window's.
    bool record(uint32_t epoch, uint8_t bits, int64_t now_ns) noexcept {
        const uint64_t head = head_.load(std::memory_order_acquire);
        if ((head >> kEpochShift) != (epoch & kEpochMask)) {
            return false;
        }
        return (head & kTimeBit) == 0 ? record_count(bits) : record_time(epoch, bits, now_ns);
    }

    /// The window's contents at `now_ns` (count: the last outcomes; time:
    /// the buckets of the last size() seconds up to now's).
    WindowTotals totals(int64_t now_ns) const noexcept {
        return kind() == WindowKind::kCount ? count_totals() : time_totals(now_ns);
    }

    /// The window's contents right after a record() at `now_ns`, in O(1):
    /// the time window's running sums (they hold the seconds up to the
    /// latest recorded one, exact then), the count window's totals(). What
    /// the breaker judges by.
    WindowTotals judged_totals(int64_t now_ns) const noexcept {
        if (kind() == WindowKind::kCount) {
            return count_totals();
        }
        return judged_time_totals(now_ns);
    }

    /// The count window's contents counted from its ring (O(size); the
    /// time window's totals): equal to totals() once the writers are done.
    /// For tests and audits.
    WindowTotals recount(int64_t now_ns) const noexcept {
        if (kind() == WindowKind::kTime) {
            return time_totals(now_ns);
        }
        // An empty slot reads as a success that was not slow: it adds nothing.
        const uint64_t head = head_.load(std::memory_order_acquire);
        WindowTotals t;
        t.calls = static_cast<uint32_t>(std::min<uint64_t>(head & kPositionMask, size_of(head)));
        for (uint32_t i = 0; i < size_of(head); ++i) {
            const unsigned v = slot_bits(i);
            t.failures += (v & kOutcomeFailed) != 0 ? 1 : 0;
            t.slow += (v & kOutcomeSlow) != 0 ? 1 : 0;
        }
        return t;
    }

    /// Empties the window and moves it to `epoch` (the caller does this
    /// before the transition that starts the epoch's generation).
    void reset(uint32_t epoch) noexcept {
        const uint64_t head = head_.load(std::memory_order_relaxed);
        const uint64_t fresh = (uint64_t{epoch} & kEpochMask) << kEpochShift | (head & kShapeMask);
        if ((head & kTimeBit) == 0) {
            head_.store(fresh, std::memory_order_release);
            for (uint32_t i = 0; i < words_of(size_of(head)); ++i) {
                words()[i].store(0, std::memory_order_relaxed);
            }
            tallies_.store(0, std::memory_order_relaxed);
            return;
        }
        head_.store(fresh, std::memory_order_release);
        TimeSums& s = *sums();
        s.failures.store(0, std::memory_order_relaxed);
        s.slow.store(0, std::memory_order_relaxed);
        s.calls.store(0, std::memory_order_relaxed);
        s.head_second.store(-1, std::memory_order_relaxed);
        // Time buckets of other epochs are skipped on read and rolled on write.
    }

private:
    // head_ = epoch << 40 | kind << 39 | size << 20 | position (the count
    // window's; 0 in a time window). The position stays below 2 * size plus
    // the writers in flight (see record_count), far below 2^20, so the
    // fetch_add that advances it never reaches the shape above it.
    static constexpr int kEpochShift = 40;
    static constexpr uint64_t kTimeBit = uint64_t{1} << 39;
    static constexpr int kSizeShift = 20;
    static constexpr uint64_t kPositionMask = (uint64_t{1} << kSizeShift) - 1;
    static constexpr uint64_t kShapeMask = kTimeBit | (uint64_t{0xFFFF} << kSizeShift);
    static constexpr uint64_t kSecondMask = (uint64_t{1} << kEpochShift) - 1;
    static constexpr int64_t kNsPerSecond = 1'000'000'000;
    static constexpr uint32_t kOutcomesPerWord = 32;
    static constexpr uint32_t words_of(uint32_t outcomes) noexcept {
        return (outcomes + kOutcomesPerWord - 1) / kOutcomesPerWord;
    }
    static uint64_t shape_of(WindowKind kind, uint32_t size) noexcept {
        return (kind == WindowKind::kTime ? kTimeBit : 0) | uint64_t{size} << kSizeShift;
    }
    static uint32_t size_of(uint64_t head) noexcept {
        return static_cast<uint32_t>((head >> kSizeShift) & 0xFFFF);
    }

    // ---- count window. The position is congruent to the next slot modulo
    // size: below size the ring is filling (that many outcomes), from size on
    // it is full. It is kept below 2 * size: the writer that takes it to
    // 2 * size or beyond subtracts size (one compare-and-swap; if another
    // writer moved it meanwhile, that writer is past 2 * size too and
    // subtracts instead). A writer reads the epoch before taking a position;
    // one preempted between the two across a reset lands its outcome in the
    // new window (see the file comment). The running counts are one word:
    // failures in the low 32 bits, slow outcomes in the high 32, each moved
    // by a signed difference in one fetch_add (a count below 0 for a moment
    // borrows from the other half; decoding undoes it exactly).
    bool record_count(uint8_t bits) noexcept {
        const uint64_t h = head_.fetch_add(1, std::memory_order_acq_rel);
        const uint32_t size = size_of(h);
        const uint64_t pos = h & kPositionMask;
        if (pos + 1 >= 2 * uint64_t{size}) {
            uint64_t expected = h + 1;
            head_.compare_exchange_strong(expected, expected - size, std::memory_order_acq_rel,
                                          std::memory_order_relaxed);
        }
        const uint32_t slot = slot_of(pos, size);
        std::atomic<uint64_t>& word = words()[slot / kOutcomesPerWord];
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
        const int64_t failed = (bits & kOutcomeFailed) - (old & kOutcomeFailed);
        const int64_t slow = ((bits & kOutcomeSlow) - (old & kOutcomeSlow)) / kOutcomeSlow;
        if ((failed | slow) != 0) {
            tallies_.fetch_add(static_cast<uint64_t>(failed + slow * (int64_t{1} << 32)),
                               std::memory_order_relaxed);
        }
        return true;
    }
    /// The slot of position `pos` (pos modulo size; pos is below 2 * size
    /// but for the writers in flight while it is brought back).
    static uint32_t slot_of(uint64_t pos, uint32_t size) noexcept {
        if (pos < size) {
            return static_cast<uint32_t>(pos);
        }
        pos -= size;
        return static_cast<uint32_t>(pos < size ? pos : pos % size);
    }
    unsigned slot_bits(uint32_t slot) const noexcept {
        const uint64_t w = words()[slot / kOutcomesPerWord].load(std::memory_order_acquire);
        return static_cast<unsigned>(w >> (2 * (slot % kOutcomesPerWord))) & 3u;
    }
    WindowTotals count_totals() const noexcept {
        const uint64_t head = head_.load(std::memory_order_acquire);
        const uint64_t tallies = tallies_.load(std::memory_order_relaxed);
        // Undo the borrow of a negative low half: failures is the low 32 bits
        // read as signed, slow what remains above them.
        const int64_t failures = static_cast<int32_t>(static_cast<uint32_t>(tallies));
        const int64_t slow =
            static_cast<int64_t>(tallies - static_cast<uint64_t>(failures)) >> 32;
        WindowTotals t;
        t.calls = static_cast<uint32_t>(std::min<uint64_t>(head & kPositionMask, size_of(head)));
        t.failures = clamped(failures, t.calls);
        t.slow = clamped(slow, t.calls);
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
    /// The running sums over the buckets up to head_second (see advance_head).
    struct TimeSums {
        std::atomic<int64_t> calls{0};
        std::atomic<int64_t> failures{0};
        std::atomic<int64_t> slow{0};
        std::atomic<int64_t> head_second{-1};
    };
    static_assert(alignof(Bucket) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__,
                  "operator new must align the buckets");
    // What lies behind the window: the ring's words, or the sums then the buckets.
    std::atomic<uint64_t>* words() const noexcept {
        return reinterpret_cast<std::atomic<uint64_t>*>(const_cast<SlidingWindow*>(this) + 1);
    }
    TimeSums* sums() const noexcept { return reinterpret_cast<TimeSums*>(words()); }
    Bucket* buckets() const noexcept {
        const uintptr_t after = reinterpret_cast<uintptr_t>(sums() + 1);
        return reinterpret_cast<Bucket*>((after + alignof(Bucket) - 1) &
                                         ~uintptr_t{alignof(Bucket) - 1});
    }
    static constexpr uint64_t kField = (uint64_t{1} << 21) - 1;
    static uint64_t key_of(uint64_t epoch, int64_t second) noexcept {
        return (epoch & kEpochMask) << kEpochShift |
               (static_cast<uint64_t>(second) & kSecondMask);
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
        const int64_t second = (now_ns < 0 ? 0 : now_ns) / kNsPerSecond;
        advance_head(e, second);
        const uint64_t key = key_of(e, second);
        const uint64_t one = uint64_t{1} << 42 | static_cast<uint64_t>(bits & kOutcomeFailed) << 21 |
                             uint64_t{(bits & kOutcomeSlow) != 0 ? 1u : 0u};
        Bucket& b = buckets()[static_cast<uint64_t>(second) % size()];
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
                                       ? (v.first & kSecondMask) < (key & kSecondMask)
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
        if (sums()->head_second.load(std::memory_order_acquire) != second) {
            return time_totals(now_ns);  // the head is elsewhere: sum the buckets
        }
        return running_totals();
    }

    // The time window's running sums hold the buckets of the seconds up to
    // head_second: moving the head rolls the buckets of the seconds it
    // passes (resilience4j's moveWindowToCurrentEpochSecond), so a record
    // judges in O(1), not by summing every bucket. Whoever replaces a
    // bucket's key subtracts what the bucket held (once: only the winning
    // CAS does).
    void advance_head(uint64_t e, int64_t second) noexcept {
        std::atomic<int64_t>& head_second = sums()->head_second;
        int64_t head = head_second.load(std::memory_order_acquire);
        if (second <= head ||
            !head_second.compare_exchange_strong(head, second, std::memory_order_acq_rel)) {
            return;  // not later, or another thread moves it
        }
        const int64_t from = std::max(head + 1, second - static_cast<int64_t>(size()) + 1);
        for (int64_t x = from; x <= second; ++x) {
            roll(e, x);
        }
    }
    /// Gives the bucket of second `x` to `x`, empty, unless it holds `x` or later.
    void roll(uint64_t e, int64_t x) noexcept {
        Bucket& b = buckets()[static_cast<uint64_t>(x) % size()];
        const uint64_t key = key_of(e, x);
        AtomicPair::Value v = b.pair.load();
        for (;;) {
            const uint64_t their_epoch = v.first >> kEpochShift;
            if (their_epoch == e ? (v.first & kSecondMask) >= (key & kSecondMask)
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
        TimeSums& s = *sums();
        s.calls.fetch_add(calls, std::memory_order_relaxed);
        if (failed != 0) {
            s.failures.fetch_add(failed, std::memory_order_relaxed);
        }
        if (slow != 0) {
            s.slow.fetch_add(slow, std::memory_order_relaxed);
        }
    }
    /// The running sums, clamped (exact once the writers are done).
    WindowTotals running_totals() const noexcept {
        const TimeSums& s = *sums();
        WindowTotals t;
        const int64_t calls = s.calls.load(std::memory_order_relaxed);
        t.calls = calls <= 0 ? 0 : static_cast<uint32_t>(std::min<int64_t>(calls, UINT32_MAX));
        t.failures = clamped(s.failures.load(std::memory_order_relaxed), t.calls);
        t.slow = clamped(s.slow.load(std::memory_order_relaxed), t.calls);
        return t;
    }
    WindowTotals time_totals(int64_t now_ns) const noexcept {
        const uint64_t e = epoch();
        const uint32_t size = this->size();
        const int64_t now_second = (now_ns < 0 ? 0 : now_ns) / kNsPerSecond;
        const int64_t oldest = now_second - static_cast<int64_t>(size) + 1;
        WindowTotals t;
        for (uint32_t i = 0; i < size; ++i) {
            // Both words of one moment: the second word is read again after
            // the key, and the key once more (a bucket only ever changes by a
            // CAS of both, so equal keys around an equal count are one state).
            const AtomicPair& p = buckets()[i].pair;
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
            const int64_t second = static_cast<int64_t>(key & kSecondMask);
            if (second < oldest || second > now_second) {
                continue;
            }
            t.calls += calls_of(counts);
            t.failures += failures_of(counts);
            t.slow += slow_of(counts);
        }
        return t;
    }

    // Two words, then the ring or the time window's sums and buckets.
    std::atomic<uint64_t> head_;
    std::atomic<uint64_t> tallies_{0};  // the count window's failures and slow outcomes
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

/// A WindowSettings shared by the breakers made from one configuration
/// (one per BreakerConfig in Python), reference counted: each breaker holds
/// one reference, and so does whoever made it. Immutable once made.
class SharedWindowSettings {
public:
    /// Settings with one reference (the caller's), the size clamped to the
    /// kind's range; null if out of memory.
    static SharedWindowSettings* create(const WindowSettings& s) noexcept {
        return new (std::nothrow) SharedWindowSettings(s);
    }
    SharedWindowSettings(const SharedWindowSettings&) = delete;
    SharedWindowSettings& operator=(const SharedWindowSettings&) = delete;

    const WindowSettings& get() const noexcept { return settings_; }
    void retain() const noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
    /// Drops a reference; the last one deletes the settings.
    void release() const noexcept {
        if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
            delete this;
        }
    }

private:
    explicit SharedWindowSettings(const WindowSettings& s) noexcept : settings_(clamped(s)) {}
    ~SharedWindowSettings() = default;
    static WindowSettings clamped(WindowSettings s) noexcept {
        s.size = SlidingWindow::clamped_size(s.kind, s.size);
        return s;
    }

    const WindowSettings settings_;
    mutable std::atomic<uint32_t> refs_{1};
};

/// What a breaker in window mode holds beside its state word: one
/// allocation, only for such a breaker (the consecutive breaker carries a
/// null pointer), sized to its ring: 72 bytes for CountWindow(100). The
/// settings are shared; what else window mode keeps per breaker (openings,
/// slow calls, the start of half-open) lives in the breaker's own spare bytes.
class BreakerWindow {
    const SharedWindowSettings* shared_;  // first: the window must be last

public:
    /// A window for `settings` (retained); null if out of memory.
    static BreakerWindow* create(const SharedWindowSettings& settings) noexcept {
        const WindowSettings& s = settings.get();
        void* p = ::operator new(
            sizeof(BreakerWindow) + SlidingWindow::bytes_behind(s.kind, s.size), std::nothrow);
        return p != nullptr ? new (p) BreakerWindow(settings) : nullptr;
    }
    static void destroy(BreakerWindow* w) noexcept {
        if (w != nullptr) {
            w->~BreakerWindow();
            ::operator delete(static_cast<void*>(w));
        }
    }
    BreakerWindow(const BreakerWindow&) = delete;
    BreakerWindow& operator=(const BreakerWindow&) = delete;

    const WindowSettings& settings() const noexcept { return shared_->get(); }
    bool timed() const noexcept { return settings().slow_call_ns >= 0; }

    /// The half-open round: epoch (16 bits of the generation) << 48 |
    /// reported << 32 | failed << 16 | slow. A round of another epoch reads
    /// as empty.
    std::atomic<uint64_t> round{0};
    /// How long the current opening lasts (open_backoff only).
    std::atomic<int64_t> open_for_ns{0};
    /// Last: its ring or buckets follow it in the same allocation.
    SlidingWindow window;

private:
    explicit BreakerWindow(const SharedWindowSettings& settings) noexcept
        : shared_(&settings), window(settings.get().kind, settings.get().size) {
        settings.retain();
    }
    ~BreakerWindow() { shared_->release(); }
};
static_assert(sizeof(BreakerWindow) == 24 + sizeof(SlidingWindow),
              "nothing may lie between the window and what follows it");

}  // namespace virtrigaud
