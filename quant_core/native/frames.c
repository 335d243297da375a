/* Bursts of Binance combined-stream frames in their exact byte layouts -> columns, in one pass.

The fast path of quant_core.decode.BatchDecoder; quant_core.decode.Normalizer.decode (one frame
at a time) is the reference it is held to (tests/test_natdec_frames.py, tests/test_kdec_layout.py).

A frame is taken only when it is, byte for byte, one of LAYOUTS below with every value in a form
whose meaning is unambiguous: ints of plain ASCII digits without a leading zero that fit int64,
decimals of plain ASCII digits with at most one point (at least one digit on each side of it,
places past the 8th all zero, at most 11 whole digits) whose value scaled by 10**8 fits int64,
symbols of 1-24 printable ASCII bytes without escapes, the stream name's prefix printable ASCII
without '"', '\\' or '@'.
Such a frame is valid JSON and decodes to exactly what the reference returns; any other frame,
good or bad, is listed for the exact path, which accepts or rejects it with its reason. Every
read is bounded by the frame's length: any byte string is safe. No floats anywhere.

decode(frames, lookup, i64, i32, i8) -> (trades, books, rest)
  frames: a list of bytes (anything else in it goes to the exact path);
  lookup: symbol str -> code (int >= 0), or -1 for a symbol the exact path rejects;
  i64: writable int64 buffer of >= 15 * n items, rows of n (n = len(frames)):
       trades: 0 index, 1 trade_id, 2 first, 3 last, 4 price, 5 qty, 6 ts;
       books:  7 index, 8 update_id, 9 bid, 10 bid_qty, 11 ask, 12 ask_qty, 13 ts (-1: spot);
       14: the indices of the frames left to the exact path;
  i32: writable int32 buffer of >= 2 * n: 0 trade symbol code, 1 book symbol code;
  i8:  writable int8 buffer of >= 2 * n: 0 trade kind (1 aggTrade, 2 trade), 1 buyer is maker.
Returns the row counts written.
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define AGG 1
#define TRADE 2
#define BOOK 3
#define MAX_MS 253402300799999LL
#define MAX_SYMBOL 24
#define MAX_DECIMAL 30 /* bytes of a decimal's text; longer ones go the exact way */

/* Slot markers inside a layout's text (bytes that no literal holds). */
#define S_PREFIX '\x01' /* the stream name before '@' (checked, dropped) */
#define S_INT '\x02'    /* a JSON int (checked, dropped) */
#define S_SYM '\x03'    /* the symbol's string content */
#define S_BOOL '\x04'   /* a JSON boolean (checked, dropped) */
#define S_MAKER '\x05'  /* a JSON boolean: the buyer is the maker */
#define S_IVAL '\x10'   /* 0x10 + k: a JSON int into value k */
#define S_DVAL '\x18'   /* 0x18 + k: a decimal string's content, scaled by 10**8, into value k */

/* Values: trades 0 trade_id, 1 first, 2 last, 3 price, 4 qty, 5 ts;
           books 0 update_id, 1 bid, 2 bid_qty, 3 ask, 4 ask_qty, 5 ts. */
typedef struct {
    int kind;
    const char *text;
} Layout;

