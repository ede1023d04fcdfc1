// The metrics collector's inner loops (metrics.py), natively: summing the
// live breakers' counters by their labels, and turning sums into
// prometheus_client samples. A scrape of 10,000 breakers over 10,000 label
// sets makes ~80,000 samples, each a labels dict and a Sample tuple: in
// Python that alone took longer than the whole collect() may (issue 21:
// <= 50 ms).
//
// Both run with the GIL held and call no Python code but dict and tuple
// operations on str keys and int values (whose hashing and comparison run
// none); the breakers are read through a list the caller holds, so none is
// freed while it is read.
#pragma once

#include <nanobind/nanobind.h>

#include <cstdint>
#include <vector>

// Cold: placed with the other rarely run code, away from the hot methods'
// (with them in the breaker's binding, breaker.call(noop) ran ~10% slower
// with the same instructions: code placement).
#if defined(__GNUC__) || defined(__clang__)
#define VIRTRIGAUD_COLD __attribute__((cold))
#else
#define VIRTRIGAUD_COLD
#endif

namespace virtrigaud_bind {
namespace samples {

namespace nb = nanobind;

/// The labels dict label_names[i] -> key[i].
inline nb::dict base_labels(PyObject* label_names, PyObject* key) {
    nb::dict labels;
    const Py_ssize_t n = PyTuple_Size(label_names);
    for (Py_ssize_t i = 0; i < n; ++i) {
        if (PyDict_SetItem(labels.ptr(), PyTuple_GetItem(label_names, i),
                           PyTuple_GetItem(key, i)) < 0) {
            throw nb::python_error();
        }
    }
    return labels;
}

/// A copy of `base` (a small dict's copy is one memcpy of its table) with
/// `extra_name` -> `extra_value` when extra_name is not None. New reference,
/// or nullptr with an error set.
inline PyObject* labels_dict(PyObject* base, PyObject* extra_name, PyObject* extra_value) {
    PyObject* labels = PyDict_Copy(base);
    if (labels != nullptr && extra_name != Py_None &&
        PyDict_SetItem(labels, extra_name, extra_value) < 0) {
        Py_CLEAR(labels);
    }
    return labels;
}

/// A sample of `proto`'s type (a tuple subclass: prometheus_client's Sample
/// namedtuple) with name, labels and value, and proto's items after those
/// (its defaults: timestamp, exemplar, ...). Steals labels and value.
inline PyObject* make_sample(PyObject* proto, PyObject* name, PyObject* labels, PyObject* value) {
    PyTypeObject* type = Py_TYPE(proto);
    const Py_ssize_t n = PyTuple_Size(proto);
    auto* alloc = reinterpret_cast<allocfunc>(PyType_GetSlot(type, Py_tp_alloc));
    PyObject* sample = alloc(type, n);
    if (sample == nullptr) {
        Py_DECREF(labels);
        Py_DECREF(value);
        return nullptr;
    }
    PyTuple_SetItem(sample, 0, Py_NewRef(name));
    PyTuple_SetItem(sample, 1, labels);
    PyTuple_SetItem(sample, 2, value);
    for (Py_ssize_t i = 3; i < n; ++i) {
        PyTuple_SetItem(sample, i, Py_NewRef(PyTuple_GetItem(proto, i)));
    }
    // Untracked when none of its items is tracked (str, int, None and a dict
    // of str are not), as the garbage collector itself does to such a tuple
    // on its first pass over it: 80,000 tracked tuples made the collections
    // a scrape triggers a third of its time.
    for (Py_ssize_t i = 0; i < n; ++i) {
        if (PyObject_GC_IsTracked(PyTuple_GetItem(sample, i))) {
            return sample;
        }
    }
    PyObject_GC_UnTrack(sample);
    return sample;
}

/// The row's values as a tuple of ints (an int alone is a row of one).
inline nb::tuple row_values(nb::handle values) {
    if (PyLong_Check(values.ptr())) {
        return nb::make_tuple(values);
    }
    return nb::tuple(values);
}

/// For each (key, values) of `rows` and each column, appends to the column's
/// samples list a sample named the column's name, labelled label_names = key
/// (plus the column's extra label, if any), valued values[the column's
/// index]; a row without that value gets no sample there. With `reported`
/// (a dict key -> list of the values reported before, one per column), a
/// clamped column's value is never below the one reported before for its
/// series, and `reported` is updated.
using LabelValues = nb::typed<nb::tuple, nb::str, nb::ellipsis>;
using Column = nb::typed<nb::tuple, nb::typed<nb::list, nb::object>, nb::str, nb::object,
                         nb::object, int, bool>;

VIRTRIGAUD_COLD inline void emit(nb::typed<nb::dict, LabelValues, nb::any> rows, LabelValues label_names,
                 nb::typed<nb::tuple, Column, nb::ellipsis> columns,
                 nb::typed<nb::tuple, nb::object, nb::ellipsis> proto,
                 nb::typed<nb::object, nb::typed<nb::dict, LabelValues, nb::typed<nb::list, nb::any>>>
                     reported) {
    if (!reported.is_none() && !PyDict_Check(reported.ptr())) {
        throw nb::type_error("_emit_samples() reported must be a dict or None");
    }
    struct Spec {
        PyObject* samples;
        PyObject* name;
        PyObject* extra_name;
        PyObject* extra_value;
        size_t index;
        bool clamped;
    };
    std::vector<Spec> cols;
    for (nb::handle spec : columns) {
        nb::tuple c = nb::cast<nb::tuple>(spec);
        if (c.size() != 6 || !PyList_Check(c[0].ptr()) || !PyUnicode_Check(c[1].ptr()) ||
            !PyLong_Check(c[4].ptr()) || !PyBool_Check(c[5].ptr())) {
            throw nb::type_error(
                "_emit_samples() columns are (samples list, name, extra label or None, its "
                "value, index of the row's value, clamped)");
        }
        cols.push_back({c[0].ptr(), c[1].ptr(), c[2].ptr(), c[3].ptr(), nb::cast<size_t>(c[4]),
                        c[5].ptr() == Py_True});
    }
    const nb::list items = rows.items();  // a list of its own: rows may not change meanwhile
    for (nb::handle item : items) {
        nb::handle key = PyTuple_GetItem(item.ptr(), 0);
        if (!PyTuple_Check(key.ptr()) || PyTuple_Size(key.ptr()) != label_names.size()) {
            throw nb::value_error("_emit_samples() keys must be tuples of one value per label");
        }
        const nb::tuple values = row_values(PyTuple_GetItem(item.ptr(), 1));
        const nb::dict base = base_labels(label_names.ptr(), key.ptr());
        nb::object before;  // the list of the values reported before, with `reported`
        if (!reported.is_none()) {
            PyObject* found = PyDict_GetItemWithError(reported.ptr(), key.ptr());  // borrowed
            if (found == nullptr && PyErr_Occurred()) {
                throw nb::python_error();
            }
            if (found != nullptr) {
                if (!PyList_Check(found) ||
                    PyList_Size(found) != static_cast<Py_ssize_t>(cols.size())) {
                    throw nb::value_error("_emit_samples() reported values are one list per "
                                          "key, one value per column");
                }
                before = nb::borrow(found);
            } else {
                nb::list zeros;
                for (size_t i = 0; i < cols.size(); ++i) {
                    zeros.append(0);
                }
                if (PyDict_SetItem(reported.ptr(), key.ptr(), zeros.ptr()) < 0) {
                    throw nb::python_error();
                }
                before = std::move(zeros);
            }
        }
        for (size_t i = 0; i < cols.size(); ++i) {
            if (cols[i].index >= values.size()) {
                continue;  // not in this row (a gauge of live objects, for dropped ones' labels)
            }
            nb::object value = nb::borrow(values[cols[i].index]);
            if (before.is_valid() && cols[i].clamped) {
                nb::handle was = PyList_GetItem(before.ptr(), static_cast<Py_ssize_t>(i));
                const int lower = PyObject_RichCompareBool(value.ptr(), was.ptr(), Py_LT);
                if (lower < 0) {
                    throw nb::python_error();
                }
                if (lower) {
                    value = nb::borrow(was);
                } else {
                    PyList_SetItem(before.ptr(), static_cast<Py_ssize_t>(i), value.inc_ref().ptr());
                }
            }
            const Spec& c = cols[i];
            PyObject* labels = labels_dict(base.ptr(), c.extra_name, c.extra_value);
            if (labels == nullptr) {
                throw nb::python_error();
            }
            PyObject* sample = make_sample(proto.ptr(), c.name, labels, value.release().ptr());
            if (sample == nullptr) {
                throw nb::python_error();
            }
            const int appended = PyList_Append(c.samples, sample);
            Py_DECREF(sample);
            if (appended < 0) {
                throw nb::python_error();
            }
        }
    }
}

}  // namespace samples
}  // namespace virtrigaud_bind
