package fdn

// A call waiting for an abandoned call's late answer (spec 7.5) whose server is killed and
// restarted under its name: its own request was never sent, so it is sent to the new server, once,
// within the call's deadline. It failed SERVER_UNAVAILABLE "gone" although the new server was up.
// Against clients/tests/gate_server.py: gate_a holds the abandoned request with its handler.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// kill kills the gate server (SIGKILL) and returns its pid once it has exited.
func (g *gate) kill() int {
	pid := g.cmd.Process.Pid
	g.stop(syscall.SIGKILL)
	return pid
}

// startAgain starts the gate server again under its name and directory, with channels channels.
func (g *gate) startAgain(channels int) {
	g.t.Helper()
	g.cmd = pythonServer(g.t, g.python, []string{"../../tests/gate_server.py", g.name, g.dir, "--channels", fmt.Sprint(channels)})
}

// requests is the count of requests the server's handler was given (its stats, through a Python
// client, which takes a channel of its own for the call).
func (g *gate) requests() int {
	g.t.Helper()
	script := "import sys\nfrom foundation_shm import ShmTransport\n" +
		"with ShmTransport().connect(sys.argv[1], channels=1) as c:\n    print(c.stats(timeout=60)['requests'])\n"
	out, err := exec.Command(g.python, "-c", script, g.name).Output()
	if err != nil {
		g.t.Fatalf("the server's stats: %v", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		g.t.Fatalf("the server's stats: %q", out)
	}
	return n
}

// runs is how often model, a count model, ran on the gate's servers.
func (g *gate) runs(model string) int {
	b, _ := os.ReadFile(filepath.Join(g.dir, model+".runs"))
	return len(b)
}

// hider has this process take the servers it hides for alive (their /proc/PID/stat read as it was
// when hidden) until noticed, so that a test can kill a server and start the next one before a
// waiting call looks: a restart takes longer than the 50 ms slice after which a call looks.
type hider struct {
	mu     sync.Mutex
	hidden map[uint32][]byte
}

// hideDeaths installs a hider until the test ends: before the calls it concerns start.
func hideDeaths(t *testing.T) *hider {
	h := &hider{hidden: map[uint32][]byte{}}
	real := procStat
	procStat = func(p uint32) ([]byte, error) {
		h.mu.Lock()
		stat, ok := h.hidden[p]
		h.mu.Unlock()
		if ok {
			return stat, nil
		}
		return real(p)
	}
	t.Cleanup(func() { procStat = real })
	return h
}

// hide hides process pid's death, from now on.
func (h *hider) hide(t *testing.T, pid int) {
	stat, err := procStat(uint32(pid))
	if err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	h.hidden[uint32(pid)] = stat
	h.mu.Unlock()
}

// notice lets calls see what became of process pid.
func (h *hider) notice(pid int) {
	h.mu.Lock()
	delete(h.hidden, uint32(pid))
	h.mu.Unlock()
}

// abandon makes a call of gate_a that passes its 20 ms deadline with its request with the server's
// handler (held at the gate), and returns that request's id.
func abandon(t *testing.T, g *gate, c *Client) uint64 {
	t.Helper()
	_, err := c.Infer("gate_a", int32Input(1), 20*time.Millisecond)
	wantError(t, "a 20 ms call held at the gate", err, DeadlineExceeded)
	g.waitFile("gate_a", "with-server")
	return err.(*Error).RequestID
}

// abandonedClient starts the gate server called name and returns it with a client whose one
// channel holds an abandoned request (abandon), and that request's id. The client's
// ConnectTimeoutMs is 60 s: a dead server whose death a hider hides is hung after 1 s, and the
// call's reconnect must not give up first.
func abandonedClient(t *testing.T, name string) (*gate, *Client, uint64) {
	t.Helper()
	g := startGate(t, name, 4)
	c := g.connect(Options{ConnectTimeoutMs: 60000})
	return g, c, abandon(t, g, c)
}

// abandonedRestarted is abandonedClient with the server then killed and started again under its
// name (no call waiting); it returns the killed server's pid too.
func abandonedRestarted(t *testing.T, name string) (*gate, *Client, int) {
	t.Helper()
	g, c, _ := abandonedClient(t, name)
	dead := g.kill()
	g.startAgain(4)
	return g, c, dead
}

// asleepBehind runs call (one of c's) on a goroutine of its own, and returns once it waits for the
// abandoned request's late answer (asleep on the channel's semaphore); what names it in a failure.
func asleepBehind(t *testing.T, c *Client, what string, call func()) {
	t.Helper()
	sleeping := c.u32(c.ch + cClientSleeping) // the old region's: read only until the server is killed
	go call()
	for end := time.Now().Add(time.Minute); atomic.LoadUint32(sleeping) != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal(what + " never waited for the late answer")
		}
	}
}

