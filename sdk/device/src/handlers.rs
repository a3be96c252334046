//! Typed handlers for downlink requests and the replies the SDK sends for them.
//!
//! Handlers are plain closures; they run on Tokio's blocking pool so that one that talks to
//! slow hardware never stalls the connection (keep-alives, other requests).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use lotus_model::alink::{Reply, Request, code};
use parking_lot::RwLock;
use serde_json::{Value, json};

use crate::shadow::ShadowDelta;
use crate::topics::Topics;

/// What a service or property-set handler returns: output data, or an Alink error code and a
/// message for the caller (e.g. `(460, "DelaySeconds must be ≤ 60".into())`).
pub type HandlerResult = Result<Value, (i64, String)>;

pub(crate) type ParamsHandler = Arc<dyn Fn(Value) -> HandlerResult + Send + Sync>;
pub(crate) type RawHandler = Arc<dyn Fn(Vec<u8>) -> Option<Vec<u8>> + Send + Sync>;
pub(crate) type RrpcHandler = Arc<dyn Fn(String, Vec<u8>) -> Vec<u8> + Send + Sync>;
pub(crate) type DeltaHandler = Arc<dyn Fn(ShadowDelta) + Send + Sync>;

#[derive(Default)]
pub(crate) struct Handlers {
    pub property_set: RwLock<Option<ParamsHandler>>,
    pub services: RwLock<HashMap<String, ParamsHandler>>,
    pub raw_down: RwLock<Option<RawHandler>>,
    pub rrpc: RwLock<Option<RrpcHandler>>,
    pub shadow_delta: RwLock<Option<DeltaHandler>>,
    /// Newest shadow version seen, so that a report is always newer than the platform's.
    pub shadow_version: AtomicI64,
}

impl Handlers {
    pub fn note_shadow_version(&self, version: i64) {
        self.shadow_version.fetch_max(version, Ordering::SeqCst);
    }
}

/// A message to send in answer to a downlink.
pub(crate) struct Outgoing {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Runs the matching handler and builds the reply to send, if any.
pub(crate) type Answer = Box<dyn FnOnce(&Handlers) -> Option<Outgoing> + Send>;

/// What a downlink message is.
pub(crate) enum Downlink {
    /// A `_reply` to one of our requests: `(reply topic, id, payload)`.
    Reply(String, String, Vec<u8>),
    /// Shadow `reply` (to our get/update), correlated by topic only.
    ShadowReply(Vec<u8>),
    ShadowControl(ShadowDelta),
    /// A request a handler answers.
    Request(Answer),
    Ignore,
}

fn reply_json(id: &str, result: HandlerResult, method: &str) -> Vec<u8> {
    let reply = match result {
        Ok(data) => Reply::success(id, data, Some(method)),
        Err((c, m)) => Reply::error(id, c, m, Some(method)),
    };
    serde_json::to_vec(&reply).expect("replies serialise")
}

fn no_handler(what: &str) -> HandlerResult {
    Err((
        code::METHOD_NOT_FOUND,
        format!("the device has no handler for {what}"),
    ))
}

/// Calls a handler, turning a panic into a 500 so that the caller is not left waiting.
fn call(h: &ParamsHandler, params: Value) -> HandlerResult {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h(params)))
        .unwrap_or_else(|_| Err((code::SERVER_ERROR, "the device handler panicked".into())))
}

