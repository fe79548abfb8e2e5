//! A long-running process connects and drops clients again and again, through every outcome of a
//! call: descriptors, mappings and data segments come back to where they were. Against the
//! Python echo server: runs only when `FDN_TEST_PYTHON` names a Python with foundation_shm.

use fdn::{Client, ConnectOptions, DataType, InferOptions, Param, Tensor, TensorSpec};
mod common;

use common::start_echo;
use std::time::Duration;

/// This process's open descriptors and its mappings of /dev/shm objects (segments, semaphores).
fn resources() -> (usize, usize) {
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    (fds, maps.matches("/dev/shm/").count())
}

fn data_segments(name: &str) -> usize {
    let prefix = format!("fdn-{name}-d");
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        })
        .count()
}

#[test]
fn connect_call_drop_cycles_leave_nothing() {
    let Ok(python) = std::env::var("FDN_TEST_PYTHON") else {
        eprintln!("FDN_TEST_PYTHON not set: skipping the connect/drop cycles");
        return;
    };
    let echo = start_echo(&python, format!("rustcyc_{}", std::process::id()));

    let t = Some(Duration::from_secs(5));
    let x = Tensor::from_slice("x", &[2], &[1i32, 2]).unwrap();
    let spec = TensorSpec::new("x", DataType::Int32, &[2]);
    let pending = InferOptions {
        timeout: Some(Duration::ZERO), // dropped with its request still with the server
        params: vec![("ms".into(), Param::Int(5))],
        ..Default::default()
    };
    let before = resources();
    for i in 0..200 {
        let mut c = Client::connect(&echo.1, ConnectOptions::default()).unwrap();
        c.infer("echo", std::slice::from_ref(&x), t).unwrap();
        let failed = match i % 4 {
            0 => c
                .infer("no_such_model", std::slice::from_ref(&x), t)
                .is_err(),
            1 => c.infer("fail", std::slice::from_ref(&x), t).is_err(),
            2 => c.loan("echo", std::slice::from_ref(&spec)).is_ok(), // begun, abandoned
            _ => c
                .infer_with("sleep", std::slice::from_ref(&x), &pending)
                .is_err(),
        };
        assert!(failed, "cycle {i}: the call did not go as expected");
    }
    let after = resources();
    assert_eq!(
        after, before,
        "(descriptors, mappings of /dev/shm) after 200 connect/call/drop cycles, and before"
    );
    assert_eq!(data_segments(&echo.1), 0, "data segments left in /dev/shm");
}
