//! The store against both back ends: every test body is an `async fn(&Store, url)` that
//! `on_both_backends!` runs on a fresh SQLite file and on a fresh PostgreSQL server.
//! PostgreSQL comes from Debian's package through the test harness; when it is missing the
//! tests fail with the install command rather than skip.

use std::time::Instant;

use lotus_model::product::{DataFormat, NodeType};
use lotus_model::topic::TopicOperation;
use lotus_storage::{
    Aggregation, AuditVerification, DeviceFilter, DeviceStatus, DownlinkRow, EventRecord, NewAudit,
    NewProduct, Page, ProductUpdate, PropertyRecord, Scope, SecretBox, ShadowRow, StorageError,
    Store, TelemetryBatch, UserProfile,
};
use serde_json::{Value, json};
use sqlx::Row;

#[macro_use]
mod backends;

on_both_backends!(
    reopen_keeps_data,
    users_and_sessions,
    scopes_of_users_products_and_devices,
    data_grants,
    products_crud_and_encrypted_secret,
    thing_model_versions,
    topic_classes_crud,
    devices_create_and_conflicts,
    devices_filters_and_paging,
    device_enable_status_and_tags,
    mark_all_offline_after_a_crash,
    delete_device_keeps_history,
    write_batch_latest_and_history,
    aggregations,
    events_query,
    shadow_optimistic_concurrency,
    downlinks,
    gateway_topology,
    profiles_passwords_and_settings,
    login_lockout,
    audit_log_chain,
);

const T0: i64 = 1_700_000_000_000;

fn product(pk: &str) -> NewProduct {
    NewProduct {
        product_key: pk.into(),
        name: format!("Product {pk}"),
        node_type: NodeType::Direct,
        data_format: DataFormat::Alink,
        dynamic_registration: false,
        allow_unregistered: false,
        replay_window_secs: None,
        description: String::new(),
        product_secret: format!("product-secret-of-{pk}"),
        scope: Scope::default(),
    }
}

/// A product with devices `d000`, `d001`, … whose secrets are `secret-<name>`.
async fn product_with_devices(s: &Store, pk: &str, n: usize) {
    s.create_product(&product(pk)).await.unwrap();
    let devices: Vec<(String, String)> = (0..n)
        .map(|i| {
            let name = format!("d{i:03}");
            (name.clone(), format!("secret-{name}"))
        })
        .collect();
    s.create_devices(pk, &devices).await.unwrap();
}

/// A connection of the test's own, to look at what is really stored.
async fn raw_column(url: &str, sql: &str) -> Vec<String> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let rows = sqlx::query(sql).fetch_all(&pool).await.unwrap();
    pool.close().await;
    rows.iter().map(|r| r.get::<String, _>(0)).collect()
}

fn prop(dn: &str, id: &str, value: Value, ts: i64) -> PropertyRecord {
    PropertyRecord {
        product_key: "pk".into(),
        device_name: dn.into(),
        identifier: id.into(),
        num: value.as_f64(),
        value,
        ts,
    }
}

fn event(dn: &str, id: &str, ts: i64) -> EventRecord {
    EventRecord {
        product_key: "pk".into(),
        device_name: dn.into(),
        identifier: id.into(),
        event_type: if id == "alarm" { "alert" } else { "info" }.into(),
        params: json!({"at": ts}),
        ts,
    }
}

fn assert_conflict<T: std::fmt::Debug>(r: Result<T, StorageError>, needle: &str) {
    match r {
        Err(StorageError::Conflict(m)) => assert!(m.contains(needle), "'{m}' lacks '{needle}'"),
        other => panic!("expected a conflict mentioning '{needle}', got {other:?}"),
    }
}

fn assert_not_found<T: std::fmt::Debug>(r: Result<T, StorageError>) {
    assert!(
        matches!(r, Err(StorageError::NotFound(_))),
        "expected NotFound, got {r:?}"
    );
}

async fn reopen_keeps_data(s: &Store, url: &str) {
    let key = [7u8; 32];
    // Data written under one key must be readable by a second store with the same key.
    let first = Store::open(url, SecretBox::from_key(key)).await.unwrap();
    first.create_product(&product("pk")).await.unwrap();
    first.close().await;
    let again = Store::open(url, SecretBox::from_key(key)).await.unwrap();
    again.ping().await.unwrap();
    assert_eq!(
        again.product_secret("pk").await.unwrap().unwrap().expose(),
        "product-secret-of-pk"
    );
    again.close().await;
    // A store with another key cannot read it, and says why.
    let err = s.product_secret("pk").await.unwrap_err();
    assert!(matches!(err, StorageError::Crypto(_)), "{err:?}");
    assert!(err.to_string().contains("master key"), "{err}");
}

async fn users_and_sessions(s: &Store, _url: &str) {
    assert_eq!(s.user_count().await.unwrap(), 0);
    let roles = vec!["admin".to_string(), "viewer".to_string()];
    let user = s
        .create_user("alice", "$argon2id$hash", &roles, &Scope::default())
        .await
        .unwrap();
    assert_eq!(user.roles, roles);
    assert_conflict(
        s.create_user("alice", "x", &[], &Scope::default()).await,
        "alice",
    );
    assert_eq!(s.user_count().await.unwrap(), 1);
    let found = s.user_by_name("alice").await.unwrap().unwrap();
    assert_eq!(found, user);
    assert!(s.user_by_name("bob").await.unwrap().is_none());

    // Expiry is checked against the caller's clock; creating a session purges expired ones
    // by the real clock.
    let now = lotus_test_harness::now_ms();
    s.create_session("tok-a", user.id, now + 60_000)
        .await
        .unwrap();
    let current = s.session_user("tok-a", now).await.unwrap().unwrap();
    assert_eq!(current.username, "alice");
    assert!(
        s.session_user("tok-a", now + 60_000)
            .await
            .unwrap()
            .is_none(),
        "expired"
    );
    assert!(s.session_user("unknown", now).await.unwrap().is_none());
    assert_not_found(s.create_session("tok-b", user.id + 100, now + 60_000).await);

    // Already expired by the real clock: purged at once, so not found even at an earlier time.
    s.create_session("tok-old", user.id, now - 1).await.unwrap();
    assert!(
        s.session_user("tok-old", now - 10).await.unwrap().is_none(),
        "purged"
    );
    s.create_session("tok-c", user.id, now + 60_000)
        .await
        .unwrap();
    assert!(s.session_user("tok-c", now).await.unwrap().is_some());
    s.delete_session("tok-c").await.unwrap();
    assert!(s.session_user("tok-c", now).await.unwrap().is_none());
    s.delete_session("tok-c").await.unwrap();
}

