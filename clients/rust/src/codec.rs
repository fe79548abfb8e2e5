//! Encoding and decoding of messages over a request or response area
//! (docs/protocol/shm.md sections 5 and 8).
//!
//! Encoders write the header, body and descriptors in place; tensor data already sits at the
//! offsets [`layout`] computed, so a tensor is copied at most once (a loan: not at all).
//! Decoders check every field, offset and size against the area, in the spec's order, and fail
//! with the status the spec names; tensors come back as [`TensorRef`]s into the area.

use crate::crc32;
use crate::error::{Error, Result, Status};
use crate::json::{self, Value};
use crate::layout::{self as l, msg};
use crate::tensor::{byte_size, DataType};

/// Where one tensor's bytes lie: in the area (HOST), or in device memory (CUDA_IPC).
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // fields as in the spec (sections 5 and 11)
pub struct TensorRef {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<u64>,
    /// From the start of the area (0 for a CUDA_IPC tensor).
    pub data_offset: usize,
    pub data_size: usize,
    /// `Some` for a `location = CUDA_IPC` descriptor (section 15); `None` for HOST.
    pub cuda: Option<CudaIpc>,
}

/// The device side of a CUDA_IPC descriptor (section 15.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaIpc {
    /// The producer's CUDA device ordinal.
    pub device: i32,
    /// The `cudaIpcMemHandle_t` of the allocation.
    pub ipc_handle: [u8; 64],
    /// Bytes from the allocation's base to the tensor's first element.
    pub ipc_offset: u64,
}

impl TensorRef {
    /// The tensor's bytes in `area` (empty for a CUDA_IPC tensor: its data is not in the area).
    pub fn bytes<'a>(&self, area: &'a [u8]) -> &'a [u8] {
        match self.cuda {
            None => &area[self.data_offset..self.data_offset + self.data_size],
            Some(_) => &[],
        }
    }
}

/// What a decoder accepts (a server publishes its own in the region header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // fields as in the spec (sections 5 and 11)
pub struct Limits {
    pub max_tensors: u32,
    pub max_bytes: u64,
    pub max_ndim: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_tensors: 64,
            max_bytes: 1 << 32,
            max_ndim: l::MAX_NDIM as u32,
        }
    }
}

/// A request's fields (the data of `inputs` is already in the area).
#[derive(Clone, Debug, Default, PartialEq)]
#[allow(missing_docs)] // fields as in the spec (sections 5 and 11)
pub struct RequestFields {
    pub kind: u16,
    pub request_id: u64,
    pub flags: u32,
    pub model: String,
    pub version: String,
    pub deadline_ns: u64,
    pub inputs: Vec<TensorRef>,
    pub outputs: Vec<String>,
    /// Parameters: compact JSON (see [`encode_params`]), empty for none.
    pub params: Vec<u8>,
}

/// A response's fields (the data of `outputs` is already in the area).
#[derive(Clone, Debug, Default, PartialEq)]
#[allow(missing_docs)] // fields as in the spec (sections 5 and 11)
pub struct ResponseFields {
    pub request_id: u64,
    pub flags: u32,
    pub status: u32,
    pub model: String,
    pub version: String,
    pub outputs: Vec<TensorRef>,
    /// Error message (status != 0) or JSON document (METADATA/STATS).
    pub text: Vec<u8>,
    pub params: Vec<u8>,
    pub required_bytes: u64,
}

// --- little-endian field access ------------------------------------------------------------------

fn rd16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn rd32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]))
}
fn rd64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]))
}
fn wr16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn wr32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn wr64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn invalid(msg: impl Into<String>, rid: u64) -> Error {
    Error::new(Status::InvalidInput, msg).with_id(rid)
}

// --- placement -------------------------------------------------------------------------------------

/// Place tensors after the header and `payload_size` bytes of payload, each at a multiple of 64
/// (docs/protocol/shm.md, "Placement"); returns the refs and the end of the last tensor.
pub fn layout(
    specs: &[(&str, DataType, &[u64])],
    payload_size: usize,
) -> Result<(Vec<TensorRef>, usize)> {
    let mut offset = l::align(l::MSG_HEADER_SIZE + payload_size, l::DATA_ALIGN);
    let mut refs = Vec::with_capacity(specs.len());
    for &(name, datatype, shape) in specs {
        if shape.len() > l::MAX_NDIM {
            return Err(invalid(
                format!("tensor {name:?} has {} dimensions (at most 8)", shape.len()),
                0,
            ));
        }
        let size = byte_size(datatype, shape)
            .filter(|n| *n <= isize::MAX as usize / 2)
            .ok_or_else(|| Error::new(Status::TooLarge, format!("tensor {name:?} is too large")))?;
        refs.push(TensorRef {
            name: name.to_string(),
            datatype,
            shape: shape.to_vec(),
            data_offset: offset,
            data_size: size,
            cuda: None,
        });
        offset = l::align(offset + size, l::DATA_ALIGN);
    }
    Ok((refs, offset))
}

