//! The node's policies: where `policies/` lives, the decision log, hot reload, and the three
//! decision points the rest of the node asks through its own interfaces — the API
//! (`lotus.api`), the broker's topic ACL (`lotus.device.topic`, see `lotus_policy::topic`) and
//! plugin capabilities (`lotus.plugin.capability`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use lotus_api::authz::ApiPolicy;
use lotus_api::policies::{DecisionQuery, PolicyAdmin, PolicyRejection};
use lotus_model::scope::{Scope, parse_org, parse_region};
use lotus_plugin::{Capability, CapabilityCheck, CapabilityRequest, DeviceCall, Manifest};
use lotus_policy::{
    DecisionFilter, DecisionLog, DecisionLogConfig, DecisionRecord, PolicyEngine, PolicyWatcher,
};
use serde_json::{Value, json};

/// The policies a node starts with, written to its policy directory on first start so that
/// a city's security team edits files it owns rather than files inside the binary.
const DEFAULT_POLICIES: &[(&str, &str)] = &[
    ("api.rego", include_str!("../../../policies/api.rego")),
    (
        "api_test.rego",
        include_str!("../../../policies/api_test.rego"),
    ),
    (
        "approval.rego",
        include_str!("../../../policies/approval.rego"),
    ),
    (
        "approval_test.rego",
        include_str!("../../../policies/approval_test.rego"),
    ),
    (
        "data/fields.rego",
        include_str!("../../../policies/data/fields.rego"),
    ),
    (
        "data/fields_test.rego",
        include_str!("../../../policies/data/fields_test.rego"),
    ),
    (
        "device/topic.rego",
        include_str!("../../../policies/device/topic.rego"),
    ),
    (
        "device/topic_test.rego",
        include_str!("../../../policies/device/topic_test.rego"),
    ),
    (
        "plugin/capability.rego",
        include_str!("../../../policies/plugin/capability.rego"),
    ),
    (
        "plugin/capability_test.rego",
        include_str!("../../../policies/plugin/capability_test.rego"),
    ),
];

/// A running node's policy engine and what keeps it current.
pub struct NodePolicies {
    pub engine: PolicyEngine,
    pub dir: PathBuf,
    /// Dropping it stops hot reload.
    _watcher: PolicyWatcher,
}

/// Fills an empty policy directory with the defaults, loads it (running every policy test:
/// a node does not start on a policy that fails its own tests), attaches the decision log and
/// starts watching the directory.
pub fn start(
    dir: &Path,
    log: DecisionLogConfig,
    wasm: &[crate::config::WasmBundle],
) -> anyhow::Result<NodePolicies> {
    let has_policies = std::fs::read_dir(dir)
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    if !has_policies {
        for (file, source) in DEFAULT_POLICIES {
            let path = dir.join(file);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            std::fs::write(&path, source)
                .with_context(|| format!("cannot write the default policy {}", path.display()))?;
        }
        tracing::info!(dir = %dir.display(), "wrote the default policies");
    }
    let engine = PolicyEngine::from_dir(dir)
        .with_context(|| format!("the policies in {} do not load", dir.display()))?;
    for bundle in wasm {
        engine
            .mount_wasm(&bundle.package, &bundle.path, &bundle.entrypoint)
            .with_context(|| {
                format!(
                    "policy.wasm: {} (entrypoint {}) cannot serve {}",
                    bundle.path.display(),
                    bundle.entrypoint,
                    bundle.package
                )
            })?;
        tracing::info!(package = %bundle.package, path = %bundle.path.display(),
            "decision point served by a prebuilt OPA Wasm bundle");
    }
    engine.set_decision_log(Some(Arc::new(
        DecisionLog::new(log).context("opening the decision log")?,
    )));
    let watcher = engine
        .watch(dir)
        .with_context(|| format!("cannot watch {} for policy changes", dir.display()))?;
    tracing::info!(dir = %dir.display(), modules = engine.modules().len(), "policies loaded");
    Ok(NodePolicies {
        engine,
        dir: dir.to_path_buf(),
        _watcher: watcher,
    })
}

/// Decisions kept before a cache starts over.
const DECISION_CACHE_LIMIT: usize = 10_000;

/// An answer: allowed, or denied with the reason.
type Answer = Result<(), String>;

