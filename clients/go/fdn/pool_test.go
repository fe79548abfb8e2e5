package fdn

// Pool against live servers: many goroutines through a few clients, waiting, Close, a server
// killed and restarted, and fewer channels than the pool's size.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// poolOf makes a pool of size clients of the server, closed when the test ends.
func poolOf(t *testing.T, name string, size int) *Pool {
	t.Helper()
	p, err := NewPool(name, Options{}, size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// openClients is the pool's count of open clients.
func (p *Pool) openClients() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open
}

// waitWaiters waits until n calls wait for a client of the pool.
func waitWaiters(t *testing.T, p *Pool, n int) {
	t.Helper()
	for end := time.Now().Add(time.Minute); ; time.Sleep(time.Millisecond) {
		p.mu.Lock()
		got := len(p.waiters)
		p.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%d calls wait for a client of the pool, not %d", got, n)
		}
	}
}

// 64 goroutines through a pool of 4 each get their own answers, as copies that later calls leave
// as they were; the pool opens at most 4 clients (channels of this process: 4 and the observer's).
func TestLivePoolServesManyGoroutinesWithTheirOwnAnswers(t *testing.T) {
	srv := startEcho(t, "fdngopool")
	o := srv.connect(Options{})
	p := poolOf(t, srv.name, 4)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 64; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			var kept []*Result
			for i := 0; i < 20; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				res, err := p.Infer(ctx, "echo", int32Input(uint32(g<<16|i)))
				cancel()
				if err != nil {
					errs <- err
					return
				}
				kept = append(kept, res)
			}
			for i, res := range kept {
				if want := int32Input(uint32(g<<16 | i))[0].Data; !bytes.Equal(res.Output("x").Data, want) {
					errs <- fmt.Errorf("goroutine %d, call %d: %v, not its answer %v", g, i, res.Output("x").Data, want)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := p.openClients(); n < 1 || n > 4 {
		t.Errorf("the pool has %d clients open", n)
	}
	closeLeavingTheObserver(t, p, o, srv.name)
}

// Close fails the calls waiting for a client, and every later call, SERVER_UNAVAILABLE saying the
// pool is closed; the client in use is closed when its call returns (its answer still the
// caller's), its channel given back.
func TestLivePoolCloseFailsWaitersAndClosesClientsInUse(t *testing.T) {
	g := startGate(t, "fdngopoolc", 2)
	o := g.connect(Options{})
	p := poolOf(t, g.name, 1)
	held := make(chan error, 1)
	in := int32Input(77)
	go func() {
		res, err := p.Infer(context.Background(), "gate_p", in)
		if err == nil && !bytes.Equal(res.Output("x").Data, in[0].Data) {
			err = errors.New("not its answer")
		}
		held <- err
	}()
	g.waitFile("gate_p", "with-server")
	waiting := make(chan error, 3)
	for i := 0; i < 3; i++ {
		go func() {
			_, err := p.Infer(context.Background(), "echo", in)
			waiting <- err
		}()
	}
	waitWaiters(t, p, 3)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		select {
		case err := <-waiting:
			callError(t, "a call waiting when the pool closed", err, ServerUnavailable, "echo", 0)
			if !strings.Contains(err.Error(), "the pool of \""+g.name+"\" is closed") {
				t.Errorf("a waiting call: %v", err)
			}
		case <-time.After(time.Minute):
			t.Fatal("a waiting call did not end when the pool closed")
		}
	}
	_, err := p.Infer(context.Background(), "echo", in)
	callError(t, "a call after Close", err, ServerUnavailable, "echo", 0)
	if err := p.Do(context.Background(), func(*Client) error { return nil }); CodeOf(err) != ServerUnavailable {
		t.Errorf("Do after Close: %v", err)
	}
	if n := ownedBy(o, uint32(os.Getpid())); n != 2 {
		t.Errorf("the client in use was closed under its call: this process owns %d channels", n)
	}
	g.release("gate_p")
	if err := <-held; err != nil {
		t.Fatalf("the call in use when the pool closed: %v", err)
	}
	wantOwnedBy(t, o, "after the call in use returned its client to the closed pool")
	if p.openClients() != 0 {
		t.Errorf("the closed pool has %d clients open", p.openClients())
	}
	if err := p.Close(); err != nil {
		t.Errorf("a second Close: %v", err)
	}
}

