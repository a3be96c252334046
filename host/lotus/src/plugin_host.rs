//! The node's side of the Wasm plugin runtime: the platform services plugins may call
//! ([`NodeServices`]), codecs for the device plane ([`RuntimeCodecs`]), plugin management for
//! the API ([`RuntimeManager`]), and loading every enabled plugin at start.
//!
//! Plugin calls are synchronous and bounded by the runtime; they run on tokio worker threads
//! inside `block_in_place`, so a slow call never starves the other tasks of that worker, and a
//! host service bridges back to async storage and device calls with `Handle::block_on`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lotus_api::plugins::{
    DeliverError, PluginManager, PreparedUpload, TestNotification, UploadRejection,
};
use lotus_bus::{Bus, DeviceEvent, Envelope};
use lotus_device::DevicePlane;
use lotus_device::codec::{CodecContext, CodecFailure, CodecHost};
use lotus_device::downlink::CallOutcome;
use lotus_model::authz::DeviceId;
use lotus_operations::{CenterError, EventCenter, Submission};
use lotus_plugin::wit::v0_1_0::{DeliveryStatus, types};
use lotus_plugin::{
    CallError, EventInput, HostError, HostServices, Manifest, MessageContext, PluginRuntime,
    PreparedPlugin, RuntimeConfig,
};
use lotus_storage::{PLUGIN_PENDING_APPROVAL, PLUGIN_SUSPENDED, StorageError, Store};
use lotus_workflow::{EventDraft, GeoPoint, Level};
use serde_json::{Value, json};
use tokio::runtime::Handle;

/// How long a plugin's synchronous service call waits for the device.
const PLUGIN_SERVICE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs async platform code from a plugin call (a synchronous context on a worker thread).
fn block_on<F: std::future::Future>(handle: &Handle, f: F) -> F::Output {
    tokio::task::block_in_place(|| handle.block_on(f))
}

fn storage_error(e: StorageError) -> HostError {
    match e {
        StorageError::NotFound(m) => HostError::NotFound(m),
        StorageError::Invalid(m) | StorageError::Conflict(m) => HostError::Invalid(m),
        other => HostError::Unavailable(other.to_string()),
    }
}

fn plane_error(e: lotus_device::PlaneError) -> HostError {
    use lotus_device::PlaneError;
    match e {
        PlaneError::NotFound(m) => HostError::NotFound(m),
        PlaneError::Invalid(m) => HostError::Invalid(m),
        PlaneError::NotConnected(_) | PlaneError::Timeout(_) => {
            HostError::Unavailable(e.to_string())
        }
        PlaneError::Storage(s) => storage_error(s),
    }
}

fn parse_params(params: &str) -> Result<Value, HostError> {
    serde_json::from_str(params)
        .map_err(|e| HostError::Invalid(format!("params are not JSON: {e}")))
}

/// The platform services plugins call (the runtime has checked the capability and scope).
pub struct NodeServices {
    store: Store,
    plane: Arc<DevicePlane>,
    bus: Arc<dyn Bus>,
    /// Events plugins raise go through the same classification, merging and workflows as
    /// those from rules and operators.
    events: Arc<EventCenter>,
    handle: Handle,
}

impl NodeServices {
    pub fn new(
        store: Store,
        plane: Arc<DevicePlane>,
        bus: Arc<dyn Bus>,
        events: Arc<EventCenter>,
    ) -> Self {
        NodeServices {
            events,
            store,
            plane,
            bus,
            handle: Handle::current(),
        }
    }
}

fn center_error(e: CenterError) -> HostError {
    match e {
        CenterError::Invalid(m) | CenterError::Conflict(m) => HostError::Invalid(m),
        CenterError::NotFound(m) => HostError::NotFound(m),
        CenterError::Storage(s) => storage_error(s),
    }
}

