//! The connection under a [`crate::Client`]: attach to one server instance, claim a channel,
//! grow its data segment, send one request and decode its response, disconnect.
//! docs/protocol/shm.md sections 7.2 (one request), 10.1 (connect, grow, disconnect).
//!
//! Its mechanisms live in child modules: [`wait`] (spin, block, liveness: 7.2 and 10.3),
//! [`segment`] (the data segment: 10.1 step 6) and [`mutex`] (the region mutex).

#[cfg(test)]
mod broken_tests;
#[cfg(test)]
mod max_response_tests;
mod mutex;
#[cfg(test)]
mod proof_tests;
#[cfg(test)]
mod restart_tests;
#[cfg(test)]
mod restart_wait_tests;
mod segment;
#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
pub(crate) mod tests;
mod wait;

use crate::codec::{self, Limits, TensorRef};
use crate::error::{err, unavailable, Error, Result, Status};
use crate::layout::{self as l, channel as ch, region as rg};
use crate::options::ConnectOptions;
use crate::shm::{self, Mapping, Semaphore};
use crate::tensor::Tensor;
use mutex::MutexGuard;
use segment::{create_data, publish_data};
use std::sync::atomic::{fence, Ordering::*};
use std::time::Duration;
use wait::server_alive;

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
    data_name: String,
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
}

/// What the region header says of its server, checked at connect (10.1 steps 1-2).
struct Region {
    count: usize,
    server_pid: u32,
    server_start: u64,
    instance_id: u64,
    limits: Limits,
}

/// A channel claimed under the region mutex, with its first data segment (10.1 steps 4-7).
struct Claim {
    index: usize,
    base: usize,
    data: Mapping,
    data_name: String,
    gen: u64,
    seq: u64,
}

/// 10.1 steps 1-2: the region header is there, speaks our protocol, has the channel geometry of
/// the layout, and names a server that serves and lives.
fn read_region(ctl: &Mapping, name: &str) -> Result<Region> {
    if ctl.len() < l::REGION_HEADER_SIZE || ctl.u32(rg::MAGIC).load(Acquire) != l::REGION_MAGIC {
        return Err(unavailable(format!(
            "shm server {name:?} is not ready (no region header yet)"
        )));
    }
    let major = ctl.u32(rg::VERSION_MAJOR).load(Relaxed) & 0xFFFF;
    if major != l::PROTOCOL_VERSION as u32 {
        return err(
            Status::BadVersion,
            format!(
                "shm server {name:?} speaks protocol {major}, this client {}",
                l::PROTOCOL_VERSION
            ),
        );
    }
    let count = ctl.u32(rg::CHANNEL_COUNT).load(Relaxed) as usize;
    if ctl.u32(rg::CHANNEL_SIZE).load(Relaxed) as usize != l::CHANNEL_SIZE
        || ctl.u64(rg::CHANNELS_OFFSET).load(Relaxed) as usize != l::CHANNELS_OFFSET
        || ctl.len() < l::CHANNELS_OFFSET + count * l::CHANNEL_SIZE
    {
        return err(
            Status::Internal,
            format!("shm server {name:?}: malformed region header"),
        );
    }
    let server_pid = ctl.u32(rg::SERVER_PID).load(Relaxed);
    let server_start = ctl.u64(rg::SERVER_START_TIME).load(Relaxed);
    let instance_id = ctl.u64(rg::INSTANCE_ID).load(Relaxed);
    let state = ctl.u32(rg::STATE).load(Acquire);
    if state == l::STATE_STOPPING {
        // spec 10.1 step 2: a STOPPING server takes no one new (worded as the other clients say it)
        return Err(unavailable(format!("shm server {name:?} is stopping")));
    }
    if state != l::STATE_READY {
        return Err(unavailable(format!(
            "shm server {name:?} is not serving (state {state})"
        )));
    }
    if !server_alive(server_pid, server_start) {
        // Liveness is told by pid (section 10): a READY server whose pid is not seen here while
        // its lock file is held runs in another PID namespace (a container sharing /dev/shm only).
        // Not a zombie of the server's start time: the server, dead, seen from here (a reconnect
        // right after a SIGKILL was told another PID namespace).
        if shm::lock_file_held(&l::lock_file(name)) && !shm::zombie_here(server_pid, server_start) {
            return Err(unavailable(format!(
                "shm server {name:?} holds its lock, but its pid {server_pid} is not a live \
                 process seen from here: it runs in another PID namespace (a container sharing \
                 /dev/shm but not the pids), or it is restarting. A server and its clients must \
                 share the PID namespace as well as /dev/shm (docker run --ipc=container:S \
                 --pid=container:S; Kubernetes: shareProcessNamespace: true)"
            )));
        }
        return Err(unavailable(format!(
            "shm server {name:?} (pid {server_pid}) is gone"
        )));
    }
    let limits = Limits {
        max_tensors: ctl.u32(rg::MAX_TENSORS).load(Relaxed).max(1),
        max_bytes: ctl.u64(rg::MAX_REQUEST_BYTES).load(Relaxed),
        max_ndim: l::MAX_NDIM as u32,
    };
    Ok(Region {
        count,
        server_pid,
        server_start,
        instance_id,
        limits,
    })
}

