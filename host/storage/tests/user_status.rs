//! Disabled accounts and passwords an administrator set, against both back ends (SQLite file
//! and PostgreSQL): sessions of a disabled account are never honoured and are gone once it is
//! enabled again, the last active administrator is never disabled, and an administrator's
//! reset ends every session and asks for a new password until the user chooses one.

use lotus_storage::{Disabling, Page, Scope, StorageError, Store, UserFilter, UserProfile};

#[macro_use]
mod backends;

on_both_backends!(
    disabling_ends_sessions_until_enabled,
    last_active_admin_is_never_disabled,
    reset_password_ends_sessions_and_asks_for_a_change,
    moving_a_user_and_filtering_by_status
);

fn whole_city() -> Scope {
    Scope {
        org: String::new(),
        region: "/".into(),
    }
}

async fn disabling_ends_sessions_until_enabled(s: &Store, _url: &str) {
    let now = lotus_test_harness::now_ms();
    let u = s
        .create_user("leaver", "h", &["operator".into()], &whole_city())
        .await
        .unwrap();
    s.create_session("t1", u.id, now + 60_000).await.unwrap();
    assert!(s.session_user("t1", now).await.unwrap().is_some());
    assert!(active(s, u.id).await);
    assert!(!s.session_of_disabled_user("t1", now).await.unwrap());

    assert_eq!(
        s.disable_user(u.id, now).await.unwrap(),
        Disabling::Disabled(now)
    );
    assert!(s.session_user("t1", now).await.unwrap().is_none());
    assert!(s.session_of_disabled_user("t1", now).await.unwrap());
    assert!(!s.session_of_disabled_user("unknown", now).await.unwrap());
    assert!(!active(s, u.id).await);
    let row = s.user_by_name("leaver").await.unwrap().unwrap();
    assert_eq!(row.disabled_at, Some(now));
    assert!(!row.is_active());
    // Again: nothing changes, and the first time is kept.
    assert_eq!(
        s.disable_user(u.id, now + 5).await.unwrap(),
        Disabling::AlreadyDisabled(now)
    );

    assert!(s.enable_user(u.id).await.unwrap());
    assert!(!s.enable_user(u.id).await.unwrap());
    // The old session does not come back with the account.
    assert!(s.session_user("t1", now).await.unwrap().is_none());
    assert!(!s.session_of_disabled_user("t1", now).await.unwrap());
    s.create_session("t2", u.id, now + 60_000).await.unwrap();
    assert!(s.session_user("t2", now).await.unwrap().is_some());
    assert!(active(s, u.id).await);

    assert!(matches!(
        s.disable_user(9_999, now).await,
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        s.enable_user(9_999).await,
        Err(StorageError::NotFound(_))
    ));
    assert!(!active(s, 9_999).await);
}

/// Whether the user exists and is not disabled.
async fn active(s: &Store, id: i64) -> bool {
    s.user_by_id(id)
        .await
        .unwrap()
        .is_some_and(|u| u.is_active())
}

async fn last_active_admin_is_never_disabled(s: &Store, _url: &str) {
    let now = lotus_test_harness::now_ms();
    let admin = s
        .create_user("root", "h", &["admin".into()], &whole_city())
        .await
        .unwrap();
    // Roles whose names contain "admin" are not administrators.
    let sec = s
        .create_user("sec", "h", &["security_admin".into()], &whole_city())
        .await
        .unwrap();
    assert_eq!(
        s.disable_user(admin.id, now).await.unwrap(),
        Disabling::LastAdmin
    );
    assert!(active(s, admin.id).await);
    assert_eq!(
        s.disable_user(sec.id, now).await.unwrap(),
        Disabling::Disabled(now)
    );

    let second = s
        .create_user(
            "root2",
            "h",
            &["admin".into(), "operator".into()],
            &whole_city(),
        )
        .await
        .unwrap();
    assert_eq!(
        s.disable_user(admin.id, now).await.unwrap(),
        Disabling::Disabled(now)
    );
    // Now root2 is the last active one; a disabled administrator does not count.
    assert_eq!(
        s.disable_user(second.id, now).await.unwrap(),
        Disabling::LastAdmin
    );
    // Nor is the role taken from them; other roles of theirs still change.
    assert!(matches!(
        s.set_user_roles("root2", &["operator".into()]).await,
        Err(StorageError::Conflict(m)) if m.contains("last active administrator")
    ));
    s.set_user_roles("root2", &["admin".into()]).await.unwrap();
    // A disabled administrator's roles change freely.
    s.set_user_roles("root", &["viewer".into()]).await.unwrap();
    assert!(matches!(
        s.set_user_roles("nobody", &["viewer".into()]).await,
        Err(StorageError::NotFound(_))
    ));
    s.enable_user(admin.id).await.unwrap();
    s.set_user_roles("root", &["admin".into()]).await.unwrap();
    s.set_user_roles("root2", &["operator".into()])
        .await
        .unwrap();
}

