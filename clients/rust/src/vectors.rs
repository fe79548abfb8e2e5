//! The protocol's test vectors (docs/protocol/vectors, spec section 14): decode each `NAME.bin`
//! and compare with `NAME.json`, then re-encode the decoded fields and compare byte for byte.

mod fields;

use crate::codec::{self, Limits, RequestFields, ResponseFields};
use crate::json::{self, Value};
use crate::layout as l;
use fields::{num, place, same, specs_of, str_of, tensors_json, u64_of};
use std::path::Path;

/// Names of the vectors passed, and (name, why) of those failed.
pub type Outcome = (Vec<String>, Vec<(String, String)>);

/// The area a vector's file stands for (spec 14): the file, then spaces up to `size`. Only the
/// file of an area over 64 KiB is shorter, and it stops before all the spaces that end it; any
/// other short file is a broken copy, not an area ending in spaces.
fn area_of(mut file: Vec<u8>, size: u64) -> Result<Vec<u8>, String> {
    let n = file.len();
    if size < n as u64 {
        return Err(format!("size {size} < file size {n}"));
    }
    if size > n as u64 {
        if size <= 1 << 16 {
            return Err(format!(
                "the file has {n} bytes of an area of {size} (only one over 64 KiB may leave out its spaces)"
            ));
        }
        if file.last() == Some(&b' ') {
            return Err(format!(
                "the file of {n} bytes ends in a space (it stops before all the spaces ending the area)"
            ));
        }
        let size = usize::try_from(size).map_err(|_| format!("an area of {size} bytes"))?;
        file.resize(size, b' ');
    }
    Ok(file)
}

/// Check one vector given its JSON file; `Err` says what differs.
pub fn check(json_path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(json_path).map_err(|e| e.to_string())?;
    let doc = json::parse(&text)?;
    let bin = std::fs::read(json_path.with_extension("bin")).map_err(|e| e.to_string())?;
    let expect = doc.get("expect").ok_or("no expect")?;
    let as_request = match doc.get("decode_as").and_then(Value::as_str) {
        Some("request") => true,
        Some("response") => false,
        other => return Err(format!("bad decode_as {other:?}")),
    };
    let size = doc.get("size").and_then(Value::as_u64).ok_or("no size")?;
    let bin = area_of(bin, size)?;
    let limits = Limits::default();
    if let Some(code) = expect.get("error_code").and_then(Value::as_u64) {
        return check_error(&bin, as_request, code, expect, &limits);
    }
    let params_expect: Vec<(String, Value)> = expect
        .get("params")
        .and_then(Value::as_object)
        .ok_or("no params")?
        .to_vec();
    let mut area = vec![0u8; bin.len()];
    if as_request {
        check_request(&bin, expect, params_expect, &limits, &mut area)?;
    } else {
        check_response(&bin, expect, params_expect, &limits, &mut area)?;
    }
    // Spec 14: request_* and response_* vectors are re-encoded; decode_* ones set fields a
    // decoder ignores (section 5), which an encoder writes 0, so they are decoded only.
    let name = json_path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let reencodes = name.starts_with("request_") || name.starts_with("response_");
    if reencodes && area != bin {
        let at = area.iter().zip(&bin).position(|(a, b)| a != b).unwrap_or(0);
        return Err(format!(
            "re-encoded bytes differ from the file at offset {at}"
        ));
    }
    Ok(())
}

/// A vector that must fail: the decoder fails with `code`, carrying the expected request id.
fn check_error(
    bin: &[u8],
    as_request: bool,
    code: u64,
    expect: &Value,
    limits: &Limits,
) -> Result<(), String> {
    let got = if as_request {
        codec::decode_request(bin, limits).map(|_| ())
    } else {
        codec::decode_response(bin, limits).map(|_| ())
    };
    match got {
        Ok(()) => Err(format!("decoded, expected error {code}")),
        Err(e) if u64::from(e.code.code()) != code => {
            Err(format!("got {e}, expected error {code}"))
        }
        Err(e) if expect.get("error").and_then(Value::as_str) != Some(e.code.name()) => {
            Err(format!("got {e}, expected error {:?}", expect.get("error")))
        }
        Err(e) if Some(e.request_id) != expect.get("request_id").and_then(Value::as_u64) => {
            Err(format!("error has request_id {}", e.request_id))
        }
        Err(_) => Ok(()),
    }
}

/// The decoded fields must be the expected ones.
fn same_as_expected(got: &Value, expect: &Value) -> Result<(), String> {
    if !same(got, expect) {
        return Err(format!(
            "decoded {} != expected {}",
            got.to_json(),
            expect.to_json()
        ));
    }
    Ok(())
}

