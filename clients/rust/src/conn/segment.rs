//! A channel's data segment: create, allocate and map it, and publish it in the channel block.
//! docs/protocol/shm.md section 10.1 (step 6, and "Growing").

use crate::error::{err, Error, Result, Status};
use crate::ffi;
use crate::layout::{self as l, channel as ch};
use crate::shm::{self, CreateError, Mapping};
use std::sync::atomic::Ordering::*;

/// Create, allocate and map the data segment of channel `index`, generation `gen` (section 10.1,
/// step 6): OVERLOADED when /dev/shm or memory has no room now (it may later), TOO_LARGE for
/// capacities that can never fit (more than /dev/shm, or than a file may be); either way nothing
/// is left in /dev/shm. A segment of this name is ours (it carries our pid), left over from a
/// claim or grow that failed: it is replaced.
pub(super) fn create_data(
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
    let data = made.map_err(|e| allocation_error(&what, size, e))?;
    Ok((data, data_name))
}

/// The error of a failed create, size or allocation of the segment `what` (spec 10.1 step 6): no
/// room or no file descriptor at any step, `shm_open` included (a tmpfs out of inodes fails it
/// ENOSPC), is OVERLOADED; a size that can never fit is TOO_LARGE only at a step after `shm_open`
/// (its EINVAL is no size); anything else is INTERNAL.
fn allocation_error(what: &str, size: usize, e: CreateError) -> Error {
    let sized = e.step != "shm_open";
    let (status, later) = match e.error.raw_os_error() {
        Some(ffi::ENOSPC | ffi::ENOMEM) => (Status::Overloaded, ": no room now, it may fit later"),
        Some(ffi::EMFILE | ffi::ENFILE) => (
            Status::Overloaded,
            ": no file descriptor free now, it may be later",
        ),
        Some(ffi::EFBIG | ffi::EOVERFLOW | ffi::EINVAL) if sized => (Status::TooLarge, ""),
        _ => (Status::Internal, ""),
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
    use super::*;
    use std::io;

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
