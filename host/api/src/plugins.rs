//! Wasm plugins: install (multipart upload of a `lotus-plugin.toml` manifest and a component),
//! upgrade, roll back, disable, enable, resume, remove, logs; the dead letters of messages a
//! plugin failed on; and which codec plugin decodes a `dataFormat: custom` product.
//!
//! The API never links the Wasm runtime: it reaches it through [`PluginManager`], which the
//! binary implements. A component is validated (manifest, world, imports, size) and compiled
//! before anything is stored, and stored before it is activated, so what runs is always what a
//! restarted node will load again.

use std::any::Any;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::StatusCode;
use lotus_model::product::DataFormat;
use lotus_storage::{
    DeadLetterFilter, DeadLetterRow, NewPluginVersion, PLUGIN_ACTIVE, PLUGIN_PENDING_APPROVAL,
    PluginRow, PluginSecretRow, PluginVersionRow,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use crate::ApiState;
use crate::auth::Authenticated;
use crate::problem::{ApiError, ApiResult, Json, Path, Query};

/// Largest upload (manifest + component + multipart framing) the plugin routes accept.
pub const MAX_UPLOAD_BYTES: usize = 32 * 1024 * 1024;
/// Largest manifest accepted; real manifests are a few hundred bytes.
const MAX_MANIFEST_BYTES: usize = 64 * 1024;
/// Largest vendor script accepted; real data-parsing scripts are a few KiB.
const MAX_SCRIPT_BYTES: usize = 1024 * 1024;
/// The kv key the script runner reads its script from (`sdk/plugin-js/src/adapter.js`).
const SCRIPT_KV_KEY: &str = "script";
/// Entry points the script adapter recognises; a script with none of them cannot decode.
const SCRIPT_ENTRY_POINTS: [&str; 4] = [
    "rawDataToProtocol",
    "transformPayload",
    "decodeUplink",
    "Decode",
];
/// Longest secret name and value an operator may set.
const MAX_SECRET_NAME: usize = 64;
const MAX_SECRET_BYTES: usize = 16 * 1024;
const DEFAULT_LOG_LINES: usize = 100;
const MAX_LOG_LINES: usize = 1000;
const DEFAULT_DEAD_LETTERS: i64 = 50;
const MAX_DEAD_LETTERS: i64 = 500;

/// A component that passed validation, ready to run.
pub struct PreparedUpload {
    pub id: String,
    pub version: String,
    /// The WIT world name (`codec`, `rule`, `event-handler`, `app`, `channel`).
    pub world: String,
    /// Lower-case hex SHA-256 of the component.
    pub sha256: String,
    /// The runtime's compiled plugin, handed back to [`PluginManager::activate`].
    pub compiled: Box<dyn Any + Send>,
}

/// Why an upload was refused; the message names the field or part to fix.
#[derive(Debug)]
pub enum UploadRejection {
    Manifest(String),
    Component(String),
}

/// The plugin runtime as the API drives it; implemented by the binary over `lotus-plugin`.
pub trait PluginManager: Send + Sync + 'static {
    /// Parses the manifest and validates and compiles the component (CPU heavy: the API calls
    /// it on a blocking thread).
    fn prepare(&self, manifest: &str, wasm: &[u8]) -> Result<PreparedUpload, UploadRejection>;
    /// Makes a prepared version the one that serves its id, replacing any other atomically.
    fn activate(&self, prepared: PreparedUpload);
    /// Stops serving a plugin; `false` when it was not loaded.
    fn deactivate(&self, id: &str) -> bool;
    /// Lifts a suspension; `false` when the plugin is not loaded.
    fn resume(&self, id: &str) -> bool;
    /// The running plugin's state (version, suspension, failures, metrics), when loaded.
    fn status(&self, id: &str) -> Option<Value>;
    /// The newest log lines, oldest first.
    fn logs(&self, id: &str, limit: usize) -> Vec<Value>;
    /// The product keys a stored manifest binds the plugin to.
    fn manifest_products(&self, manifest: &str) -> Result<Vec<String>, String>;
    /// The secret names a stored manifest lists (what the plugin may read).
    fn manifest_secrets(&self, manifest: &str) -> Result<Vec<String>, String>;
    /// The capabilities a stored manifest requests (`log`, `http`, …).
    fn manifest_capabilities(&self, manifest: &str) -> Result<Vec<String>, String>;
    /// The script runner component that runs vendor scripts uploaded as they are (a `script`
    /// part instead of `wasm`); `None` when the node has none configured.
    fn script_runner(&self) -> Option<Arc<Vec<u8>>>;
    /// Sends a notification through a running channel plugin (blocking: the API calls it on a
    /// blocking thread); the plugin's delivery report as `{status, providerId, detail}`.
    fn deliver(&self, id: &str, notification: TestNotification) -> Result<Value, DeliverError>;
}

/// A notification an operator sends to check a channel plugin end to end.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestNotification {
    /// The channel name the plugin receives (`notification.channel`); the plugin id when absent.
    #[serde(default)]
    pub channel: String,
    /// Phone numbers, addresses or URLs, as the channel understands them.
    pub recipients: Vec<String>,
    pub subject: String,
    pub body: String,
}

