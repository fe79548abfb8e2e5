package fdn

// posix.go: the POSIX calls through cgo: shm_open, mmap, named semaphores, the clock.

/*
#cgo CFLAGS: -D_GNU_SOURCE
#cgo LDFLAGS: -pthread -lrt
#include <errno.h>
#include <stdlib.h>
#include <fcntl.h>
#include <semaphore.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>

// sem_open and the timed wait are wrapped: cgo cannot call variadic functions, and one call
// per wait is cheaper than building the timespec in Go.
static sem_t *fdn_sem_open(const char *name) {
	sem_t *s = sem_open(name, 0);
	return s == SEM_FAILED ? NULL : s;
}

// 0 when taken, -1 on timeout. CLOCK_MONOTONIC where glibc has sem_clockwait (the wall clock
// may jump). A signal handled in this thread (the Go runtime handles every signal; the kernel
// gives a process's signal to any thread, this one asleep here included) ends sem_*wait with
// EINTR whatever SA_RESTART says: the wait goes on to the same deadline.
static int fdn_sem_wait_ns(sem_t *s, int64_t ns) {
	struct timespec ts;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 30))
	clock_gettime(CLOCK_MONOTONIC, &ts);
#else
	clock_gettime(CLOCK_REALTIME, &ts);
#endif
	int64_t t = (int64_t)ts.tv_nsec + ns;
	ts.tv_sec += (time_t)(t / 1000000000);
	ts.tv_nsec = (long)(t % 1000000000);
	int rc;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 30))
	while ((rc = sem_clockwait(s, CLOCK_MONOTONIC, &ts)) < 0 && errno == EINTR) {
	}
#else
	while ((rc = sem_timedwait(s, &ts)) < 0 && errno == EINTR) {
	}
#endif
	return rc;
}

static int fdn_sem_drain(sem_t *s) {
	int n = 0;
	while (sem_trywait(s) == 0) n++;
	return n;
}

static int64_t fdn_monotonic_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
*/
import "C"

import (
	"syscall"
	"unsafe"
)

type semaphore = *C.sem_t

func shmOpen(name string, flags int, mode uint32) (int, error) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	fd, err := C.shm_open(cname, C.int(flags), C.mode_t(mode))
	if fd < 0 {
		return -1, err
	}
	return int(fd), nil
}

func shmUnlink(name string) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	C.shm_unlink(cname)
}

func semOpen(name string) semaphore {
	s, _ := semOpenErr(name)
	return s
}

// semOpenErr is semOpen with the reason of a failure (the errno of sem_open).
func semOpenErr(name string) (semaphore, error) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	s, err := C.fdn_sem_open(cname)
	if s != nil {
		return s, nil // errno may be left set by a call that succeeded
	}
	if err == nil {
		err = syscall.EINVAL
	}
	return nil, err
}

func semClose(s semaphore) {
	if s != nil {
		C.sem_close(s)
	}
}

func semPost(s semaphore) { C.sem_post(s) }

// semWait waits up to ns nanoseconds; true if it took a post.
func semWait(s semaphore, ns int64) bool { return C.fdn_sem_wait_ns(s, C.int64_t(ns)) == 0 }

func semDrain(s semaphore) { C.fdn_sem_drain(s) }

// schedYield never blocks for long: a raw system call keeps the Go scheduler (and its sysmon
// thread, which would compete for the CPU) out of it.
func schedYield() { syscall.RawSyscall(syscall.SYS_SCHED_YIELD, 0, 0, 0) }

// monotonicNs is CLOCK_MONOTONIC, the clock of the protocol's deadlines and heartbeats.
func monotonicNs() uint64 { return uint64(C.fdn_monotonic_ns()) }

func mmap(fd int, size int) ([]byte, error) {
	return syscall.Mmap(fd, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
}
