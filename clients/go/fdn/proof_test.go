package fdn

// A request is sent again only when its server's process is proven dead (spec 10.3): not when
// /proc/PID/stat cannot be read, nor when the region says STOPPED while the process lives. The
// request is queued behind another client's (clients/tests/hold_client.py, its hold model holding
// the serving loop of clients/tests/gate_server.py), so the live server never dispatched it
// (server_busy 0): sent again on a new connection, it ran twice.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// holdLoop has a client of its own process (not this one, whose /proc reads a test blinds) call
// model, a hold model, and waits until the server's serving loop holds it.
func holdLoop(t *testing.T, g *gate, model string) {
	t.Helper()
	cmd := exec.Command(g.python, "../../tests/hold_client.py", g.name, model)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	g.waitFile(model, "with-server")
}

// queuedCall starts c's call of model on a goroutine of its own, once the serving loop is held.
func queuedCall(c *Client, model string) chan error {
	done := make(chan error, 1)
	go func() {
		_, err := c.Infer(model, int32Input(5), 30*time.Second)
		done <- err
	}()
	return done
}

// wantRunOnce releases the hold model holding the serving loop and returns the queued call's
// error, once the server has run model, and checks that it ran once. A call sent again waits for
// its answer on the new connection behind the held loop: the gate opens after 5 s to end it.
func wantRunOnce(t *testing.T, g *gate, done chan error, hold, model string) error {
	t.Helper()
	var err error
	select {
	case err = <-done:
		g.release(hold)
	case <-time.After(5 * time.Second):
		g.release(hold)
		err = <-done
	}
	g.waitFile(hold, "answered")
	runs := filepath.Join(g.dir, model+".runs")
	for end := time.Now().Add(time.Minute); ; time.Sleep(time.Millisecond) {
		if b, _ := os.ReadFile(runs); len(b) > 0 || time.Now().After(end) {
			break
		}
	}
	time.Sleep(200 * time.Millisecond) // a second run, if any, would be in by now
	if b, _ := os.ReadFile(runs); len(b) != 1 {
		t.Errorf("the handler ran the request %d times, not once", len(b))
	}
	return err
}

// wantGoneAndRunOnce: the call failed gone, nothing appended (no reconnect was tried), and the
// server ran the queued request once (wantRunOnce).
func wantGoneAndRunOnce(t *testing.T, g *gate, done chan error, hold, model string) {
	t.Helper()
	err := wantRunOnce(t, g, done, hold, model)
	gone := fmt.Sprintf("shm server %q (pid %d) is gone", g.name, g.cmd.Process.Pid)
	wantError(t, "a call queued behind another on a live server", err, ServerUnavailable, gone)
	if e, ok := err.(*Error); ok && e.Message != gone {
		t.Errorf("the call was taken for one whose server died: %q", e.Message)
	}
}

// blindStat makes the next n reads of /proc/PID/stat of pid fail EMFILE (n < 0: every read), as
// they do for a client at its file limit for a moment, until the test ends.
func blindStat(t *testing.T, pid uint32, n int32) {
	real := procStat
	procStat = func(p uint32) ([]byte, error) {
		if p == pid && (n < 0 || atomic.AddInt32(&n, -1) >= 0) {
			return nil, &os.PathError{Op: "open", Path: fmt.Sprintf("/proc/%d/stat", p), Err: syscall.EMFILE}
		}
		return real(p)
	}
	t.Cleanup(func() { procStat = real })
}

// /proc/PID/stat that cannot be read (EMFILE: this process at its file limit for a moment) is no
// proof of death (spec 10.3): kill(pid, 0) says the server lives, and the call goes on waiting
// for its answer. It was taken for death: the call failed gone, the client reconnected; before
// that (ca9bb7b) its request was also sent again to the same live server, which ran it twice.
// Blinded for one look, two, then every look of the call.
func TestLiveAServerWhoseLivenessCannotBeReadIsNotTakenForDead(t *testing.T) {
	for _, blind := range []int32{1, 2, -1} {
		t.Run(fmt.Sprintf("%d looks unreadable", blind), func(t *testing.T) {
			g := startGate(t, "fdngoblind", 4)
			c := g.connect(Options{})
			wantEcho(t, c, "the first call")
			holdLoop(t, g, "hold_b")
			blindStat(t, uint32(g.cmd.Process.Pid), blind)
			done := queuedCall(c, "count_b")
			time.Sleep(300 * time.Millisecond) // six wait slices, each with a look
			g.release("hold_b")
			err := wantRunOnce(t, g, done, "hold_b", "count_b")
			if err != nil {
				t.Errorf("a call to a live server whose /proc entry could not be read: %v", err)
			}
		})
	}
}

