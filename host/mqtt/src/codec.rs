//! MQTT 3.1.1 and 5 packets on the wire.
//!
//! Inbound packets are framed here and parsed with `rumqttc`'s codecs, then mapped to one
//! version-independent [`Inbound`] so that the connection logic is written once. PUBLISH is
//! parsed here in both directions: inbound so that the topic becomes an `Arc<str>` in one
//! allocation, outbound so that a delivery is written straight from the shared topic and
//! payload without building a per-subscriber packet struct. Acknowledgements are written here
//! too because they carry any v5 reason code the platform chooses.

use std::num::NonZeroU32;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;

use crate::hooks::{MqttVersion, PublishProperties, QoS};

/// Why the bytes from a client could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("malformed packet: {0}")]
    Malformed(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("packet of {0} bytes exceeds the maximum packet size")]
    TooLarge(usize),
}

impl DecodeError {
    /// The v5 DISCONNECT reason code for this error.
    pub fn v5_code(&self) -> u8 {
        match self {
            DecodeError::Malformed(_) => 0x81,
            DecodeError::Protocol(_) => 0x82,
            DecodeError::TooLarge(_) => 0x95,
        }
    }
}

fn malformed(e: impl std::fmt::Display) -> DecodeError {
    DecodeError::Malformed(e.to_string())
}

/// The first byte and the length fields of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FixedHeader {
    pub byte1: u8,
    pub header_len: usize,
    pub remaining: usize,
}

impl FixedHeader {
    pub fn frame_len(&self) -> usize {
        self.header_len + self.remaining
    }

    pub fn packet_type(&self) -> u8 {
        self.byte1 >> 4
    }
}

/// Parses a fixed header; `None` while more bytes are needed.
pub(crate) fn parse_header(buf: &[u8]) -> Result<Option<FixedHeader>, DecodeError> {
    let Some(&byte1) = buf.first() else {
        return Ok(None);
    };
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some(FixedHeader {
                byte1,
                header_len: 2 + i,
                remaining,
            }));
        }
    }
    Err(DecodeError::Malformed(
        "remaining length is longer than 4 bytes".into(),
    ))
}

/// A will message from CONNECT. (No `Debug`: it holds a payload.)
#[derive(Clone)]
pub(crate) struct WillPacket {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// v5 Will Delay Interval, seconds.
    pub delay: u32,
    pub properties: Option<PublishProperties>,
}

/// CONNECT of either version. (No `Debug`: it holds the password.)
#[derive(Clone)]
pub(crate) struct ConnectPacket {
    pub version: MqttVersion,
    pub client_id: String,
    pub clean_start: bool,
    pub keep_alive: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub will: Option<WillPacket>,
    pub session_expiry: u32,
    pub receive_maximum: Option<u16>,
    pub max_packet_size: Option<u32>,
    pub request_problem_info: bool,
    pub auth_method: Option<String>,
}

/// What the first packet turned out to be.
pub(crate) enum FirstPacket {
    Connect(Box<ConnectPacket>),
    /// A CONNECT of a protocol level this broker does not speak (MQTT 3.1 is level 3).
    UnsupportedVersion(u8),
}

