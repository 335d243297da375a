/* One side of an exact limit order book, and the reader of Binance's depth level arrays.

   A side is two parallel int64 arrays kept sorted by key = sign * price, ascending, so the
   best price is the LAST entry (bids: sign 1, asks: sign -1). Changes cluster at the top of a
   book, which is the end of the arrays: the search gallops from the end and an insert or a
   delete moves only the few entries past it. Top-N is read backwards from the end.

   Every value is checked before anything changes: a call that fails (a value that is not an
   int64, lengths that differ, a range outside the arrays) raises and leaves the side as it was.
   quant_core/book.py is the Python face (BookSide, OrderBook); tests hold this to a dict book.

   read_levels parses level arrays in exactly Binance's form straight into int64 counts of
   10**-8; anything else returns None and the caller takes the exact general path. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    int64_t *keys; /* sign * price, ascending: best last */
    int64_t *qtys;
    Py_ssize_t n, cap;
    int sign;
} Side;

static PyTypeObject SideType;

/* -- int64 views of Python arguments -------------------------------------------------------- */

/* A read-only int64 array: a C-contiguous buffer of 8-byte signed ints (numpy int64) is used in
   place; any other sequence of ints is converted into owned memory. */
typedef struct {
    const int64_t *v;
    Py_ssize_t n;
    Py_buffer buf;
    int has_buf;
    int64_t *owned;
} I64;

static int is_int64_format(const char *f) {
    if (f == NULL) return 0;
    if (*f == '<' || *f == '=' || *f == '@') f++;
    return (f[0] == 'q' || f[0] == 'l') && f[1] == '\0';
}

static void i64_release(I64 *a) {
    if (a->has_buf) PyBuffer_Release(&a->buf);
    PyMem_Free(a->owned);
    a->has_buf = 0;
    a->owned = NULL;
}

static int i64_get(PyObject *obj, I64 *a, const char *what) {
    memset(a, 0, sizeof(*a));
    if (PyObject_CheckBuffer(obj) && !PyBytes_Check(obj) && !PyByteArray_Check(obj)) {
        if (PyObject_GetBuffer(obj, &a->buf, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) == 0) {
            if (a->buf.itemsize == 8 && a->buf.ndim <= 1 && is_int64_format(a->buf.format)) {
                a->has_buf = 1;
                a->v = (const int64_t *)a->buf.buf;
                a->n = a->buf.len / 8;
                return 0;
            }
            PyBuffer_Release(&a->buf);
        } else {
            PyErr_Clear();
        }
    }
    PyObject *seq = PySequence_Fast(obj, what);
    if (seq == NULL) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    a->owned = PyMem_Malloc((n ? n : 1) * sizeof(int64_t));
    if (a->owned == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        /* an int, or an integer type with __index__ (numpy's); never a float */
        PyObject *v = PyLong_Check(items[i]) ? Py_NewRef(items[i]) : PyNumber_Index(items[i]);
        if (v == NULL) {
            PyErr_Format(PyExc_TypeError, "%s[%zd] is %R, not an int", what, i, items[i]);
            goto fail;
        }
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        Py_DECREF(v);
        if (overflow) {
            PyErr_Format(PyExc_OverflowError, "%s[%zd] = %R is out of the int64 range", what,
                         i, items[i]);
            goto fail;
        }
        if (x == -1 && PyErr_Occurred()) goto fail;
        a->owned[i] = (int64_t)x;
    }
    Py_DECREF(seq);
    a->v = a->owned;
    a->n = n;
    return 0;
fail:
    Py_DECREF(seq);
    PyMem_Free(a->owned);
    a->owned = NULL;
    return -1;
}

/* -- the side --------------------------------------------------------------------------------- */

