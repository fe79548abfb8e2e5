//! A call waiting for an abandoned call's late answer (spec 7.5) whose server is killed and
//! restarted under its name: its own request was never sent, so it is sent to the new server,
//! once, within the call's deadline. It failed SERVER_UNAVAILABLE "gone" although the new server
//! was up. Against clients/tests/gate_server.py: `gate_a` holds the abandoned request with its
//! handler. Runs only when `FDN_TEST_PYTHON` names a Python with foundation_shm installed.

use super::proof_tests::hold_loop;
use super::tests::{base, python_server, region, HeldMutex};
use crate::layout::{self as l, channel as ch, region as rg};
use crate::pool::tests::{gate, wait_until, Gate};
use crate::{shm, Client, ConnectOptions, Counters, DataType, Pool, Status, Tensor, TensorSpec};
use std::sync::atomic::Ordering::SeqCst;
use std::thread;
use std::time::{Duration, Instant};

const LONG: Option<Duration> = Some(Duration::from_secs(30));

pub(super) fn int(v: i32) -> Vec<Tensor> {
    vec![Tensor::from_slice("x", &[1], &[v]).unwrap()]
}

/// Kill the gate server (SIGKILL) and wait until it has exited; its pid.
pub(super) fn kill(g: &mut Gate) -> u32 {
    g.server.0.kill().unwrap();
    g.server.0.wait().unwrap();
    g.server.0.id()
}

/// Start the gate server again (4 channels) under its name, `prefix` as `gate` was given, and
/// its folder of gate files.
pub(super) fn start_again(g: &mut Gate, prefix: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/gate_server.py");
    let dir = g.dir.to_str().unwrap().to_string();
    g.server = python_server(prefix, &[script], &[&dir, "--channels", "4"]).unwrap();
}

/// The count of requests the server's handler was given (its stats, through a client of its own).
fn requests(g: &Gate) -> u64 {
    let mut c = Client::connect(g.name(), ConnectOptions::default()).unwrap();
    let stats = crate::json::parse(&c.stats(LONG).unwrap()).unwrap();
    stats.get("requests").and_then(|n| n.as_u64()).unwrap()
}

/// How often `model`, a count model, ran on the gate's servers.
fn runs(g: &Gate, model: &str) -> usize {
    std::fs::read(g.dir.join(format!("{model}.runs"))).map_or(0, |b| b.len())
}

/// A call of `gate_a` that passes its 20 ms deadline with its request with the server's handler
/// (held at the gate).
pub(super) fn abandon(g: &Gate, client: &mut Client) {
    let e = client
        .infer("gate_a", &int(1), Some(Duration::from_millis(20)))
        .unwrap_err();
    assert_eq!(e.code, Status::DeadlineExceeded, "{e}");
    g.wait_file("gate_a", "with-server");
}

/// A client (its `connect_timeout` 60 s: a dead server hidden by `shm::blind::hide` is hung after
/// 1 s, and its reconnect must not give up first) whose one channel holds an abandoned request.
fn abandoned_client(g: &Gate) -> Client {
    let opts = ConnectOptions {
        connect_timeout: Duration::from_secs(60),
        ..ConnectOptions::default()
    };
    let mut client = Client::connect(g.name(), opts).unwrap();
    abandon(g, &mut client);
    client
}

/// Wait until this process's channel `i` of the server `name` sleeps on its semaphore: the call
/// waits for the late answer.
pub(super) fn wait_asleep(name: &str, i: usize) {
    let ctl = region(name);
    wait_until("the call to wait for the late answer", || {
        ctl.u32(base(i) + ch::CLIENT_SLEEPING).load(SeqCst) == 1
    });
}

/// Hides the deaths of the servers it was given until dropped (`shm::blind::hide`).
pub(super) struct Hidden(pub(super) Vec<u32>);

impl Drop for Hidden {
    fn drop(&mut self) {
        for &pid in &self.0 {
            shm::blind::notice(pid);
        }
    }
}

