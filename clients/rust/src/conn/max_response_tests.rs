//! `ConnectOptions::max_response_bytes` (spec 10.1 "Growing", 11, 13) against
//! clients/tests/sized_server.py, whose model `sized` answers `n` zero bytes (a TOO_LARGE answer
//! asks for what they need) and `tib` the same but asks for 1 TiB, as a hostile or broken server
//! may; its `default_capacity` is 64 pages. Runs only when `FDN_TEST_PYTHON` names a Python with
//! foundation_shm installed. A TOO_LARGE answer made the client grow its response area to
//! whatever `required_bytes` said (a 1 TiB segment tried, limited only by /dev/shm), as did the
//! region's `default_capacity` at each claim.

use super::tests::{base, python_server, region, Echo};
use crate::layout::channel as ch;
use crate::shm::Mapping;
use crate::{Client, ConnectOptions, InferOptions, Param, Status, Tensor};
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

const PAGE: usize = 4096;

fn sized_server(prefix: &str) -> Option<Echo> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/sized_server.py");
    python_server(prefix, &[script], &[])
}

/// A call to `model` of the sized server answering `n` zero bytes: their count, or the error.
fn sized(client: &mut Client, model: &str, n: usize) -> crate::Result<usize> {
    let x = [Tensor::from_slice("x", &[4], &[1f32, 2., 3., 4.]).unwrap()];
    let options = InferOptions {
        timeout: Some(Duration::from_secs(10)),
        params: vec![("n".to_string(), Param::Int(n as i64))],
        ..InferOptions::default()
    };
    let outputs = client.infer_with(model, &x, &options)?;
    assert_eq!(outputs.len(), 1);
    assert!(outputs[0].data.iter().all(|&b| b == 0));
    Ok(outputs[0].data.len())
}

/// What channel `i` says of its data segment: generation, request and response capacity, name.
fn segment(ctl: &Mapping, i: usize) -> (u64, u64, u64, Vec<u8>) {
    let mut name = Vec::new();
    ctl.append_to(base(i) + ch::DATA_NAME, 64, &mut name);
    (
        ctl.u64(base(i) + ch::DATA_GEN).load(SeqCst),
        ctl.u64(base(i) + ch::REQUEST_CAPACITY).load(SeqCst),
        ctl.u64(base(i) + ch::RESPONSE_CAPACITY).load(SeqCst),
        name,
    )
}

fn connect(name: &str, capacity: Option<usize>, max: usize) -> (Client, usize) {
    let opts = ConnectOptions {
        capacity,
        max_response_bytes: max,
        ..ConnectOptions::default()
    };
    let client = Client::connect(name, opts).unwrap();
    let i = client.channel().unwrap();
    (client, i)
}

