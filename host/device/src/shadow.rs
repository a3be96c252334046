//! Device shadows: the platform's desired state and the device's reported state, versioned.
//!
//! Messages follow Alibaba's shadow format: devices publish `{"method":"update"|"get"|"delete",
//! "state":{…},"version":N}` on `/shadow/update/{pk}/{dn}` and receive replies and `control`
//! messages on `/shadow/get/{pk}/{dn}`. The *delta* is every desired key whose value differs
//! from the reported one; a device that reconnects or asks with `get` receives it.

use std::sync::Arc;

use lotus_bus::{DeviceEvent, Envelope};
use lotus_model::alink::downlink_topic;
use lotus_model::authz::DeviceId;
use lotus_mqtt::{PublishVerdict, QoS};
use lotus_storage::ShadowRow;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::uplink::Answer;
use crate::{DevicePlane, PlaneError};

/// A shadow as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShadowView {
    pub desired: Value,
    pub reported: Value,
    pub delta: Value,
    pub version: i64,
    pub desired_updated_at: Option<i64>,
    pub reported_updated_at: Option<i64>,
    pub updated_at: i64,
}

fn empty_row() -> ShadowRow {
    ShadowRow {
        desired: json!({}),
        reported: json!({}),
        version: 0,
        desired_updated_at: None,
        reported_updated_at: None,
        updated_at: 0,
    }
}

