// The metrics collector's inner loop (metrics.py), natively: turning sums
// by labels into prometheus_client samples. A scrape of 10,000 breakers over
// 10,000 label sets makes ~130,000 samples, each a labels dict and a Sample
// tuple: in Python that alone took longer than the whole collect() may
// (issue 21: <= 50 ms), and made natively, with their deallocation, still
// most of it. So a collector keeps the samples it reported, and reports an
// unchanged series by the same sample again.
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

/// Item i of a list the caller checked, i < its size.
inline PyObject* list_item(PyObject* list, Py_ssize_t i) {
#ifdef Py_LIMITED_API
    return PyList_GetItem(list, i);
#else
    return PyList_GET_ITEM(list, i);
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

    /// The samples' type (the proto's).
    PyTypeObject* type() const { return type_; }

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

/// `value` raised to `was` (the value reported before), borrowed: a counter
/// never goes backwards.
inline PyObject* at_least(PyObject* value, PyObject* was) {
    if (was == value) {
        return value;  // the common case: unchanged (most are the cached 0)
    }
    const int lower = PyObject_RichCompareBool(value, was, Py_LT);
    if (lower < 0) {
        throw nb::python_error();
    }
    return lower ? was : value;
}

/// Whether `value` is the value `was` reported before: equal and of the same
/// type (1 and 1.0 print differently).
inline bool same_value(PyObject* value, PyObject* was) {
    if (value == was) {
        return true;
    }
    if (Py_TYPE(value) != Py_TYPE(was)) {
        return false;
    }
    const int equal = PyObject_RichCompareBool(value, was, Py_EQ);
    if (equal < 0) {
        throw nb::python_error();
    }
    return equal != 0;
}

using LabelValues = nb::typed<nb::tuple, nb::str, nb::ellipsis>;
using Column = nb::typed<nb::tuple, nb::typed<nb::list, nb::object>, nb::str, nb::object,
                         nb::object, int, bool>;
using Columns = nb::typed<nb::tuple, Column, nb::ellipsis>;
using Proto = nb::typed<nb::tuple, nb::object, nb::ellipsis>;
using Reported =
    nb::typed<nb::object, nb::typed<nb::dict, LabelValues, nb::typed<nb::list, nb::any>>>;

/// Appends samples to the columns' lists, row by row: for each column, a
/// sample named the column's name, labelled label_names = the row's key
/// (plus the column's extra label, if any), valued the row's value at the
/// column's index; a row without that value (too short, or None there)
/// gets no sample there. The samples of a row whose columns have no extra
/// label share one labels dict (read-only to the exposition).
///
/// With `reported` (a dict key -> the list of the samples reported before,
/// one per column, None where none was), a series reported before is
/// reported again by the same sample while its value is unchanged (a large
/// fleet's series mostly are: no dict and no tuple made or freed), and a
/// new sample shares the old one's labels dict; a clamped column's value
/// never goes below the one reported before, and a clamped series, once
/// reported, is reported in every later row of its key (a counter neither
/// goes back nor disappears). `reported` is updated.
///
/// The samples go to the columns' lists at finish(), each list grown once
/// (appended one by one, 10,000 samples grew a list ~80 times, each a copy).
/// Pause the garbage collector around the whole (GcPaused).
class Emitter {
public:
    struct Spec {
        PyObject* samples;
        PyObject* name;
        PyObject* extra_name;
        PyObject* extra_value;
        size_t index;
        bool clamped;
    };

    Emitter(LabelValues label_names, Columns columns, Proto proto, Reported reported)
        : label_names_(std::move(label_names)),
          proto_(std::move(proto)),
          maker_(proto_.ptr()),
          reported_(std::move(reported)) {
        if (!reported_.is_none() && !PyDict_Check(reported_.ptr())) {
            throw nb::type_error("_emit_samples() reported must be a dict or None");
        }
        for (nb::handle spec : columns) {
            nb::tuple c = nb::cast<nb::tuple>(spec);
            if (c.size() != 6 || !PyList_Check(c[0].ptr()) || !PyUnicode_Check(c[1].ptr()) ||
                !PyLong_Check(c[4].ptr()) || !PyBool_Check(c[5].ptr())) {
                throw nb::type_error(
                    "_emit_samples() columns are (samples list, name, extra label or None, its "
                    "value, index of the row's value, clamped)");
            }
            cols_.push_back({c[0].ptr(), c[1].ptr(), c[2].ptr(), c[3].ptr(),
                             nb::cast<size_t>(c[4]), c[5].ptr() == Py_True});
        }
        columns_ = std::move(columns);  // holds the lists and names cols_ points to
        pending_.resize(cols_.size());
    }
    ~Emitter() {
        for (std::vector<PyObject*>& samples : pending_) {
            for (PyObject* sample : samples) {
                Py_DECREF(sample);
            }
        }
    }
    Emitter(const Emitter&) = delete;
    Emitter& operator=(const Emitter&) = delete;

    /// Room for `rows` rows' samples in each column.
    void reserve(size_t rows) {
        for (std::vector<PyObject*>& samples : pending_) {
            samples.reserve(rows);
        }
    }

    /// Appends the samples of the rows to the columns' lists.
    void finish() {
        for (size_t i = 0; i < cols_.size(); ++i) {
            std::vector<PyObject*>& samples = pending_[i];
            nb::object list = nb::steal(PyList_New(static_cast<Py_ssize_t>(samples.size())));
            if (!list.is_valid()) {
                throw nb::python_error();
            }
            for (size_t k = 0; k < samples.size(); ++k) {
                PyList_SetItem(list.ptr(), static_cast<Py_ssize_t>(k), samples[k]);  // steals
            }
            samples.clear();
            const Py_ssize_t end = PyList_Size(cols_[i].samples);
            if (PyList_SetSlice(cols_[i].samples, end, end, list.ptr()) < 0) {
                throw nb::python_error();
            }
        }
    }

    /// The samples of the row `key` (a tuple, one value per label): values
    /// has size() and operator[](i), a borrowed value (or None) for i < size().
    template <class Values>
    void row(PyObject* key, const Values& values) {
        if (!PyTuple_Check(key) ||
            PyTuple_Size(key) != static_cast<Py_ssize_t>(label_names_.size())) {
            throw nb::value_error("_emit_samples() keys must be tuples of one value per label");
        }
        PyObject* before = reported_row(key);  // borrowed, or nullptr
        nb::object base;  // the labels without an extra label, found or made on first use
        for (size_t i = 0; i < cols_.size(); ++i) {
            const Spec& c = cols_[i];
            PyObject* was = reported_sample(before, i);  // borrowed, or nullptr
            PyObject* value = c.index < values.size() ? values[c.index] : Py_None;
            if (value == Py_None) {
                if (was != nullptr && c.clamped) {
                    append(i, Py_NewRef(was));  // a counter stays
                }
                continue;
            }
            if (was != nullptr) {
                PyObject* reported_value = tuple_item(was, 2);
                if (c.clamped) {
                    value = at_least(value, reported_value);
                }
                if (same_value(value, reported_value)) {
                    append(i, Py_NewRef(was));
                    continue;
                }
            }
            PyObject* labels;
            if (was != nullptr) {
                labels = Py_NewRef(tuple_item(was, 1));
            } else {
                if (!base.is_valid()) {
                    base = row_labels(before, key);
                }
                labels = c.extra_name == Py_None
                             ? Py_NewRef(base.ptr())
                             : labels_dict(base.ptr(), c.extra_name, c.extra_value);
                if (labels == nullptr) {
                    throw nb::python_error();
                }
            }
            nb::object sample = nb::steal(maker_.make(c.name, labels, Py_NewRef(value)));
            if (!sample.is_valid()) {
                throw nb::python_error();
            }
            if (before != nullptr) {
                PyList_SetItem(before, static_cast<Py_ssize_t>(i), Py_NewRef(sample.ptr()));
            }
            append(i, sample.release().ptr());
        }
    }

private:
    /// Appends `sample` (stolen) to column i's samples.
    void append(size_t i, PyObject* sample) {
        std::vector<PyObject*>& samples = pending_[i];
        if (samples.size() == samples.capacity()) {
            try {  // here, so that the push_back below cannot throw
                samples.reserve(samples.size() * 2 + 16);
            } catch (...) {
                Py_DECREF(sample);
                throw;
            }
        }
        samples.push_back(sample);
    }

    /// The list of the samples reported before for `key` (made, all None,
    /// on first use), borrowed; nullptr without `reported`.
    PyObject* reported_row(PyObject* key) {
        if (reported_.is_none()) {
            return nullptr;
        }
        PyObject* before = PyDict_GetItemWithError(reported_.ptr(), key);  // borrowed
        if (before == nullptr && PyErr_Occurred()) {
            throw nb::python_error();
        }
        if (before == nullptr) {
            nb::object nones = nb::steal(PyList_New(static_cast<Py_ssize_t>(cols_.size())));
            if (!nones.is_valid()) {
                throw nb::python_error();
            }
            for (size_t i = 0; i < cols_.size(); ++i) {
                PyList_SetItem(nones.ptr(), static_cast<Py_ssize_t>(i), Py_NewRef(Py_None));
            }
            if (PyDict_SetItem(reported_.ptr(), key, nones.ptr()) < 0) {
                throw nb::python_error();
            }
            return nones.ptr();  // the dict holds it
        }
        if (!PyList_Check(before) || PyList_Size(before) != static_cast<Py_ssize_t>(cols_.size())) {
            throw nb::value_error("_emit_samples() reported values are one list per key, one "
                                  "sample or None per column");
        }
        return before;
    }

    /// The sample reported before in column i (item i of `before`),
    /// borrowed, or nullptr if none was.
    PyObject* reported_sample(PyObject* before, size_t i) const {
        if (before == nullptr) {
            return nullptr;
        }
        PyObject* was = list_item(before, static_cast<Py_ssize_t>(i));
        if (was == Py_None) {
            return nullptr;
        }
        // The name by identity first: the collector's names are the same str
        // objects from scrape to scrape.
        if (Py_TYPE(was) != maker_.type() ||
            (tuple_item(was, 0) != cols_[i].name &&
             PyObject_RichCompareBool(tuple_item(was, 0), cols_[i].name, Py_EQ) != 1)) {
            PyErr_Clear();
            throw nb::type_error("_emit_samples() reported samples must be the columns' own (a "
                                 "sample named as its column, or None)");
        }
        return was;
    }

    /// The labels of a row's columns without an extra label: a reported
    /// sample's of such a column, or a new dict.
    nb::object row_labels(PyObject* before, PyObject* key) const {
        for (size_t i = 0; before != nullptr && i < cols_.size(); ++i) {
            PyObject* was = PyList_GetItem(before, static_cast<Py_ssize_t>(i));
            if (cols_[i].extra_name == Py_None && was != Py_None) {
                return nb::borrow(tuple_item(was, 1));
            }
        }
        return base_labels(label_names_.ptr(), key);
    }

    LabelValues label_names_;
    Proto proto_;
    SampleMaker maker_;
    Reported reported_;
    nb::object columns_;
    std::vector<Spec> cols_;
    std::vector<std::vector<PyObject*>> pending_;  // by column: samples (owned) for finish()
};

/// _core._emit_samples(): the samples of each (key, values) of `rows`
/// (values: a sequence of ints, or an int alone), by an Emitter.
VIRTRIGAUD_COLD inline void emit(nb::typed<nb::dict, LabelValues, nb::any> rows,
                                 LabelValues label_names, Columns columns, Proto proto,
                                 Reported reported) {
    Emitter emitter(std::move(label_names), std::move(columns), std::move(proto),
                    std::move(reported));
    const GcPaused paused;
    const nb::list items = rows.items();  // a list of its own: rows may not change meanwhile
    emitter.reserve(items.size());
    for (nb::handle item : items) {
        emitter.row(PyTuple_GetItem(item.ptr(), 0), RowValues(PyTuple_GetItem(item.ptr(), 1)));
    }
    emitter.finish();
}

}  // namespace samples
}  // namespace virtrigaud_bind