// closedWhileConnecting starts a call of a pool of one client (connect timeout connectMs; the
// call's context ends ctxTimeout after the call starts, or never if 0) whose connect waits for the
// region mutex, held from before the call, and closes the pool once that connect is under way. release lets the mutex go; the call's error
// comes on the channel (wait for it with callEnded).
func closedWhileConnecting(t *testing.T, prefix string, connectMs uint32, ctxTimeout time.Duration) (
	srv *echo, o *Client, p *Pool, release func(), connecting <-chan error,
) {
	t.Helper()
	srv = startEcho(t, prefix)
	o = srv.connect(Options{})
	p, err := NewPool(srv.name, Options{ConnectTimeoutMs: connectMs}, 1)
	if err != nil {
		t.Fatal(err)
	}
	release = holdRegionMutex(t, o)
	ctx := context.Background()
	if ctxTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, ctxTimeout)
		t.Cleanup(cancel)
	}
	ended := make(chan error, 1)
	go func() {
		_, err := p.Infer(ctx, "echo", int32Input(9))
		ended <- err
	}()
	for end := time.Now().Add(time.Minute); p.openClients() != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			release()
			t.Fatal("the call did not start to connect")
		}
	}
	if err := p.Close(); err != nil {
		release()
		t.Fatal(err)
	}
	return srv, o, p, release, ended
}

// callEnded is the error of the call closedWhileConnecting started, within a minute.
func callEnded(t *testing.T, connecting <-chan error) error {
	t.Helper()
	select {
	case err := <-connecting:
		return err
	case <-time.After(time.Minute):
		t.Fatal("the call connecting when the pool closed did not end")
	}
	return nil
}

// A call whose connect was under way when the pool closed (here waiting for the region mutex,
// held until Close has run) made its call on the client it connected, closed only when it came
// back. It fails as the calls refused after Close do, its client closed before any call.
func TestLivePoolCloseFailsACallStillConnecting(t *testing.T) {
	srv, o, p, release, connecting := closedWhileConnecting(t, "fdngopoolcc", 30000, 0)
	release() // the connect takes the mutex and a channel, after Close
	err := callEnded(t, connecting)
	callError(t, "a call connecting when the pool closed", err, ServerUnavailable, "echo", 0)
	if !strings.Contains(err.Error(), "the pool of \""+srv.name+"\" is closed") {
		t.Errorf("a call connecting when the pool closed: %v", err)
	}
	wantOwnedBy(t, o, "after the connect that ended after Close")
	if n := p.openClients(); n != 0 {
		t.Errorf("the closed pool has %d clients open", n)
	}
}

// A call whose connect was under way when the pool closed and then failed (here the region
// mutex, held until after Close, outlasts the connect timeout) returned its connect's error
// (OVERLOADED "region mutex busy"), as if the pool were open. It fails as the calls refused after
// Close do, the connect's error named after.
func TestLivePoolCloseFailsACallWhoseConnectFailed(t *testing.T) {
	srv, _, p, release, connecting := closedWhileConnecting(t, "fdngopoolcf", 1000, 0)
	err := callEnded(t, connecting)
	release()
	callError(t, "a call whose connect failed after the pool closed", err, ServerUnavailable, "echo", 0)
	want := "the pool of \"" + srv.name + "\" is closed; the connect under way failed: OVERLOADED: "
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "region mutex busy") {
		t.Errorf("a call whose connect failed after the pool closed: %v; want it to say %q", err, want)
	}
	if n := p.openClients(); n != 0 {
		t.Errorf("the closed pool has %d clients open", n)
	}
}

