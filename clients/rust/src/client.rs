//! The public client: [`Client`] (connect by name, infer, reconnect after a server died, and
//! count it: [`Counters`]) and [`Loan`] (inputs written in place in the request area).
//! docs/protocol/shm.md sections 7.2 (one request), 10.1 (connect, disconnect) and 10.5 (what a
//! client counts); the connection's mechanics are in `conn`.
//!
//! Its parts live in child modules: [`check`] (the arguments' checks, before anything is
//! written), [`resend`] (the transparent resend of 10.3 and the "not sent" error of a failed
//! reconnect), [`control`] (metadata and stats) and [`loan`] ([`Client::loan`] and [`Loan`]).

mod check;
mod control;
mod loan;
mod resend;

pub(crate) use check::check_connect;
use check::{check_names, check_sizes};
pub use loan::Loan;
use resend::not_sent;
pub(crate) use resend::unsent;

use crate::codec::{self, RequestFields};
use crate::conn::{deadline_after, Conn, Refused};
use crate::error::{Error, Result, Status};
use crate::layout as l;
use crate::options::{ConnectOptions, InferOptions};
use crate::tensor::{DataType, Tensor};
use std::time::Duration;

/// What a [`Client`] counts (docs/protocol/shm.md section 10.5; nothing of it is in shared
/// memory): how often its server was found gone under it and a call carried on elsewhere, which
/// the caller otherwise never sees. Both are zero for a new client and only grow.
///
/// Read with [`Client::counters`]: plain numbers, not atomics, because every call takes the
/// client `&mut`, so no read can overlap one (a [`crate::Pool`]'s clients are reached through
/// [`crate::Pool::with_client`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Connections made after the client's first (a channel claimed on a server found under its
    /// name once the previous one was found dead or stopped). A connect that fails is not
    /// counted.
    pub reconnects: u64,
    /// Calls whose request no handler had seen when their server was found gone, published on a
    /// new connection (10.3's transparent resend of a request never dispatched; a call that found
    /// its server stopped before it published, or gone while it waited for an abandoned call's
    /// late answer, 7.5). At most once per call, counted as it is published; a call whose
    /// reconnect fails, one that failed gone because a handler may have run it, and a loan's
    /// call (never sent again) are not counted.
    pub resends: u64,
}

/// A connection to a Foundation shm server: one claimed channel, one request at a time.
///
/// Calls take `&mut self`; for requests in flight at once, connect several clients (each claims
/// its own channel), or share a [`crate::Pool`] of them among threads. Dropping the client frees its channel and unlinks its data segment. If the
/// server dies, calls fail with [`Status::ServerUnavailable`] and the next call reconnects.
///
/// A client is the process's that connected it: its copy in a child forked since (`fork()`)
/// leaves the parent's channel and data segment alone. Dropped there it frees the copy only; its
/// next call connects a channel of the child's own (a reconnect, [`Counters`]); a [`Loan`] made
/// before the fork is refused there (INVALID_INPUT).
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
    /// This call's request, not yet published, was moved to a new connection (`ready`: its server
    /// found stopped as the call began, or gone as it waited): a resend once it is published.
    moved: bool,
    counters: Counters,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("name", &self.name)
            .field("channel", &self.channel())
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
        Client::connect_refused(name, opts, deadline).map_err(Error::from)
    }

    /// [`Client::connect_by`], its failure saying whether the region's server is gone (a
    /// [`crate::Pool`]'s call then says that nothing of it was sent, spec 10.3).
    pub(crate) fn connect_refused(
        name: &str,
        opts: ConnectOptions,
        deadline: u64,
    ) -> std::result::Result<Client, Refused> {
        let conn = Conn::open(name, &opts, deadline)?;
        Ok(Client {
            name: name.to_string(),
            opts,
            conn: Some(conn),
            conn_gen: 1,
            next_id: 1,
            redialed: false,
            moved: false,
            counters: Counters::default(),
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

    /// How often this client reconnected and sent a call's request to a new connection
    /// ([`Counters`], spec 10.5). Never waits, never touches shared memory.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The server name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The index of the claimed channel (`None` after the server died, or in a child forked since
    /// the connect, until the next call).
    pub fn channel(&self) -> Option<usize> {
        self.conn.as_ref().filter(|c| !c.forked()).map(Conn::index)
    }

    /// The live connection, reconnecting if the previous server is gone (no later than the
    /// calling request's `deadline`, monotonic ns, 0 for none). A server found stopped here, as
    /// a call begins, makes that call `moved` (10.5: its request goes to the new connection).
    /// Refused says whether a reconnect failed because the region's server is gone.
    fn conn(&mut self, deadline: u64) -> Result<&mut Conn, Refused> {
        // A connection made before this process was forked is the parent's: left to it, this
        // copy connects a channel of its own, a reconnect (spec 10.5).
        if self.conn.as_ref().is_some_and(Conn::forked) {
            self.conn.take().expect("checked above").forget();
        }
        // A server that stopped cleanly says so in its region: reconnect now rather than after a
        // wait slice.
        if self.conn.as_mut().is_some_and(Conn::notice_stop) {
            self.moved = true;
        }
        if self.conn.as_ref().is_some_and(|c| !c.alive()) {
            if let Some(mut old) = self.conn.take() {
                old.release(Duration::ZERO);
            }
        }
        if self.conn.is_none() {
            self.conn = Some(Conn::open(&self.name, &self.opts, deadline)?);
            self.conn_gen += 1;
            self.counters.reconnects += 1; // the first connection was connect's
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
    /// (`round_trip`). Either reconnect (this one, or `conn`'s after a server found stopped as the
    /// call began) makes the call a resend once its request is published (`moved`, 10.5). A call
    /// (`sends`: not a loan's begin, which sends nothing) whose connect here finds its server gone
    /// (an earlier call's failure dropped the connection) says that nothing of it was sent, where
    /// the bare "... is gone" would read as a call its handler may have run (10.3).
    fn ready(
        &mut self,
        deadline: u64,
        sends: bool,
        check: impl Fn(&Conn) -> Result<()>,
    ) -> Result<&mut Conn> {
        let (spin, hung_wait) = (self.opts.spin, self.opts.connect_timeout);
        (self.redialed, self.moved) = (false, false);
        let conn = match self.conn(deadline) {
            Ok(conn) => conn,
            Err(refused) if refused.gone && sends => return Err(unsent(refused.error)),
            Err(refused) => return Err(refused.error),
        };
        check(conn)?;
        let instance = conn.instance_id();
        let gone = match conn.wait_idle(deadline, spin, hung_wait) {
            Err(e) if !conn.alive() => e, // found gone (a hung server leaves it alive)
            Err(e) => return Err(e),
            Ok(()) => return Ok(self.conn.as_mut().expect("connected above")),
        };
        self.redialed = true;
        if let Err(refused) = self.conn(deadline).map(|_| ()) {
            return Err(not_sent(
                gone,
                &refused.error,
                "not sent",
                &self.name,
                instance,
            ));
        }
        self.moved = true;
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
        let conn = self.ready(deadline, true, |c| {
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
}

impl Drop for Client {
    fn drop(&mut self) {
        match self.conn.take() {
            Some(conn) if conn.forked() => conn.forget(), // the parent's channel, left to it
            Some(mut conn) => conn.release(self.opts.connect_timeout.min(Duration::from_secs(1))),
            None => {}
        }
    }
}

// A client can move to another thread.
const _: () = {
    const fn send<T: Send>() {}
    send::<Client>();
};
