/* Exact per-group sums of a[i] * b[i] over int64 columns: the price x qty sums of 1m bars.

group_dot(a, b, firsts) -> list[int]: for each group g (rows firsts[g] .. firsts[g+1]-1, the last
group to the end), the exact sum of a[i] * b[i] as a Python int. Products are 128-bit integers
(|a * b| <= 2**126); the running sum is 128-bit too, and is moved into a Python int whenever
adding the next product would overflow, so the result is exact for any int64 values. Its
reference is Python's own int arithmetic, which tests hold it to (tests/test_natdec_dot.py,
tests/test_bars_columns.py). quant_core.bars.exact_dot is its one caller.
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

typedef __int128 i128;

/* A 128-bit integer as a Python int: hi * 2**64 + lo. */
static PyObject *from_i128(i128 v) {
    PyObject *hi = PyLong_FromLongLong((long long)(v >> 64));
    PyObject *lo = PyLong_FromUnsignedLongLong((unsigned long long)(uint64_t)v);
    PyObject *shift = PyLong_FromLong(64);
    PyObject *out = NULL, *shifted = NULL;
    if (hi && lo && shift && (shifted = PyNumber_Lshift(hi, shift))) out = PyNumber_Add(shifted, lo);
    Py_XDECREF(hi);
    Py_XDECREF(lo);
    Py_XDECREF(shift);
    Py_XDECREF(shifted);
    return out;
}

/* total += v; returns the new total (a new reference) or NULL, and drops the old one. */
static PyObject *add_to(PyObject *total, i128 v) {
    PyObject *part = from_i128(v);
    if (!part) {
        Py_DECREF(total);
        return NULL;
    }
    PyObject *sum = PyNumber_Add(total, part);
    Py_DECREF(part);
    Py_DECREF(total);
    return sum;
}

static int get(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize, const char *name) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (view->itemsize != itemsize || view->len % itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: items of %zd bytes expected", name, itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *group_dot(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *oa, *ob, *of;
    if (!PyArg_ParseTuple(args, "OOO:group_dot", &oa, &ob, &of)) return NULL;
    Py_buffer va, vb, vf;
    if (get(oa, &va, 8, "a") < 0) return NULL;
    if (get(ob, &vb, 8, "b") < 0) {
        PyBuffer_Release(&va);
        return NULL;
    }
    if (get(of, &vf, 8, "firsts") < 0) {
        PyBuffer_Release(&va);
        PyBuffer_Release(&vb);
        return NULL;
    }
    PyObject *out = NULL;
    Py_ssize_t n = va.len / 8, groups = vf.len / 8;
    const int64_t *a = va.buf, *b = vb.buf, *firsts = vf.buf;
    if (vb.len / 8 != n) {
        PyErr_Format(PyExc_ValueError, "a has %zd rows, b %zd", n, vb.len / 8);
        goto done;
    }
    for (Py_ssize_t g = 0; g < groups; g++) {
        Py_ssize_t lo = firsts[g], hi = g + 1 < groups ? firsts[g + 1] : n;
        if (lo < 0 || hi > n || lo > hi || (g == 0 && lo != 0)) {
            PyErr_SetString(PyExc_ValueError, "firsts must rise from 0 within the rows");
            goto done;
        }
    }
    out = PyList_New(groups);
    if (!out) goto done;
    for (Py_ssize_t g = 0; g < groups; g++) {
        Py_ssize_t lo = firsts[g], hi = g + 1 < groups ? firsts[g + 1] : n;
        i128 sum = 0;
        PyObject *total = NULL; /* only when the sum leaves 128 bits */
        for (Py_ssize_t i = lo; i < hi; i++) {
            i128 product = (i128)a[i] * (i128)b[i];
            i128 next;
            if (__builtin_add_overflow(sum, product, &next)) {
                if (!total && !(total = PyLong_FromLong(0))) goto fail;
                if (!(total = add_to(total, sum))) goto fail;
                next = product;
            }
            sum = next;
        }
        PyObject *item = total ? add_to(total, sum) : from_i128(sum);
        if (!item) goto fail;
        PyList_SET_ITEM(out, g, item);
    }
    goto done;
fail:
    Py_CLEAR(out);
done:
    PyBuffer_Release(&va);
    PyBuffer_Release(&vb);
    PyBuffer_Release(&vf);
    return out;
}

static PyMethodDef METHODS[] = {
    {"group_dot", group_dot, METH_VARARGS,
     "group_dot(a, b, firsts) -> list[int]: exact per-group sums of a * b (int64 columns)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {
    PyModuleDef_HEAD_INIT, "frames_dot", "Exact per-group sums of int64 products (C).", -1,
    METHODS, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit_frames_dot(void) { return PyModule_Create(&MODULE); }
