//! Safe wrappers over the libc calls: shared-memory segments mapped into this process, named
//! semaphores, the monotonic clock, and process liveness. All of the crate's `unsafe` that
//! touches memory is here and in its submodules (and the declarations in `ffi`): the mappings here,
//! `semaphore` and `liveness` (the clock, `/proc`, the lock file).

use crate::ffi;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::PermissionsExt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

mod liveness;
mod semaphore;

#[cfg(test)]
pub(crate) use liveness::lock_now;
pub use liveness::{lock_file_held, monotonic_ns, process_gone, process_start_time, zombie_here};
pub use semaphore::{Semaphore, Wait};

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
        #[cfg(test)]
        if let Some(e) = blind::open_error() {
            return Err(e);
        }
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

/// Tests make this thread's next reads of a process's stat file fail as at the file limit, every
/// thread's reads of a server's hide its death, or this thread's next open of a segment fail.
#[cfg(test)]
pub(crate) mod blind;
