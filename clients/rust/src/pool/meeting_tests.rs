//! Calls through a pool at once, each holding its client until all have one: a meeting that a
//! thread which will not come (its connect failed, it panicked) leaves, so that the others fail
//! at once. They met at a std `Barrier`, which waited for ever for the failed thread: the test
//! hung until the driver's timeout instead of failing. Runs only when `FDN_TEST_PYTHON` names a
//! Python with foundation_shm installed.

use super::tests::{echo, int, LONG};
use super::Pool;
use crate::ConnectOptions;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// A meeting of `n` threads; each takes its place ([`Meeting::place`]) before anything that may
/// fail, and waits there.
pub(super) struct Meeting {
    n: usize,
    /// How many arrived, and whether one left without arriving.
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

impl Meeting {
    pub(super) fn new(n: usize) -> Meeting {
        Meeting {
            n,
            state: Mutex::new((0, false)),
            changed: Condvar::new(),
        }
    }

    /// One thread's place: dropped before [`Place::wait`], the thread left (the others stop).
    pub(super) fn place(&self) -> Place<'_> {
        Place {
            meeting: self,
            arrived: false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, (usize, bool)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub(super) struct Place<'a> {
    meeting: &'a Meeting,
    arrived: bool,
}

impl Place<'_> {
    /// Arrive, and wait until all have; why not, if one left first, or a minute passed.
    pub(super) fn wait(&mut self) -> Result<(), String> {
        self.arrived = true;
        let m = self.meeting;
        let mut state = m.lock();
        state.0 += 1;
        m.changed.notify_all();
        let end = Instant::now() + Duration::from_secs(60);
        while state.0 < m.n {
            let now = Instant::now();
            if state.1 || now >= end {
                let why = if state.1 {
                    "another left"
                } else {
                    "in a minute"
                };
                return Err(format!("{} of {} calls met ({why})", state.0, m.n));
            }
            state = m
                .changed
                .wait_timeout(state, end - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        Ok(())
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if !self.arrived {
            self.meeting.lock().1 = true;
            self.meeting.changed.notify_all();
        }
    }
}

/// `n` calls through `p` at once, each on a client of its own (each holds its client until all
/// `n` have one); each must be answered.
pub(super) fn together(p: &Pool, n: usize, what: &str) {
    together_within(p, n, what, LONG);
}

/// [`together`], each call waiting for its client up to `timeout`.
fn together_within(p: &Pool, n: usize, what: &str, timeout: Option<Duration>) {
    let all = Meeting::new(n);
    thread::scope(|s| {
        for g in 0..n {
            let all = &all;
            s.spawn(move || {
                let mut place = all.place();
                let answer = p.with_client(timeout, |c| match place.wait() {
                    Ok(()) => c.infer("echo", &int(g as i32), LONG).map(Ok),
                    Err(why) => Ok(Err(why)),
                });
                drop(place); // never arrived (no client): the others stop waiting
                match answer {
                    Ok(Ok(out)) => assert_eq!(out, int(g as i32), "{what}, call {g}"),
                    Ok(Err(why)) => panic!("{what}, call {g}: {why}"),
                    Err(e) => panic!("{what}, call {g}: {e}"),
                }
            });
        }
    });
}

/// Two calls at once through a pool of one client: the second gets none (in 300 ms), and the
/// first, holding the client for it, fails at once too. It waited for ever.
#[test]
fn calls_together_fail_at_once_when_one_gets_no_client() {
    let Some(srv) = echo("rustmeet") else {
        return;
    };
    let p = Pool::new(&srv.1, ConnectOptions::default(), 1).unwrap();
    let start = Instant::now();
    let met = catch_unwind(AssertUnwindSafe(|| {
        together_within(
            &p,
            2,
            "two calls, one client",
            Some(Duration::from_millis(300)),
        );
    }));
    assert!(met.is_err(), "two calls met on one client");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    together(&p, 1, "a call after them"); // the client was put back
}
