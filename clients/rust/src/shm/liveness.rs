//! The monotonic clock and process liveness (spec 10.3): a process's start time from
//! `/proc/PID/stat`, the one classifier of a process that has ended, a zombie seen from here,
//! and whether a server's lock file is held.

#[cfg(test)]
use super::blind;
#[cfg(test)]
use super::cstr;
use crate::ffi;
#[cfg(test)]
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

/// CLOCK_MONOTONIC in nanoseconds (the clock of `deadline_ns` and `heartbeat_ns`).
pub fn monotonic_ns() -> u64 {
    let mut ts = ffi::timespec::default();
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { ffi::clock_gettime(ffi::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `/proc/PID/stat`, whole.
fn read_stat(pid: u32) -> io::Result<Vec<u8>> {
    #[cfg(test)]
    if let Some(e) = blind::take(pid) {
        return Err(e);
    }
    #[cfg(test)]
    if let Some(stat) = blind::hidden(pid) {
        return Ok(stat);
    }
    #[cfg(test)]
    blind::look(pid);
    std::fs::read(format!("/proc/{pid}/stat"))
}

/// Field 3 (the state: `Z` or `X` for a zombie, dead but not yet reaped) and field 22 (the start
/// time in clock ticks since boot) of a `/proc/PID/stat`. The command name, field 2, may hold
/// spaces and `)`: only what follows the last `)` is split.
fn stat_fields(stat: &[u8]) -> Option<(bool, u64)> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let zombie = matches!(fields.next()?, "Z" | "X");
    Some((zombie, fields.nth(18)?.parse().ok()?))
}

/// Field 22 of `/proc/PID/stat` (start time in clock ticks since boot), or why it cannot be
/// told: no such process, a zombie, or a stat file that cannot be read (EMFILE at this process's
/// file limit, ENFILE, ENOMEM).
pub fn process_start_time(pid: u32) -> io::Result<u64> {
    match stat_fields(&read_stat(pid)?) {
        Some((false, start)) => Ok(start),
        Some((true, _)) => Err(io::Error::other(format!("process {pid} is a zombie"))),
        None => Err(io::Error::other(format!("/proc/{pid}/stat is malformed"))),
    }
}

/// The one liveness classifier (spec 10.3): whether process `pid`, started at `start`, is proven
/// to have ended: no `/proc/PID` (ENOENT, where `/proc` itself is there; ESRCH as it is reaped), a
/// zombie, or another start time. A stat file that cannot be read for another reason (EMFILE at
/// this process's file limit, ENFILE, ENOMEM, EACCES, no `/proc`) proves nothing: `kill(pid, 0)`,
/// which needs no file descriptor, settles it (ESRCH: gone; success or EPERM: alive, its start
/// time and whether it is a zombie unchecked then). Taking such a read for death failed a call to
/// a live server gone.
pub fn process_gone(pid: u32, start: u64) -> bool {
    let Ok(id) = i32::try_from(pid) else {
        return true; // no pid_t holds it: no such process (and never kill(-1, 0))
    };
    if id == 0 {
        return true;
    }
    match read_stat(pid) {
        Ok(stat) => match stat_fields(&stat) {
            Some((zombie, t)) => zombie || t != start,
            None => no_such_process(id),
        },
        // (a stat of /proc/self takes no descriptor: it says /proc is there even at EMFILE)
        Err(e) => match e.raw_os_error() {
            Some(ffi::ENOENT) if std::fs::metadata("/proc/self").is_ok() => true,
            Some(ffi::ESRCH) => true,
            _ => no_such_process(id),
        },
    }
}

/// Whether process `pid`, started at `start`, is a zombie seen from here (dead, not yet reaped):
/// the server itself, its other threads perhaps still exiting with its lock file held (a SIGKILL
/// ends the main thread first; the last one unmaps the memory, a model's gigabytes for a tenth of
/// a second and more, then closes the files). False where its stat file cannot be read.
pub fn zombie_here(pid: u32, start: u64) -> bool {
    if pid == 0 || i32::try_from(pid).is_err() {
        return false;
    }
    read_stat(pid)
        .ok()
        .and_then(|stat| stat_fields(&stat))
        .is_some_and(|(zombie, t)| zombie && t == start)
}

/// `kill(pid, 0)` says no process `pid` exists (ESRCH); EPERM is one of another user's.
fn no_such_process(pid: i32) -> bool {
    // SAFETY: signal 0 sends nothing; it only asks whether `pid` (> 0) exists.
    unsafe {
        ffi::kill(pid, 0) != 0 && io::Error::last_os_error().raw_os_error() == Some(ffi::ESRCH)
    }
}

/// Does some process hold an flock on `path` (a live server holds its lock file)? Only a
/// regular file is asked (no symlink followed, no wait on a fifo); anything else is "no".
pub fn lock_file_held(path: &str) -> bool {
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(ffi::O_NOFOLLOW | ffi::O_NONBLOCK | ffi::O_CLOEXEC)
        .open(path);
    let Ok(file) = opened else {
        return false;
    };
    if !file.metadata().is_ok_and(|m| m.file_type().is_file()) {
        return false;
    }
    // SAFETY: a valid open descriptor; the shared lock, if we get it, is dropped with the file.
    let rc = unsafe { ffi::flock(file.as_raw_fd(), ffi::LOCK_SH | ffi::LOCK_NB) };
    rc != 0 && io::Error::last_os_error().raw_os_error() == Some(ffi::EWOULDBLOCK)
}

/// Take the flock of `file` now (LOCK_EX, not waiting): whether it was taken. A test holds a
/// killed server's lock file so, as its last threads do while they exit.
#[cfg(test)]
pub(crate) fn lock_now(file: &File) -> bool {
    // SAFETY: a valid open descriptor.
    unsafe { ffi::flock(file.as_raw_fd(), ffi::LOCK_EX | ffi::LOCK_NB) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    extern "C" {
        fn mkfifo(path: *const std::ffi::c_char, mode: u32) -> i32;
    }

    fn held_in_a_thread(path: String) -> Option<bool> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(lock_file_held(&path));
        });
        rx.recv_timeout(Duration::from_secs(10)).ok()
    }

    /// A held flock is "held", a free or missing file is not; a fifo or a symlink planted at the
    /// lock file's path is not asked (a fifo's open waited for a writer: connect hung).
    #[test]
    fn lock_file_held_asks_only_a_regular_file() {
        let dir = std::env::temp_dir().join(format!("fdn-lockheld-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("srv.lock");
        let path = file.to_str().unwrap().to_string();
        let locked = File::create(&file).unwrap();
        assert!(!lock_file_held(&path), "free");
        // SAFETY: a valid open descriptor.
        assert_eq!(
            unsafe { ffi::flock(locked.as_raw_fd(), ffi::LOCK_EX | ffi::LOCK_NB) },
            0
        );
        assert!(lock_file_held(&path), "held");
        let link = dir.join("link.lock");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(held_in_a_thread(link.to_str().unwrap().into()), Some(false));
        let fifo = dir.join("fifo.lock");
        let c = cstr(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(held_in_a_thread(fifo.to_str().unwrap().into()), Some(false));
        assert!(!lock_file_held(dir.join("absent.lock").to_str().unwrap()));
        drop(locked);
        assert!(!lock_file_held(&path), "freed with its holder");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
