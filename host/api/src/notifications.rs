//! Notification settings: channels (e-mail, SMS, IM, webhook) with their write-only
//! credentials, message templates, the delivery log, and each user's own preferences.
//!
//! Channels, templates and deliveries are configuration (`channel.*`, `template.*`,
//! `delivery.read`); preferences belong to the caller's message center (`message.*`).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use lotus_notify::{MessageTemplate, Preferences, SmtpConfig};
use lotus_storage::{ChannelRow, DeliveryFilter, DeliveryRow, NewChannel, TemplateRow};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::ApiState;
use crate::auth::Authenticated;
use crate::events::{is_code, operations, stored};
use crate::problem::{ApiError, ApiResult, Json, Path, Query};
use crate::products::{PageQuery, Paged};

fn check_id(what: &str, id: &str) -> ApiResult<()> {
    if is_code(id) {
        Ok(())
    } else {
        Err(ApiError::unprocessable(format!(
            "{what} id `{id}`: 1 to 64 lower-case letters, digits, '_', '.' and '-'"
        )))
    }
}

// --- channels ------------------------------------------------------------------------------

/// A notification channel; its credential is never shown, only whether it has one.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    pub id: String,
    /// email, sms, im or webhook.
    pub kind: String,
    /// Settings without secrets (SMTP host and sender, webhook URL, …).
    pub config: Value,
    pub has_secret: bool,
    /// The `channel` plugin that sends SMS or IM.
    pub plugin_id: Option<String>,
    pub enabled: bool,
    pub updated_at: i64,
}

impl From<ChannelRow> for Channel {
    fn from(c: ChannelRow) -> Self {
        Channel {
            id: c.id,
            kind: c.kind,
            config: c.config,
            has_secret: c.has_secret,
            plugin_id: c.plugin_id,
            enabled: c.enabled,
            updated_at: c.updated_at,
        }
    }
}

/// A channel to create or replace.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutChannel {
    /// email, sms, im or webhook.
    pub kind: String,
    /// email: an SMTP configuration without the password (`{host, port, security?, username?,
    /// from, timeoutSecs?}`); webhook: `{url}`; sms and im: whatever the plugin reads.
    #[serde(default = "empty_object")]
    pub config: Value,
    /// The credential (SMTP password, webhook signing key, provider token); write-only. Leave
    /// it out to keep the stored one.
    pub secret: Option<String>,
    /// The `channel` plugin that sends SMS or IM (required for those).
    pub plugin_id: Option<String>,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

fn enabled_by_default() -> bool {
    true
}

/// Checks a channel's settings for its kind; `has_secret` says whether a credential will be
/// stored (sent now or kept from before).
fn check_channel(c: &PutChannel, has_secret: bool) -> ApiResult<()> {
    if !c.config.is_object() {
        return Err(ApiError::unprocessable("config: a JSON object"));
    }
    if c.secret.as_deref().is_some_and(|s| s.is_empty()) {
        return Err(ApiError::unprocessable(
            "secret: must not be empty; leave it out to keep the stored one",
        ));
    }
    match c.kind.as_str() {
        "email" => {
            if c.config.get("password").is_some() {
                return Err(ApiError::unprocessable(
                    "config.password: send the SMTP password as `secret`, which is stored \
                     encrypted and never shown again",
                ));
            }
            let mut smtp: SmtpConfig = serde_json::from_value(c.config.clone()).map_err(|e| {
                ApiError::unprocessable(format!("config: not an SMTP configuration: {e}"))
            })?;
            if smtp.username.is_some() {
                if !has_secret {
                    return Err(ApiError::unprocessable(
                        "secret: the SMTP password of config.username is missing",
                    ));
                }
                // The password itself is checked by the server at the first delivery.
                smtp.password = Some("set".into());
            }
            smtp.validate()
                .map_err(|e| ApiError::unprocessable(format!("config: {e}")))?;
        }
        "webhook" => {
            let url = c.config.get("url").and_then(Value::as_str).unwrap_or("");
            let rest = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
                return Err(ApiError::unprocessable(
                    "config.url: the webhook's http:// or https:// URL, e.g. https://hooks.example.org/lotus",
                ));
            }
        }
        "sms" | "im" => {
            if c.plugin_id.as_deref().is_none_or(|p| p.trim().is_empty()) {
                return Err(ApiError::unprocessable(format!(
                    "pluginId: an {} channel sends through a `channel` plugin; name it",
                    c.kind
                )));
            }
        }
        other => {
            return Err(ApiError::unprocessable(format!(
                "kind `{other}`: use email, sms, im or webhook (in-app messages need no channel)"
            )));
        }
    }
    if c.kind != "sms" && c.kind != "im" && c.plugin_id.is_some() {
        return Err(ApiError::unprocessable(format!(
            "pluginId: only sms and im channels send through a plugin, not {}",
            c.kind
        )));
    }
    Ok(())
}

