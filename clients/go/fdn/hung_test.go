package fdn

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// A hung server (section 10.3: its heartbeat older than 10 intervals, and at least 1 s) takes no
// new client. The server is hung for real: SIGSTOP, waited for with WUNTRACED (the signal is
// asynchronous), SIGCONT always.

// hang stops the server and waits until it has stopped and its heartbeat, read through o's
// mapping of the region, is stale; it resumes the server when the test ends, whatever fails.
func hang(t *testing.T, srv *echo, o *Client) {
	t.Helper()
	pid := srv.cmd.Process.Pid
	srv.cmd.Process.Signal(syscall.SIGSTOP)
	t.Cleanup(func() { srv.cmd.Process.Signal(syscall.SIGCONT) })
	var ws syscall.WaitStatus
	if got, err := syscall.Wait4(pid, &ws, syscall.WUNTRACED, nil); err != nil || got != pid || !ws.Stopped() {
		t.Fatalf("the server did not stop: %v %v", err, ws)
	}
	end := time.Now().Add(60 * time.Second)
	for monotonicNs()-atomic.LoadUint64(o.u64(rHeartbeatNs)) < uint64(hungMin)+uint64(10*time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("gave up waiting for the stopped server's heartbeat to go stale")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// resume resumes the stopped server of c and waits (a minute at most) until it has beaten again,
// its heartbeat moved (read through c's mapping): until then a call still finds it hung (or finds
// it so once a second has passed since its last beat) and gives up after c's ConnectTimeoutMs (20
// or 50 ms in these tests), which a resumed process on a loaded machine may take to be run at all.
// Not hung at the SIGCONT (stopped under a second) is not enough: it may be before it runs.
func resume(t *testing.T, srv *echo, c *Client) {
	t.Helper()
	beat := atomic.LoadUint64(c.u64(rHeartbeatNs))
	srv.cmd.Process.Signal(syscall.SIGCONT)
	for end := time.Now().Add(time.Minute); atomic.LoadUint64(c.u64(rHeartbeatNs)) == beat; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the resumed server did not beat again")
		}
	}
}

// ownedBy counts the channels of o's server that process pid owns.
func ownedBy(o *Client, pid uint32) int {
	n := 0
	for i := uint32(0); i < o.chanCount; i++ {
		if owner, _ := ownerWords(o, o.chanBase+i*ChanSize); owner == pid {
			n++
		}
	}
	return n
}

// wantOwnedBy fails the test unless process pid owns exactly one channel of o's server (o's).
func wantOwnedBy(t *testing.T, o *Client, what string) {
	t.Helper()
	if n := ownedBy(o, uint32(os.Getpid())); n != 1 {
		t.Fatalf("this process owns %d channels %s, not 1 (the observer's)", n, what)
	}
}

// oneByte is the request of these tests: one byte, 7.
func oneByte() []Input {
	return []Input{{Name: "x", DType: UINT8, Shape: []uint64{1}, Data: []byte{7}}}
}

// wantEcho fails the test unless a call on c (30 s) is answered with its input.
func wantEcho(t *testing.T, c *Client, what string) {
	t.Helper()
	if r, err := c.Infer("echo", oneByte(), 30*time.Second); err != nil || r.Output("x").Data[0] != 7 {
		t.Fatalf("%s: %v", what, err)
	}
}

// Each connect to a stopped server claimed a channel and its call left a request there that the
// server could not answer: on a 4-channel server, 4 DEADLINE_EXCEEDED and then OVERLOADED 'all 4
// channels are in use' for every client, when the server was hung. A connect now waits up to
// ConnectTimeoutMs for a beat, then is SERVER_UNAVAILABLE naming the server, its pid and how
// long it has not beaten, claiming nothing; resumed, the server is connected to at once.
func TestLiveConnectsToAHungServerClaimNoChannelAndSayItIsHung(t *testing.T) {
	srv := startEcho(t, "fdngohung", "--channels", "4")
	o := srv.connect(Options{})
	hang(t, srv, o)
	for i := 0; i < 8; i++ {
		c, err := Connect(srv.name, Options{ConnectTimeoutMs: 200})
		if err == nil {
			_, err = c.Infer("echo", oneByte(), 200*time.Millisecond)
			c.Close()
		}
		wantError(t, fmt.Sprintf("connect %d to a hung server", i), err, ServerUnavailable,
			fmt.Sprintf("shm server %q (pid %d) is hung: no heartbeat for ", srv.name, srv.cmd.Process.Pid),
			"no beat came within ConnectTimeoutMs (200 ms)")
	}
	if n := ownedBy(o, uint32(os.Getpid())); n != 1 {
		t.Fatalf("this process owns %d channels after 8 connects to a hung server, not 1 (o's)", n)
	}
	srv.cmd.Process.Signal(syscall.SIGCONT)
	c := srv.connect(Options{ConnectTimeoutMs: 30000}) // its next beat is up to an interval away
	wantEcho(t, c, "a call on the resumed server")
}

