//! One client connection: the CONNECT handshake, then a single task that `select!`s between
//! the socket, the session's outgoing queue, pending acknowledgements and control signals.
//!
//! Reads pause while an inbound PUBLISH is with the platform (or while too many of its
//! acknowledgements are outstanding), but deliveries keep flowing out meanwhile: a connection
//! waiting for room in another session's queue still drains its own, so two clients
//! publishing to each other cannot deadlock.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use lotus_model::authz::{Decision, TopicAction};
use lotus_model::topic::validate_topic_name;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::sync::oneshot::error::TryRecvError;
use tokio::time::{Instant, Sleep, timeout};

use crate::broker::{Inner, PublishResult};
use crate::codec::{
    self, AckKind, ConnAckInfo, ConnectPacket, FirstPacket, Inbound, PublishOut, PublishPacket,
    SubscribeFilter, SubscribePacket, WillPacket,
};
use crate::hooks::{
    AckWaiter, AuthOutcome, BrokerHooks, ClientContext, ConnectRejection, ConnectRequest,
    DisconnectReason, InboundPublish, MqttVersion, QoS, Transport,
};
use crate::message::Delivery;
use crate::router::{SubOptions, parse_filter};
use crate::session::{Inflight, Resumable, Session, Stage};

/// Initial and minimum spare room of the read buffer: enough for a CONNECT or a small PUBLISH.
const READ_MIN: usize = 256;
/// The read buffer grows up to this while reads keep filling it.
const READ_MAX: usize = 64 * 1024;
/// Deliveries taken from the session queue per turn: a subscriber must be able to drain in
/// one turn what a busy publisher queues in one of its turns, or QoS 0 overflows.
const BATCH: usize = 1024;
/// Above this many pending bytes the connection writes before taking more deliveries.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// A write buffer larger than this is freed after a burst instead of kept.
const WRITE_KEEP: usize = 16 * 1024;
/// How long a CONNECT waits for the connection it takes over to finish.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on the final writes and on waiting for the peer to close after the broker did.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
const ACK_DROPPED: &str = "the platform dropped the acknowledgement";

/// Lets the broker close a connection from outside (takeover, `disconnect`, shutdown).
pub(crate) struct ConnControl {
    pub id: u64,
    kick: Mutex<Option<DisconnectReason>>,
    wake: Notify,
    finished: AtomicBool,
    finished_wake: Notify,
}

impl ConnControl {
    pub fn new(id: u64) -> Self {
        Self {
            id,
            kick: Mutex::new(None),
            wake: Notify::new(),
            finished: AtomicBool::new(false),
            finished_wake: Notify::new(),
        }
    }

    /// Asks the connection to close; the first reason given wins.
    pub fn kick(&self, reason: DisconnectReason) {
        self.kick.lock().get_or_insert(reason);
        // A stored permit means the kick is seen even if the task is not waiting right now.
        self.wake.notify_one();
    }

    fn take_kick(&self) -> Option<DisconnectReason> {
        self.kick.lock().take()
    }

    /// Waits until the connection has finished closing (session detached, hooks told).
    pub async fn finished(&self) {
        loop {
            let done = self.finished_wake.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if self.finished.load(Ordering::Acquire) {
                return;
            }
            done.await;
        }
    }

    fn mark_finished(&self) {
        self.finished.store(true, Ordering::Release);
        self.finished_wake.notify_waiters();
    }
}

/// How and why a connection ends.
#[derive(Debug)]
struct Close {
    reason: DisconnectReason,
    /// v5 DISCONNECT reason code to send first, if the broker ends the connection.
    v5_code: Option<u8>,
    publish_will: bool,
}

impl Close {
    fn server(reason: DisconnectReason) -> Self {
        Self {
            v5_code: reason.v5_code(),
            // At shutdown the clients did nothing wrong; their wills would only alarm.
            publish_will: reason != DisconnectReason::ServerShutdown,
            reason,
        }
    }

    fn transport() -> Self {
        Self {
            reason: DisconnectReason::TransportClosed,
            v5_code: None,
            publish_will: true,
        }
    }

    fn client(publish_will: bool) -> Self {
        Self {
            reason: DisconnectReason::ClientDisconnect,
            v5_code: None,
            publish_will,
        }
    }

    fn protocol(detail: impl Into<String>, v5_code: u8) -> Self {
        Self {
            reason: DisconnectReason::ProtocolError(detail.into()),
            v5_code: Some(v5_code),
            publish_will: true,
        }
    }

    fn decode(e: codec::DecodeError) -> Self {
        Self::protocol(e.to_string(), e.v5_code())
    }
}

/// An inbound QoS 1/2 acknowledgement owed to the client. They leave in the order the
/// PUBLISH packets arrived (MQTT 4.6), so a later ready one waits behind an earlier pending one.
struct PendingAck {
    pkid: u16,
    kind: AckKind,
    reason: u8,
    reason_string: Option<String>,
    waiter: Option<AckWaiter>,
}

impl PendingAck {
    fn ok(pkid: u16, kind: AckKind) -> Self {
        Self {
            pkid,
            kind,
            reason: 0,
            reason_string: None,
            waiter: None,
        }
    }
}

/// An inbound QoS 2 message between PUBLISH and PUBREL.
#[derive(Debug, Clone, Copy)]
struct Qos2In {
    pkid: u16,
    /// PUBREC has been sent: the message is safely with the platform.
    rec_sent: bool,
}

type PublishFuture = Pin<Box<dyn Future<Output = (u16, QoS, PublishResult)> + Send>>;

enum Event {
    Kicked,
    Published((u16, QoS, PublishResult)),
    Acked(Result<(), String>),
    Read(io::Result<usize>, usize),
    Outgoing,
    KeepAlive,
}

