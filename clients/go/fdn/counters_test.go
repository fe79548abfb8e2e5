package fdn

// What a client counts (spec 10.5): its reconnects and its calls sent to a new connection after
// their server was found gone with no handler having seen them. The scenarios that move a call
// (restart_test.go, restartwait_test.go, live_test.go) check the counts too.

import (
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"
)

// counter is what counts: a Client or a Pool.
type counter interface{ Counters() Counters }

// wantCounts fails the test unless c counted reconnects and resends; what names the moment.
func wantCounts(t *testing.T, c counter, what string, reconnects, resends uint64) {
	t.Helper()
	if got := c.Counters(); got != (Counters{Reconnects: reconnects, Resends: resends}) {
		t.Errorf("%s: counted %d reconnects and %d resends, want %d and %d", what, got.Reconnects, got.Resends,
			reconnects, resends)
	}
}

// watchCounts reads c.Counters() on a goroutine of its own, without pause, until the returned
// function is called, which fails the test if a count ever went down. The reads race with the
// calls that count (go test -race tells).
func watchCounts(t *testing.T, c counter) func() {
	t.Helper()
	stop := make(chan struct{})
	var done sync.WaitGroup
	done.Add(1)
	var fault string
	go func() {
		defer done.Done()
		var last Counters
		for {
			select {
			case <-stop:
				return
			default:
			}
			now := c.Counters()
			if now.Reconnects < last.Reconnects || now.Resends < last.Resends {
				fault = fmt.Sprintf("the counts went from %+v to %+v", last, now)
				return
			}
			last = now
			time.Sleep(10 * time.Microsecond)
		}
	}()
	return func() {
		t.Helper()
		close(stop)
		done.Wait()
		if fault != "" {
			t.Error(fault)
		}
	}
}

func TestANilClientCountedNothing(t *testing.T) {
	var c *Client
	if got := c.Counters(); got != (Counters{}) {
		t.Errorf("a nil client counted %+v", got)
	}
}

// A request whose handler had it (server_busy 1) when its server was killed may have run: the call
// fails gone, is not sent again, and is no resend. The next call, once a server is restarted under
// the name, reconnects (counted) and sends its own request, which is no resend either.
func TestLiveACallWhoseHandlerHadItWhenItsServerDiedIsNoResend(t *testing.T) {
	g := startGate(t, "fdngocountbusy", 4)
	c := g.connect(Options{})
	done := make(chan error, 1)
	go func() {
		_, err := c.Infer("gate_a", int32Input(1), 60*time.Second)
		done <- err
	}()
	g.waitFile("gate_a", "with-server")
	dead := g.kill()
	err := <-done
	gone := fmt.Sprintf("shm server %q (pid %d) is gone", g.name, dead)
	wantError(t, "a call whose handler had it when its server was killed", err, ServerUnavailable, gone)
	if e := err.(*Error); e.Message != gone {
		t.Fatalf("got %q, want %q, nothing appended (not sent again)", e.Message, gone)
	}
	wantCounts(t, c, "after the call the dead server's handler had", 0, 0)
	g.startAgain(4)
	wantEcho(t, c, "the call after the restart")
	wantCounts(t, c, "after the call that reconnected to the restarted server", 1, 0)
}

// A call that found its region STOPPED before it published is sent to the server restarted under
// the name (a resend); that server killed with the request queued, never dispatched, the call is
// sent once more, to a third server (10.3's resend: the Go client allows it after such a
// reconnect). It is one call: one resend, two reconnects.
func TestLiveACallMovedTwiceIsOneResend(t *testing.T) {
	g := startGate(t, "fdngocounttwice", 4)
	c := g.connect(Options{})
	wantEcho(t, c, "the first call")
	g.stop(syscall.SIGTERM) // a graceful stop: the region says STOPPED
	g.startAgain(4)
	h := hideDeaths(t)
	holdLoop(t, g, "hold_m")  // the second server's serving loop: the call is queued, never dispatched
	o := g.connect(Options{}) // a mapping of the second server's region, to see the call's request there
	done := queuedCall(c, "count_m")
	callUntil(t, done, func() bool { return pendingBeside(o) }, "reached the second server")
	h.hide(t, g.cmd.Process.Pid)
	second := g.kill()
	g.startAgain(4)
	h.notice(second)
	if err := <-done; err != nil {
		t.Fatalf("the call sent on to the third server: %v", err)
	}
	if n := g.runs("count_m"); n != 1 {
		t.Errorf("count_m ran %d times, not once", n)
	}
	wantCounts(t, c, "after the call moved to a second server, then a third", 2, 1)
}
