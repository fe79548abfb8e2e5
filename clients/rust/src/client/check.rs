//! The checks of a call's arguments (names, sizes, connect options), made before anything is
//! written: a bad argument is INVALID_INPUT (or TOO_LARGE) naming it, and nothing is sent.

use crate::codec;
use crate::error::{err, Error, Result, Status};
use crate::layout as l;
use crate::options::{ConnectOptions, MAX_RESPONSE_BYTES_LIMIT};
use crate::tensor::Tensor;

/// Each input's bytes must be as many as its datatype and shape make.
pub(super) fn check_sizes(inputs: &[Tensor]) -> Result<()> {
    for t in inputs {
        if crate::tensor::byte_size(t.datatype, &t.shape) != Some(t.data.len()) {
            return Err(Error::new(
                Status::InvalidInput,
                format!(
                    "tensor {:?}: {} bytes do not match shape {:?}",
                    t.name,
                    t.data.len(),
                    t.shape
                ),
            ));
        }
    }
    Ok(())
}

/// INVALID_INPUT unless the model name, version, input names and output names fit their fields
/// (docs/protocol/shm.md section 5) and no input name comes twice: checked before anything is
/// written, so a loan is never granted for a request that cannot be sent.
pub(super) fn check_names<'a>(
    model: &str,
    version: &str,
    inputs: impl Iterator<Item = &'a str>,
    outputs: &[String],
) -> Result<()> {
    codec::check_fixed(model, l::NAME_SIZE, "model name")?;
    codec::check_fixed(version, l::VERSION_SIZE, "model version")?;
    let mut seen = std::collections::HashSet::new();
    for name in inputs {
        codec::check_fixed(name, l::NAME_SIZE, "input name")?;
        if !seen.insert(name) {
            return err(
                Status::InvalidInput,
                format!("input {name:?} appears twice"),
            );
        }
    }
    for name in outputs {
        codec::check_fixed(name, l::NAME_SIZE, "output name")?;
    }
    Ok(())
}

/// INVALID_INPUT for a `max_response_bytes` outside 4096..=2^48, or a `capacity` over it: the
/// response area starts at `capacity`, so one over the limit would be a limit that is not one
/// (refused rather than either silently winning).
fn check_options(opts: &ConnectOptions) -> Result<()> {
    let max = opts.max_response_bytes;
    if max < l::PAGE || max as u64 > MAX_RESPONSE_BYTES_LIMIT {
        return err(
            Status::InvalidInput,
            format!("max_response_bytes must be 4096..=2^48 bytes, not {max}"),
        );
    }
    match opts.capacity {
        Some(capacity) if capacity > max => err(
            Status::InvalidInput,
            format!(
                "capacity ({capacity} bytes) exceeds max_response_bytes ({max} bytes): the \
                 response area starts at capacity; lower capacity or raise max_response_bytes"
            ),
        ),
        _ => Ok(()),
    }
}

/// The server name of [`Client::connect`] without its `shm://` prefix, once it and the options
/// are found good (INVALID_INPUT otherwise).
pub(crate) fn check_connect<'a>(name: &'a str, opts: &ConnectOptions) -> Result<&'a str> {
    let name = name.strip_prefix("shm://").unwrap_or(name);
    if !l::valid_server_name(name) {
        return err(
            Status::InvalidInput,
            format!(
                "shm server name {name:?} must be 1-{} characters of [A-Za-z0-9_]",
                l::SERVER_NAME_MAX
            ),
        );
    }
    check_options(opts)?;
    Ok(name)
}
