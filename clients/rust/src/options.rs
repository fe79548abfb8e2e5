//! What a client is told: how [`crate::Client::connect`] attaches and waits, the options of one
//! call, and the tensors a [`crate::Loan`] lends out.

use crate::codec::Param;
use crate::tensor::DataType;
use std::time::Duration;

/// How [`Client::connect`](crate::Client::connect) attaches, and how calls wait.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Bytes of the request area and of the response area (rounded up to 4096); `None`: the
    /// server's `default_capacity` (1 MiB), at most `max_response_bytes`. Either grows on
    /// demand. Over `max_response_bytes`: INVALID_INPUT at connect.
    pub capacity: Option<usize>,
    /// Spin on the response word this long before blocking (the spec's default: 100 µs).
    pub spin: Duration,
    /// Within the spin window, poll flat out this long, then yield the CPU between polls (2 µs,
    /// as the C client: with a server and two clients on two vCPUs, a client spinning flat out
    /// keeps the server it waits for off the CPU; a yield with nothing else to run is one
    /// system call).
    pub yield_after: Duration,
    /// How long to wait for the region mutex at connect before failing OVERLOADED (2 s), and
    /// for the heartbeat of a server found hung to move again before failing SERVER_UNAVAILABLE.
    /// A call's reconnect waits for either no longer than the call's own timeout (the mutex:
    /// then DEADLINE_EXCEEDED).
    pub connect_timeout: Duration,
    /// Set `FDN_FLAG_DATA_CRC`: the CRC also covers the tensor data (for debugging).
    pub data_crc: bool,
    /// The largest response this client grows its response area for ([`MAX_RESPONSE_BYTES`],
    /// 4 GiB, the server's default `max_request_bytes`; 4096..=2^48, else INVALID_INPUT at
    /// connect). A server's TOO_LARGE answer asking more (a hostile or broken one could ask for
    /// all of /dev/shm) fails the call TOO_LARGE naming the bytes and this option, the area not
    /// grown; the client serves its next call. A request larger than the areas grows the
    /// response area as large, at most this.
    pub max_response_bytes: usize,
}

/// The default [`ConnectOptions::max_response_bytes`]: 4 GiB, the server's default
/// `max_request_bytes`, so an echo of the largest request fits.
pub const MAX_RESPONSE_BYTES: usize = 1 << 32;
/// The most [`ConnectOptions::max_response_bytes`] may be: 2^48 bytes, beyond any machine's
/// shared memory (the Python client's bound).
pub const MAX_RESPONSE_BYTES_LIMIT: u64 = 1 << 48;

impl Default for ConnectOptions {
    fn default() -> ConnectOptions {
        ConnectOptions {
            capacity: None,
            spin: Duration::from_micros(100),
            yield_after: Duration::from_micros(2),
            connect_timeout: Duration::from_secs(2),
            data_crc: false,
            max_response_bytes: MAX_RESPONSE_BYTES,
        }
    }
}

/// Per-call options of [`Client::infer_with`](crate::Client::infer_with).
#[derive(Clone, Debug, Default)]
pub struct InferOptions {
    /// Give up (DEADLINE_EXCEEDED) after this long; `None`: wait as long as the server lives.
    /// The absolute deadline also travels in the request, so the server drops late work.
    pub timeout: Option<Duration>,
    /// Model version; empty: the server's choice.
    pub version: String,
    /// Outputs to return; empty: all.
    pub outputs: Vec<String>,
    /// Request parameters (strings, numbers, booleans).
    pub params: Vec<(String, Param)>,
}

/// The name, datatype and shape of a tensor to be written in place by a [`Loan`](crate::Loan).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// The input's name.
    pub name: String,
    /// Its element type.
    pub datatype: DataType,
    /// Its dimensions.
    pub shape: Vec<u64>,
}

impl TensorSpec {
    /// The spec of input `name`.
    pub fn new(name: impl Into<String>, datatype: DataType, shape: &[u64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            datatype,
            shape: shape.to_vec(),
        }
    }
}