/// Reads the CONNECT that must open a connection; `None` while more bytes are needed.
pub(crate) fn decode_connect(
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<FirstPacket>, DecodeError> {
    let Some(h) = parse_header(buf)? else {
        return Ok(None);
    };
    if h.packet_type() != 1 {
        return Err(DecodeError::Protocol(
            "the first packet must be CONNECT".into(),
        ));
    }
    if h.frame_len() > max {
        return Err(DecodeError::TooLarge(h.frame_len()));
    }
    if buf.len() < h.frame_len() {
        buf.reserve(h.frame_len() - buf.len());
        return Ok(None);
    }
    // Peek at the protocol name and level to choose the codec.
    let body = &buf[h.header_len..h.frame_len()];
    let (name, level) = match body {
        [0, n, rest @ ..] if rest.len() > usize::from(*n) => {
            (&rest[..usize::from(*n)], rest[usize::from(*n)])
        }
        _ => {
            return Err(DecodeError::Malformed(
                "CONNECT without protocol name".into(),
            ));
        }
    };
    let connect = match (name, level) {
        (b"MQTT", 4) => match v4::Packet::read(buf, usize::MAX).map_err(malformed)? {
            v4::Packet::Connect(c) => from_v4_connect(c),
            _ => unreachable!("the packet type was checked"),
        },
        (b"MQTT", 5) => match v5::Packet::read(buf, None).map_err(malformed)? {
            v5::Packet::Connect(c, will, login) => from_v5_connect(c, will, login)?,
            _ => unreachable!("the packet type was checked"),
        },
        (b"MQTT" | b"MQIsdp", level) => {
            buf.advance(h.frame_len());
            return Ok(Some(FirstPacket::UnsupportedVersion(level)));
        }
        _ => return Err(DecodeError::Protocol("unknown protocol name".into())),
    };
    Ok(Some(FirstPacket::Connect(Box::new(connect))))
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn from_v4_connect(c: v4::Connect) -> ConnectPacket {
    let (username, password) = match c.login {
        Some(l) => (non_empty(l.username), non_empty(l.password)),
        None => (None, None),
    };
    ConnectPacket {
        version: MqttVersion::V311,
        client_id: c.client_id,
        clean_start: c.clean_session,
        keep_alive: c.keep_alive,
        username,
        password,
        will: c.last_will.map(|w| WillPacket {
            topic: w.topic,
            payload: w.message,
            qos: QoS::from_u8(w.qos as u8).unwrap_or(QoS::AtMostOnce),
            retain: w.retain,
            delay: 0,
            properties: None,
        }),
        session_expiry: 0,
        receive_maximum: None,
        max_packet_size: None,
        request_problem_info: true,
        auth_method: None,
    }
}

fn from_v5_connect(
    c: v5::Connect,
    will: Option<v5::LastWill>,
    login: Option<v5::Login>,
) -> Result<ConnectPacket, DecodeError> {
    let (username, password) = match login {
        Some(l) => (non_empty(l.username), non_empty(l.password)),
        None => (None, None),
    };
    let will = match will {
        Some(w) => {
            let topic = String::from_utf8(w.topic.to_vec())
                .map_err(|_| malformed("will topic is not UTF-8"))?;
            let props = w.properties.unwrap_or_else(|| v5::LastWillProperties {
                delay_interval: None,
                payload_format_indicator: None,
                message_expiry_interval: None,
                content_type: None,
                response_topic: None,
                correlation_data: None,
                user_properties: Vec::new(),
            });
            let forwarded = PublishProperties {
                payload_format_indicator: props.payload_format_indicator,
                message_expiry_interval: props.message_expiry_interval,
                topic_alias: None,
                response_topic: props.response_topic,
                correlation_data: props.correlation_data,
                user_properties: props.user_properties,
                subscription_identifiers: Vec::new(),
                content_type: props.content_type,
            };
            Some(WillPacket {
                topic,
                payload: w.message,
                qos: QoS::from_u8(w.qos as u8).unwrap_or(QoS::AtMostOnce),
                retain: w.retain,
                delay: props.delay_interval.unwrap_or(0),
                properties: (forwarded != PublishProperties::default()).then_some(forwarded),
            })
        }
        None => None,
    };
    let p = c.properties;
    Ok(ConnectPacket {
        version: MqttVersion::V5,
        client_id: c.client_id,
        clean_start: c.clean_start,
        keep_alive: c.keep_alive,
        username,
        password,
        will,
        session_expiry: p
            .as_ref()
            .and_then(|p| p.session_expiry_interval)
            .unwrap_or(0),
        receive_maximum: p.as_ref().and_then(|p| p.receive_maximum),
        max_packet_size: p.as_ref().and_then(|p| p.max_packet_size),
        request_problem_info: p.as_ref().and_then(|p| p.request_problem_info) != Some(0),
        auth_method: p.and_then(|p| p.authentication_method),
    })
}

/// An inbound PUBLISH.
#[derive(Debug, Clone)]
pub(crate) struct PublishPacket {
    pub qos: QoS,
    pub retain: bool,
    pub topic: Arc<str>,
    pub pkid: u16,
    pub payload: Bytes,
    pub properties: Option<PublishProperties>,
}

/// One filter of a SUBSCRIBE.
#[derive(Debug, Clone)]
pub(crate) struct SubscribeFilter {
    pub filter: String,
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// 0 send retained at subscribe, 1 only for a new subscription, 2 never.
    pub retain_handling: u8,
}

#[derive(Debug, Clone)]
pub(crate) struct SubscribePacket {
    pub pkid: u16,
    pub filters: Vec<SubscribeFilter>,
    pub sub_id: Option<NonZeroU32>,
}

/// A packet from a connected client, whatever its version.
#[derive(Debug)]
pub(crate) enum Inbound {
    Publish(PublishPacket),
    /// `reason` is 0 for success (v5 0x00 / 0x10), ≥ 0x80 for a failure.
    PubAck {
        pkid: u16,
    },
    PubRec {
        pkid: u16,
        reason: u8,
    },
    PubRel {
        pkid: u16,
    },
    PubComp {
        pkid: u16,
    },
    Subscribe(SubscribePacket),
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    PingReq,
    Disconnect {
        reason: u8,
        session_expiry: Option<u32>,
    },
    /// A packet a client must not send once connected.
    Unexpected(&'static str),
}

/// Reads the next packet of a connected client; `None` while more bytes are needed (the
/// buffer has then been given room for the rest of the packet).
pub(crate) fn decode(
    buf: &mut BytesMut,
    version: MqttVersion,
    max: usize,
) -> Result<Option<Inbound>, DecodeError> {
    let Some(h) = parse_header(buf)? else {
        return Ok(None);
    };
    let frame_len = h.frame_len();
    if frame_len > max {
        return Err(DecodeError::TooLarge(frame_len));
    }
    if buf.len() < frame_len {
        buf.reserve(frame_len - buf.len());
        return Ok(None);
    }
    let v5 = version == MqttVersion::V5;
    let packet = match h.packet_type() {
        3 => {
            let frame = buf.split_to(frame_len).freeze();
            Inbound::Publish(decode_publish(&h, frame, v5)?)
        }
        12 => {
            buf.advance(frame_len);
            Inbound::PingReq
        }
        // rumqttc's v5 reader wants a reason code, but a bare DISCONNECT means "normal".
        14 if h.remaining == 0 => {
            buf.advance(frame_len);
            Inbound::Disconnect {
                reason: 0,
                session_expiry: None,
            }
        }
        _ if v5 => from_v5(v5::Packet::read(buf, None).map_err(malformed)?),
        _ => from_v4(v4::Packet::read(buf, usize::MAX).map_err(malformed)?),
    };
    Ok(Some(packet))
}

fn get_u16(b: &mut Bytes) -> Result<u16, DecodeError> {
    if b.len() < 2 {
        return Err(malformed("packet ends early"));
    }
    Ok(b.get_u16())
}

fn decode_publish(h: &FixedHeader, frame: Bytes, v5: bool) -> Result<PublishPacket, DecodeError> {
    let qos = QoS::from_u8((h.byte1 >> 1) & 0b11).ok_or_else(|| malformed("PUBLISH with QoS 3"))?;
    let mut b = frame.slice(h.header_len..);
    let topic_len = usize::from(get_u16(&mut b)?);
    if b.len() < topic_len {
        return Err(malformed("topic runs past the packet"));
    }
    let topic: Arc<str> = std::str::from_utf8(&b[..topic_len])
        .map_err(|_| malformed("topic is not UTF-8"))?
        .into();
    b.advance(topic_len);
    let pkid = if qos == QoS::AtMostOnce {
        0
    } else {
        match get_u16(&mut b)? {
            0 => return Err(malformed("packet identifier 0")),
            id => id,
        }
    };
    let properties = if v5 {
        v5::PublishProperties::read(&mut b).map_err(malformed)?
    } else {
        None
    };
    // DUP is not needed: a QoS 2 retransmission is recognised by its packet id.
    Ok(PublishPacket {
        qos,
        retain: h.byte1 & 1 != 0,
        topic,
        pkid,
        payload: b,
        properties,
    })
}

fn from_v4(p: v4::Packet) -> Inbound {
    match p {
        v4::Packet::PubAck(a) => Inbound::PubAck { pkid: a.pkid },
        v4::Packet::PubRec(a) => Inbound::PubRec {
            pkid: a.pkid,
            reason: 0,
        },
        v4::Packet::PubRel(a) => Inbound::PubRel { pkid: a.pkid },
        v4::Packet::PubComp(a) => Inbound::PubComp { pkid: a.pkid },
        v4::Packet::Subscribe(s) => Inbound::Subscribe(SubscribePacket {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| SubscribeFilter {
                    filter: f.path,
                    qos: QoS::from_u8(f.qos as u8).unwrap_or(QoS::AtMostOnce),
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: 0,
                })
                .collect(),
            sub_id: None,
        }),
        v4::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
        },
        v4::Packet::PingReq => Inbound::PingReq,
        v4::Packet::Disconnect => Inbound::Disconnect {
            reason: 0,
            session_expiry: None,
        },
        v4::Packet::Connect(_) => Inbound::Unexpected("a second CONNECT"),
        v4::Packet::Publish(_) => unreachable!("PUBLISH is decoded by this module"),
        v4::Packet::ConnAck(_)
        | v4::Packet::SubAck(_)
        | v4::Packet::UnsubAck(_)
        | v4::Packet::PingResp => Inbound::Unexpected("a server-to-client packet"),
    }
}

fn from_v5(p: v5::Packet) -> Inbound {
    match p {
        v5::Packet::PubAck(a) => Inbound::PubAck { pkid: a.pkid },
        v5::Packet::PubRec(a) => Inbound::PubRec {
            pkid: a.pkid,
            reason: match a.reason {
                v5::PubRecReason::Success | v5::PubRecReason::NoMatchingSubscribers => 0,
                _ => 0x80,
            },
        },
        v5::Packet::PubRel(a) => Inbound::PubRel { pkid: a.pkid },
        v5::Packet::PubComp(a) => Inbound::PubComp { pkid: a.pkid },
        v5::Packet::Subscribe(s) => Inbound::Subscribe(SubscribePacket {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| SubscribeFilter {
                    filter: f.path,
                    qos: QoS::from_u8(f.qos as u8).unwrap_or(QoS::AtMostOnce),
                    no_local: f.nolocal,
                    retain_as_published: f.preserve_retain,
                    retain_handling: match f.retain_forward_rule {
                        v5::RetainForwardRule::OnEverySubscribe => 0,
                        v5::RetainForwardRule::OnNewSubscribe => 1,
                        v5::RetainForwardRule::Never => 2,
                    },
                })
                .collect(),
            sub_id: s
                .properties
                .and_then(|p| p.id)
                .and_then(|id| u32::try_from(id).ok())
                .and_then(NonZeroU32::new),
        }),
        v5::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters,
        },
        v5::Packet::PingReq(_) => Inbound::PingReq,
        v5::Packet::Disconnect(d) => Inbound::Disconnect {
            reason: d.reason_code as u8,
            session_expiry: d.properties.and_then(|p| p.session_expiry_interval),
        },
        v5::Packet::Auth(_) => {
            Inbound::Unexpected("AUTH (enhanced authentication is not supported)")
        }
        v5::Packet::Connect(..) => Inbound::Unexpected("a second CONNECT"),
        v5::Packet::Publish(_) => unreachable!("PUBLISH is decoded by this module"),
        v5::Packet::ConnAck(_)
        | v5::Packet::SubAck(_)
        | v5::Packet::UnsubAck(_)
        | v5::Packet::PingResp(_) => Inbound::Unexpected("a server-to-client packet"),
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

pub(crate) fn put_str(b: &mut BytesMut, s: &str) {
    put_bin(b, s.as_bytes());
}

pub(crate) fn put_bin(b: &mut BytesMut, s: &[u8]) {
    // Lengths above u16 cannot reach here: every string comes from a parsed packet or a
    // validated topic.
    b.put_u16(s.len() as u16);
    b.put_slice(s);
}

fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

fn put_varint(b: &mut BytesMut, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        b.put_u8(byte);
        if n == 0 {
            break;
        }
    }
}

