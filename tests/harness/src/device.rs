//! An Alink device as Alibaba's Link SDK builds its MQTT credentials.

use std::net::SocketAddr;

use lotus_model::alink::{SignMethod, connect_sign_content};

/// Credentials a device holds.
#[derive(Debug, Clone)]
pub struct DeviceCredentials {
    pub product_key: String,
    pub device_name: String,
    pub device_secret: String,
}

/// The CONNECT fields: `(client id, username, password)`.
pub fn signed_login(
    creds: &DeviceCredentials,
    client_id: &str,
    method: SignMethod,
    timestamp: Option<&str>,
) -> (String, String, String) {
    let params = match timestamp {
        Some(ts) => format!(
            "securemode=3,signmethod={},timestamp={ts},_v=sdk-c-4.1.0,lan=C",
            method.as_str()
        ),
        None => format!("securemode=3,signmethod={},_v=sdk-c-4.1.0", method.as_str()),
    };
    let full_id = format!("{client_id}|{params}|");
    let username = format!("{}&{}", creds.device_name, creds.product_key);
    let content =
        connect_sign_content(client_id, &creds.device_name, &creds.product_key, timestamp);
    let password = method.sign(creds.device_secret.as_bytes(), &content);
    (full_id, username, password)
}

/// rumqttc (MQTT 3.1.1) options for a device.
pub fn mqtt_options(creds: &DeviceCredentials, addr: SocketAddr) -> rumqttc::MqttOptions {
    let ts = crate::now_ms().to_string();
    let (id, user, pass) =
        signed_login(creds, &creds.device_name, SignMethod::HmacSha256, Some(&ts));
    let mut o = rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_credentials(user, pass);
    o.set_keep_alive(std::time::Duration::from_secs(30));
    o
}

/// rumqttc MQTT 5 options for a device.
pub fn mqtt5_options(creds: &DeviceCredentials, addr: SocketAddr) -> rumqttc::v5::MqttOptions {
    let ts = crate::now_ms().to_string();
    let (id, user, pass) = signed_login(creds, &creds.device_name, SignMethod::HmacSha1, Some(&ts));
    let mut o = rumqttc::v5::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_credentials(user, pass);
    o.set_keep_alive(std::time::Duration::from_secs(30));
    o
}
