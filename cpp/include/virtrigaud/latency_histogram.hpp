// A latency histogram of the last `window` samples, lock-free, fixed size.
//
// What hedging asks of it: "what is the p95 of this policy's recent
// successful latencies?", once per call, from any thread, while other calls
// record theirs. A sorted window would need a lock (or a copy and a sort per
// query); this keeps, instead, a count per log-linear bucket (16 buckets per
// power of two, so a bucket is at most 6.25% wide) and a ring of the last
// `window` samples' buckets, so that a new sample evicts the oldest:
//
//   record(ns): slot = next++ % window; old = ring[slot].exchange(bucket);
//               counts[bucket]++; counts[old]--           (all relaxed atomics)
//   percentile(q): one pass over the 608 counts, linear within the bucket.
//
// Concurrent records that race on a slot (a window's length apart) each
// decrement exactly the sample they replaced, so the counts stay exact once
// the writers are done; meanwhile a count may dip below zero for an instant
// (the decrement before its increment), which a query reads as zero. A query
// concurrent with records is a moment's approximation; nothing is lost.
// Values are nanoseconds in [0, 2^40) (about 18 minutes; larger ones clamp).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace virtrigaud {

class LatencyHistogram {
public:
    static constexpr int kSubBits = 4;                 // 16 buckets per power of two
    static constexpr int kSub = 1 << kSubBits;
    static constexpr int kMaxExponent = 40;            // values below 2^40 ns
    static constexpr int kBuckets = (kMaxExponent - kSubBits + 2) * kSub;  // 608
    static constexpr uint64_t kMaxValue = (uint64_t{1} << kMaxExponent) - 1;
    static constexpr int64_t kMaxWindow = 1'000'000;

    /// window in [1, kMaxWindow] (clamped).
    explicit LatencyHistogram(int64_t window)
        : window_(window < 1 ? 1 : (window > kMaxWindow ? kMaxWindow : window)),
          ring_(new std::atomic<uint16_t>[static_cast<size_t>(window_)]) {
        for (int64_t i = 0; i < window_; ++i) {
            ring_[static_cast<size_t>(i)].store(0, std::memory_order_relaxed);
        }
        for (auto& count : counts_) {
            count.store(0, std::memory_order_relaxed);
        }
    }

    int64_t window() const noexcept { return window_; }

    /// Samples held: the samples recorded, up to the window.
    int64_t count() const noexcept {
        const uint64_t n = next_.load(std::memory_order_relaxed);
        return n < static_cast<uint64_t>(window_) ? static_cast<int64_t>(n) : window_;
    }

    /// Samples recorded since construction (never decreases).
    uint64_t recorded() const noexcept { return next_.load(std::memory_order_relaxed); }

    void record(uint64_t ns) noexcept {
        const int bucket = bucket_of(ns);
        const uint64_t slot = next_.fetch_add(1, std::memory_order_relaxed) %
                              static_cast<uint64_t>(window_);
        // Stored as bucket + 1: 0 marks a slot never written.
        const uint16_t old = ring_[slot].exchange(static_cast<uint16_t>(bucket + 1),
                                                  std::memory_order_relaxed);
        counts_[bucket].fetch_add(1, std::memory_order_relaxed);
        if (old != 0) {
            counts_[old - 1].fetch_sub(1, std::memory_order_relaxed);
        }
    }

    /// The q-quantile (q in (0, 1)) of the held samples in nanoseconds,
    /// linear within its bucket; -1 when fewer than `min_samples` are held.
    double quantile(double q, int64_t min_samples) const noexcept {
        int64_t snapshot[kBuckets];
        int64_t total = 0;
        for (int i = 0; i < kBuckets; ++i) {
            const int64_t c = counts_[i].load(std::memory_order_relaxed);
            snapshot[i] = c > 0 ? c : 0;
            total += snapshot[i];
        }
        if (total == 0 || total < min_samples) {
            return -1.0;
        }
        const double rank = q * static_cast<double>(total);
        int64_t below = 0;
        for (int i = 0; i < kBuckets; ++i) {
            const int64_t c = snapshot[i];
            if (c > 0 && static_cast<double>(below + c) >= rank) {
                const double lower = static_cast<double>(lower_bound(i));
                const double upper = static_cast<double>(lower_bound(i + 1));
                const double within = (rank - static_cast<double>(below)) / static_cast<double>(c);
                return lower + (upper - lower) * (within < 0 ? 0 : within);
            }
            below += c;
        }
        return static_cast<double>(lower_bound(kBuckets));  // rounding: the top
    }

    /// The bucket of a value: exact below 16 ns, then 16 per power of two.
    static int bucket_of(uint64_t ns) noexcept {
        if (ns > kMaxValue) {
            ns = kMaxValue;
        }
        if (ns < static_cast<uint64_t>(kSub)) {
            return static_cast<int>(ns);
        }
        const int exponent = floor_log2(ns);  // >= kSubBits
        const int mantissa = static_cast<int>((ns >> (exponent - kSubBits)) & (kSub - 1));
        return (exponent - kSubBits + 1) * kSub + mantissa;
    }

    /// The least value of bucket `i` (i == kBuckets: one past the largest value).
    static uint64_t lower_bound(int i) noexcept {
        if (i < kSub) {
            return static_cast<uint64_t>(i);
        }
        const int exponent = i / kSub + kSubBits - 1;
        const uint64_t mantissa = static_cast<uint64_t>(kSub + i % kSub);
        return mantissa << (exponent - kSubBits);
    }

private:
    static int floor_log2(uint64_t v) noexcept {
#if defined(__GNUC__) || defined(__clang__)
        return 63 - __builtin_clzll(v);
#else
        int e = 0;
        while (v >>= 1) {
            ++e;
        }
        return e;
#endif
    }

    const int64_t window_;
    std::unique_ptr<std::atomic<uint16_t>[]> ring_;
    std::atomic<int64_t> counts_[kBuckets];
    std::atomic<uint64_t> next_{0};
};

}  // namespace virtrigaud