/// Why a test delivery did not reach the plugin or the plugin failed it.
#[derive(Debug)]
pub enum DeliverError {
    /// Not installed, disabled, suspended or not a channel.
    NotRunning(String),
    /// The plugin returned an error or hit a bound (its message says which).
    Failed(String),
}

/// A stored version of a plugin.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginVersion {
    pub version: String,
    /// Hex SHA-256 of the component.
    pub sha256: String,
    pub size: i64,
    pub installed_at: i64,
    pub installed_by: String,
}

impl From<PluginVersionRow> for PluginVersion {
    fn from(v: PluginVersionRow) -> Self {
        PluginVersion {
            version: v.version,
            sha256: v.sha256,
            size: v.size,
            installed_at: v.installed_at,
            installed_by: v.installed_by,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Plugin {
    pub id: String,
    /// `codec`, `rule`, `event-handler`, `app` or `channel`.
    pub world: String,
    pub active_version: String,
    pub enabled: bool,
    /// `active` or `suspended`.
    pub status: String,
    /// Why the plugin was suspended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Every stored version, oldest first (only on a single plugin).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<PluginVersion>>,
    /// What the runtime reports about the loaded plugin (only on a single plugin; absent
    /// when the plugin is disabled or not loaded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Value>,
}

impl From<PluginRow> for Plugin {
    fn from(r: PluginRow) -> Self {
        Plugin {
            id: r.id,
            world: r.world,
            active_version: r.active_version,
            enabled: r.enabled,
            status: r.status,
            status_reason: r.status_reason,
            created_at: r.created_at,
            updated_at: r.updated_at,
            versions: None,
            runtime: None,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct PluginList {
    pub items: Vec<Plugin>,
}

#[derive(Serialize, ToSchema)]
pub struct PluginLogs {
    /// `{atMs, level, source, version, message}` lines, oldest first.
    pub items: Vec<Value>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub id: i64,
    pub at: i64,
    pub plugin: String,
    pub product_key: String,
    pub device_name: String,
    pub topic: String,
    /// The message bytes, hex.
    pub payload_hex: String,
    /// A short code: `timeout`, `out_of_fuel`, `memory_limit`, `trap`, `invalid_output`, …
    pub reason: String,
    pub detail: String,
}

impl From<DeadLetterRow> for DeadLetter {
    fn from(d: DeadLetterRow) -> Self {
        DeadLetter {
            id: d.id,
            at: d.at,
            plugin: d.plugin_id,
            product_key: d.product_key,
            device_name: d.device_name,
            topic: d.topic,
            payload_hex: hex::encode(d.payload),
            reason: d.reason,
            detail: d.detail,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeadLetterList {
    /// Newest first.
    pub items: Vec<DeadLetter>,
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct LogsQuery {
    /// Lines to return (newest ones), 1 to 1000; 100 when absent.
    pub limit: Option<usize>,
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "snake_case")]
pub struct DeadLetterQuery {
    pub plugin: Option<String>,
    pub product_key: Option<String>,
    /// Only dead letters older than this id (the last id of the previous page).
    pub before: Option<i64>,
    /// 1 to 500; 50 when absent.
    pub limit: Option<i64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodecBinding {
    /// The id of an installed codec plugin.
    #[schema(example = "water-meter")]
    pub plugin: String,
}

fn manager(state: &ApiState) -> ApiResult<Arc<dyn PluginManager>> {
    state.plugins.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node runs no plugin runtime",
        )
    })
}

/// The parts of an upload: the manifest and either a component or a vendor script.
struct Upload {
    manifest: String,
    wasm: Option<Vec<u8>>,
    script: Option<String>,
}

async fn read_upload(mut multipart: Multipart) -> ApiResult<Upload> {
    let mut manifest = None;
    let mut wasm = None;
    let mut script = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(e)),
        };
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "manifest" => {
                let bytes = field.bytes().await.map_err(multipart_error)?;
                if bytes.len() > MAX_MANIFEST_BYTES {
                    return Err(ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("manifest: larger than {MAX_MANIFEST_BYTES} bytes"),
                    ));
                }
                let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
                    ApiError::unprocessable("manifest: lotus-plugin.toml must be UTF-8 text")
                })?;
                manifest = Some(text);
            }
            "wasm" => wasm = Some(field.bytes().await.map_err(multipart_error)?.to_vec()),
            "script" => {
                let bytes = field.bytes().await.map_err(multipart_error)?;
                script = Some(check_script(&bytes)?);
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unexpected part '{other}': send the parts 'manifest' (lotus-plugin.toml) \
                     and 'wasm' (the component) or 'script' (a vendor's JavaScript codec)"
                )));
            }
        }
    }
    let manifest = manifest.ok_or_else(|| {
        ApiError::bad_request("the part 'manifest' (lotus-plugin.toml text) is missing")
    })?;
    match (&wasm, &script) {
        (None, None) => {
            return Err(ApiError::bad_request(
                "the part 'wasm' (the .wasm component) or 'script' (a vendor's JavaScript \
                 codec) is missing",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "send either 'wasm' or 'script', not both: a script runs in the node's script \
                 runner component",
            ));
        }
        (Some(w), None) if w.is_empty() => {
            return Err(ApiError::unprocessable("wasm: the component is empty"));
        }
        _ => {}
    }
    Ok(Upload {
        manifest,
        wasm,
        script,
    })
}

