//! The CoAP transport (Alink CoAP over UDP, RFC 7252): `POST /auth` with the signed device
//! identity returns a token; every uplink is a confirmable `POST /topic/<mqtt topic>` carrying
//! the token in option 2088, answered 2.04/2.05 with the Alink reply as payload.
//!
//! CoAP carries **uplink only** here: the platform cannot reach a device behind NAT without a
//! standing connection, so downlink handlers registered on a CoAP device are refused with
//! [`crate::Error::Unsupported`]. A 4.01 answer means the token expired: the SDK
//! authenticates again and repeats the request once.
//!
//! With [`CoapConfig::dtls`] the same requests travel over DTLS 1.2 with a pre-shared key
//! (identity `{pk}&{dn}`, key = first 16 bytes of HMAC-SHA256(device secret, identity)): the
//! handshake proves the device, so there is no `/auth` and no token; a 4.01 means the session
//! is gone and the SDK handshakes again.

use std::time::Duration;

use coap_lite::{
    CoapOption, ContentFormat, MessageClass, MessageType, Packet, RequestType, ResponseType,
};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::Mutex;
use tokio::time::Instant;
use webrtc_dtls::cipher_suite::CipherSuiteId;
use webrtc_dtls::config::{Config as DtlsConfig, ExtendedMasterSecretType};
use webrtc_dtls::conn::DTLSConn;
use webrtc_util::Conn;

use crate::config::{CoapConfig, Credentials};
use crate::error::{Error, Result};
use crate::login::{coap_auth_body, now_ms};

/// The Alink CoAP option carrying the auth token.
pub const TOKEN_OPTION: u16 = 2088;
/// How long to wait for a separate response after the server acknowledged the request.
const SEPARATE_RESPONSE_WAIT: Duration = Duration::from_secs(30);
/// A DTLS handshake not finished by then fails (webrtc-dtls would retry flights forever).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The PSK for DTLS: `HMAC-SHA256(key = device secret, message = identity)[0..16]`.
pub fn dtls_psk(device_secret: &str, identity: &str) -> [u8; 16] {
    let full = hex::decode(
        lotus_model::alink::SignMethod::HmacSha256.sign(device_secret.as_bytes(), identity),
    )
    .expect("sign returns hex");
    let mut psk = [0u8; 16];
    psk.copy_from_slice(&full[..16]);
    psk
}

type Socket = Arc<dyn Conn + Send + Sync>;

struct State {
    socket: Option<Socket>,
    auth_token: Option<Vec<u8>>,
    next_message_id: u16,
}

pub(crate) struct CoapLink {
    creds: Credentials,
    cfg: CoapConfig,
    /// One exchange at a time (RFC 7252 NSTART = 1).
    state: Mutex<State>,
}

/// The CoAP request as built for a topic: one Uri-Path option per topic level.
pub(crate) fn topic_path(topic: &str) -> Vec<String> {
    std::iter::once("topic".to_string())
        .chain(
            topic
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        )
        .collect()
}

fn class_name(c: MessageClass) -> String {
    let n: u8 = c.into();
    format!("{}.{:02}", n >> 5, n & 0x1f)
}

impl CoapLink {
    /// Authenticates once, so that wrong credentials fail `connect`.
    pub async fn connect(creds: Credentials, cfg: CoapConfig) -> Result<CoapLink> {
        let link = CoapLink {
            creds,
            cfg,
            state: Mutex::new(State {
                socket: None,
                auth_token: None,
                next_message_id: rand::random(),
            }),
        };
        {
            let mut st = link.state.lock().await;
            if link.cfg.dtls {
                link.socket(&mut st).await?;
            } else {
                link.authenticate(&mut st).await?;
            }
        }
        Ok(link)
    }

    async fn authenticate(&self, st: &mut State) -> Result<()> {
        let body = coap_auth_body(&self.creds, self.cfg.sign_method, now_ms());
        let resp = self
            .exchange(
                st,
                &["auth".to_string()],
                body.to_string().into_bytes(),
                None,
                None,
            )
            .await?;
        match resp.header.code {
            MessageClass::Response(ResponseType::Content | ResponseType::Changed) => {
                let v: serde_json::Value = serde_json::from_slice(&resp.payload)?;
                let token = v["token"]
                    .as_str()
                    .ok_or_else(|| Error::Refused("the auth answer has no token".into()))?;
                st.auth_token = Some(token.as_bytes().to_vec());
                Ok(())
            }
            other => Err(Error::Refused(format!(
                "CoAP {}: {}",
                class_name(other),
                String::from_utf8_lossy(&resp.payload)
            ))),
        }
    }

