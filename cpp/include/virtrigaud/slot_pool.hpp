// The slots of a bulkhead: the calls in flight, counted in one atomic, under
// a limit its owner supplies. Bulkhead (a fixed limit) and AdaptiveLimit (a
// limit a controller moves) are both one of these.
//
// First come, first served: callers that queue for a slot (asyncio tasks,
// kept in a queue by the binding) register as waiters, and while any is
// registered a newcomer's try_enter() is refused even if a slot is free, so
// nobody can barge past the queue. The binding hands a freed slot straight
// to the longest waiter (the count never drops, so nobody can take it in
// between); only a slot freed when nobody waits goes back to the pool.
#pragma once

#include <atomic>
#include <cstdint>

namespace virtrigaud {

/// `Owner` derives from SlotPool<Owner> and says how many slots there are:
/// `int64_t slot_limit() const noexcept` (read on every take(), so cheap:
/// a constant or a relaxed load).
template <class Owner>
class SlotPool {
public:
    /// What exit() did.
    enum class Exit : uint8_t {
        kFreed,          ///< the slot went back to the pool
        kFreedWaiting,   ///< it did, and someone registered meanwhile: wake the first waiter
        kUnmatched,      ///< nothing was in flight: an exit() without its enter; nothing changed
    };

    /// A newcomer takes a slot if one is free and nobody is queued; never
    /// waits. A refusal is not counted here: a caller may go on to queue, so
    /// only it knows when it gives up (count_rejection()).
    bool try_enter() noexcept {
        // seq_cst pairs with add_waiter(): a waiter that registered is seen.
        if (waiters_.load(std::memory_order_seq_cst) > 0) {
            return false;
        }
        return take();
    }

    /// Takes a free slot regardless of the queue: for the waiter at its head.
    bool take() noexcept {
        // seq_cst from the first load: a waiter's add_waiter() then this load
        // must not be reordered on weak-memory CPUs, or exit() and the waiter
        // could each miss the other.
        int64_t n = in_flight_.load(std::memory_order_seq_cst);
        while (n < owner().slot_limit()) {
            if (in_flight_.compare_exchange_weak(n, n + 1, std::memory_order_seq_cst,
                                                 std::memory_order_seq_cst)) {
                admitted_.fetch_add(1, std::memory_order_relaxed);
                return true;
            }
        }
        return false;
    }

    /// Gives a slot back to the pool. Refuses (kUnmatched, nothing changed)
    /// when nothing is in flight. seq_cst pairs with add_waiter(): a waiter
    /// that registers and then retries take() either gets the freed slot or
    /// is seen here (kFreedWaiting).
    Exit exit() noexcept {
        int64_t n = in_flight_.load(std::memory_order_seq_cst);
        do {
            if (n <= 0) {
                return Exit::kUnmatched;
            }
        } while (!in_flight_.compare_exchange_weak(n, n - 1, std::memory_order_seq_cst,
                                                   std::memory_order_seq_cst));
        return waiters_.load(std::memory_order_seq_cst) > 0 ? Exit::kFreedWaiting : Exit::kFreed;
    }

    /// A slot handed from an exiting caller to a waiter: it stays in flight,
    /// and the waiter leaves the queue. Counts the waiter's admission.
    void hand_over() noexcept { admitted_.fetch_add(1, std::memory_order_relaxed); }

    /// Waiters register (+1) before their last take() and leave (-1) when
    /// they get a slot or give up, so that exit() knows to wake them and
    /// newcomers know to queue behind them.
    void add_waiter(int64_t delta) noexcept { waiters_.fetch_add(delta, std::memory_order_seq_cst); }

    /// Counts one attempt turned away (raised "full", or gave up waiting).
    void count_rejection() noexcept { rejected_.fetch_add(1, std::memory_order_relaxed); }

    int64_t in_flight() const noexcept { return in_flight_.load(std::memory_order_seq_cst); }
    int64_t waiters() const noexcept { return waiters_.load(std::memory_order_seq_cst); }
    uint64_t admitted() const noexcept { return admitted_.load(std::memory_order_relaxed); }
    uint64_t rejected() const noexcept { return rejected_.load(std::memory_order_relaxed); }

protected:
    SlotPool() noexcept = default;
    ~SlotPool() = default;

private:
    const Owner& owner() const noexcept { return static_cast<const Owner&>(*this); }

    alignas(64) std::atomic<int64_t> in_flight_{0};
    std::atomic<int64_t> waiters_{0};
    std::atomic<uint64_t> admitted_{0};
    std::atomic<uint64_t> rejected_{0};
};

}  // namespace virtrigaud
