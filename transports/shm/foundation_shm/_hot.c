/* foundation_shm._hot: the shm transport's hot path in C (optional; pure Python is the fallback).
 *
 * Only what a request does on every call lives here, each function doing what one or more
 * Python steps did, with the same checks and the same bytes (tests run both implementations):
 *
 *   fence()                                  full memory barrier (spec section 7)
 *   publish(buf, seq_word, seq, peer_word)   store a sequence word, fence, read the peer's
 *                                            "sleeping" word: whether the peer must be woken
 *   spin(buf, word, want, spin_ns, yield_ns) busy-poll a u64 word until it equals want, at most
 *                                            spin_ns, yielding the CPU after yield_ns; GIL released
 *   poll(buf, cseq, sseq, busy, spin_ns, yield_ns, epoch_word, epoch, start)
 *                                            the server's scan: the position of the first channel
 *                                            from `start` on (round the ring) with a pending
 *                                            request (cseq != sseq, busy word 0),
 *                                            -1 once spin_ns pass, -2 if the epoch word changed;
 *                                            GIL released
 *   seal(buf, kind, request_id, payload, flags)
 *                                            write a message header and its CRC32 (over header
 *                                            bytes [0, 28) and the payload): write_header + _seal
 *   fill(dsts, arrays)                       copy each array into its destination view (tensor data
 *                                            into the request or response area) when formats and
 *                                            shapes agree; False (nothing copied) otherwise
 *   repeat(buf, size, cached, skip_lo, skip_hi)
 *                                            whether the message in buf repeats the cached payload
 *                                            (bytes [skip_lo, skip_hi) of it may differ: the
 *                                            request's deadline), with its header and CRC checked:
 *                                            (kind, request_id, flags) or None; -1 on a CRC mismatch
 *
 * The steady-state lanes: a request or response that repeats the previous one on its channel
 * (same model, names, dtypes, shapes: the payload is already in place) in one call each.
 *
 *   exchange(ctl, req, resp, dsts, arrays, request_id, payload, deadline, cseq_word, seq,
 *            peer_word, sseq_word, spin_ns, yield_ns, cached)
 *                                            the client's call: fill, deadline, seal, publish,
 *                                            spin (GIL released), check the response against the
 *                                            cached one. -1: fill declined, nothing written;
 *                                            0: answered, and the response repeats `cached` with
 *                                            this request id and its CRC checked; 1: sent, the
 *                                            server sleeps (ring its bell, then wait); 2: sent, the
 *                                            spin ran out (wait); 3: answered, decode it in full
 *   take(ctl, req, cached, size, cseq_word, sseq_word, busy_word, gen_word, gen)
 *                                            the server's take of a pending request: None if the
 *                                            channel has none (client_seq == server_seq); else it
 *                                            sets the busy word and returns (seq, request_id,
 *                                            deadline) for an INFER request that repeats `cached`
 *                                            in the mapped data segment (generation `gen`), its
 *                                            header and CRC checked, or (seq, None, 0): decode it
 *                                            in full
 *   answer(ctl, resp, dsts, arrays, request_id, payload, cseq_word, sseq_word, seq, busy_word,
 *          served_word, sleeping_word)
 *                                            the server's response: unless the request is no
 *                                            longer pending (-1, nothing written), fill (None if
 *                                            declined, nothing written), seal, publish sseq, clear
 *                                            busy, count it, fence, read the client's sleeping
 *                                            word: 1 if the client must be woken, else 0
 *
 * Buffers are anything with the writable or read-only buffer protocol (the memoryviews of the
 * mapped segments); every index is bounds-checked against the buffer.
 *
 * The guard against a peer that shrinks a shared segment (ftruncate) under this process's mapping:
 * an access past the file's new end is SIGBUS, which would end the process. The server guards its
 * clients' data segments and its control segment; a client (and ``shm ls``) guards the server's
 * control segment. As libwayland-server does for wl_shm pools:
 *
 *   guard(buf) -> slot                      watch the pages of a writable mapping; the first call
 *                                            installs the SIGBUS handler
 *   unguard(slot)                            stop watching (before the mapping is closed)
 *   faulted(slot) -> bool                    whether a SIGBUS hit the slot's pages since guard()
 *   faults() -> int                          how many SIGBUS the guard has caught in this process
 *
 * The handler replaces the watched mapping's pages by private zero pages (mmap MAP_FIXED, one
 * system call) and returns: the faulting access reads zeros and goes on, the slot is marked, and
 * its owner drops that mapping. A SIGBUS elsewhere goes to the handler installed before (or the
 * default action: the process ends, as it would have).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CPU_RELAX() ((void)0)
#endif

#define MSG_MAGIC 0xF0C01234u
#define PROTOCOL_VERSION 1
#define HEADER_SIZE 32
#define CRC_OFFSET 28
#define FLAG_DATA_CRC 1u

static inline int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A spin's pacing, between polls: 1 once `end` has passed; else 0, having yielded the CPU if
 * `polite` has passed (a peer on this CPU may need it), or paused otherwise. */
