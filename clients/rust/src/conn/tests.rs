//! Giving a channel back (spec 10.1, "Disconnect") against the Python echo server: runs only when
//! `FDN_TEST_PYTHON` names a Python with foundation_shm installed. Here, not in `tests/`, to
//! look at the channel block and hold the region mutex with the crate's own mappings.

use crate::layout::{self as l, channel as ch, region as rg};
use crate::shm::{Mapping, Semaphore, Wait};
use crate::{Client, ConnectOptions, Status, Tensor};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

pub(crate) struct Echo(pub(crate) Child, pub(crate) String);

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.id().to_string()])
            .status();
        // SIGTERM: the echo server then stops cleanly and unlinks its objects. One that has not
        // exited within 30 s is killed and said so (it once took no notice of a SIGTERM in a
        // loaded CI run, after its serving loop died, and the suite waited here until its 300 s
        // were up); its stderr, which says why a loop died, is the test's.
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let end = Instant::now() + Duration::from_secs(30);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(self.0.try_wait(), Ok(None)) {
            eprintln!("echo server {:?} ignored SIGTERM for 30 s: killed", self.1);
            let _ = self.0.kill();
            let _ = self.0.wait();
            if let Ok(python) = std::env::var("FDN_TEST_PYTHON") {
                let clean = "import sys; from foundation_shm._objects import remove_objects; \
                             remove_objects(sys.argv[1])";
                let _ = Command::new(python).args(["-c", clean, &self.1]).status();
            }
        }
        // A server the test killed left its objects in /dev/shm: the test cleans them once its
        // checks are made, so one that failed first left them for good. Cleaned here too, unless
        // a server started under the name since (the region is then its).
        if matches!(self.0.try_wait(), Ok(Some(s)) if s.code().is_none())
            && region_pid(&self.1) == Some(self.0.id())
        {
            let _ = try_clean(&self.1);
        }
    }
}

/// The `server_pid` of the region under `name`, if there is one.
fn region_pid(name: &str) -> Option<u32> {
    let (ctl, _) = Mapping::open(&l::control_name(name)).ok()?;
    (ctl.len() >= l::REGION_HEADER_SIZE).then(|| ctl.u32(rg::SERVER_PID).load(SeqCst))
}

fn echo_server(prefix: &str) -> Option<Echo> {
    echo_server_with(prefix, &[])
}

/// `python -m foundation_shm._echo NAME ARGS...`, once it serves.
fn echo_server_with(prefix: &str, args: &[&str]) -> Option<Echo> {
    python_server(prefix, &["-m", "foundation_shm._echo"], args)
}

/// `python PROGRAM... NAME ARGS...` (a server printing "ready" once it serves), once it serves;
/// `None` (the test skipped) without `FDN_TEST_PYTHON`.
pub(crate) fn python_server(prefix: &str, program: &[&str], args: &[&str]) -> Option<Echo> {
    let Ok(python) = std::env::var("FDN_TEST_PYTHON") else {
        eprintln!("FDN_TEST_PYTHON not set: skipping the tests against the echo server");
        return None;
    };
    let name = format!("{prefix}_{}", std::process::id());
    let mut child = Command::new(python)
        .args(program)
        .arg(&name)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the echo server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    Some(Echo(child, name))
}

/// The control segment of `name`, mapped apart from any client's; the offset of channel `i`.
pub(crate) fn region(name: &str) -> Mapping {
    Mapping::open(&l::control_name(name)).unwrap().0
}

pub(crate) fn base(i: usize) -> usize {
    l::CHANNELS_OFFSET + i * l::CHANNEL_SIZE
}