/// Serves one client from its first byte to its close.
pub(crate) async fn serve<IO, H>(
    inner: Arc<Inner<H>>,
    io: IO,
    transport: Transport,
    peer: SocketAddr,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
    H: BrokerHooks,
{
    // The handshake and the close are boxed so that their (larger) state is only allocated
    // while they run: an idle connection's task holds just the connection and its loop.
    let Some(mut conn) = Box::pin(handshake(inner, io, transport, peer)).await else {
        return;
    };
    let close = conn.run().await;
    Box::pin(conn.close(close)).await;
}

async fn read_first<IO: AsyncRead + Unpin>(
    io: &mut IO,
    buf: &mut BytesMut,
    max: usize,
) -> Result<FirstPacket, String> {
    loop {
        if let Some(p) = codec::decode_connect(buf, max).map_err(|e| e.to_string())? {
            return Ok(p);
        }
        if buf.capacity() - buf.len() < 64 {
            buf.reserve(READ_MIN);
        }
        match io.read_buf(buf).await {
            Ok(0) => return Err("closed before CONNECT".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Writes the last bytes, closes our side, and waits (bounded) for the peer to close too:
/// closing with unread input would reset the connection and could destroy what we just sent.
/// Writes a reply the client must read before the connection ends (dynamic registration),
/// then leaves the closing to the client, within a bound. Closing first would race the
/// client's read: several client libraries drop packets that arrive together with the EOF.
async fn write_and_await_close<IO: AsyncRead + AsyncWrite + Unpin>(io: &mut IO, bytes: &[u8]) {
    let _ = timeout(CLOSE_TIMEOUT, async {
        io.write_all(bytes).await?;
        io.flush().await?;
        let mut sink = [0u8; 256];
        while io.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    })
    .await;
    let _ = timeout(CLOSE_TIMEOUT, io.shutdown()).await;
}

async fn write_and_close<IO: AsyncRead + AsyncWrite + Unpin>(io: &mut IO, bytes: &[u8]) {
    let _ = timeout(CLOSE_TIMEOUT, async {
        io.write_all(bytes).await?;
        io.flush().await?;
        io.shutdown().await?;
        let mut sink = [0u8; 256];
        while io.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    })
    .await;
}

async fn refuse<IO, H>(
    inner: &Inner<H>,
    io: &mut IO,
    version: MqttVersion,
    code: (u8, u8),
    result: &'static str,
    reason: &str,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
    H: BrokerHooks,
{
    inner.metrics.connect(result);
    let mut w = BytesMut::new();
    let (code, info) = match version {
        MqttVersion::V311 => (code.0, ConnAckInfo::default()),
        MqttVersion::V5 => (
            code.1,
            ConnAckInfo {
                reason_string: Some(reason.to_owned()),
                ..Default::default()
            },
        ),
    };
    codec::write_connack(&mut w, version, false, code, info);
    write_and_close(io, &w).await;
}

async fn refuse_with<IO, H>(
    inner: &Inner<H>,
    io: &mut IO,
    version: MqttVersion,
    rejection: ConnectRejection,
    reason: &str,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
    H: BrokerHooks,
{
    let code = (rejection.v4_code(), rejection.v5_code());
    refuse(inner, io, version, code, rejection.as_str(), reason).await;
}

fn assigned_client_id(connection_id: u64) -> String {
    // The start time keeps identifiers from repeating across restarts of the broker.
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    format!("lotus-{start:x}-{connection_id:x}")
}

async fn handshake<IO, H>(
    inner: Arc<Inner<H>>,
    mut io: IO,
    transport: Transport,
    peer: SocketAddr,
) -> Option<Connection<IO, H>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
    H: BrokerHooks,
{
    let id = inner.next_id();
    let config = &inner.config;
    let mut rbuf = BytesMut::with_capacity(READ_MIN);
    let first = timeout(
        config.connect_timeout,
        read_first(&mut io, &mut rbuf, config.max_packet_size),
    )
    .await;
    let c: Box<ConnectPacket> = match first {
        Err(_) => {
            inner.metrics.connect("timeout");
            tracing::debug!(%peer, transport = transport.as_str(), "no CONNECT in time");
            return None;
        }
        Ok(Err(e)) => {
            inner.metrics.connect("protocol_error");
            tracing::debug!(%peer, transport = transport.as_str(), error = %e, "bad first packet");
            return None;
        }
        Ok(Ok(FirstPacket::UnsupportedVersion(level))) => {
            tracing::debug!(%peer, level, "unsupported MQTT protocol level");
            refuse(
                &inner,
                &mut io,
                MqttVersion::V311,
                (0x01, 0x84),
                "unsupported_protocol",
                "",
            )
            .await;
            return None;
        }
        Ok(Ok(FirstPacket::Connect(c))) => c,
    };
    let version = c.version;
    let v5 = version == MqttVersion::V5;

    if c.auth_method.is_some() {
        let reason = "enhanced authentication is not supported";
        refuse(
            &inner,
            &mut io,
            version,
            (0x05, 0x8C),
            "bad_authentication_method",
            reason,
        )
        .await;
        return None;
    }
    let assigned = c.client_id.is_empty();
    if assigned && !v5 && !c.clean_start {
        let reason = "an empty client identifier needs a clean session";
        refuse_with(
            &inner,
            &mut io,
            version,
            ConnectRejection::ClientIdNotValid,
            reason,
        )
        .await;
        return None;
    }
    if inner.shutting_down.load(Ordering::SeqCst) {
        let reason = "the server is shutting down";
        refuse_with(
            &inner,
            &mut io,
            version,
            ConnectRejection::ServerUnavailable,
            reason,
        )
        .await;
        return None;
    }
    if let Some(w) = &c.will
        && let Err(e) = validate_topic_name(&w.topic)
    {
        let reason = format!("invalid will topic: {e}");
        refuse(
            &inner,
            &mut io,
            version,
            (0x05, 0x90),
            "protocol_error",
            &reason,
        )
        .await;
        return None;
    }
    let client_id: Arc<str> = if assigned {
        assigned_client_id(id).into()
    } else {
        c.client_id.as_str().into()
    };

    let outcome = {
        let req = ConnectRequest {
            client_id: &client_id,
            username: c.username.as_deref(),
            password: c.password.as_deref().map(str::as_bytes),
            protocol: version,
            transport,
            peer,
            clean_start: c.clean_start,
            keep_alive: c.keep_alive,
        };
        // Boxed: the authenticator's future can be large and must not inflate every idle
        // connection's task.
        timeout(
            config.auth_timeout,
            Box::pin(inner.hooks.authenticate(&req)),
        )
        .await
    };
    let (principal, session_key) = match outcome {
        Err(_) => {
            tracing::warn!(%peer, %client_id, "authentication timed out");
            let reason = "authentication timed out";
            refuse_with(
                &inner,
                &mut io,
                version,
                ConnectRejection::ServerUnavailable,
                reason,
            )
            .await;
            return None;
        }
        Ok(AuthOutcome::Accept {
            principal,
            session_key,
        }) => (principal, session_key),
        Ok(AuthOutcome::Reject { code, reason }) => {
            tracing::info!(%peer, %client_id, code = code.as_str(), %reason, "connection refused");
            refuse_with(&inner, &mut io, version, code, &reason).await;
            return None;
        }
        Ok(AuthOutcome::ReplyAndClose { topic, payload }) => {
            inner.metrics.connect("reply_and_close");
            let mut w = BytesMut::new();
            codec::write_connack(&mut w, version, false, 0, ConnAckInfo::default());
            if validate_topic_name(&topic).is_ok() {
                PublishOut {
                    topic: &topic,
                    payload: &payload,
                    qos: QoS::AtMostOnce,
                    pkid: 0,
                    retain: false,
                    dup: false,
                    properties: None,
                    expiry: None,
                    sub_id: None,
                }
                .write(&mut w, v5);
            } else {
                tracing::warn!(%topic, "reply-and-close to an invalid topic: only CONNACK sent");
            }
            write_and_await_close(&mut io, &w).await;
            return None;
        }
    };
    let ctx = Arc::new(ClientContext {
        connection_id: id,
        client_id,
        session_key,
        principal,
        protocol: version,
        transport,
        peer,
    });

    if let Some(w) = &c.will
        && let Decision::Deny(reason) = inner.hooks.authorize(&ctx, TopicAction::Publish, &w.topic)
    {
        tracing::warn!(
            %peer,
            client_id = %ctx.client_id,
            principal = %ctx.principal,
            topic = %w.topic,
            %reason,
            "will topic not authorised: connection refused"
        );
        refuse_with(
            &inner,
            &mut io,
            version,
            ConnectRejection::NotAuthorized,
            &reason,
        )
        .await;
        return None;
    }

    let max_keep_alive = config.max_keep_alive;
    let (keep_alive, server_keep_alive) =
        if v5 && max_keep_alive > 0 && (c.keep_alive == 0 || c.keep_alive > max_keep_alive) {
            (max_keep_alive, Some(max_keep_alive))
        } else {
            (c.keep_alive, None)
        };
    let (expiry, announced_expiry) = if v5 {
        let asked = Duration::from_secs(c.session_expiry.into());
        if asked > config.max_session_expiry {
            let max = config.max_session_expiry;
            (max, Some(u32::try_from(max.as_secs()).unwrap_or(u32::MAX)))
        } else {
            (asked, None)
        }
    } else if c.clean_start {
        (Duration::ZERO, None)
    } else {
        (config.max_session_expiry, None)
    };

    let control = Arc::new(ConnControl::new(id));
    let (session, present, resumed) =
        attach_session(&inner, &ctx, &control, c.clean_start, expiry).await;
    inner.register(&ctx, &control);
    if inner.shutting_down.load(Ordering::SeqCst) {
        // Shutdown began while this client was being admitted and did not see it.
        control.kick(DisconnectReason::ServerShutdown);
    }

    let mut wbuf = BytesMut::new();
    let info = ConnAckInfo {
        session_expiry: announced_expiry,
        receive_maximum: Some(config.max_inflight),
        max_packet_size: Some(u32::try_from(config.max_packet_size).unwrap_or(u32::MAX)),
        assigned_client_id: assigned.then(|| ctx.client_id.to_string()),
        server_keep_alive,
        reason_string: None,
    };
    codec::write_connack(
        &mut wbuf,
        version,
        present,
        0,
        if v5 { info } else { Default::default() },
    );

    let keep_alive = (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
    let window = usize::from(
        config
            .max_inflight
            .min(c.receive_maximum.unwrap_or(u16::MAX))
            .max(1),
    );
    let mut conn = Connection {
        io,
        rbuf,
        wbuf,
        read_hint: READ_MIN,
        v5,
        version,
        keep_alive,
        keep_alive_timer: keep_alive.map(|ka| Box::pin(tokio::time::sleep(ka))),
        last_read: Instant::now(),
        window,
        client_max_packet: c.max_packet_size.map_or(usize::MAX, |m| m as usize),
        problem_info: c.request_problem_info,
        expiry,
        inflight: resumed.inflight,
        next_pkid: resumed.next_pkid,
        qos2_in: resumed
            .qos2_in
            .into_iter()
            .map(|pkid| Qos2In {
                pkid,
                rec_sent: true,
            })
            .collect(),
        acks: VecDeque::new(),
        pending: None,
        more_outgoing: false,
        will: c.will.map(Box::new),
        scratch: Vec::new(),
        received: 0,
        sent: 0,
        ctx,
        session,
        control,
        inner,
    };
    conn.retransmit();
    conn.inner.metrics.connect("accepted");
    tracing::debug!(
        connection_id = id,
        client_id = %conn.ctx.client_id,
        principal = %conn.ctx.principal,
        peer = %peer,
        protocol = version.as_str(),
        transport = transport.as_str(),
        session_present = present,
        "client connected"
    );
    conn.inner.hooks.on_connected(&conn.ctx);
    Some(conn)
}

/// Attaches the connection to the session named by its key, taking it over from a connection
/// that still holds it. Returns the session, whether it was resumed, and the state resumed.
async fn attach_session<H: BrokerHooks>(
    inner: &Arc<Inner<H>>,
    ctx: &Arc<ClientContext>,
    control: &Arc<ConnControl>,
    clean_start: bool,
    expiry: Duration,
) -> (Arc<Session>, bool, Resumable) {
    enum Step {
        Retry,
        TakeOver(Arc<ConnControl>),
        Attached(bool, Resumable, Vec<Arc<str>>),
    }
    loop {
        let key = &ctx.session_key;
        let session = inner
            .sessions
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Session::new(inner.next_id(), key.clone(), ctx.clone())))
            .clone();
        let step = {
            let mut st = session.lock();
            if st.ended {
                Step::Retry
            } else if let Some(old) = &st.control {
                Step::TakeOver(old.clone())
            } else {
                let present = !clean_start && st.generation > 0;
                let dropped = if clean_start {
                    st.queue.clear();
                    st.resumable = Resumable::default();
                    st.subscriptions.drain().map(|(filter, _)| filter).collect()
                } else {
                    Vec::new()
                };
                if st.dropped_while_away > 0 {
                    tracing::info!(
                        session = %key,
                        dropped = st.dropped_while_away,
                        "client is back; messages were dropped from its full queue while it was away"
                    );
                    st.dropped_while_away = 0;
                }
                let resumed = std::mem::take(&mut st.resumable);
                st.generation += 1;
                st.expiry = expiry;
                st.ctx = ctx.clone();
                session.set_online(&mut st, Some(control.clone()));
                Step::Attached(present, resumed, dropped)
            }
        };
        match step {
            Step::Retry => tokio::task::yield_now().await,
            Step::TakeOver(old) => {
                tracing::debug!(session = %key, "session taken over by a new connection");
                old.kick(DisconnectReason::SessionTakenOver);
                if timeout(TAKEOVER_TIMEOUT, old.finished()).await.is_err() {
                    tracing::warn!(session = %key, "previous connection did not close in time; taking over anyway");
                    let mut st = session.lock();
                    if st.control.as_ref().is_some_and(|c| c.id == old.id) {
                        session.set_online(&mut st, None);
                    }
                }
            }
            Step::Attached(present, resumed, dropped) => {
                for filter in dropped {
                    if let Ok(f) = parse_filter(&filter) {
                        inner.router.unsubscribe(&f, session.id);
                    }
                }
                return (session, present, resumed);
            }
        }
    }
}

pub(crate) struct Connection<IO, H> {
    inner: Arc<Inner<H>>,
    io: IO,
    rbuf: BytesMut,
    wbuf: BytesMut,
    read_hint: usize,
    ctx: Arc<ClientContext>,
    session: Arc<Session>,
    control: Arc<ConnControl>,
    version: MqttVersion,
    v5: bool,
    /// 1.5 × the keep-alive in force.
    keep_alive: Option<Duration>,
    keep_alive_timer: Option<Pin<Box<Sleep>>>,
    last_read: Instant,
    /// Outbound inflight window: our limit and the client's Receive Maximum.
    window: usize,
    client_max_packet: usize,
    /// v5 Request Problem Information: reason strings on acknowledgements.
    problem_info: bool,
    expiry: Duration,
    inflight: VecDeque<Inflight>,
    next_pkid: u16,
    qos2_in: Vec<Qos2In>,
    acks: VecDeque<PendingAck>,
    /// The inbound PUBLISH being handled by the platform; reading waits for it.
    pending: Option<PublishFuture>,
    /// The session queue holds more than the last batch took.
    more_outgoing: bool,
    /// Boxed: most clients have no will, and every byte here is paid per idle connection.
    will: Option<Box<WillPacket>>,
    scratch: Vec<Delivery>,
    /// Counted locally and added to the metrics once per burst.
    received: u64,
    sent: u64,
}

async fn next_outcome(pending: &mut Option<PublishFuture>) -> (u16, QoS, PublishResult) {
    match pending {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn front_ack(acks: &mut VecDeque<PendingAck>) -> Result<(), String> {
    match acks.front_mut().and_then(|a| a.waiter.as_mut()) {
        Some(w) => w.await.unwrap_or_else(|_| Err(ACK_DROPPED.into())),
        None => std::future::pending().await,
    }
}

async fn tick(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(t) => t.as_mut().await,
        None => std::future::pending().await,
    }
}

impl<IO, H> Connection<IO, H>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
    H: BrokerHooks,
{
    async fn run(&mut self) -> Close {
        loop {
            if let Err(close) = self.step().await {
                return close;
            }
        }
    }

    fn reading(&self) -> bool {
        self.pending.is_none() && self.acks.len() < usize::from(self.inner.config.max_inflight)
    }

    async fn step(&mut self) -> Result<(), Close> {
        self.pull_outgoing();
        self.flush().await?;
        match self.next_event().await {
            Event::Kicked => {
                if let Some(reason) = self.control.take_kick() {
                    return Err(Close::server(reason));
                }
            }
            Event::Published(outcome) => {
                self.pending = None;
                self.finish_publish(outcome)?;
                self.process_input().await?;
            }
            Event::Acked(result) => {
                let ack = self
                    .acks
                    .pop_front()
                    .expect("the front acknowledgement resolved");
                self.send_ack(ack, result)?;
                self.drain_ready_acks()?;
                self.process_input().await?;
            }
            Event::Read(Ok(0), _) => return Err(Close::transport()),
            Event::Read(Err(e), _) => {
                tracing::debug!(client_id = %self.ctx.client_id, error = %e, "read failed");
                return Err(Close::transport());
            }
            Event::Read(Ok(n), spare) => {
                self.last_read = Instant::now();
                if n >= spare {
                    self.read_hint = (self.read_hint * 2).min(READ_MAX);
                } else if n < self.read_hint / 4 {
                    self.read_hint = (self.read_hint / 2).max(READ_MIN);
                }
                self.process_input().await?;
            }
            Event::Outgoing => {}
            Event::KeepAlive => self.check_keep_alive()?,
        }
        self.count();
        Ok(())
    }

    async fn next_event(&mut self) -> Event {
        let reading = self.reading();
        if reading && self.rbuf.capacity() - self.rbuf.len() < READ_MIN {
            self.rbuf.reserve(self.read_hint);
        }
        let spare = self.rbuf.capacity() - self.rbuf.len();
        let has_pending = self.pending.is_some();
        let ack_waiting = self.acks.front().is_some_and(|a| a.waiter.is_some());
        let window_open = self.inflight.len() < self.window;
        let more = self.more_outgoing && window_open;
        let has_timer = self.keep_alive_timer.is_some();
        let Self {
            io,
            rbuf,
            control,
            session,
            pending,
            acks,
            keep_alive_timer,
            ..
        } = self;
        tokio::select! {
            biased;
            () = control.wake.notified() => Event::Kicked,
            outcome = next_outcome(pending), if has_pending => Event::Published(outcome),
            result = front_ack(acks), if ack_waiting => Event::Acked(result),
            r = io.read_buf(rbuf), if reading => Event::Read(r, spare),
            () = std::future::ready(()), if more => Event::Outgoing,
            () = session.readable().notified(), if window_open && !more => Event::Outgoing,
            () = tick(keep_alive_timer), if has_timer => Event::KeepAlive,
        }
    }

    fn check_keep_alive(&mut self) -> Result<(), Close> {
        let Some(ka) = self.keep_alive else {
            return Ok(());
        };
        let now = Instant::now();
        // While reads are paused on the platform, the client's PINGREQs sit unread: that is
        // not the client's fault.
        if !self.reading() {
            self.last_read = now;
        }
        let deadline = self.last_read + ka;
        if now >= deadline {
            return Err(Close {
                reason: DisconnectReason::KeepAliveTimeout,
                v5_code: Some(0x8D),
                publish_will: true,
            });
        }
        if let Some(t) = self.keep_alive_timer.as_mut() {
            t.as_mut().reset(deadline);
        }
        Ok(())
    }

    fn count(&mut self) {
        if self.received > 0 {
            self.inner
                .metrics
                .received
                .increment(std::mem::take(&mut self.received));
        }
        if self.sent > 0 {
            self.inner
                .metrics
                .sent
                .increment(std::mem::take(&mut self.sent));
        }
    }

    /// Handles buffered packets until the buffer runs dry or reading must pause.
    async fn process_input(&mut self) -> Result<(), Close> {
        let max_packet = self.inner.config.max_packet_size;
        loop {
            if let Some(fut) = self.pending.as_mut() {
                // Most publishes finish without waiting: poll once here instead of a round
                // through `select!`.
                match std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
                    Poll::Ready(outcome) => {
                        self.pending = None;
                        self.finish_publish(outcome)?;
                    }
                    Poll::Pending => break,
                }
            }
            if !self.reading() {
                break;
            }
            match codec::decode(&mut self.rbuf, self.version, max_packet) {
                Ok(Some(packet)) => {
                    self.handle(packet)?;
                    // A burst of input must not monopolise the worker: yield now and then
                    // so that the subscribers of this traffic get to send it.
                    tokio::task::consume_budget().await;
                }
                Ok(None) => break,
                Err(e) => return Err(Close::decode(e)),
            }
        }
        if self.rbuf.is_empty() && self.rbuf.capacity() > 4 * self.read_hint.max(1024) {
            // Idle connections should not keep a large buffer from a past burst.
            self.rbuf = BytesMut::new();
        }
        Ok(())
    }

    fn handle(&mut self, packet: Inbound) -> Result<(), Close> {
        match packet {
            Inbound::Publish(p) => self.on_publish(p)?,
            Inbound::PubAck { pkid } => {
                if let Some(i) = self.inflight.iter().position(|f| {
                    f.pkid == pkid
                        && matches!(&f.stage, Stage::Sent(d) if d.qos == QoS::AtLeastOnce)
                }) {
                    self.inflight.remove(i);
                }
            }
            Inbound::PubRec { pkid, reason } => self.on_pubrec(pkid, reason),
            Inbound::PubComp { pkid } => {
                if let Some(i) = self
                    .inflight
                    .iter()
                    .position(|f| f.pkid == pkid && matches!(f.stage, Stage::Released))
                {
                    self.inflight.remove(i);
                }
            }
            Inbound::PubRel { pkid } => {
                let known = match self.qos2_in.iter().position(|q| q.pkid == pkid) {
                    Some(i) => {
                        self.qos2_in.swap_remove(i);
                        true
                    }
                    None => false,
                };
                // v5: 0x92 Packet Identifier not found.
                let reason = if known { 0 } else { 0x92 };
                codec::write_ack(
                    &mut self.wbuf,
                    self.v5,
                    AckKind::PubComp,
                    pkid,
                    reason,
                    None,
                );
            }
            Inbound::Subscribe(s) => self.on_subscribe(s),
            Inbound::Unsubscribe { pkid, filters } => self.on_unsubscribe(pkid, &filters),
            Inbound::PingReq => codec::write_pingresp(&mut self.wbuf),
            Inbound::Disconnect {
                reason,
                session_expiry,
            } => {
                if let Some(e) = session_expiry {
                    if self.expiry.is_zero() && e > 0 {
                        return Err(Close::protocol(
                            "DISCONNECT cannot give a session expiry to a session that had none",
                            0x82,
                        ));
                    }
                    self.expiry =
                        Duration::from_secs(e.into()).min(self.inner.config.max_session_expiry);
                }
                // 0x04: "Disconnect with Will Message".
                return Err(Close::client(reason == 0x04));
            }
            Inbound::Unexpected(what) => {
                return Err(Close::protocol(format!("unexpected {what}"), 0x82));
            }
        }
        Ok(())
    }

    fn on_publish(&mut self, p: PublishPacket) -> Result<(), Close> {
        self.received += 1;
        if p.properties
            .as_ref()
            .is_some_and(|props| props.topic_alias.is_some())
        {
            return Err(Close::protocol("topic aliases are not supported", 0x94));
        }
        if let Err(e) = validate_topic_name(&p.topic) {
            return Err(Close::protocol(format!("invalid topic name: {e}"), 0x90));
        }
        let ack_kind = match p.qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => Some(AckKind::PubAck),
            QoS::ExactlyOnce => Some(AckKind::PubRec),
        };
        if p.qos == QoS::ExactlyOnce && self.qos2_in.iter().any(|q| q.pkid == p.pkid) {
            // A retransmission of a message already taken: acknowledge it again (after the
            // first acknowledgement, if that is still pending), never route it twice.
            return self.queue_ack(PendingAck::ok(p.pkid, AckKind::PubRec));
        }
        if let Decision::Deny(reason) =
            self.inner
                .hooks
                .authorize(&self.ctx, TopicAction::Publish, &p.topic)
        {
            self.inner.metrics.publish_refused.increment(1);
            tracing::warn!(
                client_id = %self.ctx.client_id,
                principal = %self.ctx.principal,
                topic = %p.topic,
                %reason,
                "publish not authorised"
            );
            let Some(kind) = ack_kind else {
                return Ok(());
            };
            if self.v5 {
                return self.queue_ack(PendingAck {
                    reason: 0x87,
                    reason_string: Some(reason.to_string()),
                    ..PendingAck::ok(p.pkid, kind)
                });
            }
            // v3.1.1 has no negative acknowledgement: acknowledge so that the client does not
            // retry, and drop the message.
            if kind == AckKind::PubRec {
                self.qos2_in.push(Qos2In {
                    pkid: p.pkid,
                    rec_sent: false,
                });
            }
            return self.queue_ack(PendingAck::ok(p.pkid, kind));
        }
        if p.qos == QoS::ExactlyOnce {
            self.qos2_in.push(Qos2In {
                pkid: p.pkid,
                rec_sent: false,
            });
        }
        let (pkid, qos) = (p.pkid, p.qos);
        let publish = InboundPublish {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties: p.properties,
        };
        let (inner, ctx, origin) = (self.inner.clone(), self.ctx.clone(), self.session.id);
        self.pending = Some(Box::pin(async move {
            let result = inner.process_publish(&ctx, origin, publish).await;
            (pkid, qos, result)
        }));
        Ok(())
    }

    fn finish_publish(
        &mut self,
        (pkid, qos, result): (u16, QoS, PublishResult),
    ) -> Result<(), Close> {
        let kind = match qos {
            QoS::AtMostOnce => return Ok(()),
            QoS::AtLeastOnce => AckKind::PubAck,
            QoS::ExactlyOnce => AckKind::PubRec,
        };
        let ack = match result {
            PublishResult::Routed(waiter) => PendingAck {
                waiter,
                ..PendingAck::ok(pkid, kind)
            },
            PublishResult::Refused { code, reason } if self.v5 => PendingAck {
                reason: code,
                reason_string: Some(reason),
                ..PendingAck::ok(pkid, kind)
            },
            // v3.1.1: acknowledge anyway; the platform answers on its own reply topics.
            PublishResult::Refused { .. } => PendingAck::ok(pkid, kind),
        };
        self.queue_ack(ack)
    }

    fn queue_ack(&mut self, ack: PendingAck) -> Result<(), Close> {
        self.acks.push_back(ack);
        self.drain_ready_acks()
    }

    /// Sends acknowledgements from the front of the queue for as long as they are ready.
    fn drain_ready_acks(&mut self) -> Result<(), Close> {
        while let Some(front) = self.acks.front_mut() {
            let result = match front.waiter.as_mut() {
                None => Ok(()),
                Some(w) => match w.try_recv() {
                    Ok(r) => r,
                    Err(TryRecvError::Empty) => return Ok(()),
                    Err(TryRecvError::Closed) => Err(ACK_DROPPED.into()),
                },
            };
            let ack = self.acks.pop_front().expect("the front exists");
            self.send_ack(ack, result)?;
        }
        Ok(())
    }

    fn send_ack(&mut self, ack: PendingAck, stored: Result<(), String>) -> Result<(), Close> {
        let (reason, reason_string) = match stored {
            Ok(()) => (ack.reason, ack.reason_string),
            Err(e) if self.v5 => (0x80, Some(e)),
            Err(e) => {
                // v3.1.1 cannot say "failed": close without acknowledging so that the client
                // sends the message again.
                tracing::warn!(
                    client_id = %self.ctx.client_id,
                    principal = %self.ctx.principal,
                    error = %e,
                    "platform could not store a message: closing the connection unacknowledged"
                );
                return Err(Close {
                    reason: DisconnectReason::ServerError(e),
                    v5_code: None,
                    publish_will: true,
                });
            }
        };
        if ack.kind == AckKind::PubRec
            && let Some(i) = self.qos2_in.iter().position(|q| q.pkid == ack.pkid)
        {
            if reason < 0x80 {
                self.qos2_in[i].rec_sent = true;
            } else {
                // A failed PUBREC ends the exchange: the id is free again.
                self.qos2_in.swap_remove(i);
            }
        }
        let reason_string = reason_string.filter(|_| self.problem_info);
        codec::write_ack(
            &mut self.wbuf,
            self.v5,
            ack.kind,
            ack.pkid,
            reason,
            reason_string.as_deref(),
        );
        Ok(())
    }

    fn on_pubrec(&mut self, pkid: u16, reason: u8) {
        let Some(i) = self.inflight.iter().position(|f| f.pkid == pkid) else {
            if self.v5 {
                codec::write_ack(&mut self.wbuf, true, AckKind::PubRel, pkid, 0x92, None);
            }
            return;
        };
        match &self.inflight[i].stage {
            Stage::Sent(d) if d.qos == QoS::ExactlyOnce => {
                if reason >= 0x80 {
                    self.inflight.remove(i);
                    return;
                }
                self.inflight[i].stage = Stage::Released;
            }
            Stage::Sent(_) => return,
            Stage::Released => {}
        }
        codec::write_ack(&mut self.wbuf, self.v5, AckKind::PubRel, pkid, 0, None);
    }

    fn on_subscribe(&mut self, s: SubscribePacket) {
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        for f in &s.filters {
            codes.push(self.subscribe_one(f, s.sub_id, &mut retained));
        }
        codec::write_suback(&mut self.wbuf, self.v5, s.pkid, &codes);
        // Retained messages go out after the SUBACK, through the session queue.
        for d in retained {
            self.session.push_unbounded(d);
        }
    }

    /// Subscribes one filter; returns its SUBACK code.
    fn subscribe_one(
        &mut self,
        f: &SubscribeFilter,
        sub_id: Option<std::num::NonZeroU32>,
        retained: &mut Vec<Delivery>,
    ) -> u8 {
        let (invalid, denied) = if self.v5 { (0x8F, 0x87) } else { (0x80, 0x80) };
        let filter = match parse_filter(&f.filter) {
            Ok(filter) if filter.group.is_some() && f.no_local => {
                tracing::debug!(client_id = %self.ctx.client_id, filter = %f.filter, "No Local on a shared subscription");
                self.inner.metrics.subscribe_refused.increment(1);
                return invalid;
            }
            Ok(filter) => filter,
            Err(e) => {
                tracing::debug!(client_id = %self.ctx.client_id, filter = %f.filter, error = %e, "invalid topic filter");
                self.inner.metrics.subscribe_refused.increment(1);
                return invalid;
            }
        };
        if let Decision::Deny(reason) =
            self.inner
                .hooks
                .authorize(&self.ctx, TopicAction::Subscribe, filter.path)
        {
            self.inner.metrics.subscribe_refused.increment(1);
            tracing::info!(
                client_id = %self.ctx.client_id,
                principal = %self.ctx.principal,
                filter = %f.filter,
                %reason,
                "subscription not authorised"
            );
            return denied;
        }
        let opts = SubOptions {
            qos: f.qos,
            no_local: f.no_local,
            retain_as_published: f.retain_as_published,
            sub_id,
        };
        let existed = self
            .session
            .lock()
            .subscriptions
            .insert(f.filter.as_str().into(), opts)
            .is_some();
        self.inner.router.subscribe(&filter, &self.session, opts);
        self.inner.hooks.on_subscribed(&self.ctx, &f.filter);
        // MQTT 5 §4.8.2: retained messages are not sent for shared subscriptions.
        let send_retained = filter.group.is_none()
            && (f.retain_handling == 0 || (f.retain_handling == 1 && !existed));
        if send_retained {
            let mut messages = Vec::new();
            self.inner.retained.matching(filter.path, &mut messages);
            for msg in messages {
                if self.inner.may_deliver(&self.ctx, &msg.topic) {
                    retained.push(Delivery {
                        qos: msg.qos.min(opts.qos),
                        retain: true,
                        sub_id,
                        msg,
                    });
                }
            }
        }
        f.qos as u8
    }

    fn on_unsubscribe(&mut self, pkid: u16, filters: &[String]) {
        let existed: Vec<bool> = filters
            .iter()
            .map(|f| {
                let existed = self
                    .session
                    .lock()
                    .subscriptions
                    .remove(f.as_str())
                    .is_some();
                if existed && let Ok(filter) = parse_filter(f) {
                    self.inner.router.unsubscribe(&filter, self.session.id);
                }
                existed
            })
            .collect();
        codec::write_unsuback(&mut self.wbuf, self.v5, pkid, &existed);
    }

    fn alloc_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
            let id = self.next_pkid;
            // The window is far below 65535, so a free id is always found.
            if !self.inflight.iter().any(|f| f.pkid == id) {
                return id;
            }
        }
    }

    /// Moves deliveries from the session queue into the write buffer, within the window.
    fn pull_outgoing(&mut self) {
        if self.wbuf.len() >= WRITE_HIGH_WATER {
            self.more_outgoing = true;
            return;
        }
        let room = self.window.saturating_sub(self.inflight.len());
        let mut batch = std::mem::take(&mut self.scratch);
        self.more_outgoing = self.session.pop_batch(
            &mut batch,
            BATCH,
            room,
            self.inner.config.session_queue_limit,
        );
        if !batch.is_empty() {
            let now = Instant::now();
            for d in batch.drain(..) {
                self.write_delivery(d, now);
            }
        }
        // Keep the batch's memory only while deliveries keep coming.
        if self.more_outgoing {
            self.scratch = batch;
        }
    }

    fn write_delivery(&mut self, d: Delivery, now: Instant) {
        if d.msg.is_expired(now) {
            return;
        }
        let pkid = if d.qos == QoS::AtMostOnce {
            0
        } else {
            self.alloc_pkid()
        };
        let out = publish_out(&d, pkid, false, self.v5, now);
        if out.size(self.v5) > self.client_max_packet {
            // MQTT 5 §3.1.2.11.4: a packet too large for the client is discarded.
            tracing::debug!(client_id = %self.ctx.client_id, topic = %d.msg.topic, "delivery exceeds the client's maximum packet size");
            return;
        }
        out.write(&mut self.wbuf, self.v5);
        self.sent += 1;
        if d.qos != QoS::AtMostOnce {
            self.inflight.push_back(Inflight {
                pkid,
                stage: Stage::Sent(d),
            });
        }
    }

    /// Resends what a resumed session left unacknowledged (MQTT 4.4).
    fn retransmit(&mut self) {
        let now = Instant::now();
        for f in &self.inflight {
            match &f.stage {
                Stage::Sent(d) => {
                    publish_out(d, f.pkid, true, self.v5, now).write(&mut self.wbuf, self.v5)
                }
                Stage::Released => {
                    codec::write_ack(&mut self.wbuf, self.v5, AckKind::PubRel, f.pkid, 0, None)
                }
            }
        }
    }

    async fn flush(&mut self) -> Result<(), Close> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let write_timeout = self.inner.config.write_timeout;
        let Self { io, wbuf, .. } = self;
        let written = timeout(write_timeout, async {
            io.write_all(wbuf).await?;
            io.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(client_id = %self.ctx.client_id, error = %e, "write failed");
                return Err(Close::transport());
            }
            Err(_) => {
                tracing::warn!(
                    client_id = %self.ctx.client_id,
                    principal = %self.ctx.principal,
                    "client stopped reading: closing the connection"
                );
                return Err(Close::transport());
            }
        }
        self.wbuf.clear();
        if self.wbuf.capacity() > WRITE_KEEP {
            self.wbuf = BytesMut::new();
        }
        Ok(())
    }

    /// At shutdown: finish the publish in progress and hand out every acknowledgement the
    /// platform still confirms in time.
    async fn drain_for_shutdown(&mut self) {
        let bound = self.inner.config.shutdown_timeout;
        let _ = timeout(bound, async {
            if let Some(fut) = self.pending.take() {
                let outcome = fut.await;
                if self.finish_publish(outcome).is_err() {
                    return;
                }
            }
            while let Some(front) = self.acks.front_mut() {
                let result = match front.waiter.take() {
                    Some(w) => w.await.unwrap_or_else(|_| Err(ACK_DROPPED.into())),
                    None => Ok(()),
                };
                let ack = self.acks.pop_front().expect("the front exists");
                if self.send_ack(ack, result).is_err() {
                    return;
                }
            }
        })
        .await;
    }

    async fn close(mut self, close: Close) {
        let Close {
            reason,
            v5_code,
            publish_will: will_wanted,
        } = close;
        if reason == DisconnectReason::ServerShutdown {
            self.drain_for_shutdown().await;
        }
        if self.v5
            && let Some(code) = v5_code
        {
            let detail = match &reason {
                DisconnectReason::ProtocolError(s) | DisconnectReason::Kicked(s) => {
                    Some(s.as_str())
                }
                _ => None,
            };
            codec::write_disconnect_v5(&mut self.wbuf, code, detail);
        }
        let initiated_here = reason != DisconnectReason::TransportClosed
            && reason != DisconnectReason::ClientDisconnect;
        let _ = timeout(CLOSE_TIMEOUT, async {
            if !self.wbuf.is_empty() {
                self.io.write_all(&self.wbuf).await?;
            }
            self.io.flush().await?;
            self.io.shutdown().await
        })
        .await;
        self.count();

        // Detach from the session; a persistent one keeps what the client has not finished.
        let detached = {
            let mut st = self.session.lock();
            if st.control.as_ref().is_some_and(|c| c.id == self.control.id) {
                self.session.set_online(&mut st, None);
                st.expiry = self.expiry;
                if !self.expiry.is_zero() {
                    st.resumable = Resumable {
                        inflight: std::mem::take(&mut self.inflight),
                        qos2_in: self
                            .qos2_in
                            .iter()
                            .filter(|q| q.rec_sent)
                            .map(|q| q.pkid)
                            .collect(),
                        next_pkid: self.next_pkid,
                    };
                }
                Some(st.generation)
            } else {
                None
            }
        };
        self.session.wake_writers();
        let persistent_generation = match detached {
            Some(generation) if !self.expiry.is_zero() => {
                self.inner
                    .expire_later(self.session.clone(), generation, self.expiry);
                Some(generation)
            }
            Some(_) => {
                self.inner.end_session(&self.session);
                None
            }
            None => None,
        };
        self.inner.unregister(&self.ctx, &self.control);

        if will_wanted && let Some(will) = self.will.take() {
            let (inner, ctx, session) =
                (self.inner.clone(), self.ctx.clone(), self.session.clone());
            publish_will(
                inner,
                ctx,
                session,
                self.expiry,
                *will,
                persistent_generation,
            )
            .await;
        }
        if matches!(reason, DisconnectReason::ProtocolError(_)) {
            tracing::info!(client_id = %self.ctx.client_id, principal = %self.ctx.principal, %reason, "client disconnected");
        } else {
            tracing::debug!(client_id = %self.ctx.client_id, principal = %self.ctx.principal, %reason, "client disconnected");
        }
        self.inner.hooks.on_disconnected(&self.ctx, &reason);
        self.control.mark_finished();

        if initiated_here {
            // Let the client read what we sent before the socket goes: closing with unread
            // input resets the connection, which can destroy our last packets in flight.
            let _ = timeout(CLOSE_TIMEOUT, async {
                let mut sink = [0u8; 256];
                while self.io.read(&mut sink).await? > 0 {}
                io::Result::Ok(())
            })
            .await;
        }
    }
}

/// Publishes a will as the client that left it (through `on_publish`, like any PUBLISH).
/// `persistent_generation` is set when the session outlives the connection: only then can a
/// v5 Will Delay hold the will back in case the client returns.
async fn publish_will<H: BrokerHooks>(
    inner: Arc<Inner<H>>,
    ctx: Arc<ClientContext>,
    session: Arc<Session>,
    expiry: Duration,
    will: WillPacket,
    persistent_generation: Option<u64>,
) {
    let origin = session.id;
    let publish = InboundPublish {
        topic: will.topic.into(),
        payload: will.payload,
        qos: will.qos,
        retain: will.retain,
        properties: will.properties,
    };
    match persistent_generation {
        // MQTT 5 Will Delay: publish only if the client has not come back by then (and no
        // later than the session's end).
        Some(generation) if will.delay > 0 => {
            let delay = Duration::from_secs(will.delay.into()).min(expiry);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if session.lock().generation == generation {
                    inner.process_publish(&ctx, origin, publish).await;
                }
            });
        }
        _ => {
            inner.process_publish(&ctx, origin, publish).await;
        }
    }
}

