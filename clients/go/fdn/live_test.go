package fdn

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// echoServer starts the shm transport's echo server (python -m foundation_shm._echo NAME
// [ARGS]) with the Python in FDN_TEST_PYTHON, and waits until it serves.
func echoServer(t *testing.T, python, name string, args ...string) *exec.Cmd {
	t.Helper()
	return pythonServer(t, python, append([]string{"-m", "foundation_shm._echo", name}, args...))
}

// pythonServer starts `python ARGV...`, a server that prints "ready" once it serves, and waits
// until it does.
func pythonServer(t *testing.T, python string, argv []string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(python, argv...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready") {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("the echo server did not start: %q %v", line, err)
	}
	return cmd
}

func removeObjects(name string) {
	for _, pattern := range []string{"/dev/shm/fdn-" + name + "*", "/dev/shm/sem.fdn-" + name + "-*"} {
		paths, _ := filepath.Glob(pattern)
		for _, p := range paths {
			if base := filepath.Base(p); strings.HasPrefix(base, "fdn-"+name+"-") || strings.HasPrefix(base, "fdn-"+name+".") ||
				base == "fdn-"+name || strings.HasPrefix(base, "sem.fdn-"+name+"-") {
				os.Remove(p)
			}
		}
	}
}

// echo is an echo server started for one test under a name of its own; the test's cleanup stops
// whichever process serves that name then (the test may have restarted it) and removes its
// objects.
type echo struct {
	t            *testing.T
	python, name string
	cmd          *exec.Cmd
}

// startEcho starts an echo server (echoServer, with args) named prefix and the pid, padded to the
// longest name (its data names still fit), and stops it when the test ends; it skips the test
// without FDN_TEST_PYTHON.
func startEcho(t *testing.T, prefix string, args ...string) *echo {
	t.Helper()
	python := os.Getenv("FDN_TEST_PYTHON")
	if python == "" {
		t.Skip("set FDN_TEST_PYTHON to a Python with foundation_shm (the harness does)")
	}
	name := fmt.Sprintf("%s%d", prefix, os.Getpid())
	name += strings.Repeat("_", ServerNameMax-len(name))
	e := &echo{t: t, python: python, name: name}
	e.cmd = echoServer(t, python, name, args...)
	t.Cleanup(func() {
		e.cmd.Process.Kill()
		e.cmd.Wait()
		removeObjects(name)
	})
	return e
}

// stop sends the server sig and waits until it has exited.
func (e *echo) stop(sig os.Signal) {
	e.cmd.Process.Signal(sig)
	e.cmd.Wait()
}

// restart starts the server again under its name (once the test has stopped it).
func (e *echo) restart() {
	e.t.Helper()
	e.cmd = echoServer(e.t, e.python, e.name)
}

