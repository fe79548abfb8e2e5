//! Errors: a protocol status code (docs/protocol/shm.md section 9) and a message.

use std::fmt;

/// The protocol's error codes (`status` of a response; `foundation_ml.errors.ErrorCode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// The header's magic is wrong.
    BadMagic = 1,
    /// Unsupported protocol major version.
    BadVersion = 2,
    /// The CRC (or the response id) does not match.
    BadChecksum = 3,
    /// No such model (or version).
    ModelNotFound = 4,
    /// Bad name, dtype, shape, size, offset or params; the message says which.
    InvalidInput = 5,
    /// Too many tensors or bytes, or the response does not fit.
    TooLarge = 6,
    /// The deadline passed (server: before the handler ran; client: before the response).
    DeadlineExceeded = 7,
    /// No free channel at connect, or the handler refuses for load.
    Overloaded = 8,
    /// The model raised; the message is its error.
    HandlerError = 9,
    /// No live server (client side only).
    ServerUnavailable = 10,
    /// The server is stopping and did not run the request.
    ShuttingDown = 11,
    /// Reserved for the CUDA IPC variant.
    CudaUnavailable = 12,
    /// Anything else; unknown codes map here.
    Internal = 13,
}

impl Status {
    /// The status for a wire code; unknown codes are `Internal`, as the spec says.
    pub fn from_code(code: u32) -> Status {
        use Status::*;
        match code {
            0 => Ok,
            1 => BadMagic,
            2 => BadVersion,
            3 => BadChecksum,
            4 => ModelNotFound,
            5 => InvalidInput,
            6 => TooLarge,
            7 => DeadlineExceeded,
            8 => Overloaded,
            9 => HandlerError,
            10 => ServerUnavailable,
            11 => ShuttingDown,
            12 => CudaUnavailable,
            _ => Internal,
        }
    }

    /// The wire code.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The spec's name, e.g. `"MODEL_NOT_FOUND"`.
    pub fn name(self) -> &'static str {
        use Status::*;
        match self {
            Ok => "OK",
            BadMagic => "BAD_MAGIC",
            BadVersion => "BAD_VERSION",
            BadChecksum => "BAD_CHECKSUM",
            ModelNotFound => "MODEL_NOT_FOUND",
            InvalidInput => "INVALID_INPUT",
            TooLarge => "TOO_LARGE",
            DeadlineExceeded => "DEADLINE_EXCEEDED",
            Overloaded => "OVERLOADED",
            HandlerError => "HANDLER_ERROR",
            ServerUnavailable => "SERVER_UNAVAILABLE",
            ShuttingDown => "SHUTTING_DOWN",
            CudaUnavailable => "CUDA_UNAVAILABLE",
            Internal => "INTERNAL",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failed call: the status code, a human-readable message, and the call it belongs to.
///
/// Every error of a call (`Client::infer`, `infer_with`, `metadata`, `loan`, `Loan::infer`) names
/// the model it was made for in `model` (but a name over its 63-byte field, which the message
/// names), and its request in `request_id` (0 for a call refused before its request was written,
/// by an argument check or a connect that found no server, and for `Client::loan`). The
/// errors of connect, of `stats` (which names no model) and of the codec leave `model` empty.
/// Displayed as `CODE: model "NAME" (request N): message` (`CODE: message` without a model).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// What kind of failure (never `Status::Ok`).
    pub code: Status,
    /// Details: the server's message for errors it reported, ours otherwise.
    pub message: String,
    /// The request the error belongs to (0 when none, e.g. at connect).
    pub request_id: u64,
    /// The model of the call the error belongs to ("" when none, e.g. at connect).
    pub model: String,
}

impl Error {
    /// An error of `code` with `message`.
    pub fn new(code: Status, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
            request_id: 0,
            model: String::new(),
        }
    }

    pub(crate) fn with_id(mut self, request_id: u64) -> Error {
        self.request_id = request_id;
        self
    }

    /// Name the call this error fails where it does not yet: `model` fills an empty `model`,
    /// `request_id` a 0 one (as `foundation_ml.errors.InferenceError.with_call`). A model name
    /// over its field (the call is INVALID_INPUT, its message naming it by its start) is not
    /// copied: a megabyte of it would be the error's text.
    pub(crate) fn with_call(mut self, model: &str, request_id: u64) -> Error {
        if self.model.is_empty() && model.len() < crate::layout::NAME_SIZE {
            self.model = model.to_string();
        }
        if self.request_id == 0 {
            self.request_id = request_id;
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.model.is_empty(), self.request_id) {
            (true, _) => write!(f, "{}: {}", self.code.name(), self.message),
            (false, 0) => write!(
                f,
                "{}: model {:?}: {}",
                self.code.name(),
                self.model,
                self.message
            ),
            (false, rid) => write!(
                f,
                "{}: model {:?} (request {rid}): {}",
                self.code.name(),
                self.model,
                self.message
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn err<T>(code: Status, message: impl Into<String>) -> Result<T> {
    Err(Error::new(code, message))
}

/// No live server: SERVER_UNAVAILABLE with `msg`.
pub(crate) fn unavailable(msg: impl Into<String>) -> Error {
    Error::new(Status::ServerUnavailable, msg)
}
