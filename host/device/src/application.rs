//! Application credentials at CONNECT: an application (ISV app, city dashboard) logs in with
//! the username (`app.…`) and secret an operator created for it, and is then confined to its
//! grants by the authorizer (see `TopicClassAuthorizer::application` in `lotus-model`).
//!
//! Usernames of applications start with `app.` and never contain `&`, so they cannot be taken
//! for a device's `{deviceName}&{productKey}` and a device secret never opens an application
//! login (nor the other way round).

use std::sync::Arc;

use lotus_model::authz::{Application, Principal};
use lotus_model::topic::AppGrant;
use lotus_mqtt::{AuthOutcome, ConnectRejection, ConnectRequest, DisconnectReason};
use rand::Rng;

use crate::DevicePlane;

/// Every application username starts with this.
pub const USERNAME_PREFIX: &str = "app.";

/// Is this CONNECT username an application's (rather than a device's `dn&pk`)?
pub fn is_application_username(username: &str) -> bool {
    username.starts_with(USERNAME_PREFIX) && !username.contains('&')
}

/// A fresh application username: `app.` and 12 lower-case letters and digits.
pub fn generate_username() -> String {
    let mut rng = rand::rng();
    let tail: String = (0..12)
        .map(|_| {
            let c = rng.sample(rand::distr::Alphanumeric);
            char::from(c).to_ascii_lowercase()
        })
        .collect();
    format!("{USERNAME_PREFIX}{tail}")
}

fn reject(code: ConnectRejection, reason: impl Into<String>) -> AuthOutcome {
    AuthOutcome::Reject {
        code,
        reason: reason.into(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl DevicePlane {
    /// Authenticates an application CONNECT: the password is the credential's secret.
    pub async fn authenticate_application(
        self: &Arc<Self>,
        req: &ConnectRequest<'_>,
        username: &str,
    ) -> AuthOutcome {
        let (row, secret) = match self.store.app_credential_by_username(username).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                return reject(
                    ConnectRejection::BadCredentials,
                    format!("unknown application credential '{username}'"),
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "application credential lookup failed");
                return reject(ConnectRejection::ServerUnavailable, "storage unavailable");
            }
        };
        let password = req.password.unwrap_or_default();
        if !constant_time_eq(secret.expose().as_bytes(), password) {
            return reject(
                ConnectRejection::BadCredentials,
                "wrong secret for the application credential",
            );
        }
        if !row.enabled {
            return reject(
                ConnectRejection::NotAuthorized,
                "the application credential is disabled",
            );
        }
        // Stored grants were validated when written; one that no longer compiles is left out
        // (and logged) rather than widening anything.
        let grants: Vec<AppGrant> = row
            .grants
            .iter()
            .filter_map(|g| match AppGrant::compile(g) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(credential = row.id, filter = %g.filter, error = %e, "stored grant ignored");
                    None
                }
            })
            .collect();
        let id = row.id.to_string();
        AuthOutcome::Accept {
            // Several instances of an application may share a credential; each client id is
            // its own session.
            session_key: format!("application:{id}:{}", req.client_id).into(),
            principal: Principal::Application(Application::new(id, grants)),
        }
    }

    /// Closes every connection of an application credential (deleted, disabled or its grants
    /// changed, so that the narrower rights apply at once); returns how many.
    pub fn kick_application(&self, id: i64, reason: DisconnectReason) -> usize {
        self.broker().disconnect(
            &Principal::Application(Application::key(id.to_string())),
            reason,
        )
    }
}