static inline int spin_over(int64_t end, int64_t polite) {
    int64_t now = now_ns();
    if (now > end)
        return 1;
    if (now > polite)
        sched_yield();
    else
        CPU_RELAX();
    return 0;
}

static inline uint32_t rd32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v; /* little-endian hosts only: checked at import */
}

static inline uint64_t rd64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline void wr32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void wr64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }

/* A u64 word of the buffer, for atomic access: index in words, bounds-checked. */
static volatile uint64_t *word64(Py_buffer *view, Py_ssize_t index) {
    if (index < 0 || index >= view->len / 8) {
        PyErr_Format(PyExc_IndexError, "u64 word %zd is outside the %zd-byte buffer", index, view->len);
        return NULL;
    }
    return (volatile uint64_t *)((char *)view->buf + index * 8);
}

static volatile uint32_t *word32(Py_buffer *view, Py_ssize_t index) {
    if (index < 0 || index >= view->len / 4) {
        PyErr_Format(PyExc_IndexError, "u32 word %zd is outside the %zd-byte buffer", index, view->len);
        return NULL;
    }
    return (volatile uint32_t *)((char *)view->buf + index * 4);
}

static int get_ssize(PyObject *o, Py_ssize_t *out, const char *what) {
    Py_ssize_t v = PyLong_AsSsize_t(o);
    if (v == -1 && PyErr_Occurred()) {
        PyErr_Format(PyExc_TypeError, "%s must be an int", what);
        return -1;
    }
    *out = v;
    return 0;
}

static int get_u64(PyObject *o, uint64_t *out, const char *what) {
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Format(PyExc_ValueError, "%s must be an int in [0, 2**64)", what);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

static int check_nargs(Py_ssize_t nargs, Py_ssize_t want, const char *name) {
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", name, want, nargs);
        return -1;
    }
    return 0;
}

static PyObject *hot_fence(PyObject *self, PyObject *unused) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    Py_RETURN_NONE;
}

static PyObject *hot_publish(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer view;
    Py_ssize_t seq_word, peer_word;
    uint64_t seq;
    if (check_nargs(nargs, 4, "publish") < 0 || get_ssize(args[1], &seq_word, "seq_word") < 0 ||
        get_u64(args[2], &seq, "seq") < 0 || get_ssize(args[3], &peer_word, "peer_word") < 0)
        return NULL;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE) < 0)
        return NULL;
    volatile uint64_t *w = word64(&view, seq_word);
    volatile uint32_t *peer = w ? word32(&view, peer_word) : NULL;
    if (peer == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    __atomic_store_n(w, seq, __ATOMIC_RELEASE);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    uint32_t sleeping = __atomic_load_n(peer, __ATOMIC_ACQUIRE);
    PyBuffer_Release(&view);
    return PyBool_FromLong(sleeping != 0);
}

/* Busy-poll *w until it equals want, at most spin_ns (the GIL released while it spins): 1 if it
 * does. Called with the GIL held. */
static int spin_until(volatile uint64_t *w, uint64_t want, int64_t spin_ns, int64_t yield_ns) {
    int done = __atomic_load_n(w, __ATOMIC_ACQUIRE) == want;
    if (!done && spin_ns > 0) {
        Py_BEGIN_ALLOW_THREADS;
        int64_t start = now_ns(), end = start + spin_ns, polite = start + yield_ns;
        for (;;) {
            for (int i = 0; i < 64; i++) {
                if (__atomic_load_n(w, __ATOMIC_ACQUIRE) == want) {
                    done = 1;
                    break;
                }
                CPU_RELAX();
            }
            if (done || spin_over(end, polite))
                break;
        }
        Py_END_ALLOW_THREADS;
    }
    return done;
}

static PyObject *hot_spin(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer view;
    Py_ssize_t index;
    uint64_t want;
    int64_t spin_ns, yield_ns;
    if (check_nargs(nargs, 5, "spin") < 0 || get_ssize(args[1], &index, "word") < 0 ||
        get_u64(args[2], &want, "want") < 0)
        return NULL;
    if ((spin_ns = PyLong_AsLongLong(args[3])) == -1 && PyErr_Occurred())
        return NULL;
    if ((yield_ns = PyLong_AsLongLong(args[4])) == -1 && PyErr_Occurred())
        return NULL;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    volatile uint64_t *w = word64(&view, index);
    if (w == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    int done = spin_until(w, want, spin_ns, yield_ns);
    PyBuffer_Release(&view);
    return PyBool_FromLong(done);
}

/* Word indices from a sequence of ints, each checked against the buffer. */
static Py_ssize_t *indices(PyObject *seq, Py_ssize_t n, Py_ssize_t limit, const char *what) {
    Py_ssize_t *out = PyMem_New(Py_ssize_t, n ? n : 1);
    if (out == NULL)
        return (Py_ssize_t *)PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        Py_ssize_t v = PyLong_AsSsize_t(item);
        if (v == -1 && PyErr_Occurred()) {
            PyMem_Free(out);
            return NULL;
        }
        if (v < 0 || v >= limit) {
            PyErr_Format(PyExc_IndexError, "%s word %zd is outside the buffer", what, v);
            PyMem_Free(out);
            return NULL;
        }
        out[i] = v;
    }
    return out;
}

