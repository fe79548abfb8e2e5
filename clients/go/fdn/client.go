package fdn

// client.go: the Client and its options; connect to a server by name, claim a channel, check
// that the server lives, close (sections 10.1 and 10.3).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Options of a connection; the zero value of a field means its default.
type Options struct {
	SpinUs           uint32 // spin window before blocking (default 100 µs; NoSpin: do not spin)
	Capacity         uint64 // request/response area bytes (default: the server's, at most MaxResponseBytes; over MaxResponseBytes: InvalidInput)
	ConnectTimeoutMs uint32 // region mutex wait at connect, and a hung server's next beat (default 2000); a call's reconnect waits no later than its deadline
	DataCRC          bool   // the CRC also covers tensor data
	// MaxResponseBytes is the largest response the response area is grown for (default
	// DefaultMaxResponseBytes, 4 GiB; else 4096..2^48, or InvalidInput at Connect): a server's
	// TOO_LARGE answer asking more (a hostile or broken one could ask for all of /dev/shm) fails
	// the call TooLarge naming the bytes and this option, the area not grown.
	MaxResponseBytes uint64
}

const (
	// DefaultMaxResponseBytes is Options.MaxResponseBytes' default: 4 GiB, the server's default
	// max_request_bytes, so an echo of the largest request fits.
	DefaultMaxResponseBytes = uint64(1) << 32
	// MaxResponseBytesLimit is the most Options.MaxResponseBytes may be: 2^48, beyond any
	// machine's shared memory (the Python client's bound).
	MaxResponseBytesLimit = uint64(1) << 48
)

// NoSpin as Options.SpinUs blocks at once.
const NoSpin = ^uint32(0)

const (
	waitSlice = 50 * time.Millisecond
	// cancelSlice is the wait slice of a call whose context can be cancelled: a cancel is seen
	// within one (no goroutine watches the context; Go 1.19 has no context.AfterFunc)
	cancelSlice = 5 * time.Millisecond
	yieldAfter  = 2 * time.Microsecond // spin this long flat out, then yield the CPU between polls
	hungMin     = time.Second          // a heartbeat is stale after 10 intervals, never sooner than this
	beatPoll    = 5 * time.Millisecond // how often a connect waiting for a hung server's beat looks again
)

// Input is one named input tensor: row-major little-endian bytes.
type Input struct {
	Name  string
	DType DType
	Shape []uint64
	Data  []byte
}

// Result is what a call returns: views on the response area, valid until the next call.
type Result struct {
	RequestID uint64
	Model     string
	Version   string
	Outputs   []Tensor
}

// Output is the output called name, or nil.
func (r *Result) Output(name string) *Tensor {
	if r == nil {
		return nil
	}
	for i := range r.Outputs {
		if r.Outputs[i].Name == name {
			return &r.Outputs[i]
		}
	}
	return nil
}

// Float32s views an FP32 tensor's data as []float32 (no copy).
func (t *Tensor) Float32s() []float32 {
	if t == nil || t.DType != FP32 || len(t.Data) == 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&t.Data[0])), len(t.Data)/4)
}

// Client is one connection to a server: one claimed channel, one call at a time.
type Client struct {
	name string
	opts Options
	// the connection: control segment and semaphores of one server instance
	connected                         bool
	ctl                               []byte
	mutex, bell, sem                  semaphore
	serverPid                         uint32
	serverStart, maxRequestBytes, cap uint64
	mode                              uint32
	chanCount, chanBase               uint32 // read once, checked against the region's size
	// the claimed channel
	index, ch       uint32 // ch: the channel block's offset in ctl
	seq             uint64
	data            []byte
	reqCap, respCap uint64
	used            uint64
	dataName        string
	nextID          uint64
	loaned          bool
	redialed        bool // this call reconnected after its server died as it waited (ready): not sent again
	loanEnd         uint64
	loanEnded       uint64  // the request id of a LoanInfer that failed still with the server (it ended the loan)
	req             Request // reused by every call: nothing allocated per call
	resp            Response
	snap            []byte // the last response's header and payload, copied out of the area (reused)
	res             Result
	inputs          [MaxTensors]Tensor
	busy            int32 // 1 while a call (or Close) runs: a second goroutine's call is refused, not interleaved
	closed          int32 // 1 once Close began: calls refuse, and a call in flight ends at its next wait slice
	keepData        bool  // closed by the finalizer: the data segment is unlinked but stays mapped
	// the context of the call in progress (InferContext...; nil for the others): its Done channel
	// is looked at between the wait's slices, which are cancelSlice long while it has one
	ctx         context.Context
	done        <-chan struct{}
	ctxDeadline bool   // the call's deadline is the context's
	looks       uint64 // how often alive read /proc (a wait's cost: the tests count it)
}