    /// Posts to a topic and returns the reply payload (also for 4.00, whose payload is the
    /// Alink error reply). `Err(NotConnected)` when the server never acknowledged.
    pub async fn request(&self, topic: &str, payload: Vec<u8>) -> Result<Vec<u8>> {
        let path = topic_path(topic);
        let mut st = self.state.lock().await;
        for _ in 0..2 {
            if st.auth_token.is_none() && !self.cfg.dtls {
                self.authenticate(&mut st).await?;
            }
            let token = st.auth_token.clone();
            let resp = self.send(&mut st, &path, &payload, token).await?;
            match resp.header.code {
                MessageClass::Response(
                    ResponseType::Changed | ResponseType::Content | ResponseType::Created,
                ) => return Ok(resp.payload),
                // 4.00 carries the Alink error reply (460 naming the field) or a diagnostic.
                MessageClass::Response(ResponseType::BadRequest)
                    if serde_json::from_slice::<lotus_model::alink::Reply>(&resp.payload)
                        .is_ok() =>
                {
                    return Ok(resp.payload);
                }
                MessageClass::Response(ResponseType::Unauthorized) => {
                    tracing::debug!("CoAP token or session refused; authenticating again");
                    st.auth_token = None;
                    if self.cfg.dtls {
                        st.socket = None;
                    }
                }
                other => {
                    let n: u8 = other.into();
                    let text = String::from_utf8_lossy(&resp.payload).into_owned();
                    // 5.xx is the platform's trouble: worth retrying (the offline buffer
                    // does); 4.xx is the request's and will not change on retry.
                    if n >> 5 == 5 {
                        return Err(Error::Transport(format!(
                            "CoAP {}: {text}",
                            class_name(other)
                        )));
                    }
                    return Err(Error::Rejected {
                        code: i64::from(n >> 5) * 100 + i64::from(n & 0x1f),
                        message: format!("CoAP {}: {text}", class_name(other)),
                    });
                }
            }
        }
        Err(Error::Refused(
            "the platform refused a fresh CoAP token (4.01 twice)".into(),
        ))
    }

    /// The connected UDP socket, or DTLS session over it, made on first use.
    async fn socket(&self, st: &mut State) -> Result<Socket> {
        if let Some(s) = &st.socket {
            return Ok(s.clone());
        }
        let addr = tokio::net::lookup_host(&self.cfg.address)
            .await?
            .next()
            .ok_or_else(|| {
                Error::Transport(format!("'{}' resolves to nothing", self.cfg.address))
            })?;
        let local = if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let udp = UdpSocket::bind(local).await?;
        udp.connect(addr).await?;
        let socket: Socket = if self.cfg.dtls {
            Arc::new(self.handshake(Arc::new(udp)).await?)
        } else {
            Arc::new(udp)
        };
        st.socket = Some(socket.clone());
        Ok(socket)
    }

    async fn handshake(&self, udp: Socket) -> Result<DTLSConn> {
        // webrtc-dtls builds its rustls pieces from the process default provider, which rustls
        // cannot choose by itself when more than one is linked; an installed one is fine too.
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let identity = format!("{}&{}", self.creds.product_key, self.creds.device_name);
        let psk = dtls_psk(&self.creds.device_secret, &identity).to_vec();
        let config = DtlsConfig {
            psk: Some(Arc::new(move |_hint: &[u8]| Ok(psk.clone()))),
            psk_identity_hint: Some(identity.into_bytes()),
            // CCM_8 is CoAP's mandatory suite (RFC 7252 §9.1.3.1).
            cipher_suites: vec![
                CipherSuiteId::Tls_Psk_With_Aes_128_Ccm_8,
                CipherSuiteId::Tls_Psk_With_Aes_128_Gcm_Sha256,
            ],
            extended_master_secret: ExtendedMasterSecretType::Request,
            ..Default::default()
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, DTLSConn::new(udp, config, true, None)).await
        {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(Error::Refused(format!("DTLS handshake: {e}"))),
            Err(_) => Err(Error::NotConnected),
        }
    }

