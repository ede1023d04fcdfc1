// Nanoseconds per operation of the native hot paths, no Python involved.
// Build Release (not under a sanitizer): cpp/tests/run_stress.sh --bench.
//
// Each case runs a tight loop several times and reports the fastest run
// (the minimum is the least disturbed by the scheduler). Results feed a
// compiler barrier so the work cannot be deleted. Contended cases run the
// same loop on 2 threads against one object and report the time per
// operation seen by each thread (and the aggregate: wall time / all ops).
#include <virtrigaud/adaptive_limit.hpp>
#include <virtrigaud/backoff.hpp>
#include <virtrigaud/bulkhead.hpp>
#include <virtrigaud/circuit_breaker.hpp>
#include <virtrigaud/clock.hpp>
#include <virtrigaud/token_bucket.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

using namespace virtrigaud;

namespace {

template <class T>
inline void do_not_optimize(const T& value) {
    asm volatile("" : : "r,m"(value) : "memory");
}

constexpr int kRepeats = 7;

inline int64_t wall_ns() { return steady_now_ns(); }

void print(const char* name, const char* mode, double ns, const char* extra = "") {
    std::printf("%-48s %-12s %7.2f ns/op%s\n", name, mode, ns, extra);
}

/// Min over repeats of ns/op for `iters` calls of op(i). `setup` runs before
/// each repeat (outside the timed region).
template <class Setup, class Op>
double bench(int64_t iters, Setup setup, Op op) {
    double best = 1e300;
    for (int r = 0; r < kRepeats; ++r) {
        setup();
        const int64_t t0 = wall_ns();
        for (int64_t i = 0; i < iters; ++i) {
            op(i);
        }
        const int64_t t1 = wall_ns();
        best = std::min(best, static_cast<double>(t1 - t0) / static_cast<double>(iters));
    }
    return best;
}

template <class Op>
double bench(int64_t iters, Op op) {
    return bench(iters, [] {}, op);
}

struct Contended {
    double per_thread;  // ns per op as seen by one thread (max over threads)
    double aggregate;   // wall ns / total ops
    bool overlapped;    // some repeat had the threads running together
};

/// Two threads run op(thread, i) `iters` times each, released together.
/// Only repeats in which the shorter loop ran >= 90% of its time alongside
/// the other count (otherwise the minimum would be an uncontended run); if
/// none did, the median of all repeats is reported and flagged.
template <class Setup, class Op>
Contended bench2(int64_t iters, Setup setup, Op op) {
    constexpr int kN = 2;
    Contended best{1e300, 1e300, false};
    std::vector<std::pair<double, double>> all;
    for (int r = 0; r < kRepeats; ++r) {
        setup();
        std::atomic<int> ready{0};
        std::atomic<bool> go{false};
        int64_t elapsed[kN] = {};
        int64_t starts[kN] = {};
        int64_t ends[kN] = {};
        std::vector<std::thread> threads;
        for (int t = 0; t < kN; ++t) {
            threads.emplace_back([&, t] {
                ready.fetch_add(1);
                while (!go.load(std::memory_order_acquire)) {
                }
                const int64_t t0 = wall_ns();
                for (int64_t i = 0; i < iters; ++i) {
                    op(t, i);
                }
                const int64_t t1 = wall_ns();
                starts[t] = t0;
                ends[t] = t1;
                elapsed[t] = t1 - t0;
            });
        }
        while (ready.load() < kN) {
        }
        go.store(true, std::memory_order_release);
        for (auto& th : threads) {
            th.join();
        }
        const double per = static_cast<double>(std::max(elapsed[0], elapsed[1])) /
                           static_cast<double>(iters);
        const double wall =
            static_cast<double>(std::max(ends[0], ends[1]) - std::min(starts[0], starts[1]));
        const double overlap =
            static_cast<double>(std::min(ends[0], ends[1]) - std::max(starts[0], starts[1]));
        const double agg = wall / static_cast<double>(kN * iters);
        all.emplace_back(per, agg);
        if (overlap >= 0.9 * static_cast<double>(std::min(elapsed[0], elapsed[1]))) {
            best.overlapped = true;
            best.per_thread = std::min(best.per_thread, per);
            best.aggregate = std::min(best.aggregate, agg);
        }
    }
    if (!best.overlapped) {
        std::sort(all.begin(), all.end());
        best.per_thread = all[all.size() / 2].first;
        best.aggregate = all[all.size() / 2].second;
    }
    return best;
}

void print2(const char* name, const Contended& c) {
    char extra[96];
    std::snprintf(extra, sizeof extra, "  (per thread; aggregate %.2f ns/op)%s", c.aggregate,
                  c.overlapped ? "" : " [threads never overlapped: median]");
    print(name, "2 threads", c.per_thread, extra);
}

}  // namespace

