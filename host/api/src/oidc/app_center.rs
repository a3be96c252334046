//! The app center (POR-4): one entry to every integrated app the caller may open. The policy
//! decides per app (`app.open`), the same decision the provider takes when the app then signs
//! the user in, so an entry shown here never ends in a refusal there.

use axum::extract::State;
use lotus_storage::{AppFilter, Page};
use serde::Serialize;
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::Authenticated;
use crate::problem::{ApiResult, Json};

/// Rows read per query while collecting the caller's apps.
const BATCH: i64 = 200;

/// An app as the app center shows it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppEntry {
    pub client_id: String,
    pub name: String,
    /// `web`, `dashboard`, `mobile`, `service`, …
    pub app_type: String,
    /// URL or data URI.
    pub icon: Option<String>,
    /// Where the app center opens it; the app then signs the user in through Lotus.
    pub url: Option<String>,
    pub vendor: Option<String>,
    pub description: Option<String>,
}

/// The apps you may open: online apps whose `app.open` the policy allows you (your role is
/// one of the app's open roles, or you are an administrator), by name.
#[utoipa::path(get, path = "/api/v1/me/apps", tag = "app center", security(("bearer" = [])),
    responses((status = 200, body = Vec<AppEntry>), (status = 401, body = crate::problem::Problem)))]
pub async fn my_apps(
    State(state): State<ApiState>,
    caller: Authenticated,
) -> ApiResult<Json<Vec<AppEntry>>> {
    super::session_user(&caller)?;
    let filter = AppFilter {
        status: Some(lotus_storage::APP_ONLINE),
        ..AppFilter::default()
    };
    let mut entries = Vec::new();
    let mut offset = 0;
    // A city integrates tens of apps, not thousands: reading them all is cheap.
    loop {
        let (rows, total) = state
            .store
            .apps(
                &filter,
                Page {
                    offset,
                    limit: BATCH,
                },
            )
            .await?;
        let read = rows.len() as i64;
        for app in rows {
            if crate::authz::allows(
                &state,
                &caller,
                "app.open",
                super::provider::open_resource(&app),
            ) {
                entries.push(AppEntry {
                    client_id: app.client_id,
                    name: app.name,
                    app_type: app.app_type,
                    icon: app.icon,
                    url: app.url,
                    vendor: app.vendor,
                    description: app.description,
                });
            }
        }
        offset += read;
        if read == 0 || offset >= total {
            break;
        }
    }
    entries.sort_by_key(|e| e.name.to_lowercase());
    Ok(Json(entries))
}