/// Classifies a message the platform sent to this device.
pub(crate) fn classify(t: &Topics, topic: &str, payload: &[u8]) -> Downlink {
    if topic == t.shadow_get {
        let Ok(v) = serde_json::from_slice::<Value>(payload) else {
            return Downlink::Ignore;
        };
        return match v["method"].as_str() {
            Some("control") => Downlink::ShadowControl(ShadowDelta::from_control(&v)),
            Some("reply") => Downlink::ShadowReply(payload.to_vec()),
            _ => Downlink::Ignore,
        };
    }
    if topic == t.up_raw_reply {
        // Raw replies carry no usable id; a raw post waits on the topic alone.
        return Downlink::Reply(topic.to_string(), String::new(), payload.to_vec());
    }
    let Some(tail) = topic.strip_prefix(&t.sys_prefix) else {
        return Downlink::Ignore;
    };
    if tail.ends_with("/post_reply") {
        let id = serde_json::from_slice::<Value>(payload)
            .ok()
            .and_then(|v| v.get("id").map(id_string))
            .unwrap_or_default();
        return Downlink::Reply(topic.to_string(), id, payload.to_vec());
    }
    if tail == "thing/model/down_raw" {
        let bytes = payload.to_vec();
        let reply_topic = format!("{topic}_reply");
        return Downlink::Request(Box::new(move |h: &Handlers| {
            let handler = h.raw_down.read().clone()?;
            let out = handler(bytes)?;
            Some(Outgoing {
                topic: reply_topic,
                payload: out,
            })
        }));
    }
    if let Some(message_id) = tail.strip_prefix("rrpc/request/") {
        let response_topic = format!("{}rrpc/response/{message_id}", t.sys_prefix);
        let message_id = message_id.to_string();
        let bytes = payload.to_vec();
        return Downlink::Request(Box::new(move |h: &Handlers| {
            // Alink RRPC: a JSON request naming a service goes to that service's handler;
            // anything else to the raw RRPC handler.
            if let Ok(req) = serde_json::from_slice::<Request>(&bytes)
                && let Some(identifier) = req
                    .method
                    .as_deref()
                    .and_then(|m| m.strip_prefix("thing.service."))
            {
                let method = format!("thing.service.{identifier}");
                let handler = h.services.read().get(identifier).cloned();
                let result = match handler {
                    Some(f) => call(&f, req.params),
                    None => no_handler(&format!("service '{identifier}'")),
                };
                return Some(Outgoing {
                    topic: response_topic,
                    payload: reply_json(&req.id, result, &method),
                });
            }
            let handler = h.rrpc.read().clone()?;
            Some(Outgoing {
                topic: response_topic,
                payload: handler(message_id, bytes),
            })
        }));
    }
    if tail == "thing/service/property/set" {
        let reply_topic = format!("{topic}_reply");
        let bytes = payload.to_vec();
        return Downlink::Request(Box::new(move |h: &Handlers| {
            let req = serde_json::from_slice::<Request>(&bytes).ok()?;
            let handler = h.property_set.read().clone();
            let result = match handler {
                Some(f) => call(&f, req.params.clone()).map(|_| json!({})),
                None => no_handler("property set"),
            };
            req.wants_reply().then(|| Outgoing {
                topic: reply_topic,
                payload: reply_json(&req.id, result, "thing.service.property.set"),
            })
        }));
    }
    if let Some(identifier) = tail.strip_prefix("thing/service/")
        && !identifier.contains('/')
        && !identifier.ends_with("_reply")
    {
        let reply_topic = format!("{topic}_reply");
        let identifier = identifier.to_string();
        let bytes = payload.to_vec();
        return Downlink::Request(Box::new(move |h: &Handlers| {
            let req = serde_json::from_slice::<Request>(&bytes).ok()?;
            let handler = h.services.read().get(&identifier).cloned();
            let result = match handler {
                Some(f) => call(&f, req.params.clone()),
                None => no_handler(&format!("service '{identifier}'")),
            };
            req.wants_reply().then(|| Outgoing {
                topic: reply_topic,
                payload: reply_json(&req.id, result, &format!("thing.service.{identifier}")),
            })
        }));
    }
    Downlink::Ignore
}

pub(crate) fn id_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_requests_to_handlers_and_builds_replies() {
        let t = Topics::new("pk", "dn");
        let h = Handlers::default();
        h.services.write().insert(
            "Reboot".into(),
            Arc::new(|p: Value| {
                if p["DelaySeconds"].as_i64() > Some(60) {
                    Err((460, "DelaySeconds too large".into()))
                } else {
                    Ok(json!({"Accepted": 1}))
                }
            }),
        );
        let run = |topic: &str, body: Value| match classify(&t, topic, body.to_string().as_bytes())
        {
            Downlink::Request(f) => f(&h).map(|o| {
                (
                    o.topic,
                    serde_json::from_slice::<Value>(&o.payload).unwrap(),
                )
            }),
            _ => panic!("not a request"),
        };
        let (topic, r) = run(
            "/sys/pk/dn/rrpc/request/77",
            json!({"id": "9", "method": "thing.service.Reboot", "params": {"DelaySeconds": 5}}),
        )
        .unwrap();
        assert_eq!(topic, "/sys/pk/dn/rrpc/response/77");
        assert_eq!(r["code"], 200);
        assert_eq!(r["data"]["Accepted"], 1);
        let (topic, r) = run(
            "/sys/pk/dn/thing/service/Reboot",
            json!({"id": "10", "params": {"DelaySeconds": 500}}),
        )
        .unwrap();
        assert_eq!(topic, "/sys/pk/dn/thing/service/Reboot_reply");
        assert_eq!(r["code"], 460);
        let (_, r) = run(
            "/sys/pk/dn/thing/service/property/set",
            json!({"id": "11", "params": {"Brightness": 5}}),
        )
        .unwrap();
        assert_eq!(r["code"], code::METHOD_NOT_FOUND);
        // Our own replies echoed back by a wildcard subscription are not requests.
        assert!(matches!(
            classify(&t, "/sys/pk/dn/thing/service/Reboot_reply", b"{}"),
            Downlink::Ignore
        ));
        assert!(matches!(
            classify(&t, "/sys/pk/dn/thing/event/property/post_reply", br#"{"id":3,"code":200}"#),
            Downlink::Reply(_, id, _) if id == "3"
        ));
    }
}