/// Every channel.
#[derive(Serialize, ToSchema)]
pub struct ChannelList {
    pub items: Vec<Channel>,
}

/// Every notification channel, by id.
#[utoipa::path(get, path = "/api/v1/channels", tag = "notifications", security(("bearer" = [])),
    responses((status = 200, body = ChannelList)))]
pub async fn list_channels(
    State(state): State<ApiState>,
    user: Authenticated,
) -> ApiResult<Json<ChannelList>> {
    crate::authz::global(&state, &user, "channel", "read", "*")?;
    let rows = operations(&state)?.store.list_channels().await?;
    Ok(Json(ChannelList {
        items: rows.into_iter().map(Channel::from).collect(),
    }))
}

/// A channel.
#[utoipa::path(get, path = "/api/v1/channels/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Channel), (status = 404, body = crate::problem::Problem)))]
pub async fn get_channel(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<Channel>> {
    crate::authz::global(&state, &user, "channel", "read", &id)?;
    operations(&state)?
        .store
        .get_channel(&id)
        .await?
        .map(|c| Json(c.into()))
        .ok_or_else(|| ApiError::not_found(format!("channel `{id}` does not exist")))
}

/// Create or replace a channel. The credential (`secret`) is stored encrypted and never
/// returned; leave it out to keep the stored one.
#[utoipa::path(put, path = "/api/v1/channels/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = PutChannel,
    responses((status = 200, body = Channel), (status = 201, body = Channel),
        (status = 422, body = crate::problem::Problem)))]
pub async fn put_channel(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
    Json(req): Json<PutChannel>,
) -> ApiResult<Response> {
    crate::authz::global(&state, &user, "channel", "write", &id)?;
    let ops = operations(&state)?;
    check_id("channel", &id)?;
    let existing = ops.store.get_channel(&id).await?;
    let keeps_secret = existing.as_ref().is_some_and(|c| c.has_secret);
    check_channel(&req, req.secret.is_some() || keeps_secret)?;
    let row = ops
        .store
        .put_channel(&NewChannel {
            id: &id,
            kind: &req.kind,
            config: &req.config,
            secret: req.secret.as_deref(),
            plugin_id: req.plugin_id.as_deref(),
            enabled: req.enabled,
        })
        .await
        .map_err(stored)?;
    tracing::info!(channel = %id, kind = %req.kind, by = %user.user.username, "channel saved");
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(Channel::from(row))).into_response())
}

/// Delete a channel; its deliveries stay as the record of what was sent.
#[utoipa::path(delete, path = "/api/v1/channels/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::problem::Problem)))]
pub async fn delete_channel(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    crate::authz::global(&state, &user, "channel", "delete", &id)?;
    if !operations(&state)?.store.delete_channel(&id).await? {
        return Err(ApiError::not_found(format!(
            "channel `{id}` does not exist"
        )));
    }
    tracing::info!(channel = %id, by = %user.user.username, "channel deleted");
    Ok(StatusCode::NO_CONTENT)
}

// --- templates -----------------------------------------------------------------------------

/// A message template: subject and body over the event or match that is notified.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Template {
    pub id: String,
    pub subject: String,
    pub body: String,
    pub updated_at: i64,
}

impl From<TemplateRow> for Template {
    fn from(t: TemplateRow) -> Self {
        Template {
            id: t.id,
            subject: t.subject,
            body: t.body,
            updated_at: t.updated_at,
        }
    }
}

/// A template to create or replace.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutTemplate {
    /// e.g. `Event {{ event.number }}: {{ event.title }}`.
    pub subject: String,
    #[serde(default)]
    pub body: String,
}

/// Every template.
#[derive(Serialize, ToSchema)]
pub struct TemplateList {
    pub items: Vec<Template>,
}

/// Every message template, by id.
#[utoipa::path(get, path = "/api/v1/templates", tag = "notifications", security(("bearer" = [])),
    responses((status = 200, body = TemplateList)))]
pub async fn list_templates(
    State(state): State<ApiState>,
    user: Authenticated,
) -> ApiResult<Json<TemplateList>> {
    crate::authz::global(&state, &user, "template", "read", "*")?;
    let rows = operations(&state)?.store.list_templates().await?;
    Ok(Json(TemplateList {
        items: rows.into_iter().map(Template::from).collect(),
    }))
}