/// Wait up to a minute for channel `i` to have no owner (the server reclaimed it): the server's
/// beat comes late on a loaded machine, not never.
fn freed(ctl: &Mapping, i: usize) -> bool {
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        if ctl.u32(base(i) + ch::OWNER_PID).load(SeqCst) == 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn owned(ctl: &Mapping, i: usize) -> (u32, u64) {
    (
        ctl.u32(base(i) + ch::OWNER_PID).load(SeqCst),
        ctl.u64(base(i) + ch::OWNER_START_TIME).load(SeqCst),
    )
}

/// Stop (`STOP`) or resume (`CONT`) the echo server. The signal is asynchronous: a stop returns
/// once `/proc` shows every thread of the server stopped (a call made before then could still
/// be answered, and the test that meant to find the server hung got its answer instead).
pub(crate) fn signal(echo: &Echo, sig: &str) {
    let pid = echo.0.id().to_string();
    assert!(Command::new("kill")
        .args([&format!("-{sig}"), &pid])
        .status()
        .unwrap()
        .success());
    let stopped = || {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        tasks.map(|task| task.unwrap().path()).all(|task| {
            let stat = std::fs::read_to_string(task.join("stat")).unwrap_or_default();
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
        })
    };
    while sig == "STOP" && !stopped() {
        std::thread::yield_now();
    }
}

/// Stop the echo server (`signal`), then wait until its heartbeat, read through `ctl`, is older
/// than `ms`: hung by section 10.3 (10 intervals of 100 ms, at least 1 s) once past 1000.
fn hang(echo: &Echo, ctl: &Mapping, ms: u64) {
    signal(echo, "STOP");
    let end = Instant::now() + Duration::from_secs(60);
    while crate::shm::monotonic_ns() - ctl.u64(rg::HEARTBEAT_NS).load(SeqCst) <= ms * 1_000_000 {
        assert!(
            Instant::now() < end,
            "gave up waiting for the stopped server's heartbeat to go stale"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Remove the objects of the killed server `name`, as `foundation shm clean` does.
pub(crate) fn clean(name: &str) {
    assert!(try_clean(name), "foundation shm clean {name}");
}

/// `clean` for a drop, where a panic would abort: whether it ran (not without `FDN_TEST_PYTHON`).
fn try_clean(name: &str) -> bool {
    let Ok(python) = std::env::var("FDN_TEST_PYTHON") else {
        return false;
    };
    let code = format!("from foundation_shm._cli import clean; clean({name:?}, False)");
    Command::new(python)
        .args(["-c", &code])
        .status()
        .is_ok_and(|s| s.success())
}

fn x() -> Vec<Tensor> {
    vec![Tensor::from_slice("x", &[2], &[1i32, 2]).unwrap()]
}

/// A client of `name` that has made one call, and the index of its channel.
fn connected(name: &str, opts: ConnectOptions) -> (Client, usize) {
    let mut client = Client::connect(name, opts).unwrap();
    client
        .infer("echo", &x(), Some(Duration::from_secs(5)))
        .unwrap();
    let i = client.channel().unwrap();
    (client, i)
}

/// Wait until channel `i` has a request with the server, or the thread making it has ended.
fn wait_published<T>(ctl: &Mapping, i: usize, call: &std::thread::JoinHandle<T>) {
    while ctl.u64(base(i) + ch::CLIENT_SEQ).load(SeqCst)
        == ctl.u64(base(i) + ch::SERVER_SEQ).load(SeqCst)
        && !call.is_finished()
    {
        std::thread::yield_now();
    }
}

/// Channel `i` was given back: no owner, or one the server reclaims (owner_start_time 0), not
/// kept by this live process for good.
fn assert_given_back(ctl: &Mapping, i: usize) {
    let (pid, start) = owned(ctl, i);
    assert!(
        pid == 0 || start == 0,
        "channel {i} is kept by this live process (owner_pid {pid}, owner_start_time {start})"
    );
}

/// A client dropped while the region mutex stays busy gives its channel back without it
/// (owner_start_time = 0): it kept it owned by this live process for good.
#[test]
fn a_busy_region_mutex_still_gives_the_channel_back() {
    let Some(echo) = echo_server("rustmtx") else {
        return;
    };
    let ctl = region(&echo.1);
    let opts = ConnectOptions {
        connect_timeout: Duration::from_millis(100),
        ..ConnectOptions::default()
    };
    let (client, i) = connected(&echo.1, opts);
    let mutex = Semaphore::open(&l::mutex_name(&echo.1)).unwrap();
    let until = crate::shm::monotonic_ns() + 5_000_000_000;
    assert!(matches!(mutex.wait_until(until), Wait::Posted));
    drop(client);
    mutex.post();
    assert_given_back(&ctl, i);
    assert!(freed(&ctl, i), "the server did not reclaim the channel");
}

/// A request already with a server that then hangs (stopped with SIGSTOP, its heartbeat older than
/// 1.5 s) waits for its answer, as for a slow model: the client failed it SERVER_UNAVAILABLE ("is
/// hung") within a wait slice of the heartbeat going stale, while the Python, Go and C clients
/// waited (a Python server's heartbeat stalls while a model call holds the GIL, on a healthy
/// server). Without a deadline the call is answered once the server resumes, on the same channel;
/// with one it ends DEADLINE_EXCEEDED, and the channel serves again once the server resumes.
#[test]
fn a_request_with_a_server_that_hangs_waits_for_its_answer() {
    let Some(echo) = echo_server("rusthungwait") else {
        return;
    };
    let ctl = region(&echo.1);
    let (mut client, i) = connected(&echo.1, ConnectOptions::default());
    let slow = crate::InferOptions {
        timeout: None,
        params: vec![("ms".into(), crate::Param::Int(200))],
        ..crate::InferOptions::default()
    };
    let call = std::thread::spawn(move || {
        let got = client.infer_with("sleep", &x(), &slow);
        (client, got)
    });
    wait_published(&ctl, i, &call);
    hang(&echo, &ctl, 1500);
    signal(&echo, "CONT");
    let (mut client, got) = call.join().unwrap();
    assert_eq!(got.expect("the call on the server that hung"), x());
    assert_eq!(client.channel(), Some(i), "the call reconnected");

    hang(&echo, &ctl, 1010);
    let e = client
        .infer("echo", &x(), Some(Duration::from_millis(300)))
        .unwrap_err();
    signal(&echo, "CONT");
    assert_eq!(e.code, Status::DeadlineExceeded, "{e}");
    assert!(e.message.contains("before the deadline"), "{e}");
    client
        .infer("echo", &x(), Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(client.channel(), Some(i), "the call reconnected");
}

/// A server that dies while a request is with it (stopped, then killed: a zombie until the test
/// ends, which counts as dead) fails the call SERVER_UNAVAILABLE within a wait slice, with no
/// deadline at all: the liveness check between slices looks at the process, not its heartbeat.
#[test]
fn a_server_that_dies_with_a_request_fails_it_as_gone() {
    let Some(echo) = echo_server("rustdies") else {
        return;
    };
    let ctl = region(&echo.1);
    let (mut client, i) = connected(&echo.1, ConnectOptions::default());
    signal(&echo, "STOP");
    let call = std::thread::spawn(move || client.infer("echo", &x(), None).map(drop));
    wait_published(&ctl, i, &call);
    signal(&echo, "KILL");
    let got = call.join().unwrap();
    clean(&echo.1);
    let e = got.unwrap_err();
    assert_eq!(e.code, Status::ServerUnavailable, "{e}");
    assert!(e.message.contains("is gone"), "{e}");
}

/// A client dropped while its server is hung gives its channel back without the region mutex
/// (owner_start_time = 0), for the server to reclaim once it runs again, not kept owned by this
/// live process for good.
#[test]
fn a_client_dropped_while_its_server_is_hung_gives_its_channel_back() {
    let Some(echo) = echo_server("rusthung") else {
        return;
    };
    let ctl = region(&echo.1);
    let (client, i) = connected(&echo.1, ConnectOptions::default());
    hang(&echo, &ctl, 1010);
    drop(client);
    assert_given_back(&ctl, i); // read while the server is stopped: it cannot have reclaimed it
    signal(&echo, "CONT");
    assert!(
        freed(&ctl, i),
        "the channel of the hung server's client is kept: {:?}",
        owned(&ctl, i)
    );
}

/// A client dropped while its request is still with the server (after DEADLINE_EXCEEDED) gives
/// the channel back with owner_start_time = 0 (spec 10.1): the late answer must not reach a new
/// owner of the channel; the server reclaims it once it has answered.
#[test]
fn a_pending_request_leaves_the_channel_to_the_server() {
    let Some(echo) = echo_server("rustpend") else {
        return;
    };
    let ctl = region(&echo.1);
    let mut client = Client::connect(&echo.1, ConnectOptions::default()).unwrap();
    let i = client.channel().unwrap();
    let slow = crate::InferOptions {
        timeout: Some(Duration::from_millis(20)),
        params: vec![("ms".into(), crate::Param::Int(400))],
        ..crate::InferOptions::default()
    };
    let e = client.infer_with("sleep", &x(), &slow).unwrap_err();
    assert_eq!(e.code, Status::DeadlineExceeded, "{e}");
    drop(client);
    assert_given_back(&ctl, i);
    assert!(freed(&ctl, i), "the server did not reclaim the channel");
}

/// Puts a file moved aside back where it was (`.0` to `.1`), also when a test fails first.
struct MovedBack(String, String);

impl Drop for MovedBack {
    fn drop(&mut self) {
        let _ = std::fs::rename(&self.0, &self.1);
    }
}

/// A connect claims its channel (owner_pid = this process), then opens the channel's semaphore.
/// When that failed (a semaphore unlinked, or EMFILE in a process out of descriptors) the channel
/// stayed owned by this live process, which the server never reclaims: a service whose connects
/// kept failing lost a channel per try until every client got OVERLOADED. It is given back
/// (owner_start_time = 0, as a disconnect without the mutex does): on a server of one channel, a
/// connect after the failed one is served once the server has reclaimed it.
#[test]
fn a_connect_that_cannot_open_its_channel_semaphore_gives_the_channel_back() {
    let Some(echo) = echo_server_with("rustsem", &["--channels", "1"]) else {
        return;
    };
    let name = &echo.1;
    let sem = format!("/dev/shm/sem.fdn-{name}-c0");
    let kept = format!("{sem}kept"); // a second link to the server's semaphore
    std::fs::hard_link(&sem, &kept).unwrap();
    let moved = MovedBack(kept, sem);
    std::fs::remove_file(&moved.1).unwrap();
    let ctl = region(name);
    let e = match Client::connect(name, ConnectOptions::default()) {
        Ok(_) => panic!("connected with the channel semaphore gone"),
        Err(e) => e,
    };
    assert_eq!(e.code, Status::ServerUnavailable, "{e}");
    assert_given_back(&ctl, 0);
    assert!(
        e.message.contains("cannot open the semaphore of channel 0"),
        "{e}"
    );
    drop(moved);
    let end = Instant::now() + Duration::from_secs(60); // reclaimed within a heartbeat, late on a loaded machine
    let mut client = loop {
        match Client::connect(name, ConnectOptions::default()) {
            Err(e) if e.code == Status::Overloaded && Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(10))
            }
            other => break other.expect("the connect after the failed one"),
        }
    };
    client
        .infer("echo", &x(), Some(Duration::from_secs(5)))
        .unwrap();
}

/// Region words a corrupt or hostile peer wrote are no overflow: a `default_capacity` near 2^64
/// (rounded up to pages: TOO_LARGE) is taken as `max_response_bytes` at most (here 1 MiB; the
/// default, 4 GiB, would allocate 8 GiB), a channel's `data_gen` at the largest u64 (left by its
/// previous owner) wraps to 0 and the channel serves (it was refused INTERNAL, and so was every
/// connect after it: the channel is the lowest free one), a `heartbeat_ns` near 2^64 (plus the
/// staleness window, checked when the client lets go) is no panic. Each panicked in a debug build.
#[test]
fn region_words_near_the_largest_u64_are_no_overflow() {
    let Some(echo) = echo_server("rustwords") else {
        return;
    };
    let ctl = region(&echo.1);
    let was = ctl.u64(rg::DEFAULT_CAPACITY).swap(u64::MAX, SeqCst);
    let small = ConnectOptions {
        max_response_bytes: 1 << 20,
        ..ConnectOptions::default()
    };
    let got = Client::connect(&echo.1, small);
    ctl.u64(rg::DEFAULT_CAPACITY).store(was, SeqCst);
    let capped = got.expect("a default_capacity of 2^64 - 1, capped at max_response_bytes");
    let i = capped.channel().unwrap();
    assert_eq!(
        ctl.u64(base(i) + ch::RESPONSE_CAPACITY).load(SeqCst),
        1 << 20
    );
    drop(capped);
    ctl.u64(base(0) + ch::DATA_GEN).store(u64::MAX, SeqCst);
    let mut wrapped = Client::connect(&echo.1, ConnectOptions::default()).unwrap();
    assert_eq!(wrapped.channel(), Some(0));
    assert_eq!(ctl.u64(base(0) + ch::DATA_GEN).load(SeqCst), 0);
    let got = wrapped.infer("echo", &x(), Some(Duration::from_secs(30)));
    assert_eq!(got.expect("the call on the wrapped generation"), x());
    drop(wrapped);
    let client = Client::connect(&echo.1, ConnectOptions::default()).unwrap();
    let i = client.channel().unwrap();
    ctl.u64(rg::HEARTBEAT_NS).store(u64::MAX - 1, SeqCst);
    drop(client);
    assert!(freed(&ctl, i), "the channel was not given back");
}

/// A STOPPING server is refused at connect saying so, as the Python, C and Go clients say it
/// (it said "is not serving (state 2)"); a client already connected is still served.
#[test]
fn a_stopping_server_is_refused_at_connect_saying_so() {
    let Some(echo) = echo_server("ruststop") else {
        return;
    };
    let mut served = Client::connect(&echo.1, ConnectOptions::default()).unwrap();
    let ctl = region(&echo.1);
    ctl.u32(rg::STATE).store(l::STATE_STOPPING, SeqCst);
    let refused = Client::connect(&echo.1, ConnectOptions::default());
    let still = served.infer("echo", &x(), None);
    ctl.u32(rg::STATE).store(l::STATE_READY, SeqCst);
    let e = refused.expect_err("a STOPPING server took a new client");
    assert_eq!(e.code, Status::ServerUnavailable);
    assert_eq!(e.message, format!("shm server {:?} is stopping", echo.1));
    assert!(still.is_ok(), "{still:?}");
}

/// A connect to a hung server used to succeed: it claimed a fresh channel, and its call left a
/// request there that the server could not answer, for the server to reclaim once it ran again. A
/// service retrying through a stall of a few seconds took every channel of the server (then
/// OVERLOADED, for every client, until the server had reclaimed them). A hung server now takes no
/// new client: each connect waits `connect_timeout` for a beat, then SERVER_UNAVAILABLE.
#[test]
fn retrying_a_hung_server_claims_no_channel_per_connect() {
    let Some(echo) = echo_server_with("rusthungretry", &["--channels", "4"]) else {
        return;
    };
    let ctl = region(&echo.1);
    let opts = ConnectOptions {
        connect_timeout: Duration::from_millis(100), // how long a connect waits for a beat
        ..ConnectOptions::default()
    };
    let _client = connected(&echo.1, opts.clone());
    hang(&echo, &ctl, 1010);
    let retries: Vec<_> = (0..6)
        .map(|_| Client::connect(&echo.1, opts.clone()).map(drop))
        .collect();
    let mine = (0..4)
        .filter(|&i| owned(&ctl, i).0 == std::process::id())
        .count();
    signal(&echo, "CONT");
    let says = format!(
        "shm server {:?} (pid {}) is hung: no heartbeat for ",
        echo.1,
        echo.0.id()
    );
    for got in retries {
        let e = got.expect_err("a connect to a hung server");
        assert_eq!(e.code, Status::ServerUnavailable, "{e}");
        assert!(e.message.starts_with(&says), "{e}");
        assert!(
            e.message.ends_with(
                " ms (its process is stopped or stalled, and no beat came within \
                 connect_timeout (100 ms)): it takes no new client until it beats again"
            ),
            "{e}"
        );
    }
    assert_eq!(
        mine, 1,
        "channels this process holds after 6 connects to a hung server"
    );
    // resumed, it beats again: a connect meanwhile waits 100 ms for that, then tries again (up to
    // a minute: a resumed process on a loaded machine may take long to be run)
    let end = Instant::now() + Duration::from_secs(60);
    let mut last = Client::connect(&echo.1, opts.clone());
    while last.is_err() && Instant::now() < end {
        last = Client::connect(&echo.1, opts.clone());
    }
    last.unwrap()
        .infer("echo", &x(), Some(Duration::from_secs(5)))
        .unwrap();
}

/// A call's reconnect to a hung server (its server stopped and started again, then hung) waits
/// for its heartbeat no longer than the call's own timeout (`connect_timeout` here is a minute),
/// and a server that dies while a connect waits for its beat is reported gone then, not hung once
/// `connect_timeout` has passed.
#[test]
fn a_reconnect_to_a_hung_server_keeps_the_call_s_timeout_and_sees_it_die() {
    let Some(first) = echo_server("rusthungdl") else {
        return;
    };
    let opts = ConnectOptions {
        connect_timeout: Duration::from_secs(60),
        ..ConnectOptions::default()
    };
    let (mut client, _) = connected(&first.1, opts.clone());
    drop(first); // a graceful stop: the client reconnects on its next call
    let echo = echo_server("rusthungdl").unwrap(); // the same name
    hang(&echo, &region(&echo.1), 1010);
    let started = Instant::now();
    let e = client
        .infer("echo", &x(), Some(Duration::from_millis(200)))
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.code, Status::ServerUnavailable, "{e}");
    assert!(e.message.contains(") is hung: "), "{e}");
    assert!(
        e.message
            .contains("no beat came before the call's deadline"),
        "{e}"
    );
    assert!(
        took < Duration::from_secs(30),
        "a call with a 200 ms timeout waited {took:?} to reconnect"
    );
    let name = echo.1.clone();
    let waiter = std::thread::spawn(move || {
        let started = Instant::now();
        (Client::connect(&name, opts).map(drop), started.elapsed())
    });
    // a call whose connect waits as well, and finds the server dead: it says nothing of it was
    // sent (it said only "... is gone", the words of a call its handler may have run)
    let call = std::thread::spawn(move || {
        client
            .infer("echo", &x(), Some(Duration::from_secs(30)))
            .map(drop)
    });
    std::thread::sleep(Duration::from_millis(300)); // the connect waits for a beat by now
    signal(&echo, "KILL");
    let (connected, took) = waiter.join().unwrap();
    let called = call.join().unwrap();
    clean(&echo.1);
    let gone = format!("shm server {:?} (pid {}) is gone", echo.1, echo.0.id());
    let e = connected.unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (Status::ServerUnavailable, gone.as_str())
    );
    assert!(
        took < Duration::from_secs(30),
        "a connect took {took:?} to see its hung server die"
    );
    let e = called.unwrap_err();
    let unsent = format!("{gone}; not sent: no server has started under that name since");
    assert_eq!(
        (e.code, e.message.as_str()),
        (Status::ServerUnavailable, unsent.as_str())
    );
}

/// A server whose heartbeat is stale but moves again (one that has just resumed from a stall:
/// here its heartbeat is set back by hand, and its next beat, within 100 ms, moves it) is
/// connected to: connect waits for the beat rather than refusing it as hung.
#[test]
fn a_server_that_has_just_resumed_is_connected_to() {
    let Some(echo) = echo_server("rustresumed") else {
        return;
    };
    let ctl = region(&echo.1);
    let stale = crate::shm::monotonic_ns() - 5_000_000_000;
    ctl.u64(rg::HEARTBEAT_NS).store(stale, SeqCst);
    let mut client = Client::connect(&echo.1, ConnectOptions::default()).unwrap();
    assert!(ctl.u64(rg::HEARTBEAT_NS).load(SeqCst) > stale);
    client
        .infer("echo", &x(), Some(Duration::from_secs(5)))
        .unwrap();
}

/// Holds the region mutex of a server as a client stopped inside it would (its holder a live
/// pid, which the server never frees); releases it when dropped, also when a test fails first.
pub(crate) struct HeldMutex(Mapping, Semaphore);

impl HeldMutex {
    pub(crate) fn take(name: &str) -> HeldMutex {
        let mutex = Semaphore::open(&l::mutex_name(name)).unwrap();
        let until = crate::shm::monotonic_ns() + 5_000_000_000;
        assert!(matches!(mutex.wait_until(until), Wait::Posted));
        let ctl = region(name);
        ctl.u32(rg::MUTEX_HOLDER_PID)
            .store(std::process::id(), SeqCst);
        HeldMutex(ctl, mutex)
    }
}

impl Drop for HeldMutex {
    fn drop(&mut self) {
        self.0.u32(rg::MUTEX_HOLDER_PID).store(0, SeqCst);
        self.1.post();
    }
}

/// A call that reconnected (its server stopped and started again) waited for a busy region mutex
/// up to `connect_timeout` whatever its own timeout: a call of 200 ms waited 30 s here, then
/// failed OVERLOADED. It now waits no later than its deadline and fails DEADLINE_EXCEEDED saying
/// what it waited for; a connect outside a call still waits `connect_timeout`, OVERLOADED.
#[test]
fn a_reconnect_s_wait_for_the_region_mutex_keeps_the_call_s_timeout() {
    let Some(first) = echo_server("rustmtxdl") else {
        return;
    };
    let opts = ConnectOptions {
        connect_timeout: Duration::from_secs(30),
        ..ConnectOptions::default()
    };
    let (mut client, _) = connected(&first.1, opts);
    drop(first); // a graceful stop: the client reconnects on its next call
    let echo = echo_server("rustmtxdl").unwrap(); // the same name
    let held = HeldMutex::take(&echo.1);
    let e = client
        .infer("echo", &x(), Some(Duration::from_millis(200)))
        .unwrap_err();
    assert_eq!(e.code, Status::DeadlineExceeded, "{e}");
    let busy = format!(
        "shm server {:?}: region mutex still busy at the deadline",
        echo.1
    );
    assert!(e.message.contains(&busy), "{e}");
    let short = ConnectOptions {
        connect_timeout: Duration::from_millis(200),
        ..ConnectOptions::default()
    };
    let e = Client::connect(&echo.1, short).map(drop).unwrap_err();
    assert_eq!(e.code, Status::Overloaded, "{e}");
    let busy = format!("shm server {:?}: region mutex busy for 200 ms", echo.1);
    assert!(e.message.contains(&busy), "{e}");
    let ctl = region(&echo.1);
    let pid = std::process::id();
    assert!(
        (0..ctl.u32(rg::CHANNEL_COUNT).load(SeqCst) as usize).all(|i| owned(&ctl, i).0 != pid),
        "a failed claim left a channel owned by this process"
    );
    drop(held);
    client
        .infer("echo", &x(), Some(Duration::from_secs(5)))
        .unwrap();
}
