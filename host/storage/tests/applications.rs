//! Application credentials against both back ends (SQLite file and PostgreSQL), like
//! `store.rs`: every case runs on each.

use lotus_model::authz::{Grant, GrantAction};
use lotus_storage::{AppCredentialUpdate, Page, StorageError, Store};
use sqlx::Row;

#[macro_use]
mod backends;

on_both_backends!(app_credentials_crud, app_credential_secret_is_sealed);

fn grant(filter: &str, actions: &[GrantAction]) -> Grant {
    Grant {
        filter: filter.into(),
        actions: actions.to_vec(),
    }
}

async fn app_credentials_crud(s: &Store, _url: &str) {
    let grants = vec![
        grant("/a1pk/+/user/update", &[GrantAction::Subscribe]),
        grant(
            "/a1pk/+/user/get",
            &[GrantAction::Subscribe, GrantAction::Publish],
        ),
    ];
    let a = s
        .create_app_credential("City dashboard", "app.one", "secret-one", &grants)
        .await
        .unwrap();
    assert!(a.id > 0);
    assert!(a.enabled);
    assert_eq!(a.grants, grants);
    let b = s
        .create_app_credential("ISV app", "app.two", "secret-two", &[])
        .await
        .unwrap();
    assert_ne!(a.id, b.id);

    // The username is unique.
    match s
        .create_app_credential("again", "app.one", "x", &grants)
        .await
    {
        Err(StorageError::Conflict(m)) => assert!(m.contains("app.one"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }

    assert_eq!(s.get_app_credential(a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(s.get_app_credential(9999).await.unwrap(), None);
    let (row, secret) = s
        .app_credential_by_username("app.one")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row, a);
    assert_eq!(secret.expose(), "secret-one");
    assert!(
        s.app_credential_by_username("app.none")
            .await
            .unwrap()
            .is_none()
    );

    let (page, total) = s.list_app_credentials(Page::default()).await.unwrap();
    assert_eq!(total, 2);
    assert_eq!(
        page.iter().map(|r| r.username.as_str()).collect::<Vec<_>>(),
        ["app.one", "app.two"]
    );
    let (page, _) = s
        .list_app_credentials(Page {
            offset: 1,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, b.id);

    // Partial updates.
    let u = s
        .update_app_credential(
            a.id,
            &AppCredentialUpdate {
                enabled: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!u.enabled);
    assert_eq!(u.name, "City dashboard");
    assert_eq!(u.grants, grants);
    let narrowed = vec![grant("/a1pk/d1/user/update", &[GrantAction::Subscribe])];
    let u = s
        .update_app_credential(
            a.id,
            &AppCredentialUpdate {
                name: Some("Dashboard".into()),
                grants: Some(narrowed.clone()),
                enabled: Some(true),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (u.name.as_str(), u.enabled, &u.grants),
        ("Dashboard", true, &narrowed)
    );
    assert!(u.updated_at >= a.updated_at);
    assert_eq!(s.get_app_credential(a.id).await.unwrap(), Some(u));
    assert!(matches!(
        s.update_app_credential(9999, &AppCredentialUpdate::default())
            .await,
        Err(StorageError::NotFound(_))
    ));

    s.delete_app_credential(a.id).await.unwrap();
    assert!(s.get_app_credential(a.id).await.unwrap().is_none());
    assert!(
        s.app_credential_by_username("app.one")
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        s.delete_app_credential(a.id).await,
        Err(StorageError::NotFound(_))
    ));
    assert_eq!(s.list_app_credentials(Page::default()).await.unwrap().1, 1);
}

async fn app_credential_secret_is_sealed(s: &Store, url: &str) {
    s.create_app_credential("x", "app.sealed", "plain-app-secret", &[])
        .await
        .unwrap();
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let stored: String = sqlx::query("SELECT secret_enc FROM app_credentials")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    pool.close().await;
    assert!(!stored.contains("plain-app-secret"));
    assert_eq!(
        s.app_credential_by_username("app.sealed")
            .await
            .unwrap()
            .unwrap()
            .1
            .expose(),
        "plain-app-secret"
    );
}
