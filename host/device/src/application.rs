//! Applications at CONNECT. Two kinds of login share one principal, `Principal::Application`,
//! and therefore one set of topic rules (see `TopicClassAuthorizer::application` in
//! `lotus-model` and the `lotus.device.topic` policy):
//!
//! - an **application credential** (`app.…` username, the secret an operator created for it),
//!   confined to the credential's grants;
//! - a **registered app** of the app registry (username = its client id `app_…`, password = the
//!   secret it signs API calls with), confined to its `resources.topics` grants of products in
//!   its organisation and region. The principal's id is the client id, so the broker tells the
//!   two kinds apart (credential ids are numbers), and it is marked `registered_app` so that
//!   the policy's refusals name the app.
//!
//! Neither kind of username contains `&`, so neither is taken for a device's
//! `{deviceName}&{productKey}` and a device secret never opens an application login (nor the
//! other way round).

use std::sync::Arc;

use lotus_model::authz::{Application, Grant, Principal};
use lotus_model::scope::{Scope, region_covers};
use lotus_model::topic::{AppGrant, GrantError};
use lotus_mqtt::{AuthOutcome, ConnectRejection, ConnectRequest, DisconnectReason};
use lotus_storage::{AppRow, StorageError};
use rand::Rng;

use crate::DevicePlane;
use crate::connect::constant_time_eq;

/// Every application username starts with this.
pub const USERNAME_PREFIX: &str = "app.";

/// Is this CONNECT username an application's (rather than a device's `dn&pk`)?
pub fn is_application_username(username: &str) -> bool {
    username.starts_with(USERNAME_PREFIX) && !username.contains('&')
}

/// Every registered app's client id starts with this.
pub const APP_CLIENT_ID_PREFIX: &str = "app_";

/// Is this CONNECT username a registered app's client id?
pub fn is_registered_app_username(username: &str) -> bool {
    username.starts_with(APP_CLIENT_ID_PREFIX) && !username.contains('&')
}

