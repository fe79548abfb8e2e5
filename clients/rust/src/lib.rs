//! # fdn: a Rust client for Foundation's shared-memory (`shm`) inference protocol
//!
//! See [`Client`] and the crate README. std only; the protocol is docs/protocol/shm.md.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_debug_implementations)]

pub mod codec;
pub mod crc32;
mod error;
mod ffi;
pub mod json;
pub mod layout;
mod shm;
mod tensor;
pub mod vectors;

pub use codec::{Limits, Param, TensorRef};
pub use error::{Error, Result, Status};
pub use tensor::{DataType, Element, Tensor};
mod client;
pub use client::{Client, ConnectOptions, InferOptions, Loan, TensorSpec};
