// Two 64-bit words compared-and-swapped as one: a 16-byte CAS.
//
// The token bucket keeps its arrival time beside its rate, and the circuit
// breaker its state beside a 64-bit generation. Each pair must change
// together: an acquirer that computed with one rate must not commit against
// the arrival time of another, and an outcome of an old generation must not
// land in a new one. One 16-byte compare-and-swap validates both words at
// once: cmpxchg16b on x86-64; CASPAL on AArch64 with LSE (ARMv8.1+, chosen at
// compile time or, on Linux, at run time), else an LDAXP/STLXP loop;
// _InterlockedCompareExchange128 on MSVC.
//
// Reads are two 8-byte atomic loads and may be torn (each word from a
// different moment). A mutation never trusts a torn read: its CAS fails
// unless both words still hold what it read, and then hands back the
// current pair, single-copy atomic on every platform (so load_consistent()
// is too). On AArch64 without LSE that takes care: an LDXP pair is atomic
// only if the STXP after it succeeds, so a CAS that finds other values stores
// them back and retries until that store succeeds. GCC 12's own 16-byte CAS
// does not (inline, and libgcc's __aarch64_cas16_* without LSE, return the
// LDXP pair unchecked on failure), and Clang before 18 does not advertise one
// on AArch64 (__GCC_HAVE_SYNC_COMPARE_AND_SWAP_16), hence the assembly below.
// Readers that need a consistent pair without writing use a word that only
// ever grows (see CircuitBreaker::snapshot()).
#pragma once

#include <atomic>
#include <cstdint>

#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#endif

// ThreadSanitizer sees atomics only through the compiler's builtins, not
// through inline assembly.
#if defined(__SANITIZE_THREAD__)
#define VIRTRIGAUD_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define VIRTRIGAUD_TSAN 1
#endif
#endif

#if defined(__aarch64__) && !defined(_MSC_VER) && !defined(__ARM_FEATURE_ATOMICS) && \
    !defined(VIRTRIGAUD_TSAN) && defined(__linux__)
#include <sys/auxv.h>
#define VIRTRIGAUD_AARCH64_LSE_AT_RUN_TIME 1
#endif

namespace virtrigaud {

#if defined(VIRTRIGAUD_AARCH64_LSE_AT_RUN_TIME)
namespace detail {
/// Whether this CPU has the ARMv8.1 atomics (HWCAP_ATOMICS), asked once.
/// Zero until asked, so a caller that races the first question only takes
/// the LDAXP/STLXP path, which is right everywhere.
inline bool aarch64_has_lse() noexcept {
    static std::atomic<int> known{0};  // 0: not asked, 1: no, 2: yes
    int k = known.load(std::memory_order_relaxed);
    if (k == 0) {
        constexpr unsigned long kHwcapAtomics = 1UL << 8;  // <asm/hwcap.h>
        k = (getauxval(AT_HWCAP) & kHwcapAtomics) != 0 ? 2 : 1;
        known.store(k, std::memory_order_relaxed);
    }
    return k == 2;
}
}  // namespace detail
#endif

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

    /// Adds `delta` to the second word alone (one 8-byte atomic add, cheaper
    /// than a 16-byte CAS) and returns what it held. It is ordered with the
    /// pair's compare-and-swaps as any write of that word is: a CAS that
    /// expected the word's old value fails. For a word that counts while the
    /// first word stays put (a time window's bucket, sliding_window.hpp).
    uint64_t fetch_add_second(uint64_t delta,
                              std::memory_order order = std::memory_order_relaxed) noexcept {
        return words_[1].fetch_add(delta, order);
    }

