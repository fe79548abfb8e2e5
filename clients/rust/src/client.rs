//! The safe client: connect to a server by name, claim a channel, send requests, wait
//! (spin, then block in slices with liveness checks), decode and check responses.
//! docs/protocol/shm.md sections 7.2 (one request), 10.1 (connect, grow, disconnect), 10.3 (liveness).

use crate::codec::{self, Limits, Param, RequestFields, TensorRef};
use crate::error::{err, Error, Result, Status};
use crate::ffi;
use crate::layout::{self as l, channel as ch, region as rg};
use crate::shm::{self, Mapping, Semaphore, Wait};
use crate::tensor::{DataType, Element, Tensor};
use std::hint::spin_loop;
use std::sync::atomic::{fence, Ordering::*};
use std::time::Duration;

/// A blocked wait wakes at least this often to check the deadline and the server's liveness.
const WAIT_SLICE_NS: u64 = 50_000_000;

/// How [`Client::connect`] attaches, and how calls wait.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Bytes of the request area and of the response area (rounded up to 4096); `None`: the
    /// server's `default_capacity` (1 MiB). Either grows on demand.
    pub capacity: Option<usize>,
    /// Spin on the response word this long before blocking (the spec's default: 100 µs).
    pub spin: Duration,
    /// Within the spin window, poll flat out this long, then yield the CPU between polls (2 µs,
    /// as the C client: with a server and two clients on two vCPUs, a client spinning flat out
    /// keeps the server it waits for off the CPU; a yield with nothing else to run is one
    /// system call).
    pub yield_after: Duration,
    /// How long to wait for the region mutex at connect before failing OVERLOADED (2 s).
    pub connect_timeout: Duration,
    /// Set `FDN_FLAG_DATA_CRC`: the CRC also covers the tensor data (for debugging).
    pub data_crc: bool,
}

impl Default for ConnectOptions {
    fn default() -> ConnectOptions {
        ConnectOptions {
            capacity: None,
            spin: Duration::from_micros(100),
            yield_after: Duration::from_micros(2),
            connect_timeout: Duration::from_secs(2),
            data_crc: false,
        }
    }
}

/// Per-call options of [`Client::infer_with`].
#[derive(Clone, Debug, Default)]
pub struct InferOptions {
    /// Give up (DEADLINE_EXCEEDED) after this long; `None`: wait as long as the server lives.
    /// The absolute deadline also travels in the request, so the server drops late work.
    pub timeout: Option<Duration>,
    /// Model version; empty: the server's choice.
    pub version: String,
    /// Outputs to return; empty: all.
    pub outputs: Vec<String>,
    /// Request parameters (strings, numbers, booleans).
    pub params: Vec<(String, Param)>,
}

/// The name, datatype and shape of a tensor to be written in place by a [`Loan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// The input's name.
    pub name: String,
    /// Its element type.
    pub datatype: DataType,
    /// Its dimensions.
    pub shape: Vec<u64>,
}

impl TensorSpec {
    /// The spec of input `name`.
    pub fn new(name: impl Into<String>, datatype: DataType, shape: &[u64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            datatype,
            shape: shape.to_vec(),
        }
    }
}

fn unavailable(msg: impl Into<String>) -> Error {
    Error::new(Status::ServerUnavailable, msg)
}

fn pages(n: usize) -> usize {
    l::align(n.max(1), l::PAGE)
}

fn deadline_after(timeout: Option<Duration>) -> u64 {
    match timeout {
        Some(t) => shm::monotonic_ns()
            .saturating_add(t.as_nanos().min(u64::MAX as u128) as u64)
            .max(1),
        None => 0,
    }
}

/// Holds the region mutex; releases it (clearing `mutex_holder_pid`) when dropped.
struct MutexGuard<'a> {
    ctl: &'a Mapping,
    mutex: &'a Semaphore,
}