#define FRAME_HEAD "{\"stream\":\"" "\x01" "@"
static const Layout LAYOUTS[] = {
    /* aggTrade, spot */
    {AGG, FRAME_HEAD "aggTrade\",\"data\":{\"e\":\"aggTrade\",\"E\":" "\x02"
          ",\"s\":\"" "\x03" "\",\"a\":" "\x10" ",\"p\":\"" "\x1b" "\",\"q\":\"" "\x1c"
          "\",\"f\":" "\x11" ",\"l\":" "\x12" ",\"T\":" "\x15" ",\"m\":" "\x05"
          ",\"M\":" "\x04" "}}"},
    /* aggTrade, futures */
    {AGG, FRAME_HEAD "aggTrade\",\"data\":{\"e\":\"aggTrade\",\"E\":" "\x02"
          ",\"a\":" "\x10" ",\"s\":\"" "\x03" "\",\"p\":\"" "\x1b" "\",\"q\":\"" "\x1c"
          "\",\"f\":" "\x11" ",\"l\":" "\x12" ",\"T\":" "\x15" ",\"m\":" "\x05" "}}"},
    /* bookTicker, spot */
    {BOOK, FRAME_HEAD "bookTicker\",\"data\":{\"u\":" "\x10" ",\"s\":\"" "\x03"
           "\",\"b\":\"" "\x19" "\",\"B\":\"" "\x1a" "\",\"a\":\"" "\x1b" "\",\"A\":\"" "\x1c"
           "\"}}"},
    /* bookTicker, futures */
    {BOOK, FRAME_HEAD "bookTicker\",\"data\":{\"e\":\"bookTicker\",\"u\":" "\x10"
           ",\"s\":\"" "\x03" "\",\"b\":\"" "\x19" "\",\"B\":\"" "\x1a" "\",\"a\":\"" "\x1b"
           "\",\"A\":\"" "\x1c" "\",\"T\":" "\x15" ",\"E\":" "\x02" "}}"},
    /* trade */
    {TRADE, FRAME_HEAD "trade\",\"data\":{\"e\":\"trade\",\"E\":" "\x02" ",\"s\":\"" "\x03"
            "\",\"t\":" "\x10" ",\"p\":\"" "\x1b" "\",\"q\":\"" "\x1c" "\",\"T\":" "\x15"
            ",\"m\":" "\x05" ",\"M\":" "\x04" "}}"},
    /* trade, with the order ids Binance sent until 2025 */
    {TRADE, FRAME_HEAD "trade\",\"data\":{\"e\":\"trade\",\"E\":" "\x02" ",\"s\":\"" "\x03"
            "\",\"t\":" "\x10" ",\"p\":\"" "\x1b" "\",\"q\":\"" "\x1c" "\",\"b\":" "\x02"
            ",\"a\":" "\x02" ",\"T\":" "\x15" ",\"m\":" "\x05" ",\"M\":" "\x04" "}}"},
};
#define N_LAYOUTS (sizeof(LAYOUTS) / sizeof(LAYOUTS[0]))

typedef struct {
    int64_t v[6];
    const unsigned char *sym;
    Py_ssize_t sym_len;
    int maker;
} Record;

/* A JSON int of plain digits, no leading zero, <= INT64_MAX. Returns the end, NULL if not one. */
static const unsigned char *read_int(const unsigned char *p, const unsigned char *end,
                                     int64_t *out) {
    const unsigned char *start = p;
    uint64_t v = 0;
    /* Up to 18 digits cannot overflow: no check per digit. */
    const unsigned char *fast = end - p > 18 ? p + 18 : end;
    while (p < fast && (unsigned)(*p - '0') < 10) v = v * 10 + (*p++ - '0');
    if (p == start || (*start == '0' && p - start > 1)) return NULL;
    while (p < end && (unsigned)(*p - '0') < 10) {
        uint64_t d = *p - '0';
        if (v > ((uint64_t)INT64_MAX - d) / 10) return NULL;
        v = v * 10 + d;
        p++;
    }
    *out = (int64_t)v;
    return p;
}

/* A decimal string's content: digits, optionally one point with at least one digit on each
   side; places past the 8th must be zero. Value in 10**-8 units. Stops at the first other
   byte (the caller's next literal must start there). At most 11 whole digits: a value that
   needs more (or leading zeros that long) is left to the exact path. */
static const unsigned char *read_decimal(const unsigned char *p, const unsigned char *end,
                                         int64_t *out) {
    const unsigned char *start = p;
    while (p < end && (unsigned)(*p - '0') < 10) p++;
    Py_ssize_t whole = p - start;
    if (whole == 0 || whole > 11) return NULL;
    uint64_t v = 0, frac = 0; /* 11 digits fit: no check per digit */
    for (const unsigned char *q = start; q < p; q++) v = v * 10 + (uint64_t)(*q - '0');
    int places = 0;
    if (p < end && *p == '.') {
        p++;
        while (p < end && (unsigned)(*p - '0') < 10) {
            if (places < 8)
                frac = frac * 10 + (uint64_t)(*p - '0');
            else if (*p != '0')
                return NULL; /* finer than 10**-8 */
            places++;
            p++;
            if (p - start > MAX_DECIMAL) return NULL;
        }
        if (places == 0) return NULL;
    }
    for (int k = places < 8 ? places : 8; k < 8; k++) frac *= 10;
    if (v > ((uint64_t)INT64_MAX - frac) / 100000000u) return NULL;
    *out = (int64_t)(v * 100000000u + frac);
    return p;
}

/* A layout as pieces, made once from its text: a literal run, or a slot. */
#define MAX_PIECES 48
typedef struct {
    unsigned char slot; /* 0: a literal */
    unsigned char size; /* a literal's length */
    const unsigned char *literal;
} Piece;
static Piece PIECES[N_LAYOUTS][MAX_PIECES];
static int N_PIECES[N_LAYOUTS];

