//! A test harness for Lotus plugins: runs your component in the real plugin runtime
//! (`lotus-plugin`, the same validation, limits, fuel and capability checks as a node) on an
//! in-memory platform, from your own `cargo test` or through `lotus plugin test` with a TOML
//! case file.
//!
//! ```no_run
//! use std::path::Path;
//! use lotus_plugin_test::{Harness, build_rust_plugin};
//!
//! let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
//! let wasm = build_rust_plugin(dir).unwrap();
//! let harness = Harness::load(&dir.join("lotus-plugin.toml"), &wasm).unwrap();
//! let ctx = harness.context("/sys/a1Meter/m-1/thing/model/up_raw");
//! let alink = harness.decode(&ctx.topic, &[0x68, 0x01, 0x00], &ctx).unwrap_err();
//! assert!(alink.to_string().contains("at byte"));
//! // or every case of a case file:
//! let report = lotus_plugin_test::run_cases(&harness, &dir.join("tests/cases.toml")).unwrap();
//! assert!(report.is_success(), "{report}");
//! ```
//!
//! What the platform side does:
//!
//! - **kv**: a map per plugin, preloaded with [`Harness::set_kv`] (or a case's `[kv]`), read with
//!   [`Harness::kv`];
//! - **device**: `get-properties` answers from [`Harness::set_device_properties`] in the node's
//!   shape (`{"Id": {"value", "time"}}`); `set-property` and `invoke-service` are recorded;
//! - **event**, **publish**: recorded;
//! - **secrets**: [`Harness::set_secret`];
//! - **log**: the plugin's log as on a node, [`Harness::logs`];
//! - **http** and **clock**: done by the runtime itself, as on a node: real requests, only to
//!   the manifest's `http_allow`, and the real clock.
//!
//! The one difference from a node: a plugin is never suspended after repeated failures, so one
//! trapping case does not fail the cases after it.

mod cargo_build;
mod cases;
mod convert;
mod host;
mod matching;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lotus_plugin::wit::v0_1_0::types::{
    Action, DeviceMessage, Notification, PlatformEvent, StatusChange,
};
use lotus_plugin::wit::v0_1_0::{Delivery, Trigger};
use lotus_plugin::{CallError, LogLine, PluginRuntime, PrepareError, RuntimeConfig};
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

pub use cargo_build::build_rust_plugin;
pub use cases::{CaseOutcome, CaseReport, run_cases, run_cases_str};
pub use convert::{
    action_json, actions_json, delivery_json, device_message, notification, platform_event,
    status_change, trigger,
};
pub use host::{EventUpdate, PropertySetCall, Published, ServiceCall};
pub use lotus_plugin::{self, Manifest, MessageContext, World};
pub use matching::{subset_diff, subset_matches};

use host::MemoryHost;

/// The product key a codec manifest without `products` is bound to for testing.
pub const TEST_PRODUCT_KEY: &str = "a1TestProduct";
/// The device name of [`Harness::context`].
pub const TEST_DEVICE_NAME: &str = "test-device";
/// The receive time of [`Harness::context`]: fixed, so ids derived from it are stable.
pub const TEST_AT_MS: i64 = 1_700_000_000_000;

