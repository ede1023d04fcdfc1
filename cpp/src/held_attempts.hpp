// The sync attempts this thread is inside, and what each holds.
//
// Policy.execute's native first attempt and CircuitBreaker.call admit an
// attempt (a breaker permit, a token) and then call the user's function from
// C++. A transport adapter called inside that function (a gRPC interceptor,
// the httpx transport) guards the same breaker and bucket, and must not admit
// the same attempt a second time (providers/guard.py). It asks `_core._held`
// whether an enclosing attempt of this thread holds them.
//
// A thread_local stack of (breaker, bucket) pointers: pushed before the call,
// popped after it, no allocation, no Python object, a few nanoseconds. The
// pointers only identify the objects (never dereferenced); the enclosing call
// keeps them alive. asyncio attempts are tracked by a ContextVar in Python
// instead (_admission.py): a thread_local cannot follow a task across awaits.

#pragma once

#include <atomic>
#include <cstddef>

#include "contract.hpp"

namespace virtrigaud_held {

struct Frame {
    const void* breaker;
    const void* bucket;
};

// Deeper nesting than this is not recorded (an adapter there admits again:
// the behaviour without this mechanism, never a wrong skip).
constexpr int kMaxDepth = 32;

// Trivial, so the thread_local is zero-initialised with no guard or wrapper
// on each access (a member initialiser would add both).
struct Stack {
    Frame frames[kMaxDepth];
    int depth;
};

// Internal linkage: this header belongs to the one translation unit module.cpp.
static thread_local Stack t_stack;

inline Stack& stack() noexcept { return t_stack; }

// Set (for good) once an adapter exists (`_core._track_held()`): until then
// a Scope costs one relaxed load and a branch, not a thread_local access
// (a __tls_get_addr call in a shared object). A call already running when it
// is set is not recorded: an adapter inside it admits on its own, as before.
inline std::atomic<bool> g_tracking{false};

// Held for the duration of one attempt's user call.
class Scope {
   public:
    Scope(const void* breaker, const void* bucket) noexcept
        : s_(g_tracking.load(std::memory_order_relaxed) ? &stack() : nullptr) {
        if (s_ == nullptr) {
            return;
        }
        if (s_->depth < kMaxDepth) {
            s_->frames[s_->depth] = Frame{breaker, bucket};
        }
        ++s_->depth;
    }
    ~Scope() {
        if (s_ != nullptr) {
            --s_->depth;
        }
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    Stack* s_;
};

// kHeldBreaker: an enclosing attempt holds `breaker`; kHeldBucket: one
// holds `bucket` (Held in contract.hpp). A null argument is never held.
inline int held(const void* breaker, const void* bucket) noexcept {
    const Stack& s = stack();
    const int depth = s.depth < kMaxDepth ? s.depth : kMaxDepth;
    int mask = 0;
    for (int i = 0; i < depth; ++i) {
        const Frame& f = s.frames[i];
        if (breaker != nullptr && f.breaker == breaker) {
            mask |= virtrigaud_contract::kHeldBreaker;
        }
        if (bucket != nullptr && f.bucket == bucket) {
            mask |= virtrigaud_contract::kHeldBucket;
        }
    }
    return mask;
}

}  // namespace virtrigaud_held