/// A request vector: it decodes to `expect`, and `expect`'s fields encode into `area`.
fn check_request(
    bin: &[u8],
    expect: &Value,
    params_expect: Vec<(String, Value)>,
    limits: &Limits,
    area: &mut [u8],
) -> Result<(), String> {
    let d = codec::decode_request(bin, limits).map_err(|e| format!("decode: {e}"))?;
    let got = Value::Object(vec![
        ("deadline_ns".into(), num(d.deadline_ns)),
        ("flags".into(), num(d.flags)),
        ("inputs".into(), tensors_json(&d.inputs, bin)),
        ("kind".into(), num(d.kind)),
        ("model".into(), Value::String(d.model.clone())),
        (
            "outputs".into(),
            Value::Array(d.outputs.iter().cloned().map(Value::String).collect()),
        ),
        ("params".into(), Value::Object(d.params.clone())),
        ("request_id".into(), num(d.request_id)),
        ("version".into(), Value::String(d.version.clone())),
    ]);
    same_as_expected(&got, expect)?;
    // Encode from the expected fields.
    let specs = specs_of(expect, "inputs")?;
    let outputs: Vec<String> = expect
        .get("outputs")
        .and_then(Value::as_array)
        .ok_or("no outputs")?
        .iter()
        .map(|v| v.as_str().map(str::to_string).ok_or("bad output"))
        .collect::<Result<_, _>>()?;
    let params = codec::encode_params_json(params_expect);
    let payload = l::request_payload_size(specs.len(), outputs.len(), params.len());
    let inputs = place(&specs, payload, area)?;
    let fields = RequestFields {
        kind: u64_of(expect, "kind")? as u16,
        request_id: u64_of(expect, "request_id")?,
        flags: u64_of(expect, "flags")? as u32,
        model: str_of(expect, "model")?.into(),
        version: str_of(expect, "version")?.into(),
        deadline_ns: u64_of(expect, "deadline_ns")?,
        inputs,
        outputs,
        params,
    };
    codec::write_request(area, &fields).map_err(|e| format!("encode: {e}"))?;
    Ok(())
}

/// A response vector: it decodes to `expect`, and `expect`'s fields encode into `area`.
fn check_response(
    bin: &[u8],
    expect: &Value,
    params_expect: Vec<(String, Value)>,
    limits: &Limits,
    area: &mut [u8],
) -> Result<(), String> {
    let d = codec::decode_response(bin, limits).map_err(|e| format!("decode: {e}"))?;
    let got = Value::Object(vec![
        ("flags".into(), num(d.flags)),
        ("kind".into(), num(l::KIND_RESPONSE)),
        ("model".into(), Value::String(d.model.clone())),
        ("outputs".into(), tensors_json(&d.outputs, bin)),
        ("params".into(), Value::Object(d.params.clone())),
        ("request_id".into(), num(d.request_id)),
        ("required_bytes".into(), num(d.required_bytes)),
        ("status".into(), num(d.status)),
        (
            "status_name".into(),
            Value::String(crate::Status::from_code(d.status).name().into()),
        ),
        ("text".into(), Value::String(d.text.clone())),
        ("version".into(), Value::String(d.version.clone())),
    ]);
    same_as_expected(&got, expect)?;
    let specs = specs_of(expect, "outputs")?;
    let text = str_of(expect, "text")?.as_bytes().to_vec();
    let params = codec::encode_params_json(params_expect);
    let payload = l::response_payload_size(specs.len(), text.len(), params.len());
    let outputs = place(&specs, payload, area)?;
    let fields = ResponseFields {
        request_id: u64_of(expect, "request_id")?,
        flags: u64_of(expect, "flags")? as u32,
        status: u64_of(expect, "status")? as u32,
        model: str_of(expect, "model")?.into(),
        version: str_of(expect, "version")?.into(),
        outputs,
        text,
        params,
        required_bytes: u64_of(expect, "required_bytes")?,
    };
    codec::write_response(area, &fields).map_err(|e| format!("encode: {e}"))?;
    Ok(())
}

/// Check every `*.json` vector in `dir`: (names passed, (name, why) failed).
pub fn check_dir(dir: &Path) -> std::io::Result<Outcome> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    let (mut passed, mut failed) = (Vec::new(), Vec::new());
    for p in paths {
        let name = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        match check(&p) {
            Ok(()) => passed.push(name),
            Err(why) => failed.push((name, why)),
        }
    }
    Ok((passed, failed))
}
