//! What a [`Pool`] counts (spec 10.5): its clients' counts, those it dropped included, and a
//! reconnect for each client it connected in place of a dropped one; against live echo servers
//! killed and restarted, a thread reading the counts throughout. Runs only when
//! `FDN_TEST_PYTHON` names a Python with foundation_shm installed.

use super::meeting_tests::together;
use super::tests::{echo, int, open, pool, LONG};
use super::Pool;
use crate::conn::tests::signal;
use crate::{Client, ConnectOptions, Counters, Status};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::thread;
use std::time::Duration;

fn counted(reconnects: u64, resends: u64) -> Counters {
    Counters {
        reconnects,
        resends,
    }
}

/// Sets its flag when dropped: the watching thread stops even when the test body panics.
struct Stop<'a>(&'a AtomicBool);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
}

/// Run `body` while another thread reads `p.counters()` without pause; fails if a count ever
/// went down.
fn watching(p: &Pool, body: impl FnOnce()) {
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut last = Counters::default();
            while !stop.load(SeqCst) {
                let now = p.counters();
                assert!(
                    now.reconnects >= last.reconnects && now.resends >= last.resends,
                    "the counts went from {last:?} to {now:?}"
                );
                last = now;
                thread::sleep(Duration::from_micros(10));
            }
        });
        let stopping = Stop(&stop);
        body();
        drop(stopping);
        watcher.join().unwrap();
    });
}

/// A pool's first clients, connected while it has fewer than its size, are no reconnects.
#[test]
fn a_new_pool_counts_nothing_nor_its_first_clients() {
    let Some(srv) = echo("rustpcfirst") else {
        return;
    };
    let p = pool(&srv.1, 2);
    assert_eq!(p.counters(), counted(0, 0), "a new pool");
    together(&p, 1, "the first call");
    together(&p, 2, "two calls at once");
    assert_eq!(open(&p), 2);
    assert_eq!(p.counters(), counted(0, 0), "a second client connected");
}

/// A server killed and restarted under a warm pool of 4: four calls at once, one on each client,
/// are answered, each client reconnecting and sending its call again (1 and 1 each, read through
/// the pool); none is dropped, and the closed pool keeps the counts. Four other clients hold
/// channels 0-3 of the first server (dropped once it is dead), so that the pool's clients, on 4-7
/// there, take 0-3 of the second: data segment names (spec 10.1: d{i}-{pid}-{gen}, gen 1 on a new
/// server) that no client of this process still holds. A client that took the name of a beside
/// client's old segment would have it unlinked under it as that client let its old one go.
#[test]
fn a_pool_counts_its_clients_reconnects_and_resends() {
    let Some(srv) = echo("rustpcrestart") else {
        return;
    };
    let name = srv.1.clone();
    let others: Vec<_> = (0..4)
        .map(|_| Client::connect(&name, ConnectOptions::default()).unwrap())
        .collect();
    let p = pool(&name, 4);
    watching(&p, || {
        together(&p, 4, "four calls at once");
        assert_eq!(p.counters(), counted(0, 0), "a warm pool");
        signal(&srv, "KILL");
        drop(srv); // reaped
        drop(others);
        let _srv = echo("rustpcrestart").unwrap();
        together(&p, 4, "four calls at once after a crash and a restart");
        assert_eq!(open(&p), 4, "each client reconnected in its call");
        let after = p.counters();
        assert_eq!(after, counted(4, 4), "each client's call after a restart");
        p.close();
    });
    assert_eq!(p.counters(), counted(4, 4), "closed");
}