fn publish_out(d: &Delivery, pkid: u16, dup: bool, v5: bool, now: Instant) -> PublishOut<'_> {
    PublishOut {
        topic: &d.msg.topic,
        payload: &d.msg.payload,
        qos: d.qos,
        pkid,
        retain: d.retain,
        dup,
        properties: if v5 {
            d.msg.properties.as_deref()
        } else {
            None
        },
        expiry: if v5 {
            d.msg.remaining_expiry(now).map(|e| e.max(1))
        } else {
            None
        },
        sub_id: if v5 { d.sub_id } else { None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Broker;
    use crate::config::BrokerConfig;
    use crate::hooks::PublishVerdict;
    use lotus_model::authz::Decision;

    struct Nothing;

    impl BrokerHooks for Nothing {
        async fn authenticate(&self, _: &ConnectRequest<'_>) -> AuthOutcome {
            AuthOutcome::Reject {
                code: ConnectRejection::NotAuthorized,
                reason: String::new(),
            }
        }
        fn authorize(&self, _: &ClientContext, _: TopicAction, _: &str) -> Decision {
            Decision::Allow
        }
        async fn on_publish(&self, _: &ClientContext, _: &InboundPublish) -> PublishVerdict {
            PublishVerdict::Route { ack: None }
        }
        fn on_connected(&self, _: &ClientContext) {}
        fn on_disconnected(&self, _: &ClientContext, _: &DisconnectReason) {}
    }

    fn size_of_future<F: Future>(_: &F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every idle connection is one of these futures: keep it small (18k idle connections
    /// must fit in a few KiB each).
    #[tokio::test]
    async fn connection_task_stays_small() {
        let broker = Broker::new(BrokerConfig::default(), Arc::new(Nothing));
        let (io, _peer) = tokio::io::duplex(64);
        let fut = serve(
            broker.inner().clone(),
            io,
            Transport::Tcp,
            "127.0.0.1:1".parse().unwrap(),
        );
        let size = size_of_future(&fut);
        println!("connection future: {size} bytes");
        assert!(size <= 1024, "connection future is {size} bytes");
    }
}
