//! Downlink messages (property sets, service calls) and the devices' replies to them, kept so
//! that an asynchronous call's outcome can be looked up by its message id.

use serde_json::Value;
use sqlx::Row;

use crate::error::{Result, StorageError};
use crate::sql::{json, json_opt, to_json};
use crate::{DownlinkRow, Store};

impl Store {
    /// Records a request sent to a device; `Conflict` when the message id is already used.
    pub async fn insert_downlink(&self, m: &DownlinkRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO downlinks (product_key, device_name, message_id, method, params, \
             status, reply_code, reply_data, reply_message, created_at, replied_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&m.product_key)
        .bind(&m.device_name)
        .bind(&m.message_id)
        .bind(&m.method)
        .bind(to_json(&m.params))
        .bind(&m.status)
        .bind(m.reply_code)
        .bind(m.reply_data.as_ref().map(to_json))
        .bind(m.reply_message.as_deref())
        .bind(m.created_at)
        .bind(m.replied_at)
        .execute(self.write())
        .await
        .map_err(|e| {
            if StorageError::is_unique_violation(&e) {
                StorageError::Conflict(format!(
                    "message '{}' of device '{}' already exists",
                    m.message_id, m.device_name
                ))
            } else {
                e.into()
            }
        })?;
        Ok(())
    }

    /// Records the outcome of a request: the device's reply (`code` is set), a timeout or a
    /// failure to deliver. The first device reply is final: a timeout recorded after it, or a
    /// duplicate reply, changes nothing, while a reply that arrives after its timeout was
    /// recorded still replaces it. Returns `false` when nothing was changed (unknown message,
    /// or already answered).
    #[allow(clippy::too_many_arguments)]
    pub async fn complete_downlink(
        &self,
        product_key: &str,
        device_name: &str,
        message_id: &str,
        status: &str,
        code: Option<i64>,
        data: Option<&Value>,
        message: Option<&str>,
        at: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE downlinks SET status = $1, reply_code = $2, reply_data = $3, \
             reply_message = $4, replied_at = $5 \
             WHERE product_key = $6 AND device_name = $7 AND message_id = $8 \
             AND reply_code IS NULL",
        )
        .bind(status)
        .bind(code)
        .bind(data.map(to_json))
        .bind(message)
        .bind(at)
        .bind(product_key)
        .bind(device_name)
        .bind(message_id)
        .execute(self.write())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn get_downlink(
        &self,
        product_key: &str,
        device_name: &str,
        message_id: &str,
    ) -> Result<Option<DownlinkRow>> {
        sqlx::query(
            "SELECT product_key, device_name, message_id, method, params, status, reply_code, \
             reply_data, reply_message, created_at, replied_at FROM downlinks \
             WHERE product_key = $1 AND device_name = $2 AND message_id = $3",
        )
        .bind(product_key)
        .bind(device_name)
        .bind(message_id)
        .fetch_optional(self.read())
        .await?
        .map(|row| {
            Ok(DownlinkRow {
                message_id: row.try_get("message_id")?,
                product_key: row.try_get("product_key")?,
                device_name: row.try_get("device_name")?,
                method: row.try_get("method")?,
                params: json(&row, "params")?,
                status: row.try_get("status")?,
                reply_code: row.try_get("reply_code")?,
                reply_data: json_opt(&row, "reply_data")?,
                reply_message: row.try_get("reply_message")?,
                created_at: row.try_get("created_at")?,
                replied_at: row.try_get("replied_at")?,
            })
        })
        .transpose()
    }
}
