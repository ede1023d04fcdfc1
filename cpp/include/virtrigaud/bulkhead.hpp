// A bulkhead: at most `max_concurrent` calls in flight, counted in one atomic.
#pragma once

#include <atomic>
#include <cstdint>

namespace virtrigaud {

class Bulkhead {
public:
    static constexpr int64_t kMaxConcurrent = int64_t{1} << 30;

    /// max_concurrent in [1, kMaxConcurrent] (clamped).
    explicit Bulkhead(int64_t max_concurrent) noexcept
        : max_(max_concurrent < 1 ? 1 : (max_concurrent > kMaxConcurrent ? kMaxConcurrent
                                                                         : max_concurrent)) {}

    /// Takes a slot if one is free; never waits. A refusal is not counted
    /// here: a queued waiter retries, so only the caller knows when it gives
    /// up (count_rejection()).
    bool try_enter() noexcept {
        // seq_cst from the first load: a waiter's add_waiter() then this load
        // must not be reordered on weak-memory CPUs, or exit() and the waiter
        // could each miss the other.
        int64_t n = in_flight_.load(std::memory_order_seq_cst);
        while (n < max_) {
            if (in_flight_.compare_exchange_weak(n, n + 1, std::memory_order_seq_cst,
                                                 std::memory_order_seq_cst)) {
                admitted_.fetch_add(1, std::memory_order_relaxed);
                return true;
            }
        }
        return false;
    }

    /// Counts one attempt turned away (raised "full", or gave up waiting).
    void count_rejection() noexcept { rejected_.fetch_add(1, std::memory_order_relaxed); }

    /// Gives a slot back. Returns true if someone is waiting for one.
    /// seq_cst pairs with add_waiter(): a waiter that registers and then
    /// retries try_enter() either gets the freed slot or is seen here.
    bool exit() noexcept {
        in_flight_.fetch_sub(1, std::memory_order_seq_cst);
        return waiters_.load(std::memory_order_seq_cst) > 0;
    }

    /// Waiters register (+1) before their last try_enter() and leave (-1)
    /// after, so that exit() knows to wake them.
    void add_waiter(int64_t delta) noexcept { waiters_.fetch_add(delta, std::memory_order_seq_cst); }

    int64_t max_concurrent() const noexcept { return max_; }
    int64_t in_flight() const noexcept { return in_flight_.load(std::memory_order_relaxed); }
    int64_t waiters() const noexcept { return waiters_.load(std::memory_order_relaxed); }
    uint64_t admitted() const noexcept { return admitted_.load(std::memory_order_relaxed); }
    uint64_t rejected() const noexcept { return rejected_.load(std::memory_order_relaxed); }

private:
    alignas(64) std::atomic<int64_t> in_flight_{0};
    std::atomic<int64_t> waiters_{0};
    const int64_t max_;
    std::atomic<uint64_t> admitted_{0};
    std::atomic<uint64_t> rejected_{0};
};

}  // namespace virtrigaud
