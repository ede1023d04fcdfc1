// Monotonic time in int64 nanoseconds, and a clock tests can drive by hand.
//
// Every primitive holds an optional `const ManualClock*`: null means the
// steady clock. That is one well-predicted branch per read, and no virtual
// call, on the hot path.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#if defined(__linux__)
#include <time.h>
#endif

namespace virtrigaud {

/// Nanoseconds from std::chrono::steady_clock (CLOCK_MONOTONIC on Linux,
/// read through the vDSO: no syscall). Never wall-clock time.
inline int64_t steady_now_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

/// The monotonic clock at tick resolution (CLOCK_MONOTONIC_COARSE on
/// Linux: the steady clock's time as of the kernel's last tick, behind it by
/// at most a tick, 1-10 ms; a few loads to read, about 6 ns against 20-60 for
/// steady_now_ns() in a VM). For times that a tick cannot blur: a retry
/// budget's slots (>= 100 ms), a time window's one-second buckets. Elsewhere
/// the steady clock.
inline int64_t coarse_now_ns() noexcept {
#if defined(__linux__) && defined(CLOCK_MONOTONIC_COARSE)
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
#else
    return steady_now_ns();
#endif
}

/// The latest time any clock may read: 2^62 ns (about 146 years). Keeping
/// time below it leaves room for every sum the primitives form (a time plus
/// a refill period plus a wait stays below 2^63).
constexpr int64_t kMaxClockNs = int64_t{1} << 62;

/// A clock that moves only when told to. Thread-safe; never goes backwards;
/// stays within [0, kMaxClockNs] whatever it is told (it saturates).
class ManualClock {
public:
    explicit ManualClock(int64_t start_ns = 0) noexcept : now_(clamp_time(start_ns)) {}

    int64_t now() const noexcept { return now_.load(std::memory_order_acquire); }

    /// Moves time forward by `delta_ns`; a negative delta does nothing and
    /// time stops at kMaxClockNs.
    void advance(int64_t delta_ns) noexcept {
        if (delta_ns <= 0) {
            return;
        }
        int64_t current = now_.load(std::memory_order_relaxed);
        for (;;) {
            const int64_t next = current > kMaxClockNs - delta_ns ? kMaxClockNs : current + delta_ns;
            if (now_.compare_exchange_weak(current, next, std::memory_order_acq_rel,
                                           std::memory_order_relaxed)) {
                return;
            }
        }
    }

    /// Sets the time to `t_ns` (clamped to [0, kMaxClockNs]) if that is not
    /// in the past; returns whether it moved.
    bool set(int64_t t_ns) noexcept {
        t_ns = clamp_time(t_ns);
        int64_t current = now_.load(std::memory_order_relaxed);
        while (t_ns >= current) {
            if (now_.compare_exchange_weak(current, t_ns, std::memory_order_acq_rel)) {
                return true;
            }
        }
        return false;
    }

private:
    static int64_t clamp_time(int64_t t) noexcept {
        return t < 0 ? 0 : (t > kMaxClockNs ? kMaxClockNs : t);
    }

    std::atomic<int64_t> now_;
};

/// The time from `clock`, or from the steady clock when it is null.
inline int64_t now_ns(const ManualClock* clock) noexcept {
    return clock != nullptr ? clock->now() : steady_now_ns();
}

}  // namespace virtrigaud
