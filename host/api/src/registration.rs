//! One-product-one-secret dynamic registration over HTTPS, as Alibaba's SDKs call it:
//! `POST /auth/register/device` with form fields, answered in Alink's `{code, data}` envelope.

use axum::Form;
use axum::extract::State;
use axum::http::StatusCode;
use lotus_device::connect::{Registered, RegistrationError};
use lotus_model::alink::{AuthType, SignMethod};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::ApiState;

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterForm {
    pub product_key: String,
    pub device_name: String,
    pub random: String,
    /// HMAC with the product secret over `deviceName{dn}productKey{pk}random{random}`.
    pub sign: String,
    /// hmacsha256 (default), hmacsha1 or hmacmd5.
    pub sign_method: Option<String>,
}

/// Register a pre-created device with its product's secret and receive the device secret.
#[utoipa::path(post, path = "/auth/register/device", tag = "device access",
    request_body(content = RegisterForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "`{\"code\":200,\"data\":{\"productKey\",\"deviceName\",\"deviceSecret\"}}` or `{\"code\":4xx,\"message\"}`", body = Object)))]
pub async fn register_device(
    State(state): State<ApiState>,
    Form(form): Form<RegisterForm>,
) -> (StatusCode, axum::Json<Value>) {
    let method = match form.sign_method.as_deref() {
        None | Some("") => SignMethod::HmacSha256,
        Some(m) => match SignMethod::parse(m) {
            Some(m) => m,
            None => {
                return (
                    StatusCode::BAD_REQUEST,
                    axum::Json(
                        json!({"code": 400, "message": format!("unsupported signMethod '{m}'")}),
                    ),
                );
            }
        },
    };
    match state
        .plane
        .register(
            &form.product_key,
            &form.device_name,
            &form.random,
            &form.sign,
            method,
            AuthType::Register,
        )
        .await
    {
        Ok(Registered::Secret { device_secret }) => (
            StatusCode::OK,
            axum::Json(json!({"code": 200, "data": {
                "productKey": form.product_key, "deviceName": form.device_name, "deviceSecret": device_secret
            }, "message": "success"})),
        ),
        Ok(Registered::Token { .. }) => {
            unreachable!("HTTPS registration asks for the device secret")
        }
        Err(RegistrationError::Invalid(m)) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"code": 400, "message": m})),
        ),
        Err(RegistrationError::Forbidden(m)) => (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"code": 403, "message": m})),
        ),
        Err(RegistrationError::Storage(e)) => {
            tracing::error!(error = %e, "registration failed on storage");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"code": 503, "message": "storage unavailable; retry later"})),
            )
        }
    }
}
