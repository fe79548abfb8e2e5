//! The bookkeeping of a [`Pool`](super::Pool) under its lock: the idle clients, the calls waiting
//! and what each was granted, how many clients may be open, and what the pool counted.

use crate::client::{Client, Counters};
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

pub(super) struct State {
    /// Taken from the back; those with a request still with the server at the front.
    pub(super) idle: VecDeque<Client>,
    /// Clients connected or connecting, idle or in use.
    pub(super) open: usize,
    /// After an OVERLOADED connect, open no more than this until `retry_at`.
    pub(super) limit: usize,
    pub(super) retry_at: Option<Instant>,
    /// The tickets of the calls waiting for a client, in turn.
    pub(super) waiters: VecDeque<u64>,
    /// What a waiting call was handed, by ticket: a client, or leave to connect one (`None`,
    /// counted in `open`).
    pub(super) grants: HashMap<u64, Option<Client>>,
    pub(super) next_ticket: u64,
    pub(super) closed: bool,
    /// What the clients counted while lent, folded in as each was put back or dropped, and the
    /// pool's own reconnects.
    pub(super) counted: Counters,
    /// Clients dropped (not put back) that no connect has replaced yet.
    pub(super) dropped: usize,
}

impl State {
    /// Whether another client may be connected within `size`.
    pub(super) fn may_open(&self, size: usize) -> bool {
        self.open < size
            && (self.open < self.limit || self.retry_at.map_or(true, |t| Instant::now() >= t))
    }

    /// Give waiting calls leave to connect while the pool may open more: a client was dropped,
    /// or a connect failed.
    pub(super) fn hand_on(&mut self, size: usize) {
        while !self.closed && self.may_open(size) {
            let Some(t) = self.waiters.pop_front() else {
                return;
            };
            self.open += 1;
            self.grants.insert(t, None);
        }
    }

    /// Give a client back: to the first waiting call, else to the idle ones (`late`: its last
    /// request still with the server, so taken last).
    pub(super) fn give(&mut self, c: Client, late: bool) {
        if let Some(t) = self.waiters.pop_front() {
            self.grants.insert(t, Some(c));
        } else if late {
            self.idle.push_front(c);
        } else {
            self.idle.push_back(c);
        }
    }
}
