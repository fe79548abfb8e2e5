//! Test hooks: make this thread's next reads of a process's stat file fail as at the file
//! limit, every thread's reads of a server's hide its death, a look at one run something first,
//! this thread's next `posix_fallocate` calls be interrupted, or its next open of a segment fail.

use std::cell::Cell;
use std::io;
use std::sync::{Mutex, PoisonError};

thread_local! {
    static BLIND: Cell<(u32, u32)> = const { Cell::new((0, 0)) };
}

/// The processes whose death is hidden, and their stat files as they were.
static HIDDEN: Mutex<Vec<(u32, Vec<u8>)>> = Mutex::new(Vec::new());

/// Every thread's reads of `/proc/PID/stat` give what it holds now until `notice(pid)`, so
/// that a test can kill a server and start the next one before a waiting call looks (a
/// restart takes longer than the 50 ms slice after which a call looks).
pub(crate) fn hide(pid: u32) {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).unwrap();
    HIDDEN
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((pid, stat));
}

/// Calls see what became of process `pid` again.
pub(crate) fn notice(pid: u32) {
    HIDDEN
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|(p, _)| *p != pid);
}

pub(super) fn hidden(pid: u32) -> Option<Vec<u8>> {
    let hidden = HIDDEN.lock().unwrap_or_else(PoisonError::into_inner);
    hidden
        .iter()
        .find(|(p, _)| *p == pid)
        .map(|(_, s)| s.clone())
}

/// What the next read of a process's stat file (not hidden) does first, once.
type Look = (u32, Box<dyn FnOnce() + Send>);
static AT_LOOK: Mutex<Option<Look>> = Mutex::new(None);

/// The next read of `/proc/PID/stat` on any thread (its death not hidden) runs `then` first:
/// something the server does just before the caller looks at it.
pub(crate) fn at_look(pid: u32, then: impl FnOnce() + Send + 'static) {
    *AT_LOOK.lock().unwrap_or_else(PoisonError::into_inner) = Some((pid, Box::new(then)));
}

pub(super) fn look(pid: u32) {
    let then = {
        let mut at = AT_LOOK.lock().unwrap_or_else(PoisonError::into_inner);
        match at.take() {
            Some((p, then)) if p == pid => Some(then),
            other => {
                *at = other;
                None
            }
        }
    };
    if let Some(then) = then {
        then();
    }
}

thread_local! {
    static INTERRUPTS: Cell<u32> = const { Cell::new(0) };
}

/// The next `calls` `posix_fallocate` calls on this thread are interrupted (EINTR).
pub(crate) fn interrupt_fallocate(calls: u32) {
    INTERRUPTS.with(|n| n.set(calls));
}

/// How many of them are left.
pub(crate) fn interrupts_left() -> u32 {
    INTERRUPTS.with(Cell::get)
}

pub(super) fn interrupt() -> bool {
    INTERRUPTS.with(|n| {
        let left = n.get();
        n.set(left.saturating_sub(1));
        left > 0
    })
}

/// The next `reads` reads of `/proc/PID/stat` on this thread fail EMFILE.
pub(crate) fn stat_of(pid: u32, reads: u32) {
    BLIND.with(|b| b.set((pid, reads)));
}

pub(super) fn take(pid: u32) -> Option<io::Error> {
    BLIND.with(|b| match b.get() {
        (p, n) if p == pid && n > 0 => {
            b.set((p, n - 1));
            Some(io::Error::from_raw_os_error(super::ffi::EMFILE))
        }
        _ => None,
    })
}

thread_local! {
    static OPEN_FAILS: Cell<i32> = const { Cell::new(0) };
}

/// The next `Mapping::open` on this thread fails with `errno` (0: none), as at the file limit
/// (EMFILE) or on another user's segment (EACCES).
pub(crate) fn fail_open(errno: i32) {
    OPEN_FAILS.with(|e| e.set(errno));
}

pub(super) fn open_error() -> Option<io::Error> {
    OPEN_FAILS.with(|e| match e.replace(0) {
        0 => None,
        errno => Some(io::Error::from_raw_os_error(errno)),
    })
}