/// A vendor script as uploaded: UTF-8, bounded, and defining an entry point the adapter calls.
/// Whether it compiles is known at its first call (a `script does not compile` codec error that
/// dead-letters the message and shows in the plugin's log).
fn check_script(bytes: &[u8]) -> ApiResult<String> {
    if bytes.len() > MAX_SCRIPT_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("script: larger than {MAX_SCRIPT_BYTES} bytes"),
        ));
    }
    let text = String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::unprocessable("script: the script must be UTF-8 text"))?;
    if !SCRIPT_ENTRY_POINTS.iter().any(|name| text.contains(name)) {
        return Err(ApiError::unprocessable(format!(
            "script: defines none of {}: an Alibaba script needs rawDataToProtocol, a \
             ChirpStack one decodeUplink (v4) or Decode (v3)",
            SCRIPT_ENTRY_POINTS.join(", ")
        )));
    }
    Ok(text)
}

/// The component an upload runs: its own, or for a script the node's script runner.
fn component_of(manager: &dyn PluginManager, upload: &mut Upload) -> ApiResult<Arc<Vec<u8>>> {
    if let Some(wasm) = upload.wasm.take() {
        return Ok(Arc::new(wasm));
    }
    manager.script_runner().ok_or_else(|| {
        ApiError::unprocessable(
            "script: this node has no script runner configured: set `plugins.script_runner` \
             to script_runner.wasm (built by sdk/plugin-js/build.mjs --runner), or upload a \
             component built with build.mjs --script",
        )
    })
}

/// Before a version with a script serves, the script runner must find that script in its kv.
async fn store_script(state: &ApiState, id: &str, script: Option<&str>) -> ApiResult<()> {
    if let Some(script) = script {
        state
            .store
            .plugin_kv_set(id, SCRIPT_KV_KEY, script.as_bytes())
            .await?;
    }
    Ok(())
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the upload is larger than {MAX_UPLOAD_BYTES} bytes"),
        )
    } else {
        ApiError::bad_request(format!(
            "the multipart upload is malformed: {}",
            e.body_text()
        ))
    }
}

async fn prepare(
    manager: Arc<dyn PluginManager>,
    manifest: String,
    wasm: Arc<Vec<u8>>,
) -> ApiResult<PreparedUpload> {
    let prepared = tokio::task::spawn_blocking(move || manager.prepare(&manifest, &wasm))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("validating the component failed: {e}"),
            )
        })?;
    prepared.map_err(|r| match r {
        UploadRejection::Manifest(m) => ApiError::unprocessable(format!("manifest: {m}")),
        UploadRejection::Component(m) => ApiError::unprocessable(format!("wasm: {m}")),
    })
}

async fn plugin_or_404(state: &ApiState, id: &str) -> ApiResult<PluginRow> {
    state
        .store
        .get_plugin(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("plugin '{id}' not found")))
}

async fn detailed(state: &ApiState, row: PluginRow) -> ApiResult<Plugin> {
    let versions = state.store.plugin_versions(&row.id).await?;
    let runtime = state.plugins.as_ref().and_then(|m| m.status(&row.id));
    let mut out = Plugin::from(row);
    out.versions = Some(versions.into_iter().map(PluginVersion::from).collect());
    out.runtime = runtime;
    Ok(out)
}

/// Loads a stored version into the runtime (enable, rollback).
async fn load_version(state: &ApiState, id: &str, version: &str) -> ApiResult<PreparedUpload> {
    let artifact = state.store.plugin_artifact(id, version).await?;
    let prepared = prepare(manager(state)?, artifact.manifest, Arc::new(artifact.wasm))
        .await
        .map_err(|e| {
            ApiError::conflict(format!(
                "stored version '{version}' of plugin '{id}' no longer loads: {}",
                e.detail
            ))
        })?;
    store_script(state, id, artifact.script.as_deref()).await?;
    Ok(prepared)
}

/// Install a plugin: multipart parts `manifest` (lotus-plugin.toml) and `wasm` (the
/// component), or `manifest` and `script` (a vendor's Alibaba or ChirpStack JavaScript codec,
/// as it is; it runs in the node's script runner). It is validated, stored with its SHA-256
/// and activated — or, when the approval policy wants someone's sign-off (a plugin that calls
/// out over `http`), stored as `pending_approval` (202) until approved.
#[utoipa::path(post, path = "/api/v1/plugins", tag = "plugins", security(("bearer" = [])),
    request_body(content_type = "multipart/form-data", description = "parts: manifest (lotus-plugin.toml text), and wasm (the component) or script (a vendor JavaScript codec)"),
    responses((status = 201, body = Plugin), (status = 202, body = Plugin), (status = 400, body = crate::problem::Problem),
        (status = 409, body = crate::problem::Problem), (status = 413, body = crate::problem::Problem),
        (status = 422, body = crate::problem::Problem)))]
