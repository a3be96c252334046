//! The JavaScript and Python codecs (`sdk/plugin-js`, `examples/plugins/codec-js`,
//! `examples/plugins/codec-python`) in the real plugin runtime: built by
//! `sdk/plugin-js/build-all.sh` (Node and Python are needed; the build installs componentize-js
//! and componentize-py on first use), installed from their manifests, and called with real frames.
//!
//! All five components implement one air-quality sensor's frame, so every test checks the same
//! properties come out of each, and that each failure reaches the host as a `codec-error` that
//! says what was wrong.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use lotus_plugin::{
    CallError, Codec, EventInput, HostError, HostServices, LogLevel, Manifest, MessageContext,
    PluginRuntime, RuntimeConfig,
};
use serde_json::{Value, json};

const PRODUCT: &str = "a1AirQuality";
const DEVICE: &str = "aq-0001";
const UP_RAW: &str = "/sys/a1AirQuality/aq-0001/thing/model/up_raw";
const AT_MS: i64 = 1_700_000_000_000;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds (or finds up to date) every script component (`sdk/plugin-js/build-all.sh`).
fn components() -> &'static Path {
    lotus_plugin_artifacts::script_components()
}

/// The platform side: a real kv per plugin (the script runner reads its script from it); the
/// codec world grants nothing else, so the rest is never reached.
#[derive(Default)]
struct TestHost {
    kv: Mutex<HashMap<(String, String), Vec<u8>>>,
}

impl HostServices for TestHost {
    fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, HostError> {
        Ok(self
            .kv
            .lock()
            .unwrap()
            .get(&(plugin.to_owned(), key.to_owned()))
            .cloned())
    }
    fn kv_set(&self, plugin: &str, key: &str, value: &[u8]) -> Result<(), HostError> {
        self.kv
            .lock()
            .unwrap()
            .insert((plugin.to_owned(), key.to_owned()), value.to_vec());
        Ok(())
    }
    fn kv_delete(&self, plugin: &str, key: &str) -> Result<(), HostError> {
        self.kv
            .lock()
            .unwrap()
            .remove(&(plugin.to_owned(), key.to_owned()));
        Ok(())
    }
    fn device_properties(&self, _: &str, _: &str, _: &str) -> Result<String, HostError> {
        unreachable!("the codec world has no device capability")
    }
    fn set_property(&self, _: &str, _: &str, _: &str, _: &str) -> Result<String, HostError> {
        unreachable!("the codec world has no device capability")
    }
    fn invoke_service(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: &str,
        _: &str,
    ) -> Result<String, HostError> {
        unreachable!("the codec world has no device capability")
    }
    fn publish(&self, _: &str, _: &str, _: &[u8], _: u8) -> Result<(), HostError> {
        unreachable!("the codec world has no publish capability")
    }
    fn raise_event(&self, _: &str, _: EventInput) -> Result<String, HostError> {
        unreachable!("the codec world has no event capability")
    }
    fn update_event(&self, _: &str, _: &str, _: &str, _: &str) -> Result<(), HostError> {
        unreachable!("the codec world has no event capability")
    }
    fn secret(&self, _: &str, _: &str) -> Result<String, HostError> {
        unreachable!("the codec world has no secrets capability")
    }
    fn plugin_suspended(&self, _: &str, _: &str) {}
}

struct Installed {
    runtime: PluginRuntime,
    host: Arc<TestHost>,
    id: String,
}

impl Installed {
    fn codec(&self) -> Codec {
        self.runtime
            .codec(&self.id)
            .expect("the activated codec is served")
    }
}

/// One runtime for the whole test binary, with its compile cache next to the components: a
/// JavaScript component is 11.5 MiB of SpiderMonkey, and compiling it is most of this suite's time.
fn runtime() -> &'static (PluginRuntime, Arc<TestHost>) {
    static RUNTIME: OnceLock<(PluginRuntime, Arc<TestHost>)> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let host = Arc::new(TestHost::default());
        let config = RuntimeConfig {
            cache_dir: Some(components().join("compiled")),
            ..RuntimeConfig::default()
        };
        (
            PluginRuntime::new(config, host.clone()).expect("runtime"),
            host,
        )
    })
}

