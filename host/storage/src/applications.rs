//! Application credentials: MQTT logins for applications (ISV apps, city dashboards), each
//! confined to granted topic filters. The secret is sealed with the node's master key, bound to
//! the credential's username, like device secrets.

use lotus_model::authz::Grant;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{Result, StorageError};
use crate::sql::{Sql, flag, json, page_bounds, to_json};
use crate::{Page, Secret, Store, now_ms};

/// An application credential as listed (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppCredentialRow {
    pub id: i64,
    pub name: String,
    /// The MQTT username (`app.…`); unique and never changed.
    pub username: String,
    pub grants: Vec<Grant>,
    pub enabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Changes to an application credential; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppCredentialUpdate {
    pub name: Option<String>,
    pub grants: Option<Vec<Grant>>,
    pub enabled: Option<bool>,
}

const COLUMNS: &str = "id, name, username, grants, enabled, created_at, updated_at";

/// The associated data that binds a credential's secret to its row.
fn secret_context(username: &str) -> String {
    format!("app-credential:{username}")
}

fn row(r: &AnyRow) -> Result<AppCredentialRow> {
    Ok(AppCredentialRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        username: r.try_get("username")?,
        grants: json(r, "grants")?,
        enabled: flag(r, "enabled")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn not_found(id: i64) -> StorageError {
    StorageError::NotFound(format!("application credential {id} not found"))
}

impl Store {
    /// Creates a credential; `Conflict` when the username is taken. The secret is stored
    /// encrypted.
    pub async fn create_app_credential(
        &self,
        name: &str,
        username: &str,
        secret: &str,
        grants: &[Grant],
    ) -> Result<AppCredentialRow> {
        let now = now_ms();
        let sealed = self.secrets().seal(&secret_context(username), secret)?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO app_credentials (name, username, secret_enc, grants, enabled, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, 1, $5, $5) RETURNING id",
        )
        .bind(name)
        .bind(username)
        .bind(sealed)
        .bind(to_json(&grants))
        .bind(now)
        .fetch_one(self.write())
        .await
        .map_err(|e| {
            if StorageError::is_unique_violation(&e) {
                StorageError::Conflict(format!(
                    "application credential '{username}' already exists"
                ))
            } else {
                e.into()
            }
        })?;
        Ok(AppCredentialRow {
            id,
            name: name.to_string(),
            username: username.to_string(),
            grants: grants.to_vec(),
            enabled: true,
            created_at: now,
            updated_at: now,
        })
    }

    pub async fn get_app_credential(&self, id: i64) -> Result<Option<AppCredentialRow>> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM app_credentials WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.read())
        .await?
        .as_ref()
        .map(row)
        .transpose()
    }

    /// The credential with this MQTT username and its secret in plain (for CONNECT).
    pub async fn app_credential_by_username(
        &self,
        username: &str,
    ) -> Result<Option<(AppCredentialRow, Secret)>> {
        let Some(r) = sqlx::query(&format!(
            "SELECT {COLUMNS}, secret_enc FROM app_credentials WHERE username = $1"
        ))
        .bind(username)
        .fetch_optional(self.read())
        .await?
        else {
            return Ok(None);
        };
        let sealed: String = r.try_get("secret_enc")?;
        let secret = self.secrets().open(&secret_context(username), &sealed)?;
        Ok(Some((row(&r)?, secret)))
    }

    /// One page of credentials, oldest first, and the total count.
    pub async fn list_app_credentials(&self, page: Page) -> Result<(Vec<AppCredentialRow>, i64)> {
        let (offset, limit) = page_bounds(page);
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM app_credentials ORDER BY created_at, id LIMIT $1 OFFSET $2"
        ))
        .bind(limit)
        .bind(offset)
        .fetch_all(self.read())
        .await?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM app_credentials")
            .fetch_one(self.read())
            .await?;
        Ok((rows.iter().map(row).collect::<Result<_>>()?, total))
    }

    /// Changes the given fields; `NotFound` when the credential does not exist.
    pub async fn update_app_credential(
        &self,
        id: i64,
        u: &AppCredentialUpdate,
    ) -> Result<AppCredentialRow> {
        let mut sql = Sql::new(self.backend(), "UPDATE app_credentials SET updated_at = ");
        sql.push_arg(now_ms());
        if let Some(name) = &u.name {
            sql.push(", name = ").push_arg(name.as_str());
        }
        if let Some(grants) = &u.grants {
            sql.push(", grants = ").push_arg(to_json(grants));
        }
        if let Some(enabled) = u.enabled {
            sql.push(", enabled = ").push_arg(i64::from(enabled));
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

    /// Deletes a credential (its secret with it); `NotFound` when it does not exist.
    pub async fn delete_app_credential(&self, id: i64) -> Result<()> {
        let done = sqlx::query("DELETE FROM app_credentials WHERE id = $1")
            .bind(id)
            .execute(self.write())
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found(id));
        }
        Ok(())
    }
}
