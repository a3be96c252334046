//! Console users and their log-in sessions. Sessions are stored by the hash of their token,
//! so a database dump does not contain usable tokens.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{Result, StorageError};
use crate::sql::{json, to_json};
use crate::{Scope, Store, UserProfile, UserRow, now_ms};

pub(crate) const USER_COLUMNS: &str = "u.id, u.username, u.password_hash, u.roles, u.created_at, u.org, \
     u.region, u.display_name, u.email, u.phone, u.disabled_at, u.locked_until, u.password_reset_at";

pub(crate) fn user_row(row: &AnyRow) -> Result<UserRow> {
    Ok(UserRow {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        roles: json(row, "roles")?,
        created_at: row.try_get("created_at")?,
        scope: Scope {
            org: row.try_get("org")?,
            region: row.try_get("region")?,
        },
        profile: UserProfile {
            display_name: row.try_get("display_name")?,
            email: row.try_get("email")?,
            phone: row.try_get("phone")?,
        },
        permissions: Vec::new(),
        org_subtree: Vec::new(),
        disabled_at: row.try_get("disabled_at")?,
        locked_until: row.try_get("locked_until")?,
        password_reset_at: row.try_get("password_reset_at")?,
    })
}

/// Which users a listing shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserFilter<'a> {
    /// Confined to this organisation (with those below it) and region.
    pub within: Option<&'a Scope>,
    /// Name, display name, organisation, region or roles contain this (any case).
    pub search: Option<&'a str>,
    /// Only disabled (`true`) or only active (`false`) accounts.
    pub disabled: Option<bool>,
}

/// What became of a request to disable an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disabling {
    /// Disabled now, at this time.
    Disabled(i64),
    /// It was disabled already, since this time; nothing changed.
    AlreadyDisabled(i64),
    /// Refused: it is the last active account holding `admin`, and a node nobody can
    /// administer can only be recovered by editing its database.
    LastAdmin,
}

/// `roles` holds a JSON array of role names, which are lower-case letters and `_` only, so
/// the quoted name matches exactly that role (`"admin"` is not in `"security_admin"`).
pub(crate) const HOLDS_ADMIN: &str = "roles LIKE '%\"admin\"%'";

/// PostgreSQL advisory lock key taken by every change that could leave the node without an
/// active administrator. Under READ COMMITTED two such changes would each see the other's
/// admin still active; taking the lock first serialises them. SQLite has a single writer.
const ADMIN_CHANGES_LOCK: i64 = 0x6c6f_7475_7361_646d; // "lotusadm"

