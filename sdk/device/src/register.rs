//! One-product-one-secret dynamic registration: a device that carries only its product's
//! secret fetches its own device secret once, then logs in with it. The platform hands the
//! secret out only once, so the caller must persist it before connecting.

use std::time::Duration;

use lotus_model::alink::{SignMethod, register_sign_content};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
use serde_json::Value;

use crate::config::{Credentials, TlsConfig};
use crate::error::{Error, Result};
use crate::mqtt::tls_configuration;

/// What a device of a dynamic-registration product carries.
#[derive(Clone)]
pub struct ProductCredentials {
    pub product_key: String,
    pub product_secret: String,
    pub device_name: String,
}

impl std::fmt::Debug for ProductCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProductCredentials")
            .field("product_key", &self.product_key)
            .field("device_name", &self.device_name)
            .field("product_secret", &"***")
            .finish()
    }
}

fn random_nonce() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 16)
}

fn sign(p: &ProductCredentials, random: &str) -> String {
    SignMethod::HmacSha256.sign(
        p.product_secret.as_bytes(),
        &register_sign_content(&p.device_name, &p.product_key, random),
    )
}

fn credentials_from(p: &ProductCredentials, data: &Value) -> Result<Credentials> {
    let secret = data["deviceSecret"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::Registration(format!("no deviceSecret in the answer: {data}")))?;
    Ok(Credentials::new(
        p.product_key.clone(),
        p.device_name.clone(),
        secret,
    ))
}

/// Registers over HTTP(S): `POST {api_base}/auth/register/device`. `ca_pem` adds a trusted
/// CA for a platform with a private certificate.
pub async fn register_https(
    api_base: &str,
    product: &ProductCredentials,
    ca_pem: Option<&[u8]>,
) -> Result<Credentials> {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if let Some(pem) = ca_pem {
        let cert = reqwest::Certificate::from_pem(pem).map_err(|e| Error::Tls(e.to_string()))?;
        builder = builder.add_root_certificate(cert);
    }
    let client = builder.build().map_err(|e| Error::Tls(e.to_string()))?;
    let random = random_nonce();
    let sign = sign(product, &random);
    let resp = client
        .post(format!(
            "{}/auth/register/device",
            api_base.trim_end_matches('/')
        ))
        .form(&[
            ("productKey", product.product_key.as_str()),
            ("deviceName", product.device_name.as_str()),
            ("random", &random),
            ("sign", &sign),
            ("signMethod", "hmacsha256"),
        ])
        .send()
        .await
        .map_err(|e| Error::Transport(e.to_string()))?;
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .map_err(|e| Error::Registration(format!("HTTP {status}, not JSON: {e}")))?;
    if !status.is_success() || body["code"].as_i64() != Some(200) {
        return Err(Error::Registration(format!(
            "HTTP {status}: {}",
            body["message"].as_str().unwrap_or(&body.to_string())
        )));
    }
    credentials_from(product, &body["data"])
}

/// Registers over MQTT (`authType=register`, TLS only: the secret travels in the answer).
pub async fn register_mqtt(
    host: &str,
    port: u16,
    tls: &TlsConfig,
    product: &ProductCredentials,
) -> Result<Credentials> {
    let random = random_nonce();
    let (pk, dn) = (&product.product_key, &product.device_name);
    let client_id =
        format!("{dn}.{pk}|random={random},authType=register,securemode=2,signmethod=hmacsha256|");
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_credentials(format!("{dn}&{pk}"), sign(product, &random));
    o.set_transport(rumqttc::Transport::tls_with_config(tls_configuration(tls)?));
    let (_client, mut event_loop) = AsyncClient::new(o, 10);
    let wait = async {
        loop {
            match event_loop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p)))
                    if p.topic == lotus_model::alink::downlink_topic::REGISTER =>
                {
                    let v: Value = serde_json::from_slice(&p.payload)?;
                    return credentials_from(product, &v);
                }
                Ok(_) => {}
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                    return Err(Error::Registration(format!("refused: {code:?}")));
                }
                Err(e) => {
                    return Err(Error::Registration(format!(
                        "the connection ended before the answer: {e}"
                    )));
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .map_err(|_| Error::Timeout(Duration::from_secs(30)))?
}
