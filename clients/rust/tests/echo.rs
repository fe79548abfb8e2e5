//! Against the Python echo server (`python -m foundation_shm._echo`): runs only when
//! `FDN_TEST_PYTHON` names a Python with foundation_shm installed (e.g. `$PWD/../../.venv/bin/python`).
//! Every datatype round-trips; parameters, deadlines, handler errors and the busy channel behave.

use fdn::{Client, ConnectOptions, DataType, InferOptions, Param, Status, Tensor, TensorSpec};
mod common;

use common::{start_echo, Echo};
use std::process::Command;
use std::time::Duration;

fn start(python: &str) -> Echo {
    start_named(python, "rustecho")
}

/// An echo server under `prefix` (tests in one binary run at once: each needs its own name).
fn start_named(python: &str, prefix: &str) -> Echo {
    let mut name = format!("{prefix}_{}", std::process::id());
    name.push_str(&"_".repeat(fdn::layout::SERVER_NAME_MAX - name.len())); // the longest name
    start_echo(python, name)
}

#[test]
fn echo_server() {
    let Ok(python) = std::env::var("FDN_TEST_PYTHON") else {
        eprintln!("FDN_TEST_PYTHON not set: skipping the tests against the echo server");
        return;
    };
    let echo = start(&python);
    let opts = ConnectOptions {
        capacity: Some(4096),
        ..ConnectOptions::default()
    };
    let mut client = Client::connect(&echo.1, opts).unwrap();
    let t = Some(Duration::from_secs(5));

    // Every datatype, a scalar and an empty tensor come back byte for byte.
    let mut inputs = Vec::new();
    for (i, code) in (1..=14u32).enumerate() {
        let dt = DataType::from_code(code).unwrap();
        let shape = [3u64, 2];
        let mut data: Vec<u8> = (0..6 * dt.itemsize()).map(|b| (b * 7 + i) as u8).collect();
        if dt == DataType::Bool {
            data.iter_mut().for_each(|b| *b &= 1);
        }
        inputs.push(Tensor::new(format!("t{code}"), dt, &shape, data).unwrap());
    }
    inputs.push(Tensor::from_slice("scalar", &[], &[2.5f64]).unwrap());
    inputs.push(Tensor::from_slice::<i32>("empty", &[0, 4], &[]).unwrap());
    let out = client.infer("echo", &inputs, t).unwrap();
    // BF16 and BYTES too: the Python server keeps them as marked uint16 / uint8 arrays, and answers
    // them as what they are (docs/protocol/shm.md, the datatype table).
    assert_eq!(out, inputs);

    // Larger than the 4 KiB areas asked for: the channel grows, twice.
    for n in [10_000usize, 300_000] {
        let big = Tensor::from_slice("big", &[n as u64], &vec![1.5f32; n]).unwrap();
        assert_eq!(
            client.infer("echo", std::slice::from_ref(&big), t).unwrap(),
            vec![big]
        );
    }

    // Parameters travel (the sleep model reads "ms"); a deadline shorter than the sleep fails
    // DEADLINE_EXCEEDED on time, and the next call waits for the late answer, then succeeds.
    let x = Tensor::from_slice("x", &[2], &[1u8, 2]).unwrap();
    let slow = InferOptions {
        timeout: Some(Duration::from_millis(100)),
        params: vec![("ms".into(), Param::Int(400))],
        ..InferOptions::default()
    };
    // DEADLINE_EXCEEDED itself shows the call gave up before the answer (which would be Ok)
    let e = client
        .infer_with("sleep", std::slice::from_ref(&x), &slow)
        .unwrap_err();
    assert_eq!(e.code, Status::DeadlineExceeded, "{e}");
    assert_eq!(
        client.infer("echo", std::slice::from_ref(&x), t).unwrap(),
        vec![x.clone()]
    );

    let e = client
        .infer("fail", std::slice::from_ref(&x), t)
        .unwrap_err();
    assert_eq!(e.code, Status::HandlerError);
    assert!(e.message.contains("boom"), "{e}");
    assert_eq!(
        client
            .infer("busy", std::slice::from_ref(&x), t)
            .unwrap_err()
            .code,
        Status::Overloaded
    );
    assert_eq!(
        client.infer("later", std::slice::from_ref(&x), t).unwrap(),
        vec![x.clone()]
    );
    assert_eq!(
        client
            .infer("nope", std::slice::from_ref(&x), t)
            .unwrap_err()
            .code,
        Status::ModelNotFound
    );
    assert!(client.stats(t).unwrap().contains("requests"));

    // Selected outputs.
    let two = [x.clone(), Tensor::from_slice("w", &[1], &[9i64]).unwrap()];
    let only = InferOptions {
        timeout: t,
        outputs: vec!["w".into()],
        ..InferOptions::default()
    };
    let got = client.infer_with("echo", &two, &only);
    assert!(got.is_ok(), "{got:?}");
}