// A call that reconnects (its server restarted) to a hung server waits for its beat no longer
// than the call's own timeout (ConnectTimeoutMs is a minute here), then SERVER_UNAVAILABLE.
func TestLiveAReconnectToAHungServerKeepsTheCallsTimeout(t *testing.T) {
	srv := startEcho(t, "fdngohungdl")
	c, o := restarted(t, srv, 60000)
	hang(t, srv, o)
	_, err := c.Infer("echo", oneByte(), 200*time.Millisecond)
	wantError(t, "a call reconnecting to a hung server", err, ServerUnavailable, "is hung: ", "before the call's deadline")
	srv.cmd.Process.Signal(syscall.SIGCONT)
	wantEcho(t, c, "a call on the resumed server")
}

// A connect waiting (ConnectTimeoutMs: a minute) for a hung server's beat looks at its liveness
// too: a server that dies meanwhile is reported gone then, not hung once the minute has passed.
func TestLiveAHungServerThatDiesWhileAConnectWaitsIsGone(t *testing.T) {
	srv := startEcho(t, "fdngohungdie")
	o := srv.connect(Options{})
	pid := srv.cmd.Process.Pid
	hang(t, srv, o)
	done := make(chan error, 1)
	go func() {
		c, err := Connect(srv.name, Options{ConnectTimeoutMs: 60000})
		if c != nil {
			c.Close()
		}
		done <- err
	}()
	time.Sleep(300 * time.Millisecond) // the connect waits for a beat by now
	srv.cmd.Process.Kill()
	srv.cmd.Wait()
	select {
	case err := <-done:
		wantError(t, "a connect whose hung server died", err, ServerUnavailable,
			fmt.Sprintf("shm server %q (pid %d) is gone", srv.name, pid))
	case <-time.After(30 * time.Second):
		t.Fatal("the connect still waits for a dead server's beat")
	}
}

// A call whose connect (its connection dropped: an earlier call's server was killed) waits for a
// hung server's beat, and finds that server dead meanwhile, says nothing of it was sent (spec
// 10.3); it said only "... is gone", the words of a call its handler may have run.
func TestLiveACallWhoseConnectFindsAHungServerDeadWasNotSent(t *testing.T) {
	srv := startEcho(t, "fdngohungcall")
	c := srv.connect(Options{ConnectTimeoutMs: 60000})
	wantEcho(t, c, "the first call")
	srv.stop(syscall.SIGKILL)
	_, err := c.Infer("echo", oneByte(), 30*time.Second)
	wantError(t, "a call whose server was killed", err, ServerUnavailable, "; not sent again: ")
	srv.restart()
	o := srv.connect(Options{})
	pid := srv.cmd.Process.Pid
	hang(t, srv, o)
	done := make(chan error, 1)
	go func() {
		_, err := c.Infer("echo", oneByte(), 30*time.Second)
		done <- err
	}()
	// killed only once the call's connect waits for the beat: killed before, the connect finds
	// the region's server dead as it opens it, and this test (a 300 ms sleep here, a goroutine
	// run late on a loaded machine) passed with the beat wait's "not sent" undone
	inStack(t, "(*Client).waitBeating", "the call's connect never waited for the hung server's beat")
	srv.cmd.Process.Kill()
	srv.cmd.Wait()
	select {
	case err := <-done:
		wantMessage(t, "a call whose connect found its hung server dead", err, ServerUnavailable,
			fmt.Sprintf("shm server %q (pid %d) is gone; not sent: no server has started under that name since", srv.name, pid))
	case <-time.After(30 * time.Second):
		t.Fatal("the call still waits for a dead server's beat")
	}
}

// closeDuringACall starts a call on c (its server restarted, so the call reconnects) on a
// goroutine, waits until the call is in, then closes c: Close must return, and the call end,
// within the test's patience, whatever c's ConnectTimeoutMs. It returns the call's error.
func closeDuringACall(t *testing.T, c *Client) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := c.Infer("echo", oneByte(), -1) // no deadline: only ConnectTimeoutMs bounds its waits
		done <- err
	}()
	for end := time.Now().Add(time.Minute); atomic.LoadInt32(&c.busy) == 0; {
		if time.Now().After(end) {
			t.Fatal("the call never began")
		}
		time.Sleep(time.Millisecond)
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Close waits for another goroutine's reconnect (up to its ConnectTimeoutMs, 10 minutes)")
	}
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute):
		t.Fatal("the call whose client was closed did not end")
	}
	return nil
}

