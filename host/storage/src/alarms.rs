//! Device alarms: raised by rules, folded so that a device has at most one open alarm of a
//! type, acknowledged and cleared by operators (or cleared by the rule that raised them).

use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{Result, StorageError};
use crate::sql::{Sql, json, push_region_condition, push_scope_condition, to_json};
use crate::{Scope, Store};

/// Alarm states: raised and not yet seen, seen by an operator, over.
pub const ALARM_ACTIVE: &str = "active";
pub const ALARM_ACKNOWLEDGED: &str = "acknowledged";
pub const ALARM_CLEARED: &str = "cleared";

/// The most and least severe alarm levels.
pub const ALARM_LEVEL_MOST_SEVERE: i64 = 1;
pub const ALARM_LEVEL_LEAST_SEVERE: i64 = 4;

/// The operator alarm a plugin raises when the runtime suspends it after repeated failures:
/// not tied to a device (empty product key and device name), one open alarm per plugin, cleared
/// when an operator resumes the plugin.
pub fn plugin_suspended_alarm_type(plugin: &str) -> String {
    format!("plugin.suspended.{plugin}")
}

/// A stored alarm.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmRow {
    pub id: i64,
    pub product_key: String,
    pub device_name: String,
    pub alarm_type: String,
    /// The rule that raised it, if a rule did.
    pub rule_id: Option<String>,
    /// 1 (most severe) to 4.
    pub level: i64,
    /// [`ALARM_ACTIVE`], [`ALARM_ACKNOWLEDGED`] or [`ALARM_CLEARED`].
    pub state: String,
    pub message: String,
    pub details: Value,
    pub region: String,
    pub org: String,
    /// How many raises this alarm stands for (1 when raised once).
    pub occurrences: i64,
    pub raised_at: i64,
    /// The latest raise.
    pub last_at: i64,
    pub acknowledged_at: Option<i64>,
    pub acknowledged_by: Option<String>,
    pub cleared_at: Option<i64>,
    pub cleared_by: Option<String>,
}

/// An alarm to raise.
#[derive(Debug, Clone)]
pub struct NewAlarm<'a> {
    pub product_key: &'a str,
    pub device_name: &'a str,
    pub alarm_type: &'a str,
    pub rule_id: Option<&'a str>,
    /// 1 (most severe) to 4.
    pub level: i64,
    pub message: &'a str,
    pub details: &'a Value,
    pub region: &'a str,
    pub org: &'a str,
    pub at: i64,
}

/// Which alarms to list; every field narrows the result.
#[derive(Debug, Clone, Default)]
pub struct AlarmFilter<'a> {
    pub state: Option<&'a str>,
    pub product_key: Option<&'a str>,
    pub device_name: Option<&'a str>,
    pub alarm_type: Option<&'a str>,
    /// Only alarms in this region or below it; `/` is the whole city.
    pub region_prefix: Option<&'a str>,
    /// Only alarms of this organisation (or of none) in its region or below it: what a user
    /// of that scope may see.
    pub within: Option<&'a Scope>,
    /// Raised at or after (ms).
    pub from: Option<i64>,
    /// Raised before (ms).
    pub to: Option<i64>,
    pub limit: i64,
    pub offset: i64,
}

const ALARM_COLUMNS: &str = "id, product_key, device_name, alarm_type, rule_id, level, state, \
     message, details, region, org, occurrences, raised_at, last_at, acknowledged_at, \
     acknowledged_by, cleared_at, cleared_by";

fn alarm_row(r: &AnyRow) -> Result<AlarmRow> {
    Ok(AlarmRow {
        id: r.try_get("id")?,
        product_key: r.try_get("product_key")?,
        device_name: r.try_get("device_name")?,
        alarm_type: r.try_get("alarm_type")?,
        rule_id: r.try_get("rule_id")?,
        level: r.try_get("level")?,
        state: r.try_get("state")?,
        message: r.try_get("message")?,
        details: json(r, "details")?,
        region: r.try_get("region")?,
        org: r.try_get("org")?,
        occurrences: r.try_get("occurrences")?,
        raised_at: r.try_get("raised_at")?,
        last_at: r.try_get("last_at")?,
        acknowledged_at: r.try_get("acknowledged_at")?,
        acknowledged_by: r.try_get("acknowledged_by")?,
        cleared_at: r.try_get("cleared_at")?,
        cleared_by: r.try_get("cleared_by")?,
    })
}

