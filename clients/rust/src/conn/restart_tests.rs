//! A server killed (SIGKILL) and restarted under its name (spec 10.3): a request the dead server
//! never dispatched is sent once more to the new one, within the call's deadline; before, the
//! first call of every idle client failed SERVER_UNAVAILABLE
//! although the new server was up. The client counts its reconnects and resends (10.5). Runs only
//! when `FDN_TEST_PYTHON` names a Python with foundation_shm installed.

use super::restart_wait_tests::{kill as kill_gate, start_again};
use super::tests::{python_server, signal, Echo};
use crate::pool::tests::gate;
use crate::{Client, ConnectOptions, Counters, DataType, Status, Tensor, TensorSpec};
use std::thread;
use std::time::Duration;

const LONG: Option<Duration> = Some(Duration::from_secs(30));

fn echo(prefix: &str) -> Option<Echo> {
    python_server(
        prefix,
        &["-m", "foundation_shm._echo"],
        &["--channels", "8"],
    )
}

/// Kill the server with SIGKILL and wait until it has exited; its pid.
fn kill(srv: &mut Echo) -> u32 {
    signal(srv, "KILL");
    srv.0.wait().unwrap();
    srv.0.id()
}

fn int(v: i32) -> Vec<Tensor> {
    vec![Tensor::from_slice("x", &[1], &[v]).unwrap()]
}

fn counted(reconnects: u64, resends: u64) -> Counters {
    Counters {
        reconnects,
        resends,
    }
}

#[test]
fn the_first_call_after_a_crash_and_a_restart_is_answered() {
    let Some(mut srv) = echo("rustcrash") else {
        return;
    };
    let mut client = Client::connect(&srv.1, ConnectOptions::default()).unwrap();
    assert_eq!(client.counters(), counted(0, 0), "a new client");
    assert_eq!(client.infer("echo", &int(1), LONG).unwrap(), int(1));
    kill(&mut srv);
    let mut srv = echo("rustcrash").unwrap();
    assert_eq!(client.infer("echo", &int(2), LONG).unwrap(), int(2));
    assert_eq!(client.counters(), counted(1, 1), "after a crash");
    // a request larger than the new channel's area: it grows before it is sent again
    let big = vec![Tensor::from_slice("x", &[300_000], &vec![7i32; 300_000]).unwrap()];
    assert_eq!(client.infer("echo", &big, LONG).unwrap(), big);
    kill(&mut srv);
    let srv = echo("rustcrash").unwrap();
    assert_eq!(client.infer("echo", &big, LONG).unwrap(), big);
    assert_eq!(client.counters(), counted(2, 2), "after a second crash");
    // stopped cleanly (SIGTERM, waited for) and restarted: the next call finds the region
    // STOPPED before it publishes, and its request goes to the new server
    drop(srv);
    let _srv = echo("rustcrash").unwrap();
    assert_eq!(client.infer("echo", &int(3), LONG).unwrap(), int(3));
    assert_eq!(client.counters(), counted(3, 3), "after a clean stop");
}

/// A server killed behind a stat file this client cannot read (EMFILE): kill(pid, 0) proves it
/// gone, and the request it never dispatched is sent again to the server restarted under its
/// name. It failed gone (not proven dead: not sent again).
#[test]
fn a_killed_server_behind_an_unreadable_stat_file_is_gone_and_its_request_sent_again() {
    let Some(mut srv) = echo("rustcrashblind") else {
        return;
    };
    let mut client = Client::connect(&srv.1, ConnectOptions::default()).unwrap();
    assert_eq!(client.infer("echo", &int(1), LONG).unwrap(), int(1));
    let pid = kill(&mut srv);
    let _srv = echo("rustcrashblind").unwrap();
    crate::shm::blind::stat_of(pid, u32::MAX);
    let got = client.infer("echo", &int(2), LONG);
    crate::shm::blind::stat_of(0, 0);
    assert_eq!(got.map_err(|e| e.message), Ok(int(2)));
}