// enter marks the client busy for one call; a closed client, or one already in a call (another
// goroutine: the result views and the channel are one call's), refuses.
func (c *Client) enter() error {
	if atomic.LoadInt32(&c.closed) != 0 {
		return c.closedError()
	}
	if !atomic.CompareAndSwapInt32(&c.busy, 0, 1) {
		if atomic.LoadInt32(&c.closed) != 0 { // a Close in progress holds it
			return c.closedError()
		}
		return fail(InvalidInput, 0, "this client is in a call from another goroutine: "+
			"one *fdn.Client makes one call at a time (use one per goroutine, or a mutex)")
	}
	if atomic.LoadInt32(&c.closed) != 0 {
		atomic.StoreInt32(&c.busy, 0)
		return c.closedError()
	}
	return nil
}

// errNilClient is the error of a call on a nil *Client (a Connect that failed, unchecked).
func errNilClient() error {
	return fail(InvalidInput, 0, "the client is nil (did Connect fail?)")
}

func (c *Client) closedError() error {
	return fail(ServerUnavailable, 0, "the client of %q is closed", c.name)
}

func (c *Client) leave() { atomic.StoreInt32(&c.busy, 0) }

func (c *Client) u32(off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&c.ctl[off])) }
func (c *Client) u64(off uint32) *uint64 { return (*uint64)(unsafe.Pointer(&c.ctl[off])) }

// procStat reads /proc/PID/stat. A variable so that a test can make it fail as it does for a
// client at its file limit (EMFILE), which says nothing of the server's death.
var procStat = func(pid uint32) ([]byte, error) {
	return os.ReadFile("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/stat")
}

// procMounted says whether /proc is mounted: a stat of /proc/self, which takes no file descriptor
// (it answers even at EMFILE). Without /proc an ENOENT from /proc/PID/stat proves no death. A
// variable so that a test can say it is not.
var procMounted = func() bool {
	_, err := os.Stat("/proc/self")
	return err == nil
}

// errBadStat: a /proc/PID/stat without the fields of section 10.3.
var errBadStat = errors.New("malformed /proc/PID/stat")

// statFields is /proc/PID/stat from field 3 (the state) on: the command name, field 2, may hold
// spaces and ')', so only what follows the last ')' is split.
func statFields(pid uint32) ([][]byte, error) {
	raw, err := procStat(pid)
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return nil, errBadStat
	}
	fields := bytes.Fields(raw[i+1:])
	if len(fields) < 20 {
		return nil, errBadStat
	}
	return fields, nil
}

// startTime is field 22 of /proc/PID/stat (clock ticks since boot), or why it cannot be told: the
// process is gone or a zombie, or its stat file cannot be read (EMFILE at this process's file
// limit, ENFILE, ENOMEM).
func startTime(pid uint32) (uint64, error) {
	fields, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	if fields[0][0] == 'Z' || fields[0][0] == 'X' {
		return 0, fmt.Errorf("process %d is a zombie", pid)
	}
	v, err := strconv.ParseUint(string(fields[19]), 10, 64)
	if err != nil {
		return 0, errBadStat
	}
	return v, nil
}

// provenGone is the one liveness classifier (spec 10.3): true only on proof that process pid,
// started at started, has ended: no /proc/PID (ENOENT where /proc is mounted; ESRCH as it is
// reaped), a zombie, or another start time. A stat file that cannot be read for another reason
// (EMFILE at this process's file limit, ENFILE, ENOMEM, EACCES, no /proc at all) proves nothing: kill(pid, 0), which needs no file
// descriptor, settles it (ESRCH: gone; success or EPERM: alive, its start time and whether it is a
// zombie unchecked then). Taking such a read for death failed a call to a live server gone.
func provenGone(pid uint32, started uint64) bool {
	if pid == 0 || pid > math.MaxInt32 { // no pid_t holds it: no such process (and never kill(-1))
		return true
	}
	fields, err := statFields(pid)
	if errors.Is(err, syscall.ESRCH) || (errors.Is(err, syscall.ENOENT) && procMounted()) {
		return true
	}
	if err == nil {
		if fields[0][0] == 'Z' || fields[0][0] == 'X' {
			return true
		}
		if v, perr := strconv.ParseUint(string(fields[19]), 10, 64); perr == nil {
			return v != started
		}
	}
	return syscall.Kill(int(pid), 0) == syscall.ESRCH
}

// zombieHere says whether process pid, started at started, is a zombie seen from here (dead, not
// yet reaped): the server itself, its other threads perhaps still exiting with its lock file held
// (a SIGKILL ends the main thread first; the last one unmaps the memory, a model's gigabytes for a
// tenth of a second and more, then closes the files). False where its stat cannot be read.
func zombieHere(pid uint32, started uint64) bool {
	if pid == 0 || pid > math.MaxInt32 {
		return false
	}
	fields, err := statFields(pid)
	if err != nil || (fields[0][0] != 'Z' && fields[0][0] != 'X') {
		return false
	}
	v, err := strconv.ParseUint(string(fields[19]), 10, 64)
	return err == nil && v == started
}

