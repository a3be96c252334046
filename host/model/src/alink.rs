//! Alibaba Cloud IoT's Alink device protocol: connection signing, dynamic registration, topics
//! and JSON message shapes. Devices built with Alibaba's Link SDKs connect to Lotus by changing
//! only the endpoint, so every detail here follows what those SDKs send.

use std::fmt;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The HMAC a device signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignMethod {
    HmacSha1,
    HmacSha256,
    HmacMd5,
}

impl SignMethod {
    /// Accepts the spellings devices send (`hmacsha1`, `HmacSHA256`, …).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "hmacsha1" => Some(SignMethod::HmacSha1),
            "hmacsha256" => Some(SignMethod::HmacSha256),
            "hmacmd5" => Some(SignMethod::HmacMd5),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SignMethod::HmacSha1 => "hmacsha1",
            SignMethod::HmacSha256 => "hmacsha256",
            SignMethod::HmacMd5 => "hmacmd5",
        }
    }

    /// Lower-case hex HMAC of `content` keyed by `key`.
    pub fn sign(self, key: &[u8], content: &str) -> String {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], content: &str) -> String {
            let mut mac = <M as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
            mac.update(content.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        }
        match self {
            SignMethod::HmacSha1 => run::<Hmac<sha1::Sha1>>(key, content),
            SignMethod::HmacSha256 => run::<Hmac<sha2::Sha256>>(key, content),
            SignMethod::HmacMd5 => run::<Hmac<md5::Md5>>(key, content),
        }
    }

    /// Constant-time check of a hex signature (either case).
    pub fn verify(self, key: &[u8], content: &str, signature_hex: &str) -> bool {
        let Ok(expected) = hex::decode(signature_hex.trim()) else {
            return false;
        };
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], content: &str, expected: &[u8]) -> bool {
            let mut mac = <M as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
            mac.update(content.as_bytes());
            mac.verify_slice(expected).is_ok()
        }
        match self {
            SignMethod::HmacSha1 => run::<Hmac<sha1::Sha1>>(key, content, &expected),
            SignMethod::HmacSha256 => run::<Hmac<sha2::Sha256>>(key, content, &expected),
            SignMethod::HmacMd5 => run::<Hmac<md5::Md5>>(key, content, &expected),
        }
    }
}

/// What a CONNECT asks for, from the `authType` client-id parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    /// Ordinary one-device-one-secret login (no `authType`).
    Device,
    /// One-product-one-secret registration of a pre-created device: the platform answers with
    /// the device secret on `/ext/register`.
    Register,
    /// Registration without pre-creation: the platform answers with a client id and token.
    RegisterNoWhitelist,
    /// Login with a token obtained from `RegisterNoWhitelist`.
    TokenLogin,
}

/// The parsed MQTT client id `{id}|k=v,k=v|`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdParams {
    /// The part before the first pipe: what the signature covers.
    pub id: String,
    pub securemode: Option<i32>,
    pub sign_method: Option<SignMethod>,
    pub timestamp: Option<String>,
    pub auth_type: AuthType,
    pub random: Option<String>,
}

/// Why a connection's credentials could not be read (not why they were wrong).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("client id parameters must be enclosed in '|…|' (got '{0}')")]
    UnterminatedParams(String),
    #[error("unsupported signmethod '{0}': use hmacsha1, hmacsha256 or hmacmd5")]
    UnsupportedSignMethod(String),
    #[error("unsupported authType '{0}'")]
    UnsupportedAuthType(String),
    #[error("securemode must be an integer (got '{0}')")]
    BadSecureMode(String),
    #[error("username must be '{{deviceName}}&{{productKey}}'")]
    BadUsername,
}

