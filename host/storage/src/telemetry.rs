//! Telemetry: property values (latest and history) and device events.
//!
//! `write_batch` is the hot path: the telemetry writer calls it once per group commit and
//! acknowledges the PUBLISHes it holds only after it returns, so it is one transaction of a
//! few multi-row statements whatever the batch size.

use std::collections::HashMap;

use serde_json::Value;
use sqlx::Row;

use crate::error::{Result, StorageError};
use crate::sql::{RowBinder, insert_rows, json, to_json};
use crate::{Aggregation, EventRecord, PropertyRecord, Store, TelemetryBatch};

/// `ts` rounded down to a multiple of the interval (`$4`), also for times before 1970: both
/// back ends truncate integer division and `%` towards zero, so the remainder is made
/// non-negative first.
const BUCKET: &str = "ts - (((ts % $4) + $4) % $4)";

const SERIES: &str =
    "product_key = $1 AND device_name = $2 AND identifier = $3 AND ts >= $5 AND ts <= $6";

impl Store {
    /// Stores one group commit in a single transaction: every property goes to the history and,
    /// unless a newer value is already stored, to the latest values; every event to the event
    /// log.
    pub async fn write_batch(&self, batch: &TelemetryBatch) -> Result<()> {
        if batch.properties.is_empty() && batch.events.is_empty() {
            return Ok(());
        }
        // Each value is serialised once, for both the history and the latest values.
        let properties: Vec<(&PropertyRecord, String)> = batch
            .properties
            .iter()
            .map(|p| (p, to_json(&p.value)))
            .collect();
        let latest = newest_per_property(&properties);
        let events: Vec<(&EventRecord, String)> = batch
            .events
            .iter()
            .map(|e| (e, to_json(&e.params)))
            .collect();

        let mut tx = self.write().begin().await?;
        insert_rows(
            &mut tx,
            self.backend(),
            "INSERT INTO property_history (product_key, device_name, identifier, ts, value, num) \
             VALUES",
            6,
            "",
            &properties,
            |b, row| bind_property(b, row),
        )
        .await?;
        // Several rows of one statement must not hit the same key (PostgreSQL refuses to update
        // a row twice in one statement), hence `newest_per_property`; `ts >=` keeps a late,
        // older value from overwriting a newer one.
        insert_rows(
            &mut tx,
            self.backend(),
            "INSERT INTO property_latest (product_key, device_name, identifier, ts, value, num) \
             VALUES",
            6,
            "ON CONFLICT (product_key, device_name, identifier) DO UPDATE SET \
             ts = excluded.ts, value = excluded.value, num = excluded.num \
             WHERE excluded.ts >= property_latest.ts",
            &latest,
            |b, row| bind_property(b, row),
        )
        .await?;
        insert_rows(
            &mut tx,
            self.backend(),
            "INSERT INTO device_events (product_key, device_name, identifier, event_type, ts, \
             params) VALUES",
            6,
            "",
            &events,
            |b, (e, params)| {
                b.bind(e.product_key.as_str())
                    .bind(e.device_name.as_str())
                    .bind(e.identifier.as_str())
                    .bind(e.event_type.as_str())
                    .bind(e.ts)
                    .bind(params.as_str());
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The latest value of every property the device reported: (identifier, value, time).
    pub async fn latest_properties(
        &self,
        product_key: &str,
        device_name: &str,
    ) -> Result<Vec<(String, Value, i64)>> {
        sqlx::query(
            "SELECT identifier, value, ts FROM property_latest \
             WHERE product_key = $1 AND device_name = $2 ORDER BY identifier",
        )
        .bind(product_key)
        .bind(device_name)
        .fetch_all(self.read())
        .await?
        .iter()
        .map(|row| {
            Ok((
                row.try_get("identifier")?,
                json(row, "value")?,
                row.try_get("ts")?,
            ))
        })
        .collect()
    }

    /// Raw points of one property with `from <= time <= to`, oldest first, at most `limit`.
    pub async fn property_history(
        &self,
        product_key: &str,
        device_name: &str,
        identifier: &str,
        from: i64,
        to: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Value)>> {
        sqlx::query(
            "SELECT ts, value FROM property_history \
             WHERE product_key = $1 AND device_name = $2 AND identifier = $3 \
             AND ts >= $4 AND ts <= $5 ORDER BY ts LIMIT $6",
        )
        .bind(product_key)
        .bind(device_name)
        .bind(identifier)
        .bind(from)
        .bind(to)
        .bind(limit.max(0))
        .fetch_all(self.read())
        .await?
        .iter()
        .map(|row| Ok((row.try_get("ts")?, json(row, "value")?)))
        .collect()
    }

    /// One property folded into buckets of `interval_ms` (aligned to the Unix epoch) over
    /// `from <= time <= to`: (bucket start, value), oldest first, empty buckets left out.
    ///
    /// `avg`, `min` and `max` use the numeric points only and give a number, or null when a
    /// bucket has none; `count` counts every point; `last` gives the newest point's value
    /// whatever its type. The bucketing runs in SQL so only the buckets cross the wire.
    #[allow(clippy::too_many_arguments)]
    pub async fn property_aggregate(
        &self,
        product_key: &str,
        device_name: &str,
        identifier: &str,
        from: i64,
        to: i64,
        interval_ms: i64,
        agg: Aggregation,
    ) -> Result<Vec<(i64, Value)>> {
        if interval_ms <= 0 {
            return Err(StorageError::Invalid(
                "the aggregation interval must be positive".into(),
            ));
        }
        let fold = match agg {
            Aggregation::Avg => "AVG(num)",
            Aggregation::Min => "MIN(num)",
            Aggregation::Max => "MAX(num)",
            Aggregation::Count => "COUNT(*)",
            Aggregation::Last => {
                return self
                    .property_last_per_bucket(
                        product_key,
                        device_name,
                        identifier,
                        from,
                        to,
                        interval_ms,
                    )
                    .await;
            }
        };
        let sql = format!(
            "SELECT {BUCKET} AS bucket, {fold} AS v FROM property_history WHERE {SERIES} \
             GROUP BY bucket ORDER BY bucket"
        );
        let rows = sqlx::query(&sql)
            .bind(product_key)
            .bind(device_name)
            .bind(identifier)
            .bind(interval_ms)
            .bind(from)
            .bind(to)
            .fetch_all(self.read())
            .await?;
        rows.iter()
            .map(|row| {
                let value = if agg == Aggregation::Count {
                    Value::from(row.try_get::<i64, _>("v")?)
                } else {
                    row.try_get::<Option<f64>, _>("v")?
                        .and_then(serde_json::Number::from_f64)
                        .map_or(Value::Null, Value::Number)
                };
                Ok((row.try_get("bucket")?, value))
            })
            .collect()
    }

    /// The `last` aggregation: the newest point of each bucket, picked with a window function
    /// (both SQLite and PostgreSQL have `ROW_NUMBER`).
    async fn property_last_per_bucket(
        &self,
        product_key: &str,
        device_name: &str,
        identifier: &str,
        from: i64,
        to: i64,
        interval_ms: i64,
    ) -> Result<Vec<(i64, Value)>> {
        let sql = format!(
            "SELECT bucket, value FROM ( \
               SELECT bucket, value, \
                 ROW_NUMBER() OVER (PARTITION BY bucket ORDER BY ts DESC) AS rn \
               FROM (SELECT {BUCKET} AS bucket, ts, value FROM property_history \
                     WHERE {SERIES}) AS points \
             ) AS ranked WHERE rn = 1 ORDER BY bucket"
        );
        sqlx::query(&sql)
            .bind(product_key)
            .bind(device_name)
            .bind(identifier)
            .bind(interval_ms)
            .bind(from)
            .bind(to)
            .fetch_all(self.read())
            .await?
            .iter()
            .map(|row| Ok((row.try_get("bucket")?, json(row, "value")?)))
            .collect()
    }

    /// The device's events with `from <= time <= to`, newest first, optionally of one
    /// identifier only.
    pub async fn device_events(
        &self,
        product_key: &str,
        device_name: &str,
        from: i64,
        to: i64,
        identifier: Option<&str>,
        limit: i64,
    ) -> Result<Vec<EventRecord>> {
        let query = match identifier {
            Some(identifier) => sqlx::query(
                "SELECT product_key, device_name, identifier, event_type, params, ts \
                 FROM device_events WHERE product_key = $1 AND device_name = $2 \
                 AND ts >= $3 AND ts <= $4 AND identifier = $6 \
                 ORDER BY ts DESC LIMIT $5",
            )
            .bind(product_key)
            .bind(device_name)
            .bind(from)
            .bind(to)
            .bind(limit.max(0))
            .bind(identifier),
            None => sqlx::query(
                "SELECT product_key, device_name, identifier, event_type, params, ts \
                 FROM device_events WHERE product_key = $1 AND device_name = $2 \
                 AND ts >= $3 AND ts <= $4 ORDER BY ts DESC LIMIT $5",
            )
            .bind(product_key)
            .bind(device_name)
            .bind(from)
            .bind(to)
            .bind(limit.max(0)),
        };
        query
            .fetch_all(self.read())
            .await?
            .iter()
            .map(|row| {
                Ok(EventRecord {
                    product_key: row.try_get("product_key")?,
                    device_name: row.try_get("device_name")?,
                    identifier: row.try_get("identifier")?,
                    event_type: row.try_get("event_type")?,
                    params: json(row, "params")?,
                    ts: row.try_get("ts")?,
                })
            })
            .collect()
    }
}

/// For each (product, device, property) the record with the newest time (the later one in the
/// batch on a tie), with its JSON text, sorted by key so that concurrent batches take row locks
/// in the same order and cannot deadlock.
fn newest_per_property<'a>(
    properties: &'a [(&'a PropertyRecord, String)],
) -> Vec<&'a (&'a PropertyRecord, String)> {
    let mut newest: HashMap<(&str, &str, &str), &(&PropertyRecord, String)> =
        HashMap::with_capacity(properties.len());
    for row in properties {
        let p = row.0;
        let key = (
            p.product_key.as_str(),
            p.device_name.as_str(),
            p.identifier.as_str(),
        );
        match newest.get(&key) {
            Some(kept) if kept.0.ts > p.ts => {}
            _ => {
                newest.insert(key, row);
            }
        }
    }
    let mut out: Vec<_> = newest.into_iter().collect();
    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    out.into_iter().map(|(_, row)| row).collect()
}

/// One row of `property_history` or `property_latest` (the same six columns).
fn bind_property<'r>(b: &mut RowBinder<'_, 'r>, (p, value): &'r (&'r PropertyRecord, String)) {
    b.bind(p.product_key.as_str())
        .bind(p.device_name.as_str())
        .bind(p.identifier.as_str())
        .bind(p.ts)
        .bind(value.as_str())
        .bind(p.num);
}
