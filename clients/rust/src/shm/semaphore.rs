//! A named POSIX semaphore: open, post, try, drain, and a wait bounded by the monotonic clock.

use super::cstr;
use crate::ffi;
use std::io;
use std::ptr::NonNull;

/// A named POSIX semaphore opened by this process (closed on drop).
pub struct Semaphore {
    sem: NonNull<ffi::sem_t>,
}

// SAFETY: POSIX semaphores are made for use from any thread (and process).
unsafe impl Send for Semaphore {}
// SAFETY: as above; every operation is a single thread-safe libc call.
unsafe impl Sync for Semaphore {}

/// What a timed wait ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    Posted,
    TimedOut,
    Interrupted,
}

impl Semaphore {
    /// Open the existing semaphore `name` (`/fdn-...`).
    pub fn open(name: &str) -> io::Result<Semaphore> {
        let c = cstr(name)?;
        // SAFETY: valid NUL-terminated string; without O_CREAT no variadic arguments are read.
        let sem = unsafe { ffi::sem_open(c.as_ptr(), 0) };
        match NonNull::new(sem) {
            Some(sem) if sem.as_ptr() != ffi::SEM_FAILED => Ok(Semaphore { sem }),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// `sem_post`.
    pub fn post(&self) {
        // SAFETY: `sem` is a live handle from sem_open.
        unsafe { ffi::sem_post(self.sem.as_ptr()) };
    }

    /// `sem_trywait`: true if a post was taken.
    pub fn try_wait(&self) -> bool {
        // SAFETY: `sem` is a live handle from sem_open.
        unsafe { ffi::sem_trywait(self.sem.as_ptr()) == 0 }
    }

    /// Take every pending post.
    pub fn drain(&self) {
        while self.try_wait() {}
    }

    /// Wait for a post until the CLOCK_MONOTONIC time `until_ns`.
    pub fn wait_until(&self, until_ns: u64) -> Wait {
        let ts = ffi::timespec {
            tv_sec: (until_ns / 1_000_000_000) as i64,
            tv_nsec: (until_ns % 1_000_000_000) as i64,
        };
        // SAFETY: `sem` is a live handle; `ts` outlives the call.
        let rc = unsafe { ffi::sem_clockwait(self.sem.as_ptr(), ffi::CLOCK_MONOTONIC, &ts) };
        if rc == 0 {
            return Wait::Posted;
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(ffi::ETIMEDOUT) => Wait::TimedOut,
            _ => Wait::Interrupted,
        }
    }
}

impl Drop for Semaphore {
    fn drop(&mut self) {
        // SAFETY: closes the handle sem_open gave; no copy of it outlives `self`.
        unsafe { ffi::sem_close(self.sem.as_ptr()) };
    }
}