pub async fn install(
    State(state): State<ApiState>,
    user: Authenticated,
    multipart: Multipart,
) -> ApiResult<(StatusCode, Json<Plugin>)> {
    crate::authz::global(&state, &user, "plugin", "write", "*")?;
    let manager = manager(&state)?;
    let mut upload = read_upload(multipart).await?;
    let wasm = component_of(manager.as_ref(), &mut upload)?;
    let prepared = prepare(manager.clone(), upload.manifest.clone(), wasm.clone()).await?;
    let sha256 = hex::encode(Sha256::digest(wasm.as_slice()));
    let row = state
        .store
        .install_plugin(&NewPluginVersion {
            plugin_id: &prepared.id,
            version: &prepared.version,
            world: &prepared.world,
            manifest: &upload.manifest,
            wasm: &wasm,
            sha256: &sha256,
            installed_by: &user.user.username,
            script: upload.script.as_deref(),
        })
        .await?;
    tracing::info!(plugin = %row.id, version = %row.active_version, sha256,
        script = upload.script.is_some(), "plugin installed");
    crate::audit::record(
        &state,
        &user.user.username,
        "plugin.install",
        &format!("plugin:{}", row.id),
        "ok",
        serde_json::json!({"version": row.active_version, "sha256": sha256}),
    )
    .await;
    store_script(&state, &row.id, upload.script.as_deref()).await?;
    if let Some(approval) = approval_needed(&state, &user, &row.id, &upload.manifest)? {
        let row = wait_for_approval(&state, &row.id, &approval).await?;
        return Ok((StatusCode::ACCEPTED, Json(detailed(&state, row).await?)));
    }
    manager.activate(prepared);
    Ok((StatusCode::CREATED, Json(detailed(&state, row).await?)))
}

/// Asks `lotus.approval` whether installing this manifest needs someone's sign-off.
fn approval_needed(
    state: &ApiState,
    user: &Authenticated,
    id: &str,
    manifest: &str,
) -> ApiResult<Option<crate::authz::Approval>> {
    let capabilities = manager(state)?
        .manifest_capabilities(manifest)
        .map_err(ApiError::unprocessable)?;
    let input = serde_json::json!({
        "principal": crate::authz::principal(user),
        "action": "plugin.install",
        "resource": {"kind": "plugin", "id": id, "capabilities": capabilities},
    });
    let approval = state.policy.approval(&input).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("approval policy: {e}"),
        )
    })?;
    Ok(approval.required.then_some(approval))
}

/// Marks the plugin as waiting: stored, not running (also after a restart) until approved.
async fn wait_for_approval(
    state: &ApiState,
    id: &str,
    approval: &crate::authz::Approval,
) -> ApiResult<lotus_storage::PluginRow> {
    let reason = format!(
        "waiting for approval by {} (POST /api/v1/plugins/{id}/approve): {}",
        approval.approvers.join(" or "),
        approval.reason
    );
    tracing::info!(plugin = %id, approvers = ?approval.approvers, "plugin waits for approval");
    Ok(state
        .store
        .set_plugin_status(id, PLUGIN_PENDING_APPROVAL, Some(&reason))
        .await?)
}

/// Approve a plugin that waits for approval (`lotus.approval`, e.g. one that calls out over
/// `http`): the caller must hold one of the approving roles and must not have installed the
/// version themselves. The plugin then starts serving.
#[utoipa::path(post, path = "/api/v1/plugins/{id}/approve", tag = "plugins", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Plugin), (status = 403, body = crate::problem::Problem),
        (status = 404, body = crate::problem::Problem), (status = 409, body = crate::problem::Problem)))]
pub async fn approve(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<Plugin>> {
    let manager = manager(&state)?;
    let current = plugin_or_404(&state, &id).await?;
    if current.status != PLUGIN_PENDING_APPROVAL {
        return Err(ApiError::conflict(format!(
            "plugin '{id}' is not waiting for approval (it is {})",
            current.status
        )));
    }
    let artifact = state
        .store
        .plugin_artifact(&id, &current.active_version)
        .await?;
    let approval = approval_needed(&state, &user, &id, &artifact.manifest)?.unwrap_or_default();
    if approval.required
        && !approval
            .approvers
            .iter()
            .any(|role| user.user.roles.iter().any(|r| r == role))
    {
        return Err(ApiError::forbidden(format!(
            "approving plugin '{id}' needs the role {}: {}",
            approval.approvers.join(" or "),
            approval.reason
        )));
    }
    let installer = state
        .store
        .plugin_versions(&id)
        .await?
        .into_iter()
        .find(|v| v.version == current.active_version)
        .map(|v| v.installed_by)
        .unwrap_or_default();
    if installer == user.user.username {
        return Err(ApiError::forbidden(format!(
            "you installed version {} of plugin '{id}': someone else must approve it",
            current.active_version
        )));
    }
    if current.enabled {
        let prepared = load_version(&state, &id, &current.active_version).await?;
        manager.activate(prepared);
    }
    let row = state
        .store
        .set_plugin_status(&id, PLUGIN_ACTIVE, None)
        .await?;
    tracing::info!(plugin = %id, version = %row.active_version, by = %user.user.username,
        installed_by = %installer, "plugin approved");
    crate::audit::record(
        &state,
        &user.user.username,
        "plugin.approve",
        &format!("plugin:{id}"),
        "ok",
        serde_json::json!({"version": row.active_version, "installedBy": installer}),
    )
    .await;
    Ok(Json(detailed(&state, row).await?))
}

/// Upgrade a plugin to a new version (same multipart parts as install). The new version
/// replaces the old one atomically; the old one stays stored for a rollback.
#[utoipa::path(put, path = "/api/v1/plugins/{id}", tag = "plugins", security(("bearer" = [])),
    params(("id" = String, Path)),
    request_body(content_type = "multipart/form-data", description = "parts: manifest (lotus-plugin.toml text), and wasm (the component) or script (a vendor JavaScript codec)"),
    responses((status = 200, body = Plugin), (status = 404, body = crate::problem::Problem),
        (status = 409, body = crate::problem::Problem), (status = 413, body = crate::problem::Problem),
        (status = 422, body = crate::problem::Problem)))]
