//! Gateway topology: which gateway each sub-device is attached to.

use sqlx::Row;

use crate::{Result, Store};

/// A sub-device and the gateway it is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyLink {
    pub product_key: String,
    pub device_name: String,
    pub gateway_product_key: String,
    pub gateway_device_name: String,
    pub created_at: i64,
}

fn link(row: &sqlx::any::AnyRow) -> Result<TopologyLink> {
    Ok(TopologyLink {
        product_key: row.try_get("product_key")?,
        device_name: row.try_get("device_name")?,
        gateway_product_key: row.try_get("gateway_product_key")?,
        gateway_device_name: row.try_get("gateway_device_name")?,
        created_at: row.try_get("created_at")?,
    })
}

const SELECT: &str = "SELECT product_key, device_name, gateway_product_key, gateway_device_name, \
                      created_at FROM device_topology";

impl Store {
    /// Attaches a sub-device to a gateway, moving it if it was attached to another one.
    /// Returns the gateway it was attached to before, if that was a different one.
    pub async fn attach_sub_device(
        &self,
        (pk, dn): (&str, &str),
        (gateway_pk, gateway_dn): (&str, &str),
        now: i64,
    ) -> Result<Option<(String, String)>> {
        let mut tx = self.write().begin().await?;
        let before: Option<(String, String)> = sqlx::query(
            "SELECT gateway_product_key, gateway_device_name FROM device_topology \
             WHERE product_key = $1 AND device_name = $2",
        )
        .bind(pk)
        .bind(dn)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
        .transpose()?;
        sqlx::query(
            "INSERT INTO device_topology (product_key, device_name, gateway_product_key, \
             gateway_device_name, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (product_key, device_name) DO UPDATE SET \
             gateway_product_key = excluded.gateway_product_key, \
             gateway_device_name = excluded.gateway_device_name, created_at = excluded.created_at",
        )
        .bind(pk)
        .bind(dn)
        .bind(gateway_pk)
        .bind(gateway_dn)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(before.filter(|(p, d)| p != gateway_pk || d != gateway_dn))
    }

    /// Detaches a sub-device from this gateway; false when it was not attached to it.
    pub async fn detach_sub_device(
        &self,
        (pk, dn): (&str, &str),
        (gateway_pk, gateway_dn): (&str, &str),
    ) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM device_topology WHERE product_key = $1 AND device_name = $2 \
             AND gateway_product_key = $3 AND gateway_device_name = $4",
        )
        .bind(pk)
        .bind(dn)
        .bind(gateway_pk)
        .bind(gateway_dn)
        .execute(self.write())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The sub-devices of a gateway, oldest first.
    pub async fn sub_devices(
        &self,
        gateway_pk: &str,
        gateway_dn: &str,
    ) -> Result<Vec<TopologyLink>> {
        let rows = sqlx::query(&format!(
            "{SELECT} WHERE gateway_product_key = $1 AND gateway_device_name = $2 \
             ORDER BY created_at, product_key, device_name"
        ))
        .bind(gateway_pk)
        .bind(gateway_dn)
        .fetch_all(self.read())
        .await?;
        rows.iter().map(link).collect()
    }

    /// Every link, to build the in-memory topology at start.
    pub async fn all_topology(&self) -> Result<Vec<TopologyLink>> {
        let rows = sqlx::query(SELECT).fetch_all(self.read()).await?;
        rows.iter().map(link).collect()
    }
}
