package fdn

// context.go: calls bounded by a context.Context (InferContext, InferCallContext,
// LoanInferContext): its deadline is the call's, and a cancel abandons the call as a passed
// deadline does (spec 7.5). No goroutine watches the context: the wait looks at ctx.Done()
// between its slices.

import (
	"context"
	"fmt"
	"time"
)

// InferContext is Infer bounded by ctx: ctx's deadline is the call's (sent to the server as
// Infer's timeout is), and a call whose ctx is cancelled while it waits is abandoned as one that
// passes its deadline is: it fails DEADLINE_EXCEEDED at once (within cancelSlice, 5 ms, of the
// cancel), its request left to the server, and the client's next call waits for that late
// answer (up to its own deadline) before it sends its own. The error wraps ctx.Err():
// errors.Is(err, context.Canceled) or errors.Is(err, context.DeadlineExceeded) holds, and
// CodeOf(err) is DeadlineExceeded for both (the protocol has no code for a cancel; the server is
// not told, and its answer is dropped). A ctx already done, or whose deadline has passed, sends
// nothing. A ctx without a deadline sends none (the call waits until answered or cancelled).
// A nil ctx is INVALID_INPUT.
func (c *Client) InferContext(ctx context.Context, model string, inputs []Input) (*Result, error) {
	return c.InferCallContext(ctx, model, inputs, Call{})
}

// InferCallContext is InferCall bounded by ctx, as InferContext is.
func (c *Client) InferCallContext(ctx context.Context, model string, inputs []Input, call Call) (*Result, error) {
	if c == nil {
		return nil, withCall(errNilClient(), model, 0)
	}
	if err := c.enter(); err != nil {
		return nil, withCall(err, model, 0)
	}
	defer c.leave()
	deadline, err := c.begin(ctx)
	defer c.end()
	if err == nil {
		var res *Result
		if res, err = c.infer(model, inputs, deadline, call); err == nil {
			return res, nil
		}
	}
	return nil, withCall(c.ctxCause(err), model, 0)
}

// LoanInferContext is LoanInfer bounded by ctx, as InferContext is. A cancelled call ends the
// loan as one past its deadline does (the server may still read the inputs).
func (c *Client) LoanInferContext(ctx context.Context) (*Result, error) {
	if c == nil {
		return nil, errNilClient()
	}
	if err := c.enter(); err != nil {
		return nil, err
	}
	defer c.leave()
	model := c.loanModel()
	deadline, err := c.begin(ctx)
	defer c.end()
	if err == nil {
		var res *Result
		if res, err = c.loanInfer(deadline); err == nil {
			return res, nil
		}
	}
	return nil, withCall(c.ctxCause(err), model, 0)
}

// begin makes ctx the call's (the client entered): it returns the call's deadline (monotonic ns,
// 0 for none), or the error of a ctx already done.
func (c *Client) begin(ctx context.Context) (uint64, error) {
	if ctx == nil {
		return 0, fail(InvalidInput, 0, "nil context (use context.Background() for a call without one)")
	}
	c.ctx, c.done = ctx, ctx.Done()
	if err := c.ctxEnded("before the call was sent"); err != nil {
		return 0, err
	}
	d, ok := ctx.Deadline()
	if !ok {
		return 0, nil
	}
	c.ctxDeadline = true
	left := time.Until(d)
	if left <= 0 { // its timer may not have fired yet
		return 0, ctxError(context.DeadlineExceeded, "before the call was sent")
	}
	return monotonicNs() + uint64(left), nil
}

// end forgets the call's context.
func (c *Client) end() { c.ctx, c.done, c.ctxDeadline = nil, nil, false }

// ctxCause makes a DEADLINE_EXCEEDED of a call of a context wrap what ended it: ctx.Err(), or
// context.DeadlineExceeded when the ctx's deadline (the call's) passed before its timer fired.
// One that the ctx did not end (a handler's answer, its own call timed out, the ctx's deadline
// still ahead) is passed on as it is.
func (c *Client) ctxCause(err error) error {
	if e, ok := err.(*Error); ok && e.Code == DeadlineExceeded && e.cause == nil && c.ctx != nil {
		if e.cause = c.ctx.Err(); e.cause == nil && c.ctxDeadline {
			if d, _ := c.ctx.Deadline(); !time.Now().Before(d) {
				e.cause = context.DeadlineExceeded
			}
		}
		if e.cause != nil {
			e.Message = fmt.Sprintf("%s (%v)", e.Message, e.cause)
		}
	}
	return err
}

// slice is the longest wait between looks at the deadline, the client's liveness, Close and the
// call's context: cancelSlice while the call has a context that can end, else waitSlice.
func (c *Client) slice() int64 {
	if c.done != nil {
		return int64(cancelSlice)
	}
	return int64(waitSlice)
}

// doneNow reports whether the call's context has ended.
func (c *Client) doneNow() bool {
	if c.done == nil {
		return false
	}
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// ctxEnded is the error of a call whose context has ended (where: what it was doing), or nil.
func (c *Client) ctxEnded(where string) error {
	if !c.doneNow() {
		return nil
	}
	return ctxError(c.ctx.Err(), where)
}

// ctxError is DEADLINE_EXCEEDED wrapping cause (ctx.Err()).
func ctxError(cause error, where string) *Error {
	return &Error{Code: DeadlineExceeded, Message: fmt.Sprintf("%v %s", cause, where), cause: cause}
}