/// An outgoing PUBLISH, borrowed from a shared message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PublishOut<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: QoS,
    pub pkid: u16,
    pub retain: bool,
    pub dup: bool,
    /// Pre-encoded forwarded properties (v5 only).
    pub properties: Option<&'a [u8]>,
    pub expiry: Option<u32>,
    pub sub_id: Option<NonZeroU32>,
}

impl PublishOut<'_> {
    fn properties_len(&self) -> usize {
        self.properties.map_or(0, <[u8]>::len)
            + self.expiry.map_or(0, |_| 5)
            + self
                .sub_id
                .map_or(0, |id| 1 + varint_len(id.get() as usize))
    }

    fn remaining_len(&self, v5: bool) -> usize {
        let mut len = 2 + self.topic.len() + self.payload.len();
        if self.qos != QoS::AtMostOnce {
            len += 2;
        }
        if v5 {
            let p = self.properties_len();
            len += varint_len(p) + p;
        }
        len
    }

    /// Size of the whole packet.
    pub fn size(&self, v5: bool) -> usize {
        let r = self.remaining_len(v5);
        1 + varint_len(r) + r
    }

    pub fn write(&self, b: &mut BytesMut, v5: bool) {
        let remaining = self.remaining_len(v5);
        b.reserve(1 + varint_len(remaining) + remaining);
        b.put_u8(
            0x30 | (u8::from(self.dup) << 3) | ((self.qos as u8) << 1) | u8::from(self.retain),
        );
        put_varint(b, remaining);
        put_str(b, self.topic);
        if self.qos != QoS::AtMostOnce {
            b.put_u16(self.pkid);
        }
        if v5 {
            put_varint(b, self.properties_len());
            if let Some(e) = self.expiry {
                b.put_u8(0x02);
                b.put_u32(e);
            }
            if let Some(id) = self.sub_id {
                b.put_u8(0x0B);
                put_varint(b, id.get() as usize);
            }
            if let Some(p) = self.properties {
                b.put_slice(p);
            }
        }
        b.put_slice(self.payload);
    }
}

