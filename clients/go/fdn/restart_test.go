package fdn

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A server killed (SIGKILL) and restarted under its name (spec 10.3): a request the dead server
// never dispatched is sent once more to the new one, within the call's deadline; before, the first
// call of every idle client failed SERVER_UNAVAILABLE although the new server was up.

// crashAndRestart kills the server with SIGKILL and starts it again under its name.
func crashAndRestart(srv *echo) {
	srv.stop(syscall.SIGKILL)
	srv.restart()
}

// Each such call is counted a resend, its reconnect a reconnect (spec 10.5), as a goroutine reads
// the counts throughout; a closed client keeps them.
func TestLiveTheFirstCallAfterACrashAndARestartIsAnswered(t *testing.T) {
	srv := startEcho(t, "fdngocrash")
	c := srv.connect(Options{})
	wantCounts(t, c, "a new client", 0, 0)
	watched := watchCounts(t, c)
	wantEcho(t, c, "the first call")
	wantCounts(t, c, "after the first call", 0, 0)
	crashAndRestart(srv)
	wantEcho(t, c, "the first call after a crash and a restart")
	wantCounts(t, c, "after the first call after a crash and a restart", 1, 1)
	// a request larger than the new channel's area: it grows before the request is sent again
	big := make([]byte, 1200000)
	big[0], big[len(big)-1] = 3, 9
	in := []Input{{Name: "x", DType: UINT8, Shape: []uint64{uint64(len(big))}, Data: big}}
	if _, err := c.Infer("echo", in, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	crashAndRestart(srv)
	res, err := c.Infer("echo", in, 30*time.Second)
	wantAnswer(t, "a grown request after a crash and a restart", res, err, in)
	watched()
	wantCounts(t, c, "after the grown request after a second crash and restart", 2, 2)
	c.Close()
	wantCounts(t, c, "closed", 2, 2)
}

// None restarted: the call fails as before, gone, and says why it was not sent again.
func TestLiveACallWhoseServerWasKilledAndNotRestartedIsGone(t *testing.T) {
	srv := startEcho(t, "fdngocrashnone")
	c := srv.connect(Options{})
	wantEcho(t, c, "the first call")
	pid := srv.cmd.Process.Pid
	srv.stop(syscall.SIGKILL)
	_, err := c.Infer("echo", oneByte(), 30*time.Second)
	wantError(t, "a call whose server was killed", err, ServerUnavailable,
		fmt.Sprintf("shm server %q (pid %d) is gone; not sent again: no server has started under that name since", srv.name, pid))
	wantCounts(t, c, "after a call whose reconnect failed", 0, 0)
	// the next calls find no connection: their connect finds the server gone, and they say
	// nothing was sent (they said only "... is gone", the words of a call its handler may have
	// run); a loan's begin (it sends nothing) and a connect say "... is gone"
	gone := fmt.Sprintf("shm server %q (pid %d) is gone", srv.name, pid)
	unsent := gone + "; not sent: no server has started under that name since"
	_, err = c.Infer("echo", oneByte(), 30*time.Second)
	wantMessage(t, "a call after one whose server was gone", err, ServerUnavailable, unsent)
	_, err = c.InferContext(context.Background(), "echo", oneByte())
	wantMessage(t, "a call of a context after one whose server was gone", err, ServerUnavailable, unsent)
	specs := []Tensor{{Name: "x", DType: UINT8, NDim: 1, Shape: [MaxNDim]uint64{1}}}
	wantMessage(t, "a loan begun after a call whose server was gone", c.LoanBegin("echo", specs), ServerUnavailable, gone)
	late, err := Connect(srv.name, Options{})
	if late != nil {
		late.Close()
	}
	wantMessage(t, "a connect to the dead server", err, ServerUnavailable, gone)
	wantCounts(t, c, "after calls whose connect failed", 0, 0)
}

// wantMessage fails the test unless err is an *Error of code saying exactly message.
func wantMessage(t *testing.T, what string, err error, code Status, message string) {
	t.Helper()
	if e, ok := err.(*Error); !ok || e.Code != code || e.Message != message {
		t.Fatalf("%s: got %v, want %s: %s", what, err, code, message)
	}
}

// A loan's inputs were written into the dead server's area: it is not sent again.
func TestLiveALoanIsNotSentAgainAfterACrashAndARestart(t *testing.T) {
	srv := startEcho(t, "fdngocrashloan")
	c := srv.connect(Options{})
	specs := []Tensor{{Name: "x", DType: UINT8, NDim: 1, Shape: [MaxNDim]uint64{1}}}
	if err := c.LoanBegin("echo", specs); err != nil {
		t.Fatal(err)
	}
	c.LoanData(0)[0] = 7
	if _, err := c.LoanInfer(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	pid := srv.cmd.Process.Pid
	crashAndRestart(srv)
	c.LoanData(0)[0] = 8
	_, err := c.LoanInferContext(context.Background())
	wantError(t, "a loan whose server was killed and restarted", err, ServerUnavailable,
		fmt.Sprintf("shm server %q (pid %d) is gone", srv.name, pid))
	if e := err.(*Error); e.Message != fmt.Sprintf("shm server %q (pid %d) is gone", srv.name, pid) {
		t.Fatalf("the loan's error says more than that it is gone: %q", e.Message)
	}
	wantCounts(t, c, "after the loan not sent again", 0, 0)
	wantEcho(t, c, "a copying call after the loan failed")
	wantCounts(t, c, "after the call that reconnected", 1, 0)
}

// A warm pool of 4 failed 4 calls in a row after a crash and a restart; now none.
func TestLivePoolFailsNoCallAfterACrashAndARestart(t *testing.T) {
	srv := startEcho(t, "fdngocrashpool", "--channels", "8")
	p := poolOf(t, srv.name, 4)
	var all sync.WaitGroup
	all.Add(4)
	var calls sync.WaitGroup
	for g := 0; g < 4; g++ { // four callers at once: four clients, each answered once
		calls.Add(1)
		go func(g int) {
			defer calls.Done()
			err := p.Do(context.Background(), func(c *Client) error {
				all.Done()
				all.Wait()
				_, err := c.Infer("echo", oneByte(), 30*time.Second)
				return err
			})
			if err != nil {
				t.Errorf("warming caller %d: %v", g, err)
			}
		}(g)
	}
	calls.Wait()
	if n := p.openClients(); n != 4 {
		t.Fatalf("%d clients open, not 4", n)
	}
	crashAndRestart(srv)
	for i := 0; i < 8; i++ {
		in := int32Input(uint32(i))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		res, err := p.Infer(ctx, "echo", in)
		cancel()
		wantAnswer(t, fmt.Sprintf("call %d after the crash and restart", i), res, err, in)
	}
	if n := p.openClients(); n != 4 {
		t.Fatalf("%d clients open after the restart, not 4 (each reconnected in its call)", n)
	}
}

// regionMaps counts this process's mappings of the region of server name that is still linked
// (a mapping of a dead server's region, unlinked since, reads "(deleted)").
func regionMaps(t *testing.T, name string) int {
	t.Helper()
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(maps), "\n") {
		if strings.HasSuffix(line, " /dev/shm/fdn-"+name) {
			n++
		}
	}
	return n
}

// A call of a context whose dead server never dispatched its request reconnects to send it again;
// its context cancelled while the reconnect waits (here for the region mutex) failed
// SERVER_UNAVAILABLE "gone; not sent again: context canceled ...", so errors.Is(err,
// context.Canceled) did not hold. It fails as a call whose context ends does: DEADLINE_EXCEEDED
// wrapping ctx.Err(), having sent nothing and claimed nothing; the next call is answered.
func TestLiveAContextCancelledWhileTheCallReconnectsToSendAgainIsReportedAsSuch(t *testing.T) {
	srv := startEcho(t, "fdngocrashctx")
	c := srv.connect(Options{})
	wantEcho(t, c, "the first call")
	crashAndRestart(srv)
	o := srv.connect(Options{})
	release := holdRegionMutex(t, o)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := c.InferContext(ctx, "echo", oneByte())
		done <- err
	}()
	// the call found its server gone and mapped the new region (o's is the other mapping): it
	// waits for the region mutex to claim a channel
	for end := time.Now().Add(time.Minute); regionMaps(t, srv.name) < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the call never reconnected")
		}
	}
	cancel()
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		t.Fatal("the cancelled call did not end")
	}
	e := wantCtxError(t, "a call cancelled while it reconnects to send again", err, context.Canceled, "echo")
	if !strings.Contains(e.Message, "is gone; not sent again: context canceled while waiting for the region mutex") {
		t.Fatalf("the error does not say what happened: %q", e.Message)
	}
	wantOwnedBy(t, o, "after the cancelled call")
	release()
	wantEcho(t, c, "the call after the cancelled one")
}
