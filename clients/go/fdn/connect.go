package fdn

// connect.go: attach to a server by name and claim a channel (section 10.1): map its region and
// check it, wait for a hung server's beat, take the region mutex, claim the first free channel.

import (
	"fmt"
	"math"
	"os"
	"sync/atomic"
	"syscall"
	"time"
)

// connect attaches and claims a channel; deadline (monotonic ns, 0 for none) is the calling
// request's, which bounds the waits for a hung server's beat and for the region mutex as
// ConnectTimeoutMs does (section 10.1).
func (c *Client) connect(deadline uint64) error {
	c.foundGone = false
	err := c.openRegion()
	if err == nil {
		err = c.waitBeating(deadline)
	}
	if err == nil {
		err = c.claim(deadline)
	}
	if err != nil {
		c.disconnect()
		return err
	}
	c.connected = true
	c.countConnect()
	return nil
}

// openRegion maps the region of the server called c.name and checks its header (section 10.1
// steps 1-3): its protocol, its server serving, its channel blocks inside it; then opens the
// region mutex and the doorbell.
func (c *Client) openRegion() error {
	path := "/fdn-" + c.name
	fd, err := shmOpen(path, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return openFailed(c.name, err)
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if syscall.Fstat(fd, &st) != nil || st.Size < RegionSize {
		return fail(ServerUnavailable, 0, "shm server %q is not ready", c.name)
	}
	c.mode = st.Mode & 0o777
	if c.ctl, err = mmap(fd, int(st.Size)); err != nil {
		c.ctl = nil
		return fail(ServerUnavailable, 0, "mmap %s: %v", path, err)
	}
	if atomic.LoadUint32(c.u32(rMagic)) != RegionMagic {
		return fail(ServerUnavailable, 0, "shm server %q is not ready (no region header)", c.name)
	}
	if v := le.Uint16(c.ctl[rVersionMajor:]); v != ProtocolVersion {
		return fail(BadVersion, 0, "shm server %q speaks protocol %d, this client %d", c.name, v, ProtocolVersion)
	}
	c.serverPid = le.Uint32(c.ctl[rServerPid:])
	c.serverStart = le.Uint64(c.ctl[rServerStart:])
	c.maxRequestBytes = le.Uint64(c.ctl[rMaxRequestBytes:])
	c.cap = le.Uint64(c.ctl[rDefaultCapacity:])
	if err := c.serving(); err != nil {
		return err
	}
	// the channel blocks must lie in the region after its header, 8-aligned for the atomics: an
	// offset near 2^64 would wrap the sum to a small one and every channel access would panic
	count, size := le.Uint32(c.ctl[rChannelCount:]), le.Uint32(c.ctl[rChannelSize:])
	off, total := le.Uint64(c.ctl[rChannelsOffset:]), uint64(len(c.ctl))
	if size != ChanSize || off < RegionSize || off%8 != 0 || off > total || uint64(count)*uint64(size) > total-off ||
		off+uint64(count)*uint64(size) > math.MaxUint32 { // the channel words are at uint32 offsets

		return fail(Internal, 0, "shm server %q: region header (channels_offset %d, %d channels of %d bytes) disagrees with its size %d",
			c.name, off, count, size, total)
	}
	c.chanCount, c.chanBase = count, uint32(off)
	c.mutex = semOpen("/fdn-" + c.name + "-lock")
	c.bell = semOpen("/fdn-" + c.name + "-bell")
	if c.mutex == nil || c.bell == nil {
		return fail(ServerUnavailable, 0, "shm server %q: semaphores missing", c.name)
	}
	return nil
}

// openFailed is section 10.1 step 1's failure, by errno: only ENOENT says no server has the name.
// A server another user started (mode 0600) was told "no shm server named" though it served; a
// process at its file limit (EMFILE, ENFILE) may connect later: OVERLOADED, as a data segment's
// creation.
func openFailed(name string, err error) error {
	switch err {
	case syscall.ENOENT:
		return fail(ServerUnavailable, 0, "no shm server named %q", name)
	case syscall.EACCES:
		return fail(ServerUnavailable, 0, "no permission to use shm server %q (/dev/shm/fdn-%s): another user's; "+
			"a server started with mode 0o660 lets its group in", name, name)
	case syscall.EMFILE, syscall.ENFILE:
		return fail(Overloaded, 0, "shm server %q: cannot open /dev/shm/fdn-%s: %v", name, name, err)
	}
	return fail(ServerUnavailable, 0, "shm server %q: cannot open /dev/shm/fdn-%s: %v", name, name, err)
}

// serving is section 10.1 step 2: the server the region names lives, seen from here, and is
// READY; or why it takes no new client (gone, in another PID namespace, stopping).
func (c *Client) serving() error {
	if !c.alive() {
		// liveness is told by pid (section 10): a READY server whose pid is not seen here while
		// its lock file is held runs in another PID namespace (a container sharing /dev/shm only).
		// Not a zombie of the server's start time: the server, dead, seen from here (a reconnect
		// right after a SIGKILL was told another PID namespace)
		if atomic.LoadUint32(c.u32(rState)) == stateReady && lockFileHeld(c.name) &&
			!zombieHere(c.serverPid, c.serverStart) {
			return fail(ServerUnavailable, 0, "shm server %q holds its lock, but its pid %d is not a live process "+
				"seen from here: it runs in another PID namespace (a container sharing /dev/shm but not the pids), "+
				"or it is restarting. A server and its clients must share the PID namespace as well as /dev/shm "+
				"(docker run --ipc=container:S --pid=container:S; Kubernetes: shareProcessNamespace: true)",
				c.name, c.serverPid)
		}
		c.foundGone = true
		return fail(ServerUnavailable, 0, "shm server %q (pid %d) is gone", c.name, c.serverPid)
	}
	if atomic.LoadUint32(c.u32(rState)) != stateReady { // section 10.1 step 2: a STOPPING server takes no one new
		return fail(ServerUnavailable, 0, "shm server %q is stopping", c.name)
	}
	return nil
}

// waitBeating: a hung server takes no new client (section 10.3). It waits up to ConnectTimeoutMs,
// and no later than deadline (a call's, 0 for none), for the heartbeat to move (a server that has
// just resumed beats within an interval), then fails SERVER_UNAVAILABLE saying it is hung; a
// server that dies meanwhile is reported gone at once. A connect to a hung server claimed a
// channel and its call left a request there that the server could not answer, to be reclaimed
// only once it ran again: a service retrying through a stall took every channel of the server,
// and every client was told OVERLOADED. A Close on another goroutine ends the wait (a call's
// reconnect) at its next look: Close waits for the call, and waited as long as the call did.
func (c *Client) waitBeating(deadline uint64) error {
	end := monotonicNs() + uint64(c.opts.ConnectTimeoutMs)*uint64(time.Millisecond)
	limit := fmt.Sprintf("within ConnectTimeoutMs (%d ms)", c.opts.ConnectTimeoutMs)
	if deadline != 0 && deadline < end {
		end, limit = deadline, "before the call's deadline"
	}
	for {
		why := c.hung()
		if why == "" {
			return nil
		}
		if !c.alive() {
			c.foundGone = true
			return fail(ServerUnavailable, 0, "shm server %q (pid %d) is gone", c.name, c.serverPid)
		}
		if atomic.LoadInt32(&c.closed) != 0 {
			return c.closedDuring()
		}
		if err := c.ctxEnded("while waiting for the hung server's beat"); err != nil {
			return err
		}
		if monotonicNs() >= end {
			return fail(ServerUnavailable, 0, "%s (its process is stopped or stalled, and no beat came %s): "+
				"it takes no new client until it beats again", why, limit)
		}
		time.Sleep(beatPoll)
	}
}

// lockRegion takes the region mutex (section 10.1 step 4), waiting up to ConnectTimeoutMs and no
// later than deadline (a call's, 0 for none): it is held for microseconds, but for as long as a
// client stopped inside it (SIGSTOP, a debugger) stays stopped. Past ConnectTimeoutMs it fails
// OVERLOADED, at the call's deadline DEADLINE_EXCEEDED: a call with a 200 ms timeout that
// reconnected waited the whole ConnectTimeoutMs (minutes, if so configured) for the mutex. The
// wait is in slices, and a Close on another goroutine ends it (a call's reconnect): Close waits
// for the call, and waited the whole ConnectTimeoutMs.
func (c *Client) lockRegion(deadline uint64) error {
	end := monotonicNs() + uint64(c.opts.ConnectTimeoutMs)*uint64(time.Millisecond)
	byDeadline := deadline != 0 && deadline < end
	if byDeadline {
		end = deadline
	}
	for {
		slice, now := c.slice(), monotonicNs()
		if now >= end {
			slice = 0 // one look: a deadline spent on a beat's wait still takes a free mutex
		} else if left := int64(end - now); left < slice {
			slice = left
		}
		if semWait(c.mutex, slice) {
			return nil
		}
		if atomic.LoadInt32(&c.closed) != 0 {
			return c.closedDuring()
		}
		if err := c.ctxEnded("while waiting for the region mutex"); err != nil {
			return err
		}
		if monotonicNs() >= end {
			if byDeadline {
				return fail(DeadlineExceeded, 0, "shm server %q: region mutex still busy at the deadline", c.name)
			}
			return fail(Overloaded, 0, "shm server %q: region mutex busy for %d ms", c.name, c.opts.ConnectTimeoutMs)
		}
	}
}

func (c *Client) claim(deadline uint64) error {
	pid := uint32(os.Getpid())
	// owner_start_time 0 means a channel given back (spec 10.1): one written because this
	// process's own stat file could not be read (EMFILE) had the server reclaim a live client's
	// channel. So such a connect fails, having taken nothing.
	started, err := startTime(pid)
	if err != nil {
		return fail(ServerUnavailable, 0, "shm server %q: cannot read this process's start time (/proc/%d/stat): %v; no channel claimed",
			c.name, pid, err)
	}
	if err := c.lockRegion(deadline); err != nil {
		return err
	}
	atomic.StoreUint32(c.u32(rMutexHolder), pid)
	err = c.claimLocked(pid, started)
	atomic.StoreUint32(c.u32(rMutexHolder), 0)
	semPost(c.mutex)
	if err != nil {
		return err
	}
	path := fmt.Sprintf("/fdn-%s-c%d", c.name, c.index)
	if c.sem, err = semOpenErr(path); c.sem == nil {
		// claimed but of no use: give the channel back as a disconnect without the mutex does
		// (spec 10.1; only its owner writes this word), and the server reclaims it within a
		// heartbeat (10.4). Left owned by this live process it was never reclaimed: a process
		// whose connects kept failing (EMFILE) lost one channel per try.
		atomic.StoreUint64(c.u64(c.ch+cOwnerStart), 0)
		return fail(ServerUnavailable, 0, "shm server %q: cannot open the semaphore of channel %d (%s): %v", c.name, c.index, path, err)
	}
	semDrain(c.sem) // stale posts of a previous owner
	return nil
}

func (c *Client) claimLocked(pid uint32, started uint64) error {
	count, base := c.chanCount, c.chanBase // as checked (the server could rewrite the header)
	i := uint32(0)
	for ; i < count && atomic.LoadUint32(c.u32(base+i*ChanSize+cOwnerPid)) != 0; i++ {
	}
	if i == count {
		return fail(Overloaded, 0, "shm server %q: all %d channels are in use", c.name, count)
	}
	c.index, c.ch = i, base+i*ChanSize
	capacity, what := c.opts.Capacity, "Options.Capacity"
	if capacity == 0 {
		// the server's default_capacity is a suggestion: one over MaxResponseBytes would make every
		// claim reserve what this client refuses to grow to (the areas grow on demand)
		capacity, what = c.cap, "the server's default capacity"
		if capacity > c.opts.MaxResponseBytes {
			capacity = c.opts.MaxResponseBytes
		}
	}
	size, ok := pages(capacity)
	if !ok {
		return fail(TooLarge, 0, "shm server %q: %s of %d bytes is past 2^64 once rounded up to pages", c.name, what, capacity)
	}
	c.used = 0
	if err := c.attach(size, size); err != nil {
		return err
	}
	atomic.StoreUint32(c.u32(c.ch+cClientSleeping), 0)
	atomic.StoreUint64(c.u64(c.ch+cOwnerStart), started)
	c.seq = atomic.LoadUint64(c.u64(c.ch + cServerSeq))
	atomic.StoreUint64(c.u64(c.ch+cClientSeq), c.seq)
	atomic.StoreUint32(c.u32(c.ch+cOwnerPid), pid)
	atomic.StoreUint64(c.u64(rConnectEpoch), atomic.LoadUint64(c.u64(rConnectEpoch))+1)
	return nil
}