// A call whose connect ended with its context after the pool closed fails as the calls refused
// after Close do, and still unwraps to the context's error (errors.Is(err,
// context.DeadlineExceeded)), as a call that ended with its context does: the closed pool's
// error dropped it.
func TestLivePoolCloseKeepsTheContextOfAConnectItEnded(t *testing.T) {
	_, _, _, release, connecting := closedWhileConnecting(t, "fdngopoolcx", 30000, 500*time.Millisecond)
	defer release()
	err := callEnded(t, connecting)
	callError(t, "a call whose connect its context ended after the pool closed", err, ServerUnavailable, "echo", 0)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "the connect under way failed: DEADLINE_EXCEEDED: ") {
		t.Errorf("a call whose connect its context ended after the pool closed: %v (Unwrap %v); want it to wrap %v",
			err, errors.Unwrap(err), context.DeadlineExceeded)
	}
}

// A call waits for a free client until its context ends (DEADLINE_EXCEEDED wrapping ctx.Err()).
// A call abandoned on a client puts it back with its request still with the server, taken last:
// of two idle clients the next call takes the other and is answered at once; with one, it waits
// for the late answer.
func TestLivePoolWaitsUntilTheContextEndsAndTakesAbandonedClientsLast(t *testing.T) {
	g := startGate(t, "fdngopoolw", 3)
	in := int32Input(2)
	hold := func(p *Pool, model string) (context.CancelFunc, chan error) {
		ctx, cancel := context.WithCancel(context.Background())
		held := make(chan error, 1)
		go func() {
			_, err := p.Infer(ctx, model, int32Input(1))
			held <- err
		}()
		g.waitFile(model, "with-server")
		return cancel, held
	}
	within := func(d time.Duration) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		t.Cleanup(cancel)
		return ctx
	}

	p1 := poolOf(t, g.name, 1)
	cancel, held := hold(p1, "gate_w1")
	_, err := p1.Infer(within(100*time.Millisecond), "echo", in)
	wantCtxError(t, "a call that found no free client", err, context.DeadlineExceeded, "echo")
	if !strings.Contains(err.Error(), "while waiting for a client of the pool of") {
		t.Errorf("the error does not say what the call waited for: %v", err)
	}
	cancel()
	wantCtxError(t, "the held call, cancelled", <-held, context.Canceled, "gate_w1")
	_, err = p1.Infer(within(100*time.Millisecond), "echo", in)
	if e := wantCtxError(t, "a call on the abandoned client", err, context.DeadlineExceeded, "echo"); !strings.Contains(e.Message, "previous request") {
		t.Errorf("the call did not wait for the late answer: %v", err)
	}
	g.release("gate_w1")
	res, err := p1.Infer(within(time.Minute), "echo", in)
	wantAnswer(t, "the call after the late answer", res, err, in)

	p2 := poolOf(t, g.name, 2)
	cancel, held = hold(p2, "gate_w2")
	res, err = p2.Infer(within(time.Minute), "echo", in) // connects the second client
	wantAnswer(t, "a call beside the held one", res, err, in)
	cancel()
	wantCtxError(t, "the held call, cancelled", <-held, context.Canceled, "gate_w2")
	for i := 0; i < 3; i++ { // the gate stays shut: only the other client answers
		res, err = p2.Infer(within(10*time.Second), "echo", in)
		wantAnswer(t, "a call with an abandoned client idle and a free one", res, err, in)
	}
	if n := p2.openClients(); n != 2 {
		t.Errorf("the pool has %d clients open, not 2", n)
	}
	g.release("gate_w2")
}

