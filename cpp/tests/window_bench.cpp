// Window-mode breakers (issue 22): ns per acquire + record_success on one
// thread, and the calls per second of two threads on one breaker against one.
// Build Release (not under a sanitizer) and run:
//   cmake -S . -B build/bench -DVIRTRIGAUD_BUILD_STRESS=ON -DCMAKE_BUILD_TYPE=Release
//   cmake --build build/bench --target window_bench && build/bench/window_bench [ROUNDS [CALLS]]
//   build/bench/window_bench --best [RUNS [CALLS]]   one thread only: best of RUNS
//
// --best times RUNS runs of CALLS calls per case on the calling thread by its
// CPU time (preemption left out), the time window's breaker reset every 2^19
// calls (a second's bucket takes 2^20 - 1 outcomes; past that a record is
// dropped and writes nothing), and prints the fastest run, the tenth
// percentile and the median: to compare two builds, run their binaries in
// turn several times and compare the fastest runs.
//
// Each round times every case once with one thread (pinned to the first CPU
// this process may use) and once with two (pinned to the first two), in
// turn, so that a machine shared with other work disturbs both alike; a
// case runs for a fixed number of calls per thread. The report gives the
// median over the rounds and the spread (fastest and slowest round): on a
// machine whose other jobs come and go, the median is the figure, the
// spread says how far to trust it. The two-thread figure is the total:
// all calls of both threads over the wall time from the release of both to
// the end of the later one.
#include <virtrigaud/circuit_breaker.hpp>
#include <virtrigaud/clock.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

using namespace virtrigaud;

namespace {

template <class T>
inline void do_not_optimize(const T& value) {
    asm volatile("" : : "r,m"(value) : "memory");
}

/// The CPUs this process may run on, in order (empty where unknown: no pinning).
std::vector<int> allowed_cpus() {
    std::vector<int> cpus;
#if defined(__linux__)
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        for (int c = 0; c < CPU_SETSIZE; ++c) {
            if (CPU_ISSET(c, &set)) {
                cpus.push_back(c);
            }
        }
    }
#endif
    return cpus;
}

/// Pins the calling thread to `cpu` (< 0: leaves it be).
void pin_to(int cpu) {
#if defined(__linux__)
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    }
#else
    (void)cpu;
#endif
}

/// One case: a breaker made fresh for each run, and the loop body.
struct Case {
    const char* name;
    std::function<std::unique_ptr<CircuitBreaker>()> make;
};

/// CPU time of the calling thread, ns (the wall clock where unknown).
int64_t thread_cpu_ns() {
#if defined(__linux__)
    timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0) {
        return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
    }
#endif
    return steady_now_ns();
}

struct Run {
    int64_t wall_ns;  // from the release of the threads to the end of the last
    bool clean;       // no thread preempted, and the threads ran together
};

/// `threads` threads (pinned to cpus[0..threads)) each making `calls`
/// acquire + record_success calls on one fresh breaker. The wall time runs
/// from the first thread's start to the last one's end; the run is clean if
/// no thread was preempted and the threads ran together (each for >= 90% of
/// the shorter one's time: otherwise the "two threads" ran one at a time).
Run run_once(const Case& c, int threads, int64_t calls, const std::vector<int>& cpus) {
    const std::unique_ptr<CircuitBreaker> breaker = c.make();
    CircuitBreaker& b = *breaker;
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::vector<int64_t> starts(static_cast<size_t>(threads), 0);
    std::vector<int64_t> ends(static_cast<size_t>(threads), 0);
    std::atomic<int> preempted{0};
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
            pin_to(t < static_cast<int>(cpus.size()) ? cpus[static_cast<size_t>(t)] : -1);
            ready.fetch_add(1);
            while (!go.load(std::memory_order_acquire)) {
            }
            const int64_t wall0 = steady_now_ns();
            const int64_t cpu0 = thread_cpu_ns();
            for (int64_t i = 0; i < calls; ++i) {
                const Ticket ticket = b.acquire();
                do_not_optimize(ticket.admitted);
                do_not_optimize(b.record_success(ticket).changed);
            }
            const int64_t cpu1 = thread_cpu_ns();
            const int64_t wall1 = steady_now_ns();
            if (static_cast<double>(cpu1 - cpu0) < 0.95 * static_cast<double>(wall1 - wall0)) {
                preempted.fetch_add(1);
            }
            starts[static_cast<size_t>(t)] = wall0;
            ends[static_cast<size_t>(t)] = wall1;
        });
    }
    // The main thread yields rather than spins: the workers have the CPUs.
    while (ready.load() < threads) {
        std::this_thread::yield();
    }
    go.store(true, std::memory_order_release);
    for (auto& w : workers) {
        w.join();
    }
    const int64_t first = *std::min_element(starts.begin(), starts.end());
    const int64_t last = *std::max_element(ends.begin(), ends.end());
    const int64_t overlap = *std::min_element(ends.begin(), ends.end()) -
                            *std::max_element(starts.begin(), starts.end());
    int64_t shortest = last - first;
    for (size_t t = 0; t < starts.size(); ++t) {
        shortest = std::min(shortest, ends[t] - starts[t]);
    }
    const bool together = static_cast<double>(overlap) >= 0.9 * static_cast<double>(shortest);
    return {last - first, preempted.load() == 0 && together};
}

struct Spread {
    double median, low, high;
};

Spread spread_of(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return {v[v.size() / 2], v.front(), v.back()};
}

}  // namespace

