package fdn

// call.go: one request on the claimed channel: wait (spin, then block), deadlines, the
// TOO_LARGE retry, loans (sections 7.2, 7.5 and 10.1 "Growing").

import (
	"fmt"
	"sync/atomic"
	"time"
)

// waitSeq is section 7.2, steps 4-7: spin (if spin), then block in slices, checking the deadline (0: none)
// and the server's liveness between slices.
func (c *Client) waitSeq(s uint64, deadline uint64, spin bool) error {
	seqWord := c.u64(c.ch + cServerSeq)
	if atomic.LoadUint64(seqWord) == s {
		return nil
	}
	if spin && c.opts.SpinUs > 0 && c.spin(seqWord, s, deadline) {
		return nil
	}
	sleeping := c.u32(c.ch + cClientSleeping)
	atomic.StoreUint32(sleeping, 1) // sequentially consistent: the full fence of 7.1
	defer atomic.StoreUint32(sleeping, 0)
	var looked uint64 // when the server's liveness was last looked at (0: not yet)
	for atomic.LoadUint64(seqWord) != s {
		slice := c.slice()
		if deadline != 0 {
			now := monotonicNs()
			if now >= deadline {
				return fail(DeadlineExceeded, 0, "no response from %q before the deadline", c.name)
			}
			if left := int64(deadline - now); left < slice {
				slice = left
			}
		}
		if err := c.ctxEnded("while waiting for the response"); err != nil {
			return err // the request stays with the server: the channel is busy until its answer (7.5)
		}
		semWait(c.sem, slice)
		if atomic.LoadUint64(seqWord) == s {
			break
		}
		if atomic.LoadInt32(&c.closed) != 0 { // Close, on another goroutine, waits for this call
			return c.closedDuring()
		}
		// liveness reads /proc: after the first slice, then once a waitSlice, also when the slices
		// are cancelSlice long (64 calls of a context read it 12800 times a second, not 1280)
		if now := monotonicNs(); looked == 0 || now-looked >= uint64(waitSlice) {
			looked = now
			if !c.alive() {
				c.connected = false // the next call reconnects
				return c.gone(seqWord, s)
			}
		}
	}
	return nil
}

// gone is the end of a wait for s whose server is not alive (spec 10.3): nil if the answer came
// just before the death, else SERVER_UNAVAILABLE, marked unsent when the server's process is
// proven dead (provenGone, the classifier alive asks too) and never dispatched the request
// (dispatch stores server_busy = 1 before it decodes). A dead process changes neither word any
// more; they are read in that order, after the proof. A region STOPPED while its process lives is
// no proof (its serving loop may yet dispatch): a request sent again on a new connection to that
// live server would run twice.
func (c *Client) gone(seqWord *uint64, s uint64) error {
	dead := provenGone(c.serverPid, c.serverStart)
	if atomic.LoadUint64(seqWord) == s {
		return nil
	}
	e := fail(ServerUnavailable, 0, "shm server %q (pid %d) is gone", c.name, c.serverPid)
	e.unsent = dead && atomic.LoadUint32(c.u32(c.ch+cServerBusy)) == 0
	return e
}

// spin polls the response word for the spin window (the polite spin of 7.2): flat out for
// yieldAfter, then yielding the CPU between polls. It reports whether s came.
func (c *Client) spin(seqWord *uint64, s uint64, deadline uint64) bool {
	start := time.Now()
	// never past the deadline, and at most one wait slice: the spin checks neither
	limit := time.Duration(c.opts.SpinUs) * time.Microsecond
	if limit > time.Duration(waitSlice) {
		limit = time.Duration(waitSlice)
	}
	if deadline != 0 {
		if now := monotonicNs(); now >= deadline {
			limit = 0
		} else if left := time.Duration(deadline - now); left < limit {
			limit = left
		}
	}
	polite := false
	for k := 0; ; k++ {
		if atomic.LoadUint64(seqWord) == s {
			return true
		}
		if polite {
			schedYield() // the server may need this CPU (more threads than CPUs)
		}
		if k&15 == 15 || polite {
			spun := time.Since(start)
			if spun > limit || c.doneNow() { // a cancel ends the spin: the wait after it reports it
				return false
			}
			polite = spun > yieldAfter
		}
	}
}

