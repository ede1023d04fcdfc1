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

/// Pauses the cyclic garbage collector for the scope of one bulk build
/// (the sums and the samples of a scrape): each allocation of a container
/// counts towards the collector's next run, and the ~300,000 of a scrape of
/// 10,000 label sets ran it ~400 times over the growing sample lists (a
/// fifth of collect()'s time), although nothing built here can be in a
/// cycle (str, int and None in dicts and tuples). With the GIL only: the
/// scope holds it throughout and runs no Python code, so no other thread
/// ever sees the collector paused, and a count left over runs it once at
/// the next allocation. A free-threaded build leaves it running (another
/// thread could disable it meanwhile, and this would enable it again).
class GcPaused {
public:
    GcPaused() noexcept {
#if !defined(Py_GIL_DISABLED)
        was_enabled_ = PyGC_Disable() != 0;
#endif
    }
    ~GcPaused() {
        if (was_enabled_) {
            PyGC_Enable();
        }
    }
    GcPaused(const GcPaused&) = delete;
    GcPaused& operator=(const GcPaused&) = delete;

private:
    bool was_enabled_ = false;
};

/// Item i of a tuple the caller checked (no bounds check where the API
/// allows: once per sample).
inline PyObject* tuple_item(PyObject* tuple, Py_ssize_t i) {
#ifdef Py_LIMITED_API
    return PyTuple_GetItem(tuple, i);
#else
    return PyTuple_GET_ITEM(tuple, i);
#endif
}

/// Sets item i of a tuple just allocated (steals value).
inline void set_tuple_item(PyObject* tuple, Py_ssize_t i, PyObject* value) {
#ifdef Py_LIMITED_API
    PyTuple_SetItem(tuple, i, value);
#else
    PyTuple_SET_ITEM(tuple, i, value);
#endif
}

/// Samples of one type: prometheus_client's Sample namedtuple, with the
/// items of `proto` after (name, labels, value): its defaults (timestamp,
/// exemplar, ...).
class SampleMaker {
public:
    explicit SampleMaker(PyObject* proto)
        : proto_(proto),
          type_(Py_TYPE(proto)),
          alloc_(reinterpret_cast<allocfunc>(PyType_GetSlot(Py_TYPE(proto), Py_tp_alloc))),
          size_(PyTuple_Size(proto)) {
        if (size_ < 3) {
            throw nb::type_error("_emit_samples() proto must be a sample: (name, labels, value, ...)");
        }
        for (Py_ssize_t i = 3; i < size_; ++i) {
            defaults_tracked_ = defaults_tracked_ || PyObject_GC_IsTracked(tuple_item(proto, i));
        }
    }

    /// A sample with name, labels and value. Steals labels and value. New
    /// reference, or nullptr with an error set.
    PyObject* make(PyObject* name, PyObject* labels, PyObject* value) const {
        PyObject* sample = alloc_(type_, size_);
        if (sample == nullptr) {
            Py_DECREF(labels);
            Py_DECREF(value);
            return nullptr;
        }
        set_tuple_item(sample, 0, Py_NewRef(name));
        set_tuple_item(sample, 1, labels);
        set_tuple_item(sample, 2, value);
        for (Py_ssize_t i = 3; i < size_; ++i) {
            set_tuple_item(sample, i, Py_NewRef(tuple_item(proto_, i)));
        }
        // Untracked when none of its items is tracked (str, int, None and a
        // dict of str are not), as the garbage collector itself does to such
        // a tuple on its first pass over it: 80,000 tracked tuples made the
        // collections a scrape triggers a third of its time.
        if (!defaults_tracked_ && !PyObject_GC_IsTracked(name) && !PyObject_GC_IsTracked(labels) &&
            !PyObject_GC_IsTracked(value)) {
            PyObject_GC_UnTrack(sample);
        }
        return sample;
    }

private:
    PyObject* proto_;
    PyTypeObject* type_;
    allocfunc alloc_;
    Py_ssize_t size_;
    bool defaults_tracked_ = false;
};

