//! Platform settings as keys and values (the portal's style, …). Values are text the caller
//! gives meaning to; a key that was never set, or was reset, has no row, so the caller's
//! default applies and a changed default reaches every node that kept it.

use std::collections::BTreeMap;

use sqlx::Row;

use crate::error::Result;
use crate::{Store, now_ms};

impl Store {
    /// The settings whose keys start with `prefix` (`style.` gives the whole style at once).
    pub async fn settings(&self, prefix: &str) -> Result<BTreeMap<String, String>> {
        // Not LIKE, where '_' and '%' in a prefix would be wildcards; the length is a literal
        // because PostgreSQL has no substr over the BIGINT a bound integer would be.
        let rows = sqlx::query(&format!(
            "SELECT key, value FROM settings WHERE substr(key, 1, {}) = $1",
            prefix.chars().count()
        ))
        .bind(prefix)
        .fetch_all(self.read())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("key")?, r.try_get("value")?)))
            .collect()
    }

    /// Sets (`Some`) or resets (`None`) several settings together: readers see all of the
    /// changes or none of them.
    pub async fn put_settings(&self, changes: &[(&str, Option<&str>)], by: &str) -> Result<()> {
        let now = now_ms();
        let mut tx = self.write().begin().await?;
        for (key, value) in changes {
            match value {
                Some(v) => {
                    sqlx::query(
                        "INSERT INTO settings (key, value, updated_at, updated_by) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO UPDATE SET \
                         value = excluded.value, updated_at = excluded.updated_at, \
                         updated_by = excluded.updated_by",
                    )
                    .bind(*key)
                    .bind(*v)
                    .bind(now)
                    .bind(by)
                    .execute(&mut *tx)
                    .await?;
                }
                None => {
                    sqlx::query("DELETE FROM settings WHERE key = $1")
                        .bind(*key)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }
}