// connect connects a client to the server, failing the test if it cannot; the client is closed
// when the test ends (a second Close does nothing, so a test may close it itself).
func (e *echo) connect(opts Options) *Client {
	e.t.Helper()
	c, err := Connect(e.name, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// liveClient starts an echo server (startEcho) and connects one client to it with default
// options; both end with the test, the client first.
func liveClient(t *testing.T, prefix string) (*Client, *echo) {
	t.Helper()
	e := startEcho(t, prefix)
	return e.connect(Options{}), e
}

// A client against a real server: deadlines keep the channel busy until the late answer, a
// killed server is SERVER_UNAVAILABLE, and the next call finds a restarted server.
func TestLiveAgainstTheEchoServer(t *testing.T) {
	c, srv := liveClient(t, "fdngo")
	x := []byte{1, 0, 0, 0, 2, 0, 0, 0}
	in := []Input{{Name: "x", DType: INT32, Shape: []uint64{2}, Data: x}}
	echo := func(what string) {
		t.Helper()
		res, err := c.Infer("echo", in, 5*time.Second)
		if err != nil || res.Output("x") == nil || !bytes.Equal(res.Output("x").Data, x) {
			t.Fatalf("%s: %v %+v", what, err, res)
		}
	}
	echo("first call")

	_, err := c.InferCall("sleep", in, 20*time.Millisecond, Call{Params: []byte(`{"ms": 300}`)})
	if CodeOf(err) != DeadlineExceeded {
		t.Fatalf("a 20 ms deadline on a 300 ms call: %v", err)
	}
	echo("the call after a deadline (waits for the late answer, then reads its own)")

	srv.stop(syscall.SIGKILL)
	if _, err = c.Infer("echo", in, 5*time.Second); CodeOf(err) != ServerUnavailable {
		t.Fatalf("a killed server: %v", err)
	}
	wantCounts(t, c, "after a call whose reconnect failed", 0, 0)
	srv.restart()
	echo("the call after the server restarted")
	wantCounts(t, c, "after the call that reconnected (its request sent there first)", 1, 0)

	srv.stop(syscall.SIGTERM) // a graceful stop: the region says STOPPED
	srv.restart()
	echo("the first call after a graceful restart")
	// the call found the region STOPPED before it published: sent to the new connection instead
	wantCounts(t, c, "after the first call after a graceful restart", 2, 1)
}

// One client shared by goroutines refuses the overlapping calls instead of interleaving them
// (each answer stays its caller's); a closed client refuses every call and claims nothing.
func TestSharedAndClosedClientsRefuseInsteadOfMisbehaving(t *testing.T) {
	c, srv := liveClient(t, "fdngoshared")
	var mu sync.Mutex
	counts := map[string]int{}
	var wg sync.WaitGroup
	// A result is a view valid until the client's next call, which may be another goroutine's:
	// its data is read only while the test itself holds the client (c.enter, the guard a call
	// takes), and only when exactly one request went out since the test last held it (nextID
	// moved by one): then that request is this goroutine's, and its answer must be x. Reading it
	// any other way races with the next call (go test -race flags it).
	hold := func(read func()) bool {
		if c.enter() != nil {
			return false // another goroutine is in a call
		}
		defer c.leave()
		read()
		return true
	}
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				v := uint32(g*1000 + i)
				x := []byte{byte(v), byte(v >> 8), 0, 0}
				var before uint64
				held := hold(func() { before = c.nextID })
				res, err := c.Infer("echo", []Input{{Name: "x", DType: INT32, Shape: []uint64{1}, Data: x}}, 5*time.Second)
				key := "ok"
				switch {
				case err != nil && strings.Contains(err.Error(), "another goroutine"):
					key = "refused"
				case err != nil:
					key = "error: " + err.Error()
				case held:
					hold(func() {
						if c.nextID != before+1 {
							return // another call went out: the view may be its answer now
						}
						key = "ok, checked"
						if res.RequestID != before || !bytes.Equal(res.Output("x").Data, x) {
							key = fmt.Sprintf("MISMATCH: request %d (sent %d) answered %v for %v",
								res.RequestID, before, res.Output("x").Data, x)
						}
					})
				}
				mu.Lock()
				counts[key]++
				mu.Unlock()
			}
		}(g)
	}
	wg.Wait()
	counts["ok"] += counts["ok, checked"]
	if counts["ok"]+counts["refused"] != 800 || counts["ok, checked"] == 0 {
		t.Fatalf("4 goroutines on one client: %v", counts)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
	x := []byte{1, 0, 0, 0}
	if _, err := c.Infer("echo", []Input{{Name: "x", DType: INT32, Shape: []uint64{1}, Data: x}}, time.Second); CodeOf(err) != ServerUnavailable {
		t.Fatalf("a call after Close: %v", err)
	}
	if paths := dataSegments(srv.name); len(paths) != 0 {
		t.Fatalf("a closed client claimed a channel again: %v", paths)
	}
}

