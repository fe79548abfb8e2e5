//! Taking a client for a call: an idle one, a new connect, or a turn in the queue until one is
//! put back or the deadline passes; a connect refused OVERLOADED waits for the pool's own.

use super::state::State;
use super::{left, Pool};
use crate::client::{unsent, Client};
use crate::conn::deadline_after;
use crate::error::{Error, Result, Status};
use std::sync::{MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long a pool whose connect was refused OVERLOADED (every channel of the server taken)
/// makes do with the clients it has before it tries to connect another.
const OVERLOAD_RETRY: Duration = Duration::from_secs(1);

impl Pool {
    /// Take an idle client, connect one, or wait for one until `deadline`; `sends`: for a call
    /// (see `dial`).
    pub(super) fn get(&self, deadline: Option<Instant>, sends: bool) -> Result<Client> {
        let mut st = self.lock();
        if st.closed {
            return Err(self.closed_error());
        }
        if let Some(c) = st.idle.pop_back() {
            return Ok(c);
        }
        if st.may_open(self.size) {
            st.open += 1;
            drop(st);
            return self.dial(deadline, sends);
        }
        self.wait(st, deadline, sends)
    }

    /// Queue the caller until a client is put back, it may connect one, the pool closes, or
    /// `deadline` passes.
    fn wait(
        &self,
        mut st: MutexGuard<'_, State>,
        deadline: Option<Instant>,
        sends: bool,
    ) -> Result<Client> {
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.waiters.push_back(ticket);
        loop {
            let now = Instant::now();
            let late = deadline.is_some_and(|d| now >= d);
            match st.grants.remove(&ticket) {
                Some(Some(c)) if !late => return Ok(c),
                Some(None) if st.closed => {
                    st.open -= 1; // leave to connect for a pool closed since: none
                    return Err(self.closed_error());
                }
                Some(None) if !late => {
                    drop(st);
                    return self.dial(deadline, sends);
                }
                Some(g) => {
                    // handed something as the deadline passed: pass it on
                    match g {
                        Some(c) if st.closed => {
                            st.open -= 1;
                            drop(st);
                            drop(c); // gives its channel back: not under the lock
                            return Err(self.wait_error());
                        }
                        Some(c) => {
                            let late = c.pending();
                            st.give(c, late);
                        }
                        None => {
                            st.open -= 1;
                            st.hand_on(self.size);
                        }
                    }
                    self.granted.notify_all();
                    return Err(self.wait_error());
                }
                None if st.closed => return Err(self.closed_error()),
                None if late => {
                    st.waiters.retain(|&t| t != ticket);
                    return Err(self.wait_error());
                }
                None => {}
            }
            st = match deadline {
                None => self
                    .granted
                    .wait(st)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(d) => {
                    let timeout = d.saturating_duration_since(now);
                    let waited = self.granted.wait_timeout(st, timeout);
                    waited.unwrap_or_else(PoisonError::into_inner).0
                }
            };
        }
    }

    fn wait_error(&self) -> Error {
        Error::new(
            Status::DeadlineExceeded,
            format!(
                "the deadline passed while waiting for a client of the pool of {:?}",
                self.name
            ),
        )
    }

    /// Connect a client for the pool (counted in `open`), no later than `deadline`. Refused
    /// OVERLOADED while the pool has clients, it waits for one of them. A client connected once
    /// the pool has closed is dropped, unused, and a connect that failed once it has closed is
    /// named after the closing: the call fails as those refused after `close`. `sends`: for a
    /// call, whose failure to find the server alive says that nothing of it was sent.
    fn dial(&self, deadline: Option<Instant>, sends: bool) -> Result<Client> {
        let ns = deadline_after(left(deadline)); // Duration::ZERO: now, not none
        let connected = match Client::connect_refused(&self.name, self.opts.clone(), ns) {
            Err(refused) if refused.gone && sends => Err(unsent(refused.error)),
            other => other.map_err(Error::from),
        };
        let mut st = self.lock();
        let e = match connected {
            Ok(c) if st.closed => {
                // the pool closed while this connect ran: refused as a later call would be
                st.open -= 1;
                drop(st);
                drop(c); // gives its channel back: not under the lock
                return Err(self.closed_error());
            }
            Ok(c) => {
                if st.dropped > 0 {
                    // in place of a dropped client: the pool's reconnect (spec 10.5)
                    st.dropped -= 1;
                    st.counted.reconnects += 1;
                }
                return Ok(c);
            }
            Err(e) if st.closed => {
                // so did a connect that failed: the pool's closing is the news, its error after
                st.open -= 1;
                let mut closed = self.closed_error();
                closed.message = format!("{}; the connect under way failed: {e}", closed.message);
                return Err(closed);
            }
            Err(e) => e,
        };
        st.open -= 1;
        if e.code == Status::Overloaded && st.open > 0 {
            st.limit = st.open;
            st.retry_at = Some(Instant::now() + OVERLOAD_RETRY);
            // a client put back while this connect ran went to the idle ones (nobody was
            // waiting): waiting for the next put would wait beside it
            if let Some(c) = st.idle.pop_back() {
                return Ok(c);
            }
            return self.wait(st, deadline, sends);
        }
        st.hand_on(self.size);
        drop(st);
        self.granted.notify_all();
        Err(e)
    }
}