/// A client that reconnected and resent once (shown once its closure returned), dropped after its
/// call failed SERVER_UNAVAILABLE (its server killed, none restarted), keeps its counts in the
/// pool's; once a server is restarted, the client connected in its place is a reconnect of the
/// pool's, the second client connected beside it (the pool's first time at 2) is not.
#[test]
fn a_dropped_client_s_counts_stay_and_its_replacement_is_a_reconnect() {
    let Some(srv) = echo("rustpcdrop") else {
        return;
    };
    let p = pool(&srv.1, 2);
    watching(&p, || {
        together(&p, 1, "the first call");
        signal(&srv, "KILL");
        drop(srv);
        let srv = echo("rustpcdrop").unwrap();
        p.with_client(LONG, |c| {
            assert_eq!(c.infer("echo", &int(1), LONG)?, int(1));
            assert_eq!(c.counters(), counted(1, 1), "the client");
            assert_eq!(p.counters(), counted(0, 0), "while the client is lent");
            Ok(())
        })
        .unwrap();
        assert_eq!(p.counters(), counted(1, 1), "the client put back");
        signal(&srv, "KILL");
        let e = p.infer("echo", &int(2), LONG).unwrap_err();
        assert_eq!(e.code, Status::ServerUnavailable, "{e}");
        assert_eq!(open(&p), 0, "the client whose call failed is dropped");
        assert_eq!(p.counters(), counted(1, 1), "the client dropped");
        // the next call connects a client for itself and finds the server still gone (its
        // region still there): nothing of it was sent, and it says so (spec 10.3), where
        // with_client (it may only begin a loan) says "is gone"
        let gone = e.message.split("; ").next().unwrap().to_string();
        assert!(gone.ends_with(") is gone"), "{e}");
        let e = p.infer("echo", &int(2), LONG).unwrap_err();
        let not_sent = format!("{gone}; not sent: no server has started under that name since");
        assert_eq!(
            e.message, not_sent,
            "a pool's call whose new client found the server gone"
        );
        // a call of the empty model name is a call as well (the pool told calls from with_client
        // by the model name, and this one said "is gone")
        let e = p.infer("", &int(2), LONG).unwrap_err();
        assert_eq!(
            e.message, not_sent,
            "a pool's call of the empty model name whose new client found the server gone"
        );
        let e = p.with_client(LONG, |_| Ok(())).unwrap_err();
        assert_eq!(
            e.message, gone,
            "with_client, whose new client found the server gone"
        );
        assert_eq!(
            p.counters(),
            counted(1, 1),
            "after two connects that failed"
        );
        drop(srv);
        let _srv = echo("rustpcdrop").unwrap();
        together(&p, 2, "two calls at once after the restart");
        assert_eq!(
            p.counters(),
            counted(2, 1),
            "a client connected in place of the dropped one, and one beside it"
        );
        p.close();
    });
    assert_eq!(p.counters(), counted(2, 1), "closed");
}

/// A closure lent a client may put another in its place (it has the client `&mut`): one that
/// counted less than the lent one had when it was lent (a new client counts nothing) adds nothing
/// to the pool's counts. The pool added the difference, which overflowed: a panic as the client
/// was put back (its slot never given back), and in a release build counts that went down.
#[test]
fn a_client_put_in_the_lent_one_s_place_takes_nothing_from_the_counts() {
    let Some(srv) = echo("rustpcswap") else {
        return;
    };
    let p = pool(&srv.1, 1);
    together(&p, 1, "the first call");
    signal(&srv, "KILL");
    drop(srv);
    let srv = echo("rustpcswap").unwrap();
    together(&p, 1, "the call after a restart");
    assert_eq!(p.counters(), counted(1, 1), "the client put back");
    let swapped = p.with_client(LONG, |c| {
        *c = Client::connect(&srv.1, ConnectOptions::default())?;
        Ok(())
    });
    assert_eq!(swapped.map_err(|e| e.to_string()), Ok(()), "the swap");
    assert_eq!(
        p.counters(),
        counted(1, 1),
        "a new client in the lent one's place"
    );
    assert_eq!(open(&p), 1, "the new client put back");
    together(&p, 1, "a call on the new client");
    assert_eq!(p.counters(), counted(1, 1), "a call on the new client");
}