#[test]
fn a_call_waiting_behind_an_abandoned_request_is_sent_to_the_restarted_server() {
    let Some(mut g) = gate("rustwaitre", 4) else {
        return;
    };
    let mut client = abandoned_client(&g);
    let i = client.channel().unwrap();
    let got = thread::scope(|s| {
        let call = s.spawn(|| client.infer("count_b", &int(5), LONG));
        wait_asleep(g.name(), i);
        shm::blind::hide(g.server.0.id());
        let hidden = Hidden(vec![kill(&mut g)]);
        std::fs::remove_file(g.dir.join("gate_a.with-server")).unwrap();
        start_again(&mut g, "rustwaitre");
        drop(hidden);
        call.join().unwrap()
    });
    assert_eq!(got.map_err(|e| e.to_string()), Ok(int(5)));
    assert_eq!((requests(&g), runs(&g, "count_b")), (1, 1));
    assert!(
        !g.dir.join("gate_a.with-server").exists(),
        "the abandoned request was sent to the new server"
    );
    assert_eq!(client.infer("echo", &int(9), LONG).unwrap(), int(9));
}

/// A pool's client put back with its request still with the server (its call abandoned), the
/// server killed and restarted: the next call takes that client, finds the server gone while it
/// waits for the late answer, and is sent to the new server.
#[test]
fn a_pool_call_behind_an_abandoned_request_is_sent_to_the_restarted_server() {
    let Some(mut g) = gate("rustwaitpool", 4) else {
        return;
    };
    let p = Pool::new(g.name(), ConnectOptions::default(), 1).unwrap();
    let e = p
        .infer("gate_a", &int(1), Some(Duration::from_millis(20)))
        .unwrap_err();
    assert_eq!(e.code, Status::DeadlineExceeded, "{e}");
    g.wait_file("gate_a", "with-server");
    kill(&mut g);
    start_again(&mut g, "rustwaitpool");
    let got = p.infer("count_b", &int(5), LONG);
    assert_eq!(got.map_err(|e| e.to_string()), Ok(int(5)));
    let ctl = region(g.name());
    let me = std::process::id();
    let channels = ctl.u32(rg::CHANNEL_COUNT).load(SeqCst) as usize;
    let mine = (0..channels)
        .filter(|&i| ctl.u32(base(i) + ch::OWNER_PID).load(SeqCst) == me)
        .count();
    assert_eq!(
        (runs(&g, "count_b"), mine),
        (1, 1),
        "runs, channels of the pool"
    );
}

/// No server restarted: the call fails as before, gone, and says why its request was not sent.
#[test]
fn a_call_waiting_behind_an_abandoned_request_with_no_server_since_is_not_sent() {
    let Some(mut g) = gate("rustwaitnone", 4) else {
        return;
    };
    let mut client = Client::connect(g.name(), ConnectOptions::default()).unwrap();
    abandon(&g, &mut client);
    let i = client.channel().unwrap();
    let (e, dead) = thread::scope(|s| {
        let call = s.spawn(|| client.infer("count_b", &int(5), LONG));
        wait_asleep(g.name(), i);
        let dead = kill(&mut g);
        (call.join().unwrap().unwrap_err(), dead)
    });
    super::tests::clean(g.name()); // what the killed server left
    assert_eq!(client.counters(), Counters::default(), "a failed reconnect");
    let want = format!(
        "shm server {:?} (pid {dead}) is gone; not sent: no server has started under that name \
         since",
        g.name()
    );
    assert_eq!(
        (e.code, e.message.as_str(), e.request_id, e.model.as_str()),
        (Status::ServerUnavailable, want.as_str(), 0, "count_b")
    );
}

