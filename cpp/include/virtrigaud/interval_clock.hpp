// A clock for timing intervals (round trips) cheaply.
//
// Reading the steady clock costs 20-40 ns (clock_gettime through the vDSO;
// more in some VMs), and an adaptive limit reads it twice per call: more
// than the rest of its acquire and release together. Where the kernel keeps
// CLOCK_MONOTONIC on the CPU's time-stamp counter itself (x86-64 Linux with
// clocksource "tsc": the kernel checked that it is invariant and in step
// across CPUs), IntervalClock reads the counter (rdtsc, about 10 ns) and
// scales it to nanoseconds by a rate measured once against the steady
// clock; anywhere else it is the steady clock.
//
// Its readings start at the steady clock's time when it was calibrated and
// run at the steady clock's rate to about 1e-4: fine for intervals (a round
// trip, a sampling window), not for comparing with another clock over hours.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "clock.hpp"

// VIRTRIGAUD_NO_TSC: the steady clock everywhere (what other platforms build).
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(VIRTRIGAUD_NO_TSC)
#include <x86intrin.h>
#define VIRTRIGAUD_INTERVAL_TSC 1
#endif

namespace virtrigaud {

class IntervalClock {
public:
    /// Nanoseconds (see the file's comment). Thread-safe.
    int64_t now() const noexcept {
#ifdef VIRTRIGAUD_INTERVAL_TSC
        if (mult_ != 0) {
            const uint64_t ticks = __rdtsc() - tsc0_;
            return ns0_ + static_cast<int64_t>(
                              (static_cast<unsigned __int128>(ticks) * mult_) >> kShift);
        }
#endif
        return steady_now_ns();
    }

    /// Whether it reads the time-stamp counter (false: the steady clock).
    bool reads_tsc() const noexcept { return mult_ != 0; }

    /// The process's clock, calibrated on first use (about 1 ms, once).
    static const IntervalClock& instance() noexcept {
        static const IntervalClock clock;
        return clock;
    }

private:
    static constexpr int kShift = 32;

    IntervalClock() noexcept {
#ifdef VIRTRIGAUD_INTERVAL_TSC
        if (!kernel_uses_tsc()) {
            return;
        }
        // The counter's rate against the steady clock over >= 1 ms. Each end
        // is a steady read between two counter reads, the tightest of 16 (a
        // preemption inside a pair would skew the rate by its length): its
        // error is the ~30 ns a steady read takes, 3e-5 of the span.
        const Pair first = paired_read();
        while (steady_now_ns() - first.ns < 1'000'000) {
        }
        const Pair last = paired_read();
        const uint64_t t0 = first.tsc, t1 = last.tsc;
        const int64_t s0 = first.ns, s1 = last.ns;
        if (t1 <= t0 || s1 <= s0) {
            return;
        }
        const double ns_per_tick = static_cast<double>(s1 - s0) / static_cast<double>(t1 - t0);
        if (!(ns_per_tick > 0.0) || ns_per_tick > 100.0) {
            return;  // a counter slower than 10 MHz is no counter to trust
        }
        tsc0_ = t0;
        ns0_ = s0;
        mult_ = static_cast<uint64_t>(ns_per_tick * static_cast<double>(uint64_t{1} << kShift));
#endif
    }

#ifdef VIRTRIGAUD_INTERVAL_TSC
    struct Pair {
        uint64_t tsc;  // the middle of the two counter reads around ns
        int64_t ns;
    };

    static Pair paired_read() noexcept {
        Pair best{0, 0};
        uint64_t width = ~uint64_t{0};
        for (int i = 0; i < 16; ++i) {
            const uint64_t before = __rdtsc();
            const int64_t ns = steady_now_ns();
            const uint64_t after = __rdtsc();
            if (after - before < width) {
                width = after - before;
                best = Pair{before + (after - before) / 2, ns};
            }
        }
        return best;
    }

    static bool kernel_uses_tsc() noexcept {
        std::FILE* f =
            std::fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
        if (f == nullptr) {
            return false;
        }
        char name[32] = {0};
        const bool read = std::fgets(name, sizeof(name), f) != nullptr;
        std::fclose(f);
        return read && std::strncmp(name, "tsc\n", 4) == 0;
    }
#endif

#ifdef VIRTRIGAUD_INTERVAL_TSC
    uint64_t tsc0_ = 0;  // the counter and the steady clock at calibration
    int64_t ns0_ = 0;
#endif
    uint64_t mult_ = 0;  // ns per tick, times 2^kShift; 0: the steady clock
};

}  // namespace virtrigaud
