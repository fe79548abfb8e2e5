package fdn

// segment.go: a channel's data segment: name, create, allocate and map it, publish it, grow
// (section 10.1, step 6 and "Growing").

import (
	"fmt"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// pages rounds n up to whole pages, at least one; false when that is past 2^64 (it would wrap to
// a small size).
func pages(n uint64) (uint64, bool) {
	if n > ^uint64(0)-(page-1) {
		return 0, false
	}
	if n < page {
		return page, true
	}
	return (n + page - 1) / page * page, true
}

const dataNameSize = 64 // the channel block's data_name: at most 63 bytes, then a NUL

// dataName is the data segment's name, refused (never cut) when it would not fit the channel
// block's data_name with its NUL.
func dataName(server string, index uint32, pid int, gen uint64) (string, error) {
	name := fmt.Sprintf("/fdn-%s-d%d-%d-%d", server, index, pid, gen)
	if len(name) >= dataNameSize {
		return "", fail(Internal, 0, "shm data segment name %s is %d bytes; data_name holds at most %d", name, len(name), dataNameSize-1)
	}
	return name, nil
}

// allocStatus is the code of a failed step of creating a data segment (spec 10.1 step 6),
// shm_open included (a tmpfs out of inodes fails it ENOSPC): OVERLOADED when /dev/shm or memory
// has no room now, no file descriptor is free now or a posix_fallocate was interrupted
// fallocateTries times in a row (it may be later), TOO_LARGE for a size no
// file or /dev/shm can ever hold (sized: a step after shm_open, which sizes, allocates or maps),
// INTERNAL for anything else.
func allocStatus(err error, sized bool) Status {
	switch err {
	case syscall.ENOSPC, syscall.ENOMEM, syscall.EMFILE, syscall.ENFILE, syscall.EINTR:
		return Overloaded
	case syscall.EFBIG, syscall.EOVERFLOW, syscall.EINVAL:
		if sized {
			return TooLarge
		}
	}
	return Internal
}

// named is this process's data segments by name, each with the token of the segment made under it
// (spec 10.1 step 6). A name is the server's, the channel's index, the pid and a generation, so
// after a restart under the name a client of this process that claims a channel of the new server
// makes the very name another client still holds on the dead server's region: it replaces that
// segment, and the other, dropping its dead connection, unlinked the name, the new owner's segment
// by then (the server parked that channel; its calls ran into their deadlines). A client unlinks a
// name only while the segment is its own: one recorded with another token is left to its maker.
// Held across a create (shm_open, a left-over replaced) and its record, and across a check and its
// unlink; not across the allocation. (A token, not the *Client: the record must not keep a client
// its finalizer would close reachable. Go programs do not fork without exec.)
var named = struct {
	sync.Mutex
	made   uint64 // segments made so far: the last token handed out
	tokens map[string]uint64
}{tokens: map[string]uint64{}}

// unlinkOwn unlinks the data segment name unless another client of this process has made one of
// that name since; it forgets the record of token.
func unlinkOwn(name string, token uint64) {
	named.Lock()
	defer named.Unlock()
	if t, ok := named.tokens[name]; !ok || t == token {
		delete(named.tokens, name)
		shmUnlink(name)
	}
}

// shmOpenData is shm_open as createData calls it; a test makes it fail as a full /dev/shm does
// (ENOSPC: a tmpfs out of inodes).
var shmOpenData = shmOpen

// fallocateTries is how many posix_fallocate calls in a row a signal may interrupt (EINTR) before
// a data segment's creation fails OVERLOADED (spec 10.1 step 6).
const fallocateTries = 100

// fallocateSys is fallocate(2) as fallocate calls it; a test interrupts it.
var fallocateSys = syscall.Fallocate

// fallocate allocates the pages of the segment behind fd (posix_fallocate); a file system that
// cannot leaves it sparse, as before. Interrupted (the runtime's signals), it starts again, up to
// fallocateTries times in a row: tmpfs undoes what an interrupted call allocated, so signals that
// come faster than a large segment allocates (a profiler's timer, on older kernels) kept it
// trying for ever.
func fallocate(fd int, size int64) error {
	for tries := 1; ; tries++ {
		err := fallocateSys(fd, 0, 0, size)
		switch err {
		case syscall.EINTR:
			if tries < fallocateTries {
				continue
			}
		case syscall.EOPNOTSUPP, syscall.ENOSYS, syscall.ENODEV:
			return nil
		}
		return err
	}
}

// createData creates, allocates and maps the data segment name of reqCap + respCap bytes
// (section 10.1, step 6). Its pages are allocated now: on a full /dev/shm a sparse segment maps
// fine, and the server's first write to a missing page would be SIGBUS, its end. A segment of
// this name is ours (it carries our pid), left over from a claim or grow that failed, or another
// client's of this process on a dead server's region: it is replaced (and recorded as this one's,
// named: the token returned). On any failure nothing is left in /dev/shm.
func (c *Client) createData(name string, reqCap, respCap uint64) ([]byte, uint64, error) {
	size := reqCap + respCap
	if size < reqCap || size > math.MaxInt64 || uint64(int(size)) != size {
		return nil, 0, fail(TooLarge, 0, "shm server %q channel %d: data segment %s of capacities %d+%d bytes: too large",
			c.name, c.index, name, reqCap, respCap)
	}
	var vfs syscall.Statfs_t
	if syscall.Statfs("/dev/shm", &vfs) == nil {
		unit := uint64(vfs.Frsize)
		if unit == 0 {
			unit = uint64(vfs.Bsize)
		}
		if total := vfs.Blocks * unit; total > 0 && size > total {
			return nil, 0, fail(TooLarge, 0, "shm server %q channel %d: data segment %s of %d bytes is more than /dev/shm can ever hold (%d bytes)",
				c.name, c.index, name, size, total)
		}
	}
	flags := syscall.O_RDWR | syscall.O_CREAT | syscall.O_EXCL | syscall.O_CLOEXEC
	named.Lock()
	fd, err := shmOpenData(name, flags, c.mode)
	// ours (it carries our pid): left over from a failed claim or grow, or another client's of
	// this process on a dead server's region (named: that one leaves the name to us)
	if err == syscall.EEXIST {
		shmUnlink(name)
		fd, err = shmOpenData(name, flags, c.mode)
	}
	var token uint64
	if err == nil {
		named.made++
		token = named.made
		named.tokens[name] = token
	}
	named.Unlock()
	var mem []byte
	step, opened := "shm_open", err == nil
	if opened {
		step = "fchmod"
		if err = syscall.Fchmod(fd, c.mode); err == nil {
			step = "ftruncate"
			if err = syscall.Ftruncate(fd, int64(size)); err == nil {
				step = "posix_fallocate"
				if err = fallocate(fd, int64(size)); err == nil {
					step = "mmap"
					mem, err = mmap(fd, int(size))
				}
			}
		}
		syscall.Close(fd)
		if err != nil {
			unlinkOwn(name, token)
		}
	}
	if err != nil {
		code, later := allocStatus(err, opened), ""
		if err == syscall.EMFILE || err == syscall.ENFILE {
			later = ": no file descriptor free now, it may be later"
		} else if err == syscall.EINTR {
			later = fmt.Sprintf(": %d times in a row, it may pass later", fallocateTries)
		} else if code == Overloaded {
			later = ": no room now, it may fit later"
		}
		return nil, 0, fail(code, 0, "shm server %q channel %d: cannot allocate data segment %s of %d bytes in /dev/shm (%s: %v)%s",
			c.name, c.index, name, size, step, err, later)
	}
	return mem, token, nil
}

// attach creates a data segment of these capacities and publishes it ("Growing", 10.1); the
// request bytes in use are carried over. On failure the channel keeps its old segment and
// nothing new is left in /dev/shm.
func (c *Client) attach(reqCap, respCap uint64) error {
	gen := atomic.LoadUint64(c.u64(c.ch+cDataGen)) + 1
	name, err := dataName(c.name, c.index, os.Getpid(), gen)
	if err != nil {
		return err
	}
	mem, token, err := c.createData(name, reqCap, respCap)
	if err != nil {
		return err
	}
	if c.data != nil && c.used > 0 {
		copy(mem, c.data[:c.used])
	}
	atomic.StoreUint64(c.u64(c.ch+cRequestCapacity), reqCap)
	atomic.StoreUint64(c.u64(c.ch+cResponseCapacity), respCap)
	putFixed(c.ctl[c.ch+cDataName:c.ch+cDataName+dataNameSize], name)
	atomic.StoreUint64(c.u64(c.ch+cDataGen), gen)
	c.dropData()
	c.data, c.reqCap, c.respCap, c.dataName, c.dataToken = mem, reqCap, respCap, name, token
	return nil
}

func (c *Client) dropData() {
	if c.data != nil {
		unlinkOwn(c.dataName, c.dataToken)
		if !c.keepData { // (the finalizer's close: views of it may outlive the client)
			syscall.Munmap(c.data)
		}
		c.data = nil
	}
}
