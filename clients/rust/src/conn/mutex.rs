//! The region mutex (docs/protocol/shm.md sections 10.1 and 10.4): taken to claim or free a
//! channel, its holder's pid published so that the server can release it if the holder dies.

use super::deadline_after;
use crate::error::{err, Result, Status};
use crate::layout::region as rg;
use crate::shm::{self, Mapping, Semaphore, Wait};
use std::sync::atomic::Ordering::*;
use std::time::Duration;

/// Holds the region mutex; releases it (clearing `mutex_holder_pid`) when dropped.
pub(super) struct MutexGuard<'a> {
    ctl: &'a Mapping,
    mutex: &'a Semaphore,
}

impl<'a> MutexGuard<'a> {
    /// Take the mutex, waiting up to `timeout` (`connect_timeout`: then OVERLOADED) and no later
    /// than `deadline` (a call's own, monotonic ns, 0 for none: then DEADLINE_EXCEEDED). It is
    /// held for microseconds, but for as long as a client stopped inside it stays stopped: a
    /// call with a 200 ms timeout that reconnected waited the whole `connect_timeout` for it.
    pub(super) fn take(
        ctl: &'a Mapping,
        mutex: &'a Semaphore,
        timeout: Duration,
        deadline: u64,
        name: &str,
    ) -> Result<MutexGuard<'a>> {
        let mut until = deadline_after(Some(timeout));
        let by_deadline = deadline != 0 && deadline < until;
        if by_deadline {
            until = deadline;
        }
        loop {
            match mutex.wait_until(until) {
                Wait::Posted => break,
                Wait::Interrupted if shm::monotonic_ns() < until => continue,
                _ if by_deadline => {
                    return err(
                        Status::DeadlineExceeded,
                        format!("shm server {name:?}: region mutex still busy at the deadline"),
                    )
                }
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