// waitBehind starts c's call of count_b (deadline: timeout) on a goroutine of its own, and returns
// once it waits for the abandoned request's late answer (asleep on the channel's semaphore).
func waitBehind(t *testing.T, c *Client, timeout time.Duration) chan callResult {
	t.Helper()
	done := make(chan callResult, 1)
	asleepBehind(t, c, "the call", func() {
		r, err := c.Infer("count_b", int32Input(5), timeout)
		done <- callResult{r, err}
	})
	return done
}

// restartUnseen kills g's server, its death hidden by h from the calls waiting on it, clears the
// gate_a mark of the abandoned request (set again only if it is sent to the next server), starts
// the next server under the name, then lets the calls see the death; it returns the killed pid.
func restartUnseen(t *testing.T, g *gate, h *hider) int {
	t.Helper()
	h.hide(t, g.cmd.Process.Pid)
	dead := g.kill()
	os.Remove(filepath.Join(g.dir, "gate_a.with-server"))
	g.startAgain(4)
	h.notice(dead)
	return dead
}

// wantSentOnlyAnew checks that the server restarted under g's name was given one request, which
// ran count_b once, and not the abandoned one.
func wantSentOnlyAnew(t *testing.T, g *gate) {
	t.Helper()
	if n, runs := g.requests(), g.runs("count_b"); n != 1 || runs != 1 {
		t.Errorf("the new server was given %d requests, count_b ran %d times: want 1 and 1", n, runs)
	}
	if _, err := os.Stat(filepath.Join(g.dir, "gate_a.with-server")); err == nil {
		t.Error("the abandoned request was sent to the new server")
	}
}

// callUntil polls cond every millisecond until it holds; the call whose result done carries must
// not end first, and the wait lasts a minute at most. what is what the call does meanwhile.
func callUntil(t *testing.T, done chan error, cond func() bool, what string) {
	t.Helper()
	for end := time.Now().Add(time.Minute); !cond(); time.Sleep(time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("the call ended before it %s: %v", what, err)
		default:
		}
		if time.Now().After(end) {
			t.Fatal("the call never " + what)
		}
	}
}

// pendingBeside says whether a channel of o's server other than o's own is owned by this process
// with a request pending.
func pendingBeside(o *Client) bool {
	for i := uint32(0); i < o.chanCount; i++ {
		ch := o.chanBase + i*ChanSize
		if i != o.index && atomic.LoadUint32(o.u32(ch+cOwnerPid)) == uint32(os.Getpid()) &&
			atomic.LoadUint64(o.u64(ch+cClientSeq)) != atomic.LoadUint64(o.u64(ch+cServerSeq)) {
			return true
		}
	}
	return false
}

type callResult struct {
	res *Result
	err error
}

func TestLiveACallWaitingBehindAnAbandonedRequestIsSentToTheRestartedServer(t *testing.T) {
	g, c, abandoned := abandonedClient(t, "fdngowaitre")
	h := hideDeaths(t)
	done := waitBehind(t, c, 30*time.Second)
	restartUnseen(t, g, h)
	got := <-done
	wantAnswer(t, "the call waiting behind the abandoned request", got.res, got.err, int32Input(5))
	if got.res.RequestID != abandoned+1 {
		t.Errorf("the answer is to request %d, not %d", got.res.RequestID, abandoned+1)
	}
	wantSentOnlyAnew(t, g)
	wantCounts(t, c, "after the call sent to the restarted server", 1, 1)
	wantEcho(t, c, "the next call")
	wantCounts(t, c, "after the next call", 1, 1)
}

