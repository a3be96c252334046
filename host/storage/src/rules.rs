//! Rules of the rule engine with their version history and counters, and the outbox of rule
//! actions that failed and wait for another attempt.
//!
//! Storage does not understand a rule's definition: the host validates the id and the JSON
//! before anything is stored, and the rule engine compiles what it reads back.

use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{Result, StorageError};
use crate::sql::{Sql, flag, json, to_json};
use crate::{Store, now_ms};

/// Outbox states: waiting for an attempt, delivered, or out of attempts.
pub const ACTION_PENDING: &str = "pending";
pub const ACTION_DONE: &str = "done";
pub const ACTION_DEAD: &str = "dead";

/// A stored rule at its current version.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleRow {
    pub id: String,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    /// 1 at creation, bumped by every edit and rollback.
    pub version: i64,
    pub definition: Value,
    pub org: String,
    pub region: String,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A rule to create, at version 1.
#[derive(Debug, Clone)]
pub struct NewRule<'a> {
    /// A slug the host has validated (`[a-z0-9][a-z0-9_-]{0,63}`).
    pub id: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    pub enabled: bool,
    pub definition: &'a Value,
    pub org: &'a str,
    pub region: &'a str,
    pub created_by: &'a str,
}

/// A new version of a rule: name, description and definition are replaced as a whole.
#[derive(Debug, Clone)]
pub struct RuleUpdate<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub definition: &'a Value,
    pub updated_by: &'a str,
}

/// One version of a rule's definition, as it was stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleVersionRow {
    pub rule_id: String,
    pub version: i64,
    pub definition: Value,
    pub created_by: String,
    pub created_at: i64,
}

/// What the rule engine adds to a rule's counters after a batch.
#[derive(Debug, Clone, Default)]
pub struct RuleStatsDelta<'a> {
    pub matched: i64,
    pub actions_ok: i64,
    pub actions_failed: i64,
    /// Replaces the stored last error when `Some`; `None` keeps it.
    pub last_error: Option<&'a str>,
    /// When the batch ran: the last match time (when `matched > 0`) and the error's time.
    pub at: i64,
}

/// A rule's counters since it was created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleStatsRow {
    pub rule_id: String,
    pub matched: i64,
    pub actions_ok: i64,
    pub actions_failed: i64,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    pub last_matched_at: Option<i64>,
}

/// A rule action in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub rule_id: String,
    /// The action as the rule defines it (kind, target, …).
    pub action: Value,
    /// What the action carries (the message that matched, rendered fields).
    pub payload: Value,
    /// [`ACTION_PENDING`], [`ACTION_DONE`] or [`ACTION_DEAD`].
    pub state: String,
    /// Attempts made so far.
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

const RULE_COLUMNS: &str = "id, name, description, enabled, version, definition, org, region, \
     created_by, created_at, updated_at";
const OUTBOX_COLUMNS: &str = "id, rule_id, action, payload, state, attempts, next_attempt_at, \
     last_error, created_at, updated_at";

