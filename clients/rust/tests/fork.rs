//! A client or pool copied into a forked child (a preforking service that connected before it
//! forked) leaves its parent's channel and data segment alone: the child's copy, dropped or
//! called, never gives the parent's channel back, unlinks its segment or moves its sequence (the
//! parent's calls went on failing DEADLINE_EXCEEDED); a call in the child connects a channel of its
//! own, a reconnect (docs/protocol/shm.md section 10.5); a loan made before the fork is refused.

mod common;

use common::{start_echo, Echo};
use fdn::{Client, ConnectOptions, Pool, Status, Tensor, TensorSpec};
use std::io::Write;
use std::os::raw::c_int;
use std::time::Duration;

extern "C" {
    fn fork() -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fn _exit(code: c_int) -> !;
}

const T: Option<Duration> = Some(Duration::from_secs(5));

/// Run `body` in a forked child (`what` names it); the child's failure, said on its stderr, fails
/// the test here. The child leaves by `_exit`: nothing of the parent's is dropped there but what
/// `body` drops.
fn in_child(what: &str, body: impl FnOnce() -> Result<(), String>) {
    // SAFETY: this test binary runs one test: no other thread of it holds a lock the child needs.
    let pid = unsafe { fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
        let why = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(why)) => Some(why),
            Err(_) => Some("it panicked".to_string()),
        };
        if let Some(why) = &why {
            let _ = writeln!(std::io::stderr(), "{what}: {why}");
        }
        // SAFETY: ends the child at once, running no destructor or exit handler of the parent's.
        unsafe { _exit(why.is_some() as c_int) };
    }
    let mut status: c_int = -1;
    // SAFETY: waits for the child forked above; `status` outlives the call.
    let waited = unsafe { waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid, "waitpid: {}", std::io::Error::last_os_error());
    assert_eq!(
        status, 0,
        "{what}: the child's checks failed (wait status {status}; its stderr says why)"
    );
}

/// Drop the child's copy of `v` (a client or pool of the parent's), as a child that lets it go
/// does.
fn drop_copy<T>(v: &T) {
    // SAFETY: called in a forked child only, which then ends in `_exit` without returning to the
    // frame that owns `v`: the copy read here is the only one ever used or dropped in the child.
    drop(unsafe { std::ptr::read(v) });
}

fn x() -> Tensor {
    Tensor::from_slice("x", &[2], &[7i32, -3]).unwrap()
}

/// An echo call through `client`, as the parent or the child makes it.
fn echo(client: &mut Client, what: &str) -> Result<(), String> {
    match client.infer("echo", &[x()], T) {
        Ok(out) if out == vec![x()] => Ok(()),
        got => Err(format!("{what}: {got:?}")),
    }
}

fn data_segments(name: &str) -> usize {
    let prefix = format!("fdn-{name}-d");
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .count()
}

fn start(python: &str) -> Echo {
    start_echo(python, format!("rustfork_{}", std::process::id()))
}

#[test]
fn a_forked_childs_copy_leaves_the_parents_client_and_pool_alone() {
    let Ok(python) = std::env::var("FDN_TEST_PYTHON") else {
        eprintln!("FDN_TEST_PYTHON not set: skipping the tests against the echo server");
        return;
    };
    let echo_server = start(&python);
    let name = echo_server.1.clone();
    let mut client = Client::connect(&name, ConnectOptions::default()).unwrap();
    echo(&mut client, "the parent's call before the fork").unwrap();
    let channel = client.channel();

    in_child("a child dropping its copy", || {
        drop_copy(&client);
        Ok(())
    });
    assert_eq!(
        data_segments(&name),
        1,
        "the parent's data segment after the child's drop"
    );
    echo(
        &mut client,
        "the parent's call after a child dropped its copy",
    )
    .unwrap();

    in_child("a child calling through its copy", || {
        if client.channel().is_some() {
            return Err("the copy names the parent's channel as its own".into());
        }
        let shown = format!("{client:?}");
        if !shown.contains("channel: None") {
            return Err(format!(
                "the copy shows the parent's channel as its own: {shown}"
            ));
        }
        echo(&mut client, "the child's first call")?;
        echo(&mut client, "the child's second call")?;
        let counts = client.counters();
        if counts.reconnects != 1 || counts.resends != 0 {
            return Err(format!(
                "the child's counts: {counts:?}, want 1 reconnect (its own channel)"
            ));
        }
        drop_copy(&client);
        Ok(())
    });
    assert_eq!(
        data_segments(&name),
        1,
        "the data segments after the child's calls and drop"
    );
    echo(
        &mut client,
        "the parent's call after a child called through its copy",
    )
    .unwrap();

    let spec = TensorSpec::new("x", fdn::DataType::Int32, &[2]);
    let mut loan = client.loan("echo", std::slice::from_ref(&spec)).unwrap();
    in_child("a child using the parent's loan", || {
        let refused = |what: &str, e: Option<fdn::Error>| match e {
            Some(e) if e.code == Status::InvalidInput && e.message.contains("before fork()") => {
                Ok(())
            }
            e => Err(format!("{what}: {e:?}, not INVALID_INPUT naming the fork")),
        };
        refused("input_mut", loan.input_mut(0).err())?;
        refused("infer", loan.infer(T).err())?;
        Ok(())
    });
    loan.input_as_mut::<i32>(0)
        .unwrap()
        .copy_from_slice(&[7, -3]);
    assert_eq!(
        loan.infer(T).unwrap(),
        vec![x()],
        "the parent's loan after the fork"
    );
    assert_eq!(client.channel(), channel, "the parent's channel");
    assert_eq!(client.counters().reconnects, 0, "the parent's reconnects");

    let pool = Pool::new(&name, ConnectOptions::default(), 2).unwrap();
    pool.infer("echo", &[x()], T).unwrap();
    in_child("a child calling through its copy of a pool", || {
        match pool.infer("echo", &[x()], T) {
            Ok(out) if out == vec![x()] => {}
            got => return Err(format!("the child's pool call: {got:?}")),
        }
        drop_copy(&pool);
        Ok(())
    });
    assert_eq!(
        data_segments(&name),
        2,
        "the data segments of the parent's client and pool"
    );
    pool.infer("echo", &[x()], T).unwrap();
    assert_eq!(
        pool.counters().reconnects,
        0,
        "the parent's pool's reconnects"
    );
    drop(pool);
    drop(client);
    assert_eq!(
        data_segments(&name),
        0,
        "the data segments once the parent dropped its own"
    );
}
