//! The app registry: ISV apps and city dashboards that call the REST API with requests signed
//! by their secret, and that users open from the app center with single sign-on. Each app has a
//! public `client_id` (the key id of its signatures and its OpenID Connect client id) and a
//! secret sealed with the node's master key, bound to the client id like device secrets.
//! What an app may do is its API actions (`scopes`) and its granted resources; the `lotus.api`
//! policy decides with both.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{Result, StorageError};
use crate::sql::{Sql, contains_pattern, json, page_bounds, push_scope_condition, to_json};
use crate::{Page, Scope, Secret, Store, now_ms};

/// An app that may call the API and be signed in to.
pub const APP_ONLINE: &str = "online";
/// An app that is refused: its signed calls get 401 and no one can sign in to it.
pub const APP_OFFLINE: &str = "offline";

/// What an app is granted, besides the API actions it may call. Empty lists grant nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AppResources {
    /// Product keys: the products and every device of theirs.
    pub products: Vec<String>,
    /// Single devices, `productKey/deviceName`.
    pub devices: Vec<String>,
    /// Region paths: everything in the region or below it.
    pub regions: Vec<String>,
    /// Product keys whose thing model (data model) the app may read.
    pub data_models: Vec<String>,
    /// Event type codes: those types and their events.
    pub event_types: Vec<String>,
    /// MQTT topic grants: what the app may subscribe and publish to over MQTT.
    pub topics: Vec<TopicGrant>,
}

/// One MQTT topic grant of an app. A bare filter grants subscribing (every grant stored before
/// publishing could be granted is one); the object form names its actions, like an
/// application credential's grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TopicGrant {
    /// `"/a1B2c3D4e5F/+/user/update"`: subscribe only.
    Subscribe(String),
    /// `{"filter": "/a1B2c3D4e5F/+/user/get", "actions": ["publish"]}`.
    Actions(lotus_model::authz::Grant),
}

impl TopicGrant {
    /// The grant with its actions spelled out.
    pub fn to_grant(&self) -> lotus_model::authz::Grant {
        match self {
            TopicGrant::Subscribe(filter) => lotus_model::authz::Grant {
                filter: filter.clone(),
                actions: vec![lotus_model::authz::GrantAction::Subscribe],
            },
            TopicGrant::Actions(grant) => grant.clone(),
        }
    }

    /// The shortest form of a grant: a bare filter when it only grants subscribing.
    pub fn from_grant(grant: lotus_model::authz::Grant) -> TopicGrant {
        if grant.actions == [lotus_model::authz::GrantAction::Subscribe] {
            TopicGrant::Subscribe(grant.filter)
        } else {
            TopicGrant::Actions(grant)
        }
    }

    pub fn filter(&self) -> &str {
        match self {
            TopicGrant::Subscribe(filter) => filter,
            TopicGrant::Actions(grant) => &grant.filter,
        }
    }
}

/// An app as stored (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRow {
    pub id: i64,
    /// The public id: the key id of signed requests and the OpenID Connect client id.
    pub client_id: String,
    pub name: String,
    /// `web`, `dashboard`, `mobile` or `service`.
    pub app_type: String,
    /// A URL or a data URI.
    pub icon: Option<String>,
    /// Where the app center opens it.
    pub url: Option<String>,
    pub vendor: Option<String>,
    pub description: Option<String>,
    /// [`APP_ONLINE`] or [`APP_OFFLINE`].
    pub status: String,
    /// The organisation and region the app acts in, like a user's.
    pub scope: Scope,
    /// The API actions it may call (`device.read`, …).
    pub scopes: Vec<String>,
    pub resources: AppResources,
    /// Where OpenID Connect may send its users back to.
    pub redirect_uris: Vec<String>,
    /// Roles whose users may open it from the app center.
    pub open_roles: Vec<String>,
    /// Where OpenID Connect may send its users after they log out (RP-initiated logout).
    pub post_logout_redirect_uris: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl AppRow {
    pub fn is_online(&self) -> bool {
        self.status == APP_ONLINE
    }
}

