use lotus_plugin_sdk::DeliveryStatus;
use lotus_plugin_sdk::serde_json::{self, Value, json};

use crate::gateway::{self, Config};

fn config() -> Config {
    Config::new("https://sms.example/", "tok-1", Some("LOTUS")).unwrap()
}

#[test]
fn request_follows_the_documented_api() {
    let r = gateway::request(&config(), "+8613800000001", "pump 7: pressure low");
    assert_eq!(r.method, "POST");
    assert_eq!(r.url, "https://sms.example/v1/messages");
    assert!(
        r.headers
            .contains(&("authorization".into(), "Bearer tok-1".into()))
    );
    assert!(
        r.headers
            .contains(&("content-type".into(), "application/json".into()))
    );
    let body: Value = serde_json::from_slice(r.body.as_ref().unwrap()).unwrap();
    assert_eq!(body["to"], "+8613800000001");
    assert_eq!(body["text"], "pump 7: pressure low");
    assert_eq!(body["sender"], "LOTUS");
    assert_eq!(
        body["reference"],
        gateway::reference("+8613800000001", "pump 7: pressure low")
    );
    let no_sender = Config::new("http://127.0.0.1:9", "t", Some(" ")).unwrap();
    let body: Value = serde_json::from_slice(
        gateway::request(&no_sender, "1234567", "x")
            .body
            .as_ref()
            .unwrap(),
    )
    .unwrap();
    assert!(body.get("sender").is_none());
}

#[test]
fn references_are_stable_per_message() {
    let a = gateway::reference("+861", "text");
    assert_eq!(a, gateway::reference("+861", "text"));
    assert_ne!(a, gateway::reference("+862", "text"));
    assert_ne!(a, gateway::reference("+861", "other"));
    assert!(a.starts_with("lotus-") && a.len() == 22, "{a}");
}

#[test]
fn configuration_errors_say_what_to_set() {
    assert!(
        Config::new("sms.example", "t", None)
            .unwrap_err()
            .contains("gateway-url")
    );
    assert!(
        Config::new("https://sms.example", " ", None)
            .unwrap_err()
            .contains("gateway-token")
    );
}

#[test]
fn numbers_and_text() {
    assert_eq!(
        gateway::phone_number("tel:+86 138-0000-0001").unwrap(),
        "+8613800000001"
    );
    assert!(gateway::phone_number("chen").is_err());
    assert!(gateway::phone_number("+12").is_err());
    assert_eq!(gateway::text("", "body"), "body");
    assert_eq!(gateway::text("泵站压力低", ""), "泵站压力低");
    let long = gateway::text("s", &"x".repeat(1000));
    assert_eq!(long.chars().count(), gateway::MAX_TEXT_CHARS);
    assert!(long.ends_with('…'));
}

#[test]
fn gateway_answers_map_to_statuses() {
    let delivered = gateway::outcome("a", 200, br#"{"id":"m1","status":"delivered"}"#);
    assert_eq!(
        (delivered.status, delivered.provider_id.as_deref()),
        (DeliveryStatus::Delivered, Some("m1"))
    );
    for s in ["queued", "sent"] {
        let body = json!({"id": "m2", "status": s}).to_string();
        assert_eq!(
            gateway::outcome("b", 202, body.as_bytes()).status,
            DeliveryStatus::Accepted
        );
    }
    let refused = gateway::outcome(
        "c",
        400,
        br#"{"error":{"code":"invalid_number","message":"+86 1 is not a number"}}"#,
    );
    assert_eq!(refused.status, DeliveryStatus::Failed);
    assert_eq!(
        refused.detail,
        "HTTP 400: invalid_number: +86 1 is not a number"
    );
    assert!(
        gateway::outcome("d", 401, br#"{"error":{"message":"bad token"}}"#)
            .detail
            .contains("gateway-token")
    );
    assert_eq!(
        gateway::outcome("e", 502, b"Bad Gateway").detail,
        "HTTP 502: Bad Gateway"
    );
    let carrier = gateway::outcome(
        "f",
        200,
        br#"{"id":"m3","status":"failed","error":{"message":"carrier rejected"}}"#,
    );
    assert_eq!(carrier.status, DeliveryStatus::Failed);
    assert!(carrier.detail.contains("carrier rejected"));
    assert_eq!(
        gateway::outcome("g", 200, b"{}").status,
        DeliveryStatus::Failed,
        "an answer without a status is not taken as sent"
    );
}

#[test]
fn one_failure_fails_the_notification() {
    let ok = gateway::outcome("a", 200, br#"{"id":"m1","status":"delivered"}"#);
    let queued = gateway::outcome("b", 202, br#"{"id":"m2","status":"queued"}"#);
    let failed = gateway::outcome("c", 500, br#"{"error":{"message":"down"}}"#);
    let d = gateway::combine(&[ok.clone(), queued]);
    assert_eq!(
        (d.status, d.provider_id.as_deref()),
        (DeliveryStatus::Accepted, Some("m1,m2"))
    );
    let d = gateway::combine(&[ok, failed]);
    assert_eq!(d.status, DeliveryStatus::Failed);
    assert!(d.detail.contains("c: HTTP 500: down"), "{}", d.detail);
    assert_eq!(gateway::combine(&[]).status, DeliveryStatus::Failed);
}