// noticeStop: a server that stopped (gracefully) marked its region STOPPED; a restarted one has
// a new region. One load, so every call can afford it; a killed server is noticed while waiting.
func (c *Client) noticeStop() {
	if c.connected && atomic.LoadUint32(c.u32(rState)) == stateStopped {
		c.connected = false
	}
}

// ready reconnects if the server died, and waits until the channel is idle. A server found gone
// while the call waits for an abandoned request's late answer (spec 7.5: its process proven dead,
// or its region STOPPED; waitSeq dropped the connection) never had this call's request: the call
// reconnects, to send it to a server restarted under the name, within its deadline; without one
// it fails gone, "not sent" and why appended (a loan's call, whose inputs are in the old area,
// never waits so: a loan ends when its request is left with the server). Nothing of the call was
// published, so a region STOPPED while its process lives is no reason to fail it as if it might
// have run (the resend, which needs proof of death, is another matter). That reconnect is the
// call's one more attempt: its request is not sent again (send).
func (c *Client) ready(deadline uint64) error {
	c.noticeStop()
	c.redialed = false
	if !c.connected {
		c.disconnect()
		if err := c.connect(deadline); err != nil {
			return err
		}
	}
	err := c.waitIdle(deadline)
	if e, ok := err.(*Error); ok && e.Code == ServerUnavailable && !c.connected && !c.loaned {
		c.redialed = true
		if err := c.redial(deadline, 0); err != nil {
			return notSent(e, err, "not sent")
		}
		return nil
	}
	return err
}

// waitIdle waits until the channel is idle: the answer to a request that passed its deadline may
// still be owed; it is never read, the next request is written once it is in (spec 7.5). Up to
// deadline (0: none), then DEADLINE_EXCEEDED; a server that is hung (10.3) meanwhile is waited
// for as a claim waits for its beat, up to ConnectTimeoutMs and no later than the deadline, then
// SERVER_UNAVAILABLE: a call without a deadline waited for ever on a stopped server, its request
// not even sent.
func (c *Client) waitIdle(deadline uint64) error {
	var hungEnd uint64
	first := true
	for c.pending() {
		now := monotonicNs()
		if why := c.hung(); why == "" {
			hungEnd = 0
		} else {
			if hungEnd == 0 {
				hungEnd = now + uint64(c.opts.ConnectTimeoutMs)*uint64(time.Millisecond)
			}
			end, limit := hungEnd, fmt.Sprintf("within ConnectTimeoutMs (%d ms)", c.opts.ConnectTimeoutMs)
			if deadline != 0 && deadline < hungEnd {
				end, limit = deadline, "before the call's deadline"
			}
			if now >= end {
				return fail(ServerUnavailable, 0, "%s (its process is stopped or stalled, and no beat came %s): "+
					"the previous request on this channel (a call that passed its deadline) is still with it", why, limit)
			}
		}
		until := now + uint64(waitSlice) // a slice at a time: the heartbeat is looked at between them
		if deadline != 0 && deadline < until {
			until = deadline
		}
		// the spin in the first slice only: a spin window of a whole slice spun every slice (a
		// CPU burnt while waiting) and never looked at the server's liveness (each slice ended in it)
		err := c.waitSeq(c.seq, until, first)
		first = false
		if err != nil {
			e := err.(*Error)
			if e.cause != nil { // the call's context ended
				e.Message = fmt.Sprintf("%v while the previous request on this channel (a call abandoned at its deadline "+
					"or cancel) was still with the server", e.cause)
				return err
			}
			if e.Code != DeadlineExceeded {
				return err
			}
			if deadline != 0 && monotonicNs() >= deadline {
				e.Message = "the previous request on this channel (a call that passed its deadline) is still with the server"
				return err
			}
		}
	}
	return nil
}

// pending reports whether the last request published on the channel is still with the server.
func (c *Client) pending() bool {
	return atomic.LoadUint64(c.u64(c.ch+cServerSeq)) != c.seq
}

func (c *Client) ensure(end uint64) error {
	if end <= c.reqCap {
		return nil
	}
	limit := c.maxRequestBytes + (1 << 20) // the tensors' bytes, then the payload (params: 1 MiB)
	if limit < c.maxRequestBytes {
		limit = ^uint64(0) // the server's max_request_bytes is near 2^64: no wrap to a small limit
	}
	if end-HeaderSize > limit {
		return fail(TooLarge, 0, "a request of %d bytes exceeds the server's %d", end, c.maxRequestBytes)
	}
	capacity, ok := pages(end)
	if !ok {
		return fail(TooLarge, 0, "a request of %d bytes is past 2^64 once rounded up to pages", end)
	}
	c.used = 0
	// the response area as large, as a guess at the answer, but not past MaxResponseBytes: a
	// larger answer is refused, not made room for
	guess, _ := pages(c.opts.MaxResponseBytes) // at most 2^48
	if capacity < guess {
		guess = capacity
	}
	resp := c.respCap
	if resp < guess {
		resp = guess
	}
	return c.attach(capacity, resp)
}

