//! The app registry (APP-2 … APP-4, CFG-1): administrators register ISV apps and city
//! dashboards, take them online or offline, and grant each the API actions it may call and the
//! resources it may call them on. An app calls the API with requests signed by its secret
//! (`crate::signature`, `docs/app-api.md`); the secret is shown once, at creation and at each
//! rotation. With the same client id and secret it logs in to the MQTT broker, confined to its
//! topic grants (`lotus_device::application`). Registrations, grant and status changes,
//! rotations and deletions are audited.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use lotus_device::application::{APP_CLIENT_ID_PREFIX, AppTopicGrantError};
use lotus_model::authz::{Grant, GrantAction};
use lotus_model::scope::{Scope, parse_org, parse_region};
use lotus_mqtt::DisconnectReason;
use lotus_storage::{
    APP_OFFLINE, APP_ONLINE, AppFilter, AppResources, AppRow, AppUpdate, NewApp, Secret,
    StorageError, TopicGrant,
};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::ApiState;
use crate::auth::Authenticated;
use crate::problem::{ApiError, ApiResult, Json, Path, Query};
use crate::products::{PageQuery, Paged};

/// What kinds of app there are.
pub const APP_TYPES: [&str; 4] = ["web", "dashboard", "mobile", "service"];

/// API kinds no app is ever granted: they administer the platform itself (accounts, roles,
/// policies, the audit log, apps and credentials, plugins that run code in it) or belong to a
/// person. The `lotus.api` policy refuses them to apps as well.
pub const KINDS_NEVER_GRANTED: [&str; 13] = [
    "app",
    "application",
    "audit",
    "data_grant",
    "decision",
    "org",
    "plugin",
    "policy",
    "profile",
    "message",
    "role",
    "task",
    "user",
];

const VERBS: [&str; 5] = ["read", "write", "delete", "invoke", "admin"];
const MAX_NAME: usize = 64;
const MAX_VENDOR: usize = 128;
const MAX_DESCRIPTION: usize = 2000;
const MAX_URL: usize = 2048;
/// An icon may be a small image inline as a data URI.
const MAX_ICON: usize = 256 * 1024;
/// Most entries in any one list of grants.
const MAX_LIST: usize = 1000;
/// Most MQTT topic grants of one app, as for an application credential: every SUBSCRIBE and
/// every delivery to the app is matched against them.
const MAX_TOPIC_GRANTS: usize = 64;
/// Longest topic filter granted.
const MAX_TOPIC_FILTER: usize = 256;

/// What an app is granted besides its API actions: each list names things of one kind.
#[derive(Serialize, Deserialize, ToSchema, Clone, Default)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct AppGrants {
    /// Product keys: each product and all its devices.
    #[schema(example = json!(["a1B2c3D4e5F"]))]
    pub products: Vec<String>,
    /// Single devices as `productKey/deviceName`.
    #[schema(example = json!(["a1B2c3D4e5F/lamp-0001"]))]
    pub devices: Vec<String>,
    /// Region paths: everything in the region or below it.
    #[schema(example = json!(["/hz/xihu"]))]
    pub regions: Vec<String>,
    /// Product keys whose data (readings, thing model) the app reads, at `read_only` level.
    pub data_models: Vec<String>,
    /// Event type codes: those types and their events.
    pub event_types: Vec<String>,
    /// MQTT topic grants (see `docs/app-api.md`, "Messages over MQTT"): a filter
    /// `/{productKey}/…` or `/sys/{productKey}/…` grants subscribing;
    /// `{"filter": …, "actions": ["subscribe", "publish"]}` names the actions. Products must be
    /// in the app's organisation and region.
    #[schema(value_type = Vec<Object>, example = json!(["/a1B2c3D4e5F/+/user/update",
        {"filter": "/a1B2c3D4e5F/+/user/get", "actions": ["publish"]}]))]
    pub topics: Vec<serde_json::Value>,
}

