//! HTTP device access for devices that wake up, send and sleep (Alibaba's HTTP flow):
//! `POST /auth` with the signed login as JSON returns a token; `POST /topic/{topic}` with the
//! token in the `password` header (or `Authorization: Bearer`) publishes the body to that
//! topic through the same ACL and pipeline as MQTT, and answers after the commit.
//!
//! Answers keep Alibaba's envelope (`code` 0 and `info`) so existing device firmware reads
//! them; errors are problem documents that also carry Alibaba's numeric `code`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lotus_device::access::{AccessError, TokenRequest};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::ApiState;
use crate::problem::Path;

/// Alibaba's HTTP access codes, which device firmware switches on.
mod code {
    pub const UNAVAILABLE: i64 = 10000;
    pub const AUTH_FAILED: i64 = 20000;
    pub const TOKEN_EXPIRED: i64 = 20001;
    pub const TOKEN_MISSING: i64 = 20002;
    pub const TOKEN_INVALID: i64 = 20003;
    pub const REQUEST_ERROR: i64 = 40000;
}

/// A problem document with Alibaba's `code` and, when the platform rejected the message, the
/// reply an MQTT device would have received.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceProblem {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: i64,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<Value>,
}

fn problem(status: StatusCode, code: i64, detail: String, reply: Option<Value>) -> Response {
    let body = DeviceProblem {
        kind: "about:blank",
        title: status.canonical_reason().unwrap_or("Error").to_string(),
        status: status.as_u16(),
        message: detail.clone(),
        detail,
        code,
        reply,
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        serde_json::to_string(&body).expect("problems serialise"),
    )
        .into_response()
}

fn access_problem(e: AccessError, token_error: bool) -> Response {
    match e {
        AccessError::BadRequest(m) => {
            problem(StatusCode::BAD_REQUEST, code::REQUEST_ERROR, m, None)
        }
        AccessError::Unauthorized(m) => {
            let code = if token_error {
                code::TOKEN_INVALID
            } else {
                code::AUTH_FAILED
            };
            problem(StatusCode::UNAUTHORIZED, code, m, None)
        }
        AccessError::TokenExpired(m) => {
            problem(StatusCode::UNAUTHORIZED, code::TOKEN_EXPIRED, m, None)
        }
        AccessError::Forbidden(m) => {
            let code = if token_error {
                code::REQUEST_ERROR
            } else {
                code::AUTH_FAILED
            };
            problem(StatusCode::FORBIDDEN, code, m, None)
        }
        AccessError::Rejected(reply) => {
            let detail = reply
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the platform refused the message")
                .to_string();
            problem(
                StatusCode::BAD_REQUEST,
                code::REQUEST_ERROR,
                detail,
                Some(reply),
            )
        }
        AccessError::Unavailable(m) => {
            problem(StatusCode::SERVICE_UNAVAILABLE, code::UNAVAILABLE, m, None)
        }
    }
}

/// Authenticate a device with its signed login and receive a token.
#[utoipa::path(post, path = "/auth", tag = "device access",
    request_body(content = Object, description = "`{\"productKey\",\"deviceName\",\"clientId\",\"timestamp\",\"signmethod\",\"sign\"}`; sign = HMAC(device secret, `clientId{clientId}deviceName{dn}productKey{pk}timestamp{ts}`)"),
    responses(
        (status = 200, description = "`{\"code\":0,\"message\":\"success\",\"info\":{\"token\",\"expiresAt\"}}`", body = Object),
        (status = 400, body = DeviceProblem), (status = 401, body = DeviceProblem), (status = 403, body = DeviceProblem),
    ))]
pub async fn auth(State(state): State<ApiState>, body: Bytes) -> Response {
    let req: TokenRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                code::REQUEST_ERROR,
                format!(
                    "the body must be JSON with productKey, deviceName, clientId, timestamp, signmethod and sign: {e}"
                ),
                None,
            );
        }
    };
    match state.plane.issue_token(&req, "http").await {
        Ok(t) => axum::Json(json!({
            "code": 0,
            "message": "success",
            "info": {"token": t.token, "expiresAt": t.expires_at_ms},
        }))
        .into_response(),
        Err(e) => access_problem(e, false),
    }
}

/// The token from `password` (Alibaba's header) or `Authorization: Bearer`.
fn token(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("password").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Publish the body to a device topic (`/topic/sys/{pk}/{dn}/thing/event/property/post`).
#[utoipa::path(post, path = "/topic/{topic}", tag = "device access",
    params(("topic" = String, Path, description = "The MQTT topic without its leading slash"),
           ("password" = String, Header, description = "The token from /auth")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "`{\"code\":0,\"message\":\"success\",\"info\":{\"reply\"}}`: stored; `reply` is what an MQTT device gets on `_reply`", body = Object),
        (status = 400, body = DeviceProblem), (status = 401, body = DeviceProblem), (status = 403, body = DeviceProblem),
        (status = 413, description = "Payload larger than the device limit"),
    ))]
pub async fn publish(
    State(state): State<ApiState>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(token) = token(&headers) else {
        return problem(
            StatusCode::UNAUTHORIZED,
            code::TOKEN_MISSING,
            "send the token from POST /auth in the 'password' header".into(),
            None,
        );
    };
    let device = match state.plane.token_device(token) {
        Ok(d) => d,
        Err(e) => return access_problem(e, true),
    };
    let topic = format!("/{topic}");
    match state.plane.publish_from_device(&device, &topic, body).await {
        Ok(reply) => {
            let mut info = json!({});
            if let Some(reply) = reply {
                info["reply"] = reply;
            }
            axum::Json(json!({"code": 0, "message": "success", "info": info})).into_response()
        }
        Err(e) => access_problem(e, true),
    }
}