/// The files of the server's data segments in /dev/shm.
fn data_segments(name: &str) -> Vec<std::path::PathBuf> {
    let prefix = format!("fdn-{name}-d");
    let mut found: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// Spec 10.1 step 6: capacities /dev/shm can never hold are TOO_LARGE with nothing left behind
/// (and the region mutex released: the next connect works); a segment of our own pid left over
/// from a failed claim is replaced; the fresh segment's pages are allocated (not sparse). On a
/// fresh server channel 0's data_gen is 0, so the first segment is /fdn-NAME-d0-PID-1.
#[test]
fn data_segments_are_allocated() {
    use std::os::unix::fs::MetadataExt;
    let Ok(python) = std::env::var("FDN_TEST_PYTHON") else {
        eprintln!("FDN_TEST_PYTHON not set: skipping the tests against the echo server");
        return;
    };
    let echo = start_named(&python, "rustalloc");
    let name = &echo.1;
    let huge = ConnectOptions {
        capacity: Some(1 << 48), // 2^49 bytes in all: more than any /dev/shm
        max_response_bytes: 1 << 48,
        ..ConnectOptions::default()
    };
    let e = match Client::connect(name, huge) {
        Ok(_) => panic!("capacities beyond /dev/shm: connected"),
        Err(e) => e,
    };
    assert_eq!(e.code, Status::TooLarge, "{e}");
    assert!(
        e.message.contains(&format!("/fdn-{name}-d0-")) && e.message.contains("bytes"),
        "the message names the segment and its size: {e}"
    );
    assert_eq!(data_segments(name), Vec::<std::path::PathBuf>::new());

    let leftover = format!("/dev/shm/fdn-{name}-d0-{}-1", std::process::id());
    std::fs::write(&leftover, vec![0u8; 4096]).unwrap();
    let client = Client::connect(name, ConnectOptions::default());
    if client.is_err() {
        let _ = std::fs::remove_file(&leftover);
    }
    let mut client = client.expect("connect over a leftover segment of our pid");
    let segs = data_segments(name);
    assert_eq!(segs.len(), 1, "{segs:?}");
    let meta = std::fs::metadata(&segs[0]).unwrap();
    assert!(meta.len() > 4096, "the leftover was not replaced");
    assert!(
        meta.blocks() * 512 >= meta.len(),
        "the segment is sparse: {} blocks for {} bytes",
        meta.blocks(),
        meta.len()
    );
    let x = Tensor::from_slice("x", &[2], &[1i32, 2]).unwrap();
    let out = client
        .infer(
            "echo",
            std::slice::from_ref(&x),
            Some(Duration::from_secs(5)),
        )
        .unwrap();
    assert_eq!(out, vec![x]);
}

fn python() -> Option<String> {
    let python = std::env::var("FDN_TEST_PYTHON").ok();
    if python.is_none() {
        eprintln!("FDN_TEST_PYTHON not set: skipping the tests against the echo server");
    }
    python
}

/// The longest durations and the largest capacity are an answer or a typed error, never an
/// overflow: a capacity near `usize::MAX` rounded up to pages panicked in a debug build (and
/// wrapped to 0 bytes in a release build; now it is over `max_response_bytes`, refused by
/// name); a `yield_after` past 2^64 ns panicked in the spin.
#[test]
fn the_largest_capacity_and_durations_are_no_overflow() {
    let Some(python) = python() else { return };
    let echo = start_named(&python, "rusthuge");
    for capacity in [usize::MAX, usize::MAX - 4000] {
        let huge = ConnectOptions {
            capacity: Some(capacity),
            ..ConnectOptions::default()
        };
        let e = Client::connect(&echo.1, huge).unwrap_err();
        assert_eq!(e.code, Status::InvalidInput, "{e}");
        assert!(
            e.message
                .contains("exceeds max_response_bytes (4294967296 bytes)"),
            "{e}"
        );
    }
    let longest = ConnectOptions {
        spin: Duration::MAX,
        yield_after: Duration::MAX,
        connect_timeout: Duration::MAX,
        ..ConnectOptions::default()
    };
    let mut client = Client::connect(&echo.1, longest).unwrap();
    let x = vec![Tensor::from_slice("x", &[2], &[1f32, 2.]).unwrap()];
    assert_eq!(client.infer("echo", &x, Some(Duration::MAX)).unwrap(), x);
    let e = client.infer("echo", &x, Some(Duration::ZERO)).unwrap_err();
    assert_eq!(e.code, Status::DeadlineExceeded, "{e}");
    assert_eq!(client.infer("echo", &x, None).unwrap(), x);
}

/// A loan is refused when its request could never be sent (a name too long for its field, an
/// input named twice, more inputs than the server takes): it was granted, and its `infer` failed
/// only after the inputs had been written in place.
#[test]
fn a_loan_that_could_never_be_sent_is_refused() {
    let Some(python) = python() else { return };
    let echo = start_named(&python, "rustloan");
    let mut client = Client::connect(&echo.1, ConnectOptions::default()).unwrap();
    let x = |name: &str| TensorSpec::new(name, DataType::Fp32, &[2]);
    let long = "é".repeat(32); // 32 characters, 64 bytes: one past the field
    let refused = |client: &mut Client, model: &str, specs: &[TensorSpec]| {
        let e = client.loan(model, specs).unwrap_err();
        (e.code, e.message)
    };
    let (code, msg) = refused(&mut client, &long, &[x("x")]);
    assert_eq!(code, Status::InvalidInput, "{msg}");
    assert!(
        msg.starts_with("model name") && msg.contains("64 UTF-8 bytes (at most 63)"),
        "{msg}"
    );
    let (code, msg) = refused(&mut client, "echo", &[x(&long)]);
    assert_eq!(code, Status::InvalidInput, "{msg}");
    assert!(
        msg.starts_with("input name") && msg.contains("64 UTF-8 bytes"),
        "{msg}"
    );
    let (code, msg) = refused(&mut client, "echo", &[x("x"), x("x")]);
    assert_eq!(
        (code, msg.as_str()),
        (Status::InvalidInput, "input \"x\" appears twice")
    );
    let many: Vec<TensorSpec> = (0..65).map(|i| x(&format!("t{i}"))).collect();
    let (code, msg) = refused(&mut client, "echo", &many);
    assert_eq!(code, Status::TooLarge, "{msg}");
    assert!(
        msg.contains("65 inputs") && msg.contains("at most 64"),
        "{msg}"
    );

    let mut loan = client.loan("echo", &[x(&"é".repeat(31))]).unwrap();
    let e = loan.input_mut(1).unwrap_err();
    assert_eq!(e.message, "no input 1: the loan has 1 inputs");
    let e = loan.input_as_mut::<f64>(0).unwrap_err();
    assert!(e.message.ends_with("is FP32, not FP64"), "{e}");
    loan.input_as_mut::<f32>(0).unwrap().fill(0.5);
    let out = loan.infer(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(out[0].to_vec::<f32>().unwrap(), [0.5, 0.5]);
}

/// What the server would refuse is refused before anything is grown or copied, with a message
/// naming the fault: params over 1 MiB (sent, then refused by the server), a name over its field
/// (the whole name, a megabyte of it, was the message).
#[test]
fn a_request_the_server_would_refuse_is_refused_first() {
    let Some(python) = python() else { return };
    let echo = start_named(&python, "rustrefuse");
    let mut client = Client::connect(&echo.1, ConnectOptions::default()).unwrap();
    let x = vec![Tensor::from_slice("x", &[2], &[1f32, 2.]).unwrap()];
    let big = InferOptions {
        params: vec![("k".into(), Param::Str("v".repeat(1 << 20)))],
        ..InferOptions::default()
    };
    let e = client.infer_with("echo", &x, &big).unwrap_err();
    assert_eq!(e.code, Status::TooLarge, "{e}");
    assert_eq!(
        e.message,
        "params are 1048584 bytes of JSON (at most 1048576)"
    );
    assert_eq!(e.request_id, 0); // refused before it was sent: no request
    let e = client.infer(&"m".repeat(1 << 20), &x, None).unwrap_err();
    assert_eq!(e.code, Status::InvalidInput, "{e}");
    assert_eq!(
        e.message,
        format!(
            "model name \"{}\"... is 1048576 UTF-8 bytes (at most 63)",
            "m".repeat(40)
        )
    );
    let e = client.infer("a\0b", &x, None).unwrap_err();
    assert_eq!(e.message, "model name \"a\\0b\" contains a NUL");
    assert_eq!(client.infer("echo", &x, None).unwrap(), x);
}

/// Stop (`STOP`) or resume (`CONT`) the echo server: a stopped server holds a request for as
/// long as the test needs, with no sleep to race against (its pid stays alive). The signal is
/// asynchronous: a stop returns once `/proc` shows the server stopped.
fn signal(echo: &Echo, sig: &str) {
    let pid = echo.0.id().to_string();
    assert!(Command::new("kill")
        .args([&format!("-{sig}"), &pid])
        .status()
        .unwrap()
        .success());
    // every thread: the process's own stat shows its main thread stopped while the serving
    // thread may still answer a request
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

/// The server's `heartbeat_ns` (spec 10.3), read from its control segment.
fn heartbeat_ns(echo: &Echo) -> u64 {
    use std::os::unix::fs::FileExt;
    let ctl = std::fs::File::open(format!("/dev/shm/fdn-{}", echo.1)).expect("its control segment");
    let mut word = [0u8; 8];
    ctl.read_exact_at(&mut word, fdn::layout::region::HEARTBEAT_NS as u64)
        .expect("its heartbeat_ns");
    u64::from_ne_bytes(word)
}

/// Resume the stopped echo server and wait (a minute at most) until it beats again, its
/// `heartbeat_ns` moved: until then a call still finds it hung (or finds it so once a second has
/// passed since its last beat) and gives up after its `connect_timeout` (20 or 50 ms in these
/// tests), which a resumed process on a loaded machine may take to be run at all. Not hung at the
/// `CONT` (stopped under a second) is not enough: that may be before it runs.
fn resume(echo: &Echo) {
    let beat = heartbeat_ns(echo);
    signal(echo, "CONT");
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while heartbeat_ns(echo) == beat {
        assert!(
            std::time::Instant::now() < end,
            "the resumed server did not beat again"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A loan whose infer fails while its request is still with the server (the server may still
/// be reading the inputs) lends them no more: `input_mut` handed out the request area at once,
/// and writing it changed the inputs under the server's read. The loan has ended, a new one
/// waits for the server (up to `connect_timeout`), and once the server is done it is granted.
#[test]
fn a_loan_whose_request_is_still_with_the_server_lends_its_inputs_no_more() {
    let Some(python) = python() else { return };
    let echo = start_named(&python, "rustlate");
    let opts = ConnectOptions {
        connect_timeout: Duration::from_millis(20),
        ..ConnectOptions::default()
    };
    let mut client = Client::connect(&echo.1, opts).unwrap();
    let spec = [TensorSpec::new("x", DataType::Fp32, &[4])];
    let five = Some(Duration::from_secs(5));
    {
        let mut loan = client.loan("echo", &spec).unwrap();
        loan.input_as_mut::<f32>(0).unwrap().fill(1.0);
        assert_eq!(
            loan.infer(five).unwrap()[0].to_vec::<f32>().unwrap(),
            [1.0; 4]
        );
        signal(&echo, "STOP");
        let e = loan.infer(Some(Duration::from_millis(20))).unwrap_err();
        assert_eq!(e.code, Status::DeadlineExceeded, "{e}");
        let rid = e.request_id;
        let ended = format!("this loan ended when its request {rid} failed while still with");
        let e = loan.input_mut(0).unwrap_err();
        assert_eq!(e.code, Status::InvalidInput, "{e}");
        assert!(e.message.starts_with(&ended), "{e}");
        let e = loan.input_as_mut::<f32>(0).unwrap_err();
        assert!(e.message.starts_with(&ended), "{e}");
        let e = loan.infer(five).unwrap_err();
        assert!(e.message.starts_with(&ended), "{e}");
    }
    let e = client.loan("echo", &spec).unwrap_err();
    assert_eq!(e.code, Status::DeadlineExceeded, "{e}");
    assert!(e.message.contains("still with the server"), "{e}");
    resume(&echo);
    let x = [Tensor::from_slice("x", &[1], &[7u8]).unwrap()];
    assert_eq!(client.infer("echo", &x, five).unwrap(), x); // waits for the late answer first
    let mut loan = client.loan("echo", &spec).unwrap();
    loan.input_as_mut::<f32>(0).unwrap().fill(2.0);
    assert_eq!(
        loan.infer(five).unwrap()[0].to_vec::<f32>().unwrap(),
        [2.0; 4]
    );
}

/// A call refused before its request was written (a bad argument, params over their limit, no
/// server to connect to) names no request: `request_id` 0, as in the C and Go clients, and takes
/// no number (the next request's is one more than the last sent). It was the call's number.
#[test]
fn a_call_refused_before_it_sent_anything_names_no_request() {
    let Some(python) = python() else { return };
    let mut echo = start_named(&python, "rustunsent");
    let mut client = Client::connect(&echo.1, ConnectOptions::default()).unwrap();
    let t = Some(Duration::from_secs(5));
    let x = Tensor::from_slice("x", &[2], &[1u8, 2]).unwrap();
    let e = client
        .infer("nosuch", std::slice::from_ref(&x), t)
        .unwrap_err();
    assert_eq!(e.code, Status::ModelNotFound, "{e}");
    let first = e.request_id;
    assert_ne!(first, 0, "{e}");
    let mut short = x.clone();
    short.data.pop(); // fewer bytes than its shape makes
    let refused = [
        client.infer("echo", &[x.clone(), x.clone()], t), // an input named twice
        client.infer("echo", &[short], t),
        client.infer_with(
            "echo",
            std::slice::from_ref(&x),
            &InferOptions {
                params: vec![("k".into(), Param::Str("v".repeat(1 << 20)))],
                ..InferOptions::default()
            },
        ),
    ];
    for r in refused {
        let e = r.unwrap_err();
        assert_eq!((e.model.as_str(), e.request_id), ("echo", 0), "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("{}: model \"echo\": ", e.code.name())),
            "{e}"
        );
    }
    let e = client.metadata("nosuch", t).unwrap_err();
    assert_eq!(
        (e.code, e.request_id),
        (Status::ModelNotFound, first + 1),
        "{e}"
    );
    echo.0.kill().unwrap();
    echo.0.wait().unwrap();
    let _ = client.infer("echo", std::slice::from_ref(&x), t); // finds the server dead
    let e = client
        .infer("echo", std::slice::from_ref(&x), t)
        .unwrap_err(); // no server to connect to: nothing sent
    drop(client);
    for entry in std::fs::read_dir("/dev/shm").unwrap().flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.starts_with(&format!("fdn-{}", echo.1))
            || file.starts_with(&format!("sem.fdn-{}", echo.1))
        {
            let _ = std::fs::remove_file(entry.path()); // what the killed server left
        }
    }
    assert_eq!(
        (e.code, e.request_id),
        (Status::ServerUnavailable, 0),
        "{e}"
    );
}

/// The errors of a call name the model it was made for and its request (`Error::model`,
/// `Error::request_id`, and the text), so a service calling several models can tell which call
/// failed: they named the request only (a handler's "boom on request 3" said no model).
#[test]
fn call_errors_name_the_model_and_the_request() {
    let Some(python) = python() else { return };
    let echo = start_named(&python, "rustmodel");
    let mut client = Client::connect(&echo.1, ConnectOptions::default()).unwrap();
    let t = Some(Duration::from_secs(5));
    let x = Tensor::from_slice("x", &[2], &[1u8, 2]).unwrap();
    let named = |e: &fdn::Error, code: Status, model: &str| {
        assert_eq!((e.code, e.model.as_str()), (code, model), "{e}");
        let text = e.to_string();
        let want = if e.request_id == 0 {
            format!("{}: model {model:?}: ", code.name())
        } else {
            format!(
                "{}: model {model:?} (request {}): ",
                code.name(),
                e.request_id
            )
        };
        assert!(text.starts_with(&want), "{text:?} does not start {want:?}");
    };
    let e = client
        .infer("nosuch", std::slice::from_ref(&x), t)
        .unwrap_err();
    named(&e, Status::ModelNotFound, "nosuch");
    assert_ne!(e.request_id, 0);
    let first = e.request_id;
    let e = client
        .infer("fail", std::slice::from_ref(&x), t)
        .unwrap_err();
    named(&e, Status::HandlerError, "fail");
    assert!(e.request_id > first && e.message.contains("boom"), "{e}");
    let e = client.metadata("nosuch", t).unwrap_err();
    named(&e, Status::ModelNotFound, "nosuch");
    assert_ne!(e.request_id, 0);
    let e = client
        .infer("echo", &[x.clone(), x.clone()], t)
        .unwrap_err(); // refused before it was sent
    named(&e, Status::InvalidInput, "echo");

    let spec = TensorSpec::new("x", DataType::Uint8, &[2]);
    let e = client
        .loan("nosuch", &[spec.clone(), spec.clone()])
        .unwrap_err();
    named(&e, Status::InvalidInput, "nosuch");
    assert_eq!(e.request_id, 0);
    let mut loan = client.loan("nosuch", &[spec]).unwrap();
    let e = loan.infer(t).unwrap_err();
    named(&e, Status::ModelNotFound, "nosuch");
    assert_ne!(e.request_id, 0);

    // a model name over its field is named by the message's start, not copied whole
    let e = client
        .infer(&"m".repeat(1 << 20), std::slice::from_ref(&x), t)
        .unwrap_err();
    assert_eq!((e.code, e.model.as_str()), (Status::InvalidInput, ""));
    assert!(e.to_string().len() < 200, "{e}");
    // an error of no call names none
    let e = Client::connect("rust_no_such_server", ConnectOptions::default()).unwrap_err();
    assert_eq!(e.model, "");
    assert!(!e.to_string().contains("model"), "{e}");
}

/// The call after an abandoned one (it passed its deadline) waits for the late answer up to its
/// own deadline (DEADLINE_EXCEEDED, still with the server), then sends its own request and reads
/// its own answer, never the late one (spec 7.5). A server hung (10.3) meanwhile fails it
/// SERVER_UNAVAILABLE after `connect_timeout`: a call without a deadline waited for ever, its
/// request not even sent.
#[test]
fn the_call_after_an_abandoned_one_waits_for_the_late_answer_but_not_for_a_hung_server() {
    let Some(python) = python() else { return };
    let echo = start_named(&python, "rustabandon");
    let opts = ConnectOptions {
        connect_timeout: Duration::from_millis(50),
        ..ConnectOptions::default()
    };
    let mut client = Client::connect(&echo.1, opts).unwrap();
    let old = [Tensor::from_slice("x", &[1], &[1u8]).unwrap()];
    let x = [Tensor::from_slice("x", &[1], &[7u8]).unwrap()];
    let slow = |ms: i64| InferOptions {
        timeout: Some(Duration::from_millis(20)),
        params: vec![("ms".into(), Param::Int(ms))],
        ..InferOptions::default()
    };
    let e = client.infer_with("sleep", &old, &slow(300)).unwrap_err();
    assert_eq!(e.code, Status::DeadlineExceeded, "{e}");
    // its own answer (the echo of 7), not the late one (the sleep's 1)
    assert_eq!(
        client
            .infer("echo", &x, Some(Duration::from_secs(60)))
            .unwrap(),
        x
    );

    signal(&echo, "STOP"); // it holds the next request as long as this needs; hung a second later
    let e = client.infer_with("sleep", &old, &slow(1)).unwrap_err();
    assert_eq!(e.code, Status::DeadlineExceeded, "{e}");
    let e = client
        .infer("echo", &x, Some(Duration::from_millis(30)))
        .unwrap_err();
    assert_eq!(e.code, Status::DeadlineExceeded, "{e}");
    assert!(
        e.message
            .contains("the previous request on this channel is still with the server"),
        "{e}"
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let e = std::thread::scope(|s| {
        let call = s.spawn(|| {
            let got = client.infer("echo", &x, None);
            let _ = tx.send(());
            got
        });
        // not a timing check: a wait for ever fails here, not at the harness's limit
        let ended = rx.recv_timeout(Duration::from_secs(60)).is_ok();
        resume(&echo);
        let got = call.join().unwrap();
        assert!(
            ended,
            "a call without a deadline still waits for a hung server's late answer"
        );
        got.unwrap_err()
    });
    assert_eq!(e.code, Status::ServerUnavailable, "{e}");
    let pid = echo.0.id();
    for says in [
        format!(
            "shm server {:?} (pid {pid}) is hung: no heartbeat for ",
            echo.1
        ),
        "no beat came within connect_timeout (50 ms)".to_string(),
        "the previous request on this channel (a call that passed its deadline) is still with it"
            .to_string(),
    ] {
        assert!(e.message.contains(&says), "{e}");
    }
    // resumed: its late answer in, then the call's own
    assert_eq!(
        client
            .infer("echo", &x, Some(Duration::from_secs(60)))
            .unwrap(),
        x
    );
}

/// The wait for an abandoned call's late answer, a slice at a time, never looked at the server's
/// liveness (each slice ended at its own deadline, looked at first): a server killed meanwhile
/// was found "hung" a second and `connect_timeout` later, not gone within a slice; with a spin
/// window of a whole slice (as here) it also spun every slice. It spins once, and looks.
#[test]
fn the_wait_for_a_late_answer_finds_a_killed_server_gone() {
    let Some(python) = python() else { return };
    let mut echo = start_named(&python, "rustspin");
    let opts = ConnectOptions {
        connect_timeout: Duration::from_millis(500),
        spin: Duration::from_secs(1),
        ..ConnectOptions::default()
    };
    let mut client = Client::connect(&echo.1, opts).unwrap();
    let old = [Tensor::from_slice("x", &[1], &[1u8]).unwrap()];
    let x = [Tensor::from_slice("x", &[1], &[7u8]).unwrap()];
    let slow = InferOptions {
        timeout: Some(Duration::from_millis(20)),
        params: vec![("ms".into(), Param::Int(60_000))],
        ..InferOptions::default()
    };
    let e = client.infer_with("sleep", &old, &slow).unwrap_err();
    assert_eq!(e.code, Status::DeadlineExceeded, "{e}");
    let pid = echo.0.id();
    let e = std::thread::scope(|s| {
        let call = s.spawn(|| client.infer("echo", &x, None));
        // it waits for the late answer (the server sleeps 60 s)
        std::thread::sleep(Duration::from_millis(200));
        echo.0.kill().unwrap();
        echo.0.wait().unwrap();
        call.join().unwrap().unwrap_err()
    });
    drop(client);
    for entry in std::fs::read_dir("/dev/shm").unwrap().flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.starts_with(&format!("fdn-{}", echo.1))
            || file.starts_with(&format!("sem.fdn-{}", echo.1))
        {
            let _ = std::fs::remove_file(entry.path()); // what the killed server left
        }
    }
    assert_eq!(e.code, Status::ServerUnavailable, "{e}");
    let gone = format!("shm server {:?} (pid {pid}) is gone", echo.1);
    assert!(e.message.contains(&gone), "{e}");
}
