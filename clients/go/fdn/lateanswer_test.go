package fdn

// A late answer that lands as the wait for it (spec 7.5) finds the server gone: the server
// answered the abandoned request and died between the wait's look at the response word and its
// look at the server's liveness. The call's own request must not go to that server: it reconnects
// (7.5) and, with no server since, fails "not sent". It was published on the dead server's channel
// and failed "not sent again" a slice later (10.3's resend), naming a request never dispatched.

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestLiveALateAnswerLandingAsTheWaitFindsTheServerGoneSendsNothingThere(t *testing.T) {
	g := startGate(t, "fdngolateans", 4)
	c := g.connect(Options{})
	abandon(t, g, c)
	pid, s := uint32(g.cmd.Process.Pid), c.seq
	serverSeq, serverBusy := c.u64(c.ch+cServerSeq), c.u32(c.ch+cServerBusy)
	// the first read of the killed server's stat (the wait's liveness look, on the call's
	// goroutine) lands the late answer first: as the server's respond stores it, then dies
	var once sync.Once
	real := procStat
	procStat = func(p uint32) ([]byte, error) {
		stat, err := real(p)
		if p == pid && err != nil {
			once.Do(func() {
				atomic.StoreUint64(serverSeq, s)
				atomic.StoreUint32(serverBusy, 0)
			})
		}
		return stat, err
	}
	t.Cleanup(func() { procStat = real })
	done := waitBehind(t, c, 30*time.Second)
	dead := g.kill()
	var got callResult
	select {
	case got = <-done:
	case <-time.After(time.Minute):
		t.Fatal("the call never ended")
	}
	wantError(t, "a call whose late answer came as its server was found gone", got.err, ServerUnavailable)
	want := fmt.Sprintf("shm server %q (pid %d) is gone; not sent: no server has started under that name since", g.name, dead)
	if e := got.err.(*Error); e.Message != want || e.RequestID != 0 {
		t.Errorf("got %q (request %d), want %q naming no request", e.Message, e.RequestID, want)
	}
	wantCounts(t, c, "after a call whose reconnect failed", 0, 0)
}
