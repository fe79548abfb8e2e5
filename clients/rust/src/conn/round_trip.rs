//! One round trip (7.2): publish the request, wait for its response, copy the response out of
//! the area and decode it, growing the response area once for a TOO_LARGE answer.

use super::{pages, Conn};
use crate::codec::{self, TensorRef};
use crate::error::{err, Error, Result, Status};
use crate::layout::{self as l, channel as ch, region as rg};
use crate::shm::Mapping;
use crate::tensor::Tensor;
use std::sync::atomic::{fence, Ordering::*};
use std::time::Duration;

/// The error a response with a nonzero `status` fails its call with (section 9): that status with
/// the server's `text` (its name if there is none); INTERNAL naming the code for one this version
/// does not define.
fn server_error(status: u32, text: String) -> Error {
    match Status::from_code(status) {
        Status::Internal if status != Status::Internal.code() => Error::new(
            Status::Internal,
            format!("unknown error code {status}: {text}"),
        ),
        known if text.is_empty() => Error::new(known, known.name()),
        known => Error::new(known, text),
    }
}

/// A CUDA_IPC output is refused: this client never asks for one.
fn refuse_cuda(outputs: &[TensorRef], rid: u64) -> Result<()> {
    if let Some(r) = outputs.iter().find(|r| r.cuda.is_some()) {
        return Err(Error::new(
            Status::Internal,
            format!(
                "output {:?} came as a CUDA_IPC descriptor, which this client did not ask for",
                r.name
            ),
        )
        .with_id(rid));
    }
    Ok(())
}

/// Copy the header and payload of the response at `off` in `data` (an area of `len` bytes) into
/// `snap`: the header and body first, then the rest of the payload if the `payload_size` of
/// that copy fits the area (if not, the copy stops there and the decoder refuses it). Nothing
/// is read from the area twice, so a peer writing it meanwhile cannot pass one check with one
/// value and have another read use another.
pub(crate) fn snapshot_response(data: &Mapping, off: usize, len: usize, snap: &mut Vec<u8>) {
    let head = l::MSG_HEADER_SIZE + l::BODY_SIZE;
    snap.clear();
    if len < head {
        return;
    }
    data.append_to(off, head, snap);
    let payload = u32::from_le_bytes(
        snap[l::msg::PAYLOAD_SIZE..l::msg::PAYLOAD_SIZE + 4]
            .try_into()
            .unwrap_or([0; 4]),
    ) as usize;
    let end = l::MSG_HEADER_SIZE + payload;
    if end > head && end <= len {
        data.append_to(off + head, end - head, snap);
    }
}

/// The data of each checked HOST output, copied out of the response area at `off` of `len`
/// bytes (each range checked once more against the area; bytes the peer changes meanwhile only
/// change the values copied).
pub(crate) fn copy_data(
    data: &Mapping,
    off: usize,
    len: usize,
    outputs: &[TensorRef],
    rid: u64,
) -> Result<Vec<Vec<u8>>> {
    outputs
        .iter()
        .map(|r| {
            if r.cuda.is_some() {
                return Ok(Vec::new());
            }
            if r.data_offset
                .checked_add(r.data_size)
                .map_or(true, |e| e > len)
            {
                return err(
                    Status::Internal,
                    format!("output {:?} lies outside the response area", r.name),
                )
                .map_err(|e: Error| e.with_id(rid));
            }
            let mut v = Vec::new();
            data.append_to(off + r.data_offset, r.data_size, &mut v);
            Ok(v)
        })
        .collect()
}

/// The decoded outputs with their copied data.
fn into_tensors(outputs: &[TensorRef], data: Vec<Vec<u8>>) -> Vec<Tensor> {
    outputs
        .iter()
        .zip(data)
        .map(|(r, data)| Tensor {
            name: r.name.clone(),
            datatype: r.datatype,
            shape: r.shape.clone(),
            data,
        })
        .collect()
}

impl Conn {
    /// Publish the request in the area and wait for its response (7.2 steps 2-7).
    fn exchange(&mut self, deadline: u64, spin: Duration) -> Result<()> {
        let s = self.seq + 1;
        self.seq = s;
        self.ctl.u64(self.base + ch::CLIENT_SEQ).store(s, Release);
        fence(SeqCst);
        if self.ctl.u32(rg::SERVER_SLEEPING).load(SeqCst) == 1 {
            self.bell.post();
        }
        self.wait_for(s, deadline, spin)
    }

    /// Send the request already encoded in the area, and decode its response into tensors.
    /// TOO_LARGE with `required_bytes`: grow the response area and send once more, up to
    /// `max_response_bytes` (more: TOO_LARGE, the area as it was).
    pub(crate) fn round_trip(
        &mut self,
        rid: u64,
        end: usize,
        deadline: u64,
        spin: Duration,
    ) -> Result<(codec::DecodedResponse, Vec<Tensor>)> {
        let mut retried = false;
        loop {
            self.exchange(deadline, spin).map_err(|e| e.with_id(rid))?;
            // Decode from a copy of the header and payload only (never from the area itself,
            // which the server process could rewrite meanwhile); the outputs' data is copied
            // from the area at the offsets checked in that copy.
            let (off, len) = (self.req_cap, self.resp_cap);
            snapshot_response(&self.data, off, len, &mut self.snap);
            let mut copied: Option<Vec<Vec<u8>>> = None;
            let mut copy_err: Option<Error> = None;
            let data = &self.data;
            let dec =
                codec::decode_response_msg(&self.snap, len, &self.limits, &mut |refs, crc| {
                    // FLAG_DATA_CRC: check the bytes this call returns, not a second read of them
                    match copy_data(data, off, len, refs, rid) {
                        Ok(v) => {
                            let crc = v.iter().fold(crc, |c, d| crate::crc32::update(c, d));
                            copied = Some(v);
                            crc
                        }
                        Err(e) => {
                            copy_err = Some(e);
                            crc
                        }
                    }
                });
            if let Some(e) = copy_err {
                return Err(e);
            }
            let dec = dec.map_err(|e| e.with_id(rid))?;
            if dec.request_id != rid {
                return Err(Error::new(
                    Status::BadChecksum,
                    format!("response carries request id {}, not {rid}", dec.request_id),
                )
                .with_id(rid));
            }
            if dec.status != 0 {
                let status = Status::from_code(dec.status);
                if status == Status::TooLarge && dec.required_bytes > self.resp_cap as u64 {
                    // a hostile or broken server could ask for all of /dev/shm: left as it is
                    if dec.required_bytes > self.max_response as u64 {
                        return Err(Error::new(
                            Status::TooLarge,
                            format!(
                                "the response needs {} bytes, more than this client's \
                                 max_response_bytes ({}): connect with a larger \
                                 max_response_bytes to take it",
                                dec.required_bytes, self.max_response
                            ),
                        )
                        .with_id(rid));
                    }
                    if !retried {
                        retried = true;
                        self.regrow(self.req_cap, pages(dec.required_bytes as usize), end)?;
                        continue;
                    }
                }
                return Err(server_error(dec.status, dec.text).with_id(rid));
            }
            refuse_cuda(&dec.outputs, rid)?;
            let data = match copied {
                Some(v) => v,
                None => copy_data(&self.data, off, len, &dec.outputs, rid)?,
            };
            let outputs = into_tensors(&dec.outputs, data);
            return Ok((dec, outputs));
        }
    }
}