async fn products_crud_and_encrypted_secret(s: &Store, url: &str) {
    let created = s.create_product(&product("pk1")).await.unwrap();
    assert_eq!(created.device_count, 0);
    assert_eq!(created.thing_model_version, None);
    assert_conflict(s.create_product(&product("pk1")).await, "pk1");
    for pk in ["pk2", "pk3"] {
        s.create_product(&product(pk)).await.unwrap();
    }
    assert_eq!(s.get_product("pk1").await.unwrap().unwrap(), created);
    assert!(s.get_product("nope").await.unwrap().is_none());

    // The secret decrypts, and the database never holds it in plain.
    let secret = s.product_secret("pk1").await.unwrap().unwrap();
    assert_eq!(secret.expose(), "product-secret-of-pk1");
    assert_eq!(format!("{secret:?}"), "***");
    assert!(s.product_secret("nope").await.unwrap().is_none());
    let stored = raw_column(url, "SELECT secret_enc FROM products").await;
    assert_eq!(stored.len(), 3);
    for enc in stored {
        assert!(
            !enc.contains("product-secret"),
            "plain secret stored: {enc}"
        );
        assert!(enc.len() > 2 * (12 + 16), "nonce and tag are stored: {enc}");
    }

    // Paging is stable and counts everything.
    let (page1, total) = s
        .list_products(
            Page {
                offset: 0,
                limit: 2,
            },
            None,
            None,
        )
        .await
        .unwrap();
    let (page2, _) = s
        .list_products(
            Page {
                offset: 2,
                limit: 2,
            },
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(total, 3);
    let keys: Vec<_> = page1
        .iter()
        .chain(&page2)
        .map(|p| p.product_key.as_str())
        .collect();
    assert_eq!(keys, ["pk1", "pk2", "pk3"]);

    let updated = s
        .update_product(
            "pk1",
            &ProductUpdate {
                name: Some("Street light".into()),
                data_format: Some(DataFormat::Custom),
                dynamic_registration: Some(true),
                allow_unregistered: Some(true),
                replay_window_secs: Some(Some(300)),
                description: Some("lamps".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.name, "Street light");
    assert_eq!(updated.data_format, DataFormat::Custom);
    assert!(updated.dynamic_registration && updated.allow_unregistered);
    assert_eq!(updated.replay_window_secs, Some(300));
    assert_eq!(updated.description, "lamps");
    assert_eq!(updated.node_type, NodeType::Direct);
    let cleared = s
        .update_product(
            "pk1",
            &ProductUpdate {
                replay_window_secs: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(cleared.replay_window_secs, None);
    assert_eq!(cleared.name, "Street light", "unset fields stay");
    assert_not_found(s.update_product("nope", &ProductUpdate::default()).await);

    // A product with devices cannot go; without them it can, with its models and classes.
    s.create_devices("pk1", &[("lamp-1".into(), "s".into())])
        .await
        .unwrap();
    assert_eq!(s.get_product("pk1").await.unwrap().unwrap().device_count, 1);
    assert_conflict(s.delete_product("pk1").await, "delete them first");
    s.delete_device("pk1", "lamp-1").await.unwrap();
    s.put_thing_model("pk1", &json!({"properties": []}))
        .await
        .unwrap();
    s.create_topic_class(
        "pk1",
        "/${productKey}/${deviceName}/user/a",
        TopicOperation::Pub,
        "",
    )
    .await
    .unwrap();
    s.delete_product("pk1").await.unwrap();
    assert!(s.get_product("pk1").await.unwrap().is_none());
    assert!(s.thing_model("pk1", None).await.unwrap().is_none());
    assert!(s.list_topic_classes("pk1").await.unwrap().is_empty());
    assert_not_found(s.delete_product("pk1").await);
}

async fn thing_model_versions(s: &Store, _url: &str) {
    s.create_product(&product("pk")).await.unwrap();
    assert!(s.thing_model("pk", None).await.unwrap().is_none());
    let v1 = json!({"schema": "x", "properties": [{"identifier": "Brightness"}], "z": 1, "a": 2});
    let v2 = json!({"schema": "x", "properties": [], "events": []});
    assert_eq!(s.put_thing_model("pk", &v1).await.unwrap(), 1);
    assert_eq!(s.put_thing_model("pk", &v2).await.unwrap(), 2);

    let (version, latest, created_at) = s.thing_model("pk", None).await.unwrap().unwrap();
    assert_eq!((version, &latest), (2, &v2));
    assert!(created_at > 0);
    let (_, first, _) = s.thing_model("pk", Some(1)).await.unwrap().unwrap();
    assert_eq!(first, v1);
    assert_eq!(
        first.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["schema", "properties", "z", "a"],
        "key order survives the round trip"
    );
    assert!(s.thing_model("pk", Some(3)).await.unwrap().is_none());
    let versions: Vec<i64> = s
        .thing_model_versions("pk")
        .await
        .unwrap()
        .into_iter()
        .map(|(v, _)| v)
        .collect();
    assert_eq!(versions, [1, 2]);
    assert_eq!(
        s.get_product("pk")
            .await
            .unwrap()
            .unwrap()
            .thing_model_version,
        Some(2)
    );
    assert_not_found(s.put_thing_model("nope", &v1).await);
}

async fn topic_classes_crud(s: &Store, _url: &str) {
    s.create_product(&product("pk")).await.unwrap();
    s.create_product(&product("pk2")).await.unwrap();
    let t = |suffix: &str| format!("/${{productKey}}/${{deviceName}}/user/{suffix}");
    let a = s
        .create_topic_class("pk", &t("update"), TopicOperation::Pub, "up")
        .await
        .unwrap();
    let b = s
        .create_topic_class("pk", &t("get"), TopicOperation::Sub, "down")
        .await
        .unwrap();
    s.create_topic_class("pk2", &t("update"), TopicOperation::All, "")
        .await
        .unwrap();
    assert_conflict(
        s.create_topic_class("pk", &t("update"), TopicOperation::Sub, "")
            .await,
        "user/update",
    );
    assert_not_found(
        s.create_topic_class("nope", &t("x"), TopicOperation::Pub, "")
            .await,
    );
    assert_eq!(
        s.list_topic_classes("pk").await.unwrap(),
        [a.clone(), b.clone()]
    );

    let changed = s
        .update_topic_class(
            "pk",
            b.id,
            Some(&t("get2")),
            Some(TopicOperation::All),
            None,
        )
        .await
        .unwrap();
    assert_eq!(changed.template, t("get2"));
    assert_eq!(changed.operation, TopicOperation::All);
    assert_eq!(changed.description, "down", "unset fields stay");
    let same = s
        .update_topic_class("pk", b.id, None, None, None)
        .await
        .unwrap();
    assert_eq!(same, changed);
    assert_conflict(
        s.update_topic_class("pk", b.id, Some(&t("update")), None, None)
            .await,
        "user/update",
    );
    assert_not_found(
        s.update_topic_class("pk2", b.id, None, None, Some("x"))
            .await,
    );

    s.delete_topic_class("pk", a.id).await.unwrap();
    assert_not_found(s.delete_topic_class("pk", a.id).await);
    assert_eq!(s.list_topic_classes("pk").await.unwrap(), [changed]);
    let all = s.all_topic_classes().await.unwrap();
    assert_eq!(
        all.iter()
            .map(|c| c.product_key.as_str())
            .collect::<Vec<_>>(),
        ["pk", "pk2"]
    );
}

async fn devices_create_and_conflicts(s: &Store, url: &str) {
    product_with_devices(s, "pk", 3).await;
    let more: Vec<(String, String)> =
        vec![("new-1".into(), "a".into()), ("d001".into(), "b".into())];
    assert_conflict(s.create_devices("pk", &more).await, "d001");
    assert!(
        s.get_device("pk", "new-1").await.unwrap().is_none(),
        "all or none"
    );
    let twice = vec![("x-1".into(), "a".into()), ("x-1".into(), "b".into())];
    assert_conflict(s.create_devices("pk", &twice).await, "x-1");
    assert_not_found(
        s.create_devices("nope", &[("x-1".into(), "a".into())])
            .await,
    );
    assert!(s.create_devices("pk", &[]).await.unwrap().is_empty());

    let rows = s
        .create_devices("pk", &[("new-1".into(), "new-secret".into())])
        .await
        .unwrap();
    assert_eq!(rows[0].status(), DeviceStatus::Inactive);
    assert_eq!(s.get_device("pk", "new-1").await.unwrap().unwrap(), rows[0]);

    let (secret, enabled) = s.device_secret("pk", "d002").await.unwrap().unwrap();
    assert_eq!(secret.expose(), "secret-d002");
    assert!(enabled);
    assert!(s.device_secret("pk", "nope").await.unwrap().is_none());
    for enc in raw_column(url, "SELECT secret_enc FROM devices").await {
        assert!(!enc.contains("secret"), "plain secret stored: {enc}");
    }

    // A large batch goes in one transaction, in several statements.
    let many: Vec<(String, String)> = (0..1200)
        .map(|i| (format!("bulk-{i:04}"), format!("s{i}")))
        .collect();
    assert_eq!(s.create_devices("pk", &many).await.unwrap().len(), 1200);
    let (_, total) = s
        .list_devices(
            &DeviceFilter::default(),
            Page {
                offset: 0,
                limit: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!(total, 1204);
    assert_eq!(
        s.device_secret("pk", "bulk-1199")
            .await
            .unwrap()
            .unwrap()
            .0
            .expose(),
        "s1199"
    );
}

async fn devices_filters_and_paging(s: &Store, _url: &str) {
    product_with_devices(s, "pk", 25).await;
    s.create_product(&product("other")).await.unwrap();
    s.create_devices(
        "other",
        &[
            ("Lamp_%1".into(), "x".into()),
            ("lamp-2".into(), "y".into()),
        ],
    )
    .await
    .unwrap();

    let in_pk = DeviceFilter {
        product_key: Some("pk".into()),
        ..Default::default()
    };
    let mut names = Vec::new();
    for offset in (0..25).step_by(10) {
        let (rows, total) = s
            .list_devices(&in_pk, Page { offset, limit: 10 })
            .await
            .unwrap();
        assert_eq!(total, 25);
        names.extend(rows.into_iter().map(|r| r.device_name));
    }
    let expected: Vec<String> = (0..25).map(|i| format!("d{i:03}")).collect();
    assert_eq!(names, expected, "pages cover every device once, in order");

    let (all, total) = s
        .list_devices(&DeviceFilter::default(), Page::default())
        .await
        .unwrap();
    assert_eq!((all.len(), total), (27, 27));

    let like = |n: &str| DeviceFilter {
        name_like: Some(n.into()),
        ..Default::default()
    };
    let (rows, total) = s.list_devices(&like("01"), Page::default()).await.unwrap();
    assert_eq!(total, 11, "d001, d010…d019: {rows:?}");
    let (rows, _) = s
        .list_devices(&like("LAMP"), Page::default())
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "case-insensitive");
    let (rows, _) = s.list_devices(&like("_%"), Page::default()).await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| r.device_name.as_str())
            .collect::<Vec<_>>(),
        ["Lamp_%1"],
        "wildcards are literal"
    );

    s.set_device_enabled("pk", "d003", false).await.unwrap();
    s.record_status("pk", "d004", true, "connect", T0)
        .await
        .unwrap();
    s.record_status("pk", "d005", true, "connect", T0)
        .await
        .unwrap();
    s.record_status("pk", "d005", false, "keepalive_timeout", T0 + 1)
        .await
        .unwrap();
    let status = |st: &str| DeviceFilter {
        product_key: Some("pk".into()),
        status: Some(st.into()),
        ..Default::default()
    };
    let names_with = |rows: Vec<lotus_storage::DeviceRow>| {
        rows.into_iter().map(|r| r.device_name).collect::<Vec<_>>()
    };
    let (rows, _) = s
        .list_devices(&status("disabled"), Page::default())
        .await
        .unwrap();
    assert_eq!(names_with(rows), ["d003"]);
    let (rows, _) = s
        .list_devices(&status("online"), Page::default())
        .await
        .unwrap();
    assert_eq!(names_with(rows), ["d004"]);
    let (rows, _) = s
        .list_devices(&status("offline"), Page::default())
        .await
        .unwrap();
    assert_eq!(names_with(rows), ["d005"]);
    let (_, total) = s
        .list_devices(&status("inactive"), Page::default())
        .await
        .unwrap();
    assert_eq!(total, 22);
    assert!(matches!(
        s.list_devices(&status("sleeping"), Page::default()).await,
        Err(StorageError::Invalid(_))
    ));

    // By region (the device's own, else its product's) and by tag.
    s.set_device_region("pk", "d006", Some("/hz/xihu/lingyin"))
        .await
        .unwrap();
    s.set_device_region("pk", "d007", Some("/hz/xihuan"))
        .await
        .unwrap();
    let in_region = |r: &str| DeviceFilter {
        region: Some(r.into()),
        ..Default::default()
    };
    let (rows, _) = s
        .list_devices(&in_region("/hz/xihu"), Page::default())
        .await
        .unwrap();
    assert_eq!(names_with(rows), ["d006"], "a subtree, not a prefix");
    let (_, total) = s
        .list_devices(&in_region("/"), Page::default())
        .await
        .unwrap();
    assert_eq!(total, 27, "the whole city");
    s.update_device(
        "pk",
        "d008",
        None,
        Some(&serde_json::json!({"group": "north", "floor": 3})),
    )
    .await
    .unwrap();
    s.update_device(
        "pk",
        "d009",
        None,
        Some(&serde_json::json!({"group": "south"})),
    )
    .await
    .unwrap();
    let tagged = |k: &str, v: &str| DeviceFilter {
        tag: Some((k.into(), v.into())),
        ..Default::default()
    };
    let (rows, _) = s
        .list_devices(&tagged("group", "north"), Page::default())
        .await
        .unwrap();
    assert_eq!(names_with(rows), ["d008"]);
    let (rows, _) = s
        .list_devices(&tagged("floor", "3"), Page::default())
        .await
        .unwrap();
    assert_eq!(names_with(rows), ["d008"], "numbers compare as text");
    let (_, total) = s
        .list_devices(
            &tagged("group\"; DROP TABLE devices; --", "x"),
            Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(total, 0);
}

async fn device_enable_status_and_tags(s: &Store, _url: &str) {
    product_with_devices(s, "pk", 1).await;
    let d = || async { s.get_device("pk", "d000").await.unwrap().unwrap() };
    assert_eq!(d().await.status(), DeviceStatus::Inactive);

    s.record_status("pk", "d000", true, "connect", T0)
        .await
        .unwrap();
    let online = d().await;
    assert_eq!(online.status(), DeviceStatus::Online);
    assert_eq!(online.status().to_string(), "online");
    assert_eq!(
        (online.first_online_at, online.last_online_at),
        (Some(T0), Some(T0))
    );

    s.record_status("pk", "d000", false, "keepalive_timeout", T0 + 10)
        .await
        .unwrap();
    let offline = d().await;
    assert_eq!(offline.status(), DeviceStatus::Offline);
    assert_eq!(offline.last_offline_at, Some(T0 + 10));
    assert_eq!(
        offline.last_offline_reason.as_deref(),
        Some("keepalive_timeout")
    );

    s.record_status("pk", "d000", true, "connect", T0 + 20)
        .await
        .unwrap();
    let again = d().await;
    assert_eq!(again.first_online_at, Some(T0), "first time stays");
    assert_eq!(again.last_online_at, Some(T0 + 20));
    let log = s.status_log("pk", "d000", 2).await.unwrap();
    assert_eq!(log.len(), 2);
    assert!(
        log[0].online && log[0].at == T0 + 20,
        "newest first: {log:?}"
    );
    assert_eq!(
        (log[1].online, log[1].reason.as_str()),
        (false, "keepalive_timeout")
    );
    // A status for a device that is gone is logged without error.
    s.record_status("pk", "ghost", false, "deleted", T0)
        .await
        .unwrap();

    s.set_device_enabled("pk", "d000", false).await.unwrap();
    assert_eq!(d().await.status(), DeviceStatus::Disabled);
    assert!(!s.device_secret("pk", "d000").await.unwrap().unwrap().1);
    s.set_device_enabled("pk", "d000", true).await.unwrap();
    assert!(s.device_secret("pk", "d000").await.unwrap().unwrap().1);
    assert_not_found(s.set_device_enabled("pk", "nope", true).await);

    let updated = s
        .update_device(
            "pk",
            "d000",
            Some("Main street 1"),
            Some(&json!({"zone": "north", "pole": 7})),
        )
        .await
        .unwrap();
    assert_eq!(updated.nickname.as_deref(), Some("Main street 1"));
    assert_eq!(updated.tags, json!({"zone": "north", "pole": 7}));
    let cleared = s.update_device("pk", "d000", Some(""), None).await.unwrap();
    assert_eq!(cleared.nickname, None);
    assert_eq!(cleared.tags, updated.tags, "tags untouched");
    assert!(matches!(
        s.update_device("pk", "d000", None, Some(&json!([1]))).await,
        Err(StorageError::Invalid(_))
    ));
    assert_not_found(s.update_device("pk", "nope", Some("x"), None).await);

    let mut add = serde_json::Map::new();
    add.insert("pole".into(), json!(8));
    add.insert("fw".into(), json!("1.2"));
    s.merge_device_tags("pk", "d000", &add).await.unwrap();
    assert_eq!(
        d().await.tags,
        json!({"zone": "north", "pole": 8, "fw": "1.2"})
    );
    s.delete_device_tags("pk", "d000", &["zone".into(), "absent".into()])
        .await
        .unwrap();
    assert_eq!(d().await.tags, json!({"pole": 8, "fw": "1.2"}));
    assert_not_found(s.merge_device_tags("pk", "nope", &add).await);
}

async fn mark_all_offline_after_a_crash(s: &Store, _url: &str) {
    product_with_devices(s, "pk", 4).await;
    for dn in ["d000", "d001", "d002"] {
        s.record_status("pk", dn, true, "connect", T0)
            .await
            .unwrap();
    }
    s.record_status("pk", "d002", false, "client_disconnect", T0 + 1)
        .await
        .unwrap();
    assert_eq!(s.mark_all_offline("node_restart", T0 + 5).await.unwrap(), 2);
    for dn in ["d000", "d001"] {
        let d = s.get_device("pk", dn).await.unwrap().unwrap();
        assert_eq!(d.status(), DeviceStatus::Offline);
        assert_eq!(d.last_offline_reason.as_deref(), Some("node_restart"));
        assert_eq!(d.last_offline_at, Some(T0 + 5));
        let log = s.status_log("pk", dn, 10).await.unwrap();
        assert_eq!(
            (log[0].online, log[0].reason.as_str()),
            (false, "node_restart")
        );
    }
    let untouched = s.get_device("pk", "d002").await.unwrap().unwrap();
    assert_eq!(
        untouched.last_offline_reason.as_deref(),
        Some("client_disconnect")
    );
    assert_eq!(s.mark_all_offline("node_restart", T0 + 6).await.unwrap(), 0);
}

async fn delete_device_keeps_history(s: &Store, _url: &str) {
    product_with_devices(s, "pk", 2).await;
    s.write_batch(&TelemetryBatch {
        properties: vec![prop("d000", "t", json!(1), T0)],
        events: vec![event("d000", "alarm", T0)],
    })
    .await
    .unwrap();
    let shadow = ShadowRow {
        desired: json!({"on": true}),
        reported: json!({}),
        version: 1,
        desired_updated_at: Some(T0),
        reported_updated_at: None,
        updated_at: T0,
    };
    assert!(s.put_shadow("pk", "d000", &shadow, None).await.unwrap());

    s.delete_device("pk", "d000").await.unwrap();
    assert!(s.get_device("pk", "d000").await.unwrap().is_none());
    assert!(s.device_secret("pk", "d000").await.unwrap().is_none());
    assert!(s.latest_properties("pk", "d000").await.unwrap().is_empty());
    assert!(s.get_shadow("pk", "d000").await.unwrap().is_none());
    assert_eq!(
        s.property_history("pk", "d000", "t", 0, i64::MAX, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        s.device_events("pk", "d000", 0, i64::MAX, None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        s.get_device("pk", "d001").await.unwrap().is_some(),
        "others stay"
    );
    assert_not_found(s.delete_device("pk", "d000").await);

    // The same name can be registered again, with a new secret.
    s.create_devices("pk", &[("d000".into(), "fresh".into())])
        .await
        .unwrap();
    assert_eq!(
        s.device_secret("pk", "d000")
            .await
            .unwrap()
            .unwrap()
            .0
            .expose(),
        "fresh"
    );
}

async fn write_batch_latest_and_history(s: &Store, _url: &str) {
    product_with_devices(s, "pk", 5).await;
    // 5 devices × 1000 points of "temp": one group commit of 5,000 properties.
    let mut properties = Vec::with_capacity(5000);
    for d in 0..5 {
        for i in 0..1000 {
            properties.push(prop(&format!("d{d:03}"), "temp", json!(i), T0 + i * 1000));
        }
    }
    // Out of order within the batch: the newest still wins.
    properties.swap(0, 999);
    let batch = TelemetryBatch {
        properties,
        events: Vec::new(),
    };
    let started = Instant::now();
    s.write_batch(&batch).await.unwrap();
    let elapsed = started.elapsed();
    eprintln!(
        "write_batch of 5,000 properties on {}: {:.1} ms",
        s.backend(),
        elapsed.as_secs_f64() * 1000.0
    );

    let latest = s.latest_properties("pk", "d000").await.unwrap();
    assert_eq!(latest, [("temp".to_string(), json!(999), T0 + 999_000)]);

    // An older value arriving late is kept in the history but does not become the latest;
    // an equal or newer one does. Non-numeric values are stored as they are.
    s.write_batch(&TelemetryBatch {
        properties: vec![
            prop("d000", "temp", json!(-1), T0),
            prop("d001", "temp", json!(1234.5), T0 + 999_000),
            prop("d000", "mode", json!({"auto": true}), T0),
        ],
        events: Vec::new(),
    })
    .await
    .unwrap();
    let latest = s.latest_properties("pk", "d000").await.unwrap();
    assert_eq!(
        latest,
        [
            ("mode".to_string(), json!({"auto": true}), T0),
            ("temp".to_string(), json!(999), T0 + 999_000),
        ]
    );
    assert_eq!(
        s.latest_properties("pk", "d001").await.unwrap()[0].1,
        json!(1234.5)
    );

    let raw = s
        .property_history("pk", "d002", "temp", T0 + 10_000, T0 + 14_000, 100)
        .await
        .unwrap();
    assert_eq!(
        raw,
        (10..=14)
            .map(|i| (T0 + i * 1000, json!(i)))
            .collect::<Vec<_>>(),
        "both ends inclusive, ascending"
    );
    let limited = s
        .property_history("pk", "d002", "temp", 0, i64::MAX, 3)
        .await
        .unwrap();
    assert_eq!(
        limited.iter().map(|p| p.0).collect::<Vec<_>>(),
        [T0, T0 + 1000, T0 + 2000]
    );
    let points = s
        .property_history("pk", "d000", "temp", 0, i64::MAX, 10_000)
        .await
        .unwrap();
    assert_eq!(points.len(), 1001, "the late value is in the history");
    assert!(
        s.property_history("pk", "d000", "nope", 0, i64::MAX, 10)
            .await
            .unwrap()
            .is_empty()
    );
    s.write_batch(&TelemetryBatch::default()).await.unwrap();
}

async fn aggregations(s: &Store, _url: &str) {
    product_with_devices(s, "pk", 1).await;
    // temp = i at T0 + i s for i in 0..100; T0 is a multiple of 10 s, so bucket k of 10 s
    // holds i = 10k … 10k+9.
    let mut properties: Vec<_> = (0..100)
        .map(|i| prop("d000", "temp", json!(i), T0 + i * 1000))
        .collect();
    // A non-numeric property, and points on both sides of 1970.
    properties.extend((0..4).map(|i| prop("d000", "mode", json!(format!("m{i}")), T0 + i * 4000)));
    properties.extend([
        prop("d000", "old", json!(1), -1500),
        prop("d000", "old", json!(2), -500),
        prop("d000", "old", json!(3), 500),
    ]);
    s.write_batch(&TelemetryBatch {
        properties,
        events: Vec::new(),
    })
    .await
    .unwrap();
    let agg = |id: &'static str, from: i64, to: i64, interval: i64, a: Aggregation| async move {
        s.property_aggregate("pk", "d000", id, from, to, interval, a)
            .await
            .unwrap()
    };
    let to = T0 + 99_000;

    let avg = agg("temp", T0, to, 10_000, Aggregation::Avg).await;
    assert_eq!(avg.len(), 10);
    for (k, (bucket, v)) in avg.iter().enumerate() {
        assert_eq!(*bucket, T0 + k as i64 * 10_000);
        assert_eq!(v.as_f64(), Some(10.0 * k as f64 + 4.5));
    }
    let min = agg("temp", T0, to, 10_000, Aggregation::Min).await;
    assert_eq!(min[3], (T0 + 30_000, json!(30.0)));
    let max = agg("temp", T0, to, 10_000, Aggregation::Max).await;
    assert_eq!(max[3], (T0 + 30_000, json!(39.0)));
    let count = agg("temp", T0, to, 10_000, Aggregation::Count).await;
    assert!(count.iter().all(|(_, v)| *v == json!(10)), "{count:?}");
    let last = agg("temp", T0, to, 10_000, Aggregation::Last).await;
    assert_eq!(last[9], (T0 + 90_000, json!(99)));

    // The range cuts buckets: 25 s … 44 s gives 25–29, 30–39, 40–44.
    let cut = agg("temp", T0 + 25_000, T0 + 44_000, 10_000, Aggregation::Count).await;
    assert_eq!(
        cut,
        [
            (T0 + 20_000, json!(5)),
            (T0 + 30_000, json!(10)),
            (T0 + 40_000, json!(5))
        ]
    );
    let whole = agg("temp", T0, to, 3_600_000, Aggregation::Avg).await;
    assert_eq!(whole, [(T0 - T0 % 3_600_000, json!(49.5))]);

    // Non-numeric values: nothing to average, but they count and `last` returns them.
    let mode_avg = agg("mode", T0, to, 10_000, Aggregation::Avg).await;
    assert!(mode_avg.iter().all(|(_, v)| v.is_null()), "{mode_avg:?}");
    let mode_last = agg("mode", T0, to, 10_000, Aggregation::Last).await;
    assert_eq!(mode_last, [(T0, json!("m2")), (T0 + 10_000, json!("m3"))]);
    let mode_count = agg("mode", T0, to, 10_000, Aggregation::Count).await;
    assert_eq!(mode_count, [(T0, json!(3)), (T0 + 10_000, json!(1))]);

    // Buckets are floored, not truncated towards zero, before 1970.
    let old = agg("old", -10_000, 10_000, 1000, Aggregation::Count).await;
    assert_eq!(old, [(-2000, json!(1)), (-1000, json!(1)), (0, json!(1))]);

    assert!(
        agg("nope", T0, to, 10_000, Aggregation::Max)
            .await
            .is_empty()
    );
    assert!(matches!(
        s.property_aggregate("pk", "d000", "temp", T0, to, 0, Aggregation::Avg)
            .await,
        Err(StorageError::Invalid(_))
    ));
}

async fn events_query(s: &Store, _url: &str) {
    product_with_devices(s, "pk", 2).await;
    let events: Vec<_> = (0..10)
        .map(|i| {
            event(
                "d000",
                if i % 3 == 0 { "alarm" } else { "heartbeat" },
                T0 + i * 1000,
            )
        })
        .chain([event("d001", "alarm", T0)])
        .collect();
    s.write_batch(&TelemetryBatch {
        properties: Vec::new(),
        events,
    })
    .await
    .unwrap();

    let all = s
        .device_events("pk", "d000", T0, T0 + 9000, None, 100)
        .await
        .unwrap();
    assert_eq!(all.len(), 10);
    assert!(all.windows(2).all(|w| w[0].ts > w[1].ts), "newest first");
    assert_eq!(all[0].params, json!({"at": T0 + 9000}));
    let alarms = s
        .device_events("pk", "d000", T0, T0 + 9000, Some("alarm"), 100)
        .await
        .unwrap();
    assert_eq!(
        alarms.iter().map(|e| e.ts - T0).collect::<Vec<_>>(),
        [9000, 6000, 3000, 0]
    );
    assert!(alarms.iter().all(|e| e.event_type == "alert"));
    let window = s
        .device_events("pk", "d000", T0 + 2000, T0 + 4000, None, 100)
        .await
        .unwrap();
    assert_eq!(window.len(), 3);
    let limited = s
        .device_events("pk", "d000", 0, i64::MAX, None, 2)
        .await
        .unwrap();
    assert_eq!(
        limited.iter().map(|e| e.ts - T0).collect::<Vec<_>>(),
        [9000, 8000]
    );
}

async fn shadow_optimistic_concurrency(s: &Store, _url: &str) {
    product_with_devices(s, "pk", 1).await;
    assert!(s.get_shadow("pk", "d000").await.unwrap().is_none());
    let mut row = ShadowRow {
        desired: json!({"brightness": 80}),
        reported: json!({}),
        version: 1,
        desired_updated_at: Some(T0),
        reported_updated_at: None,
        updated_at: T0,
    };
    assert!(s.put_shadow("pk", "d000", &row, None).await.unwrap());
    assert!(
        !s.put_shadow("pk", "d000", &row, None).await.unwrap(),
        "already created"
    );
    assert_eq!(s.get_shadow("pk", "d000").await.unwrap().unwrap(), row);

    row.reported = json!({"brightness": 80});
    row.reported_updated_at = Some(T0 + 5);
    row.version = 2;
    assert!(
        !s.put_shadow("pk", "d000", &row, Some(7)).await.unwrap(),
        "stale version"
    );
    assert!(s.put_shadow("pk", "d000", &row, Some(1)).await.unwrap());
    assert!(
        !s.put_shadow("pk", "d000", &row, Some(1)).await.unwrap(),
        "lost the race"
    );
    assert_eq!(s.get_shadow("pk", "d000").await.unwrap().unwrap(), row);
}

async fn downlinks(s: &Store, _url: &str) {
    product_with_devices(s, "pk", 1).await;
    let sent = |id: &str| DownlinkRow {
        message_id: id.into(),
        product_key: "pk".into(),
        device_name: "d000".into(),
        method: "thing.service.property.set".into(),
        params: json!({"LightSwitch": 1}),
        status: "sent".into(),
        reply_code: None,
        reply_data: None,
        reply_message: None,
        created_at: T0,
        replied_at: None,
    };
    s.insert_downlink(&sent("m1")).await.unwrap();
    assert_conflict(s.insert_downlink(&sent("m1")).await, "m1");
    assert_eq!(
        s.get_downlink("pk", "d000", "m1").await.unwrap().unwrap(),
        sent("m1")
    );
    assert!(s.get_downlink("pk", "d000", "m9").await.unwrap().is_none());

    let data = json!({"LightSwitch": 1});
    assert!(
        s.complete_downlink(
            "pk",
            "d000",
            "m1",
            "replied",
            Some(200),
            Some(&data),
            None,
            T0 + 50
        )
        .await
        .unwrap()
    );
    let replied = s.get_downlink("pk", "d000", "m1").await.unwrap().unwrap();
    assert_eq!(replied.status, "replied");
    assert_eq!(
        (replied.reply_code, replied.reply_data.as_ref()),
        (Some(200), Some(&data))
    );
    assert_eq!(replied.replied_at, Some(T0 + 50));
    // The reply is final: neither a late timeout nor a duplicate reply changes it.
    assert!(
        !s.complete_downlink(
            "pk",
            "d000",
            "m1",
            "timeout",
            None,
            None,
            Some("late"),
            T0 + 99
        )
        .await
        .unwrap()
    );
    assert!(
        !s.complete_downlink("pk", "d000", "m9", "replied", Some(200), None, None, T0)
            .await
            .unwrap()
    );
    assert_eq!(
        s.get_downlink("pk", "d000", "m1").await.unwrap().unwrap(),
        replied
    );

    // A reply that arrives after its timeout was recorded still counts.
    s.insert_downlink(&sent("m2")).await.unwrap();
    assert!(
        s.complete_downlink(
            "pk",
            "d000",
            "m2",
            "timeout",
            None,
            None,
            Some("no reply"),
            T0 + 5000
        )
        .await
        .unwrap()
    );
    let timed_out = s.get_downlink("pk", "d000", "m2").await.unwrap().unwrap();
    assert_eq!(
        (
            timed_out.status.as_str(),
            timed_out.reply_message.as_deref()
        ),
        ("timeout", Some("no reply"))
    );
    assert!(
        s.complete_downlink(
            "pk",
            "d000",
            "m2",
            "failed",
            Some(9201),
            None,
            Some("busy"),
            T0 + 6000
        )
        .await
        .unwrap()
    );
    let failed = s.get_downlink("pk", "d000", "m2").await.unwrap().unwrap();
    assert_eq!(
        (failed.status.as_str(), failed.reply_code),
        ("failed", Some(9201))
    );
}

#[tokio::test]
async fn unknown_url_scheme_is_refused_with_advice() {
    let err = Store::open("mysql://localhost/x", SecretBox::random())
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("postgres://"), "{err}");
}

#[tokio::test]
async fn in_memory_sqlite_works() {
    let s = Store::open("sqlite::memory:", SecretBox::random())
        .await
        .unwrap();
    s.create_product(&product("pk")).await.unwrap();
    assert_eq!(
        s.list_products(Page::default(), None, None)
            .await
            .unwrap()
            .1,
        1
    );
    s.close().await;
}

async fn gateway_topology(s: &Store, _url: &str) {
    product_with_devices(s, "gw", 2).await;
    product_with_devices(s, "sub", 3).await;
    let (g0, g1) = (("gw", "d000"), ("gw", "d001"));
    assert_eq!(
        s.attach_sub_device(("sub", "d000"), g0, T0).await.unwrap(),
        None
    );
    assert_eq!(
        s.attach_sub_device(("sub", "d001"), g0, T0 + 1)
            .await
            .unwrap(),
        None
    );
    // Attaching again to the same gateway is not a move.
    assert_eq!(
        s.attach_sub_device(("sub", "d000"), g0, T0 + 2)
            .await
            .unwrap(),
        None
    );
    let names = |links: Vec<lotus_storage::TopologyLink>| {
        links.into_iter().map(|l| l.device_name).collect::<Vec<_>>()
    };
    assert_eq!(
        names(s.sub_devices("gw", "d000").await.unwrap()),
        ["d001", "d000"]
    );
    // Another gateway takes a sub-device over and learns who had it.
    assert_eq!(
        s.attach_sub_device(("sub", "d001"), g1, T0 + 3)
            .await
            .unwrap(),
        Some(("gw".to_string(), "d000".to_string()))
    );
    assert_eq!(names(s.sub_devices("gw", "d001").await.unwrap()), ["d001"]);
    // Only the gateway it is attached to can detach it.
    assert!(!s.detach_sub_device(("sub", "d001"), g0).await.unwrap());
    assert!(s.detach_sub_device(("sub", "d001"), g1).await.unwrap());
    assert_eq!(s.all_topology().await.unwrap().len(), 1);
    // Deleting a gateway forgets its topology.
    s.attach_sub_device(("sub", "d002"), g0, T0 + 4)
        .await
        .unwrap();
    s.delete_device("gw", "d000").await.unwrap();
    assert!(s.all_topology().await.unwrap().is_empty());
}

async fn scopes_of_users_products_and_devices(s: &Store, _url: &str) {
    let xihu = Scope {
        org: "water".into(),
        region: "/hz/xihu".into(),
    };
    let user = s
        .create_user("ops", "h", &["operator".into()], &xihu)
        .await
        .unwrap();
    assert_eq!(user.scope, xihu);
    assert_eq!(s.user_by_name("ops").await.unwrap().unwrap().scope, xihu);
    assert_eq!(s.list_users().await.unwrap()[0].username, "ops");

    let mut p = product("pkScope");
    p.scope = xihu.clone();
    assert_eq!(s.create_product(&p).await.unwrap().scope, xihu);
    s.create_devices(
        "pkScope",
        &[("d1".into(), "s1".into()), ("d2".into(), "s2".into())],
    )
    .await
    .unwrap();
    // A device is where its product is until it is moved.
    assert_eq!(
        s.device_scope("pkScope", "d1").await.unwrap(),
        Some(xihu.clone())
    );
    s.set_device_region("pkScope", "d2", Some("/hz/xihu/lingyin"))
        .await
        .unwrap();
    let moved = s.device_scope("pkScope", "d2").await.unwrap().unwrap();
    assert_eq!(
        (moved.org.as_str(), moved.region.as_str()),
        ("water", "/hz/xihu/lingyin")
    );
    assert_eq!(
        s.get_device("pkScope", "d2")
            .await
            .unwrap()
            .unwrap()
            .region
            .as_deref(),
        Some("/hz/xihu/lingyin")
    );
    // Moving the product moves the devices that have no region of their own.
    s.update_product(
        "pkScope",
        &ProductUpdate {
            region: Some("/hz/binjiang".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        s.device_scope("pkScope", "d1")
            .await
            .unwrap()
            .unwrap()
            .region,
        "/hz/binjiang"
    );
    assert_eq!(
        s.device_scope("pkScope", "d2")
            .await
            .unwrap()
            .unwrap()
            .region,
        "/hz/xihu/lingyin"
    );
    s.set_device_region("pkScope", "d2", None).await.unwrap();
    assert_eq!(
        s.device_scope("pkScope", "d2")
            .await
            .unwrap()
            .unwrap()
            .region,
        "/hz/binjiang"
    );
    assert_eq!(s.device_scope("pkScope", "none").await.unwrap(), None);
    assert!(matches!(
        s.set_device_region("pkScope", "none", None).await,
        Err(StorageError::NotFound(_))
    ));
}

async fn data_grants(s: &Store, _url: &str) {
    s.create_product(&product("pkData")).await.unwrap();
    let ops = s
        .create_user("ops", "h", &["operator".into()], &Scope::default())
        .await
        .unwrap();
    let g = s
        .set_data_grant("ops", "pkData", "read_write", Some(T0), "admin")
        .await
        .unwrap();
    assert_eq!(
        (g.level.as_str(), g.expires_at, g.username.as_str()),
        ("read_write", Some(T0), "ops")
    );
    s.set_data_grant("ops", "pkData", "data_admin", None, "sec")
        .await
        .unwrap();
    let mine = s.data_grants_of_user(ops.id).await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(
        (mine[0].level.as_str(), mine[0].granted_by.as_str()),
        ("data_admin", "sec")
    );
    assert_eq!(s.data_grants_on_product("pkData").await.unwrap().len(), 1);
    assert!(matches!(
        s.set_data_grant("nobody", "pkData", "read_only", None, "a")
            .await,
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        s.set_data_grant("ops", "pkNone", "read_only", None, "a")
            .await,
        Err(StorageError::NotFound(_))
    ));
    assert!(s.delete_data_grant("ops", "pkData").await.unwrap());
    assert!(!s.delete_data_grant("ops", "pkData").await.unwrap());
    assert!(s.data_grants_of_user(ops.id).await.unwrap().is_empty());
}

async fn profiles_passwords_and_settings(s: &Store, _url: &str) {
    let roles = vec!["operator".to_string()];
    let plain = s
        .create_user("plain", "h0", &roles, &Scope::default())
        .await
        .unwrap();
    assert_eq!(plain.profile, UserProfile::default());
    let given = UserProfile {
        display_name: Some("Li Lei".into()),
        email: Some("li@example.org".into()),
        phone: None,
    };
    let li = s
        .create_user_with_profile("li", "h1", &roles, &Scope::default(), &given)
        .await
        .unwrap();
    assert_eq!(li.profile, given);
    assert_eq!(s.user_by_name("li").await.unwrap().unwrap(), li);
    let changed = UserProfile {
        display_name: None,
        email: Some("lei@example.org".into()),
        phone: Some("+8613812345678".into()),
    };
    s.update_user_profile(li.id, &changed).await.unwrap();
    assert_eq!(
        s.user_by_name("li").await.unwrap().unwrap().profile,
        changed
    );
    assert!(matches!(
        s.update_user_profile(9_999, &changed).await,
        Err(StorageError::NotFound(_))
    ));

    // A new password ends every session but the one that set it.
    let later = lotus_test_harness::now_ms() + 60_000;
    for token in ["keep", "drop-1", "drop-2"] {
        s.create_session(token, li.id, later).await.unwrap();
    }
    s.create_session("other-user", plain.id, later)
        .await
        .unwrap();
    s.set_user_password(li.id, "h2", Some("keep"))
        .await
        .unwrap();
    let now = lotus_test_harness::now_ms();
    assert_eq!(
        s.session_user("keep", now)
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        "h2"
    );
    assert!(s.session_user("drop-1", now).await.unwrap().is_none());
    assert!(s.session_user("drop-2", now).await.unwrap().is_none());
    assert!(s.session_user("other-user", now).await.unwrap().is_some());
    assert!(matches!(
        s.set_user_password(9_999, "h", None).await,
        Err(StorageError::NotFound(_))
    ));

    // Settings: a prefix means itself ('_' and '%' are no wildcards), several change at once,
    // and a reset removes the key.
    assert!(s.settings("style.").await.unwrap().is_empty());
    s.put_settings(
        &[
            ("style.title", Some("Hangzhou")),
            ("style.themeColor", Some("#0a7d4f")),
            ("styleX", Some("not style")),
            ("style_", Some("not style either")),
        ],
        "admin",
    )
    .await
    .unwrap();
    let style = s.settings("style.").await.unwrap();
    assert_eq!(
        style.into_iter().collect::<Vec<_>>(),
        vec![
            ("style.themeColor".to_string(), "#0a7d4f".to_string()),
            ("style.title".to_string(), "Hangzhou".to_string()),
        ]
    );
    s.put_settings(
        &[("style.title", Some("杭州")), ("style.themeColor", None)],
        "admin",
    )
    .await
    .unwrap();
    let style = s.settings("style.").await.unwrap();
    assert_eq!(style.len(), 1);
    assert_eq!(style["style.title"], "杭州");
    assert_eq!(s.settings("style_").await.unwrap().len(), 1);
}

async fn login_lockout(s: &Store, _url: &str) {
    let u = s
        .create_user("bob", "$argon2id$hash", &[], &Scope::default())
        .await
        .unwrap();
    let lock_ms = 60_000;
    // Two failures do not lock at a limit of three; the third does, until T0 + 2 + lock_ms.
    for i in 0..2 {
        assert_eq!(
            s.record_failed_login(u.id, T0 + i, 3, lock_ms)
                .await
                .unwrap(),
            None
        );
    }
    assert_eq!(s.login_locked_until(u.id, T0 + 2).await.unwrap(), None);
    let until = s
        .record_failed_login(u.id, T0 + 2, 3, lock_ms)
        .await
        .unwrap();
    assert_eq!(until, Some(T0 + 2 + lock_ms));
    assert_eq!(
        s.login_locked_until(u.id, T0 + 3).await.unwrap(),
        Some(T0 + 2 + lock_ms)
    );
    // Once the lock has run out the count starts over: one more failure does not relock.
    let later = T0 + 2 + lock_ms + 1;
    assert_eq!(s.login_locked_until(u.id, later).await.unwrap(), None);
    assert_eq!(
        s.record_failed_login(u.id, later, 3, lock_ms)
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.login_locked_until(u.id, later + 1).await.unwrap(), None);
    // A success (or an unlock) clears it; unknown users are reported.
    assert!(s.clear_failed_logins("bob").await.unwrap());
    assert!(!s.clear_failed_logins("nobody").await.unwrap());
    assert!(s.record_failed_login(9_999, T0, 3, lock_ms).await.is_err());
}

/// Runs one statement on a connection of the test's own; its error text when it fails.
async fn raw_execute(url: &str, sql: &str) -> Option<String> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let r = sqlx::query(sql).execute(&pool).await;
    pool.close().await;
    r.err().map(|e| e.to_string())
}

async fn audit_log_chain(s: &Store, url: &str) {
    let detail = json!({"roles": ["operator"]});
    for (i, action) in ["auth.login", "user.create", "plugin.approve"]
        .iter()
        .enumerate()
    {
        let row = s
            .append_audit(&NewAudit {
                actor: "admin",
                action,
                target: "user:bob",
                outcome: "ok",
                detail: &detail,
                at: T0 + i as i64,
            })
            .await
            .unwrap();
        assert_eq!(row.seq, i as i64 + 1);
    }
    let rows = s.audit_entries(0, 10).await.unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1].prev_hash, rows[0].hash);
    assert_eq!(rows[2].detail, detail);
    assert_eq!(s.audit_entries(2, 10).await.unwrap().len(), 1);
    assert_eq!(
        s.verify_audit().await.unwrap(),
        AuditVerification {
            entries: 3,
            broken: None
        }
    );
    // The database refuses to change or remove an entry.
    let refused = raw_execute(url, "UPDATE audit_log SET actor = 'mallory' WHERE seq = 2").await;
    assert!(refused.unwrap().contains("append-only"));
    assert!(
        raw_execute(url, "DELETE FROM audit_log WHERE seq = 3")
            .await
            .unwrap()
            .contains("append-only")
    );
    // Someone who drops the guard and edits an entry is caught at that entry.
    let drop = if url.starts_with("postgres") {
        "DROP TRIGGER audit_log_no_update ON audit_log"
    } else {
        "DROP TRIGGER audit_log_no_update"
    };
    assert_eq!(raw_execute(url, drop).await, None);
    assert_eq!(
        raw_execute(url, "UPDATE audit_log SET actor = 'mallory' WHERE seq = 2").await,
        None
    );
    let v = s.verify_audit().await.unwrap();
    assert_eq!(v.entries, 1);
    let (seq, why) = v.broken.unwrap();
    assert_eq!(seq, 2);
    assert!(why.contains("changed"), "{why}");
}