// restarted connects a client (ConnectTimeoutMs: connectMs) to srv, makes a call, and restarts
// the server (a graceful stop): the client's next call reconnects. It returns the client and an
// observer connected to the new server.
func restarted(t *testing.T, srv *echo, connectMs uint32) (*Client, *Client) {
	t.Helper()
	c := srv.connect(Options{ConnectTimeoutMs: connectMs})
	if _, err := c.Infer("echo", oneByte(), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	srv.stop(syscall.SIGTERM)
	srv.restart()
	return c, srv.connect(Options{})
}

// A call reconnecting to a hung server waits for its beat, up to ConnectTimeoutMs without a
// deadline, and Close on another goroutine, which waits for the call to end, waited as long:
// the wait never looked at Close. It now ends at its next look, the call failing "closed during
// the call" with nothing claimed, and Close returns.
func TestLiveCloseDuringAReconnectsWaitForAHungServerReturns(t *testing.T) {
	srv := startEcho(t, "fdngohungcl")
	c, o := restarted(t, srv, 600000)
	hang(t, srv, o)
	err := closeDuringACall(t, c)
	wantError(t, "a call reconnecting to a hung server, closed", err, ServerUnavailable, "closed during the call")
	wantOwnedBy(t, o, "of the hung server")
}

// A call reconnecting waits for the region mutex up to ConnectTimeoutMs: a client stopped inside
// it (a live holder, which the server never frees) kept it that long, and Close on another
// goroutine waited as long for the call. The wait now ends at Close.
func TestLiveCloseDuringAReconnectsWaitForTheRegionMutexReturns(t *testing.T) {
	srv := startEcho(t, "fdngomutexcl")
	c, o := restarted(t, srv, 600000)
	release := holdRegionMutex(t, o)
	err := closeDuringACall(t, c)
	release()
	wantError(t, "a call reconnecting while the region mutex is held, closed", err, ServerUnavailable, "closed during the call")
	wantOwnedBy(t, o, "of the server")
}

// holdRegionMutex takes the region mutex of o's server as a client stopped inside it would hold
// it (its holder a live pid, which the server never frees), and returns what releases it; it is
// released when the test ends, whatever fails.
func holdRegionMutex(t *testing.T, o *Client) func() {
	t.Helper()
	if !semWait(o.mutex, 5e9) {
		t.Fatal("cannot take the region mutex")
	}
	atomic.StoreUint32(o.u32(rMutexHolder), uint32(os.Getpid())) // alive: the server leaves it held
	released := false
	release := func() {
		if !released {
			released = true
			atomic.StoreUint32(o.u32(rMutexHolder), 0)
			semPost(o.mutex)
		}
	}
	t.Cleanup(release)
	return release
}

// A call that reconnected waited for a busy region mutex up to ConnectTimeoutMs whatever its own
// timeout: a call of 200 ms waited 30 s here (10 minutes, had it been so configured), then
// failed OVERLOADED. It now waits no later than its deadline and fails DEADLINE_EXCEEDED saying
// what it waited for; a Connect outside a call still waits ConnectTimeoutMs and is OVERLOADED.
func TestLiveAReconnectsWaitForTheRegionMutexKeepsTheCallsTimeout(t *testing.T) {
	srv := startEcho(t, "fdngomutexdl")
	c, o := restarted(t, srv, 30000)
	release := holdRegionMutex(t, o)
	_, err := c.Infer("echo", oneByte(), 200*time.Millisecond)
	wantError(t, "a call reconnecting while the region mutex is held", err, DeadlineExceeded,
		fmt.Sprintf("shm server %q: region mutex still busy at the deadline", srv.name))
	_, err = Connect(srv.name, Options{ConnectTimeoutMs: 200})
	wantError(t, "a connect while the region mutex is held", err, Overloaded,
		fmt.Sprintf("shm server %q: region mutex busy for 200 ms", srv.name))
	wantOwnedBy(t, o, "of the server")
	release()
	wantEcho(t, c, "a call once the mutex is free")
}

// The call after an abandoned one (it passed its deadline) on a server of one channel waits for
// the late answer up to its own deadline (DEADLINE_EXCEEDED, still with the server), then sends
// its own request and reads its own answer, never the late one (spec 7.5). A server hung (10.3)
// meanwhile fails it SERVER_UNAVAILABLE after ConnectTimeoutMs: a call without a deadline waited
// for ever, its request not even sent.
func TestLiveTheCallAfterAnAbandonedOneWaitsForTheLateAnswerButNotForAHungServer(t *testing.T) {
	srv := startEcho(t, "fdngolate", "--channels", "1")
	c := srv.connect(Options{ConnectTimeoutMs: 50})
	old := []Input{{Name: "x", DType: UINT8, Shape: []uint64{1}, Data: []byte{1}}}
	_, err := c.InferCall("sleep", old, 20*time.Millisecond, Call{Params: []byte(`{"ms": 300}`)})
	wantError(t, "a 20 ms deadline on a 300 ms call", err, DeadlineExceeded)
	abandoned := err.(*Error).RequestID
	r, err := c.Infer("echo", oneByte(), 60*time.Second)
	if err != nil || r.RequestID != abandoned+1 || r.Model != "echo" || r.Output("x").Data[0] != 7 {
		t.Fatalf("the call after the abandoned one reads its own answer: %v %+v", err, r)
	}

	pid := srv.cmd.Process.Pid // stopped: it holds the next request as long as this needs
	srv.cmd.Process.Signal(syscall.SIGSTOP)
	t.Cleanup(func() { srv.cmd.Process.Signal(syscall.SIGCONT) })
	var ws syscall.WaitStatus
	if got, err := syscall.Wait4(pid, &ws, syscall.WUNTRACED, nil); err != nil || got != pid || !ws.Stopped() {
		t.Fatalf("the server did not stop: %v %v", err, ws)
	}
	_, err = c.InferCall("sleep", old, 20*time.Millisecond, Call{Params: []byte(`{"ms": 1}`)})
	wantError(t, "a call to a stopped server", err, DeadlineExceeded)
	_, err = c.Infer("echo", oneByte(), 30*time.Millisecond)
	wantError(t, "the next call, its deadline first", err, DeadlineExceeded,
		"the previous request on this channel (a call that passed its deadline) is still with the server")
	done := make(chan error, 1)
	go func() {
		_, err := c.Infer("echo", oneByte(), -1)
		done <- err
	}()
	select {
	case err = <-done:
	case <-time.After(60 * time.Second): // not a timing check: a wait for ever fails here
		srv.cmd.Process.Signal(syscall.SIGCONT)
		<-done
		t.Fatal("a call without a deadline still waits for a hung server's late answer")
	}
	wantError(t, "a call without a deadline on a hung server", err, ServerUnavailable,
		fmt.Sprintf("shm server %q (pid %d) is hung: no heartbeat for ", srv.name, pid),
		"no beat came within ConnectTimeoutMs (50 ms)",
		"the previous request on this channel (a call that passed its deadline) is still with it")
	resume(t, srv, c)
	wantEcho(t, c, "the call after the server resumed (its late answer in, then its own)")
}

// With a spin window of a whole wait slice (SpinUs up to 1 s is taken), the wait for an abandoned
// call's late answer spun its every 50 ms slice (a CPU burnt for as long as it waited) and never
// looked at the server's liveness (each slice ended in the spin): a server killed meanwhile was
// found "hung" a second and ConnectTimeoutMs later, not gone within a slice. It spins once.
func TestLiveTheWaitForALateAnswerSpinsOnceAndFindsAKilledServerGone(t *testing.T) {
	srv := startEcho(t, "fdngospin", "--channels", "1")
	c := srv.connect(Options{ConnectTimeoutMs: 500, SpinUs: 1000000})
	old := []Input{{Name: "x", DType: UINT8, Shape: []uint64{1}, Data: []byte{1}}}
	_, err := c.InferCall("sleep", old, 20*time.Millisecond, Call{Params: []byte(`{"ms": 60000}`)})
	wantError(t, "a 20 ms deadline on a 60 s call", err, DeadlineExceeded)
	done := make(chan error, 1)
	go func() {
		_, err := c.Infer("echo", oneByte(), -1)
		done <- err
	}()
	time.Sleep(200 * time.Millisecond) // it waits for the late answer (the server sleeps 60 s)
	pid := srv.cmd.Process.Pid
	srv.cmd.Process.Kill()
	srv.cmd.Wait()
	wantError(t, "a server killed while a call waits for its late answer", <-done, ServerUnavailable,
		fmt.Sprintf("shm server %q (pid %d) is gone", srv.name, pid))
}

// inStack waits (a minute at most) until a goroutine's stack shows fn, else fails the test with why.
func inStack(t *testing.T, fn, why string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for end := time.Now().Add(time.Minute); ; time.Sleep(time.Millisecond) {
		if strings.Contains(string(buf[:runtime.Stack(buf, true)]), fn) {
			return
		}
		if time.Now().After(end) {
			t.Fatal(why)
		}
	}
}
