//! Every test vector of docs/protocol/vectors decodes to its JSON; the request_* and response_* ones re-encode byte for byte.

use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/protocol/vectors")
}

#[test]
fn all_vectors_pass() {
    let (passed, failed) = fdn::vectors::check_dir(&dir()).expect("read the vectors directory");
    assert!(failed.is_empty(), "failed vectors: {failed:#?}");
    assert!(
        passed.len() >= 20,
        "only {} vectors found in {}",
        passed.len(),
        dir().display()
    );
}

#[test]
fn cuda_ipc_vectors_pass() {
    // Section 15's descriptors: the codec decodes and re-encodes them (the client itself sends
    // and accepts HOST tensors only).
    let (passed, failed) = fdn::vectors::check_dir(&dir().join("cuda_ipc"))
        .expect("read docs/protocol/vectors/cuda_ipc");
    assert!(failed.is_empty(), "failed vectors: {failed:#?}");
    assert!(passed.len() >= 6, "only {} CUDA IPC vectors", passed.len());
}

#[test]
fn each_vector_by_name() {
    for name in [
        "request_fp32",
        "request_multi",
        "response_ok",
        "response_too_large",
        "error_bad_checksum",
    ] {
        fdn::vectors::check(&dir().join(format!("{name}.json")))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
