//! Loans: [`Client::loan`] lays the inputs out in the channel's request area and lends them out
//! as a [`Loan`], written in place and sent as they are (docs/protocol/shm.md section 7.2).

use super::check::check_names;
use super::Client;
use crate::codec::{self, RequestFields, TensorRef};
use crate::conn::{deadline_after, Conn};
use crate::error::{err, unavailable, Error, Result, Status};
use crate::layout as l;
use crate::options::TensorSpec;
use crate::shm;
use crate::tensor::{DataType, Element, Tensor};
use std::time::Duration;

impl Client {
    /// Lay out `inputs` in the channel's request area and lend them out for writing in place:
    /// fill [`Loan::input_mut`] (or [`Loan::input_as_mut`]), then [`Loan::infer`] sends them
    /// without another copy. The loan borrows the client; `infer` may be called repeatedly.
    /// If the channel's last request is still with the server (a call that passed its
    /// deadline), this waits for it up to `connect_timeout`, then fails DEADLINE_EXCEEDED;
    /// should the server die (or stop) meanwhile, it reconnects and lends the area of a server
    /// restarted under the name, or fails SERVER_UNAVAILABLE "...; not sent: REASON" (spec 7.5).
    ///
    /// ```no_run
    /// use fdn::{Client, ConnectOptions, DataType, TensorSpec};
    ///
    /// let mut client = Client::connect("demo_server", ConnectOptions::default())?;
    /// let mut loan = client.loan("demo", &[TensorSpec::new("x", DataType::Fp32, &[1, 784])])?;
    /// loan.input_as_mut::<f32>(0)?.fill(0.5);
    /// let outputs = loan.infer(None)?;
    /// # Ok::<(), fdn::Error>(())
    /// ```
    ///
    /// Its errors name the model ([`Error::model`]; no request was sent yet).
    pub fn loan(&mut self, model: &str, inputs: &[TensorSpec]) -> Result<Loan<'_>> {
        self.lend(model, inputs).map_err(|e| e.with_call(model, 0))
    }

    fn lend(&mut self, model: &str, inputs: &[TensorSpec]) -> Result<Loan<'_>> {
        check_names(model, "", inputs.iter().map(|t| t.name.as_str()), &[])?;
        let specs: Vec<(&str, DataType, &[u64])> = inputs
            .iter()
            .map(|t| (t.name.as_str(), t.datatype, t.shape.as_slice()))
            .collect();
        let (refs, end) = codec::layout(&specs, l::request_payload_size(inputs.len(), 0, 0))?;
        let input_bytes: u64 = refs.iter().map(|r| r.data_size as u64).sum();
        // a request still with the server (a call that passed its deadline) gets as long as the
        // C and Go clients give it here: the connect timeout, not forever
        let deadline = deadline_after(Some(self.opts.connect_timeout));
        let conn = self.ready(deadline, false, |c| {
            c.check_limits(inputs.len(), 0, input_bytes)
        })?;
        conn.ensure(end)?;
        let conn_gen = self.conn_gen;
        Ok(Loan {
            client: self,
            model: model.to_string(),
            refs,
            end,
            conn_gen,
            ended: None,
        })
    }
}

/// Input tensors lent out in the channel's request area (see [`Client::loan`]).
///
/// An [`infer`](Loan::infer) that fails while its request is still with the server (it passed
/// its deadline: the server may still be reading the inputs) ends the loan: every later call on
/// it is INVALID_INPUT saying so, and a new loan ([`Client::loan`]) waits until the server is
/// done with the request. The inputs are never writable while the server may read them.
pub struct Loan<'c> {
    client: &'c mut Client,
    model: String,
    refs: Vec<TensorRef>,
    end: usize,
    conn_gen: u64,
    /// The request id of an infer that failed with its request still with the server.
    ended: Option<u64>,
}

impl std::fmt::Debug for Loan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loan")
            .field("model", &self.model)
            .field("inputs", &self.refs)
            .finish()
    }
}

