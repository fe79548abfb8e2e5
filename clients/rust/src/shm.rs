//! Safe wrappers over the libc calls: shared-memory segments mapped into this process, named
//! semaphores, the monotonic clock, and process liveness. All of the crate's `unsafe` that
//! touches memory is here (and the declarations in `ffi`).

use crate::ffi;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

fn cstr(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))
}

/// A shared-memory segment mapped read-write into this process (unmapped on drop).
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; access to it from several threads is
// governed by the `&`/`&mut` borrows of its methods, like a `Vec<u8>`'s.
unsafe impl Send for Mapping {}
// SAFETY: shared (`&self`) methods only hand out atomics or copy bytes in or out.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn map(file: &File, len: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "empty segment"));
        }
        // SAFETY: a fresh shared mapping of an open descriptor; the kernel picks the address and
        // checks `len` against nothing we rely on (a shorter file faults on access, so callers
        // map exactly the size they got from fstat or set with ftruncate).
        let ptr = unsafe {
            ffi::mmap(
                std::ptr::null_mut(),
                len,
                ffi::PROT_READ | ffi::PROT_WRITE,
                ffi::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == ffi::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(Mapping { ptr, len })
    }

    fn shm_open(name: &str, flags: i32, mode: u32) -> io::Result<File> {
        let c = cstr(name)?;
        // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
        let fd =
            unsafe { ffi::shm_open(c.as_ptr(), flags | ffi::O_CLOEXEC | ffi::O_NOFOLLOW, mode) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by shm_open and is owned by nothing else.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Open the existing segment `name` (`/fdn-...`) and map all of it; also returns its mode bits.
    pub fn open(name: &str) -> io::Result<(Mapping, u32)> {
        let file = Mapping::shm_open(name, ffi::O_RDWR, 0)?;
        let meta = file.metadata()?;
        let len = usize::try_from(meta.len()).map_err(io::Error::other)?;
        Ok((Mapping::map(&file, len)?, meta.permissions().mode() & 0o777))
    }

    /// Create the segment `name` of `len` bytes with mode `mode` and map it ([`Mapping::create_file`]
    /// then [`Mapping::fill`]); on a failure after `shm_open` the segment is unlinked.
    #[cfg(test)]
    pub fn create(name: &str, len: usize, mode: u32) -> Result<Mapping, CreateError> {
        let file = Mapping::create_file(name, mode)?;
        let made = Mapping::fill(&file, len, mode);
        if made.is_err() {
            let _ = unlink(name);
        }
        made
    }

    /// Create the empty segment `name`: a segment of that name is an error of `shm_open`
    /// (`EEXIST`).
    pub fn create_file(name: &str, mode: u32) -> Result<File, CreateError> {
        Mapping::shm_open(name, ffi::O_RDWR | ffi::O_CREAT | ffi::O_EXCL, mode).map_err(|error| {
            CreateError {
                step: "shm_open",
                error,
            }
        })
    }

    /// Give the segment just created behind `file` mode `mode` (applied with fchmod so the umask
    /// does not change it) and `len` bytes, allocate its pages (`posix_fallocate`: on a full
    /// /dev/shm a sparse segment maps fine and the first write to a missing page is SIGBUS) and
    /// map it. The error names the step that failed; the caller unlinks the segment.
    pub fn fill(file: &File, len: usize, mode: u32) -> Result<Mapping, CreateError> {
        let fail = |step: &'static str| move |error: io::Error| CreateError { step, error };
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(fail("fchmod"))
            .and_then(|_| file.set_len(len as u64).map_err(fail("ftruncate")))
            .and_then(|_| allocate(file, len).map_err(fail("posix_fallocate")))
            .and_then(|_| Mapping::map(file, len).map_err(fail("mmap")))
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The 32-bit word at byte `off` (4-aligned, in bounds: panics otherwise).
    pub fn u32(&self, off: usize) -> &AtomicU32 {
        assert!(
            off % 4 == 0 && off + 4 <= self.len,
            "word {off} outside the mapping"
        );
        // SAFETY: in bounds and aligned (the mapping is page-aligned, `off` a multiple of 4);
        // the memory lives as long as `self`, and is only accessed atomically through this view.
        unsafe { &*self.ptr.as_ptr().add(off).cast::<AtomicU32>() }
    }

    /// The 64-bit word at byte `off` (8-aligned, in bounds: panics otherwise).
    pub fn u64(&self, off: usize) -> &AtomicU64 {
        assert!(
            off % 8 == 0 && off + 8 <= self.len,
            "word {off} outside the mapping"
        );
        // SAFETY: as in `u32`, with 8-byte alignment.
        unsafe { &*self.ptr.as_ptr().add(off).cast::<AtomicU64>() }
    }

    /// Copy the bytes `[off, off + dst.len())` out into `dst` (panics outside the mapping).
    /// Unlike [`Mapping::slice`], this is sound while the peer writes those bytes: no Rust
    /// reference to them is made, and a concurrent write can only change the values copied.
    pub fn read_into(&self, off: usize, dst: &mut [u8]) {
        assert!(off.checked_add(dst.len()).is_some_and(|e| e <= self.len));
        // SAFETY: the source range is inside the mapping (checked above) and stays mapped while
        // `self` lives; `dst` is ordinary memory of this process, so the ranges do not overlap.
        // A raw copy makes no `&[u8]` over memory another process may write meanwhile.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(off), dst.as_mut_ptr(), dst.len())
        };
    }

    /// Append the bytes `[off, off + n)` to `dst`, copied as [`Mapping::read_into`] does but
    /// into `dst`'s spare capacity, without zero-filling it first (panics outside the mapping).
    pub fn append_to(&self, off: usize, n: usize, dst: &mut Vec<u8>) {
        assert!(off.checked_add(n).is_some_and(|e| e <= self.len));
        dst.reserve(n);
        let at = dst.len();
        // SAFETY: the source range is inside the mapping (checked above) and stays mapped while
        // `self` lives; after `reserve(n)`, `dst` has room for `n` more bytes from `at`, which is
        // ordinary memory of this process (no overlap). A raw copy makes no `&[u8]` over memory
        // another process may write meanwhile. The copy initializes `[at, at + n)`, so the new
        // length covers initialized bytes only (u8 has no invalid values).
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(off), dst.as_mut_ptr().add(at), n);
            dst.set_len(at + n);
        }
    }

    /// Copy `bytes` in at `off` (fields of the control segment this side owns).
    pub fn write_bytes(&self, off: usize, bytes: &[u8]) {
        assert!(off.checked_add(bytes.len()).is_some_and(|e| e <= self.len));
        // SAFETY: the destination range is inside the mapping (checked above); the protocol gives
        // this process the only write access to it; `bytes` is ordinary memory, no overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.as_ptr().add(off), bytes.len())
        };
    }

    /// The bytes `[off, off + len)`, writable. Only for an area the peer does not read or write
    /// while the borrow lives (a request area while the channel is idle).
    pub fn slice_mut(&mut self, off: usize, len: usize) -> &mut [u8] {
        assert!(off.checked_add(len).is_some_and(|e| e <= self.len));
        // SAFETY: in bounds; `&mut self` makes the borrow unique in this process, and the protocol
        // keeps the peer off the request area while the channel is idle.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(off), len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and no borrow outlives `self`.
        unsafe { ffi::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Why creating a segment failed: the call (`shm_open`, `ftruncate`, `posix_fallocate`, ...) and
/// its error.
#[derive(Debug)]
pub struct CreateError {
    pub step: &'static str,
    pub error: io::Error,
}

/// How many `posix_fallocate` calls in a row a signal may interrupt (EINTR) before a segment's
/// allocation fails with that error (OVERLOADED for a data segment, spec 10.1 step 6).
pub const FALLOCATE_TRIES: u32 = 100;

/// Allocate every page of the file behind `file` (where the file system cannot, it stays sparse,
/// as before); interrupted by a signal, start again, up to [`FALLOCATE_TRIES`] times in a row:
/// tmpfs undoes what an interrupted call allocated, so signals that come faster than a large
/// segment allocates (a profiler's timer, on older kernels) kept it trying for ever.
fn allocate(file: &File, len: usize) -> io::Result<()> {
    let len = i64::try_from(len).map_err(|_| io::Error::from_raw_os_error(ffi::EFBIG))?;
    if len == 0 {
        return Ok(());
    }
    let mut tries = 1;
    loop {
        match fallocate(file, len) {
            0 | ffi::EOPNOTSUPP | ffi::ENOSYS | ffi::ENODEV => return Ok(()),
            ffi::EINTR if tries < FALLOCATE_TRIES => tries += 1,
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// `posix_fallocate` of the first `len` bytes: 0 or the error number.
fn fallocate(file: &File, len: i64) -> i32 {
    #[cfg(test)]
    if blind::interrupt() {
        return ffi::EINTR;
    }
    // SAFETY: a plain system call on an open descriptor.
    unsafe { ffi::posix_fallocate(file.as_raw_fd(), 0, len) }
}

/// The total size of the file system at `path` (`statvfs`: blocks x fragment size), if it says.
pub fn fs_total_bytes(path: &str) -> Option<u64> {
    let c = cstr(path).ok()?;
    let mut st = ffi::statvfs::default();
    // SAFETY: valid NUL-terminated path; `st` is at least as large as glibc's struct statvfs.
    if unsafe { ffi::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let unit = if st.f_frsize != 0 {
        st.f_frsize
    } else {
        st.f_bsize
    };
    st.f_blocks.checked_mul(unit).filter(|&t| t > 0)
}

/// Unlink the segment `name`; absent is not an error.
pub fn unlink(name: &str) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid NUL-terminated string.
    if unsafe { ffi::shm_unlink(c.as_ptr()) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(ffi::ENOENT) {
            return Err(e);
        }
    }
    Ok(())
}

/// Reinterpret the bytes of a tensor as elements of `T` (alignment permitting).
pub fn cast_mut<T: crate::tensor::Element>(bytes: &mut [u8]) -> Option<&mut [T]> {
    // SAFETY: every `Element` is a plain integer or float type for which every bit pattern is valid;
    // `align_to_mut` handles alignment, and we only accept the case where nothing is left over.
    let (head, body, tail) = unsafe { bytes.align_to_mut::<T>() };
    (head.is_empty() && tail.is_empty()).then_some(body)
}

/// A named POSIX semaphore opened by this process (closed on drop).
pub struct Semaphore {
    sem: NonNull<ffi::sem_t>,
}

// SAFETY: POSIX semaphores are made for use from any thread (and process).
unsafe impl Send for Semaphore {}
// SAFETY: as above; every operation is a single thread-safe libc call.
unsafe impl Sync for Semaphore {}

/// What a timed wait ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    Posted,
    TimedOut,
    Interrupted,
}

impl Semaphore {
    /// Open the existing semaphore `name` (`/fdn-...`).
    pub fn open(name: &str) -> io::Result<Semaphore> {
        let c = cstr(name)?;
        // SAFETY: valid NUL-terminated string; without O_CREAT no variadic arguments are read.
        let sem = unsafe { ffi::sem_open(c.as_ptr(), 0) };
        match NonNull::new(sem) {
            Some(sem) if sem.as_ptr() != ffi::SEM_FAILED => Ok(Semaphore { sem }),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// `sem_post`.
    pub fn post(&self) {
        // SAFETY: `sem` is a live handle from sem_open.
        unsafe { ffi::sem_post(self.sem.as_ptr()) };
    }

    /// `sem_trywait`: true if a post was taken.
    pub fn try_wait(&self) -> bool {
        // SAFETY: `sem` is a live handle from sem_open.
        unsafe { ffi::sem_trywait(self.sem.as_ptr()) == 0 }
    }

    /// Take every pending post.
    pub fn drain(&self) {
        while self.try_wait() {}
    }

    /// Wait for a post until the CLOCK_MONOTONIC time `until_ns`.
    pub fn wait_until(&self, until_ns: u64) -> Wait {
        let ts = ffi::timespec {
            tv_sec: (until_ns / 1_000_000_000) as i64,
            tv_nsec: (until_ns % 1_000_000_000) as i64,
        };
        // SAFETY: `sem` is a live handle; `ts` outlives the call.
        let rc = unsafe { ffi::sem_clockwait(self.sem.as_ptr(), ffi::CLOCK_MONOTONIC, &ts) };
        if rc == 0 {
            return Wait::Posted;
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(ffi::ETIMEDOUT) => Wait::TimedOut,
            _ => Wait::Interrupted,
        }
    }
}

impl Drop for Semaphore {
    fn drop(&mut self) {
        // SAFETY: closes the handle sem_open gave; no copy of it outlives `self`.
        unsafe { ffi::sem_close(self.sem.as_ptr()) };
    }
}

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

/// Tests make this thread's next reads of a process's stat file fail as at the file limit, or
/// every thread's reads of a server's hide its death.
#[cfg(test)]
pub(crate) mod blind {
    use std::cell::Cell;
    use std::io;
    use std::sync::{Mutex, PoisonError};

    thread_local! {
        static BLIND: Cell<(u32, u32)> = const { Cell::new((0, 0)) };
    }

    /// The processes whose death is hidden, and their stat files as they were.
    static HIDDEN: Mutex<Vec<(u32, Vec<u8>)>> = Mutex::new(Vec::new());

    /// Every thread's reads of `/proc/PID/stat` give what it holds now until `notice(pid)`, so
    /// that a test can kill a server and start the next one before a waiting call looks (a
    /// restart takes longer than the 50 ms slice after which a call looks).
    pub(crate) fn hide(pid: u32) {
        let stat = std::fs::read(format!("/proc/{pid}/stat")).unwrap();
        HIDDEN
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((pid, stat));
    }

    /// Calls see what became of process `pid` again.
    pub(crate) fn notice(pid: u32) {
        HIDDEN
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(p, _)| *p != pid);
    }

    pub(super) fn hidden(pid: u32) -> Option<Vec<u8>> {
        let hidden = HIDDEN.lock().unwrap_or_else(PoisonError::into_inner);
        hidden
            .iter()
            .find(|(p, _)| *p == pid)
            .map(|(_, s)| s.clone())
    }

    /// What the next read of a process's stat file (not hidden) does first, once.
    type Look = (u32, Box<dyn FnOnce() + Send>);
    static AT_LOOK: Mutex<Option<Look>> = Mutex::new(None);

    /// The next read of `/proc/PID/stat` on any thread (its death not hidden) runs `then` first:
    /// something the server does just before the caller looks at it.
    pub(crate) fn at_look(pid: u32, then: impl FnOnce() + Send + 'static) {
        *AT_LOOK.lock().unwrap_or_else(PoisonError::into_inner) = Some((pid, Box::new(then)));
    }

    pub(super) fn look(pid: u32) {
        let then = {
            let mut at = AT_LOOK.lock().unwrap_or_else(PoisonError::into_inner);
            match at.take() {
                Some((p, then)) if p == pid => Some(then),
                other => {
                    *at = other;
                    None
                }
            }
        };
        if let Some(then) = then {
            then();
        }
    }

    thread_local! {
        static INTERRUPTS: Cell<u32> = const { Cell::new(0) };
    }

    /// The next `calls` `posix_fallocate` calls on this thread are interrupted (EINTR).
    pub(crate) fn interrupt_fallocate(calls: u32) {
        INTERRUPTS.with(|n| n.set(calls));
    }

    /// How many of them are left.
    pub(crate) fn interrupts_left() -> u32 {
        INTERRUPTS.with(Cell::get)
    }

    pub(super) fn interrupt() -> bool {
        INTERRUPTS.with(|n| {
            let left = n.get();
            n.set(left.saturating_sub(1));
            left > 0
        })
    }

    /// The next `reads` reads of `/proc/PID/stat` on this thread fail EMFILE.
    pub(crate) fn stat_of(pid: u32, reads: u32) {
        BLIND.with(|b| b.set((pid, reads)));
    }

    pub(super) fn take(pid: u32) -> Option<io::Error> {
        BLIND.with(|b| match b.get() {
            (p, n) if p == pid && n > 0 => {
                b.set((p, n - 1));
                Some(io::Error::from_raw_os_error(super::ffi::EMFILE))
            }
            _ => None,
        })
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
