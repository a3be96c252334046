//! Who may connect: Alink signed logins and one-product-one-secret registration.

use std::sync::Arc;

use lotus_model::alink::{
    AuthType, ClientIdParams, SignMethod, connect_sign_content, parse_username,
    register_sign_content, timestamp_millis,
};
use lotus_model::authz::{DeviceId, Principal};
use lotus_model::product::validate_device_name;
use lotus_mqtt::{AuthOutcome, ConnectRejection, ConnectRequest, Transport};
use rand::Rng;
use serde_json::json;

use crate::DevicePlane;

/// A device secret as Alibaba issues them: 32 alphanumeric characters.
pub fn generate_secret() -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

fn reject(code: ConnectRejection, reason: impl Into<String>) -> AuthOutcome {
    AuthOutcome::Reject {
        code,
        reason: reason.into(),
    }
}

/// Why a registration was refused; the HTTPS endpoint and MQTT both report it.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Storage(#[from] lotus_storage::StorageError),
}

/// What a successful registration hands the device.
pub enum Registered {
    /// `authType=register`: the pre-created device's own secret.
    Secret { device_secret: String },
    /// `authType=regnwl`: a client id and token to log in with (`authType=connwl`).
    Token {
        client_id: String,
        device_token: String,
    },
}

/// How a device proves it holds its secret.
pub(crate) enum Proof<'a> {
    /// An Alink signature over client id, device name, product key and timestamp.
    Sign {
        method: SignMethod,
        client_id: &'a str,
        timestamp: Option<&'a str>,
        sign: &'a str,
    },
    /// The token handed out by whitelist-free registration (`authType=connwl`).
    Token(&'a str),
}

/// Why a device login was refused, in words the device's vendor can act on.
pub(crate) enum LoginRefusal {
    BadCredentials(String),
    NotAuthorized(String),
    Unavailable,
}

