// Retry budgets: caps on retries as a share of calls, lock-free.
//
// Three known semantics, one class (the kind is fixed at construction; every
// method switches on it, a branch that is always predicted):
//
//  - kRatio: Finagle's RetryBudget (TokenRetryBudget over a LeakyBucket over
//    a WindowedAdder), as Linkerd and Gateway API GEP-3388 use it. A call
//    deposits `deposit` units, a retry withdraws `withdrawal` units
//    (Finagle: 1000 and int(1000 / percent)), and a withdrawal succeeds when
//    the units deposited minus withdrawn over the last ttl, plus `reserve`
//    (min_per_second * ttl * withdrawal), cover it. The window is a ring of
//    10 slots of ttl / 10 each, aligned to the clock (slot k holds what was
//    added during [k, k+1) * ttl / 10) and rolled on read: the sum counts
//    the current slot and the 9 before it, so an amount expires between
//    0.9 ttl and ttl after it was added, as in Finagle's WindowedAdder.
//  - kTokens: gRPC A6 retryThrottling, as grpc-core's ServerRetryThrottleData:
//    milli-tokens in [0, max], starting at max; a retryable failure takes
//    1000 and allows a retry only while the result is > max / 2; a success
//    adds `token_ratio` milli-tokens.
//  - kQuota: the AWS SDKs' standard-mode retry quota (botocore
//    retries/quota.py): capacity units; a retry takes its cost when
//    available (a timeout the higher cost); a success puts back `refund`
//    (no retries) or what its last retry took, never above capacity.
//
// No method allocates or locks. The token and quota counters change by one
// compare-and-swap. The ratio window's slots are each an (epoch, amount)
// pair of atomics: adding to the current slot is a load and a fetch_add;
// the first writer into a slot whose epoch is stale claims it by CAS on the
// epoch and zeroes it. As Finagle's adder, this is sloppy at the edges
// under contention: an amount added to a slot in the instant it is being
// rolled may be dropped (at most once per slot per ttl / 10, and only by a
// thread that read the clock in that same instant). A withdrawal is taken
// first and checked after, and given back when the window turns out short,
// so concurrent withdrawals never overdraw it (they may both fail instead).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "clock.hpp"  // coarse_now_ns(): a ratio budget's slots are >= 100 ms, far above a tick

namespace virtrigaud {

class RetryBudget {
public:
    enum class Kind : uint8_t { kRatio = 0, kTokens = 1, kQuota = 2 };

    /// Slots in the ratio window (Finagle's WindowedAdder uses 10).
    static constexpr int kSlots = 10;
    /// A gRPC token, in milli-tokens.
    static constexpr int64_t kMilli = 1000;

    /// Finagle's ratio budget: `deposit` units per call, `withdrawal` per
    /// retry, `reserve` units always available, amounts kept `ttl_ns`.
    /// Preconditions (checked by the caller): deposit >= 0, withdrawal >= 1,
    /// reserve >= 0, ttl_ns >= kSlots; the units of a window fit int64.
    static RetryBudget ratio(int64_t deposit, int64_t withdrawal, int64_t reserve, int64_t ttl_ns,
                             const ManualClock* clock) noexcept {
        RetryBudget b(Kind::kRatio, clock);
        b.a_ = deposit;
        b.b_ = withdrawal;
        b.c_ = reserve;
        b.slot_ns_ = ttl_ns / kSlots;
        return b;
    }

    /// gRPC A6: `max_milli` (max_tokens * 1000) and `ratio_milli`
    /// (token_ratio to 3 decimals, * 1000); both >= 1.
    static RetryBudget tokens(int64_t max_milli, int64_t ratio_milli) noexcept {
        RetryBudget b(Kind::kTokens, nullptr);
        b.a_ = max_milli;
        b.b_ = ratio_milli;
        b.value_.store(max_milli, std::memory_order_relaxed);
        return b;
    }

