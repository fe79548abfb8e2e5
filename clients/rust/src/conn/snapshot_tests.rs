//! The response decode against a server that rewrites the response area while the client reads
//! it: a second thread flips the area between two valid responses (and a header whose
//! `payload_size` points far past the area) while the client snapshots and decodes it. Every
//! decode must be one of the two responses whole, or a typed error: never a panic, never a mix.

use super::round_trip::{copy_data, snapshot_response};
use crate::codec::{self, layout, write_response, Limits, ResponseFields};
use crate::error::Status;
use crate::layout as l;
use crate::shm::{self, Mapping};
use crate::tensor::DataType;
use std::sync::atomic::{AtomicBool, Ordering};

const AREA: usize = 16384;

fn response(rid: u64, specs: &[(&str, DataType, &[u64])], text: &str, params: &[u8]) -> Vec<u8> {
    let payload = l::response_payload_size(specs.len(), text.len(), params.len());
    let (refs, _) = layout(specs, payload).unwrap();
    let mut area = vec![0u8; AREA];
    for (k, r) in refs.iter().enumerate() {
        area[r.data_offset..r.data_offset + r.data_size].fill(k as u8 + 1);
    }
    let f = ResponseFields {
        request_id: rid,
        model: "m".into(),
        outputs: refs,
        text: text.as_bytes().to_vec(),
        params: params.to_vec(),
        ..ResponseFields::default()
    };
    write_response(&mut area, &f).unwrap();
    area
}

#[test]
fn a_response_rewritten_while_it_is_decoded_is_one_version_or_an_error() {
    let a = response(7, &[("a", DataType::Fp32, &[4])], "alpha", b"");
    let b = response(
        7,
        &[
            ("bb", DataType::Uint8, &[3000]),
            ("c", DataType::Int64, &[2, 2]),
        ],
        "",
        br#"{"k":1}"#,
    );
    let mut huge = a.clone();
    huge[l::msg::PAYLOAD_SIZE..l::msg::PAYLOAD_SIZE + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let want_a = codec::decode_response(&a, &Limits::default()).unwrap();
    let want_b = codec::decode_response(&b, &Limits::default()).unwrap();
    let name = format!("/fdn_test_flip_{}", std::process::id());
    let map = Mapping::create(&name, AREA, 0o600).unwrap();
    let _ = shm::unlink(&name);
    map.write_bytes(0, &a);
    let stop = AtomicBool::new(false);
    let iters = std::env::var("FDN_FLIP_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let (mut ok_a, mut ok_b, mut errs) = (0u64, 0u64, 0u64);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let src = match k % 3 {
                    0 => &a,
                    1 => &b,
                    _ => &huge,
                };
                // header and payload only, so data offsets keep pointing at data
                map.write_bytes(0, &src[..1024]);
                k += 1;
            }
        });
        let mut snap = Vec::new();
        for _ in 0..iters {
            snapshot_response(&map, 0, AREA, &mut snap);
            let mut no_crc = |_: &[codec::TensorRef], c: u32| c;
            match codec::decode_response_msg(&snap, AREA, &Limits::default(), &mut no_crc) {
                Ok(dec) => {
                    let data = copy_data(&map, 0, AREA, &dec.outputs, 7).unwrap();
                    for (r, d) in dec.outputs.iter().zip(&data) {
                        assert_eq!(d.len(), r.data_size);
                    }
                    if dec == want_a {
                        ok_a += 1;
                    } else if dec == want_b {
                        ok_b += 1;
                    } else {
                        panic!("a decode mixed two responses: {dec:?}");
                    }
                }
                Err(e) => {
                    assert!(
                        matches!(
                            e.code,
                            Status::BadChecksum | Status::InvalidInput | Status::TooLarge
                        ),
                        "{e}"
                    );
                    errs += 1;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    eprintln!("flip: {ok_a} x A, {ok_b} x B, {errs} refused");
}