/// The four publish-flow acknowledgements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // named after the MQTT packets
pub(crate) enum AckKind {
    PubAck,
    PubRec,
    PubRel,
    PubComp,
}

impl AckKind {
    fn byte1(self) -> u8 {
        match self {
            AckKind::PubAck => 0x40,
            AckKind::PubRec => 0x50,
            AckKind::PubRel => 0x62,
            AckKind::PubComp => 0x70,
        }
    }
}

/// Writes PUBACK, PUBREC, PUBREL or PUBCOMP. v3.1.1 has no reason code; v5 omits a success
/// code without properties, as the specification allows.
pub(crate) fn write_ack(
    b: &mut BytesMut,
    v5: bool,
    kind: AckKind,
    pkid: u16,
    reason: u8,
    reason_string: Option<&str>,
) {
    b.put_u8(kind.byte1());
    if !v5 || (reason == 0 && reason_string.is_none()) {
        b.put_u8(2);
        b.put_u16(pkid);
        return;
    }
    match reason_string {
        None => {
            b.put_u8(3);
            b.put_u16(pkid);
            b.put_u8(reason);
        }
        Some(s) => {
            let s = truncate_utf8(s, 1024);
            let props = 1 + 2 + s.len();
            put_varint(b, 2 + 1 + varint_len(props) + props);
            b.put_u16(pkid);
            b.put_u8(reason);
            put_varint(b, props);
            b.put_u8(0x1F);
            put_str(b, s);
        }
    }
}