/// Answers of one decision point by question, for the life of one policy generation. A cached
/// deny is still written to the decision log: every deny is recorded, cached or not.
struct DecisionCache {
    package: &'static str,
    /// The policy generation the answers belong to, and the answers by question.
    /// Read-locked on every question (plugin host calls ask from every thread), written only
    /// on a miss.
    entries: parking_lot::RwLock<(u64, HashMap<String, Answer>)>,
}

impl DecisionCache {
    fn new(package: &'static str) -> Self {
        DecisionCache {
            package,
            entries: parking_lot::RwLock::new((u64::MAX, HashMap::new())),
        }
    }

    /// The cached answer to `key`, else `decide`'s on `input()` (cached unless the policy
    /// failed). `input` is only built on a miss or to log a cached deny.
    fn answer(
        &self,
        engine: &PolicyEngine,
        key: String,
        input: impl Fn() -> Value,
        decide: impl FnOnce(&Value) -> Result<Result<(), String>, String>,
    ) -> Result<(), String> {
        let generation = engine.generation();
        let hit = {
            let entries = self.entries.read();
            if entries.0 == generation {
                entries.1.get(&key).cloned()
            } else {
                None
            }
        };
        if let Some(hit) = hit {
            if let (Err(reason), Some(log)) = (&hit, engine.decision_log()) {
                let input = input();
                let pick = |keys: &[&str]| {
                    keys.iter()
                        .find_map(|k| input.get(*k).filter(|v| !v.is_null()).cloned())
                        .unwrap_or(Value::Null)
                };
                log.record(DecisionRecord {
                    at_ms: lotus_device::now_ms() as u64,
                    point: self.package.into(),
                    principal: pick(&["principal", "plugin"]),
                    resource: pick(&["resource", "request"]),
                    action: pick(&["action", "capability"])
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    allow: false,
                    reason: Some(reason.clone()),
                    version: engine.package_version(self.package).unwrap_or(0),
                    latency_us: 0,
                });
            }
            return hit;
        }
        // Not cached when the policy failed to evaluate: retried on the next question.
        let answer = decide(&input())
            .map_err(|e| format!("policy {} failed to evaluate: {e}", self.package))?;
        let mut entries = self.entries.write();
        // Answers of an older policy go; an answer of an older policy than the cache's is
        // not kept.
        if entries.0 == u64::MAX || entries.0 < generation {
            *entries = (generation, HashMap::new());
        }
        if entries.0 == generation {
            if entries.1.len() >= DECISION_CACHE_LIMIT {
                entries.1.clear();
            }
            entries.1.insert(key, answer.clone());
        }
        answer
    }
}

/// `lotus.api` for the REST API. Decisions are cached by their whole input: a user's repeated
/// requests on one resource ask the same question.
pub struct PolicyApi {
    engine: PolicyEngine,
    cache: DecisionCache,
}

impl PolicyApi {
    pub fn new(engine: PolicyEngine) -> Self {
        PolicyApi {
            engine,
            cache: DecisionCache::new("lotus.api"),
        }
    }
}

impl ApiPolicy for PolicyApi {
    fn authorize(&self, input: &Value) -> Result<(), String> {
        self.cache.answer(
            &self.engine,
            input.to_string(),
            || input.clone(),
            |input| {
                let d = self
                    .engine
                    .decide("lotus.api", input)
                    .map_err(|e| e.to_string())?;
                Ok(if d.allow {
                    Ok(())
                } else {
                    Err(d.reason.unwrap_or_else(|| "not allowed".into()))
                })
            },
        )
    }

    fn data_fields(&self, input: &Value) -> Result<Value, String> {
        match self.engine.decide("lotus.data.fields", input) {
            Ok(d) if d.allow => self
                .engine
                .eval("data.lotus.data.fields.fields", input)
                .map_err(|e| format!("the policy failed to evaluate: {e}")),
            Ok(d) => Err(d.reason.unwrap_or_else(|| "not allowed".into())),
            Err(e) => Err(format!("the policy failed to evaluate: {e}")),
        }
    }

