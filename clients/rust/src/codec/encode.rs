//! Encoding: place tensors in an area, then write a request's or a response's header, body,
//! descriptors and trailing fields around them and seal the message with its CRC
//! (docs/protocol/shm.md sections 5 and 15.2).

use super::{check_cuda, invalid, message_crc, wr16, wr32, wr64, TensorRef};
use crate::error::{Error, Result, Status};
use crate::layout::{self as l, msg};
use crate::tensor::{byte_size, DataType};

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
    /// Parameters: compact JSON (see [`encode_params`](super::encode_params)), empty for none.
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
        if !super::decode::host_shape_ok(shape, datatype) {
            // empty ([0, 2^63] UINT8), yet every decoder refuses it (section 8 step 7): a loan
            // for it was granted, and every infer failed at the server
            return Err(invalid(
                format!(
                    "tensor {name:?}: shape {shape:?} of {} is beyond 2^63 - 1 bytes over its nonzero dimensions",
                    datatype.name()
                ),
                0,
            ));
        }
        // the end stays a slice length: past it the sum overflowed (a panic in a debug build, a
        // wrapped small end that passed for room in a release build)
        let end = offset
            .checked_add(size)
            .filter(|e| *e <= isize::MAX as usize)
            .ok_or_else(|| Error::new(Status::TooLarge, format!("tensor {name:?} is too large")))?;
        refs.push(TensorRef {
            name: name.to_string(),
            datatype,
            shape: shape.to_vec(),
            data_offset: offset,
            data_size: size,
            cuda: None,
        });
        offset = l::align(end, l::DATA_ALIGN);
    }
    Ok((refs, offset))
}

/// INVALID_INPUT unless `text` fits a fixed field of `size` bytes with its NUL (and has none of
/// its own); the error names the `what`, a name over 40 characters only by its start.
pub(crate) fn check_fixed(text: &str, size: usize, what: &str) -> Result<()> {
    let fault = if text.len() >= size {
        format!("is {} UTF-8 bytes (at most {})", text.len(), size - 1)
    } else if text.contains('\0') {
        "contains a NUL".to_string()
    } else {
        return Ok(());
    };
    let shown = match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{:?}...", &text[..cut]),
        None => format!("{text:?}"),
    };
    Err(invalid(format!("{what} {shown} {fault}"), 0))
}

fn put_fixed(area: &mut [u8], at: usize, size: usize, text: &str, what: &str) -> Result<()> {
    check_fixed(text, size, what)?;
    area[at..at + text.len()].copy_from_slice(text.as_bytes());
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