/// A row's values: a sequence of ints (a list or tuple read in place), or
/// an int alone (a row of one).
class RowValues {
public:
    explicit RowValues(PyObject* values) : values_(values) {
        if (PyLong_Check(values)) {
            size_ = 1;
            return;
        }
        if (!PyList_Check(values) && !PyTuple_Check(values)) {
            owned_ = nb::steal(PySequence_Tuple(values));
            if (!owned_.is_valid()) {
                throw nb::python_error();
            }
            values_ = owned_.ptr();
        }
        size_ = PyList_Check(values_) ? PyList_Size(values_) : PyTuple_Size(values_);
    }
    size_t size() const { return static_cast<size_t>(size_); }
    /// Borrowed. i < size().
    PyObject* operator[](size_t i) const {
        if (size_ == 1 && PyLong_Check(values_)) {
            return values_;
        }
        return PyList_Check(values_) ? PyList_GetItem(values_, static_cast<Py_ssize_t>(i))
                                     : tuple_item(values_, static_cast<Py_ssize_t>(i));
    }

private:
    PyObject* values_;
    nb::object owned_;  // a tuple of another sequence's items
    Py_ssize_t size_ = 0;
};

/// `before` (a list of the values reported before for a row's series, one
/// per column) at column i raised to `value`, or `value` lowered to it: the
/// value to report, borrowed (a counter never goes backwards).
inline PyObject* clamped(PyObject* before, size_t i, PyObject* value) {
    PyObject* was = PyList_GetItem(before, static_cast<Py_ssize_t>(i));
    if (was == value) {
        return value;  // the common case: unchanged (most are the cached 0)
    }
    const int lower = PyObject_RichCompareBool(value, was, Py_LT);
    if (lower < 0) {
        throw nb::python_error();
    }
    if (lower) {
        return was;
    }
    PyList_SetItem(before, static_cast<Py_ssize_t>(i), Py_NewRef(value));
    return value;
}

/// For each (key, values) of `rows` and each column, appends to the column's
/// samples list a sample named the column's name, labelled label_names = key
/// (plus the column's extra label, if any), valued values[the column's
/// index]; a row without that value gets no sample there. With `reported`
/// (a dict key -> list of the values reported before, one per column), a
/// clamped column's value is never below the one reported before for its
/// series, and `reported` is updated. The samples of a row whose columns
/// have no extra label share one labels dict (read-only to the exposition).
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
    const SampleMaker maker(proto.ptr());
    const GcPaused paused;
    const nb::list items = rows.items();  // a list of its own: rows may not change meanwhile
    for (nb::handle item : items) {
        nb::handle key = PyTuple_GetItem(item.ptr(), 0);
        if (!PyTuple_Check(key.ptr()) || PyTuple_Size(key.ptr()) != label_names.size()) {
            throw nb::value_error("_emit_samples() keys must be tuples of one value per label");
        }
        const RowValues values(PyTuple_GetItem(item.ptr(), 1));
        const nb::dict base = base_labels(label_names.ptr(), key.ptr());
        PyObject* before = nullptr;  // the list of the values reported before, with `reported`
        if (!reported.is_none()) {
            before = PyDict_GetItemWithError(reported.ptr(), key.ptr());  // borrowed
            if (before == nullptr && PyErr_Occurred()) {
                throw nb::python_error();
            }
            if (before != nullptr) {
                if (!PyList_Check(before) ||
                    PyList_Size(before) != static_cast<Py_ssize_t>(cols.size())) {
                    throw nb::value_error("_emit_samples() reported values are one list per "
                                          "key, one value per column");
                }
            } else {
                nb::list zeros;
                for (size_t i = 0; i < cols.size(); ++i) {
                    zeros.append(0);
                }
                if (PyDict_SetItem(reported.ptr(), key.ptr(), zeros.ptr()) < 0) {
                    throw nb::python_error();
                }
                before = zeros.ptr();  // the dict holds it
            }
        }
        for (size_t i = 0; i < cols.size(); ++i) {
            const Spec& c = cols[i];
            if (c.index >= values.size()) {
                continue;  // not in this row (a gauge of live objects, for dropped ones' labels)
            }
            PyObject* value = values[c.index];
            if (before != nullptr && c.clamped) {
                value = clamped(before, i, value);
            }
            PyObject* labels = c.extra_name == Py_None
                                   ? Py_NewRef(base.ptr())
                                   : labels_dict(base.ptr(), c.extra_name, c.extra_value);
            if (labels == nullptr) {
                throw nb::python_error();
            }
            PyObject* sample = maker.make(c.name, labels, Py_NewRef(value));
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
