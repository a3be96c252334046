//! The app registry against both back ends (SQLite file and PostgreSQL), like `store.rs`:
//! every case runs on each.

use lotus_storage::{
    APP_OFFLINE, APP_ONLINE, AppFilter, AppResources, AppUpdate, NewApp, Page, Scope, Secret,
    StorageError, Store,
};
use sqlx::Row;

#[macro_use]
mod backends;

on_both_backends!(apps_crud_and_search, app_secret_is_sealed_and_rotates);

fn new_app(client_id: &str, name: &str, app_type: &str, region: &str) -> NewApp {
    NewApp {
        client_id: client_id.into(),
        secret: Secret::new(format!("secret-of-{client_id}")),
        name: name.into(),
        app_type: app_type.into(),
        icon: Some("https://cdn.example.org/icon.png".into()),
        url: Some("https://dashboard.example.org/".into()),
        vendor: Some("Example Ltd".into()),
        description: None,
        status: APP_ONLINE.into(),
        scope: Scope {
            org: "city".into(),
            region: region.into(),
        },
        scopes: vec!["device.read".into(), "event.read".into()],
        resources: AppResources {
            products: vec!["a1pk".into()],
            devices: vec!["b2pk/pump-1".into()],
            regions: vec!["/hz/xihu".into()],
            event_types: vec!["flood".into()],
            ..Default::default()
        },
        redirect_uris: vec!["https://dashboard.example.org/callback".into()],
        open_roles: vec!["operator".into()],
        post_logout_redirect_uris: vec!["https://dashboard.example.org/bye".into()],
    }
}

async fn apps_crud_and_search(s: &Store, _url: &str) {
    let a = s
        .create_app(&new_app("app_one", "Water dashboard", "dashboard", "/hz"))
        .await
        .unwrap();
    assert!(a.id > 0);
    assert!(a.is_online());
    assert_eq!(a.resources.products, ["a1pk"]);
    let b = s
        .create_app(&new_app("app_two", "Parking app", "mobile", "/sh"))
        .await
        .unwrap();
    assert_ne!(a.id, b.id);
    match s.create_app(&new_app("app_one", "again", "web", "/")).await {
        Err(StorageError::Conflict(m)) => assert!(m.contains("app_one"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }

    assert_eq!(s.app(a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(s.app(9999).await.unwrap(), None);
    assert_eq!(
        s.app_by_client_id("app_one").await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(s.app_by_client_id("app_none").await.unwrap(), None);

    // Search by type, by a part of the name in any case, by status, by scope.
    let all = AppFilter::default();
    let (rows, total) = s.apps(&all, Page::default()).await.unwrap();
    assert_eq!(total, 2);
    assert_eq!(
        rows.iter()
            .map(|r| r.client_id.as_str())
            .collect::<Vec<_>>(),
        ["app_one", "app_two"]
    );
    let by_type = AppFilter {
        app_type: Some("mobile"),
        ..all
    };
    let (rows, total) = s.apps(&by_type, Page::default()).await.unwrap();
    assert_eq!((total, rows[0].id), (1, b.id));
    let by_name = AppFilter {
        name_like: Some("WATER"),
        ..all
    };
    let (rows, _) = s.apps(&by_name, Page::default()).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id, a.id);
    let xihu = Scope {
        org: "city".into(),
        region: "/hz".into(),
    };
    let within = AppFilter {
        within: Some(&xihu),
        ..all
    };
    let (rows, total) = s.apps(&within, Page::default()).await.unwrap();
    assert_eq!((total, rows[0].id), (1, a.id));
    let (rows, total) = s
        .apps(
            &all,
            Page {
                offset: 1,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!((total, rows.len(), rows[0].id), (2, 1, b.id));

    // Partial updates: taking it offline, re-granting, clearing a text field.
    let u = s
        .update_app(
            a.id,
            &AppUpdate {
                status: Some(APP_OFFLINE.into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!u.is_online());
    assert_eq!(u.name, "Water dashboard");
    assert_eq!(u.resources, a.resources);
    let offline = AppFilter {
        status: Some(APP_OFFLINE),
        ..all
    };
    assert_eq!(s.apps(&offline, Page::default()).await.unwrap().1, 1);
    let grants = AppResources {
        devices: vec!["a1pk/lamp-1".into()],
        ..Default::default()
    };
    let u = s
        .update_app(
            a.id,
            &AppUpdate {
                name: Some("Water".into()),
                scopes: Some(vec!["device.read".into()]),
                resources: Some(grants.clone()),
                icon: Some(None),
                scope: Some(Scope::default()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(u.name, "Water");
    assert_eq!(u.scopes, ["device.read"]);
    assert_eq!(u.resources, grants);
    assert_eq!(u.icon, None);
    assert_eq!(u.url, a.url);
    assert_eq!(u.scope, Scope::default());
    assert!(u.updated_at >= a.updated_at);
    assert_eq!(s.app(a.id).await.unwrap(), Some(u));
    assert!(matches!(
        s.update_app(9999, &AppUpdate::default()).await,
        Err(StorageError::NotFound(_))
    ));

    s.delete_app(a.id).await.unwrap();
    assert_eq!(s.app(a.id).await.unwrap(), None);
    assert_eq!(secret_of(s, "app_one").await.unwrap(), None);
    assert!(matches!(
        s.delete_app(a.id).await,
        Err(StorageError::NotFound(_))
    ));
    assert_eq!(s.apps(&all, Page::default()).await.unwrap().1, 1);
}

/// The secret alone, as the signature check and the token endpoint use it.
async fn secret_of(s: &Store, client_id: &str) -> Result<Option<Secret>, StorageError> {
    Ok(s.app_with_secret(client_id)
        .await?
        .map(|(_, secret)| secret))
}

async fn app_secret_is_sealed_and_rotates(s: &Store, url: &str) {
    let a = s
        .create_app(&new_app("app_sealed", "Sealed", "service", "/"))
        .await
        .unwrap();
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let stored = |pool: sqlx::AnyPool| async move {
        sqlx::query("SELECT secret_enc FROM apps WHERE client_id = 'app_sealed'")
            .fetch_one(&pool)
            .await
            .unwrap()
            .get::<String, _>(0)
    };
    let before = stored(pool.clone()).await;
    assert!(!before.contains("secret-of-app_sealed"));
    assert_eq!(
        secret_of(s, "app_sealed").await.unwrap().unwrap().expose(),
        "secret-of-app_sealed"
    );
    assert_eq!(secret_of(s, "app_none").await.unwrap(), None);

    let rotated = s
        .rotate_app_secret(a.id, &Secret::new("the-new-secret"))
        .await
        .unwrap();
    assert_eq!(rotated.client_id, "app_sealed");
    assert_ne!(stored(pool.clone()).await, before);
    assert_eq!(
        secret_of(s, "app_sealed").await.unwrap().unwrap().expose(),
        "the-new-secret"
    );
    assert!(matches!(
        s.rotate_app_secret(9999, &Secret::new("x")).await,
        Err(StorageError::NotFound(_))
    ));

    // A sealed secret copied onto another app's row does not open there.
    s.create_app(&new_app("app_other", "Other", "web", "/"))
        .await
        .unwrap();
    sqlx::query("UPDATE apps SET secret_enc = $1 WHERE client_id = 'app_other'")
        .bind(stored(pool.clone()).await)
        .execute(&pool)
        .await
        .unwrap();
    assert!(secret_of(s, "app_other").await.is_err());
    pool.close().await;
}
