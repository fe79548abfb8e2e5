//! The protocol's byte layout (docs/protocol/shm.md sections 2-5), defined once.
//!
//! The `#[repr(C)]` structs mirror the spec's C structs field for field; they are never
//! dereferenced over shared memory, they only fix the offsets (via `offset_of!`) and sizes,
//! and the `const` assertions below fail the build if either drifts from the spec.
//! All integers are little-endian.

#![allow(missing_docs)] // the structs and constants are the spec's, named as there

use std::mem::{offset_of, size_of};

/// `FDN_REGION_MAGIC`.
pub const REGION_MAGIC: u32 = 0xF0C0_5E6D;
/// `FDN_MSG_MAGIC`.
pub const MSG_MAGIC: u32 = 0xF0C0_1234;
/// The protocol's major version (`version_major`, and `version` in every message).
pub const PROTOCOL_VERSION: u16 = 1;
/// Dimensions per tensor (fixed by the descriptor).
pub const MAX_NDIM: usize = 8;
/// Tensor, output and model names: NUL-padded fields of this many bytes (at most 63 used).
pub const NAME_SIZE: usize = 64;
/// The model version field (at most 15 bytes used).
pub const VERSION_SIZE: usize = 16;
/// Encoders place tensor data at multiples of this from the start of the area.
pub const DATA_ALIGN: usize = 64;
/// Area capacities are multiples of this.
pub const PAGE: usize = 4096;
/// Bytes of an error message or JSON document a decoder accepts.
pub const MAX_TEXT: usize = 1 << 20;
/// Bytes of a request's parameters JSON a decoder accepts (more is TOO_LARGE: sections 8 and 11).
pub const MAX_PARAMS: usize = 1 << 20;

/// `enum fdn_region_state`.
pub const STATE_STARTING: u32 = 0;
pub const STATE_READY: u32 = 1;
pub const STATE_STOPPING: u32 = 2;
pub const STATE_STOPPED: u32 = 3;

/// `enum fdn_feature`.
pub const FEATURE_DATA_CRC: u32 = 1;

/// `enum fdn_kind`.
pub const KIND_INFER_REQUEST: u16 = 1;
pub const KIND_RESPONSE: u16 = 2;
pub const KIND_METADATA_REQUEST: u16 = 3;
pub const KIND_STATS_REQUEST: u16 = 4;

/// `enum fdn_msg_flags`: the CRC also covers every tensor's data.
pub const FLAG_DATA_CRC: u32 = 1;

/// `FDN_FLAG_CUDA_IPC` (section 15.2): the client takes device outputs as CUDA_IPC descriptors.
pub const FLAG_CUDA_IPC: u32 = 2;
/// `FDN_FEATURE_CUDA_IPC`: the server accepts CUDA_IPC descriptors.
pub const FEATURE_CUDA_IPC: u32 = 2;

/// `enum fdn_location`.
pub const LOCATION_HOST: u32 = 0;
/// A tensor in device memory, named by a CUDA IPC handle (section 15).
pub const LOCATION_CUDA_IPC: u32 = 1;

/// `struct fdn_region_header` (control segment, offset 0).
#[repr(C)]
#[derive(Debug)]
pub struct RegionHeader {
    pub magic: u32,
    pub version_major: u16,
    pub version_minor: u16,
    pub header_size: u32,
    pub feature_flags: u32,
    pub state: u32,
    pub server_pid: u32,
    pub server_start_time: u64,
    pub heartbeat: u64,
    pub heartbeat_ns: u64,
    pub heartbeat_interval_ms: u32,
    pub server_sleeping: u32,
    pub channel_count: u32,
    pub channel_size: u32,
    pub channels_offset: u64,
    pub max_request_bytes: u64,
    pub max_tensors: u32,
    pub max_ndim: u32,
    pub connect_epoch: u64,
    pub mutex_holder_pid: u32,
    pub spin_us: u32,
    pub instance_id: u64,
    pub default_capacity: u64,
    pub reserved0: u64,
    pub name: [u8; 64],
    pub reserved: [u8; 64],
}

/// `struct fdn_channel` (control segment, offset `channels_offset + i * channel_size`).
#[repr(C)]
#[derive(Debug)]
pub struct Channel {
    pub client_seq: u64,
    pub client_sleeping: u32,
    pub owner_pid: u32,
    pub owner_start_time: u64,
    pub request_capacity: u64,
    pub response_capacity: u64,
    pub data_gen: u64,
    pub data_name: [u8; 64],
    pub reserved_c: [u8; 16],
    pub server_seq: u64,
    pub server_busy: u32,
    pub reserved_s: u32,
    pub served: u64,
    pub reserved: [u8; 104],
}

