//! Every Rust example's and first-party plugin's `tests/cases.toml`, run through the harness on
//! the components `lotus-plugin-artifacts` built; and the harness's own behaviour on failing
//! cases.

use std::path::{Path, PathBuf};

use lotus_plugin_artifacts as artifacts;
use lotus_plugin_test::{CaseReport, Harness, HarnessOptions, run_cases, run_cases_str};
use serde_json::json;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn options() -> HarnessOptions {
    HarnessOptions {
        cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("lotus-plugin-test-cache")),
    }
}

fn harness(dir: &str, wasm: &str) -> Harness {
    let dir = repo().join(dir);
    Harness::load_with(&dir.join("lotus-plugin.toml"), Path::new(wasm), &options())
        .unwrap_or_else(|e| panic!("load {}: {e}", dir.display()))
}

/// Runs `dir/tests/cases.toml`; every case must pass, and the file must hold a case that expects
/// an error.
fn cases(dir: &str, wasm: &str) -> CaseReport {
    let harness = harness(dir, wasm);
    let path = repo().join(dir).join("tests/cases.toml");
    let report = run_cases(&harness, &path).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{report}");
    assert!(report.is_success(), "{report}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("expect_error"),
        "{dir}: the cases include a failing input"
    );
    report
}

#[test]
fn codec_street_light_cases() {
    let report = cases(
        "examples/plugins/codec-street-light",
        artifacts::CODEC_STREET_LIGHT,
    );
    assert_eq!(report.cases.len(), 6);
    // The example manifest binds no product; the harness says what it did instead.
    assert!(
        report.notes.iter().any(|n| n.contains("a1TestProduct")),
        "{report}"
    );
}

#[test]
fn rule_threshold_cases() {
    assert_eq!(
        cases("examples/plugins/rule-threshold", artifacts::RULE_THRESHOLD)
            .cases
            .len(),
        7
    );
}

#[test]
fn event_handler_dispatch_cases() {
    assert_eq!(
        cases(
            "examples/plugins/event-handler-dispatch",
            artifacts::EVENT_HANDLER_DISPATCH
        )
        .cases
        .len(),
        5
    );
}

#[test]
fn app_webhook_cases() {
    assert_eq!(
        cases("examples/plugins/app-webhook", artifacts::APP_WEBHOOK)
            .cases
            .len(),
        4
    );
}

#[test]
fn channel_sms_cases() {
    assert_eq!(
        cases("examples/plugins/channel-sms", artifacts::CHANNEL_SMS)
            .cases
            .len(),
        3
    );
}

#[test]
fn water_meter_codec_cases() {
    assert_eq!(
        cases("plugins/water-meter-codec", artifacts::WATER_METER_CODEC)
            .cases
            .len(),
        8
    );
}

#[test]
fn json_remap_cases() {
    assert_eq!(
        cases("plugins/json-remap", artifacts::JSON_REMAP)
            .cases
            .len(),
        5
    );
}

#[test]
fn modbus_rtu_codec_cases() {
    assert_eq!(
        cases("plugins/modbus-rtu-codec", artifacts::MODBUS_RTU_CODEC)
            .cases
            .len(),
        6
    );
}

/// Wrong expectations fail with a line per difference and the plugin's answer, like a failed
/// assertion; right ones pass in the same file.
#[test]
fn failing_cases_say_what_differed() {
    let harness = harness(
        "examples/plugins/codec-street-light",
        artifacts::CODEC_STREET_LIGHT,
    );
    let text = r#"
[[case]]
name = "right"
call = "decode"
input_hex = "a5 02 00 08 01 03 89"
expect = { params = { value = { ErrorCode = 3 } } }

[[case]]
name = "wrong value"
call = "decode"
input_hex = "a5 02 00 08 01 03 89"
expect = { method = "thing.event.LampFault.post", params = { value = { ErrorCode = 4, Missing = 1 } } }

[[case]]
name = "error expected but decoded"
call = "decode"
input_hex = "a5 02 00 08 01 03 89"
expect_error = "CRC"

[[case]]
name = "decoded expected but error"
call = "decode"
input_hex = "a5 02 00 08 01 03 88"
expect = { method = "thing.event.LampFault.post" }

[[case]]
name = "wrong bytes"
call = "encode"
input = { id = "1", method = "thing.service.property.set", params = { LightSwitch = 0 } }
expect_hex = "a5 10 00 01 02 01 00 00"

[[case]]
name = "wrong world"
call = "rule"
input = { timer = "t" }
"#;
    let report = run_cases_str(&harness, text, Path::new("."), "inline").unwrap();
    let shown = report.to_string();
    eprintln!("{shown}");
    assert!(!report.is_success());
    assert_eq!(
        report.failed_names(),
        [
            "wrong value",
            "error expected but decoded",
            "decoded expected but error",
            "wrong bytes",
            "wrong world"
        ]
    );
    for line in [
        "case right ... ok",
        "case wrong value ... FAILED",
        "$.params.value.ErrorCode: expected 4, got 3",
        "$.params.value.Missing: missing (expected 1)",
        "expected an error containing \"CRC\", but the call succeeded",
        // The codec's own error, with its byte and field, as the runtime reports it.
        "the call failed: codec error at byte 6 in field \"crc\"",
        "expected bytes a5 10 00 01 02 01 00 00, got a5 10 00 01 02 01 00",
        "this is a codec plugin; evaluate needs a rule plugin",
        "test result: FAILED. 1 passed; 5 failed",
    ] {
        assert!(shown.contains(line), "missing {line:?} in\n{shown}");
    }

    let error = run_cases_str(
        &harness,
        "[[case]]\nname = \"x\"\ncall = \"decode\"\nexpected = 1\n",
        Path::new("."),
        "typo.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("typo.toml") && error.contains("expected"),
        "{error}"
    );
}

/// The Rust API: calls mirror the runtime's, the platform is preloaded and inspected.
#[test]
fn api_preloads_and_records() {
    let harness = harness(
        "examples/plugins/codec-street-light",
        artifacts::CODEC_STREET_LIGHT,
    );
    let ctx = harness.context("/sys/a1StreetLight/SL-0001/thing/model/down_raw");
    assert_eq!(
        (ctx.product_key.as_str(), ctx.device_name.as_str()),
        ("a1StreetLight", "SL-0001")
    );
    let bytes = harness
        .encode(
            r#"{"id":"4660","version":"1.0","method":"thing.service.property.set","params":{"WorkMode":2}}"#,
            &ctx,
        )
        .unwrap();
    assert_eq!(
        hex::encode(&bytes),
        format!("a5101234020302{:02x}", bytes[7])
    );
    assert_eq!(
        harness.kv("pending/a1StreetLight/SL-0001/4660").as_deref(),
        Some(&b"4660"[..])
    );

    let error = harness.decode(&ctx.topic, &[0xA5, 0x01], &ctx).unwrap_err();
    let text = error.to_string();
    assert!(text.contains("at byte"), "{text}");
    assert!(matches!(
        error.call_error(),
        Some(lotus_plugin_test::lotus_plugin::CallError::Codec { .. })
    ));

    let status =
        hex::decode("a5010007 0d 0150 08fc 005e 0145 0001e240 00 36".replace(' ', "")).unwrap();
    let post = harness.decode(&ctx.topic, &status, &ctx).unwrap();
    assert_eq!(post["params"]["Voltage"], json!(230.0));
    assert_eq!(post["method"], json!("thing.event.property.post"));
    assert_eq!(
        harness.effects(),
        json!({"published": [], "set-property": [], "invoke-service": [], "raised": [], "updated": []})
    );
}
