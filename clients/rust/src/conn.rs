//! The connection under a [`crate::Client`]: attach to one server instance, claim a channel,
//! grow its data segment, send one request and decode its response, disconnect.
//! docs/protocol/shm.md sections 7.2 (one request), 10.1 (connect, grow, disconnect).
//!
//! Its mechanisms live in child modules: [`region`] (the region header read at connect, a hung
//! server's beat awaited: 10.1 steps 1-2), [`claim`] (a channel claimed: 10.1 steps 4-7),
//! [`round_trip`] (one request and its response: 7.2), [`wait`] (spin, block, liveness: 7.2 and
//! 10.3), [`segment`] (the data segment: 10.1 step 6) and [`mutex`] (the region mutex).

#[cfg(test)]
mod broken_tests;
mod claim;
#[cfg(test)]
mod late_answer_tests;
#[cfg(test)]
mod max_response_tests;
mod mutex;
#[cfg(test)]
mod open_tests;
#[cfg(test)]
mod proof_tests;
mod region;
#[cfg(test)]
mod restart_tests;
#[cfg(test)]
mod restart_wait_tests;
mod round_trip;
mod segment;
#[cfg(test)]
mod shared_name_tests;
#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
pub(crate) mod tests;
mod wait;

use crate::codec::Limits;
use crate::error::{err, unavailable, Result, Status};
use crate::fork;
use crate::layout::{self as l, channel as ch, region as rg};
use crate::options::ConnectOptions;
use crate::shm::{self, Mapping, Semaphore};
use claim::{claim_channel, next_gen};
use mutex::MutexGuard;
use region::{open_failed, read_region, wait_beating};
use segment::{create_data, publish_data, DataName};
use std::sync::atomic::Ordering::*;
use std::time::Duration;

pub(crate) use region::{region_instance, Refused};
pub(crate) use segment::hold_records;

/// `n` bytes in whole pages (at least one). Past the last whole page a `usize` holds, that page:
/// no segment is that large, and `create_data` refuses it as TOO_LARGE rather than the rounding
/// overflowing (a panic in a debug build, 0 bytes in a release build).
fn pages(n: usize) -> usize {
    n.max(1)
        .checked_next_multiple_of(l::PAGE)
        .unwrap_or(usize::MAX - (l::PAGE - 1))
}

/// `d` in nanoseconds, `u64::MAX` for any longer (`as` would keep the low 64 bits).
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The absolute deadline (monotonic ns) `timeout` from now; 0 for none.
pub(crate) fn deadline_after(timeout: Option<Duration>) -> u64 {
    match timeout {
        Some(t) => shm::monotonic_ns().saturating_add(nanos(t)).max(1),
        None => 0,
    }
}

/// One attachment to one server instance, with one claimed channel.
pub(crate) struct Conn {
    name: String,
    ctl: Mapping,
    mode: u32,
    mutex: Semaphore,
    bell: Semaphore,
    sem: Semaphore,
    index: usize,
    base: usize,
    data: Mapping,
    data_name: DataName,
    gen: u64,
    req_cap: usize,
    resp_cap: usize,
    seq: u64,
    server_pid: u32,
    server_start: u64,
    instance_id: u64,
    limits: Limits,
    /// `ConnectOptions::max_response_bytes`: the largest response the area is grown for.
    max_response: usize,
    alive: bool,
    /// The server died with the last request published but never dispatched (10.3): no
    /// handler ran it, and it may be sent again (set as the connection is found dead).
    unsent: bool,
    yield_after_ns: u64,
    /// The last response's header and payload, copied out of the response area before any of
    /// it is checked (reused: no allocation per call once it has grown).
    snap: Vec<u8>,
    /// The process's fork count when it connected (`forked`).
    forks: u64,
}

