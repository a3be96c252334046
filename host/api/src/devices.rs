//! Devices: registration, status, data, downlinks and shadow.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lotus_device::connect::generate_secret;
use lotus_device::downlink::CallOutcome;
use lotus_device::shadow::ShadowView;
use lotus_model::authz::DeviceId;
use lotus_model::product::validate_device_name;
use lotus_mqtt::DisconnectReason;
use lotus_storage::{Aggregation, DeviceFilter, DeviceRow, DownlinkRow};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use crate::ApiState;
use crate::auth::Authenticated;
use crate::problem::{ApiError, ApiResult, Json, Path, Query};
use crate::products::{PageQuery, Paged, product_or_404};

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub product_key: String,
    pub device_name: String,
    pub nickname: Option<String>,
    /// inactive (never connected), online, offline or disabled.
    pub status: String,
    pub enabled: bool,
    pub first_online_at: Option<i64>,
    pub last_online_at: Option<i64>,
    pub last_offline_at: Option<i64>,
    pub last_offline_reason: Option<String>,
    pub tags: Value,
    /// The device's own region; absent when it is where its product is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<DeviceRow> for Device {
    fn from(r: DeviceRow) -> Self {
        Device {
            status: r.status().to_string(),
            product_key: r.product_key,
            device_name: r.device_name,
            nickname: r.nickname,
            enabled: r.enabled,
            first_online_at: r.first_online_at,
            last_online_at: r.last_online_at,
            last_offline_at: r.last_offline_at,
            last_offline_reason: r.last_offline_reason,
            tags: r.tags,
            region: r.region,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceCredentials {
    pub product_key: String,
    pub device_name: String,
    /// Shown only once: store it in the device.
    pub device_secret: String,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateDevice {
    /// Generated when absent.
    pub device_name: Option<String>,
    /// Where the device is, when not where its product is (e.g. `/hz/xihu/lingyin`).
    pub region: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateDevices {
    /// Names to register; or use `count` for generated names.
    #[serde(default)]
    pub device_names: Vec<String>,
    /// How many devices with generated names (at most 1000 per call).
    pub count: Option<usize>,
    /// The region of all of them, when not their product's.
    pub region: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedDevices {
    pub devices: Vec<DeviceCredentials>,
}

fn generated_name() -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(20)
        .map(char::from)
        .collect()
}

async fn create_many(
    state: &ApiState,
    user: &Authenticated,
    pk: &str,
    names: Vec<String>,
    region: Option<String>,
) -> ApiResult<Vec<DeviceCredentials>> {
    let product = product_or_404(state, pk).await?;
    let region = region
        .map(|r| {
            lotus_model::scope::parse_region(&r)
                .map_err(|e| ApiError::unprocessable(format!("region: {e}")))
        })
        .transpose()?;
    let scope = lotus_model::scope::Scope {
        org: product.scope.org.clone(),
        region: region
            .clone()
            .unwrap_or_else(|| product.scope.region.clone()),
    };
    crate::authz::check(
        state,
        user,
        "device.write",
        crate::authz::resource("device", &format!("{pk}/*"), Some(&scope)),
    )?;
    if let Some(r) = &region {
        crate::regions::require_known(state, r).await?;
    }
    let mut seen = std::collections::HashSet::new();
    for (i, name) in names.iter().enumerate() {
        validate_device_name(name)
            .map_err(|e| ApiError::unprocessable(format!("deviceNames[{i}]: {e}")))?;
        if !seen.insert(name) {
            return Err(ApiError::unprocessable(format!(
                "deviceNames[{i}]: '{name}' appears twice"
            )));
        }
    }
    let devices: Vec<(String, String)> =
        names.into_iter().map(|n| (n, generate_secret())).collect();
    state.store.create_devices(pk, &devices).await?;
    if let Some(region) = &region {
        for (name, _) in &devices {
            state
                .store
                .set_device_region(pk, name, Some(region))
                .await?;
        }
    }
    for (name, _) in &devices {
        state.plane.bus.publish(lotus_bus::Envelope::device(
            pk,
            name,
            lotus_device::now_ms(),
            lotus_bus::DeviceEvent::Lifecycle {
                action: "created".into(),
            },
        ));
    }
    // Issuing a device secret hands out a credential to the city's network: the auditor sees
    // who did it and for which devices (never the secret).
    crate::audit::record(
        state,
        &user.user.username,
        "device.credentials.issue",
        &format!("product:{pk}"),
        "ok",
        serde_json::json!({
            "devices": devices.iter().map(|(name, _)| name).collect::<Vec<_>>(),
        }),
    )
    .await;
    Ok(devices
        .into_iter()
        .map(|(device_name, device_secret)| DeviceCredentials {
            product_key: pk.to_string(),
            device_name,
            device_secret,
        })
        .collect())
}

/// Register a device. Its secret is shown only in this response.
#[utoipa::path(post, path = "/api/v1/products/{productKey}/devices", tag = "devices", security(("bearer" = [])),
    params(("productKey" = String, Path)), request_body = CreateDevice,
    responses((status = 201, body = DeviceCredentials), (status = 409, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn create(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(pk): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<DeviceCredentials>)> {
    // The body is optional: without one, the device gets a generated name.
    let req: CreateDevice = if body.iter().all(u8::is_ascii_whitespace) {
        CreateDevice::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::unprocessable(format!("invalid body: {e}")))?
    };
    let name = req.device_name.unwrap_or_else(generated_name);
    let mut created = create_many(&state, &user, &pk, vec![name], req.region).await?;
    Ok((StatusCode::CREATED, Json(created.remove(0))))
}

/// Register devices in one transaction (all or none).
#[utoipa::path(post, path = "/api/v1/products/{productKey}/devices:batch", tag = "devices", security(("bearer" = [])),
    params(("productKey" = String, Path)), request_body = CreateDevices,
    responses((status = 201, body = CreatedDevices), (status = 409, body = crate::problem::Problem)))]
pub async fn create_batch(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(pk): Path<String>,
    Json(req): Json<CreateDevices>,
) -> ApiResult<(StatusCode, Json<CreatedDevices>)> {
    let mut names = req.device_names;
    if let Some(n) = req.count {
        names.extend((0..n).map(|_| generated_name()));
    }
    if names.is_empty() || names.len() > 1000 {
        return Err(ApiError::unprocessable(
            "give 1 to 1000 devices (deviceNames and/or count)",
        ));
    }
    let devices = create_many(&state, &user, &pk, names, req.region).await?;
    Ok((StatusCode::CREATED, Json(CreatedDevices { devices })))
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct DeviceQuery {
    /// Substring of the device name.
    pub name: Option<String>,
    /// inactive, online, offline or disabled.
    pub status: Option<String>,
    /// Devices in this region or below it (their own region, else their product's).
    #[param(example = "/hz/xihu")]
    pub region: Option<String>,
    /// `key:value`: devices whose tag `key` has this value.
    #[param(example = "group:north")]
    pub tag: Option<String>,
    pub page: Option<i64>,
    pub page_size: Option<i64>,
}

/// Tag keys a search may name: what operators use as keys, nothing that needs quoting.
fn valid_tag_key(key: &str) -> bool {
    (1..=64).contains(&key.len())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

async fn list_filtered(
    state: &ApiState,
    user: &Authenticated,
    pk: Option<String>,
    q: DeviceQuery,
) -> ApiResult<Json<Paged<Device>>> {
    if let Some(s) = &q.status
        && !["inactive", "online", "offline", "disabled"].contains(&s.as_str())
    {
        return Err(ApiError::bad_request(
            "status must be inactive, online, offline or disabled",
        ));
    }
    let (page, number, size) = PageQuery {
        page: q.page,
        page_size: q.page_size,
    }
    .page()?;
    let region = q
        .region
        .filter(|r| !r.trim().is_empty())
        .map(|r| {
            lotus_model::scope::parse_region(r.trim())
                .map_err(|e| ApiError::bad_request(format!("region: {e}")))
        })
        .transpose()?;
    let tag = q
        .tag
        .filter(|t| !t.trim().is_empty())
        .map(|t| match t.split_once(':') {
            Some((k, v)) if valid_tag_key(k.trim()) => Ok((k.trim().to_string(), v.to_string())),
            _ => Err(ApiError::bad_request(format!(
                "tag '{t}': use key:value, the key 1 to 64 letters, digits, '_', '-' or '.'"
            ))),
        })
        .transpose()?;
    let filter = DeviceFilter {
        product_key: pk,
        name_like: q.name,
        status: q.status,
        within: crate::authz::list_scope(state, user, "device")?,
        region,
        tag,
    };
    let (rows, total) = state.store.list_devices(&filter, page).await?;
    // The filter narrows the query; each row is still the policy's to show.
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let id = format!("{}/{}", row.product_key, row.device_name);
        if let Some(scope) = state
            .store
            .device_scope(&row.product_key, &row.device_name)
            .await?
            && crate::authz::allows(
                state,
                user,
                "device.read",
                crate::authz::resource("device", &id, Some(&scope)),
            )
        {
            items.push(Device::from(row));
        }
    }
    Ok(Json(Paged {
        items,
        total,
        page: number,
        page_size: size,
    }))
}

/// List a product's devices.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices", tag = "devices", security(("bearer" = [])),
    params(("productKey" = String, Path), DeviceQuery), responses((status = 200, body = Paged<Device>)))]
pub async fn list(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(pk): Path<String>,
    Query(q): Query<DeviceQuery>,
) -> ApiResult<Json<Paged<Device>>> {
    crate::authz::product(&state, &user, "product", "read", &pk).await?;
    list_filtered(&state, &user, Some(pk), q).await
}

/// Query strings lose their types through `serde(flatten)`, so the fields are repeated.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllDevicesQuery {
    pub product_key: Option<String>,
    pub name: Option<String>,
    pub status: Option<String>,
    pub region: Option<String>,
    pub tag: Option<String>,
    pub page: Option<i64>,
    pub page_size: Option<i64>,
}

/// List devices across products.
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", security(("bearer" = [])),
    params(("productKey" = Option<String>, Query), DeviceQuery), responses((status = 200, body = Paged<Device>)))]
