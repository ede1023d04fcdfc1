// ManualClock: a clock that moves only when told to, read by every
// primitive made with it (vr::ManualClock).

#include "binding.hpp"

namespace virtrigaud_bind {

void bind_clock(nb::module_& m) {
    nb::class_<vr::ManualClock>(m, "ManualClock",
                                "A clock that moves only when told to (native part).")
        .def(nb::init<int64_t>(), "start_ns"_a = 0)
        .def("now_ns", &vr::ManualClock::now, "The current time in nanoseconds.")
        .def(
            "now", [](const vr::ManualClock& c) { return static_cast<double>(c.now()) / kNsPerSecond; },
            "The current time in seconds.")
        .def("_advance_ns", &vr::ManualClock::advance, "delta_ns"_a,
             "Moves time forward (a negative delta does nothing; time stops at MAX_CLOCK_NS).")
        .def("_set_ns", &vr::ManualClock::set, "t_ns"_a,
             "Sets the time (clamped to [0, MAX_CLOCK_NS]) if it is not in the past;\n"
             "returns whether it moved.");
}

}  // namespace virtrigaud_bind