impl Loan<'_> {
    /// The loaned inputs' layout (names, datatypes, shapes, offsets in the request area).
    pub fn inputs(&self) -> &[TensorRef] {
        &self.refs
    }

    /// The index of the input named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.refs.iter().position(|r| r.name == name)
    }

    fn no_input(&self, i: usize) -> Error {
        Error::new(
            Status::InvalidInput,
            format!("no input {i}: the loan has {} inputs", self.refs.len()),
        )
    }

    fn live(&mut self) -> Result<&mut Conn> {
        if self.client.conn.as_ref().is_some_and(Conn::forked) {
            return err(
                Status::InvalidInput,
                "no loan: it was made in the parent process, before fork(), in its request area; \
                 take a new loan in this one",
            );
        }
        let ended = self.ended;
        match self.client.conn.as_mut() {
            Some(c) if c.alive() && self.client.conn_gen == self.conn_gen => match ended {
                None => Ok(c),
                Some(rid) => Err(Error::new(
                    Status::InvalidInput,
                    format!(
                        "this loan ended when its request {rid} failed while still with the \
                         server, which may be reading its inputs: take a new loan (it waits \
                         until the server is done)"
                    ),
                )),
            },
            _ => Err(unavailable(
                "the server of this loan is gone; take a new loan",
            )),
        }
    }

    /// The bytes of input `i`, in shared memory (little-endian, C order).
    pub fn input_mut(&mut self, i: usize) -> Result<&mut [u8]> {
        let r = self.refs.get(i).cloned().ok_or_else(|| self.no_input(i))?;
        let conn = self.live()?;
        Ok(&mut conn.request_area()[r.data_offset..r.data_offset + r.data_size])
    }

    /// Input `i` as elements of `T` (INVALID_INPUT unless `T` is its datatype).
    pub fn input_as_mut<T: Element>(&mut self, i: usize) -> Result<&mut [T]> {
        let r = self.refs.get(i).ok_or_else(|| self.no_input(i))?;
        if r.datatype != T::DTYPE {
            return err(
                Status::InvalidInput,
                format!(
                    "input {i} ({:?}) is {}, not {}",
                    r.name,
                    r.datatype.name(),
                    T::DTYPE.name()
                ),
            );
        }
        let bytes = self.input_mut(i)?;
        shm::cast_mut::<T>(bytes).ok_or_else(|| Error::new(Status::Internal, "misaligned input"))
    }

    /// Send the loaned inputs as they are now; returns the outputs. Every error names the
    /// loan's model ([`Error::model`]) and the request ([`Error::request_id`]; 0 for a call
    /// refused before its request was written: the loan ended, its server gone).
    pub fn infer(&mut self, timeout: Option<Duration>) -> Result<Vec<Tensor>> {
        self.send(timeout).map_err(|e| e.with_call(&self.model, 0))
    }

    fn send(&mut self, timeout: Option<Duration>) -> Result<Vec<Tensor>> {
        let deadline = deadline_after(timeout);
        let rid = self.client.next_id; // taken once the request is written (take_id)
        let flags = self.client.flags();
        let spin = self.client.opts.spin;
        let fields = RequestFields {
            kind: l::KIND_INFER_REQUEST,
            request_id: rid,
            flags,
            model: self.model.clone(),
            deadline_ns: deadline,
            inputs: self.refs.clone(),
            ..RequestFields::default()
        };
        let end = self.end;
        let hung_wait = self.client.opts.connect_timeout; // a hung server's late answer (wait_idle)
        let conn = self.live()?;
        conn.wait_idle(deadline, spin, hung_wait)?;
        let result = codec::write_request(conn.request_area(), &fields)
            .and_then(|_| conn.round_trip(rid, end, deadline, spin))
            .map(|(_, outputs)| outputs);
        if result.is_err() && conn.pending() {
            self.ended = Some(rid); // the server may still read the inputs: lend them no more
        }
        self.client.take_id(rid);
        result.map_err(|e| e.with_call(&self.model, rid))
    }
}