pub async fn list_all(
    State(state): State<ApiState>,
    user: Authenticated,
    Query(q): Query<AllDevicesQuery>,
) -> ApiResult<Json<Paged<Device>>> {
    let rest = DeviceQuery {
        name: q.name,
        status: q.status,
        region: q.region,
        tag: q.tag,
        page: q.page,
        page_size: q.page_size,
    };
    list_filtered(&state, &user, q.product_key, rest).await
}

/// A sub-device in a gateway's topology.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubDevice {
    pub product_key: String,
    pub device_name: String,
    /// Logged in through the gateway's current connection.
    pub online: bool,
    /// When it was added to the topology (Unix ms).
    pub attached_at: i64,
}

/// List a gateway's sub-devices (its topology, as the gateway manages it with `thing/topo/*`).
#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}/sub-devices", tag = "devices", security(("bearer" = [])),
    params(("productKey" = String, Path), ("deviceName" = String, Path)),
    responses((status = 200, body = Vec<SubDevice>), (status = 404, body = crate::problem::Problem)))]
pub async fn sub_devices(
    State(state): State<ApiState>,
    user: Authenticated,
    Path((pk, dn)): Path<(String, String)>,
) -> ApiResult<Json<Vec<SubDevice>>> {
    crate::authz::device(&state, &user, "device", "read", &pk, &dn).await?;
    let links = state.plane.sub_devices(&DeviceId::new(pk, dn)).await?;
    Ok(Json(
        links
            .into_iter()
            .map(|(l, online)| SubDevice {
                product_key: l.product_key,
                device_name: l.device_name,
                online,
                attached_at: l.created_at,
            })
            .collect(),
    ))
}

