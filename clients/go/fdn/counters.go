package fdn

// counters.go: what a client counts (spec 10.5, nothing of it on the wire): its reconnects and
// the calls it sent to a new connection after their server was found gone. Counted on the rare
// paths only (connect, the reconnect of a call, the resend); read from any goroutine.

import "sync/atomic"

// Counters is what a client counted since Connect (spec 10.5). Both only grow; a closed client
// keeps them.
type Counters struct {
	// Reconnects is how often the client connected (claimed a channel) after its first
	// connection: each time after the one it had was dropped (its server found dead or
	// stopped). A connect that fails is not counted.
	Reconnects uint64
	// Resends is how many calls sent their request to a new connection after their server was
	// found gone with no handler having seen it (spec 10.3, 7.5): published and never
	// dispatched, its region found STOPPED before the call published, or not yet written while
	// the call waited for an abandoned request's late answer. Counted when the request is
	// published on the new connection, at most once per call; a call whose reconnect failed, a
	// call failed because a handler may have run it, and a loan's call are never counted.
	Resends uint64
}

// counts is a client's Counters as it keeps them: atomics, so that Counters, on any goroutine,
// neither takes the client's call guard nor races with a call that counts.
type counts struct {
	reconnects, resends atomic.Uint64
}

// Counters returns what the client counted (spec 10.5). It never waits: it may be called from
// any goroutine while another runs a call, and after Close. A nil client counted nothing.
func (c *Client) Counters() Counters {
	if c == nil {
		return Counters{}
	}
	return Counters{Reconnects: c.counts.reconnects.Load(), Resends: c.counts.resends.Load()}
}

// countConnect counts a connection made (a channel claimed): the first is no reconnect.
func (c *Client) countConnect() {
	if c.dialed {
		c.counts.reconnects.Add(1)
	}
	c.dialed = true
}

// countResend counts this call a resend, as its request is about to be published on a new
// connection; once per call (ready clears resent).
func (c *Client) countResend() {
	if !c.resent {
		c.resent = true
		c.counts.resends.Add(1)
	}
	c.moved = false
}