int main() {
    constexpr int64_t kIters = 5'000'000;
    constexpr int64_t kIters2 = 2'000'000;

    std::printf("sizeof(TokenBucket)     = %zu, alignof = %zu\n", sizeof(TokenBucket),
                alignof(TokenBucket));
    std::printf("sizeof(CircuitBreaker)  = %zu, alignof = %zu\n", sizeof(CircuitBreaker),
                alignof(CircuitBreaker));
    std::printf("sizeof(ManualClock)     = %zu, alignof = %zu\n", sizeof(ManualClock),
                alignof(ManualClock));
    std::printf("sizeof(Backoff)         = %zu, alignof = %zu\n", sizeof(Backoff),
                alignof(Backoff));
    std::printf("hardware threads: %u; %d repeats per case, minimum reported\n",
                std::thread::hardware_concurrency(), kRepeats);

    // ---- clocks
    print("steady_now_ns()", "uncontended", bench(kIters, [](int64_t) {
              do_not_optimize(steady_now_ns());
          }));
    ManualClock manual(1'000'000'000);
    print("ManualClock::now()", "uncontended", bench(kIters, [&](int64_t) {
              do_not_optimize(manual.now());
          }));

    // ---- token bucket, uncontended
    // Admitting: 1 ns per token with a large burst, so every call conforms.
    auto steady_fast = std::make_unique<TokenBucket>(1, TokenBucket::kMaxBurst);
    print("token_bucket.try_acquire(steady, admit)", "uncontended",
          bench(kIters, [&](int64_t) { do_not_optimize(steady_fast->try_acquire(1)); }));
    // Rejecting: an empty, very slow bucket.
    auto steady_slow = std::make_unique<TokenBucket>(TokenBucket::kMaxIntervalNs, 1);
    steady_slow->try_acquire(1);
    print("token_bucket.try_acquire(steady, reject)", "uncontended",
          bench(kIters, [&](int64_t) { do_not_optimize(steady_slow->try_acquire(1)); }));
    // ManualClock, frozen: a fresh full bucket of 2^20-1 tokens per repeat,
    // 1,000,000 calls, all admitted.
    std::unique_ptr<TokenBucket> manual_bucket;
    print("token_bucket.try_acquire(manual, admit)", "uncontended",
          bench(
              1'000'000,
              [&] {
                  manual_bucket = std::make_unique<TokenBucket>(1, TokenBucket::kMaxBurst, &manual);
              },
              [&](int64_t) { do_not_optimize(manual_bucket->try_acquire(1)); }));
    auto manual_empty = std::make_unique<TokenBucket>(1000, 1, &manual);
    manual_empty->try_acquire(1);
    print("token_bucket.try_acquire(manual, reject)", "uncontended",
          bench(kIters, [&](int64_t) { do_not_optimize(manual_empty->try_acquire(1)); }));
    print("token_bucket.reserve+cancel(manual)", "uncontended",
          bench(kIters, [&](int64_t) {
              const auto r = manual_empty->reserve(1, int64_t{1} << 40);
              do_not_optimize(manual_empty->cancel(1, r.tat_after, r.time_to_act, r.config));
          }));

    // ---- circuit breaker, uncontended (closed: acquire is one load)
    auto cb = std::make_unique<CircuitBreaker>(10, 60'000'000'000, 3);
    // (Sink the ticket's fields, not the struct: forcing the whole Ticket
    // through memory costs two store-forwarding stalls, ~15 ns, that are the
    // harness's, not the breaker's.)
    const double cb_one_thread = bench(kIters, [&](int64_t) {
        const Ticket t = cb->acquire();
        do_not_optimize(t.admitted);
        do_not_optimize(cb->record_success(t).changed);
    });
    print("circuit_breaker.acquire+record_success", "uncontended", cb_one_thread);
    print("circuit_breaker.acquire+record_success(encoded)", "uncontended",
          bench(kIters, [&](int64_t) {  // as the binding does: the ticket crosses as an int64
              const int64_t code = cb->acquire().encode();
              do_not_optimize(code);
              do_not_optimize(cb->record_success(Ticket::decode(code)).changed);
          }));
    auto cb_open = std::make_unique<CircuitBreaker>(1, int64_t{1} << 60, 3);
    cb_open->record_failure(cb_open->acquire());
    print("circuit_breaker.acquire(open, reject)", "uncontended", bench(kIters, [&](int64_t) {
              do_not_optimize(cb_open->acquire().admitted);
          }));

    // ---- window-mode breakers (issue 22): a closed breaker that never
    // opens (all successes), so each call records into the window and judges it.
    constexpr int64_t kFreshEvery = (int64_t{1} << 19) - 1;
    WindowSettings count_settings;
    count_settings.kind = WindowKind::kCount;
    count_settings.size = 100;
    count_settings.minimum_calls = 100;
    WindowSettings time_settings = count_settings;
    time_settings.kind = WindowKind::kTime;
    time_settings.size = 60;
    {
        const auto count_owned = SlidingWindow::make(WindowKind::kCount, 100);
        const auto time_owned = SlidingWindow::make(WindowKind::kTime, 60);
        SlidingWindow& count_window = *count_owned;
        SlidingWindow& time_window = *time_owned;
        // Alternating outcomes: each finds its own bits in its slot (100 is
        // even), as a steady stream of successes does: only the head is written.
        print("sliding_window.record(count 100)", "uncontended", bench(kIters, [&](int64_t i) {
                  do_not_optimize(count_window.record(0, static_cast<uint8_t>(i & 1), 0));
              }));
        // Outcomes that differ from the ones they replace: the slot's word and
        // the running counts are written too.
        print("sliding_window.record(count 100, mixed)", "uncontended",
              bench(kIters, [&](int64_t i) {
                  const auto bits = static_cast<uint8_t>((i * 7 >> 3) & 3);
                  do_not_optimize(count_window.record(0, bits, 0));
              }));
        // A fresh epoch every 2^19 outcomes: one second's bucket takes 2^20 - 1
        // (more are dropped, which writes nothing), so every outcome here counts.
        uint32_t time_epoch = 0;
        print("sliding_window.record(time 60 s)", "uncontended", bench(kIters, [&](int64_t i) {
                  if ((i & kFreshEvery) == 0) {
                      time_window.reset(++time_epoch);
                  }
                  do_not_optimize(time_window.record(time_epoch, static_cast<uint8_t>(i & 1), i));
              }));
        print("sliding_window.totals(time 60 s)", "uncontended", bench(kIters, [&](int64_t i) {
                  do_not_optimize(time_window.totals(i).calls);
              }));
    }
    auto cb_count = std::make_unique<CircuitBreaker>(10, 60'000'000'000, 3, nullptr, 0,
                                                     &count_settings);
    const double cb_count_one_thread = bench(kIters, [&](int64_t) {
        const Ticket t = cb_count->acquire();
        do_not_optimize(t.admitted);
        do_not_optimize(cb_count->record_success(t).changed);
    });
    print("circuit_breaker(count 100).acquire+record_success", "uncontended",
          cb_count_one_thread);
    auto cb_time = std::make_unique<CircuitBreaker>(10, 60'000'000'000, 3, nullptr, 0,
                                                    &time_settings);
    // Reset every 2^19 calls, as above (on the coarse clock the loop makes
    // more than a bucket takes in a second).
    print("circuit_breaker(time 60 s).acquire+record_success", "uncontended",
          bench(kIters, [&](int64_t i) {
              if ((i & kFreshEvery) == 0) {
                  cb_time->reset();
              }
              const Ticket t = cb_time->acquire();
              do_not_optimize(t.admitted);
              do_not_optimize(cb_time->record_success(t).changed);
          }));
    std::printf("window memory: CountWindow(100) breaker %zu + window allocation %zu bytes "
                "(of which the ring %zu)\n",
                sizeof(CircuitBreaker), cb_count->window_allocation_bytes(),
                cb_count->window()->ring_bytes());

    // ---- bulkhead
    auto bulkhead = std::make_unique<Bulkhead>(8);
    print("bulkhead.try_enter+exit", "uncontended", bench(kIters, [&](int64_t) {
              do_not_optimize(bulkhead->try_enter());
              do_not_optimize(bulkhead->exit());
          }));

    // ---- adaptive limit: what AdaptiveBulkhead's acquire + release do
    // natively (the slot, its start and end times, the sample, the window
    // check that closes a window once per window, not per call).
    // The steady clock's two reads dominate where reading it is slow (a VM
    // without a vDSO clocksource: see steady_now_ns() above), so the case
    // also runs on a ManualClock: the atomics alone.
    ManualClock adaptive_clock;
    auto adaptive_manual = std::make_unique<AdaptiveLimit>(8, &adaptive_clock);
    adaptive_manual->set_window_end(kMaxClockNs);
    print("adaptive_limit.acquire+release(manual clock)", "uncontended",
          bench(kIters, [&](int64_t) {
              do_not_optimize(adaptive_manual->try_enter());
              const int64_t start = adaptive_manual->now();
              const int64_t in_flight = adaptive_manual->in_flight();
              const int64_t now = adaptive_manual->now();
              adaptive_manual->record(now - start, in_flight, false);
              do_not_optimize(adaptive_manual->exit());
              do_not_optimize(adaptive_manual->claim_window(now, 10));
          }));
    // Its own clock (interval_clock.hpp): the time-stamp counter where the
    // kernel keeps CLOCK_MONOTONIC on it, else the steady clock.
    auto adaptive = std::make_unique<AdaptiveLimit>(8);
    adaptive->set_window_end(kMaxClockNs);
    print("adaptive_limit.acquire+release(interval clock)", "uncontended",
          bench(kIters, [&](int64_t) {
              do_not_optimize(adaptive->try_enter());
              const int64_t start = adaptive->now();
              const int64_t in_flight = adaptive->in_flight();
              const int64_t now = adaptive->now();
              adaptive->record(now - start, in_flight, false);
              do_not_optimize(adaptive->exit());
              do_not_optimize(adaptive->claim_window(now, 10));
          }),
          IntervalClock::instance().reads_tsc() ? "  (reads the TSC)" : "  (the steady clock)");
    // The same with the steady clock's two reads (what it cost before the
    // IntervalClock), for comparison in the same run.
    print("adaptive_limit.acquire+release(steady clock)", "uncontended",
          bench(kIters, [&](int64_t) {
              do_not_optimize(adaptive->try_enter());
              const int64_t start = steady_now_ns();
              const int64_t in_flight = adaptive->in_flight();
              const int64_t now = steady_now_ns();
              adaptive->record(now - start, in_flight, false);
              do_not_optimize(adaptive->exit());
              do_not_optimize(adaptive->claim_window(now, 10));
          }));

    // ---- backoff
    Backoff seeded(0.5, 30.0, 2.0, true, Strategy::kExponential, true, 42);
    print("backoff.delay(exponential, seeded)", "uncontended", bench(kIters, [&](int64_t i) {
              do_not_optimize(seeded.delay(i & 7));
          }));
    Backoff unseeded(0.5, 30.0, 2.0, true, Strategy::kExponential);
    print("backoff.delay(exponential, thread rng)", "uncontended", bench(kIters, [&](int64_t i) {
              do_not_optimize(unseeded.delay(i & 7));
          }));
    Backoff decorrelated(0.5, 30.0, 2.0, true, Strategy::kDecorrelatedJitter);
    double prev = 0;
    print("backoff.delay(decorrelated, thread rng)", "uncontended", bench(kIters, [&](int64_t i) {
              prev = decorrelated.delay(i & 7, prev);
              do_not_optimize(prev);
          }));

    // ---- contended: 2 threads, one object
    // Baseline: nothing shared, so any slowdown here is the machine's (SMT
    // siblings, vCPU scheduling), not contention on an object.
    print2("steady_now_ns() (nothing shared)",
           bench2(
               kIters2, [] {}, [&](int, int64_t) { do_not_optimize(steady_now_ns()); }));
    std::unique_ptr<TokenBucket> shared_bucket;
    print2("token_bucket.try_acquire(steady, admit)",
           bench2(
               kIters2,
               [&] { shared_bucket = std::make_unique<TokenBucket>(1, TokenBucket::kMaxBurst); },
               [&](int, int64_t) { do_not_optimize(shared_bucket->try_acquire(1)); }));
    print2("token_bucket.try_acquire(steady, reject)",
           bench2(
               kIters2, [] {},
               [&](int, int64_t) { do_not_optimize(steady_slow->try_acquire(1)); }));
    // Each thread moves its clock on by 1024 ns every 1024 calls, so the
    // bucket (1 token per ns) never runs dry however long the loop.
    ManualClock manual2(1'000'000'000);
    std::unique_ptr<TokenBucket> shared_manual;
    print2("token_bucket.try_acquire(manual, admit)",
           bench2(
               kIters2,
               [&] {
                   shared_manual =
                       std::make_unique<TokenBucket>(1, TokenBucket::kMaxBurst, &manual2);
               },
               [&](int, int64_t i) {
                   if ((i & 1023) == 0) {
                       manual2.advance(1024);
                   }
                   do_not_optimize(shared_manual->try_acquire(1));
               }));
    std::unique_ptr<CircuitBreaker> shared_cb;
    const Contended cb_two_threads = bench2(
        5 * kIters2, [&] { shared_cb = std::make_unique<CircuitBreaker>(10, 60'000'000'000, 3); },
        [&](int, int64_t) {
            const Ticket t = shared_cb->acquire();
            do_not_optimize(t.admitted);
            do_not_optimize(shared_cb->record_success(t).changed);
        });
    print2("circuit_breaker.acquire+record_success", cb_two_threads);
    // The scaling the success counter decides: two threads on one closed
    // breaker should admit more calls in total than one.
    std::printf("one closed breaker, acquire+record_success: 1 thread %.1f M calls/s, "
                "2 threads %.1f M calls/s in total\n",
                1e3 / cb_one_thread, 1e3 / cb_two_threads.aggregate);
    std::unique_ptr<CircuitBreaker> shared_window;
    const Contended window_two_threads = bench2(
        5 * kIters2,
        [&] {
            shared_window = std::make_unique<CircuitBreaker>(10, 60'000'000'000, 3, nullptr, 0,
                                                             &count_settings);
        },
        [&](int, int64_t) {
            const Ticket t = shared_window->acquire();
            do_not_optimize(t.admitted);
            do_not_optimize(shared_window->record_success(t).changed);
        });
    print2("circuit_breaker(count 100).acquire+record_success", window_two_threads);
    std::printf("one count-window breaker, acquire+record_success: 1 thread %.1f M calls/s, "
                "2 threads %.1f M calls/s in total\n",
                1e3 / cb_count_one_thread, 1e3 / window_two_threads.aggregate);
    print2("bulkhead.try_enter+exit",
           bench2(
               kIters2, [] {},
               [&](int, int64_t) {
                   do_not_optimize(bulkhead->try_enter());
                   do_not_optimize(bulkhead->exit());
               }));
    print2("adaptive_limit.acquire+release(interval clock)",
           bench2(
               kIters2, [] {},
               [&](int, int64_t) {
                   do_not_optimize(adaptive->try_enter());
                   const int64_t start = adaptive->now();
                   const int64_t now = adaptive->now();
                   adaptive->record(now - start, 1, false);
                   do_not_optimize(adaptive->exit());
                   do_not_optimize(adaptive->claim_window(now, 10));
               }));
    print2("backoff.delay(exponential, seeded)",
           bench2(
               kIters2, [] {},
               [&](int, int64_t i) { do_not_optimize(seeded.delay(i & 7)); }));
    return 0;
}