/// The submission for an event a plugin raises: the device's region and organisation when it
/// names one (else the whole city, or the `region` field when given), coordinates from
/// `lat`/`lon` fields, severity 0 for the type's default level.
async fn plugin_event(
    store: &Store,
    plugin: &str,
    event: EventInput,
    at: i64,
) -> Result<Submission, HostError> {
    let fields = if event.fields.trim().is_empty() {
        serde_json::Map::new()
    } else {
        match serde_json::from_str::<Value>(&event.fields) {
            Ok(Value::Object(map)) => map,
            _ => {
                return Err(HostError::Invalid(
                    "event fields must be a JSON object, e.g. {\"depth\": 0.4}".into(),
                ));
            }
        }
    };
    let level = match event.severity {
        0 => None,
        n => Some(Level::from_number(u64::from(n)).ok_or_else(|| {
            HostError::Invalid(format!(
                "severity {n} is out of range: use 1 (most severe) to 4, or 0 for the type's default"
            ))
        })?),
    };
    let (region, org) = match &event.device {
        Some((pk, dn)) => {
            let scope = store
                .device_scope(pk, dn)
                .await
                .map_err(storage_error)?
                .ok_or_else(|| HostError::NotFound(format!("device {pk}/{dn} not found")))?;
            (scope.region, scope.org)
        }
        None => (
            fields
                .get("region")
                .and_then(Value::as_str)
                .unwrap_or("/")
                .to_string(),
            String::new(),
        ),
    };
    let location = GeoPoint::from_fields(&fields);
    let device = event
        .device
        .as_ref()
        .map(|(pk, dn)| json!({"productKey": pk, "deviceName": dn}));
    Ok(Submission {
        draft: EventDraft {
            type_code: event.event_type,
            title: event.title,
            level,
            location,
            region,
            fields,
            source: json!({"plugin": plugin, "device": device}),
            at_ms: at,
        },
        org,
        rule_id: None,
        alarm_id: None,
        actor: format!("plugin:{plugin}"),
    })
}

impl HostServices for NodeServices {
    fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, HostError> {
        block_on(&self.handle, self.store.plugin_kv_get(plugin, key)).map_err(storage_error)
    }

    fn kv_set(&self, plugin: &str, key: &str, value: &[u8]) -> Result<(), HostError> {
        block_on(&self.handle, self.store.plugin_kv_set(plugin, key, value)).map_err(storage_error)
    }

    fn kv_delete(&self, plugin: &str, key: &str) -> Result<(), HostError> {
        block_on(&self.handle, self.store.plugin_kv_delete(plugin, key)).map_err(storage_error)
    }

    fn device_properties(
        &self,
        _plugin: &str,
        product_key: &str,
        device_name: &str,
    ) -> Result<String, HostError> {
        let latest = block_on(
            &self.handle,
            self.store.latest_properties(product_key, device_name),
        )
        .map_err(storage_error)?;
        let values: serde_json::Map<String, Value> = latest
            .into_iter()
            .map(|(identifier, value, time)| {
                (
                    identifier,
                    serde_json::json!({ "value": value, "time": time }),
                )
            })
            .collect();
        Ok(Value::Object(values).to_string())
    }

    fn set_property(
        &self,
        _plugin: &str,
        product_key: &str,
        device_name: &str,
        params: &str,
    ) -> Result<String, HostError> {
        let params = parse_params(params)?;
        let device = DeviceId::new(product_key, device_name);
        block_on(&self.handle, self.plane.set_properties(&device, params)).map_err(plane_error)
    }

    fn invoke_service(
        &self,
        _plugin: &str,
        product_key: &str,
        device_name: &str,
        identifier: &str,
        params: &str,
    ) -> Result<String, HostError> {
        let params = parse_params(params)?;
        let device = DeviceId::new(product_key, device_name);
        let outcome = block_on(
            &self.handle,
            self.plane
                .invoke_service(&device, identifier, params, PLUGIN_SERVICE_TIMEOUT),
        )
        .map_err(plane_error)?;
        Ok(match outcome {
            CallOutcome::Replied { message_id, reply } => serde_json::json!({
                "messageId": message_id, "code": reply.code, "data": reply.data,
            }),
            CallOutcome::Sent { message_id } => serde_json::json!({ "messageId": message_id }),
        }
        .to_string())
    }