// A pool's client put back with its request still with the server (its call abandoned), the server
// killed and restarted: the next call takes that client, finds the server gone while it waits for
// the late answer, and is sent to the new server.
func TestLiveAPoolCallBehindAnAbandonedRequestIsSentToTheRestartedServer(t *testing.T) {
	g := startGate(t, "fdngowaitpool", 4)
	p := poolOf(t, g.name, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	_, err := p.Infer(ctx, "gate_a", int32Input(1))
	cancel()
	wantError(t, "a pool call held at the gate past its context's deadline", err, DeadlineExceeded)
	g.waitFile("gate_a", "with-server")
	g.kill()
	g.startAgain(4)
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := p.Infer(ctx, "count_b", int32Input(5))
	wantAnswer(t, "the pool call behind the abandoned request", res, err, int32Input(5))
	if n := g.runs("count_b"); n != 1 {
		t.Errorf("count_b ran %d times, not once", n)
	}
	if n := p.openClients(); n != 1 {
		t.Errorf("%d clients open, not 1 (the one reconnected in its call)", n)
	}
}

// No server restarted: the call fails as before, gone, and says why its request was not sent.
func TestLiveACallWaitingBehindAnAbandonedRequestWithNoServerSinceIsNotSent(t *testing.T) {
	g := startGate(t, "fdngowaitnone", 4)
	c := g.connect(Options{})
	abandon(t, g, c)
	done := waitBehind(t, c, 30*time.Second)
	dead := g.kill()
	got := <-done
	wantError(t, "a call waiting behind an abandoned request, its server killed", got.err, ServerUnavailable)
	want := fmt.Sprintf("shm server %q (pid %d) is gone; not sent: no server has started under that name since", g.name, dead)
	if e := got.err.(*Error); e.Message != want || e.RequestID != 0 || e.Model != "count_b" {
		t.Errorf("got %q (request %d, model %q), want %q naming no request", e.Message, e.RequestID, e.Model, want)
	}
	wantCounts(t, c, "after a call whose reconnect failed", 0, 0)
}

// The reconnect is bounded by the call's deadline, not ConnectTimeoutMs: with the new server's
// region mutex held, a call of 300 ms fails SERVER_UNAVAILABLE in time, having claimed nothing.
func TestLiveACallWaitingBehindAnAbandonedRequestKeepsItsDeadlineInTheReconnect(t *testing.T) {
	g, c, dead := abandonedRestarted(t, "fdngowaitdl")
	o := g.connect(Options{})
	release := holdRegionMutex(t, o)
	start := time.Now()
	_, err := c.Infer("count_b", int32Input(5), 300*time.Millisecond)
	took := time.Since(start)
	wantError(t, "a call whose reconnect meets its deadline", err, ServerUnavailable,
		fmt.Sprintf("shm server %q (pid %d) is gone; not sent: shm server %q: region mutex still busy at the deadline",
			g.name, dead, g.name))
	if took < 250*time.Millisecond || took > 2*time.Second {
		t.Errorf("the call of 300 ms ended after %v", took)
	}
	wantOwnedBy(t, o, "after the call")
	wantCounts(t, c, "after a call whose reconnect failed", 0, 0)
	release()
	wantEcho(t, c, "the call once the mutex is free")
	wantCounts(t, c, "after the call that reconnected (its request sent there first)", 1, 0)
	if n := g.runs("count_b"); n != 0 {
		t.Errorf("count_b ran %d times, though never sent", n)
	}
}

// One reconnect per call (spec 7.5, 10.3): a call sent to the restarted server after waiting behind
// an abandoned request, queued there undispatched when that one is killed too, is not sent again
// to a third, although it is up when the call looks.
func TestLiveACallSentToARestartedServerAfterWaitingIsNotSentAgain(t *testing.T) {
	g, c, _ := abandonedRestarted(t, "fdngowaitonce")
	h := hideDeaths(t)
	holdLoop(t, g, "hold_h")  // the second server's serving loop: the call is queued, never dispatched
	o := g.connect(Options{}) // a mapping of the second server's region, to see the call's request there
	done := queuedCall(c, "count_b")
	callUntil(t, done, func() bool { return pendingBeside(o) }, "reached the second server")
	h.hide(t, g.cmd.Process.Pid)
	second := g.kill()
	g.startAgain(4)
	h.notice(second)
	err := <-done
	gone := fmt.Sprintf("shm server %q (pid %d) is gone", g.name, second)
	wantError(t, "a call whose second server died", err, ServerUnavailable, gone)
	if e := err.(*Error); e.Message != gone {
		t.Errorf("got %q, want %q, nothing appended (no reconnect was tried)", e.Message, gone)
	}
	if n := g.runs("count_b"); n != 0 {
		t.Errorf("count_b ran %d times", n)
	}
	if n := g.requests(); n != 0 {
		t.Errorf("the third server was given %d requests", n)
	}
	wantCounts(t, c, "after the call moved once (to the second server only)", 1, 1)
}

// A call of a context whose context is cancelled during that reconnect (here waiting for the
// region mutex) fails as such a call does: DEADLINE_EXCEEDED wrapping ctx.Err(), having sent and
// claimed nothing, its message saying the server was gone.
func TestLiveACallWaitingBehindAnAbandonedRequestCancelledInTheReconnectIsReportedAsSuch(t *testing.T) {
	g, c, dead := abandonedRestarted(t, "fdngowaitctx")
	o := g.connect(Options{})
	release := holdRegionMutex(t, o)
	defer release()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := c.InferContext(ctx, "count_b", int32Input(5))
		done <- err
	}()
	// the call found its server gone and mapped the new region (o's is the other mapping)
	callUntil(t, done, func() bool { return regionMaps(t, g.name) >= 2 }, "reconnected")
	cancel()
	e := wantCtxError(t, "a call cancelled in its reconnect", <-done, context.Canceled, "count_b")
	want := fmt.Sprintf("shm server %q (pid %d) is gone; not sent: context canceled while waiting for the region mutex",
		g.name, dead)
	if e.Message != want {
		t.Errorf("got %q, want %q", e.Message, want)
	}
	wantOwnedBy(t, o, "after the cancelled call")
	release()
	wantEcho(t, c, "the call after the cancelled one")
}

