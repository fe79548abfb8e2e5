package fdn

// What a pool counts (spec 10.5): its clients' counts, those it let go included, and a reconnect
// for each client it connected in place of one it dropped; against live servers killed and
// restarted, a goroutine reading the counts throughout.

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"
)

// together makes n calls through p at once, each on a client of its own (each holds its client
// until all n have one), and fails the test unless every one is answered.
func together(t *testing.T, p *Pool, n int, what string) {
	t.Helper()
	var all, calls sync.WaitGroup
	all.Add(n)
	errs := make([]error, n)
	for g := 0; g < n; g++ {
		calls.Add(1)
		go func(g int) {
			defer calls.Done()
			errs[g] = p.Do(context.Background(), func(c *Client) error {
				all.Done()
				all.Wait()
				_, err := c.Infer("echo", oneByte(), 30*time.Second)
				return err
			})
		}(g)
	}
	calls.Wait()
	for g, err := range errs {
		if err != nil {
			t.Fatalf("%s, call %d: %v", what, g, err)
		}
	}
}

// memberCount is how many clients' counts the pool reads as they are (not let go).
func (p *Pool) memberCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.members)
}

func TestANilPoolCountedNothing(t *testing.T) {
	var p *Pool
	if got := p.Counters(); got != (Counters{}) {
		t.Errorf("a nil pool counted %+v", got)
	}
}

// A pool's first clients, connected while it has fewer than its size, are no reconnects.
func TestLivePoolCountsNothingForItsFirstClients(t *testing.T) {
	srv := startEcho(t, "fdngopcfirst")
	p := poolOf(t, srv.name, 2)
	wantCounts(t, p, "a new pool", 0, 0)
	together(t, p, 1, "the first call")
	together(t, p, 2, "two calls at once")
	if n := p.openClients(); n != 2 {
		t.Fatalf("%d clients open, not 2", n)
	}
	wantCounts(t, p, "after the pool connected its second client", 0, 0)
}

// A server killed and restarted under a warm pool of 4: four calls at once, one on each client,
// are answered, each client reconnecting and sending its call again (1 and 1 each, read through
// the pool); none is dropped, and the closed pool keeps the counts. Four other clients hold
// channels 0-3 of the first server (closed once it is dead), so that the pool's clients, on 4-7
// there, take 0-3 of the second: data segment names (spec 10.1: d{i}-{pid}-{gen}, gen 1 on a new
// server) that no client of this process still holds. A client that took the name of a beside
// client's old segment would have it unlinked under it as that client let its old one go.
func TestLivePoolCountsItsClientsReconnectsAndResends(t *testing.T) {
	srv := startEcho(t, "fdngopcrestart", "--channels", "8")
	var others []*Client
	for i := 0; i < 4; i++ {
		others = append(others, srv.connect(Options{}))
	}
	p := poolOf(t, srv.name, 4)
	watched := watchCounts(t, p)
	together(t, p, 4, "four calls at once")
	wantCounts(t, p, "a warm pool", 0, 0)
	srv.stop(syscall.SIGKILL)
	for _, o := range others {
		o.Close()
	}
	srv.restart()
	together(t, p, 4, "four calls at once after a crash and a restart")
	if n := p.openClients(); n != 4 {
		t.Fatalf("%d clients open, not 4 (each reconnected in its call)", n)
	}
	watched()
	wantCounts(t, p, "after each client's call after a crash and a restart", 4, 4)
	p.Close()
	wantCounts(t, p, "closed", 4, 4)
}

// A client that reconnected and resent once, dropped after its call failed SERVER_UNAVAILABLE
// (its server killed, none restarted), keeps its counts in the pool's; once a server is restarted,
// the client connected in its place is a reconnect of the pool's, the second client connected
// beside it (the pool's first time at 2) is not.
func TestLivePoolCountsAClientItDroppedAndTheOneConnectedInItsPlace(t *testing.T) {
	srv := startEcho(t, "fdngopcdrop")
	p := poolOf(t, srv.name, 2)
	watched := watchCounts(t, p)
	together(t, p, 1, "the first call")
	crashAndRestart(srv)
	together(t, p, 1, "the call after a crash and a restart")
	wantCounts(t, p, "after the call after a crash and a restart", 1, 1)
	pid := srv.cmd.Process.Pid
	srv.stop(syscall.SIGKILL)
	_, err := p.Infer(context.Background(), "echo", oneByte())
	wantError(t, "a call whose server was killed", err, ServerUnavailable,
		fmt.Sprintf("shm server %q (pid %d) is gone", srv.name, pid))
	if n := p.openClients(); n != 0 {
		t.Fatalf("%d clients open, not 0 (the client whose call failed was dropped)", n)
	}
	if n := p.memberCount(); n != 0 {
		t.Errorf("the pool still reads %d clients' counts; the dropped one's are folded in", n)
	}
	wantCounts(t, p, "after the pool dropped its client", 1, 1)
	// the next call connects a client for itself and finds the server still gone: nothing of it
	// was sent, and it says so (spec 10.3), where Do (it may only begin a loan) says "is gone"
	gone := fmt.Sprintf("shm server %q (pid %d) is gone", srv.name, pid)
	notSent := gone + "; not sent: no server has started under that name since"
	for _, model := range []string{"echo", ""} { // a call of any model name (Do's is "" too)
		if _, err = p.Infer(context.Background(), model, oneByte()); !isMessage(err, ServerUnavailable, notSent) {
			t.Errorf("a pool's call of %q whose client found the server gone: %v; want %q", model, err, notSent)
		}
	}
	if err = p.Do(context.Background(), func(*Client) error { return nil }); !isMessage(err, ServerUnavailable, gone) {
		t.Errorf("Do, whose client found the server gone: %v; want %q", err, gone)
	}
	wantCounts(t, p, "after two connects that failed", 1, 1)
	srv.restart()
	together(t, p, 2, "two calls at once after the restart")
	wantCounts(t, p, "after a client connected in place of the dropped one and one beside it", 2, 1)
	watched()
	p.Close()
	wantCounts(t, p, "closed", 2, 1)
}

// isMessage tells whether err is an *Error of code with exactly the message want.
func isMessage(err error, code Status, want string) bool {
	e, ok := err.(*Error)
	return ok && e.Code == code && e.Message == want
}