impl DevicePlane {
    /// Authenticates a CONNECT.
    pub async fn authenticate(self: &Arc<Self>, req: &ConnectRequest<'_>) -> AuthOutcome {
        // Clients without device credentials are plain MQTT clients, admitted only when the
        // node allows anonymous use.
        let anonymous = || AuthOutcome::Accept {
            principal: Principal::Anonymous {
                client_id: req.client_id.into(),
            },
            session_key: format!("anonymous:{}", req.client_id).into(),
        };
        let Some(username) = req.username else {
            if self.config.allow_anonymous {
                return anonymous();
            }
            return reject(
                ConnectRejection::BadCredentials,
                "username '{deviceName}&{productKey}' and a signed password are required",
            );
        };
        if crate::application::is_application_username(username) {
            return self.authenticate_application(req, username).await;
        }
        if crate::application::is_registered_app_username(username) {
            return self.authenticate_registered_app(req, username).await;
        }
        let (device_name, product_key) = match parse_username(username) {
            Ok(v) => v,
            Err(_) if self.config.allow_anonymous => return anonymous(),
            Err(e) => return reject(ConnectRejection::BadCredentials, e.to_string()),
        };
        let params = match ClientIdParams::parse(req.client_id) {
            Ok(p) => p,
            Err(e) => return reject(ConnectRejection::ClientIdNotValid, e.to_string()),
        };
        if params.securemode == Some(2) && req.transport != Transport::Tls {
            return reject(
                ConnectRejection::NotAuthorized,
                "securemode=2 requires TLS: connect to the MQTT TLS port",
            );
        }
        let password = req
            .password
            .and_then(|p| std::str::from_utf8(p).ok())
            .unwrap_or("");
        if self.registry.get(product_key).is_none() {
            return reject(
                ConnectRejection::NotAuthorized,
                format!("unknown product '{product_key}'"),
            );
        }
        // Alibaba's default when a device omits signmethod.
        let method = params.sign_method.unwrap_or(SignMethod::HmacMd5);

        match params.auth_type {
            AuthType::Register | AuthType::RegisterNoWhitelist => {
                let random = params.random.clone().unwrap_or_default();
                match self
                    .register(product_key, device_name, &random, password, method, params.auth_type)
                    .await
                {
                    Ok(Registered::Secret { device_secret }) => AuthOutcome::ReplyAndClose {
                        topic: lotus_model::alink::downlink_topic::REGISTER.to_string(),
                        payload: json!({"productKey": product_key, "deviceName": device_name, "deviceSecret": device_secret})
                            .to_string()
                            .into(),
                    },
                    Ok(Registered::Token { client_id, device_token }) => AuthOutcome::ReplyAndClose {
                        topic: lotus_model::alink::downlink_topic::REGISTER.to_string(),
                        payload: json!({"clientId": client_id, "deviceToken": device_token})
                            .to_string()
                            .into(),
                    },
                    Err(RegistrationError::Storage(e)) => {
                        tracing::error!(error = %e, "registration failed on storage");
                        reject(ConnectRejection::ServerUnavailable, "storage unavailable")
                    }
                    Err(e) => reject(ConnectRejection::NotAuthorized, e.to_string()),
                }
            }
            AuthType::Device | AuthType::TokenLogin => {
                let proof = if params.auth_type == AuthType::TokenLogin {
                    Proof::Token(password)
                } else {
                    Proof::Sign {
                        method,
                        client_id: &params.id,
                        timestamp: params.timestamp.as_deref(),
                        sign: password,
                    }
                };
                match self
                    .check_device_login(product_key, device_name, proof)
                    .await
                {
                    Ok(device) => AuthOutcome::Accept {
                        session_key: format!("device:{device}").into(),
                        principal: Principal::Device(device),
                    },
                    Err(LoginRefusal::BadCredentials(m)) => {
                        reject(ConnectRejection::BadCredentials, m)
                    }
                    Err(LoginRefusal::NotAuthorized(m)) => {
                        reject(ConnectRejection::NotAuthorized, m)
                    }
                    Err(LoginRefusal::Unavailable) => {
                        reject(ConnectRejection::ServerUnavailable, "storage unavailable")
                    }
                }
            }
        }
    }

    /// Checks a device's proof of its secret: the one rule for MQTT, CoAP and HTTP logins.
    pub(crate) async fn check_device_login(
        &self,
        product_key: &str,
        device_name: &str,
        proof: Proof<'_>,
    ) -> Result<DeviceId, LoginRefusal> {
        let Some(product) = self.registry.get(product_key) else {
            return Err(LoginRefusal::NotAuthorized(format!(
                "unknown product '{product_key}'"
            )));
        };
        let secret = match self.store.device_secret(product_key, device_name).await {
            Ok(Some((secret, true))) => secret,
            Ok(Some((_, false))) => {
                return Err(LoginRefusal::NotAuthorized("the device is disabled".into()));
            }
            Ok(None) => {
                return Err(LoginRefusal::BadCredentials(format!(
                    "unknown device '{device_name}' of product '{product_key}'"
                )));
            }
            Err(e) => {
                tracing::error!(error = %e, "device lookup failed");
                return Err(LoginRefusal::Unavailable);
            }
        };
        let (valid, timestamp) = match proof {
            Proof::Token(token) => (
                constant_time_eq(secret.expose().as_bytes(), token.as_bytes()),
                None,
            ),
            Proof::Sign {
                method,
                client_id,
                timestamp,
                sign,
            } => {
                let content = connect_sign_content(client_id, device_name, product_key, timestamp);
                (
                    method.verify(secret.expose().as_bytes(), &content, sign),
                    timestamp,
                )
            }
        };
        if !valid {
            return Err(LoginRefusal::BadCredentials(
                "signature does not match the device secret".into(),
            ));
        }
        if let Some(window) = product.replay_window_secs {
            let Some(ts) = timestamp.and_then(timestamp_millis) else {
                return Err(LoginRefusal::NotAuthorized(
                    "this product requires a timestamp in the login".into(),
                ));
            };
            if (crate::now_ms() - ts).abs() > window * 1000 {
                return Err(LoginRefusal::NotAuthorized(format!(
                    "timestamp is outside the product's {window} s replay window"
                )));
            }
        }
        Ok(DeviceId::new(product_key, device_name))
    }

