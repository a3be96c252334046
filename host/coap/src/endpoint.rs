//! The CoAP message layer shared by the three listeners: parsing, piggy-backed ACKs,
//! duplicate detection, block-wise transfer, and the two resources (`/auth`, `/topic/…`).
//!
//! A datagram goes in, at most one datagram comes out; nothing here panics on malformed input,
//! it is answered with a Reset (a confirmable message we cannot parse) or dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use bytes::Bytes;
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use lotus_model::authz::DeviceId;
use serde_json::json;

use crate::access::{AccessError, DeviceAccess, TokenRequest};
use crate::block::{Block, Download, Upload, UploadError, block_of};
use crate::encrypted::{self, Grant, SEQ_OPTION, SeqError, Sessions};
use crate::peer::{PeerTable, Seen};

/// Alibaba's option carrying the `/auth` token on `/topic/…` requests.
pub const TOKEN_OPTION: u16 = 2088;
/// `application/json`.
const JSON: usize = 50;
/// The largest UDP payload; answers never exceed it (large ones go block-wise anyway).
const MAX_DATAGRAM: usize = 65_507;

/// Which of the three CoAP listeners an endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain UDP (5683): token in option 2088.
    Plain,
    /// DTLS with a PSK derived from the device secret (5684): the session is the device.
    Dtls,
    /// Plain UDP with AES-128-GCM payloads (5682).
    Encrypted,
}

impl Mode {
    /// The transport name the device plane records for tokens.
    pub fn transport(self) -> &'static str {
        match self {
            Mode::Plain => "coap",
            Mode::Dtls => "coap-dtls",
            Mode::Encrypted => "coap-encrypted",
        }
    }
}

/// Bounds on what one listener holds and accepts.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body (after Block1 reassembly) and response; larger gets 4.13.
    pub max_body: usize,
    /// Peers whose message-layer state (dedup cache, block transfers) is kept.
    pub max_peers: usize,
    /// Requests processed at once; past that, the listener stops reading (back-pressure).
    pub max_in_flight: usize,
    /// Block size for responses when the client does not ask for one (16…1024).
    pub block_size: usize,
    /// Encrypted-mode keys or DTLS sessions kept at once.
    pub max_sessions: usize,
    /// A DTLS handshake not finished in this time is dropped.
    pub handshake_timeout: Duration,
    /// A DTLS session silent for this long is closed (the device handshakes again).
    pub session_idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 64 * 1024,
            max_peers: 100_000,
            max_in_flight: 1024,
            block_size: 1024,
            max_sessions: 100_000,
            handshake_timeout: Duration::from_secs(30),
            session_idle: Duration::from_secs(30 * 60),
        }
    }
}

/// A response before framing.
#[derive(Debug)]
pub(crate) struct Reply {
    code: ResponseType,
    payload: Vec<u8>,
    json: bool,
    options: Vec<(u16, Vec<u8>)>,
}

impl Reply {
    fn new(code: ResponseType) -> Self {
        Reply {
            code,
            payload: Vec::new(),
            json: false,
            options: Vec::new(),
        }
    }

    /// An error with a human-readable diagnostic payload (RFC 7252 §5.5.2).
    fn text(code: ResponseType, message: impl Into<String>) -> Self {
        Reply {
            payload: message.into().into_bytes(),
            ..Reply::new(code)
        }
    }

    fn json(code: ResponseType, body: Vec<u8>) -> Self {
        Reply {
            payload: body,
            json: true,
            ..Reply::new(code)
        }
    }

    fn option(mut self, number: u16, value: Vec<u8>) -> Self {
        self.options.push((number, value));
        self
    }
}

fn uint(v: u64) -> Vec<u8> {
    encrypted::encode_seq(v)
}

