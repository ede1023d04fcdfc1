// The live objects of one native kind (breakers, buckets), for the metrics
// collector: an intrusive doubly-linked list through the objects themselves.
//
// The Python Census (_tracking.py) keeps other kinds in a dict of weak
// references: a weakref, an int key and a dict slot, about 180 bytes per
// object, more than a breaker's whole native state. Here an object carries
// its two neighbours (16 bytes) and the list its head.
//
// The Python layer links an object when its constructor is done
// (Census.track) and unlinks it from its __del__ (Census.retire, under the
// Census lock, so a snapshot sees it either live or dropped); the C++
// destructor unlinks whatever is still linked (a subclass whose __del__
// skipped retire, a bare _core object). live() hands out strong references,
// skipping an object whose reference count already reached zero: one being
// destroyed, whose destructor is about to unlink it (with the GIL, only
// Python code run by its own deallocation can let a scrape in meanwhile;
// without it, try_new_reference() takes the reference atomically).
//
// Every operation holds the list's mutex and calls no Python code under it
// (free-threaded builds have no GIL to order them; with the GIL it is never
// contended).
#pragma once

#include <nanobind/nanobind.h>

#include <algorithm>
#include <cstddef>
#include <mutex>
#include <vector>

#if defined(Py_GIL_DISABLED) && PY_VERSION_HEX < 0x030E00A5
// nanobind's own try-incref for free-threaded 3.13 (src/nb_ft.cpp, linked
// into this module: NB_STATIC), which its instances are made ready for. It
// is defined at global scope there (nb_ft.h declares it outside nanobind's
// namespace), so it is declared here the same way.
bool nb_try_inc_ref(PyObject* obj) noexcept;
#endif

namespace virtrigaud_bind {

/// A new reference to `o` unless it is being destroyed (its reference count
/// reached zero): then false. Without the GIL, a plain read then increment
/// could revive an object another thread is freeing.
inline bool try_new_reference(PyObject* o) noexcept {
#if !defined(Py_GIL_DISABLED)
    if (Py_REFCNT(o) > 0) {
        Py_INCREF(o);
        return true;
    }
    return false;
#elif PY_VERSION_HEX >= 0x030E00A5
    return PyUnstable_TryIncRef(o);
#else
    return ::nb_try_inc_ref(o);
#endif
}

/// An object's neighbours in its kind's list; both null when it is unlinked
/// or alone (then the head says which).
struct CensusLinks {
    PyObject* prev = nullptr;
    PyObject* next = nullptr;
};

/// The list of one kind T, a native type with a `CensusLinks census` member.
template <class T>
class Census {
public:
    /// Links `self` (an instance of T, ready); false if it already was.
    static bool link(PyObject* self) {
        std::lock_guard<std::mutex> guard(mutex_);
        T* me = nanobind::inst_ptr<T>(self);
        if (linked(me)) {
            return false;
        }
        me->census.prev = nullptr;
        me->census.next = head_;
        if (head_ != nullptr) {
            links(head_).prev = self;
        }
        head_ = self;
        ++size_;
        return true;
    }

    /// Unlinks `me`; false if it was not linked. By the C++ object, so that
    /// its destructor can call it.
    static bool unlink(T* me) {
        std::lock_guard<std::mutex> guard(mutex_);
        if (!linked(me)) {
            return false;
        }
        PyObject* prev = me->census.prev;
        PyObject* next = me->census.next;
        if (prev != nullptr) {
            links(prev).next = next;
        } else {
            head_ = next;
        }
        if (next != nullptr) {
            links(next).prev = prev;
        }
        me->census = CensusLinks{};
        --size_;
        return true;
    }

    /// Strong references to the linked objects not being destroyed, in the
    /// order they were linked (as the dict of the Python census lists them:
    /// the exposition keeps its order). Allocates no Python object while the
    /// list is walked.
    static std::vector<nanobind::object> live() {
        std::vector<nanobind::object> objects;
        {
            std::lock_guard<std::mutex> guard(mutex_);
            objects.reserve(size_);
            for (PyObject* o = head_; o != nullptr; o = links(o).next) {
                if (try_new_reference(o)) {
                    objects.push_back(nanobind::steal(o));
                }
            }
        }
        std::reverse(objects.begin(), objects.end());  // linked at the head: newest first
        return objects;
    }

    static size_t size() {
        std::lock_guard<std::mutex> guard(mutex_);
        return size_;
    }

private:
    static CensusLinks& links(PyObject* o) { return nanobind::inst_ptr<T>(o)->census; }
    static bool linked(const T* me) {
        return me->census.prev != nullptr || me->census.next != nullptr ||
               (head_ != nullptr && nanobind::inst_ptr<T>(head_) == me);
    }

    static inline std::mutex mutex_;
    static inline PyObject* head_ = nullptr;
    static inline size_t size_ = 0;
};

/// The census methods of T's binding `cls`: _census_link() (False if it
/// was linked), _census_unlink() (False if it was not), and the static
/// _census_live() (a list of the live objects) and _census_size().
template <class T, class Class>
void bind_census(Class& cls) {
    namespace nb = nanobind;
    cls.def(
           "_census_link",
           [](nb::pointer_and_handle<T> self) { return Census<T>::link(self.h.ptr()); },
           "Counts this object among the live ones of its kind (the metrics census).")
        .def(
            "_census_unlink",
            [](nb::handle self) {
                // Also from the __del__ of an object whose constructor failed
                // before the native one ran: never linked.
                if (!nb::isinstance<T>(self)) {
                    throw nb::type_error("_census_unlink() needs an instance of its class");
                }
                return nb::inst_ready(self) && Census<T>::unlink(nb::inst_ptr<T>(self));
            },
            "Takes this object out of the live ones; False if it was not among them\n"
            "(or is not initialised).")
        .def_static(
            "_census_live",
            []() {
                const std::vector<nb::object> objects = Census<T>::live();
                nb::list result;  // may collect garbage: the objects are held already
                for (const nb::object& o : objects) {
                    result.append(o);
                }
                return nb::typed<nb::list, T>(std::move(result));
            },
            "The live objects of this kind (those linked), in the order they were linked.")
        .def_static("_census_size", []() { return Census<T>::size(); },
                    "How many objects of this kind are linked.");
}

}  // namespace virtrigaud_bind