static int compile_layouts(void) {
    for (size_t i = 0; i < N_LAYOUTS; i++) {
        const unsigned char *t = (const unsigned char *)LAYOUTS[i].text;
        int n = 0;
        while (*t) {
            if (n == MAX_PIECES) return -1;
            Piece *piece = &PIECES[i][n++];
            if (*t >= 0x20) {
                const unsigned char *lit = t;
                while (*t >= 0x20) t++;
                if (t - lit > 255) return -1;
                piece->slot = 0;
                piece->size = (unsigned char)(t - lit);
                piece->literal = lit;
            } else {
                piece->slot = *t++;
            }
        }
        N_PIECES[i] = n;
    }
    return 0;
}

/* The frame read against one layout; 1 when it is that layout byte for byte. */
static int match(int layout, const unsigned char *p, const unsigned char *end, Record *rec) {
    const Piece *piece = PIECES[layout], *last = piece + N_PIECES[layout];
    for (; piece < last; piece++) {
        unsigned char slot = piece->slot;
        if (!slot) {
            size_t size = piece->size;
            if ((size_t)(end - p) < size || memcmp(p, piece->literal, size) != 0) return 0;
            p += size;
        } else if (slot == S_PREFIX) {
            while (p < end && *p != '@') {
                if (*p < 0x20 || *p > 0x7e || *p == '"' || *p == '\\') return 0;
                p++;
            }
        } else if (slot == S_SYM) {
            const unsigned char *s = p;
            while (p < end && *p != '"') {
                if (*p < 0x20 || *p > 0x7e || *p == '\\') return 0;
                p++;
            }
            if (p == s || p - s > MAX_SYMBOL) return 0;
            rec->sym = s;
            rec->sym_len = p - s;
        } else if (slot == S_BOOL || slot == S_MAKER) {
            int value;
            if (end - p >= 4 && memcmp(p, "true", 4) == 0) {
                value = 1;
                p += 4;
            } else if (end - p >= 5 && memcmp(p, "false", 5) == 0) {
                value = 0;
                p += 5;
            } else {
                return 0;
            }
            if (slot == S_MAKER) rec->maker = value;
        } else if (slot == S_INT) {
            int64_t ignored;
            if (!(p = read_int(p, end, &ignored))) return 0;
        } else if (slot >= S_DVAL) {
            if (!(p = read_decimal(p, end, &rec->v[slot - S_DVAL]))) return 0;
        } else {
            if (!(p = read_int(p, end, &rec->v[slot - S_IVAL]))) return 0;
        }
    }
    return p == end;
}

/* Symbols seen in this call: their bytes and codes (a burst holds a handful). */
#define CACHE 32
typedef struct {
    unsigned char bytes[MAX_SYMBOL];
    Py_ssize_t len;
    long code;
} Symbol;

/* The symbol's code (-1: the exact path rejects it); -2 with an exception set. */
static long symbol_code(PyObject *lookup, Symbol *cache, int *cached, const Record *rec) {
    for (int i = 0; i < *cached; i++) {
        if (cache[i].len == rec->sym_len && memcmp(cache[i].bytes, rec->sym, rec->sym_len) == 0)
            return cache[i].code;
    }
    PyObject *name = PyUnicode_DecodeASCII((const char *)rec->sym, rec->sym_len, NULL);
    if (!name) return -2;
    PyObject *got = PyObject_CallOneArg(lookup, name);
    Py_DECREF(name);
    if (!got) return -2;
    long code = PyLong_AsLong(got);
    Py_DECREF(got);
    if (code == -1 && PyErr_Occurred()) return -2;
    if (code < -1 || code > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "lookup returned %ld, not a symbol code", code);
        return -2;
    }
    if (*cached < CACHE) {
        Symbol *s = &cache[(*cached)++];
        memcpy(s->bytes, rec->sym, rec->sym_len);
        s->len = rec->sym_len;
        s->code = code;
    }
    return code;
}

/* The layout a frame is in (its kind), or 0: the stream name's first letter picks the two
   layouts of its kind to try. */
static int read_frame(const unsigned char *p, Py_ssize_t size, Record *rec) {
    static const Py_ssize_t HEAD = 11; /* {"stream":" */
    if (size < HEAD + 2) return 0;
    const unsigned char *at = memchr(p + HEAD, '@', (size_t)(size - HEAD));
    if (!at || at + 1 >= p + size) return 0;
    int first;
    switch (at[1]) {
    case 'a': first = 0; break;
    case 'b': first = 2; break;
    case 't': first = 4; break;
    default: return 0;
    }
    for (int i = first; i < first + 2; i++) {
        rec->v[5] = -1;
        if (match(i, p, p + size, rec)) return LAYOUTS[i].kind;
    }
    return 0;
}

