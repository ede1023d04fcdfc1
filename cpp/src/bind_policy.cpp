// Policy: the sync success path of a composed policy in one native crossing:
// breaker admit -> token bucket -> bulkhead -> call -> record. Anything else
// (a rejection, an exception to retry, a timeout to enforce) is handed to the
// Python method `_resume(stage, exc, fn, args, kwargs)`, which owns the retry
// loop, waiting and error construction.

#include "policy.hpp"

namespace virtrigaud_bind {
namespace {

// Calls self._resume(stage, exc, fn, args, kwargs) with the forwarded arguments.
PyObject* resume(PyObject* self, int stage, PyObject* exc, PyObject* const* args,
                 Py_ssize_t nargs, PyObject* kwnames) {
    PyObject* tuple;
    PyObject* kwargs;
    if (!pack_arguments(args + 1, nargs - 1, kwnames, tuple, kwargs)) {
        return nullptr;
    }
    PyObject* r = PyObject_CallMethod(self, "_resume", "iOOOO", stage, exc ? exc : Py_None,
                                      args[0], tuple, kwargs);
    Py_DECREF(tuple);
    Py_DECREF(kwargs);
    return r;
}

}  // namespace

PyObject* policy_execute(PyObject* self, PyObject* const* args, Py_ssize_t nargsf,
                         PyObject* kwnames) {
    auto* p = fn_method_target<PyPolicy>(self, nargsf, "Policy", "Policy.execute()");
    if (p == nullptr) {
        return nullptr;
    }
    const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (!p->fast) {
        return resume(self, kPythonPath, nullptr, args, nargs, kwnames);
    }
    vr::Ticket ticket;
    const int stage = p->enter(ticket);
    if (stage == kRaised) {
        return nullptr;
    }
    if (stage != kCalled) {
        return resume(self, stage, nullptr, args, nargs, kwnames);
    }
    PyObject* result;
    {
        const virtrigaud_held::Scope held(p->breaker_obj.ptr(), p->bucket_obj.ptr());
        // Not args[0] as the callee's spare slot: it is the caller's (see forward_call).
        result = forward_call(args[0], args + 1, static_cast<size_t>(nargs - 1), kwnames);
    }
    if (result != nullptr) {
        if (is_coroutine(result)) {
            if (!p->exit_unrun(ticket)) {
                Py_DECREF(result);
                return nullptr;
            }
            return refuse_coroutine(result, "Policy.execute()",
                                    "'await policy.execute_async(fn, ...)'");
        }
        p->count_first_attempt_success();
        if (!p->exit_success(ticket)) {
            Py_DECREF(result);
            return nullptr;
        }
        return result;
    }
    PyObject* exc = fetch_exception();
    HookError error;
    p->exit_raised(ticket, exc, error);
    if (error.raise(exc)) {
        return nullptr;
    }
    result = resume(self, kCalled, exc, args, nargs, kwnames);
    Py_DECREF(exc);
    return result;
}

namespace {

// The async path's two crossings, raw for the same reason as execute().
PyObject* policy_enter(PyObject* self, PyObject* const*, Py_ssize_t nargsf, PyObject* kwnames) {
    auto* p = ready_instance<PyPolicy>(self, "Policy");
    if (p == nullptr) {
        return nullptr;
    }
    if (PyVectorcall_NARGS(nargsf) != 0 || kwnames != nullptr) {
        PyErr_SetString(PyExc_TypeError, "Policy._enter() takes no arguments");
        return nullptr;
    }
    if (!p->fast) {
        return PyLong_FromLong(kEnterPythonPath);
    }
    vr::Ticket ticket;
    const int stage = p->enter(ticket);
    if (stage == kRaised) {
        return nullptr;
    }
    if (stage != kCalled) {
        return PyLong_FromLong(-stage);
    }
    return PyLong_FromLongLong(p->breaker != nullptr ? ticket.encode() : 0);
}

PyObject* policy_exit(PyObject* self, PyObject* const* args, Py_ssize_t nargsf,
                      PyObject* kwnames) {
    auto* p = ready_instance<PyPolicy>(self, "Policy");
    if (p == nullptr) {
        return nullptr;
    }
    // _exit(ticket[, start_ns]): start_ns >= 0, the attempt's start on the
    // breaker's clock, times it for a breaker judging slow calls.
    int64_t ticket = 0;
    int64_t start_ns = -1;
    const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 1 || nargs > 2 || kwnames != nullptr ||
        !int_arg(args[0], "Policy", "ticket", ticket) ||
        (nargs == 2 && !int_arg(args[1], "Policy", "start_ns", start_ns))) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "Policy._exit() takes a ticket and a start_ns");
        }
        return nullptr;
    }
    vr::Ticket t = vr::Ticket::decode(ticket);
    t.start_ns = start_ns;
    if (!p->exit_success(t)) {
        return nullptr;
    }
    Py_RETURN_NONE;
}