/// Why a topic grant of a registered app does not apply.
#[derive(Debug, thiserror::Error)]
pub enum AppTopicGrantError {
    #[error("{0}")]
    Invalid(#[from] GrantError),
    #[error("unknown product '{0}'")]
    UnknownProduct(String),
    #[error("{0}")]
    OutOfScope(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Is a product of scope `product` within an app of scope `app`, whose organisation subtree is
/// `orgs`? The same rule as the `lotus.api` policy's for the app's REST calls: the product has
/// no organisation or one of the app's (its own or one below it), and its region is at or below
/// the app's. `Err` says which part does not fit.
pub fn product_in_app_scope(app: &Scope, orgs: &[String], product: &Scope) -> Result<(), String> {
    let org_ok = product.org.is_empty() || product.org == app.org || orgs.contains(&product.org);
    if !org_ok {
        return Err(format!(
            "the product belongs to organisation '{}', not the app's ('{}')",
            product.org, app.org
        ));
    }
    if !region_covers(&app.region, &product.region) {
        return Err(format!(
            "the product is in region {}, outside the app's region {}",
            product.region, app.region
        ));
    }
    Ok(())
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

    /// Checks one topic grant of a registered app and compiles it: a valid grant filter (as
    /// for application credentials), of an existing product within the app's scope (`orgs`:
    /// the app's organisation subtree).
    pub async fn check_app_topic_grant(
        &self,
        scope: &Scope,
        orgs: &[String],
        grant: &Grant,
    ) -> Result<AppGrant, AppTopicGrantError> {
        let compiled = AppGrant::compile(grant)?;
        let pk = compiled.product_key();
        let product = self
            .store
            .get_product(pk)
            .await?
            .ok_or_else(|| AppTopicGrantError::UnknownProduct(pk.to_string()))?;
        product_in_app_scope(scope, orgs, &product.scope).map_err(|why| {
            AppTopicGrantError::OutOfScope(format!(
                "product '{pk}' is out of the app's scope: {why}"
            ))
        })?;
        Ok(compiled)
    }

    /// The grants a registered app connects with: its topic grants that still apply. One that
    /// no longer does (product deleted or moved out of the app's scope, filter no longer
    /// valid) is left out and logged rather than widening anything.
    pub async fn app_topic_grants(&self, app: &AppRow) -> Result<Vec<AppGrant>, StorageError> {
        let orgs = self.store.org_subtree(&app.scope.org).await?;
        let mut grants = Vec::with_capacity(app.resources.topics.len());
        for topic in &app.resources.topics {
            match self
                .check_app_topic_grant(&app.scope, &orgs, &topic.to_grant())
                .await
            {
                Ok(g) => grants.push(g),
                Err(AppTopicGrantError::Storage(e)) => return Err(e),
                Err(e) => {
                    tracing::warn!(app = %app.client_id, filter = %topic.filter(), error = %e, "topic grant of the app ignored");
                }
            }
        }
        Ok(grants)
    }

    /// Authenticates a registered app's CONNECT: username = its client id, password = its
    /// secret (the one it signs API calls with). Any MQTT client id is accepted; each is its
    /// own session, so several instances of an app may connect at once.
    pub async fn authenticate_registered_app(
        self: &Arc<Self>,
        req: &ConnectRequest<'_>,
        client_id: &str,
    ) -> AuthOutcome {
        let (app, secret) = match self.store.app_with_secret(client_id).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                return reject(
                    ConnectRejection::BadCredentials,
                    format!("unknown app '{client_id}'"),
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "app lookup failed");
                return reject(ConnectRejection::ServerUnavailable, "storage unavailable");
            }
        };
        let password = req.password.unwrap_or_default();
        if !constant_time_eq(secret.expose().as_bytes(), password) {
            return reject(
                ConnectRejection::BadCredentials,
                format!("wrong secret for app '{client_id}'"),
            );
        }
        if !app.is_online() {
            return reject(
                ConnectRejection::NotAuthorized,
                format!("app '{client_id}' is offline"),
            );
        }
        let grants = match self.app_topic_grants(&app).await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "app grants lookup failed");
                return reject(ConnectRejection::ServerUnavailable, "storage unavailable");
            }
        };
        AuthOutcome::Accept {
            session_key: format!("application:{client_id}:{}", req.client_id).into(),
            principal: Principal::Application(Application::registered(client_id, grants)),
        }
    }

    /// Closes the MQTT connections of the registered apps whose topic grants a move of product
    /// `pk` (from scope `before` to `after`, another organisation or region) changes; returns
    /// how many. A connection keeps the grants it was admitted with, so without this an app
    /// whose grant on the product no longer applies would keep receiving (and publishing to)
    /// its topics until it reconnects. Closed are the apps with a grant naming the product for
    /// which the move changes whether the product is in the app's scope: those that lose the
    /// grant, and those that regain it (so that, as after a change of the app's own grants, a
    /// live session has exactly what a new login would get). Apps for which nothing changes keep
    /// their sessions.
    pub async fn kick_apps_on_product_move(
        &self,
        pk: &str,
        before: &Scope,
        after: &Scope,
    ) -> Result<usize, StorageError> {
        const PAGE: i64 = 500;
        let mut closed = 0;
        let mut orgs_of: std::collections::HashMap<String, Vec<String>> = Default::default();
        let mut offset = 0;
        loop {
            let (apps, _) = self
                .store
                .apps(
                    &lotus_storage::AppFilter::default(),
                    lotus_storage::Page {
                        offset,
                        limit: PAGE,
                    },
                )
                .await?;
            for app in &apps {
                let names_product =
                    app.resources.topics.iter().any(|t| {
                        AppGrant::compile(&t.to_grant()).is_ok_and(|g| g.product_key() == pk)
                    });
                if !names_product {
                    continue;
                }
                if !orgs_of.contains_key(&app.scope.org) {
                    let orgs = self.store.org_subtree(&app.scope.org).await?;
                    orgs_of.insert(app.scope.org.clone(), orgs);
                }
                let orgs = &orgs_of[&app.scope.org];
                let was = product_in_app_scope(&app.scope, orgs, before).is_ok();
                let is = product_in_app_scope(&app.scope, orgs, after).is_ok();
                if was != is {
                    let n = self.kick_app(&app.client_id, DisconnectReason::CredentialRevoked);
                    tracing::info!(app = %app.client_id, product = pk, connections = n, grant_applies = is, "product moved: the app's MQTT connections closed");
                    closed += n;
                }
            }
            if (apps.len() as i64) < PAGE {
                return Ok(closed);
            }
            offset += PAGE;
        }
    }

    /// Closes every MQTT connection of a registered app (deleted, offline, secret rotated,
    /// grants or scope changed); returns how many.
    pub fn kick_app(&self, client_id: &str, reason: DisconnectReason) -> usize {
        self.broker()
            .disconnect(&Principal::Application(Application::key(client_id)), reason)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(org: &str, region: &str) -> Scope {
        Scope {
            org: org.into(),
            region: region.into(),
        }
    }

    #[test]
    fn usernames_of_both_kinds_of_application() {
        assert!(is_registered_app_username("app_j5kx2qmzrtw7vhbn3dpa"));
        assert!(!is_registered_app_username("app.j5kx2qmzrtw7"));
        assert!(!is_registered_app_username("app_lamp&a1B2c3D4e5F"));
        assert!(is_application_username("app.j5kx2qmzrtw7"));
        assert!(!is_application_username("app_j5kx2qmzrtw7vhbn3dpa"));
    }

    #[test]
    fn products_in_the_apps_scope() {
        let app = scope("lighting", "/hz");
        let orgs = vec!["lighting".to_string(), "lighting-north".to_string()];
        for ok in [
            scope("lighting", "/hz"),
            scope("lighting-north", "/hz/xihu"),
            scope("", "/hz/xihu"),
        ] {
            assert!(product_in_app_scope(&app, &orgs, &ok).is_ok(), "{ok:?}");
        }
        let e = product_in_app_scope(&app, &orgs, &scope("water", "/hz")).unwrap_err();
        assert!(e.contains("organisation 'water'"), "{e}");
        let e = product_in_app_scope(&app, &orgs, &scope("lighting", "/hzx")).unwrap_err();
        assert!(e.contains("outside the app's region /hz"), "{e}");
        assert!(product_in_app_scope(&scope("", "/"), &[], &scope("", "/a")).is_ok());
        assert!(product_in_app_scope(&scope("", "/"), &[], &scope("x", "/a")).is_err());
    }
}