impl<'a> MutexGuard<'a> {
    fn take(
        ctl: &'a Mapping,
        mutex: &'a Semaphore,
        timeout: Duration,
        name: &str,
    ) -> Result<MutexGuard<'a>> {
        let until = deadline_after(Some(timeout));
        loop {
            match mutex.wait_until(until) {
                Wait::Posted => break,
                Wait::Interrupted if shm::monotonic_ns() < until => continue,
                _ => {
                    return err(
                        Status::Overloaded,
                        format!(
                            "shm server {name:?}: region mutex busy for {} ms",
                            timeout.as_millis()
                        ),
                    )
                }
            }
        }
        ctl.u32(rg::MUTEX_HOLDER_PID)
            .store(std::process::id(), SeqCst);
        Ok(MutexGuard { ctl, mutex })
    }
}

impl Drop for MutexGuard<'_> {
    fn drop(&mut self) {
        self.ctl.u32(rg::MUTEX_HOLDER_PID).store(0, SeqCst);
        self.mutex.post();
    }
}

/// One attachment to one server instance, with one claimed channel.
struct Conn {
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
    alive: bool,
    yield_after_ns: u64,
}

impl Conn {
    fn open(name: &str, opts: &ConnectOptions) -> Result<Conn> {
        // 10.1 step 1-2: map the control segment, check it, check the server lives.
        let (ctl, mode) = Mapping::open(&l::control_name(name))
            .map_err(|e| unavailable(format!("no shm server named {name:?} ({e})")))?;
        if ctl.len() < l::REGION_HEADER_SIZE || ctl.u32(rg::MAGIC).load(Acquire) != l::REGION_MAGIC
        {
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
        if state != l::STATE_READY {
            return Err(unavailable(format!(
                "shm server {name:?} is not serving (state {state})"
            )));
        }
        if !server_alive(name, server_pid, server_start) {
            return Err(unavailable(format!(
                "shm server {name:?} (pid {server_pid}) is gone"
            )));
        }
        let limits = Limits {
            max_tensors: ctl.u32(rg::MAX_TENSORS).load(Relaxed).max(1),
            max_bytes: ctl.u64(rg::MAX_REQUEST_BYTES).load(Relaxed),
            max_ndim: l::MAX_NDIM as u32,
        };
        // Step 3.
        let sem_err =
            |e: std::io::Error| unavailable(format!("shm server {name:?}: semaphore: {e}"));
        let mutex = Semaphore::open(&l::mutex_name(name)).map_err(sem_err)?;
        let bell = Semaphore::open(&l::doorbell_name(name)).map_err(sem_err)?;
        let capacity = pages(
            opts.capacity
                .unwrap_or(ctl.u64(rg::DEFAULT_CAPACITY).load(Relaxed) as usize),
        );
        let pid = std::process::id();
        let start = shm::process_start_time(pid).unwrap_or(0);
        // Steps 4-7, under the region mutex.
        let (index, base, data, data_name, gen, seq) = {
            let _guard = MutexGuard::take(&ctl, &mutex, opts.connect_timeout, name)?;
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
            let gen = ctl.u64(base + ch::DATA_GEN).load(Relaxed) + 1;
            let (data, data_name) = create_data(name, index, gen, capacity, capacity, mode)?;
            ctl.u32(base + ch::CLIENT_SLEEPING).store(0, Relaxed);
            ctl.u64(base + ch::OWNER_START_TIME).store(start, Relaxed);
            publish_data(&ctl, base, capacity, capacity, &data_name, gen);
            let seq = ctl.u64(base + ch::SERVER_SEQ).load(Acquire);
            ctl.u64(base + ch::CLIENT_SEQ).store(seq, Release);
            ctl.u32(base + ch::OWNER_PID).store(pid, SeqCst);
            ctl.u64(rg::CONNECT_EPOCH).fetch_add(1, SeqCst);
            (index, base, data, data_name, gen, seq)
        };
        // Step 8.
        let sem = match Semaphore::open(&l::channel_sem_name(name, index)) {
            Ok(s) => s,
            Err(e) => {
                let _ = shm::unlink(&data_name);
                return Err(sem_err(e));
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
            index,
            base,
            data,
            data_name,
            gen,
            req_cap: capacity,
            resp_cap: capacity,
            seq,
            server_pid,
            server_start,
            instance_id,
            limits,
            alive: true,
            yield_after_ns: opts.yield_after.as_nanos() as u64,
        })
    }

    fn server_seq(&self) -> u64 {
        self.ctl.u64(self.base + ch::SERVER_SEQ).load(Acquire)
    }

    /// Section 10.3: the region is READY or STOPPING, the server process is the one that
    /// started it, and its heartbeat is no older than 10 intervals (at least 1 s).
    fn check_alive(&mut self) -> Result<()> {
        let state = self.ctl.u32(rg::STATE).load(Acquire);
        let fail = if state != l::STATE_READY && state != l::STATE_STOPPING {
            Some(format!("shm server {:?} stopped", self.name))
        } else if !server_alive(&self.name, self.server_pid, self.server_start)
            || self.ctl.u64(rg::INSTANCE_ID).load(Relaxed) != self.instance_id
        {
            Some(format!(
                "shm server {:?} (pid {}) is gone",
                self.name, self.server_pid
            ))
        } else {
            let beat = self.ctl.u64(rg::HEARTBEAT_NS).load(Relaxed);
            let interval =
                u64::from(self.ctl.u32(rg::HEARTBEAT_INTERVAL_MS).load(Relaxed)).max(1) * 1_000_000;
            let stale = (10 * interval).max(1_000_000_000);
            let now = shm::monotonic_ns();
            (beat != 0 && now > beat + stale).then(|| {
                format!(
                    "shm server {:?} is hung: no heartbeat for {} ms",
                    self.name,
                    (now - beat) / 1_000_000
                )
            })
        };
        match fail {
            Some(msg) => {
                self.alive = false;
                Err(unavailable(msg))
            }
            None => Ok(()),
        }
    }

    /// Wait until `server_seq == want` (7.2 steps 4-7): spin, publish "sleeping", then block on
    /// the channel semaphore in slices, checking the deadline and the server between them.
    fn wait_for(&mut self, want: u64, deadline: u64, spin: Duration) -> Result<()> {
        if self.server_seq() == want {
            return Ok(());
        }
        // Never past the deadline, and at most one wait slice: the spin checks neither.
        let mut spin_ns = (spin.as_nanos() as u64).min(WAIT_SLICE_NS);
        if deadline != 0 {
            spin_ns = spin_ns.min(deadline.saturating_sub(shm::monotonic_ns()));
        }
        if spin_ns > 0 {
            // Spin flat out briefly, then yield the CPU between polls until the window ends
            // ("polite spin", 7.2): on a small machine the server may need this CPU.
            let start = shm::monotonic_ns();
            let (end, polite) = (start + spin_ns, start + self.yield_after_ns);
            loop {
                for _ in 0..16 {
                    if self.server_seq() == want {
                        return Ok(());
                    }
                    spin_loop();
                }
                let now = shm::monotonic_ns();
                if now > end {
                    break;
                }
                if now > polite {
                    std::thread::yield_now();
                }
            }
        }
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
                break Err(e);
            }
        };
        self.ctl
            .u32(self.base + ch::CLIENT_SLEEPING)
            .store(0, SeqCst);
        result
    }

    /// Make sure the previous request on this channel was answered (it may still be pending
    /// after a DEADLINE_EXCEEDED): the request area must not be written before then.
    fn wait_idle(&mut self, deadline: u64, spin: Duration) -> Result<()> {
        if !self.alive {
            return Err(unavailable(format!("shm server {:?} is gone", self.name)));
        }
        if self.server_seq() != self.seq {
            self.wait_for(self.seq, deadline, spin).map_err(|e| {
                if e.code == Status::DeadlineExceeded {
                    Error::new(
                        e.code,
                        "the previous request on this channel is still with the server",
                    )
                } else {
                    e
                }
            })?;
        }
        Ok(())
    }

    /// Replace the data segment by one with the given capacities (channel idle), carrying over
    /// the first `keep` bytes of the request area ("Growing" in 10.1).
    fn regrow(&mut self, req_cap: usize, resp_cap: usize, keep: usize) -> Result<()> {
        let gen = self.gen + 1;
        let (mut data, data_name) =
            create_data(&self.name, self.index, gen, req_cap, resp_cap, self.mode)?;
        let keep = keep.min(self.req_cap).min(req_cap);
        if keep > 0 {
            data.slice_mut(0, keep)
                .copy_from_slice(self.data.slice(0, keep));
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

    /// Room for a request of `end` bytes (and a response as large).
    fn ensure(&mut self, end: usize, input_bytes: u64) -> Result<()> {
        if input_bytes > self.limits.max_bytes {
            return err(
                Status::TooLarge,
                format!(
                    "{input_bytes} bytes of inputs exceed the server's {}",
                    self.limits.max_bytes
                ),
            );
        }
        if end > self.req_cap {
            self.regrow(pages(end), self.resp_cap.max(pages(end)), 0)?;
        }
        Ok(())
    }

    fn request_area(&mut self) -> &mut [u8] {
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
    /// TOO_LARGE with `required_bytes`: grow the response area and send once more.
    fn round_trip(
        &mut self,
        rid: u64,
        end: usize,
        deadline: u64,
        spin: Duration,
    ) -> Result<(codec::DecodedResponse, Vec<Tensor>)> {
        let mut retried = false;
        loop {
            self.exchange(deadline, spin).map_err(|e| e.with_id(rid))?;
            let area = self.data.slice(self.req_cap, self.resp_cap);
            let dec = codec::decode_response(area, &self.limits).map_err(|e| e.with_id(rid))?;
            if dec.request_id != rid {
                return Err(Error::new(
                    Status::BadChecksum,
                    format!("response carries request id {}, not {rid}", dec.request_id),
                )
                .with_id(rid));
            }
            if dec.status != 0 {
                let status = Status::from_code(dec.status);
                if status == Status::TooLarge
                    && dec.required_bytes as usize > self.resp_cap
                    && !retried
                {
                    retried = true;
                    self.regrow(self.req_cap, pages(dec.required_bytes as usize), end)?;
                    continue;
                }
                let msg = if dec.text.is_empty() {
                    status.name().to_string()
                } else {
                    dec.text
                };
                return Err(Error::new(status, msg).with_id(rid));
            }
            if let Some(r) = dec.outputs.iter().find(|r| r.cuda.is_some()) {
                return Err(Error::new(
                    Status::Internal,
                    format!("output {:?} came as a CUDA_IPC descriptor, which this client did not ask for", r.name),
                )
                .with_id(rid));
            }
            let outputs = dec
                .outputs
                .iter()
                .map(|r| Tensor {
                    name: r.name.clone(),
                    datatype: r.datatype,
                    shape: r.shape.clone(),
                    data: r.bytes(area).to_vec(),
                })
                .collect();
            return Ok((dec, outputs));
        }
    }

    /// Disconnect (10.1): free the channel under the mutex if it is idle; if a request is still
    /// with the server, zero `owner_start_time` instead so the server reclaims the channel
    /// (10.4) once it is done. Then unlink the data segment.
    fn release(&mut self, timeout: Duration) {
        if self.alive && self.check_alive().is_ok() {
            if self.server_seq() != self.seq {
                let _ = self.wait_for(
                    self.seq,
                    deadline_after(Some(Duration::from_millis(100))),
                    Duration::ZERO,
                );
            }
            if let Ok(_guard) = MutexGuard::take(&self.ctl, &self.mutex, timeout, &self.name) {
                if self.server_seq() == self.seq {
                    self.ctl.u32(self.base + ch::OWNER_PID).store(0, SeqCst);
                } else {
                    self.ctl
                        .u64(self.base + ch::OWNER_START_TIME)
                        .store(0, SeqCst);
                }
                self.ctl.u64(rg::CONNECT_EPOCH).fetch_add(1, SeqCst);
            }
        }
        let _ = shm::unlink(&self.data_name);
    }
}

fn server_alive(name: &str, pid: u32, start: u64) -> bool {
    if pid == 0 {
        return false;
    }
    match shm::process_start_time(pid) {
        Some(t) => t == start,
        // No such process, or no /proc to ask: the lock file's flock is the other witness.
        None if shm::process_start_time(std::process::id()).is_none() => {
            shm::lock_file_held(&l::lock_file(name))
        }
        None => false,
    }
}

/// Create, allocate and map the data segment of channel `index`, generation `gen` (section 10.1,
/// step 6): OVERLOADED when /dev/shm or memory has no room now (it may later), TOO_LARGE for
/// capacities that can never fit (more than /dev/shm, or than a file may be); either way nothing
/// is left in /dev/shm. A segment of this name is ours (it carries our pid), left over from a
/// claim or grow that failed: it is replaced.
fn create_data(
    name: &str,
    index: usize,
    gen: u64,
    req_cap: usize,
    resp_cap: usize,
    mode: u32,
) -> Result<(Mapping, String)> {
    let pid = std::process::id();
    let data_name = l::data_name(name, index, pid, gen).ok_or_else(|| {
        Error::new(
            Status::Internal,
            format!(
                "shm data segment name /fdn-{name}-d{index}-{pid}-{gen} does not fit data_name (at most {} bytes)",
                l::DATA_NAME_SIZE - 1
            ),
        )
    })?;
    let what = format!("shm server {name:?} channel {index}: data segment {data_name}");
    let size = match req_cap.checked_add(resp_cap) {
        Some(size) if size <= i64::MAX as usize => size,
        _ => {
            return err(
                Status::TooLarge,
                format!("{what} of capacities {req_cap}+{resp_cap} bytes: too large"),
            )
        }
    };
    if let Some(total) = shm::fs_total_bytes("/dev/shm") {
        if size as u64 > total {
            return err(
                Status::TooLarge,
                format!(
                    "{what} of {size} bytes is more than /dev/shm can ever hold ({total} bytes)"
                ),
            );
        }
    }
    let made = Mapping::create(&data_name, size, mode).or_else(|e| {
        if e.error.raw_os_error() == Some(ffi::EEXIST) {
            // Ours, left over from a failed claim or grow (or a dead process that had our pid).
            let _ = shm::unlink(&data_name);
            Mapping::create(&data_name, size, mode)
        } else {
            Err(e)
        }
    });
    let data = made.map_err(|e| {
        let (status, later) = match e.error.raw_os_error() {
            Some(ffi::ENOSPC | ffi::ENOMEM) => {
                (Status::Overloaded, ": no room now, it may fit later")
            }
            Some(ffi::EFBIG | ffi::EOVERFLOW | ffi::EINVAL) => (Status::TooLarge, ""),
            _ => (Status::Internal, ""),
        };
        Error::new(
            status,
            format!(
                "{what}: cannot allocate {size} bytes in /dev/shm ({}: {}){later}",
                e.step, e.error
            ),
        )
    })?;
    Ok((data, data_name))
}

/// Store the data segment's capacities and name, then `data_gen` (the server remaps on a change).
fn publish_data(
    ctl: &Mapping,
    base: usize,
    req_cap: usize,
    resp_cap: usize,
    data_name: &str,
    gen: u64,
) {
    ctl.u64(base + ch::REQUEST_CAPACITY)
        .store(req_cap as u64, Relaxed);
    ctl.u64(base + ch::RESPONSE_CAPACITY)
        .store(resp_cap as u64, Relaxed);
    let mut raw = [0u8; l::DATA_NAME_SIZE];
    raw[..data_name.len()].copy_from_slice(data_name.as_bytes());
    ctl.write_bytes(base + ch::DATA_NAME, &raw);
    ctl.u64(base + ch::DATA_GEN).store(gen, Release);
}

/// A connection to a Foundation shm server: one claimed channel, one request at a time.
///
/// Calls take `&mut self`; for requests in flight at once, connect several clients (each claims
/// its own channel). Dropping the client frees its channel and unlinks its data segment. If the
/// server dies, calls fail with [`Status::ServerUnavailable`] and the next call reconnects.
///
/// ```no_run
/// use fdn::{Client, ConnectOptions, Tensor};
/// use std::time::Duration;
///
/// let mut client = Client::connect("demo_server", ConnectOptions::default())?;
/// let x = Tensor::from_slice("x", &[1, 784], &vec![0.5f32; 784])?;
/// let outputs = client.infer("demo", &[x], Some(Duration::from_secs(1)))?;
/// let y: Vec<f32> = outputs[0].to_vec()?;
/// assert_eq!(y.len(), 10);
/// # Ok::<(), fdn::Error>(())
/// ```
pub struct Client {
    name: String,
    opts: ConnectOptions,
    conn: Option<Conn>,
    conn_gen: u64,
    next_id: u64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("name", &self.name)
            .field("channel", &self.conn.as_ref().map(|c| c.index))
            .finish()
    }
}

impl Client {
    /// Connect to the server `name` (1-32 characters of `[A-Za-z0-9_]`; an `shm://` prefix is
    /// accepted) and claim a channel. Fails with SERVER_UNAVAILABLE if no live server serves
    /// `name`, OVERLOADED if it has no free channel.
    pub fn connect(name: &str, opts: ConnectOptions) -> Result<Client> {
        let name = name.strip_prefix("shm://").unwrap_or(name);
        if !l::valid_server_name(name) {
            return err(
                Status::InvalidInput,
                format!(
                    "shm server name {name:?} must be 1-{} characters of [A-Za-z0-9_]",
                    l::SERVER_NAME_MAX
                ),
            );
        }
        let conn = Conn::open(name, &opts)?;
        Ok(Client {
            name: name.to_string(),
            opts,
            conn: Some(conn),
            conn_gen: 1,
            next_id: 1,
        })
    }

    /// The server name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The index of the claimed channel (`None` after the server died, until the next call).
    pub fn channel(&self) -> Option<usize> {
        self.conn.as_ref().map(|c| c.index)
    }

    /// The live connection, reconnecting if the previous server is gone.
    fn conn(&mut self) -> Result<&mut Conn> {
        if let Some(c) = self.conn.as_mut() {
            // A server that stopped cleanly says so in its region: reconnect now rather than
            // after a wait slice.
            if c.ctl.u32(rg::STATE).load(Acquire) == l::STATE_STOPPED {
                c.alive = false;
            }
        }
        if self.conn.as_ref().is_some_and(|c| !c.alive) {
            if let Some(mut old) = self.conn.take() {
                old.release(Duration::ZERO);
            }
        }
        if self.conn.is_none() {
            self.conn = Some(Conn::open(&self.name, &self.opts)?);
            self.conn_gen += 1;
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// Run `model` on `inputs`; returns its outputs (copied out of shared memory).
    /// `timeout`: fail with DEADLINE_EXCEEDED after this long (`None`: no deadline; a dead
    /// server is still reported within one 50 ms wait slice).
    pub fn infer(
        &mut self,
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

    /// [`Client::infer`] with a model version, a selection of outputs, parameters.
    pub fn infer_with(
        &mut self,
        model: &str,
        inputs: &[Tensor],
        options: &InferOptions,
    ) -> Result<Vec<Tensor>> {
        let deadline = deadline_after(options.timeout);
        let rid = self.next_id();
        let params = codec::encode_params(&options.params)?;
        let flags = if self.opts.data_crc {
            l::FLAG_DATA_CRC
        } else {
            0
        };
        let spin = self.opts.spin;
        let specs: Vec<(&str, DataType, &[u64])> = inputs
            .iter()
            .map(|t| (t.name.as_str(), t.datatype, t.shape.as_slice()))
            .collect();
        for t in inputs {
            if crate::tensor::byte_size(t.datatype, &t.shape) != Some(t.data.len()) {
                return Err(Error::new(
                    Status::InvalidInput,
                    format!(
                        "tensor {:?}: {} bytes do not match shape {:?}",
                        t.name,
                        t.data.len(),
                        t.shape
                    ),
                )
                .with_id(rid));
            }
        }
        let payload = l::request_payload_size(inputs.len(), options.outputs.len(), params.len());
        let (refs, end) = codec::layout(&specs, payload)?;
        let input_bytes: u64 = inputs.iter().map(|t| t.data.len() as u64).sum();
        let conn = self.conn()?;
        conn.wait_idle(deadline, spin)?;
        conn.ensure(end, input_bytes)?;
        let area = conn.request_area();
        for (r, t) in refs.iter().zip(inputs) {
            area[r.data_offset..r.data_offset + r.data_size].copy_from_slice(&t.data);
        }
        let fields = RequestFields {
            kind: l::KIND_INFER_REQUEST,
            request_id: rid,
            flags,
            model: model.to_string(),
            version: options.version.clone(),
            deadline_ns: deadline,
            inputs: refs,
            outputs: options.outputs.clone(),
            params,
        };
        codec::write_request(area, &fields).map_err(|e| e.with_id(rid))?;
        conn.round_trip(rid, end, deadline, spin)
            .map(|(_, outputs)| outputs)
    }

    fn control(&mut self, kind: u16, model: &str, timeout: Option<Duration>) -> Result<String> {
        let deadline = deadline_after(timeout);
        let rid = self.next_id();
        let spin = self.opts.spin;
        let conn = self.conn()?;
        conn.wait_idle(deadline, spin)?;
        let fields = RequestFields {
            kind,
            request_id: rid,
            model: model.to_string(),
            deadline_ns: deadline,
            ..RequestFields::default()
        };
        let area = conn.request_area();
        let payload = codec::write_request(area, &fields).map_err(|e| e.with_id(rid))?;
        let (dec, _) = conn.round_trip(rid, l::MSG_HEADER_SIZE + payload, deadline, spin)?;
        Ok(dec.text)
    }

    /// The metadata document of `model` (JSON text: its inputs and outputs).
    pub fn metadata(&mut self, model: &str, timeout: Option<Duration>) -> Result<String> {
        self.control(l::KIND_METADATA_REQUEST, model, timeout)
    }

    /// The server's metrics document (JSON text).
    pub fn stats(&mut self, timeout: Option<Duration>) -> Result<String> {
        self.control(l::KIND_STATS_REQUEST, "", timeout)
    }

    /// Lay out `inputs` in the channel's request area and lend them out for writing in place:
    /// fill [`Loan::input_mut`] (or [`Loan::input_as_mut`]), then [`Loan::infer`] sends them
    /// without another copy. The loan borrows the client; `infer` may be called repeatedly.
    ///
    /// ```no_run
    /// use fdn::{Client, ConnectOptions, DataType, TensorSpec};
    ///
    /// let mut client = Client::connect("demo_server", ConnectOptions::default())?;
    /// let mut loan = client.loan("demo", &[TensorSpec::new("x", DataType::Fp32, &[1, 784])])?;
    /// loan.input_as_mut::<f32>(0)?.fill(0.5);
    /// let outputs = loan.infer(None)?;
    /// # Ok::<(), fdn::Error>(())
    /// ```
    pub fn loan(&mut self, model: &str, inputs: &[TensorSpec]) -> Result<Loan<'_>> {
        let specs: Vec<(&str, DataType, &[u64])> = inputs
            .iter()
            .map(|t| (t.name.as_str(), t.datatype, t.shape.as_slice()))
            .collect();
        let (refs, end) = codec::layout(&specs, l::request_payload_size(inputs.len(), 0, 0))?;
        let input_bytes: u64 = refs.iter().map(|r| r.data_size as u64).sum();
        let spin = self.opts.spin;
        let conn = self.conn()?;
        conn.wait_idle(0, spin)?;
        conn.ensure(end, input_bytes)?;
        let conn_gen = self.conn_gen;
        Ok(Loan {
            client: self,
            model: model.to_string(),
            refs,
            end,
            conn_gen,
        })
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.release(self.opts.connect_timeout.min(Duration::from_secs(1)));
        }
    }
}

/// Input tensors lent out in the channel's request area (see [`Client::loan`]).
pub struct Loan<'c> {
    client: &'c mut Client,
    model: String,
    refs: Vec<TensorRef>,
    end: usize,
    conn_gen: u64,
}

impl std::fmt::Debug for Loan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loan")
            .field("model", &self.model)
            .field("inputs", &self.refs)
            .finish()
    }
}

