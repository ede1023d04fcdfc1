// A bulkhead: at most `max_concurrent` calls in flight, counted in one atomic
// (slot_pool.hpp: first come, first served, slots handed to waiters).
#pragma once

#include <cstdint>

#include "slot_pool.hpp"

namespace virtrigaud {

class Bulkhead : public SlotPool<Bulkhead> {
public:
    static constexpr int64_t kMaxConcurrent = int64_t{1} << 30;

    /// max_concurrent in [1, kMaxConcurrent] (clamped).
    explicit Bulkhead(int64_t max_concurrent) noexcept
        : max_(max_concurrent < 1 ? 1 : (max_concurrent > kMaxConcurrent ? kMaxConcurrent
                                                                         : max_concurrent)) {}

    int64_t max_concurrent() const noexcept { return max_; }
    /// SlotPool's limit: fixed.
    int64_t slot_limit() const noexcept { return max_; }

private:
    const int64_t max_;
};

}  // namespace virtrigaud
