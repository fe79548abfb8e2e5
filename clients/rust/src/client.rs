//! The public client: [`Client`] (connect by name, infer, metadata, stats, reconnect after a
//! server died) and [`Loan`] (inputs written in place in the request area).
//! docs/protocol/shm.md sections 7.2 (one request) and 10.1 (connect, disconnect); the
//! connection's mechanics are in `conn`.

use crate::codec::{self, RequestFields, TensorRef};
use crate::conn::{deadline_after, region_instance, Conn};
use crate::error::{err, unavailable, Error, Result, Status};
use crate::layout as l;
use crate::options::{ConnectOptions, InferOptions, TensorSpec, MAX_RESPONSE_BYTES_LIMIT};
use crate::shm;
use crate::tensor::{DataType, Element, Tensor};
use std::time::Duration;

/// Each input's bytes must be as many as its datatype and shape make.
fn check_sizes(inputs: &[Tensor]) -> Result<()> {
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
fn check_names<'a>(
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

/// A connection to a Foundation shm server: one claimed channel, one request at a time.
///
/// Calls take `&mut self`; for requests in flight at once, connect several clients (each claims
/// its own channel), or share a [`crate::Pool`] of them among threads. Dropping the client frees its channel and unlinks its data segment. If the
/// server dies, calls fail with [`Status::ServerUnavailable`] and the next call reconnects.
///
/// ```no_run
/// use fdn::{Client, ConnectOptions, Tensor};
/// use std::time::Duration;
///
/// let mut client = Client::connect("demo_server", ConnectOptions::default())?;
/// let x = Tensor::from_slice("x", &[1, 784], &vec![0.5f32; 784])?;
/// let outputs = client.infer("demo", &[x], Some(Duration::from_secs(1)))?;
/// let y: Vec<f32> = outputs[0].to_vec()?;
/// assert_eq!(y.len(), 10);
/// # Ok::<(), fdn::Error>(())
/// ```
pub struct Client {
    name: String,
    opts: ConnectOptions,
    conn: Option<Conn>,
    conn_gen: u64,
    next_id: u64,
    /// This call reconnected after its server died as it waited for an abandoned request's late
    /// answer (`ready`): its request is not sent again.
    redialed: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("name", &self.name)
            .field("channel", &self.conn.as_ref().map(Conn::index))
            .finish()
    }
}

impl Client {
    /// Connect to the server `name` (1-32 characters of `[A-Za-z0-9_]`; an `shm://` prefix is
    /// accepted) and claim a channel. Fails with SERVER_UNAVAILABLE if no live server serves
    /// `name`, OVERLOADED if it has no free channel, INVALID_INPUT for a `max_response_bytes`
    /// out of range or a `capacity` over it.
    pub fn connect(name: &str, opts: ConnectOptions) -> Result<Client> {
        let name = check_connect(name, &opts)?;
        Client::connect_by(name, opts, 0)
    }

    /// [`Client::connect`] of a name and options already checked, its waits no later than
    /// `deadline` (monotonic ns, 0 for none; then DEADLINE_EXCEEDED): a [`crate::Pool`]'s.
    pub(crate) fn connect_by(name: &str, opts: ConnectOptions, deadline: u64) -> Result<Client> {
        let conn = Conn::open(name, &opts, deadline)?;
        Ok(Client {
            name: name.to_string(),
            opts,
            conn: Some(conn),
            conn_gen: 1,
            next_id: 1,
            redialed: false,
        })
    }

    /// Whether the client lost its server: found dead or stopped, or not reconnected since.
    pub(crate) fn lost(&self) -> bool {
        !self.conn.as_ref().is_some_and(Conn::alive)
    }

