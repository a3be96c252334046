//! Device shadows, with optimistic concurrency on their version.

use sqlx::Row;

use crate::error::Result;
use crate::sql::{json, to_json};
use crate::{ShadowRow, Store};

impl Store {
    pub async fn get_shadow(
        &self,
        product_key: &str,
        device_name: &str,
    ) -> Result<Option<ShadowRow>> {
        sqlx::query(
            "SELECT desired, reported, version, desired_updated_at, reported_updated_at, \
             updated_at FROM shadows WHERE product_key = $1 AND device_name = $2",
        )
        .bind(product_key)
        .bind(device_name)
        .fetch_optional(self.read())
        .await?
        .map(|row| {
            Ok(ShadowRow {
                desired: json(&row, "desired")?,
                reported: json(&row, "reported")?,
                version: row.try_get("version")?,
                desired_updated_at: row.try_get("desired_updated_at")?,
                reported_updated_at: row.try_get("reported_updated_at")?,
                updated_at: row.try_get("updated_at")?,
            })
        })
        .transpose()
    }

    /// Stores a shadow if nobody changed it since it was read. `expected_version` is the
    /// version that was read, or `None` when there was no shadow yet. Returns `false` on a
    /// version conflict (the caller re-reads and retries, or reports the conflict); the row's
    /// own `version` is stored as given.
    pub async fn put_shadow(
        &self,
        product_key: &str,
        device_name: &str,
        row: &ShadowRow,
        expected_version: Option<i64>,
    ) -> Result<bool> {
        let done = match expected_version {
            None => sqlx::query(
                "INSERT INTO shadows (product_key, device_name, desired, reported, version, \
                 desired_updated_at, reported_updated_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (product_key, device_name) DO NOTHING",
            ),
            Some(_) => sqlx::query(
                "UPDATE shadows SET desired = $3, reported = $4, version = $5, \
                 desired_updated_at = $6, reported_updated_at = $7, updated_at = $8 \
                 WHERE product_key = $1 AND device_name = $2 AND version = $9",
            ),
        }
        .bind(product_key)
        .bind(device_name)
        .bind(to_json(&row.desired))
        .bind(to_json(&row.reported))
        .bind(row.version)
        .bind(row.desired_updated_at)
        .bind(row.reported_updated_at)
        .bind(row.updated_at);
        let done = match expected_version {
            Some(v) => done.bind(v),
            None => done,
        }
        .execute(self.write())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