/// `struct fdn_msg_header` (offset 0 of a request or response area).
#[repr(C)]
#[derive(Debug)]
pub struct MsgHeader {
    pub magic: u32,
    pub version: u16,
    pub kind: u16,
    pub request_id: u64,
    pub payload_size: u32,
    pub flags: u32,
    pub reserved: u32,
    pub crc32: u32,
}

/// `struct fdn_infer_request` (offset 32; also the body of METADATA and STATS requests).
#[repr(C)]
#[derive(Debug)]
pub struct InferRequest {
    pub model: [u8; 64],
    pub version: [u8; 16],
    pub deadline_ns: u64,
    pub input_count: u32,
    pub output_count: u32,
    pub params_size: u32,
    pub reserved0: u32,
    pub reserved1: u64,
}

/// `struct fdn_infer_response` (offset 32 of the response area).
#[repr(C)]
#[derive(Debug)]
pub struct InferResponse {
    pub status: u32,
    pub output_count: u32,
    pub text_size: u32,
    pub params_size: u32,
    pub required_bytes: u64,
    pub model: [u8; 64],
    pub version: [u8; 16],
    pub reserved: u64,
}

/// `struct fdn_tensor_desc`.
#[repr(C)]
#[derive(Debug)]
pub struct TensorDesc {
    pub name: [u8; 64],
    pub dtype: u32,
    pub ndim: u32,
    pub shape: [u64; 8],
    pub data_offset: u64,
    pub data_size: u64,
    pub location: u32,
    pub flags: u32,
    pub device: i32,
    pub reserved0: u32,
    pub ipc_handle: [u8; 64],
    pub ipc_offset: u64,
    pub reserved: [u8; 16],
}

pub const REGION_HEADER_SIZE: usize = size_of::<RegionHeader>();
pub const CHANNEL_SIZE: usize = size_of::<Channel>();
pub const CHANNELS_OFFSET: usize = REGION_HEADER_SIZE;
pub const MSG_HEADER_SIZE: usize = size_of::<MsgHeader>();
pub const BODY_SIZE: usize = size_of::<InferRequest>();
pub const DESC_SIZE: usize = size_of::<TensorDesc>();
/// The CRC covers header bytes `[0, CRC_OFFSET)`, then the payload.
pub const CRC_OFFSET: usize = offset_of!(MsgHeader, crc32);

/// Byte offsets in the region header.
pub mod region {
    use super::RegionHeader as R;
    use std::mem::offset_of;
    pub const MAGIC: usize = offset_of!(R, magic);
    pub const VERSION_MAJOR: usize = offset_of!(R, version_major);
    pub const STATE: usize = offset_of!(R, state);
    pub const FEATURE_FLAGS: usize = offset_of!(R, feature_flags);
    pub const SERVER_PID: usize = offset_of!(R, server_pid);
    pub const SERVER_START_TIME: usize = offset_of!(R, server_start_time);
    pub const HEARTBEAT: usize = offset_of!(R, heartbeat);
    pub const HEARTBEAT_NS: usize = offset_of!(R, heartbeat_ns);
    pub const HEARTBEAT_INTERVAL_MS: usize = offset_of!(R, heartbeat_interval_ms);
    pub const SERVER_SLEEPING: usize = offset_of!(R, server_sleeping);
    pub const CHANNEL_COUNT: usize = offset_of!(R, channel_count);
    pub const CHANNEL_SIZE: usize = offset_of!(R, channel_size);
    pub const CHANNELS_OFFSET: usize = offset_of!(R, channels_offset);
    pub const MAX_REQUEST_BYTES: usize = offset_of!(R, max_request_bytes);
    pub const MAX_TENSORS: usize = offset_of!(R, max_tensors);
    pub const CONNECT_EPOCH: usize = offset_of!(R, connect_epoch);
    pub const MUTEX_HOLDER_PID: usize = offset_of!(R, mutex_holder_pid);
    pub const SPIN_US: usize = offset_of!(R, spin_us);
    pub const INSTANCE_ID: usize = offset_of!(R, instance_id);
    pub const DEFAULT_CAPACITY: usize = offset_of!(R, default_capacity);
    pub const NAME: usize = offset_of!(R, name);
}

