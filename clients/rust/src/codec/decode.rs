//! Decoding: check a request or a response in an area, field by field in the order of
//! docs/protocol/shm.md section 8 (and 15.3 for CUDA_IPC descriptors), failing with the status
//! the spec names.

use super::params::decode_params;
use super::{check_cuda, invalid, message_crc, rd16, rd32, rd64, CudaIpc, Limits, TensorRef};
use crate::error::{Error, Result, Status};
use crate::json::Value;
use crate::layout::{self as l, msg};
use crate::tensor::DataType;

/// A decoded, checked request.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)] // fields as in the spec (sections 5 and 11)
pub struct DecodedRequest {
    pub kind: u16,
    pub request_id: u64,
    pub flags: u32,
    pub model: String,
    pub version: String,
    pub deadline_ns: u64,
    pub inputs: Vec<TensorRef>,
    pub outputs: Vec<String>,
    /// The parameters object's members (empty for none).
    pub params: Vec<(String, Value)>,
}

/// A decoded, checked response (its status may be an error).
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)] // fields as in the spec (sections 5 and 11)
pub struct DecodedResponse {
    pub request_id: u64,
    pub flags: u32,
    pub status: u32,
    pub model: String,
    pub version: String,
    pub outputs: Vec<TensorRef>,
    pub text: String,
    pub params: Vec<(String, Value)>,
    pub required_bytes: u64,
}

/// The fixed text field of `size` bytes at `at`.
fn text_field(area: &[u8], at: usize, size: usize, what: &str, rid: u64) -> Result<String> {
    let raw = &area[at..at + size];
    // spec 8: a fixed string is valid UTF-8 ended by a NUL within its field
    let end = raw.iter().position(|&b| b == 0).ok_or_else(|| {
        invalid(
            format!("{what} has no NUL within its {} bytes", raw.len()),
            rid,
        )
    })?;
    std::str::from_utf8(&raw[..end])
        .map(str::to_string)
        .map_err(|_| invalid(format!("{what} is not valid UTF-8"), rid))
}

/// The area holds at least a header and a body (of a `what`: request or response).
fn check_area(area: &[u8], what: &str) -> Result<()> {
    if area.len() < l::MSG_HEADER_SIZE + l::BODY_SIZE {
        return Err(invalid(
            format!(
                "area of {} bytes is smaller than a {what} header",
                area.len()
            ),
            0,
        ));
    }
    Ok(())
}

/// Section 8 steps 1-3 (the first half of 3): magic, version, `payload_size` within the area.
fn check_header(area: &[u8], rid: u64) -> Result<usize> {
    check_header_in(area, area.len(), rid)
}

/// `check_header` on `msg`, a copy of the start of an area of `area_len` bytes: `payload_size`
/// must fit both (the copy holds the whole payload whenever it fits the area).
fn check_header_in(area: &[u8], area_len: usize, rid: u64) -> Result<usize> {
    let magic = rd32(area, msg::MAGIC);
    if magic != l::MSG_MAGIC {
        return Err(Error::new(
            Status::BadMagic,
            format!("bad magic 0x{magic:08X} (want 0x{:08X})", l::MSG_MAGIC),
        )
        .with_id(rid));
    }
    let version = rd16(area, msg::VERSION);
    if version != l::PROTOCOL_VERSION {
        return Err(Error::new(
            Status::BadVersion,
            format!(
                "protocol version {version} (this side speaks {})",
                l::PROTOCOL_VERSION
            ),
        )
        .with_id(rid));
    }
    let payload = rd32(area, msg::PAYLOAD_SIZE) as usize;
    if payload < l::BODY_SIZE
        || l::MSG_HEADER_SIZE + payload > area_len
        || l::MSG_HEADER_SIZE + payload > area.len()
    {
        return Err(invalid(
            format!("payload_size {payload} outside the area of {area_len} bytes"),
            rid,
        ));
    }
    Ok(payload)
}

fn check_crc(area: &[u8], payload: usize, flags: u32, refs: &[TensorRef], rid: u64) -> Result<()> {
    let want = rd32(area, msg::CRC32);
    let got = message_crc(area, payload, flags, refs);
    if got != want {
        return Err(Error::new(
            Status::BadChecksum,
            format!("CRC32 0x{got:08X} != 0x{want:08X} in the header"),
        )
        .with_id(rid));
    }
    Ok(())
}

