//! The platform's style (CFG): the title, theme colour, logo and log-in background every portal
//! page uses. Anyone may read it, since the log-in page shows it before anyone has logged in;
//! changing it is `style.write` in the `lotus.api` policy (administrators). A change shows on
//! the next read: nothing caches it.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::ApiState;
use crate::auth::Authenticated;
use crate::problem::{ApiError, ApiResult, Json};

pub const DEFAULT_TITLE: &str = "Lotus";
pub const DEFAULT_THEME_COLOR: &str = "#1f6feb";
/// Largest logo or background image, decoded. Every page load fetches the style, so images
/// are kept to what a logo and a background need.
pub const MAX_IMAGE_BYTES: usize = 512 * 1024;
const MAX_TITLE: usize = 64;
const IMAGE_TYPES: [&str; 5] = [
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/svg+xml",
];

const TITLE: &str = "style.title";
const THEME_COLOR: &str = "style.themeColor";
const LOGO: &str = "style.logo";
const LOGIN_BACKGROUND: &str = "style.loginBackground";

/// How the portal looks.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Style {
    #[schema(example = "Lotus")]
    pub title: String,
    /// `#rrggbb`.
    #[schema(example = "#1f6feb")]
    pub theme_color: String,
    /// A `data:image/…;base64,…` URL; none for the built-in logo.
    pub logo: Option<String>,
    /// A `data:image/…;base64,…` URL; none for the built-in background.
    pub login_background: Option<String>,
}

/// Changes to the style: a field left out keeps its value, `null` restores the default.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateStyle {
    /// 1 to 64 characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub title: Option<Option<String>>,
    /// `#rrggbb`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, example = "#0a7d4f")]
    pub theme_color: Option<Option<String>>,
    /// `data:image/png;base64,…` (PNG, JPEG, GIF, WebP or SVG), at most 512 KiB decoded.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub logo: Option<Option<String>>,
    /// Like `logo`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub login_background: Option<Option<String>>,
}

/// Tells a field sent as `null` (`Some(None)`) from one left out (`None`, by `default`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

fn style_of(mut stored: BTreeMap<String, String>) -> Style {
    Style {
        title: stored.remove(TITLE).unwrap_or_else(|| DEFAULT_TITLE.into()),
        theme_color: stored
            .remove(THEME_COLOR)
            .unwrap_or_else(|| DEFAULT_THEME_COLOR.into()),
        logo: stored.remove(LOGO),
        login_background: stored.remove(LOGIN_BACKGROUND),
    }
}

fn title(v: String) -> ApiResult<String> {
    let v = v.trim().to_string();
    let n = v.chars().count();
    if n == 0 || n > MAX_TITLE || v.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(format!(
            "title: 1 to {MAX_TITLE} characters, without control characters"
        )));
    }
    Ok(v)
}

fn theme_color(v: String) -> ApiResult<String> {
    let hex = v.strip_prefix('#').unwrap_or_default();
    if hex.len() != 6 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::unprocessable(format!(
            "themeColor: '#' and six hexadecimal digits (#rrggbb), e.g. {DEFAULT_THEME_COLOR}; got '{v}'"
        )));
    }
    Ok(v.to_ascii_lowercase())
}

fn image(field: &str, v: String) -> ApiResult<String> {
    let bad = || {
        ApiError::unprocessable(format!(
            "{field}: a data URL 'data:<type>;base64,<data>' with type {}",
            IMAGE_TYPES.join(", ")
        ))
    };
    let (kind, data) = v
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,"))
        .ok_or_else(bad)?;
    if !IMAGE_TYPES.contains(&kind) {
        return Err(bad());
    }
    // Checked before decoding, so an oversized upload is refused without being decoded.
    if data.len() / 4 * 3 > MAX_IMAGE_BYTES + 2 {
        return Err(too_big(field));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| {
            ApiError::unprocessable(format!("{field}: the base64 data is invalid: {e}"))
        })?;
    if bytes.len() > MAX_IMAGE_BYTES {
        return Err(too_big(field));
    }
    Ok(v)
}