/// Installs `wasm` (a file of [`components`]) under the example manifest of `manifest_dir`,
/// renamed to `id`; `kv` is stored for the plugin before its first call.
fn install(wasm: &str, manifest_dir: &str, id: &str, kv: &[(&str, &[u8])]) -> Installed {
    let text =
        std::fs::read_to_string(repo().join(manifest_dir).join("lotus-plugin.toml")).unwrap();
    let mut manifest = Manifest::from_toml(&text)
        .unwrap_or_else(|e| panic!("{manifest_dir}/lotus-plugin.toml: {e}"));
    manifest.id = id.to_owned();
    let bytes = std::fs::read(components().join(wasm)).unwrap();
    let (runtime, host) = runtime();
    for (key, value) in kv {
        host.kv_set(id, key, value).unwrap();
    }
    let started = Instant::now();
    let prepared = runtime
        .prepare(manifest, &bytes)
        .unwrap_or_else(|e| panic!("prepare {wasm}: {e}"));
    eprintln!(
        "{wasm} as {id}: prepared in {:.2} s (from cache: {})",
        started.elapsed().as_secs_f64(),
        prepared.from_cache()
    );
    runtime.activate(prepared);
    Installed {
        runtime: runtime.clone(),
        host: host.clone(),
        id: id.to_owned(),
    }
}

fn context() -> MessageContext {
    MessageContext {
        product_key: PRODUCT.into(),
        device_name: DEVICE.into(),
        topic: UP_RAW.into(),
        at_ms: AT_MS,
    }
}

fn decode(codec: &Codec, payload: &[u8]) -> Result<Value, CallError> {
    let text = codec.decode(UP_RAW, payload, &context())?;
    Ok(serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("decode returned invalid JSON {text:?}: {e}")))
}

fn set_interval(seconds: Value) -> String {
    json!({"id": "7", "version": "1.0", "method": "thing.service.property.set", "params": {"ReportInterval": seconds}})
        .to_string()
}

fn encode(codec: &Codec, message: &str) -> Result<Vec<u8>, CallError> {
    let mut ctx = context();
    ctx.topic = "/sys/a1AirQuality/aq-0001/thing/model/down_raw".into();
    codec.encode(message, &ctx)
}

/// The codec error's text, failing the test if the call failed some other way (a trap, a limit).
fn codec_message(result: Result<impl std::fmt::Debug, CallError>) -> String {
    match result {
        Err(CallError::Codec { message, .. }) => message,
        other => panic!("expected a codec-error, got {other:?}"),
    }
}

/// 35 µg/m³ PM2.5, 80 PM10, 21.7 °C, 55 %.
const FRAME: [u8; 7] = [0x00, 0x23, 0x00, 0x50, 0x00, 0xd9, 0x37];
/// 1000 µg/m³ PM2.5, 65535 PM10, −10.1 °C (0xFF9B), 100 %: the edges of each field.
const FRAME_EDGES: [u8; 7] = [0x03, 0xe8, 0xff, 0xff, 0xff, 0x9b, 100];

fn expected(frame: &[u8; 7]) -> Value {
    let temp = i16::from_be_bytes([frame[4], frame[5]]);
    json!({
        "PM25": u16::from_be_bytes([frame[0], frame[1]]),
        "PM10": u16::from_be_bytes([frame[2], frame[3]]),
        "Temperature": f64::from(temp) / 10.0,
        "Humidity": frame[6],
    })
}

/// What every one of the five codecs must do with the same frames.
fn check_frames(codec: &Codec, name: &str) {
    for frame in [FRAME, FRAME_EDGES] {
        let message =
            decode(codec, &frame).unwrap_or_else(|e| panic!("{name}: decode {frame:02x?}: {e:?}"));
        assert_eq!(
            message["method"], "thing.event.property.post",
            "{name}: {message}"
        );
        assert_eq!(message["version"], "1.0", "{name}: {message}");
        assert!(
            message["id"].is_string(),
            "{name}: Alink ids are strings: {message}"
        );
        assert_eq!(message["params"], expected(&frame), "{name}: {frame:02x?}");
    }
    assert_eq!(
        encode(codec, &set_interval(json!(300))).unwrap(),
        [0xa1, 0, 0, 0x01, 0x2c],
        "{name}"
    );
    assert_eq!(
        encode(codec, &set_interval(json!(86400))).unwrap(),
        [0xa1, 0, 0x01, 0x51, 0x80],
        "{name}"
    );
}

const JS: &str = "examples/plugins/codec-js";
const PY: &str = "examples/plugins/codec-python";