    /// The AWS retry quota: `capacity` units, costs and refund all >= 0.
    static RetryBudget quota(int64_t capacity, int64_t retry_cost, int64_t timeout_cost,
                             int64_t refund) noexcept {
        RetryBudget b(Kind::kQuota, nullptr);
        b.a_ = capacity;
        b.b_ = retry_cost;
        b.c_ = timeout_cost;
        b.d_ = refund;
        b.value_.store(capacity, std::memory_order_relaxed);
        return b;
    }

    RetryBudget(const RetryBudget& other) noexcept
        : kind_(other.kind_), clock_(other.clock_), slot_ns_(other.slot_ns_), a_(other.a_),
          b_(other.b_), c_(other.c_), d_(other.d_) {
        value_.store(other.value_.load(std::memory_order_relaxed), std::memory_order_relaxed);
        last_slot_.store(other.last_slot_.load(std::memory_order_relaxed),
                         std::memory_order_relaxed);
        shared_.store(other.shared_.load(std::memory_order_relaxed), std::memory_order_relaxed);
        unsynced_.store(other.unsynced_.load(std::memory_order_relaxed), std::memory_order_relaxed);
        external_.store(other.external_.load(std::memory_order_relaxed), std::memory_order_relaxed);
        wanted_.store(other.wanted_.load(std::memory_order_relaxed), std::memory_order_relaxed);
        for (int i = 0; i < kSlots; ++i) {
            epoch_[i].store(other.epoch_[i].load(std::memory_order_relaxed),
                            std::memory_order_relaxed);
            amount_[i].store(other.amount_[i].load(std::memory_order_relaxed),
                             std::memory_order_relaxed);
        }
    }
    RetryBudget& operator=(const RetryBudget&) = delete;

    Kind kind() const noexcept { return kind_; }
    const ManualClock* clock() const noexcept { return clock_; }

    /// The user-facing deposit. ratio: one call; tokens: one success (+ratio);
    /// quota: one success without retries (+refund).
    void deposit() noexcept {
        switch (kind_) {
            case Kind::kRatio:
                add_to_window(a_, slot_now());
                return;
            case Kind::kTokens:
                add_clamped(b_);
                return;
            case Kind::kQuota:
                add_clamped(d_);
                return;
        }
    }

    /// The user-facing withdrawal: whether a retry may be made now (taking
    /// its share when it may). ratio: `withdrawal` units; tokens: records a
    /// retryable failure (-1 token) and says whether tokens stay above half;
    /// quota: the retry's cost (`timeout`: the timeout cost).
    bool try_withdraw(bool timeout = false) noexcept {
        switch (kind_) {
            case Kind::kRatio:
                return withdraw_from_window(slot_now());
            case Kind::kTokens:
                return add_clamped(-kMilli) > a_ / 2;
            case Kind::kQuota:
                return take(timeout ? c_ : b_);
        }
        return false;
    }

    /// A call starts (a retry loop's first attempt): ratio deposits.
    void call_started() noexcept {
        if (kind_ == Kind::kRatio) {
            add_to_window(a_, slot_now());
        }
    }

    /// A call succeeded; `last_cost` is what its last retry took (0: none).
    /// tokens: +ratio; quota: +last_cost, or +refund without retries.
    void call_succeeded(int64_t last_cost) noexcept {
        if (kind_ == Kind::kTokens) {
            add_clamped(b_);
        } else if (kind_ == Kind::kQuota) {
            add_clamped(last_cost > 0 ? last_cost : d_);
        }
    }

    /// A retryable failure that is not retried (no attempts left): tokens
    /// records it (-1 token, as A6 counts every retryable failure).
    void failed_without_retry() noexcept {
        if (kind_ == Kind::kTokens) {
            add_clamped(-kMilli);
        }
    }

    /// What a retry costs now (quota: by `timeout`; the others 0: nothing
    /// to give back on success).
    int64_t retry_cost(bool timeout) const noexcept {
        return kind_ == Kind::kQuota ? (timeout ? c_ : b_) : 0;
    }

    /// The raw balance: ratio: window sum + reserve (units); tokens:
    /// milli-tokens; quota: capacity units.
    int64_t balance() const noexcept {
        if (kind_ == Kind::kRatio) {
            return window_sum(slot_now()) + c_ + external_.load(std::memory_order_acquire);
        }
        return value_.load(std::memory_order_acquire);
    }