/// The name, location, datatype and shape of the descriptor at `at` (section 8 step 7, up to
/// the sizes).
fn desc_head(
    area: &[u8],
    at: usize,
    limits: &Limits,
    rid: u64,
) -> Result<(String, u32, DataType, Vec<u64>)> {
    let name = text_field(area, at + msg::D_NAME, l::NAME_SIZE, "tensor name", rid)?;
    let ndim = rd32(area, at + msg::D_NDIM);
    if ndim > limits.max_ndim || ndim as usize > l::MAX_NDIM {
        return Err(invalid(
            format!("tensor {name:?}: ndim {ndim} > {}", limits.max_ndim),
            rid,
        ));
    }
    let location = rd32(area, at + msg::D_LOCATION);
    if location != l::LOCATION_HOST && location != l::LOCATION_CUDA_IPC {
        return Err(invalid(
            format!("tensor {name:?}: unsupported location {location}"),
            rid,
        ));
    }
    let code = rd32(area, at + msg::D_DTYPE);
    let datatype = DataType::from_code(code).ok_or_else(|| {
        invalid(
            format!("tensor {name:?}: unknown dtype code {code} (known: 1..14)"),
            rid,
        )
    })?;
    let shape: Vec<u64> = (0..ndim as usize)
        .map(|k| rd64(area, at + msg::D_SHAPE + 8 * k))
        .collect();
    Ok((name, location, datatype, shape))
}

/// The device fields of the CUDA_IPC descriptor at `at` (section 15.1), unchecked.
fn read_cuda(area: &[u8], at: usize) -> CudaIpc {
    let mut ipc_handle = [0u8; 64];
    ipc_handle.copy_from_slice(&area[at + msg::D_IPC_HANDLE..at + msg::D_IPC_HANDLE + 64]);
    CudaIpc {
        device: rd32(area, at + msg::D_DEVICE) as i32,
        ipc_handle,
        ipc_offset: rd64(area, at + msg::D_IPC_OFFSET),
    }
}

/// A HOST tensor's bytes lie inside the area, after the header, aligned to its itemsize.
fn check_host(
    area_len: usize,
    name: &str,
    datatype: DataType,
    offset: u64,
    size: u64,
    rid: u64,
) -> Result<()> {
    let end = offset.checked_add(size);
    if offset < l::MSG_HEADER_SIZE as u64 || end.map_or(true, |e| e > area_len as u64) {
        return Err(invalid(
            format!(
                "tensor {name:?}: bytes [{offset}, {offset}+{size}) outside the area of {area_len} bytes"
            ),
            rid,
        ));
    }
    if offset % datatype.itemsize() as u64 != 0 {
        return Err(invalid(
            format!("tensor {name:?}: data_offset {offset} not aligned"),
            rid,
        ));
    }
    Ok(())
}

/// Whether itemsize x the nonzero dimensions is at most 2^63 - 1 (section 8 step 7, HOST): a
/// tensor with a 0 has no bytes, but array libraries (their sizes signed 64-bit) still cannot
/// hold a wider shape.
pub(super) fn host_shape_ok(shape: &[u64], datatype: DataType) -> bool {
    shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(datatype.itemsize() as u64, |n, &d| {
            n.checked_mul(d).filter(|&m| m <= i64::MAX as u64)
        })
        .is_some()
}

/// The descriptor at `at`, checked (section 8 step 7; 15.3 for CUDA_IPC).
fn decode_desc(
    area: &[u8],
    area_len: usize,
    at: usize,
    limits: &Limits,
    rid: u64,
) -> Result<TensorRef> {
    let (name, location, datatype, shape) = desc_head(area, at, limits, rid)?;
    let offset = rd64(area, at + msg::D_DATA_OFFSET);
    let size = rd64(area, at + msg::D_DATA_SIZE);
    if location == l::LOCATION_HOST && !host_shape_ok(&shape, datatype) {
        return Err(invalid(
            format!("tensor {name:?}: shape {shape:?} beyond 2^63 - 1 bytes over its nonzero dimensions"),
            rid,
        ));
    }
    let want = shape
        .iter()
        .try_fold(datatype.itemsize() as u64, |n, &d| n.checked_mul(d));
    if want != Some(size) {
        return Err(invalid(
            format!("tensor {name:?}: data_size {size} does not match shape {shape:?}"),
            rid,
        ));
    }
    if location == l::LOCATION_CUDA_IPC {
        let cuda = read_cuda(area, at);
        check_cuda(&name, datatype, size, offset, &cuda, rid)?;
        let data_size = usize::try_from(size)
            .map_err(|_| invalid(format!("tensor {name:?} is too large"), rid))?;
        return Ok(TensorRef {
            name,
            datatype,
            shape,
            data_offset: 0,
            data_size,
            cuda: Some(cuda),
        });
    }
    check_host(area_len, &name, datatype, offset, size, rid)?;
    Ok(TensorRef {
        name,
        datatype,
        shape,
        data_offset: offset as usize,
        data_size: size as usize,
        cuda: None,
    })
}