/// A new app. `secret` is sealed before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApp {
    pub client_id: String,
    pub secret: Secret,
    pub name: String,
    pub app_type: String,
    pub icon: Option<String>,
    pub url: Option<String>,
    pub vendor: Option<String>,
    pub description: Option<String>,
    pub status: String,
    pub scope: Scope,
    pub scopes: Vec<String>,
    pub resources: AppResources,
    pub redirect_uris: Vec<String>,
    pub open_roles: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
}

/// Changes to an app; `None` leaves a field as it is. For the optional text fields,
/// `Some(None)` clears the value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppUpdate {
    pub name: Option<String>,
    pub app_type: Option<String>,
    pub icon: Option<Option<String>>,
    pub url: Option<Option<String>>,
    pub vendor: Option<Option<String>>,
    pub description: Option<Option<String>>,
    pub status: Option<String>,
    pub scope: Option<Scope>,
    pub scopes: Option<Vec<String>>,
    pub resources: Option<AppResources>,
    pub redirect_uris: Option<Vec<String>>,
    pub open_roles: Option<Vec<String>>,
    pub post_logout_redirect_uris: Option<Vec<String>>,
}

/// Which apps a list shows; `None` does not filter.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppFilter<'a> {
    pub app_type: Option<&'a str>,
    /// A part of the name, any case.
    pub name_like: Option<&'a str>,
    pub status: Option<&'a str>,
    /// Only apps of this organisation (or of none) in this region or below it.
    pub within: Option<&'a Scope>,
}

const COLUMNS: &str = "id, client_id, name, app_type, icon, url, vendor, description, status, \
     org, region, scopes, resources, redirect_uris, open_roles, post_logout_redirect_uris, \
     created_at, updated_at";

/// The associated data that binds an app's secret to its row.
fn secret_context(client_id: &str) -> String {
    format!("app:{client_id}")
}

