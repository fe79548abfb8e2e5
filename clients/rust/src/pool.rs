//! [`Pool`]: the clients of one server shared by many threads, connected lazily, one taken for
//! each call and put back (the Go client's `fdn.Pool`, with a `Mutex` and a `Condvar`).

#[cfg(test)]
mod counters_tests;
#[cfg(test)]
mod meeting_tests;
mod state;
mod take;
#[cfg(test)]
pub(crate) mod tests;

use crate::client::{check_connect, Client, Counters};
use crate::error::{Error, Result, Status};
use crate::options::{ConnectOptions, InferOptions};
use crate::tensor::Tensor;
use state::State;
use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Up to `size` clients of one server, for any number of threads (`Send + Sync`: share it by
/// `&` or in an `Arc`).
///
/// A call takes an idle client (connecting one, lazily, while fewer than `size` are open; else
/// waiting for one to be put back, in turn, until its timeout), calls, and puts it back.
/// [`Pool::infer`] returns the outputs as [`Client::infer`] does: copies, the caller's to keep.
/// [`Pool::with_client`] lends a client to a closure instead, for a [`Client::loan`] or several
/// calls on one channel.
///
/// A client whose call failed SERVER_UNAVAILABLE (the server died, hung, or a handler said so)
/// or that lost its server (a call that could not reconnect), or whose closure panicked, is
/// dropped and not put back; the next call connects a new one. An idle client whose server
/// restarted meanwhile reconnects in its next call (as every [`Client`] does). A client whose
/// call was abandoned at its deadline is put back with its request still with the server and
/// taken last: the call that takes it waits for that late answer first (up to its own deadline),
/// or, should the server die meanwhile, sends its request to one restarted under the name.
///
/// A connect refused OVERLOADED (the server has fewer free channels than `size`) takes a client
/// of the pool put back meanwhile, or waits for one, while the pool has one; the pool makes do
/// with the clients it has for a second before it tries to connect another. With no client of its
/// own, the call fails OVERLOADED. The pool starts no thread.
///
/// [`Pool::counters`] sums what its clients counted, those it dropped included, with a reconnect
/// for each client it connected in place of a dropped one (spec 10.5).
///
/// ```no_run
/// use fdn::{ConnectOptions, Pool, Tensor};
/// use std::time::Duration;
///
/// let pool = Pool::new("demo_server", ConnectOptions::default(), 4)?;
/// std::thread::scope(|s| {
///     for _ in 0..16 {
///         s.spawn(|| {
///             let x = Tensor::from_slice("x", &[1, 784], &vec![0.5f32; 784])?;
///             let outputs = pool.infer("demo", &[x], Some(Duration::from_secs(1)))?;
///             assert_eq!(outputs[0].shape, [1, 10]);
///             Ok::<(), fdn::Error>(())
///         });
///     }
/// });
/// # Ok::<(), fdn::Error>(())
/// ```
pub struct Pool {
    name: String,
    opts: ConnectOptions,
    size: usize,
    state: Mutex<State>,
    /// Signalled when a waiting call is granted something, or the pool closes.
    granted: Condvar,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("Pool")
            .field("name", &self.name)
            .field("size", &self.size)
            .field("open", &st.open)
            .field("idle", &st.idle.len())
            .field("closed", &st.closed)
            .finish()
    }
}

/// The deadline `timeout` from now (`None`: none).
fn deadline_of(timeout: Option<Duration>) -> Option<Instant> {
    timeout.map(|t| Instant::now().checked_add(t).unwrap_or_else(far_future))
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 86400)
}

