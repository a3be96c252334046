//! Devices: registration, secrets, listing, tags and the online/offline record.

use std::collections::HashSet;

use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{Result, StorageError};
use crate::sql::{
    Sql, contains_pattern, flag, insert_rows, json, page_bounds, push_region_condition,
    push_scope_condition, to_json,
};
use crate::{
    Backend, DeviceFilter, DeviceRow, DeviceStatus, Page, Scope, Secret, StatusRow, Store, now_ms,
};

const DEVICE_COLUMNS: &str = "product_key, device_name, nickname, enabled, online, \
     first_online_at, last_online_at, last_offline_at, last_offline_reason, tags, created_at, \
     updated_at, region";

/// Names checked per `IN (…)` list when looking for duplicates.
const NAMES_PER_LOOKUP: usize = 500;

/// How often a tag change is retried when another change to the same device won the race.
const TAG_RETRIES: usize = 10;

/// The associated data that binds a device secret to its row.
pub(crate) fn device_secret_context(product_key: &str, device_name: &str) -> String {
    format!("device:{product_key}/{device_name}")
}

fn device_row(row: &AnyRow) -> Result<DeviceRow> {
    Ok(DeviceRow {
        product_key: row.try_get("product_key")?,
        device_name: row.try_get("device_name")?,
        nickname: row.try_get("nickname")?,
        enabled: flag(row, "enabled")?,
        online: flag(row, "online")?,
        first_online_at: row.try_get("first_online_at")?,
        last_online_at: row.try_get("last_online_at")?,
        last_offline_at: row.try_get("last_offline_at")?,
        last_offline_reason: row.try_get("last_offline_reason")?,
        tags: json(row, "tags")?,
        region: row.try_get("region")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn device_not_found(product_key: &str, device_name: &str) -> StorageError {
    StorageError::NotFound(format!(
        "device '{device_name}' of product '{product_key}' not found"
    ))
}

/// The SQL condition for a console status (see [`DeviceRow::status`]).
fn status_condition(status: DeviceStatus) -> &'static str {
    match status {
        DeviceStatus::Disabled => "enabled = 0",
        DeviceStatus::Inactive => "enabled = 1 AND first_online_at IS NULL",
        DeviceStatus::Online => "enabled = 1 AND first_online_at IS NOT NULL AND online = 1",
        DeviceStatus::Offline => "enabled = 1 AND first_online_at IS NOT NULL AND online = 0",
    }
}

impl Store {
    /// Registers devices in one transaction: all of them or none. `Conflict` names the first
    /// name that already exists (or appears twice); `NotFound` when the product does not exist.
    /// Secrets are given in plain and stored encrypted.
    pub async fn create_devices(
        &self,
        product_key: &str,
        devices: &[(String, String)],
    ) -> Result<Vec<DeviceRow>> {
        if devices.is_empty() {
            return Ok(Vec::new());
        }
        let mut seen = HashSet::with_capacity(devices.len());
        if let Some((name, _)) = devices.iter().find(|(name, _)| !seen.insert(name.as_str())) {
            return Err(StorageError::Conflict(format!(
                "device '{name}' appears more than once in the request"
            )));
        }
        let now = now_ms();
        let sealed = devices
            .iter()
            .map(|(name, secret)| {
                self.secrets()
                    .seal(&device_secret_context(product_key, name), secret)
            })
            .collect::<Result<Vec<_>>>()?;
        let rows: Vec<(&str, &str)> = devices
            .iter()
            .zip(&sealed)
            .map(|((name, _), enc)| (name.as_str(), enc.as_str()))
            .collect();

        let mut tx = self.write().begin().await?;
        let product: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM products WHERE product_key = $1")
                .bind(product_key)
                .fetch_optional(&mut *tx)
                .await?;
        if product.is_none() {
            return Err(StorageError::NotFound(format!(
                "product '{product_key}' not found"
            )));
        }
        for chunk in devices.chunks(NAMES_PER_LOOKUP) {
            let mut sql = Sql::new(
                self.backend(),
                "SELECT device_name FROM devices WHERE product_key = ",
            );
            sql.push_arg(product_key).push(" AND device_name IN (");
            for (i, (name, _)) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.push_arg(name.as_str());
            }
            sql.push(") ORDER BY device_name LIMIT 1");
            let (text, args) = sql.finish()?;
            let taken: Option<String> = sqlx::query_scalar_with(&text, args)
                .persistent(false)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(name) = taken {
                return Err(StorageError::Conflict(format!(
                    "device '{name}' already exists in product '{product_key}'"
                )));
            }
        }
        insert_rows(
            &mut tx,
            self.backend(),
            "INSERT INTO devices (product_key, device_name, secret_enc, tags, created_at, \
             updated_at) VALUES",
            6,
            "",
            &rows,
            |b, (name, enc)| {
                b.bind(product_key)
                    .bind(*name)
                    .bind(*enc)
                    .bind("{}")
                    .bind(now)
                    .bind(now);
            },
        )
        .await
        .map_err(|e| match e {
            StorageError::Database(e) if StorageError::is_unique_violation(&e) => {
                StorageError::Conflict(format!(
                    "one of the devices was registered in product '{product_key}' at the same \
                     time; retry"
                ))
            }
            other => other,
        })?;
        tx.commit().await?;

        Ok(devices
            .iter()
            .map(|(name, _)| DeviceRow {
                product_key: product_key.to_string(),
                device_name: name.clone(),
                nickname: None,
                enabled: true,
                online: false,
                first_online_at: None,
                last_online_at: None,
                last_offline_at: None,
                last_offline_reason: None,
                tags: Value::Object(Map::new()),
                created_at: now,
                updated_at: now,
                region: None,
            })
            .collect())
    }

    /// Where a device belongs: its product's organisation, and its own region or else its
    /// product's. `None` when the device does not exist.
    pub async fn device_scope(
        &self,
        product_key: &str,
        device_name: &str,
    ) -> Result<Option<Scope>> {
        let row = sqlx::query(
            "SELECT p.org AS org, COALESCE(d.region, p.region) AS region FROM devices d \
             JOIN products p ON p.product_key = d.product_key \
             WHERE d.product_key = $1 AND d.device_name = $2",
        )
        .bind(product_key)
        .bind(device_name)
        .fetch_optional(self.read())
        .await?;
        row.map(|r| {
            Ok(Scope {
                org: r.try_get("org")?,
                region: r.try_get("region")?,
            })
        })
        .transpose()
    }

    /// Moves a device to a region (`None`: back to its product's). `NotFound` for an unknown
    /// device.
    pub async fn set_device_region(
        &self,
        product_key: &str,
        device_name: &str,
        region: Option<&str>,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE devices SET region = $1, updated_at = $2 \
             WHERE product_key = $3 AND device_name = $4",
        )
        .bind(region)
        .bind(now_ms())
        .bind(product_key)
        .bind(device_name)
        .execute(self.write())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound(format!(
                "device '{product_key}/{device_name}' not found"
            )));
        }
        Ok(())
    }

    pub async fn get_device(
        &self,
        product_key: &str,
        device_name: &str,
    ) -> Result<Option<DeviceRow>> {
        sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE product_key = $1 AND device_name = $2"
        ))
        .bind(product_key)
        .bind(device_name)
        .fetch_optional(self.read())
        .await?
        .as_ref()
        .map(device_row)
        .transpose()
    }

    /// The device's secret in plain and whether it is enabled. Runs at every CONNECT, so it is
    /// one primary-key lookup.
    pub async fn device_secret(
        &self,
        product_key: &str,
        device_name: &str,
    ) -> Result<Option<(Secret, bool)>> {
        let row = sqlx::query(
            "SELECT secret_enc, enabled FROM devices WHERE product_key = $1 AND device_name = $2",
        )
        .bind(product_key)
        .bind(device_name)
        .fetch_optional(self.read())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let sealed: String = row.try_get("secret_enc")?;
        let secret = self
            .secrets()
            .open(&device_secret_context(product_key, device_name), &sealed)?;
        Ok(Some((secret, flag(&row, "enabled")?)))
    }

    /// One page of the devices that match the filter, oldest first, and how many match.
    pub async fn list_devices(
        &self,
        filter: &DeviceFilter,
        page: Page,
    ) -> Result<(Vec<DeviceRow>, i64)> {
        let status = filter
            .status
            .as_deref()
            .map(|s| {
                DeviceStatus::parse(s).ok_or_else(|| {
                    StorageError::Invalid(format!(
                        "unknown device status '{s}': use online, offline, inactive or disabled"
                    ))
                })
            })
            .transpose()?;
        let (offset, limit) = page_bounds(page);
        // The filter is added to both statements so each gets its own numbered arguments.
        let build = |head: &str| {
            let mut sql = Sql::new(self.backend(), head);
            sql.push(" WHERE 1 = 1");
            if let Some(pk) = &filter.product_key {
                sql.push(" AND product_key = ").push_arg(pk.as_str());
            }
            if let Some(needle) = filter.name_like.as_deref().filter(|n| !n.is_empty()) {
                sql.push(" AND LOWER(device_name) LIKE ")
                    .push_arg(contains_pattern(&needle.to_lowercase()))
                    .push(" ESCAPE '\\'");
            }
            if let Some(status) = status {
                sql.push(" AND ").push(status_condition(status));
            }
            if let Some(region) = &filter.region {
                sql.push(" AND EXISTS (SELECT 1 FROM products p WHERE p.product_key = devices.product_key");
                push_region_condition(&mut sql, "COALESCE(devices.region, p.region)", region);
                sql.push(")");
            }
            if let Some((key, value)) = &filter.tag {
                // Tags are a JSON object in a text column; each database reads one member its
                // own way. The key is bound as an argument (SQLite: inside a quoted JSON path).
                match self.backend() {
                    Backend::Sqlite => sql
                        .push(" AND CAST(json_extract(devices.tags, ")
                        .push_arg(format!("$.\"{}\"", key.replace('"', "")))
                        .push(") AS TEXT) = "),
                    Backend::Postgres => sql
                        .push(" AND (CAST(devices.tags AS jsonb) ->> ")
                        .push_arg(key.clone())
                        .push(") = "),
                };
                sql.push_arg(value.clone());
            }
            if let Some(scope) = &filter.within {
                // A device's region is its own or its product's; the organisation its product's.
                sql.push(" AND EXISTS (SELECT 1 FROM products p WHERE p.product_key = devices.product_key");
                push_scope_condition(
                    &mut sql,
                    "p.org",
                    "COALESCE(devices.region, p.region)",
                    scope,
                );
                sql.push(")");
            }
            sql
        };
        let (text, args) = build("SELECT COUNT(*) FROM devices").finish()?;
        let total: i64 = sqlx::query_scalar_with(&text, args)
            .fetch_one(self.read())
            .await?;
        let mut sql = build(&format!("SELECT {DEVICE_COLUMNS} FROM devices"));
        sql.push(" ORDER BY created_at, product_key, device_name LIMIT ")
            .push_arg(limit)
            .push(" OFFSET ")
            .push_arg(offset);
        let (text, args) = sql.finish()?;
        let rows = sqlx::query_with(&text, args)
            .fetch_all(self.read())
            .await?
            .iter()
            .map(device_row)
            .collect::<Result<_>>()?;
        Ok((rows, total))
    }

    /// Enables or disables a device. Disabling does not disconnect it: the device plane does.
    pub async fn set_device_enabled(
        &self,
        product_key: &str,
        device_name: &str,
        enabled: bool,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE devices SET enabled = $1, updated_at = $2 \
             WHERE product_key = $3 AND device_name = $4",
        )
        .bind(i64::from(enabled))
        .bind(now_ms())
        .bind(product_key)
        .bind(device_name)
        .execute(self.write())
        .await?;
        if done.rows_affected() == 0 {
            return Err(device_not_found(product_key, device_name));
        }
        Ok(())
    }

    /// Sets the nickname (an empty one clears it) and/or replaces the tags (a JSON object).
    pub async fn update_device(
        &self,
        product_key: &str,
        device_name: &str,
        nickname: Option<&str>,
        tags: Option<&Value>,
    ) -> Result<DeviceRow> {
        if tags.is_some_and(|t| !t.is_object()) {
            return Err(StorageError::Invalid(
                "device tags must be a JSON object".into(),
            ));
        }
        let mut sql = Sql::new(self.backend(), "UPDATE devices SET updated_at = ");
        sql.push_arg(now_ms());
        if let Some(nickname) = nickname {
            sql.push(", nickname = ")
                .push_arg((!nickname.is_empty()).then_some(nickname));
        }
        if let Some(tags) = tags {
            sql.push(", tags = ").push_arg(to_json(tags));
        }
        sql.push(" WHERE product_key = ").push_arg(product_key);
        sql.push(" AND device_name = ").push_arg(device_name);
        sql.push(&format!(" RETURNING {DEVICE_COLUMNS}"));
        let (text, args) = sql.finish()?;
        let row = sqlx::query_with(&text, args)
            .fetch_optional(self.write())
            .await?
            .ok_or_else(|| device_not_found(product_key, device_name))?;
        device_row(&row)
    }

    /// Adds or replaces tags (the device's `deviceinfo/update`).
    pub async fn merge_device_tags(
        &self,
        product_key: &str,
        device_name: &str,
        tags: &Map<String, Value>,
    ) -> Result<()> {
        self.change_tags(product_key, device_name, |current| {
            for (k, v) in tags {
                current.insert(k.clone(), v.clone());
            }
        })
        .await
    }

    /// Removes tags by key (the device's `deviceinfo/delete`); unknown keys are ignored.
    pub async fn delete_device_tags(
        &self,
        product_key: &str,
        device_name: &str,
        keys: &[String],
    ) -> Result<()> {
        self.change_tags(product_key, device_name, |current| {
            for k in keys {
                current.shift_remove(k);
            }
        })
        .await
    }

    /// Read-modify-write of the tags with an optimistic check: the update applies only if the
    /// tags are still what was read, so two concurrent changes cannot lose one another, on
    /// either back end and without row locks.
    async fn change_tags(
        &self,
        product_key: &str,
        device_name: &str,
        change: impl Fn(&mut Map<String, Value>),
    ) -> Result<()> {
        for _ in 0..TAG_RETRIES {
            let current: Option<String> = sqlx::query_scalar(
                "SELECT tags FROM devices WHERE product_key = $1 AND device_name = $2",
            )
            .bind(product_key)
            .bind(device_name)
            .fetch_optional(self.write())
            .await?;
            let Some(current) = current else {
                return Err(device_not_found(product_key, device_name));
            };
            let mut tags: Map<String, Value> = serde_json::from_str(&current).map_err(|e| {
                StorageError::Corrupt(format!("tags of device '{device_name}': {e}"))
            })?;
            change(&mut tags);
            let done = sqlx::query(
                "UPDATE devices SET tags = $1, updated_at = $2 \
                 WHERE product_key = $3 AND device_name = $4 AND tags = $5",
            )
            .bind(to_json(&tags))
            .bind(now_ms())
            .bind(product_key)
            .bind(device_name)
            .bind(current)
            .execute(self.write())
            .await?;
            if done.rows_affected() == 1 {
                return Ok(());
            }
        }
        Err(StorageError::Conflict(format!(
            "the tags of device '{device_name}' are being changed concurrently; retry"
        )))
    }

    /// Deletes a device with its secret, latest property values and shadow. History, events,
    /// status log and downlink records stay for audit.
    pub async fn delete_device(&self, product_key: &str, device_name: &str) -> Result<()> {
        let mut tx = self.write().begin().await?;
        let done = sqlx::query("DELETE FROM devices WHERE product_key = $1 AND device_name = $2")
            .bind(product_key)
            .bind(device_name)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(device_not_found(product_key, device_name));
        }
        for table in ["property_latest", "shadows"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE product_key = $1 AND device_name = $2"
            ))
            .bind(product_key)
            .bind(device_name)
            .execute(&mut *tx)
            .await?;
        }
        // Its place in a topology, as a sub-device or as a gateway.
        sqlx::query(
            "DELETE FROM device_topology WHERE (product_key = $1 AND device_name = $2)              OR (gateway_product_key = $1 AND gateway_device_name = $2)",
        )
        .bind(product_key)
        .bind(device_name)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a connect (`online`) or disconnect with its reason: updates the device's status
    /// columns and appends to its status log, atomically. A device that no longer exists only
    /// gets the log entry, so a disconnect racing a deletion is not an error.
    pub async fn record_status(
        &self,
        product_key: &str,
        device_name: &str,
        online: bool,
        reason: &str,
        at: i64,
    ) -> Result<()> {
        let mut tx = self.write().begin().await?;
        let update = if online {
            sqlx::query(
                "UPDATE devices SET online = 1, first_online_at = COALESCE(first_online_at, $1), \
                 last_online_at = $1, updated_at = $1 \
                 WHERE product_key = $2 AND device_name = $3",
            )
            .bind(at)
            .bind(product_key)
            .bind(device_name)
        } else {
            sqlx::query(
                "UPDATE devices SET online = 0, last_offline_at = $1, last_offline_reason = $2, \
                 updated_at = $1 WHERE product_key = $3 AND device_name = $4",
            )
            .bind(at)
            .bind(reason)
            .bind(product_key)
            .bind(device_name)
        };
        update.execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO device_status_log (product_key, device_name, online, reason, at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(product_key)
        .bind(device_name)
        .bind(i64::from(online))
        .bind(reason)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The device's latest connects and disconnects, newest first.
    pub async fn status_log(
        &self,
        product_key: &str,
        device_name: &str,
        limit: i64,
    ) -> Result<Vec<StatusRow>> {
        sqlx::query(
            "SELECT online, reason, at FROM device_status_log \
             WHERE product_key = $1 AND device_name = $2 ORDER BY at DESC, id DESC LIMIT $3",
        )
        .bind(product_key)
        .bind(device_name)
        .bind(limit.max(0))
        .fetch_all(self.read())
        .await?
        .iter()
        .map(|row| {
            Ok(StatusRow {
                online: flag(row, "online")?,
                reason: row.try_get("reason")?,
                at: row.try_get("at")?,
            })
        })
        .collect()
    }

    /// Marks every device still recorded as online as offline, with a log entry each. Run at
    /// node start: devices left online by a crash or kill have no connection any more.
    pub async fn mark_all_offline(&self, reason: &str, at: i64) -> Result<u64> {
        let mut tx = self.write().begin().await?;
        sqlx::query(
            "INSERT INTO device_status_log (product_key, device_name, online, reason, at) \
             SELECT product_key, device_name, 0, $1, $2 FROM devices WHERE online = 1",
        )
        .bind(reason)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query(
            "UPDATE devices SET online = 0, last_offline_at = $1, last_offline_reason = $2, \
             updated_at = $1 WHERE online = 1",
        )
        .bind(at)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }
}