/// Why the harness could not load, run or check something. A plugin's own answer (a
/// `codec-error`, a rule's `err`) and its failures (trap, fuel, timeout) are [`HarnessError::Call`],
/// whose text is the runtime's: for a codec error it names the byte offset and the field.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Manifest(String),
    /// The runtime refused the component, as a node would at install.
    #[error("the runtime refused the component: {0}")]
    Prepare(#[from] PrepareError),
    #[error("{0}")]
    Runtime(String),
    #[error("this is a {actual} plugin; {call} needs a {expected} plugin")]
    WrongWorld {
        call: &'static str,
        expected: World,
        actual: World,
    },
    #[error("{0}")]
    Call(#[from] CallError),
    /// A case or an input could not be understood.
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Build(String),
}

impl HarnessError {
    /// The plugin call's error, if this is one.
    pub fn call_error(&self) -> Option<&CallError> {
        match self {
            HarnessError::Call(e) => Some(e),
            _ => None,
        }
    }
}

/// How to build the runtime.
#[derive(Debug, Clone, Default)]
pub struct HarnessOptions {
    /// Where compiled components are cached (as on a node); `None` compiles on every load.
    /// JavaScript and Python components take seconds to compile, so give one for those.
    pub cache_dir: Option<PathBuf>,
}

/// One plugin running in the real runtime on an in-memory platform.
pub struct Harness {
    runtime: PluginRuntime,
    host: Arc<MemoryHost>,
    manifest: Manifest,
    notes: Vec<String>,
    /// Log lines before this index belong to earlier calls (see [`Harness::clear_recorded`]).
    log_mark: Mutex<usize>,
}

impl Harness {
    /// Loads `lotus-plugin.toml` and the component, checks them as a node's install does, and
    /// activates the plugin.
    pub fn load(manifest_path: &Path, wasm_path: &Path) -> Result<Harness, HarnessError> {
        Self::load_with(manifest_path, wasm_path, &HarnessOptions::default())
    }

    pub fn load_with(
        manifest_path: &Path,
        wasm_path: &Path,
        options: &HarnessOptions,
    ) -> Result<Harness, HarnessError> {
        let text = read_text(manifest_path)?;
        let (manifest, notes) = parse_manifest(&text)
            .map_err(|e| HarnessError::Manifest(format!("{}: {e}", manifest_path.display())))?;
        let wasm = std::fs::read(wasm_path).map_err(|source| HarnessError::Io {
            path: wasm_path.to_path_buf(),
            source,
        })?;
        let mut harness = Self::from_manifest(manifest, &wasm, options)?;
        harness.notes.splice(0..0, notes);
        Ok(harness)
    }

    /// Reads `dir/lotus-plugin.toml` and finds the component with [`find_wasm`].
    pub fn from_manifest_dir(dir: &Path) -> Result<Harness, HarnessError> {
        let wasm = find_wasm(dir)?;
        Self::load(&dir.join("lotus-plugin.toml"), &wasm)
    }

    /// A manifest you built or changed in code (e.g. `http_allow` pointed at a local server).
    pub fn from_manifest(
        manifest: Manifest,
        wasm: &[u8],
        options: &HarnessOptions,
    ) -> Result<Harness, HarnessError> {
        let host = Arc::new(MemoryHost::default());
        let config = RuntimeConfig {
            cache_dir: options.cache_dir.clone(),
            // A test harness reports every case; it never stops calling the plugin.
            suspend_after_failures: 0,
            log_lines_per_plugin: 1_000_000,
            ..RuntimeConfig::default()
        };
        let runtime = PluginRuntime::new(config, host.clone())
            .map_err(|e| HarnessError::Runtime(format!("{e:#}")))?;
        let prepared = runtime.prepare(manifest.clone(), wasm)?;
        runtime.activate(prepared);
        let harness = Harness {
            runtime,
            host,
            manifest,
            notes: Vec::new(),
            log_mark: Mutex::new(0),
        };
        harness.clear_recorded();
        Ok(harness)
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn world(&self) -> World {
        self.manifest.world
    }

    /// The runtime the plugin runs in (status, logs, or a handle of your own).
    pub fn runtime(&self) -> &PluginRuntime {
        &self.runtime
    }

    /// What the harness changed to run the plugin locally (e.g. a product bound to a codec
    /// whose manifest lists none).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// A context for `topic`: product key and device name from a `/sys/{pk}/{dn}/…` or
    /// `/{pk}/{dn}/…` topic, else the manifest's first product and [`TEST_DEVICE_NAME`]; the
    /// time is [`TEST_AT_MS`].
    pub fn context(&self, topic: &str) -> MessageContext {
        let levels: Vec<&str> = topic.split('/').collect();
        let from_topic = match levels.as_slice() {
            ["", "sys", pk, dn, ..] | ["", "ext", _, pk, dn, ..]
                if !pk.is_empty() && !dn.is_empty() =>
            {
                Some((pk.to_string(), dn.to_string()))
            }
            ["", pk, dn, _, ..] if !pk.is_empty() && !dn.is_empty() => {
                Some((pk.to_string(), dn.to_string()))
            }
            _ => None,
        };
        let (product_key, device_name) = from_topic.unwrap_or_else(|| {
            (
                self.manifest
                    .products
                    .first()
                    .cloned()
                    .unwrap_or_else(|| TEST_PRODUCT_KEY.to_owned()),
                TEST_DEVICE_NAME.to_owned(),
            )
        });
        MessageContext {
            product_key,
            device_name,
            topic: topic.to_owned(),
            at_ms: TEST_AT_MS,
        }
    }

    fn check_world(&self, call: &'static str, expected: World) -> Result<(), HarnessError> {
        if self.manifest.world == expected {
            Ok(())
        } else {
            Err(HarnessError::WrongWorld {
                call,
                expected,
                actual: self.manifest.world,
            })
        }
    }

    fn missing() -> HarnessError {
        HarnessError::Runtime("the plugin is not active in the runtime".to_owned())
    }

    /// Codec: raw uplink → the Alink JSON it decodes to (checked by the runtime as on a node).
    pub fn decode(
        &self,
        topic: &str,
        payload: &[u8],
        ctx: &MessageContext,
    ) -> Result<Value, HarnessError> {
        Ok(
            serde_json::from_str(&self.decode_text(topic, payload, ctx)?)
                .expect("the runtime returns JSON from decode"),
        )
    }

    /// Codec: raw uplink → the Alink JSON text exactly as returned.
    pub fn decode_text(
        &self,
        topic: &str,
        payload: &[u8],
        ctx: &MessageContext,
    ) -> Result<String, HarnessError> {
        self.check_world("decode", World::Codec)?;
        let codec = self
            .runtime
            .codec(&self.manifest.id)
            .ok_or_else(Self::missing)?;
        Ok(codec.decode(topic, payload, ctx)?)
    }

    /// Codec: Alink JSON downlink → the bytes for the device.
    pub fn encode(&self, message: &str, ctx: &MessageContext) -> Result<Vec<u8>, HarnessError> {
        self.check_world("encode", World::Codec)?;
        let codec = self
            .runtime
            .codec(&self.manifest.id)
            .ok_or_else(Self::missing)?;
        Ok(codec.encode(message, ctx)?)
    }

    /// Rule: a trigger → actions.
    pub fn evaluate(&self, trigger: &Trigger) -> Result<Vec<Action>, HarnessError> {
        self.check_world("evaluate", World::Rule)?;
        let rule = self
            .runtime
            .rule(&self.manifest.id)
            .ok_or_else(Self::missing)?;
        Ok(rule.evaluate(trigger)?)
    }

    /// Event handler: a platform event → actions.
    pub fn handle(&self, event: &PlatformEvent) -> Result<Vec<Action>, HarnessError> {
        self.check_world("handle", World::EventHandler)?;
        let handler = self
            .runtime
            .event_handler(&self.manifest.id)
            .ok_or_else(Self::missing)?;
        Ok(handler.handle(event)?)
    }

    pub fn on_message(&self, message: &DeviceMessage) -> Result<(), HarnessError> {
        self.check_world("on-message", World::App)?;
        let app = self
            .runtime
            .app(&self.manifest.id)
            .ok_or_else(Self::missing)?;
        Ok(app.on_message(message)?)
    }

    pub fn on_status(&self, change: &StatusChange) -> Result<(), HarnessError> {
        self.check_world("on-status", World::App)?;
        let app = self
            .runtime
            .app(&self.manifest.id)
            .ok_or_else(Self::missing)?;
        Ok(app.on_status(change)?)
    }

    pub fn on_event(&self, event: &PlatformEvent) -> Result<(), HarnessError> {
        self.check_world("on-event", World::App)?;
        let app = self
            .runtime
            .app(&self.manifest.id)
            .ok_or_else(Self::missing)?;
        Ok(app.on_event(event)?)
    }

    /// Channel: a notification → the delivery outcome.
    pub fn deliver(&self, notification: &Notification) -> Result<Delivery, HarnessError> {
        self.check_world("deliver", World::Channel)?;
        let channel = self
            .runtime
            .channel(&self.manifest.id)
            .ok_or_else(Self::missing)?;
        Ok(channel.deliver(notification)?)
    }

    // The platform's side: what the plugin is given.

    /// Stores `value` under `key` in the plugin's kv (its configuration, its state).
    pub fn set_kv(&self, key: &str, value: impl AsRef<[u8]>) {
        self.host.state.lock().kv.insert(
            (self.manifest.id.clone(), key.to_owned()),
            value.as_ref().to_vec(),
        );
    }

    pub fn kv(&self, key: &str) -> Option<Vec<u8>> {
        self.host
            .state
            .lock()
            .kv
            .get(&(self.manifest.id.clone(), key.to_owned()))
            .cloned()
    }

    /// Every kv entry of the plugin, keys in order.
    pub fn kv_entries(&self) -> Vec<(String, Vec<u8>)> {
        let state = self.host.state.lock();
        state
            .kv
            .iter()
            .filter(|((plugin, _), _)| *plugin == self.manifest.id)
            .map(|((_, key), value)| (key.clone(), value.clone()))
            .collect()
    }

    pub fn clear_kv(&self) {
        let id = self.manifest.id.clone();
        self.host
            .state
            .lock()
            .kv
            .retain(|(plugin, _), _| *plugin != id);
    }

    /// The latest properties of a device, as `device.get-properties` answers:
    /// `{"Temperature": 21.5}` is served as `{"Temperature": {"value": 21.5, "time": …}}`.
    pub fn set_device_properties(&self, product_key: &str, device_name: &str, properties: &Value) {
        let properties = properties
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(id, value)| {
                        let entry = match value {
                            Value::Object(v) if v.contains_key("value") => value.clone(),
                            _ => json!({"value": value, "time": TEST_AT_MS}),
                        };
                        (id.clone(), entry)
                    })
                    .collect::<Map<String, Value>>()
            })
            .unwrap_or_default();
        self.host
            .state
            .lock()
            .devices
            .insert((product_key.to_owned(), device_name.to_owned()), properties);
    }

    pub fn set_secret(&self, name: &str, value: &str) {
        self.host
            .state
            .lock()
            .secrets
            .insert(name.to_owned(), value.to_owned());
    }

    /// Forgets kv, device properties, secrets and everything recorded.
    pub fn reset(&self) {
        {
            let mut state = self.host.state.lock();
            let id = self.manifest.id.clone();
            state.kv.retain(|(plugin, _), _| *plugin != id);
            state.devices.clear();
            state.secrets.clear();
        }
        self.clear_recorded();
    }

    // What the plugin did since the last `clear_recorded` (or `reset`).

    /// Forgets what the plugin did (publishes, calls, events, log lines); keeps kv and the rest.
    pub fn clear_recorded(&self) {
        self.host.state.lock().clear_recorded();
        *self.log_mark.lock() = self.runtime.logs(&self.manifest.id, usize::MAX).len();
    }

    pub fn published(&self) -> Vec<Published> {
        self.host.state.lock().published.clone()
    }

    pub fn property_sets(&self) -> Vec<PropertySetCall> {
        self.host.state.lock().property_sets.clone()
    }

    pub fn service_calls(&self) -> Vec<ServiceCall> {
        self.host.state.lock().service_calls.clone()
    }

    pub fn raised_events(&self) -> Vec<lotus_plugin::EventInput> {
        self.host.state.lock().raised.clone()
    }

    pub fn updated_events(&self) -> Vec<EventUpdate> {
        self.host.state.lock().updated.clone()
    }

    /// The plugin's log lines (its own `log` calls and the host's lines about it: failures,
    /// denials) since the last [`Harness::clear_recorded`].
    pub fn logs(&self) -> Vec<LogLine> {
        let mark = *self.log_mark.lock();
        let mut lines = self.runtime.logs(&self.manifest.id, usize::MAX);
        lines.drain(..mark.min(lines.len()));
        lines
    }

    /// Everything recorded, as JSON: `published`, `set-property`, `invoke-service`, `raised`,
    /// `updated` (arrays, in call order). Case files match `expect_effects` against this.
    pub fn effects(&self) -> Value {
        let state = self.host.state.lock();
        let published: Vec<Value> = state
            .published
            .iter()
            .map(|p| {
                let (payload, payload_hex) = convert::payload_json(&p.payload);
                json!({"topic": p.topic, "payload": payload, "payload-hex": payload_hex, "qos": p.qos})
            })
            .collect();
        let sets: Vec<Value> = state
            .property_sets
            .iter()
            .map(|s| json!({"product-key": s.product_key, "device-name": s.device_name, "params": convert::parsed_json(&s.params)}))
            .collect();
        let calls: Vec<Value> = state
            .service_calls
            .iter()
            .map(|s| json!({"product-key": s.product_key, "device-name": s.device_name, "identifier": s.identifier, "params": convert::parsed_json(&s.params)}))
            .collect();
        let raised: Vec<Value> = state.raised.iter().map(convert::event_input_json).collect();
        let updated: Vec<Value> = state
            .updated
            .iter()
            .map(|u| json!({"id": u.id, "state": u.state, "note": u.note}))
            .collect();
        json!({
            "published": published,
            "set-property": sets,
            "invoke-service": calls,
            "raised": raised,
            "updated": updated,
        })
    }
}

