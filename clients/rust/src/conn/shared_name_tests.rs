//! Two clients of one process and a data segment name after a server restart (spec 10.1 step 6):
//! a server restarted under the name starts its channels' `data_gen` again, so a client claiming
//! channel `i` of the new server makes the name another client of the process still holds on the
//! dead server's channel `i`. Runs only when `FDN_TEST_PYTHON` names a Python with
//! foundation_shm installed.

use super::tests::{python_server, signal, Echo};
use crate::{Client, ConnectOptions, DataType, Tensor, TensorSpec};
use std::time::Duration;

const LONG: Option<Duration> = Some(Duration::from_secs(30));

fn echo(prefix: &str) -> Option<Echo> {
    python_server(prefix, &["-m", "foundation_shm._echo"], &[])
}

fn int(v: i32) -> Vec<Tensor> {
    vec![Tensor::from_slice("x", &[1], &[v]).unwrap()]
}

/// A on channel 0, B on channel 1; the server killed, B's call fails, and B begins a loan once a
/// server is restarted under the name: B claims channel 0, whose segment name (server, index, pid,
/// generation 1) A still holds on the dead server's region, and replaces A's segment. A, dropping
/// its dead connection as its next call is sent again, unlinked that name, B's segment by then:
/// the server parked B's channel and B's loan call ran into its deadline (DEADLINE_EXCEEDED). A
/// client unlinks a name only while the segment is still its own.
#[test]
fn a_client_leaves_a_segment_name_another_client_of_its_process_made_since() {
    let Some(srv) = echo("rustnames") else {
        return;
    };
    let mut a = Client::connect(&srv.1, ConnectOptions::default()).unwrap();
    let mut b = Client::connect(&srv.1, ConnectOptions::default()).unwrap();
    assert_eq!((a.channel(), b.channel()), (Some(0), Some(1)));
    assert_eq!(a.infer("echo", &int(1), LONG).unwrap(), int(1));
    assert_eq!(b.infer("echo", &int(2), LONG).unwrap(), int(2));
    signal(&srv, "KILL");
    drop(srv);
    assert!(
        b.infer("echo", &int(3), LONG).is_err(),
        "B's call, no server"
    );
    let _srv = echo("rustnames").unwrap();
    let specs = [TensorSpec::new("x", DataType::Int32, &[1])];
    let mut loan = b.loan("echo", &specs).unwrap(); // B connects: channel 0 of the new server
    let answer = a.infer("echo", &int(4), LONG);
    assert_eq!(
        answer.map_err(|e| e.message),
        Ok(int(4)),
        "A's call, sent again"
    );
    loan.input_as_mut::<i32>(0).unwrap()[0] = 7;
    let got = loan.infer(Some(Duration::from_secs(10)));
    assert_eq!(
        got.map_err(|e| (e.code, e.message)),
        Ok(int(7)),
        "B's loan call"
    );
}