/// Up to `max_response_bytes` the response area grows and the call is sent again; past it the
/// call fails TOO_LARGE naming the bytes, the limit and the option, the segment is left as it
/// was, and the client serves its next call.
#[test]
fn a_response_over_max_response_bytes_is_too_large_and_the_area_is_not_grown() {
    let Some(server) = sized_server("rustszgrow") else {
        return;
    };
    let ctl = region(&server.1);
    let (mut client, i) = connect(&server.1, Some(4 * PAGE), 8 * PAGE);
    assert_eq!(sized(&mut client, "sized", 6 * PAGE).unwrap(), 6 * PAGE);
    let grown = segment(&ctl, i);
    assert!(
        6 * PAGE < grown.2 as usize && grown.2 as usize <= 8 * PAGE,
        "{grown:?}"
    );
    let e = sized(&mut client, "sized", 16 * PAGE).unwrap_err();
    assert_eq!(e.code, Status::TooLarge, "{e}");
    assert_eq!(
        (e.model.as_str(), e.request_id != 0),
        ("sized", true),
        "{e}"
    );
    let needs: usize = e
        .message
        .strip_prefix("the response needs ")
        .and_then(|m| m.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the bytes it needs: {e}"));
    assert!(needs > 16 * PAGE, "{e}");
    assert!(
        e.message.ends_with(
            "more than this client's max_response_bytes (32768): connect with a larger \
             max_response_bytes to take it"
        ),
        "{e}"
    );
    assert_eq!(segment(&ctl, i), grown, "the segment was replaced");
    assert_eq!(sized(&mut client, "sized", 5 * PAGE).unwrap(), 5 * PAGE);
    assert_eq!(
        segment(&ctl, i),
        grown,
        "the next call replaced the segment"
    );
    let x = vec![Tensor::from_slice("x", &[2], &[1i32, 2]).unwrap()];
    assert_eq!(
        client
            .infer("echo", &x, Some(Duration::from_secs(10)))
            .unwrap(),
        x
    );
}

/// A server asking 1 TiB for its response: the client tried a data segment that large. With the
/// default options it refuses anything over 4 GiB, replacing nothing.
#[test]
fn a_server_asking_a_tib_for_its_response_gets_too_large_not_a_tib() {
    let Some(server) = sized_server("rustsztib") else {
        return;
    };
    let ctl = region(&server.1);
    let mut client = Client::connect(&server.1, ConnectOptions::default()).unwrap();
    let i = client.channel().unwrap();
    let before = segment(&ctl, i);
    let e = sized(&mut client, "tib", 2 << 20).unwrap_err();
    assert_eq!(e.code, Status::TooLarge, "{e}");
    assert_eq!(
        e.message,
        "the response needs 1099511627776 bytes, more than this client's max_response_bytes \
         (4294967296): connect with a larger max_response_bytes to take it"
    );
    assert_eq!(segment(&ctl, i), before, "the segment was replaced");
    assert_eq!(sized(&mut client, "tib", 8).unwrap(), 8);
}

/// The areas of a claim were the server's `default_capacity` (a header word): a server could
/// have every claim reserve what `max_response_bytes` refuses to grow to. A client takes at
/// most `max_response_bytes` (in pages); a request larger than the areas grows the response
/// area as large, but not past it either.
#[test]
fn default_capacity_and_request_growth_stop_at_max_response_bytes() {
    let Some(server) = sized_server("rustszcap") else {
        return;
    };
    let ctl = region(&server.1);
    let (mut client, i) = connect(&server.1, None, 3 * PAGE + 1); // default_capacity: 64 pages
    let (_, req, resp, _) = segment(&ctl, i);
    assert_eq!((req, resp), (4 * PAGE as u64, 4 * PAGE as u64));
    assert_eq!(sized(&mut client, "sized", 8).unwrap(), 8);
    drop(client);

    let (mut client, i) = connect(&server.1, Some(PAGE), 4 * PAGE);
    let x = [Tensor::from_slice("x", &[16 * PAGE as u64], &vec![0u8; 16 * PAGE]).unwrap()];
    let options = InferOptions {
        params: vec![("n".to_string(), Param::Int(8))],
        ..InferOptions::default()
    };
    assert_eq!(
        client.infer_with("sized", &x, &options).unwrap()[0]
            .data
            .len(),
        8
    );
    let (_, req, resp, _) = segment(&ctl, i);
    assert!(
        req as usize > 16 * PAGE && resp as usize == 4 * PAGE,
        "{req}+{resp}"
    );
}

/// A `capacity` over `max_response_bytes` is refused at connect by name (the response area
/// starts at `capacity`), as is a `max_response_bytes` outside 4096..=2^48; no channel is
/// claimed and no segment left.
#[test]
fn a_capacity_over_max_response_bytes_is_refused_at_connect() {
    let Some(server) = sized_server("rustszopt") else {
        return;
    };
    let refused = |capacity: Option<usize>, max: usize| {
        let opts = ConnectOptions {
            capacity,
            max_response_bytes: max,
            ..ConnectOptions::default()
        };
        let e = Client::connect(&server.1, opts).unwrap_err();
        assert_eq!(e.code, Status::InvalidInput, "{e}");
        e.message
    };
    assert_eq!(
        refused(Some(2 * PAGE), PAGE),
        "capacity (8192 bytes) exceeds max_response_bytes (4096 bytes): the response area \
         starts at capacity; lower capacity or raise max_response_bytes"
    );
    let default = ConnectOptions::default().max_response_bytes;
    assert_eq!(default, crate::MAX_RESPONSE_BYTES);
    assert!(refused(Some(8 << 30), default).contains("exceeds max_response_bytes (4294967296"));
    for max in [0, 100, PAGE - 1, (1 << 48) + 1, usize::MAX] {
        assert_eq!(
            refused(None, max),
            format!("max_response_bytes must be 4096..=2^48 bytes, not {max}")
        );
    }
    let ctl = region(&server.1);
    assert!((0..8).all(|i| ctl.u32(base(i) + ch::OWNER_PID).load(SeqCst) == 0));
    let (mut client, _) = connect(&server.1, Some(PAGE), PAGE);
    assert_eq!(sized(&mut client, "sized", 8).unwrap(), 8);
}