/// Maps the device plane's refusals to CoAP codes. `token_hint` adds what to do about a bad
/// token on `/topic` requests.
fn refusal(e: AccessError, token_hint: bool) -> Reply {
    match e {
        AccessError::BadRequest(m) => Reply::text(ResponseType::BadRequest, m),
        AccessError::Unauthorized(m) if token_hint && !m.contains("/auth") => Reply::text(
            ResponseType::Unauthorized,
            format!("{m}: POST /auth again to get a new token"),
        ),
        AccessError::Unauthorized(m) | AccessError::TokenExpired(m) => {
            Reply::text(ResponseType::Unauthorized, m)
        }
        AccessError::Forbidden(m) => Reply::text(ResponseType::Forbidden, m),
        AccessError::Rejected(reply) => Reply::json(
            ResponseType::BadRequest,
            serde_json::to_vec(&reply).unwrap_or_default(),
        ),
        AccessError::Unavailable(m) => Reply::text(ResponseType::ServiceUnavailable, m),
    }
}

/// One CoAP listener's logic; several sockets (IPv4, IPv6) may share it.
pub struct Endpoint<A> {
    pub(crate) mode: Mode,
    pub(crate) access: Arc<A>,
    pub(crate) limits: Limits,
    peers: PeerTable,
    sessions: Sessions,
    next_mid: AtomicU16,
}

impl<A: DeviceAccess> Endpoint<A> {
    pub fn new(mode: Mode, access: Arc<A>, limits: Limits) -> Arc<Self> {
        Arc::new(Endpoint {
            mode,
            peers: PeerTable::new(limits.max_peers),
            sessions: Sessions::new(limits.max_sessions),
            access,
            limits,
            next_mid: AtomicU16::new(rand::random()),
        })
    }

    /// Drops state of peers and tokens that can no longer matter.
    pub(crate) fn sweep(&self) {
        self.peers.sweep();
        self.sessions.sweep(now_ms());
    }

    /// Handles one datagram from `peer`; `session` is the device a DTLS handshake
    /// authenticated. Returns the datagram to send back, if any.
    pub async fn handle(
        &self,
        peer: SocketAddr,
        session: Option<&DeviceId>,
        datagram: &[u8],
    ) -> Option<Vec<u8>> {
        let request = match Packet::from_bytes(datagram) {
            Ok(p) => p,
            Err(_) => return reset_for_garbage(datagram),
        };
        let kind = request.header.get_type();
        let mid = request.header.message_id;
        let method = match request.header.code {
            MessageClass::Request(m) => m,
            // An empty CON is a CoAP ping: answered with a Reset (RFC 7252 §4.3).
            MessageClass::Empty if kind == MessageType::Confirmable => {
                return Some(reset(mid));
            }
            // ACKs and Resets to us (we send no CONs), and responses: nothing to do, except
            // that a confirmable non-request is rejected.
            _ if kind == MessageType::Confirmable => return Some(reset(mid)),
            _ => return None,
        };
        if !matches!(kind, MessageType::Confirmable | MessageType::NonConfirmable) {
            return None;
        }
        match self.peers.check(peer, mid) {
            Seen::New => {}
            Seen::InFlight => {
                metrics::counter!("lotus_coap_duplicates_total").increment(1);
                return None;
            }
            Seen::Answered(bytes) => {
                metrics::counter!("lotus_coap_duplicates_total").increment(1);
                return Some(bytes);
            }
        }
        metrics::counter!("lotus_coap_requests_total", "transport" => self.mode.transport())
            .increment(1);
        let reply = self.respond(peer, session, method, &request).await;
        let out = self.frame(&request, reply);
        match &out {
            Some(bytes) => self.peers.answered(peer, mid, bytes),
            None => self.peers.forget(peer, mid),
        }
        out
    }