// Do lends a client for outputs read in place; one whose callback panicked is closed, not put
// back, and the next call connects another.
func TestLivePoolDoLendsAClient(t *testing.T) {
	srv := startEcho(t, "fdngopooldo")
	o := srv.connect(Options{})
	p := poolOf(t, srv.name, 1)
	in := int32Input(42)
	var lent *Client
	err := p.Do(context.Background(), func(c *Client) error {
		lent = c
		res, err := c.InferContext(context.Background(), "echo", in)
		wantAnswer(t, "a call on the lent client", res, err, in)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("the callback's panic was swallowed")
			}
		}()
		p.Do(context.Background(), func(c *Client) error {
			if c != lent {
				t.Error("the idle client was not lent again")
			}
			panic("in the callback")
		})
	}()
	if atomic.LoadInt32(&lent.closed) == 0 {
		t.Error("the client whose callback panicked was put back")
	}
	if err := p.Do(context.Background(), func(c *Client) error {
		if c == lent {
			t.Error("the closed client was lent again")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := p.Do(context.Background(), func(c *Client) error { return c.Close() }); err != nil {
		t.Fatal(err)
	}
	res, err := p.Infer(context.Background(), "echo", in)
	wantAnswer(t, "the call after a callback closed its client", res, err, in)
	wantErr := errors.New("mine")
	if err := p.Do(context.Background(), func(*Client) error { return wantErr }); err != wantErr {
		t.Errorf("Do returned %v, not the callback's error", err)
	}
	p.Close()
	wantOwnedBy(t, o, "after the pool closed")
}

// A server killed under the pool: the calls fail SERVER_UNAVAILABLE and their clients are closed,
// not put back; once the server is back, every goroutine is served again through new clients,
// and the pool never holds more than its size.
func TestLivePoolSurvivesAServerKilledAndRestarted(t *testing.T) {
	srv := startEcho(t, "fdngopoolk")
	p := poolOf(t, srv.name, 4)
	var phase sync.Map // goroutine -> what it saw
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	unavailable, other, afterRestart := 0, []error{}, map[int]bool{}
	restarted := make(chan struct{})
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				in := int32Input(uint32(g<<16 | i))
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				res, err := p.Infer(ctx, "echo", in)
				cancel()
				mu.Lock()
				switch {
				case err == nil && !bytes.Equal(res.Output("x").Data, in[0].Data):
					other = append(other, errors.New("another call's answer"))
				case err == nil:
					select {
					case <-restarted:
						afterRestart[g] = true
					default:
					}
				case CodeOf(err) == ServerUnavailable:
					unavailable++
				default:
					other = append(other, err)
				}
				mu.Unlock()
				if n := p.openClients(); n > 4 {
					phase.Store(g, n)
				}
				if err != nil {
					time.Sleep(time.Millisecond)
				}
			}
		}(g)
	}
	time.Sleep(200 * time.Millisecond)
	srv.stop(syscall.SIGKILL)
	time.Sleep(200 * time.Millisecond)
	srv.restart()
	close(restarted)
	for end := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		served := len(afterRestart)
		mu.Unlock()
		if served == 8 {
			break
		}
		if time.Now().After(end) {
			t.Errorf("%d of 8 goroutines were served after the restart", served)
			break
		}
	}
	close(stop)
	wg.Wait()
	if unavailable == 0 {
		t.Error("no call saw the server gone")
	}
	for _, err := range other {
		t.Errorf("a call under the killed server: %v", err)
	}
	phase.Range(func(g, n interface{}) bool {
		t.Errorf("goroutine %v saw %v clients open", g, n)
		return true
	})
	o := srv.connect(Options{})
	closeLeavingTheObserver(t, p, o, srv.name)
}

// closeLeavingTheObserver checks that this process owns no more than the pool's 4 channels and the
// observer o's, closes the pool, and checks that only o's channel and data segment are left.
func closeLeavingTheObserver(t *testing.T, p *Pool, o *Client, name string) {
	t.Helper()
	if n := ownedBy(o, uint32(os.Getpid())); n > 5 {
		t.Errorf("this process owns %d channels of %s, more than the pool's 4 and the observer's", n, name)
	}
	p.Close()
	wantOwnedBy(t, o, "after the pool closed")
	if segs := dataSegments(name); len(segs) != 1 {
		t.Errorf("only the observer's data segment is left: %v", segs)
	}
}

