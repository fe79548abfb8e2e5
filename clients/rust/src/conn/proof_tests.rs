//! A request is sent again only when its server's process is proven dead (spec 10.3): not when
//! `/proc/PID/stat` cannot be read, nor when the region says STOPPED while the process lives. The
//! request is queued behind another client's (clients/tests/hold_client.py, its hold model holding
//! the serving loop of clients/tests/gate_server.py), so the live server never dispatched it
//! (server_busy 0): sent again on a new connection, it ran twice. Runs only when
//! `FDN_TEST_PYTHON` names a Python with foundation_shm installed.

use super::tests::{base, region};
use crate::layout::{self as l, channel as ch, region as rg};
use crate::pool::tests::{gate, release, wait_until, Gate};
use crate::{shm, Client, ConnectOptions, Status, Tensor};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::thread;
use std::time::{Duration, Instant};

const LONG: Option<Duration> = Some(Duration::from_secs(30));

fn int(v: i32) -> Vec<Tensor> {
    vec![Tensor::from_slice("x", &[1], &[v]).unwrap()]
}

/// A client of its own process (not this one, whose /proc reads a test blinds) calling `hold`.
pub(super) struct Holder(Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Hold the gate server's serving loop with a call of `hold` (a hold model), once it is held.
pub(super) fn hold_loop(g: &Gate, hold: &str) -> Holder {
    let python = std::env::var("FDN_TEST_PYTHON").unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/hold_client.py");
    let child = Command::new(python)
        .args([script, g.name(), hold])
        .spawn()
        .unwrap();
    let holder = Holder(child);
    g.wait_file(hold, "with-server");
    holder
}

/// `call` (the queued request) with the gate of `hold` opened `after` if it has not returned
/// by then: a request sent again waits for its answer behind the held loop.
fn queued<T>(g: &Gate, hold: &str, after: Duration, call: impl FnOnce() -> T) -> T {
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            let end = Instant::now() + after;
            while !done.load(SeqCst) && Instant::now() < end {
                thread::sleep(Duration::from_millis(5));
            }
            release(&g.dir, hold);
        });
        let out = call();
        done.store(true, SeqCst);
        out
    })
}

/// The call failed SERVER_UNAVAILABLE `want`, nothing appended (no reconnect was tried), and the
/// server, its gate open, ran the queued request once.
fn want_failed_and_run_once(
    g: &Gate,
    hold: &str,
    model: &str,
    got: crate::Result<Vec<Tensor>>,
    want: &str,
) {
    g.wait_file(hold, "answered");
    let runs = g.dir.join(format!("{model}.runs"));
    let count = || std::fs::read(&runs).map_or(0, |b| b.len());
    wait_until("the queued request's run", || count() > 0);
    thread::sleep(Duration::from_millis(200)); // a second run, if any, would be in by now
    let ran = count();
    match got {
        Err(e) => assert_eq!(
            (e.code, e.message.as_str(), ran),
            (Status::ServerUnavailable, want, 1)
        ),
        Ok(out) => panic!("answered {out:?} (the handler ran it {ran} times), want {want:?}"),
    }
}

/// /proc/PID/stat that cannot be read (EMFILE: this process at its file limit for a moment) is
/// no proof of death (spec 10.3): kill(pid, 0) says the server lives, and the call goes on
/// waiting for its answer. It was taken for death: the call failed gone and reconnected; before
/// that (85bbbec) the request was also sent again to the same live server, which ran it twice.
/// Blinded for one look, two, then every look of the call.
#[test]
fn a_server_whose_liveness_cannot_be_read_is_not_taken_for_dead() {
    for reads in [1, 2, u32::MAX] {
        let Some(g) = gate(&format!("rustblind{}", reads % 10), 4) else {
            return;
        };
        let mut client = Client::connect(g.name(), ConnectOptions::default()).unwrap();
        assert_eq!(client.infer("echo", &int(1), LONG).unwrap(), int(1));
        let _holder = hold_loop(&g, "hold_b");
        shm::blind::stat_of(g.server.0.id(), reads);
        // the gate opens after 300 ms: six wait slices, each with a look
        let got = queued(&g, "hold_b", Duration::from_millis(300), || {
            client.infer("count_b", &int(5), LONG)
        });
        shm::blind::stat_of(0, 0);
        g.wait_file("hold_b", "answered");
        let runs = g.dir.join("count_b.runs");
        let count = || std::fs::read(&runs).map_or(0, |b| b.len());
        wait_until("the queued request's run", || count() > 0);
        thread::sleep(Duration::from_millis(200)); // a second run, if any, would be in by now
        assert_eq!((got.map_err(|e| e.message), count()), (Ok(int(5)), 1));
    }
}

