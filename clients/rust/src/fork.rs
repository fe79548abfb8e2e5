//! Which process a connection is its own: a count of forks, made one larger in each forked child
//! by a `pthread_atfork` handler, so that a child's copy of its parent's client is told from a
//! connection of its own with one relaxed load (docs/protocol/shm.md section 10.5). The handlers
//! also hold the data segments' records across the fork (`hold_records`).

use crate::conn::hold_records;
use crate::ffi;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Once;

/// How many forks this process is down its line of descent from the one that first connected: a
/// connection made at another count is its parent's copy. Written only in a forked child's
/// handler, where that child has one thread.
static FORKS: AtomicU64 = AtomicU64::new(0);
static COUNTING: Once = Once::new();

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

/// The fork count of a connection made now, the handler registered first (once per process), so
/// that every fork from here on is counted.
pub(crate) fn generation() -> u64 {
    COUNTING.call_once(|| {
        // SAFETY: registers handlers that take and give back a lock of this crate's (on the
        // forking thread, never held there across a fork by this crate) and add to an atomic.
        unsafe { ffi::pthread_atfork(Some(before), Some(in_parent), Some(in_child)) };
    });
    FORKS.load(Relaxed)
}

/// Whether a connection made at fork count `made` is a forked child's copy of its parent's.
pub(crate) fn forked_since(made: u64) -> bool {
    FORKS.load(Relaxed) != made
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

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
        let (mut status, mut done) = (-1, 0);
        let until = Instant::now() + Duration::from_secs(5);
        while done == 0 && Instant::now() < until {
            // SAFETY: polls the child forked above; `status` outlives the call.
            done = unsafe { ffi::waitpid(pid, &mut status, ffi::WNOHANG) };
            std::thread::sleep(Duration::from_millis(10));
        }
        if done == 0 {
            // SAFETY: kills and reaps the child forked above, still waiting for the records.
            unsafe {
                ffi::kill(pid, 9);
                ffi::waitpid(pid, &mut status, 0);
            }
        }
        holder.join().unwrap();
        assert_eq!(
            (done, status),
            (pid, 0),
            "the child's take of the records (0: still waiting after 5 s, killed)"
        );
    }
}