/// None restarted: the call fails as before, gone, and says why it was not sent again.
#[test]
fn a_call_whose_server_was_killed_and_not_restarted_is_gone() {
    let Some(mut srv) = echo("rustcrashnone") else {
        return;
    };
    let mut client = Client::connect(&srv.1, ConnectOptions::default()).unwrap();
    assert_eq!(client.infer("echo", &int(1), LONG).unwrap(), int(1));
    let pid = kill(&mut srv);
    let e = client.infer("echo", &int(2), LONG).unwrap_err();
    let counts = client.counters();
    // the next calls find no connection: their connect finds the server gone, and they say
    // nothing was sent (they said only "... is gone", the words of a call its handler may have
    // run); a loan's begin (it sends nothing) and a connect say "... is gone"
    let next = [
        ("a call", client.infer("echo", &int(3), LONG).map(|_| ())),
        ("metadata", client.metadata("echo", LONG).map(|_| ())),
        ("stats", client.stats(LONG).map(|_| ())),
    ];
    let specs = [TensorSpec::new("x", DataType::Int32, &[1])];
    let loan = client.loan("echo", &specs).map(|_| ()).unwrap_err();
    let connect = Client::connect(&srv.1, ConnectOptions::default()).map(|_| ());
    let later = client.counters();
    super::tests::clean(&srv.1); // what the killed server left, before anything can fail
    assert_eq!(counts, counted(0, 0), "a reconnect that failed");
    let gone = format!("shm server {:?} (pid {pid}) is gone", srv.1);
    let want = format!("{gone}; not sent again: no server has started under that name since");
    assert_eq!(
        (e.code, e.message.as_str()),
        (Status::ServerUnavailable, want.as_str())
    );
    let unsent = format!("{gone}; not sent: no server has started under that name since");
    for (what, got) in next {
        let e = got.expect_err(what);
        assert_eq!(
            (e.code, e.message.as_str()),
            (Status::ServerUnavailable, unsent.as_str()),
            "{what} after one whose server was gone"
        );
    }
    for (what, e) in [
        ("a loan's begin", loan),
        ("a connect", connect.unwrap_err()),
    ] {
        assert_eq!(
            (e.code, e.message.as_str()),
            (Status::ServerUnavailable, gone.as_str()),
            "{what} after a call whose server was gone"
        );
    }
    assert_eq!(later, counted(0, 0), "after calls whose connect failed");
}

/// A loan's inputs were written into the dead server's area: it is not sent again.
#[test]
fn a_loan_is_not_sent_again_after_a_crash_and_a_restart() {
    let Some(mut srv) = echo("rustcrashloan") else {
        return;
    };
    let mut client = Client::connect(&srv.1, ConnectOptions::default()).unwrap();
    let specs = [TensorSpec::new("x", DataType::Int32, &[1])];
    let mut loan = client.loan("echo", &specs).unwrap();
    loan.input_as_mut::<i32>(0).unwrap()[0] = 7;
    assert_eq!(loan.infer(LONG).unwrap(), int(7));
    let pid = kill(&mut srv);
    let _srv = echo("rustcrashloan").unwrap();
    loan.input_as_mut::<i32>(0).unwrap()[0] = 8;
    let e = loan.infer(LONG).unwrap_err();
    let want = format!("shm server {:?} (pid {pid}) is gone", srv.1);
    assert_eq!(
        (e.code, e.message.as_str()),
        (Status::ServerUnavailable, want.as_str())
    );
    assert_eq!(client.counters(), counted(0, 0), "a loan is not sent again");
    assert_eq!(client.infer("echo", &int(9), LONG).unwrap(), int(9));
    assert_eq!(client.counters(), counted(1, 0), "the call after the loan");
}

/// A request a handler had (it may have run: `server_busy` 1) when its server was killed fails
/// gone, is not sent again and counts no resend (10.5); the client's next call, the server
/// restarted, reconnects (counted), its request never having been with the dead one (no resend).
#[test]
fn a_request_a_handler_had_counts_no_resend_and_the_next_call_a_reconnect() {
    let Some(mut g) = gate("rustcount", 4) else {
        return;
    };
    let mut client = Client::connect(g.name(), ConnectOptions::default()).unwrap();
    let (got, pid) = thread::scope(|s| {
        let call = s.spawn(|| client.infer("gate_a", &int(1), LONG));
        g.wait_file("gate_a", "with-server");
        let pid = kill_gate(&mut g);
        (call.join().unwrap(), pid)
    });
    let want = format!("shm server {:?} (pid {pid}) is gone", g.name());
    let e = got.unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (Status::ServerUnavailable, want.as_str())
    );
    assert_eq!(client.counters(), counted(0, 0), "a request a handler had");
    std::fs::remove_file(g.dir.join("gate_a.with-server")).unwrap();
    start_again(&mut g, "rustcount");
    assert_eq!(client.infer("echo", &int(2), LONG).unwrap(), int(2));
    assert_eq!(client.counters(), counted(1, 0), "the next call");
}
