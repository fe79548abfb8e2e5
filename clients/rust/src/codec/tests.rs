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

/// An empty shape beyond 2^63 - 1 bytes over its nonzero dimensions holds no bytes, yet every
/// decoder refuses it (section 8 step 7): it was laid out (a loan of it granted) and sent, for
/// the server to refuse every call.
#[test]
fn layout_refuses_an_empty_shape_no_decoder_takes() {
    let payload = l::request_payload_size(2, 0, 0);
    for shape in [&[0, 1u64 << 63][..], &[1 << 62, 2, 0], &[u64::MAX, 0]] {
        let specs = [
            ("ok", DataType::Uint8, &[1u64][..]),
            ("e", DataType::Uint8, shape),
        ];
        let e = layout(&specs, payload).unwrap_err();
        assert_eq!(e.code, Status::InvalidInput, "{e}");
        assert_eq!(
            e.message,
            format!("tensor \"e\": shape {shape:?} of UINT8 is beyond 2^63 - 1 bytes over its nonzero dimensions")
        );
    }
    let widest = [("e", DataType::Fp32, &[0, (i64::MAX as u64) / 4][..])];
    let (refs, _) = layout(&widest, l::request_payload_size(1, 0, 0)).unwrap();
    assert_eq!(refs[0].data_size, 0);
}

/// Section 8 step 10 (I-JSON), beyond the vectors: numbers at their edges, surrogates, names
/// compared once unescaped; and the encoder refuses what the decoder would.
#[test]
fn params_are_i_json() {
    let cases: &[(&str, bool)] = &[
        (
            r#"{"a":9007199254740991,"b":-9007199254740991,"c":-0}"#,
            true,
        ),
        (r#"{"a":9007199254740992}"#, false),
        (r#"{"a":-10000000000000000}"#, false),
        (
            r#"{"a":9007199254740993.0,"b":1e16,"c":1E+5,"d":0.5e-3}"#,
            true,
        ),
        (r#"{"a":1e-400,"b":0e99999999999999999999}"#, true),
        (r#"{"a":1.7976931348623158e308}"#, true),
        (r#"{"a":1.7976931348623159e308}"#, false),
        (r#"{"a":-1e99999999999999999999}"#, false),
        (r#"{"a":"\ud800\u0041"}"#, false),
        (r#"{"a":"\udfff"}"#, false),
        (r#"{"a":"\ud83d\ude00","\u0000":"\u0000"}"#, true),
        ("{\"a\":\"\\\u{0}\"}", false),
        (r#"{"b":1,"a":2,"b":3}"#, false),
        ("{\"\\u00e9\":1,\"\u{e9}\":2}", false),
        (r#"{"":1,"\u00e9":2,"e":3}"#, true),
        (" \t\r\n{ \"a\" : 1 }\n", true),
        ("\u{feff}{\"a\":1}", false),
    ];
    for (raw, want) in cases {
        let got = params::decode_params(raw.as_bytes(), 7);
        assert_eq!(got.is_ok(), *want, "{raw}: {got:?}");
        if let Err(e) = got {
            assert_eq!((e.code, e.request_id), (Status::InvalidInput, 7), "{raw}");
        }
    }
    let max = (1i64 << 53) - 1;
    assert!(encode_params(&[
        ("a".into(), Param::Int(max)),
        ("b".into(), Param::Int(-max))
    ])
    .is_ok());
    for bad in [
        vec![("seed".to_string(), Param::Int(max + 1))],
        vec![("seed".to_string(), Param::Int(-max - 1))],
        vec![("t".to_string(), Param::Float(f64::INFINITY))],
        vec![
            ("a".to_string(), Param::Bool(true)),
            ("a".to_string(), Param::Int(1)),
        ],
    ] {
        let e = encode_params(&bad).unwrap_err();
        assert_eq!(e.code, Status::InvalidInput);
        assert!(
            e.message.contains(&format!("{:?}", bad[0].0)),
            "{}",
            e.message
        );
    }
}
