//! The node's policies: where `policies/` lives, the decision log, hot reload, and the three
//! decision points the rest of the node asks through its own interfaces — the API
//! (`lotus.api`), the broker's topic ACL (`lotus.device.topic`, see `lotus_policy::topic`) and
//! plugin capabilities (`lotus.plugin.capability`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use lotus_api::authz::ApiPolicy;
use lotus_api::policies::{DecisionQuery, PolicyAdmin, PolicyRejection};
use lotus_model::scope::{Scope, parse_org, parse_region};
use lotus_plugin::{Capability, CapabilityCheck, CapabilityRequest, DeviceCall, Manifest};
use lotus_policy::{DecisionFilter, DecisionLog, DecisionLogConfig, PolicyEngine, PolicyWatcher};
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
pub fn start(dir: &Path, log: DecisionLogConfig) -> anyhow::Result<NodePolicies> {
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

/// `lotus.api` for the REST API.
pub struct PolicyApi(pub PolicyEngine);

impl ApiPolicy for PolicyApi {
    fn authorize(&self, input: &Value) -> Result<(), String> {
        match self.0.decide("lotus.api", input) {
            Ok(d) if d.allow => Ok(()),
            Ok(d) => Err(d.reason.unwrap_or_else(|| "not allowed".into())),
            Err(e) => Err(format!("the policy failed to evaluate: {e}")),
        }
    }

    fn data_fields(&self, input: &Value) -> Result<Value, String> {
        match self.0.decide("lotus.data.fields", input) {
            Ok(d) if d.allow => self
                .0
                .eval("data.lotus.data.fields.fields", input)
                .map_err(|e| format!("the policy failed to evaluate: {e}")),
            Ok(d) => Err(d.reason.unwrap_or_else(|| "not allowed".into())),
            Err(e) => Err(format!("the policy failed to evaluate: {e}")),
        }
    }

    fn list_scope(&self, principal: &Value, kind: &str) -> Result<Option<Scope>, String> {
        let input = json!({"principal": principal, "kind": kind});
        let value = self
            .0
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

/// `lotus.plugin.capability` for the plugin runtime.
pub struct PolicyCapabilities(pub PolicyEngine);

fn capability_request(request: &CapabilityRequest<'_>) -> Value {
    match *request {
        CapabilityRequest::Log | CapabilityRequest::Clock => json!({}),
        CapabilityRequest::Kv { key } => json!({"key": key}),
        CapabilityRequest::Http {
            host,
            port,
            method,
            url,
        } => json!({"host": host, "port": port, "method": method, "url": url}),
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
        let input = json!({
            "plugin": {
                "id": manifest.id,
                "world": manifest.world.name(),
                "capabilities": manifest.capabilities.iter().map(|c| capability_name(*c)).collect::<Vec<_>>(),
                "http_allow": manifest.http_allow,
                "products": manifest.products,
                "topics": manifest.topics,
                "secrets": manifest.secrets,
            },
            "capability": capability_name(request.capability()),
            "request": capability_request(request),
        });
        match self.0.decide("lotus.plugin.capability", &input) {
            Ok(d) if d.allow => Ok(()),
            Ok(d) => Err(d.reason.unwrap_or_else(|| {
                format!(
                    "capability `{}` denied to plugin {} by policy",
                    capability_name(request.capability()),
                    manifest.id
                )
            })),
            Err(e) => Err(format!("policy lotus.plugin.capability failed: {e}")),
        }
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
