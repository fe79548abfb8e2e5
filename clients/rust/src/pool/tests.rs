//! [`Pool`] against live servers (the echo server, and clients/tests/gate_server.py whose `gate*`
//! models hold a request until a file appears): many threads through a few clients, waiting,
//! `close`, a panicking closure, a server killed and restarted, fewer channels than the pool's
//! size. Runs only when `FDN_TEST_PYTHON` names a Python with foundation_shm installed. Here, not
//! in `tests/`, to count the pool's clients and waiters and to hold the region mutex.

use super::meeting_tests::together;
use super::Pool;
use crate::conn::tests::{base, clean, python_server, region, signal, Echo, HeldMutex};
use crate::layout::{channel as ch, region as rg};
use crate::{Client, ConnectOptions, Error, Status, Tensor};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

pub(super) const LONG: Option<Duration> = Some(Duration::from_secs(60));

/// A gate server of `channels` channels, and the folder of its gate files (removed when dropped).
pub(crate) struct Gate {
    pub(crate) server: Echo,
    pub(crate) dir: PathBuf,
}

impl Drop for Gate {
    fn drop(&mut self) {
        // the held requests answer, so the server stops at once
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(model) = name.strip_suffix(".with-server") {
                    release(&self.dir, model);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn gate(prefix: &str, channels: usize) -> Option<Gate> {
    let dir = std::env::temp_dir().join(format!("{prefix}_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/gate_server.py");
    let n = channels.to_string();
    let args = [dir.to_str().unwrap(), "--channels", &n];
    let server = python_server(prefix, &[script], &args)?;
    Some(Gate { server, dir })
}

impl Gate {
    pub(crate) fn name(&self) -> &str {
        &self.server.1
    }

    /// Wait until `DIR/MODEL.SUFFIX` exists.
    pub(crate) fn wait_file(&self, model: &str, suffix: &str) {
        let path = self.dir.join(format!("{model}.{suffix}"));
        wait_until(&format!("{} to exist", path.display()), || path.exists());
    }
}

pub(crate) fn release(dir: &Path, model: &str) {
    std::fs::write(dir.join(format!("{model}.release")), b"").unwrap();
}

pub(crate) fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < end, "gave up waiting for {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

pub(super) fn echo(prefix: &str) -> Option<Echo> {
    python_server(prefix, &["-m", "foundation_shm._echo"], &[])
}

pub(super) fn int(v: i32) -> Vec<Tensor> {
    vec![Tensor::from_slice("x", &[1], &[v]).unwrap()]
}

pub(super) fn pool(name: &str, size: usize) -> Pool {
    Pool::new(name, ConnectOptions::default(), size).unwrap()
}

pub(super) fn open(p: &Pool) -> usize {
    p.lock().open
}

fn waiters(p: &Pool) -> usize {
    p.lock().waiters.len()
}

/// The channels of the server `name` this process owns.
fn owned_by_me(name: &str) -> usize {
    let ctl = region(name);
    let pid = std::process::id();
    (0..ctl.u32(rg::CHANNEL_COUNT).load(SeqCst) as usize)
        .filter(|&i| ctl.u32(base(i) + ch::OWNER_PID).load(SeqCst) == pid)
        .count()
}

fn assert_error(what: &str, e: &Error, code: Status, model: &str, text: &str) {
    assert_eq!((e.code, e.model.as_str()), (code, model), "{what}: {e}");
    assert!(e.message.contains(text), "{what}: {e}");
}

#[test]
fn new_checks_the_name_the_options_and_the_size() {
    let e = Pool::new("no/such", ConnectOptions::default(), 1).unwrap_err();
    assert_error(
        "a bad name",
        &e,
        Status::InvalidInput,
        "",
        "shm server name",
    );
    let small = ConnectOptions {
        max_response_bytes: 100,
        ..ConnectOptions::default()
    };
    let e = Pool::new("x", small, 1).unwrap_err();
    assert_error(
        "bad options",
        &e,
        Status::InvalidInput,
        "",
        "max_response_bytes",
    );
    let e = Pool::new("x", ConnectOptions::default(), 0).unwrap_err();
    assert_error(
        "size 0",
        &e,
        Status::InvalidInput,
        "",
        "a pool of 0 clients",
    );
    let p = Pool::new("shm://nobody_here", ConnectOptions::default(), 2).unwrap();
    assert_eq!((p.name(), p.size(), open(&p)), ("nobody_here", 2, 0));
    let e = p.infer("echo", &int(1), LONG).unwrap_err();
    assert_error(
        "no server",
        &e,
        Status::ServerUnavailable,
        "echo",
        "no shm server",
    );
    assert_eq!(open(&p), 0, "a failed connect is not counted open");
}

/// 32 threads × 20 calls through a pool of 4 each get their own answers, owned copies that later
/// calls leave as they were; the pool opens at most 4 clients, and `close` gives every channel
/// back.
#[test]
fn many_threads_get_their_own_answers_through_a_few_clients() {
    let Some(srv) = echo("rustpoolm") else {
        return;
    };
    let p = pool(&srv.1, 4);
    let most = AtomicUsize::new(0);
    thread::scope(|s| {
        for g in 0..32 {
            let (p, most) = (&p, &most);
            s.spawn(move || {
                let kept: Vec<_> = (0..20)
                    .map(|i| {
                        let out = p.infer("echo", &int(g << 16 | i), LONG).unwrap();
                        most.fetch_max(owned_by_me(p.name()), SeqCst);
                        out
                    })
                    .collect();
                for (i, out) in kept.iter().enumerate() {
                    assert_eq!(out, &int(g << 16 | i as i32), "thread {g}, call {i}");
                }
            });
        }
    });
    assert!((1..=4).contains(&open(&p)), "{} clients open", open(&p));
    assert!(
        most.load(SeqCst) <= 4,
        "{} channels owned",
        most.load(SeqCst)
    );
    p.close();
    assert_eq!((open(&p), owned_by_me(&srv.1)), (0, 0));
}

/// `close` fails the calls waiting for a client, and every later call, SERVER_UNAVAILABLE saying
/// the pool is closed; the client in use is dropped when its call returns (its answer still the
/// caller's), its channel given back.
#[test]
fn close_fails_waiters_and_drops_clients_in_use_when_returned() {
    let Some(g) = gate("rustpoolc", 2) else {
        return;
    };
    let p = pool(g.name(), 1);
    thread::scope(|s| {
        let held = s.spawn(|| p.infer("gate_p", &int(77), None));
        g.wait_file("gate_p", "with-server");
        let waiting: Vec<_> = (0..3)
            .map(|_| s.spawn(|| p.infer("echo", &int(1), None)))
            .collect();
        wait_until("3 waiting calls", || waiters(&p) == 3);
        p.close();
        let closed = format!("the pool of {:?} is closed", g.name());
        for w in waiting {
            let e = w.join().unwrap().unwrap_err();
            assert_error(
                "a waiting call",
                &e,
                Status::ServerUnavailable,
                "echo",
                &closed,
            );
        }
        let e = p.infer("echo", &int(1), LONG).unwrap_err();
        assert_error(
            "a later call",
            &e,
            Status::ServerUnavailable,
            "echo",
            &closed,
        );
        let e = p.with_client(LONG, |_| Ok(())).unwrap_err();
        assert_error(
            "a later with_client",
            &e,
            Status::ServerUnavailable,
            "",
            &closed,
        );
        assert_eq!(owned_by_me(g.name()), 1, "the client in use was dropped");
        release(&g.dir, "gate_p");
        assert_eq!(held.join().unwrap().unwrap(), int(77));
    });
    assert_eq!((open(&p), owned_by_me(g.name())), (0, 0));
    p.close(); // a second close does nothing
}

/// A call whose connect was under way when the pool closed (here waiting for the region mutex,
/// held until `close` has run) made its call on the client it connected, dropped only when it
/// came back. It fails as the calls refused after `close` do, its client dropped before any call.
#[test]
fn close_fails_a_call_still_connecting() {
    let Some(srv) = echo("rustpoolcc") else {
        return;
    };
    let opts = ConnectOptions {
        connect_timeout: Duration::from_secs(30), // the connect waits for the mutex held here
        ..ConnectOptions::default()
    };
    let p = Pool::new(&srv.1, opts, 1).unwrap();
    thread::scope(|s| {
        let mutex = HeldMutex::take(&srv.1);
        let connecting = s.spawn(|| p.infer("echo", &int(9), None));
        wait_until("the call to connect", || open(&p) == 1);
        p.close();
        drop(mutex); // the connect takes the mutex and a channel, after close
        let e = connecting.join().unwrap().unwrap_err();
        let closed = format!("the pool of {:?} is closed", srv.1);
        assert_error(
            "a call connecting when the pool closed",
            &e,
            Status::ServerUnavailable,
            "echo",
            &closed,
        );
    });
    assert_eq!((open(&p), owned_by_me(&srv.1)), (0, 0));
}

/// A call whose connect was under way when the pool closed and then failed (here the region
/// mutex, held until after `close`, outlasts the connect timeout) returned its connect's error
/// (OVERLOADED "region mutex busy"), as if the pool were open. It fails as the calls refused
/// after `close` do, the connect's error named after.
#[test]
fn close_fails_a_call_whose_connect_failed() {
    let Some(srv) = echo("rustpoolcf") else {
        return;
    };
    let opts = ConnectOptions {
        connect_timeout: Duration::from_secs(1), // the mutex held here outlasts it
        ..ConnectOptions::default()
    };
    let p = Pool::new(&srv.1, opts, 1).unwrap();
    thread::scope(|s| {
        let mutex = HeldMutex::take(&srv.1);
        let connecting = s.spawn(|| p.infer("echo", &int(9), None));
        wait_until("the call to connect", || open(&p) == 1);
        p.close();
        let e = connecting.join().unwrap().unwrap_err();
        drop(mutex);
        let closed = format!(
            "the pool of {:?} is closed; the connect under way failed: OVERLOADED: ",
            srv.1
        );
        assert_error(
            "a call whose connect failed after the pool closed",
            &e,
            Status::ServerUnavailable,
            "echo",
            &closed,
        );
        assert!(e.message.contains("region mutex busy"), "{e}");
    });
    assert_eq!((open(&p), owned_by_me(&srv.1)), (0, 0));
}

/// A call waits for a free client until its timeout (DEADLINE_EXCEEDED saying so). A client whose
/// call was abandoned at its deadline is put back and taken last: of two idle clients the next
/// call takes the other and is answered at once; with one, it waits for the late answer.
#[test]
fn a_call_waits_until_its_timeout_and_abandoned_clients_are_taken_last() {
    let Some(g) = gate("rustpoolw", 3) else {
        return;
    };
    let short = Some(Duration::from_millis(100));
    let p1 = pool(g.name(), 1);
    thread::scope(|s| {
        let held = s.spawn(|| p1.infer("gate_w1", &int(1), Some(Duration::from_secs(3))));
        g.wait_file("gate_w1", "with-server");
        let start = Instant::now();
        let e = p1.infer("echo", &int(2), short).unwrap_err();
        let took = start.elapsed();
        let what = "while waiting for a client of the pool of";
        assert_error("no free client", &e, Status::DeadlineExceeded, "echo", what);
        assert!(took < Duration::from_secs(2), "waited {took:?}");
        let e = held.join().unwrap().unwrap_err();
        assert_eq!(e.code, Status::DeadlineExceeded, "{e}");
    });
    let e = p1.infer("echo", &int(2), short).unwrap_err();
    let what = "previous request";
    assert_error(
        "on the abandoned client",
        &e,
        Status::DeadlineExceeded,
        "echo",
        what,
    );
    release(&g.dir, "gate_w1");
    assert_eq!(p1.infer("echo", &int(2), LONG).unwrap(), int(2));

    let p2 = pool(g.name(), 2);
    thread::scope(|s| {
        let held = s.spawn(|| p2.infer("gate_w2", &int(1), Some(Duration::from_secs(3))));
        g.wait_file("gate_w2", "with-server");
        assert_eq!(p2.infer("echo", &int(3), LONG).unwrap(), int(3));
        let e = held.join().unwrap().unwrap_err();
        assert_eq!(e.code, Status::DeadlineExceeded, "{e}");
    });
    for i in 0..3 {
        // the gate stays shut: only the other client answers in time
        let out = p2.infer("echo", &int(i), Some(Duration::from_secs(5)));
        assert_eq!(out.unwrap(), int(i), "call {i} beside the abandoned client");
    }
    assert_eq!(open(&p2), 2);
}

/// `with_client` lends a client; one whose closure panicked is dropped (the panic goes on), one
/// whose closure failed SERVER_UNAVAILABLE too, and the next call connects another; the
/// closure's other errors come back as they are, its client kept.
#[test]
fn with_client_lends_a_client_and_drops_it_after_a_panic() {
    let Some(srv) = echo("rustpoold") else {
        return;
    };
    let p = pool(&srv.1, 1);
    let got = p.with_client(LONG, |c| c.infer("echo", &int(42), LONG));
    assert_eq!(got.unwrap(), int(42));
    assert_eq!((open(&p), owned_by_me(&srv.1)), (1, 1));
    let panicked = std::panic::catch_unwind(|| {
        let _ = p.with_client(LONG, |_| -> crate::Result<()> { panic!("in the closure") });
    });
    let payload = panicked.expect_err("the closure's panic was swallowed");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"in the closure"));
    assert_eq!(
        (open(&p), owned_by_me(&srv.1)),
        (0, 0),
        "the client was kept"
    );
    assert_eq!(p.infer("echo", &int(1), LONG).unwrap(), int(1));
    assert_eq!(open(&p), 1);
    let mine = Error::new(Status::HandlerError, "mine");
    assert_eq!(
        p.with_client(LONG, |_| Err::<(), _>(mine.clone())),
        Err(mine)
    );
    assert_eq!(
        open(&p),
        1,
        "a client whose closure failed otherwise was dropped"
    );
    let gone = Error::new(Status::ServerUnavailable, "gone");
    assert_eq!(
        p.with_client(LONG, |_| Err::<(), _>(gone.clone())),
        Err(gone)
    );
    assert_eq!((open(&p), owned_by_me(&srv.1)), (0, 0));
}

/// A server killed (SIGKILL) under the pool: calls fail SERVER_UNAVAILABLE and their clients are
/// dropped; once the server is back, every thread is served again through new clients, and the
/// pool never holds more than its size.
#[test]
fn a_server_killed_and_restarted_is_served_again() {
    let Some(srv) = echo("rustpoolk") else {
        return;
    };
    let name = srv.1.clone();
    let p = pool(&name, 4);
    let (stop, restarted) = (AtomicBool::new(false), AtomicBool::new(false));
    let (unavailable, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let (served, other) = (Mutex::new([false; 8]), Mutex::new(Vec::new()));
    let mut srv = Some(srv);
    thread::scope(|s| {
        for g in 0..8 {
            let (p, stop, restarted) = (&p, &stop, &restarted);
            let (unavailable, most, served, other) = (&unavailable, &most, &served, &other);
            s.spawn(move || {
                for i in 0.. {
                    if stop.load(SeqCst) {
                        return;
                    }
                    let after = restarted.load(SeqCst);
                    match p.infer("echo", &int(g << 16 | i), Some(Duration::from_secs(30))) {
                        Ok(out) if out == int(g << 16 | i) => {
                            if after {
                                served.lock().unwrap()[g as usize] = true;
                            }
                        }
                        Ok(out) => other.lock().unwrap().push(format!("{out:?}")),
                        Err(e) if e.code == Status::ServerUnavailable => {
                            unavailable.fetch_add(1, SeqCst);
                            thread::sleep(Duration::from_millis(1));
                        }
                        Err(e) => other.lock().unwrap().push(e.to_string()),
                    }
                    most.fetch_max(open(p), SeqCst);
                }
            });
        }
        thread::sleep(Duration::from_millis(200));
        signal(srv.as_ref().unwrap(), "KILL");
        drop(srv.take()); // reaped
        thread::sleep(Duration::from_millis(200));
        clean(&name);
        srv = echo("rustpoolk");
        restarted.store(true, SeqCst);
        wait_until("every thread served after the restart", || {
            served.lock().unwrap().iter().all(|&b| b)
        });
        stop.store(true, SeqCst);
    });
    assert!(unavailable.load(SeqCst) > 0, "no call saw the server gone");
    assert_eq!(other.lock().unwrap().as_slice(), &[] as &[String]);
    assert!(most.load(SeqCst) <= 4, "{} clients open", most.load(SeqCst));
    assert!(owned_by_me(&name) <= 4);
    p.close();
    assert_eq!(owned_by_me(&name), 0);
}

/// A server of 2 channels under a pool of 4: a connect refused OVERLOADED waits for a client of
/// the pool, and 16 threads are served through 2; with no client of its own (every channel held
/// by others) a call fails OVERLOADED.
#[test]
fn a_pool_larger_than_the_server_s_channels_makes_do_with_what_it_gets() {
    let Some(g) = gate("rustpoolo", 2) else {
        return;
    };
    let p = pool(g.name(), 4);
    thread::scope(|s| {
        let h1 = s.spawn(|| p.infer("gate_o1", &int(1), None));
        g.wait_file("gate_o1", "with-server");
        let h2 = s.spawn(|| p.infer("gate_o2", &int(2), None));
        g.wait_file("gate_o2", "with-server");
        let third = s.spawn(|| p.infer("echo", &int(3), None));
        wait_until("the refused call to wait", || waiters(&p) == 1);
        release(&g.dir, "gate_o1");
        assert_eq!(third.join().unwrap().unwrap(), int(3));
        assert_eq!(h1.join().unwrap().unwrap(), int(1));
        release(&g.dir, "gate_o2");
        assert_eq!(h2.join().unwrap().unwrap(), int(2));
        for t in 0..16 {
            let p = &p;
            s.spawn(move || {
                for i in 0..20 {
                    assert_eq!(
                        p.infer("echo", &int(t << 16 | i), LONG).unwrap(),
                        int(t << 16 | i)
                    );
                }
            });
        }
    });
    assert_eq!(open(&p), 2);
    p.close();
    let (_a, _b) = (
        Client::connect(g.name(), ConnectOptions::default()).unwrap(),
        Client::connect(g.name(), ConnectOptions::default()).unwrap(),
    );
    let q = pool(g.name(), 2);
    let e = q.infer("echo", &int(1), LONG).unwrap_err();
    assert_error("no channel to take", &e, Status::Overloaded, "echo", "");
    assert_eq!(open(&q), 0);
}

/// A connect refused OVERLOADED while the pool's only client was put back idle (its call ended
/// while the connect waited for the region mutex, nobody waiting) takes that client: it waited
/// for a put that never came (the Go pool's bug of 8f5bb59), the idle client beside it.
#[test]
fn a_connect_refused_overloaded_takes_a_client_put_back_meanwhile() {
    let Some(g) = gate("rustpoolr", 2) else {
        return;
    };
    let _other = Client::connect(g.name(), ConnectOptions::default()).unwrap();
    let opts = ConnectOptions {
        connect_timeout: Duration::from_secs(30), // the connect waits for the mutex held here
        ..ConnectOptions::default()
    };
    let p = Pool::new(g.name(), opts, 2).unwrap();
    thread::scope(|s| {
        let held = s.spawn(|| p.infer("gate_r", &int(1), None));
        g.wait_file("gate_r", "with-server");
        let mutex = HeldMutex::take(g.name());
        let second = s.spawn(|| {
            let out = p.infer("echo", &int(5), Some(Duration::from_secs(20)));
            (out, Instant::now())
        });
        wait_until("the second call to connect", || open(&p) == 2);
        release(&g.dir, "gate_r");
        assert_eq!(held.join().unwrap().unwrap(), int(1)); // put back idle, nobody waiting
        assert_eq!(waiters(&p), 0);
        let freed = Instant::now();
        drop(mutex); // the connect finds no free channel: OVERLOADED
        let (out, at) = second.join().unwrap();
        assert_eq!(out.expect("refused OVERLOADED with a client idle"), int(5));
        assert!(
            at - freed < Duration::from_secs(5),
            "it waited {:?}",
            at - freed
        );
    });
    assert_eq!(open(&p), 1);
}

/// A warm pool of 4 failed 4 calls in a row after a crash and a restart; now none.
#[test]
fn a_warm_pool_fails_no_call_after_a_crash_and_a_restart() {
    let Some(srv) = echo("rustcrashpool") else {
        return;
    };
    let p = Pool::new(&srv.1, ConnectOptions::default(), 4).unwrap();
    together(&p, 4, "four callers at once: four clients");
    assert_eq!(open(&p), 4);
    signal(&srv, "KILL");
    drop(srv); // reaped
    let _srv = echo("rustcrashpool").unwrap();
    for i in 0..8 {
        assert_eq!(p.infer("echo", &int(i), LONG).unwrap(), int(i), "call {i}");
    }
    assert_eq!(open(&p), 4, "each client reconnected in its call");
}
