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
// to the one it replaces writes nothing but the head (a success where a
// success was). Nothing allocates after construction. With concurrent
// writers the counts read between two writes may be off by the writes in
// flight (read clamped to [0, outcomes]); once the writers are done they are
// exact.
//
// Successes into a window of successes. When the ring is full (position >=
// size) and its counts are zero, a success writes nothing at all, not even
// the head: it reads the head word and the counts (one line: see
// BreakerWindow) and returns. That is exact, not an approximation. Full and
// all successes, the window is "size successes" at every position of the
// head, and what it holds next depends only on the outcomes relative to the
// head: taking a position would turn a success into a success and rotate
// the ring of equal outcomes, which nothing can tell apart (the next failure
// lands in some slot, ages out after exactly `size` further outcomes, and the
// counts say the same, wherever the head was). So two threads succeeding on
// one healthy breaker share its lines only for reading. With writers in
// flight: counts of zero mean every outcome whose counts have landed is a
// success; an outcome whose bits are written but whose counts have not
// landed (a failure on its way) is a writer still in flight, and the
// skipped success is ordered before it, as if it had run first (it saw none
// of its effects). A skip changes no bit, no count and no position, so once
// the writers are done the counts equal the ring as before. A success
// whose head read precedes a reset that zeroes the counts before its read
// of them is dropped rather than landing in the new window (an outcome of
// the old epoch: either is tolerated, see Generations above).
//
// Time window: a ring of `size` per-second buckets, each a 16-byte atomic
// pair (key: epoch | second; counts: calls | failures | slow | sealed), and
// the closed sums: the counts of the window's seconds before the head (the
// latest second recorded), in one line read by every record and written
// about once a second. The head's bucket is open: an outcome of the head's
// second is one 8-byte fetch_add on its counts (its key checked first; no
// modulo: the head word carries the bucket's offset), and the totals it is
// judged by are the closed sums plus the counts that add returned, in O(1).
// The first outcome of a later second moves the head (one CAS of the head
// word, one modulo) and its winner seals the bucket of the second it
// leaves (a CAS that sets the sealed bit: the bucket's counts join the
// closed sums), rolls the buckets of the seconds it passes to sealed and
// empty (what they held leaves the sums: resilience4j's
// moveWindowToCurrentEpochSecond) and the new second's to open. A writer
// whose add finds its bucket sealed (its second closed between its check and
// its add) adds its outcome to the closed sums itself; one whose second is
// behind the head but in the window adds to that second's sealed bucket and
// to the sums by one CAS; one whose second has left the window is dropped.
// So once the writers are done, the closed sums are exactly the sealed
// buckets of the window's seconds. Reads at any other time sum the buckets
// of the window's seconds and skip the others: rolled on read, no timer. A
// bucket counts at most kMaxBucketCalls outcomes per second (more are
// dropped, so rates stay right at that cap).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>

#include "atomic_pair.hpp"
#include "backoff.hpp"

