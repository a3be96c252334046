//! Notification channels (with their credentials sealed under the master key), message
//! templates, users' notification preferences, and the queue of deliveries with its retries.

use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{Result, StorageError};
use crate::secret::Secret;
use crate::sql::{Sql, flag, json, to_json};
use crate::{Store, now_ms};

/// Delivery states: waiting for the first attempt, waiting for a retry after a failed one,
/// delivered, out of attempts.
pub const DELIVERY_PENDING: &str = "pending";
pub const DELIVERY_FAILED: &str = "failed";
pub const DELIVERY_SENT: &str = "sent";
pub const DELIVERY_DEAD: &str = "dead";

const CHANNEL_KINDS: [&str; 5] = ["email", "sms", "im", "inapp", "webhook"];

/// A channel to create or replace.
#[derive(Debug, Clone)]
pub struct NewChannel<'a> {
    pub id: &'a str,
    /// `email`, `sms`, `im` or `inapp`.
    pub kind: &'a str,
    /// Settings without secrets (SMTP host, sender address, …).
    pub config: &'a Value,
    /// The credential, sealed before it is stored; `None` keeps the stored one.
    pub secret: Option<&'a str>,
    /// The plugin that sends through this channel, if a plugin does.
    pub plugin_id: Option<&'a str>,
    pub enabled: bool,
}

/// A stored channel, without its credential (see [`Store::channel_secret`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelRow {
    pub id: String,
    pub kind: String,
    pub config: Value,
    pub has_secret: bool,
    pub plugin_id: Option<String>,
    pub enabled: bool,
    pub updated_at: i64,
}

/// A message template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRow {
    pub id: String,
    pub subject: String,
    pub body: String,
    pub updated_at: i64,
}

/// A notification to send through a channel.
#[derive(Debug, Clone)]
pub struct NewDelivery<'a> {
    pub channel_id: &'a str,
    /// An address the channel understands (e-mail address, phone number, username).
    pub recipient: &'a str,
    pub subject: &'a str,
    pub body: &'a str,
    /// What caused it (`event:42`, `task:…`, `rule:…`), to find a delivery from its cause.
    pub reference: Option<&'a str>,
    /// When it was queued; its first attempt is due then.
    pub at: i64,
}

/// A stored delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    pub id: i64,
    pub channel_id: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    /// [`DELIVERY_PENDING`], [`DELIVERY_FAILED`], [`DELIVERY_SENT`] or [`DELIVERY_DEAD`].
    pub state: String,
    /// Attempts made so far.
    pub attempts: i64,
    pub last_error: Option<String>,
    /// The provider's id of the sent message (SMTP queue id, SMS id).
    pub message_id: Option<String>,
    pub reference: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub next_attempt_at: i64,
}

/// Which deliveries to list, newest first; every field narrows the result.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter<'a> {
    pub state: Option<&'a str>,
    pub channel_id: Option<&'a str>,
    pub reference: Option<&'a str>,
    pub limit: i64,
    pub offset: i64,
}

const CHANNEL_COLUMNS: &str = "id, kind, config, secret_enc IS NOT NULL AS has_secret, \
     plugin_id, enabled, updated_at";
const DELIVERY_COLUMNS: &str = "id, channel_id, recipient, subject, body, state, attempts, \
     last_error, message_id, reference, created_at, updated_at, next_attempt_at";

/// The AAD of a sealed channel credential: a value copied onto another channel does not open.
fn channel_secret_context(id: &str) -> String {
    format!("notification_channel:{id}")
}