static PyObject *hot_poll(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer view;
    PyObject *cseq_f = NULL, *sseq_f = NULL, *busy_f = NULL, *result = NULL;
    Py_ssize_t *cseq = NULL, *sseq = NULL, *busy = NULL, epoch_word, n = 0, first;
    int64_t spin_ns, yield_ns;
    uint64_t epoch;
    if (check_nargs(nargs, 9, "poll") < 0)
        return NULL;
    if ((spin_ns = PyLong_AsLongLong(args[4])) == -1 && PyErr_Occurred())
        return NULL;
    if ((yield_ns = PyLong_AsLongLong(args[5])) == -1 && PyErr_Occurred())
        return NULL;
    if (get_ssize(args[6], &epoch_word, "epoch_word") < 0 ||
        get_u64(args[7], &epoch, "epoch") < 0 || get_ssize(args[8], &first, "start") < 0)
        return NULL;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    cseq_f = PySequence_Fast(args[1], "cseq must be a sequence of word indices");
    sseq_f = cseq_f ? PySequence_Fast(args[2], "sseq must be a sequence of word indices") : NULL;
    busy_f = sseq_f ? PySequence_Fast(args[3], "busy must be a sequence of word indices") : NULL;
    if (busy_f == NULL)
        goto done;
    n = PySequence_Fast_GET_SIZE(cseq_f);
    first = n > 0 ? ((first % n) + n) % n : 0;
    if (PySequence_Fast_GET_SIZE(sseq_f) != n || PySequence_Fast_GET_SIZE(busy_f) != n) {
        PyErr_SetString(PyExc_ValueError, "cseq, sseq and busy must have the same length");
        goto done;
    }
    volatile uint64_t *ew = word64(&view, epoch_word);
    if (ew == NULL)
        goto done;
    if ((cseq = indices(cseq_f, n, view.len / 8, "cseq")) == NULL ||
        (sseq = indices(sseq_f, n, view.len / 8, "sseq")) == NULL ||
        (busy = indices(busy_f, n, view.len / 4, "busy")) == NULL)
        goto done;
    {
        volatile uint64_t *u64 = (volatile uint64_t *)view.buf;
        volatile uint32_t *u32 = (volatile uint32_t *)view.buf;
        Py_ssize_t found = -1;
        Py_BEGIN_ALLOW_THREADS;
        int64_t start = now_ns(), end = start + spin_ns, polite = start + yield_ns;
        for (;;) {
            for (Py_ssize_t k = 0; k < n; k++) { /* from `start` on, round the ring: fairness */
                Py_ssize_t i = (first + k) % n;
                if (__atomic_load_n(&u64[cseq[i]], __ATOMIC_ACQUIRE) !=
                        __atomic_load_n(&u64[sseq[i]], __ATOMIC_ACQUIRE) &&
                    __atomic_load_n(&u32[busy[i]], __ATOMIC_ACQUIRE) == 0) {
                    found = i;
                    break;
                }
            }
            if (found >= 0)
                break;
            if (__atomic_load_n(ew, __ATOMIC_ACQUIRE) != epoch) {
                found = -2;
                break;
            }
            if (spin_over(end, polite))
                break;
        }
        Py_END_ALLOW_THREADS;
        result = PyLong_FromSsize_t(found);
    }
done:
    PyMem_Free(cseq);
    PyMem_Free(sseq);
    PyMem_Free(busy);
    Py_XDECREF(cseq_f);
    Py_XDECREF(sseq_f);
    Py_XDECREF(busy_f);
    PyBuffer_Release(&view);
    return result;
}

static uint32_t message_crc(const unsigned char *p, uint64_t payload) {
    uLong crc = crc32(0L, p, CRC_OFFSET);
    const unsigned char *q = p + HEADER_SIZE;
    while (payload > 0) { /* zlib takes uInt lengths */
        uInt chunk = payload > 0x40000000u ? 0x40000000u : (uInt)payload;
        crc = crc32(crc, q, chunk);
        q += chunk;
        payload -= chunk;
    }
    return (uint32_t)crc;
}

/* Whether the message at p (limit bytes readable) repeats the cached payload of clen bytes, with
 * header and CRC checked: 1 yes, 0 no, -1 the payload repeats but the CRC does not match. Bytes
 * [lo, hi) of the payload may differ. */
static int repeats(const unsigned char *p, Py_ssize_t limit, const unsigned char *c, Py_ssize_t clen,
                   Py_ssize_t lo, Py_ssize_t hi) {
    if (limit < HEADER_SIZE || rd32(p) != MSG_MAGIC || (p[4] | (p[5] << 8)) != PROTOCOL_VERSION)
        return 0;
    uint32_t payload = rd32(p + 16), flags = rd32(p + 20);
    if (flags & FLAG_DATA_CRC || payload != (uint64_t)clen || HEADER_SIZE + (Py_ssize_t)payload > limit)
        return 0;
    const unsigned char *q = p + HEADER_SIZE;
    if (lo < 0 || hi < lo || hi > (Py_ssize_t)payload)
        lo = hi = 0;
    if (memcmp(q, c, lo) != 0 || memcmp(q + hi, c + hi, payload - hi) != 0)
        return 0;
    return message_crc(p, payload) == rd32(p + CRC_OFFSET) ? 1 : -1;
}

