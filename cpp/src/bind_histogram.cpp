// LatencyHistogram: the last `window` latencies, lock-free (vr::LatencyHistogram),
// for hedging's "pNN" delay (hedging.py). Seconds in and out; nanoseconds inside.

#include <cstdio>

#include "binding.hpp"
#include "virtrigaud/latency_histogram.hpp"

namespace virtrigaud_bind {
namespace {

using Histogram = vr::LatencyHistogram;

void init_histogram(Histogram* self, int64_t window) {
    if (window < 1 || window > Histogram::kMaxWindow) {
        throw nb::value_error(("LatencyHistogram window must be in [1, " +
                               std::to_string(Histogram::kMaxWindow) + "], got " +
                               std::to_string(window))
                                  .c_str());
    }
    new (self) Histogram(window);
}

void record_seconds(Histogram& h, double seconds) {
    // NaN and negatives (a clock that jumped) count as 0; huge values clamp.
    const double ns = seconds * 1e9;
    h.record(ns > 0 ? (ns < static_cast<double>(Histogram::kMaxValue)
                           ? static_cast<uint64_t>(ns)
                           : Histogram::kMaxValue)
                    : 0);
}

double percentile_seconds(const Histogram& h, double percent, int64_t min_samples) {
    if (!(percent > 0 && percent < 100)) {
        char shown[40];
        std::snprintf(shown, sizeof shown, "%.17g", percent);
        throw nb::value_error(
            (std::string("LatencyHistogram percentile must be in (0, 100), got ") + shown)
                .c_str());
    }
    const double ns = h.quantile(percent / 100.0, min_samples < 1 ? 1 : min_samples);
    return ns < 0 ? std::numeric_limits<double>::quiet_NaN() : ns / 1e9;
}

}  // namespace

void bind_histogram(nb::module_& m) {
    nb::class_<Histogram>(m, "LatencyHistogram",
                          "The last `window` latencies in log-linear buckets (16 per power of\n"
                          "two, at most 6.25% wide), lock-free: for a percentile per call.")
        .def("__init__", &init_histogram, "window"_a)
        .def_prop_ro("window", &Histogram::window, "Samples kept (the newest).")
        .def_prop_ro("count", &Histogram::count, "Samples held now (up to window).")
        .def_prop_ro("recorded", &Histogram::recorded, "Samples recorded since construction.")
        .def("record", &record_seconds, "seconds"_a,
             "Adds one latency in seconds (the oldest of a full window goes).")
        .def("percentile", &percentile_seconds, "percent"_a, "min_samples"_a = 1,
             "The `percent` percentile (in (0, 100)) of the samples held, in seconds,\n"
             "linear within its bucket; NaN while fewer than `min_samples` are held.");
}

}  // namespace virtrigaud_bind