/// Byte offsets in a channel block, relative to its start.
pub mod channel {
    use super::Channel as C;
    use std::mem::offset_of;
    pub const CLIENT_SEQ: usize = offset_of!(C, client_seq);
    pub const CLIENT_SLEEPING: usize = offset_of!(C, client_sleeping);
    pub const OWNER_PID: usize = offset_of!(C, owner_pid);
    pub const OWNER_START_TIME: usize = offset_of!(C, owner_start_time);
    pub const REQUEST_CAPACITY: usize = offset_of!(C, request_capacity);
    pub const RESPONSE_CAPACITY: usize = offset_of!(C, response_capacity);
    pub const DATA_GEN: usize = offset_of!(C, data_gen);
    pub const DATA_NAME: usize = offset_of!(C, data_name);
    pub const SERVER_SEQ: usize = offset_of!(C, server_seq);
    pub const SERVER_BUSY: usize = offset_of!(C, server_busy);
}

/// Byte offsets in a message (header, then body at 32).
pub mod msg {
    use super::{InferRequest as Q, InferResponse as P, MsgHeader as H, TensorDesc as D};
    use std::mem::offset_of;
    pub const MAGIC: usize = offset_of!(H, magic);
    pub const VERSION: usize = offset_of!(H, version);
    pub const KIND: usize = offset_of!(H, kind);
    pub const REQUEST_ID: usize = offset_of!(H, request_id);
    pub const PAYLOAD_SIZE: usize = offset_of!(H, payload_size);
    pub const FLAGS: usize = offset_of!(H, flags);
    pub const CRC32: usize = offset_of!(H, crc32);
    const B: usize = super::MSG_HEADER_SIZE;
    pub const REQ_MODEL: usize = B + offset_of!(Q, model);
    pub const REQ_VERSION: usize = B + offset_of!(Q, version);
    pub const REQ_DEADLINE_NS: usize = B + offset_of!(Q, deadline_ns);
    pub const REQ_INPUT_COUNT: usize = B + offset_of!(Q, input_count);
    pub const REQ_OUTPUT_COUNT: usize = B + offset_of!(Q, output_count);
    pub const REQ_PARAMS_SIZE: usize = B + offset_of!(Q, params_size);
    pub const RESP_STATUS: usize = B + offset_of!(P, status);
    pub const RESP_OUTPUT_COUNT: usize = B + offset_of!(P, output_count);
    pub const RESP_TEXT_SIZE: usize = B + offset_of!(P, text_size);
    pub const RESP_PARAMS_SIZE: usize = B + offset_of!(P, params_size);
    pub const RESP_REQUIRED_BYTES: usize = B + offset_of!(P, required_bytes);
    pub const RESP_MODEL: usize = B + offset_of!(P, model);
    pub const RESP_VERSION: usize = B + offset_of!(P, version);
    /// Descriptor fields, relative to the descriptor's start.
    pub const D_NAME: usize = offset_of!(D, name);
    pub const D_DTYPE: usize = offset_of!(D, dtype);
    pub const D_NDIM: usize = offset_of!(D, ndim);
    pub const D_SHAPE: usize = offset_of!(D, shape);
    pub const D_DATA_OFFSET: usize = offset_of!(D, data_offset);
    pub const D_DATA_SIZE: usize = offset_of!(D, data_size);
    pub const D_LOCATION: usize = offset_of!(D, location);
    pub const D_DEVICE: usize = offset_of!(D, device);
    pub const D_IPC_HANDLE: usize = offset_of!(D, ipc_handle);
    pub const D_IPC_OFFSET: usize = offset_of!(D, ipc_offset);
}

