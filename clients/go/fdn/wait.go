package fdn

// wait.go: a call's waits: for its answer (spin, then block in slices: section 7.2, steps 4-7),
// looking at the server's liveness between slices (10.3), and for the channel to be idle while an
// abandoned request's late answer is owed (7.5).

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
		if err == nil && !c.connected {
			// the late answer came in as the wait found the server gone (its region STOPPED, or
			// its process dead just after it answered): an answer to the request waited for, but
			// this call's own request must not go to that server; ready reconnects (7.5). It was
			// written and published there, then sent on by 10.3's resend a slice later, or, to a
			// STOPPED server whose process lives, failed "gone".
			return fail(ServerUnavailable, 0, "shm server %q (pid %d) is gone", c.name, c.serverPid)
		}
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