impl Conn {
    /// Connect (10.1 steps 1-8): attach to the server `name` and claim a channel.
    /// `deadline`: the calling request's (monotonic ns, 0 for none), which bounds the waits for a
    /// hung server's heartbeat and for the region mutex as `connect_timeout` does. Refused says
    /// whether it failed because the region's server is gone.
    pub(crate) fn open(name: &str, opts: &ConnectOptions, deadline: u64) -> Result<Conn, Refused> {
        // A fork from here on makes this connection the parent's (`forked`).
        let forks = fork::generation();
        // Steps 1-2: map the control segment, check it, check the server lives.
        let (ctl, mode) =
            Mapping::open(&l::control_name(name)).map_err(|e| open_failed(name, &e))?;
        let region = read_region(&ctl, name)?;
        wait_beating(&ctl, name, &region, opts.connect_timeout, deadline)?;
        // Step 3.
        let sem_err =
            |e: std::io::Error| unavailable(format!("shm server {name:?}: semaphore: {e}"));
        let mutex = Semaphore::open(&l::mutex_name(name)).map_err(sem_err)?;
        let bell = Semaphore::open(&l::doorbell_name(name)).map_err(sem_err)?;
        // The server's default_capacity is a suggestion: one over max_response_bytes would make
        // every claim reserve what this client refuses to grow to (the areas grow on demand).
        let suggested = ctl.u64(rg::DEFAULT_CAPACITY).load(Relaxed);
        let capacity = pages(
            opts.capacity
                .unwrap_or_else(|| suggested.min(opts.max_response_bytes as u64) as usize),
        );
        let pid = std::process::id();
        // owner_start_time 0 says "given back" (10.1): written because this process's own stat
        // file could not be read (EMFILE), it had the server reclaim a live client's channel.
        let start = shm::process_start_time(pid).map_err(|e| {
            unavailable(format!(
                "shm server {name:?}: cannot read this process's start time (/proc/{pid}/stat): \
                 {e}; no channel claimed"
            ))
        })?;
        // Steps 4-7, under the region mutex.
        let mut claim = {
            let _guard = MutexGuard::take(&ctl, &mutex, opts.connect_timeout, deadline, name)?;
            claim_channel(&ctl, name, region.count, capacity, mode, pid, start)?
        };
        // Step 8.
        let sem_name = l::channel_sem_name(name, claim.index);
        let sem = match Semaphore::open(&sem_name) {
            Ok(s) => s,
            Err(e) => {
                // Claimed but of no use: give the channel back as a disconnect without the mutex
                // does (10.1; only its owner writes this word), and the server reclaims it within
                // a heartbeat (10.4). Left owned by this live process it was never reclaimed: a
                // process whose connects kept failing (EMFILE) lost one channel per try.
                ctl.u64(claim.base + ch::OWNER_START_TIME).store(0, SeqCst);
                claim.data_name.unlink();
                return Err(unavailable(format!(
                    "shm server {name:?}: cannot open the semaphore of channel {} ({sem_name}): {e}",
                    claim.index
                ))
                .into());
            }
        };
        sem.drain();
        Ok(Conn {
            name: name.to_string(),
            ctl,
            mode,
            mutex,
            bell,
            sem,
            index: claim.index,
            base: claim.base,
            data: claim.data,
            data_name: claim.data_name,
            gen: claim.gen,
            req_cap: capacity,
            resp_cap: capacity,
            seq: claim.seq,
            server_pid: region.server_pid,
            server_start: region.server_start,
            instance_id: region.instance_id,
            limits: region.limits,
            max_response: opts.max_response_bytes,
            alive: true,
            unsent: false,
            yield_after_ns: nanos(opts.yield_after),
            snap: Vec::with_capacity(4096),
            forks,
        })
    }

    /// The index of the claimed channel.
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// The `instance_id` of the server this connection was made to (10.1 step 2).
    pub(crate) fn instance_id(&self) -> u64 {
        self.instance_id
    }

    /// Whether this process is a child forked since the connection was made: its channel and
    /// data segment are the parent's, in use there (one relaxed load).
    pub(crate) fn forked(&self) -> bool {
        fork::forked_since(self.forks)
    }

    /// A forked child's copy of its parent's connection: unmap and close this process's handles
    /// only, neither giving the channel back nor unlinking the data segment (spec 10.5).
    pub(crate) fn forget(self) {
        let Conn { data_name, .. } = self;
        data_name.disown();
    }

    /// False once the server was found dead or stopped: the connection is then of no more use.
    pub(crate) fn alive(&self) -> bool {
        self.alive
    }

    /// Whether the server died before it dispatched the last request (10.3): it may be sent
    /// again to a server restarted under the name.
    pub(crate) fn unsent(&self) -> bool {
        self.unsent
    }

    /// The first `end` bytes of the request area: a request to send again elsewhere.
    pub(crate) fn request_bytes(&self, end: usize) -> Vec<u8> {
        let mut bytes = vec![0; end.min(self.req_cap)];
        self.data.read_into(0, &mut bytes);
        bytes
    }

