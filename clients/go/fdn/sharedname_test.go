package fdn

import (
	"syscall"
	"testing"
	"time"
)

// Two clients of one process and a data segment name after a server restart (spec 10.1 step 6):
// a server restarted under the name starts its channels' data_gen again, so a client claiming
// channel i of the new server makes the name another client of the process still holds on the
// dead server's channel i.

// A on channel 0, B on channel 1; the server killed, B's call fails, and B begins a loan once the
// server is restarted: B claims channel 0, whose segment name (server, index, pid, generation 1) A
// still holds on the dead server's region, and replaces A's segment. A, dropping its dead
// connection as its next call is sent again, unlinked that name, B's segment by then: the server
// parked B's channel and B's loan call ran into its deadline (DEADLINE_EXCEEDED). A client
// unlinks a name only while the segment is still its own.
func TestLiveAClientLeavesASegmentNameAnotherClientOfItsProcessMadeSince(t *testing.T) {
	srv := startEcho(t, "fdngonames")
	a := srv.connect(Options{})
	b := srv.connect(Options{})
	if a.index != 0 || b.index != 1 {
		t.Fatalf("channels %d and %d, want 0 and 1", a.index, b.index)
	}
	wantEcho(t, a, "A's first call")
	wantEcho(t, b, "B's first call")
	srv.stop(syscall.SIGKILL)
	if _, err := b.Infer("echo", oneByte(), 30*time.Second); err == nil {
		t.Fatal("B's call answered with no server")
	}
	srv.restart()
	specs := []Tensor{{Name: "x", DType: UINT8, NDim: 1, Shape: [MaxNDim]uint64{1}}}
	if err := b.LoanBegin("echo", specs); err != nil { // B connects: channel 0 of the new server
		t.Fatalf("B's loan: %v", err)
	}
	if b.index != 0 || b.dataName != a.dataName {
		t.Fatalf("B on channel %d, segment %s; A's %s: not the case this test is about", b.index, b.dataName, a.dataName)
	}
	wantEcho(t, a, "A's call, sent again")
	b.LoanData(0)[0] = 7
	r, err := b.LoanInfer(10 * time.Second)
	if err != nil || r.Output("x").Data[0] != 7 {
		t.Fatalf("B's loan call after A dropped its dead connection: %v", err)
	}
}