/// The `instance_id` of the region under `name` now; `None` if there is none (or no header of
/// this protocol yet). A region once replaced never comes back, so the id of one found gone, seen
/// there still, says no server has started under the name since.
pub(crate) fn region_instance(name: &str) -> Option<u64> {
    let (ctl, _) = Mapping::open(&l::control_name(name)).ok()?;
    (ctl.len() >= l::REGION_HEADER_SIZE && ctl.u32(rg::MAGIC).load(Acquire) == l::REGION_MAGIC)
        .then(|| ctl.u64(rg::INSTANCE_ID).load(Relaxed))
}

/// A hung server (10.3) takes no new client: wait up to `timeout` (and no later than
/// `deadline`, a call's own, 0 for none) for its heartbeat to move (a server that has just
/// resumed beats within an interval), then SERVER_UNAVAILABLE; a server that dies meanwhile is
/// reported gone at once. A call that finds its server hung reconnects on its next try, and each
/// such connect claimed a channel that it then gave back for the server to reclaim, which it can
/// do only once it runs again: a service retrying through a stall took every channel.
fn wait_beating(
    ctl: &Mapping,
    name: &str,
    region: &Region,
    timeout: Duration,
    deadline: u64,
) -> Result<()> {
    let mut end = shm::monotonic_ns().saturating_add(nanos(timeout));
    let mut limit = format!("within connect_timeout ({} ms)", timeout.as_millis());
    if deadline != 0 && deadline < end {
        (end, limit) = (deadline, "before the call's deadline".to_string());
    }
    loop {
        let Some(why) = wait::hung(ctl, name, region.server_pid) else {
            return Ok(());
        };
        if !server_alive(region.server_pid, region.server_start) {
            return Err(unavailable(format!(
                "shm server {name:?} (pid {}) is gone",
                region.server_pid
            )));
        }
        if shm::monotonic_ns() >= end {
            return Err(unavailable(format!(
                "{why} (its process is stopped or stalled, and no beat came {limit}): it takes \
                 no new client until it beats again"
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// 10.1 steps 4-7, the region mutex held: take the first free channel, give it a data segment of
/// `capacity` for requests and for responses, and publish this process as its owner.
fn claim_channel(
    ctl: &Mapping,
    name: &str,
    count: usize,
    capacity: usize,
    mode: u32,
    pid: u32,
    start: u64,
) -> Result<Claim> {
    let index = (0..count)
        .find(|i| {
            ctl.u32(l::CHANNELS_OFFSET + i * l::CHANNEL_SIZE + ch::OWNER_PID)
                .load(SeqCst)
                == 0
        })
        .ok_or_else(|| {
            Error::new(
                Status::Overloaded,
                format!("shm server {name:?}: all {count} channels are in use"),
            )
        })?;
    let base = l::CHANNELS_OFFSET + index * l::CHANNEL_SIZE;
    let gen = next_gen(ctl.u64(base + ch::DATA_GEN).load(Relaxed));
    let (data, data_name) = create_data(name, index, gen, capacity, capacity, mode)?;
    ctl.u32(base + ch::CLIENT_SLEEPING).store(0, Relaxed);
    ctl.u64(base + ch::OWNER_START_TIME).store(start, Relaxed);
    publish_data(ctl, base, capacity, capacity, &data_name, gen);
    let seq = ctl.u64(base + ch::SERVER_SEQ).load(Acquire);
    ctl.u64(base + ch::CLIENT_SEQ).store(seq, Release);
    ctl.u32(base + ch::OWNER_PID).store(pid, SeqCst);
    ctl.u64(rg::CONNECT_EPOCH).fetch_add(1, SeqCst);
    Ok(Claim {
        index,
        base,
        data,
        data_name,
        gen,
        seq,
    })
}

/// The data generation after `gen`, wrapping as the C and Go clients' do (spec 10.1): a
/// `data_gen` a previous owner left at the largest u64 was refused (INTERNAL), and the channel,
/// the lowest free one, which every connect takes, refused every connect after it.
fn next_gen(gen: u64) -> u64 {
    gen.wrapping_add(1)
}

/// The error a response with a nonzero `status` fails its call with (section 9): that status with
/// the server's `text` (its name if there is none); INTERNAL naming the code for one this version
/// does not define.
fn server_error(status: u32, text: String) -> Error {
    match Status::from_code(status) {
        Status::Internal if status != Status::Internal.code() => Error::new(
            Status::Internal,
            format!("unknown error code {status}: {text}"),
        ),
        known if text.is_empty() => Error::new(known, known.name()),
        known => Error::new(known, text),
    }
}

/// A CUDA_IPC output is refused: this client never asks for one.
fn refuse_cuda(outputs: &[TensorRef], rid: u64) -> Result<()> {
    if let Some(r) = outputs.iter().find(|r| r.cuda.is_some()) {
        return Err(Error::new(
            Status::Internal,
            format!(
                "output {:?} came as a CUDA_IPC descriptor, which this client did not ask for",
                r.name
            ),
        )
        .with_id(rid));
    }
    Ok(())
}

/// Copy the header and payload of the response at `off` in `data` (an area of `len` bytes) into
/// `snap`: the header and body first, then the rest of the payload if the `payload_size` of
/// that copy fits the area (if not, the copy stops there and the decoder refuses it). Nothing
/// is read from the area twice, so a peer writing it meanwhile cannot pass one check with one
/// value and have another read use another.
pub(crate) fn snapshot_response(data: &Mapping, off: usize, len: usize, snap: &mut Vec<u8>) {
    let head = l::MSG_HEADER_SIZE + l::BODY_SIZE;
    snap.clear();
    if len < head {
        return;
    }
    data.append_to(off, head, snap);
    let payload = u32::from_le_bytes(
        snap[l::msg::PAYLOAD_SIZE..l::msg::PAYLOAD_SIZE + 4]
            .try_into()
            .unwrap_or([0; 4]),
    ) as usize;
    let end = l::MSG_HEADER_SIZE + payload;
    if end > head && end <= len {
        data.append_to(off + head, end - head, snap);
    }
}

/// The data of each checked HOST output, copied out of the response area at `off` of `len`
/// bytes (each range checked once more against the area; bytes the peer changes meanwhile only
/// change the values copied).
pub(crate) fn copy_data(
    data: &Mapping,
    off: usize,
    len: usize,
    outputs: &[TensorRef],
    rid: u64,
) -> Result<Vec<Vec<u8>>> {
    outputs
        .iter()
        .map(|r| {
            if r.cuda.is_some() {
                return Ok(Vec::new());
            }
            if r.data_offset
                .checked_add(r.data_size)
                .map_or(true, |e| e > len)
            {
                return err(
                    Status::Internal,
                    format!("output {:?} lies outside the response area", r.name),
                )
                .map_err(|e: Error| e.with_id(rid));
            }
            let mut v = Vec::new();
            data.append_to(off + r.data_offset, r.data_size, &mut v);
            Ok(v)
        })
        .collect()
}

/// The decoded outputs with their copied data.
fn into_tensors(outputs: &[TensorRef], data: Vec<Vec<u8>>) -> Vec<Tensor> {
    outputs
        .iter()
        .zip(data)
        .map(|(r, data)| Tensor {
            name: r.name.clone(),
            datatype: r.datatype,
            shape: r.shape.clone(),
            data,
        })
        .collect()
}

impl Conn {
    /// Connect (10.1 steps 1-8): attach to the server `name` and claim a channel.
    /// `deadline`: the calling request's (monotonic ns, 0 for none), which bounds the waits for a
    /// hung server's heartbeat and for the region mutex as `connect_timeout` does.
    pub(crate) fn open(name: &str, opts: &ConnectOptions, deadline: u64) -> Result<Conn> {
        // Steps 1-2: map the control segment, check it, check the server lives.
        let (ctl, mode) = Mapping::open(&l::control_name(name))
            .map_err(|e| unavailable(format!("no shm server named {name:?} ({e})")))?;
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
        let claim = {
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
                let _ = shm::unlink(&claim.data_name);
                return Err(unavailable(format!(
                    "shm server {name:?}: cannot open the semaphore of channel {} ({sem_name}): {e}",
                    claim.index
                )));
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
    /// than after a wait slice.
    pub(crate) fn notice_stop(&mut self) {
        if self.ctl.u32(rg::STATE).load(Acquire) == l::STATE_STOPPED {
            self.alive = false;
        }
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
        let old_name = std::mem::replace(&mut self.data_name, data_name);
        self.data = data;
        self.gen = gen;
        self.req_cap = req_cap;
        self.resp_cap = resp_cap;
        let _ = shm::unlink(&old_name);
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

    /// Publish the request in the area and wait for its response (7.2 steps 2-7).
    fn exchange(&mut self, deadline: u64, spin: Duration) -> Result<()> {
        let s = self.seq + 1;
        self.seq = s;
        self.ctl.u64(self.base + ch::CLIENT_SEQ).store(s, Release);
        fence(SeqCst);
        if self.ctl.u32(rg::SERVER_SLEEPING).load(SeqCst) == 1 {
            self.bell.post();
        }
        self.wait_for(s, deadline, spin)
    }

    /// Send the request already encoded in the area, and decode its response into tensors.
    /// TOO_LARGE with `required_bytes`: grow the response area and send once more, up to
    /// `max_response_bytes` (more: TOO_LARGE, the area as it was).
    pub(crate) fn round_trip(
        &mut self,
        rid: u64,
        end: usize,
        deadline: u64,
        spin: Duration,
    ) -> Result<(codec::DecodedResponse, Vec<Tensor>)> {
        let mut retried = false;
        loop {
            self.exchange(deadline, spin).map_err(|e| e.with_id(rid))?;
            // Decode from a copy of the header and payload only (never from the area itself,
            // which the server process could rewrite meanwhile); the outputs' data is copied
            // from the area at the offsets checked in that copy.
            let (off, len) = (self.req_cap, self.resp_cap);
            snapshot_response(&self.data, off, len, &mut self.snap);
            let mut copied: Option<Vec<Vec<u8>>> = None;
            let mut copy_err: Option<Error> = None;
            let data = &self.data;
            let dec =
                codec::decode_response_msg(&self.snap, len, &self.limits, &mut |refs, crc| {
                    // FLAG_DATA_CRC: check the bytes this call returns, not a second read of them
                    match copy_data(data, off, len, refs, rid) {
                        Ok(v) => {
                            let crc = v.iter().fold(crc, |c, d| crate::crc32::update(c, d));
                            copied = Some(v);
                            crc
                        }
                        Err(e) => {
                            copy_err = Some(e);
                            crc
                        }
                    }
                });
            if let Some(e) = copy_err {
                return Err(e);
            }
            let dec = dec.map_err(|e| e.with_id(rid))?;
            if dec.request_id != rid {
                return Err(Error::new(
                    Status::BadChecksum,
                    format!("response carries request id {}, not {rid}", dec.request_id),
                )
                .with_id(rid));
            }
            if dec.status != 0 {
                let status = Status::from_code(dec.status);
                if status == Status::TooLarge && dec.required_bytes > self.resp_cap as u64 {
                    // a hostile or broken server could ask for all of /dev/shm: left as it is
                    if dec.required_bytes > self.max_response as u64 {
                        return Err(Error::new(
                            Status::TooLarge,
                            format!(
                                "the response needs {} bytes, more than this client's \
                                 max_response_bytes ({}): connect with a larger \
                                 max_response_bytes to take it",
                                dec.required_bytes, self.max_response
                            ),
                        )
                        .with_id(rid));
                    }
                    if !retried {
                        retried = true;
                        self.regrow(self.req_cap, pages(dec.required_bytes as usize), end)?;
                        continue;
                    }
                }
                return Err(server_error(dec.status, dec.text).with_id(rid));
            }
            refuse_cuda(&dec.outputs, rid)?;
            let data = match copied {
                Some(v) => v,
                None => copy_data(&self.data, off, len, &dec.outputs, rid)?,
            };
            let outputs = into_tensors(&dec.outputs, data);
            return Ok((dec, outputs));
        }
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
        let _ = shm::unlink(&self.data_name);
    }
}
