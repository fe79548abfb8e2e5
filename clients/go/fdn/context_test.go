package fdn

// Calls bounded by a context.Context, against clients/tests/gate_server.py: its gate* models hold
// a request until a file appears, so a test knows the request is with the server when it cancels.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"
)

// gate is a gate server started for one test (startGate).
type gate struct {
	*echo
	dir string
}

// startGate starts clients/tests/gate_server.py with channels channels, stopped when the test
// ends; it skips the test without FDN_TEST_PYTHON.
func startGate(t *testing.T, prefix string, channels int) *gate {
	t.Helper()
	python := os.Getenv("FDN_TEST_PYTHON")
	if python == "" {
		t.Skip("set FDN_TEST_PYTHON to a Python with foundation_shm (the harness does)")
	}
	name := fmt.Sprintf("%s%d", prefix, os.Getpid())
	g := &gate{echo: &echo{t: t, python: python, name: name}, dir: t.TempDir()}
	g.cmd = pythonServer(t, python, []string{"../../tests/gate_server.py", name, g.dir, "--channels", fmt.Sprint(channels)})
	t.Cleanup(func() {
		g.cmd.Process.Kill()
		g.cmd.Wait()
		removeObjects(name)
	})
	return g
}

// waitFile waits (a minute at most) until the gate's file model.what exists.
func (g *gate) waitFile(model, what string) {
	g.t.Helper()
	path := filepath.Join(g.dir, model+"."+what)
	for end := time.Now().Add(time.Minute); ; time.Sleep(time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(end) {
			g.t.Fatalf("no %s after a minute", path)
		}
	}
}

// release opens model's gate.
func (g *gate) release(model string) {
	g.t.Helper()
	if err := os.WriteFile(filepath.Join(g.dir, model+".release"), nil, 0o600); err != nil {
		g.t.Fatal(err)
	}
}

func int32Input(v uint32) []Input {
	return []Input{{Name: "x", DType: INT32, Shape: []uint64{1}, Data: []byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}}}
}

// wantAnswer fails the test unless res is the echo of in.
func wantAnswer(t *testing.T, what string, res *Result, err error, in []Input) {
	t.Helper()
	if err != nil || res.Output("x") == nil || !bytes.Equal(res.Output("x").Data, in[0].Data) {
		var got interface{}
		if res != nil {
			got = res.Output("x")
		}
		t.Fatalf("%s: %v, output %+v, want %v", what, err, got, in[0].Data)
	}
}

// wantCtxError fails the test unless err is DEADLINE_EXCEEDED wrapping cause, naming model.
func wantCtxError(t *testing.T, what string, err error, cause error, model string) *Error {
	t.Helper()
	var e *Error
	if !errors.Is(err, cause) || !errors.As(err, &e) || e.Code != DeadlineExceeded || e.Model != model {
		t.Fatalf("%s: %#v (%v), want DEADLINE_EXCEEDED wrapping %v naming %q", what, err, err, cause, model)
	}
	if !errors.Is(fmt.Errorf("wrapped: %w", err), cause) || !strings.Contains(err.Error(), cause.Error()) {
		t.Fatalf("%s: %v does not say %v through wrapping", what, err, cause)
	}
	return e
}