/// Keeps reason strings short: they are diagnostics, and a packet must not outgrow the
/// client's maximum packet size because of one.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

pub(crate) fn write_pingresp(b: &mut BytesMut) {
    b.put_slice(&[0xD0, 0x00]);
}

fn v4_connect_code(code: u8) -> v4::ConnectReturnCode {
    match code {
        0 => v4::ConnectReturnCode::Success,
        1 => v4::ConnectReturnCode::RefusedProtocolVersion,
        2 => v4::ConnectReturnCode::BadClientId,
        3 => v4::ConnectReturnCode::ServiceUnavailable,
        4 => v4::ConnectReturnCode::BadUserNamePassword,
        _ => v4::ConnectReturnCode::NotAuthorized,
    }
}

fn v5_connect_code(code: u8) -> v5::ConnectReturnCode {
    use v5::ConnectReturnCode as C;
    match code {
        0x00 => C::Success,
        0x81 => C::MalformedPacket,
        0x82 => C::ProtocolError,
        0x83 => C::ImplementationSpecificError,
        0x84 => C::UnsupportedProtocolVersion,
        0x85 => C::ClientIdentifierNotValid,
        0x86 => C::BadUserNamePassword,
        0x87 => C::NotAuthorized,
        0x88 => C::ServerUnavailable,
        0x89 => C::ServerBusy,
        0x8A => C::Banned,
        0x8C => C::BadAuthenticationMethod,
        0x95 => C::PacketTooLarge,
        0x97 => C::QuotaExceeded,
        _ => C::UnspecifiedError,
    }
}