/// The reconnect is bounded by the call's deadline, not `connect_timeout`: with the new server's
/// region mutex held, a call of 300 ms fails SERVER_UNAVAILABLE in time, having claimed nothing.
#[test]
fn a_call_waiting_behind_an_abandoned_request_keeps_its_deadline_in_the_reconnect() {
    let Some(mut g) = gate("rustwaitdl", 4) else {
        return;
    };
    let mut client = abandoned_client(&g);
    let dead = kill(&mut g);
    start_again(&mut g, "rustwaitdl");
    let held = HeldMutex::take(g.name());
    let start = Instant::now();
    let e = client
        .infer("count_b", &int(5), Some(Duration::from_millis(300)))
        .unwrap_err();
    let took = start.elapsed();
    let want = format!(
        "shm server {:?} (pid {dead}) is gone; not sent: shm server {:?}: region mutex still busy \
         at the deadline",
        g.name(),
        g.name()
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (Status::ServerUnavailable, want.as_str())
    );
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "the call of 300 ms ended after {took:?}"
    );
    let ctl = region(g.name());
    let me = std::process::id();
    let channels = ctl.u32(rg::CHANNEL_COUNT).load(SeqCst) as usize;
    assert!(
        (0..channels).all(|i| ctl.u32(base(i) + ch::OWNER_PID).load(SeqCst) != me),
        "the failed reconnect left a channel owned by this process"
    );
    assert_eq!(client.counters(), Counters::default(), "a failed reconnect");
    drop(held);
    assert_eq!(client.infer("echo", &int(9), LONG).unwrap(), int(9));
    let want = Counters {
        reconnects: 1,
        resends: 0,
    };
    assert_eq!(client.counters(), want, "the call after a failed reconnect");
    assert_eq!(runs(&g, "count_b"), 0, "count_b ran, though never sent");
}

/// One reconnect per call (spec 7.5, 10.3): a call sent to the restarted server after waiting
/// behind an abandoned request, queued there undispatched when that one is killed too, is not
/// sent again to a third, although it is up when the call looks.
#[test]
fn a_call_sent_to_a_restarted_server_after_waiting_is_not_sent_again() {
    let Some(mut g) = gate("rustwaitonce", 4) else {
        return;
    };
    let mut client = abandoned_client(&g);
    kill(&mut g);
    start_again(&mut g, "rustwaitonce");
    // the second server's serving loop held: the call is queued there, never dispatched
    let holder = hold_loop(&g, "hold_h");
    let ctl = region(g.name());
    let me = std::process::id();
    let channels = ctl.u32(rg::CHANNEL_COUNT).load(SeqCst) as usize;
    let (got, second) = thread::scope(|s| {
        let call = s.spawn(|| client.infer("count_b", &int(5), LONG));
        wait_until("the call to reach the second server", || {
            assert!(
                !call.is_finished(),
                "the call ended before it reached the second server"
            );
            (0..channels).any(|i| {
                ctl.u32(base(i) + ch::OWNER_PID).load(SeqCst) == me
                    && ctl.u64(base(i) + ch::CLIENT_SEQ).load(SeqCst)
                        != ctl.u64(base(i) + ch::SERVER_SEQ).load(SeqCst)
            })
        });
        shm::blind::hide(g.server.0.id());
        let hidden = Hidden(vec![kill(&mut g)]);
        start_again(&mut g, "rustwaitonce");
        let second = hidden.0[0];
        drop(hidden);
        (call.join().unwrap(), second)
    });
    drop(holder);
    let e = got.unwrap_err();
    // nothing appended: no reconnect was tried
    let want = format!("shm server {:?} (pid {second}) is gone", g.name());
    assert_eq!(
        (e.code, e.message.as_str()),
        (Status::ServerUnavailable, want.as_str())
    );
    assert_eq!((runs(&g, "count_b"), requests(&g)), (0, 0));
}