// --- encoding --------------------------------------------------------------------------------------

fn put_fixed(area: &mut [u8], at: usize, size: usize, text: &str, what: &str) -> Result<()> {
    let raw = text.as_bytes();
    if raw.len() >= size || raw.contains(&0) {
        return Err(invalid(
            format!(
                "{what} {text:?} must be at most {} UTF-8 bytes without NUL",
                size - 1
            ),
            0,
        ));
    }
    area[at..at + raw.len()].copy_from_slice(raw);
    Ok(())
}

fn put_descs(area: &mut [u8], mut at: usize, refs: &[TensorRef]) -> Result<usize> {
    for r in refs {
        if r.shape.len() > l::MAX_NDIM {
            return Err(invalid(
                format!(
                    "tensor {:?} has {} dimensions (at most 8)",
                    r.name,
                    r.shape.len()
                ),
                0,
            ));
        }
        put_fixed(area, at + msg::D_NAME, l::NAME_SIZE, &r.name, "tensor name")?;
        wr32(area, at + msg::D_DTYPE, r.datatype.code());
        wr32(area, at + msg::D_NDIM, r.shape.len() as u32);
        for (k, &d) in r.shape.iter().enumerate() {
            wr64(area, at + msg::D_SHAPE + 8 * k, d);
        }
        wr64(area, at + msg::D_DATA_OFFSET, r.data_offset as u64);
        wr64(area, at + msg::D_DATA_SIZE, r.data_size as u64);
        match &r.cuda {
            None => wr32(area, at + msg::D_LOCATION, l::LOCATION_HOST),
            Some(c) => {
                wr32(area, at + msg::D_LOCATION, l::LOCATION_CUDA_IPC);
                wr32(area, at + msg::D_DEVICE, c.device as u32);
                area[at + msg::D_IPC_HANDLE..at + msg::D_IPC_HANDLE + 64]
                    .copy_from_slice(&c.ipc_handle);
                wr64(area, at + msg::D_IPC_OFFSET, c.ipc_offset);
            }
        }
        at += l::DESC_SIZE;
    }
    Ok(at)
}

fn check_room(area: &[u8], payload: usize, refs: &[TensorRef]) -> Result<()> {
    if l::MSG_HEADER_SIZE + payload > area.len() {
        return Err(Error::new(
            Status::TooLarge,
            format!(
                "a message of {} bytes does not fit an area of {}",
                l::MSG_HEADER_SIZE + payload,
                area.len()
            ),
        ));
    }
    for r in refs {
        if let Some(c) = &r.cuda {
            let size = r.data_size as u64;
            if byte_size(r.datatype, &r.shape) != Some(r.data_size) {
                return Err(invalid(
                    format!("tensor {:?}: data_size does not match its shape", r.name),
                    0,
                ));
            }
            check_cuda(&r.name, r.datatype, size, r.data_offset as u64, c, 0)?;
            continue;
        }
        let end = r.data_offset.checked_add(r.data_size);
        if r.data_offset < l::MSG_HEADER_SIZE + payload || end.map_or(true, |e| e > area.len()) {
            return Err(invalid(
                format!("tensor {:?} lies outside the area", r.name),
                0,
            ));
        }
        match byte_size(r.datatype, &r.shape) {
            Some(n) if n == r.data_size => {}
            _ => {
                return Err(invalid(
                    format!("tensor {:?}: data_size does not match its shape", r.name),
                    0,
                ))
            }
        }
    }
    Ok(())
}

/// The CRC of a message: header bytes `[0, 28)`, the payload, and with `FLAG_DATA_CRC` each
/// HOST tensor's data in descriptor order (device data is never checksummed).
pub fn message_crc(area: &[u8], payload: usize, flags: u32, refs: &[TensorRef]) -> u32 {
    let mut crc = crc32::update(0, &area[..l::CRC_OFFSET]);
    crc = crc32::update(crc, &area[l::MSG_HEADER_SIZE..l::MSG_HEADER_SIZE + payload]);
    if flags & l::FLAG_DATA_CRC != 0 {
        for r in refs {
            crc = crc32::update(crc, r.bytes(area));
        }
    }
    crc
}