/// A template.
#[utoipa::path(get, path = "/api/v1/templates/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Template), (status = 404, body = crate::problem::Problem)))]
pub async fn get_template(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<Template>> {
    crate::authz::global(&state, &user, "template", "read", &id)?;
    operations(&state)?
        .store
        .get_template(&id)
        .await?
        .map(|t| Json(t.into()))
        .ok_or_else(|| ApiError::not_found(format!("template `{id}` does not exist")))
}

/// Create or replace a template; it is compiled first, and a syntax error is a 422 naming the
/// part, line and column.
#[utoipa::path(put, path = "/api/v1/templates/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = PutTemplate,
    responses((status = 200, body = Template), (status = 201, body = Template),
        (status = 422, body = crate::problem::Problem)))]
pub async fn put_template(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
    Json(req): Json<PutTemplate>,
) -> ApiResult<Response> {
    crate::authz::global(&state, &user, "template", "write", &id)?;
    let ops = operations(&state)?;
    check_id("template", &id)?;
    if req.subject.trim().is_empty() {
        return Err(ApiError::unprocessable(
            "subject: must not be empty; it is the line recipients see first",
        ));
    }
    MessageTemplate::compile(&id, &req.subject, &req.body)
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    let existed = ops.store.get_template(&id).await?.is_some();
    let row = ops.store.put_template(&id, &req.subject, &req.body).await?;
    tracing::info!(template = %id, by = %user.user.username, "template saved");
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(Template::from(row))).into_response())
}

/// Delete a template.
#[utoipa::path(delete, path = "/api/v1/templates/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::problem::Problem)))]
pub async fn delete_template(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    crate::authz::global(&state, &user, "template", "delete", &id)?;
    if !operations(&state)?.store.delete_template(&id).await? {
        return Err(ApiError::not_found(format!(
            "template `{id}` does not exist"
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}

// --- deliveries ----------------------------------------------------------------------------

/// One notification sent (or being sent) through a channel.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub id: i64,
    pub channel_id: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    /// pending, failed (will be retried), sent or dead (given up).
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    /// The provider's id of the sent message.
    pub message_id: Option<String>,
    /// What caused it: `event:42`, `task:…`, `rule:…`.
    pub reference: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub next_attempt_at: i64,
}

impl From<DeliveryRow> for Delivery {
    fn from(d: DeliveryRow) -> Self {
        Delivery {
            id: d.id,
            channel_id: d.channel_id,
            recipient: d.recipient,
            subject: d.subject,
            body: d.body,
            state: d.state,
            attempts: d.attempts,
            last_error: d.last_error,
            message_id: d.message_id,
            reference: d.reference,
            created_at: d.created_at,
            updated_at: d.updated_at,
            next_attempt_at: d.next_attempt_at,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryQuery {
    /// pending, failed, sent or dead.
    pub state: Option<String>,
    pub channel_id: Option<String>,
    /// What caused it, e.g. `event:42`.
    pub reference: Option<String>,
    pub page: Option<i64>,
    pub page_size: Option<i64>,
}

/// The delivery log, the newest first.
#[utoipa::path(get, path = "/api/v1/deliveries", tag = "notifications", security(("bearer" = [])),
    params(DeliveryQuery), responses((status = 200, body = Paged<Delivery>)))]
pub async fn list_deliveries(
    State(state): State<ApiState>,
    user: Authenticated,
    Query(q): Query<DeliveryQuery>,
) -> ApiResult<Json<Paged<Delivery>>> {
    crate::authz::global(&state, &user, "delivery", "read", "*")?;
    let ops = operations(&state)?;
    if let Some(s) = &q.state
        && !["pending", "failed", "sent", "dead"].contains(&s.as_str())
    {
        return Err(ApiError::bad_request(
            "state must be pending, failed, sent or dead",
        ));
    }
    let (page, number, size) = PageQuery {
        page: q.page,
        page_size: q.page_size,
    }
    .page()?;
    let (rows, total) = ops
        .store
        .list_deliveries(&DeliveryFilter {
            state: q.state.as_deref(),
            channel_id: q.channel_id.as_deref(),
            reference: q.reference.as_deref(),
            limit: page.limit,
            offset: page.offset,
        })
        .await
        .map_err(stored)?;
    Ok(Json(Paged {
        items: rows.into_iter().map(Delivery::from).collect(),
        total,
        page: number,
        page_size: size,
    }))
}

// --- preferences ---------------------------------------------------------------------------

/// Your notification preferences (in-app and e-mail at every level when you never set any).
#[utoipa::path(get, path = "/api/v1/me/preferences", tag = "notifications", security(("bearer" = [])),
    responses((status = 200, description = "{channels: [inapp|email|sms|im], minLevel?: 1..4, quietHours?: {start, end, utcOffsetMinutes}}", body = Value)))]
pub async fn get_preferences(
    State(state): State<ApiState>,
    user: Authenticated,
) -> ApiResult<Json<Value>> {
    crate::authz::global(&state, &user, "message", "read", &user.user.username)?;
    let ops = operations(&state)?;
    match ops.store.preferences(&user.user.username).await? {
        Some(p) => Ok(Json(p)),
        None => Ok(Json(
            serde_json::to_value(Preferences::default()).unwrap_or(Value::Null),
        )),
    }
}

/// Replace your notification preferences: which channels, from which level, and quiet hours
/// during which only critical notifications leave the app.
#[utoipa::path(put, path = "/api/v1/me/preferences", tag = "notifications", security(("bearer" = [])),
    request_body(content = Value, description = "{channels: [inapp|email|sms|im], minLevel?: 1..4, quietHours?: {start: \"22:00\", end: \"07:00\", utcOffsetMinutes: 480}}"),
    responses((status = 200, body = Value), (status = 422, body = crate::problem::Problem)))]