/// Properties of a v5 CONNACK.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnAckInfo {
    pub session_expiry: Option<u32>,
    pub receive_maximum: Option<u16>,
    pub max_packet_size: Option<u32>,
    pub assigned_client_id: Option<String>,
    pub server_keep_alive: Option<u16>,
    pub reason_string: Option<String>,
}

/// Writes CONNACK; `code` is the version's own return / reason code.
pub(crate) fn write_connack(
    b: &mut BytesMut,
    version: MqttVersion,
    session_present: bool,
    code: u8,
    info: ConnAckInfo,
) {
    let written = match version {
        MqttVersion::V311 => v4::ConnAck::new(v4_connect_code(code), session_present)
            .write(b)
            .is_ok(),
        MqttVersion::V5 => v5::ConnAck {
            session_present,
            code: v5_connect_code(code),
            properties: Some(v5::ConnAckProperties {
                session_expiry_interval: info.session_expiry,
                receive_max: info.receive_maximum,
                max_qos: None,
                retain_available: None,
                max_packet_size: info.max_packet_size,
                assigned_client_identifier: info.assigned_client_id,
                topic_alias_max: None,
                reason_string: info
                    .reason_string
                    .map(|s| truncate_utf8(&s, 1024).to_owned()),
                user_properties: Vec::new(),
                wildcard_subscription_available: None,
                subscription_identifiers_available: None,
                shared_subscription_available: None,
                server_keep_alive: info.server_keep_alive,
                response_information: None,
                server_reference: None,
                authentication_method: None,
                authentication_data: None,
            }),
        }
        .write(b)
        .is_ok(),
    };
    debug_assert!(written, "CONNACK always encodes");
}

/// Writes SUBACK; `codes` are granted QoS values or failure codes of the version.
pub(crate) fn write_suback(b: &mut BytesMut, v5: bool, pkid: u16, codes: &[u8]) {
    let written = if v5 {
        use v5::SubscribeReasonCode as R;
        let return_codes = codes
            .iter()
            .map(|&c| match c {
                0..=2 => R::Success(match c {
                    0 => v5_qos(QoS::AtMostOnce),
                    1 => v5_qos(QoS::AtLeastOnce),
                    _ => v5_qos(QoS::ExactlyOnce),
                }),
                0x83 => R::ImplementationSpecific,
                0x87 => R::NotAuthorized,
                0x8F => R::TopicFilterInvalid,
                0x97 => R::QuotaExceeded,
                0x9E => R::SharedSubscriptionsNotSupported,
                _ => R::Unspecified,
            })
            .collect();
        v5::SubAck {
            pkid,
            return_codes,
            properties: None,
        }
        .write(b)
        .is_ok()
    } else {
        let return_codes = codes
            .iter()
            .map(|&c| match c {
                0 => v4::SubscribeReasonCode::Success(rumqttc::mqttbytes::QoS::AtMostOnce),
                1 => v4::SubscribeReasonCode::Success(rumqttc::mqttbytes::QoS::AtLeastOnce),
                2 => v4::SubscribeReasonCode::Success(rumqttc::mqttbytes::QoS::ExactlyOnce),
                _ => v4::SubscribeReasonCode::Failure,
            })
            .collect();
        v4::SubAck::new(pkid, return_codes).write(b).is_ok()
    };
    debug_assert!(written, "SUBACK always encodes");
}

fn v5_qos(q: QoS) -> rumqttc::v5::mqttbytes::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    }
}