impl Loan<'_> {
    /// The loaned inputs' layout (names, datatypes, shapes, offsets in the request area).
    pub fn inputs(&self) -> &[TensorRef] {
        &self.refs
    }

    /// The index of the input named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.refs.iter().position(|r| r.name == name)
    }

    fn live(&mut self) -> Result<&mut Conn> {
        match self.client.conn.as_mut() {
            Some(c) if c.alive && self.client.conn_gen == self.conn_gen => Ok(c),
            _ => Err(unavailable(
                "the server of this loan is gone; take a new loan",
            )),
        }
    }

    /// The bytes of input `i`, in shared memory (little-endian, C order).
    pub fn input_mut(&mut self, i: usize) -> Result<&mut [u8]> {
        let r = self
            .refs
            .get(i)
            .cloned()
            .ok_or_else(|| Error::new(Status::InvalidInput, "no such input"))?;
        let conn = self.live()?;
        Ok(&mut conn.request_area()[r.data_offset..r.data_offset + r.data_size])
    }

    /// Input `i` as elements of `T` (INVALID_INPUT unless `T` is its datatype).
    pub fn input_as_mut<T: Element>(&mut self, i: usize) -> Result<&mut [T]> {
        let dt = self.refs.get(i).map(|r| r.datatype);
        if dt != Some(T::DTYPE) {
            return err(
                Status::InvalidInput,
                format!("input {i} is {dt:?}, not {}", T::DTYPE.name()),
            );
        }
        let bytes = self.input_mut(i)?;
        shm::cast_mut::<T>(bytes).ok_or_else(|| Error::new(Status::Internal, "misaligned input"))
    }

    /// Send the loaned inputs as they are now; returns the outputs.
    pub fn infer(&mut self, timeout: Option<Duration>) -> Result<Vec<Tensor>> {
        let deadline = deadline_after(timeout);
        let rid = self.client.next_id();
        let flags = if self.client.opts.data_crc {
            l::FLAG_DATA_CRC
        } else {
            0
        };
        let spin = self.client.opts.spin;
        let fields = RequestFields {
            kind: l::KIND_INFER_REQUEST,
            request_id: rid,
            flags,
            model: self.model.clone(),
            deadline_ns: deadline,
            inputs: self.refs.clone(),
            ..RequestFields::default()
        };
        let end = self.end;
        let conn = self.live()?;
        conn.wait_idle(deadline, spin)?;
        codec::write_request(conn.request_area(), &fields).map_err(|e| e.with_id(rid))?;
        conn.round_trip(rid, end, deadline, spin)
            .map(|(_, outputs)| outputs)
    }
}

// A client can move to another thread.
const _: () = {
    const fn send<T: Send>() {}
    send::<Client>();
};