func deadlineOf(timeout time.Duration) uint64 {
	if timeout < 0 {
		return 0
	}
	return monotonicNs() + uint64(timeout)
}

// exchange publishes the request in the request area, waits and decodes (section 7.2).
func (c *Client) exchange(deadline uint64, retry bool) (*Result, error) {
	rid := c.req.RequestID
	c.seq++
	s := c.seq
	atomic.StoreUint64(c.u64(c.ch+cClientSeq), s) // sequentially consistent: the fence of step 3
	if atomic.LoadUint32(c.u32(rServerSleeping)) != 0 {
		semPost(c.bell)
	}
	if err := c.waitSeq(s, deadline, true); err != nil {
		err.(*Error).RequestID = rid
		return nil, err
	}
	resp := &c.resp
	// decode a copy of the header and payload (never the area itself, which the server process
	// could rewrite meanwhile); the outputs are views on the area at offsets checked in the copy
	area := c.data[c.reqCap : c.reqCap+c.respCap : c.reqCap+c.respCap]
	c.snap = snapshotResponse(area, c.snap)
	if err := decodeResponse(c.snap, area, DefaultLimits, resp); err != nil {
		return nil, err
	}
	if resp.RequestID != rid {
		return nil, fail(BadChecksum, rid, "response carries request id %d, not %d", resp.RequestID, rid)
	}
	if resp.Status != OK {
		if resp.Status == TooLarge && resp.RequiredBytes > c.respCap {
			// a hostile or broken server could ask for all of /dev/shm: the area is left as it is
			if resp.RequiredBytes > c.opts.MaxResponseBytes {
				return nil, fail(TooLarge, rid, "the response needs %d bytes, more than this client's "+
					"Options.MaxResponseBytes (%d): connect with a larger Options.MaxResponseBytes to take it",
					resp.RequiredBytes, c.opts.MaxResponseBytes)
			}
			if retry {
				size, _ := pages(resp.RequiredBytes) // at most MaxResponseBytes: no wrap
				if err := c.attach(c.reqCap, size); err != nil {
					return nil, err
				}
				return c.exchange(deadline, false)
			}
		}
		return nil, serverError(resp, rid)
	}
	if err := refuseCuda(resp.Outputs, rid); err != nil {
		return nil, err
	}
	c.res = Result{RequestID: rid, Model: resp.Model, Version: resp.Version, Outputs: resp.Outputs}
	return &c.res, nil
}

// serverError is the error a response with a nonzero status fails its call with (section 9):
// that status with the server's text; INTERNAL naming the code for one this version does not
// define.
func serverError(resp *Response, rid uint64) *Error {
	if resp.Status > Internal {
		return fail(Internal, rid, "unknown error code %d: %s", uint32(resp.Status), resp.Text)
	}
	return &Error{Code: resp.Status, Message: string(resp.Text), RequestID: rid}
}

// refuseCuda fails a call answered with a CUDA_IPC output (spec 15.2): this client never asks for
// one, and such an output has no bytes in the area (its Data is nil).
func refuseCuda(outputs []Tensor, rid uint64) error {
	for i := range outputs {
		if outputs[i].Location != LocationHost {
			return fail(Internal, rid, "output %q came as a CUDA_IPC descriptor, which this client did not ask for",
				outputs[i].Name)
		}
	}
	return nil
}

func (c *Client) send(model string, end uint64, deadline uint64) (*Result, error) {
	r := &c.req
	r.Kind, r.RequestID, r.Model, r.DeadlineNs = KindInferRequest, c.nextID, model, deadline
	c.nextID++
	r.Flags = 0
	if c.opts.DataCRC {
		r.Flags = FlagDataCRC
	}
	if err := EncodeRequest(c.data[:c.reqCap], r); err != nil {
		return nil, withCall(err, model, r.RequestID)
	}
	c.used = end
	res, err := c.exchange(deadline, true)
	// once per call: a call that reconnected as it waited (ready) fails gone, nothing appended
	if e, ok := err.(*Error); ok && e.unsent && !c.loaned && !c.redialed {
		res, err = c.sendAgain(e, deadline)
	}
	if err != nil {
		return nil, withCall(err, model, r.RequestID) // (a failed grow of the response area named none)
	}
	return res, nil
}

