//! A channel's data segment: create, allocate and map it, and publish it in the channel block.
//! docs/protocol/shm.md section 10.1 (step 6, and "Growing").

use crate::error::{err, Error, Result, Status};
use crate::ffi;
use crate::layout::{self as l, channel as ch};
use crate::shm::{self, CreateError, Mapping};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::atomic::Ordering::*;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// This process's data segments by name, each with the token of the segment made under it (spec
/// 10.1 step 6). A name is the server's, the channel's index, the pid and a generation, so after a
/// restart under the name a client of this process that claims a channel of the new server makes
/// the very name another client still holds on the dead server's region: it replaces that
/// segment, and the other, dropping its dead connection, unlinked the name, the new owner's
/// segment by then (the server parked that channel; its calls ran into their deadlines). A client
/// unlinks a name only while the segment is its own: one recorded with another token is left to
/// its maker. Held across a create (`shm_open`, a left-over replaced) and its record, and across
/// a check and its unlink; not across the allocation. A forked child keeps its copy of the
/// parent's records: the parent's connections copied into it are forgotten (`Conn::forget`), their
/// names never unlinked, and its own make names of its pid, which no record of the parent's matches.
static NAMED: Mutex<Named> = Mutex::new(Named {
    made: 0,
    tokens: BTreeMap::new(),
});

struct Named {
    /// Segments made so far: the last token handed out.
    made: u64,
    tokens: BTreeMap<String, u64>,
}

fn named() -> MutexGuard<'static, Named> {
    NAMED.lock().unwrap_or_else(PoisonError::into_inner)
}

thread_local! {
    /// [`NAMED`]'s lock, held by the forking thread across a fork (`hold_records`): a child forked
    /// while another thread held it found it held for good, and its first connect waited for ever.
    static HELD_AT_FORK: RefCell<Option<MutexGuard<'static, Named>>> = const { RefCell::new(None) };
}

/// Take (`hold`) or give back the lock of [`NAMED`] on the forking thread: before a fork, and
/// after it in the parent and in the child (`pthread_atfork`, `crate::fork`). Held already, it is
/// not taken again: a child forked while its parent registered the handlers may have registered
/// them twice (`crate::fork`), and its forks then run each handler twice.
pub(crate) fn hold_records(hold: bool) {
    let _ = HELD_AT_FORK.try_with(|held| {
        let mut held = held.borrow_mut();
        if held.is_some() != hold {
            *held = hold.then(named);
        }
    });
}

/// The name of a data segment this client made, and the token recorded with it in [`NAMED`]
/// (0 once unlinked). Dropped, it unlinks: a claim that never became a connection (a panic
/// between them) left its segment in /dev/shm and its record in [`NAMED`] for the process's life.
pub(super) struct DataName {
    name: String,
    token: u64,
}

impl DataName {
    /// Unlink the segment unless another client of this process has made one of that name since;
    /// forget this one's record. Once: later calls, and the drop, do nothing.
    pub(super) fn unlink(&mut self) {
        let token = std::mem::take(&mut self.token);
        if token == 0 {
            return;
        }
        let mut named = named();
        if named.tokens.get(&self.name).map_or(true, |&t| t == token) {
            named.tokens.remove(&self.name);
            let _ = shm::unlink(&self.name);
        }
    }

    /// A forked child's copy of its parent's name: forgotten, never unlinked (the parent's
    /// segment, in use), the child's record of it left as it is.
    pub(super) fn disown(mut self) {
        self.token = 0;
    }
}

impl Drop for DataName {
    fn drop(&mut self) {
        self.unlink();
    }
}

impl Deref for DataName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.name
    }
}

/// Create, allocate and map the data segment of channel `index`, generation `gen` (section 10.1,
/// step 6): OVERLOADED when /dev/shm or memory has no room now (it may later), TOO_LARGE for
/// capacities that can never fit (more than /dev/shm, or than a file may be); either way nothing
/// is left in /dev/shm. A segment of this name is ours (it carries our pid), left over from a
/// claim or grow that failed, or another client's of this process on a dead server's region: it
/// is replaced (and recorded as this one's, [`NAMED`]).
pub(super) fn create_data(
    name: &str,
    index: usize,
    gen: u64,
    req_cap: usize,
    resp_cap: usize,
    mode: u32,
) -> Result<(Mapping, DataName)> {
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
    let (file, data_name) = {
        let mut named = named();
        let file = Mapping::create_file(&data_name, mode).or_else(|e| {
            if e.error.raw_os_error() == Some(ffi::EEXIST) {
                // Ours, left over from a failed claim or grow (or a dead process that had our
                // pid), or another client's on a dead server's region (it leaves the name to us).
                let _ = shm::unlink(&data_name);
                Mapping::create_file(&data_name, mode)
            } else {
                Err(e)
            }
        });
        let file = file.map_err(|e| allocation_error(&what, size, e))?;
        named.made += 1;
        let token = named.made;
        named.tokens.insert(data_name.clone(), token);
        let data_name = DataName {
            name: data_name,
            token,
        };
        (file, data_name)
    };
    // failed, the segment is unlinked as data_name drops
    let data = Mapping::fill(&file, size, mode).map_err(|e| allocation_error(&what, size, e))?;
    Ok((data, data_name))
}