#define KIND_INFER 1
#define KIND_RESPONSE 2
#define DEADLINE_AT 80 /* deadline_ns in the request body */

static void seal_at(unsigned char *p, uint32_t kind, uint64_t rid, uint32_t payload, uint32_t flags) {
    wr32(p, MSG_MAGIC);
    p[4] = PROTOCOL_VERSION;
    p[5] = 0;
    p[6] = (unsigned char)(kind & 0xFF);
    p[7] = (unsigned char)(kind >> 8);
    wr64(p + 8, rid);
    wr32(p + 16, payload);
    wr32(p + 20, flags);
    wr32(p + 24, 0);
    wr32(p + CRC_OFFSET, message_crc(p, payload));
}

static PyObject *hot_seal(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer view;
    uint64_t kind, rid, payload, flags;
    if (check_nargs(nargs, 5, "seal") < 0 || get_u64(args[1], &kind, "kind") < 0 ||
        get_u64(args[2], &rid, "request_id") < 0 || get_u64(args[3], &payload, "payload") < 0 ||
        get_u64(args[4], &flags, "flags") < 0)
        return NULL;
    if (kind > 0xFFFF || payload > 0xFFFFFFFFu || flags > 0xFFFFFFFFu) {
        PyErr_SetString(PyExc_ValueError, "kind, payload or flags out of range for the header");
        return NULL;
    }
    if (flags & FLAG_DATA_CRC) {
        PyErr_SetString(PyExc_ValueError, "seal() does not cover DATA_CRC messages (use _codec._seal)");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE) < 0)
        return NULL;
    if ((uint64_t)view.len < HEADER_SIZE + payload) {
        PyErr_Format(PyExc_IndexError, "a %llu-byte payload does not fit the %zd-byte area",
                     (unsigned long long)payload, view.len);
        PyBuffer_Release(&view);
        return NULL;
    }
    seal_at(view.buf, (uint32_t)kind, rid, (uint32_t)payload, (uint32_t)flags);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyObject *hot_repeat(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer view, cached;
    Py_ssize_t size, lo, hi;
    PyObject *result = NULL;
    if (check_nargs(nargs, 5, "repeat") < 0 || get_ssize(args[1], &size, "size") < 0 ||
        get_ssize(args[3], &lo, "skip_lo") < 0 || get_ssize(args[4], &hi, "skip_hi") < 0)
        return NULL;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[2], &cached, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    const unsigned char *p = view.buf, *q = p + HEADER_SIZE;
    Py_ssize_t limit = size < view.len ? size : view.len;
    int same = repeats(p, limit, cached.buf, cached.len, lo, hi);
    if (same <= 0) {
        result = same == 0 ? Py_NewRef(Py_None) : PyLong_FromLong(-1);
        goto done;
    }
    uint32_t flags = rd32(p + 20);
    if (lo < 0 || hi < lo || hi > cached.len)
        lo = hi = 0;
    /* (kind, request_id, flags, the u64 at skip_lo: the request's deadline, or 0) */
    uint64_t skipped = hi - lo == 8 ? rd64(q + lo) : 0;
    result = PyTuple_New(4);
    if (result != NULL) {
        PyObject *items[4] = {PyLong_FromUnsignedLong(p[6] | (p[7] << 8)),
                              PyLong_FromUnsignedLongLong(rd64(p + 8)), PyLong_FromUnsignedLong(flags),
                              PyLong_FromUnsignedLongLong(skipped)};
        for (int i = 0; i < 4; i++) {
            if (items[i] == NULL) {
                for (int j = 0; j < 4; j++)
                    Py_XDECREF(items[j]);
                Py_CLEAR(result);
                break;
            }
        }
        for (int i = 0; result != NULL && i < 4; i++)
            PyTuple_SET_ITEM(result, i, items[i]);
    }
done:
    PyBuffer_Release(&cached);
    PyBuffer_Release(&view);
    return result;
}

/* numpy's dtype metadata of a dtype (a new reference): None for no dtype (a bytearray, a
 * memoryview: nothing marked) or a failed lookup, the error cleared. */
static PyObject *dtype_metadata(PyObject *dtype) {
    PyObject *m = dtype != NULL ? PyObject_GetAttrString(dtype, "metadata") : NULL;
    if (m == NULL) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    return m;
}

/* Whether two uint16 or uint8 buffers agree on numpy's dtype metadata: BF16 bit patterns and
 * BYTES are uint16 and uint8 with a mark there (foundation_ml's DataType.BF16.numpy and
 * DataType.BYTES.numpy), which the buffer format does not show. One dtype object: they agree. */