// A dead process behind a /proc entry that cannot be read is proven gone (kill: ESRCH); a live one
// is not, whatever start time it is asked with (that cannot be checked then).
func TestADeadProcessBehindAnUnreadableStatFileIsProvenGone(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil { // run and reaped: its pid names no process now
		t.Fatal(err)
	}
	dead, self := uint32(cmd.Process.Pid), uint32(os.Getpid())
	started, err := startTime(self)
	if err != nil {
		t.Fatal(err)
	}
	blindStat(t, dead, -1)
	blindStat(t, self, -1)
	if !provenGone(dead, 1) {
		t.Error("a dead pid whose /proc/PID/stat cannot be read is not proven gone")
	}
	if provenGone(self, started) || provenGone(self, started+1) {
		t.Error("a live pid whose /proc/PID/stat cannot be read is taken for gone")
	}
}

// Where /proc is not mounted every /proc/PID/stat is ENOENT, which proves no death (spec 10.3):
// kill(pid, 0) settles it, as the Rust and Python clients do. A live process was taken for gone (a
// call to a live server failed gone, and was sent again). Where /proc is mounted, ENOENT is proof.
func TestNoProcIsNoProofOfDeath(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil { // run and reaped: its pid names no process now
		t.Fatal(err)
	}
	dead, self := uint32(cmd.Process.Pid), uint32(os.Getpid())
	real, mounted := procStat, procMounted
	t.Cleanup(func() { procStat, procMounted = real, mounted })
	procStat = func(p uint32) ([]byte, error) {
		return nil, &os.PathError{Op: "open", Path: fmt.Sprintf("/proc/%d/stat", p), Err: syscall.ENOENT}
	}
	procMounted = func() bool { return false }
	if provenGone(self, 1) || provenGone(self, 2) {
		t.Error("this live process, with no /proc mounted (its stat file ENOENT), is taken for gone")
	}
	if !provenGone(dead, 1) {
		t.Error("a dead pid, with no /proc mounted, is not proven gone")
	}
	procMounted = mounted
	if !provenGone(self, 1) {
		t.Error("with /proc mounted, a stat file ENOENT is no proof of death")
	}
}

// A server killed behind a /proc entry this client cannot read: kill(pid, 0) proves it gone, and
// the request it never dispatched is sent again to the server restarted under its name. It failed
// gone (not proven dead: not sent again).
func TestLiveAKilledServerBehindAnUnreadableStatFileIsGoneAndItsRequestSentAgain(t *testing.T) {
	srv := startEcho(t, "fdngoblindk")
	c := srv.connect(Options{})
	wantEcho(t, c, "the first call")
	blindStat(t, uint32(srv.cmd.Process.Pid), -1)
	crashAndRestart(srv)
	wantEcho(t, c, "the first call after a crash behind an unreadable /proc entry")
}

// This process's own start time (owner_start_time) that cannot be read at connect fails the connect
// SERVER_UNAVAILABLE naming why, having claimed nothing: it wrote 0, which says "given back", and
// the server reclaimed the live client's channel.
func TestAConnectThatCannotReadItsOwnStartTimeClaimsNothing(t *testing.T) {
	srv := startEcho(t, "fdngoself", "--channels", "1")
	blindStat(t, uint32(os.Getpid()), 1)
	c, err := Connect(srv.name, Options{})
	if c != nil {
		c.Close()
	}
	why := fmt.Sprintf("cannot read this process's start time (/proc/%d/stat): open /proc/%d/stat: too many open files; "+
		"no channel claimed", os.Getpid(), os.Getpid())
	wantError(t, "a connect that cannot read its own start time", err, ServerUnavailable, why)
	o := &Client{name: srv.name} // a mapping of the control segment of our own
	if err := o.openRegion(); err != nil {
		t.Fatal(err)
	}
	defer o.disconnect()
	if pid, start := ownerWords(o, o.chanBase); pid != 0 || start != 0 {
		t.Errorf("the failed connect claimed channel 0 (owner_pid %d, owner_start_time %d)", pid, start)
	}
	if segs := dataSegments(srv.name); len(segs) != 0 {
		t.Errorf("the failed connect left a data segment: %v", segs)
	}
	wantEcho(t, srv.connect(Options{}), "a call once the start time can be read")
}

// A region STOPPED while its process lives is no proof of death either: the reference server's
// stop waits a bounded time for its serving loop, which may yet dispatch the request. The test
// writes STOPPED once the request is published; the call was sent again.
func TestLiveARegionStoppedWhileItsProcessLivesIsNotTakenForDead(t *testing.T) {
	g := startGate(t, "fdngostopped", 4)
	c := g.connect(Options{})
	wantEcho(t, c, "the first call")
	o := g.connect(Options{}) // writes the state: c's mapping goes when a call reconnects
	holdLoop(t, g, "hold_s")
	ch := c.ch
	done := queuedCall(c, "count_s")
	for end := time.Now().Add(time.Minute); atomic.LoadUint64(c.u64(ch+cClientSeq)) ==
		atomic.LoadUint64(c.u64(ch+cServerSeq)); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the call never published its request")
		}
	}
	state := o.u32(rState)
	atomic.StoreUint32(state, stateStopped)
	defer atomic.StoreUint32(state, stateReady)
	wantGoneAndRunOnce(t, g, done, "hold_s", "count_s")
}