impl From<AppResources> for AppGrants {
    fn from(r: AppResources) -> Self {
        AppGrants {
            products: r.products,
            devices: r.devices,
            regions: r.regions,
            data_models: r.data_models,
            event_types: r.event_types,
            topics: r.topics.iter().map(|t| json!(t)).collect(),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateApp {
    /// 1 to 64 characters.
    pub name: String,
    /// `web`, `dashboard`, `mobile` or `service`.
    #[serde(rename = "type")]
    pub app_type: String,
    /// An `https://` URL or a `data:image/…` URI.
    pub icon: Option<String>,
    /// Where the app center opens it.
    pub url: Option<String>,
    pub vendor: Option<String>,
    pub description: Option<String>,
    /// `online` (the default) or `offline`.
    pub status: Option<String>,
    /// The organisation it acts for [default: yours].
    pub org: Option<String>,
    /// The region it acts in [default: yours].
    pub region: Option<String>,
    /// API actions it may call, `<kind>.<verb>`.
    #[serde(default)]
    #[schema(example = json!(["device.read", "event.read"]))]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub resources: AppGrants,
    /// Where OpenID Connect may send users back to, exactly.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Roles whose users may open it from the app center.
    #[serde(default)]
    pub open_roles: Vec<String>,
    /// Where OpenID Connect may send users after logging out, exactly.
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateApp {
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub app_type: Option<String>,
    /// An empty string removes it (likewise `url`, `vendor`, `description`).
    pub icon: Option<String>,
    pub url: Option<String>,
    pub vendor: Option<String>,
    pub description: Option<String>,
    /// `online` or `offline`; an offline app's signed calls are refused at once.
    pub status: Option<String>,
    pub org: Option<String>,
    pub region: Option<String>,
    /// Replaces every API grant.
    pub scopes: Option<Vec<String>>,
    /// Replaces every resource grant.
    pub resources: Option<AppGrants>,
    pub redirect_uris: Option<Vec<String>>,
    pub open_roles: Option<Vec<String>>,
    pub post_logout_redirect_uris: Option<Vec<String>>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct App {
    pub id: i64,
    /// The public id: `X-Lotus-App` of signed calls and the OpenID Connect client id.
    pub client_id: String,
    /// Only in the answer to creation and to rotation: it is not shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub name: String,
    #[serde(rename = "type")]
    pub app_type: String,
    pub icon: Option<String>,
    pub url: Option<String>,
    pub vendor: Option<String>,
    pub description: Option<String>,
    pub status: String,
    pub org: String,
    pub region: String,
    pub scopes: Vec<String>,
    pub resources: AppGrants,
    pub redirect_uris: Vec<String>,
    pub open_roles: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<AppRow> for App {
    fn from(r: AppRow) -> Self {
        App {
            id: r.id,
            client_id: r.client_id,
            secret: None,
            name: r.name,
            app_type: r.app_type,
            icon: r.icon,
            url: r.url,
            vendor: r.vendor,
            description: r.description,
            status: r.status,
            org: r.scope.org,
            region: r.scope.region,
            scopes: r.scopes,
            resources: r.resources.into(),
            redirect_uris: r.redirect_uris,
            open_roles: r.open_roles,
            post_logout_redirect_uris: r.post_logout_redirect_uris,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Which apps to list; every parameter narrows the result.
#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct AppQuery {
    /// `web`, `dashboard`, `mobile` or `service`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub app_type: Option<String>,
    /// A part of the name, any case.
    pub name: Option<String>,
    /// `online` or `offline`.
    pub status: Option<String>,
    pub page: Option<i64>,
    pub page_size: Option<i64>,
}

// --- validation: each error names the field and says what is accepted ------------------------

fn check_name(name: &str) -> ApiResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return Err(ApiError::unprocessable(format!(
            "name must be 1 to {MAX_NAME} characters"
        )));
    }
    Ok(name.to_string())
}

fn check_type(t: &str) -> ApiResult<String> {
    if APP_TYPES.contains(&t) {
        Ok(t.to_string())
    } else {
        Err(ApiError::unprocessable(format!(
            "type: unknown app type '{t}' (use {})",
            APP_TYPES.join(", ")
        )))
    }
}

fn check_status(s: &str) -> ApiResult<String> {
    if s == APP_ONLINE || s == APP_OFFLINE {
        Ok(s.to_string())
    } else {
        Err(ApiError::unprocessable(format!(
            "status: '{s}' is neither {APP_ONLINE} nor {APP_OFFLINE}"
        )))
    }
}

fn is_web_url(u: &str) -> bool {
    (u.starts_with("https://") || u.starts_with("http://"))
        && u.len() > "https://".len()
        && !u.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A text field; `None` when absent or blank.
fn check_text(field: &str, v: Option<String>, max: usize) -> ApiResult<Option<String>> {
    let Some(v) = v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if v.chars().count() > max {
        return Err(ApiError::unprocessable(format!(
            "{field} must be at most {max} characters"
        )));
    }
    Ok(Some(v))
}

fn check_url(field: &str, v: Option<String>) -> ApiResult<Option<String>> {
    let v = check_text(field, v, MAX_URL)?;
    if let Some(u) = &v
        && !is_web_url(u)
    {
        return Err(ApiError::unprocessable(format!(
            "{field}: '{u}' is not an http:// or https:// URL"
        )));
    }
    Ok(v)
}

fn check_icon(v: Option<String>) -> ApiResult<Option<String>> {
    let Some(icon) = v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if icon.len() > MAX_ICON {
        return Err(ApiError::unprocessable(format!(
            "icon is {} KiB; at most {} KiB: use a smaller image or a URL",
            icon.len() / 1024,
            MAX_ICON / 1024
        )));
    }
    if !(is_web_url(&icon) || icon.starts_with("data:image/")) {
        return Err(ApiError::unprocessable(
            "icon must be an http:// or https:// URL or a data:image/… URI",
        ));
    }
    Ok(Some(icon))
}

fn check_scope(
    caller: &Authenticated,
    org: Option<&str>,
    region: Option<&str>,
) -> ApiResult<Scope> {
    Ok(Scope {
        org: match org {
            Some(o) => parse_org(o).map_err(|e| ApiError::unprocessable(format!("org: {e}")))?,
            None => caller.user.scope.org.clone(),
        },
        region: match region {
            Some(r) => {
                parse_region(r).map_err(|e| ApiError::unprocessable(format!("region: {e}")))?
            }
            None => caller.user.scope.region.clone(),
        },
    })
}

fn too_many(field: &str, n: usize) -> ApiResult<()> {
    if n > MAX_LIST {
        return Err(ApiError::unprocessable(format!(
            "{field}: at most {MAX_LIST} entries"
        )));
    }
    Ok(())
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// API actions: `<kind>.<verb>`, without the kinds no app is granted; duplicates dropped.
fn check_scopes(scopes: Vec<String>) -> ApiResult<Vec<String>> {
    too_many("scopes", scopes.len())?;
    let mut out: Vec<String> = Vec::with_capacity(scopes.len());
    for (i, s) in scopes.into_iter().enumerate() {
        let s = s.trim().to_string();
        let Some((kind, verb)) = s.split_once('.') else {
            return Err(ApiError::unprocessable(format!(
                "scopes[{i}]: '{s}' is not <kind>.<verb>, e.g. device.read"
            )));
        };
        if !is_identifier(kind) || !VERBS.contains(&verb) {
            return Err(ApiError::unprocessable(format!(
                "scopes[{i}]: '{s}' is not <kind>.<verb> with a verb of {}",
                VERBS.join(", ")
            )));
        }
        if KINDS_NEVER_GRANTED.contains(&kind) {
            return Err(ApiError::unprocessable(format!(
                "scopes[{i}]: apps are never granted {kind}.* actions ({} stay with people)",
                KINDS_NEVER_GRANTED.join(", ")
            )));
        }
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

fn check_names(field: &str, names: Vec<String>) -> ApiResult<Vec<String>> {
    too_many(field, names.len())?;
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for (i, n) in names.into_iter().enumerate() {
        let n = n.trim().to_string();
        if !is_identifier(&n) {
            return Err(ApiError::unprocessable(format!(
                "{field}[{i}]: '{n}' is not a name of letters, digits, '_' and '-'"
            )));
        }
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

/// One MQTT topic grant as given: a filter string (subscribe) or `{filter, actions}`.
fn parse_topic_grant(field: &str, v: serde_json::Value) -> ApiResult<Grant> {
    use serde_json::Value;
    const FORMS: &str = r#"give a topic filter ("/{productKey}/+/user/update" grants subscribe) or {"filter": "/{productKey}/…", "actions": ["subscribe", "publish"]}"#;
    let (filter, actions) = match v {
        Value::String(filter) => (filter, None),
        Value::Object(mut o) => {
            let filter = match o.remove("filter") {
                Some(Value::String(f)) => f,
                _ => {
                    return Err(ApiError::unprocessable(format!(
                        "{field}.filter: a topic filter is required ({FORMS})"
                    )));
                }
            };
            let actions = match o.remove("actions") {
                None | Some(Value::Null) => None,
                Some(Value::Array(a)) => Some(a),
                Some(_) => {
                    return Err(ApiError::unprocessable(format!(
                        "{field}.actions: give a list of subscribe and/or publish"
                    )));
                }
            };
            if let Some(k) = o.keys().next() {
                return Err(ApiError::unprocessable(format!(
                    "{field}: unknown field '{k}' ({FORMS})"
                )));
            }
            (filter, actions)
        }
        _ => return Err(ApiError::unprocessable(format!("{field}: {FORMS}"))),
    };
    if filter.is_empty() || filter.len() > MAX_TOPIC_FILTER {
        return Err(ApiError::unprocessable(format!(
            "{field}: a topic filter is 1 to {MAX_TOPIC_FILTER} characters"
        )));
    }
    let mut granted = Vec::new();
    for (j, a) in actions
        .unwrap_or_else(|| vec![json!("subscribe")])
        .iter()
        .enumerate()
    {
        let action = a.as_str().and_then(GrantAction::parse).ok_or_else(|| {
            ApiError::unprocessable(format!(
                "{field}.actions[{j}]: unknown action {a} (use subscribe or publish)"
            ))
        })?;
        if !granted.contains(&action) {
            granted.push(action);
        }
    }
    if granted.is_empty() {
        return Err(ApiError::unprocessable(format!(
            "{field}.actions: give subscribe and/or publish"
        )));
    }
    // One spelling per meaning, so that comparing grants (to disconnect on a change) and the
    // stored form do not depend on the order given.
    granted.sort_by_key(|a| a.as_str());
    granted.reverse();
    Ok(Grant {
        filter,
        actions: granted,
    })
}

/// MQTT topic grants: each checked as an application credential's grant is, of an existing
/// product in the app's organisation and region; duplicates dropped.
async fn check_topics(
    state: &ApiState,
    scope: &Scope,
    topics: Vec<serde_json::Value>,
) -> ApiResult<Vec<TopicGrant>> {
    if topics.len() > MAX_TOPIC_GRANTS {
        return Err(ApiError::unprocessable(format!(
            "resources.topics: at most {MAX_TOPIC_GRANTS} topic grants (use + and # below the product key to cover more topics)"
        )));
    }
    if topics.is_empty() {
        return Ok(Vec::new());
    }
    let orgs = state.store.org_subtree(&scope.org).await?;
    let mut out: Vec<TopicGrant> = Vec::with_capacity(topics.len());
    for (i, t) in topics.into_iter().enumerate() {
        let field = format!("resources.topics[{i}]");
        let grant = parse_topic_grant(&field, t)?;
        state
            .plane
            .check_app_topic_grant(scope, &orgs, &grant)
            .await
            .map_err(|e| match e {
                AppTopicGrantError::Storage(e) => ApiError::from(e),
                other => ApiError::unprocessable(format!("{field}: {other}")),
            })?;
        let grant = TopicGrant::from_grant(grant);
        if !out.contains(&grant) {
            out.push(grant);
        }
    }
    Ok(out)
}

/// Resource grants: products and devices must exist, regions must be region paths, topic
/// grants must be valid grant filters of products in the app's `scope`.
async fn check_grants(state: &ApiState, g: AppGrants, scope: &Scope) -> ApiResult<AppResources> {
    for (field, list) in [
        ("products", &g.products),
        ("devices", &g.devices),
        ("regions", &g.regions),
        ("dataModels", &g.data_models),
        ("eventTypes", &g.event_types),
    ] {
        too_many(&format!("resources.{field}"), list.len())?;
    }
    for (field, keys) in [("products", &g.products), ("dataModels", &g.data_models)] {
        for (i, pk) in keys.iter().enumerate() {
            if state.plane.registry.get(pk).is_none() {
                return Err(ApiError::unprocessable(format!(
                    "resources.{field}[{i}]: unknown product '{pk}'"
                )));
            }
        }
    }
    for (i, d) in g.devices.iter().enumerate() {
        let Some((pk, dn)) = d.split_once('/') else {
            return Err(ApiError::unprocessable(format!(
                "resources.devices[{i}]: '{d}' is not productKey/deviceName"
            )));
        };
        if state.store.device_scope(pk, dn).await?.is_none() {
            return Err(ApiError::unprocessable(format!(
                "resources.devices[{i}]: unknown device '{d}'"
            )));
        }
    }
    let mut regions = Vec::with_capacity(g.regions.len());
    for (i, r) in g.regions.iter().enumerate() {
        regions.push(
            parse_region(r)
                .map_err(|e| ApiError::unprocessable(format!("resources.regions[{i}]: {e}")))?,
        );
    }
    let event_types = check_names("resources.eventTypes", g.event_types)?;
    let topics = check_topics(state, scope, g.topics).await?;
    Ok(AppResources {
        products: g.products,
        devices: g.devices,
        regions,
        data_models: g.data_models,
        event_types,
        topics,
    })
}

fn check_redirect_uris(uris: Vec<String>) -> ApiResult<Vec<String>> {
    check_uris("redirectUris", uris)
}

fn check_uris(field: &str, uris: Vec<String>) -> ApiResult<Vec<String>> {
    too_many(field, uris.len())?;
    for (i, u) in uris.iter().enumerate() {
        // OpenID Connect compares redirect URIs exactly and forbids fragments.
        if !is_web_url(u) || u.contains('#') || u.len() > MAX_URL {
            return Err(ApiError::unprocessable(format!(
                "{field}[{i}]: '{u}' must be an absolute http:// or https:// URL without a #fragment"
            )));
        }
    }
    Ok(uris)
}

// --- ids and secrets -------------------------------------------------------------------------

/// `app_` and 20 characters of RFC 4648 base32 (100 random bits), lower case.
fn new_client_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut rng = rand::rng();
    let tail: String = (0..20)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{APP_CLIENT_ID_PREFIX}{tail}")
}

/// 40 letters and digits (about 238 bits).
fn new_secret() -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(40)
        .map(char::from)
        .collect()
}

/// The app an `{id}` names: its number or its client id.
async fn app_or_404(state: &ApiState, id: &str) -> ApiResult<AppRow> {
    let found = if id.starts_with(APP_CLIENT_ID_PREFIX) {
        state.store.app_by_client_id(id).await?
    } else {
        let n: i64 = id.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "'{id}' is neither an app number nor a client id (app_…)"
            ))
        })?;
        state.store.app(n).await?
    };
    found.ok_or_else(|| ApiError::not_found(format!("app '{id}' not found")))
}

fn resource(app: &AppRow) -> serde_json::Value {
    crate::authz::resource("app", &app.client_id, Some(&app.scope))
}

// --- routes ----------------------------------------------------------------------------------

/// Register an app. Its secret is shown only in this answer.
#[utoipa::path(post, path = "/api/v1/apps", tag = "apps", security(("bearer" = [])),
    request_body = CreateApp,
    responses((status = 201, body = App), (status = 403, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn create(
    State(state): State<ApiState>,
    user: Authenticated,
    Json(req): Json<CreateApp>,
) -> ApiResult<(StatusCode, Json<App>)> {
    let scope = check_scope(&user, req.org.as_deref(), req.region.as_deref())?;
    crate::authz::check(
        &state,
        &user,
        "app.write",
        crate::authz::resource("app", "", Some(&scope)),
    )?;
    let resources = check_grants(&state, req.resources, &scope).await?;
    let secret = new_secret();
    let mut new = NewApp {
        client_id: new_client_id(),
        secret: Secret::new(secret.clone()),
        name: check_name(&req.name)?,
        app_type: check_type(&req.app_type)?,
        icon: check_icon(req.icon)?,
        url: check_url("url", req.url)?,
        vendor: check_text("vendor", req.vendor, MAX_VENDOR)?,
        description: check_text("description", req.description, MAX_DESCRIPTION)?,
        status: check_status(req.status.as_deref().unwrap_or(APP_ONLINE))?,
        scope,
        scopes: check_scopes(req.scopes)?,
        resources,
        redirect_uris: check_redirect_uris(req.redirect_uris)?,
        open_roles: check_names("openRoles", req.open_roles)?,
        post_logout_redirect_uris: check_uris(
            "postLogoutRedirectUris",
            req.post_logout_redirect_uris,
        )?,
    };
    // 100 random bits make a clash next to impossible; retry once anyway.
    let row = match state.store.create_app(&new).await {
        Err(StorageError::Conflict(_)) => {
            new.client_id = new_client_id();
            state.store.create_app(&new).await?
        }
        other => other?,
    };
    tracing::info!(app = %row.client_id, name = %row.name, by = %user.user.username, "app registered");
    crate::audit::record(
        &state,
        &user.user.username,
        "app.create",
        &format!("app:{}", row.client_id),
        "ok",
        json!({"name": row.name, "type": row.app_type, "status": row.status,
               "scopes": row.scopes, "resources": row.resources}),
    )
    .await;
    let mut out = App::from(row);
    out.secret = Some(secret);
    Ok((StatusCode::CREATED, Json(out)))
}

/// Search apps by type, name and status (without secrets).
#[utoipa::path(get, path = "/api/v1/apps", tag = "apps", security(("bearer" = [])),
    params(AppQuery), responses((status = 200, body = Paged<App>)))]
pub async fn list(
    State(state): State<ApiState>,
    user: Authenticated,
    Query(q): Query<AppQuery>,
) -> ApiResult<Json<Paged<App>>> {
    crate::authz::check(
        &state,
        &user,
        "app.read",
        crate::authz::resource("app", "", None),
    )?;
    let (page, number, size) = PageQuery {
        page: q.page,
        page_size: q.page_size,
    }
    .page()?;
    if let Some(t) = &q.app_type {
        check_type(t)?;
    }
    if let Some(s) = &q.status {
        check_status(s)?;
    }
    let within = crate::authz::list_scope(&state, &user, "app")?;
    let filter = AppFilter {
        app_type: q.app_type.as_deref(),
        name_like: q.name.as_deref(),
        status: q.status.as_deref(),
        within: within.as_ref(),
    };
    let (rows, total) = state.store.apps(&filter, page).await?;
    // The scope narrows the query; each row is still the policy's to show.
    let items = rows
        .into_iter()
        .filter(|r| crate::authz::allows(&state, &user, "app.read", resource(r)))
        .map(App::from)
        .collect();
    Ok(Json(Paged {
        items,
        total,
        page: number,
        page_size: size,
    }))
}

/// An app (without its secret), by number or client id.
#[utoipa::path(get, path = "/api/v1/apps/{id}", tag = "apps", security(("bearer" = [])),
    params(("id" = String, Path, description = "The app's number or client id")),
    responses((status = 200, body = App), (status = 404, body = crate::problem::Problem)))]
pub async fn get(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<App>> {
    let app = app_or_404(&state, &id).await?;
    crate::authz::check(&state, &user, "app.read", resource(&app))?;
    Ok(Json(app.into()))
}

/// Change an app: its description, status (online/offline) and grants (`scopes`, `resources`).
/// Grants are replaced, not merged; an app taken offline is refused from its next call. Taking
/// it offline or changing its topic grants, organisation or region closes its MQTT connections.
#[utoipa::path(patch, path = "/api/v1/apps/{id}", tag = "apps", security(("bearer" = [])),
    params(("id" = String, Path, description = "The app's number or client id")),
    request_body = UpdateApp,
    responses((status = 200, body = App), (status = 404, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn update(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
    Json(req): Json<UpdateApp>,
) -> ApiResult<Json<App>> {
    let before = app_or_404(&state, &id).await?;
    crate::authz::check(&state, &user, "app.write", resource(&before))?;
    let scope = if req.org.is_some() || req.region.is_some() {
        let s = Scope {
            org: match &req.org {
                Some(o) => {
                    parse_org(o).map_err(|e| ApiError::unprocessable(format!("org: {e}")))?
                }
                None => before.scope.org.clone(),
            },
            region: match &req.region {
                Some(r) => {
                    parse_region(r).map_err(|e| ApiError::unprocessable(format!("region: {e}")))?
                }
                None => before.scope.region.clone(),
            },
        };
        // Moving an app is writing it where it goes, too.
        crate::authz::check(
            &state,
            &user,
            "app.write",
            crate::authz::resource("app", &before.client_id, Some(&s)),
        )?;
        Some(s)
    } else {
        None
    };
    let resources = match req.resources {
        Some(g) => Some(check_grants(&state, g, scope.as_ref().unwrap_or(&before.scope)).await?),
        None => None,
    };
    let update = AppUpdate {
        name: req.name.as_deref().map(check_name).transpose()?,
        app_type: req.app_type.as_deref().map(check_type).transpose()?,
        icon: req.icon.map(|v| check_icon(Some(v))).transpose()?,
        url: req.url.map(|v| check_url("url", Some(v))).transpose()?,
        vendor: req
            .vendor
            .map(|v| check_text("vendor", Some(v), MAX_VENDOR))
            .transpose()?,
        description: req
            .description
            .map(|v| check_text("description", Some(v), MAX_DESCRIPTION))
            .transpose()?,
        status: req.status.as_deref().map(check_status).transpose()?,
        scope,
        scopes: req.scopes.map(check_scopes).transpose()?,
        resources,
        redirect_uris: req.redirect_uris.map(check_redirect_uris).transpose()?,
        open_roles: req
            .open_roles
            .map(|r| check_names("openRoles", r))
            .transpose()?,
        post_logout_redirect_uris: req
            .post_logout_redirect_uris
            .map(|u| check_uris("postLogoutRedirectUris", u))
            .transpose()?,
    };
    let row = state.store.update_app(before.id, &update).await?;
    let target = format!("app:{}", row.client_id);
    let actor = &user.user.username;
    if row.status != before.status {
        tracing::info!(app = %row.client_id, status = %row.status, by = %actor, "app status changed");
        crate::audit::record(
            &state,
            actor,
            "app.status",
            &target,
            "ok",
            json!({"from": before.status, "to": row.status}),
        )
        .await;
    }
    if row.scopes != before.scopes || row.resources != before.resources || row.scope != before.scope
    {
        tracing::info!(app = %row.client_id, by = %actor, "app grants changed");
        crate::audit::record(
            &state,
            actor,
            "app.grant",
            &target,
            "ok",
            json!({
                "before": {"scopes": before.scopes, "resources": before.resources,
                           "org": before.scope.org, "region": before.scope.region},
                "after": {"scopes": row.scopes, "resources": row.resources,
                          "org": row.scope.org, "region": row.scope.region},
            }),
        )
        .await;
    }
    // MQTT connections keep the grants they were admitted with: a change that can narrow them,
    // or taking the app offline, ends them, and the app reconnects under the new rules.
    if (before.is_online() && !row.is_online())
        || row.resources.topics != before.resources.topics
        || row.scope != before.scope
    {
        disconnect_mqtt(
            &state,
            &row.client_id,
            "status, topic grants or scope changed",
        );
    }
    Ok(Json(row.into()))
}

/// Closes an app's MQTT connections, so that nothing keeps a right it no longer has.
fn disconnect_mqtt(state: &ApiState, client_id: &str, why: &str) {
    let closed = state
        .plane
        .kick_app(client_id, DisconnectReason::CredentialRevoked);
    tracing::info!(
        app = client_id,
        connections = closed,
        why,
        "app's MQTT connections closed"
    );
}

/// Rotate an app's secret: the old one stops working at once (its MQTT connections are
/// closed); the new one is shown only in this answer.
#[utoipa::path(post, path = "/api/v1/apps/{id}/secret", tag = "apps", security(("bearer" = [])),
    params(("id" = String, Path, description = "The app's number or client id")),
    responses((status = 200, body = App), (status = 404, body = crate::problem::Problem)))]
pub async fn rotate_secret(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<App>> {
    let app = app_or_404(&state, &id).await?;
    crate::authz::check(&state, &user, "app.write", resource(&app))?;
    let secret = new_secret();
    let row = state
        .store
        .rotate_app_secret(app.id, &Secret::new(secret.clone()))
        .await?;
    tracing::info!(app = %row.client_id, by = %user.user.username, "app secret rotated");
    disconnect_mqtt(&state, &row.client_id, "secret rotated");
    crate::audit::record(
        &state,
        &user.user.username,
        "app.secret.rotate",
        &format!("app:{}", row.client_id),
        "ok",
        json!({}),
    )
    .await;
    let mut out = App::from(row);
    out.secret = Some(secret);
    Ok(Json(out))
}

/// Delete an app: its signed calls, sign-ins and MQTT logins are refused from now on, and its
/// MQTT connections are closed.
#[utoipa::path(delete, path = "/api/v1/apps/{id}", tag = "apps", security(("bearer" = [])),
    params(("id" = String, Path, description = "The app's number or client id")),
    responses((status = 204), (status = 404, body = crate::problem::Problem)))]
pub async fn delete(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let app = app_or_404(&state, &id).await?;
    crate::authz::check(&state, &user, "app.delete", resource(&app))?;
    state.store.delete_app(app.id).await?;
    tracing::info!(app = %app.client_id, by = %user.user.username, "app deleted");
    disconnect_mqtt(&state, &app.client_id, "deleted");
    crate::audit::record(
        &state,
        &user.user.username,
        "app.delete",
        &format!("app:{}", app.client_id),
        "ok",
        json!({"name": app.name}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// The registry's routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/apps", post(create).get(list))
        .route(
            "/api/v1/apps/{id}",
            axum::routing::get(get).patch(update).delete(delete),
        )
        .route("/api/v1/apps/{id}/secret", post(rotate_secret))
}

/// The registry's part of the OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    paths(create, list, get, update, rotate_secret, delete),
    tags((name = "apps", description = "The app registry: ISV apps and dashboards, their status, API and resource grants, and secrets for signed calls"))
)]
pub struct AppsDoc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_and_secrets() {
        let id = new_client_id();
        assert_eq!(id.len(), 24);
        assert!(id.starts_with("app_"));
        assert!(
            id[4..]
                .bytes()
                .all(|b| b"abcdefghijklmnopqrstuvwxyz234567".contains(&b))
        );
        assert_ne!(new_client_id(), id);
        assert_eq!(new_secret().len(), 40);
    }

    #[test]
    fn scopes_are_checked() {
        assert_eq!(
            check_scopes(vec![
                "device.read".into(),
                "device.read".into(),
                " event.read".into()
            ])
            .unwrap(),
            ["device.read", "event.read"]
        );
        for bad in [
            "device",
            "device.fly",
            ".read",
            "policy.write",
            "app.write",
            "user.read",
        ] {
            let e = check_scopes(vec![bad.into()]).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
            assert!(e.detail.starts_with("scopes[0]"), "{}", e.detail);
        }
    }

    #[test]
    fn urls_and_icons() {
        assert!(check_url("url", Some("https://a.example/x".into())).is_ok());
        assert_eq!(check_url("url", Some("  ".into())).unwrap(), None);
        assert!(check_url("url", Some("javascript:alert(1)".into())).is_err());
        assert!(check_icon(Some("data:image/png;base64,AAAA".into())).is_ok());
        assert!(check_icon(Some("data:text/html,<b>".into())).is_err());
        assert!(check_redirect_uris(vec!["https://a.example/cb#x".into()]).is_err());
        assert!(check_redirect_uris(vec!["https://a.example/cb".into()]).is_ok());
    }
}
