/* The session log's hash chain in C: BLAKE2b-256 (RFC 7693, unkeyed, 32-byte digest) and the
reader's fast path over a buffer of records.

The fast path of quant_core.sessionlog.reader._SegmentScan.run; quant_core.sessionlog.format
(decode_record, chain) is the reference it is held to (tests/test_chain_*.py).

blake2b256(data) -> the 32-byte digest (hashlib.blake2b(data, digest_size=32).digest()).
chain(prev, data) -> blake2b256(prev + data) without joining them.

scan(buf, pos, digest, expected, since_checkpoint, every, sealed, limit, times, out, recvs,
     record_type) -> (pos, digest, taken, first_recv, last_recv, n_ws, n_rest, n_conn)
  Takes consecutive records from buf[pos:] while each one is a complete, intact data record
  that the Python slow path would accept without a word: its length field in 25..MAX_BODY and
  the whole record (tag included) inside buf, kind 1..3, seq == expected (+1 per record taken),
  since_checkpoint (+1 per record taken) < every, meta_len within the body, the tag equal to
  the first 4 bytes of BLAKE2b-256(digest || length field || body), and the segment not sealed.
  It stops at the first record it does not take (the slow path decides on it, with its exact
  error) or when `limit` records are taken (0: no limit). Modes:
    out None:                  verify only (kinds 1..3);
    out a list, record_type None: batch: ws records only (a rest or conn record stops it), their
                               payloads appended to out, their receive times to recvs if times;
    out a list, record_type a tuple subclass: emit: kinds 1..3, each appended as
                               record_type(kind, seq, recv_ns, conn_id, meta, payload).
  Returns the position after the last record taken, the chain digest after it, how many were
  taken, the receive times of the first and last taken (None if none) and the count per kind.
  Every read is bounded by len(buf): any byte string is safe.
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define DIGEST 32
#define TAG 4
#define LEN_SIZE 4
#define MIN_BODY 25 /* kind u8, seq u64, recv_ns i64, conn_id u32, meta_len u32 */
#define MIN_RECORD (LEN_SIZE + MIN_BODY + TAG)
#define MAX_BODY (1 << 26)

/* ---- BLAKE2b (RFC 7693) ------------------------------------------------------------------ */