// A server of 2 channels under a pool of 4: a connect refused OVERLOADED waits for a client of
// the pool, and 16 goroutines are served through 2; with no client of its own (every channel held
// by others) the call fails OVERLOADED.
func TestLivePoolOfMoreClientsThanTheServerHasChannels(t *testing.T) {
	g := startGate(t, "fdngopoolo", 2)
	p := poolOf(t, g.name, 4)
	held := make(chan error, 2)
	for _, model := range []string{"gate_o1", "gate_o2"} {
		go func(model string) {
			_, err := p.Infer(context.Background(), model, int32Input(1))
			held <- err
		}(model)
		g.waitFile(model, "with-server")
	}
	in := int32Input(3)
	third := make(chan error, 1)
	go func() {
		res, err := p.Infer(context.Background(), "echo", in)
		if err == nil && !bytes.Equal(res.Output("x").Data, in[0].Data) {
			err = errors.New("not its answer")
		}
		third <- err
	}()
	waitWaiters(t, p, 1) // refused OVERLOADED, it waits
	g.release("gate_o1")
	if err := <-third; err != nil {
		t.Fatalf("the call whose connect was refused OVERLOADED: %v", err)
	}
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	g.release("gate_o2")
	if err := <-held; err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				in := int32Input(uint32(g<<16 | i))
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				res, err := p.Infer(ctx, "echo", in)
				cancel()
				if err == nil && !bytes.Equal(res.Output("x").Data, in[0].Data) {
					err = errors.New("another call's answer")
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := p.openClients(); n != 2 {
		t.Errorf("the pool has %d clients open, not the server's 2 channels", n)
	}
	p.Close()

	a, b := g.connect(Options{}), g.connect(Options{})
	q := poolOf(t, g.name, 2)
	_, err := q.Infer(context.Background(), "echo", int32Input(1))
	callError(t, "a pool with no channel to take", err, Overloaded, "echo", 0)
	a.Close()
	b.Close()
}

// A connect refused OVERLOADED while the pool's only client was put back idle (the call on it
// ended while the connect waited for the region mutex) took that client. It waited for a client
// to be put back, with one idle and nobody to put one back: until its context ended (for ever
// with context.Background()), the pool's idle client beside it.
func TestLivePoolConnectRefusedOverloadedTakesAClientPutBackMeanwhile(t *testing.T) {
	g := startGate(t, "fdngopoolr", 2)
	o := g.connect(Options{}) // one channel of the two: the pool gets the other
	p := poolOf(t, g.name, 2)
	held := make(chan error, 1)
	go func() {
		_, err := p.Infer(context.Background(), "gate_r", int32Input(1))
		held <- err
	}()
	g.waitFile("gate_r", "with-server")
	release := holdRegionMutex(t, o)
	in := int32Input(5)
	second := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		res, err := p.Infer(ctx, "echo", in)
		if err == nil && !bytes.Equal(res.Output("x").Data, in[0].Data) {
			err = errors.New("not its answer")
		}
		second <- err
	}()
	for end := time.Now().Add(time.Minute); p.openClients() != 2; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the second call did not start to connect")
		}
	}
	g.release("gate_r") // the first call ends: its client is put back idle, nobody waiting
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	release() // the second call's connect takes the mutex, finds no free channel: OVERLOADED
	select {
	case err := <-second:
		if err != nil {
			t.Fatalf("the call whose connect was refused OVERLOADED, with a client of the pool idle: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call whose connect was refused OVERLOADED waits with a client of the pool idle")
	}
	if n := p.openClients(); n != 1 {
		t.Errorf("the pool has %d clients open, not 1", n)
	}
}
