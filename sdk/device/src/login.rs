//! Alink login fields, signed exactly as Alibaba's Link SDKs sign them.

use lotus_model::alink::{SignMethod, connect_sign_content};

use crate::config::Credentials;

/// Unix time in milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// MQTT CONNECT fields for one-device-one-secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttLogin {
    pub client_id: String,
    pub username: String,
    pub password: String,
}

/// Builds `{id}|securemode=…,signmethod=…,timestamp=…|`, `{dn}&{pk}` and the HMAC. A fresh
/// timestamp is used on every (re)connect so that products with a replay window accept it.
pub fn mqtt_login(
    creds: &Credentials,
    id: &str,
    method: SignMethod,
    tls: bool,
    timestamp_ms: i64,
) -> MqttLogin {
    let ts = timestamp_ms.to_string();
    let securemode = if tls { 2 } else { 3 };
    let content = connect_sign_content(id, &creds.device_name, &creds.product_key, Some(&ts));
    MqttLogin {
        client_id: format!(
            "{id}|securemode={securemode},signmethod={},timestamp={ts},_v=lotus-sdk-rust-{}|",
            method.as_str(),
            env!("CARGO_PKG_VERSION")
        ),
        username: format!("{}&{}", creds.device_name, creds.product_key),
        password: method.sign(creds.device_secret.as_bytes(), &content),
    }
}

/// The JSON body of Alink CoAP `POST /auth`.
pub fn coap_auth_body(
    creds: &Credentials,
    method: SignMethod,
    timestamp_ms: i64,
) -> serde_json::Value {
    let ts = timestamp_ms.to_string();
    let client_id = creds.device_name.clone();
    let content = connect_sign_content(
        &client_id,
        &creds.device_name,
        &creds.product_key,
        Some(&ts),
    );
    serde_json::json!({
        "productKey": creds.product_key,
        "deviceName": creds.device_name,
        "clientId": client_id,
        "timestamp": ts,
        "signmethod": method.as_str(),
        "sign": method.sign(creds.device_secret.as_bytes(), &content),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lotus_model::alink::{ClientIdParams, parse_username};

    #[test]
    fn the_platform_parser_reads_what_we_build() {
        let c = Credentials::new("a1B2c3", "lamp-1", "s3cret");
        let l = mqtt_login(
            &c,
            "lamp-1",
            SignMethod::HmacSha256,
            false,
            1_700_000_000_000,
        );
        let p = ClientIdParams::parse(&l.client_id).unwrap();
        assert_eq!(p.id, "lamp-1");
        assert_eq!(p.securemode, Some(3));
        assert_eq!(p.timestamp.as_deref(), Some("1700000000000"));
        assert_eq!(parse_username(&l.username).unwrap(), ("lamp-1", "a1B2c3"));
        let content = connect_sign_content("lamp-1", "lamp-1", "a1B2c3", Some("1700000000000"));
        assert!(SignMethod::HmacSha256.verify(b"s3cret", &content, &l.password));
        let tls = mqtt_login(&c, "x", SignMethod::HmacSha1, true, 1);
        assert!(tls.client_id.contains("securemode=2,signmethod=hmacsha1"));

        let body = coap_auth_body(&c, SignMethod::HmacSha256, 1_700_000_000_000);
        assert_eq!(body["clientId"], "lamp-1");
        assert!(SignMethod::HmacSha256.verify(b"s3cret", &content, body["sign"].as_str().unwrap()));
    }
}