async fn device_or_404(state: &ApiState, pk: &str, dn: &str) -> ApiResult<DeviceRow> {
    state
        .store
        .get_device(pk, dn)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("device '{dn}' of product '{pk}' not found")))
}

/// Get a device with its status.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}", tag = "devices", security(("bearer" = [])),
    params(("productKey" = String, Path), ("deviceName" = String, Path)), responses((status = 200, body = Device), (status = 404, body = crate::problem::Problem)))]
pub async fn get(
    State(state): State<ApiState>,
    user: Authenticated,
    Path((pk, dn)): Path<(String, String)>,
) -> ApiResult<Json<Device>> {
    crate::authz::device(&state, &user, "device", "read", &pk, &dn).await?;
    Ok(Json(device_or_404(&state, &pk, &dn).await?.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateDevice {
    pub nickname: Option<String>,
    /// Replaces the tags.
    pub tags: Option<Map<String, Value>>,
    pub enabled: Option<bool>,
    /// Move the device to a region; `""` puts it back where its product is.
    pub region: Option<String>,
}

/// Update a device's nickname, tags or enabled flag.
#[utoipa::path(patch, path = "/api/v1/products/{productKey}/devices/{deviceName}", tag = "devices", security(("bearer" = [])),
    params(("productKey" = String, Path), ("deviceName" = String, Path)), request_body = UpdateDevice,
    responses((status = 200, body = Device)))]
pub async fn update(
    State(state): State<ApiState>,
    user: Authenticated,
    Path((pk, dn)): Path<(String, String)>,
    Json(req): Json<UpdateDevice>,
) -> ApiResult<Json<Device>> {
    crate::authz::device(&state, &user, "device", "write", &pk, &dn).await?;
    if let Some(region) = &req.region {
        let product = product_or_404(&state, &pk).await?;
        let region = if region.is_empty() {
            None
        } else {
            Some(
                lotus_model::scope::parse_region(region)
                    .map_err(|e| ApiError::unprocessable(format!("region: {e}")))?,
            )
        };
        // Moving a device needs the right to write where it goes as well as where it is.
        let target = lotus_model::scope::Scope {
            org: product.scope.org.clone(),
            region: region
                .clone()
                .unwrap_or_else(|| product.scope.region.clone()),
        };
        crate::authz::check(
            &state,
            &user,
            "device.write",
            crate::authz::resource("device", &format!("{pk}/{dn}"), Some(&target)),
        )?;
        if let Some(r) = &region {
            crate::regions::require_known(&state, r).await?;
        }
        state
            .store
            .set_device_region(&pk, &dn, region.as_deref())
            .await?;
    }
    if let Some(enabled) = req.enabled {
        set_enabled(&state, &pk, &dn, enabled).await?;
    }
    let tags = req.tags.map(Value::Object);
    let row = state
        .store
        .update_device(&pk, &dn, req.nickname.as_deref(), tags.as_ref())
        .await?;
    Ok(Json(row.into()))
}

/// Records a change to whether a device may connect.
async fn audit_device(state: &ApiState, user: &Authenticated, action: &str, pk: &str, dn: &str) {
    crate::audit::record(
        state,
        &user.user.username,
        action,
        &format!("device:{pk}/{dn}"),
        "ok",
        serde_json::json!({}),
    )
    .await;
}

async fn set_enabled(state: &ApiState, pk: &str, dn: &str, enabled: bool) -> ApiResult<()> {
    state.store.set_device_enabled(pk, dn, enabled).await?;
    if !enabled {
        state.plane.kick(
            &DeviceId::new(pk, dn),
            DisconnectReason::Kicked("the device was disabled".into()),
        );
    }
    state.plane.bus.publish(lotus_bus::Envelope::device(
        pk,
        dn,
        lotus_device::now_ms(),
        lotus_bus::DeviceEvent::Lifecycle {
            action: if enabled { "enabled" } else { "disabled" }.into(),
        },
    ));
    Ok(())
}

/// Enable a device.
#[utoipa::path(post, path = "/api/v1/products/{productKey}/devices/{deviceName}/enable", tag = "devices", security(("bearer" = [])),
    params(("productKey" = String, Path), ("deviceName" = String, Path)), responses((status = 200, body = Device)))]