static const uint64_t IV[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

static const uint8_t SIGMA[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
};

static inline uint64_t rotr64(uint64_t x, int n) { return (x >> n) | (x << (64 - n)); }

static inline uint64_t load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline void store64(uint8_t *p, uint64_t v) {
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    memcpy(p, &v, 8);
}

#define G(a, b, c, d, x, y)                                                                    \
    do {                                                                                       \
        v[a] = v[a] + v[b] + (x);                                                              \
        v[d] = rotr64(v[d] ^ v[a], 32);                                                        \
        v[c] = v[c] + v[d];                                                                    \
        v[b] = rotr64(v[b] ^ v[c], 24);                                                        \
        v[a] = v[a] + v[b] + (y);                                                              \
        v[d] = rotr64(v[d] ^ v[a], 16);                                                        \
        v[c] = v[c] + v[d];                                                                    \
        v[b] = rotr64(v[b] ^ v[c], 63);                                                        \
    } while (0)

/* One 128-byte block; t is the byte count so far including this block (< 2**64 here). */
static void compress(uint64_t h[8], const uint8_t block[128], uint64_t t, int last) {
    uint64_t m[16], v[16];
    for (int i = 0; i < 16; i++) m[i] = load64(block + 8 * i);
    for (int i = 0; i < 8; i++) {
        v[i] = h[i];
        v[i + 8] = IV[i];
    }
    v[12] ^= t;
    if (last) v[14] = ~v[14];
    /* Written out round by round: the message schedule is constant, m[] stays in registers. */
#define ROUND(r)                                                                               \
    do {                                                                                       \
        G(0, 4, 8, 12, m[SIGMA[r][0]], m[SIGMA[r][1]]);                                        \
        G(1, 5, 9, 13, m[SIGMA[r][2]], m[SIGMA[r][3]]);                                        \
        G(2, 6, 10, 14, m[SIGMA[r][4]], m[SIGMA[r][5]]);                                       \
        G(3, 7, 11, 15, m[SIGMA[r][6]], m[SIGMA[r][7]]);                                       \
        G(0, 5, 10, 15, m[SIGMA[r][8]], m[SIGMA[r][9]]);                                       \
        G(1, 6, 11, 12, m[SIGMA[r][10]], m[SIGMA[r][11]]);                                     \
        G(2, 7, 8, 13, m[SIGMA[r][12]], m[SIGMA[r][13]]);                                      \
        G(3, 4, 9, 14, m[SIGMA[r][14]], m[SIGMA[r][15]]);                                      \
    } while (0)
    ROUND(0);
    ROUND(1);
    ROUND(2);
    ROUND(3);
    ROUND(4);
    ROUND(5);
    ROUND(6);
    ROUND(7);
    ROUND(8);
    ROUND(9);
    ROUND(10);
    ROUND(11);
#undef ROUND
    for (int i = 0; i < 8; i++) h[i] ^= v[i] ^ v[i + 8];
}

/* BLAKE2b-256 of a || b (either may be empty): the chain step without joining the bytes. */
static void hash2(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen,
                  uint8_t out[DIGEST]) {
    uint64_t h[8];
    uint8_t block[128];
    size_t fill = 0; /* bytes in block */
    uint64_t t = 0;
    memcpy(h, IV, sizeof h);
    h[0] ^= 0x01010000ULL ^ DIGEST; /* depth 1, fanout 1, no key, digest length */
    const uint8_t *parts[2] = {a, b};
    size_t lens[2] = {alen, blen};
    for (int k = 0; k < 2; k++) {
        const uint8_t *p = parts[k];
        size_t n = lens[k];
        while (n > 0) {
            if (fill == 128) { /* a full block with more to come: not the last one */
                t += 128;
                compress(h, block, t, 0);
                fill = 0;
            }
            if (fill == 0 && n > 128) { /* whole blocks straight from the input */
                t += 128;
                compress(h, p, t, 0);
                p += 128;
                n -= 128;
                continue;
            }
            size_t take = 128 - fill < n ? 128 - fill : n;
            memcpy(block + fill, p, take);
            fill += take;
            p += take;
            n -= take;
        }
    }
    t += fill;
    memset(block + fill, 0, 128 - fill);
    compress(h, block, t, 1);
    for (int i = 0; i < 4; i++) store64(out + 8 * i, h[i]);
}

/* ---- Python functions ---------------------------------------------------------------------- */

static PyObject *py_blake2b256(PyObject *self, PyObject *args) {
    Py_buffer data;
    uint8_t out[DIGEST];
    if (!PyArg_ParseTuple(args, "y*:blake2b256", &data)) return NULL;
    hash2(NULL, 0, data.buf, (size_t)data.len, out);
    PyBuffer_Release(&data);
    return PyBytes_FromStringAndSize((const char *)out, DIGEST);
}

static PyObject *py_chain(PyObject *self, PyObject *args) {
    Py_buffer prev, data;
    uint8_t out[DIGEST];
    if (!PyArg_ParseTuple(args, "y*y*:chain", &prev, &data)) return NULL;
    hash2(prev.buf, (size_t)prev.len, data.buf, (size_t)data.len, out);
    PyBuffer_Release(&prev);
    PyBuffer_Release(&data);
    return PyBytes_FromStringAndSize((const char *)out, DIGEST);
}

static inline uint32_t u32le(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static inline uint64_t u64le(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static PyObject *py_scan(PyObject *self, PyObject *args) {
    Py_buffer view, dview;
    Py_ssize_t pos, limit;
    unsigned long long expected;
    long long since, every;
    int sealed, times;
    PyObject *expected_obj, *out, *recvs, *record_type;
    if (!PyArg_ParseTuple(args, "y*ny*OLLpnpOOO:scan", &view, &pos, &dview, &expected_obj,
                          &since, &every, &sealed, &limit, &times, &out, &recvs, &record_type))
        return NULL;
    /* A sequence number no record can carry (negative, or past u64): take nothing, the slow
       path names the problem. */
    expected = PyLong_AsUnsignedLongLong(expected_obj);
    if (expected == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyBuffer_Release(&view);
            PyBuffer_Release(&dview);
            return NULL;
        }
        PyErr_Clear();
        sealed = 1;
    }
    PyObject *result = NULL;
    const uint8_t *buf = view.buf;
    Py_ssize_t blen = view.len;
    uint8_t digest[DIGEST], nd[DIGEST];
    Py_ssize_t taken = 0, counts[4] = {0, 0, 0, 0};
    long long first = 0, last = 0;
    int emit = 0, batch = 0;
    if (dview.len != DIGEST) {
        PyErr_Format(PyExc_ValueError, "digest has %zd bytes, not %d", dview.len, DIGEST);
        goto done;
    }
    if (pos < 0 || limit < 0) {
        PyErr_Format(PyExc_ValueError, "pos=%zd and limit=%zd must be >= 0", pos, limit);
        goto done;
    }
    if (out != Py_None) {
        if (!PyList_Check(out)) {
            PyErr_SetString(PyExc_TypeError, "out must be a list or None");
            goto done;
        }
        if (record_type == Py_None) {
            batch = 1;
            if (times && !PyList_Check(recvs)) {
                PyErr_SetString(PyExc_TypeError, "recvs must be a list when times is set");
                goto done;
            }
        } else {
            if (!PyType_Check(record_type) ||
                !PyType_IsSubtype((PyTypeObject *)record_type, &PyTuple_Type)) {
                PyErr_SetString(PyExc_TypeError, "record_type must be a tuple subclass or None");
                goto done;
            }
            emit = 1;
        }
    }
    memcpy(digest, dview.buf, DIGEST);
    while (!sealed && (limit == 0 || taken < limit) && since < every &&
           pos <= blen - MIN_RECORD) {
        const uint8_t *r = buf + pos;
        uint32_t n = u32le(r);
        if (n < MIN_BODY || n > MAX_BODY) break;
        Py_ssize_t end = pos + LEN_SIZE + (Py_ssize_t)n;
        if (end > blen - TAG) break;
        const uint8_t *body = r + LEN_SIZE;
        unsigned kind = body[0];
        uint64_t seq = u64le(body + 1);
        long long recv_ns = (long long)u64le(body + 9);
        uint32_t conn_id = u32le(body + 17);
        uint32_t meta_len = u32le(body + 21);
        if (kind < 1 || kind > 3 || (batch && kind != 1)) break;
        if (seq != expected || meta_len > n - MIN_BODY) break;
        hash2(digest, DIGEST, r, LEN_SIZE + (size_t)n, nd);
        if (memcmp(nd, buf + end, TAG) != 0) break;
        const uint8_t *meta = body + MIN_BODY;
        const uint8_t *payload = meta + meta_len;
        Py_ssize_t plen = (Py_ssize_t)(n - MIN_BODY - meta_len);
        if (batch) {
            PyObject *p = PyBytes_FromStringAndSize((const char *)payload, plen);
            if (p == NULL || PyList_Append(out, p) < 0) {
                Py_XDECREF(p);
                goto done;
            }
            Py_DECREF(p);
            if (times) {
                PyObject *t = PyLong_FromLongLong(recv_ns);
                if (t == NULL || PyList_Append(recvs, t) < 0) {
                    Py_XDECREF(t);
                    goto done;
                }
                Py_DECREF(t);
            }
        } else if (emit) {
            PyObject *rec = ((PyTypeObject *)record_type)->tp_alloc((PyTypeObject *)record_type, 6);
            if (rec == NULL) goto done;
            PyObject *items[6] = {
                PyLong_FromUnsignedLong(kind),
                PyLong_FromUnsignedLongLong(seq),
                PyLong_FromLongLong(recv_ns),
                PyLong_FromUnsignedLong(conn_id),
                PyBytes_FromStringAndSize((const char *)meta, meta_len),
                PyBytes_FromStringAndSize((const char *)payload, plen),
            };
            int bad = 0;
            for (int i = 0; i < 6; i++) {
                if (items[i] == NULL) bad = 1;
                PyTuple_SET_ITEM(rec, i, items[i]); /* a NULL item is freed safely too */
            }
            if (bad || PyList_Append(out, rec) < 0) {
                Py_DECREF(rec);
                goto done;
            }
            Py_DECREF(rec);
        }
        if (taken == 0) first = recv_ns;
        last = recv_ns;
        counts[kind]++;
        taken++;
        since++;
        memcpy(digest, nd, DIGEST);
        pos = end + TAG;
        if (++expected == 0) break; /* past u64: no further record can carry it */
    }
    if (taken) {
        result = Py_BuildValue("(ny#nLLnnn)", pos, (const char *)digest, (Py_ssize_t)DIGEST,
                               taken, first, last, counts[1], counts[2], counts[3]);
    } else {
        result = Py_BuildValue("(ny#nOOnnn)", pos, (const char *)digest, (Py_ssize_t)DIGEST,
                               (Py_ssize_t)0, Py_None, Py_None, (Py_ssize_t)0, (Py_ssize_t)0,
                               (Py_ssize_t)0);
    }
done:
    PyBuffer_Release(&view);
    PyBuffer_Release(&dview);
    return result;
}

static PyMethodDef METHODS[] = {
    {"blake2b256", py_blake2b256, METH_VARARGS, "BLAKE2b-256 of a bytes-like object."},
    {"chain", py_chain, METH_VARARGS, "BLAKE2b-256 of prev || data."},
    {"scan", py_scan, METH_VARARGS, "Verify consecutive intact data records (see the module)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {
    PyModuleDef_HEAD_INIT, "chain", "The session log's BLAKE2b-256 hash chain (C).", -1, METHODS,
};

PyMODINIT_FUNC PyInit_chain(void) { return PyModule_Create(&MODULE); }