    /// Retries allowed now if nothing else happened. ratio: balance /
    /// withdrawal (Finagle's `balance`); tokens: the failures that would
    /// still leave tokens above half; quota: capacity / retry cost
    /// (INT64_MAX when retries cost nothing).
    int64_t available() const noexcept {
        const int64_t v = balance();
        switch (kind_) {
            case Kind::kRatio:
                return v > 0 ? v / b_ : 0;
            case Kind::kTokens: {
                // The k-th failure from now still retries while v - k*1000 > max/2.
                const int64_t above = v - a_ / 2;
                return above > 0 ? (above - 1) / kMilli : 0;
            }
            case Kind::kQuota:
                return b_ > 0 ? v / b_ : INT64_MAX;
        }
        return 0;
    }

    // -- sharing (a ratio budget of a fleet: distributed.RedisRetryBudget) --

    /// From now on, every amount this process adds to the window is also
    /// counted for take_unsynced() (one more atomic add per deposit: only
    /// shared budgets pay it).
    void share() noexcept { shared_.store(true, std::memory_order_relaxed); }

    /// This process's amounts added since the last call (deposits minus
    /// withdrawals, units), to send to the fleet.
    int64_t take_unsynced() noexcept { return unsynced_.exchange(0, std::memory_order_acq_rel); }

    /// Whether this process asked for a retry (granted or refused) since
    /// the last call: the fleet splits its surplus among the replicas that
    /// did (set only once share() was called).
    bool take_wanted() noexcept { return wanted_.exchange(false, std::memory_order_acq_rel); }

    /// What the rest of the fleet adds to this process's balance (units, may
    /// be negative), as last heard (0: none, or the fleet is unreachable).
    void set_external(int64_t units) noexcept {
        external_.store(units, std::memory_order_release);
    }

    /// This process's own amounts over the window (no reserve, no fleet).
    int64_t own_window() const noexcept { return kind_ == Kind::kRatio ? window_sum(slot_now()) : 0; }

    // The parameters, in their native units.
    int64_t param_a() const noexcept { return a_; }
    int64_t param_b() const noexcept { return b_; }
    int64_t param_c() const noexcept { return c_; }
    int64_t param_d() const noexcept { return d_; }
    int64_t slot_ns() const noexcept { return slot_ns_; }

private:
    RetryBudget(Kind kind, const ManualClock* clock) noexcept : kind_(kind), clock_(clock) {
        for (int i = 0; i < kSlots; ++i) {
            epoch_[i].store(kNoEpoch, std::memory_order_relaxed);
            amount_[i].store(0, std::memory_order_relaxed);
        }
    }

    // An epoch no slot index reaches (time is >= 0).
    static constexpr int64_t kNoEpoch = -1;
    // The epoch of a slot being zeroed by the thread that claimed it.
    static constexpr int64_t kRolling = -2;

    // The slot of now. A 64-bit division costs tens of cycles, more than the
    // rest of a deposit: the last slot computed is kept, and a time within
    // it (one multiplication and a compare) needs none.
    int64_t slot_now() const noexcept {
        const int64_t now = clock_ != nullptr ? clock_->now() : coarse_now_ns();
        const int64_t cached = last_slot_.load(std::memory_order_relaxed);
        if (static_cast<uint64_t>(now - cached * slot_ns_) < static_cast<uint64_t>(slot_ns_)) {
            return cached;
        }
        const int64_t slot = now / slot_ns_;
        last_slot_.store(slot, std::memory_order_relaxed);  // a hint: any value is safe
        return slot;
    }