/// The error of a failed create, size or allocation of the segment `what` (spec 10.1 step 6): no
/// room or no file descriptor at any step, `shm_open` included (a tmpfs out of inodes fails it
/// ENOSPC), or a `posix_fallocate` interrupted `shm::FALLOCATE_TRIES` times in a row, is OVERLOADED; a size that can never fit is TOO_LARGE only at a step after `shm_open`
/// (its EINVAL is no size); anything else is INTERNAL.
fn allocation_error(what: &str, size: usize, e: CreateError) -> Error {
    let sized = e.step != "shm_open";
    let tries = shm::FALLOCATE_TRIES;
    let (status, later) = match e.error.raw_os_error() {
        Some(ffi::ENOSPC | ffi::ENOMEM) => {
            (Status::Overloaded, ": no room now, it may fit later".into())
        }
        Some(ffi::EMFILE | ffi::ENFILE) => (
            Status::Overloaded,
            ": no file descriptor free now, it may be later".into(),
        ),
        // posix_fallocate interrupted by signals every time (shm::FALLOCATE_TRIES)
        Some(ffi::EINTR) => (
            Status::Overloaded,
            format!(": {tries} times in a row, it may pass later"),
        ),
        Some(ffi::EFBIG | ffi::EOVERFLOW | ffi::EINVAL) if sized => {
            (Status::TooLarge, String::new())
        }
        _ => (Status::Internal, String::new()),
    };
    Error::new(
        status,
        format!(
            "{what}: cannot allocate {size} bytes in /dev/shm ({}: {}){later}",
            e.step, e.error
        ),
    )
}