/// A region STOPPED while its process lives (a server whose serving loop died, or whose stop gave
/// up on its drain) while a call waits for an abandoned request's late answer: that call's request
/// was never written, so it reconnects as after a death (spec 7.5), here to the stopped region
/// alone, and says it was not sent. It failed bare "stopped", as if its request might have run;
/// then "not sent: ... (pid N) is gone" where the Go client says no server has started under that
/// name since (the reconnect found the same region). The test writes STOPPED.
#[test]
fn a_call_waiting_behind_an_abandoned_request_of_a_stopped_server_reconnects() {
    let Some(g) = gate("rustwaitstop", 4) else {
        return;
    };
    let mut client = Client::connect(g.name(), ConnectOptions::default()).unwrap();
    abandon(&g, &mut client);
    let i = client.channel().unwrap();
    let ctl = region(g.name());
    let e = thread::scope(|s| {
        let call = s.spawn(|| client.infer("count_b", &int(5), LONG));
        wait_asleep(g.name(), i);
        ctl.u32(rg::STATE).store(l::STATE_STOPPED, SeqCst);
        call.join().unwrap().unwrap_err()
    });
    ctl.u32(rg::STATE).store(l::STATE_READY, SeqCst);
    let want = format!(
        "shm server {:?} (pid {}) is gone; not sent: no server has started under that name since",
        g.name(),
        g.server.0.id()
    );
    assert_eq!(
        (e.code, e.message.as_str(), e.request_id),
        (Status::ServerUnavailable, want.as_str(), 0)
    );
    assert_eq!(runs(&g, "count_b"), 0, "count_b ran, though never sent");
}

/// "No server has started under that name since" is said of the region the call found gone (by
/// its instance_id), not of a refusal's wording: a server started since whose region is STOPPED
/// refuses the reconnect with the same words as the stopped one above, and the call says so.
#[test]
fn a_call_waiting_behind_an_abandoned_request_says_why_a_server_started_since_refused_it() {
    let Some(mut g) = gate("rustwaitstop2", 4) else {
        return;
    };
    let mut client = abandoned_client(&g);
    let i = client.channel().unwrap();
    let (e, dead, again) = thread::scope(|s| {
        let call = s.spawn(|| client.infer("count_b", &int(5), LONG));
        wait_asleep(g.name(), i);
        shm::blind::hide(g.server.0.id());
        let hidden = Hidden(vec![kill(&mut g)]);
        start_again(&mut g, "rustwaitstop2");
        let again = g.server.0.id();
        region(g.name())
            .u32(rg::STATE)
            .store(l::STATE_STOPPED, SeqCst);
        let dead = hidden.0[0];
        drop(hidden);
        (call.join().unwrap().unwrap_err(), dead, again)
    });
    region(g.name())
        .u32(rg::STATE)
        .store(l::STATE_READY, SeqCst);
    let want = format!(
        "shm server {0:?} (pid {dead}) is gone; not sent: shm server {0:?} (pid {again}) is gone",
        g.name()
    );
    assert_eq!(
        (e.code, e.message.as_str(), e.request_id),
        (Status::ServerUnavailable, want.as_str(), 0)
    );
    assert_eq!(runs(&g, "count_b"), 0, "count_b ran, though never sent");
}

/// `loan` waiting for an abandoned call's late answer, its server killed and restarted: the loan
/// is granted by the new server (nothing of it was in the dead one's area) and its `infer` is
/// answered there; the abandoned request is not sent. It failed gone.
#[test]
fn a_loan_taken_behind_an_abandoned_request_is_granted_by_the_restarted_server() {
    let Some(mut g) = gate("rustwaitloan", 4) else {
        return;
    };
    let mut client = abandoned_client(&g);
    let i = client.channel().unwrap();
    let got = thread::scope(|s| {
        let call = s.spawn(|| {
            let spec = TensorSpec::new("x", DataType::Int32, &[1]);
            let mut loan = client.loan("count_b", &[spec])?;
            loan.input_as_mut::<i32>(0)?[0] = 5;
            loan.infer(LONG)
        });
        wait_asleep(g.name(), i);
        shm::blind::hide(g.server.0.id());
        let hidden = Hidden(vec![kill(&mut g)]);
        std::fs::remove_file(g.dir.join("gate_a.with-server")).unwrap();
        start_again(&mut g, "rustwaitloan");
        drop(hidden);
        call.join().unwrap()
    });
    assert_eq!(got.map_err(|e| e.to_string()), Ok(int(5)));
    assert_eq!((requests(&g), runs(&g, "count_b")), (1, 1));
    assert!(
        !g.dir.join("gate_a.with-server").exists(),
        "the abandoned request was sent to the new server"
    );
    let want = Counters {
        reconnects: 1,
        resends: 0,
    };
    assert_eq!(client.counters(), want, "a loan's call is no resend");
}