PyMethodDef policy_enter_def = {
    "_enter", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(policy_enter)),
    METH_FASTCALL | METH_KEYWORDS,
    "_enter(self, /)\n--\n\n"
    "Admits an attempt: a ticket >= 0; or -1 breaker open, -2 rate limited,\n"
    "-3 bulkhead full (nothing held); or -100 when every call needs Python."};

PyMethodDef policy_exit_def = {
    "_exit", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(policy_exit)),
    METH_FASTCALL | METH_KEYWORDS,
    "_exit(self, ticket, start_ns=-1, /)\n--\n\n"
    "The attempt succeeded: record it and free its slot (a breaker timing slow\n"
    "calls times it from start_ns, the attempt's start on its clock, when >= 0)."};

PyMethodDef policy_execute_def = {
    "execute", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(policy_execute)),
    METH_FASTCALL | METH_KEYWORDS,
    "execute(self, fn, /, *args, **kwargs)\n--\n\n"
    "Runs fn(*args, **kwargs) under the policy and returns its result. The\n"
    "first attempt's admit -> call -> record runs natively; rejections,\n"
    "retries and timeouts continue in Policy._resume."};

PyMethodDef policy_execute_async_def = {
    "execute_async",
    reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(policy_execute_async)),
    METH_FASTCALL | METH_KEYWORDS,
    "execute_async(self, fn, /, *args, **kwargs)\n--\n\n"
    "Awaits fn(*args, **kwargs) under the policy and returns its result (await\n"
    "the awaitable returned, an AsyncCall). An attempt cut off by a deadline\n"
    "(the policy's, or one around this call: asyncio.timeout, anyio's\n"
    "fail_after) counts as a Timeout: a breaker failure. Cancelling the\n"
    "awaiting task from outside records nothing and gives back the breaker\n"
    "slot, the bulkhead slot and any tokens reserved while waiting; a\n"
    "cancelled task is never retried. The first attempt's admit -> await ->\n"
    "record runs natively; rejections, retries and timeouts continue in\n"
    "Policy._resume_async."};

int policy_traverse(PyObject* self, visitproc visit, void* arg) {
#if PY_VERSION_HEX >= 0x03090000
    Py_VISIT(Py_TYPE(self));
#endif
    if (!nb::inst_ready(self)) {
        return 0;
    }
    auto* p = nb::inst_ptr<PyPolicy>(self);
    Py_VISIT(p->breaker_obj.ptr());
    Py_VISIT(p->bucket_obj.ptr());
    Py_VISIT(p->bulkhead_obj.ptr());
    return 0;
}

int policy_clear(PyObject* self) {
    if (nb::inst_ready(self)) {
        auto* p = nb::inst_ptr<PyPolicy>(self);
        p->breaker = nullptr;
        p->bucket = nullptr;
        p->bulkhead = nullptr;
        p->breaker_obj = nb::object();
        p->bucket_obj = nb::object();
        p->bulkhead_obj = nb::object();
    }
    return 0;
}

PyType_Slot policy_slots[] = {{Py_tp_traverse, reinterpret_cast<void*>(policy_traverse)},
                              {Py_tp_clear, reinterpret_cast<void*>(policy_clear)},
                              {0, nullptr}};

}  // namespace

bool specialise_policy(nb::handle cls) {
    if (!is_subclass(cls, nb::type<PyPolicy>())) {
        return false;
    }
    specialise_method(cls, &policy_execute_def);
    specialise_method(cls, &policy_enter_def);
    specialise_method(cls, &policy_exit_def);
    specialise_method(cls, &policy_execute_async_def);
    return true;
}

void bind_policy(nb::module_& m) {
    nb::class_<PyPolicy> policy(m, "Policy", "Composed policy (native part).",
                                nb::type_slots(policy_slots));
    policy
        .def(nb::init<nb::handle, nb::handle, nb::handle, bool, bool, nb::handle>(),
             "breaker"_a.none(), "bucket"_a.none(), "bulkhead"_a.none(), "fast"_a, "waits"_a,
             "budget"_a.none() = nb::none())
        .def(
            "_exit_exception",
            [](PyPolicy& p, int64_t ticket, nb::handle exc, int64_t start_ns) {
                HookError error;
                vr::Ticket t = vr::Ticket::decode(ticket);
                t.start_ns = start_ns;
                p.exit_raised(t, exc.ptr(), error);
                if (error.raise()) {
                    throw nb::python_error();
                }
            },
            "ticket"_a, "exc"_a, "start_ns"_a = -1,
            "The attempt raised exc: record it and free its slot (a breaker timing\n"
            "slow calls times it from start_ns, the admission's clock time, when >= 0).")
        .def(
            "_exit_unrun",
            [](PyPolicy& p, int64_t ticket) {
                if (!p.exit_unrun(vr::Ticket::decode(ticket))) {
                    throw nb::python_error();
                }
            },
            "ticket"_a, "The attempt did not run after all: give its slots back, record nothing.");
    add_fastcall_method(policy, &policy_execute_def);
    add_fastcall_method(policy, &policy_enter_def);
    add_fastcall_method(policy, &policy_exit_def);
    add_fastcall_method(policy, &policy_execute_async_def);
}

}  // namespace virtrigaud_bind