pub async fn enable(
    State(state): State<ApiState>,
    user: Authenticated,
    Path((pk, dn)): Path<(String, String)>,
) -> ApiResult<Json<Device>> {
    crate::authz::device(&state, &user, "device", "write", &pk, &dn).await?;
    set_enabled(&state, &pk, &dn, true).await?;
    audit_device(&state, &user, "device.enable", &pk, &dn).await;
    Ok(Json(device_or_404(&state, &pk, &dn).await?.into()))
}

/// Disable a device: it is disconnected at once and cannot connect until enabled.
#[utoipa::path(post, path = "/api/v1/products/{productKey}/devices/{deviceName}/disable", tag = "devices", security(("bearer" = [])),
    params(("productKey" = String, Path), ("deviceName" = String, Path)), responses((status = 200, body = Device)))]
pub async fn disable(
    State(state): State<ApiState>,
    user: Authenticated,
    Path((pk, dn)): Path<(String, String)>,
) -> ApiResult<Json<Device>> {
    crate::authz::device(&state, &user, "device", "write", &pk, &dn).await?;
    set_enabled(&state, &pk, &dn, false).await?;
    audit_device(&state, &user, "device.disable", &pk, &dn).await;
    Ok(Json(device_or_404(&state, &pk, &dn).await?.into()))
}

/// Delete a device: its secret is revoked and it is disconnected at once.
#[utoipa::path(delete, path = "/api/v1/products/{productKey}/devices/{deviceName}", tag = "devices", security(("bearer" = [])),
    params(("productKey" = String, Path), ("deviceName" = String, Path)), responses((status = 204), (status = 404, body = crate::problem::Problem)))]