// alive is section 10.3: READY or STOPPING, and server_pid is not proven gone (provenGone).
func (c *Client) alive() bool {
	state := atomic.LoadUint32(c.u32(rState))
	if state != stateReady && state != stateStopping {
		return false
	}
	c.looks++
	return !provenGone(c.serverPid, c.serverStart)
}

// lockFileHeld says whether a live process holds the flock on the server's lock file
// /dev/shm/fdn-NAME.lock. Only a regular file is asked (no symlink followed, no wait on a fifo);
// anything else is "no".
func lockFileHeld(name string) bool {
	fd, err := syscall.Open("/dev/shm/fdn-"+name+".lock",
		syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer syscall.Close(fd) // drops the shared lock if it was taken
	var st syscall.Stat_t
	if syscall.Fstat(fd, &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return false
	}
	err = syscall.Flock(fd, syscall.LOCK_SH|syscall.LOCK_NB)
	return err == syscall.EWOULDBLOCK || err == syscall.EAGAIN
}

// ServerNameMax is the longest server name: with it every data name "/fdn-N-d{i}-{pid}-{gen}"
// fits the channel block's data_name with its NUL (spec section 2):
// 5 + 32 + 2 + 4 (index < 4096) + 1 + 7 (pid <= 4194304) + 1 + 11 (gen) = 63.
const ServerNameMax = 32

func validName(name string) bool {
	if len(name) < 1 || len(name) > ServerNameMax {
		return false
	}
	for _, ch := range []byte(name) {
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '_') {
			return false
		}
	}
	return true
}

// Connect attaches to the server called name and claims one channel (section 10.1). Close the
// client when done; one that becomes unreachable without Close is closed by the garbage
// collector (a finalizer), so its channel goes back to the server then rather than at exit.
func Connect(name string, opts Options) (*Client, error) {
	name, opts, err := checkOptions(name, opts)
	if err != nil {
		return nil, err
	}
	c := &Client{name: name, opts: opts, nextID: 1}
	if err := c.connect(0); err != nil {
		return nil, err
	}
	runtime.SetFinalizer(c, (*Client).finalize)
	return c, nil
}

