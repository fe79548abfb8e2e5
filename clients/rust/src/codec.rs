//! Encoding and decoding of messages over a request or response area
//! (docs/protocol/shm.md sections 5 and 8).
//!
//! Encoders write the header, body and descriptors in place; tensor data already sits at the
//! offsets [`layout`] computed, so a tensor is copied at most once (a loan: not at all).
//! Decoders check every field, offset and size against the area, in the spec's order, and fail
//! with the status the spec names; tensors come back as [`TensorRef`]s into the area.
//!
//! This module holds what both directions share (tensor references, limits, field access, the
//! CRC, the CUDA_IPC checks of section 15.3); `encode`, `decode` and `params` hold the rest, and
//! their public items are re-exported here.

mod decode;
mod encode;
mod params;
#[cfg(test)]
mod tests;

pub(crate) use decode::decode_response_msg;
pub use decode::{decode_request, decode_response, DecodedRequest, DecodedResponse};
pub(crate) use encode::check_fixed;
pub use encode::{layout, write_request, write_response, RequestFields, ResponseFields};
pub use params::{encode_params, encode_params_json, Param};

use crate::crc32;
use crate::error::{Error, Result, Status};
use crate::layout as l;
use crate::tensor::DataType;

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