// sendAgain is the transparent retry of spec 10.3: the server died before it dispatched the
// request, so no handler ran it; it is sent once more, its bytes unchanged (request id, absolute
// deadline_ns), to a server restarted under the name, within the same deadline. Without one (no
// server yet, the dead one's region, a hung or full one, the deadline) the call fails with gone,
// the reconnect's reason appended. A loan is never sent again: its caller wrote the old area.
// A call whose context ends before the request is sent again fails as such a call does
// (DEADLINE_EXCEEDED wrapping ctx.Err(), nothing sent), and one whose client Close began sends
// nothing either (gone, "closed during the call"): the reconnect looked at neither before it
// published, and reported a context that ended during its wait as the server gone.
func (c *Client) sendAgain(gone *Error, deadline uint64) (*Result, error) {
	req := append([]byte(nil), c.data[:c.used]...) // the reconnect unmaps the old area
	if err := c.redial(deadline, uint64(len(req))); err != nil {
		return nil, notSent(gone, err, "not sent again")
	}
	copy(c.data, req)
	c.used = uint64(len(req))
	return c.exchange(deadline, true)
}

// redial drops the connection to a dead server and connects afresh, no later than deadline, for a
// call that sends its request to the new server (a request area of size bytes at least); a call
// whose context ended or whose client Close began meanwhile sends nothing (unsendable).
func (c *Client) redial(deadline, size uint64) error {
	c.disconnect()
	err := c.unsendable()
	if err == nil {
		err = c.connect(deadline)
	}
	if err == nil {
		err = c.ensure(size)
	}
	if err == nil {
		err = c.unsendable() // the reconnect's waits end at a cancel or Close; a free mutex does not look
	}
	return err
}

// notSent is the error of a call whose server died and whose reconnect (redial) failed with err:
// gone with "; WHAT: " and the reconnect's reason appended, or, where the call's context ended
// it, that error with the same text.
func notSent(gone *Error, err error, what string) error {
	why := err.Error()
	e, ok := err.(*Error)
	if ok {
		why = e.Message
	}
	if why == gone.Message { // the dead server's region, still there
		why = "no server has started under that name since"
	}
	if ok && e.cause != nil { // the call's context ended: reported as such (InferContext)
		e.Message = gone.Message + "; " + what + ": " + why
		return e
	}
	gone.Message += "; " + what + ": " + why
	return gone
}

// unsendable is why a request may not be sent again now: the call's context ended, or Close began
// on another goroutine (a client publishes nothing once it is closing, spec 10.1); nil if neither.
func (c *Client) unsendable() error {
	if atomic.LoadInt32(&c.closed) != 0 {
		return c.closedDuring()
	}
	if err := c.ctxEnded("before the request was sent again"); err != nil {
		return err
	}
	return nil
}

// Call is what else a call may say (section 5); the zero value says nothing.
type Call struct {
	Version string   // model version; "": the server's choice
	Params  []byte   // a compact JSON object of strings, numbers and booleans
	Outputs []string // the outputs wanted; none: all
}

func (c *Client) setCall(call *Call) error {
	if why := fieldProblem(call.Version, VersionSize); why != "" {
		return fail(InvalidInput, 0, "model version %q %s", call.Version, why)
	}
	if len(call.Outputs) > MaxTensors {
		return fail(TooLarge, 0, "%d requested outputs (at most %d)", len(call.Outputs), MaxTensors)
	}
	for i, name := range call.Outputs {
		if why := fieldProblem(name, NameSize); why != "" {
			return fail(InvalidInput, 0, "requested output %d: name %q %s", i, name, why)
		}
	}
	if len(call.Params) > MaxParams { // before they are scanned or copied
		return fail(TooLarge, 0, "params of %d bytes (at most %d)", len(call.Params), MaxParams)
	}
	if why := ParamsProblem(call.Params); len(call.Params) > 0 && why != "" {
		return fail(InvalidInput, 0, "%s", why)
	}
	c.req.Version, c.req.Outputs, c.req.Params = call.Version, call.Outputs, call.Params
	return nil
}