// checkOptions checks the server's name and the options, and fills in the defaults.
func checkOptions(name string, opts Options) (string, Options, error) {
	if len(name) > 6 && name[:6] == "shm://" {
		name = name[6:]
	}
	if !validName(name) {
		return name, opts, fail(InvalidInput, 0, "shm server name %q must be 1-%d characters of [A-Za-z0-9_]", name, ServerNameMax)
	}
	if opts.SpinUs == 0 {
		opts.SpinUs = 100
	} else if opts.SpinUs == NoSpin {
		opts.SpinUs = 0
	}
	if opts.ConnectTimeoutMs == 0 {
		opts.ConnectTimeoutMs = 2000
	}
	if opts.MaxResponseBytes == 0 {
		opts.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if opts.MaxResponseBytes < page || opts.MaxResponseBytes > MaxResponseBytesLimit {
		return name, opts, fail(InvalidInput, 0, "Options.MaxResponseBytes must be 4096..2^48 bytes (0: the default, 4 GiB), not %d",
			opts.MaxResponseBytes)
	}
	// the response area starts at Capacity: one over the limit would be a limit that is not one
	// (refused rather than either silently winning)
	if opts.Capacity > opts.MaxResponseBytes {
		return name, opts, fail(InvalidInput, 0, "Options.Capacity (%d bytes) exceeds Options.MaxResponseBytes (%d bytes): the "+
			"response area starts at capacity; lower Capacity or raise MaxResponseBytes", opts.Capacity, opts.MaxResponseBytes)
	}
	return name, opts, nil
}

// finalize is the safety net for a client dropped without Close: the garbage collector calls it
// once c is unreachable (so no call is in flight), and it closes c as Close does, except that
// the data segment stays mapped (its name unlinked): a []float32 or []byte view of an output or
// a loaned input does not keep c reachable, and one still in use must not become a fault. On a
// goroutine of its own: Close may wait for the region mutex (ConnectTimeoutMs), and one
// goroutine runs the finalizers of the whole program. Close removes it, so a closed client is
// released once.
func (c *Client) finalize() {
	c.keepData = true
	go c.Close()
}

// connect attaches and claims a channel; deadline (monotonic ns, 0 for none) is the calling
// request's, which bounds the waits for a hung server's beat and for the region mutex as
// ConnectTimeoutMs does (section 10.1).
func (c *Client) connect(deadline uint64) error {
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
	return nil
}

func (c *Client) openRegion() error {
	path := "/fdn-" + c.name
	fd, err := shmOpen(path, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fail(ServerUnavailable, 0, "no shm server named %q", c.name)
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
		return fail(ServerUnavailable, 0, "shm server %q (pid %d) is gone", c.name, c.serverPid)
	}
	if atomic.LoadUint32(c.u32(rState)) != stateReady { // section 10.1 step 2: a STOPPING server takes no one new
		return fail(ServerUnavailable, 0, "shm server %q is stopping", c.name)
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

// hung is section 10.3: why the server counts as hung (its heartbeat is older than 10 intervals,
// and at least 1 s: a stopped or stalled process), or "". The server beats from a thread of its
// own, so a model that runs for seconds does not make it hung.
func (c *Client) hung() string {
	beat := atomic.LoadUint64(c.u64(rHeartbeatNs))
	interval := uint64(atomic.LoadUint32(c.u32(rHeartbeatMs)))
	if interval == 0 {
		interval = 1
	}
	stale := 10 * interval * uint64(time.Millisecond)
	if stale < uint64(hungMin) {
		stale = uint64(hungMin)
	}
	now := monotonicNs()
	if beat == 0 || now <= beat+stale {
		return ""
	}
	return fmt.Sprintf("shm server %q (pid %d) is hung: no heartbeat for %d ms", c.name, c.serverPid, (now-beat)/1e6)
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

// closedDuring is the error of a call whose client Close (on another goroutine) closed under it.
func (c *Client) closedDuring() error {
	return fail(ServerUnavailable, 0, "the client of %q was closed during the call", c.name)
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

func (c *Client) disconnect() {
	semClose(c.sem)
	semClose(c.mutex)
	semClose(c.bell)
	c.sem, c.mutex, c.bell = nil, nil, nil
	c.dropData()
	if c.ctl != nil {
		syscall.Munmap(c.ctl)
		c.ctl = nil
	}
	c.connected, c.loaned = false, false
}

// Close releases the channel and unlinks this client's data segment. A closed client refuses
// every later call (ServerUnavailable); closing again does nothing.
//
// Close may be called while another goroutine's call is in flight: that call fails
// ServerUnavailable ("closed during the call") within one wait slice (50 ms), without reading the
// response area (a call reconnecting too, waiting for a hung server's beat or the region mutex),
// and Close returns once it has (the results and loaned slices of this client are unmapped then:
// do not use them after Close). A request still with the server after 100 ms is
// left to it: the channel is given back with owner_start_time = 0 and the server reclaims it when
// done (spec 10.1, "Disconnect"), also when the region mutex stays busy for ConnectTimeoutMs.
//
// A client dropped without Close is closed by its finalizer once the garbage collector finds it
// unreachable: its channel goes back to the server and its data segment is unlinked, but the
// segment stays mapped until the process exits (views of its outputs that outlive the client
// stay readable), so a dropped client still costs its data segment's memory: call Close.
func (c *Client) Close() error {
	if c == nil {
		return errNilClient()
	}
	runtime.SetFinalizer(c, nil) // closed here: the garbage collector has nothing left to release
	if !atomic.CompareAndSwapInt32(&c.closed, 0, 1) {
		return nil
	}
	for !atomic.CompareAndSwapInt32(&c.busy, 0, 1) {
		time.Sleep(100 * time.Microsecond) // a call in flight: it sees closed within a wait slice
	}
	defer c.leave()
	if c.connected && c.alive() {
		end := time.Now().Add(100 * time.Millisecond) // an answer still owed gets 100 ms
		for atomic.LoadUint64(c.u64(c.ch+cServerSeq)) != c.seq && time.Now().Before(end) {
			time.Sleep(time.Millisecond)
		}
		if semWait(c.mutex, int64(c.opts.ConnectTimeoutMs)*1e6) {
			atomic.StoreUint32(c.u32(rMutexHolder), uint32(os.Getpid()))
			if atomic.LoadUint64(c.u64(c.ch+cServerSeq)) == c.seq {
				atomic.StoreUint32(c.u32(c.ch+cOwnerPid), 0)
			} else { // busy: the server reclaims it when done
				atomic.StoreUint64(c.u64(c.ch+cOwnerStart), 0)
			}
			atomic.StoreUint64(c.u64(rConnectEpoch), atomic.LoadUint64(c.u64(rConnectEpoch))+1)
			atomic.StoreUint32(c.u32(rMutexHolder), 0)
			semPost(c.mutex)
		} else {
			// the mutex stayed busy: give the channel back without it (only its owner writes
			// this word); the server reclaims it within a heartbeat (spec 10.1, 10.4)
			atomic.StoreUint64(c.u64(c.ch+cOwnerStart), 0)
		}
	}
	c.disconnect()
	return nil
}
