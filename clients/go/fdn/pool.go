package fdn

// pool.go: Pool, the clients of one server shared by many goroutines: connected lazily, one
// taken for each call and put back, in the manner of database/sql's pool.

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// overloadRetry is how long a pool whose connect was refused OVERLOADED (every channel of the
// server taken) makes do with the clients it has before it tries to connect another.
const overloadRetry = time.Second

// Pool holds up to size clients of one server, for any number of goroutines: a call takes a
// free client (connecting one, lazily, while fewer than size are open; else waiting for one to be
// put back, in turn, until its context ends), calls, and puts it back. A Pool is safe for
// concurrent use; its zero value is not usable (NewPool).
//
// Infer and InferCall return copies of the outputs, the caller's to keep: a client's outputs are
// views on its shared memory that its next call, another goroutine's, overwrites. Do lends a
// client for a callback instead, for outputs read in place or a loan (no copy).
//
// A client whose call failed SERVER_UNAVAILABLE (the server died, hung, or a handler said so),
// that lost its server (a call that could not reconnect), or that was closed is closed and not
// put back; the next call connects a new one. An idle client whose server restarted meanwhile
// reconnects in its next call (as every Client does). A client whose call was abandoned (its
// deadline passed, its context cancelled) is put back with its request still with the server and
// taken last: the call that takes it waits for that late answer first (up to its own deadline),
// or, should the server die meanwhile, sends its request to one restarted under the name.
//
// A connect refused OVERLOADED (the server has fewer free channels than the pool's size) takes a
// client of the pool put back meanwhile, or waits for one, while the pool has one; the pool makes
// do with the clients it has for a second before it tries to connect another. With no client of
// its own, the call fails OVERLOADED.
//
// Counters sums what the pool's clients counted (spec 10.5), those it let go included, with a
// reconnect for each client it connected in place of one it dropped.
type Pool struct {
	name string
	opts Options
	size int

	mu      sync.Mutex
	idle    []*Client // taken from the end; those with a request still with the server at the front
	open    int       // clients connected or connecting, idle or in use
	limit   int       // after an OVERLOADED connect, open no more than this until retryAt
	retryAt time.Time
	waiters []chan grant // in turn
	closed  bool

	members map[*Client]struct{} // the clients connected and not let go, idle or out on a call
	gone    Counters             // the counts of the clients let go, and the pool's own reconnects
	dropped int                  // clients dropped (not put back) that no connect has replaced yet
}

// grant is what a waiting call is handed: a client, or leave to connect one (counted in open), or
// the news that the pool was closed.
type grant struct {
	c      *Client
	closed bool
}

// NewPool makes a pool of up to size clients of the server called name, connected with opts as
// they are needed (none yet: a server that is not there fails the first call, not NewPool). The
// name, the options and size (at least 1) are checked as Connect checks them: INVALID_INPUT.
func NewPool(name string, opts Options, size int) (*Pool, error) {
	name, opts, err := checkOptions(name, opts)
	if err != nil {
		return nil, err
	}
	if size < 1 {
		return nil, fail(InvalidInput, 0, "a pool of %d clients (at least 1)", size)
	}
	return &Pool{name: name, opts: opts, size: size, limit: size, members: map[*Client]struct{}{}}, nil
}

// Infer runs model on inputs with a client of the pool, as Client.InferContext does (ctx bounds
// the wait for a free client, a connect, and the call). The outputs are copies, the caller's.
func (p *Pool) Infer(ctx context.Context, model string, inputs []Input) (*Result, error) {
	return p.InferCall(ctx, model, inputs, Call{})
}

// InferCall is Infer with a version, parameters or a choice of outputs.
func (p *Pool) InferCall(ctx context.Context, model string, inputs []Input, call Call) (*Result, error) {
	var out *Result
	err := p.do(ctx, model, true, func(c *Client) error {
		res, err := c.InferCallContext(ctx, model, inputs, call)
		if err == nil {
			out = res.clone()
		}
		return err
	})
	return out, err
}

// Do lends fn a client of the pool, taken as Infer takes one (waiting until ctx ends), and puts
// it back when fn returns: fn may read outputs in place, or make a loan, with no copy. fn must
// not keep the client, nor its outputs or loaned slices, once it returns. The client is not put
// back (it is closed) if it was closed, lost its server, or fn's error is SERVER_UNAVAILABLE
// (CodeOf sees through wrapping), or if fn panics. Do returns fn's error, or the pool's: closed,
// the context ended while waiting for a client (DEADLINE_EXCEEDED wrapping ctx.Err()), or the
// connect's. A nil fn is INVALID_INPUT, no client taken.
func (p *Pool) Do(ctx context.Context, fn func(c *Client) error) error {
	if fn == nil {
		return fail(InvalidInput, 0, "nil callback: Do lends a client to fn, which must not be nil")
	}
	return p.do(ctx, "", false, fn)
}