    /// One-product-one-secret registration (SA-2), shared by HTTPS and MQTT.
    pub async fn register(
        &self,
        product_key: &str,
        device_name: &str,
        random: &str,
        sign: &str,
        method: SignMethod,
        auth_type: AuthType,
    ) -> Result<Registered, RegistrationError> {
        let product = self.registry.get(product_key).ok_or_else(|| {
            RegistrationError::Forbidden(format!("unknown product '{product_key}'"))
        })?;
        if !product.dynamic_registration {
            return Err(RegistrationError::Forbidden(format!(
                "dynamic registration is not enabled for product '{product_key}'"
            )));
        }
        if random.is_empty() {
            return Err(RegistrationError::Invalid("random is required".into()));
        }
        let product_secret = self
            .store
            .product_secret(product_key)
            .await?
            .ok_or_else(|| {
                RegistrationError::Forbidden(format!("unknown product '{product_key}'"))
            })?;
        let content = register_sign_content(device_name, product_key, random);
        if !method.verify(product_secret.expose().as_bytes(), &content, sign) {
            return Err(RegistrationError::Forbidden(
                "sign does not match the product secret".into(),
            ));
        }
        let existing = self.store.get_device(product_key, device_name).await?;
        match auth_type {
            AuthType::RegisterNoWhitelist => {
                if !product.allow_unregistered {
                    return Err(RegistrationError::Forbidden(format!(
                        "product '{product_key}' only registers pre-created devices (use authType=register)"
                    )));
                }
                let token = generate_secret();
                match existing {
                    Some(d) if d.first_online_at.is_some() => {
                        return Err(RegistrationError::Forbidden(format!(
                            "device '{device_name}' is already activated"
                        )));
                    }
                    Some(_) => {
                        self.store.delete_device(product_key, device_name).await?;
                        self.store
                            .create_devices(
                                product_key,
                                &[(device_name.to_string(), token.clone())],
                            )
                            .await?;
                    }
                    None => {
                        validate_device_name(device_name).map_err(RegistrationError::Invalid)?;
                        self.store
                            .create_devices(
                                product_key,
                                &[(device_name.to_string(), token.clone())],
                            )
                            .await?;
                    }
                }
                Ok(Registered::Token {
                    client_id: format!(
                        "{product_key}.{device_name}|authType=connwl,securemode=-2,_ss=1,ext=3|"
                    ),
                    device_token: token,
                })
            }
            _ => {
                let device = existing.ok_or_else(|| {
                    RegistrationError::Forbidden(format!(
                        "device '{device_name}' is not pre-created in product '{product_key}'"
                    ))
                })?;
                if device.first_online_at.is_some() {
                    // A secret is handed out only before first use, so a leaked product secret
                    // cannot take over devices already in the field.
                    return Err(RegistrationError::Forbidden(format!(
                        "device '{device_name}' is already activated; its secret is not issued again"
                    )));
                }
                if !device.enabled {
                    return Err(RegistrationError::Forbidden(format!(
                        "device '{device_name}' is disabled"
                    )));
                }
                let (secret, _) = self
                    .store
                    .device_secret(product_key, device_name)
                    .await?
                    .ok_or_else(|| RegistrationError::Forbidden("device disappeared".into()))?;
                Ok(Registered::Secret {
                    device_secret: secret.expose().to_string(),
                })
            }
        }
    }
}

/// Equality of secrets whose running time does not depend on where they differ (only on
/// their length).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
