// Backoff delays: pure functions of (config, attempt, one uniform draw).
//
// exponential          d = min(base * multiplier^attempt, max); with jitter
//                      d += uniform[0, 0.1 * d)  (the Virtrigaud guide)
// full_jitter          uniform[0, min(base * multiplier^attempt, max))
// equal_jitter         d/2 + uniform[0, d/2), d as in full_jitter
// decorrelated_jitter  min(max, uniform[base, max(base, 3 * previous)))
//                      (previous = the delay returned before; AWS's formula)
//
// No attempt >= 0 yields NaN, infinity or overflow: a multiplier^attempt
// that overflows saturates at max.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <thread>

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <unistd.h>
#endif

namespace virtrigaud {

/// SplitMix64's output function: a bijective 64-bit mixer.
inline uint64_t splitmix64(uint64_t x) noexcept {
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

/// xoshiro256**: fast, small-state, good statistical quality.
class Xoshiro256 {
public:
    explicit Xoshiro256(uint64_t seed) noexcept {
        for (auto& word : s_) {
            seed = splitmix64(seed);
            word = seed;
        }
    }
    uint64_t next() noexcept {
        const uint64_t result = rotl(s_[1] * 5, 7) * 9;
        const uint64_t t = s_[1] << 17;
        s_[2] ^= s_[0];
        s_[3] ^= s_[1];
        s_[1] ^= s_[2];
        s_[0] ^= s_[3];
        s_[2] ^= t;
        s_[3] = rotl(s_[3], 45);
        return result;
    }

private:
    static uint64_t rotl(uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }
    uint64_t s_[4];
};

/// A uniform double in [0, 1) from the top 53 bits.
inline double to_unit(uint64_t bits) noexcept {
    return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

/// Bumped in the child after every fork(), so that each thread's generator
/// knows to reseed: without it, every worker of a pre-fork server would draw
/// the parent's sequence and retry in lockstep.
inline std::atomic<uint64_t>& fork_count() noexcept {
    static std::atomic<uint64_t> count{0};
    return count;
}

inline void count_forks() noexcept {
#if defined(__unix__) || defined(__APPLE__)
    static const bool registered = [] {
        pthread_atfork(nullptr, nullptr,
                       [] { fork_count().fetch_add(1, std::memory_order_relaxed); });
        return true;
    }();
    (void)registered;
#endif
}

/// A fresh seed: std::random_device, the thread, the process and the clock.
inline uint64_t fresh_seed() noexcept {
    uint64_t seed = 0;
    try {
        std::random_device device;
        seed = (static_cast<uint64_t>(device()) << 32) ^ device();
    } catch (...) {
        // No entropy device: the other sources still differ per thread and process.
    }
    seed ^= std::hash<std::thread::id>{}(std::this_thread::get_id());
#if defined(__unix__) || defined(__APPLE__)
    seed ^= splitmix64(static_cast<uint64_t>(getpid()));
#endif
    seed ^= static_cast<uint64_t>(
        std::chrono::high_resolution_clock::now().time_since_epoch().count());
    return seed;
}

/// This thread's generator, seeded on first use and again in a forked child.
inline double thread_uniform() noexcept {
    count_forks();
    struct Stream {
        uint64_t forks = fork_count().load(std::memory_order_relaxed);
        Xoshiro256 rng{fresh_seed()};
    };
    thread_local Stream stream;
    const uint64_t forks = fork_count().load(std::memory_order_relaxed);
    if (stream.forks != forks) {
        stream.forks = forks;
        stream.rng = Xoshiro256(fresh_seed());
    }
    return to_unit(stream.rng.next());
}

enum class Strategy : uint8_t {
    kExponential = 0,
    kFullJitter = 1,
    kEqualJitter = 2,
    kDecorrelatedJitter = 3,
};

/// min(base * multiplier^attempt, cap), saturating; base, cap >= 0, multiplier >= 1.
inline double capped_exponential(double base, double multiplier, double cap,
                                 int64_t attempt) noexcept {
    if (base <= 0) {
        return 0.0;
    }
    const double d = base * std::pow(multiplier, static_cast<double>(attempt));
    return d < cap ? d : cap;  // also catches +inf
}

/// The delay for `attempt` given one uniform draw u in [0, 1).
inline double backoff_delay(Strategy strategy, double base, double cap, double multiplier,
                            bool jitter, int64_t attempt, double previous, double u) noexcept {
    if (attempt < 0) {
        attempt = 0;
    }
    const double d = capped_exponential(base, multiplier, cap, attempt);
    switch (strategy) {
        case Strategy::kExponential: {
            if (!jitter) {
                return d;
            }
            // A cap above DBL_MAX / 1.1 is finite (so valid), but the jitter
            // added to it rounds past DBL_MAX to infinity: keep it finite.
            const double v = d + u * 0.1 * d;
            return v <= std::numeric_limits<double>::max() ? v : std::numeric_limits<double>::max();
        }
        case Strategy::kFullJitter: {
            // u < 1, but u * d can round up to d for subnormal d: keep [0, d).
            const double v = u * d;
            return v < d ? v : std::nextafter(d, 0.0);
        }
        case Strategy::kEqualJitter:
            return d / 2 + u * (d / 2);
        case Strategy::kDecorrelatedJitter: {
            const double prev = previous > 0 ? previous : base;
            const double hi = std::max(base, std::min(cap, prev * 3));
            const double v = base + u * (hi - base);
            return v < cap ? v : cap;
        }
    }
    return d;
}

/// A backoff calculator. Unseeded: draws from the per-thread generator.
/// Seeded: a counter-based SplitMix64 stream, so the sequence of draws is
/// reproducible and safe to share between threads.
class Backoff {
public:
    /// base, cap >= 0 and multiplier >= 1, all finite (the binding validates;
    /// anything else is clamped: NaN and negatives to 0, a multiplier below 1
    /// to 1, a cap below base to base).
    Backoff(double base, double cap, double multiplier, bool jitter, Strategy strategy,
            bool seeded = false, uint64_t seed = 0) noexcept
        : base_(finite_at_least(base, 0.0)),
          cap_(std::max(finite_at_least(cap, 0.0), base_)),
          multiplier_(finite_at_least(multiplier, 1.0)),
          jitter_(jitter),
          strategy_(static_cast<Strategy>(static_cast<uint8_t>(strategy) & 3)),
          seeded_(seeded),
          seed_(seed) {}

    /// Seconds to wait before retry `attempt` (0-based). `previous` is the
    /// delay returned for the previous attempt (decorrelated_jitter only;
    /// <= 0 means none).
    double delay(int64_t attempt, double previous = 0.0) noexcept {
        return backoff_delay(strategy_, base_, cap_, multiplier_, jitter_, attempt, previous,
                             uniform());
    }

    double uniform() noexcept {
        if (!seeded_) {
            return thread_uniform();
        }
        const uint64_t i = draws_.fetch_add(1, std::memory_order_relaxed);
        return to_unit(splitmix64(seed_ + i * 0x9E3779B97F4A7C15ULL));
    }

    double base() const noexcept { return base_; }
    double cap() const noexcept { return cap_; }
    double multiplier() const noexcept { return multiplier_; }
    bool jitter() const noexcept { return jitter_; }
    Strategy strategy() const noexcept { return strategy_; }

private:
    static double finite_at_least(double v, double lo) noexcept {
        return std::isfinite(v) && v >= lo ? v : lo;
    }

    const double base_;
    const double cap_;
    const double multiplier_;
    const bool jitter_;
    const Strategy strategy_;
    const bool seeded_;
    const uint64_t seed_;
    std::atomic<uint64_t> draws_{0};
};

}  // namespace virtrigaud