static int side_reserve(Side *s, Py_ssize_t need) {
    if (need <= s->cap) return 0;
    Py_ssize_t cap = s->cap ? s->cap : 64;
    while (cap < need) {
        if (cap > PY_SSIZE_T_MAX / 16) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    int64_t *k = PyMem_Realloc(s->keys, cap * sizeof(int64_t));
    if (k == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    s->keys = k;
    int64_t *q = PyMem_Realloc(s->qtys, cap * sizeof(int64_t));
    if (q == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    s->qtys = q;
    s->cap = cap;
    return 0;
}

/* The first index whose key is >= key (n when none), searched from the end, where the best
   levels and most changes are. */
static Py_ssize_t side_find(const Side *s, int64_t key) {
    const int64_t *k = s->keys;
    Py_ssize_t hi = s->n; /* k[hi..] > key is known (hi == n: nothing) */
    Py_ssize_t step = 1, lo;
    for (;;) {
        lo = hi - step;
        if (lo <= 0) {
            lo = 0;
            break;
        }
        if (k[lo] < key) break;
        hi = lo;
        step *= 2;
    }
    /* answer in [lo, hi]: k[lo] < key or lo == 0 */
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (k[mid] < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Prices must negate exactly: INT64_MIN has no int64 negation. */
static int check_prices(const int64_t *p, Py_ssize_t n, const char *what) {
    for (Py_ssize_t i = 0; i < n; i++) {
        if (p[i] == INT64_MIN) {
            PyErr_Format(PyExc_OverflowError, "%s[%zd] = %lld is out of the price range", what,
                         i, (long long)p[i]);
            return -1;
        }
    }
    return 0;
}

/* Apply levels in order after the caller checked them (capacity reserved for all inserts). */
static void side_apply_checked(Side *s, const int64_t *p, const int64_t *q, Py_ssize_t n) {
    const int64_t sign = s->sign;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t key = p[i] * sign;
        Py_ssize_t at = side_find(s, key);
        int found = at < s->n && s->keys[at] == key;
        if (q[i]) {
            if (found) {
                s->qtys[at] = q[i];
            } else {
                Py_ssize_t tail = s->n - at;
                if (tail) {
                    memmove(s->keys + at + 1, s->keys + at, tail * sizeof(int64_t));
                    memmove(s->qtys + at + 1, s->qtys + at, tail * sizeof(int64_t));
                }
                s->keys[at] = key;
                s->qtys[at] = q[i];
                s->n++;
            }
        } else if (found) {
            Py_ssize_t tail = s->n - at - 1;
            if (tail) {
                memmove(s->keys + at, s->keys + at + 1, tail * sizeof(int64_t));
                memmove(s->qtys + at, s->qtys + at + 1, tail * sizeof(int64_t));
            }
            s->n--;
        }
    }
}

static int side_apply(Side *s, const int64_t *p, const int64_t *q, Py_ssize_t n,
                      const char *what) {
    if (check_prices(p, n, what) < 0) return -1;
    if (n > PY_SSIZE_T_MAX / 16 - s->n) return PyErr_NoMemory(), -1;
    if (side_reserve(s, s->n + n) < 0) return -1;
    side_apply_checked(s, p, q, n);
    return 0;
}

static int Side_init(Side *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"sign", NULL};
    int sign;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i", kwlist, &sign)) return -1;
    if (sign != 1 && sign != -1) {
        PyErr_Format(PyExc_ValueError, "sign = %d: 1 (bids) or -1 (asks)", sign);
        return -1;
    }
    self->sign = sign;
    self->n = 0;
    return 0;
}

static void Side_dealloc(Side *self) {
    PyMem_Free(self->keys);
    PyMem_Free(self->qtys);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t Side_len(Side *self) { return self->n; }

static int two_arrays(PyObject *args, I64 *p, I64 *q, Py_ssize_t *start, Py_ssize_t *stop) {
    PyObject *po, *qo;
    *start = 0;
    *stop = -1;
    if (!PyArg_ParseTuple(args, "OO|nn", &po, &qo, start, stop)) return -1;
    if (i64_get(po, p, "prices") < 0) return -1;
    if (i64_get(qo, q, "qtys") < 0) {
        i64_release(p);
        return -1;
    }
    int ranged = *stop >= 0;
    if (!ranged) *stop = p->n;
    if (!ranged && p->n != q->n) {
        PyErr_Format(PyExc_ValueError, "%zd prices but %zd quantities", p->n, q->n);
        goto fail;
    }
    if (*start < 0 || *start > *stop || *stop > p->n || *stop > q->n) {
        PyErr_Format(PyExc_ValueError, "levels [%zd:%zd] outside %zd prices, %zd quantities",
                     *start, *stop, p->n, q->n);
        goto fail;
    }
    return 0;
fail:
    i64_release(p);
    i64_release(q);
    return -1;
}

/* apply(prices, qtys[, start, stop]): set each price's quantity in order; 0 removes it. */
static PyObject *Side_apply(Side *self, PyObject *args) {
    I64 p, q;
    Py_ssize_t start, stop;
    if (two_arrays(args, &p, &q, &start, &stop) < 0) return NULL;
    int rc = side_apply(self, p.v + start, q.v + start, stop - start, "prices");
    i64_release(&p);
    i64_release(&q);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

typedef struct {
    int64_t key, qty;
    Py_ssize_t order;
} Level;

static int level_cmp(const void *a, const void *b) {
    const Level *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return x->order < y->order ? -1 : (x->order > y->order);
}

/* load(prices, qtys): replace the side with these levels (any order; a repeated price keeps
   its last quantity, as a dict would; quantities are kept as given). */
static PyObject *Side_load(Side *self, PyObject *args) {
    I64 p, q;
    Py_ssize_t start, stop;
    if (two_arrays(args, &p, &q, &start, &stop) < 0) return NULL;
    Py_ssize_t n = stop - start;
    Level *lv = NULL;
    PyObject *result = NULL;
    if (check_prices(p.v + start, n, "prices") < 0) goto done;
    lv = PyMem_Malloc((n ? n : 1) * sizeof(Level));
    if (lv == NULL || side_reserve(self, n) < 0) {
        if (lv == NULL) PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        lv[i].key = p.v[start + i] * self->sign;
        lv[i].qty = q.v[start + i];
        lv[i].order = i;
    }
    qsort(lv, n, sizeof(Level), level_cmp);
    Py_ssize_t m = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i + 1 < n && lv[i + 1].key == lv[i].key) continue; /* a later one wins */
        self->keys[m] = lv[i].key;
        self->qtys[m] = lv[i].qty;
        m++;
    }
    self->n = m;
    result = Py_None;
    Py_INCREF(result);
done:
    PyMem_Free(lv);
    i64_release(&p);
    i64_release(&q);
    return result;
}

static PyObject *Side_best(Side *self, PyObject *unused) {
    if (!self->n) Py_RETURN_NONE;
    return PyLong_FromLongLong(self->keys[self->n - 1] * self->sign);
}

/* top(n): (prices, quantities) of the best n levels, best first, as lists. */
static PyObject *Side_top(Side *self, PyObject *arg) {
    Py_ssize_t want = PyLong_AsSsize_t(arg);
    if (want == -1 && PyErr_Occurred()) return NULL;
    if (want < 0) want = 0;
    Py_ssize_t n = want < self->n ? want : self->n;
    PyObject *prices = PyList_New(n), *qtys = PyList_New(n);
    if (prices == NULL || qtys == NULL) goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t at = self->n - 1 - i;
        PyObject *pv = PyLong_FromLongLong(self->keys[at] * self->sign);
        if (pv == NULL) goto fail;
        PyList_SET_ITEM(prices, i, pv);
        PyObject *qv = PyLong_FromLongLong(self->qtys[at]);
        if (qv == NULL) goto fail;
        PyList_SET_ITEM(qtys, i, qv);
    }
    return Py_BuildValue("(NN)", prices, qtys);
fail:
    Py_XDECREF(prices);
    Py_XDECREF(qtys);
    return NULL;
}

/* levels: a new dict price -> quantity (a copy: changing it does not change the side). */
static PyObject *Side_get_levels(Side *self, void *closure) {
    PyObject *d = PyDict_New();
    if (d == NULL) return NULL;
    for (Py_ssize_t i = 0; i < self->n; i++) {
        PyObject *k = PyLong_FromLongLong(self->keys[i] * self->sign);
        PyObject *v = PyLong_FromLongLong(self->qtys[i]);
        int rc = (k && v) ? PyDict_SetItem(d, k, v) : -1;
        Py_XDECREF(k);
        Py_XDECREF(v);
        if (rc < 0) {
            Py_DECREF(d);
            return NULL;
        }
    }
    return d;
}

/* keys: a new list of sign * price, ascending (best last). */
static PyObject *Side_get_keys(Side *self, void *closure) {
    PyObject *l = PyList_New(self->n);
    if (l == NULL) return NULL;
    for (Py_ssize_t i = 0; i < self->n; i++) {
        PyObject *k = PyLong_FromLongLong(self->keys[i]);
        if (k == NULL) {
            Py_DECREF(l);
            return NULL;
        }
        PyList_SET_ITEM(l, i, k);
    }
    return l;
}

static PyObject *Side_get_sign(Side *self, void *closure) { return PyLong_FromLong(self->sign); }

static PyMethodDef Side_methods[] = {
    {"apply", (PyCFunction)Side_apply, METH_VARARGS,
     "apply(prices, qtys[, start, stop]): set each price's quantity in order; 0 removes it."},
    {"load", (PyCFunction)Side_load, METH_VARARGS,
     "load(prices, qtys): replace the side with these levels (any order)."},
    {"best", (PyCFunction)Side_best, METH_NOARGS, "The best price, or None when empty."},
    {"top", (PyCFunction)Side_top, METH_O, "top(n): (prices, qtys) of the best n, best first."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Side_getset[] = {
    {"levels", (getter)Side_get_levels, NULL, "price -> quantity (a new dict)", NULL},
    {"keys", (getter)Side_get_keys, NULL, "sign * price ascending, best last (a new list)",
     NULL},
    {"sign", (getter)Side_get_sign, NULL, "1 for bids, -1 for asks", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods Side_as_sequence = {.sq_length = (lenfunc)Side_len};

static PyTypeObject SideType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "quant_core.native.book.Side",
    .tp_basicsize = sizeof(Side),
    .tp_dealloc = (destructor)Side_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Side(sign): one side of an exact book (1 bids, -1 asks), int64 prices/qtys.",
    .tp_methods = Side_methods,
    .tp_getset = Side_getset,
    .tp_as_sequence = &Side_as_sequence,
    .tp_init = (initproc)Side_init,
    .tp_new = PyType_GenericNew,
};

static int crossed(const Side *bids, const Side *asks) {
    /* best bid >= best ask; an ask key is -price */
    return bids->n && asks->n && bids->keys[bids->n - 1] >= -asks->keys[asks->n - 1];
}

static int check_sides(PyObject *b, PyObject *a) {
    if (!PyObject_TypeCheck(b, &SideType) || !PyObject_TypeCheck(a, &SideType)) {
        PyErr_SetString(PyExc_TypeError, "bids and asks must be Side objects");
        return -1;
    }
    if (((Side *)b)->sign != 1 || ((Side *)a)->sign != -1) {
        PyErr_SetString(PyExc_ValueError, "bids must have sign 1 and asks sign -1");
        return -1;
    }
    return 0;
}

/* crossed(bids, asks): best bid at or above best ask (crossed or locked). */
static PyObject *book_crossed(PyObject *mod, PyObject *args) {
    PyObject *b, *a;
    if (!PyArg_ParseTuple(args, "OO", &b, &a) || check_sides(b, a) < 0) return NULL;
    return PyBool_FromLong(crossed((Side *)b, (Side *)a));
}

/* apply_run(bids, asks, price, qty, start, mid, first, last, ts, code, i, want, last_id,
   next_due) -> (stop, last_id, last_ts, levels, crossed): the in-sync run of a decoded burst
   from diff i on, in one call. Diff j (int64 columns of the burst; its bid levels
   [start[j]:mid[j]], its ask levels [mid[j]:start[j + 1]]) is applied while it is of symbol
   code `want`, follows the book (u > last_id >= U - 1) and comes before `next_due` (exchange
   ms of the next snapshot). The run stops before the first diff that is not so (the caller's
   state machine takes that one), or after a diff that leaves the book crossed or locked
   (crossed = 1). last_ts is -1 when no diff was applied. The run is bounds-checked before
   anything is applied: a column too short for the diffs it names raises ValueError and
   changes nothing. */
static PyObject *book_apply_run(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 14) {
        PyErr_SetString(PyExc_TypeError,
                        "apply_run(bids, asks, price, qty, start, mid, first, last, ts, code, i, "
                        "want, last_id, next_due)");
        return NULL;
    }
    if (check_sides(args[0], args[1]) < 0) return NULL;
    Side *bids = (Side *)args[0], *asks = (Side *)args[1];
    long long sc[4];
    for (int k = 0; k < 4; k++) {
        sc[k] = PyLong_AsLongLong(args[10 + k]);
        if (sc[k] == -1 && PyErr_Occurred()) return NULL;
    }
    static const char *names[8] = {"price", "qty", "start", "mid", "first", "last", "ts", "code"};
    I64 col[8];
    int got = 0;
    PyObject *result = NULL;
    for (; got < 8; got++)
        if (i64_get(args[2 + got], &col[got], names[got]) < 0) goto done;
    const int64_t *price = col[0].v, *qty = col[1].v, *start = col[2].v, *mid = col[3].v;
    const int64_t *first = col[4].v, *last = col[5].v, *ts = col[6].v, *code = col[7].v;
    Py_ssize_t n = col[3].n; /* diffs */
    if (col[2].n < n + 1 || col[4].n < n || col[5].n < n || col[6].n < n || col[7].n < n) {
        PyErr_Format(PyExc_ValueError, "columns too short for %zd diffs", n);
        goto done;
    }
    Py_ssize_t i = (Py_ssize_t)sc[0];
    if (i < 0 || i > n) {
        PyErr_Format(PyExc_ValueError, "diff %zd outside %zd diffs", i, n);
        goto done;
    }
    int64_t want = sc[1], last_id = sc[2], next_due = sc[3], last_ts = -1, levels = 0;
    /* First the run's extent and its level ranges, so a bad column changes nothing. */
    Py_ssize_t stop = i, new_bids = 0, new_asks = 0;
    for (int64_t id = last_id; stop < n; stop++) {
        if (code[stop] != want || last[stop] <= id || ts[stop] >= next_due ||
            !(first[stop] <= id || (id < INT64_MAX && first[stop] == id + 1)))
            break;
        int64_t s = start[stop], m = mid[stop], e = start[stop + 1];
        if (s < 0 || s > m || m > e || e > col[0].n || e > col[1].n) {
            PyErr_Format(PyExc_ValueError, "diff %zd: levels [%lld:%lld:%lld] outside %zd",
                         stop, (long long)s, (long long)m, (long long)e, col[0].n);
            goto done;
        }
        if (check_prices(price + s, e - s, "price") < 0) goto done;
        new_bids += m - s;
        new_asks += e - m;
        id = last[stop];
    }
    if (side_reserve(bids, bids->n + new_bids) < 0 || side_reserve(asks, asks->n + new_asks) < 0)
        goto done;
    int is_crossed = 0;
    Py_ssize_t j = i;
    while (j < stop) {
        int64_t s = start[j], m = mid[j], e = start[j + 1];
        side_apply_checked(bids, price + s, qty + s, m - s);
        side_apply_checked(asks, price + m, qty + m, e - m);
        last_id = last[j];
        last_ts = ts[j];
        levels += e - s;
        j++;
        if (crossed(bids, asks)) {
            is_crossed = 1;
            break;
        }
    }
    result = Py_BuildValue("(nLLLi)", j, (long long)last_id, (long long)last_ts,
                           (long long)levels, is_crossed);
done:
    for (int k = 0; k < got; k++) i64_release(&col[k]);
    return result;
}

/* -- Binance's level arrays ----------------------------------------------------------------- */

/* One number string in Binance's form at s[0..]: '"', 1 to 10 digits, '.', 8 digits, '"'.
   Returns the bytes consumed (0 when not in that form) and the value in counts of 10**-8. */
static Py_ssize_t read_number(const unsigned char *s, const unsigned char *end, int64_t *out) {
    if (s >= end || *s != '"') return 0;
    const unsigned char *c = s + 1;
    int64_t whole = 0;
    int digits = 0;
    while (c < end && *c >= '0' && *c <= '9') {
        if (++digits > 10) return 0;
        whole = whole * 10 + (*c - '0');
        c++;
    }
    if (digits == 0 || end - c < 10 || *c != '.') return 0;
    c++;
    int64_t frac = 0;
    for (int k = 0; k < 8; k++) {
        if (c[k] < '0' || c[k] > '9') return 0;
        frac = frac * 10 + (c[k] - '0');
    }
    c += 8;
    if (*c != '"') return 0;
    /* at most 10 integer digits: whole < 10**10, so whole * 10**8 + frac < 10**18 < 2**63 */
    *out = whole * 100000000 + frac;
    return (c + 1) - s;
}

/* One level array at *pc in exactly Binance's form ([] or [["p","q"],...], no whitespace):
   its levels go to price[k * stride], qty[k * stride] for k < cap. Returns the number of
   levels and moves *pc past the array, or -1 when the bytes are not in that form (or hold more
   than cap levels). */
static Py_ssize_t parse_levels(const unsigned char **pc, const unsigned char *end,
                               int64_t *price, int64_t *qty, Py_ssize_t stride,
                               Py_ssize_t cap) {
    const unsigned char *c = *pc;
    Py_ssize_t levels = 0;
    if (end - c < 2 || *c++ != '[') return -1;
    if (*c == ']') {
        *pc = c + 1;
        return 0;
    }
    for (;;) {
        Py_ssize_t used;
        if (levels >= cap || c >= end || *c++ != '[') return -1;
        if (!(used = read_number(c, end, &price[levels * stride]))) return -1;
        c += used;
        if (c >= end || *c++ != ',') return -1;
        if (!(used = read_number(c, end, &qty[levels * stride]))) return -1;
        c += used;
        if (c >= end || *c++ != ']') return -1;
        levels++;
        if (c >= end) return -1;
        if (*c == ',') {
            c++;
            continue;
        }
        if (*c++ != ']') return -1;
        *pc = c;
        return levels;
    }
}

/* A bytes object of n int64 (n may be 0), uninitialised. */
static PyObject *int64_bytes(Py_ssize_t n, int64_t **data) {
    PyObject *b = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(int64_t));
    if (b != NULL) *data = (int64_t *)PyBytes_AS_STRING(b);
    return b;
}

/* read_levels(arrays): raw JSON level arrays ([["93000.01000000","0.50000000"],...], no
   whitespace) -> (levels per array, price, qty, price, qty, ...) as bytes of native int64,
   all arrays at once; None unless every array is exactly in that form. */
static PyObject *book_read_levels(PyObject *mod, PyObject *arg) {
    PyObject *seq = PySequence_Fast(arg, "read_levels takes a sequence of bytes-like objects");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *counts = NULL, *values = NULL, *result = NULL;
    Py_ssize_t total = 0; /* an upper bound of the levels: a level takes more than 25 bytes */
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_buffer view;
        if (PyObject_GetBuffer(items[i], &view, PyBUF_SIMPLE) < 0) {
            PyErr_Clear();
            result = Py_None;
            Py_INCREF(result);
            goto done;
        }
        total += view.len / 25 + 1;
        PyBuffer_Release(&view);
    }
    int64_t *cnt, *val;
    if ((counts = int64_bytes(n, &cnt)) == NULL) goto done;
    if ((values = int64_bytes(2 * total, &val)) == NULL) goto done;
    Py_ssize_t nv = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_buffer view;
        if (PyObject_GetBuffer(items[i], &view, PyBUF_SIMPLE) < 0) goto done;
        const unsigned char *c = view.buf, *end = c + view.len;
        Py_ssize_t levels = parse_levels(&c, end, val + nv, val + nv + 1, 2, total - nv / 2);
        int ok = levels >= 0 && c == end;
        PyBuffer_Release(&view);
        if (!ok) {
            result = Py_None;
            Py_INCREF(result);
            goto done;
        }
        cnt[i] = levels;
        nv += 2 * levels;
    }
    if (_PyBytes_Resize(&values, nv * (Py_ssize_t)sizeof(int64_t)) < 0) goto done;
    result = PyTuple_Pack(2, counts, values);
done:
    Py_XDECREF(counts);
    Py_XDECREF(values);
    Py_DECREF(seq);
    return result;
}

/* Moves *pc past the literal lit when the bytes there are exactly it. */
static int literal(const unsigned char **pc, const unsigned char *end, const char *lit,
                   Py_ssize_t len) {
    if (end - *pc < len || memcmp(*pc, lit, len) != 0) return 0;
    *pc += len;
    return 1;
}
#define LIT(pc, end, s) literal(pc, end, s, (Py_ssize_t)sizeof(s) - 1)

/* A JSON non-negative integer as msgspec reads it (no sign, no leading zero, no fraction), of
   at most 18 digits (so it fits int64), followed by a comma. */
static int read_uint(const unsigned char **pc, const unsigned char *end, int64_t *out) {
    const unsigned char *c = *pc;
    int64_t v = 0;
    int digits = 0;
    while (c < end && *c >= '0' && *c <= '9') {
        if (++digits > 18) return 0;
        v = v * 10 + (*c - '0');
        c++;
    }
    if (digits == 0 || (digits > 1 && **pc == '0') || c >= end || *c != ',') return 0;
    *out = v;
    *pc = c + 1;
    return 1;
}

/* A JSON string of printable ASCII without escapes: its bytes [*start, *start + *len). */
static int read_plain_string(const unsigned char **pc, const unsigned char *end,
                             const unsigned char **start, Py_ssize_t *len) {
    const unsigned char *c = *pc;
    if (c >= end || *c++ != '"') return 0;
    const unsigned char *s = c;
    while (c < end && *c != '"') {
        if (*c < 0x20 || *c > 0x7e || *c == '\\') return 0;
        c++;
    }
    if (c >= end) return 0;
    *start = s;
    *len = c - s;
    *pc = c + 1;
    return 1;
}

/* The stream name's part after its first '@' is one of the depth streams. */
static int is_depth_stream(const unsigned char *s, Py_ssize_t len) {
    const unsigned char *at = memchr(s, '@', len);
    if (at == NULL) return 0;
    Py_ssize_t rest = len - (at + 1 - s);
    return (rest == 11 && memcmp(at + 1, "depth@100ms", 11) == 0) ||
           (rest == 5 && memcmp(at + 1, "depth", 5) == 0);
}

/* read_diffs(frames, raw_codes, max_ms): a burst of depth diff frames, every one exactly in
   Binance's layout ({"stream":"<s>@depth@100ms","data":{"e":"depthUpdate","E":..,"s":"..",
   "U":..,"u":..,"b":[..],"a":[..]}}), a symbol already in raw_codes (symbol as sent -> code),
   E <= max_ms and U <= u -> (code, U, u, E, levels per array (bids, asks of each diff), price,
   qty) as bytes of native int64. None when any frame is not so: the caller's exact path then
   reads the burst and names what is wrong. */
static PyObject *book_read_diffs(PyObject *mod, PyObject *args) {
    PyObject *frames, *raw_codes;
    long long max_ms;
    if (!PyArg_ParseTuple(args, "OO!L", &frames, &PyDict_Type, &raw_codes, &max_ms))
        return NULL;
    PyObject *seq = PySequence_Fast(frames, "read_diffs takes a sequence of frames");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *out[7] = {NULL};
    int64_t *col[7];
    PyObject *result = NULL;
    const unsigned char *last_start = NULL;
    Py_ssize_t last_len = -1;
    int64_t last_code = 0;
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyBytes_Check(items[i])) goto decline;
        total += PyBytes_GET_SIZE(items[i]) / 25 + 1;
    }
    for (int k = 0; k < 7; k++) {
        Py_ssize_t len = k < 4 ? n : k == 4 ? 2 * n : total;
        if ((out[k] = int64_bytes(len, &col[k])) == NULL) goto done;
    }
    Py_ssize_t nl = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned char *c = (const unsigned char *)PyBytes_AS_STRING(items[i]);
        const unsigned char *end = c + PyBytes_GET_SIZE(items[i]);
        const unsigned char *str;
        Py_ssize_t len;
        int64_t E, U, u;
        if (!LIT(&c, end, "{\"stream\":") || !read_plain_string(&c, end, &str, &len) ||
            !is_depth_stream(str, len))
            goto decline;
        if (!LIT(&c, end, ",\"data\":{\"e\":\"depthUpdate\",\"E\":") || !read_uint(&c, end, &E) ||
            E > max_ms || !LIT(&c, end, "\"s\":") || !read_plain_string(&c, end, &str, &len))
            goto decline;
        if (len != last_len || memcmp(str, last_start, len) != 0) {
            PyObject *sym = PyUnicode_DecodeASCII((const char *)str, len, NULL);
            if (sym == NULL) goto done;
            PyObject *code = PyDict_GetItemWithError(raw_codes, sym);
            Py_DECREF(sym);
            if (code == NULL) {
                if (PyErr_Occurred()) goto done;
                goto decline; /* not yet validated (or not ours): the exact path decides */
            }
            last_code = PyLong_AsLongLong(code);
            if (last_code == -1 && PyErr_Occurred()) goto done;
            last_start = str;
            last_len = len;
        }
        if (!LIT(&c, end, ",\"U\":") || !read_uint(&c, end, &U) || !LIT(&c, end, "\"u\":") ||
            !read_uint(&c, end, &u) || u < U || !LIT(&c, end, "\"b\":"))
            goto decline;
        Py_ssize_t nb = parse_levels(&c, end, col[5] + nl, col[6] + nl, 1, total - nl);
        if (nb < 0 || !LIT(&c, end, ",\"a\":")) goto decline;
        nl += nb;
        Py_ssize_t na = parse_levels(&c, end, col[5] + nl, col[6] + nl, 1, total - nl);
        if (na < 0 || !LIT(&c, end, "}}") || c != end) goto decline;
        nl += na;
        col[0][i] = last_code;
        col[1][i] = U;
        col[2][i] = u;
        col[3][i] = E;
        col[4][2 * i] = nb;
        col[4][2 * i + 1] = na;
    }
    if (_PyBytes_Resize(&out[5], nl * (Py_ssize_t)sizeof(int64_t)) < 0) goto done;
    if (_PyBytes_Resize(&out[6], nl * (Py_ssize_t)sizeof(int64_t)) < 0) goto done;
    result = PyTuple_Pack(7, out[0], out[1], out[2], out[3], out[4], out[5], out[6]);
    goto done;