    fn approval(&self, input: &Value) -> Result<lotus_api::authz::Approval, String> {
        let rule = |name: &str| {
            self.engine
                .eval(&format!("data.lotus.approval.{name}"), input)
                .map_err(|e| format!("the approval policy failed to evaluate {name}: {e}"))
        };
        let required = rule("required")?.as_bool().unwrap_or(false);
        if !required {
            return Ok(lotus_api::authz::Approval::default());
        }
        Ok(lotus_api::authz::Approval {
            required,
            reason: rule("reason")?.as_str().unwrap_or_default().to_string(),
            approvers: rule("approvers")?
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    fn list_scope(&self, principal: &Value, kind: &str) -> Result<Option<Scope>, String> {
        let input = json!({"principal": principal, "kind": kind});
        let value = self
            .engine
            .eval("data.lotus.api.list_scope", &input)
            .map_err(|e| e.to_string())?;
        if value.is_null() {
            return Ok(None);
        }
        let field = |name: &str| value.get(name).and_then(Value::as_str).unwrap_or_default();
        Ok(Some(Scope {
            org: parse_org(field("org")).map_err(|e| format!("list_scope: {e}"))?,
            region: parse_region(match field("region") {
                "" => "/",
                r => r,
            })
            .map_err(|e| format!("list_scope: {e}"))?,
        }))
    }
}

/// `lotus.plugin.capability` for the plugin runtime. Codecs call `log` and `kv` on the
/// uplink path, so decisions are cached per (plugin, version, capability, request); kv keys and
/// URLs are not part of the question (kv is private to the plugin; http is decided by host and
/// port), so a codec's per-message keys share one decision.
pub struct PolicyCapabilities {
    engine: PolicyEngine,
    cache: DecisionCache,
}

impl PolicyCapabilities {
    pub fn new(engine: PolicyEngine) -> Self {
        PolicyCapabilities {
            engine,
            cache: DecisionCache::new("lotus.plugin.capability"),
        }
    }
}

fn capability_request(request: &CapabilityRequest<'_>) -> Value {
    match *request {
        CapabilityRequest::Log | CapabilityRequest::Clock => json!({}),
        CapabilityRequest::Kv { .. } => json!({}),
        CapabilityRequest::Http {
            host, port, method, ..
        } => {
            json!({"host": host, "port": port, "method": method})
        }
        CapabilityRequest::Device {
            product_key,
            device_name,
            operation,
        } => json!({
            "product_key": product_key,
            "device_name": device_name,
            "operation": match operation {
                DeviceCall::GetProperties => "read",
                DeviceCall::SetProperty => "set",
                DeviceCall::InvokeService { .. } => "invoke",
            },
            "service": match operation {
                DeviceCall::InvokeService { identifier } => Some(identifier),
                _ => None,
            },
        }),
        CapabilityRequest::Publish { topic } => json!({"topic": topic}),
        CapabilityRequest::RaiseEvent { event_type, device } => json!({
            "event_type": event_type,
            "device": device.map(|(pk, dn)| json!({"product_key": pk, "device_name": dn})),
            "update": false,
        }),
        CapabilityRequest::UpdateEvent { id, state } => {
            json!({"id": id, "state": state, "update": true})
        }
        CapabilityRequest::Secret { name } => json!({"name": name}),
    }
}

fn capability_name(capability: Capability) -> &'static str {
    capability.name()
}

impl CapabilityCheck for PolicyCapabilities {
    fn check(&self, manifest: &Manifest, request: &CapabilityRequest<'_>) -> Result<(), String> {
        let request_json = capability_request(request);
        let capability = capability_name(request.capability());
        let key = format!(
            "{}\u{0}{}\u{0}{capability}\u{0}{request_json}",
            manifest.id, manifest.version
        );
        let input = || {
            json!({
                "plugin": {
                    "id": manifest.id,
                    "world": manifest.world.name(),
                    "capabilities": manifest.capabilities.iter().map(|c| capability_name(*c)).collect::<Vec<_>>(),
                    "http_allow": manifest.http_allow,
                    "products": manifest.products,
                    "topics": manifest.topics,
                    "secrets": manifest.secrets,
                },
                "capability": capability,
                "request": request_json,
            })
        };
        self.cache.answer(&self.engine, key, input, |input| {
            let d = self
                .engine
                .decide("lotus.plugin.capability", input)
                .map_err(|e| e.to_string())?;
            Ok(if d.allow {
                Ok(())
            } else {
                Err(d.reason.unwrap_or_else(|| {
                    format!(
                        "capability `{capability}` denied to plugin {} by policy",
                        manifest.id
                    )
                }))
            })
        })
    }
}

/// Policy files and the decision log for the API.
pub struct PolicyFiles {
    pub engine: PolicyEngine,
    pub dir: PathBuf,
}

impl PolicyFiles {
    /// The policy file (or its tests file) of a package.
    fn file_of(&self, package: &str, tests: bool) -> Option<String> {
        self.engine
            .modules()
            .into_iter()
            .find(|m| m.package == package && m.test == tests)
            .map(|m| m.file)
    }

    /// Writes a source the engine already serves to the policy directory (temp + rename), so a
    /// restart loads what serves; the watcher sees the same SHA-256 and leaves it alone.
    fn persist(&self, file: &str) -> Result<(), PolicyRejection> {
        let Some(source) = self.engine.source(file) else {
            return Ok(());
        };
        let path = self.dir.join(file);
        let temp = path.with_extension("rego.tmp");
        std::fs::write(&temp, source)
            .and_then(|()| std::fs::rename(&temp, &path))
            .map_err(|e| {
                PolicyRejection::Invalid(format!(
                    "the new version serves but could not be saved to {}: {e}",
                    path.display()
                ))
            })
    }
}

fn rejection(e: lotus_policy::PolicyError) -> PolicyRejection {
    match e {
        lotus_policy::PolicyError::UnknownFile(f) => {
            PolicyRejection::NotFound(format!("no policy file {f} is loaded"))
        }
        other => PolicyRejection::Invalid(other.to_string()),
    }
}

impl PolicyAdmin for PolicyFiles {
    fn modules(&self) -> Vec<Value> {
        self.engine
            .modules()
            .into_iter()
            .filter_map(|m| serde_json::to_value(m).ok())
            .collect()
    }

    fn package(&self, package: &str) -> Option<Value> {
        let file = self.file_of(package, false)?;
        let tests = self.file_of(package, true);
        let history: Vec<Value> = self
            .engine
            .history(&file)
            .into_iter()
            .map(|v| json!({"version": v.version, "sha256": v.sha256, "atMs": v.at_ms}))
            .collect();
        Some(json!({
            "package": package,
            "version": self.engine.package_version(package),
            "file": file,
            "source": self.engine.source(&file),
            "testFile": tests,
            "tests": tests.as_deref().and_then(|t| self.engine.source(t)),
            "history": history,
        }))
    }

    fn replace(&self, package: &str, tests: bool, source: &str) -> Result<Value, PolicyRejection> {
        let file = match self.file_of(package, tests) {
            Some(f) => f,
            None if tests => match self.file_of(package, false) {
                // A package without tests gets its tests file next to the policy.
                Some(policy) => policy.replace(".rego", "_test.rego"),
                None => {
                    return Err(PolicyRejection::NotFound(format!(
                        "no policy package '{package}' is loaded"
                    )));
                }
            },
            None => {
                return Err(PolicyRejection::NotFound(format!(
                    "no policy package '{package}' is loaded: add a new package as a file in {}",
                    self.dir.display()
                )));
            }
        };
        self.engine
            .write_file(&self.dir, &file, source)
            .map_err(rejection)?;
        self.package(package).ok_or_else(|| {
            PolicyRejection::Invalid(format!(
                "package '{package}' is gone after the change: its source declares another package"
            ))
        })
    }

    fn rollback(&self, package: &str, tests: bool) -> Result<Value, PolicyRejection> {
        let file = self.file_of(package, tests).ok_or_else(|| {
            PolicyRejection::NotFound(format!("no policy package '{package}' is loaded"))
        })?;
        self.engine.rollback(&file).map_err(rejection)?;
        self.persist(&file)?;
        self.package(package).ok_or_else(|| {
            PolicyRejection::Invalid(format!("package '{package}' is gone after the rollback"))
        })
    }

    fn decisions(&self, query: &DecisionQuery) -> Vec<Value> {
        let Some(log) = self.engine.decision_log() else {
            return Vec::new();
        };
        log.query(&DecisionFilter {
            point: query.point.clone(),
            allow: query.allow,
            principal_contains: query.principal.clone(),
            since_ms: query.since,
            until_ms: query.until,
            limit: query.limit,
        })
        .into_iter()
        .filter_map(|r| serde_json::to_value(r).ok())
        .collect()
    }
}