pub async fn upgrade(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
    multipart: Multipart,
) -> ApiResult<Json<Plugin>> {
    crate::authz::global(&state, &user, "plugin", "write", &id)?;
    let manager = manager(&state)?;
    plugin_or_404(&state, &id).await?;
    let mut upload = read_upload(multipart).await?;
    let wasm = component_of(manager.as_ref(), &mut upload)?;
    let prepared = prepare(manager.clone(), upload.manifest.clone(), wasm.clone()).await?;
    if prepared.id != id {
        return Err(ApiError::unprocessable(format!(
            "manifest: id is '{}' but this upgrades plugin '{id}'",
            prepared.id
        )));
    }
    let sha256 = hex::encode(Sha256::digest(wasm.as_slice()));
    let row = state
        .store
        .upgrade_plugin(&NewPluginVersion {
            plugin_id: &id,
            version: &prepared.version,
            world: &prepared.world,
            manifest: &upload.manifest,
            wasm: &wasm,
            sha256: &sha256,
            installed_by: &user.user.username,
            script: upload.script.as_deref(),
        })
        .await?;
    tracing::info!(plugin = %id, version = %row.active_version, sha256,
        script = upload.script.is_some(), "plugin upgraded");
    if let Some(approval) = approval_needed(&state, &user, &id, &upload.manifest)? {
        // The operator asked to replace the running version; until someone approves the new
        // one, neither runs.
        manager.deactivate(&id);
        store_script(&state, &id, upload.script.as_deref()).await?;
        let row = wait_for_approval(&state, &id, &approval).await?;
        return Ok(Json(detailed(&state, row).await?));
    }
    if row.enabled {
        store_script(&state, &id, upload.script.as_deref()).await?;
        manager.activate(prepared);
    }
    Ok(Json(detailed(&state, row).await?))
}

/// Roll a plugin back to the version installed before the active one.
#[utoipa::path(post, path = "/api/v1/plugins/{id}/rollback", tag = "plugins", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Plugin), (status = 404, body = crate::problem::Problem),
        (status = 409, body = crate::problem::Problem)))]
pub async fn rollback(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<Plugin>> {
    crate::authz::global(&state, &user, "plugin", "write", &id)?;
    let manager = manager(&state)?;
    let previous = state.store.previous_plugin_version(&id).await?;
    let prepared = load_version(&state, &id, &previous.version).await?;
    let row = state
        .store
        .set_active_plugin_version(&id, &previous.version)
        .await?;
    tracing::info!(plugin = %id, version = %row.active_version, "plugin rolled back");
    if row.enabled {
        manager.activate(prepared);
    }
    Ok(Json(detailed(&state, row).await?))
}

/// List installed plugins.
#[utoipa::path(get, path = "/api/v1/plugins", tag = "plugins", security(("bearer" = [])),
    responses((status = 200, body = PluginList)))]
pub async fn list(
    State(state): State<ApiState>,
    user: Authenticated,
) -> ApiResult<Json<PluginList>> {
    crate::authz::global(&state, &user, "plugin", "read", "*")?;
    let rows = state.store.list_plugins().await?;
    Ok(Json(PluginList {
        items: rows.into_iter().map(Plugin::from).collect(),
    }))
}

/// A plugin with its versions and what the runtime reports about it.
#[utoipa::path(get, path = "/api/v1/plugins/{id}", tag = "plugins", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Plugin), (status = 404, body = crate::problem::Problem)))]
pub async fn get(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<Plugin>> {
    crate::authz::global(&state, &user, "plugin", "read", &id)?;
    let row = plugin_or_404(&state, &id).await?;
    Ok(Json(detailed(&state, row).await?))
}

/// Stop running a plugin (it stays installed). Messages for a disabled codec become dead
/// letters.
#[utoipa::path(post, path = "/api/v1/plugins/{id}/disable", tag = "plugins", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Plugin), (status = 404, body = crate::problem::Problem)))]
pub async fn disable(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<Plugin>> {
    crate::authz::global(&state, &user, "plugin", "write", &id)?;
    let manager = manager(&state)?;
    let row = state.store.set_plugin_enabled(&id, false).await?;
    manager.deactivate(&id);
    tracing::info!(plugin = %id, "plugin disabled");
    Ok(Json(detailed(&state, row).await?))
}

/// Run a disabled plugin again (its active version).
#[utoipa::path(post, path = "/api/v1/plugins/{id}/enable", tag = "plugins", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Plugin), (status = 404, body = crate::problem::Problem),
        (status = 409, body = crate::problem::Problem)))]
