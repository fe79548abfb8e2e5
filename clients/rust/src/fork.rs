//! Which process a connection is its own: a count of forks, made one larger in each forked child
//! by a `pthread_atfork` handler, so that a child's copy of its parent's client is told from a
//! connection of its own with one relaxed load (docs/protocol/shm.md section 10.5). The handlers
//! also hold the data segments' records across the fork (`hold_records`).

use crate::conn::hold_records;
use crate::ffi;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering::Relaxed};

/// How many forks this process is down its line of descent from the one that first connected: a
/// connection made at another count is its parent's copy. Written only in a forked child's
/// handler, where that child has one thread.
static FORKS: AtomicU64 = AtomicU64::new(0);
/// Whether the handlers are registered: a `pthread_once_t` (`PTHREAD_ONCE_INIT`, 0), not a
/// `std::sync::Once`, whose state a child forked while another thread ran it copies as running
/// for good (its first connect then waited for ever); glibc's `pthread_once` runs it again there.
static COUNTING: AtomicI32 = AtomicI32::new(0);

/// Before a fork: the data segments' records held (`hold_records`), so that the child finds them
/// free whatever another thread was doing.
extern "C" fn before() {
    hold_records(true);
}

/// After a fork, in the parent: the records given back.
extern "C" fn in_parent() {
    hold_records(false);
}

/// After a fork, in the child (one thread): count it (an atomic add), and give the records back.
extern "C" fn in_child() {
    FORKS.fetch_add(1, Relaxed);
    hold_records(false);
}

/// Register the handlers (through [`once`]). Run again in a child forked while its parent ran it,
/// it may register them twice there: `hold_records` holds the records once whatever the count.
extern "C" fn count_forks() {
    // SAFETY: registers handlers that take and give back a lock of this crate's (on the forking
    // thread, never held there across a fork by this crate) and add to an atomic.
    unsafe { ffi::pthread_atfork(Some(before), Some(in_parent), Some(in_child)) };
}

/// `init` run once in this process (and once more in a child forked while it ran) by
/// `pthread_once` on `control`, a `pthread_once_t` that nothing else touches.
fn once(control: &AtomicI32, init: extern "C" fn()) {
    // SAFETY: `control` is a live, aligned `pthread_once_t` (an int on Linux), only ever used
    // through `pthread_once`, which reads and writes it atomically.
    unsafe { ffi::pthread_once(control.as_ptr(), init) };
}

/// The fork count of a connection made now, the handler registered first (once per process), so
/// that every fork from here on is counted.
pub(crate) fn generation() -> u64 {
    once(&COUNTING, count_forks);
    FORKS.load(Relaxed)
}

/// Whether a connection made at fork count `made` is a forked child's copy of its parent's.
pub(crate) fn forked_since(made: u64) -> bool {
    FORKS.load(Relaxed) != made
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    /// Wait up to 5 s for the child `pid`, killed if it is still running then: `waitpid`'s answer
    /// (0: it was killed) and the child's wait status.
    fn reap(pid: i32) -> (i32, i32) {
        let (mut status, mut done) = (-1, 0);
        let until = Instant::now() + Duration::from_secs(5);
        while done == 0 && Instant::now() < until {
            // SAFETY: polls the child forked by the caller; `status` outlives the call.
            done = unsafe { ffi::waitpid(pid, &mut status, ffi::WNOHANG) };
            std::thread::sleep(Duration::from_millis(10));
        }
        if done == 0 {
            // SAFETY: kills and reaps the caller's child, still running.
            unsafe {
                ffi::kill(pid, 9);
                ffi::waitpid(pid, &mut status, 0);
            }
        }
        (done, status)
    }

    static REGISTERING: AtomicI32 = AtomicI32::new(0);
    static ENTERED: AtomicBool = AtomicBool::new(false);
    static LEAVE: AtomicBool = AtomicBool::new(false);

    /// A registration that takes its time: it waits for `LEAVE`.
    extern "C" fn slow_registration() {
        ENTERED.store(true, Relaxed);
        while !LEAVE.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A child forked while another thread registered the handlers (a first connect under way)
    /// found the registration (`std::sync::Once`) running for good: its first connect waited for
    /// ever. It registers them there (again, maybe, if the parent's had got that far: then a fork
    /// of that child runs each handler twice, and holds the records once).
    #[test]
    fn a_child_forked_while_another_thread_registers_the_handlers_registers_them() {
        generation(); // this process's handlers registered, as a connect does
        let registering = std::thread::spawn(|| once(&REGISTERING, slow_registration));
        while !ENTERED.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(1));
        }
        // SAFETY: the child registers (once, a lock and malloc of the C library, which it resets
        // in a child), forks and waits, then ends in _exit.
        let pid = unsafe { ffi::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // a second set of handlers, in this child only
            once(&REGISTERING, count_forks);
            // SAFETY: as above; the grandchild ends in _exit at once.
            let grandchild = unsafe { ffi::fork() };
            if grandchild == 0 {
                // SAFETY: ends the grandchild at once, running nothing of the parent's.
                unsafe { ffi::_exit(0) };
            }
            let mut status = -1;
            // SAFETY: waits for the grandchild forked above; `status` outlives the call.
            let waited = unsafe { ffi::waitpid(grandchild, &mut status, 0) };
            let reaped = waited == grandchild && status == 0;
            // SAFETY: ends the child at once, running nothing of the parent's.
            unsafe { ffi::_exit(i32::from(!reaped)) };
        }
        let (done, status) = reap(pid);
        LEAVE.store(true, Relaxed);
        registering.join().unwrap();
        assert_eq!(
            (done, status),
            (pid, 0),
            "the child's registration and fork (0: still waiting after 5 s, killed)"
        );
    }

    /// A child forked while another thread held the data segments' records (a connect of that
    /// thread under way) found them held for good: its first connect waited for ever. The forking
    /// thread holds them across the fork, so the child takes them at once.
    #[test]
    fn a_child_forked_while_another_thread_holds_the_records_takes_them() {
        generation(); // the handlers registered, as a connect does
        let (held, was_held) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            hold_records(true);
            held.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(200));
            hold_records(false);
        });
        was_held.recv().unwrap();
        // SAFETY: the child only takes and gives back the records' lock, then ends in _exit.
        let pid = unsafe { ffi::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            hold_records(true);
            hold_records(false);
            // SAFETY: ends the child at once, running nothing of the parent's.
            unsafe { ffi::_exit(0) };
        }
        let (done, status) = reap(pid);
        holder.join().unwrap();
        assert_eq!(
            (done, status),
            (pid, 0),
            "the child's take of the records (0: still waiting after 5 s, killed)"
        );
    }
}