fn channel_row(r: &AnyRow) -> Result<ChannelRow> {
    Ok(ChannelRow {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        config: json(r, "config")?,
        has_secret: bool_column(r, "has_secret")?,
        plugin_id: r.try_get("plugin_id")?,
        enabled: flag(r, "enabled")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// A computed boolean: PostgreSQL returns a BOOLEAN, SQLite an integer 0/1.
fn bool_column(r: &AnyRow, column: &str) -> Result<bool> {
    match r.try_get::<bool, _>(column) {
        Ok(b) => Ok(b),
        Err(_) => flag(r, column),
    }
}

fn template_row(r: &AnyRow) -> Result<TemplateRow> {
    Ok(TemplateRow {
        id: r.try_get("id")?,
        subject: r.try_get("subject")?,
        body: r.try_get("body")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn delivery_row(r: &AnyRow) -> Result<DeliveryRow> {
    Ok(DeliveryRow {
        id: r.try_get("id")?,
        channel_id: r.try_get("channel_id")?,
        recipient: r.try_get("recipient")?,
        subject: r.try_get("subject")?,
        body: r.try_get("body")?,
        state: r.try_get("state")?,
        attempts: r.try_get("attempts")?,
        last_error: r.try_get("last_error")?,
        message_id: r.try_get("message_id")?,
        reference: r.try_get("reference")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
    })
}

impl Store {
    /// Creates or replaces a channel. The credential is sealed under the master key; with
    /// `secret: None` the stored credential stays.
    pub async fn put_channel(&self, c: &NewChannel<'_>) -> Result<ChannelRow> {
        if !CHANNEL_KINDS.contains(&c.kind) {
            return Err(StorageError::Invalid(format!(
                "unknown channel kind '{}': use email, sms, im, inapp or webhook",
                c.kind
            )));
        }
        let sealed = c
            .secret
            .map(|s| self.secrets().seal(&channel_secret_context(c.id), s))
            .transpose()?;
        let row = sqlx::query(&format!(
            "INSERT INTO notification_channels (id, kind, config, secret_enc, plugin_id, \
             enabled, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE \
             SET kind = excluded.kind, config = excluded.config, \
             secret_enc = COALESCE(excluded.secret_enc, notification_channels.secret_enc), \
             plugin_id = excluded.plugin_id, enabled = excluded.enabled, \
             updated_at = excluded.updated_at RETURNING {CHANNEL_COLUMNS}"
        ))
        .bind(c.id)
        .bind(c.kind)
        .bind(to_json(c.config))
        .bind(sealed)
        .bind(c.plugin_id)
        .bind(i64::from(c.enabled))
        .bind(now_ms())
        .fetch_one(self.write())
        .await?;
        channel_row(&row)
    }

    pub async fn get_channel(&self, id: &str) -> Result<Option<ChannelRow>> {
        sqlx::query(&format!(
            "SELECT {CHANNEL_COLUMNS} FROM notification_channels WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.read())
        .await?
        .as_ref()
        .map(channel_row)
        .transpose()
    }

    /// The decrypted credential of a channel, for the sender only; `None` when the channel has
    /// none (or does not exist).
    pub async fn channel_secret(&self, id: &str) -> Result<Option<Secret>> {
        let sealed: Option<Option<String>> =
            sqlx::query_scalar("SELECT secret_enc FROM notification_channels WHERE id = $1")
                .bind(id)
                .fetch_optional(self.read())
                .await?;
        sealed
            .flatten()
            .map(|s| self.secrets().open(&channel_secret_context(id), &s))
            .transpose()
    }

    /// Every channel, by id.
    pub async fn list_channels(&self) -> Result<Vec<ChannelRow>> {
        sqlx::query(&format!(
            "SELECT {CHANNEL_COLUMNS} FROM notification_channels ORDER BY id"
        ))
        .fetch_all(self.read())
        .await?
        .iter()
        .map(channel_row)
        .collect()
    }

    /// `false` when there was no such channel. Its deliveries stay as the record of what was
    /// sent.
    pub async fn delete_channel(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM notification_channels WHERE id = $1")
            .bind(id)
            .execute(self.write())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Creates or replaces a template.
    pub async fn put_template(&self, id: &str, subject: &str, body: &str) -> Result<TemplateRow> {
        let row = sqlx::query(
            "INSERT INTO notification_templates (id, subject, body, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO UPDATE SET subject = excluded.subject, \
             body = excluded.body, updated_at = excluded.updated_at \
             RETURNING id, subject, body, updated_at",
        )
        .bind(id)
        .bind(subject)
        .bind(body)
        .bind(now_ms())
        .fetch_one(self.write())
        .await?;
        template_row(&row)
    }

    pub async fn get_template(&self, id: &str) -> Result<Option<TemplateRow>> {
        sqlx::query(
            "SELECT id, subject, body, updated_at FROM notification_templates WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.read())
        .await?
        .as_ref()
        .map(template_row)
        .transpose()
    }

    /// Every template, by id.
    pub async fn list_templates(&self) -> Result<Vec<TemplateRow>> {
        sqlx::query("SELECT id, subject, body, updated_at FROM notification_templates ORDER BY id")
            .fetch_all(self.read())
            .await?
            .iter()
            .map(template_row)
            .collect()
    }

    /// `false` when there was no such template.
    pub async fn delete_template(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM notification_templates WHERE id = $1")
            .bind(id)
            .execute(self.write())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Creates or replaces a user's notification preferences.
    pub async fn put_preferences(&self, username: &str, preferences: &Value) -> Result<()> {
        sqlx::query(
            "INSERT INTO user_preferences (username, preferences, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (username) DO UPDATE SET preferences = excluded.preferences, \
             updated_at = excluded.updated_at",
        )
        .bind(username)
        .bind(to_json(preferences))
        .bind(now_ms())
        .execute(self.write())
        .await?;
        Ok(())
    }

    /// A user's notification preferences; `None` when the user never set any.
    pub async fn preferences(&self, username: &str) -> Result<Option<Value>> {
        sqlx::query("SELECT preferences FROM user_preferences WHERE username = $1")
            .bind(username)
            .fetch_optional(self.read())
            .await?
            .map(|r| json(&r, "preferences"))
            .transpose()
    }

    /// Queues a notification, due at once; its id.
    pub async fn enqueue_delivery(&self, d: &NewDelivery<'_>) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO deliveries (channel_id, recipient, subject, body, state, attempts, \
             last_error, message_id, reference, created_at, updated_at, next_attempt_at) \
             VALUES ($1, $2, $3, $4, $5, 0, NULL, NULL, $6, $7, $7, $7) RETURNING id",
        )
        .bind(d.channel_id)
        .bind(d.recipient)
        .bind(d.subject)
        .bind(d.body)
        .bind(DELIVERY_PENDING)
        .bind(d.reference)
        .bind(d.at)
        .fetch_one(self.write())
        .await?)
    }

    /// Deliveries waiting for an attempt (first or retry) due at `now`, the longest-waiting
    /// first.
    pub async fn due_deliveries(&self, now: i64, limit: i64) -> Result<Vec<DeliveryRow>> {
        sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE state IN ($1, $2) \
             AND next_attempt_at <= $3 ORDER BY next_attempt_at, id LIMIT $4"
        ))
        .bind(DELIVERY_PENDING)
        .bind(DELIVERY_FAILED)
        .bind(now)
        .bind(limit.max(0))
        .fetch_all(self.read())
        .await?
        .iter()
        .map(delivery_row)
        .collect()
    }

    /// Records a successful attempt, with the provider's message id when it gave one.
    pub async fn delivery_sent(&self, id: i64, message_id: Option<&str>, at: i64) -> Result<()> {
        self.finish_delivery_attempt(id, DELIVERY_SENT, message_id, None, None, at)
            .await
    }

    /// Records a failed attempt and when to try again.
    pub async fn delivery_retry(&self, id: i64, next_at: i64, error: &str, at: i64) -> Result<()> {
        self.finish_delivery_attempt(id, DELIVERY_FAILED, None, Some(error), Some(next_at), at)
            .await
    }

    /// Records the last failed attempt: the delivery is given up.
    pub async fn delivery_dead(&self, id: i64, error: &str, at: i64) -> Result<()> {
        self.finish_delivery_attempt(id, DELIVERY_DEAD, None, Some(error), None, at)
            .await
    }

    /// One page of the deliveries that match, newest first, and how many match.
    pub async fn list_deliveries(&self, f: &DeliveryFilter<'_>) -> Result<(Vec<DeliveryRow>, i64)> {
        if let Some(state) = f.state
            && ![
                DELIVERY_PENDING,
                DELIVERY_FAILED,
                DELIVERY_SENT,
                DELIVERY_DEAD,
            ]
            .contains(&state)
        {
            return Err(StorageError::Invalid(format!(
                "unknown delivery state '{state}': use pending, failed, sent or dead"
            )));
        }
        let build = |head: &str| {
            let mut sql = Sql::new(self.backend(), head);
            sql.push(" WHERE 1 = 1");
            if let Some(state) = f.state {
                sql.push(" AND state = ").push_arg(state.to_string());
            }
            if let Some(channel) = f.channel_id {
                sql.push(" AND channel_id = ").push_arg(channel.to_string());
            }
            if let Some(reference) = f.reference {
                sql.push(" AND reference = ")
                    .push_arg(reference.to_string());
            }
            sql
        };
        self.page(
            "deliveries",
            DELIVERY_COLUMNS,
            "created_at DESC, id DESC",
            (f.limit, f.offset),
            |head| Ok(build(head)),
            delivery_row,
        )
        .await
    }

    /// Records the outcome of an attempt on a delivery that waits for one. `NotFound` for an
    /// unknown delivery, `Conflict` when it is already sent or dead (another sender got it).
    async fn finish_delivery_attempt(
        &self,
        id: i64,
        state: &str,
        message_id: Option<&str>,
        error: Option<&str>,
        next_attempt_at: Option<i64>,
        at: i64,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE deliveries SET state = $1, attempts = attempts + 1, \
             message_id = COALESCE($2, message_id), last_error = COALESCE($3, last_error), \
             next_attempt_at = COALESCE($4, next_attempt_at), updated_at = $5 \
             WHERE id = $6 AND state IN ($7, $8)",
        )
        .bind(state)
        .bind(message_id)
        .bind(error)
        .bind(next_attempt_at)
        .bind(at)
        .bind(id)
        .bind(DELIVERY_PENDING)
        .bind(DELIVERY_FAILED)
        .execute(self.write())
        .await?;
        if done.rows_affected() > 0 {
            return Ok(());
        }
        let current: Option<String> =
            sqlx::query_scalar("SELECT state FROM deliveries WHERE id = $1")
                .bind(id)
                .fetch_optional(self.write())
                .await?;
        Err(match current {
            Some(current) => StorageError::Conflict(format!(
                "delivery {id} is already {current}; only a pending or failed delivery can be \
                 attempted"
            )),
            None => StorageError::NotFound(format!("delivery {id} not found")),
        })
    }
}