    fn publish(
        &self,
        _plugin: &str,
        topic: &str,
        payload: &[u8],
        qos: u8,
    ) -> Result<(), HostError> {
        let qos = match qos {
            0 => lotus_mqtt::QoS::AtMostOnce,
            1 => lotus_mqtt::QoS::AtLeastOnce,
            other => {
                return Err(HostError::Invalid(format!(
                    "qos {other} is not supported for plugin publishes: use 0 or 1"
                )));
            }
        };
        let payload = axum::body::Bytes::copy_from_slice(payload);
        block_on(
            &self.handle,
            self.plane.broker().publish(topic, payload, qos, false),
        );
        Ok(())
    }

    fn raise_event(&self, plugin: &str, event: EventInput) -> Result<String, HostError> {
        block_on(&self.handle, async {
            let submission =
                plugin_event(&self.store, plugin, event, lotus_device::now_ms()).await?;
            let submitted = self.events.submit(submission).await.map_err(center_error)?;
            // The number is what operators see and what `update` accepts back.
            let event = self
                .events
                .find(&submitted.event_id().to_string())
                .await
                .map_err(center_error)?;
            Ok(event.number)
        })
    }

    fn update_event(
        &self,
        plugin: &str,
        id: &str,
        state: &str,
        note: &str,
    ) -> Result<(), HostError> {
        block_on(
            &self.handle,
            self.events.update_state(
                id,
                state,
                note,
                &format!("plugin:{plugin}"),
                lotus_device::now_ms(),
            ),
        )
        .map(|_| ())
        .map_err(center_error)
    }

    fn secret(&self, plugin: &str, name: &str) -> Result<String, HostError> {
        match block_on(&self.handle, self.store.plugin_secret(plugin, name)) {
            Ok(Some(secret)) => Ok(secret.into_inner()),
            Ok(None) => Err(HostError::NotFound(format!(
                "no secret '{name}' is configured for plugin '{plugin}': an operator sets it \
                 with PUT /api/v1/plugins/{plugin}/secrets/{name}"
            ))),
            Err(e) => Err(storage_error(e)),
        }
    }

    fn plugin_suspended(&self, plugin: &str, reason: &str) {
        tracing::warn!(plugin, reason, "plugin suspended after repeated failures");
        metrics::counter!("lotus_plugin_suspensions_total", "plugin" => plugin.to_string())
            .increment(1);
        // The operator alarm: a bus message any alarm subscriber (portal, rules) sees.
        self.bus.publish(Envelope {
            subject: format!(
                "alarm.plugin.{}.suspended",
                lotus_bus::subject_token(plugin)
            ),
            product_key: String::new(),
            device_name: String::new(),
            at: lotus_device::now_ms(),
            event: DeviceEvent::Lifecycle {
                action: format!("plugin '{plugin}' suspended: {reason}"),
            },
        });
        let store = self.store.clone();
        let (plugin, reason) = (plugin.to_string(), reason.to_string());
        self.handle.spawn(async move {
            if let Err(e) = store
                .set_plugin_status(&plugin, PLUGIN_SUSPENDED, Some(&reason))
                .await
            {
                tracing::error!(plugin, error = %e, "recording a plugin suspension failed");
            }
            // The alarm an operator sees in the alarm list until they resume the plugin; the
            // whole city's scope, because a plugin serves products across regions.
            let alarm_type = lotus_storage::plugin_suspended_alarm_type(&plugin);
            let message = format!("plugin '{plugin}' suspended after repeated failures: {reason}");
            let details = json!({"plugin": plugin, "reason": reason});
            if let Err(e) = store
                .raise_alarm(&lotus_storage::NewAlarm {
                    product_key: "",
                    device_name: "",
                    alarm_type: &alarm_type,
                    rule_id: None,
                    level: 2,
                    message: &message,
                    details: &details,
                    region: "/",
                    org: "",
                    at: lotus_device::now_ms(),
                })
                .await
            {
                tracing::error!(plugin, error = %e, "raising the plugin-suspended alarm failed");
            }
        });
    }
}

/// Codec calls for the device plane.
pub struct RuntimeCodecs(pub PluginRuntime);

fn message_context(ctx: &CodecContext) -> MessageContext {
    MessageContext {
        product_key: ctx.product_key.clone(),
        device_name: ctx.device_name.clone(),
        topic: ctx.topic.clone(),
        at_ms: ctx.at_ms,
    }
}