    /// If the pair holds `expected`, stores `desired` and returns true;
    /// otherwise loads the current pair into `expected` (both words from one
    /// moment) and returns false. Sequentially consistent either way.
    bool compare_exchange(Value& expected, Value desired) noexcept {
        return cas16(expected, desired);
    }

private:
#if defined(_MSC_VER) && !defined(__clang__) && (defined(_M_X64) || defined(_M_ARM64))
    bool cas16(Value& expected, Value desired) noexcept {
        // ComparandResult is {low, high} in and, on failure, the pair found out.
        __int64 comparand[2] = {static_cast<__int64>(expected.first),
                                static_cast<__int64>(expected.second)};
        volatile __int64* const dst = reinterpret_cast<volatile __int64*>(words_);
        const bool ok = _InterlockedCompareExchange128(dst, static_cast<__int64>(desired.second),
                                                       static_cast<__int64>(desired.first),
                                                       comparand) != 0;
#if defined(_M_ARM64)
        // Without LSE the intrinsic is an LDAXP/STLXP loop, and nothing
        // documents that its failure path stores back: store back what was
        // found until that succeeds, which makes the pair single-copy atomic.
        while (!ok && _InterlockedCompareExchange128(dst, comparand[1], comparand[0], comparand) == 0) {
        }
#endif
        expected = Value{static_cast<uint64_t>(comparand[0]), static_cast<uint64_t>(comparand[1])};
        return ok;
    }
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(VIRTRIGAUD_TSAN)
    bool cas16(Value& expected, Value desired) noexcept {
#if defined(__ARM_FEATURE_ATOMICS)
        return caspal(expected, desired);
#else
#if defined(VIRTRIGAUD_AARCH64_LSE_AT_RUN_TIME)
        if (detail::aarch64_has_lse()) {
            return caspal(expected, desired);
        }
#endif
        return ll_sc(expected, desired);
#endif
    }

    /// ARMv8.1 CASPAL: acquire and release, and the pair it loads is
    /// single-copy atomic whether or not it stores. Written as its encoding
    /// (the registers fixed: x0/x1 compared and loaded, x2/x3 stored, x4 the
    /// address) so that it assembles without -march=armv8.1-a, for the CPUs
    /// that have it when the build targets ARMv8.0.
    bool caspal(Value& expected, Value desired) noexcept {
        register uint64_t x0 __asm__("x0") = expected.first;
        register uint64_t x1 __asm__("x1") = expected.second;
        register uint64_t x2 __asm__("x2") = desired.first;
        register uint64_t x3 __asm__("x3") = desired.second;
        register std::atomic<uint64_t>* x4 __asm__("x4") = words_;
        __asm__ __volatile__(".inst 0x4860fc82  // caspal x0, x1, x2, x3, [x4]"
                             : "+r"(x0), "+r"(x1), "+m"(words_)
                             : "r"(x2), "r"(x3), "r"(x4)
                             : "memory");
        const bool ok = x0 == expected.first && x1 == expected.second;
        expected = Value{x0, x1};
        return ok;
    }

    /// ARMv8.0: LDAXP/STLXP. The failure path stores back the pair it loaded:
    /// only a successful store makes that pair single-copy atomic.
    bool ll_sc(Value& expected, Value desired) noexcept {
        uint64_t lo;
        uint64_t hi;
        uint32_t failed;
        __asm__ __volatile__(
            "0: ldaxp %[lo], %[hi], %[mem]\n\t"
            "cmp %[lo], %[want_lo]\n\t"
            "ccmp %[hi], %[want_hi], #0, eq\n\t"
            "b.ne 1f\n\t"
            "stlxp %w[failed], %[put_lo], %[put_hi], %[mem]\n\t"
            "cbnz %w[failed], 0b\n\t"
            "b 2f\n"
            "1: stlxp %w[failed], %[lo], %[hi], %[mem]\n\t"
            "cbnz %w[failed], 0b\n"
            "2:"
            : [lo] "=&r"(lo), [hi] "=&r"(hi), [failed] "=&r"(failed), [mem] "+Q"(words_)
            : [want_lo] "r"(expected.first), [want_hi] "r"(expected.second),
              [put_lo] "r"(desired.first), [put_hi] "r"(desired.second)
            : "cc", "memory");
        const bool ok = lo == expected.first && hi == expected.second;
        expected = Value{lo, hi};
        return ok;
    }
#elif defined(__SIZEOF_INT128__) && \
    (defined(__GCC_HAVE_SYNC_COMPARE_AND_SWAP_16) || defined(__aarch64__))
    // The compiler's builtin: x86-64 with -mcx16 (cmpxchg16b, whose failure
    // result is atomic), AArch64 under ThreadSanitizer only (Clang and GCC 9+
    // have it there whatever they advertise; its failure result may be torn
    // without LSE, see the file comment), and other CPUs that advertise it.
    // ThreadSanitizer instruments it as a 16-byte atomic.
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