// A region STOPPED while its process lives (a server whose serving loop died, or whose stop gave
// up on its drain) while a call waits for an abandoned request's late answer: that call's request
// was never written, so it reconnects as after a death (spec 7.5), here to the stopped region
// alone, and says it was not sent. It failed bare "gone", as if its request might have run. The
// test writes STOPPED.
func TestLiveACallWaitingBehindAnAbandonedRequestOfAStoppedServerReconnects(t *testing.T) {
	g := startGate(t, "fdngowaitstop", 4)
	c := g.connect(Options{})
	o := g.connect(Options{}) // writes the state: c's mapping goes when its call reconnects
	abandon(t, g, c)
	done := waitBehind(t, c, 30*time.Second)
	state := o.u32(rState)
	atomic.StoreUint32(state, stateStopped)
	defer atomic.StoreUint32(state, stateReady)
	got := <-done
	want := fmt.Sprintf("shm server %q (pid %d) is gone; not sent: no server has started under that name since",
		g.name, g.cmd.Process.Pid)
	wantError(t, "a call waiting behind an abandoned request, its region STOPPED", got.err, ServerUnavailable, want)
	if e := got.err.(*Error); e.Message != want || e.RequestID != 0 {
		t.Errorf("got %q (request %d), want %q naming no request", e.Message, e.RequestID, want)
	}
	if n := g.runs("count_b"); n != 0 {
		t.Errorf("count_b ran %d times, though never sent", n)
	}
	// o's channel and c's old one (a stopped server's region goes with its channels): no other
	if n := ownedBy(o, uint32(os.Getpid())); n != 2 {
		t.Errorf("this process owns %d channels of the stopped region, not 2 (o's, c's old one)", n)
	}
}