#[test]
fn javascript_codec_decodes_encodes_and_reports_where_it_failed() {
    let plugin = install("codec_js.wasm", JS, "air-quality-js", &[]);
    let codec = plugin.codec();
    check_frames(&codec, "codec_js");
    // Written for the world, the codec sets the id from the receive time.
    assert_eq!(decode(&codec, &FRAME).unwrap()["id"], AT_MS.to_string());

    match decode(&codec, &FRAME[..3]) {
        Err(CallError::Codec {
            message,
            offset,
            field,
        }) => {
            assert_eq!(message, "frame is 3 bytes, expected 7");
            assert_eq!(offset, Some(3));
            assert_eq!(field, None);
        }
        other => panic!("short frame: {other:?}"),
    }
    let mut wet = FRAME;
    wet[6] = 101;
    match decode(&codec, &wet) {
        Err(CallError::Codec { offset, field, .. }) => {
            assert_eq!((offset, field.as_deref()), (Some(6), Some("Humidity")));
        }
        other => panic!("humidity 101: {other:?}"),
    }
    match encode(&codec, &set_interval(json!(5))) {
        Err(CallError::Codec { message, field, .. }) => {
            assert_eq!(field.as_deref(), Some("ReportInterval"));
            assert!(message.contains("got 5"), "{message}");
        }
        other => panic!("interval 5: {other:?}"),
    }
    assert!(codec_message(encode(&codec, "{not json")).starts_with("message is not JSON"));
    let logs = plugin.runtime.logs(&plugin.id, 100);
    assert!(
        logs.iter().any(|line| line.level == LogLevel::Debug
            && line.message == "aq-0001: reporting interval 300 s"),
        "the codec's log call reaches the plugin log: {logs:?}"
    );
    // A failed call leaves the plugin serving.
    check_frames(&codec, "codec_js after errors");
}

#[test]
fn python_codec_matches_the_javascript_one() {
    let plugin = install("codec_python.wasm", PY, "air-quality-python", &[]);
    let codec = plugin.codec();
    check_frames(&codec, "codec_python");
    assert_eq!(decode(&codec, &FRAME).unwrap()["id"], AT_MS.to_string());

    match decode(&codec, &FRAME[..3]) {
        Err(CallError::Codec {
            message,
            offset,
            field,
        }) => {
            assert_eq!(
                (message.as_str(), offset, field),
                ("frame is 3 bytes, expected 7", Some(3), None)
            );
        }
        other => panic!("short frame: {other:?}"),
    }
    let mut wet = FRAME;
    wet[6] = 101;
    match decode(&codec, &wet) {
        Err(CallError::Codec { offset, field, .. }) => {
            assert_eq!((offset, field.as_deref()), (Some(6), Some("Humidity")));
        }
        other => panic!("humidity 101: {other:?}"),
    }
    // `true` is an int to Python; the codec must still refuse it.
    match encode(&codec, &set_interval(json!(true))) {
        Err(CallError::Codec { field, .. }) => assert_eq!(field.as_deref(), Some("ReportInterval")),
        other => panic!("interval true: {other:?}"),
    }
    assert!(codec_message(encode(&codec, "{not json")).starts_with("message is not JSON"));
    check_frames(&codec, "codec_python after errors");
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn alibaba_script_runs_unchanged() {
    let plugin = install("alibaba_script.wasm", JS, "air-quality-alibaba", &[]);
    let codec = plugin.codec();
    check_frames(&codec, "alibaba_script");

    // The script stamps its id with `new Date().getTime()`: the adapter's Date must ask the
    // host's clock, not return the time frozen into the build's snapshot.
    let before = now_ms();
    let id: i64 = decode(&codec, &FRAME).unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (before..=now_ms()).contains(&id),
        "script's Date is {id}, the host's clock {before}"
    );

    assert_eq!(
        codec_message(decode(&codec, &FRAME[..3])),
        "rawDataToProtocol: frame length 3, expected 7"
    );
    assert_eq!(
        codec_message(encode(
            &codec,
            r#"{"id":"8","version":"1.0","method":"thing.service.reboot","params":{}}"#
        )),
        "protocolToRawData: unsupported downlink: thing.service.reboot"
    );
    check_frames(&codec, "alibaba_script after errors");
}

#[test]
fn chirpstack_script_runs_unchanged() {
    let plugin = install("chirpstack_script.wasm", JS, "air-quality-chirpstack", &[]);
    let codec = plugin.codec();
    check_frames(&codec, "chirpstack_script");
    assert_eq!(decode(&codec, &FRAME).unwrap()["id"], AT_MS.to_string());

    // `errors` fail the call; `warnings` do not.
    assert_eq!(
        codec_message(decode(&codec, &FRAME[..3])),
        "decodeUplink: expected 7 bytes, got 3"
    );
    let mut wet = FRAME;
    wet[6] = 101;
    assert_eq!(decode(&codec, &wet).unwrap()["params"]["Humidity"], 101);
    let logs = plugin.runtime.logs(&plugin.id, 100);
    assert!(
        logs.iter().any(|line| line.level == LogLevel::Warn
            && line.message == "decodeUplink: humidity over 100 %"),
        "the script's warning reaches the plugin log: {logs:?}"
    );
    assert_eq!(
        codec_message(encode(&codec, &set_interval(json!(5)))),
        "encodeDownlink: ReportInterval must be 10..86400 seconds"
    );
    check_frames(&codec, "chirpstack_script after errors");
}