pub async fn delete(
    State(state): State<ApiState>,
    user: Authenticated,
    Path((pk, dn)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    crate::authz::device(&state, &user, "device", "delete", &pk, &dn).await?;
    state.store.delete_device(&pk, &dn).await?;
    audit_device(&state, &user, "device.credentials.revoke", &pk, &dn).await;
    let device = DeviceId::new(&*pk, &*dn);
    state
        .plane
        .kick(&device, DisconnectReason::CredentialRevoked);
    state.plane.forget_device(&device);
    state.plane.bus.publish(lotus_bus::Envelope::device(
        &pk,
        &dn,
        lotus_device::now_ms(),
        lotus_bus::DeviceEvent::Lifecycle {
            action: "deleted".into(),
        },
    ));
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PropertyValue {
    pub identifier: String,
    pub value: Value,
    /// Unix milliseconds.
    pub time: i64,
}

/// Latest value of every property the device reported.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}/properties", tag = "device data", security(("bearer" = [])),
    params(("productKey" = String, Path), ("deviceName" = String, Path)), responses((status = 200, body = Vec<PropertyValue>)))]
pub async fn properties(
    State(state): State<ApiState>,
    user: Authenticated,
    Path((pk, dn)): Path<(String, String)>,
) -> ApiResult<Json<Vec<PropertyValue>>> {
    crate::authz::device(&state, &user, "device", "read", &pk, &dn).await?;
    let actions = crate::authz::data_fields(&state, &user, &pk).await?;
    let rows = state.store.latest_properties(&pk, &dn).await?;
    // Masked through one object so every field gets exactly the policy's action.
    let mut object = Value::Object(
        rows.iter()
            .map(|(identifier, value, _)| (identifier.clone(), value.clone()))
            .collect(),
    );
    lotus_model::mask::apply_field_actions(&mut object, &actions);
    let shown = object.as_object().cloned().unwrap_or_default();
    Ok(Json(
        rows.into_iter()
            .filter_map(|(identifier, _, time)| {
                shown.get(&identifier).cloned().map(|value| PropertyValue {
                    identifier,
                    value,
                    time,
                })
            })
            .collect(),
    ))
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct HistoryQuery {
    /// Unix milliseconds; default 24 hours before `to`.
    pub from: Option<i64>,
    /// Unix milliseconds; default now.
    pub to: Option<i64>,
    /// Bucket width: milliseconds or a duration such as `30s`, `5m`, `1h`, `1d`. Raw points when absent.
    pub interval: Option<String>,
    /// avg, min, max, count or last (default avg when an interval is given).
    pub agg: Option<String>,
    /// Maximum raw points (default 1000, at most 10000).
    pub limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPoint {
    /// Point time, or bucket start.
    pub time: i64,
    pub value: Value,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct History {
    pub identifier: String,
    pub from: i64,
    pub to: i64,
    pub interval_ms: Option<i64>,
    pub agg: Option<String>,
    pub points: Vec<HistoryPoint>,
}

fn parse_interval(s: &str) -> ApiResult<i64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "interval '{s}' is not a duration: use e.g. 60000, 30s, 5m, 1h, 1d"
        ))
    })?;
    let ms = match unit {
        "" | "ms" => n,
        "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => {
            return Err(ApiError::bad_request(format!(
                "interval unit '{unit}' unknown: use ms, s, m, h or d"
            )));
        }
    };
    if ms < 1000 {
        return Err(ApiError::bad_request("interval must be at least 1s"));
    }
    Ok(ms)
}

/// History of one property, raw or aggregated into buckets.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}/properties/{identifier}/history", tag = "device data",
    security(("bearer" = [])),
    params(("productKey" = String, Path), ("deviceName" = String, Path), ("identifier" = String, Path), HistoryQuery),
    responses((status = 200, body = History), (status = 400, body = crate::problem::Problem)))]