impl ClientIdParams {
    /// Parses a client id. Unknown parameters (`ext`, `_ss`, `lan`, `_v`, `instanceId`, …) are
    /// ignored because each SDK version adds its own.
    pub fn parse(raw: &str) -> Result<Self, CredentialError> {
        let (id, params) = match raw.split_once('|') {
            None => (raw, ""),
            Some((id, rest)) => {
                let params = rest
                    .strip_suffix('|')
                    .ok_or_else(|| CredentialError::UnterminatedParams(raw.to_string()))?;
                (id, params)
            }
        };
        let mut out = ClientIdParams {
            id: id.to_string(),
            securemode: None,
            sign_method: None,
            timestamp: None,
            auth_type: AuthType::Device,
            random: None,
        };
        for pair in params.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k.trim() {
                "securemode" => {
                    out.securemode = Some(
                        v.trim()
                            .parse()
                            .map_err(|_| CredentialError::BadSecureMode(v.to_string()))?,
                    )
                }
                "signmethod" => {
                    out.sign_method = Some(
                        SignMethod::parse(v.trim())
                            .ok_or_else(|| CredentialError::UnsupportedSignMethod(v.to_string()))?,
                    )
                }
                "timestamp" => out.timestamp = Some(v.trim().to_string()),
                "random" => out.random = Some(v.trim().to_string()),
                "authType" | "authtype" => {
                    out.auth_type = match v.trim() {
                        "register" => AuthType::Register,
                        "regnwl" => AuthType::RegisterNoWhitelist,
                        "connwl" => AuthType::TokenLogin,
                        other => {
                            return Err(CredentialError::UnsupportedAuthType(other.to_string()));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

/// Splits the MQTT username `{deviceName}&{productKey}`.
pub fn parse_username(username: &str) -> Result<(&str, &str), CredentialError> {
    match username.split_once('&') {
        Some((dn, pk)) if !dn.is_empty() && !pk.is_empty() => Ok((dn, pk)),
        _ => Err(CredentialError::BadUsername),
    }
}

/// The string a device signs to connect: parameters sorted by name and concatenated.
pub fn connect_sign_content(
    client_id: &str,
    device_name: &str,
    product_key: &str,
    timestamp: Option<&str>,
) -> String {
    let mut s = format!("clientId{client_id}deviceName{device_name}productKey{product_key}");
    if let Some(ts) = timestamp {
        s.push_str("timestamp");
        s.push_str(ts);
    }
    s
}

/// The string a device signs for dynamic registration (HTTPS and MQTT).
pub fn register_sign_content(device_name: &str, product_key: &str, random: &str) -> String {
    format!("deviceName{device_name}productKey{product_key}random{random}")
}

/// Device timestamps arrive in seconds or milliseconds; returns milliseconds.
pub fn timestamp_millis(ts: &str) -> Option<i64> {
    let n: i64 = ts.trim().parse().ok()?;
    // Anything below 10^11 cannot be milliseconds since 1973, so it is seconds.
    Some(if n.abs() < 100_000_000_000 {
        n * 1000
    } else {
        n
    })
}

/// An Alink request `{"id","version","params","method"}`. Ids arrive as strings or numbers.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Request {
    #[serde(default, deserialize_with = "id_as_string")]
    pub id: String,
    #[serde(default = "default_version")]
    pub version: String,
    #[serde(default)]
    pub params: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// `{"ack": 0}` asks the platform not to reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sys: Option<Value>,
}

fn default_version() -> String {
    "1.0".to_string()
}

fn id_as_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

impl Request {
    /// Whether the device asked for a reply (`sys.ack` absent or non-zero).
    pub fn wants_reply(&self) -> bool {
        self.sys
            .as_ref()
            .and_then(|s| s.get("ack"))
            .and_then(Value::as_i64)
            != Some(0)
    }
}

/// An Alink reply `{"id","code","data","message"}`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Reply {
    #[serde(default, deserialize_with = "id_as_string")]
    pub id: String,
    pub code: i64,
    #[serde(default)]
    pub data: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Reply codes devices and SDKs understand.
pub mod code {
    pub const SUCCESS: i64 = 200;
    /// The request itself is malformed (not JSON, no id…).
    pub const REQUEST_ERROR: i64 = 400;
    /// A parameter does not fit the thing model.
    pub const PARAM_ERROR: i64 = 460;
    pub const TOO_MANY_REQUESTS: i64 = 429;
    pub const SERVER_ERROR: i64 = 500;
    /// The method or identifier is not in the thing model.
    pub const METHOD_NOT_FOUND: i64 = 6300;
    /// The product has no thing model yet.
    pub const NO_THING_MODEL: i64 = 6301;
}

impl Reply {
    pub fn success(id: impl Into<String>, data: Value, method: Option<&str>) -> Self {
        Reply {
            id: id.into(),
            code: code::SUCCESS,
            data,
            message: Some("success".into()),
            method: method.map(str::to_string),
            version: Some("1.0".into()),
        }
    }

    pub fn error(
        id: impl Into<String>,
        code: i64,
        message: impl fmt::Display,
        method: Option<&str>,
    ) -> Self {
        Reply {
            id: id.into(),
            code,
            data: Value::Object(Default::default()),
            message: Some(message.to_string()),
            method: method.map(str::to_string),
            version: Some("1.0".into()),
        }
    }
}

/// A topic a device publishes, classified for the uplink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UplinkTopic<'a> {
    PropertyPost,
    EventPost {
        identifier: &'a str,
    },
    PropertySetReply,
    PropertyGetReply,
    ServiceReply {
        identifier: &'a str,
    },
    RrpcResponse {
        message_id: &'a str,
    },
    RawUp,
    RawDownReply,
    DeviceInfoUpdate,
    DeviceInfoDelete,
    ShadowUpdate,
    /// A gateway manages its topology (`/sys/{pk}/{dn}/thing/topo/add|delete|get`).
    TopoAdd,
    TopoDelete,
    TopoGet,
    /// A gateway logs a sub-device in or out (`/ext/session/{pk}/{dn}/combine/login|logout`).
    SubDeviceLogin,
    SubDeviceLogout,
    /// `/{pk}/{dn}/user/…`
    Custom {
        suffix: &'a str,
    },
}

impl UplinkTopic<'_> {
    /// A short, bounded name for metrics and logs.
    pub fn class(&self) -> &'static str {
        match self {
            UplinkTopic::PropertyPost => "property_post",
            UplinkTopic::EventPost { .. } => "event_post",
            UplinkTopic::PropertySetReply => "property_set_reply",
            UplinkTopic::PropertyGetReply => "property_get_reply",
            UplinkTopic::ServiceReply { .. } => "service_reply",
            UplinkTopic::RrpcResponse { .. } => "rrpc_response",
            UplinkTopic::RawUp => "raw_up",
            UplinkTopic::RawDownReply => "raw_down_reply",
            UplinkTopic::DeviceInfoUpdate | UplinkTopic::DeviceInfoDelete => "deviceinfo",
            UplinkTopic::ShadowUpdate => "shadow",
            UplinkTopic::TopoAdd | UplinkTopic::TopoDelete | UplinkTopic::TopoGet => "topology",
            UplinkTopic::SubDeviceLogin | UplinkTopic::SubDeviceLogout => "sub_device_session",
            UplinkTopic::Custom { .. } => "custom",
        }
    }
}

/// The device a topic belongs to and what it carries. `None` for topics outside the device
/// namespaces or with unknown shapes (they are still routed like any MQTT topic).
pub fn parse_uplink_topic(topic: &str) -> Option<(&str, &str, UplinkTopic<'_>)> {
    let rest = topic.strip_prefix('/')?;
    let mut parts = rest.splitn(4, '/');
    let first = parts.next()?;
    match first {
        "sys" => {
            let pk = parts.next()?;
            let dn = parts.next()?;
            let tail = parts.next()?;
            let kind = match tail {
                "thing/event/property/post" => UplinkTopic::PropertyPost,
                "thing/service/property/set_reply" => UplinkTopic::PropertySetReply,
                "thing/service/property/get_reply" => UplinkTopic::PropertyGetReply,
                "thing/model/up_raw" => UplinkTopic::RawUp,
                "thing/model/down_raw_reply" => UplinkTopic::RawDownReply,
                "thing/deviceinfo/update" => UplinkTopic::DeviceInfoUpdate,
                "thing/deviceinfo/delete" => UplinkTopic::DeviceInfoDelete,
                "thing/topo/add" => UplinkTopic::TopoAdd,
                "thing/topo/delete" => UplinkTopic::TopoDelete,
                "thing/topo/get" => UplinkTopic::TopoGet,
                t => {
                    if let Some(id) = t
                        .strip_prefix("thing/event/")
                        .and_then(|s| s.strip_suffix("/post"))
                    {
                        if id.contains('/') {
                            return None;
                        }
                        UplinkTopic::EventPost { identifier: id }
                    } else if let Some(id) = t
                        .strip_prefix("thing/service/")
                        .and_then(|s| s.strip_suffix("_reply"))
                    {
                        if id.contains('/') {
                            return None;
                        }
                        UplinkTopic::ServiceReply { identifier: id }
                    } else if let Some(mid) = t.strip_prefix("rrpc/response/") {
                        if mid.contains('/') {
                            return None;
                        }
                        UplinkTopic::RrpcResponse { message_id: mid }
                    } else {
                        return None;
                    }
                }
            };
            Some((pk, dn, kind))
        }
        "ext" => {
            if parts.next()? != "session" {
                return None;
            }
            let pk = parts.next()?;
            let (dn, tail) = parts.next()?.split_once('/')?;
            let kind = match tail {
                "combine/login" => UplinkTopic::SubDeviceLogin,
                "combine/logout" => UplinkTopic::SubDeviceLogout,
                _ => return None,
            };
            Some((pk, dn, kind))
        }
        "shadow" => {
            if parts.next()? != "update" {
                return None;
            }
            let pk = parts.next()?;
            let dn = parts.next()?;
            if dn.contains('/') {
                return None;
            }
            Some((pk, dn, UplinkTopic::ShadowUpdate))
        }
        pk => {
            let dn = parts.next()?;
            if parts.next()? != "user" {
                return None;
            }
            let suffix = parts.next()?;
            Some((pk, dn, UplinkTopic::Custom { suffix }))
        }
    }
}

/// Topics the platform publishes to a device.
pub mod downlink_topic {
    pub fn reply(request_topic: &str) -> String {
        format!("{request_topic}_reply")
    }
    pub fn property_set(pk: &str, dn: &str) -> String {
        format!("/sys/{pk}/{dn}/thing/service/property/set")
    }
    pub fn property_get(pk: &str, dn: &str) -> String {
        format!("/sys/{pk}/{dn}/thing/service/property/get")
    }
    pub fn service(pk: &str, dn: &str, identifier: &str) -> String {
        format!("/sys/{pk}/{dn}/thing/service/{identifier}")
    }
    pub fn rrpc_request(pk: &str, dn: &str, message_id: &str) -> String {
        format!("/sys/{pk}/{dn}/rrpc/request/{message_id}")
    }
    pub fn shadow_get(pk: &str, dn: &str) -> String {
        format!("/shadow/get/{pk}/{dn}")
    }
    pub fn raw_down(pk: &str, dn: &str) -> String {
        format!("/sys/{pk}/{dn}/thing/model/down_raw")
    }
    pub const REGISTER: &str = "/ext/register";
    pub fn topo_change(pk: &str, dn: &str) -> String {
        format!("/sys/{pk}/{dn}/thing/topo/change")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_topics_are_classified() {
        assert_eq!(
            parse_uplink_topic("/sys/gw/g1/thing/topo/add").map(|t| t.2),
            Some(UplinkTopic::TopoAdd)
        );
        assert_eq!(
            parse_uplink_topic("/ext/session/gw/g1/combine/login"),
            Some(("gw", "g1", UplinkTopic::SubDeviceLogin))
        );
        assert_eq!(
            parse_uplink_topic("/ext/session/gw/g1/combine/logout"),
            Some(("gw", "g1", UplinkTopic::SubDeviceLogout))
        );
        assert_eq!(parse_uplink_topic("/ext/session/gw/g1/other"), None);
    }

    #[test]
    fn parses_sdk_client_ids() {
        let p = ClientIdParams::parse(
            "dev1|securemode=3,signmethod=hmacsha1,timestamp=1700000000000,_v=sdk-c-4.1.0,ext=3,_ss=1,lan=C|",
        )
        .unwrap();
        assert_eq!(p.id, "dev1");
        assert_eq!(p.securemode, Some(3));
        assert_eq!(p.sign_method, Some(SignMethod::HmacSha1));
        assert_eq!(p.timestamp.as_deref(), Some("1700000000000"));
        assert_eq!(p.auth_type, AuthType::Device);

        let r = ClientIdParams::parse(
            "d.pk|random=abc,authType=register,securemode=2,signmethod=hmacsha256|",
        )
        .unwrap();
        assert_eq!(r.auth_type, AuthType::Register);
        assert_eq!(r.random.as_deref(), Some("abc"));

        assert!(ClientIdParams::parse("x|securemode=3").is_err());
        assert!(matches!(
            ClientIdParams::parse("x|signmethod=rsa|"),
            Err(CredentialError::UnsupportedSignMethod(_))
        ));
        assert_eq!(ClientIdParams::parse("plain").unwrap().id, "plain");
    }

    #[test]
    fn signs_like_alibaba() {
        // Reference value computed with Python's hmac module over the same content.
        let content = connect_sign_content("dev1", "dev1", "a1B2c3", Some("1700000000000"));
        assert_eq!(
            content,
            "clientIddev1deviceNamedev1productKeya1B2c3timestamp1700000000000"
        );
        for m in [
            SignMethod::HmacSha1,
            SignMethod::HmacSha256,
            SignMethod::HmacMd5,
        ] {
            let s = m.sign(b"secret", &content);
            assert!(m.verify(b"secret", &content, &s));
            assert!(m.verify(b"secret", &content, &s.to_uppercase()));
            assert!(!m.verify(b"other", &content, &s));
            assert!(!m.verify(b"secret", &content, "zz"));
        }
        assert_eq!(
            SignMethod::HmacSha1.sign(b"key", "The quick brown fox jumps over the lazy dog"),
            "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9"
        );
    }

    #[test]
    fn timestamps_in_seconds_or_millis() {
        assert_eq!(timestamp_millis("1700000000"), Some(1_700_000_000_000));
        assert_eq!(timestamp_millis("1700000000000"), Some(1_700_000_000_000));
        assert_eq!(timestamp_millis("abc"), None);
    }

    #[test]
    fn classifies_topics() {
        assert_eq!(
            parse_uplink_topic("/sys/pk/dn/thing/event/property/post"),
            Some(("pk", "dn", UplinkTopic::PropertyPost))
        );
        assert_eq!(
            parse_uplink_topic("/sys/pk/dn/thing/event/Fault/post"),
            Some((
                "pk",
                "dn",
                UplinkTopic::EventPost {
                    identifier: "Fault"
                }
            ))
        );
        assert_eq!(
            parse_uplink_topic("/sys/pk/dn/thing/service/Reboot_reply"),
            Some((
                "pk",
                "dn",
                UplinkTopic::ServiceReply {
                    identifier: "Reboot"
                }
            ))
        );
        assert_eq!(
            parse_uplink_topic("/sys/pk/dn/rrpc/response/42"),
            Some(("pk", "dn", UplinkTopic::RrpcResponse { message_id: "42" }))
        );
        assert_eq!(
            parse_uplink_topic("/shadow/update/pk/dn"),
            Some(("pk", "dn", UplinkTopic::ShadowUpdate))
        );
        assert_eq!(
            parse_uplink_topic("/pk/dn/user/update"),
            Some(("pk", "dn", UplinkTopic::Custom { suffix: "update" }))
        );
        assert_eq!(parse_uplink_topic("city/lights"), None);
        assert_eq!(parse_uplink_topic("/sys/pk/dn/thing/event/a/b/post"), None);
    }

    #[test]
    fn request_ids_may_be_numbers() {
        let r: Request = serde_json::from_str(
            r#"{"id":123,"params":{"a":1},"method":"thing.event.property.post"}"#,
        )
        .unwrap();
        assert_eq!(r.id, "123");
        assert!(r.wants_reply());
        let r: Request = serde_json::from_str(r#"{"id":"1","params":{},"sys":{"ack":0}}"#).unwrap();
        assert!(!r.wants_reply());
    }
}