pub async fn enable(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<Plugin>> {
    crate::authz::global(&state, &user, "plugin", "write", &id)?;
    let manager = manager(&state)?;
    let current = plugin_or_404(&state, &id).await?;
    let prepared = load_version(&state, &id, &current.active_version).await?;
    let row = state.store.set_plugin_enabled(&id, true).await?;
    manager.activate(prepared);
    tracing::info!(plugin = %id, "plugin enabled");
    Ok(Json(detailed(&state, row).await?))
}

/// Lift a suspension (after the cause is fixed); the failure count starts again.
#[utoipa::path(post, path = "/api/v1/plugins/{id}/resume", tag = "plugins", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Plugin), (status = 404, body = crate::problem::Problem),
        (status = 409, body = crate::problem::Problem)))]
pub async fn resume(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<Plugin>> {
    crate::authz::global(&state, &user, "plugin", "write", &id)?;
    let manager = manager(&state)?;
    let current = plugin_or_404(&state, &id).await?;
    if !current.enabled {
        return Err(ApiError::conflict(format!(
            "plugin '{id}' is disabled: enable it instead"
        )));
    }
    // A plugin suspended before a restart is not loaded at start: resuming loads it.
    if !manager.resume(&id) {
        let prepared = load_version(&state, &id, &current.active_version).await?;
        manager.activate(prepared);
    }
    let row = state
        .store
        .set_plugin_status(&id, PLUGIN_ACTIVE, None)
        .await?;
    state
        .store
        .clear_open_alarm(
            "",
            "",
            &lotus_storage::plugin_suspended_alarm_type(&id),
            &user.user.username,
            lotus_device::now_ms(),
        )
        .await?;
    tracing::info!(plugin = %id, "plugin resumed");
    Ok(Json(detailed(&state, row).await?))
}

/// Remove a plugin and all its versions. Refused while a product uses it as its codec.
#[utoipa::path(delete, path = "/api/v1/plugins/{id}", tag = "plugins", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::problem::Problem),
        (status = 409, body = crate::problem::Problem)))]
pub async fn delete(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    crate::authz::global(&state, &user, "plugin", "delete", &id)?;
    let manager = manager(&state)?;
    state.store.delete_plugin(&id).await?;
    manager.deactivate(&id);
    tracing::info!(plugin = %id, "plugin removed");
    crate::audit::record(
        &state,
        &user.user.username,
        "plugin.delete",
        &format!("plugin:{id}"),
        "ok",
        serde_json::json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// A plugin's newest log lines: its own `log` calls and what the host recorded about it
/// (traps, limits, denials, suspension).
#[utoipa::path(get, path = "/api/v1/plugins/{id}/logs", tag = "plugins", security(("bearer" = [])),
    params(("id" = String, Path), LogsQuery),
    responses((status = 200, body = PluginLogs), (status = 404, body = crate::problem::Problem)))]
pub async fn logs(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Json<PluginLogs>> {
    crate::authz::global(&state, &user, "plugin", "read", &id)?;
    let limit = q.limit.unwrap_or(DEFAULT_LOG_LINES);
    if !(1..=MAX_LOG_LINES).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_LOG_LINES}"
        )));
    }
    plugin_or_404(&state, &id).await?;
    let items = manager(&state)?.logs(&id, limit);
    Ok(Json(PluginLogs { items }))
}

/// Messages plugins failed on (timeout, fuel, memory, trap, invalid output, plugin missing),
/// newest first.
#[utoipa::path(get, path = "/api/v1/dead-letters", tag = "plugins", security(("bearer" = [])),
    params(DeadLetterQuery), responses((status = 200, body = DeadLetterList)))]
pub async fn dead_letters(
    State(state): State<ApiState>,
    user: Authenticated,
    Query(q): Query<DeadLetterQuery>,
) -> ApiResult<Json<DeadLetterList>> {
    crate::authz::global(&state, &user, "dead_letter", "read", "*")?;
    let limit = q.limit.unwrap_or(DEFAULT_DEAD_LETTERS);
    if !(1..=MAX_DEAD_LETTERS).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_DEAD_LETTERS}"
        )));
    }
    let rows = state
        .store
        .list_dead_letters(&DeadLetterFilter {
            plugin_id: q.plugin,
            product_key: q.product_key,
            before_id: q.before,
            limit,
        })
        .await?;
    Ok(Json(DeadLetterList {
        items: rows.into_iter().map(DeadLetter::from).collect(),
    }))
}