decline:
    result = Py_None;
    Py_INCREF(result);
done:
    for (int k = 0; k < 7; k++) Py_XDECREF(out[k]);
    Py_DECREF(seq);
    return result;
}

static PyMethodDef module_methods[] = {
    {"crossed", (PyCFunction)book_crossed, METH_VARARGS,
     "crossed(bids, asks): best bid at or above best ask."},
    {"apply_run", (PyCFunction)(void (*)(void))book_apply_run, METH_FASTCALL,
     "apply_run(bids, asks, price, qty, start, mid, first, last, ts, code, i, want, last_id, "
     "next_due) -> (stop, last_id, last_ts, levels, crossed)."},
    {"read_diffs", (PyCFunction)book_read_diffs, METH_VARARGS,
     "read_diffs(frames, raw_codes, max_ms) -> 7 int64 columns as bytes, or None."},
    {"read_levels", (PyCFunction)book_read_levels, METH_O,
     "read_levels(arrays) -> (counts bytes, values bytes) of native int64, or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "quant_core.native.book",
    "Exact order book sides as sorted int64 arrays; Binance level arrays -> int64.", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit_book(void) {
    if (PyType_Ready(&SideType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL) return NULL;
    Py_INCREF(&SideType);
    if (PyModule_AddObject(m, "Side", (PyObject *)&SideType) < 0) {
        Py_DECREF(&SideType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