    /// A server that stopped cleanly says so in its region: count the connection dead now rather
    /// than after a wait slice. True if this found it so (the connection was alive until now).
    pub(crate) fn notice_stop(&mut self) -> bool {
        let stopped = self.alive && self.ctl.u32(rg::STATE).load(Acquire) == l::STATE_STOPPED;
        if stopped {
            self.alive = false;
        }
        stopped
    }

    /// Replace the data segment by one with the given capacities (channel idle), carrying over
    /// the first `keep` bytes of the request area ("Growing" in 10.1).
    fn regrow(&mut self, req_cap: usize, resp_cap: usize, keep: usize) -> Result<()> {
        let gen = next_gen(self.gen);
        let (mut data, data_name) =
            create_data(&self.name, self.index, gen, req_cap, resp_cap, self.mode)?;
        let keep = keep.min(self.req_cap).min(req_cap);
        if keep > 0 {
            self.data.read_into(0, data.slice_mut(0, keep));
        }
        publish_data(&self.ctl, self.base, req_cap, resp_cap, &data_name, gen);
        let mut old_name = std::mem::replace(&mut self.data_name, data_name);
        self.data = data;
        self.gen = gen;
        self.req_cap = req_cap;
        self.resp_cap = resp_cap;
        old_name.unlink();
        Ok(())
    }

    /// TOO_LARGE for a request of more inputs, outputs or input bytes than the server takes
    /// (it would refuse it; refused here, nothing is grown or copied for it).
    pub(crate) fn check_limits(
        &self,
        inputs: usize,
        outputs: usize,
        input_bytes: u64,
    ) -> Result<()> {
        let max = self.limits.max_tensors as usize;
        if inputs > max || outputs > max {
            return err(
                Status::TooLarge,
                format!(
                    "{inputs} inputs / {outputs} outputs requested (the server takes at most {max})"
                ),
            );
        }
        if input_bytes > self.limits.max_bytes {
            return err(
                Status::TooLarge,
                format!(
                    "{input_bytes} bytes of inputs exceed the server's {}",
                    self.limits.max_bytes
                ),
            );
        }
        Ok(())
    }

    /// Room for a request of `end` bytes (and a response as large, up to `max_response_bytes`:
    /// a larger answer is refused, not made room for).
    pub(crate) fn ensure(&mut self, end: usize) -> Result<()> {
        if end > self.req_cap {
            let resp = pages(end).min(pages(self.max_response));
            self.regrow(pages(end), self.resp_cap.max(resp), 0)?;
        }
        Ok(())
    }

    /// The request area of the channel's data segment.
    pub(crate) fn request_area(&mut self) -> &mut [u8] {
        self.data.slice_mut(0, self.req_cap)
    }

    /// Disconnect (10.1): free the channel under the mutex if it is idle; if a request is still
    /// with the server, zero `owner_start_time` instead so the server reclaims the channel
    /// (10.4) once it is done. Then unlink the data segment.
    ///
    /// If the mutex stays busy for `timeout`, or the server was found dead, stopped or hung, the
    /// channel is marked so without the mutex (only its owner writes that word): a server that
    /// was only hung and recovers reclaims it within a heartbeat, rather than keeping it owned
    /// by this live process for good; in the region of a dead server the store is harmless.
    pub(crate) fn release(&mut self, timeout: Duration) {
        let mut freed = false;
        if self.alive && self.alive_and_beating() {
            if self.server_seq() != self.seq {
                let _ = self.wait_for(
                    self.seq,
                    deadline_after(Some(Duration::from_millis(100))),
                    Duration::ZERO,
                );
            }
            if let Ok(_guard) = MutexGuard::take(&self.ctl, &self.mutex, timeout, 0, &self.name) {
                if self.server_seq() == self.seq {
                    self.ctl.u32(self.base + ch::OWNER_PID).store(0, SeqCst);
                } else {
                    self.ctl
                        .u64(self.base + ch::OWNER_START_TIME)
                        .store(0, SeqCst);
                }
                self.ctl.u64(rg::CONNECT_EPOCH).fetch_add(1, SeqCst);
                freed = true;
            }
        }
        if !freed {
            self.ctl
                .u64(self.base + ch::OWNER_START_TIME)
                .store(0, SeqCst);
        }
        self.data_name.unlink();
    }
}