fn alarm_not_found(id: i64) -> StorageError {
    StorageError::NotFound(format!("alarm {id} not found"))
}

fn check_alarm_state(state: &str) -> Result<()> {
    if [ALARM_ACTIVE, ALARM_ACKNOWLEDGED, ALARM_CLEARED].contains(&state) {
        Ok(())
    } else {
        Err(StorageError::Invalid(format!(
            "unknown alarm state '{state}': use active, acknowledged or cleared"
        )))
    }
}

impl Store {
    /// Raises an alarm, or folds the raise into the device's open alarm of the same type
    /// (more occurrences, a later `last_at`, everything else kept). Returns the alarm and
    /// whether it is new. Concurrent raises are safe: the open-alarm unique index makes the
    /// database pick one row for all of them.
    pub async fn raise_alarm(&self, a: &NewAlarm<'_>) -> Result<(AlarmRow, bool)> {
        if !(ALARM_LEVEL_MOST_SEVERE..=ALARM_LEVEL_LEAST_SEVERE).contains(&a.level) {
            return Err(StorageError::Invalid(format!(
                "alarm level {} is out of range: use 1 (most severe) to 4",
                a.level
            )));
        }
        // The conflict target repeats the index's predicate: that is how both databases pick
        // a partial unique index as the arbiter.
        let row = sqlx::query(&format!(
            "INSERT INTO alarms (product_key, device_name, alarm_type, rule_id, level, state, \
             message, details, region, org, occurrences, raised_at, last_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1, $11, $11) \
             ON CONFLICT (product_key, device_name, alarm_type) WHERE state <> 'cleared' \
             DO UPDATE SET occurrences = alarms.occurrences + 1, \
             last_at = CASE WHEN excluded.last_at > alarms.last_at THEN excluded.last_at \
             ELSE alarms.last_at END \
             RETURNING {ALARM_COLUMNS}"
        ))
        .bind(a.product_key)
        .bind(a.device_name)
        .bind(a.alarm_type)
        .bind(a.rule_id)
        .bind(a.level)
        .bind(ALARM_ACTIVE)
        .bind(a.message)
        .bind(to_json(a.details))
        .bind(a.region)
        .bind(a.org)
        .bind(a.at)
        .fetch_one(self.write())
        .await?;
        let alarm = alarm_row(&row)?;
        // Only the insert leaves the count at 1; every folded raise adds to it.
        let new = alarm.occurrences == 1;
        Ok((alarm, new))
    }

    /// Marks an alarm as seen by `by`. Acknowledging it again keeps the first acknowledgement.
    /// `NotFound` for an unknown alarm, `Conflict` for a cleared one.
    pub async fn acknowledge_alarm(&self, id: i64, by: &str, at: i64) -> Result<AlarmRow> {
        let row = sqlx::query(&format!(
            "UPDATE alarms SET state = $1, acknowledged_at = COALESCE(acknowledged_at, $2), \
             acknowledged_by = COALESCE(acknowledged_by, $3) WHERE id = $4 AND state <> $5 \
             RETURNING {ALARM_COLUMNS}"
        ))
        .bind(ALARM_ACKNOWLEDGED)
        .bind(at)
        .bind(by)
        .bind(id)
        .bind(ALARM_CLEARED)
        .fetch_optional(self.write())
        .await?;
        match row {
            Some(r) => alarm_row(&r),
            None => Err(self.alarm_cleared_or_missing(id, "acknowledged").await),
        }
    }