static int same_dtype_marks(PyObject *a, PyObject *b) {
    PyObject *da = PyObject_GetAttrString(a, "dtype");
    if (da == NULL)
        PyErr_Clear();
    PyObject *db = PyObject_GetAttrString(b, "dtype");
    if (db == NULL)
        PyErr_Clear();
    int same = 1;
    if (da != db) {
        PyObject *ma = dtype_metadata(da), *mb = dtype_metadata(db);
        same = PyObject_RichCompareBool(ma, mb, Py_EQ); /* None and None: 1, at once */
        if (same < 0) {
            PyErr_Clear();
            same = 0;
        }
        Py_DECREF(ma);
        Py_DECREF(mb);
    }
    Py_XDECREF(da);
    Py_XDECREF(db);
    return same;
}

/* Copy each source array into its destination view when both have the same format, dtype mark,
 * shape and C-contiguous layout: 1 copied; 0 if any pair differs (nothing copied, the caller
 * re-encodes); -1 with an exception set if an argument is not a sequence. */
static int fill_pairs(PyObject *dsts_arg, PyObject *srcs_arg) {
    PyObject *dsts = PySequence_Fast(dsts_arg, "dsts must be a sequence"), *srcs = NULL;
    if (dsts == NULL)
        return -1;
    srcs = PySequence_Fast(srcs_arg, "arrays must be iterable");
    if (srcs == NULL) {
        Py_DECREF(dsts);
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(dsts);
    int ok = PySequence_Fast_GET_SIZE(srcs) == n;
    Py_buffer views[2 * 16];
    Py_ssize_t got = 0;
    if (n > 16)
        ok = 0; /* rare: the caller's general path */
    for (Py_ssize_t i = 0; ok && i < n; i++) {
        Py_buffer *d = &views[2 * i], *src = &views[2 * i + 1];
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(dsts, i), d, PyBUF_RECORDS) < 0) {
            PyErr_Clear();
            ok = 0;
            break;
        }
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(srcs, i), src, PyBUF_RECORDS_RO) < 0) {
            PyErr_Clear();
            PyBuffer_Release(d);
            ok = 0;
            break;
        }
        got = i + 1;
        ok = d->len == src->len && d->ndim == src->ndim && d->itemsize == src->itemsize &&
             strcmp(d->format ? d->format : "B", src->format ? src->format : "B") == 0 &&
             PyBuffer_IsContiguous(d, 'C') && PyBuffer_IsContiguous(src, 'C');
        for (int k = 0; ok && k < d->ndim; k++)
            ok = d->shape[k] == src->shape[k];
        if (ok && d->format != NULL && (strcmp(d->format, "H") == 0 || strcmp(d->format, "B") == 0))
            ok = same_dtype_marks(PySequence_Fast_GET_ITEM(dsts, i), PySequence_Fast_GET_ITEM(srcs, i));
    }
    if (ok) {
        Py_ssize_t total = 0;
        for (Py_ssize_t i = 0; i < n; i++)
            total += views[2 * i].len;
        /* a large copy lets the other threads run, as numpy's does (the exports hold the buffers) */
        PyThreadState *state = total >= (1 << 16) ? PyEval_SaveThread() : NULL;
        for (Py_ssize_t i = 0; i < n; i++)
            if (views[2 * i].buf != views[2 * i + 1].buf)
                memmove(views[2 * i].buf, views[2 * i + 1].buf, views[2 * i].len);
        if (state != NULL)
            PyEval_RestoreThread(state);
    }
    for (Py_ssize_t i = 0; i < got; i++) {
        PyBuffer_Release(&views[2 * i]);
        PyBuffer_Release(&views[2 * i + 1]);
    }
    Py_DECREF(dsts);
    Py_DECREF(srcs);
    return ok;
}

static PyObject *hot_fill(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (check_nargs(nargs, 2, "fill") < 0)
        return NULL;
    int ok = fill_pairs(args[0], args[1]);
    return ok < 0 ? NULL : PyBool_FromLong(ok);
}

static int get_i64(PyObject *o, int64_t *out) {
    long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    *out = v;
    return 0;
}

/* The buffers of args[at[k]] (k < n), writable where writable[k]: 0, or -1 with an exception set
 * and none of them held. release_buffers gives them back. */