/// The `n` descriptors from `at`, each checked, their names unique (`what`: input or output).
fn decode_descs(
    area: &[u8],
    area_len: usize,
    at: usize,
    n: u64,
    limits: &Limits,
    what: &str,
    rid: u64,
) -> Result<Vec<TensorRef>> {
    let mut refs: Vec<TensorRef> = Vec::with_capacity(n as usize);
    for k in 0..n as usize {
        let t = decode_desc(area, area_len, at + k * l::DESC_SIZE, limits, rid)?;
        if refs.iter().any(|o| o.name == t.name) {
            return Err(invalid(format!("{what} {:?} appears twice", t.name), rid));
        }
        refs.push(t);
    }
    Ok(refs)
}

/// Decode and check the request at offset 0 of `area` (the whole area), in the order of
/// docs/protocol/shm.md section 8.
pub fn decode_request(area: &[u8], limits: &Limits) -> Result<DecodedRequest> {
    check_area(area, "request")?;
    let rid = rd64(area, msg::REQUEST_ID);
    let payload = check_header(area, rid)?;
    let kind = rd16(area, msg::KIND);
    let flags = rd32(area, msg::FLAGS);
    let n_in = rd32(area, msg::REQ_INPUT_COUNT) as u64;
    let n_out = rd32(area, msg::REQ_OUTPUT_COUNT) as u64;
    let n_params = rd32(area, msg::REQ_PARAMS_SIZE) as u64;
    if n_params > l::MAX_PARAMS as u64 {
        // step 3: before the CRC reads them
        return Err(Error::new(
            Status::TooLarge,
            format!("params_size {n_params} bytes (at most {})", l::MAX_PARAMS),
        )
        .with_id(rid));
    }
    let want =
        l::BODY_SIZE as u64 + l::DESC_SIZE as u64 * n_in + l::NAME_SIZE as u64 * n_out + n_params;
    if payload as u64 != want {
        return Err(invalid(
            format!("payload_size {payload} does not match the counts in the body"),
            rid,
        ));
    }
    if flags & l::FLAG_DATA_CRC == 0 {
        check_crc(area, payload, flags, &[], rid)?;
    }
    if !matches!(
        kind,
        l::KIND_INFER_REQUEST | l::KIND_METADATA_REQUEST | l::KIND_STATS_REQUEST
    ) {
        return Err(invalid(
            format!("message kind {kind} is not a request"),
            rid,
        ));
    }
    if n_in > limits.max_tensors as u64 || n_out > limits.max_tensors as u64 {
        return Err(Error::new(
            Status::TooLarge,
            format!(
                "{n_in} inputs / {n_out} outputs requested (at most {})",
                limits.max_tensors
            ),
        )
        .with_id(rid));
    }
    let model = text_field(area, msg::REQ_MODEL, l::NAME_SIZE, "model name", rid)?;
    let mut at = l::MSG_HEADER_SIZE + l::BODY_SIZE;
    let inputs = decode_descs(area, area.len(), at, n_in, limits, "input", rid)?;
    at += inputs.len() * l::DESC_SIZE;
    // CUDA_IPC sizes are not bounded by the area: saturate, never wrap (a wrapped total passes)
    let total = inputs
        .iter()
        .fold(0u64, |sum, t| sum.saturating_add(t.data_size as u64));
    if total > limits.max_bytes {
        return Err(Error::new(
            Status::TooLarge,
            format!("{total} bytes of inputs (at most {})", limits.max_bytes),
        )
        .with_id(rid));
    }
    if flags & l::FLAG_DATA_CRC != 0 {
        check_crc(area, payload, flags, &inputs, rid)?;
    }
    let mut outputs = Vec::with_capacity(n_out as usize);
    for _ in 0..n_out {
        outputs.push(text_field(area, at, l::NAME_SIZE, "output name", rid)?);
        at += l::NAME_SIZE;
    }
    let version = text_field(
        area,
        msg::REQ_VERSION,
        l::VERSION_SIZE,
        "model version",
        rid,
    )?;
    let params = decode_params(&area[at..at + n_params as usize], rid)?;
    Ok(DecodedRequest {
        kind,
        request_id: rid,
        flags,
        model,
        version,
        deadline_ns: rd64(area, msg::REQ_DEADLINE_NS),
        inputs,
        outputs,
        params,
    })
}

