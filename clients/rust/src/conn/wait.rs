//! Waiting for the server: spin on the response word, then block on the channel semaphore in
//! slices, telling a dead server from a slow one between them.
//! docs/protocol/shm.md sections 7.2 (steps 4-7, the polite spin) and 10.3 (liveness).

use super::{nanos, Conn};
use crate::error::{err, unavailable, Error, Result, Status};
use crate::layout::{self as l, channel as ch, region as rg};
use crate::shm;
use std::hint::spin_loop;
use std::sync::atomic::{fence, Ordering::*};
use std::time::Duration;

/// A blocked wait wakes at least this often to check the deadline and the server's liveness.
const WAIT_SLICE_NS: u64 = 50_000_000;

/// Whether the server `pid`, started at `start` (clock ticks since boot), still runs: not proven
/// gone (`shm::process_gone`, the classifier the resend decision asks too). A stat file that
/// cannot be read (EMFILE) is no death: it failed a call to a live server gone.
pub(super) fn server_alive(pid: u32, start: u64) -> bool {
    !shm::process_gone(pid, start)
}

/// Section 10.3: why the server `pid` of region `ctl` counts as hung (its heartbeat is older
/// than 10 intervals, at least 1 s), or `None`.
pub(super) fn hung(ctl: &shm::Mapping, name: &str, pid: u32) -> Option<String> {
    let beat = ctl.u64(rg::HEARTBEAT_NS).load(Relaxed);
    let interval = u64::from(ctl.u32(rg::HEARTBEAT_INTERVAL_MS).load(Relaxed)).max(1) * 1_000_000;
    let stale = (10 * interval).max(1_000_000_000);
    let now = shm::monotonic_ns();
    (beat != 0 && now > beat.saturating_add(stale)).then(|| {
        format!(
            "shm server {name:?} (pid {pid}) is hung: no heartbeat for {} ms",
            (now - beat) / 1_000_000
        )
    })
}

impl Conn {
    pub(super) fn server_seq(&self) -> u64 {
        self.ctl.u64(self.base + ch::SERVER_SEQ).load(Acquire)
    }

    /// Section 10.3, between wait slices: the region is READY or STOPPING and the server process
    /// is the one that started it. Not its heartbeat: a request already with a hung server waits
    /// for its answer up to its deadline, as for a slow model. A Python server beats from a
    /// thread that needs the GIL, so a model call holding it for over a second (a C extension
    /// that does not release it) stalls the beat of a healthy server, and a call without a
    /// deadline waits, as in gRPC. Only a claim (connect, reconnect) refuses a hung server.
    pub(super) fn check_alive(&mut self) -> Result<()> {
        let state = self.ctl.u32(rg::STATE).load(Acquire);
        // A region STOPPED (a graceful stop) says "is gone" as a dead server's does, in the words
        // of the C, Go and Python clients; what the call does next is told by proof (10.3), not
        // by these words.
        let fail = if (state != l::STATE_READY && state != l::STATE_STOPPING)
            || !server_alive(self.server_pid, self.server_start)
            || self.ctl.u64(rg::INSTANCE_ID).load(Relaxed) != self.instance_id
        {
            Some(format!(
                "shm server {:?} (pid {}) is gone",
                self.name, self.server_pid
            ))
        } else {
            None
        };
        match fail {
            Some(msg) => {
                self.alive = false;
                Err(unavailable(msg))
            }
            None => Ok(()),
        }
    }

    /// Whether the server is alive (`check_alive`) and not hung: a disconnect waits for it and
    /// its region mutex only then.
    pub(super) fn alive_and_beating(&mut self) -> bool {
        self.check_alive().is_ok() && hung(&self.ctl, &self.name, self.server_pid).is_none()
    }

    /// Wait until `server_seq == want` (7.2 steps 4-7): spin, publish "sleeping", then block on
    /// the channel semaphore in slices, checking the deadline and the server between them.
    pub(super) fn wait_for(&mut self, want: u64, deadline: u64, spin: Duration) -> Result<()> {
        if self.server_seq() == want || self.spin_for(want, deadline, spin) {
            return Ok(());
        }
        self.block_for(want, deadline)
    }

    /// Spin on the response word for `spin`, cut to the deadline and to one wait slice (the spin
    /// checks neither); true if `want` came.
    fn spin_for(&self, want: u64, deadline: u64, spin: Duration) -> bool {
        let mut spin_ns = nanos(spin).min(WAIT_SLICE_NS);
        if deadline != 0 {
            spin_ns = spin_ns.min(deadline.saturating_sub(shm::monotonic_ns()));
        }
        if spin_ns == 0 {
            return false;
        }
        // Spin flat out briefly, then yield the CPU between polls until the window ends
        // ("polite spin", 7.2): on a small machine the server may need this CPU.
        let start = shm::monotonic_ns();
        let (end, polite) = (start + spin_ns, start.saturating_add(self.yield_after_ns));
        loop {
            for _ in 0..16 {
                if self.server_seq() == want {
                    return true;
                }
                spin_loop();
            }
            let now = shm::monotonic_ns();
            if now > end {
                return false;
            }
            if now > polite {
                std::thread::yield_now();
            }
        }
    }

