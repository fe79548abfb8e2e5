package fdn

// A late answer that lands as the wait for it (spec 7.5) finds the server gone: the server
// answered the abandoned request and died between the wait's look at the response word and its
// look at the server's liveness. The call's own request must not go to that server: it reconnects
// (7.5) and, with no server since, fails "not sent". It was published on the dead server's channel
// and failed "not sent again" a slice later (10.3's resend), naming a request never dispatched.

import (
	"bytes"
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
	// (its stat is gone once it is reaped; a zombie's reads state Z or X: either is the look that
	// finds it dead, so the answer lands however the look catches it)
	var once sync.Once
	var landed atomic.Bool
	real := procStat
	procStat = func(p uint32) ([]byte, error) {
		stat, err := real(p)
		if p == pid && (err != nil || deadState(stat)) {
			once.Do(func() {
				atomic.StoreUint64(serverSeq, s)
				atomic.StoreUint32(serverBusy, 0)
				landed.Store(true)
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
	if !landed.Load() { // else the call ended without the case under test: it proved nothing
		t.Error("the late answer never landed: no look at the killed server's stat found it dead")
	}
}

// deadState: a /proc/PID/stat whose state is Z (zombie) or X (dead).
func deadState(stat []byte) bool {
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && (stat[i+2] == 'Z' || stat[i+2] == 'X')
}