impl Store {
    /// Serialises changes that check "another active administrator remains" (see
    /// [`ADMIN_CHANGES_LOCK`]); held until `tx` ends.
    pub(crate) async fn lock_admin_changes(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    ) -> Result<()> {
        if self.backend() == crate::Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(ADMIN_CHANGES_LOCK)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

impl Store {
    /// How many users exist (zero on a fresh node, when the first administrator is created).
    pub async fn user_count(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(self.read())
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Creates a user who has not said anything about themselves; `Conflict` when the name is
    /// taken.
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        roles: &[String],
        scope: &Scope,
    ) -> Result<UserRow> {
        self.create_user_with_profile(
            username,
            password_hash,
            roles,
            scope,
            &UserProfile::default(),
        )
        .await
    }

    /// Creates a user with a name and contact details; `Conflict` when the name is taken.
    pub async fn create_user_with_profile(
        &self,
        username: &str,
        password_hash: &str,
        roles: &[String],
        scope: &Scope,
        profile: &UserProfile,
    ) -> Result<UserRow> {
        let created_at = now_ms();
        let row = sqlx::query(
            "INSERT INTO users (username, password_hash, roles, created_at, org, region, \
             display_name, email, phone) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(username)
        .bind(password_hash)
        .bind(to_json(&roles))
        .bind(created_at)
        .bind(&scope.org)
        .bind(&scope.region)
        .bind(profile.display_name.as_deref())
        .bind(profile.email.as_deref())
        .bind(profile.phone.as_deref())
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
            scope: scope.clone(),
            profile: profile.clone(),
            permissions: Vec::new(),
            org_subtree: Vec::new(),
            disabled_at: None,
            locked_until: None,
            password_reset_at: None,
        })
    }

    /// Moves a user to another organisation and region and replaces their name and contact
    /// details (an administrator's edit); `NotFound` for an unknown user. Their sessions carry
    /// the new scope from their next request.
    pub async fn update_user_account(
        &self,
        user_id: i64,
        scope: &Scope,
        profile: &UserProfile,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE users SET org = $1, region = $2, display_name = $3, email = $4, phone = $5 \
             WHERE id = $6",
        )
        .bind(&scope.org)
        .bind(&scope.region)
        .bind(profile.display_name.as_deref())
        .bind(profile.email.as_deref())
        .bind(profile.phone.as_deref())
        .bind(user_id)
        .execute(self.write())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound(format!("user {user_id} not found")));
        }
        Ok(())
    }

    /// Disables an account at `now`: its sessions stop being honoured at once
    /// ([`Store::session_user`] never returns a disabled user; the rows stay so that a request
    /// with one can be told why, and go when the account is enabled again), and every token
    /// apps were issued for the user through the OpenID Connect provider is revoked. The
    /// last active administrator is never disabled; the check and the change are one
    /// statement. `NotFound` for an unknown user.
    pub async fn disable_user(&self, user_id: i64, now: i64) -> Result<Disabling> {
        let mut tx = self.write().begin().await?;
        self.lock_admin_changes(&mut tx).await?;
        let done = sqlx::query(&format!(
            "UPDATE users SET disabled_at = $1 WHERE id = $2 AND disabled_at IS NULL AND \
             (NOT ({HOLDS_ADMIN}) OR EXISTS (SELECT 1 FROM users o WHERE o.id <> $2 AND \
             o.disabled_at IS NULL AND o.{HOLDS_ADMIN}))"
        ))
        .bind(now)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            let since: Option<Option<i64>> =
                sqlx::query_scalar("SELECT disabled_at FROM users WHERE id = $1")
                    .bind(user_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            return match since {
                None => Err(StorageError::NotFound(format!("user {user_id} not found"))),
                Some(Some(at)) => Ok(Disabling::AlreadyDisabled(at)),
                Some(None) => Ok(Disabling::LastAdmin),
            };
        }
        // Tokens apps hold for the user end with the account, whatever the app does next.
        sqlx::query(
            "UPDATE oidc_grants SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
        )
        .bind(user_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for table in ["oidc_access_tokens", "oidc_refresh_tokens", "oidc_codes"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE user_id = $1"))
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Disabling::Disabled(now))
    }

    /// Enables a disabled account again; the sessions it had before it was disabled are
    /// deleted, so it starts with a fresh log-in. `false` when it was active already.
    /// `NotFound` for an unknown user.
    pub async fn enable_user(&self, user_id: i64) -> Result<bool> {
        let mut tx = self.write().begin().await?;
        let done = sqlx::query(
            "UPDATE users SET disabled_at = NULL WHERE id = $1 AND disabled_at IS NOT NULL",
        )
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?;
            return match exists {
                None => Err(StorageError::NotFound(format!("user {user_id} not found"))),
                Some(_) => Ok(false),
            };
        }
        sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Whether `token_hash` is an unexpired session of a disabled account: such a session is
    /// refused, and this says why.
    pub async fn session_of_disabled_user(&self, token_hash: &str, now: i64) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT s.user_id FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = $1 AND s.expires_at > $2 AND u.disabled_at IS NOT NULL",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(self.read())
        .await?;
        Ok(found.is_some())
    }

    /// An administrator sets a user's password (they forgot theirs): every session of the
    /// user ends, a lock from failed log-ins is lifted, and the user is asked to choose their
    /// own password at the next log-in (`password_reset_at`). Returns how many sessions
    /// ended; `NotFound` for an unknown user.
    pub async fn reset_user_password(
        &self,
        user_id: i64,
        password_hash: &str,
        now: i64,
    ) -> Result<u64> {
        let mut tx = self.write().begin().await?;
        let done = sqlx::query(
            "UPDATE users SET password_hash = $1, password_reset_at = $2, failed_logins = 0, \
             locked_until = NULL WHERE id = $3",
        )
        .bind(password_hash)
        .bind(now)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound(format!("user {user_id} not found")));
        }
        let ended = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(ended)
    }

    /// Replaces a user's name and contact details; `NotFound` for an unknown user.
    pub async fn update_user_profile(&self, user_id: i64, profile: &UserProfile) -> Result<()> {
        let done =
            sqlx::query("UPDATE users SET display_name = $1, email = $2, phone = $3 WHERE id = $4")
                .bind(profile.display_name.as_deref())
                .bind(profile.email.as_deref())
                .bind(profile.phone.as_deref())
                .bind(user_id)
                .execute(self.write())
                .await?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound(format!("user {user_id} not found")));
        }
        Ok(())
    }

    /// Replaces a user's password hash and ends every session of theirs except `keep` (the
    /// one that changed it), so a password that leaked stops working everywhere at once. The
    /// password is the user's own from now on: an administrator's reset no longer asks for a
    /// change.
    pub async fn set_user_password(
        &self,
        user_id: i64,
        password_hash: &str,
        keep: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.write().begin().await?;
        let done = sqlx::query(
            "UPDATE users SET password_hash = $1, password_reset_at = NULL WHERE id = $2",
        )
        .bind(password_hash)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound(format!("user {user_id} not found")));
        }
        sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND token_hash <> $2")
            .bind(user_id)
            .bind(keep.unwrap_or(""))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Until when the user's log-ins are refused, if they are locked out now.
    pub async fn login_locked_until(&self, user_id: i64, now: i64) -> Result<Option<i64>> {
        let until: Option<Option<i64>> =
            sqlx::query_scalar("SELECT locked_until FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(self.read())
                .await?;
        Ok(until.flatten().filter(|t| *t > now))
    }

    /// Counts a failed log-in; the `max_failures`-th in a row locks the account until
    /// `now + lock_ms`. A lock that has run out starts the count over. Returns the lock's end
    /// when this failure locked it.
    pub async fn record_failed_login(
        &self,
        user_id: i64,
        now: i64,
        max_failures: i64,
        lock_ms: i64,
    ) -> Result<Option<i64>> {
        let until = now.saturating_add(lock_ms);
        // Both sides of every assignment read the row as it was before the update.
        let row: Option<(i64, Option<i64>)> = sqlx::query_as(
            "UPDATE users SET \
             failed_logins = CASE WHEN locked_until IS NOT NULL AND locked_until <= $4 THEN 1 \
                 ELSE failed_logins + 1 END, \
             locked_until = CASE \
                 WHEN locked_until IS NOT NULL AND locked_until <= $4 \
                     THEN CASE WHEN $1 <= 1 THEN $2 ELSE NULL END \
                 WHEN failed_logins + 1 >= $1 THEN $2 \
                 ELSE locked_until END \
             WHERE id = $3 RETURNING failed_logins, locked_until",
        )
        .bind(max_failures)
        .bind(until)
        .bind(user_id)
        .bind(now)
        .fetch_optional(self.write())
        .await?;
        let (failures, locked_until) =
            row.ok_or_else(|| StorageError::NotFound(format!("user {user_id} not found")))?;
        Ok((failures >= max_failures).then_some(locked_until).flatten())
    }

    /// A successful log-in, or an administrator's unlock: the failure count starts over and
    /// any lock ends. `false` when there is no such user.
    pub async fn clear_failed_logins(&self, username: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE users SET failed_logins = 0, locked_until = NULL WHERE username = $1",
        )
        .bind(username)
        .execute(self.write())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// A user with the permissions of the custom roles they hold.
    pub async fn user_by_name(&self, username: &str) -> Result<Option<UserRow>> {
        let user = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE u.username = $1"
        ))
        .bind(username)
        .fetch_optional(self.read())
        .await?
        .as_ref()
        .map(user_row)
        .transpose()?;
        self.with_role_permissions(user).await
    }

    /// A user by id (the subject of an authorization code or token), in one read: without
    /// `permissions` and `org_subtree`, which only decide what a caller of the API may do.
    pub async fn user_by_id(&self, id: i64) -> Result<Option<UserRow>> {
        sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1"
        ))
        .bind(id)
        .fetch_optional(self.read())
        .await?
        .as_ref()
        .map(user_row)
        .transpose()
    }

    /// Fills in what the custom roles among a user's roles permit, and the organisations below
    /// theirs, both read again on every request so that a changed role or tree applies at once.
    async fn with_role_permissions(&self, user: Option<UserRow>) -> Result<Option<UserRow>> {
        let Some(mut user) = user else {
            return Ok(None);
        };
        user.permissions = self.role_permissions(&user.roles).await?;
        user.org_subtree = self.org_subtree(&user.scope.org).await?;
        Ok(Some(user))
    }

    /// Every user, by name (a city has hundreds of operators, not millions).
    pub async fn list_users(&self) -> Result<Vec<UserRow>> {
        sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users u ORDER BY u.username"
        ))
        .fetch_all(self.read())
        .await?
        .iter()
        .map(user_row)
        .collect()
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

    /// The user of a session that has not expired at `now`, with the permissions of the
    /// custom roles they hold (read again on every request, so a changed role applies at once).
    /// Never a disabled user: disabling an account ends its sessions at once.
    pub async fn session_user(&self, token_hash: &str, now: i64) -> Result<Option<UserRow>> {
        let user = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = $1 AND s.expires_at > $2 AND u.disabled_at IS NULL"
        ))
        .bind(token_hash)
        .bind(now)
        .fetch_optional(self.read())
        .await?
        .as_ref()
        .map(user_row)
        .transpose()?;
        self.with_role_permissions(user).await
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