fn put_header(area: &mut [u8], kind: u16, rid: u64, payload: usize, flags: u32) {
    wr32(area, msg::MAGIC, l::MSG_MAGIC);
    wr16(area, msg::VERSION, l::PROTOCOL_VERSION);
    wr16(area, msg::KIND, kind);
    wr64(area, msg::REQUEST_ID, rid);
    wr32(area, msg::PAYLOAD_SIZE, payload as u32);
    wr32(area, msg::FLAGS, flags);
}

/// Write a request's header, body, descriptors, output names and params at offset 0 of `area`
/// (tensor data already in place) and seal it with its CRC; returns the payload size.
pub fn write_request(area: &mut [u8], f: &RequestFields) -> Result<usize> {
    let payload = l::request_payload_size(f.inputs.len(), f.outputs.len(), f.params.len());
    check_room(area, payload, &f.inputs)?;
    if payload > u32::MAX as usize {
        return Err(Error::new(Status::TooLarge, "request payload over 4 GiB"));
    }
    area[..l::MSG_HEADER_SIZE + payload].fill(0);
    put_header(area, f.kind, f.request_id, payload, f.flags);
    put_fixed(area, msg::REQ_MODEL, l::NAME_SIZE, &f.model, "model name")?;
    put_fixed(
        area,
        msg::REQ_VERSION,
        l::VERSION_SIZE,
        &f.version,
        "model version",
    )?;
    wr64(area, msg::REQ_DEADLINE_NS, f.deadline_ns);
    wr32(area, msg::REQ_INPUT_COUNT, f.inputs.len() as u32);
    wr32(area, msg::REQ_OUTPUT_COUNT, f.outputs.len() as u32);
    wr32(area, msg::REQ_PARAMS_SIZE, f.params.len() as u32);
    let mut at = put_descs(area, l::MSG_HEADER_SIZE + l::BODY_SIZE, &f.inputs)?;
    for name in &f.outputs {
        put_fixed(area, at, l::NAME_SIZE, name, "output name")?;
        at += l::NAME_SIZE;
    }
    area[at..at + f.params.len()].copy_from_slice(&f.params);
    let crc = message_crc(area, payload, f.flags, &f.inputs);
    wr32(area, msg::CRC32, crc);
    Ok(payload)
}

/// Write a response at offset 0 of `area` (output data already in place); returns the payload size.
pub fn write_response(area: &mut [u8], f: &ResponseFields) -> Result<usize> {
    let payload = l::response_payload_size(f.outputs.len(), f.text.len(), f.params.len());
    check_room(area, payload, &f.outputs)?;
    area[..l::MSG_HEADER_SIZE + payload].fill(0);
    put_header(area, l::KIND_RESPONSE, f.request_id, payload, f.flags);
    wr32(area, msg::RESP_STATUS, f.status);
    wr32(area, msg::RESP_OUTPUT_COUNT, f.outputs.len() as u32);
    wr32(area, msg::RESP_TEXT_SIZE, f.text.len() as u32);
    wr32(area, msg::RESP_PARAMS_SIZE, f.params.len() as u32);
    wr64(area, msg::RESP_REQUIRED_BYTES, f.required_bytes);
    put_fixed(area, msg::RESP_MODEL, l::NAME_SIZE, &f.model, "model name")?;
    put_fixed(
        area,
        msg::RESP_VERSION,
        l::VERSION_SIZE,
        &f.version,
        "model version",
    )?;
    let mut at = put_descs(area, l::MSG_HEADER_SIZE + l::BODY_SIZE, &f.outputs)?;
    area[at..at + f.text.len()].copy_from_slice(&f.text);
    at += f.text.len();
    area[at..at + f.params.len()].copy_from_slice(&f.params);
    let crc = message_crc(area, payload, f.flags, &f.outputs);
    wr32(area, msg::CRC32, crc);
    Ok(payload)
}

/// A parameter value: the protocol allows strings, numbers and booleans.
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    /// A JSON string.
    Str(String),
    /// A JSON integer.
    Int(i64),
    /// A JSON number (finite).
    Float(f64),
    /// `true` or `false`.
    Bool(bool),
}

impl Param {
    fn to_value(&self) -> Result<Value> {
        Ok(match self {
            Param::Str(s) => Value::String(s.clone()),
            Param::Int(i) => Value::Number(i.to_string()),
            Param::Bool(b) => Value::Bool(*b),
            Param::Float(x) if x.is_finite() => {
                let s = format!("{x:?}");
                Value::Number(s)
            }
            Param::Float(x) => {
                return Err(invalid(format!("parameter value {x} is not valid JSON"), 0))
            }
        })
    }
}