// A cancel while the request is with the server abandons the call at once: DEADLINE_EXCEEDED
// wrapping context.Canceled, naming the request. The channel stays busy until the late answer
// (spec 7.5): the next call on the client waits for it, then sends and reads its own. The
// latency from cancel() to the call's return is logged: within cancelSlice (5 ms) plus
// scheduling, not the 50 ms wait slice of a call without a context.
func TestLiveCancelAbandonsTheCallAndTheNextCallGetsItsOwnAnswer(t *testing.T) {
	g := startGate(t, "fdngoctx", 1)
	c := g.connect(Options{})
	var took []time.Duration
	for round := 0; round < 20; round++ {
		model := fmt.Sprintf("gate_c%d", round)
		ctx, cancel := context.WithCancel(context.Background())
		type answer struct {
			err error
			at  time.Time
		}
		done := make(chan answer, 1)
		go func() {
			_, err := c.InferContext(ctx, model, int32Input(uint32(round)))
			done <- answer{err, time.Now()}
		}()
		g.waitFile(model, "with-server")
		time.Sleep(time.Duration(round%7) * time.Millisecond) // anywhere in a slice
		start := time.Now()
		cancel()
		a := <-done
		took = append(took, a.at.Sub(start))
		if e := wantCtxError(t, "a cancelled call", a.err, context.Canceled, model); e.RequestID == 0 {
			t.Fatalf("the cancelled call names no request: %v", a.err)
		}

		// the next call waits for the late answer, then gets its own
		in := int32Input(uint32(1000 + round))
		next := make(chan error, 1)
		go func() {
			res, err := c.InferContext(context.Background(), "echo", in)
			if err == nil && !bytes.Equal(res.Output("x").Data, in[0].Data) {
				err = fmt.Errorf("got %v, want %v", res.Output("x").Data, in[0].Data)
			}
			next <- err
		}()
		if round == 0 {
			select {
			case err := <-next:
				t.Fatalf("the next call did not wait for the late answer: %v", err)
			case <-time.After(100 * time.Millisecond):
			}
		}
		g.release(model)
		if err := <-next; err != nil {
			t.Fatalf("round %d: the call after the cancelled one: %v", round, err)
		}
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	t.Logf("cancel() to return, %d calls: min %v, median %v, max %v", len(took), took[0], took[len(took)/2], took[len(took)-1])
	// 5 ms slices: half the calls within 5 ms plus scheduling; 50 ms slices made it ~25 ms
	if took[len(took)/2] > 20*time.Millisecond {
		t.Errorf("the median cancel took %v (%v)", took[len(took)/2], took)
	}
}

// The context's deadline is the call's: sent to the server as a timeout is, and past it the call
// fails DEADLINE_EXCEEDED wrapping context.DeadlineExceeded. A context already done, or whose
// deadline has passed, sends nothing; a nil one is INVALID_INPUT.
func TestLiveContextDeadlineIsTheCallsDeadline(t *testing.T) {
	g := startGate(t, "fdngoctxd", 1)
	c := g.connect(Options{})
	in := int32Input(5)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	before := monotonicNs()
	res, err := c.InferContext(ctx, "echo", in)
	cancel()
	wantAnswer(t, "a call within its context's deadline", res, err, in)
	if d := c.req.DeadlineNs; d < before+uint64(29*time.Second) || d > monotonicNs()+uint64(30*time.Second) {
		t.Errorf("the request's deadline is %d ns from the call, want the context's 30 s", d-before)
	}
	res, err = c.InferContext(context.Background(), "echo", in)
	wantAnswer(t, "a call without a deadline", res, err, in)
	if c.req.DeadlineNs != 0 {
		t.Errorf("a context without a deadline sent one: %d", c.req.DeadlineNs)
	}

	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	start := time.Now()
	_, err = c.InferContext(ctx, "gate_d", in)
	cancel()
	if e := wantCtxError(t, "a call past its context's deadline", err, context.DeadlineExceeded, "gate_d"); e.RequestID == 0 {
		t.Errorf("the call names no request: %v", err)
	}
	if took := time.Since(start); took < 100*time.Millisecond || took > 10*time.Second {
		t.Errorf("a 100 ms deadline took %v", took)
	}

	// while the late answer is owed: a deadline, then a cancel, end the wait for it
	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err = c.InferContext(ctx, "echo", in)
	cancel()
	e := wantCtxError(t, "a call waiting for the late answer past its deadline", err, context.DeadlineExceeded, "echo")
	if e.RequestID != 0 || !strings.Contains(e.Message, "previous request on this channel") {
		t.Errorf("a call that sent nothing: %v", err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = c.InferCallContext(ctx, "echo", in, Call{Params: []byte(`{"k": 1}`)})
	e = wantCtxError(t, "a call waiting for the late answer, cancelled", err, context.Canceled, "echo")
	if e.RequestID != 0 || !strings.Contains(e.Message, "context canceled while the previous request on this channel") {
		t.Errorf("a call that sent nothing: %v", err)
	}
	g.release("gate_d")
	res, err = c.InferContext(context.Background(), "echo", in)
	wantAnswer(t, "the call after the late answer", res, err, in)

	// done before the call: nothing sent
	sent := c.nextID
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	_, err = c.InferContext(ctx, "echo", in)
	wantCtxError(t, "a call of a cancelled context", err, context.Canceled, "echo")
	ctx, cancel = context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	_, err = c.InferContext(ctx, "echo", in)
	cancel()
	wantCtxError(t, "a call of a context past its deadline", err, context.DeadlineExceeded, "echo")
	if c.nextID != sent {
		t.Errorf("a call of a done context sent a request")
	}
	_, err = c.InferContext(nil, "echo", in) // a nil context is the case under test
	if e, ok := err.(*Error); !ok || e.Code != InvalidInput || !strings.Contains(e.Message, "nil context") {
		t.Errorf("a nil context: %v", err)
	}
	res, err = c.InferContext(context.Background(), "echo", in)
	wantAnswer(t, "the last call", res, err, in)
}

// A cancelled LoanInferContext ends the loan (the server may still read its inputs), as a
// LoanInfer past its deadline does.
func TestLiveCancelledLoanEndsTheLoan(t *testing.T) {
	g := startGate(t, "fdngoctxl", 1)
	c := g.connect(Options{})
	if err := c.LoanBegin("gate_l", []Tensor{{Name: "x", DType: INT32, NDim: 1, Shape: [8]uint64{1}}}); err != nil {
		t.Fatal(err)
	}
	copy(c.LoanData(0), []byte{9, 0, 0, 0})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { g.waitFile("gate_l", "with-server"); cancel() }()
	_, err := c.LoanInferContext(ctx)
	wantCtxError(t, "a cancelled loan", err, context.Canceled, "gate_l")
	if c.LoanData(0) != nil {
		t.Error("the loan outlived its cancelled call")
	}
	g.release("gate_l")
	in := int32Input(3)
	res, err := c.InferContext(context.Background(), "echo", in)
	wantAnswer(t, "the call after the cancelled loan", res, err, in)
}

// A call of a context starts no goroutine: many calls, with deadlines and cancelled, leave the
// count of goroutines as it was.
func TestLiveContextCallsStartNoGoroutine(t *testing.T) {
	c, _ := liveClient(t, "fdngoctxg")
	in := int32Input(1)
	before := runtime.NumGoroutine()
	for i := 0; i < 200; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		res, err := c.InferContext(ctx, "echo", in)
		cancel()
		wantAnswer(t, "a call", res, err, in)
		ctx, cancel = context.WithCancel(context.Background())
		cancel()
		if _, err := c.InferContext(ctx, "echo", in); !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	}
	if after := runtime.NumGoroutine(); after > before {
		t.Errorf("%d goroutines before the calls, %d after", before, after)
	}
}

// A call of a context waits in 5 ms slices to see a cancel, but looks at the server's liveness
// (a read of /proc) once a 50 ms wait slice, as a call without one does: it read /proc after
// every 5 ms slice, and 64 such calls waiting cost half a CPU (a quarter now; 11% without a
// context). A held call of 1 s looks about 20 times, not 200.
func TestLiveCallOfAContextLooksAtLivenessOnceAWaitSlice(t *testing.T) {
	g := startGate(t, "fdngoctxl", 1)
	c := g.connect(Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	c.looks = 0
	start := time.Now()
	go func() {
		_, err := c.InferContext(ctx, "gate_l", int32Input(1))
		done <- err
	}()
	g.waitFile("gate_l", "with-server")
	time.Sleep(time.Second)
	g.release("gate_l")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	held := time.Since(start)
	if most := uint64(held/waitSlice) + 5; c.looks > most {
		t.Errorf("a call of a context held %v looked at the server's liveness %d times (at most %d)", held, c.looks, most)
	}
}

// A DEADLINE_EXCEEDED that the context did not end (a handler's answer: its own call timed out,
// clients/tests/broken_server.py's timeout model) is passed on as it is. It was said to wrap
// context.DeadlineExceeded whenever the context had a deadline, a minute ahead here: a caller
// testing errors.Is(err, context.DeadlineExceeded) took the handler's timeout for its own.
func TestLiveAHandlersDeadlineExceededIsNotTheContexts(t *testing.T) {
	srv := startScript(t, "fdngoctxh", "../../tests/broken_server.py")
	c := srv.connect(Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := c.InferContext(ctx, "timeout", int32Input(1))
	e := callError(t, "a handler's DEADLINE_EXCEEDED", err, DeadlineExceeded, "timeout", -1)
	if e.Message != "a server this handler calls did not answer in time" || errors.Is(err, context.DeadlineExceeded) ||
		e.Unwrap() != nil {
		t.Errorf("a handler's DEADLINE_EXCEEDED, the context's deadline a minute ahead: %v (wraps %v)", err, e.Unwrap())
	}
}