    /// Clears an open alarm. `NotFound` for an unknown alarm, `Conflict` when it is already
    /// cleared.
    pub async fn clear_alarm(&self, id: i64, by: &str, at: i64) -> Result<AlarmRow> {
        let row = sqlx::query(&format!(
            "UPDATE alarms SET state = $1, cleared_at = $2, cleared_by = $3 \
             WHERE id = $4 AND state <> $1 RETURNING {ALARM_COLUMNS}"
        ))
        .bind(ALARM_CLEARED)
        .bind(at)
        .bind(by)
        .bind(id)
        .fetch_optional(self.write())
        .await?;
        match row {
            Some(r) => alarm_row(&r),
            None => Err(self.alarm_cleared_or_missing(id, "cleared").await),
        }
    }

    /// Clears the device's open alarm of a type (a rule's recovery condition held); `None` when
    /// there is none open.
    pub async fn clear_open_alarm(
        &self,
        product_key: &str,
        device_name: &str,
        alarm_type: &str,
        by: &str,
        at: i64,
    ) -> Result<Option<AlarmRow>> {
        sqlx::query(&format!(
            "UPDATE alarms SET state = $1, cleared_at = $2, cleared_by = $3 \
             WHERE product_key = $4 AND device_name = $5 AND alarm_type = $6 AND state <> $1 \
             RETURNING {ALARM_COLUMNS}"
        ))
        .bind(ALARM_CLEARED)
        .bind(at)
        .bind(by)
        .bind(product_key)
        .bind(device_name)
        .bind(alarm_type)
        .fetch_optional(self.write())
        .await?
        .as_ref()
        .map(alarm_row)
        .transpose()
    }

    pub async fn get_alarm(&self, id: i64) -> Result<Option<AlarmRow>> {
        sqlx::query(&format!("SELECT {ALARM_COLUMNS} FROM alarms WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.read())
            .await?
            .as_ref()
            .map(alarm_row)
            .transpose()
    }

    /// One page of the alarms that match, the most recently raised first, and how many match.
    pub async fn list_alarms(&self, f: &AlarmFilter<'_>) -> Result<(Vec<AlarmRow>, i64)> {
        if let Some(state) = f.state {
            check_alarm_state(state)?;
        }
        let build = |head: &str| {
            let mut sql = Sql::new(self.backend(), head);
            sql.push(" WHERE 1 = 1");
            if let Some(state) = f.state {
                sql.push(" AND state = ").push_arg(state.to_string());
            }
            if let Some(pk) = f.product_key {
                sql.push(" AND product_key = ").push_arg(pk.to_string());
            }
            if let Some(name) = f.device_name {
                sql.push(" AND device_name = ").push_arg(name.to_string());
            }
            if let Some(t) = f.alarm_type {
                sql.push(" AND alarm_type = ").push_arg(t.to_string());
            }
            if let Some(region) = f.region_prefix {
                push_region_condition(&mut sql, "region", region);
            }
            if let Some(scope) = f.within {
                push_scope_condition(&mut sql, "org", "region", scope);
            }
            if let Some(from) = f.from {
                sql.push(" AND raised_at >= ").push_arg(from);
            }
            if let Some(to) = f.to {
                sql.push(" AND raised_at < ").push_arg(to);
            }
            sql
        };
        self.page(
            "alarms",
            ALARM_COLUMNS,
            "raised_at DESC, id DESC",
            (f.limit, f.offset),
            |head| Ok(build(head)),
            alarm_row,
        )
        .await
    }

    /// Why an update of an open alarm matched nothing: it is missing or already cleared.
    /// Asked through the writer, which has just seen the row the update failed on.
    async fn alarm_cleared_or_missing(&self, id: i64, verb: &str) -> StorageError {
        let exists: std::result::Result<Option<i64>, sqlx::Error> =
            sqlx::query_scalar("SELECT id FROM alarms WHERE id = $1")
                .bind(id)
                .fetch_optional(self.write())
                .await;
        match exists {
            Ok(Some(_)) => StorageError::Conflict(format!(
                "alarm {id} is already cleared and cannot be {verb}; a new raise opens a new alarm"
            )),
            Ok(None) => alarm_not_found(id),
            Err(e) => e.into(),
        }
    }
}