// The spec's sizes and offsets (docs/protocol/shm.md sections 3-5); the build fails on a drift.
const _: () = {
    assert!(REGION_HEADER_SIZE == 256);
    assert!(CHANNEL_SIZE == 256);
    assert!(MSG_HEADER_SIZE == 32);
    assert!(size_of::<InferRequest>() == 112);
    assert!(size_of::<InferResponse>() == 112);
    assert!(DESC_SIZE == 256);
    assert!(CRC_OFFSET == 28);
    assert!(region::STATE == 16);
    assert!(region::SERVER_START_TIME == 24);
    assert!(region::HEARTBEAT_NS == 40);
    assert!(region::SERVER_SLEEPING == 52);
    assert!(region::CHANNEL_COUNT == 56);
    assert!(region::CHANNELS_OFFSET == 64);
    assert!(region::MAX_REQUEST_BYTES == 72);
    assert!(region::MAX_TENSORS == 80);
    assert!(region::CONNECT_EPOCH == 88);
    assert!(region::MUTEX_HOLDER_PID == 96);
    assert!(region::SPIN_US == 100);
    assert!(region::INSTANCE_ID == 104);
    assert!(region::DEFAULT_CAPACITY == 112);
    assert!(region::NAME == 128);
    assert!(channel::CLIENT_SLEEPING == 8);
    assert!(channel::OWNER_PID == 12);
    assert!(channel::OWNER_START_TIME == 16);
    assert!(channel::REQUEST_CAPACITY == 24);
    assert!(channel::RESPONSE_CAPACITY == 32);
    assert!(channel::DATA_GEN == 40);
    assert!(channel::DATA_NAME == 48);
    assert!(channel::DATA_NAME + DATA_NAME_SIZE + 16 == channel::SERVER_SEQ);
    assert!(channel::SERVER_SEQ == 128);
    assert!(msg::REQ_DEADLINE_NS == 32 + 80);
    assert!(msg::REQ_INPUT_COUNT == 32 + 88);
    assert!(msg::REQ_PARAMS_SIZE == 32 + 96);
    assert!(msg::RESP_REQUIRED_BYTES == 32 + 16);
    assert!(msg::RESP_MODEL == 32 + 24);
    assert!(msg::RESP_VERSION == 32 + 88);
    assert!(msg::D_DTYPE == 64);
    assert!(msg::D_SHAPE == 72);
    assert!(msg::D_DATA_OFFSET == 136);
    assert!(msg::D_DATA_SIZE == 144);
    assert!(msg::D_LOCATION == 152);
    assert!(msg::D_DEVICE == 160);
    assert!(msg::D_IPC_HANDLE == 168);
    assert!(msg::D_IPC_OFFSET == 232);
};

/// Round `n` up to a multiple of `to` (a power of two).
pub const fn align(n: usize, to: usize) -> usize {
    (n + to - 1) & !(to - 1)
}

/// Request payload bytes: body + descriptors + output names + params.
pub const fn request_payload_size(inputs: usize, outputs: usize, params: usize) -> usize {
    BODY_SIZE + DESC_SIZE * inputs + NAME_SIZE * outputs + params
}

/// Response payload bytes: body + descriptors + text + params.
pub const fn response_payload_size(outputs: usize, text: usize, params: usize) -> usize {
    BODY_SIZE + DESC_SIZE * outputs + text + params
}

/// The longest server name: with it every data name `/fdn-N-d{i}-{pid}-{gen}` fits the channel
/// block's `data_name` with its NUL (spec section 2):
/// 5 + 32 + 2 + 4 (index < 4096) + 1 + 7 (pid <= 4194304) + 1 + 11 (gen) = 63.
pub const SERVER_NAME_MAX: usize = 32;
/// The channel block's `data_name` field: at most 63 bytes, then a NUL.
pub const DATA_NAME_SIZE: usize = 64;

/// True for a valid server name: 1-32 characters of `[A-Za-z0-9_]`.
pub fn valid_server_name(name: &str) -> bool {
    (1..=SERVER_NAME_MAX).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `/fdn-N`: the control segment.
pub fn control_name(n: &str) -> String {
    format!("/fdn-{n}")
}
/// `/fdn-N-lock`: the region mutex.
pub fn mutex_name(n: &str) -> String {
    format!("/fdn-{n}-lock")
}
/// `/fdn-N-bell`: the server's doorbell.
pub fn doorbell_name(n: &str) -> String {
    format!("/fdn-{n}-bell")
}
/// `/fdn-N-c{i}`: channel `i`'s semaphore.
pub fn channel_sem_name(n: &str, i: usize) -> String {
    format!("/fdn-{n}-c{i}")
}
/// `/fdn-N-d{i}-{pid}-{gen}`: channel `i`'s data segment; `None` when it would not fit
/// `data_name` with its NUL (it is refused, never cut).
pub fn data_name(n: &str, i: usize, pid: u32, gen: u64) -> Option<String> {
    let name = format!("/fdn-{n}-d{i}-{pid}-{gen}");
    (name.len() < DATA_NAME_SIZE).then_some(name)
}
/// `/dev/shm/fdn-N.lock`: the server's flock'd lock file.
pub fn lock_file(n: &str) -> String {
    format!("/dev/shm/fdn-{n}.lock")
}