static int get_buffers(PyObject *const *args, const int *at, const int *writable, int n, Py_buffer *views) {
    for (int k = 0; k < n; k++) {
        if (PyObject_GetBuffer(args[at[k]], &views[k], writable[k] ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0) {
            while (k-- > 0)
                PyBuffer_Release(&views[k]);
            return -1;
        }
    }
    return 0;
}

static void release_buffers(Py_buffer *views, int n) {
    for (int k = n - 1; k >= 0; k--)
        PyBuffer_Release(&views[k]);
}

static PyObject *hot_exchange(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    uint64_t rid, payload, deadline, seq;
    Py_ssize_t cseq_word, peer_word, sseq_word;
    int64_t spin_ns, yield_ns;
    long code = -1;
    if (check_nargs(nargs, 15, "exchange") < 0 || get_u64(args[5], &rid, "request_id") < 0 ||
        get_u64(args[6], &payload, "payload") < 0 || get_u64(args[7], &deadline, "deadline") < 0 ||
        get_ssize(args[8], &cseq_word, "cseq_word") < 0 || get_u64(args[9], &seq, "seq") < 0 ||
        get_ssize(args[10], &peer_word, "peer_word") < 0 ||
        get_ssize(args[11], &sseq_word, "sseq_word") < 0 || get_i64(args[12], &spin_ns) < 0 ||
        get_i64(args[13], &yield_ns) < 0)
        return NULL;
    Py_buffer views[4]; /* ctl, req, resp, cached */
    static const int at[4] = {0, 1, 2, 14}, writable[4] = {1, 1, 0, 0};
    if (get_buffers(args, at, writable, 4, views) < 0)
        return NULL;
    Py_buffer ctl = views[0], req = views[1], resp = views[2], cached = views[3];
    PyObject *result = NULL;
    volatile uint64_t *cw = word64(&ctl, cseq_word), *sw = cw ? word64(&ctl, sseq_word) : NULL;
    volatile uint32_t *peer = sw ? word32(&ctl, peer_word) : NULL;
    if (peer == NULL)
        goto done;
    if (payload > 0xFFFFFFFFu || payload < DEADLINE_AT + 8 || (uint64_t)req.len < HEADER_SIZE + payload) {
        PyErr_Format(PyExc_IndexError, "a %llu-byte request payload does not fit the %zd-byte area",
                     (unsigned long long)payload, req.len);
        goto done;
    }
    int filled = fill_pairs(args[3], args[4]);
    if (filled < 0)
        goto done;
    if (filled) {
        unsigned char *p = req.buf;
        wr64(p + HEADER_SIZE + DEADLINE_AT, deadline);
        seal_at(p, KIND_INFER, rid, (uint32_t)payload, 0);
        __atomic_store_n(cw, seq, __ATOMIC_RELEASE);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (__atomic_load_n(peer, __ATOMIC_ACQUIRE)) {
            code = 1; /* the server sleeps: the caller rings its bell, then waits */
        } else {
            int done = spin_until(sw, seq, spin_ns, yield_ns);
            code = 2;
            if (done) {
                const unsigned char *r = resp.buf;
                code = 3;
                if (resp.len >= HEADER_SIZE && (r[6] | (r[7] << 8)) == KIND_RESPONSE && rd64(r + 8) == rid &&
                    repeats(r, resp.len, cached.buf, cached.len, 0, 0) == 1)
                    code = 0;
            }
        }
    }
    result = PyLong_FromLong(code);
done:
    release_buffers(views, 4);
    return result;
}

#define FLAG_CUDA_IPC 2u

static PyObject *hot_take(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t size, cseq_word, sseq_word, busy_word, gen_word;
    uint64_t gen;
    if (check_nargs(nargs, 9, "take") < 0 || get_ssize(args[3], &size, "size") < 0 ||
        get_ssize(args[4], &cseq_word, "cseq_word") < 0 || get_ssize(args[5], &sseq_word, "sseq_word") < 0 ||
        get_ssize(args[6], &busy_word, "busy_word") < 0 || get_ssize(args[7], &gen_word, "gen_word") < 0 ||
        get_u64(args[8], &gen, "gen") < 0)
        return NULL;
    Py_buffer views[3]; /* ctl, req, cached */
    static const int at[3] = {0, 1, 2}, writable[3] = {1, 0, 0};
    if (get_buffers(args, at, writable, 3, views) < 0)
        return NULL;
    Py_buffer ctl = views[0], req = views[1], cached = views[2];
    PyObject *result = NULL;
    volatile uint64_t *cw = word64(&ctl, cseq_word), *sw = cw ? word64(&ctl, sseq_word) : NULL;
    volatile uint64_t *gw = sw ? word64(&ctl, gen_word) : NULL;
    volatile uint32_t *busy = gw ? word32(&ctl, busy_word) : NULL;
    if (busy == NULL)
        goto done;
    uint64_t seq = __atomic_load_n(cw, __ATOMIC_ACQUIRE);
    if (seq == __atomic_load_n(sw, __ATOMIC_ACQUIRE)) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    __atomic_store_n(busy, 1, __ATOMIC_RELEASE);
    const unsigned char *p = req.buf;
    Py_ssize_t limit = size < req.len ? size : req.len;
    if (__atomic_load_n(gw, __ATOMIC_ACQUIRE) == gen && cached.len >= DEADLINE_AT + 8 &&
        repeats(p, limit, cached.buf, cached.len, DEADLINE_AT, DEADLINE_AT + 8) == 1 &&
        (p[6] | (p[7] << 8)) == KIND_INFER && !(rd32(p + 20) & FLAG_CUDA_IPC))
        result = Py_BuildValue("(KKK)", (unsigned long long)seq, (unsigned long long)rd64(p + 8),
                               (unsigned long long)rd64(p + HEADER_SIZE + DEADLINE_AT));
    else
        result = Py_BuildValue("(KOi)", (unsigned long long)seq, Py_None, 0);
done:
    release_buffers(views, 3);
    return result;
}

static PyObject *hot_answer(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    uint64_t rid, payload, seq;
    Py_ssize_t cseq_word, sseq_word, busy_word, served_word, sleeping_word;
    if (check_nargs(nargs, 12, "answer") < 0 || get_u64(args[4], &rid, "request_id") < 0 ||
        get_u64(args[5], &payload, "payload") < 0 || get_ssize(args[6], &cseq_word, "cseq_word") < 0 ||
        get_ssize(args[7], &sseq_word, "sseq_word") < 0 || get_u64(args[8], &seq, "seq") < 0 ||
        get_ssize(args[9], &busy_word, "busy_word") < 0 ||
        get_ssize(args[10], &served_word, "served_word") < 0 ||
        get_ssize(args[11], &sleeping_word, "sleeping_word") < 0)
        return NULL;
    Py_buffer views[2]; /* ctl, resp */
    static const int at[2] = {0, 1}, writable[2] = {1, 1};
    if (get_buffers(args, at, writable, 2, views) < 0)
        return NULL;
    Py_buffer ctl = views[0], resp = views[1];
    PyObject *result = NULL;
    volatile uint64_t *cw = word64(&ctl, cseq_word), *sw = cw ? word64(&ctl, sseq_word) : NULL;
    volatile uint64_t *served = sw ? word64(&ctl, served_word) : NULL;
    volatile uint32_t *busy = served ? word32(&ctl, busy_word) : NULL;
    volatile uint32_t *sleeping = busy ? word32(&ctl, sleeping_word) : NULL;
    if (sleeping == NULL)
        goto done;
    if (payload > 0xFFFFFFFFu || (uint64_t)resp.len < HEADER_SIZE + payload) {
        PyErr_Format(PyExc_IndexError, "a %llu-byte response payload does not fit the %zd-byte area",
                     (unsigned long long)payload, resp.len);
        goto done;
    }
    if (__atomic_load_n(cw, __ATOMIC_ACQUIRE) != seq || __atomic_load_n(sw, __ATOMIC_ACQUIRE) == seq) {
        result = PyLong_FromLong(-1); /* not the pending request any more */
        goto done;
    }
    int filled = fill_pairs(args[2], args[3]);
    if (filled <= 0) {
        result = filled < 0 ? NULL : Py_NewRef(Py_None);
        goto done;
    }
    seal_at(resp.buf, KIND_RESPONSE, rid, (uint32_t)payload, 0);
    __atomic_store_n(sw, seq, __ATOMIC_RELEASE);
    __atomic_store_n(busy, 0, __ATOMIC_RELEASE);
    __atomic_store_n(served, __atomic_load_n(served, __ATOMIC_RELAXED) + 1, __ATOMIC_RELEASE);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    result = PyLong_FromLong(__atomic_load_n(sleeping, __ATOMIC_ACQUIRE) != 0);
done:
    release_buffers(views, 2);
    return result;
}

/* --- the SIGBUS guard of shared segments a peer may shrink ------------------------------------ */

#define GUARD_SLOTS 8192 /* two servers' worth of MAX_CHANNELS (4096) data segments */

typedef struct {
    uintptr_t start, end; /* 0, 0: a free slot; both written and read atomically */
    int faulted;
} guard_slot;

static guard_slot guards[GUARD_SLOTS];
static struct sigaction sigbus_before;
static int sigbus_installed;
static unsigned long sigbus_caught;

static void on_sigbus(int sig, siginfo_t *info, void *context) {
    uintptr_t at = (uintptr_t)info->si_addr;
    for (int i = 0; i < GUARD_SLOTS; i++) {
        uintptr_t start = __atomic_load_n(&guards[i].start, __ATOMIC_ACQUIRE);
        uintptr_t end = __atomic_load_n(&guards[i].end, __ATOMIC_ACQUIRE);
        if (start && at >= start && at < end) {
            void *p = mmap((void *)start, end - start, PROT_READ | PROT_WRITE,
                           MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p != MAP_FAILED) {
                __atomic_store_n(&guards[i].faulted, 1, __ATOMIC_RELEASE);
                __atomic_add_fetch(&sigbus_caught, 1, __ATOMIC_RELEASE);
                return; /* the access runs again, on zero pages */
            }
            break;
        }
    }
    /* not a watched page (or no way to mend it): what would have happened without us */
    if (sigbus_before.sa_flags & SA_SIGINFO) {
        if (sigbus_before.sa_sigaction) {
            sigbus_before.sa_sigaction(sig, info, context);
            return;
        }
    } else if (sigbus_before.sa_handler != SIG_DFL && sigbus_before.sa_handler != SIG_IGN) {
        sigbus_before.sa_handler(sig);
        return;
    }
    signal(SIGBUS, SIG_DFL); /* the access faults again: the default action ends the process */
}

static PyObject *hot_guard(PyObject *self, PyObject *buffer) {
    Py_buffer view;
    if (PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE) < 0)
        return NULL;
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t start = (uintptr_t)view.buf & ~(uintptr_t)(page - 1);
    uintptr_t end = ((uintptr_t)view.buf + (uintptr_t)view.len + (uintptr_t)page - 1) &
                    ~(uintptr_t)(page - 1);
    PyBuffer_Release(&view);
    if (!sigbus_installed) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_sigbus;
        sa.sa_flags = SA_SIGINFO | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGBUS, &sa, &sigbus_before) != 0)
            return PyErr_SetFromErrno(PyExc_OSError);
        sigbus_installed = 1;
    }
    for (int i = 0; i < GUARD_SLOTS; i++) { /* callers hold the GIL: no two claim one slot */
        if (__atomic_load_n(&guards[i].start, __ATOMIC_ACQUIRE) == 0) {
            guards[i].faulted = 0;
            __atomic_store_n(&guards[i].end, end, __ATOMIC_RELEASE);
            __atomic_store_n(&guards[i].start, start, __ATOMIC_RELEASE);
            return PyLong_FromLong(i);
        }
    }
    return PyLong_FromLong(-1); /* all watched: this mapping goes unguarded */
}