typedef struct {
    Py_buffer view;
    int held;
} Buffer;

static int get_buffer(PyObject *obj, Buffer *buf, Py_ssize_t itemsize, Py_ssize_t items,
                      const char *name) {
    if (PyObject_GetBuffer(obj, &buf->view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) return -1;
    buf->held = 1;
    if (buf->view.len < itemsize * items) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes, need %zd", name, buf->view.len,
                     itemsize * items);
        return -1;
    }
    return 0;
}

static PyObject *decode(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *frames, *lookup, *o64, *o32, *o8;
    if (!PyArg_ParseTuple(args, "O!OOOO:decode", &PyList_Type, &frames, &lookup, &o64, &o32,
                          &o8))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(frames);
    Buffer b64 = {0}, b32 = {0}, b8 = {0};
    PyObject *result = NULL;
    if (get_buffer(o64, &b64, 8, 15 * n, "i64") < 0 || get_buffer(o32, &b32, 4, 2 * n, "i32") < 0 ||
        get_buffer(o8, &b8, 1, 2 * n, "i8") < 0)
        goto done;
    int64_t *c64 = (int64_t *)b64.view.buf;
    int32_t *c32 = (int32_t *)b32.view.buf;
    int8_t *c8 = (int8_t *)b8.view.buf;
    int64_t *t_index = c64, *b_index = c64 + 7 * n, *rest = c64 + 14 * n;
    int32_t *t_code = c32, *b_code = c32 + n;
    int8_t *t_kind = c8, *t_maker = c8 + n;
    Py_ssize_t nt = 0, nb = 0, nr = 0;
    Symbol cache[CACHE];
    int cached = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        /* The list may change under a lookup call: read it by index with a bound each time. */
        if (i >= PyList_GET_SIZE(frames)) {
            rest[nr++] = i;
            continue;
        }
        PyObject *frame = PyList_GET_ITEM(frames, i);
        Record rec = {0};
        int kind = 0;
        long code = -1;
        if (PyBytes_CheckExact(frame)) {
            Py_INCREF(frame); /* held while lookup may run Python code */
            kind = read_frame((const unsigned char *)PyBytes_AS_STRING(frame),
                              PyBytes_GET_SIZE(frame), &rec);
            if (kind) code = symbol_code(lookup, cache, &cached, &rec);
            Py_DECREF(frame);
            if (code == -2) goto done;
        }
        int64_t *v = rec.v;
        if (kind == BOOK && code >= 0 && v[1] > 0 && v[3] > 0 && v[1] <= v[3] &&
            v[5] <= MAX_MS) {
            b_index[nb] = i;
            b_code[nb] = (int32_t)code;
            for (int k = 0; k < 6; k++) c64[(8 + k) * n + nb] = v[k];
            nb++;
        } else if ((kind == AGG || kind == TRADE) && code >= 0 && v[3] > 0 && v[4] > 0 &&
                   v[5] <= MAX_MS && (kind == TRADE || v[1] <= v[2])) {
            if (kind == TRADE) v[1] = v[2] = v[0];
            t_index[nt] = i;
            t_code[nt] = (int32_t)code;
            t_kind[nt] = (int8_t)kind;
            t_maker[nt] = (int8_t)rec.maker;
            for (int k = 0; k < 6; k++) c64[(1 + k) * n + nt] = v[k];
            nt++;
        } else {
            rest[nr++] = i;
        }
    }
    result = Py_BuildValue("nnn", nt, nb, nr);
done:
    if (b64.held) PyBuffer_Release(&b64.view);
    if (b32.held) PyBuffer_Release(&b32.view);
    if (b8.held) PyBuffer_Release(&b8.view);
    return result;
}

static PyMethodDef METHODS[] = {
    {"decode", decode, METH_VARARGS,
     "decode(frames, lookup, i64, i32, i8) -> (trades, books, rest): Binance frames in their "
     "exact layouts -> columns (see the module source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {
    PyModuleDef_HEAD_INIT, "frames",
    "Binance combined-stream frames in their exact byte layouts -> columns (C, one pass).", -1,
    METHODS,
};

PyMODINIT_FUNC PyInit_frames(void) {
    if (compile_layouts() < 0) {
        PyErr_SetString(PyExc_SystemError, "frames: a layout has too many pieces");
        return NULL;
    }
    return PyModule_Create(&MODULE);
}