// Close from several goroutines at once, while others call: the first Close closes (a call in
// progress ends ServerUnavailable first), the others do nothing, never a data race (go test
// -race: a refused Close read c.closed while the Close in progress wrote it).
func TestConcurrentClosesAndCallsAreRaceFree(t *testing.T) {
	srv := startEcho(t, "fdngoclose")
	x := []byte{1, 0, 0, 0}
	in := []Input{{Name: "x", DType: INT32, Shape: []uint64{1}, Data: x}}
	for round := 0; round < 10; round++ {
		c := srv.connect(Options{})
		var wg sync.WaitGroup
		errs := make(chan error, 80)
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				for i := 0; i < 20; i++ {
					if g%2 == 0 {
						if err := c.Close(); err != nil && !strings.Contains(err.Error(), "another goroutine") {
							errs <- err
						}
					} else if _, err := c.Infer("echo", in, 5*time.Second); err != nil &&
						!strings.Contains(err.Error(), "another goroutine") && CodeOf(err) != ServerUnavailable {
						errs <- err
					}
				}
			}(g)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("round %d: %v", round, err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("Close after the goroutines: %v", err)
		}
		if _, err := c.Infer("echo", in, time.Second); CodeOf(err) != ServerUnavailable {
			t.Fatalf("a call after Close: %v", err)
		}
	}
}

// ownerWords are the owner_pid and owner_start_time of channel block ch, read through another
// client's mapping of the control segment.
func ownerWords(o *Client, ch uint32) (uint32, uint64) {
	return atomic.LoadUint32(o.u32(ch + cOwnerPid)), atomic.LoadUint64(o.u64(ch + cOwnerStart))
}

// waitFreed polls until channel block ch of o's server has no owner (the server reclaimed it).
func waitFreed(t *testing.T, o *Client, ch uint32, what string) {
	t.Helper()
	// a minute: the server's beat comes late on a loaded machine, not never
	for end := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		if pid, _ := ownerWords(o, ch); pid == 0 {
			return
		}
		if time.Now().After(end) {
			pid, start := ownerWords(o, ch)
			t.Fatalf("%s: the channel is still owned (owner_pid %d, owner_start_time %d)", what, pid, start)
		}
	}
}

