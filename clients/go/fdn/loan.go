package fdn

// loan.go: loans (LoanBegin, LoanData, LoanInfer): the request's inputs laid out in the request
// area, written there in place by the caller, then sent as they are (section 7.2).

import (
	"time"
)

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
	if err := c.ready(deadlineOf(time.Duration(c.opts.ConnectTimeoutMs)*time.Millisecond), false); err != nil {
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
	if err := c.ready(deadline, true); err != nil {
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