/// The codec plugin bound to a product.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/codec", tag = "plugins", security(("bearer" = [])),
    params(("productKey" = String, Path)),
    responses((status = 200, body = CodecBinding), (status = 404, body = crate::problem::Problem)))]
pub async fn get_codec(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(pk): Path<String>,
) -> ApiResult<Json<CodecBinding>> {
    crate::authz::product(&state, &user, "codec", "read", &pk).await?;
    let plugin =
        state.store.product_codec(&pk).await?.ok_or_else(|| {
            ApiError::not_found(format!("product '{pk}' has no codec plugin bound"))
        })?;
    Ok(Json(CodecBinding { plugin }))
}

/// Bind a codec plugin to a `dataFormat: custom` product: its raw uplinks are decoded and its
/// downlinks encoded by that plugin from now on.
#[utoipa::path(put, path = "/api/v1/products/{productKey}/codec", tag = "plugins", security(("bearer" = [])),
    params(("productKey" = String, Path)), request_body = CodecBinding,
    responses((status = 200, body = CodecBinding), (status = 404, body = crate::problem::Problem),
        (status = 422, body = crate::problem::Problem)))]
pub async fn put_codec(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(pk): Path<String>,
    Json(req): Json<CodecBinding>,
) -> ApiResult<Json<CodecBinding>> {
    let product = crate::authz::product(&state, &user, "codec", "write", &pk).await?;
    if product.data_format != DataFormat::Custom {
        return Err(ApiError::unprocessable(format!(
            "product '{pk}' has dataFormat {}: set it to custom before binding a codec",
            product.data_format.as_str()
        )));
    }
    let plugin = state.store.get_plugin(&req.plugin).await?.ok_or_else(|| {
        ApiError::unprocessable(format!("plugin: no plugin '{}' is installed", req.plugin))
    })?;
    if plugin.world != "codec" {
        return Err(ApiError::unprocessable(format!(
            "plugin: '{}' is a {} plugin, not a codec",
            plugin.id, plugin.world
        )));
    }
    // The manifest's products are the plugin's scope; a binding outside it would let a codec
    // see devices its operator never granted it.
    let manifest = state
        .store
        .plugin_artifact(&plugin.id, &plugin.active_version)
        .await?
        .manifest;
    let products = manager(&state)?.manifest_products(&manifest).map_err(|e| {
        ApiError::conflict(format!(
            "the stored manifest of '{}' no longer parses: {e}",
            plugin.id
        ))
    })?;
    if !products.is_empty() && !products.iter().any(|p| p == &pk) {
        return Err(ApiError::unprocessable(format!(
            "plugin: '{}' lists products [{}] in its manifest, not '{pk}'; add it to `products` \
             in lotus-plugin.toml and upgrade the plugin",
            plugin.id,
            products.join(", ")
        )));
    }
    state.store.bind_product_codec(&pk, &plugin.id).await?;
    state.plane.codecs.set_binding(&pk, Some(&plugin.id));
    tracing::info!(product = %pk, plugin = %plugin.id, "codec bound");
    Ok(Json(CodecBinding { plugin: plugin.id }))
}

/// Unbind a product's codec: its raw uplinks are refused again.
#[utoipa::path(delete, path = "/api/v1/products/{productKey}/codec", tag = "plugins", security(("bearer" = [])),
    params(("productKey" = String, Path)),
    responses((status = 204), (status = 404, body = crate::problem::Problem)))]
pub async fn delete_codec(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(pk): Path<String>,
) -> ApiResult<StatusCode> {
    crate::authz::product(&state, &user, "codec", "write", &pk).await?;
    if !state.store.unbind_product_codec(&pk).await? {
        return Err(ApiError::not_found(format!(
            "product '{pk}' has no codec plugin bound"
        )));
    }
    state.plane.codecs.set_binding(&pk, None);
    Ok(StatusCode::NO_CONTENT)
}

/// A plugin secret as listed: never its value.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginSecret {
    pub name: String,
    pub updated_at: i64,
    pub updated_by: String,
}

