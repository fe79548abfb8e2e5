//! The region header read at connect (10.1 steps 1-2) and the wait for a hung server's beat
//! before a channel is claimed (10.3).

use super::nanos;
use super::wait::{self, server_alive};
use crate::codec::Limits;
use crate::error::{unavailable, Error, Result, Status};
use crate::ffi;
use crate::layout::{self as l, region as rg};
use crate::shm::{self, Mapping};
use std::io;
use std::sync::atomic::Ordering::*;
use std::time::Duration;

/// Why a connect failed, and whether because the server its region names is gone (found dead
/// there, or during the wait for a hung server's beat): a call whose connect, as it began, failed
/// so says that nothing of it was sent (10.3); any other connect says only "... is gone".
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) error: Error,
    pub(crate) gone: bool,
}

impl From<Error> for Refused {
    fn from(error: Error) -> Refused {
        Refused { error, gone: false }
    }
}

impl From<Refused> for Error {
    fn from(refused: Refused) -> Error {
        refused.error
    }
}

/// SERVER_UNAVAILABLE: the server `name`'s region names (`pid`) is gone.
fn gone(name: &str, pid: u32) -> Refused {
    Refused {
        error: unavailable(format!("shm server {name:?} (pid {pid}) is gone")),
        gone: true,
    }
}

/// 10.1 step 1's failure to open and map the control segment, by its error: only ENOENT says no
/// server has the name (the words of the C, Go and Python clients). A server another user started
/// (mode 0600) was told "no shm server named" though it served; a process at its file limit
/// (EMFILE, ENFILE) may connect later: OVERLOADED, as a data segment's creation; an empty segment
/// (its server is between `shm_open` and `ftruncate`) is not ready yet.
pub(super) fn open_failed(name: &str, e: &io::Error) -> Error {
    let cannot = |status| {
        let path = format!("/dev/shm{}", l::control_name(name));
        Error::new(
            status,
            format!("shm server {name:?}: cannot open {path}: {e}"),
        )
    };
    match e.raw_os_error() {
        Some(ffi::ENOENT) => unavailable(format!("no shm server named {name:?}")),
        Some(ffi::EACCES) => unavailable(format!(
            "no permission to use shm server {name:?} (/dev/shm{}): another user's; a server \
             started with mode 0o660 lets its group in",
            l::control_name(name)
        )),
        Some(ffi::EMFILE | ffi::ENFILE) => cannot(Status::Overloaded),
        Some(_) => cannot(Status::ServerUnavailable),
        None => unavailable(format!("shm server {name:?} is not ready ({e})")),
    }
}

/// What the region header says of its server, checked at connect (10.1 steps 1-2).
pub(super) struct Region {
    pub(super) count: usize,
    pub(super) server_pid: u32,
    pub(super) server_start: u64,
    pub(super) instance_id: u64,
    pub(super) limits: Limits,
}

/// 10.1 steps 1-2: the region header is there, speaks our protocol, has the channel geometry of
/// the layout, and names a server that serves and lives.
pub(super) fn read_region(ctl: &Mapping, name: &str) -> Result<Region, Refused> {
    if ctl.len() < l::REGION_HEADER_SIZE || ctl.u32(rg::MAGIC).load(Acquire) != l::REGION_MAGIC {
        return Err(unavailable(format!(
            "shm server {name:?} is not ready (no region header yet)"
        ))
        .into());
    }
    let major = ctl.u32(rg::VERSION_MAJOR).load(Relaxed) & 0xFFFF;
    if major != l::PROTOCOL_VERSION as u32 {
        let message = format!(
            "shm server {name:?} speaks protocol {major}, this client {}",
            l::PROTOCOL_VERSION
        );
        return Err(Error::new(Status::BadVersion, message).into());
    }
    let count = ctl.u32(rg::CHANNEL_COUNT).load(Relaxed) as usize;
    if ctl.u32(rg::CHANNEL_SIZE).load(Relaxed) as usize != l::CHANNEL_SIZE
        || ctl.u64(rg::CHANNELS_OFFSET).load(Relaxed) as usize != l::CHANNELS_OFFSET
        || ctl.len() < l::CHANNELS_OFFSET + count * l::CHANNEL_SIZE
    {
        let message = format!("shm server {name:?}: malformed region header");
        return Err(Error::new(Status::Internal, message).into());
    }
    let server_pid = ctl.u32(rg::SERVER_PID).load(Relaxed);
    let server_start = ctl.u64(rg::SERVER_START_TIME).load(Relaxed);
    let instance_id = ctl.u64(rg::INSTANCE_ID).load(Relaxed);
    let state = ctl.u32(rg::STATE).load(Acquire);
    if state == l::STATE_STOPPING {
        // spec 10.1 step 2: a STOPPING server takes no one new (worded as the other clients say it)
        return Err(unavailable(format!("shm server {name:?} is stopping")).into());
    }
    if state != l::STATE_READY {
        // STOPPED (or not yet READY): as the C, Go and Python clients word it, naming the pid
        return Err(unavailable(format!("shm server {name:?} (pid {server_pid}) is gone")).into());
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
            ))
            .into());
        }
        return Err(gone(name, server_pid));
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
pub(super) fn wait_beating(
    ctl: &Mapping,
    name: &str,
    region: &Region,
    timeout: Duration,
    deadline: u64,
) -> Result<(), Refused> {
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
            return Err(gone(name, region.server_pid));
        }
        if shm::monotonic_ns() >= end {
            return Err(unavailable(format!(
                "{why} (its process is stopped or stalled, and no beat came {limit}): it takes \
                 no new client until it beats again"
            ))
            .into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