    /// Sends a request body larger than one block as RFC 7959 Block1 fragments: the server
    /// answers 2.31 Continue to each but the last, and the last one's answer is the request's.
    /// A refusal of any fragment (4.01, 4.13, …) ends the upload and is returned as the answer.
    async fn send(
        &self,
        st: &mut State,
        path: &[String],
        payload: &[u8],
        auth_token: Option<Vec<u8>>,
    ) -> Result<Packet> {
        if payload.len() <= BLOCK_SIZE {
            return self
                .exchange(st, path, payload.to_vec(), auth_token, None)
                .await;
        }
        let blocks = payload.len().div_ceil(BLOCK_SIZE);
        for (num, chunk) in payload.chunks(BLOCK_SIZE).enumerate() {
            let more = num + 1 < blocks;
            let resp = self
                .exchange(
                    st,
                    path,
                    chunk.to_vec(),
                    auth_token.clone(),
                    Some(block1(num as u32, more)),
                )
                .await?;
            if !more || resp.header.code != MessageClass::Response(ResponseType::Continue) {
                return Ok(resp);
            }
        }
        unreachable!("the last fragment returns")
    }

    /// One confirmable request with RFC 7252 retransmission: the first wait is random in
    /// `[ACK_TIMEOUT, ACK_TIMEOUT·1.5]` and doubles after each of `MAX_RETRANSMIT` resends.
    async fn exchange(
        &self,
        st: &mut State,
        path: &[String],
        payload: Vec<u8>,
        auth_token: Option<Vec<u8>>,
        block: Option<Vec<u8>>,
    ) -> Result<Packet> {
        let message_id = st.next_message_id;
        st.next_message_id = st.next_message_id.wrapping_add(1);
        let token: [u8; 4] = rand::random();
        let mut req = Packet::new();
        req.header.set_type(MessageType::Confirmable);
        req.header.code = MessageClass::Request(RequestType::Post);
        req.header.message_id = message_id;
        req.set_token(token.to_vec());
        for seg in path {
            req.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
        }
        req.set_content_format(ContentFormat::ApplicationJSON);
        if let Some(t) = auth_token {
            req.add_option(CoapOption::Unknown(TOKEN_OPTION), t);
        }
        if let Some(b) = block {
            req.add_option(CoapOption::Block1, b);
        }
        req.payload = payload;
        let bytes = req
            .to_bytes()
            .map_err(|e| Error::Transport(format!("CoAP encoding: {e:?}")))?;
        let ack_timeout = self.cfg.ack_timeout;
        let max_retransmit = self.cfg.max_retransmit;
        let socket = self.socket(st).await?;
        let socket = socket.as_ref();
        let factor = 1.0 + rand::random::<f64>() * 0.5;
        let mut wait = ack_timeout.mul_f64(factor);
        let mut buf = vec![0u8; 64 * 1024];
        for _ in 0..=max_retransmit {
            if let Err(e) = socket.send(&bytes).await {
                // A closed DTLS session or an unreachable peer: start afresh next time.
                tracing::debug!(error = %e, "CoAP send failed");
                st.socket = None;
                return Err(Error::NotConnected);
            }
            let mut deadline = Instant::now() + wait;
            let mut acknowledged = false;
            loop {
                let n = match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                    Err(_) => break,
                    Ok(Ok(n)) => n,
                    // ICMP "port unreachable" surfaces here on a connected UDP socket: the
                    // server is down; wait out the interval like a lost datagram.
                    Ok(Err(_)) => {
                        tokio::time::sleep_until(deadline).await;
                        break;
                    }
                };
                let Ok(p) = Packet::from_bytes(&buf[..n]) else {
                    continue;
                };
                match p.header.get_type() {
                    MessageType::Acknowledgement if p.header.message_id == message_id => {
                        if p.header.code == MessageClass::Empty {
                            // Separate response follows; stop retransmitting.
                            acknowledged = true;
                            deadline = Instant::now() + SEPARATE_RESPONSE_WAIT;
                            continue;
                        }
                        if p.get_token() == token {
                            return Ok(p);
                        }
                    }
                    MessageType::Reset if p.header.message_id == message_id => {
                        return Err(Error::Transport("the CoAP server reset the request".into()));
                    }
                    t @ (MessageType::Confirmable | MessageType::NonConfirmable)
                        if p.get_token() == token =>
                    {
                        if t == MessageType::Confirmable {
                            let mut ack = Packet::new();
                            ack.header.set_type(MessageType::Acknowledgement);
                            ack.header.code = MessageClass::Empty;
                            ack.header.message_id = p.header.message_id;
                            if let Ok(b) = ack.to_bytes() {
                                let _ = socket.send(&b).await;
                            }
                        }
                        return Ok(p);
                    }
                    _ => {}
                }
            }
            if acknowledged {
                return Err(Error::Timeout(SEPARATE_RESPONSE_WAIT));
            }
            wait *= 2;
        }
        // Forget the socket: the server may have moved (a new address on re-resolve).
        st.socket = None;
        Err(Error::NotConnected)
    }
}