/// Desired keys whose value differs from the reported one.
pub fn delta(desired: &Value, reported: &Value) -> Value {
    let mut out = Map::new();
    if let Some(d) = desired.as_object() {
        for (k, v) in d {
            if reported.get(k) != Some(v) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// Applies an update: keys set to JSON null or the string "null" are removed.
fn merge(target: &mut Value, changes: &Map<String, Value>) {
    if !target.is_object() {
        *target = json!({});
    }
    let obj = target.as_object_mut().expect("made an object above");
    for (k, v) in changes {
        if v.is_null() || v.as_str() == Some("null") {
            obj.remove(k);
        } else {
            obj.insert(k.clone(), v.clone());
        }
    }
}

fn view(row: &ShadowRow) -> ShadowView {
    ShadowView {
        delta: delta(&row.desired, &row.reported),
        desired: row.desired.clone(),
        reported: row.reported.clone(),
        version: row.version,
        desired_updated_at: row.desired_updated_at,
        reported_updated_at: row.reported_updated_at,
        updated_at: row.updated_at,
    }
}

fn error_reply(code: u16, message: &str) -> Value {
    json!({
        "method": "reply",
        "payload": {"status": "error", "content": {"errorcode": code.to_string(), "errormessage": message}},
        "timestamp": crate::now_ms() / 1000,
    })
}

impl DevicePlane {
    pub async fn shadow(&self, device: &DeviceId) -> Result<ShadowView, PlaneError> {
        let row = self
            .store
            .get_shadow(&device.product_key, &device.device_name)
            .await?
            .unwrap_or_else(empty_row);
        Ok(view(&row))
    }

    /// The platform sets desired values (API, rules). `expected_version`, when given, must
    /// match the current version (optimistic concurrency for concurrent operators).
    pub async fn update_desired(
        &self,
        device: &DeviceId,
        desired: &Map<String, Value>,
        expected_version: Option<i64>,
    ) -> Result<ShadowView, PlaneError> {
        if self
            .store
            .get_device(&device.product_key, &device.device_name)
            .await?
            .is_none()
        {
            return Err(PlaneError::NotFound(format!("device '{device}' not found")));
        }
        let row = self
            .change_shadow(device, |row, now| {
                if let Some(v) = expected_version
                    && v != row.version
                {
                    return Err(format!(
                        "version conflict: the shadow is at version {}, not {v}",
                        row.version
                    ));
                }
                merge(&mut row.desired, desired);
                row.version += 1;
                row.desired_updated_at = Some(now);
                Ok(())
            })
            .await
            .map_err(|refusal| match refusal {
                ShadowRefusal::Storage(e) => PlaneError::Storage(e),
                ShadowRefusal::Conflict(m) => PlaneError::Invalid(m),
            })?;
        if self.is_online(device) {
            self.send_control(device, &row).await;
        }
        Ok(view(&row))
    }

    /// Reads the shadow, lets `change` modify it (or refuse with a reason), and writes it back
    /// only if nobody changed it meanwhile, retrying a few times against concurrent writers.
    /// The stored result is announced on the bus.
    async fn change_shadow(
        &self,
        device: &DeviceId,
        mut change: impl FnMut(&mut ShadowRow, i64) -> Result<(), String>,
    ) -> Result<ShadowRow, ShadowRefusal> {
        let (pk, dn) = (&*device.product_key, &*device.device_name);
        for _ in 0..5 {
            let current = self.store.get_shadow(pk, dn).await?;
            let exists = current.is_some();
            let mut row = current.unwrap_or_else(empty_row);
            let previous = row.version;
            let now = crate::now_ms();
            change(&mut row, now).map_err(ShadowRefusal::Conflict)?;
            row.updated_at = now;
            if self
                .store
                .put_shadow(pk, dn, &row, exists.then_some(previous))
                .await?
            {
                self.announce_shadow(device, &row);
                return Ok(row);
            }
        }
        Err(ShadowRefusal::Conflict(
            "the shadow is changing too fast; retry".into(),
        ))
    }

    fn announce_shadow(&self, device: &DeviceId, row: &ShadowRow) {
        self.bus.publish(Envelope::device(
            &device.product_key,
            &device.device_name,
            row.updated_at,
            DeviceEvent::Shadow {
                desired: row.desired.clone(),
                reported: row.reported.clone(),
                version: row.version,
            },
        ));
    }

    async fn send_shadow(&self, device: &DeviceId, body: Value) {
        let topic = downlink_topic::shadow_get(&device.product_key, &device.device_name);
        self.send_to_device(&topic, body.to_string().into(), QoS::AtLeastOnce, "shadow")
            .await;
    }

    async fn send_control(&self, device: &DeviceId, row: &ShadowRow) {
        let body = json!({
            "method": "control",
            "payload": {
                "status": "success",
                "state": {"desired": row.desired, "reported": row.reported, "delta": delta(&row.desired, &row.reported)},
                "metadata": {"desired": {"timestamp": row.desired_updated_at}, "reported": {"timestamp": row.reported_updated_at}},
            },
            "version": row.version,
            "timestamp": row.updated_at / 1000,
        });
        self.send_shadow(device, body).await;
    }

    /// Sends the delta to a device that (re)subscribed to its shadow topic, if there is one.
    pub async fn send_shadow_delta(&self, device: &DeviceId) {
        match self
            .store
            .get_shadow(&device.product_key, &device.device_name)
            .await
        {
            Ok(Some(row))
                if delta(&row.desired, &row.reported)
                    .as_object()
                    .is_some_and(|d| !d.is_empty()) =>
            {
                self.send_control(device, &row).await;
            }
            Ok(_) => {}
            Err(e) => tracing::error!(device = %device, error = %e, "reading the shadow failed"),
        }
    }

    /// A message on `/shadow/update/{pk}/{dn}`.
    pub(crate) async fn shadow_from_device(
        self: &Arc<Self>,
        device: &DeviceId,
        payload: &[u8],
        answer: &Answer,
    ) -> PublishVerdict {
        let topic = downlink_topic::shadow_get(&device.product_key, &device.device_name);
        let send = |body: Value| self.answer(answer, &topic, body, QoS::AtLeastOnce, "shadow");
        let refuse = |m: String| PublishVerdict::Refuse {
            code: 0x99,
            reason: m,
        };
        let msg: Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(e) => {
                let m = format!("shadow message is not JSON: {e}");
                send(error_reply(400, &m)).await;
                return refuse(m);
            }
        };
        let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
        let result = match method {
            "get" => self.shadow_get_for_device(device).await,
            "update" | "delete" => {
                self.shadow_update_from_device(device, &msg, method == "delete")
                    .await
            }
            other => Err((
                400,
                format!("unknown shadow method '{other}': use update, get or delete"),
            )),
        };
        match result {
            Ok(body) => {
                send(body).await;
                PublishVerdict::Route { ack: None }
            }
            Err((code, m)) => {
                send(error_reply(code, &m)).await;
                refuse(m)
            }
        }
    }

    async fn shadow_get_for_device(&self, device: &DeviceId) -> Result<Value, (u16, String)> {
        let row = self
            .store
            .get_shadow(&device.product_key, &device.device_name)
            .await
            .map_err(|e| (500, e.to_string()))?
            .unwrap_or_else(empty_row);
        Ok(json!({
            "method": "reply",
            "payload": {
                "status": "success",
                "state": {"desired": row.desired, "reported": row.reported, "delta": delta(&row.desired, &row.reported)},
                "metadata": {"desired": {"timestamp": row.desired_updated_at}, "reported": {"timestamp": row.reported_updated_at}},
            },
            "version": row.version,
            "timestamp": crate::now_ms() / 1000,
        }))
    }

    async fn shadow_update_from_device(
        &self,
        device: &DeviceId,
        msg: &Value,
        delete: bool,
    ) -> Result<Value, (u16, String)> {
        let state = msg.get("state").cloned().unwrap_or_else(|| json!({}));
        let version = msg.get("version").and_then(Value::as_i64);
        let change = |part: &str, target: &mut Value, stamp: &mut Option<i64>, now: i64| match state
            .get(part)
        {
            Some(Value::String(s)) if s == "null" => {
                *target = json!({});
                *stamp = Some(now);
            }
            Some(Value::Object(m)) => {
                let m: Map<String, Value> = if delete {
                    m.keys().map(|k| (k.clone(), Value::Null)).collect()
                } else {
                    m.clone()
                };
                merge(target, &m);
                *stamp = Some(now);
            }
            _ => {}
        };
        let row = self
            .change_shadow(device, |row, now| {
                if let Some(v) = version
                    && v != -1
                    && v <= row.version
                {
                    return Err(format!(
                        "version conflict: {v} is not newer than the shadow's version {}",
                        row.version
                    ));
                }
                change(
                    "reported",
                    &mut row.reported,
                    &mut row.reported_updated_at,
                    now,
                );
                change(
                    "desired",
                    &mut row.desired,
                    &mut row.desired_updated_at,
                    now,
                );
                row.version = match version {
                    Some(v) if v > row.version => v,
                    _ => row.version + 1,
                };
                Ok(())
            })
            .await
            .map_err(|refusal| match refusal {
                ShadowRefusal::Storage(e) => (500, e.to_string()),
                ShadowRefusal::Conflict(m) => (409, m),
            })?;
        Ok(json!({
            "method": "reply",
            "payload": {"status": "success", "version": row.version},
            "timestamp": row.updated_at / 1000,
        }))
    }
}

/// Why a shadow change was not stored.
enum ShadowRefusal {
    /// Version conflict (or too much contention): the caller should retry with fresh state.
    Conflict(String),
    Storage(lotus_storage::StorageError),
}

impl From<lotus_storage::StorageError> for ShadowRefusal {
    fn from(e: lotus_storage::StorageError) -> Self {
        ShadowRefusal::Storage(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_is_what_differs() {
        let d = json!({"a": 1, "b": 2, "c": 3});
        let r = json!({"a": 1, "b": 5});
        assert_eq!(delta(&d, &r), json!({"b": 2, "c": 3}));
    }

    #[test]
    fn null_removes() {
        let mut t = json!({"a": 1, "b": 2});
        let m: Map<String, Value> = serde_json::from_value(json!({"a": "null", "c": 3})).unwrap();
        merge(&mut t, &m);
        assert_eq!(t, json!({"b": 2, "c": 3}));
    }
}