// Infer runs model on inputs; timeout < 0 means no deadline, 0 a deadline of now (the request is
// sent, and the call is DEADLINE_EXCEEDED unless it was answered already). The result's outputs
// are views on shared memory, valid until the next call. A call after the server died reconnects
// first. The arguments are checked before anything is sent: a name over its field (model and
// tensor names 63 bytes, the version 15), with a NUL byte or not UTF-8, an unknown dtype, over 8
// dimensions, a shape of more than 2^64 bytes or data of another length is INVALID_INPUT naming
// the input and the fault; over 64 inputs or params over 1 MiB TOO_LARGE. A call ends the
// client's loan, if any. A nil client is INVALID_INPUT. Every error names the model (Error.Model)
// and, once the request was sent, its id (Error.RequestID).
func (c *Client) Infer(model string, inputs []Input, timeout time.Duration) (*Result, error) {
	return c.InferCall(model, inputs, timeout, Call{})
}

// InferCall is Infer with a version, parameters or a choice of outputs.
func (c *Client) InferCall(model string, inputs []Input, timeout time.Duration, call Call) (*Result, error) {
	res, err := c.inferCall(model, inputs, timeout, call)
	if err != nil {
		return nil, withCall(err, model, 0)
	}
	return res, nil
}

func (c *Client) inferCall(model string, inputs []Input, timeout time.Duration, call Call) (*Result, error) {
	if c == nil {
		return nil, errNilClient()
	}
	if err := c.enter(); err != nil {
		return nil, err
	}
	defer c.leave()
	return c.infer(model, inputs, deadlineOf(timeout), call)
}

// infer is a call of Infer, InferCall or their context forms, the client entered.
func (c *Client) infer(model string, inputs []Input, deadline uint64, call Call) (*Result, error) {
	if len(inputs) > MaxTensors {
		return nil, fail(TooLarge, 0, "%d inputs (at most %d)", len(inputs), MaxTensors)
	}
	if why := fieldProblem(model, NameSize); why != "" {
		return nil, fail(InvalidInput, 0, "model name %q %s", model, why)
	}
	if err := c.ready(deadline); err != nil {
		return nil, err
	}
	c.loaned, c.loanEnded = false, 0
	ts := c.inputs[:len(inputs)]
	for i := range inputs {
		in := &inputs[i]
		if len(in.Shape) > MaxNDim {
			return nil, fail(InvalidInput, 0, "input %d (%q): %d dimensions (at most %d)", i, in.Name, len(in.Shape), MaxNDim)
		}
		if why := fieldProblem(in.Name, NameSize); why != "" {
			return nil, fail(InvalidInput, 0, "input %d: name %q %s", i, in.Name, why)
		}
		ts[i] = Tensor{Name: in.Name, DType: in.DType, NDim: uint32(len(in.Shape))}
		copy(ts[i].Shape[:], in.Shape)
	}
	if err := c.setCall(&call); err != nil {
		return nil, err
	}
	r := &c.req
	end, err := Layout(ts, RequestPayloadSize(uint32(len(ts)), uint32(len(r.Outputs)), uint32(len(r.Params))))
	if err != nil {
		return nil, err
	}
	for i := range ts {
		if uint64(len(inputs[i].Data)) != ts[i].DataSize {
			return nil, fail(InvalidInput, 0, "input %d (%q): %d bytes of data, its shape %v of %s takes %d",
				i, inputs[i].Name, len(inputs[i].Data), ts[i].Dims(), ts[i].DType, ts[i].DataSize)
		}
	}
	if err := c.ensure(end); err != nil {
		return nil, err
	}
	for i := range ts {
		copy(c.data[ts[i].DataOffset:], inputs[i].Data)
	}
	c.req.Inputs = ts
	return c.send(model, end, deadline)
}

// LoanBegin lays out tensors (Name, DType, NDim, Shape) in the request area; write each one's
// bytes into LoanData(i), then call LoanInfer (repeatable). The slices of LoanData move when the
// area grows: fetch them again after each call. The model and the specs are checked as Infer
// checks them (host tensors only: CUDA_UNAVAILABLE otherwise). A loan lasts until the next
// LoanBegin (whatever its outcome: a failed one leaves no loan), Infer or InferCall, a reconnect,
// Close, or a LoanInfer that fails with its request still with the server (it passed its
// deadline: the server may still be reading the inputs, so they are lent out no more). If the
// channel's last request is still with the server, LoanBegin waits for it up to
// ConnectTimeoutMs, then fails DEADLINE_EXCEEDED; should the server die (or stop) meanwhile, it
// reconnects and lends the area of a server restarted under the name, or fails SERVER_UNAVAILABLE
// "... is gone; not sent: REASON" (spec 7.5). Every error names the model (Error.Model).
func (c *Client) LoanBegin(model string, specs []Tensor) error {
	return withCall(c.loanBegin(model, specs), model, 0)
}