async fn reset_password_ends_sessions_and_asks_for_a_change(s: &Store, _url: &str) {
    let now = lotus_test_harness::now_ms();
    let u = s
        .create_user("forgetful", "old", &["viewer".into()], &whole_city())
        .await
        .unwrap();
    s.create_session("a", u.id, now + 60_000).await.unwrap();
    s.create_session("b", u.id, now + 60_000).await.unwrap();
    assert!(
        s.record_failed_login(u.id, now, 1, 60_000)
            .await
            .unwrap()
            .is_some()
    );

    assert_eq!(s.reset_user_password(u.id, "new", now).await.unwrap(), 2);
    let row = s.user_by_name("forgetful").await.unwrap().unwrap();
    assert_eq!(row.password_hash, "new");
    assert_eq!(row.password_reset_at, Some(now));
    assert!(s.login_locked_until(u.id, now).await.unwrap().is_none());
    assert!(s.session_user("a", now).await.unwrap().is_none());
    assert!(s.session_user("b", now).await.unwrap().is_none());

    // The user's own change makes the password theirs again.
    s.create_session("c", u.id, now + 60_000).await.unwrap();
    s.set_user_password(u.id, "mine", Some("c")).await.unwrap();
    let row = s.user_by_name("forgetful").await.unwrap().unwrap();
    assert_eq!(row.password_reset_at, None);
    assert!(matches!(
        s.reset_user_password(9_999, "x", now).await,
        Err(StorageError::NotFound(_))
    ));
}

async fn moving_a_user_and_filtering_by_status(s: &Store, _url: &str) {
    let now = lotus_test_harness::now_ms();
    let a = s
        .create_user("a", "h", &["viewer".into()], &whole_city())
        .await
        .unwrap();
    s.create_user("b", "h", &["viewer".into()], &whole_city())
        .await
        .unwrap();
    let scope = Scope {
        org: "water".into(),
        region: "/hz/xihu".into(),
    };
    let profile = UserProfile {
        display_name: Some("甲".into()),
        email: Some("a@example.org".into()),
        phone: None,
    };
    s.update_user_account(a.id, &scope, &profile).await.unwrap();
    let row = s.user_by_name("a").await.unwrap().unwrap();
    assert_eq!((row.scope, row.profile), (scope, profile.clone()));
    assert!(matches!(
        s.update_user_account(9_999, &whole_city(), &profile).await,
        Err(StorageError::NotFound(_))
    ));

    s.disable_user(a.id, now).await.unwrap();
    let page = Page {
        offset: 0,
        limit: 10,
    };
    let names = |filter: UserFilter<'static>| async move {
        let (rows, total) = s.list_users_matching(page, &filter).await.unwrap();
        assert_eq!(total as usize, rows.len());
        rows.into_iter().map(|u| u.username).collect::<Vec<_>>()
    };
    assert_eq!(
        names(UserFilter {
            disabled: Some(true),
            ..Default::default()
        })
        .await,
        ["a"]
    );
    assert_eq!(
        names(UserFilter {
            disabled: Some(false),
            ..Default::default()
        })
        .await,
        ["b"]
    );
    assert_eq!(names(UserFilter::default()).await, ["a", "b"]);
    assert_eq!(
        names(UserFilter {
            disabled: Some(true),
            search: Some("b"),
            ..Default::default()
        })
        .await,
        Vec::<String>::new()
    );
}