pub async fn history(
    State(state): State<ApiState>,
    user: Authenticated,
    Path((pk, dn, identifier)): Path<(String, String, String)>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Json<History>> {
    crate::authz::device(&state, &user, "device", "read", &pk, &dn).await?;
    let actions = crate::authz::data_fields(&state, &user, &pk).await?;
    let action = actions
        .get(&identifier)
        .and_then(Value::as_str)
        .unwrap_or("remove")
        .to_string();
    if action == "remove" {
        return Err(ApiError::forbidden(format!(
            "property {identifier} of {pk} is not shown at your data permission level \
             (policy lotus.data.fields)"
        )));
    }
    let to = q.to.unwrap_or_else(lotus_device::now_ms);
    let from = q.from.unwrap_or(to - 86_400_000);
    if from > to {
        return Err(ApiError::bad_request("from must not be after to"));
    }
    let interval = q.interval.as_deref().map(parse_interval).transpose()?;
    let agg_name = q
        .agg
        .clone()
        .or_else(|| interval.map(|_| "avg".to_string()));
    let points: Vec<HistoryPoint> = match (interval, agg_name.as_deref()) {
        (None, None) => {
            let limit = q.limit.unwrap_or(1000);
            if !(1..=10_000).contains(&limit) {
                return Err(ApiError::bad_request("limit must be between 1 and 10000"));
            }
            state
                .store
                .property_history(&pk, &dn, &identifier, from, to, limit)
                .await?
                .into_iter()
                .map(|(time, value)| HistoryPoint { time, value })
                .collect()
        }
        (interval, Some(agg)) => {
            let agg = match agg {
                "avg" => Aggregation::Avg,
                "min" => Aggregation::Min,
                "max" => Aggregation::Max,
                "count" => Aggregation::Count,
                "last" => Aggregation::Last,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "agg '{other}' unknown: use avg, min, max, count or last"
                    )));
                }
            };
            let interval =
                interval.ok_or_else(|| ApiError::bad_request("agg needs an interval"))?;
            if (to - from) / interval > 10_000 {
                return Err(ApiError::bad_request(
                    "more than 10000 buckets: widen the interval or narrow the range",
                ));
            }
            state
                .store
                .property_aggregate(&pk, &dn, &identifier, from, to, interval, agg)
                .await?
                .into_iter()
                .map(|(time, value)| HistoryPoint { time, value })
                .collect()
        }
        (Some(_), None) => unreachable!("agg defaults to avg when an interval is given"),
    };
    let points = if action == "keep" {
        points
    } else {
        // Masked or hashed one value at a time, as the latest-value read does.
        let one = serde_json::json!({ identifier.as_str(): action });
        points
            .into_iter()
            .map(|p| {
                let mut object = serde_json::json!({ identifier.as_str(): p.value });
                lotus_model::mask::apply_field_actions(&mut object, &one);
                HistoryPoint {
                    time: p.time,
                    value: object[identifier.as_str()].take(),
                }
            })
            .collect()
    };
    Ok(Json(History {
        identifier,
        from,
        to,
        interval_ms: interval,
        agg: agg_name,
        points,
    }))
}

#[derive(Deserialize, IntoParams)]
pub struct EventQuery {
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// Only this event identifier.
    pub identifier: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceEventOut {
    pub identifier: String,
    /// info, alert or error.
    pub event_type: String,
    pub params: Value,
    pub time: i64,
}

/// Events the device posted, newest first.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}/events", tag = "device data", security(("bearer" = [])),
    params(("productKey" = String, Path), ("deviceName" = String, Path), EventQuery), responses((status = 200, body = Vec<DeviceEventOut>)))]
