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

// wantGoneAndRunOnce: the call failed gone, nothing appended (no reconnect was tried), and once the
// loop's gate opens the server runs the queued request once. A call sent again waits for its
// answer on the new connection behind the held loop: the gate opens after 5 s to end it.
func wantGoneAndRunOnce(t *testing.T, g *gate, done chan error, hold, model string) {
	t.Helper()
	var err error
	select {
	case err = <-done:
	case <-time.After(5 * time.Second):
		g.release(hold)
		err = <-done
	}
	g.release(hold)
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
	gone := fmt.Sprintf("shm server %q (pid %d) is gone", g.name, g.cmd.Process.Pid)
	wantError(t, "a call queued behind another on a live server", err, ServerUnavailable, gone)
	if e := err.(*Error); e.Message != gone {
		t.Errorf("the call was taken for one whose server died: %q", e.Message)
	}
}

// /proc/PID/stat that cannot be read (EMFILE: this process at its file limit for a moment) is no
// proof of death. It was taken for one (startTime 0): the request was sent again on a new
// connection to the same live server, which ran it twice. Blinded for the wait's look, then also
// for the look that would prove the death.
func TestLiveAServerWhoseLivenessCannotBeReadIsNotTakenForDead(t *testing.T) {
	for _, blind := range []int32{1, 2} {
		t.Run(fmt.Sprintf("%d looks unreadable", blind), func(t *testing.T) {
			g := startGate(t, "fdngoblind", 4)
			c := g.connect(Options{})
			wantEcho(t, c, "the first call")
			holdLoop(t, g, "hold_b")
			pid, left, real := uint32(g.cmd.Process.Pid), blind, procStat
			procStat = func(p uint32) ([]byte, error) {
				if p == pid && atomic.AddInt32(&left, -1) >= 0 {
					return nil, &os.PathError{Op: "open", Path: fmt.Sprintf("/proc/%d/stat", p), Err: syscall.EMFILE}
				}
				return real(p)
			}
			done := queuedCall(c, "count_b")
			defer func() { procStat = real }() // (after the call: its goroutine reads it)
			wantGoneAndRunOnce(t, g, done, "hold_b", "count_b")
		})
	}
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