// LoanBegin waiting for an abandoned call's late answer, its server killed and restarted: the loan
// is granted by the new server (nothing of it was in the dead one's area) and its LoanInfer is
// answered there; the abandoned request is not sent. It failed gone.
func TestLiveALoanBegunBehindAnAbandonedRequestIsGrantedByTheRestartedServer(t *testing.T) {
	g, c, _ := abandonedClient(t, "fdngowaitloan")
	h := hideDeaths(t)
	done := make(chan error, 1)
	asleepBehind(t, c, "LoanBegin", func() {
		done <- c.LoanBegin("count_b", []Tensor{{Name: "x", DType: INT32, NDim: 1, Shape: [MaxNDim]uint64{1}}})
	})
	restartUnseen(t, g, h)
	if err := <-done; err != nil {
		t.Fatalf("LoanBegin behind the abandoned request, its server restarted: %v", err)
	}
	in := int32Input(5)
	copy(c.LoanData(0), in[0].Data)
	res, err := c.LoanInfer(30 * time.Second)
	wantAnswer(t, "the loan granted by the restarted server", res, err, in)
	wantSentOnlyAnew(t, g)
	// LoanBegin sends nothing, and the loan's request went to the new server first: no resend
	wantCounts(t, c, "after the loan granted by the restarted server", 1, 0)
}

// The reconnect of a call that waited behind an abandoned request is that call's one extra
// attempt, not the client's: the client's next call, its server killed with the request published
// and never dispatched, is still sent again to the server restarted under the name (10.3).
func TestLiveTheCallAfterOneThatReconnectedWhileWaitingIsStillSentAgain(t *testing.T) {
	g, c, _ := abandonedRestarted(t, "fdngowaitnext")
	wantEcho(t, c, "the call behind the abandoned request, its server restarted")
	wantCounts(t, c, "after the call behind the abandoned request", 1, 1)
	g.kill()
	g.startAgain(4)
	wantEcho(t, c, "the next call, its server killed and restarted")
	wantCounts(t, c, "after the next call", 2, 2)
}

// processState is field 3 of /proc/PID/stat: R, S, Z (a zombie) ...
func processState(pid int) byte {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if i := strings.LastIndexByte(string(raw), ')'); err == nil && i >= 0 && i+2 < len(raw) {
		return raw[i+2]
	}
	return 0
}

// Right after a SIGKILL the server's pid is a zombie (its main thread ended) while its other
// threads still exit, the last one unmapping the memory (a model's gigabytes: a tenth of a second
// and more) before it closes the lock file (spec section 2). A connect then, a call's reconnect to
// send its request again, or one waiting behind an abandoned request, was told the server held its
// lock but lived in another PID namespace; a zombie of the server's start time is the server,
// dead: "gone", "no server has started under that name since". This process holds the lock for
// those threads, the server killed and left unreaped (the cleanup reaps it).
func TestLiveAServerKilledAndNotYetReapedWithItsLockHeldIsGone(t *testing.T) {
	g := startGate(t, "fdngodying", 4)
	c := g.connect(Options{}) // its call is sent again
	w := g.connect(Options{}) // its call waits behind an abandoned request
	wantEcho(t, c, "the first call")
	abandon(t, g, w)
	lock, err := os.Open("/dev/shm/fdn-" + g.name + ".lock")
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	pid := g.cmd.Process.Pid
	g.cmd.Process.Signal(syscall.SIGKILL) // not waited for: a zombie
	for end := time.Now().Add(time.Minute); processState(pid) != 'Z'; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the killed server never became a zombie")
		}
	}
	for end := time.Now().Add(time.Minute); syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the killed server's lock was never free")
		}
	}
	gone := fmt.Sprintf("shm server %q (pid %d) is gone", g.name, pid)
	_, err = Connect(g.name, Options{})
	wantError(t, "a connect right after a SIGKILL", err, ServerUnavailable, gone)
	if e := err.(*Error); e.Message != gone {
		t.Errorf("a connect right after a SIGKILL: %q, want %q", e.Message, gone)
	}
	for _, call := range []struct {
		c    *Client
		what string
	}{{c, "; not sent again: "}, {w, "; not sent: "}} {
		_, err = call.c.Infer("count_b", int32Input(5), 30*time.Second)
		want := gone + call.what + "no server has started under that name since"
		wantError(t, "a call right after a SIGKILL", err, ServerUnavailable, want)
		if e := err.(*Error); e.Message != want {
			t.Errorf("a call right after a SIGKILL: %q, want %q", e.Message, want)
		}
	}
	g.cmd.Wait() // reaped, its pid no one's: a lock held then is still told another PID namespace
	_, err = Connect(g.name, Options{})
	wantError(t, "a connect, the lock held, the pid reaped", err, ServerUnavailable,
		fmt.Sprintf("shm server %q holds its lock, but its pid %d is not a live process seen from here", g.name, pid))
}