#[test]
fn script_runner_loads_either_script_from_kv() {
    let examples = repo().join(JS);
    let alibaba = std::fs::read(examples.join("alibaba-script.js")).unwrap();
    let chirpstack = std::fs::read(examples.join("chirpstack-script.js")).unwrap();

    let runner = install(
        "script_runner.wasm",
        JS,
        "runner-alibaba",
        &[("script", &alibaba)],
    );
    check_frames(&runner.codec(), "script_runner + alibaba-script.js");
    assert_eq!(
        codec_message(decode(&runner.codec(), &FRAME[..3])),
        "rawDataToProtocol: frame length 3, expected 7"
    );

    let runner = install(
        "script_runner.wasm",
        JS,
        "runner-chirpstack",
        &[("script", &chirpstack)],
    );
    check_frames(&runner.codec(), "script_runner + chirpstack-script.js");
    assert_eq!(
        codec_message(decode(&runner.codec(), &FRAME[..3])),
        "decodeUplink: expected 7 bytes, got 3"
    );
}

#[test]
fn script_runner_explains_a_missing_or_broken_script() {
    let empty = install("script_runner.wasm", JS, "runner-empty", &[]);
    let message = codec_message(decode(&empty.codec(), &FRAME));
    assert!(
        message.starts_with("no script: set kv key \"script\""),
        "{message}"
    );
    // Once the script is there, the same instance picks it up: nothing was cached from the miss.
    let script = std::fs::read(repo().join(JS).join("chirpstack-script.js")).unwrap();
    empty.host.kv_set(&empty.id, "script", &script).unwrap();
    check_frames(&empty.codec(), "script_runner after the script was set");

    let broken = install(
        "script_runner.wasm",
        JS,
        "runner-broken",
        &[("script", b"function decodeUplink(input) {")],
    );
    let message = codec_message(decode(&broken.codec(), &FRAME));
    assert!(
        message.starts_with("script does not compile: "),
        "{message}"
    );

    let neither = install(
        "script_runner.wasm",
        JS,
        "runner-neither",
        &[("script", b"function parse(bytes) { return {}; }")],
    );
    let message = codec_message(decode(&neither.codec(), &FRAME));
    assert!(
        message.starts_with("script defines none of rawDataToProtocol"),
        "{message}"
    );

    let bad_bytes = install(
        "script_runner.wasm",
        JS,
        "runner-bad-bytes",
        &[(
            "script",
            b"function protocolToRawData(json) { return [1, 256]; }",
        )],
    );
    assert_eq!(
        codec_message(encode(&bad_bytes.codec(), &set_interval(json!(60)))),
        "protocolToRawData returned 256 at index 1, expected a byte value"
    );
}

/// A script is held to the plugin's limits like any component: a loop that never ends is
/// stopped, and the plugin goes on serving the next message.
#[test]
fn script_runner_stops_a_script_that_never_returns() {
    let script = b"var n = 0;\nfunction decodeUplink(input) {\n  if (input.bytes[0] === 0xff) { for (;;) { n++; } }\n  return { data: { n: n } };\n}\n";
    let runner = install(
        "script_runner.wasm",
        JS,
        "runner-loop",
        &[("script", script)],
    );
    let codec = runner.codec();
    assert_eq!(decode(&codec, &[0]).unwrap()["params"], json!({"n": 0}));
    let started = Instant::now();
    let result = decode(&codec, &[0xff]);
    assert!(
        matches!(result, Err(ref e) if !matches!(e, CallError::Codec { .. })),
        "an endless loop must hit a limit, not return: {result:?}"
    );
    assert!(
        started.elapsed().as_secs() < 5,
        "stopped after {:?}",
        started.elapsed()
    );
    assert_eq!(
        decode(&codec, &[0]).unwrap()["params"],
        json!({"n": 0}),
        "a fresh instance serves the next call"
    );
}

/// Not a benchmark (that is `benches/`): prints what one decode costs through the full host call,
/// so a regression by orders of magnitude is visible in the test log.
#[test]
fn decode_cost_is_printed() {
    for (wasm, dir, id) in [
        ("codec_js.wasm", JS, "cost-js"),
        ("alibaba_script.wasm", JS, "cost-alibaba"),
        ("codec_python.wasm", PY, "cost-py"),
    ] {
        let plugin = install(wasm, dir, id, &[]);
        let codec = plugin.codec();
        let started = Instant::now();
        decode(&codec, &FRAME).unwrap();
        eprintln!(
            "{wasm}: first decode (instantiates) {:.1} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
        let n = 200;
        let started = Instant::now();
        for _ in 0..n {
            decode(&codec, &FRAME).unwrap();
        }
        eprintln!(
            "{wasm}: decode {:.1} µs per call (mean of {n})",
            started.elapsed().as_secs_f64() * 1e6 / f64::from(n)
        );
    }
}