// do takes a client, lends it to fn, and puts it back; call: fn makes a call (Infer, InferCall),
// not Do's callback, which may only begin a loan.
func (p *Pool) do(ctx context.Context, model string, call bool, fn func(c *Client) error) error {
	if p == nil {
		return withCall(fail(InvalidInput, 0, "the pool is nil (did NewPool fail?)"), model, 0)
	}
	if ctx == nil {
		return withCall(fail(InvalidInput, 0, "nil context (use context.Background() for a call without one)"), model, 0)
	}
	c, err := p.get(ctx)
	if err != nil {
		// a call (Infer, InferCall: not Do, which may only begin a loan) whose client found the
		// server gone as it connected sent nothing, and says so, as a client's own call does
		if e, ok := err.(*Error); ok && e.gone && call {
			err = notSent(e, e, "not sent")
		}
		return withCall(err, model, 0)
	}
	discard := true // fn panicked: the client's state is unknown
	defer func() { p.put(c, discard) }()
	err = fn(c)
	discard = atomic.LoadInt32(&c.closed) != 0 || !c.connected || CodeOf(err) == ServerUnavailable
	return err
}

// Close closes the pool: its idle clients now, those in use when they are put back; calls
// waiting for a client, calls still connecting one (the client closed once connected, unused; a
// connect that fails is named after), and every later call, fail SERVER_UNAVAILABLE ("the pool of
// "NAME" is closed"). A second Close does nothing.
func (p *Pool) Close() error {
	if p == nil {
		return fail(InvalidInput, 0, "the pool is nil (did NewPool fail?)")
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.open -= len(idle)
	for _, c := range idle {
		p.letGo(c)
	}
	for _, w := range p.waiters {
		w <- grant{closed: true}
	}
	p.waiters = nil
	p.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
	return nil
}

func (p *Pool) closedError() error {
	return fail(ServerUnavailable, 0, "the pool of %q is closed", p.name)
}

// closedAfter is the closed pool's error for a call whose connect failed once Close had run: the
// pool's closing is the news, the connect's failure named after it (its context's error, if
// that ended it, still what Unwrap gives).
func (p *Pool) closedAfter(err error) error {
	closed := fail(ServerUnavailable, 0, "the pool of %q is closed; the connect under way failed: %v", p.name, err)
	if e, ok := err.(*Error); ok {
		closed.cause = e.cause
	}
	return closed
}

// mayOpen says whether another client may be connected (p.mu held).
func (p *Pool) mayOpen() bool {
	return p.open < p.size && (p.open < p.limit || !time.Now().Before(p.retryAt))
}

// get takes an idle client, connects one, or waits for one until ctx ends.
func (p *Pool) get(ctx context.Context) (*Client, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, p.closedError()
	}
	if c := p.takeIdle(); c != nil {
		p.mu.Unlock()
		return c, nil
	}
	if p.mayOpen() {
		p.open++
		p.mu.Unlock()
		return p.dial(ctx)
	}
	return p.wait(ctx) // unlocks
}

// takeIdle takes the idle client taken first (p.mu held), or nil.
func (p *Pool) takeIdle() *Client {
	n := len(p.idle)
	if n == 0 {
		return nil
	}
	c := p.idle[n-1]
	p.idle[n-1] = nil
	p.idle = p.idle[:n-1]
	return c
}

// wait queues the caller (p.mu held; wait unlocks it) until a client is put back, it may connect
// one, the pool closes, or ctx ends.
func (p *Pool) wait(ctx context.Context) (*Client, error) {
	ch := make(chan grant, 1) // sent to with p.mu held, never blocking
	p.waiters = append(p.waiters, ch)
	p.mu.Unlock()
	select {
	case g := <-ch:
		return p.granted(ctx, g)
	case <-ctx.Done():
	}
	p.mu.Lock()
	for i, w := range p.waiters {
		if w == ch {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			p.mu.Unlock()
			return nil, ctxError(ctx.Err(), fmt.Sprintf("while waiting for a client of the pool of %q", p.name))
		}
	}
	p.mu.Unlock()
	// handed something as ctx ended: pass it on
	switch g := <-ch; {
	case g.c != nil:
		p.put(g.c, false)
	case !g.closed:
		p.mu.Lock()
		p.open--
		p.handOn()
		p.mu.Unlock()
	}
	return nil, ctxError(ctx.Err(), fmt.Sprintf("while waiting for a client of the pool of %q", p.name))
}

func (p *Pool) granted(ctx context.Context, g grant) (*Client, error) {
	switch {
	case g.closed:
		return nil, p.closedError()
	case g.c != nil:
		return g.c, nil
	}
	return p.dial(ctx)
}