/// A dead process behind a stat file that cannot be read is proven gone (kill: ESRCH); a live one
/// is not, whatever start time it is asked with (that cannot be checked then).
#[test]
fn a_dead_process_behind_an_unreadable_stat_file_is_proven_gone() {
    let mut child = Command::new("true").spawn().unwrap();
    child.wait().unwrap(); // reaped: its pid names no process now
    shm::blind::stat_of(child.id(), 1);
    assert!(shm::process_gone(child.id(), 1), "a dead pid, unreadable");
    let me = std::process::id();
    let start = shm::process_start_time(me).unwrap();
    shm::blind::stat_of(me, 2);
    assert!(
        !shm::process_gone(me, start),
        "this live process, unreadable"
    );
    assert!(
        !shm::process_gone(me, start + 1),
        "this live process, unreadable"
    );
}

/// This process's own start time (owner_start_time) that cannot be read at connect fails the
/// connect SERVER_UNAVAILABLE naming why, having claimed nothing: it wrote 0, which says "given
/// back", and the server reclaimed the live client's channel.
#[test]
fn a_connect_that_cannot_read_its_own_start_time_claims_nothing() {
    let Some(g) = gate("rustself", 2) else {
        return;
    };
    let me = std::process::id();
    shm::blind::stat_of(me, 1);
    let e = Client::connect(g.name(), ConnectOptions::default()).unwrap_err();
    shm::blind::stat_of(0, 0);
    let why = format!(
        "shm server {:?}: cannot read this process's start time (/proc/{me}/stat): {}; no \
         channel claimed",
        g.name(),
        std::io::Error::from_raw_os_error(crate::ffi::EMFILE)
    );
    assert_eq!((e.code, e.message), (Status::ServerUnavailable, why));
    let ctl = region(g.name());
    for i in 0..2 {
        assert_eq!(
            (
                ctl.u32(base(i) + ch::OWNER_PID).load(SeqCst),
                ctl.u64(base(i) + ch::OWNER_START_TIME).load(SeqCst)
            ),
            (0, 0),
            "channel {i}"
        );
    }
    let mut client = Client::connect(g.name(), ConnectOptions::default()).unwrap();
    assert_eq!(client.infer("echo", &int(1), LONG).unwrap(), int(1));
}

/// A region STOPPED while its process lives is no proof of death either: the reference server's
/// stop waits a bounded time for its serving loop, which may yet dispatch the request. Another
/// thread writes STOPPED once the request is published; the call was sent again.
#[test]
fn a_region_stopped_while_its_process_lives_is_not_taken_for_dead() {
    let Some(g) = gate("ruststopped", 4) else {
        return;
    };
    let mut client = Client::connect(g.name(), ConnectOptions::default()).unwrap();
    assert_eq!(client.infer("echo", &int(1), LONG).unwrap(), int(1));
    let _holder = hold_loop(&g, "hold_s");
    let ctl = region(g.name());
    let me = std::process::id();
    let got = thread::scope(|s| {
        s.spawn(|| {
            let channels = ctl.u32(rg::CHANNEL_COUNT).load(SeqCst) as usize;
            let published = || {
                (0..channels).any(|i| {
                    ctl.u32(base(i) + ch::OWNER_PID).load(SeqCst) == me
                        && ctl.u64(base(i) + ch::CLIENT_SEQ).load(SeqCst)
                            != ctl.u64(base(i) + ch::SERVER_SEQ).load(SeqCst)
                })
            };
            wait_until("the call to publish its request", published);
            ctl.u32(rg::STATE).store(l::STATE_STOPPED, SeqCst);
        });
        queued(&g, "hold_s", Duration::from_secs(5), || {
            client.infer("count_s", &int(5), LONG)
        })
    });
    ctl.u32(rg::STATE).store(l::STATE_READY, SeqCst);
    let gone = format!(
        "shm server {:?} (pid {}) is gone",
        g.name(),
        g.server.0.id()
    );
    want_failed_and_run_once(&g, "hold_s", "count_s", got, &gone);
}