/// What is left of `deadline` (`None`: no deadline).
fn left(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

impl Pool {
    /// A pool of up to `size` clients of the server `name`, connected with `opts` as they are
    /// needed (none yet: a server that is not there fails the first call, not `new`). The name
    /// and the options are checked as [`Client::connect`] checks them, and `size` (at least 1):
    /// INVALID_INPUT.
    pub fn new(name: &str, opts: ConnectOptions, size: usize) -> Result<Pool> {
        let name = check_connect(name, &opts)?;
        if size < 1 {
            return Err(Error::new(
                Status::InvalidInput,
                format!("a pool of {size} clients (at least 1)"),
            ));
        }
        Ok(Pool {
            name: name.to_string(),
            opts,
            size,
            state: Mutex::new(State {
                idle: VecDeque::new(),
                open: 0,
                limit: size,
                retry_at: None,
                waiters: VecDeque::new(),
                grants: HashMap::new(),
                next_ticket: 0,
                closed: false,
                counted: Counters::default(),
                dropped: 0,
            }),
            granted: Condvar::new(),
        })
    }

    /// The server name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The most clients the pool opens.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Run `model` on `inputs` with a client of the pool, as [`Client::infer`] does; `timeout`
    /// bounds the wait for a free client, a connect, and the call (DEADLINE_EXCEEDED).
    pub fn infer(
        &self,
        model: &str,
        inputs: &[Tensor],
        timeout: Option<Duration>,
    ) -> Result<Vec<Tensor>> {
        self.infer_with(
            model,
            inputs,
            &InferOptions {
                timeout,
                ..InferOptions::default()
            },
        )
    }

    /// [`Pool::infer`] with a model version, a selection of outputs, parameters, as
    /// [`Client::infer_with`]; `options.timeout` bounds the wait, the connect and the call.
    pub fn infer_with(
        &self,
        model: &str,
        inputs: &[Tensor],
        options: &InferOptions,
    ) -> Result<Vec<Tensor>> {
        let deadline = deadline_of(options.timeout);
        self.lend(deadline, Some(model), |c| match deadline {
            None => c.infer_with(model, inputs, options),
            Some(_) => c.infer_with(
                model,
                inputs,
                &InferOptions {
                    timeout: left(deadline),
                    ..options.clone()
                },
            ),
        })
    }

    /// Lend `f` a client of the pool, taken as [`Pool::infer`] takes one (`timeout` bounds the
    /// wait for it and its connect; the calls `f` makes have their own), and put it back when `f`
    /// returns: for a [`Client::loan`], or several calls on one channel. The client is dropped,
    /// not put back, if `f`'s error is SERVER_UNAVAILABLE, if the client lost its server, or if
    /// `f` panics (the panic then goes on). Returns `f`'s result, or the pool's error: closed,
    /// the timeout passed while waiting for a client (DEADLINE_EXCEEDED), or the connect's.
    pub fn with_client<R>(
        &self,
        timeout: Option<Duration>,
        f: impl FnOnce(&mut Client) -> Result<R>,
    ) -> Result<R> {
        self.lend(deadline_of(timeout), None, f)
    }

    /// What the pool counted (spec 10.5): the sum of what its clients counted, those it dropped
    /// (a call failed SERVER_UNAVAILABLE, the client lost its server, its closure panicked) or
    /// closed included, plus one reconnect for each client it connected in place of one it
    /// dropped, counted once that connect succeeded (a client connected while the pool has fewer
    /// than `size` for the first time is not one; a connect that failed counts nothing, nor one
    /// finished after `close`). A client's counts are its own, plain numbers behind `&mut`: the
    /// pool adds what a client counted while lent as it is put back or dropped, so a reconnect or
    /// a resend of a call in progress shows once that call (or [`Pool::with_client`]'s closure)
    /// returns. Both only grow, and a closed pool keeps them. It takes the pool's lock, which no
    /// call or connect holds while it runs: it never waits for one, from any thread.
    pub fn counters(&self) -> Counters {
        self.lock().counted
    }

    /// Close the pool: its idle clients now, those in use when they are put back; calls waiting
    /// for a client, calls still connecting one (the client dropped once connected, unused; a
    /// connect that fails is named after), and every later call, fail SERVER_UNAVAILABLE ("the
    /// pool of "NAME" is closed"). A second `close` does nothing. Dropping the pool drops its idle
    /// clients too.
    pub fn close(&self) {
        let idle = {
            let mut st = self.lock();
            if st.closed {
                return;
            }
            st.closed = true;
            st.waiters.clear(); // they see `closed`
            let idle = std::mem::take(&mut st.idle);
            st.open -= idle.len();
            idle
        };
        self.granted.notify_all();
        drop(idle); // each gives its channel back: not under the lock
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // the pool's own code does not panic under the lock; a poisoned one is still consistent
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn closed_error(&self) -> Error {
        Error::new(
            Status::ServerUnavailable,
            format!("the pool of {:?} is closed", self.name),
        )
    }

    /// Lend `f` a client: for a call of `model` (`Some`, the empty name included), or for
    /// [`Pool::with_client`] (`None`).
    fn lend<R>(
        &self,
        deadline: Option<Instant>,
        model: Option<&str>,
        f: impl FnOnce(&mut Client) -> Result<R>,
    ) -> Result<R> {
        // a call (not with_client, which may only begin a loan) whose client found the server
        // gone as it connected sent nothing, and says so (spec 10.3)
        let mut c = self
            .get(deadline, model.is_some())
            .map_err(|e| e.with_call(model.unwrap_or(""), 0))?;
        let before = c.counters();
        match catch_unwind(AssertUnwindSafe(|| f(&mut c))) {
            Ok(result) => {
                let discard =
                    c.lost() || matches!(&result, Err(e) if e.code == Status::ServerUnavailable);
                self.put(c, discard, before);
                result
            }
            Err(panic) => {
                self.put(c, true, before); // the client's state is unknown
                resume_unwind(panic)
            }
        }
    }

    /// Give a client back to the pool, or drop it (`discard`, or the pool closed), adding what it
    /// counted since it was lent (it counted `before` then). The closure of
    /// [`Pool::with_client`] may have put another client in the lent one's place: one that counted
    /// less adds nothing (the pool's counts only grow, and nothing here may panic).
    fn put(&self, c: Client, discard: bool, before: Counters) {
        let late = !discard && c.pending();
        let now = c.counters();
        let reconnects = now.reconnects.saturating_sub(before.reconnects);
        let resends = now.resends.saturating_sub(before.resends);
        let mut st = self.lock();
        st.counted.reconnects = st.counted.reconnects.saturating_add(reconnects);
        st.counted.resends = st.counted.resends.saturating_add(resends);
        if discard || st.closed {
            if !st.closed {
                st.dropped += 1;
            }
            st.open -= 1;
            st.hand_on(self.size);
            drop(st);
            self.granted.notify_all();
            drop(c); // gives its channel back: not under the lock
            return;
        }
        st.give(c, late);
        drop(st);
        self.granted.notify_all();
    }
}

// A pool is shared by threads.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Pool>();
};
