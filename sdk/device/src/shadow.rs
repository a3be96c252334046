//! Device shadow messages (Alibaba's format): `update`/`get` up on `/shadow/update/{pk}/{dn}`,
//! `reply` and `control` down on `/shadow/get/{pk}/{dn}`.

use serde_json::{Value, json};

use crate::error::Error;

/// The shadow as the platform holds it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ShadowState {
    pub desired: Value,
    pub reported: Value,
    /// Desired values that differ from the reported ones: what the device should apply.
    pub delta: Value,
    pub version: i64,
}

/// What the delta callback receives when an operator sets desired values.
pub type ShadowDelta = ShadowState;

impl ShadowState {
    fn from_payload(v: &Value) -> Self {
        let state = &v["payload"]["state"];
        let obj = |x: &Value| {
            if x.is_object() { x.clone() } else { json!({}) }
        };
        ShadowState {
            desired: obj(&state["desired"]),
            reported: obj(&state["reported"]),
            delta: obj(&state["delta"]),
            version: v["version"].as_i64().unwrap_or(0),
        }
    }

    /// Reads a `control` message.
    pub(crate) fn from_control(v: &Value) -> Self {
        Self::from_payload(v)
    }
}

pub(crate) fn get_request() -> Vec<u8> {
    json!({"method": "get"}).to_string().into_bytes()
}

pub(crate) fn update_request(reported: &Value, version: i64) -> Vec<u8> {
    json!({"method": "update", "state": {"reported": reported}, "version": version})
        .to_string()
        .into_bytes()
}

/// An error reply as a typed error: `{"payload":{"status":"error","content":{"errorcode","errormessage"}}}`.
fn check(v: &Value) -> Result<(), Error> {
    if v["payload"]["status"] == "error" {
        let content = &v["payload"]["content"];
        let code = match &content["errorcode"] {
            Value::String(s) => s.parse().unwrap_or(500),
            Value::Number(n) => n.as_i64().unwrap_or(500),
            _ => 500,
        };
        return Err(Error::Rejected {
            code,
            message: content["errormessage"]
                .as_str()
                .unwrap_or("shadow request refused")
                .to_string(),
        });
    }
    Ok(())
}

/// Reads the reply to `get`.
pub(crate) fn parse_get_reply(bytes: &[u8]) -> Result<ShadowState, Error> {
    let v: Value = serde_json::from_slice(bytes)?;
    check(&v)?;
    Ok(ShadowState::from_payload(&v))
}

/// Reads the reply to `update`: the shadow's new version.
pub(crate) fn parse_update_reply(bytes: &[u8]) -> Result<i64, Error> {
    let v: Value = serde_json::from_slice(bytes)?;
    check(&v)?;
    Ok(v["payload"]["version"]
        .as_i64()
        .or_else(|| v["version"].as_i64())
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_platform_messages() {
        let control = json!({"method": "control", "payload": {"status": "success",
            "state": {"desired": {"B": 80}, "reported": {"B": 10}, "delta": {"B": 80}}}, "version": 4});
        let d = ShadowState::from_control(&control);
        assert_eq!(d.delta, json!({"B": 80}));
        assert_eq!(d.version, 4);
        let err = json!({"method": "reply", "payload": {"status": "error",
            "content": {"errorcode": "409", "errormessage": "old version"}}});
        let e = parse_update_reply(err.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.code(), Some(409));
        let ok = json!({"method": "reply", "payload": {"status": "success", "version": 7}});
        assert_eq!(parse_update_reply(ok.to_string().as_bytes()).unwrap(), 7);
    }
}
