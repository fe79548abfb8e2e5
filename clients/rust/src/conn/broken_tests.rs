//! What no server may answer, against clients/tests/broken_server.py: a CUDA_IPC output to a
//! request without `FDN_FLAG_CUDA_IPC` (spec 15.2) and a status this version does not define
//! (section 9; it gave the server's text alone, the code lost). Each fails the call INTERNAL
//! saying why, and the client serves its next call. A handler's own SERVER_UNAVAILABLE is passed
//! on as it is, as every client does. Runs only when `FDN_TEST_PYTHON` names a Python with
//! foundation_shm installed.

use super::tests::python_server;
use crate::{Client, ConnectOptions, Status, Tensor};
use std::time::Duration;

#[test]
fn what_no_server_may_answer_fails_internal_saying_why() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/broken_server.py");
    let Some(server) = python_server("rustbrk", &[script], &[]) else {
        return;
    };
    let mut client = Client::connect(&server.1, ConnectOptions::default()).unwrap();
    let x = [Tensor::from_slice("x", &[2], &[1i32, 2]).unwrap()];
    let timeout = Some(Duration::from_secs(10));
    for (model, code, message) in [
        (
            "cuda_out",
            Status::Internal,
            "output \"y\" came as a CUDA_IPC descriptor, which this client did not ask for",
        ),
        (
            "unknown_status",
            Status::Internal,
            "unknown error code 99: a status of a later version",
        ),
        (
            "unavailable",
            Status::ServerUnavailable,
            "a server this handler calls is gone",
        ),
    ] {
        let e = client.infer(model, &x, timeout).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str(), e.model.as_str()),
            (code, message, model),
            "{e}"
        );
        assert_ne!(e.request_id, 0, "{e}");
        let y = client.infer("echo", &x, timeout).unwrap();
        assert_eq!(y[0].data, x[0].data, "the call after {model}");
    }
}
