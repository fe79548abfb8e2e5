package fdn

// resend.go: a call whose server died: the transparent retry of a request it never dispatched
// (section 10.3), the reconnect (redial) a call makes to send its request to a server restarted
// under the name, and the "not sent" error of one that failed.

import (
	"sync/atomic"
)

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
	c.countResend()
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
