// What a compare-and-swap loop does after losing a race: wait a little,
// longer each time, before it reads the word again.
//
// Threads that share one word (a token bucket's state) and retry a failed
// CAS at once keep pulling the cache line away from each other: each retry
// needs the line exclusive, and the thread that just won needs it again for
// its next call, so under contention most attempts fail and the total
// throughput of two threads falls below that of one. Pausing after a failure
// lets the winner finish and move on before the loser asks for the line
// again. The pause is the CPU's spin-wait hint (x86 PAUSE, AArch64 ISB),
// doubling from 1 to kMaxPauses per failure of one call: bounded, no
// syscall, no sleep, and nothing before the first failure, so an uncontended
// call costs what it did. It only delays a retry; what the loop decides
// does not change.
#pragma once

#include <cstdint>

#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#endif

namespace virtrigaud {

/// One spin-wait hint: tells the CPU this thread is waiting on memory
/// another thread writes (x86 PAUSE: yields the core's resources to its
/// sibling hyperthread and avoids the memory-order flush on exit from the
/// loop; AArch64 ISB: a short stall, what Rust's spin_loop() emits
/// there, since YIELD is a no-op on most cores). Nothing on other CPUs.
inline void cpu_pause() noexcept {
#if defined(_MSC_VER) && !defined(__clang__) && (defined(_M_X64) || defined(_M_IX86))
    _mm_pause();
#elif defined(_MSC_VER) && !defined(__clang__) && defined(_M_ARM64)
    __isb(_ARM64_BARRIER_SY);
#elif (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    __builtin_ia32_pause();
#elif (defined(__GNUC__) || defined(__clang__)) && defined(__aarch64__)
    __asm__ __volatile__("isb" ::: "memory");
#endif
}

/// The wait after each failed attempt of one CAS loop: 1, 2, 4, ... pauses,
/// at most kMaxPauses (a few hundred nanoseconds to a few microseconds,
/// depending on how long the CPU's pause is). One per call, on its stack.
class CasBackoff {
public:
    static constexpr uint32_t kMaxPauses = 64;

    /// Waits, then doubles the next wait up to kMaxPauses.
    void pause() noexcept {
        for (uint32_t i = 0; i < pauses_; ++i) {
            cpu_pause();
        }
        if (pauses_ < kMaxPauses) {
            pauses_ *= 2;
        }
    }

private:
    uint32_t pauses_ = 1;
};

}  // namespace virtrigaud