func (c *Client) loanBegin(model string, specs []Tensor) error {
	if c == nil {
		return errNilClient()
	}
	if err := c.enter(); err != nil {
		return err
	}
	defer c.leave()
	c.loaned, c.loanEnded = false, 0 // its tensors are about to be overwritten: a failure below leaves no loan
	if len(specs) > MaxTensors {
		return fail(TooLarge, 0, "%d tensors (at most %d)", len(specs), MaxTensors)
	}
	if why := fieldProblem(model, NameSize); why != "" {
		return fail(InvalidInput, 0, "model name %q %s", model, why)
	}
	for i := range specs {
		if why := fieldProblem(specs[i].Name, NameSize); why != "" {
			return fail(InvalidInput, 0, "tensor %d: name %q %s", i, specs[i].Name, why)
		}
		if specs[i].Location != LocationHost {
			return fail(CudaUnavailable, 0, "tensor %d (%q): location %d; this client sends host tensors only",
				i, specs[i].Name, specs[i].Location)
		}
	}
	if err := c.ready(deadlineOf(time.Duration(c.opts.ConnectTimeoutMs) * time.Millisecond)); err != nil {
		return err
	}
	ts := c.inputs[:len(specs)]
	copy(ts, specs)
	end, err := Layout(ts, RequestPayloadSize(uint32(len(ts)), 0, 0))
	if err != nil {
		return err
	}
	if err := c.ensure(end); err != nil {
		return err
	}
	c.req.Inputs, c.req.Model, c.loanEnd, c.loaned = ts, model, end, true
	return nil
}

// LoanData is the loaned tensor i's bytes in shared memory; nil without a loan (also once a
// LoanInfer failed with its request still with the server) or such a tensor.
func (c *Client) LoanData(i int) []byte {
	if c == nil || !c.loaned || i < 0 || i >= len(c.req.Inputs) {
		return nil
	}
	t := &c.req.Inputs[i]
	return c.data[t.DataOffset : t.DataOffset+t.DataSize : t.DataOffset+t.DataSize]
}

// LoanInfer sends the loaned tensors as they are in shared memory. Its errors name the loan's
// model (Error.Model; none without a loan) and, once the request was sent, its id.
func (c *Client) LoanInfer(timeout time.Duration) (*Result, error) {
	if c == nil {
		return nil, errNilClient()
	}
	if err := c.enter(); err != nil {
		return nil, err
	}
	defer c.leave()
	model := c.loanModel()
	res, err := c.loanInfer(deadlineOf(timeout))
	if err != nil {
		return nil, withCall(err, model, 0)
	}
	return res, nil
}

// loanModel is the model a LoanInfer's errors name: the loan's (an ended loan's: LoanBegin sets
// it only when granted), or none.
func (c *Client) loanModel() string {
	if c.loaned || c.loanEnded != 0 {
		return c.req.Model
	}
	return ""
}

func (c *Client) loanInfer(deadline uint64) (*Result, error) {
	if !c.loaned {
		if c.loanEnded != 0 {
			return nil, fail(InvalidInput, 0, "no loan: it ended when its request %d failed while still with the server, "+
				"which may be reading its inputs; LoanBegin again (it waits until the server is done)", c.loanEnded)
		}
		return nil, fail(InvalidInput, 0, "no loan: call LoanBegin first")
	}
	c.noticeStop()
	if !c.connected {
		c.loaned = false
		return nil, fail(ServerUnavailable, 0, "the server of this loan is gone; take a new loan")
	}
	if err := c.ready(deadline); err != nil {
		return nil, err
	}
	c.req.Version, c.req.Outputs, c.req.Params = "", nil, nil // a loan's tensors follow a bare payload
	res, err := c.send(c.req.Model, c.loanEnd, deadline)
	if err != nil && c.connected && c.pending() {
		// the server may still read the inputs: LoanData must not hand them out for writing
		c.loaned, c.loanEnded = false, c.req.RequestID
	}
	return res, err
}