// The common record (a count window's, a time window's outcome of the head's
// second) is inlined whole into its caller, the breaker's window hook, where
// the totals it returns stay in registers; the time window's rare paths are
// out of line. (Left to itself, GCC inlined the rare paths and called the
// closed sums' read, its totals through memory.)
#if defined(_MSC_VER)
#define VIRTRIGAUD_WINDOW_HOT __forceinline
#define VIRTRIGAUD_WINDOW_COLD __declspec(noinline)
#else
#define VIRTRIGAUD_WINDOW_HOT inline __attribute__((always_inline))
#define VIRTRIGAUD_WINDOW_COLD __attribute__((noinline))
#endif

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
    /// Outcomes one second's bucket counts (2^20 - 1; its fields hold 2^21 - 1,
    /// room for the writers in flight when it fills).
    static constexpr uint32_t kMaxBucketCalls = (1u << 20) - 1;
    static constexpr uint64_t kEpochMask = (uint64_t{1} << 24) - 1;

    /// `size` clamped to [1, the kind's maximum] (the binding validates).
    static uint32_t clamped_size(WindowKind kind, uint32_t size) noexcept {
        return std::max<uint32_t>(
            1, std::min(size, kind == WindowKind::kCount ? kMaxCountSize : kMaxTimeSize));
    }
    /// Bytes a window of `kind` and `size` (clamped) needs behind itself:
    /// the count window's ring (2-bit outcomes, 32 to a word), the time
    /// window's closed sums and buckets (plus room to start the buckets on a
    /// cache line of their own: the open bucket is written by every record,
    /// the sums and the window's words only read).
    static size_t bytes_behind(WindowKind kind, uint32_t size) noexcept {
        size = clamped_size(kind, size);
        if (kind == WindowKind::kCount) {
            return words_of(size) * sizeof(std::atomic<uint64_t>);
        }
        return sizeof(TimeSums) + kLine - 1 + size * sizeof(Bucket);
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
                new (&buckets()[i]) Bucket(kFreshKey, kSealed);
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
    /// The count window's position: where its next outcome goes, counted
    /// from the reset (below 2 * size once full; 0 in a time window). For
    /// tests and audits: a success into a full window of successes leaves
    /// it where it was.
    uint32_t position() const noexcept {
        const uint64_t head = head_.load(std::memory_order_acquire);
        return (head & kTimeBit) != 0 ? 0 : static_cast<uint32_t>(head & kPositionMask);
    }

    /// Records one outcome (`bits`: kOutcomeFailed | kOutcomeSlow) of epoch
    /// `epoch` at clock time `now_ns` (>= 0; used by the time window).
    /// Returns false, recording nothing, when the epoch is not the window's.
    bool record(uint32_t epoch, uint8_t bits, int64_t now_ns) noexcept {
        WindowTotals unused;
        return record(epoch, bits, now_ns, unused);
    }
    /// record(), and when it returns true, `judged` holds the window's
    /// contents right after it, as judged_totals(now_ns) would give them
    /// (what the breaker judges by; in O(1), from what the record read).
    VIRTRIGAUD_WINDOW_HOT bool record(uint32_t epoch, uint8_t bits, int64_t now_ns,
                                      WindowTotals& judged) noexcept {
        const uint64_t head = head_.load(std::memory_order_acquire);
        if ((head >> kEpochShift) != (epoch & kEpochMask)) {
            return false;
        }
        if ((head & kTimeBit) == 0) {
            if (bits == 0 && (head & kPositionMask) >= size_of(head) &&
                tallies_.load(std::memory_order_relaxed) == 0) {
                // A success into a full window of successes: nothing to
                // write (see "Successes into a window of successes" above).
                judged = WindowTotals{size_of(head), 0, 0};
                return true;
            }
            judged = record_count(bits);
            return true;
        }
        judged = record_time(epoch & kEpochMask, bits, now_ns);
        return true;
    }

    /// The window's contents at `now_ns` (count: the last outcomes; time:
    /// the buckets of the last size() seconds up to now's).
    WindowTotals totals(int64_t now_ns) const noexcept {
        return kind() == WindowKind::kCount ? count_totals() : time_totals(now_ns);
    }

    /// The window's contents right after a record() at `now_ns`, in O(1):
    /// the time window's closed sums plus its open bucket when `now_ns` is
    /// in the head's second (exact then once the writers are done; else the
    /// buckets summed), the count window's totals(). What the breaker
    /// judges by.
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
        tallies_.store(kNoHead, std::memory_order_relaxed);
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
    // Returns the window's contents right after the outcome. Inlined too: a
    // window holding a failure takes this path for its every outcome (out of
    // line, a breaker with one failure in 64 calls recorded 19 ns against 16).
    VIRTRIGAUD_WINDOW_HOT WindowTotals record_count(uint8_t bits) noexcept {
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
        return count_totals();
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
    // counts = sealed << 63 | calls << 42 | failures << 21 | slow, 21 bits
    // each. A bucket takes kMaxBucketCalls = 2^20 - 1 outcomes, checked
    // before the add: writers that checked before it filled go past it by
    // one each, far from a field's 2^21 (below 2^20 writers at once).
    struct Bucket {
        explicit Bucket(uint64_t key, uint64_t counts) noexcept : pair(key, counts) {}
        AtomicPair pair;
    };
    /// The closed sums: the counts of the window's sealed buckets (see the
    /// file comment). Signed: one writer's part may land before another's
    /// that it follows, for a moment.
    struct TimeSums {
        std::atomic<int64_t> calls{0};
        std::atomic<int64_t> failures{0};
        std::atomic<int64_t> slow{0};
    };
    static constexpr size_t kLine = 64;
    static constexpr uint64_t kField = (uint64_t{1} << 21) - 1;
    static constexpr uint64_t kSealed = uint64_t{1} << 63;
    // The head word (tallies_ in a time window): (second + 1) << kOffsetBits
    // | the byte offset of its bucket from the window, so that the common
    // record finds the open bucket with one add (no index to scale, no
    // alignment to redo); kNoHead before the epoch's first record.
    static constexpr int kOffsetBits = 16;
    static constexpr uint64_t kOffsetMask = (uint64_t{1} << kOffsetBits) - 1;
    static constexpr uint64_t kNoHead = 0;
    static_assert(kMaxBucketCalls <= (kField >> 1), "room above the cap for writers in flight");

    // What lies behind the window: the ring's words, or the sums then the
    // buckets (from the next cache line on).
    std::atomic<uint64_t>* words() const noexcept {
        return reinterpret_cast<std::atomic<uint64_t>*>(const_cast<SlidingWindow*>(this) + 1);
    }
    TimeSums* sums() const noexcept { return reinterpret_cast<TimeSums*>(words()); }
    Bucket* buckets() const noexcept {
        const uintptr_t after = reinterpret_cast<uintptr_t>(sums() + 1);
        return reinterpret_cast<Bucket*>((after + kLine - 1) & ~uintptr_t{kLine - 1});
    }
    static uint64_t key_of(uint64_t epoch, int64_t second) noexcept {
        return (epoch & kEpochMask) << kEpochShift |
               (static_cast<uint64_t>(second) & kSecondMask);
    }
    /// A fresh bucket: sealed and empty, of an epoch no window starts in
    /// (buckets of another epoch than the window's read as empty).
    static constexpr uint64_t kFreshKey = kEpochMask << kEpochShift;
    uint64_t head_word(int64_t second, uint32_t index) const noexcept {
        return (static_cast<uint64_t>(second) + 1) << kOffsetBits | offset_of(index);
    }
    static int64_t head_second_of(uint64_t head) noexcept {
        return static_cast<int64_t>(head >> kOffsetBits) - 1;  // -1: no head
    }
    /// The bytes from the window to bucket `index`.
    uint64_t offset_of(uint32_t index) const noexcept {
        static_assert(sizeof(TimeSums) + kLine + kMaxTimeSize * sizeof(Bucket) + 16 <= kOffsetMask,
                      "a bucket's offset must fit the head word");
        return static_cast<uint64_t>(reinterpret_cast<const char*>(&buckets()[index]) -
                                     reinterpret_cast<const char*>(this));
    }
    /// The bucket of head word `head` (not kNoHead), and its index.
    VIRTRIGAUD_WINDOW_HOT Bucket& bucket_of(uint64_t head) const noexcept {
        return *reinterpret_cast<Bucket*>(
            reinterpret_cast<char*>(const_cast<SlidingWindow*>(this)) + (head & kOffsetMask));
    }
    uint32_t index_of(uint64_t head) const noexcept {
        return static_cast<uint32_t>(((head & kOffsetMask) - offset_of(0)) / sizeof(Bucket));
    }
    static int64_t second_of(int64_t now_ns) noexcept {
        return (now_ns < 0 ? 0 : now_ns) / kNsPerSecond;
    }
    /// What an outcome adds to its bucket's counts (one call, and its bits).
    static uint64_t one_of(uint8_t bits) noexcept {
        constexpr uint64_t kCall = uint64_t{1} << 42;
        constexpr uint64_t kFailure = uint64_t{1} << 21;
        static constexpr uint64_t kOne[4] = {kCall, kCall | kFailure, kCall | 1, kCall | kFailure | 1};
        static_assert(kOutcomeFailed == 1 && kOutcomeSlow == 2, "kOne is indexed by the bits");
        return kOne[bits & 3u];
    }
    static uint32_t calls_of(uint64_t c) noexcept {
        return static_cast<uint32_t>((c >> 42) & kField);
    }
    static uint32_t failures_of(uint64_t c) noexcept {
        return static_cast<uint32_t>((c >> 21) & kField);
    }
    static uint32_t slow_of(uint64_t c) noexcept { return static_cast<uint32_t>(c & kField); }
    /// Whether a bucket keyed `have` may be replaced by `key` (of epoch `e`):
    /// an earlier second of the epoch, or another epoch's when `e` is the
    /// window's (a writer of an earlier epoch replaces nothing).
    bool older(uint64_t have, uint64_t key, uint64_t e) const noexcept {
        if ((have >> kEpochShift) == e) {
            return (have & kSecondMask) < (key & kSecondMask);
        }
        return (head_.load(std::memory_order_acquire) >> kEpochShift) == e;
    }

    /// One outcome of epoch `e` (the window's when read) at `now_ns`.
    /// Returns the window's contents right after it (by value: in registers,
    /// where the breaker judges them).
    VIRTRIGAUD_WINDOW_HOT WindowTotals record_time(uint64_t e, uint8_t bits,
                                                   int64_t now_ns) noexcept {
        const int64_t second = second_of(now_ns);
        const uint64_t one = one_of(bits);
        const uint64_t head = tallies_.load(std::memory_order_acquire);
        if (head_second_of(head) == second) {
            // The common case, the head's second: one add to its open bucket.
            Bucket& b = bucket_of(head);
            const AtomicPair::Value v = b.pair.load();
            if (v.first == key_of(e, second) && calls_of(v.second) < kMaxBucketCalls) {
                const uint64_t prev = b.pair.fetch_add_second(one);
                if ((prev & kSealed) == 0) {
                    return closed_plus(prev + one);
                }
                return closed_meanwhile(e, one);
            }
        }
        return record_time_rest(e, second, one);
    }
    /// An outcome added to its bucket after the bucket was sealed (its second
    /// closed between the check and the add): it joins the closed sums.
    VIRTRIGAUD_WINDOW_COLD WindowTotals closed_meanwhile(uint64_t e, uint64_t one) noexcept {
        add_sums(one, 1);
        return running_totals(e);
    }

    // Out of line: a record that moves the head, finds the head's bucket
    // not yet its second's or full, or comes late (its second behind the head).
    VIRTRIGAUD_WINDOW_COLD
    WindowTotals record_time_rest(uint64_t e, int64_t second, uint64_t one) noexcept {
        uint64_t head = tallies_.load(std::memory_order_acquire);
        for (;;) {
            const int64_t h = head_second_of(head);
            if (second == h) {
                return add_open(e, second, index_of(head), one);
            }
            if (second < h) {
                add_late(e, second, h, one);
                return running_totals(e);
            }
            const auto index = static_cast<uint32_t>(static_cast<uint64_t>(second) % size());
            if (tallies_.compare_exchange_weak(head, head_word(second, index),
                                               std::memory_order_acq_rel,
                                               std::memory_order_acquire)) {
                if (h >= 0) {
                    move_past(e, h, index_of(head), second, index);
                }
                return add_open(e, second, index, one);
            }
        }
    }
    /// Adds `one` to the open bucket (`index`) of `second`, the head's when
    /// read: rolls it to `second` if it holds an earlier one.
    WindowTotals add_open(uint64_t e, int64_t second, uint32_t index, uint64_t one) noexcept {
        Bucket& b = buckets()[index];
        const uint64_t key = key_of(e, second);
        AtomicPair::Value v = b.pair.load();
        for (;;) {
            if (v.first == key) {
                if (calls_of(v.second) >= kMaxBucketCalls) {
                    break;  // full: dropped
                }
                const uint64_t prev = b.pair.fetch_add_second(one);
                if ((prev & kSealed) == 0) {
                    return closed_plus(prev + one);
                }
                add_sums(one, 1);  // the second has closed meanwhile
                break;
            }
            if (!older(v.first, key, e)) {
                break;  // a later second holds the bucket: this one has left the window
            }
            if (b.pair.compare_exchange(v, {key, one})) {
                forget(e, v);
                return closed_plus(one);
            }
        }
        return running_totals(e);
    }
    /// Adds `one` to the bucket of `second`, behind the head `h` (sealed, or
    /// about to be: its sealer counts it then), and to the closed sums if
    /// sealed; dropped if its second has left the window.
    void add_late(uint64_t e, int64_t second, int64_t h, uint64_t one) noexcept {
        if (second <= h - static_cast<int64_t>(size())) {
            return;
        }
        Bucket& b = buckets()[static_cast<uint64_t>(second) % size()];
        const uint64_t key = key_of(e, second);
        AtomicPair::Value v = b.pair.load();
        for (;;) {
            if (v.first == key) {
                if (calls_of(v.second) >= kMaxBucketCalls) {
                    return;
                }
                if (b.pair.compare_exchange(v, {key, v.second + one})) {
                    if ((v.second & kSealed) != 0) {
                        add_sums(one, 1);
                    }
                    return;
                }
                continue;
            }
            if (!older(v.first, key, e)) {
                return;
            }
            if (b.pair.compare_exchange(v, {key, kSealed | one})) {
                forget(e, v);
                add_sums(one, 1);
                return;
            }
        }
    }
    /// The head moved from `h` to `s` (`s_index` its bucket): the bucket of
    /// `h` is sealed if `h` is still in the window, and the seconds between
    /// get sealed, empty buckets, which takes what those held out of the
    /// closed sums (the bucket of `s` is rolled by the record that moved it).
    void move_past(uint64_t e, int64_t h, uint32_t h_index, int64_t s, uint32_t s_index) noexcept {
        if (epoch() != e) {
            return;  // reset meanwhile: these seconds are another epoch's
        }
        const int64_t size = this->size();
        if (h > s - size) {
            seal(e, h, h_index);
        }
        int64_t x = h + 1;
        uint32_t index = h_index;
        if (x <= s - size) {
            x = s - size + 1;  // the bucket after s's
            index = s_index;
        }
        for (; x < s; ++x) {
            index = index + 1 == static_cast<uint32_t>(size) ? 0 : index + 1;
            seal(e, x, index);
        }
    }
    /// Gives the bucket of second `x` to `x`, sealed: its counts (an open
    /// bucket's) join the closed sums, or, if it holds an earlier second,
    /// it is emptied; a later second's is left alone.
    void seal(uint64_t e, int64_t x, uint32_t index) noexcept {
        Bucket& b = buckets()[index];
        const uint64_t key = key_of(e, x);
        AtomicPair::Value v = b.pair.load();
        for (;;) {
            if (v.first == key) {
                if ((v.second & kSealed) != 0) {
                    return;
                }
                if (b.pair.compare_exchange(v, {key, v.second | kSealed})) {
                    add_sums(v.second, 1);
                    return;
                }
                continue;
            }
            if (!older(v.first, key, e)) {
                return;
            }
            if (b.pair.compare_exchange(v, {key, kSealed})) {
                forget(e, v);
                return;
            }
        }
    }
    /// Takes a replaced bucket's counts out of the closed sums if they were
    /// in them (sealed, of this epoch: a reset zeroed the sums).
    void forget(uint64_t e, const AtomicPair::Value& old) noexcept {
        if ((old.first >> kEpochShift) == e && (old.second & kSealed) != 0) {
            add_sums(old.second, -1);
        }
    }
    /// Adds `counts` (a bucket's fields) times `sign` to the closed sums.
    void add_sums(uint64_t counts, int64_t sign) noexcept {
        TimeSums& s = *sums();
        if (const uint32_t c = calls_of(counts)) {
            s.calls.fetch_add(sign * c, std::memory_order_relaxed);
        }
        if (const uint32_t f = failures_of(counts)) {
            s.failures.fetch_add(sign * f, std::memory_order_relaxed);
        }
        if (const uint32_t sl = slow_of(counts)) {
            s.slow.fetch_add(sign * sl, std::memory_order_relaxed);
        }
    }
    /// The closed sums plus an open bucket's `counts`, clamped (exact once
    /// the writers are done).
    VIRTRIGAUD_WINDOW_HOT WindowTotals closed_plus(uint64_t counts) const noexcept {
        const TimeSums& s = *sums();
        const int64_t calls = s.calls.load(std::memory_order_relaxed) + calls_of(counts);
        const int64_t failures = s.failures.load(std::memory_order_relaxed) + failures_of(counts);
        const int64_t slow = s.slow.load(std::memory_order_relaxed) + slow_of(counts);
        // Unsigned, a negative count compares above any other: one test per
        // count for the common case, all in range.
        if (static_cast<uint64_t>(calls) <= UINT32_MAX &&
            static_cast<uint64_t>(failures) <= static_cast<uint64_t>(calls) &&
            static_cast<uint64_t>(slow) <= static_cast<uint64_t>(calls)) {
            return WindowTotals{static_cast<uint32_t>(calls), static_cast<uint32_t>(failures),
                                static_cast<uint32_t>(slow)};
        }
        WindowTotals t;
        t.calls = calls <= 0 ? 0 : static_cast<uint32_t>(std::min<int64_t>(calls, UINT32_MAX));
        t.failures = clamped(failures, t.calls);
        t.slow = clamped(slow, t.calls);
        return t;
    }
    /// The closed sums plus the head's open bucket.
    WindowTotals running_totals(uint64_t e) const noexcept {
        const uint64_t head = tallies_.load(std::memory_order_acquire);
        uint64_t open = 0;
        if (head != kNoHead) {
            const AtomicPair::Value v = bucket_of(head).pair.load();
            if (v.first == key_of(e, head_second_of(head)) && (v.second & kSealed) == 0) {
                open = v.second;
            }
        }
        return closed_plus(open);
    }

    // Out of line: judged_totals() stays small enough to inline.
    VIRTRIGAUD_WINDOW_COLD
    WindowTotals judged_time_totals(int64_t now_ns) const noexcept {
        if (head_second_of(tallies_.load(std::memory_order_acquire)) != second_of(now_ns)) {
            return time_totals(now_ns);  // the head is elsewhere: sum the buckets
        }
        return running_totals(epoch());
    }
    WindowTotals time_totals(int64_t now_ns) const noexcept {
        const uint64_t e = epoch();
        const uint32_t size = this->size();
        const int64_t now_second = second_of(now_ns);
        const int64_t oldest = now_second - static_cast<int64_t>(size) + 1;
        WindowTotals t;
        for (uint32_t i = 0; i < size; ++i) {
            // Both words of one moment: the second word is read again after
            // the key, and the key once more (a bucket's key only changes by a
            // CAS of both, so equal keys around a count are one state of it,
            // the count one of that key's).
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
    // The count window's failures and slow outcomes; the time window's head word.
    std::atomic<uint64_t> tallies_{0};
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

    /// Whether `t` (judged over at least `minimum` outcomes) crosses a
    /// threshold. The rates must be in (0, 1] (SharedWindowSettings clamps
    /// them), so a window without failures or slow calls never does: the
    /// healthy breaker's every outcome returns before the arithmetic.
    bool exceeded(const WindowTotals& t, uint32_t minimum) const noexcept {
        if ((t.failures | t.slow) == 0 || t.calls == 0 || t.calls < minimum) {
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
        s.failure_rate = clamped_rate(s.failure_rate);
        s.slow_call_rate = clamped_rate(s.slow_call_rate);
        return s;
    }
    /// A rate in (0, 1] (the binding validates): above 1 is 1, and 0, below
    /// or NaN the smallest positive rate (opens at the first failure).
    static double clamped_rate(double r) noexcept {
        if (!(r > 0.0)) {
            return std::numeric_limits<double>::min();
        }
        return r > 1.0 ? 1.0 : r;
    }

    const WindowSettings settings_;
    mutable std::atomic<uint32_t> refs_{1};
};

/// What a breaker in window mode holds beside its state word: one
/// allocation, only for such a breaker (the consecutive breaker carries a
/// null pointer), sized to its ring: 72 bytes for CountWindow(100). The
/// settings are shared; what else window mode keeps per breaker (openings,
/// slow calls, the start of half-open) lives in the breaker's own spare bytes.
///
/// Layout: the settings' pointer, the opening's duration, the window (its
/// head word and counts, then its ring or buckets), then the half-open
/// round. The window starts 16 bytes in, so its head word and counts, which
/// every record reads together, lie in one 16-byte-aligned pair and never
/// straddle two cache lines (the allocation is aligned to 16); the round,
/// read by half-open probes only, takes the 8 bytes behind the ring
/// instead of a third word in front, so the allocation keeps its size.
class BreakerWindow {
    const SharedWindowSettings* shared_;  // first: the window must be last

public:
    /// A window for `settings` (retained); null if out of memory.
    static BreakerWindow* create(const SharedWindowSettings& settings) noexcept {
        const WindowSettings& s = settings.get();
        const size_t bytes = round_offset(SlidingWindow::bytes_behind(s.kind, s.size)) + sizeof(Round);
        void* p = ::operator new(bytes, std::nothrow);
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
    /// Bytes of this allocation (the window's own part, its ring, the round).
    size_t allocated_bytes() const noexcept {
        return round_offset(window.ring_bytes()) + sizeof(Round);
    }
    bool timed() const noexcept { return settings().slow_call_ns >= 0; }

    using Round = std::atomic<uint64_t>;
    /// The half-open round: epoch (16 bits of the generation) << 48 |
    /// reported << 32 | failed << 16 | slow. A round of another epoch reads
    /// as empty. Behind the ring (see the class comment).
    Round& round() noexcept {
        return *reinterpret_cast<Round*>(reinterpret_cast<char*>(this) +
                                         round_offset(window.ring_bytes()));
    }
    /// How long the current opening lasts (open_backoff only).
    std::atomic<int64_t> open_for_ns{0};
    /// Last: its ring or buckets follow it in the same allocation.
    SlidingWindow window;

private:
    explicit BreakerWindow(const SharedWindowSettings& settings) noexcept
        : shared_(&settings), window(settings.get().kind, settings.get().size) {
        settings.retain();
        new (&round()) Round(0);
    }
    ~BreakerWindow() { shared_->release(); }
    /// Where the round lies: behind the window's `ring_bytes`, 8-aligned.
    static size_t round_offset(size_t ring_bytes) noexcept {
        return sizeof(BreakerWindow) + (ring_bytes + alignof(Round) - 1) / alignof(Round) *
                                           alignof(Round);
    }
};
static_assert(sizeof(BreakerWindow) == 16 + sizeof(SlidingWindow),
              "the window starts 16 bytes in (its head word and counts in one aligned pair) "
              "and nothing lies between it and what follows it");
static_assert(sizeof(SlidingWindow) == 16, "the head word and the counts: one 16-byte pair");

}  // namespace virtrigaud