impl From<PluginSecretRow> for PluginSecret {
    fn from(r: PluginSecretRow) -> Self {
        PluginSecret {
            name: r.name,
            updated_at: r.updated_at,
            updated_by: r.updated_by,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct PluginSecretList {
    pub items: Vec<PluginSecret>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretValue {
    /// The credential (an API key, a token, a password). Stored encrypted; never returned.
    pub value: String,
}

/// The names of a plugin's secrets, with who set each and when; values are never returned.
#[utoipa::path(get, path = "/api/v1/plugins/{id}/secrets", tag = "plugins", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = PluginSecretList), (status = 404, body = crate::problem::Problem)))]
pub async fn list_secrets(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<PluginSecretList>> {
    crate::authz::global(&state, &user, "plugin", "read", &id)?;
    plugin_or_404(&state, &id).await?;
    let rows = state.store.list_plugin_secrets(&id).await?;
    Ok(Json(PluginSecretList {
        items: rows.into_iter().map(PluginSecret::from).collect(),
    }))
}

/// Set a secret the plugin's manifest lists in `secrets` (its `secrets` capability reads it).
/// Replacing a value takes effect at the plugin's next read.
#[utoipa::path(put, path = "/api/v1/plugins/{id}/secrets/{name}", tag = "plugins", security(("bearer" = [])),
    params(("id" = String, Path), ("name" = String, Path)), request_body = SecretValue,
    responses((status = 200, body = PluginSecret), (status = 404, body = crate::problem::Problem),
        (status = 422, body = crate::problem::Problem)))]
pub async fn put_secret(
    State(state): State<ApiState>,
    user: Authenticated,
    Path((id, name)): Path<(String, String)>,
    Json(req): Json<SecretValue>,
) -> ApiResult<Json<PluginSecret>> {
    crate::authz::global(&state, &user, "plugin", "write", &id)?;
    let plugin = plugin_or_404(&state, &id).await?;
    if name.is_empty()
        || name.len() > MAX_SECRET_NAME
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ApiError::unprocessable(format!(
            "name: 1 to {MAX_SECRET_NAME} characters of A-Z, a-z, 0-9, '-', '_' and '.'"
        )));
    }
    if req.value.is_empty() || req.value.len() > MAX_SECRET_BYTES {
        return Err(ApiError::unprocessable(format!(
            "value: 1 to {MAX_SECRET_BYTES} bytes"
        )));
    }
    // A secret the manifest does not list could never be read: refusing it catches a typo now
    // instead of a `not-found` in the plugin's log later.
    let manifest = state
        .store
        .plugin_artifact(&plugin.id, &plugin.active_version)
        .await?
        .manifest;
    let listed = manager(&state)?.manifest_secrets(&manifest).map_err(|e| {
        ApiError::conflict(format!(
            "the stored manifest of '{}' no longer parses: {e}",
            plugin.id
        ))
    })?;
    if !listed.iter().any(|s| s == &name) {
        return Err(ApiError::unprocessable(format!(
            "name: plugin '{id}' lists secrets [{}] in its manifest, not '{name}'; add it to \
             `secrets` in lotus-plugin.toml and upgrade the plugin",
            listed.join(", ")
        )));
    }
    let row = state
        .store
        .set_plugin_secret(&id, &name, &req.value, &user.user.username)
        .await?;
    tracing::info!(plugin = %id, secret = %name, by = %user.user.username, "plugin secret set");
    Ok(Json(row.into()))
}

/// Delete a plugin secret; the plugin's reads of it fail with `not-found` from then on.
#[utoipa::path(delete, path = "/api/v1/plugins/{id}/secrets/{name}", tag = "plugins", security(("bearer" = [])),
    params(("id" = String, Path), ("name" = String, Path)),
    responses((status = 204), (status = 404, body = crate::problem::Problem)))]
pub async fn delete_secret(
    State(state): State<ApiState>,
    user: Authenticated,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    crate::authz::global(&state, &user, "plugin", "write", &id)?;
    plugin_or_404(&state, &id).await?;
    if !state.store.delete_plugin_secret(&id, &name).await? {
        return Err(ApiError::not_found(format!(
            "plugin '{id}' has no secret '{name}'"
        )));
    }
    tracing::info!(plugin = %id, secret = %name, by = %user.user.username, "plugin secret deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Send a notification through a channel plugin now (to check its settings, secrets and
/// reachability). The plugin's answer is returned as it reported it; the call counts in its
/// metrics and logs like any other.
#[utoipa::path(post, path = "/api/v1/plugins/{id}/deliver", tag = "plugins", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = TestNotification,
    responses((status = 200, description = "the plugin's delivery report {status, providerId, detail}"),
        (status = 404, body = crate::problem::Problem), (status = 409, body = crate::problem::Problem),
        (status = 502, body = crate::problem::Problem)))]
pub async fn deliver(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
    Json(mut req): Json<TestNotification>,
) -> ApiResult<Json<Value>> {
    crate::authz::global(&state, &user, "plugin", "invoke", &id)?;
    let plugin = plugin_or_404(&state, &id).await?;
    if plugin.world != "channel" {
        return Err(ApiError::unprocessable(format!(
            "plugin '{id}' is a {} plugin; only channel plugins deliver notifications",
            plugin.world
        )));
    }
    if req.recipients.is_empty() {
        return Err(ApiError::unprocessable("recipients: give at least one"));
    }
    if req.channel.is_empty() {
        req.channel = id.clone();
    }
    let manager = manager(&state)?;
    let who = user.user.username.clone();
    let target = id.clone();
    let report = tokio::task::spawn_blocking(move || manager.deliver(&target, req))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("delivery task failed: {e}"),
            )
        })?;
    tracing::info!(plugin = %id, by = %who, ok = report.is_ok(), "test notification sent");
    match report {
        Ok(report) => Ok(Json(report)),
        Err(DeliverError::NotRunning(m)) => Err(ApiError::conflict(format!(
            "{m}: enable or resume it first"
        ))),
        Err(DeliverError::Failed(m)) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("the channel plugin failed: {m}"),
        )),
    }
}

/// The body limit for the upload routes (the router's default is far smaller).
pub fn upload_limit() -> DefaultBodyLimit {
    DefaultBodyLimit::max(MAX_UPLOAD_BYTES)
}