pub async fn put_preferences(
    State(state): State<ApiState>,
    user: Authenticated,
    Json(prefs): Json<Preferences>,
) -> ApiResult<Json<Value>> {
    crate::authz::global(&state, &user, "message", "write", &user.user.username)?;
    let ops = operations(&state)?;
    prefs
        .validate()
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    let value = serde_json::to_value(&prefs)
        .map_err(|e| ApiError::unprocessable(format!("the preferences cannot be stored: {e}")))?;
    ops.store
        .put_preferences(&user.user.username, &value)
        .await?;
    Ok(Json(value))
}

pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/channels", get(list_channels))
        .route(
            "/api/v1/channels/{id}",
            get(get_channel).put(put_channel).delete(delete_channel),
        )
        .route("/api/v1/templates", get(list_templates))
        .route(
            "/api/v1/templates/{id}",
            get(get_template).put(put_template).delete(delete_template),
        )
        .route("/api/v1/deliveries", get(list_deliveries))
        .route(
            "/api/v1/me/preferences",
            get(get_preferences).put(put_preferences),
        )
}

#[derive(OpenApi)]
#[openapi(paths(
    list_channels,
    get_channel,
    put_channel,
    delete_channel,
    list_templates,
    get_template,
    put_template,
    delete_template,
    list_deliveries,
    get_preferences,
    put_preferences,
))]
pub(crate) struct NotificationsDoc;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn channel(v: Value) -> PutChannel {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn email_channels_keep_the_password_out_of_config() {
        let ok = channel(json!({"kind": "email",
            "config": {"host": "smtp.example.org", "port": 587, "username": "lotus", "from": "alerts@example.org"},
            "secret": "pw"}));
        assert!(check_channel(&ok, true).is_ok());
        let e = check_channel(&ok, false).unwrap_err();
        assert!(e.detail.starts_with("secret:"), "{}", e.detail);
        let leaked = channel(json!({"kind": "email",
            "config": {"host": "smtp.example.org", "port": 587, "from": "a@b.org", "password": "x"}}));
        assert!(
            check_channel(&leaked, false)
                .unwrap_err()
                .detail
                .starts_with("config.password")
        );
        let bad = channel(
            json!({"kind": "email", "config": {"host": "smtp.example.org", "port": 0, "from": "a@b.org"}}),
        );
        assert_eq!(check_channel(&bad, false).unwrap_err().status, 422);
    }

    #[test]
    fn other_kinds_need_their_part() {
        let hook = |url: &str| channel(json!({"kind": "webhook", "config": {"url": url}}));
        assert!(check_channel(&hook("https://hooks.example.org/x"), false).is_ok());
        assert!(check_channel(&hook("ftp://hooks.example.org"), false).is_err());
        assert!(check_channel(&hook("http://"), false).is_err());
        assert!(check_channel(&channel(json!({"kind": "sms"})), false).is_err());
        assert!(
            check_channel(
                &channel(json!({"kind": "sms", "pluginId": "aliyun-sms"})),
                false
            )
            .is_ok()
        );
        assert!(check_channel(&channel(json!({"kind": "fax"})), false).is_err());
        assert!(check_channel(&channel(json!({"kind": "webhook", "config": {"url": "https://h.example"}, "pluginId": "p"})), false).is_err());
    }
}