/// Decode and check the response at offset 0 of `area` (the whole response area).
pub fn decode_response(area: &[u8], limits: &Limits) -> Result<DecodedResponse> {
    decode_response_msg(area, area.len(), limits, &mut |refs, crc| {
        refs.iter()
            .fold(crc, |c, r| super::crc32::update(c, r.bytes(area)))
    })
}

/// Decode and check a response from `msg`, a copy of the start of a response area of
/// `area_len` bytes: its header and payload (`32 + payload_size` bytes; fewer when that is
/// outside the area, which fails here). Every field is read from `msg` only, so a peer that
/// rewrites the area meanwhile cannot make one check pass and another use see other bytes; the
/// HOST descriptors are checked against `area_len`. With `FLAG_DATA_CRC`, `data_crc(outputs,
/// crc)` continues the CRC over the outputs' data (wherever the caller reads it from).
pub(crate) fn decode_response_msg(
    msg: &[u8],
    area_len: usize,
    limits: &Limits,
    data_crc: &mut dyn FnMut(&[TensorRef], u32) -> u32,
) -> Result<DecodedResponse> {
    if area_len < l::MSG_HEADER_SIZE + l::BODY_SIZE {
        return Err(invalid(
            format!("area of {area_len} bytes is smaller than a response header"),
            0,
        ));
    }
    check_area(msg, "response")?;
    let rid = rd64(msg, msg::REQUEST_ID);
    let payload = check_header_in(msg, area_len, rid)?;
    let kind = rd16(msg, msg::KIND);
    let flags = rd32(msg, msg::FLAGS);
    let n_out = rd32(msg, msg::RESP_OUTPUT_COUNT) as u64;
    let n_text = rd32(msg, msg::RESP_TEXT_SIZE) as u64;
    let n_params = rd32(msg, msg::RESP_PARAMS_SIZE) as u64;
    let want = l::BODY_SIZE as u64 + l::DESC_SIZE as u64 * n_out + n_text + n_params;
    if payload as u64 != want || n_text > l::MAX_TEXT as u64 {
        return Err(invalid(
            format!("payload_size {payload} does not match the counts in the body"),
            rid,
        ));
    }
    if flags & l::FLAG_DATA_CRC == 0 {
        check_crc(msg, payload, flags, &[], rid)?;
    }
    if kind != l::KIND_RESPONSE {
        return Err(invalid(
            format!("message kind {kind} is not a response"),
            rid,
        ));
    }
    if n_out > limits.max_tensors as u64 {
        return Err(Error::new(
            Status::TooLarge,
            format!("{n_out} outputs (at most {})", limits.max_tensors),
        )
        .with_id(rid));
    }
    let mut at = l::MSG_HEADER_SIZE + l::BODY_SIZE;
    let outputs = decode_descs(msg, area_len, at, n_out, limits, "output", rid)?;
    at += outputs.len() * l::DESC_SIZE;
    if flags & l::FLAG_DATA_CRC != 0 {
        let want = rd32(msg, msg::CRC32);
        let got = data_crc(&outputs, message_crc(msg, payload, 0, &[]));
        if got != want {
            return Err(Error::new(
                Status::BadChecksum,
                format!("CRC32 0x{got:08X} != 0x{want:08X} in the header"),
            )
            .with_id(rid));
        }
    }
    let text = String::from_utf8_lossy(&msg[at..at + n_text as usize]).into_owned();
    at += n_text as usize;
    let model = text_field(msg, msg::RESP_MODEL, l::NAME_SIZE, "model name", rid)?;
    let version = text_field(
        msg,
        msg::RESP_VERSION,
        l::VERSION_SIZE,
        "model version",
        rid,
    )?;
    let params = decode_params(&msg[at..at + n_params as usize], rid)?;
    Ok(DecodedResponse {
        request_id: rid,
        flags,
        status: rd32(msg, msg::RESP_STATUS),
        model,
        version,
        outputs,
        text,
        params,
        required_bytes: rd64(msg, msg::RESP_REQUIRED_BYTES),
    })
}
