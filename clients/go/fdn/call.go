package fdn

// call.go: one request on the claimed channel (section 7.2): Infer and InferCall with their
// checks, ready (reconnect, then wait until the channel is idle), the request written, published
// and its response decoded, the TOO_LARGE retry (10.1 "Growing"). The waits are in wait.go, the
// resend after a server died in resend.go, loans in loan.go.

import (
	"sync/atomic"
	"time"
)

// noticeStop: a server that stopped (gracefully) marked its region STOPPED; a restarted one has
// a new region. One load, so every call can afford it; a killed server is noticed while waiting.
// It reports whether it dropped the connection.
func (c *Client) noticeStop() bool {
	if c.connected && atomic.LoadUint32(c.u32(rState)) == stateStopped {
		c.connected = false
		return true
	}
	return false
}

// ready reconnects if the server died, and waits until the channel is idle. A server found gone
// while the call waits for an abandoned request's late answer (spec 7.5: its process proven dead,
// or its region STOPPED; waitSeq dropped the connection) never had this call's request: the call
// reconnects, to send it to a server restarted under the name, within its deadline; without one
// it fails gone, "not sent" and why appended (a loan's call, whose inputs are in the old area,
// never waits so: a loan ends when its request is left with the server). Nothing of the call was
// published, so a region STOPPED while its process lives is no reason to fail it as if it might
// have run (the resend, which needs proof of death, is another matter). That reconnect is the
// call's one more attempt: its request is not sent again (send). A call that found its region
// STOPPED here, or its server gone while it waited, is a resend once its request is published on
// the new connection (moved, spec 10.5). A call (sends: not a loan's begin, which sends nothing)
// whose connect here finds its server gone (an earlier call's failure dropped the connection)
// says that nothing of it was sent, where the bare "... is gone" would read as a call its
// handler may have run (spec 10.3).
func (c *Client) ready(deadline uint64, sends bool) error {
	c.redialed, c.resent = false, false
	c.moved = c.noticeStop()
	if !c.connected {
		c.disconnect()
		if err := c.connect(deadline); err != nil {
			if e, ok := err.(*Error); ok && c.foundGone && sends {
				return notSent(e, e, "not sent")
			}
			return err
		}
	}
	err := c.waitIdle(deadline)
	if e, ok := err.(*Error); ok && e.Code == ServerUnavailable && !c.connected && !c.loaned {
		c.redialed, c.moved = true, true
		if err := c.redial(deadline, 0); err != nil {
			return notSent(e, err, "not sent")
		}
		return nil
	}
	return err
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
	if c.moved {
		c.countResend()
	}
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
	if err := c.ready(deadline, true); err != nil {
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
