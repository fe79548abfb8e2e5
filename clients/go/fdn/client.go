package fdn

// client.go: the Client and its options; Connect and Close (sections 10.1 and 10.3). Attaching
// and claiming a channel are in connect.go, whether the server lives in liveness.go.

import (
	"context"
	"os"
	"runtime"
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
	dataToken       uint64 // dataName's record in named (segment.go): unlinked only while it is ours
	nextID          uint64
	loaned          bool
	redialed        bool // this call reconnected after its server died as it waited (ready): not sent again
	moved           bool // this call reconnected, its server found gone before a handler saw its request: a resend once published
	resent          bool // this call was counted a resend (once per call)
	dialed          bool // connected once: every later connect is a reconnect
	foundGone       bool // the last connect failed because the region's server is gone (spec 10.3)
	counts          counts
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

// closedDuring is the error of a call whose client Close (on another goroutine) closed under it.
func (c *Client) closedDuring() error {
	return fail(ServerUnavailable, 0, "the client of %q was closed during the call", c.name)
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