static int guard_index(PyObject *slot) {
    long i = PyLong_AsLong(slot);
    if (i == -1 && PyErr_Occurred())
        return -2;
    if (i < -1 || i >= GUARD_SLOTS) {
        PyErr_SetString(PyExc_ValueError, "no such guard slot");
        return -2;
    }
    return (int)i;
}

static PyObject *hot_unguard(PyObject *self, PyObject *slot) {
    int i = guard_index(slot);
    if (i == -2)
        return NULL;
    if (i >= 0) {
        __atomic_store_n(&guards[i].start, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&guards[i].end, 0, __ATOMIC_RELEASE);
    }
    Py_RETURN_NONE;
}

static PyObject *hot_faulted(PyObject *self, PyObject *slot) {
    int i = guard_index(slot);
    if (i == -2)
        return NULL;
    return PyBool_FromLong(i >= 0 && __atomic_load_n(&guards[i].faulted, __ATOMIC_ACQUIRE));
}

static PyObject *hot_faults(PyObject *self, PyObject *unused) {
    return PyLong_FromUnsignedLong(__atomic_load_n(&sigbus_caught, __ATOMIC_ACQUIRE));
}

static PyMethodDef methods[] = {
    {"guard", hot_guard, METH_O,
     "guard(buffer) -> slot: a SIGBUS on the buffer's pages maps zero pages there and marks the slot."},
    {"unguard", hot_unguard, METH_O, "unguard(slot): stop watching (before the mapping is closed)."},
    {"faulted", hot_faulted, METH_O, "faulted(slot) -> bool: whether a SIGBUS hit it since guard()."},
    {"faults", hot_faults, METH_NOARGS, "faults() -> int: the SIGBUS the guard caught in this process."},
    {"fill", (PyCFunction)(void (*)(void))hot_fill, METH_FASTCALL,
     "fill(dsts, arrays) -> bool: copy each array into its view if formats and shapes agree."},
    {"fence", hot_fence, METH_NOARGS, "A full memory barrier."},
    {"publish", (PyCFunction)(void (*)(void))hot_publish, METH_FASTCALL,
     "publish(buf, seq_word, seq, peer_word) -> bool: store, fence, read the peer's sleeping word."},
    {"spin", (PyCFunction)(void (*)(void))hot_spin, METH_FASTCALL,
     "spin(buf, word, want, spin_ns, yield_ns) -> bool: busy-poll a u64 word (GIL released)."},
    {"poll", (PyCFunction)(void (*)(void))hot_poll, METH_FASTCALL,
     "poll(buf, cseq, sseq, busy, spin_ns, yield_ns, epoch_word, epoch, start) -> int: the server's scan."},
    {"seal", (PyCFunction)(void (*)(void))hot_seal, METH_FASTCALL,
     "seal(buf, kind, request_id, payload, flags): write a message header and its CRC32."},
    {"repeat", (PyCFunction)(void (*)(void))hot_repeat, METH_FASTCALL,
     "repeat(buf, size, cached, skip_lo, skip_hi) -> (kind, id, flags, skipped u64) | None | -1."},
    {"exchange", (PyCFunction)(void (*)(void))hot_exchange, METH_FASTCALL,
     "exchange(ctl, req, resp, dsts, arrays, request_id, payload, deadline, cseq_word, seq, peer_word, "
     "sseq_word, spin_ns, yield_ns, cached) -> int: the client's repeated request in one call."},
    {"take", (PyCFunction)(void (*)(void))hot_take, METH_FASTCALL,
     "take(ctl, req, cached, size, cseq_word, sseq_word, busy_word, gen_word, gen) -> None | (seq, id, "
     "deadline) | (seq, None, 0): the server's take of a pending request."},
    {"answer", (PyCFunction)(void (*)(void))hot_answer, METH_FASTCALL,
     "answer(ctl, resp, dsts, arrays, request_id, payload, cseq_word, sseq_word, seq, busy_word, "
     "served_word, sleeping_word) -> int | None: the server's repeated response in one call."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "foundation_shm._hot",
    "The shm transport's hot path in C (see _hot.c); foundation_shm._accel chooses it.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__hot(void) {
    uint16_t probe = 1;
    if (*(unsigned char *)&probe != 1) {
        PyErr_SetString(PyExc_ImportError, "foundation_shm._hot supports little-endian hosts only");
        return NULL;
    }
    return PyModule_Create(&module);
}