/// A data permission level a user holds on a product's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataGrantRow {
    pub user_id: i64,
    pub username: String,
    pub product_key: String,
    /// `model_admin`, `data_admin`, `read_write`, `read_only` or `none`.
    pub level: String,
    pub expires_at: Option<i64>,
    pub granted_by: String,
    pub granted_at: i64,
}

fn grant_row(r: &AnyRow) -> Result<DataGrantRow> {
    Ok(DataGrantRow {
        user_id: r.try_get("user_id")?,
        username: r.try_get("username")?,
        product_key: r.try_get("product_key")?,
        level: r.try_get("level")?,
        expires_at: r.try_get("expires_at")?,
        granted_by: r.try_get("granted_by")?,
        granted_at: r.try_get("granted_at")?,
    })
}

const GRANT_SELECT: &str = "SELECT g.user_id, u.username, g.product_key, g.level, g.expires_at, \
     g.granted_by, g.granted_at FROM data_grants g JOIN users u ON u.id = g.user_id";

impl Store {
    /// Grants (or replaces) a user's level on a product's data. `NotFound` for an unknown user
    /// or product.
    pub async fn set_data_grant(
        &self,
        username: &str,
        product_key: &str,
        level: &str,
        expires_at: Option<i64>,
        granted_by: &str,
    ) -> Result<DataGrantRow> {
        let user = self
            .user_by_name(username)
            .await?
            .ok_or_else(|| StorageError::NotFound(format!("user '{username}' not found")))?;
        sqlx::query(
            "INSERT INTO data_grants (user_id, product_key, level, expires_at, granted_by, \
             granted_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, product_key) DO \
             UPDATE SET level = excluded.level, expires_at = excluded.expires_at, \
             granted_by = excluded.granted_by, granted_at = excluded.granted_at",
        )
        .bind(user.id)
        .bind(product_key)
        .bind(level)
        .bind(expires_at)
        .bind(granted_by)
        .bind(now_ms())
        .execute(self.write())
        .await
        .map_err(|e| {
            if StorageError::is_foreign_key_violation(&e) {
                StorageError::NotFound(format!("product '{product_key}' not found"))
            } else {
                e.into()
            }
        })?;
        sqlx::query(&format!(
            "{GRANT_SELECT} WHERE g.user_id = $1 AND g.product_key = $2"
        ))
        .bind(user.id)
        .bind(product_key)
        .fetch_one(self.read())
        .await
        .map_err(StorageError::from)
        .and_then(|r| grant_row(&r))
    }

    /// A user's grants on every product (what the `lotus.data.fields` policy gets).
    pub async fn data_grants_of_user(&self, user_id: i64) -> Result<Vec<DataGrantRow>> {
        sqlx::query(&format!(
            "{GRANT_SELECT} WHERE g.user_id = $1 ORDER BY g.product_key"
        ))
        .bind(user_id)
        .fetch_all(self.read())
        .await?
        .iter()
        .map(grant_row)
        .collect()
    }

    /// Everyone's grants on one product, by user name.
    pub async fn data_grants_on_product(&self, product_key: &str) -> Result<Vec<DataGrantRow>> {
        sqlx::query(&format!(
            "{GRANT_SELECT} WHERE g.product_key = $1 ORDER BY u.username"
        ))
        .bind(product_key)
        .fetch_all(self.read())
        .await?
        .iter()
        .map(grant_row)
        .collect()
    }

    /// `false` when the user held no grant on the product.
    pub async fn delete_data_grant(&self, username: &str, product_key: &str) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM data_grants WHERE product_key = $1 AND user_id = \
             (SELECT id FROM users WHERE username = $2)",
        )
        .bind(product_key)
        .bind(username)
        .execute(self.write())
        .await?;
        Ok(done.rows_affected() > 0)
    }
}