    /// Whether the channel's last request is still with the server (a call that passed its
    /// deadline).
    pub(crate) fn pending(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.alive() && c.pending())
    }

    /// The server name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The index of the claimed channel (`None` after the server died, until the next call).
    pub fn channel(&self) -> Option<usize> {
        self.conn.as_ref().map(Conn::index)
    }

    /// The live connection, reconnecting if the previous server is gone (no later than the
    /// calling request's `deadline`, monotonic ns, 0 for none).
    fn conn(&mut self, deadline: u64) -> Result<&mut Conn> {
        if let Some(c) = self.conn.as_mut() {
            // A server that stopped cleanly says so in its region: reconnect now rather than
            // after a wait slice.
            c.notice_stop();
        }
        if self.conn.as_ref().is_some_and(|c| !c.alive()) {
            if let Some(mut old) = self.conn.take() {
                old.release(Duration::ZERO);
            }
        }
        if self.conn.is_none() {
            self.conn = Some(Conn::open(&self.name, &self.opts, deadline)?);
            self.conn_gen += 1;
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// The connection made ready for a call: connected (`conn`), `check` passed, its channel
    /// idle (`Conn::wait_idle`: a call that passed its deadline may have left its request with
    /// the server). A server found gone while the call waits for that late answer (spec 7.5: its
    /// process proven dead, or its region STOPPED) never had this call's request: the call
    /// reconnects, to send it to a server restarted under the name within its deadline (`check`
    /// passed there too); without one it fails gone, "; not sent: " and why appended. Nothing of
    /// the call was published, so a region STOPPED while its process lives is no reason to fail
    /// it as if it might have run (the resend, which needs proof of death, is another matter).
    /// That reconnect is the call's one more attempt (`redialed`): its request is not sent again
    /// (`round_trip`).
    fn ready(&mut self, deadline: u64, check: impl Fn(&Conn) -> Result<()>) -> Result<&mut Conn> {
        let (spin, hung_wait) = (self.opts.spin, self.opts.connect_timeout);
        self.redialed = false;
        let conn = self.conn(deadline)?;
        check(conn)?;
        let instance = conn.instance_id();
        let gone = match conn.wait_idle(deadline, spin, hung_wait) {
            Err(e) if !conn.alive() => e, // found gone (a hung server leaves it alive)
            Err(e) => return Err(e),
            Ok(()) => return Ok(self.conn.as_mut().expect("connected above")),
        };
        self.redialed = true;
        if let Err(e) = self.conn(deadline).map(|_| ()) {
            return Err(not_sent(gone, &e, "not sent", &self.name, instance));
        }
        let conn = self.conn.as_mut().expect("connected above");
        check(conn)?;
        Ok(conn)
    }

    /// The flags of an INFER request: `FLAG_DATA_CRC` when asked for.
    fn flags(&self) -> u32 {
        if self.opts.data_crc {
            l::FLAG_DATA_CRC
        } else {
            0
        }
    }

    /// Take the number `rid` (the value of `next_id`, read before the call's connection was
    /// borrowed) for a request now written: a call refused before that sent nothing and names no
    /// request (0), as in the C and Go clients, and takes no number.
    fn take_id(&mut self, rid: u64) {
        debug_assert_eq!(rid, self.next_id);
        self.next_id = rid.wrapping_add(1).max(1);
    }

    /// Run `model` on `inputs`; returns its outputs (copied out of shared memory).
    /// `timeout`: fail with DEADLINE_EXCEEDED after this long (`None`: no deadline; a dead
    /// server is still reported within one 50 ms wait slice).
    pub fn infer(
        &mut self,
        model: &str,
        inputs: &[Tensor],
        timeout: Option<Duration>,
    ) -> Result<Vec<Tensor>> {
        self.infer_with(
            model,
            inputs,
            &InferOptions {
                timeout,
                ..InferOptions::default()
            },
        )
    }

    /// [`Client::infer`] with a model version, a selection of outputs, parameters. Every error
    /// names the model ([`Error::model`]) and the request ([`Error::request_id`]; 0 for a call
    /// refused before its request was written: a bad argument, no server to connect to).
    pub fn infer_with(
        &mut self,
        model: &str,
        inputs: &[Tensor],
        options: &InferOptions,
    ) -> Result<Vec<Tensor>> {
        self.infer_request(model, inputs, options)
            .map_err(|e| e.with_call(model, 0))
    }

    fn infer_request(
        &mut self,
        model: &str,
        inputs: &[Tensor],
        options: &InferOptions,
    ) -> Result<Vec<Tensor>> {
        let deadline = deadline_after(options.timeout);
        let params = codec::encode_params(&options.params)?;
        if params.len() > l::MAX_PARAMS {
            return Err(Error::new(
                Status::TooLarge,
                format!(
                    "params are {} bytes of JSON (at most {})",
                    params.len(),
                    l::MAX_PARAMS
                ),
            ));
        }
        let names = inputs.iter().map(|t| t.name.as_str());
        check_names(model, &options.version, names, &options.outputs)?;
        let flags = self.flags();
        let spin = self.opts.spin;
        let specs: Vec<(&str, DataType, &[u64])> = inputs
            .iter()
            .map(|t| (t.name.as_str(), t.datatype, t.shape.as_slice()))
            .collect();
        check_sizes(inputs)?;
        let payload = l::request_payload_size(inputs.len(), options.outputs.len(), params.len());
        let (refs, end) = codec::layout(&specs, payload)?;
        let input_bytes: u64 = inputs.iter().map(|t| t.data.len() as u64).sum();
        let rid = self.next_id; // taken once the request is written (take_id)
        let outputs = options.outputs.len();
        let conn = self.ready(deadline, |c| {
            c.check_limits(inputs.len(), outputs, input_bytes)
        })?;
        conn.ensure(end)?;
        let area = conn.request_area();
        for (r, t) in refs.iter().zip(inputs) {
            area[r.data_offset..r.data_offset + r.data_size].copy_from_slice(&t.data);
        }
        let fields = RequestFields {
            kind: l::KIND_INFER_REQUEST,
            request_id: rid,
            flags,
            model: model.to_string(),
            version: options.version.clone(),
            deadline_ns: deadline,
            inputs: refs,
            outputs: options.outputs.clone(),
            params,
        };
        let written = codec::write_request(area, &fields);
        self.take_id(rid);
        written
            .and_then(|_| self.round_trip(rid, end, deadline, spin))
            .map(|(_, outputs)| outputs)
            .map_err(|e| e.with_call(model, rid))
    }

    /// `Conn::round_trip` on the connection the call made ready, and the transparent retry of
    /// 10.3: a request the dead server never dispatched (no handler ran it) is sent once more,
    /// its bytes as they were (request id, absolute `deadline_ns`), to a server restarted under
    /// the name, within the same deadline. With none to take it (no server yet, the dead one's
    /// region, a hung or full one, the deadline) the call fails with the first error, the
    /// reconnect's reason appended. A loan never comes here: its inputs were written into the
    /// dead server's area.
    fn round_trip(
        &mut self,
        rid: u64,
        end: usize,
        deadline: u64,
        spin: Duration,
    ) -> Result<(codec::DecodedResponse, Vec<Tensor>)> {
        let conn = self.conn.as_mut().expect("connected by the call");
        // once per call: a call that reconnected as it waited (ready) fails gone, nothing appended
        let gone = match conn.round_trip(rid, end, deadline, spin) {
            Err(e) if conn.unsent() && !self.redialed => e,
            other => return other,
        };
        let (request, instance) = (conn.request_bytes(end), conn.instance_id());
        let again = self.conn(deadline).and_then(|conn| {
            conn.ensure(request.len())?;
            conn.request_area()[..request.len()].copy_from_slice(&request);
            Ok(conn)
        });
        match again {
            Ok(conn) => conn.round_trip(rid, end, deadline, spin),
            Err(e) => Err(not_sent(gone, &e, "not sent again", &self.name, instance)),
        }
    }

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
        let conn = self.ready(deadline, |_| Ok(()))?;
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
        let conn = self.ready(deadline, |c| c.check_limits(inputs.len(), 0, input_bytes))?;
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

/// The error of a call whose server (`instance`, under `name`) died or stopped and whose
/// reconnect failed with `e`: `gone`, with "; WHAT: " and the reconnect's reason appended: "no
/// server has started under that name since" while that server's region is still there (the
/// reconnect found it dead, or STOPPED: "is not serving (state 3)"), else `e`'s message.
fn not_sent(gone: Error, e: &Error, what: &str, name: &str, instance: u64) -> Error {
    let why = if region_instance(name) == Some(instance) {
        "no server has started under that name since"
    } else {
        &e.message
    };
    let message = format!("{}; {what}: {why}", gone.message);
    Error { message, ..gone }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.release(self.opts.connect_timeout.min(Duration::from_secs(1)));
        }
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

// A client can move to another thread.
const _: () = {
    const fn send<T: Send>() {}
    send::<Client>();
};