    // Makes slot `epoch`'s ring entry hold that epoch (zeroed if it held an
    // older one). When a newer epoch holds it (this thread read the clock a
    // whole ttl ago), it is left alone: the amount goes there, as if added now.
    void claim(int i, int64_t epoch) noexcept {
        int64_t seen = epoch_[i].load(std::memory_order_acquire);
        while (seen != epoch) {
            if (seen > epoch) {
                return;  // a newer slot: stalled a whole ttl; credit it now
            }
            if (seen == kRolling) {
                // Another thread is zeroing it for this epoch (or a newer
                // one): its store of the epoch follows at once.
                seen = epoch_[i].load(std::memory_order_acquire);
                continue;
            }
            if (epoch_[i].compare_exchange_weak(seen, kRolling, std::memory_order_acq_rel,
                                                std::memory_order_acquire)) {
                amount_[i].store(0, std::memory_order_relaxed);
                epoch_[i].store(epoch, std::memory_order_release);
                return;
            }
        }
    }

    void add_to_window(int64_t amount, int64_t epoch) noexcept {
        const int i = static_cast<int>(epoch % kSlots);
        if (epoch_[i].load(std::memory_order_acquire) != epoch) {
            claim(i, epoch);
        }
        amount_[i].fetch_add(amount, std::memory_order_acq_rel);
        if (shared_.load(std::memory_order_relaxed)) {
            unsynced_.fetch_add(amount, std::memory_order_relaxed);
        }
    }

    int64_t window_sum(int64_t now_epoch) const noexcept {
        int64_t sum = 0;
        for (int i = 0; i < kSlots; ++i) {
            const int64_t e = epoch_[i].load(std::memory_order_acquire);
            if (e > now_epoch - kSlots && e <= now_epoch) {
                sum += amount_[i].load(std::memory_order_acquire);
            }
        }
        return sum;
    }

    bool withdraw_from_window(int64_t epoch) noexcept {
        if (shared_.load(std::memory_order_relaxed) &&
            !wanted_.load(std::memory_order_relaxed)) {
            wanted_.store(true, std::memory_order_relaxed);  // a store per exchange, not per retry
        }
        // Cheap refusal first: most refusals never touch a slot.
        const int64_t floor = c_ + external_.load(std::memory_order_acquire);
        if (window_sum(epoch) + floor < b_) {
            return false;
        }
        add_to_window(-b_, epoch);
        if (window_sum(epoch) + floor >= 0) {
            return true;
        }
        add_to_window(b_, epoch);  // another withdrawal got there first
        return false;
    }

    // value_ += delta, clamped to [0, a_] (tokens' max, quota's capacity);
    // returns the new value.
    int64_t add_clamped(int64_t delta) noexcept {
        int64_t seen = value_.load(std::memory_order_relaxed);
        for (;;) {
            const int64_t next = std::clamp<int64_t>(seen + delta, 0, a_);
            if (next == seen ||
                value_.compare_exchange_weak(seen, next, std::memory_order_acq_rel,
                                             std::memory_order_relaxed)) {
                return next;
            }
        }
    }

    // value_ -= cost if value_ >= cost.
    bool take(int64_t cost) noexcept {
        int64_t seen = value_.load(std::memory_order_relaxed);
        while (seen >= cost) {
            if (value_.compare_exchange_weak(seen, seen - cost, std::memory_order_acq_rel,
                                             std::memory_order_relaxed)) {
                return true;
            }
        }
        return false;
    }

    Kind kind_;
    const ManualClock* clock_;
    int64_t slot_ns_ = 1;
    // ratio: deposit, withdrawal, reserve; tokens: max milli, ratio milli;
    // quota: capacity, retry cost, timeout cost, refund.
    int64_t a_ = 0, b_ = 0, c_ = 0, d_ = 0;
    std::atomic<int64_t> value_{0};  // tokens: milli-tokens; quota: capacity left
    mutable std::atomic<int64_t> last_slot_{0};  // ratio: the slot slot_now() found last
    std::atomic<bool> shared_{false};
    std::atomic<int64_t> unsynced_{0};  // shared: own amounts not yet sent
    std::atomic<int64_t> external_{0};  // shared: the rest of the fleet's part of the balance
    std::atomic<bool> wanted_{false};   // shared: a withdrawal was asked for since take_wanted()
    alignas(64) std::atomic<int64_t> epoch_[kSlots];
    std::atomic<int64_t> amount_[kSlots];
};

}  // namespace virtrigaud
