//! A call whose server died: the transparent resend of a request it never dispatched
//! (docs/protocol/shm.md section 10.3), and the "not sent" error of a call whose reconnect failed.

use super::Client;
use crate::codec;
use crate::conn::region_instance;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::time::Duration;

impl Client {
    /// `Conn::round_trip` on the connection the call made ready, and the transparent retry of
    /// 10.3: a request the dead server never dispatched (no handler ran it) is sent once more,
    /// its bytes as they were (request id, absolute `deadline_ns`), to a server restarted under
    /// the name, within the same deadline. With none to take it (no server yet, the dead one's
    /// region, a hung or full one, the deadline) the call fails with the first error, the
    /// reconnect's reason appended. A loan never comes here: its inputs were written into the
    /// dead server's area. A request published on a new connection counts a resend (10.5), once
    /// per call: here, or as it is first published if `ready` moved it already.
    pub(super) fn round_trip(
        &mut self,
        rid: u64,
        end: usize,
        deadline: u64,
        spin: Duration,
    ) -> Result<(codec::DecodedResponse, Vec<Tensor>)> {
        if self.moved {
            self.counters.resends += 1; // published below, on the connection ready moved it to
        }
        let conn = self.conn.as_mut().expect("connected by the call");
        // once per call: a call that reconnected as it waited (ready) fails gone, nothing appended
        let gone = match conn.round_trip(rid, end, deadline, spin) {
            Err(e) if conn.unsent() && !self.redialed => e,
            other => return other,
        };
        let (request, instance) = (conn.request_bytes(end), conn.instance_id());
        let again = self.conn(deadline).map_err(Error::from).and_then(|conn| {
            conn.ensure(request.len())?;
            conn.request_area()[..request.len()].copy_from_slice(&request);
            Ok(())
        });
        match again {
            Ok(()) => {
                if !self.moved {
                    self.counters.resends += 1; // published below, on the new connection
                }
                let conn = self.conn.as_mut().expect("reconnected above");
                conn.round_trip(rid, end, deadline, spin)
            }
            Err(e) => Err(not_sent(gone, &e, "not sent again", &self.name, instance)),
        }
    }
}

/// The error of a call whose connect, as it began, found its server gone (an earlier call's
/// failure dropped the connection, 10.3): `gone` with "; not sent: no server has started under
/// that name since" appended, as a call whose reconnect found the same says (nothing of it was
/// written).
pub(crate) fn unsent(gone: Error) -> Error {
    let message = format!(
        "{}; not sent: no server has started under that name since",
        gone.message
    );
    Error { message, ..gone }
}

/// The error of a call whose server (`instance`, under `name`) died or stopped and whose
/// reconnect failed with `e`: `gone`, with "; WHAT: " and the reconnect's reason appended: "no
/// server has started under that name since" while that server's region is still there (the
/// reconnect found it dead, or STOPPED), else `e`'s message.
pub(super) fn not_sent(gone: Error, e: &Error, what: &str, name: &str, instance: u64) -> Error {
    let why = if region_instance(name) == Some(instance) {
        "no server has started under that name since"
    } else {
        &e.message
    };
    let message = format!("{}; {what}: {why}", gone.message);
    Error { message, ..gone }
}