/// Block size of uploads: 1024 bytes (szx 6), the largest CoAP over UDP allows.
const BLOCK_SIZE: usize = 1024;
const BLOCK_SZX: u32 = 6;

/// A Block1 option value (RFC 7959 §2.2) in the fewest bytes.
fn block1(num: u32, more: bool) -> Vec<u8> {
    let v = (num << 4) | (u32::from(more) << 3) | BLOCK_SZX;
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes[skip..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn topics_become_uri_paths() {
        assert_eq!(
            topic_path("/sys/pk/dn/thing/event/property/post"),
            [
                "topic", "sys", "pk", "dn", "thing", "event", "property", "post"
            ]
        );
    }

    /// A tiny Alink CoAP server on a real UDP socket that drops the first datagram of every
    /// exchange (to exercise retransmission) and expires the first token it hands out.
    async fn lossy_server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let auths = Arc::new(AtomicUsize::new(0));
        let auths2 = auths.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut seen = std::collections::HashSet::new();
            loop {
                let (n, peer) = sock.recv_from(&mut buf).await.unwrap();
                let req = Packet::from_bytes(&buf[..n]).unwrap();
                if seen.insert(req.header.message_id) {
                    continue; // lost
                }
                let path: Vec<String> = req
                    .get_option(CoapOption::UriPath)
                    .map(|l| {
                        l.iter()
                            .map(|s| String::from_utf8_lossy(s).into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                let mut resp = Packet::new();
                resp.header.set_type(MessageType::Acknowledgement);
                resp.header.message_id = req.header.message_id;
                resp.set_token(req.get_token().to_vec());
                if path == ["auth"] {
                    let k = auths2.fetch_add(1, Ordering::SeqCst);
                    let body: serde_json::Value = serde_json::from_slice(&req.payload).unwrap();
                    assert_eq!(body["deviceName"], "dn");
                    resp.header.code = MessageClass::Response(ResponseType::Content);
                    resp.payload = format!(r#"{{"token":"t{k}"}}"#).into_bytes();
                } else {
                    let token = req
                        .get_first_option(CoapOption::Unknown(TOKEN_OPTION))
                        .cloned()
                        .unwrap_or_default();
                    if token == b"t0" {
                        resp.header.code = MessageClass::Response(ResponseType::Unauthorized);
                    } else if req.payload == b"bad" {
                        resp.header.code = MessageClass::Response(ResponseType::BadRequest);
                        resp.payload =
                            br#"{"id":"1","code":460,"message":"Brightness: 300 > 100"}"#.to_vec();
                    } else {
                        resp.header.code = MessageClass::Response(ResponseType::Changed);
                        resp.payload = format!(
                            r#"{{"id":"1","code":200,"data":{{}},"path":"{}"}}"#,
                            path.join("/")
                        )
                        .into_bytes();
                    }
                }
                sock.send_to(&resp.to_bytes().unwrap(), peer).await.unwrap();
            }
        });
        (addr, auths)
    }

    #[tokio::test]
    async fn retransmits_and_reauthenticates() {
        let (addr, auths) = lossy_server().await;
        let mut cfg = CoapConfig::new(addr.to_string());
        cfg.ack_timeout = Duration::from_millis(50);
        let link = CoapLink::connect(Credentials::new("pk", "dn", "s"), cfg)
            .await
            .unwrap();
        let r = link
            .request("/sys/pk/dn/thing/event/property/post", b"{}".to_vec())
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r).unwrap();
        assert_eq!(v["path"], "topic/sys/pk/dn/thing/event/property/post");
        assert_eq!(
            auths.load(Ordering::SeqCst),
            2,
            "4.01 led to a second /auth"
        );
        let r = link.request("/sys/pk/dn/x", b"bad".to_vec()).await.unwrap();
        assert!(String::from_utf8_lossy(&r).contains("460"));
    }

    #[tokio::test]
    async fn an_absent_server_is_not_connected() {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        drop(sock);
        let mut cfg = CoapConfig::new(addr.to_string());
        cfg.ack_timeout = Duration::from_millis(10);
        cfg.max_retransmit = 2;
        let started = std::time::Instant::now();
        let e = CoapLink::connect(Credentials::new("pk", "dn", "s"), cfg)
            .await
            .err()
            .unwrap();
        assert!(matches!(e, Error::NotConnected), "{e}");
        // 10 + 20 + 40 ms at least (·1..1.5).
        assert!(started.elapsed() >= Duration::from_millis(70));
    }
}
