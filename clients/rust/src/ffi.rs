//! The few libc functions this crate needs, declared by hand (no `libc` crate: the registry is
//! not reachable). Types and constants are those of x86-64 / aarch64 Linux with glibc >= 2.34
//! (where `shm_open` and the semaphores live in libc itself; `sem_clockwait` needs 2.30).

#![allow(non_camel_case_types, dead_code)]

use std::os::raw::{c_char, c_int, c_long, c_uint, c_void};

pub type mode_t = c_uint;
pub type off_t = i64;
pub type clockid_t = c_int;

/// `sem_t` is 32 bytes on 64-bit glibc; only pointers to it are ever held.
#[repr(C)]
pub struct sem_t {
    _opaque: [u8; 32],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct timespec {
    pub tv_sec: i64,
    pub tv_nsec: c_long,
}

pub const O_RDONLY: c_int = 0;
pub const O_RDWR: c_int = 2;
pub const O_CREAT: c_int = 0o100;
pub const O_EXCL: c_int = 0o200;
pub const O_NOFOLLOW: c_int = 0o400000;
pub const O_CLOEXEC: c_int = 0o2000000;
pub const O_NONBLOCK: c_int = 0o4000;
pub const PROT_READ: c_int = 1;
pub const PROT_WRITE: c_int = 2;
pub const MAP_SHARED: c_int = 1;
pub const MAP_FAILED: *mut c_void = !0usize as *mut c_void;
pub const LOCK_SH: c_int = 1;
pub const LOCK_EX: c_int = 2;
pub const LOCK_NB: c_int = 4;
pub const WNOHANG: c_int = 1;
pub const CLOCK_MONOTONIC: clockid_t = 1;
pub const EINTR: c_int = 4;
pub const EAGAIN: c_int = 11;
pub const EWOULDBLOCK: c_int = EAGAIN;
pub const ETIMEDOUT: c_int = 110;
pub const ENOENT: c_int = 2;
pub const EACCES: c_int = 13;
pub const ESRCH: c_int = 3;
pub const EMFILE: c_int = 24;
pub const ENFILE: c_int = 23;
pub const EEXIST: c_int = 17;
pub const ENOMEM: c_int = 12;
pub const ENODEV: c_int = 19;
pub const EINVAL: c_int = 22;
pub const EFBIG: c_int = 27;
pub const ENOSPC: c_int = 28;
pub const ENOSYS: c_int = 38;
pub const EOVERFLOW: c_int = 75;
pub const EOPNOTSUPP: c_int = 95;
/// glibc's `struct statvfs` on 64-bit Linux: the fields read here lead it; the tail (`f_files`
/// to the spare words, 72 bytes on glibc) is given more room than it needs.
#[repr(C)]
#[derive(Default)]
pub struct statvfs {
    pub f_bsize: u64,
    pub f_frsize: u64,
    pub f_blocks: u64,
    pub f_bfree: u64,
    pub f_bavail: u64,
    _rest: [u64; 27],
}

/// glibc's `SEM_FAILED`.
pub const SEM_FAILED: *mut sem_t = std::ptr::null_mut();

extern "C" {
    pub fn shm_open(name: *const c_char, oflag: c_int, mode: mode_t) -> c_int;
    pub fn shm_unlink(name: *const c_char) -> c_int;
    pub fn mmap(
        addr: *mut c_void,
        len: usize,
        prot: c_int,
        flags: c_int,
        fd: c_int,
        off: off_t,
    ) -> *mut c_void;
    pub fn munmap(addr: *mut c_void, len: usize) -> c_int;
    pub fn sem_open(name: *const c_char, oflag: c_int, ...) -> *mut sem_t;
    pub fn sem_close(sem: *mut sem_t) -> c_int;
    pub fn sem_post(sem: *mut sem_t) -> c_int;
    pub fn sem_trywait(sem: *mut sem_t) -> c_int;
    pub fn sem_clockwait(sem: *mut sem_t, clock: clockid_t, abstime: *const timespec) -> c_int;
    pub fn flock(fd: c_int, op: c_int) -> c_int;
    pub fn kill(pid: c_int, sig: c_int) -> c_int;
    /// Returns the error number (errno is left alone).
    pub fn posix_fallocate(fd: c_int, offset: off_t, len: off_t) -> c_int;
    pub fn statvfs(path: *const c_char, buf: *mut statvfs) -> c_int;
    pub fn clock_gettime(clock: clockid_t, tp: *mut timespec) -> c_int;
    pub fn fork() -> c_int;
    pub fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    pub fn _exit(code: c_int) -> !;
    pub fn pthread_once(control: *mut c_int, init: extern "C" fn()) -> c_int;
    pub fn pthread_atfork(
        prepare: Option<extern "C" fn()>,
        parent: Option<extern "C" fn()>,
        child: Option<extern "C" fn()>,
    ) -> c_int;
}