pub async fn events(
    State(state): State<ApiState>,
    user: Authenticated,
    Path((pk, dn)): Path<(String, String)>,
    Query(q): Query<EventQuery>,
) -> ApiResult<Json<Vec<DeviceEventOut>>> {
    crate::authz::device(&state, &user, "device", "read", &pk, &dn).await?;
    let to = q.to.unwrap_or_else(lotus_device::now_ms);
    let from = q.from.unwrap_or(to - 7 * 86_400_000);
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let rows = state
        .store
        .device_events(&pk, &dn, from, to, q.identifier.as_deref(), limit)
        .await?;
    Ok(Json(
        rows.into_iter()
            .map(|e| DeviceEventOut {
                identifier: e.identifier,
                event_type: e.event_type,
                params: e.params,
                time: e.ts,
            })
            .collect(),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetProperties {
    pub params: Map<String, Value>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    /// Query the reply at `…/messages/{messageId}`.
    pub message_id: String,
}

/// Set read-write properties on the device (asynchronous; the reply is tracked).
#[utoipa::path(post, path = "/api/v1/products/{productKey}/devices/{deviceName}/properties:set", tag = "downlink", security(("bearer" = [])),
    params(("productKey" = String, Path), ("deviceName" = String, Path)), request_body = SetProperties,
    responses((status = 202, body = Accepted), (status = 409, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn set_properties(
    State(state): State<ApiState>,
    user: Authenticated,
    Path((pk, dn)): Path<(String, String)>,
    Json(req): Json<SetProperties>,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    crate::authz::device(&state, &user, "device", "invoke", &pk, &dn).await?;
    let at = lotus_device::now_ms();
    let params = Value::Object(req.params);
    let message_id = state
        .plane
        .set_properties(&DeviceId::new(&*pk, &*dn), params.clone())
        .await?;
    announce(
        &state,
        (&pk, &dn),
        lotus_model::alink::downlink_topic::property_set(&pk, &dn),
        alink_request(&message_id, "thing.service.property.set", params),
        at,
    );
    Ok((StatusCode::ACCEPTED, Json(Accepted { message_id })))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InvokeService {
    #[serde(default)]
    pub params: Map<String, Value>,
    /// For synchronous services: how long to wait for the device (default 5000, at most 60000).
    pub timeout_ms: Option<u64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceReply {
    pub message_id: String,
    pub code: i64,
    pub data: Value,
    pub message: Option<String>,
}

/// Invoke a service: `POST …/services/{identifier}:invoke`. Synchronous services answer with
/// the device's reply (504 when it does not answer in time); asynchronous ones with a message id.
#[utoipa::path(post, path = "/api/v1/products/{productKey}/devices/{deviceName}/services/{call}", tag = "downlink", security(("bearer" = [])),
    params(("productKey" = String, Path), ("deviceName" = String, Path), ("call" = String, Path, description = "`{identifier}:invoke`")),
    request_body = InvokeService,
    responses((status = 200, body = ServiceReply), (status = 202, body = Accepted), (status = 409, body = crate::problem::Problem), (status = 504, body = crate::problem::Problem)))]
pub async fn invoke_service(
    State(state): State<ApiState>,
    user: Authenticated,
    Path((pk, dn, call)): Path<(String, String, String)>,
    Json(req): Json<InvokeService>,
) -> ApiResult<Response> {
    crate::authz::device(&state, &user, "device", "invoke", &pk, &dn).await?;
    let identifier = call.strip_suffix(":invoke").ok_or_else(|| {
        ApiError::not_found(format!(
            "unknown action '{call}': use {{identifier}}:invoke"
        ))
    })?;
    let timeout = Duration::from_millis(req.timeout_ms.unwrap_or(5000).clamp(100, 60_000));
    let at = lotus_device::now_ms();
    let params = Value::Object(req.params);
    let outcome = state
        .plane
        .invoke_service(
            &DeviceId::new(&*pk, &*dn),
            identifier,
            params.clone(),
            timeout,
        )
        .await?;
    let method = format!("thing.service.{identifier}");
    Ok(match outcome {
        CallOutcome::Replied { message_id, reply } => {
            // The message id is known only now, after the answer, so the live log shows a
            // synchronous call after its reply (with the time it was sent).
            announce(
                &state,
                (&pk, &dn),
                lotus_model::alink::downlink_topic::rrpc_request(&pk, &dn, &message_id),
                alink_request(&message_id, &method, params),
                at,
            );
            Json(ServiceReply {
                message_id,
                code: reply.code,
                data: reply.data,
                message: reply.message,
            })
            .into_response()
        }
        CallOutcome::Sent { message_id } => {
            announce(
                &state,
                (&pk, &dn),
                lotus_model::alink::downlink_topic::service(&pk, &dn, identifier),
                alink_request(&message_id, &method, params),
                at,
            );
            (StatusCode::ACCEPTED, Json(Accepted { message_id })).into_response()
        }
    })
}

/// Shows a request sent to the device in its live feeds, as the Alink JSON it went as (a
/// product with a codec gets the codec's encoding on the wire instead).
fn announce(state: &ApiState, (pk, dn): (&str, &str), topic: String, request: Value, at: i64) {
    state
        .live
        .downlink(pk, dn, topic, request.to_string().into_bytes(), at);
}

fn alink_request(message_id: &str, method: &str, params: Value) -> Value {
    serde_json::json!({"id": message_id, "version": "1.0", "params": params, "method": method})
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DownlinkMessage {
    pub message_id: String,
    pub method: String,
    pub params: Value,
    /// sent, replied, failed or timeout.
    pub status: String,
    pub reply_code: Option<i64>,
    pub reply_data: Option<Value>,
    pub reply_message: Option<String>,
    pub created_at: i64,
    pub replied_at: Option<i64>,
}

impl From<DownlinkRow> for DownlinkMessage {
    fn from(r: DownlinkRow) -> Self {
        DownlinkMessage {
            message_id: r.message_id,
            method: r.method,
            params: r.params,
            status: r.status,
            reply_code: r.reply_code,
            reply_data: r.reply_data,
            reply_message: r.reply_message,
            created_at: r.created_at,
            replied_at: r.replied_at,
        }
    }
}

/// A downlink message and the device's reply to it.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}/messages/{messageId}", tag = "downlink", security(("bearer" = [])),
    params(("productKey" = String, Path), ("deviceName" = String, Path), ("messageId" = String, Path)),
    responses((status = 200, body = DownlinkMessage), (status = 404, body = crate::problem::Problem)))]
pub async fn message(
    State(state): State<ApiState>,
    user: Authenticated,
    Path((pk, dn, id)): Path<(String, String, String)>,
) -> ApiResult<Json<DownlinkMessage>> {
    crate::authz::device(&state, &user, "device", "read", &pk, &dn).await?;
    let row = state
        .store
        .get_downlink(&pk, &dn, &id)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("message '{id}' not found for device '{dn}'"))
        })?;
    Ok(Json(row.into()))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Shadow {
    pub desired: Value,
    pub reported: Value,
    /// Desired values that differ from the reported ones.
    pub delta: Value,
    pub version: i64,
    pub desired_updated_at: Option<i64>,
    pub reported_updated_at: Option<i64>,
    pub updated_at: i64,
}

impl From<ShadowView> for Shadow {
    fn from(v: ShadowView) -> Self {
        Shadow {
            desired: v.desired,
            reported: v.reported,
            delta: v.delta,
            version: v.version,
            desired_updated_at: v.desired_updated_at,
            reported_updated_at: v.reported_updated_at,
            updated_at: v.updated_at,
        }
    }
}

/// The device shadow.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}/shadow", tag = "shadow", security(("bearer" = [])),
    params(("productKey" = String, Path), ("deviceName" = String, Path)), responses((status = 200, body = Shadow)))]