/// Writes UNSUBACK; `existed[i]` tells whether filter `i` was subscribed (v5 reason 0x11).
pub(crate) fn write_unsuback(b: &mut BytesMut, v5: bool, pkid: u16, existed: &[bool]) {
    let written = if v5 {
        v5::UnsubAck {
            pkid,
            reasons: existed
                .iter()
                .map(|&e| {
                    if e {
                        v5::UnsubAckReason::Success
                    } else {
                        v5::UnsubAckReason::NoSubscriptionExisted
                    }
                })
                .collect(),
            properties: None,
        }
        .write(b)
        .is_ok()
    } else {
        v4::UnsubAck::new(pkid).write(b).is_ok()
    };
    debug_assert!(written, "UNSUBACK always encodes");
}

/// Writes a v5 DISCONNECT (v3.1.1 has no server DISCONNECT: the connection is just closed).
/// Written here because rumqttc 0.25 encodes a non-zero reason without properties with a
/// remaining length one byte short.
pub(crate) fn write_disconnect_v5(b: &mut BytesMut, code: u8, reason_string: Option<&str>) {
    let reason_string = reason_string.map(|s| truncate_utf8(s, 1024));
    let props = reason_string.map_or(0, |s| 1 + 2 + s.len());
    b.put_u8(0xE0);
    put_varint(b, 1 + varint_len(props) + props);
    b.put_u8(code);
    put_varint(b, props);
    if let Some(s) = reason_string {
        b.put_u8(0x1F);
        put_str(b, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish_out<'a>(topic: &'a str, payload: &'a [u8], qos: QoS) -> PublishOut<'a> {
        PublishOut {
            topic,
            payload,
            qos,
            pkid: if qos == QoS::AtMostOnce { 0 } else { 7 },
            retain: true,
            dup: false,
            properties: None,
            expiry: None,
            sub_id: None,
        }
    }

    #[test]
    fn header_lengths() {
        assert_eq!(parse_header(&[0x30]).unwrap(), None);
        assert_eq!(parse_header(&[0x30, 0x80]).unwrap(), None);
        let h = parse_header(&[0x30, 0x80, 0x01]).unwrap().unwrap();
        assert_eq!((h.header_len, h.remaining), (3, 128));
        assert!(parse_header(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]).is_err());
    }

    #[test]
    fn v4_publish_is_what_rumqttc_reads() {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let payload = vec![7u8; 300];
            let out = publish_out("a/b", &payload, qos);
            let mut b = BytesMut::new();
            out.write(&mut b, false);
            assert_eq!(b.len(), out.size(false));
            let v4::Packet::Publish(p) = v4::Packet::read(&mut b, usize::MAX).unwrap() else {
                panic!("not a publish");
            };
            assert_eq!(p.topic, "a/b");
            assert_eq!(p.payload.len(), 300);
            assert_eq!(p.qos as u8, qos as u8);
            assert!(p.retain);
        }
    }

    #[test]
    fn v5_publish_with_properties_is_what_rumqttc_reads() {
        let props = PublishProperties {
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Bytes::from_static(b"c1")),
            user_properties: vec![("k".into(), "v".into())],
            content_type: Some("application/json".into()),
            ..Default::default()
        };
        let msg = crate::message::Message::new(
            "t".into(),
            Bytes::from_static(b"x"),
            QoS::AtLeastOnce,
            false,
        )
        .with_properties(Some(&props));
        let out = PublishOut {
            properties: msg.properties.as_deref(),
            expiry: Some(30),
            sub_id: NonZeroU32::new(200),
            ..publish_out("t", b"x", QoS::AtLeastOnce)
        };
        let mut b = BytesMut::new();
        out.write(&mut b, true);
        assert_eq!(b.len(), out.size(true));
        let v5::Packet::Publish(p) = v5::Packet::read(&mut b, None).unwrap() else {
            panic!("not a publish");
        };
        let got = p.properties.unwrap();
        assert_eq!(got.response_topic.as_deref(), Some("reply/here"));
        assert_eq!(got.correlation_data.as_deref(), Some(&b"c1"[..]));
        assert_eq!(
            got.user_properties,
            vec![("k".to_string(), "v".to_string())]
        );
        assert_eq!(got.content_type.as_deref(), Some("application/json"));
        assert_eq!(got.message_expiry_interval, Some(30));
        assert_eq!(got.subscription_identifiers, vec![200]);
        assert_eq!(&p.payload[..], b"x");
    }

    #[test]
    fn inbound_publish_round_trip() {
        for v5 in [false, true] {
            let out = publish_out("x/y", b"hello", QoS::ExactlyOnce);
            let mut b = BytesMut::new();
            out.write(&mut b, v5);
            b.put_slice(&[0xC0, 0x00]);
            let version = if v5 {
                MqttVersion::V5
            } else {
                MqttVersion::V311
            };
            let Some(Inbound::Publish(p)) = decode(&mut b, version, 1024).unwrap() else {
                panic!("expected a publish");
            };
            assert_eq!(&*p.topic, "x/y");
            assert_eq!(p.pkid, 7);
            assert_eq!(&p.payload[..], b"hello");
            assert!(matches!(
                decode(&mut b, version, 1024).unwrap(),
                Some(Inbound::PingReq)
            ));
            assert!(b.is_empty());
        }
    }

    #[test]
    fn v5_acks_are_read_by_rumqttc() {
        let mut b = BytesMut::new();
        write_ack(&mut b, true, AckKind::PubAck, 9, 0x87, Some("not yours"));
        let v5::Packet::PubAck(a) = v5::Packet::read(&mut b, None).unwrap() else {
            panic!("not a puback");
        };
        assert_eq!(a.pkid, 9);
        assert_eq!(a.reason, v5::PubAckReason::NotAuthorized);
        assert_eq!(
            a.properties.unwrap().reason_string.as_deref(),
            Some("not yours")
        );

        write_ack(&mut b, true, AckKind::PubRec, 10, 0, None);
        assert!(
            matches!(v5::Packet::read(&mut b, None).unwrap(), v5::Packet::PubRec(r) if r.pkid == 10)
        );
        write_ack(&mut b, false, AckKind::PubRel, 11, 0, None);
        assert!(
            matches!(v4::Packet::read(&mut b, 100).unwrap(), v4::Packet::PubRel(r) if r.pkid == 11)
        );
    }

    #[test]
    fn v5_disconnect_is_read_by_rumqttc() {
        for reason in [None, Some("bye")] {
            let mut b = BytesMut::new();
            write_disconnect_v5(&mut b, 0x8E, reason);
            let v5::Packet::Disconnect(d) = v5::Packet::read(&mut b, None).unwrap() else {
                panic!("not a disconnect");
            };
            assert_eq!(d.reason_code, v5::DisconnectReasonCode::SessionTakenOver);
            assert_eq!(
                d.properties.and_then(|p| p.reason_string).as_deref(),
                reason
            );
            assert!(b.is_empty());
        }
    }

    #[test]
    fn oversized_and_garbage_input() {
        let mut b = BytesMut::from(&[0x30, 0xFF, 0x7F][..]);
        assert!(matches!(
            decode(&mut b, MqttVersion::V311, 1024),
            Err(DecodeError::TooLarge(_))
        ));
        let mut b = BytesMut::from(&[0x32, 0x03, 0x00, 0x05, b'a'][..]);
        assert!(decode(&mut b, MqttVersion::V311, 1024).is_err());
        let mut b = BytesMut::from(&[0x82, 0x02, 0x00, 0x01][..]);
        assert!(
            decode(&mut b, MqttVersion::V311, 1024).is_err(),
            "SUBSCRIBE without filters"
        );
    }

    #[test]
    fn connect_versions() {
        let mut c = v4::Connect::new("dev-1");
        c.set_login("alice", "pw");
        let mut b = BytesMut::new();
        c.write(&mut b).unwrap();
        let Some(FirstPacket::Connect(c)) = decode_connect(&mut b, 1024).unwrap() else {
            panic!("expected CONNECT");
        };
        assert_eq!(c.version, MqttVersion::V311);
        assert_eq!(c.username.as_deref(), Some("alice"));

        // MQTT 3.1 ("MQIsdp", level 3) is refused politely.
        let mut b = BytesMut::from(
            &[
                0x10, 0x0C, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 60,
            ][..],
        );
        assert!(matches!(
            decode_connect(&mut b, 1024).unwrap(),
            Some(FirstPacket::UnsupportedVersion(3))
        ));

        let mut b = BytesMut::from(&[0x30, 0x02, 0, 0][..]);
        assert!(decode_connect(&mut b, 1024).is_err());
    }
}