// dial connects a client for the pool (counted in open), its waits bounded by ctx. Refused
// OVERLOADED while the pool has clients, it waits for one of them. A client connected once the
// pool has closed is closed, unused: the call fails as those refused after Close.
func (p *Pool) dial(ctx context.Context) (*Client, error) {
	c := &Client{name: p.name, opts: p.opts, nextID: 1}
	deadline, err := c.begin(ctx)
	if err == nil {
		err = c.connect(deadline)
		if e, ok := err.(*Error); ok && c.foundGone {
			e.gone = true
		}
		err = c.ctxCause(err)
	}
	c.end()
	p.mu.Lock()
	if p.closed {
		// the pool closed while this connect ran: the call is refused as a later one would be,
		// whether the connect made a client (closed unused) or failed (its error named)
		p.open--
		p.mu.Unlock()
		if err == nil {
			c.Close()
			return nil, p.closedError()
		}
		return nil, p.closedAfter(err)
	}
	if err == nil {
		p.members[c] = struct{}{}
		if p.dropped > 0 { // in place of a dropped client: the pool's reconnect (spec 10.5)
			p.dropped--
			p.gone.Reconnects++
		}
		p.mu.Unlock()
		runtime.SetFinalizer(c, (*Client).finalize)
		return c, nil
	}
	p.open--
	if CodeOf(err) == Overloaded && p.open > 0 {
		p.limit, p.retryAt = p.open, time.Now().Add(overloadRetry)
		// a client put back while this connect ran went to the idle ones (nobody was waiting):
		// waiting for the next put would wait beside it
		if c := p.takeIdle(); c != nil {
			p.mu.Unlock()
			return c, nil
		}
		return p.wait(ctx) // unlocks
	}
	p.handOn()
	p.mu.Unlock()
	return nil, err
}

// handOn gives waiting calls leave to connect while the pool may open more (p.mu held): a
// client was closed, or a connect failed.
func (p *Pool) handOn() {
	for !p.closed && len(p.waiters) > 0 && p.mayOpen() {
		p.open++
		p.waiters[0] <- grant{}
		p.waiters = p.waiters[1:]
	}
}

// put gives a client back: to the first waiting call, else to the idle ones; or closes it
// (discard, or the pool closed).
func (p *Pool) put(c *Client, discard bool) {
	late := !discard && c.connected && c.pending() // its last request still with the server
	p.mu.Lock()
	if discard || p.closed {
		p.letGo(c)
		if !p.closed {
			p.dropped++
		}
		p.open--
		p.handOn()
		p.mu.Unlock()
		c.Close()
		return
	}
	if len(p.waiters) > 0 {
		p.waiters[0] <- grant{c: c}
		p.waiters = p.waiters[1:]
	} else if late {
		p.idle = append(p.idle, nil)
		copy(p.idle[1:], p.idle)
		p.idle[0] = c
	} else {
		p.idle = append(p.idle, c)
	}
	p.mu.Unlock()
}

// letGo folds the counts of a client the pool closes into gone (p.mu held), so that Counters
// keeps them. Nothing counts on it after this: it is not out on a call, and Close counts nothing.
func (p *Pool) letGo(c *Client) {
	n := c.Counters()
	p.gone.Reconnects += n.Reconnects
	p.gone.Resends += n.Resends
	delete(p.members, c)
}

// Counters returns what the pool counted (spec 10.5): the sum of the counts of its clients, idle
// or out on a call (read from their atomics, so a reconnect or a resend shows as soon as the
// client counts it, in the middle of its call), and of those it let go (a client dropped after
// a call failed SERVER_UNAVAILABLE, or closed with the pool), whose counts it keeps; plus one
// reconnect for each client it connected in place of one it dropped, counted once that connect
// succeeded (a client connected while the pool has fewer than size for the first time is not one;
// a connect that failed counts nothing, nor one finished after Close). Both only grow, and a
// closed pool keeps them. It takes the pool's lock, which no call or connect holds while it
// runs, so it never waits for one: any goroutine may call it at any time. A nil pool counted
// nothing.
func (p *Pool) Counters() Counters {
	if p == nil {
		return Counters{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.gone
	for c := range p.members {
		got := c.Counters()
		n.Reconnects += got.Reconnects
		n.Resends += got.Resends
	}
	return n
}

// clone is a copy of r whose outputs' data is its own (one allocation, each output 8-aligned).
func (r *Result) clone() *Result {
	total := 0
	for i := range r.Outputs {
		total += (len(r.Outputs[i].Data) + 7) &^ 7
	}
	buf := make([]byte, total)
	outs := make([]Tensor, len(r.Outputs))
	for i := range r.Outputs {
		outs[i] = r.Outputs[i]
		if d := r.Outputs[i].Data; d != nil {
			n := copy(buf, d)
			outs[i].Data = buf[:n:n]
			buf = buf[(n+7)&^7:]
		}
	}
	return &Result{RequestID: r.RequestID, Model: r.Model, Version: r.Version, Outputs: outs}
}