/// Store the data segment's capacities and name, then `data_gen` (the server remaps on a change).
pub(super) fn publish_data(
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

#[cfg(test)]
mod tests {
    use super::super::claim::claim_channel;
    use super::*;
    use std::io;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::path::Path;

    /// Whether data segment `name` is recorded as made by this process ([`NAMED`]), and whether
    /// it is in /dev/shm.
    fn left(name: &str) -> (bool, bool) {
        let recorded = named().tokens.contains_key(name);
        (recorded, Path::new(&format!("/dev/shm{name}")).exists())
    }

    /// A claim dropped before its connection exists (a panic between them) unlinks its data
    /// segment and forgets its record: both stayed for the process's life ([`DataName`] had no
    /// drop). So does a data segment made and dropped.
    #[test]
    fn a_claim_dropped_before_its_connection_exists_leaves_no_segment_nor_record() {
        let pid = std::process::id();
        let server = format!("rustdnrec{pid}");
        let size = l::CHANNELS_OFFSET + l::CHANNEL_SIZE;
        let ctl = Mapping::create(&l::control_name(&server), size, 0o600).unwrap();
        let _ = shm::unlink(&l::control_name(&server)); // mapped: nothing else needs the name
        let name = l::data_name(&server, 0, pid, 1).unwrap();
        let panicked = catch_unwind(AssertUnwindSafe(|| {
            let _claim = claim_channel(&ctl, &server, 1, 4096, 0o600, pid, 1).unwrap();
            assert_eq!(left(&name), (true, true), "claimed");
            panic!("between the claim and the connection");
        }));
        let after_panic = left(&name);
        named().tokens.remove(&name); // what the old DataName left
        let _ = shm::unlink(&name);
        assert!(panicked.is_err());
        assert_eq!(after_panic, (false, false), "after the panic");

        let (data, made) = create_data(&server, 1, 7, 4096, 4096, 0o600).unwrap();
        let name = made.to_string();
        assert_eq!(left(&name), (true, true), "made");
        drop((data, made));
        let after_drop = left(&name);
        named().tokens.remove(&name);
        let _ = shm::unlink(&name);
        assert_eq!(after_drop, (false, false), "after the drop");
    }

    /// A `posix_fallocate` that a signal interrupts (EINTR) is made again, but not for ever:
    /// interrupted `FALLOCATE_TRIES` times in a row (signals that come faster than tmpfs
    /// allocates, which undoes an interrupted call's pages), the data segment's creation fails
    /// OVERLOADED, it may pass later, and nothing is left. It tried for as long as the signals came.
    #[test]
    fn an_allocation_interrupted_every_time_is_overloaded() {
        let server = format!("rustintr{}", std::process::id());
        let many = 1000 * shm::FALLOCATE_TRIES; // (the old loop got through them: a segment)
        shm::blind::interrupt_fallocate(many);
        let made = create_data(&server, 0, 1, 4096, 4096, 0o600);
        let calls = many - shm::blind::interrupts_left();
        shm::blind::interrupt_fallocate(0);
        let name = l::data_name(&server, 0, std::process::id(), 1).unwrap();
        let left_after = left(&name);
        let Err(e) = made else {
            panic!("a data segment made after {calls} posix_fallocate calls"); // (dropped: unlinked)
        };
        let want = format!(
            "(posix_fallocate: {}): {} times in a row, it may pass later",
            io::Error::from_raw_os_error(ffi::EINTR),
            shm::FALLOCATE_TRIES
        );
        assert_eq!(
            (e.code, e.message.ends_with(&want), calls),
            (Status::Overloaded, true, shm::FALLOCATE_TRIES),
            "{}; want it to end {want}",
            e.message
        );
        assert_eq!(
            left_after,
            (false, false),
            "the segment, or its record, left"
        );
    }

    fn status(errno: i32) -> (Status, String) {
        status_at("shm_open", errno)
    }

    fn status_at(step: &'static str, errno: i32) -> (Status, String) {
        let e = CreateError {
            step,
            error: io::Error::from_raw_os_error(errno),
        };
        let got = allocation_error("data segment /fdn-t-d0-1-1", 4096, e);
        (got.code, got.message)
    }

    /// No file descriptor free (EMFILE, ENFILE) is OVERLOADED, as no room is: it may pass later
    /// (spec 10.1 step 6).
    #[test]
    fn allocation_error_no_descriptor_is_overloaded() {
        for errno in [ffi::EMFILE, ffi::ENFILE] {
            let (st, msg) = status(errno);
            assert_eq!(st, Status::Overloaded, "errno {errno}: {msg}");
            assert!(
                msg.ends_with(": no file descriptor free now, it may be later"),
                "{msg}"
            );
        }
        for errno in [ffi::ENOSPC, ffi::ENOMEM] {
            let (st, msg) = status(errno);
            assert_eq!(st, Status::Overloaded, "errno {errno}: {msg}");
            assert!(msg.ends_with(": no room now, it may fit later"), "{msg}");
        }
        assert_eq!(status_at("ftruncate", ffi::EFBIG).0, Status::TooLarge);
        assert_eq!(status(5).0, Status::Internal); // EIO
    }

    /// Every step classifies alike: no room (ENOSPC: a tmpfs out of inodes at `shm_open`; ENOMEM)
    /// or no descriptor is OVERLOADED whether `shm_open`, `ftruncate`, `posix_fallocate` or `mmap`
    /// failed; a size that can never fit is TOO_LARGE only where a size was asked for: EINVAL from
    /// `shm_open` (a bad name) is INTERNAL, as in the C and Go clients. It was TOO_LARGE.
    #[test]
    fn allocation_error_alike_at_every_step() {
        for step in ["shm_open", "fchmod", "ftruncate", "posix_fallocate", "mmap"] {
            for errno in [ffi::ENOSPC, ffi::ENOMEM, ffi::EMFILE, ffi::ENFILE] {
                let (st, msg) = status_at(step, errno);
                assert_eq!(st, Status::Overloaded, "{step} errno {errno}: {msg}");
                assert!(msg.contains(&format!("({step}: ")), "{msg}");
            }
        }
        for step in ["ftruncate", "posix_fallocate", "mmap"] {
            for errno in [ffi::EFBIG, ffi::EOVERFLOW, ffi::EINVAL] {
                assert_eq!(status_at(step, errno).0, Status::TooLarge, "{step} {errno}");
            }
        }
        for errno in [ffi::EFBIG, ffi::EOVERFLOW, ffi::EINVAL, 13] {
            // 13: EACCES
            assert_eq!(status(errno).0, Status::Internal, "shm_open errno {errno}");
        }
    }
}