    /// Publish "sleeping", then block on the channel semaphore in slices until `want` comes, the
    /// deadline passes or the server is found dead.
    fn block_for(&mut self, want: u64, deadline: u64) -> Result<()> {
        let sleeping = self.ctl.u32(self.base + ch::CLIENT_SLEEPING);
        sleeping.store(1, SeqCst);
        fence(SeqCst);
        let result = loop {
            if self.server_seq() == want {
                break Ok(());
            }
            let now = shm::monotonic_ns();
            let slice_end = if deadline != 0 {
                deadline.min(now + WAIT_SLICE_NS)
            } else {
                now + WAIT_SLICE_NS
            };
            self.sem.wait_until(slice_end);
            if self.server_seq() == want {
                break Ok(());
            }
            if deadline != 0 && shm::monotonic_ns() >= deadline {
                break err(
                    Status::DeadlineExceeded,
                    format!("no response from {:?} before the deadline", self.name),
                );
            }
            if let Err(e) = self.check_alive() {
                // a process proven dead changes neither word any more: an answer that came just
                // before the death is a normal one; server_busy still 0, dispatch (which stores 1
                // before it decodes) never began, so no handler ran the request. Not alive is no
                // such proof: a region STOPPED while its process lives (its serving loop may yet
                // dispatch) may hide a live server with the request queued, which a request sent
                // again would make run twice.
                let dead = shm::process_gone(self.server_pid, self.server_start);
                if self.server_seq() == want {
                    break Ok(());
                }
                self.unsent = dead && self.ctl.u32(self.base + ch::SERVER_BUSY).load(Acquire) == 0;
                break Err(e);
            }
        };
        self.ctl
            .u32(self.base + ch::CLIENT_SLEEPING)
            .store(0, SeqCst);
        result
    }

    /// Whether the last request published on this channel is still with the server.
    pub(crate) fn pending(&self) -> bool {
        self.server_seq() != self.seq
    }

    /// Make sure the previous request on this channel was answered (it may still be pending
    /// after a DEADLINE_EXCEEDED): the request area must not be written before then, and the late
    /// answer is never read (spec 7.5). Up to `deadline` (0: none), then DEADLINE_EXCEEDED; a
    /// server that is hung (10.3) meanwhile is waited for as a claim waits for its beat, up to
    /// `hung_wait` (`connect_timeout`) and no later than the deadline, then SERVER_UNAVAILABLE: a
    /// call without a deadline waited for ever on a stopped server, its request not even sent.
    pub(crate) fn wait_idle(
        &mut self,
        deadline: u64,
        spin: Duration,
        hung_wait: Duration,
    ) -> Result<()> {
        if !self.alive {
            return Err(unavailable(format!("shm server {:?} is gone", self.name)));
        }
        let mut hung_end = 0u64;
        // the spin in the first slice only: a spin window of a whole slice spun every slice (a
        // CPU burnt while waiting) and never looked at the server's liveness (each slice ended
        // in it)
        let mut spin = spin;
        while self.server_seq() != self.seq {
            let now = shm::monotonic_ns();
            match hung(&self.ctl, &self.name, self.server_pid) {
                None => hung_end = 0,
                Some(why) => {
                    if hung_end == 0 {
                        hung_end = now.saturating_add(nanos(hung_wait));
                    }
                    let (end, limit) = if deadline != 0 && deadline < hung_end {
                        (deadline, "before the call's deadline".to_string())
                    } else {
                        let ms = hung_wait.as_millis();
                        (hung_end, format!("within connect_timeout ({ms} ms)"))
                    };
                    if now >= end {
                        return Err(unavailable(format!(
                            "{why} (its process is stopped or stalled, and no beat came {limit}): \
                             the previous request on this channel (a call that passed its \
                             deadline) is still with it"
                        )));
                    }
                }
            }
            // a slice at a time: the heartbeat is looked at between them
            let mut until = now.saturating_add(WAIT_SLICE_NS);
            if deadline != 0 && deadline < until {
                until = deadline;
            }
            let waited = self.wait_for(self.seq, until, spin);
            spin = Duration::ZERO;
            match waited {
                Ok(()) if !self.alive => {
                    // the late answer came in as the wait found the server gone (its region
                    // STOPPED, or its process dead just after it answered): an answer to the
                    // request waited for, but the call's own request must not go to that server;
                    // the caller reconnects (7.5). It was written and published there, then sent
                    // on by 10.3's resend a slice later, or, to a STOPPED server whose process
                    // lives, failed "gone".
                    let (name, pid) = (self.name.clone(), self.server_pid);
                    let gone = || unavailable(format!("shm server {name:?} (pid {pid}) is gone"));
                    return Err(self.check_alive().err().unwrap_or_else(gone));
                }
                Err(e) if e.code == Status::DeadlineExceeded => {
                    if deadline != 0 && shm::monotonic_ns() >= deadline {
                        return Err(Error::new(
                            e.code,
                            "the previous request on this channel is still with the server",
                        ));
                    }
                    // the slice ended: block_for looks at its end (its deadline) before the
                    // server, so a server killed meanwhile was found hung a second and
                    // connect_timeout later, not gone within a slice
                    self.check_alive()?;
                }
                other => other?,
            }
        }
        Ok(())
    }
}