fn row(r: &AnyRow) -> Result<AppRow> {
    Ok(AppRow {
        id: r.try_get("id")?,
        client_id: r.try_get("client_id")?,
        name: r.try_get("name")?,
        app_type: r.try_get("app_type")?,
        icon: r.try_get("icon")?,
        url: r.try_get("url")?,
        vendor: r.try_get("vendor")?,
        description: r.try_get("description")?,
        status: r.try_get("status")?,
        scope: Scope {
            org: r.try_get("org")?,
            region: r.try_get("region")?,
        },
        scopes: json(r, "scopes")?,
        resources: json(r, "resources")?,
        redirect_uris: json(r, "redirect_uris")?,
        open_roles: json(r, "open_roles")?,
        post_logout_redirect_uris: json(r, "post_logout_redirect_uris")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn not_found(id: i64) -> StorageError {
    StorageError::NotFound(format!("app {id} not found"))
}

impl Store {
    /// Registers an app; `Conflict` when the client id is taken. The secret is stored sealed.
    pub async fn create_app(&self, app: &NewApp) -> Result<AppRow> {
        let now = now_ms();
        let sealed = self
            .secrets()
            .seal(&secret_context(&app.client_id), app.secret.expose())?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO apps (client_id, secret_enc, name, app_type, icon, url, vendor, \
             description, status, org, region, scopes, resources, redirect_uris, open_roles, \
             post_logout_redirect_uris, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, \
             $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17) RETURNING id",
        )
        .bind(&app.client_id)
        .bind(sealed)
        .bind(&app.name)
        .bind(&app.app_type)
        .bind(app.icon.as_deref())
        .bind(app.url.as_deref())
        .bind(app.vendor.as_deref())
        .bind(app.description.as_deref())
        .bind(&app.status)
        .bind(&app.scope.org)
        .bind(&app.scope.region)
        .bind(to_json(&app.scopes))
        .bind(to_json(&app.resources))
        .bind(to_json(&app.redirect_uris))
        .bind(to_json(&app.open_roles))
        .bind(to_json(&app.post_logout_redirect_uris))
        .bind(now)
        .fetch_one(self.write())
        .await
        .map_err(|e| {
            if StorageError::is_unique_violation(&e) {
                StorageError::Conflict(format!("app '{}' already exists", app.client_id))
            } else {
                e.into()
            }
        })?;
        Ok(AppRow {
            id,
            client_id: app.client_id.clone(),
            name: app.name.clone(),
            app_type: app.app_type.clone(),
            icon: app.icon.clone(),
            url: app.url.clone(),
            vendor: app.vendor.clone(),
            description: app.description.clone(),
            status: app.status.clone(),
            scope: app.scope.clone(),
            scopes: app.scopes.clone(),
            resources: app.resources.clone(),
            redirect_uris: app.redirect_uris.clone(),
            open_roles: app.open_roles.clone(),
            post_logout_redirect_uris: app.post_logout_redirect_uris.clone(),
            created_at: now,
            updated_at: now,
        })
    }

    /// The app with this id.
    pub async fn app(&self, id: i64) -> Result<Option<AppRow>> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM apps WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.read())
            .await?
            .as_ref()
            .map(row)
            .transpose()
    }

    /// The app with this public client id.
    pub async fn app_by_client_id(&self, client_id: &str) -> Result<Option<AppRow>> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM apps WHERE client_id = $1"))
            .bind(client_id)
            .fetch_optional(self.read())
            .await?
            .as_ref()
            .map(row)
            .transpose()
    }

    /// The app with this public client id and its secret in plain (to check a signature or a
    /// client secret), in one read.
    pub async fn app_with_secret(&self, client_id: &str) -> Result<Option<(AppRow, Secret)>> {
        let Some(r) = sqlx::query(&format!(
            "SELECT {COLUMNS}, secret_enc FROM apps WHERE client_id = $1"
        ))
        .bind(client_id)
        .fetch_optional(self.read())
        .await?
        else {
            return Ok(None);
        };
        let sealed: String = r.try_get("secret_enc")?;
        let secret = self.secrets().open(&secret_context(client_id), &sealed)?;
        Ok(Some((row(&r)?, secret)))
    }

    /// One page of apps, oldest first, and how many match in all.
    pub async fn apps(&self, filter: &AppFilter<'_>, page: Page) -> Result<(Vec<AppRow>, i64)> {
        let (offset, limit) = page_bounds(page);
        self.page(
            "apps",
            COLUMNS,
            "created_at, id",
            (limit, offset),
            |head| {
                let mut sql = Sql::new(self.backend(), head);
                sql.push(" WHERE 1 = 1");
                if let Some(t) = filter.app_type {
                    sql.push(" AND app_type = ").push_arg(t.to_string());
                }
                if let Some(needle) = filter.name_like.filter(|n| !n.is_empty()) {
                    sql.push(" AND LOWER(name) LIKE ")
                        .push_arg(contains_pattern(&needle.to_lowercase()))
                        .push(" ESCAPE '\\'");
                }
                if let Some(s) = filter.status {
                    sql.push(" AND status = ").push_arg(s.to_string());
                }
                if let Some(scope) = filter.within {
                    push_scope_condition(&mut sql, "org", "region", scope);
                }
                Ok(sql)
            },
            row,
        )
        .await
    }

    /// Changes the given fields; `NotFound` when the app does not exist.
    pub async fn update_app(&self, id: i64, u: &AppUpdate) -> Result<AppRow> {
        let mut sql = Sql::new(self.backend(), "UPDATE apps SET updated_at = ");
        sql.push_arg(now_ms());
        if let Some(v) = &u.name {
            sql.push(", name = ").push_arg(v.clone());
        }
        if let Some(v) = &u.app_type {
            sql.push(", app_type = ").push_arg(v.clone());
        }
        for (column, value) in [
            ("icon", &u.icon),
            ("url", &u.url),
            ("vendor", &u.vendor),
            ("description", &u.description),
        ] {
            if let Some(v) = value {
                sql.push(&format!(", {column} = ")).push_arg(v.clone());
            }
        }
        if let Some(v) = &u.status {
            sql.push(", status = ").push_arg(v.clone());
        }
        if let Some(s) = &u.scope {
            sql.push(", org = ").push_arg(s.org.clone());
            sql.push(", region = ").push_arg(s.region.clone());
        }
        if let Some(v) = &u.scopes {
            sql.push(", scopes = ").push_arg(to_json(v));
        }
        if let Some(v) = &u.resources {
            sql.push(", resources = ").push_arg(to_json(v));
        }
        if let Some(v) = &u.redirect_uris {
            sql.push(", redirect_uris = ").push_arg(to_json(v));
        }
        if let Some(v) = &u.open_roles {
            sql.push(", open_roles = ").push_arg(to_json(v));
        }
        if let Some(v) = &u.post_logout_redirect_uris {
            sql.push(", post_logout_redirect_uris = ")
                .push_arg(to_json(v));
        }
        sql.push(" WHERE id = ").push_arg(id);
        sql.push(&format!(" RETURNING {COLUMNS}"));
        let (text, args) = sql.finish()?;
        let r = sqlx::query_with(&text, args)
            .fetch_optional(self.write())
            .await?
            .ok_or_else(|| not_found(id))?;
        row(&r)
    }

    /// Replaces an app's secret: the old one stops working at once. `NotFound` when the app
    /// does not exist.
    pub async fn rotate_app_secret(&self, id: i64, secret: &Secret) -> Result<AppRow> {
        let current = self.app(id).await?.ok_or_else(|| not_found(id))?;
        let sealed = self
            .secrets()
            .seal(&secret_context(&current.client_id), secret.expose())?;
        let r = sqlx::query(&format!(
            "UPDATE apps SET secret_enc = $1, updated_at = $2 WHERE id = $3 RETURNING {COLUMNS}"
        ))
        .bind(sealed)
        .bind(now_ms())
        .bind(id)
        .fetch_optional(self.write())
        .await?
        .ok_or_else(|| not_found(id))?;
        row(&r)
    }

    /// Removes an app with its secret; `NotFound` when it does not exist.
    pub async fn delete_app(&self, id: i64) -> Result<()> {
        let done = sqlx::query("DELETE FROM apps WHERE id = $1")
            .bind(id)
            .execute(self.write())
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found(id));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lotus_model::authz::{Grant, GrantAction};

    #[test]
    fn topic_grants_read_both_forms() {
        // Stored before publish could be granted: bare filters, which stay subscribe grants.
        let old: AppResources =
            serde_json::from_str(r#"{"topics": ["/pk1/+/user/update"]}"#).unwrap();
        assert_eq!(
            old.topics[0].to_grant(),
            Grant {
                filter: "/pk1/+/user/update".into(),
                actions: vec![GrantAction::Subscribe],
            }
        );
        let new: AppResources = serde_json::from_str(
            r#"{"topics": [{"filter": "/pk1/+/user/get", "actions": ["publish"]}]}"#,
        )
        .unwrap();
        assert_eq!(new.topics[0].filter(), "/pk1/+/user/get");
        assert_eq!(new.topics[0].to_grant().actions, vec![GrantAction::Publish]);
        // Written back in the shortest form.
        let both = vec![
            TopicGrant::from_grant(old.topics[0].to_grant()),
            TopicGrant::from_grant(new.topics[0].to_grant()),
        ];
        assert_eq!(
            serde_json::to_value(&both).unwrap(),
            serde_json::json!([
                "/pk1/+/user/update",
                {"filter": "/pk1/+/user/get", "actions": ["publish"]},
            ])
        );
    }
}
