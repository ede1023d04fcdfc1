// Two 64-bit words compared-and-swapped as one: a 16-byte CAS.
//
// The token bucket keeps its arrival time beside its rate, and the circuit
// breaker its state beside a 64-bit generation. Each pair must change
// together: an acquirer that computed with one rate must not commit against
// the arrival time of another, and an outcome of an old generation must not
// land in a new one. One 16-byte compare-and-swap validates both words at
// once (cmpxchg16b on x86-64, CASP or LDXP/STXP on AArch64,
// _InterlockedCompareExchange128 on MSVC).
//
// Reads are two 8-byte atomic loads and may be torn (each word from a
// different moment). A mutation never trusts a torn read: its CAS fails
// unless both words still hold what it read, and then hands back the
// current pair. Readers that need a consistent pair without writing use a
// word that only ever grows (see CircuitBreaker::snapshot()).
#pragma once

#include <atomic>
#include <cstdint>

#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#endif

namespace virtrigaud {

class alignas(16) AtomicPair {
public:
    struct Value {
        uint64_t first;
        uint64_t second;
        bool operator==(const Value& o) const noexcept {
            return first == o.first && second == o.second;
        }
    };

    constexpr AtomicPair(uint64_t first, uint64_t second) noexcept : words_{first, second} {}
    AtomicPair(const AtomicPair&) = delete;
    AtomicPair& operator=(const AtomicPair&) = delete;

    uint64_t first(std::memory_order order = std::memory_order_acquire) const noexcept {
        return words_[0].load(order);
    }
    uint64_t second(std::memory_order order = std::memory_order_acquire) const noexcept {
        return words_[1].load(order);
    }
    /// Both words; possibly torn (see the file comment).
    Value load() const noexcept { return Value{first(), second()}; }

    /// Both words as one consistent pair: a compare-and-swap that stores back
    /// whatever it finds (so it writes the cache line). For readers off the
    /// hot path whose pair has no word that only grows.
    Value load_consistent() noexcept {
        Value v = load();
        compare_exchange(v, v);
        return v;
    }

    /// If the pair holds `expected`, stores `desired` and returns true;
    /// otherwise loads the current pair into `expected` and returns false.
    /// Sequentially consistent either way.
    bool compare_exchange(Value& expected, Value desired) noexcept {
        return cas16(expected, desired);
    }

private:
#if defined(_MSC_VER) && !defined(__clang__) && (defined(_M_X64) || defined(_M_ARM64))
    bool cas16(Value& expected, Value desired) noexcept {
        __int64 comparand[2] = {static_cast<__int64>(expected.first),
                                static_cast<__int64>(expected.second)};
        const bool ok = _InterlockedCompareExchange128(
                            reinterpret_cast<volatile __int64*>(words_),
                            static_cast<__int64>(desired.second),
                            static_cast<__int64>(desired.first), comparand) != 0;
        expected = Value{static_cast<uint64_t>(comparand[0]), static_cast<uint64_t>(comparand[1])};
        return ok;
    }
#elif defined(__SIZEOF_INT128__) && defined(__GCC_HAVE_SYNC_COMPARE_AND_SWAP_16)
    // GCC and Clang inline this (cmpxchg16b with -mcx16, CASP/LDXP-STXP on
    // AArch64), and ThreadSanitizer instruments it as a 16-byte atomic.
    bool cas16(Value& expected, Value desired) noexcept {
        using u128 = unsigned __int128;
        const u128 want = (static_cast<u128>(expected.second) << 64) | expected.first;
        const u128 put = (static_cast<u128>(desired.second) << 64) | desired.first;
        const u128 was = __sync_val_compare_and_swap(reinterpret_cast<u128*>(words_), want, put);
        expected = Value{static_cast<uint64_t>(was), static_cast<uint64_t>(was >> 64)};
        return was == want;
    }
#elif defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    // x86-64 compiled without -mcx16: the instruction itself.
    bool cas16(Value& expected, Value desired) noexcept {
        bool ok;
        __asm__ __volatile__("lock cmpxchg16b %1"
                             : "=@ccz"(ok), "+m"(words_), "+a"(expected.first),
                               "+d"(expected.second)
                             : "b"(desired.first), "c"(desired.second)
                             : "memory");
        return ok;
    }
#else
#error "virtrigaud: no 16-byte compare-and-swap on this platform (x86-64, AArch64 and MSVC x64/ARM64 have one)"
#endif

    std::atomic<uint64_t> words_[2];
};

static_assert(sizeof(AtomicPair) == 16, "AtomicPair is two packed 64-bit words");
static_assert(sizeof(std::atomic<uint64_t>) == sizeof(uint64_t),
              "std::atomic<uint64_t> must be a plain 64-bit word");

// ---------------------------------------------------------------------------
// Saturating int64 arithmetic: every sum and product of times in the core
// goes through these, so no input can overflow (undefined behaviour).

constexpr int64_t kInt64Max = INT64_MAX;
constexpr int64_t kInt64Min = INT64_MIN;

inline int64_t sat_add(int64_t a, int64_t b) noexcept {
    if (b > 0 && a > kInt64Max - b) {
        return kInt64Max;
    }
    if (b < 0 && a < kInt64Min - b) {
        return kInt64Min;
    }
    return a + b;
}

inline int64_t sat_sub(int64_t a, int64_t b) noexcept {
    if (b < 0 && a > kInt64Max + b) {
        return kInt64Max;
    }
    if (b > 0 && a < kInt64Min + b) {
        return kInt64Min;
    }
    return a - b;
}

/// a * b for a, b >= 0, saturating at kInt64Max.
inline int64_t sat_mul_nonneg(int64_t a, int64_t b) noexcept {
    if (a <= 0 || b <= 0) {
        return 0;
    }
    return a > kInt64Max / b ? kInt64Max : a * b;
}

inline int64_t clamp64(int64_t v, int64_t lo, int64_t hi) noexcept {
    return v < lo ? lo : (v > hi ? hi : v);
}

}  // namespace virtrigaud
