//! Against a real Python server: runs only when `FDN_TEST_FOUNDATION` names the `foundation`
//! command (e.g. `FDN_TEST_FOUNDATION=$PWD/../../.venv/bin/foundation cargo test`); otherwise
//! it passes without doing anything. The project's pytest harness (clients/tests) drives the
//! `fdn-client` example the same way, and compares outputs with a direct PyTorch call.

use fdn::{Client, ConnectOptions, DataType, Status, Tensor, TensorSpec};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    foundation: String,
    name: String,
}

impl Server {
    fn start(foundation: &str) -> Server {
        let name = format!("rusttest_{}", std::process::id());
        let child = Command::new(foundation)
            .args(["serve", "--transport", "shm", "--name", &name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start foundation serve");
        Server {
            child,
            foundation: foundation.to_string(),
            name,
        }
    }

    fn connect(&self) -> Client {
        let started = Instant::now();
        loop {
            match Client::connect(&self.name, ConnectOptions::default()) {
                Ok(c) => return c,
                Err(e) if started.elapsed() < Duration::from_secs(90) => {
                    assert_eq!(e.code, Status::ServerUnavailable, "{e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("the server did not come up: {e}"),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new(&self.foundation)
            .args(["shm", "clean"])
            .stdout(Stdio::null())
            .status();
    }
}

#[test]
fn demo_model_errors_and_dead_server() {
    let Ok(foundation) = std::env::var("FDN_TEST_FOUNDATION") else {
        eprintln!("FDN_TEST_FOUNDATION not set: skipping the tests against a real server");
        return;
    };
    let mut server = Server::start(&foundation);
    let mut client = server.connect();
    let timeout = Some(Duration::from_secs(5));
    let values: Vec<f32> = (0..2 * 784)
        .map(|i| ((i % 17) as f32 - 8.0) / 8.0)
        .collect();
    let x = Tensor::from_slice("x", &[2, 784], &values).unwrap();

    let out = client
        .infer("demo", std::slice::from_ref(&x), timeout)
        .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(
        (
            out[0].name.as_str(),
            out[0].datatype,
            out[0].shape.as_slice()
        ),
        ("y", DataType::Fp32, &[2u64, 10][..])
    );
    let y: Vec<f32> = out[0].to_vec().unwrap();
    assert!(y.iter().all(|v| v.is_finite()));

    // The loan gives the same outputs, repeatedly.
    {
        let mut loan = client
            .loan("demo", &[TensorSpec::new("x", DataType::Fp32, &[2, 784])])
            .unwrap();
        loan.input_as_mut::<f32>(0)
            .unwrap()
            .copy_from_slice(&values);
        for _ in 0..3 {
            assert_eq!(loan.infer(timeout).unwrap(), out);
        }
    }
    // A request larger than the default 1 MiB area: the channel grows.
    let big: Vec<f32> = (0..400 * 784).map(|i| (i % 5) as f32).collect();
    let out_big = client
        .infer(
            "demo",
            &[Tensor::from_slice("x", &[400, 784], &big).unwrap()],
            timeout,
        )
        .unwrap();
    assert_eq!(out_big[0].shape, vec![400, 10]);

    let e = client
        .infer("nope", std::slice::from_ref(&x), timeout)
        .unwrap_err();
    assert_eq!(e.code, Status::ModelNotFound, "{e}");
    let bad = Tensor::from_slice("x", &[2, 10], &[0f32; 20]).unwrap();
    let e = client.infer("demo", &[bad], timeout).unwrap_err();
    assert_eq!(e.code, Status::InvalidInput, "{e}");
    assert!(client.metadata("demo", timeout).unwrap().contains("\"x\""));
    assert!(
        client
            .infer("demo", std::slice::from_ref(&x), timeout)
            .is_ok(),
        "errors leave the channel usable"
    );

    // A second client gets its own channel.
    let mut other = server.connect();
    assert_ne!(other.channel(), client.channel());
    assert_eq!(
        other
            .infer("demo", std::slice::from_ref(&x), timeout)
            .unwrap(),
        out
    );
    drop(other);

    // A dead server is reported within the deadline, not as a hang.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let started = Instant::now();
    let e = client
        .infer("demo", &[x], Some(Duration::from_secs(3)))
        .unwrap_err();
    assert_eq!(e.code, Status::ServerUnavailable, "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
}