fn too_big(field: &str) -> ApiError {
    ApiError::unprocessable(format!(
        "{field}: the image is larger than {} KiB",
        MAX_IMAGE_BYTES / 1024
    ))
}

/// How the portal looks (no log-in needed: the log-in page shows it).
#[utoipa::path(get, path = "/api/v1/style", tag = "style",
    responses((status = 200, body = Style)))]
pub async fn get_style(State(state): State<ApiState>) -> ApiResult<impl IntoResponse> {
    let style = style_of(state.store.settings("style.").await?);
    // Revalidated on every load, so a change shows at once everywhere.
    Ok(([(header::CACHE_CONTROL, "no-cache")], Json(style)))
}

/// Change the title, theme colour, logo or log-in background.
#[utoipa::path(put, path = "/api/v1/style", tag = "style", security(("bearer" = [])),
    request_body = UpdateStyle,
    responses((status = 200, body = Style), (status = 403, body = crate::problem::Problem),
        (status = 422, body = crate::problem::Problem)))]
pub async fn put_style(
    State(state): State<ApiState>,
    user: Authenticated,
    Json(req): Json<UpdateStyle>,
) -> ApiResult<Json<Style>> {
    crate::authz::global(&state, &user, "style", "write", "platform")?;
    let changes = [
        (
            TITLE,
            req.title.map(|v| v.map(title).transpose()).transpose()?,
        ),
        (
            THEME_COLOR,
            req.theme_color
                .map(|v| v.map(theme_color).transpose())
                .transpose()?,
        ),
        (
            LOGO,
            req.logo
                .map(|v| v.map(|v| image("logo", v)).transpose())
                .transpose()?,
        ),
        (
            LOGIN_BACKGROUND,
            req.login_background
                .map(|v| v.map(|v| image("loginBackground", v)).transpose())
                .transpose()?,
        ),
    ];
    let changes: Vec<(&str, Option<&str>)> = changes
        .iter()
        .filter_map(|(key, change)| change.as_ref().map(|v| (*key, v.as_deref())))
        .collect();
    state
        .store
        .put_settings(&changes, &user.user.username)
        .await?;
    tracing::info!(by = %user.user.username, changed = ?changes.iter().map(|c| c.0).collect::<Vec<_>>(),
        "platform style changed");
    Ok(Json(style_of(state.store.settings("style.").await?)))
}

pub(crate) fn routes() -> Router<ApiState> {
    Router::new().route("/api/v1/style", get(get_style).put(put_style))
}

#[derive(OpenApi)]
#[openapi(
    paths(get_style, put_style),
    tags((name = "style", description = "The portal's title, theme colour, logo and log-in background"))
)]
pub(crate) struct StyleDoc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_and_titles() {
        assert_eq!(theme_color("#0A7D4F".into()).unwrap(), "#0a7d4f");
        for bad in ["0a7d4f", "#0a7d4", "#0a7d4fz", "#gggggg", "red", ""] {
            assert_eq!(theme_color(bad.into()).unwrap_err().status, 422, "{bad}");
        }
        assert_eq!(title("  Hangzhou IoT ".into()).unwrap(), "Hangzhou IoT");
        assert!(title(" ".into()).is_err());
        assert!(title("x".repeat(65)).is_err());
        assert!(title("杭".repeat(64)).is_ok());
    }

    #[test]
    fn images_are_small_data_urls() {
        let png = format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode([0x89, b'P', b'N', b'G'])
        );
        assert_eq!(image("logo", png.clone()).unwrap(), png);
        assert!(image("logo", "https://example.org/logo.png".into()).is_err());
        assert!(image("logo", "data:text/html;base64,PGgxPg==".into()).is_err());
        assert!(image("logo", "data:image/png;base64,!!!".into()).is_err());
        let big = format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(vec![0u8; MAX_IMAGE_BYTES + 1])
        );
        let e = image("logo", big).unwrap_err();
        assert!(e.detail.contains("512 KiB"), "{}", e.detail);
    }
}
