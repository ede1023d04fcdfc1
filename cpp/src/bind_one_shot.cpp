// OneShot: a flag set once, atomically (the object and claim() are in
// binding.hpp: BulkheadSlot is a OneShot too).

#include "binding.hpp"

namespace virtrigaud_bind {
namespace {

PyObject* one_shot_claim(PyObject* self, PyObject*) { return PyBool_FromLong(claim(self)); }

PyObject* one_shot_claimed(PyObject* self, void*) {
    return PyBool_FromLong(
        reinterpret_cast<OneShotObject*>(self)->done.load(std::memory_order_acquire) != 0);
}

void one_shot_dealloc(PyObject* self) {
    PyTypeObject* type = Py_TYPE(self);
    auto* free_fn = reinterpret_cast<freefunc>(PyType_GetSlot(type, Py_tp_free));
    free_fn(self);
    Py_DECREF(type);
}

PyMethodDef one_shot_methods[] = {
    {"_claim", one_shot_claim, METH_NOARGS,
     "_claim(self, /)\n--\n\n"
     "True for the first call on this object (any thread), False for every later one."},
    {nullptr, nullptr, 0, nullptr}};

PyGetSetDef one_shot_getset[] = {
    {"_claimed", one_shot_claimed, nullptr, "Whether _claim() was called.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyType_Slot one_shot_slots[] = {
    {Py_tp_new, reinterpret_cast<void*>(PyType_GenericNew)},
    {Py_tp_dealloc, reinterpret_cast<void*>(one_shot_dealloc)},
    {Py_tp_methods, one_shot_methods},
    {Py_tp_getset, one_shot_getset},
    {Py_tp_doc, const_cast<char*>(
                    "OneShot(): a flag that _claim() sets once, atomically (the base of objects\n"
                    "that give something back exactly once).")},
    {0, nullptr}};

PyType_Spec one_shot_spec = {"virtrigaud_resilience._core.OneShot", sizeof(OneShotObject), 0,
                             Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, one_shot_slots};

}  // namespace

void bind_one_shot(nb::module_& m) {
    nb::object type = type_from_spec(m, &one_shot_spec);
    m.attr("OneShot") = type;
    g_one_shot_type = type.inc_ref().ptr();  // module lifetime
}

}  // namespace virtrigaud_bind