/// --best: the fastest, tenth-percentile and median ns per call over `runs`
/// runs of `calls` acquire + record_success calls on this thread's CPU time.
void best_of(const Case& c, int runs, int64_t calls) {
    const std::unique_ptr<CircuitBreaker> breaker = c.make();
    CircuitBreaker& b = *breaker;
    std::vector<double> ns;
    int64_t since_reset = 0;
    for (int r = 0; r < runs; ++r) {
        const int64_t t0 = thread_cpu_ns();
        for (int64_t i = 0; i < calls; ++i) {
            const Ticket ticket = b.acquire();
            do_not_optimize(ticket.admitted);
            do_not_optimize(b.record_success(ticket).changed);
        }
        const int64_t t1 = thread_cpu_ns();
        ns.push_back(static_cast<double>(t1 - t0) / static_cast<double>(calls));
        since_reset += calls;
        if (since_reset >= (int64_t{1} << 19)) {
            b.reset();  // a fresh window: a time window's bucket stays below its cap
            since_reset = 0;
        }
    }
    std::sort(ns.begin(), ns.end());
    std::printf("%-17s best %6.2f  p10 %6.2f  median %6.2f ns per call\n", c.name, ns.front(),
                ns[ns.size() / 10], ns[ns.size() / 2]);
}

int main(int argc, char** argv) {
    const bool best = argc > 1 && std::string(argv[1]) == "--best";
    if (best) {
        --argc;
        ++argv;
    }
    const int rounds = argc > 1 ? std::max(1, std::atoi(argv[1])) : best ? 300 : 51;
    const int64_t kCalls = argc > 2 ? std::max(1000, std::atoi(argv[2]))
                                    : best ? 100'000 : 200'000;  // per thread and run
    const std::vector<int> cpus = allowed_cpus();

    WindowSettings count_settings;
    count_settings.kind = WindowKind::kCount;
    count_settings.size = 100;
    count_settings.minimum_calls = 100;
    WindowSettings time_settings = count_settings;
    time_settings.kind = WindowKind::kTime;
    time_settings.size = 60;
    const Case cases[] = {
        {"consecutive", [] { return std::make_unique<CircuitBreaker>(10, 60'000'000'000, 3); }},
        {"CountWindow(100)",
         [&] {
             return std::make_unique<CircuitBreaker>(10, 60'000'000'000, 3, nullptr, 0,
                                                     &count_settings);
         }},
        {"TimeWindow(60)",
         [&] {
             return std::make_unique<CircuitBreaker>(10, 60'000'000'000, 3, nullptr, 0,
                                                     &time_settings);
         }},
    };
    constexpr size_t kCases = sizeof(cases) / sizeof(cases[0]);
    if (best) {
        std::printf("window_bench --best: %d runs of %lld calls, one thread\n", rounds,
                    static_cast<long long>(kCalls));
        for (const Case& c : cases) {
            best_of(c, rounds, kCalls);
        }
        return 0;
    }

    std::printf("window_bench: %d rounds, %lld calls per thread per run, %zu CPUs allowed%s\n",
                rounds, static_cast<long long>(kCalls), cpus.size(),
                cpus.size() >= 2 ? " (threads pinned to the first two)"
                                 : " (fewer than 2: threads not pinned)");
    const std::vector<int> pins = cpus.size() >= 2 ? cpus : std::vector<int>{};
    // Per case and round: ns per call on one thread, M calls/s in total on
    // two, their ratio, and whether neither run was preempted.
    struct Round {
        double ns1, rate2, ratio;
        bool clean;
    };
    std::vector<Round> seen[kCases];
    for (int r = 0; r < rounds; ++r) {
        for (size_t k = 0; k < kCases; ++k) {
            const Run a = run_once(cases[k], 1, kCalls, pins);
            const Run b = run_once(cases[k], 2, kCalls, pins);
            const double rate1 = 1e3 * static_cast<double>(kCalls) / static_cast<double>(a.wall_ns);
            const double rate2 =
                1e3 * static_cast<double>(2 * kCalls) / static_cast<double>(b.wall_ns);
            seen[k].push_back({static_cast<double>(a.wall_ns) / static_cast<double>(kCalls), rate2,
                               rate2 / rate1, a.clean && b.clean});
        }
    }
    std::printf("median (fastest-slowest) over the clean rounds: no thread preempted, both "
                "threads running together\n");
    std::printf("%-17s %-7s %-24s %-34s %s\n", "breaker", "rounds", "1 thread: ns per call",
                "2 threads: M calls/s in total", "2 threads / 1 (same round)");
    for (size_t k = 0; k < kCases; ++k) {
        std::vector<Round> used;
        for (const Round& r : seen[k]) {
            if (r.clean) {
                used.push_back(r);
            }
        }
        const bool all = used.size() < 3;  // too few clean rounds: every round, flagged
        if (all) {
            used = seen[k];
        }
        std::vector<double> ns1, rate2, ratio;
        for (const Round& r : used) {
            ns1.push_back(r.ns1);
            rate2.push_back(r.rate2);
            ratio.push_back(r.ratio);
        }
        const Spread a = spread_of(ns1);
        const Spread b = spread_of(rate2);
        const Spread q = spread_of(ratio);
        char cr[32], ca[64], cb[64], cq[64];
        std::snprintf(cr, sizeof cr, "%zu%s", used.size(), all ? " (all)" : "");
        std::snprintf(ca, sizeof ca, "%6.2f (%.2f-%.2f)", a.median, a.low, a.high);
        std::snprintf(cb, sizeof cb, "%6.1f (%.1f-%.1f; 1 thread %.1f)", b.median, b.low,
                      b.high, 1e3 / a.median);
        std::snprintf(cq, sizeof cq, "%5.2fx (%.2f-%.2f)", q.median, q.low, q.high);
        std::printf("%-17s %-7s %-24s %-34s %s\n", cases[k].name, cr, ca, cb, cq);
    }
    return 0;
}
