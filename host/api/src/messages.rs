//! The caller's message center: notifications (a task assigned, an event escalated) and
//! messages from other users. Every query is by the caller's username, so nobody reads,
//! marks or deletes anyone else's messages, whatever ids they send.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use lotus_storage::MessageRow;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::ApiState;
use crate::auth::Authenticated;
use crate::events::operations;
use crate::problem::{ApiError, ApiResult, Json, Query};
use crate::products::PageQuery;

/// Most ids one mark or delete request may name.
const MAX_IDS: usize = 1000;

/// A message.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: i64,
    /// notification (from the system) or message (from another user).
    pub kind: String,
    pub title: String,
    pub body: String,
    /// The level of what it is about (1 critical to 4 general), if any.
    pub level: Option<i64>,
    /// What it is about: `task:<id>`, `event:<id>`, ….
    pub link: Option<String>,
    /// The user who sent it; none for the system.
    pub sender: Option<String>,
    /// When it was read; none while unread.
    pub read_at: Option<i64>,
    pub created_at: i64,
}

impl From<MessageRow> for Message {
    fn from(m: MessageRow) -> Self {
        Message {
            id: m.id,
            kind: m.kind,
            title: m.title,
            body: m.body,
            level: m.level,
            link: m.link,
            sender: m.sender,
            read_at: m.read_at,
            created_at: m.created_at,
        }
    }
}

/// A page of your messages.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessagePage {
    pub items: Vec<Message>,
    /// How many messages the listing has (the unread ones only, with `unread=true`).
    pub total: i64,
    pub page: i64,
    pub page_size: i64,
    /// How many of your messages are unread.
    pub unread: i64,
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct MessageQuery {
    /// Only unread messages.
    #[serde(default)]
    pub unread: bool,
    pub page: Option<i64>,
    pub page_size: Option<i64>,
}

/// Checks that the caller may use their own message center (`message.<verb>`).
fn own(state: &ApiState, user: &Authenticated, verb: &str) -> ApiResult<()> {
    crate::authz::global(state, user, "message", verb, &user.user.username)
}

/// Your messages, the newest first, with how many are unread.
#[utoipa::path(get, path = "/api/v1/messages", tag = "messages", security(("bearer" = [])),
    params(MessageQuery), responses((status = 200, body = MessagePage)))]
pub async fn list_messages(
    State(state): State<ApiState>,
    user: Authenticated,
    Query(q): Query<MessageQuery>,
) -> ApiResult<Json<MessagePage>> {
    let ops = operations(&state)?;
    own(&state, &user, "read")?;
    let (page, number, size) = PageQuery {
        page: q.page,
        page_size: q.page_size,
    }
    .page()?;
    let (rows, total, unread) = ops
        .store
        .list_messages(&user.user.username, q.unread, page.limit, page.offset)
        .await?;
    Ok(Json(MessagePage {
        items: rows.into_iter().map(Message::from).collect(),
        total,
        page: number,
        page_size: size,
        unread,
    }))
}

/// Which of your messages to mark read: some by id, or all of them.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MarkRead {
    #[serde(default)]
    pub ids: Option<Vec<i64>>,
    /// Every unread message.
    #[serde(default)]
    pub all: bool,
}

/// Which of your messages to delete.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteMessages {
    pub ids: Vec<i64>,
}

/// How many messages a request changed (ids of other users' messages count for nothing).
#[derive(Serialize, ToSchema)]
pub struct Changed {
    pub changed: u64,
}

fn check_ids(ids: &[i64]) -> ApiResult<()> {
    if ids.is_empty() {
        return Err(ApiError::unprocessable("ids: name at least one message id"));
    }
    if ids.len() > MAX_IDS {
        return Err(ApiError::unprocessable(format!(
            "ids: at most {MAX_IDS} at a time"
        )));
    }
    Ok(())
}

/// Mark some of your messages read (`{ids: [..]}`), or all of them (`{all: true}`).
#[utoipa::path(post, path = "/api/v1/messages/read", tag = "messages", security(("bearer" = [])),
    request_body = MarkRead,
    responses((status = 200, body = Changed), (status = 422, body = crate::problem::Problem)))]
pub async fn mark_read(
    State(state): State<ApiState>,
    user: Authenticated,
    Json(req): Json<MarkRead>,
) -> ApiResult<Json<Changed>> {
    let ops = operations(&state)?;
    own(&state, &user, "write")?;
    let now = lotus_device::now_ms();
    let changed = match (req.ids, req.all) {
        (None, true) => ops.store.mark_all_read(&user.user.username, now).await?,
        (Some(ids), false) => {
            check_ids(&ids)?;
            ops.store
                .mark_messages_read(&user.user.username, &ids, now)
                .await?
        }
        _ => {
            return Err(ApiError::unprocessable(
                "send either {\"ids\": [..]} or {\"all\": true}",
            ));
        }
    };
    Ok(Json(Changed { changed }))
}

/// Delete some of your messages.
#[utoipa::path(post, path = "/api/v1/messages/delete", tag = "messages", security(("bearer" = [])),
    request_body = DeleteMessages,
    responses((status = 200, body = Changed), (status = 422, body = crate::problem::Problem)))]
pub async fn delete_messages(
    State(state): State<ApiState>,
    user: Authenticated,
    Json(req): Json<DeleteMessages>,
) -> ApiResult<Json<Changed>> {
    let ops = operations(&state)?;
    own(&state, &user, "delete")?;
    check_ids(&req.ids)?;
    let changed = ops
        .store
        .delete_messages(&user.user.username, &req.ids)
        .await?;
    Ok(Json(Changed { changed }))
}

pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/messages", get(list_messages))
        .route("/api/v1/messages/read", post(mark_read))
        .route("/api/v1/messages/delete", post(delete_messages))
}

#[derive(OpenApi)]
#[openapi(paths(list_messages, mark_read, delete_messages))]
pub(crate) struct MessagesDoc;
