// Backoff: the delay calculator (vr::Backoff).

#include "binding.hpp"

namespace virtrigaud_bind {
namespace {

struct PyBackoff {
    vr::Backoff core;
    PyBackoff(double base, double cap, double multiplier, bool jitter, int strategy,
              bool seeded, uint64_t seed)
        : core(base, cap, multiplier, jitter, static_cast<vr::Strategy>(strategy & 3), seeded,
               seed) {}
};

double backoff_delay(PyBackoff& b, nb::handle attempt, double previous) {
    int64_t n = 0;
    if (!int_arg(attempt.ptr(), "Backoff", "attempt", n)) {
        throw nb::python_error();
    }
    if (n < 0) {
        throw nb::value_error(("Backoff attempt must be >= 0, got " +
                               std::string(nb::str(nb::repr(attempt)).c_str()))
                                  .c_str());
    }
    if (!std::isfinite(previous) || previous < 0) {
        previous = 0;
    }
    return b.core.delay(n, previous);
}

}  // namespace

void bind_backoff(nb::module_& m) {
    nb::class_<PyBackoff>(m, "Backoff", "Backoff delay calculator (native part).")
        .def(nb::init<double, double, double, bool, int, bool, uint64_t>(), "base_delay"_a,
             "max_delay"_a, "multiplier"_a, "jitter"_a, "strategy"_a, "seeded"_a, "seed"_a)
        .def("delay", &backoff_delay, "attempt"_a.none(), "previous"_a = 0.0,
             "Seconds to wait before retry `attempt` (an int >= 0; attempts beyond\n"
             "int64 saturate at max_delay). `previous` is the delay used before, for\n"
             "decorrelated_jitter.")
        .def("uniform", [](PyBackoff& b) { return b.core.uniform(); },
             "One draw in [0, 1) from this calculator's generator.");
}

}  // namespace virtrigaud_bind