pub async fn get_shadow(
    State(state): State<ApiState>,
    user: Authenticated,
    Path((pk, dn)): Path<(String, String)>,
) -> ApiResult<Json<Shadow>> {
    crate::authz::device(&state, &user, "shadow", "read", &pk, &dn).await?;
    Ok(Json(
        state.plane.shadow(&DeviceId::new(&*pk, &*dn)).await?.into(),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutShadow {
    /// Desired values to merge (null removes a key).
    pub desired: Map<String, Value>,
    /// The version this change is based on; refused with 422 when the shadow has moved on.
    pub version: Option<i64>,
}

/// Set desired values; an online device receives them at once, an offline one on reconnect.
#[utoipa::path(put, path = "/api/v1/products/{productKey}/devices/{deviceName}/shadow", tag = "shadow", security(("bearer" = [])),
    params(("productKey" = String, Path), ("deviceName" = String, Path)), request_body = PutShadow,
    responses((status = 200, body = Shadow), (status = 422, body = crate::problem::Problem)))]
pub async fn put_shadow(
    State(state): State<ApiState>,
    user: Authenticated,
    Path((pk, dn)): Path<(String, String)>,
    Json(req): Json<PutShadow>,
) -> ApiResult<Json<Shadow>> {
    crate::authz::device(&state, &user, "shadow", "write", &pk, &dn).await?;
    let view = state
        .plane
        .update_desired(&DeviceId::new(&*pk, &*dn), &req.desired, req.version)
        .await?;
    Ok(Json(view.into()))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusChange {
    pub online: bool,
    /// connected, client_disconnect, keepalive_timeout, kicked, credential_revoked, …
    pub reason: String,
    pub at: i64,
}

/// The device's online/offline history, newest first.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}/status-log", tag = "devices", security(("bearer" = [])),
    params(("productKey" = String, Path), ("deviceName" = String, Path)), responses((status = 200, body = Vec<StatusChange>)))]
pub async fn status_log(
    State(state): State<ApiState>,
    user: Authenticated,
    Path((pk, dn)): Path<(String, String)>,
) -> ApiResult<Json<Vec<StatusChange>>> {
    crate::authz::device(&state, &user, "device", "read", &pk, &dn).await?;
    let rows = state.store.status_log(&pk, &dn, 100).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| StatusChange {
                online: r.online,
                reason: r.reason,
                at: r.at,
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::valid_tag_key;

    #[test]
    fn tag_keys_are_plain_names() {
        for ok in ["group", "floor-2", "site.zone", "a_b", &"k".repeat(64)] {
            assert!(valid_tag_key(ok), "{ok}");
        }
        for bad in ["", "a b", "a\"b", "a:b", "键", &"k".repeat(65)] {
            assert!(!valid_tag_key(bad), "{bad}");
        }
    }
}
