//! Re-authentication of a logged-in user for an app's `prompt=login` or `max_age`: the user
//! enters their password again in the portal. A wrong password counts towards the account's
//! lock-out like a failed log-in, so asking again is no way around it.

use lotus_storage::UserRow;
use serde_json::json;

use crate::ApiState;
use crate::problem::{ApiError, ApiResult};

/// Checks the password of the session's user; records the attempt in the audit log
/// (`auth.reauthenticate`). A locked account and a wrong password are 403s (not 401s: the
/// portal session itself stays valid).
pub(crate) async fn verify_password_again(
    state: &ApiState,
    user: &UserRow,
    password: &str,
    now: i64,
) -> ApiResult<()> {
    let target = format!("user:{}", user.username);
    if let Some(until) = state.store.login_locked_until(user.id, now).await? {
        crate::audit::record(
            state,
            &user.username,
            "auth.reauthenticate",
            &target,
            "denied",
            json!({"reason": "locked", "lockedUntil": until}),
        )
        .await;
        return Err(crate::auth::locked(&state.lockout, until, now));
    }
    let hash = user.password_hash.clone();
    let entered = password.to_string();
    let ok = tokio::task::spawn_blocking(move || crate::auth::verify_password(&entered, &hash))
        .await
        .unwrap_or(false);
    if ok {
        state.store.clear_failed_logins(&user.username).await?;
        tracing::info!(username = %user.username, "re-authenticated");
        crate::audit::record(
            state,
            &user.username,
            "auth.reauthenticate",
            &target,
            "ok",
            json!({}),
        )
        .await;
        return Ok(());
    }
    tracing::warn!(username = %user.username, "failed re-authentication");
    if state.lockout.max_failures > 0
        && let Some(until) = state
            .store
            .record_failed_login(
                user.id,
                now,
                state.lockout.max_failures,
                state.lockout.duration_ms,
            )
            .await?
    {
        crate::audit::record(
            state,
            &user.username,
            "auth.lockout",
            &target,
            "denied",
            json!({"lockedUntil": until}),
        )
        .await;
        return Err(crate::auth::locked(&state.lockout, until, now));
    }
    crate::audit::record(
        state,
        &user.username,
        "auth.reauthenticate",
        &target,
        "failed",
        json!({"reason": "wrong password"}),
    )
    .await;
    Err(ApiError::forbidden(format!(
        "the password is wrong: enter the password of '{}' to continue",
        user.username
    )))
}