fn codec_failure(e: CallError) -> CodecFailure {
    match e {
        CallError::Codec {
            message,
            offset,
            field,
        } => CodecFailure::Rejected {
            message,
            offset,
            field,
        },
        other => CodecFailure::failed(other.reason(), other.to_string()),
    }
}

fn not_loaded(plugin: &str) -> CodecFailure {
    CodecFailure::failed(
        "not_loaded",
        format!("codec plugin '{plugin}' is not running on this node (disabled or removed)"),
    )
}

impl CodecHost for RuntimeCodecs {
    fn decode(
        &self,
        plugin: &str,
        topic: &str,
        payload: &[u8],
        ctx: &CodecContext,
    ) -> Result<String, CodecFailure> {
        let codec = self.0.codec(plugin).ok_or_else(|| not_loaded(plugin))?;
        let ctx = message_context(ctx);
        // A healthy decode takes microseconds: handing the worker thread over for it
        // (`block_in_place`) cost a quarter of the raw uplink throughput. A codec whose last
        // call failed may be looping into its deadline, so its calls leave the worker until
        // one succeeds; a hostile codec stalls a worker for one deadline per failure streak.
        if codec.is_failing() {
            tokio::task::block_in_place(|| codec.decode(topic, payload, &ctx))
        } else {
            codec.decode(topic, payload, &ctx)
        }
        .map_err(codec_failure)
    }

    fn encode(
        &self,
        plugin: &str,
        message: &str,
        ctx: &CodecContext,
    ) -> Result<Vec<u8>, CodecFailure> {
        let codec = self.0.codec(plugin).ok_or_else(|| not_loaded(plugin))?;
        let ctx = message_context(ctx);
        tokio::task::block_in_place(|| codec.encode(message, &ctx)).map_err(codec_failure)
    }
}

/// Plugin management for the API.
pub struct RuntimeManager {
    pub runtime: PluginRuntime,
    /// The script runner's component, read once at start.
    pub script_runner: Option<Arc<Vec<u8>>>,
}

impl PluginManager for RuntimeManager {
    fn prepare(&self, manifest: &str, wasm: &[u8]) -> Result<PreparedUpload, UploadRejection> {
        let manifest =
            Manifest::from_toml(manifest).map_err(|e| UploadRejection::Manifest(e.to_string()))?;
        let (id, version, world) = (
            manifest.id.clone(),
            manifest.version.clone(),
            manifest.world.name().to_string(),
        );
        let prepared = self
            .runtime
            .prepare(manifest, wasm)
            .map_err(|e| UploadRejection::Component(e.to_string()))?;
        Ok(PreparedUpload {
            id,
            version,
            world,
            sha256: prepared.sha256().to_string(),
            compiled: Box::new(prepared),
        })
    }

    fn activate(&self, prepared: PreparedUpload) {
        match prepared.compiled.downcast::<PreparedPlugin>() {
            Ok(plugin) => self.runtime.activate(*plugin),
            // Only this type ever builds a PreparedUpload.
            Err(_) => unreachable!("a PreparedUpload always holds a PreparedPlugin"),
        }
    }

    fn deactivate(&self, id: &str) -> bool {
        self.runtime.deactivate(id)
    }

    fn resume(&self, id: &str) -> bool {
        self.runtime.resume(id)
    }

    fn status(&self, id: &str) -> Option<Value> {
        self.runtime
            .status(id)
            .and_then(|s| serde_json::to_value(s).ok())
    }

    fn manifest_products(&self, manifest: &str) -> Result<Vec<String>, String> {
        Manifest::from_toml(manifest)
            .map(|m| m.products)
            .map_err(|e| e.to_string())
    }

    fn manifest_secrets(&self, manifest: &str) -> Result<Vec<String>, String> {
        Manifest::from_toml(manifest)
            .map(|m| m.secrets)
            .map_err(|e| e.to_string())
    }

    fn manifest_capabilities(&self, manifest: &str) -> Result<Vec<String>, String> {
        Manifest::from_toml(manifest)
            .map(|m| m.capabilities.iter().map(|c| c.to_string()).collect())
            .map_err(|e| e.to_string())
    }

