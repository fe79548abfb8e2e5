/* data.c: a channel's data segment, this process's record of the segments it made, and the fork
 * handlers that keep that record (spec 10.1 step 6). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <stdint.h>
#include <unistd.h>

#include "client.h"

/* --- the data segment ------------------------------------------------------------------------ */
/* This process's data segments by name, and the client that made each (spec 10.1 step 6). A name
 * is the server's, the channel's index, the pid and a generation, so after a restart under the
 * name a client of this process that claims a channel of the new server makes the very name
 * another client still holds on the dead server's region: it replaces that segment, and the other,
 * dropping its dead connection, unlinked the name, the new owner's segment by then (the server
 * parked that channel; its call ran into its deadline). A client unlinks a name only while the
 * segment is its own: one recorded as another client's is left to it. A name that could not be
 * recorded (no memory) is unlinked as before. Reset in a forked child (its pid makes new names). */
struct named {
    char name[64];
    const struct fdn_client *owner;
};
static struct named *named;
static size_t named_len, named_cap;
static pthread_mutex_t named_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_once_t fdn_named_once = PTHREAD_ONCE_INIT;

/* How many forks this process is down its line of descent from the one that loaded the library:
 * a client made (or forgotten, fdn_forget) at another count is its parent's copy. Written only in a
 * forked child's atfork handler, where that child has one thread. */
unsigned long fdn_forks;

/* Whether the forking thread holds named_lock across its fork. A child forked while another thread
 * of its parent ran fdn_named_once's routine runs it again (glibc), so there the handlers may be
 * registered twice and each runs twice per fork: the lock is taken once (taken again, the forking
 * thread waited for itself), given back once, and the child's reset done once. */
static __thread int named_held;

static void named_lock_now(void) {
    if (named_held) return;
    pthread_mutex_lock(&named_lock);
    named_held = 1;
}
static void named_unlock_now(void) {
    if (!named_held) return;
    named_held = 0;
    pthread_mutex_unlock(&named_lock);
}
static void named_forget_all(void) { /* the child: the forking thread holds the lock (prepare) */
    if (!named_held) return;
    named_len = 0;
    fdn_forks++;
    named_held = 0;
    pthread_mutex_unlock(&named_lock);
}
void fdn_fork_handlers_register(void) { pthread_atfork(named_lock_now, named_unlock_now, named_forget_all); }

static struct named *named_find(const char *name) {
    for (size_t i = 0; i < named_len; i++)
        if (!strcmp(named[i].name, name)) return &named[i];
    return NULL;
}

/* Record c as the maker of `name` (under named_lock). */
static void named_record(const char *name, const struct fdn_client *c) {
    struct named *n = named_find(name);
    if (!n && named_len == named_cap) {
        size_t cap = named_cap ? named_cap * 2 : 16;
        struct named *grown = realloc(named, cap * sizeof *grown);
        if (!grown) return;
        named = grown, named_cap = cap;
    }
    if (!n) n = &named[named_len++];
    snprintf(n->name, sizeof n->name, "%s", name);
    n->owner = c;
}

/* Unlink `name` unless another client of this process made the segment of that name since;
 * forget c's record of it. */
static void unlink_own(const char *name, const struct fdn_client *c) {
    pthread_mutex_lock(&named_lock);
    struct named *n = named_find(name);
    if (!n || n->owner == c) {
        if (n) *n = named[--named_len];
        shm_unlink(name);
    }
    pthread_mutex_unlock(&named_lock);
}

void fdn_drop_data(struct fdn_client *c) {
    if (c->data) {
        unlink_own(c->data_name, c);
        munmap(c->data, c->req_cap + c->resp_cap);
        c->data = NULL;
    }
}

int fdn_data_name(char out[64], const char *server, uint32_t index, uint32_t pid, uint64_t gen) {
    int n = snprintf(out, 64, "/fdn-%s-d%u-%u-%llu", server, index, pid, (unsigned long long)gen);
    if (n < 0 || n >= 64) {
        out[0] = 0;
        return 0;
    }
    return 1;
}

/* errno of a failed step of creating a data segment (spec 10.1 step 6), shm_open included (a tmpfs
 * out of inodes fails it ENOSPC): OVERLOADED when /dev/shm or memory has no room now or no file
 * descriptor is free now, or a posix_fallocate interrupted FDN_FALLOCATE_TRIES times in a row (it
 * may be later), TOO_LARGE for a size no file or /dev/shm can ever hold
 * (`sized`: a step after shm_open, which sizes, allocates or maps), INTERNAL for anything else. */
static enum fdn_status alloc_status(int e, int sized) {
    if (e == ENOSPC || e == ENOMEM || e == EMFILE || e == ENFILE || e == EINTR) return FDN_OVERLOADED;
    if (sized && (e == EFBIG || e == EOVERFLOW || e == EINVAL)) return FDN_TOO_LARGE;
    return FDN_INTERNAL;
}

int (*fdn_shm_open)(const char *name, int flags, mode_t mode) = shm_open;
int (*fdn_fchmod)(int fd, mode_t mode) = fchmod;
int (*fdn_ftruncate)(int fd, off_t size) = ftruncate;
int (*fdn_posix_fallocate)(int fd, off_t offset, off_t len) = posix_fallocate;
void *(*fdn_mmap)(void *addr, size_t len, int prot, int flags, int fd, off_t offset) = mmap;

/* Create, allocate and map the data segment `name` of req_cap + resp_cap bytes (section 10.1,
 * step 6). Its pages are allocated now (posix_fallocate): on a full /dev/shm a sparse segment maps
 * fine, and the server's first write to a missing page would be SIGBUS, its end. A segment of this
 * name is ours (it carries our pid), left over from a claim or grow that failed: it is replaced.
 * On any failure nothing is left in /dev/shm. */
