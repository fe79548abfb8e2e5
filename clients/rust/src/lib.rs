//! # fdn: a Rust client for Foundation's shared-memory (`shm`) inference protocol
//!
//! Calls models served by `foundation serve --transport shm` on the same host. std only; the
//! protocol is `docs/protocol/shm.md` in the repository.
//!
//! - [`Client::connect`] claims a channel on a server; [`Client::infer`] sends named
//!   [`Tensor`]s and returns the outputs; [`Client::loan`] lends the request area out so inputs
//!   are written straight into shared memory.
//! - [`Client::counters`] says how often a client reconnected and sent a call's request to a
//!   new connection after its server was found gone ([`Counters`], spec 10.5).
//! - [`Pool`] shares up to `size` clients of one server among threads, connecting them as needed.
//! - Every call returns [`Result`]; an [`Error`] has a [`Status`] (the protocol's error codes)
//!   and a message.
//! - [`codec`], [`layout`], [`crc32`] and [`vectors`] are the protocol's building blocks,
//!   public for tools and tests.
//!
//! ```no_run
//! let mut client = fdn::Client::connect("demo_srv", fdn::ConnectOptions::default())?;
//! let x = fdn::Tensor::from_slice("x", &[1, 784], &[0f32; 784])?;
//! let y = client.infer("demo", &[x], None)?;
//! # Ok::<(), fdn::Error>(())
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_debug_implementations, missing_docs)]

pub mod codec;
pub mod crc32;
mod error;
mod ffi;
mod fork;
pub mod json;
pub mod layout;
mod shm;
mod tensor;
pub mod vectors;

pub use codec::{Limits, Param, TensorRef};
pub use error::{Error, Result, Status};
pub use tensor::{DataType, Element, Tensor};
mod client;
mod conn;
mod options;
mod pool;

// The README's examples are compiled as doc tests too.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use client::{Client, Counters, Loan};
pub use options::{
    ConnectOptions, InferOptions, TensorSpec, MAX_RESPONSE_BYTES, MAX_RESPONSE_BYTES_LIMIT,
};
pub use pool::Pool;