    fn script_runner(&self) -> Option<Arc<Vec<u8>>> {
        self.script_runner.clone()
    }

    fn deliver(&self, id: &str, notification: TestNotification) -> Result<Value, DeliverError> {
        let channel = self.runtime.channel(id).ok_or_else(|| {
            DeliverError::NotRunning(format!("plugin '{id}' is not a running channel"))
        })?;
        let delivery = channel
            .deliver(&types::Notification {
                channel: notification.channel,
                recipients: notification.recipients,
                subject: notification.subject,
                body: notification.body,
            })
            .map_err(|e| DeliverError::Failed(e.to_string()))?;
        Ok(json!({
            "status": match delivery.status {
                DeliveryStatus::Delivered => "delivered",
                DeliveryStatus::Accepted => "accepted",
                DeliveryStatus::Failed => "failed",
            },
            "providerId": delivery.provider_id,
            "detail": delivery.detail,
        }))
    }

    fn logs(&self, id: &str, limit: usize) -> Vec<Value> {
        self.runtime
            .logs(id, limit)
            .into_iter()
            .filter_map(|line| serde_json::to_value(line).ok())
            .collect()
    }
}

/// The runtime of a node, shared by the device plane (codecs) and the API (management).
pub struct NodePlugins {
    pub runtime: PluginRuntime,
    pub script_runner: Option<Arc<Vec<u8>>>,
}

/// Creates the runtime and loads the active version of every enabled plugin. A plugin that no
/// longer loads (e.g. built for another host version) is logged and skipped: the node serves
/// everything else, and its messages become dead letters until an operator acts.
pub async fn start(
    config: RuntimeConfig,
    store: Store,
    plane: Arc<DevicePlane>,
    bus: Arc<dyn Bus>,
    script_runner: Option<&std::path::Path>,
    capabilities: Arc<dyn lotus_plugin::CapabilityCheck>,
    events: Arc<EventCenter>,
) -> anyhow::Result<NodePlugins> {
    let script_runner = match script_runner {
        Some(path) => Some(Arc::new(std::fs::read(path).with_context(|| {
            format!(
                "cannot read plugins.script_runner {}: build it with \
                 `node sdk/plugin-js/build.mjs --runner --out script_runner.wasm`",
                path.display()
            )
        })?)),
        None => None,
    };
    let services = Arc::new(NodeServices::new(store.clone(), plane.clone(), bus, events));
    let runtime = PluginRuntime::with_capability_check(config, services, capabilities)
        .context("starting the plugin runtime")?;
    let mut loaded = 0;
    for plugin in store.list_plugins().await? {
        if !plugin.enabled {
            continue;
        }
        if plugin.status == PLUGIN_SUSPENDED {
            tracing::warn!(plugin = %plugin.id, reason = ?plugin.status_reason,
                "plugin stays suspended: resume it to load it");
            continue;
        }
        if plugin.status == PLUGIN_PENDING_APPROVAL {
            tracing::warn!(plugin = %plugin.id, reason = ?plugin.status_reason,
                "plugin waits for approval: POST /api/v1/plugins/{}/approve", plugin.id);
            continue;
        }
        let artifact = store
            .plugin_artifact(&plugin.id, &plugin.active_version)
            .await?;
        let rt = runtime.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            let manifest = Manifest::from_toml(&artifact.manifest).map_err(|e| e.to_string())?;
            rt.prepare(manifest, &artifact.wasm)
                .map_err(|e| e.to_string())
        })
        .await?;
        match prepared {
            Ok(prepared) => {
                runtime.activate(prepared);
                loaded += 1;
            }
            Err(e) => tracing::error!(plugin = %plugin.id, version = %plugin.active_version,
                error = %e, "stored plugin does not load; it is not running"),
        }
    }
    tracing::info!(plugins = loaded, "plugins loaded");
    plane
        .attach_codecs(Arc::new(RuntimeCodecs(runtime.clone())))
        .await?;
    Ok(NodePlugins {
        runtime,
        script_runner,
    })
}