// Close while another goroutine's call waits for its answer closes the client (it was refused
// for the call in progress, leaving the client open): the call fails ServerUnavailable within a
// wait slice without reading the response area, and the channel, given back with its request
// pending (owner_start_time = 0, spec 10.1), returns to the server once it has answered.
func TestCloseWhileAnotherGoroutinesCallWaits(t *testing.T) {
	c, srv := liveClient(t, "fdngowait")
	o := srv.connect(Options{}) // looks at the control segment after c is closed
	x := []byte{1, 0, 0, 0}
	in := []Input{{Name: "x", DType: INT32, Shape: []uint64{1}, Data: x}}
	if _, err := c.Infer("echo", in, 5*time.Second); err != nil { // a response in the area
		t.Fatal(err)
	}
	ch := c.ch
	published := atomic.LoadUint64(o.u64(ch + cClientSeq))
	done := make(chan error, 1)
	go func() {
		_, err := c.InferCall("sleep", in, time.Minute, Call{Params: []byte(`{"ms": 600}`)})
		done <- err
	}()
	// published: the server holds the request (a fixed 100 ms sleep here let a goroutine that
	// ran late publish after the Close, which is not the case under test)
	for end := time.Now().Add(time.Minute); atomic.LoadUint64(o.u64(ch+cClientSeq)) == published; {
		if time.Now().After(end) {
			t.Fatal("the call never published its request")
		}
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	if err := c.Close(); err != nil {
		t.Fatalf("Close while another goroutine's call waits: %v", err)
	}
	select {
	case err := <-done:
		if CodeOf(err) != ServerUnavailable || !strings.Contains(err.Error(), "closed during the call") {
			t.Fatalf("the call whose client was closed: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the call whose client was closed did not end")
	}
	// a wait slice (50 ms), not the call's minute of deadline; the bound is wide, as a loaded
	// machine runs late
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("Close took %v", took)
	}
	if pid, start := ownerWords(o, ch); pid != 0 && start != 0 {
		t.Errorf("the channel was left owned with its request pending (owner_pid %d, owner_start_time %d)", pid, start)
	}
	waitFreed(t, o, ch, "after the late answer")
	if segs := dataSegments(srv.name); len(segs) != 1 {
		t.Errorf("only the observer's data segment is left: %v", segs)
	}
	if _, err := c.Infer("echo", in, time.Second); CodeOf(err) != ServerUnavailable {
		t.Fatalf("a call after Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
}

// Close when the region mutex stays busy for ConnectTimeoutMs gives the channel back without it
// (owner_start_time = 0, spec 10.1): it used to keep it owned by this live process for good.
func TestCloseGivesTheChannelBackWhenTheMutexStaysBusy(t *testing.T) {
	srv := startEcho(t, "fdngomutex")
	c := srv.connect(Options{ConnectTimeoutMs: 100})
	o := srv.connect(Options{})
	mutex := semOpen("/fdn-" + srv.name + "-lock")
	if mutex == nil || !semWait(mutex, 5e9) {
		t.Fatal("cannot take the region mutex")
	}
	ch := c.ch
	err := c.Close()
	semPost(mutex)
	semClose(mutex)
	if err != nil {
		t.Fatal(err)
	}
	if pid, start := ownerWords(o, ch); pid != 0 && start != 0 {
		t.Fatalf("the channel is kept by this live process (owner_pid %d, owner_start_time %d)", pid, start)
	}
	waitFreed(t, o, ch, "a heartbeat after Close")
	if segs := dataSegments(srv.name); len(segs) != 1 {
		t.Errorf("only the observer's data segment is left: %v", segs)
	}
}

// dataSegments are the files of the server's data segments in /dev/shm.
func dataSegments(name string) []string {
	paths, _ := filepath.Glob("/dev/shm/fdn-" + name + "-d*")
	return paths
}

// Spec 10.1 step 6: a capacity /dev/shm can never hold is TOO_LARGE with nothing left behind (and
// the region mutex released: the next connect works); a segment of our own pid left over from a
// failed claim is replaced; the fresh segment's pages are allocated (not sparse). On a fresh
// server channel 0's data_gen is 0, so the first segment is /fdn-NAME-d0-PID-1.
func TestLiveDataSegmentsAreAllocated(t *testing.T) {
	srv := startEcho(t, "fdngoalloc")
	name := srv.name
	var vfs syscall.Statfs_t
	if err := syscall.Statfs("/dev/shm", &vfs); err != nil {
		t.Fatal(err)
	}
	total := vfs.Blocks * uint64(vfs.Bsize)
	capacity := (total/2 + 1<<20) &^ 4095 // both areas together: more than /dev/shm
	if c, err := Connect(name, Options{Capacity: capacity, MaxResponseBytes: capacity}); CodeOf(err) != TooLarge {
		if c != nil {
			c.Close()
		}
		t.Fatalf("capacities beyond /dev/shm (%d bytes): %v", total, err)
	} else if msg := err.Error(); !strings.Contains(msg, "/fdn-"+name+"-d0-") || !strings.Contains(msg, "bytes") {
		t.Errorf("the message names the segment and its size: %s", msg)
	}
	if left := dataSegments(name); len(left) != 0 {
		t.Fatalf("a refused data segment is left in /dev/shm: %v", left)
	}

	leftover := fmt.Sprintf("/dev/shm/fdn-%s-d0-%d-1", name, os.Getpid())
	if err := os.WriteFile(leftover, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(leftover)
	c := srv.connect(Options{}) // over a leftover segment of our pid
	segs := dataSegments(name)
	if len(segs) != 1 {
		t.Fatalf("one data segment, not %v", segs)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(segs[0], &st); err != nil {
		t.Fatal(err)
	}
	if st.Size <= 4096 {
		t.Errorf("the leftover was not replaced (size %d)", st.Size)
	}
	if st.Blocks*512 < st.Size {
		t.Errorf("the segment is sparse: %d blocks for %d bytes", st.Blocks, st.Size)
	}
	x := []byte{1, 0, 0, 0, 2, 0, 0, 0}
	res, err := c.Infer("echo", []Input{{Name: "x", DType: INT32, Shape: []uint64{2}, Data: x}}, 5*time.Second)
	if err != nil || res.Output("x") == nil || !bytes.Equal(res.Output("x").Data, x) {
		t.Fatalf("echo: %v", err)
	}
}

// BF16 and BYTES, which Python holds as marked uint16 and uint8 arrays, come back as themselves,
// not as UINT16 and UINT8, and a plain UINT16 after a BF16 of the same name and shape stays UINT16.
func TestLiveBF16AndBytesComeBackAsSent(t *testing.T) {
	c, _ := liveClient(t, "fdngob")
	for i, dt := range []DType{BF16, UINT16, BF16, BYTES, UINT8, BYTES} {
		data := []byte{0x80, 0x3f, byte(i), 0x40}
		in := []Input{{Name: "x", DType: dt, Shape: []uint64{4 / dt.ItemSize()}, Data: data}}
		res, err := c.Infer("echo", in, 5*time.Second)
		if err != nil {
			t.Fatalf("call %d (%v): %v", i, dt, err)
		}
		out := res.Output("x")
		if out == nil || out.DType != dt || !bytes.Equal(out.Data, data) {
			t.Fatalf("call %d: sent %v %v, got %+v", i, dt, data, out)
		}
	}
}

// Section 10.1 step 2: a STOPPING server takes no new client (its region is set so here, as the
// server does when it stops); the clients it has are still served. Connect used to claim a channel.
func TestAStoppingServerTakesNoNewClient(t *testing.T) {
	c, srv := liveClient(t, "fdngostop")
	atomic.StoreUint32(c.u32(rState), stateStopping)
	d, err := Connect(srv.name, Options{})
	if d != nil {
		d.Close()
	}
	wantError(t, "connect to a STOPPING server", err, ServerUnavailable, fmt.Sprintf("shm server %q is stopping", srv.name))
	x := []byte{7, 0, 0, 0}
	res, err := c.Infer("echo", []Input{{Name: "x", DType: INT32, Shape: []uint64{1}, Data: x}}, 5*time.Second)
	if err != nil || res.Output("x") == nil || !bytes.Equal(res.Output("x").Data, x) {
		t.Errorf("a call of a client connected before the server began to stop: %v", err)
	}
	atomic.StoreUint32(c.u32(rState), stateReady)
}

// A connect claims its channel (owner_pid = this process), then opens the channel's semaphore.
// When that failed (a semaphore unlinked, or EMFILE in a process out of descriptors) the channel
// stayed owned by this live process, which the server never reclaims: a service whose connects
// kept failing lost a channel per try until every client got OVERLOADED. It is given back
// (owner_start_time = 0, as a disconnect without the mutex does): on a server of one channel, a
// connect after the failed one is served once the server has reclaimed it.
func TestAConnectThatCannotOpenItsChannelSemaphoreGivesTheChannelBack(t *testing.T) {
	name := startEcho(t, "fdngosem", "--channels", "1").name
	sem := "/dev/shm/sem.fdn-" + name + "-c0"
	kept := sem + "kept" // a second link to the server's semaphore
	if err := os.Link(sem, kept); err != nil {
		t.Fatal(err)
	}
	defer os.Rename(kept, sem) // a test that stops early
	if err := os.Remove(sem); err != nil {
		t.Fatal(err)
	}
	c, err := Connect(name, Options{})
	if c != nil {
		c.Close()
	}
	if CodeOf(err) != ServerUnavailable {
		t.Fatalf("connect with the channel semaphore gone: %v", err)
	}
	if !strings.Contains(err.Error(), "cannot open the semaphore of channel 0 (/fdn-"+name+"-c0): no such file") {
		t.Errorf("connect with the channel semaphore gone: %v", err)
	}
	o := &Client{name: name} // a mapping of the control segment of our own
	if err := o.openRegion(); err != nil {
		t.Fatal(err)
	}
	defer o.disconnect()
	if pid, start := ownerWords(o, o.chanBase); pid != 0 && start != 0 {
		t.Errorf("channel 0 is kept by this live process (owner_pid %d, owner_start_time %d)", pid, start)
	}
	if segs := dataSegments(name); len(segs) != 0 {
		t.Errorf("the failed connect's data segment is left: %v", segs)
	}
	if err := os.Rename(kept, sem); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		c, err = Connect(name, Options{}) // the server reclaims it within a heartbeat (late on a loaded machine)
		if CodeOf(err) != Overloaded || time.Now().After(end) {
			break
		}
	}
	if err != nil {
		t.Fatalf("the connect after the failed one: %v", err)
	}
	x := []byte{7, 0, 0, 0}
	if _, err := c.Infer("echo", []Input{{Name: "x", DType: INT32, Shape: []uint64{1}, Data: x}}, 5*time.Second); err != nil {
		t.Errorf("the call after a connect that could not open its channel semaphore: %v", err)
	}
	c.Close()
}

// callError is err as an *Error found through errors.As (also through a caller's %w wrapping),
// checked for code and the call it names: the model, and the request (rid; 0: none was sent,
// -1: any sent one). Its text names them too.
func callError(t *testing.T, what string, err error, code Status, model string, rid int64) *Error {
	t.Helper()
	var e *Error
	if !errors.As(fmt.Errorf("wrapped: %w", err), &e) || e.Code != code || CodeOf(fmt.Errorf("w: %w", err)) != code {
		t.Fatalf("%s: got %v, want %s", what, err, code)
	}
	if e.Model != model || (rid < 0 && e.RequestID == 0) || (rid >= 0 && e.RequestID != uint64(rid)) {
		t.Fatalf("%s: %v names model %q and request %d, want %q and %d", what, err, e.Model, e.RequestID, model, rid)
	}
	want := fmt.Sprintf("%s: model %q (request %d): ", code, model, e.RequestID)
	if e.RequestID == 0 {
		want = fmt.Sprintf("%s: model %q: ", code, model)
	}
	if !strings.HasPrefix(e.Error(), want) {
		t.Fatalf("%s: %q does not start %q", what, e.Error(), want)
	}
	return e
}

// The errors of a call name the model it was made for and its request, so a service calling
// several models can tell which call failed: they named the request only (a handler's error
// "boom on request 3" said neither which model raised it).
func TestLiveCallErrorsNameTheModelAndTheRequest(t *testing.T) {
	c, _ := liveClient(t, "fdngomodel")
	x := []byte{1, 0, 0, 0}
	in := []Input{{Name: "x", DType: INT32, Shape: []uint64{1}, Data: x}}
	_, err := c.Infer("nosuch", in, 5*time.Second)
	first := callError(t, "an unknown model", err, ModelNotFound, "nosuch", -1)
	_, err = c.Infer("fail", in, 5*time.Second)
	e := callError(t, "a handler's error", err, HandlerError, "fail", -1)
	if e.RequestID <= first.RequestID || !strings.Contains(e.Message, "boom") {
		t.Errorf("a handler's error: %v (the unknown model's was request %d)", err, first.RequestID)
	}
	_, err = c.InferCall("echo", in, 5*time.Second, Call{Version: "a-version-of-20-bytes"})
	callError(t, "a call refused before it was sent", err, InvalidInput, "echo", 0)
	_, err = c.Infer(strings.Repeat("m", 64), in, 5*time.Second) // over its field: the message names it
	if e, ok := err.(*Error); !ok || e.Code != InvalidInput || e.Model != "" {
		t.Errorf("a model name over its field: %#v", err)
	}

	spec := []Tensor{{Name: "x", DType: INT32, NDim: 1, Shape: [8]uint64{1}}}
	if err := c.LoanBegin("nosuch", spec); err != nil {
		t.Fatal(err)
	}
	_, err = c.LoanInfer(5 * time.Second)
	callError(t, "a loan of an unknown model", err, ModelNotFound, "nosuch", -1)
	err = c.LoanBegin("nosuch", []Tensor{{Name: "x", DType: INT32, NDim: 9}})
	callError(t, "a loan refused", err, InvalidInput, "nosuch", 0)
	_, err = c.LoanInfer(5 * time.Second) // no loan: no model to name
	if e, ok := err.(*Error); !ok || e.Model != "" || e.Code != InvalidInput {
		t.Errorf("LoanInfer without a loan: %#v", err)
	}

	if _, err := Connect("fdngo_no_such_server", Options{}); err.(*Error).Model != "" ||
		strings.Contains(err.Error(), "model") {
		t.Errorf("an error of no call names no model: %v", err)
	}
}

// dropClient connects a client, makes a call, and drops it without Close; it returns the offset
// of its channel block, checked (through o's mapping) to be owned by this process while the client
// is still reachable: once dropClient returns, a garbage collection may close it at any moment.
func dropClient(t *testing.T, name string, o *Client) (uint32, []byte) {
	t.Helper()
	c, err := Connect(name, Options{})
	if err != nil {
		t.Fatal(err)
	}
	x := []byte{7, 1, 2, 3}
	res, err := c.Infer("echo", []Input{{Name: "x", DType: INT32, Shape: []uint64{1}, Data: x}}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if c.ch == o.ch {
		t.Fatal("two clients on one channel")
	}
	if pid, _ := ownerWords(o, c.ch); pid != uint32(os.Getpid()) {
		t.Fatalf("the dropped client's channel is owned by %d before it was dropped", pid)
	}
	runtime.KeepAlive(c)
	return c.ch, res.Outputs[0].Data // a view on its data segment, which keeps no client reachable
}

// A client dropped without Close gives its channel back (and unlinks its data segment) once the
// garbage collector finds it: it kept them until the process exited, and a service that forgot
// Close ran out of channels (OVERLOADED) though its clients were long gone.
func TestLiveAClientDroppedWithoutCloseGivesItsChannelBack(t *testing.T) {
	srv := startEcho(t, "fdngodrop")
	o := srv.connect(Options{})
	ch, view := dropClient(t, srv.name, o)
	// a minute: the finalizer's Close, on a goroutine, runs late on a loaded machine, not never
	for end := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		runtime.GC() // finds the client unreachable: its finalizer closes it (on a goroutine)
		// Close gives the channel back, then unlinks the data segment: both, or it is not done
		if pid, _ := ownerWords(o, ch); pid == 0 && len(dataSegments(srv.name)) == 1 {
			break
		}
		if time.Now().After(end) {
			if pid, start := ownerWords(o, ch); pid != 0 {
				t.Fatalf("the dropped client's channel is still owned (owner_pid %d, owner_start_time %d)", pid, start)
			}
			break
		}
	}
	if segs := dataSegments(srv.name); len(segs) != 1 {
		t.Errorf("only the observer's data segment is left: %v", segs)
	}
	// the output's view outlived its client: still mapped, still its answer (it was unmapped,
	// and reading it was a fault)
	if got := fmt.Sprint(view); got != "[7 1 2 3]" {
		t.Errorf("a view of the dropped client's output reads %s, not [7 1 2 3]", got)
	}
	c := srv.connect(Options{}) // the freed channel serves a new client
	if c.ch != ch {
		t.Errorf("the new client claimed channel block %d, not the freed %d", c.ch, ch)
	}
}
