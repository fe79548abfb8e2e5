//! The codec's unit tests: round trips, the spec's error statuses, name limits.

use super::*;

fn request(params: Vec<u8>) -> (Vec<u8>, RequestFields) {
    let shape = [2u64, 3];
    let payload = l::request_payload_size(1, 1, params.len());
    let (refs, end) = layout(&[("x", DataType::Fp32, &shape)], payload).unwrap();
    assert_eq!(refs[0].data_offset % l::DATA_ALIGN, 0);
    let mut area = vec![0u8; l::align(end, l::PAGE)];
    area[refs[0].data_offset..refs[0].data_offset + 24].fill(7);
    let fields = RequestFields {
        kind: l::KIND_INFER_REQUEST,
        request_id: 42,
        model: "m".into(),
        version: "3".into(),
        deadline_ns: 99,
        inputs: refs,
        outputs: vec!["y".into()],
        params,
        ..RequestFields::default()
    };
    write_request(&mut area, &fields).unwrap();
    (area, fields)
}

#[test]
fn request_round_trip_with_params() {
    let params = encode_params(&[
        ("z".into(), Param::Bool(true)),
        ("a".into(), Param::Float(0.25)),
        ("m".into(), Param::Str("é\"".into())),
        ("n".into(), Param::Int(-3)),
    ])
    .unwrap();
    assert_eq!(
        std::str::from_utf8(&params).unwrap(),
        r#"{"a":0.25,"m":"\u00e9\"","n":-3,"z":true}"#
    );
    let (area, fields) = request(params);
    let d = decode_request(&area, &Limits::default()).unwrap();
    assert_eq!(
        (d.request_id, d.model.as_str(), d.version.as_str()),
        (42, "m", "3")
    );
    assert_eq!(
        (d.deadline_ns, d.outputs.clone()),
        (99, vec!["y".to_string()])
    );
    assert_eq!(d.inputs, fields.inputs);
    assert_eq!(d.params.len(), 4);
    assert!(d.inputs[0].bytes(&area).iter().all(|&b| b == 7));
}

#[test]
fn checks_fail_with_the_spec_status() {
    let (mut area, _) = request(Vec::new());
    let limits = Limits::default();
    area[l::MSG_HEADER_SIZE + 1] ^= 1; // a payload byte: the CRC no longer matches
    assert_eq!(
        decode_request(&area, &limits).unwrap_err().code,
        Status::BadChecksum
    );
    let (mut area, _) = request(Vec::new());
    area[0] = 0;
    let e = decode_request(&area, &limits).unwrap_err();
    assert_eq!((e.code, e.request_id), (Status::BadMagic, 42));
    let tight = Limits {
        max_bytes: 10,
        ..limits
    };
    let (area, _) = request(Vec::new());
    assert_eq!(
        decode_request(&area, &tight).unwrap_err().code,
        Status::TooLarge
    );
    // A response is not a request.
    assert_eq!(
        decode_response(&area, &limits).unwrap_err().code,
        Status::InvalidInput
    );
}

#[test]
fn names_must_fit() {
    let long = "n".repeat(64);
    let mut area = vec![0u8; 4096];
    let fields = RequestFields {
        kind: 1,
        model: long,
        ..RequestFields::default()
    };
    assert_eq!(
        write_request(&mut area, &fields).unwrap_err().code,
        Status::InvalidInput
    );
    let fields = RequestFields {
        kind: 1,
        model: "a\0b".into(),
        ..RequestFields::default()
    };
    assert_eq!(
        write_request(&mut area, &fields).unwrap_err().code,
        Status::InvalidInput
    );
    let small = &mut [0u8; 100][..];
    let fields = RequestFields {
        kind: 1,
        model: "m".into(),
        ..RequestFields::default()
    };
    assert_eq!(
        write_request(small, &fields).unwrap_err().code,
        Status::TooLarge
    );
}

/// Tensors that together pass isize::MAX bytes: each was under the per-tensor cap, and the sum
/// of offsets overflowed (a panic in debug, a wrapped small end in release: a loan then fitted
/// the area and `input_mut` panicked).
#[test]
fn layout_refuses_tensors_that_together_pass_isize_max() {
    let shape = [(isize::MAX as u64) / 2];
    let specs = vec![("a", DataType::Uint8, &shape[..]); 4];
    let got = std::panic::catch_unwind(|| layout(&specs, l::request_payload_size(4, 0, 0)));
    let e = got.expect("layout panicked").unwrap_err();
    assert_eq!(e.code, Status::TooLarge);
    let (refs, end) = layout(&specs[..1], l::request_payload_size(1, 0, 0)).unwrap();
    assert_eq!(
        (refs[0].data_offset, end),
        (448, l::align(448 + shape[0] as usize, 64))
    );
}