fn rule_row(r: &AnyRow) -> Result<RuleRow> {
    Ok(RuleRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        enabled: flag(r, "enabled")?,
        version: r.try_get("version")?,
        definition: json(r, "definition")?,
        org: r.try_get("org")?,
        region: r.try_get("region")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn outbox_row(r: &AnyRow) -> Result<OutboxRow> {
    Ok(OutboxRow {
        id: r.try_get("id")?,
        rule_id: r.try_get("rule_id")?,
        action: json(r, "action")?,
        payload: json(r, "payload")?,
        state: r.try_get("state")?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        last_error: r.try_get("last_error")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn rule_not_found(id: &str) -> StorageError {
    StorageError::NotFound(format!("rule '{id}' not found"))
}

fn action_not_found(id: i64) -> StorageError {
    StorageError::NotFound(format!("rule action {id} not found in the outbox"))
}

impl Store {
    /// Creates a rule at version 1 (recorded in its history). `Conflict` when the id is taken.
    pub async fn create_rule(&self, r: &NewRule<'_>) -> Result<RuleRow> {
        let now = now_ms();
        let definition = to_json(r.definition);
        let mut tx = self.write().begin().await?;
        let row = sqlx::query(&format!(
            "INSERT INTO rules (id, name, description, enabled, version, definition, org, \
             region, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8, $9, $9) RETURNING {RULE_COLUMNS}"
        ))
        .bind(r.id)
        .bind(r.name)
        .bind(r.description)
        .bind(i64::from(r.enabled))
        .bind(&definition)
        .bind(r.org)
        .bind(r.region)
        .bind(r.created_by)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            if StorageError::is_unique_violation(&e) {
                StorageError::Conflict(format!(
                    "a rule with id '{}' already exists: choose another id or edit that rule",
                    r.id
                ))
            } else {
                e.into()
            }
        })?;
        insert_rule_version(&mut tx, r.id, 1, &definition, r.created_by, now).await?;
        tx.commit().await?;
        rule_row(&row)
    }

    /// Stores a new version of a rule and makes it current. `NotFound` for an unknown rule.
    pub async fn update_rule(&self, id: &str, u: &RuleUpdate<'_>) -> Result<RuleRow> {
        let mut tx = self.write().begin().await?;
        let row = bump_rule_version(
            &mut tx,
            id,
            Some((u.name, u.description)),
            &to_json(u.definition),
            u.updated_by,
        )
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Turns a rule on or off; not a new version, the definition is unchanged.
    pub async fn set_rule_enabled(&self, id: &str, enabled: bool) -> Result<RuleRow> {
        let row = sqlx::query(&format!(
            "UPDATE rules SET enabled = $1, updated_at = $2 WHERE id = $3 RETURNING {RULE_COLUMNS}"
        ))
        .bind(i64::from(enabled))
        .bind(now_ms())
        .bind(id)
        .fetch_optional(self.write())
        .await?
        .ok_or_else(|| rule_not_found(id))?;
        rule_row(&row)
    }

    pub async fn get_rule(&self, id: &str) -> Result<Option<RuleRow>> {
        sqlx::query(&format!("SELECT {RULE_COLUMNS} FROM rules WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.read())
            .await?
            .as_ref()
            .map(rule_row)
            .transpose()
    }

    /// Every rule, by id (the rule engine loads them all at start).
    pub async fn list_rules(&self) -> Result<Vec<RuleRow>> {
        sqlx::query(&format!("SELECT {RULE_COLUMNS} FROM rules ORDER BY id"))
            .fetch_all(self.read())
            .await?
            .iter()
            .map(rule_row)
            .collect()
    }

    /// Deletes a rule with its history and counters; `false` when there was no such rule.
    /// Its pending actions stay in the outbox and still run.
    pub async fn delete_rule(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM rules WHERE id = $1")
            .bind(id)
            .execute(self.write())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// A rule's versions, oldest first; empty for an unknown rule.
    pub async fn rule_versions(&self, id: &str) -> Result<Vec<RuleVersionRow>> {
        sqlx::query(
            "SELECT rule_id, version, definition, created_by, created_at FROM rule_versions \
             WHERE rule_id = $1 ORDER BY version",
        )
        .bind(id)
        .fetch_all(self.read())
        .await?
        .iter()
        .map(|r| {
            Ok(RuleVersionRow {
                rule_id: r.try_get("rule_id")?,
                version: r.try_get("version")?,
                definition: json(r, "definition")?,
                created_by: r.try_get("created_by")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
    }

    /// Makes an old version's definition current again, as a new version (history only grows,
    /// so the rollback itself can be rolled back). `NotFound` for an unknown rule or version.
    pub async fn rollback_rule(&self, id: &str, to_version: i64, by: &str) -> Result<RuleRow> {
        let mut tx = self.write().begin().await?;
        let definition: Option<String> = sqlx::query_scalar(
            "SELECT definition FROM rule_versions WHERE rule_id = $1 AND version = $2",
        )
        .bind(id)
        .bind(to_version)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(definition) = definition else {
            return Err(StorageError::NotFound(format!(
                "rule '{id}' has no version {to_version} to roll back to"
            )));
        };
        let row = bump_rule_version(&mut tx, id, None, &definition, by).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Adds a batch's counts to a rule's counters. `NotFound` for an unknown rule.
    pub async fn add_rule_stats(&self, rule_id: &str, d: &RuleStatsDelta<'_>) -> Result<()> {
        let last_error_at = d.last_error.map(|_| d.at);
        let last_matched_at = (d.matched > 0).then_some(d.at);
        sqlx::query(
            "INSERT INTO rule_stats (rule_id, matched, actions_ok, actions_failed, last_error, \
             last_error_at, last_matched_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (rule_id) DO UPDATE SET \
             matched = rule_stats.matched + excluded.matched, \
             actions_ok = rule_stats.actions_ok + excluded.actions_ok, \
             actions_failed = rule_stats.actions_failed + excluded.actions_failed, \
             last_error = COALESCE(excluded.last_error, rule_stats.last_error), \
             last_error_at = COALESCE(excluded.last_error_at, rule_stats.last_error_at), \
             last_matched_at = COALESCE(excluded.last_matched_at, rule_stats.last_matched_at)",
        )
        .bind(rule_id)
        .bind(d.matched)
        .bind(d.actions_ok)
        .bind(d.actions_failed)
        .bind(d.last_error)
        .bind(last_error_at)
        .bind(last_matched_at)
        .execute(self.write())
        .await
        .map_err(|e| {
            if StorageError::is_foreign_key_violation(&e) {
                rule_not_found(rule_id)
            } else {
                e.into()
            }
        })?;
        Ok(())
    }

    /// A rule's counters; zeros for a rule that never ran (or does not exist).
    pub async fn rule_stats(&self, id: &str) -> Result<RuleStatsRow> {
        let row = sqlx::query(
            "SELECT rule_id, matched, actions_ok, actions_failed, last_error, last_error_at, \
             last_matched_at FROM rule_stats WHERE rule_id = $1",
        )
        .bind(id)
        .fetch_optional(self.read())
        .await?;
        let Some(r) = row else {
            return Ok(RuleStatsRow {
                rule_id: id.to_string(),
                ..RuleStatsRow::default()
            });
        };
        Ok(RuleStatsRow {
            rule_id: r.try_get("rule_id")?,
            matched: r.try_get("matched")?,
            actions_ok: r.try_get("actions_ok")?,
            actions_failed: r.try_get("actions_failed")?,
            last_error: r.try_get("last_error")?,
            last_error_at: r.try_get("last_error_at")?,
            last_matched_at: r.try_get("last_matched_at")?,
        })
    }

    /// Puts a failed rule action in the outbox for an attempt at `next_attempt_at`; its id.
    pub async fn enqueue_action(
        &self,
        rule_id: &str,
        action: &Value,
        payload: &Value,
        next_attempt_at: i64,
    ) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO action_outbox (rule_id, action, payload, state, attempts, \
             next_attempt_at, last_error, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 0, $5, NULL, $6, $6) RETURNING id",
        )
        .bind(rule_id)
        .bind(to_json(action))
        .bind(to_json(payload))
        .bind(ACTION_PENDING)
        .bind(next_attempt_at)
        .bind(now_ms())
        .fetch_one(self.write())
        .await?)
    }

    /// Pending actions due at `now`, the longest-waiting first.
    pub async fn due_actions(&self, now: i64, limit: i64) -> Result<Vec<OutboxRow>> {
        sqlx::query(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM action_outbox WHERE state = $1 AND next_attempt_at <= $2 \
             ORDER BY next_attempt_at, id LIMIT $3"
        ))
        .bind(ACTION_PENDING)
        .bind(now)
        .bind(limit.max(0))
        .fetch_all(self.read())
        .await?
        .iter()
        .map(outbox_row)
        .collect()
    }

    /// Records that a pending action went through.
    pub async fn action_done(&self, id: i64) -> Result<()> {
        self.finish_pending_action(id, ACTION_DONE, None, None)
            .await
    }

    /// Records a failed attempt of a pending action and when to try again.
    pub async fn action_retry(&self, id: i64, next_attempt_at: i64, error: &str) -> Result<()> {
        self.finish_pending_action(id, ACTION_PENDING, Some(next_attempt_at), Some(error))
            .await
    }

    /// Records the last failed attempt of a pending action: it waits for an operator now.
    pub async fn action_dead(&self, id: i64, error: &str) -> Result<()> {
        self.finish_pending_action(id, ACTION_DEAD, None, Some(error))
            .await
    }

    /// Dead actions, the most recently failed first, optionally of one rule.
    pub async fn list_dead_actions(
        &self,
        rule_id: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<OutboxRow>> {
        let mut sql = Sql::new(
            self.backend(),
            format!("SELECT {OUTBOX_COLUMNS} FROM action_outbox WHERE state = "),
        );
        sql.push_arg(ACTION_DEAD);
        if let Some(rule) = rule_id {
            sql.push(" AND rule_id = ").push_arg(rule.to_string());
        }
        sql.push(" ORDER BY updated_at DESC, id DESC LIMIT ")
            .push_arg(limit.max(0))
            .push(" OFFSET ")
            .push_arg(offset.max(0));
        let (text, args) = sql.finish()?;
        sqlx::query_with(&text, args)
            .fetch_all(self.read())
            .await?
            .iter()
            .map(outbox_row)
            .collect()
    }

    /// An operator's "retry": a dead action becomes pending, due at `now`, with a fresh count
    /// of attempts (its last error stays until the next attempt). `Conflict` unless it is dead.
    pub async fn requeue_action(&self, id: i64, now: i64) -> Result<()> {
        let done = sqlx::query(
            "UPDATE action_outbox SET state = $1, attempts = 0, next_attempt_at = $2, \
             updated_at = $3 WHERE id = $4 AND state = $5",
        )
        .bind(ACTION_PENDING)
        .bind(now)
        .bind(now_ms())
        .bind(id)
        .bind(ACTION_DEAD)
        .execute(self.write())
        .await?;
        if done.rows_affected() == 0 {
            return Err(self.outbox_state_error(id, "retried", ACTION_DEAD).await);
        }
        Ok(())
    }

    /// Moves a pending action to `state`, counting an attempt; `NotFound` or `Conflict` when
    /// it is not pending (another worker finished it, or an operator did).
    async fn finish_pending_action(
        &self,
        id: i64,
        state: &str,
        next_attempt_at: Option<i64>,
        error: Option<&str>,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE action_outbox SET state = $1, attempts = attempts + 1, \
             next_attempt_at = COALESCE($2, next_attempt_at), \
             last_error = COALESCE($3, last_error), updated_at = $4 \
             WHERE id = $5 AND state = $6",
        )
        .bind(state)
        .bind(next_attempt_at)
        .bind(error)
        .bind(now_ms())
        .bind(id)
        .bind(ACTION_PENDING)
        .execute(self.write())
        .await?;
        if done.rows_affected() == 0 {
            return Err(self
                .outbox_state_error(id, "given a result", ACTION_PENDING)
                .await);
        }
        Ok(())
    }

    /// Why an outbox update matched no row: the action is missing or in another state.
    async fn outbox_state_error(&self, id: i64, verb: &str, expected: &str) -> StorageError {
        let state: std::result::Result<Option<String>, sqlx::Error> =
            sqlx::query_scalar("SELECT state FROM action_outbox WHERE id = $1")
                .bind(id)
                .fetch_optional(self.write())
                .await;
        match state {
            Ok(Some(state)) => StorageError::Conflict(format!(
                "rule action {id} is {state}; only a {expected} action can be {verb}"
            )),
            Ok(None) => action_not_found(id),
            Err(e) => e.into(),
        }
    }
}

async fn insert_rule_version(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    rule_id: &str,
    version: i64,
    definition: &str,
    by: &str,
    at: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO rule_versions (rule_id, version, definition, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(rule_id)
    .bind(version)
    .bind(definition)
    .bind(by)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Makes `definition` the rule's next version (and, when given, replaces name and
/// description), recording it in the history. The UPDATE locks the rule's row, so concurrent
/// edits get consecutive versions.
async fn bump_rule_version(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &str,
    names: Option<(&str, &str)>,
    definition: &str,
    by: &str,
) -> Result<RuleRow> {
    let now = now_ms();
    let (set_names, name, description) = match names {
        Some((name, description)) => (", name = $4, description = $5", name, description),
        None => ("", "", ""),
    };
    let text = format!(
        "UPDATE rules SET version = version + 1, definition = $1, updated_at = $2{set_names} \
         WHERE id = $3 RETURNING {RULE_COLUMNS}"
    );
    let mut query = sqlx::query(&text).bind(definition).bind(now).bind(id);
    if names.is_some() {
        query = query.bind(name).bind(description);
    }
    let row = query
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| rule_not_found(id))?;
    let row = rule_row(&row)?;
    insert_rule_version(tx, id, row.version, definition, by, now).await?;
    Ok(row)
}