    /// Wraps a reply: piggy-backed on the ACK of a CON, or a NON answering a NON.
    fn frame(&self, request: &Packet, reply: Reply) -> Option<Vec<u8>> {
        let mut p = Packet::new();
        if request.header.get_type() == MessageType::Confirmable {
            p.header.set_type(MessageType::Acknowledgement);
            p.header.message_id = request.header.message_id;
        } else {
            p.header.set_type(MessageType::NonConfirmable);
            p.header.message_id = self.next_mid.fetch_add(1, Ordering::Relaxed);
        }
        p.header.code = MessageClass::Response(reply.code);
        p.set_token(request.get_token().to_vec());
        if reply.json {
            p.add_option(CoapOption::ContentFormat, uint(JSON as u64));
        }
        for (number, value) in reply.options {
            p.add_option(CoapOption::from(number), value);
        }
        p.payload = reply.payload;
        match p.to_bytes_with_limit(MAX_DATAGRAM) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::warn!(error = ?e, "CoAP reply could not be encoded");
                None
            }
        }
    }

    /// Block-wise transfer around the resources.
    async fn respond(
        &self,
        peer: SocketAddr,
        session: Option<&DeviceId>,
        method: RequestType,
        request: &Packet,
    ) -> Reply {
        let path = uri_path(request);
        let block2 = request
            .get_first_option(CoapOption::Block2)
            .map(|v| Block::decode(v));
        let block2 = match block2 {
            Some(None) => {
                return Reply::text(ResponseType::BadOption, "Block2 option is malformed");
            }
            Some(Some(b)) => Some(b),
            None => None,
        };
        // A later block of a response too large for one datagram: served from what the first
        // request produced, without processing the request again.
        if let Some(b2) = block2.filter(|b| b.num > 0) {
            let part = self.peers.download(peer, |slot| {
                slot.as_ref()
                    .filter(|d| d.path == path)
                    .and_then(|d| d.block(b2.num, b2.szx))
                    .map(|(b, data)| (b, data.to_vec()))
            });
            return match part.flatten() {
                Some((b, data)) => Reply {
                    payload: data,
                    ..Reply::new(ResponseType::Content)
                }
                .option(23, b.encode()),
                None => Reply::text(
                    ResponseType::RequestEntityIncomplete,
                    format!(
                        "no response block {} is pending for /{path}: repeat the request from block 0",
                        b2.num
                    ),
                ),
            };
        }

        let (body, block1) = match request.get_first_option(CoapOption::Block1) {
            None => {
                if request.payload.len() > self.limits.max_body {
                    return too_large(self.limits.max_body);
                }
                (request.payload.clone(), None)
            }
            Some(v) => {
                let Some(b1) = Block::decode(v) else {
                    return Reply::text(ResponseType::BadOption, "Block1 option is malformed");
                };
                let limit = self.limits.max_body;
                let fed = self.peers.upload(peer, |slot| {
                    Upload::feed(slot, &path, b1, &request.payload, limit)
                });
                match fed {
                    // No room to keep the upload: only a single-block body can be served.
                    None if b1.num == 0 && !b1.more => (request.payload.clone(), Some(b1)),
                    None => {
                        return Reply::text(
                            ResponseType::ServiceUnavailable,
                            "the server is busy: retry later",
                        )
                        .option(14, uint(5));
                    }
                    Some(Ok(None)) => {
                        return Reply::new(ResponseType::Continue).option(27, b1.encode());
                    }
                    Some(Ok(Some(body))) => (body, Some(b1)),
                    Some(Err(UploadError::TooLarge { limit })) => return too_large(limit),
                    Some(Err(UploadError::Incomplete(m))) => {
                        return Reply::text(ResponseType::RequestEntityIncomplete, m);
                    }
                }
            }
        };

        let mut reply = self.route(session, method, &path, request, body).await;
        if let Some(b1) = block1 {
            reply = reply.option(27, Block { more: false, ..b1 }.encode());
        }
        let szx = block2
            .map(|b| b.szx)
            .unwrap_or_else(|| Block::szx_for(self.limits.block_size))
            .min(Block::szx_for(self.limits.block_size));
        let size = 1usize << (szx as usize + 4);
        if reply.payload.len() > size {
            let body = std::mem::take(&mut reply.payload);
            let total = body.len();
            if let Some((b, first)) = block_of(&body, 0, szx) {
                reply.payload = first.to_vec();
                reply = reply.option(23, b.encode()).option(28, uint(total as u64));
            }
            self.peers
                .download(peer, |slot| *slot = Some(Download { path, body }));
        }
        reply
    }

    async fn route(
        &self,
        session: Option<&DeviceId>,
        method: RequestType,
        path: &str,
        request: &Packet,
        body: Vec<u8>,
    ) -> Reply {
        if path == "auth" {
            if method != RequestType::Post {
                return Reply::text(ResponseType::MethodNotAllowed, "use POST /auth");
            }
            return self.auth(request, &body).await;
        }
        if let Some(rest) = path.strip_prefix("topic/").filter(|r| !r.is_empty()) {
            if method != RequestType::Post {
                return Reply::text(
                    ResponseType::MethodNotAllowed,
                    format!("use POST /topic/{rest}"),
                );
            }
            let topic = format!("/{rest}");
            return match self.mode {
                Mode::Encrypted => self.encrypted_topic(request, &topic, body).await,
                Mode::Plain | Mode::Dtls => self.topic(session, request, &topic, body).await,
            };
        }
        Reply::text(
            ResponseType::NotFound,
            format!(
                "unknown path '/{path}': use POST /auth, then POST /topic/{{MQTT topic}}, e.g. /topic/sys/{{productKey}}/{{deviceName}}/thing/event/property/post"
            ),
        )
    }

    /// `POST /auth`: the Alink sign in JSON → a token (and the encrypted mode's key material).
    async fn auth(&self, request: &Packet, body: &[u8]) -> Reply {
        // Devices that omit Content-Format are read as JSON; anything else is refused.
        if let Some(cf) = request.get_first_option(CoapOption::ContentFormat)
            && encrypted::decode_seq(cf) != Some(JSON as u64)
        {
            return Reply::text(
                ResponseType::UnsupportedContentFormat,
                "POST /auth needs Content-Format 50 (application/json)",
            );
        }
        let req: TokenRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                return Reply::text(
                    ResponseType::BadRequest,
                    format!(
                        "POST /auth needs JSON {{\"productKey\",\"deviceName\",\"clientId\",\"timestamp\",\"signmethod\",\"sign\"}}: {e}"
                    ),
                );
            }
        };
        let token = match self.access.issue_token(&req, self.mode.transport()).await {
            Ok(t) => t,
            Err(e) => return refusal(e, false),
        };
        let answer = if self.mode == Mode::Encrypted {
            let secret = match self
                .access
                .device_secret(&req.product_key, &req.device_name)
                .await
            {
                Ok(s) => s,
                Err(e) => return refusal(e, false),
            };
            let grant = Grant::new();
            self.sessions.insert(
                &token.token,
                encrypted::derive_key(&secret, &grant.random),
                grant.seq_offset,
                token.expires_at_ms,
                now_ms(),
            );
            json!({"token": token.token, "random": grant.random, "seqOffset": grant.seq_offset})
        } else {
            json!({"token": token.token})
        };
        Reply::json(ResponseType::Content, answer.to_string().into_bytes())
    }

    /// The token of option 2088, if present and text.
    fn token_option(request: &Packet) -> Result<Option<String>, Reply> {
        match request.get_first_option(CoapOption::Unknown(TOKEN_OPTION)) {
            None => Ok(None),
            Some(v) => String::from_utf8(v.clone()).map(Some).map_err(|_| {
                Reply::text(
                    ResponseType::BadOption,
                    "option 2088 (token) must be the text /auth returned",
                )
            }),
        }
    }

    /// `POST /topic/…` on the plain and DTLS listeners.
    async fn topic(
        &self,
        session: Option<&DeviceId>,
        request: &Packet,
        topic: &str,
        body: Vec<u8>,
    ) -> Reply {
        let token = match Self::token_option(request) {
            Ok(t) => t,
            Err(r) => return r,
        };
        let device = match (token, session) {
            (Some(t), session) => match self.access.token_device(&t) {
                Ok(d) if session.is_some_and(|s| *s != d) => {
                    return Reply::text(
                        ResponseType::Forbidden,
                        "the token belongs to another device than this DTLS session",
                    );
                }
                Ok(d) => d,
                Err(e) => return refusal(e, true),
            },
            (None, Some(s)) => s.clone(),
            (None, None) => {
                return Reply::text(
                    ResponseType::Unauthorized,
                    "option 2088 (token) is required: POST /auth to get one",
                );
            }
        };
        match self.access.publish(&device, topic, Bytes::from(body)).await {
            Ok(Some(reply)) => Reply::json(
                ResponseType::Changed,
                serde_json::to_vec(&reply).unwrap_or_default(),
            ),
            Ok(None) => Reply::new(ResponseType::Changed),
            Err(e) => refusal(e, true),
        }
    }

    /// `POST /topic/…` on the encrypted listener: decrypt, check the seq, publish, encrypt.
    async fn encrypted_topic(&self, request: &Packet, topic: &str, body: Vec<u8>) -> Reply {
        let token = match Self::token_option(request) {
            Ok(Some(t)) => t,
            Ok(None) => {
                return Reply::text(
                    ResponseType::Unauthorized,
                    "option 2088 (token) is required: POST /auth to get one",
                );
            }
            Err(r) => return r,
        };
        let Some(seq) = request
            .get_first_option(CoapOption::Unknown(SEQ_OPTION))
            .and_then(|v| encrypted::decode_seq(v))
        else {
            return Reply::text(
                ResponseType::BadRequest,
                "option 2089 (seq, unsigned integer of at most 8 bytes) is required on the encrypted port",
            );
        };
        let device = match self.access.token_device(&token) {
            Ok(d) => d,
            Err(e) => return refusal(e, true),
        };
        let key = match self.sessions.key_for(&token, seq, now_ms()) {
            Ok(k) => k,
            Err(SeqError::UnknownToken) => {
                return Reply::text(
                    ResponseType::Unauthorized,
                    "no key for this token on the encrypted port: POST /auth again to get a new token and random",
                );
            }
            Err(SeqError::Replayed { last }) => {
                return Reply::text(
                    ResponseType::BadRequest,
                    format!("replayed sequence number: seq must be greater than {last}"),
                );
            }
        };
        let Some(plain) = encrypted::open(&key, seq, &token, &body) else {
            return Reply::text(
                ResponseType::BadRequest,
                "payload does not decrypt: AES-128-GCM with key SHA-256(deviceSecret‖random)[0..16], nonce 0x00000000‖seq (big-endian), AAD = token",
            );
        };
        match self.sessions.accept(&token, seq) {
            Ok(()) => {}
            // Another message with this or a higher seq was accepted meanwhile.
            Err(SeqError::Replayed { last }) => {
                return Reply::text(
                    ResponseType::BadRequest,
                    format!("replayed sequence number: seq must be greater than {last}"),
                );
            }
            Err(SeqError::UnknownToken) => {
                return Reply::text(
                    ResponseType::Unauthorized,
                    "the key for this token expired: POST /auth again",
                );
            }
        }
        // Once the message authenticated, Alink replies travel encrypted under the same seq.
        let sealed = |code, reply: &serde_json::Value| {
            let json = serde_json::to_vec(reply).unwrap_or_default();
            Reply::json(code, encrypted::seal(&key, seq, &token, &json))
                .option(SEQ_OPTION, uint(seq))
        };
        match self
            .access
            .publish(&device, topic, Bytes::from(plain))
            .await
        {
            Ok(Some(reply)) => sealed(ResponseType::Changed, &reply),
            Ok(None) => Reply::new(ResponseType::Changed).option(SEQ_OPTION, uint(seq)),
            Err(AccessError::Rejected(reply)) => sealed(ResponseType::BadRequest, &reply),
            Err(e) => refusal(e, true),
        }
    }
}

fn too_large(limit: usize) -> Reply {
    Reply::text(
        ResponseType::RequestEntityTooLarge,
        format!("the body exceeds {limit} bytes"),
    )
    .option(60, uint(limit as u64))
}

/// Uri-Path segments joined with `/`, without a leading slash.
fn uri_path(p: &Packet) -> String {
    p.get_option(CoapOption::UriPath)
        .map(|segs| {
            segs.iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join("/")
        })
        .unwrap_or_default()
}

fn reset(mid: u16) -> Vec<u8> {
    let [hi, lo] = mid.to_be_bytes();
    // Version 1, type RST (3), no token, code 0.00.
    vec![0x70, 0x00, hi, lo]
}

/// A confirmable message whose header reads but whose rest does not is rejected with a Reset
/// (RFC 7252 §4.2); anything less is dropped silently.
fn reset_for_garbage(datagram: &[u8]) -> Option<Vec<u8>> {
    let [first, _, hi, lo, ..] = *datagram else {
        return None;
    };
    let version = first >> 6;
    let confirmable = (first >> 4) & 0x3 == 0;
    (version == 1 && confirmable).then(|| reset(u16::from_be_bytes([hi, lo])))
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