fn read_text(path: &Path) -> Result<String, HarnessError> {
    std::fs::read_to_string(path).map_err(|source| HarnessError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses a manifest as a node does. A codec that binds no product or topic (first-party and
/// example manifests ship that way; the operator fills `products` in) is bound to
/// [`TEST_PRODUCT_KEY`], with a note saying so.
fn parse_manifest(text: &str) -> Result<(Manifest, Vec<String>), String> {
    match Manifest::from_toml(text) {
        Ok(manifest) => Ok((manifest, Vec::new())),
        Err(lotus_plugin::ManifestError::Field {
            field: "products", ..
        }) => {
            let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
            table.insert(
                "products".to_owned(),
                toml::Value::Array(vec![toml::Value::String(TEST_PRODUCT_KEY.to_owned())]),
            );
            let patched = toml::to_string(&table).map_err(|e| e.to_string())?;
            let manifest = Manifest::from_toml(&patched).map_err(|e| e.to_string())?;
            Ok((
                manifest,
                vec![format!(
                    "the manifest binds the codec to no product; the harness binds it to {TEST_PRODUCT_KEY} (set `products` before installing)"
                )],
            ))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Finds the component of the plugin in `dir` (the directory of its `lotus-plugin.toml`):
///
/// - a Rust crate (`Cargo.toml` there): `<target>/wasm32-wasip2/release/<crate_name>.wasm`, where
///   `<target>` is `$CARGO_TARGET_DIR`, else the first `target/` in `dir` or above it (a member
///   of a workspace builds into the workspace's);
/// - otherwise (JavaScript, Python): `dir/<dir_name>.wasm` with `-` as `_` (what the examples'
///   READMEs build, e.g. `codec_js.wasm`), `dir/<id>.wasm`, or the only `.wasm` file in `dir`.
pub fn find_wasm(dir: &Path) -> Result<PathBuf, HarnessError> {
    let mut tried = Vec::new();
    let cargo_toml = dir.join("Cargo.toml");
    if cargo_toml.is_file() {
        let text = read_text(&cargo_toml)?;
        let name = toml::from_str::<toml::Table>(&text)
            .ok()
            .and_then(|t| {
                let package = t.get("package")?.as_table()?;
                let lib_name = t
                    .get("lib")
                    .and_then(|l| l.get("name"))
                    .and_then(|n| n.as_str());
                lib_name
                    .or_else(|| package.get("name")?.as_str())
                    .map(str::to_owned)
            })
            .ok_or_else(|| {
                HarnessError::Input(format!("{} has no [package] name", cargo_toml.display()))
            })?
            .replace('-', "_");
        let mut targets = Vec::new();
        if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
            let t = PathBuf::from(t);
            targets.push(if t.is_relative() { dir.join(t) } else { t });
        }
        // A member of a workspace builds into the workspace's target dir.
        targets.push(
            dir.ancestors()
                .map(|a| a.join("target"))
                .find(|t| t.is_dir())
                .unwrap_or_else(|| dir.join("target")),
        );
        for target in targets {
            let candidate = target
                .join("wasm32-wasip2/release")
                .join(format!("{name}.wasm"));
            if candidate.is_file() {
                return Ok(candidate);
            }
            tried.push(candidate);
        }
    } else {
        let mut names = Vec::new();
        if let Some(base) = dir.file_name().and_then(|n| n.to_str()) {
            names.push(format!("{}.wasm", base.replace('-', "_")));
        }
        if let Ok(text) = read_text(&dir.join("lotus-plugin.toml"))
            && let Ok(table) = toml::from_str::<toml::Table>(&text)
            && let Some(id) = table.get("id").and_then(|v| v.as_str())
        {
            names.push(format!("{id}.wasm"));
            names.push(format!("{}.wasm", id.replace('-', "_")));
        }
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
            tried.push(candidate);
        }
        let wasm_files: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
            .collect();
        if let [only] = wasm_files.as_slice() {
            return Ok(only.clone());
        }
    }
    let tried: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    Err(HarnessError::Input(format!(
        "no component found for the plugin in {} (looked for {}); build it first or give its path (--wasm)",
        dir.display(),
        tried.join(", ")
    )))
}
