//! The control calls: [`Client::metadata`] and [`Client::stats`] (METADATA and STATS requests,
//! docs/protocol/shm.md section 5), sent as an INFER request is, with no tensors.

use super::Client;
use crate::codec::{self, RequestFields};
use crate::conn::deadline_after;
use crate::error::Result;
use crate::layout as l;
use std::time::Duration;

impl Client {
    fn control(&mut self, kind: u16, model: &str, timeout: Option<Duration>) -> Result<String> {
        self.control_request(kind, model, timeout)
            .map_err(|e| e.with_call(model, 0))
    }

    fn control_request(
        &mut self,
        kind: u16,
        model: &str,
        timeout: Option<Duration>,
    ) -> Result<String> {
        let deadline = deadline_after(timeout);
        let spin = self.opts.spin;
        let rid = self.next_id; // taken once the request is written (take_id)
        let conn = self.ready(deadline, true, |_| Ok(()))?;
        let fields = RequestFields {
            kind,
            request_id: rid,
            model: model.to_string(),
            deadline_ns: deadline,
            ..RequestFields::default()
        };
        let area = conn.request_area();
        let written = codec::write_request(area, &fields);
        self.take_id(rid);
        written
            .and_then(|payload| self.round_trip(rid, l::MSG_HEADER_SIZE + payload, deadline, spin))
            .map(|(dec, _)| dec.text)
            .map_err(|e| e.with_call(model, rid))
    }

    /// The metadata document of `model` (JSON text: its inputs and outputs).
    pub fn metadata(&mut self, model: &str, timeout: Option<Duration>) -> Result<String> {
        self.control(l::KIND_METADATA_REQUEST, model, timeout)
    }

    /// The server's metrics document (JSON text).
    pub fn stats(&mut self, timeout: Option<Duration>) -> Result<String> {
        self.control(l::KIND_STATS_REQUEST, "", timeout)
    }
}
