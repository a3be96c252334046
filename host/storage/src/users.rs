//! Console users and their log-in sessions. Sessions are stored by the hash of their token,
//! so a database dump does not contain usable tokens.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{Result, StorageError};
use crate::sql::{json, to_json};
use crate::{Store, UserRow, now_ms};

const USER_COLUMNS: &str = "u.id, u.username, u.password_hash, u.roles, u.created_at";

fn user_row(row: &AnyRow) -> Result<UserRow> {
    Ok(UserRow {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        roles: json(row, "roles")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// How many users exist (zero on a fresh node, when the first administrator is created).
    pub async fn user_count(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(self.read())
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Creates a user; `Conflict` when the name is taken.
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        roles: &[String],
    ) -> Result<UserRow> {
        let created_at = now_ms();
        let row = sqlx::query(
            "INSERT INTO users (username, password_hash, roles, created_at) \
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(username)
        .bind(password_hash)
        .bind(to_json(&roles))
        .bind(created_at)
        .fetch_one(self.write())
        .await
        .map_err(|e| {
            if StorageError::is_unique_violation(&e) {
                StorageError::Conflict(format!("user '{username}' already exists"))
            } else {
                e.into()
            }
        })?;
        Ok(UserRow {
            id: row.try_get("id")?,
            username: username.to_string(),
            password_hash: password_hash.to_string(),
            roles: roles.to_vec(),
            created_at,
        })
    }

    pub async fn user_by_name(&self, username: &str) -> Result<Option<UserRow>> {
        sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE u.username = $1"
        ))
        .bind(username)
        .fetch_optional(self.read())
        .await?
        .as_ref()
        .map(user_row)
        .transpose()
    }

    /// Stores a session and drops the expired ones, so the table does not grow without bound.
    pub async fn create_session(
        &self,
        token_hash: &str,
        user_id: i64,
        expires_at: i64,
    ) -> Result<()> {
        let now = now_ms();
        let mut tx = self.write().begin().await?;
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, expires_at, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(expires_at)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if StorageError::is_foreign_key_violation(&e) {
                StorageError::NotFound(format!("user {user_id} not found"))
            } else if StorageError::is_unique_violation(&e) {
                StorageError::Conflict("the session token is already in use".into())
            } else {
                e.into()
            }
        })?;
        sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The user of a session that has not expired at `now`.
    pub async fn session_user(&self, token_hash: &str, now: i64) -> Result<Option<UserRow>> {
        sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = $1 AND s.expires_at > $2"
        ))
        .bind(token_hash)
        .bind(now)
        .fetch_optional(self.read())
        .await?
        .as_ref()
        .map(user_row)
        .transpose()
    }

    /// Ends a session; ending an unknown one is not an error (log-out is idempotent).
    pub async fn delete_session(&self, token_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(self.write())
            .await?;
        Ok(())
    }
}