static enum fdn_status create_data(struct fdn_client *c, const char *name, uint64_t req_cap, uint64_t resp_cap,
                                   void **out, struct fdn_error *err) {
    uint64_t size = req_cap + resp_cap;
    unsigned long long sz = (unsigned long long)size;
    if (size < req_cap || size > (uint64_t)SIZE_MAX || size > (uint64_t)INT64_MAX)
        return fdn_fail(err, FDN_TOO_LARGE, 0,
                        "shm server '%s' channel %u: data segment %s of capacities %llu+%llu bytes: too large",
                        c->name, c->index, name, (unsigned long long)req_cap, (unsigned long long)resp_cap);
    struct statvfs vfs;
    if (statvfs("/dev/shm", &vfs) == 0) {
        unsigned long long total = (unsigned long long)vfs.f_blocks * (unsigned long long)vfs.f_frsize;
        if (total && sz > total)
            return fdn_fail(err, FDN_TOO_LARGE, 0,
                            "shm server '%s' channel %u: data segment %s of %llu bytes is more than /dev/shm can "
                            "ever hold (%llu bytes)",
                            c->name, c->index, name, sz, total);
    }
    pthread_once(&fdn_named_once, fdn_fork_handlers_register);
    pthread_mutex_lock(&named_lock);
    int fd = fdn_shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, c->mode);
    /* ours (it carries our pid): left over from a failed claim or grow, or another client's of
     * this process on a dead server's region (named_record: that one leaves the name to us) */
    if (fd < 0 && errno == EEXIST) {
        shm_unlink(name);
        fd = fdn_shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, c->mode);
    }
    int e = fd < 0 ? errno : 0;
    if (!e) named_record(name, c);
    pthread_mutex_unlock(&named_lock);
    const char *step = "shm_open";
    if (!e) {
        step = "fchmod";
        e = fdn_fchmod(fd, c->mode) < 0 ? errno : 0;
    }
    if (!e) {
        step = "ftruncate";
        e = fdn_ftruncate(fd, (off_t)size) < 0 ? errno : 0;
    }
    if (!e) {
        step = "posix_fallocate";
        /* returns the error, leaves errno; EINTR: a signal came during it (older kernels stop a
         * tmpfs allocation at any signal, newer at a fatal one), made again as Python's
         * os.posix_fallocate does (PEP 475), FDN_FALLOCATE_TRIES times in a row at most: tmpfs
         * undoes what an interrupted call allocated, so signals that come faster than a large
         * segment allocates (a profiler's timer) kept the connect trying for ever */
        for (int tries = 1; (e = fdn_posix_fallocate(fd, 0, (off_t)size)) == EINTR && tries < FDN_FALLOCATE_TRIES;)
            tries++;
        if (e == EOPNOTSUPP || e == ENOSYS || e == ENODEV) e = 0; /* cannot allocate: stays sparse */
    }
    void *mem = MAP_FAILED;
    if (!e) {
        step = "mmap";
        mem = fdn_mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (mem == MAP_FAILED) e = errno;
    }
    if (fd >= 0) {
        close(fd);
        if (e) unlink_own(name, c);
    }
    if (e) {
        enum fdn_status st = alloc_status(e, fd >= 0);
        char later[80] = "";
        if (e == EMFILE || e == ENFILE) snprintf(later, sizeof later, ": no file descriptor free now, it may be later");
        else if (e == EINTR) snprintf(later, sizeof later, ": %d times in a row, it may pass later", FDN_FALLOCATE_TRIES);
        else if (st == FDN_OVERLOADED) snprintf(later, sizeof later, ": no room now, it may fit later");
        return fdn_fail(err, st, 0, "shm server '%s' channel %u: cannot allocate data segment %s of %llu bytes in /dev/shm (%s: %s)%s",
                        c->name, c->index, name, sz, step, strerror(e), later);
    }
    *out = mem;
    return FDN_OK;
}

/* Create a data segment with these capacities and publish it in the channel (section 10.1,
 * "Growing"); the request bytes in use are carried over. On failure the channel keeps its old
 * segment and nothing new is left in /dev/shm. */
enum fdn_status fdn_attach(struct fdn_client *c, uint64_t req_cap, uint64_t resp_cap, struct fdn_error *err) {
    uint64_t gen = FDN_LOAD(&c->ch->data_gen) + 1;
    char name[64];
    if (!fdn_data_name(name, c->name, c->index, (uint32_t)getpid(), gen))
        return fdn_fail(err, FDN_INTERNAL, 0,
                        "shm data segment name /fdn-%s-d%u-%u-%llu does not fit data_name (at most 63 bytes)",
                        c->name, c->index, (unsigned)getpid(), (unsigned long long)gen);
    void *mem = NULL;
    enum fdn_status st = create_data(c, name, req_cap, resp_cap, &mem, err);
    if (st) return st;
    if (c->data && c->used) memcpy(mem, c->data, (size_t)c->used);
    FDN_STORE(&c->ch->request_capacity, req_cap);
    FDN_STORE(&c->ch->response_capacity, resp_cap);
    memset(c->ch->data_name, 0, sizeof c->ch->data_name);
    memcpy(c->ch->data_name, name, strlen(name));
    FDN_STORE(&c->ch->data_gen, gen);
    fdn_drop_data(c);
    c->data = mem;
    c->req_cap = req_cap;
    c->resp_cap = resp_cap;
    memcpy(c->data_name, name, sizeof name);
    return FDN_OK;
}
