//! Against the Python echo server (`python -m foundation_shm._echo`): runs only when
//! `FDN_TEST_PYTHON` names a Python with foundation_shm installed (e.g. `$PWD/../../.venv/bin/python`).
//! Every datatype round-trips; parameters, deadlines, handler errors and the busy channel behave.

use fdn::{Client, ConnectOptions, DataType, InferOptions, Param, Status, Tensor};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Echo(Child, String);

impl Drop for Echo {
    fn drop(&mut self) {
        // SIGTERM via kill(1): the echo server then stops cleanly and unlinks its objects.
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn start(python: &str) -> Echo {
    let mut name = format!("rustecho_{}", std::process::id());
    name.push_str(&"_".repeat(fdn::layout::SERVER_NAME_MAX - name.len())); // the longest name
    let mut child = Command::new(python)
        .args(["-m", "foundation_shm._echo", &name])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the echo server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    Echo(child, name)
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
    // numpy has no bfloat16 or opaque bytes: the Python server answers them as UINT16 / UINT8
    // (docs/protocol/shm.md section 6).
    let mut expect = inputs.clone();
    for t in &mut expect {
        t.datatype = match t.datatype {
            DataType::Bf16 => DataType::Uint16,
            DataType::Bytes => DataType::Uint8,
            d => d,
        };
    }
    assert_eq!(out, expect);

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
    let started = Instant::now();
    let e = client
        .infer_with("sleep", std::slice::from_ref(&x), &slow)
        .unwrap_err();
    assert_eq!(e.code, Status::DeadlineExceeded, "{e}");
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
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