/// Parameters as the spec encodes them: compact JSON, keys sorted; empty for none.
pub fn encode_params(params: &[(String, Param)]) -> Result<Vec<u8>> {
    let members = params
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.to_value()?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(encode_params_json(members))
}

/// Parameters given as JSON values (numbers keep their text): compact, keys sorted.
pub fn encode_params_json(mut members: Vec<(String, Value)>) -> Vec<u8> {
    if members.is_empty() {
        return Vec::new();
    }
    members.sort_by(|a, b| a.0.cmp(&b.0));
    Value::Object(members).to_json().into_bytes()
}

// --- decoding --------------------------------------------------------------------------------------

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

fn text_field(raw: &[u8], what: &str, rid: u64) -> Result<String> {
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

fn check_header(area: &[u8], rid: u64) -> Result<usize> {
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
    if payload < l::BODY_SIZE || l::MSG_HEADER_SIZE + payload > area.len() {
        return Err(invalid(
            format!(
                "payload_size {payload} outside the area of {} bytes",
                area.len()
            ),
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

fn decode_desc(area: &[u8], at: usize, limits: &Limits, rid: u64) -> Result<TensorRef> {
    let name = text_field(
        &area[at + msg::D_NAME..at + msg::D_NAME + l::NAME_SIZE],
        "tensor name",
        rid,
    )?;
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
    let offset = rd64(area, at + msg::D_DATA_OFFSET);
    let size = rd64(area, at + msg::D_DATA_SIZE);
    let want = shape
        .iter()
        .try_fold(datatype.itemsize() as u64, |n, &d| n.checked_mul(d));
    if location == l::LOCATION_CUDA_IPC {
        if want != Some(size) {
            return Err(invalid(
                format!("tensor {name:?}: data_size {size} does not match shape {shape:?}"),
                rid,
            ));
        }
        let mut ipc_handle = [0u8; 64];
        ipc_handle.copy_from_slice(&area[at + msg::D_IPC_HANDLE..at + msg::D_IPC_HANDLE + 64]);
        let cuda = CudaIpc {
            device: rd32(area, at + msg::D_DEVICE) as i32,
            ipc_handle,
            ipc_offset: rd64(area, at + msg::D_IPC_OFFSET),
        };
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
    if want != Some(size) {
        return Err(invalid(
            format!("tensor {name:?}: data_size {size} does not match shape {shape:?}"),
            rid,
        ));
    }
    let end = offset.checked_add(size);
    if offset < l::MSG_HEADER_SIZE as u64 || end.map_or(true, |e| e > area.len() as u64) {
        return Err(invalid(
            format!(
                "tensor {name:?}: bytes [{offset}, {offset}+{size}) outside the area of {} bytes",
                area.len()
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
    Ok(TensorRef {
        name,
        datatype,
        shape,
        data_offset: offset as usize,
        data_size: size as usize,
        cuda: None,
    })
}

/// The checks of section 15.3 that need no GPU (after dtype and size), each INVALID_INPUT.
fn check_cuda(
    name: &str,
    dt: DataType,
    size: u64,
    data_offset: u64,
    c: &CudaIpc,
    rid: u64,
) -> Result<()> {
    let fault = if size == 0 {
        "a CUDA_IPC tensor has data (send empty tensors as HOST)".to_string()
    } else if data_offset != 0 {
        format!("data_offset {data_offset} must be 0 for a CUDA_IPC tensor")
    } else if c.device < 0 {
        format!("CUDA device {} < 0", c.device)
    } else if c.ipc_handle.iter().all(|&b| b == 0) {
        "the CUDA IPC handle is all zeros".to_string()
    } else if c.ipc_offset % dt.itemsize() as u64 != 0 {
        format!(
            "ipc_offset {} not aligned to {}",
            c.ipc_offset,
            dt.itemsize()
        )
    } else if c.ipc_offset.checked_add(size).is_none() {
        format!(
            "ipc_offset {} + data_size {size} overflows 64 bits",
            c.ipc_offset
        )
    } else {
        return Ok(());
    };
    Err(invalid(format!("tensor {name:?}: {fault}"), rid))
}

fn decode_params(raw: &[u8], rid: u64) -> Result<Vec<(String, Value)>> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    let text =
        std::str::from_utf8(raw).map_err(|_| invalid("params are not valid UTF-8 JSON", rid))?;
    let bad = || {
        invalid(
            "params must be a JSON object of strings, numbers and booleans",
            rid,
        )
    };
    match json::parse(text).map_err(|_| invalid("params are not valid UTF-8 JSON", rid))? {
        Value::Object(members) => {
            if members
                .iter()
                .all(|(_, v)| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)))
            {
                Ok(members)
            } else {
                Err(bad())
            }
        }
        _ => Err(bad()),
    }
}

/// Decode and check the request at offset 0 of `area` (the whole area), in the order of
/// docs/protocol/shm.md section 8.
pub fn decode_request(area: &[u8], limits: &Limits) -> Result<DecodedRequest> {
    if area.len() < l::MSG_HEADER_SIZE + l::BODY_SIZE {
        return Err(invalid(
            format!(
                "area of {} bytes is smaller than a request header",
                area.len()
            ),
            0,
        ));
    }
    let rid = rd64(area, msg::REQUEST_ID);
    let payload = check_header(area, rid)?;
    let kind = rd16(area, msg::KIND);
    let flags = rd32(area, msg::FLAGS);
    let n_in = rd32(area, msg::REQ_INPUT_COUNT) as u64;
    let n_out = rd32(area, msg::REQ_OUTPUT_COUNT) as u64;
    let n_params = rd32(area, msg::REQ_PARAMS_SIZE) as u64;
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
    let model = text_field(
        &area[msg::REQ_MODEL..msg::REQ_MODEL + l::NAME_SIZE],
        "model name",
        rid,
    )?;
    let mut at = l::MSG_HEADER_SIZE + l::BODY_SIZE;
    let mut inputs: Vec<TensorRef> = Vec::with_capacity(n_in as usize);
    let mut total: u64 = 0;
    for _ in 0..n_in {
        let t = decode_desc(area, at, limits, rid)?;
        if inputs.iter().any(|o| o.name == t.name) {
            return Err(invalid(format!("input {:?} appears twice", t.name), rid));
        }
        total += t.data_size as u64;
        inputs.push(t);
        at += l::DESC_SIZE;
    }
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
        outputs.push(text_field(
            &area[at..at + l::NAME_SIZE],
            "output name",
            rid,
        )?);
        at += l::NAME_SIZE;
    }
    let version = text_field(
        &area[msg::REQ_VERSION..msg::REQ_VERSION + l::VERSION_SIZE],
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
    if area.len() < l::MSG_HEADER_SIZE + l::BODY_SIZE {
        return Err(invalid(
            format!(
                "area of {} bytes is smaller than a response header",
                area.len()
            ),
            0,
        ));
    }
    let rid = rd64(area, msg::REQUEST_ID);
    let payload = check_header(area, rid)?;
    let kind = rd16(area, msg::KIND);
    let flags = rd32(area, msg::FLAGS);
    let n_out = rd32(area, msg::RESP_OUTPUT_COUNT) as u64;
    let n_text = rd32(area, msg::RESP_TEXT_SIZE) as u64;
    let n_params = rd32(area, msg::RESP_PARAMS_SIZE) as u64;
    let want = l::BODY_SIZE as u64 + l::DESC_SIZE as u64 * n_out + n_text + n_params;
    if payload as u64 != want || n_text > l::MAX_TEXT as u64 {
        return Err(invalid(
            format!("payload_size {payload} does not match the counts in the body"),
            rid,
        ));
    }
    if flags & l::FLAG_DATA_CRC == 0 {
        check_crc(area, payload, flags, &[], rid)?;
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
    let mut outputs = Vec::with_capacity(n_out as usize);
    for _ in 0..n_out {
        let t = decode_desc(area, at, limits, rid)?;
        if outputs.iter().any(|o: &TensorRef| o.name == t.name) {
            return Err(invalid(format!("output {:?} appears twice", t.name), rid));
        }
        outputs.push(t);
        at += l::DESC_SIZE;
    }
    if flags & l::FLAG_DATA_CRC != 0 {
        check_crc(area, payload, flags, &outputs, rid)?;
    }
    let text = String::from_utf8_lossy(&area[at..at + n_text as usize]).into_owned();
    at += n_text as usize;
    let model = text_field(
        &area[msg::RESP_MODEL..msg::RESP_MODEL + l::NAME_SIZE],
        "model name",
        rid,
    )?;
    let version = text_field(
        &area[msg::RESP_VERSION..msg::RESP_VERSION + l::VERSION_SIZE],
        "model version",
        rid,
    )?;
    let params = decode_params(&area[at..at + n_params as usize], rid)?;
    Ok(DecodedResponse {
        request_id: rid,
        flags,
        status: rd32(area, msg::RESP_STATUS),
        model,
        version,
        outputs,
        text,
        params,
        required_bytes: rd64(area, msg::RESP_REQUIRED_BYTES),
    })
}

#[cfg(test)]
mod tests {
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
}