/// The reconnect of a call that waited behind an abandoned request is that call's one extra
/// attempt, not the client's: the client's next call, its server killed with the request
/// published and never dispatched, is still sent again to the server restarted under the name
/// (10.3).
#[test]
fn the_call_after_one_that_reconnected_while_waiting_is_still_sent_again() {
    let Some(mut g) = gate("rustwaitnext", 4) else {
        return;
    };
    let mut client = Client::connect(g.name(), ConnectOptions::default()).unwrap();
    abandon(&g, &mut client);
    kill(&mut g);
    start_again(&mut g, "rustwaitnext");
    let got = client.infer("echo", &int(7), LONG);
    assert_eq!(
        got.map_err(|e| e.to_string()),
        Ok(int(7)),
        "behind the abandoned request"
    );
    let once = Counters {
        reconnects: 1,
        resends: 1,
    };
    assert_eq!(client.counters(), once, "behind the abandoned request");
    kill(&mut g);
    start_again(&mut g, "rustwaitnext");
    let got = client.infer("echo", &int(8), LONG);
    assert_eq!(got.map_err(|e| e.to_string()), Ok(int(8)), "the next call");
    let twice = Counters {
        reconnects: 2,
        resends: 2,
    };
    assert_eq!(client.counters(), twice, "the next call");
}

/// Field 3 of `/proc/PID/stat`: R, S, Z (a zombie) ...
fn process_state(pid: u32) -> Option<u8> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    stat.get(close + 2).copied()
}

/// Right after a SIGKILL the server's pid is a zombie (its main thread ended) while its other
/// threads still exit, the last one unmapping the memory (a model's gigabytes: a tenth of a second
/// and more) before it closes the lock file (spec section 2). A connect then, a call's reconnect to
/// send its request again, or one waiting behind an abandoned request, was told the server held
/// its lock but lived in another PID namespace; a zombie of the server's start time is the server,
/// dead: "gone", "no server has started under that name since". This process holds the lock for
/// those threads, the server killed and left unreaped (then reaped: a lock held then is still
/// told another PID namespace).
#[test]
fn a_server_killed_and_not_yet_reaped_with_its_lock_held_is_gone() {
    let Some(mut g) = gate("rustdying", 4) else {
        return;
    };
    let mut again = Client::connect(g.name(), ConnectOptions::default()).unwrap();
    let mut waiting = Client::connect(g.name(), ConnectOptions::default()).unwrap();
    assert_eq!(again.infer("echo", &int(1), LONG).unwrap(), int(1));
    abandon(&g, &mut waiting);
    let lock = std::fs::File::open(crate::layout::lock_file(g.name())).unwrap();
    let pid = g.server.0.id();
    g.server.0.kill().unwrap(); // not waited for: a zombie
    wait_until("the killed server to be a zombie", || {
        process_state(pid) == Some(b'Z')
    });
    wait_until("the killed server's lock to be free", || {
        shm::lock_now(&lock)
    });
    let gone = format!("shm server {:?} (pid {pid}) is gone", g.name());
    let e = Client::connect(g.name(), ConnectOptions::default()).unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (Status::ServerUnavailable, gone.as_str())
    );
    for (client, what) in [(&mut again, "not sent again"), (&mut waiting, "not sent")] {
        let e = client.infer("count_b", &int(5), LONG).unwrap_err();
        let want = format!("{gone}; {what}: no server has started under that name since");
        assert_eq!(
            (e.code, e.message.as_str()),
            (Status::ServerUnavailable, want.as_str())
        );
    }
    g.server.0.wait().unwrap();
    let e = Client::connect(g.name(), ConnectOptions::default()).unwrap_err();
    let held = format!(
        "shm server {:?} holds its lock, but its pid {pid} is not a live process seen from here",
        g.name()
    );
    assert!(e.message.starts_with(&held), "{e}");
    drop(lock);
    super::tests::clean(g.name()); // what the killed server left
}
