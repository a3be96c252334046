//! Plugins, their versions, key-value state, dead letters and codec bindings against both back
//! ends (SQLite file and PostgreSQL), like `store.rs`: every case runs on each.

use lotus_model::product::{DataFormat, NodeType};
use lotus_storage::{
    DeadLetterFilter, NewDeadLetter, NewPluginVersion, NewProduct, PLUGIN_ACTIVE, PLUGIN_SUSPENDED,
    StorageError, Store,
};

#[macro_use]
mod backends;

on_both_backends!(
    plugin_versions_upgrade_and_rollback,
    plugin_state_and_removal,
    plugin_scripts_and_secrets,
    dead_letters_are_kept_and_filtered
);

fn version<'a>(id: &'a str, version: &'a str, wasm: &'a [u8]) -> NewPluginVersion<'a> {
    NewPluginVersion {
        plugin_id: id,
        version,
        world: "codec",
        manifest: "id = \"x\"",
        wasm,
        sha256: "00",
        installed_by: "admin",
        script: None,
    }
}

async fn custom_product(s: &Store, pk: &str) {
    s.create_product(&NewProduct {
        product_key: pk.into(),
        name: pk.into(),
        node_type: NodeType::Direct,
        data_format: DataFormat::Custom,
        dynamic_registration: false,
        allow_unregistered: false,
        replay_window_secs: None,
        description: String::new(),
        product_secret: "product-secret".into(),
        scope: Default::default(),
    })
    .await
    .unwrap();
}

async fn plugin_versions_upgrade_and_rollback(s: &Store, _url: &str) {
    // Bytes that are not valid UTF-8 prove the column is binary on both back ends.
    let v1: Vec<u8> = vec![0, 0x61, 0x73, 0x6d, 0xff, 0xfe, 0];
    let p = s
        .install_plugin(&version("meter", "1.0.0", &v1))
        .await
        .unwrap();
    assert_eq!(p.active_version, "1.0.0");
    assert_eq!(p.status, PLUGIN_ACTIVE);
    assert!(p.enabled);
    match s.install_plugin(&version("meter", "2.0.0", &v1)).await {
        Err(StorageError::Conflict(m)) => assert!(m.contains("upgrade"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // A failed install leaves no half-stored version behind.
    assert_eq!(s.plugin_versions("meter").await.unwrap().len(), 1);

    match s.previous_plugin_version("meter").await {
        Err(StorageError::Conflict(m)) => assert!(m.contains("no version older"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }

    s.set_plugin_status("meter", PLUGIN_SUSPENDED, Some("trap"))
        .await
        .unwrap();
    let v2 = vec![1u8, 2, 3];
    let p = s
        .upgrade_plugin(&version("meter", "2.0.0", &v2))
        .await
        .unwrap();
    assert_eq!(p.active_version, "2.0.0");
    assert_eq!(p.status, PLUGIN_ACTIVE, "an upgrade clears a suspension");
    assert_eq!(p.status_reason, None);
    match s.upgrade_plugin(&version("meter", "2.0.0", &v2)).await {
        Err(StorageError::Conflict(m)) => assert!(m.contains("2.0.0"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let mut rule = version("meter", "3.0.0", &v2);
    rule.world = "rule";
    match s.upgrade_plugin(&rule).await {
        Err(StorageError::Conflict(m)) => assert!(m.contains("world"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    match s.upgrade_plugin(&version("nope", "1", &v2)).await {
        Err(StorageError::NotFound(m)) => assert!(m.contains("nope"), "{m}"),
        other => panic!("expected not found, got {other:?}"),
    }

    let versions = s.plugin_versions("meter").await.unwrap();
    assert_eq!(
        versions
            .iter()
            .map(|v| v.version.as_str())
            .collect::<Vec<_>>(),
        ["1.0.0", "2.0.0"]
    );
    assert_eq!(versions[0].size, v1.len() as i64);
    assert_eq!(versions[0].installed_by, "admin");

    let previous = s.previous_plugin_version("meter").await.unwrap();
    assert_eq!(previous.version, "1.0.0");
    let p = s
        .set_active_plugin_version("meter", &previous.version)
        .await
        .unwrap();
    assert_eq!(p.active_version, "1.0.0");
    let artifact = s.plugin_artifact("meter", "1.0.0").await.unwrap();
    assert_eq!(artifact.wasm, v1);
    assert_eq!(artifact.manifest, "id = \"x\"");
    assert!(matches!(
        s.set_active_plugin_version("meter", "9.9.9").await,
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        s.plugin_artifact("meter", "9.9.9").await,
        Err(StorageError::NotFound(_))
    ));
}

async fn plugin_state_and_removal(s: &Store, _url: &str) {
    custom_product(s, "pk1").await;
    s.install_plugin(&version("meter", "1", b"w"))
        .await
        .unwrap();
    s.install_plugin(&version("other", "1", b"w"))
        .await
        .unwrap();

    s.plugin_kv_set("meter", "count", b"\x00\x01")
        .await
        .unwrap();
    s.plugin_kv_set("meter", "count", b"\x00\x02")
        .await
        .unwrap();
    s.plugin_kv_set("other", "count", b"o").await.unwrap();
    assert_eq!(
        s.plugin_kv_get("meter", "count").await.unwrap(),
        Some(b"\x00\x02".to_vec())
    );
    assert_eq!(s.plugin_kv_get("meter", "none").await.unwrap(), None);
    s.plugin_kv_delete("meter", "count").await.unwrap();
    s.plugin_kv_delete("meter", "count").await.unwrap();
    assert_eq!(s.plugin_kv_get("meter", "count").await.unwrap(), None);
    assert_eq!(
        s.plugin_kv_get("other", "count").await.unwrap(),
        Some(b"o".to_vec())
    );

    let p = s.set_plugin_enabled("meter", false).await.unwrap();
    assert!(!p.enabled);
    assert!(matches!(
        s.set_plugin_status("meter", "bogus", None).await,
        Err(StorageError::Invalid(_))
    ));

    assert!(matches!(
        s.bind_product_codec("pk1", "missing").await,
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        s.bind_product_codec("nopk", "meter").await,
        Err(StorageError::NotFound(_))
    ));
    s.bind_product_codec("pk1", "meter").await.unwrap();
    assert_eq!(
        s.product_codec("pk1").await.unwrap().as_deref(),
        Some("meter")
    );
    match s.delete_plugin("meter").await {
        Err(StorageError::Conflict(m)) => assert!(m.contains("pk1"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    s.bind_product_codec("pk1", "other").await.unwrap();
    assert_eq!(
        s.all_product_codecs().await.unwrap(),
        vec![("pk1".to_string(), "other".to_string())]
    );
    s.delete_plugin("meter").await.unwrap();
    assert_eq!(s.get_plugin("meter").await.unwrap(), None);
    assert!(s.plugin_versions("meter").await.unwrap().is_empty());
    assert!(matches!(
        s.delete_plugin("meter").await,
        Err(StorageError::NotFound(_))
    ));
    assert!(s.unbind_product_codec("pk1").await.unwrap());
    assert!(!s.unbind_product_codec("pk1").await.unwrap());
    assert_eq!(
        s.list_plugins()
            .await
            .unwrap()
            .iter()
            .map(|p| p.id.as_str())
            .collect::<Vec<_>>(),
        ["other"]
    );
}

async fn dead_letters_are_kept_and_filtered(s: &Store, _url: &str) {
    for (plugin, pk) in [("a", "pk1"), ("b", "pk1"), ("a", "pk2")] {
        s.insert_dead_letter(&NewDeadLetter {
            plugin_id: plugin,
            product_key: pk,
            device_name: "d1",
            topic: "/sys/pk/d1/thing/model/up_raw",
            payload: &[0xff, 0x00, 0x10],
            reason: "timeout",
            detail: "the call ran past its deadline",
        })
        .await
        .unwrap();
    }
    let all = s
        .list_dead_letters(&DeadLetterFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    assert!(all[0].id > all[1].id, "newest first");
    assert_eq!(all[0].payload, vec![0xff, 0x00, 0x10]);
    assert_eq!(all[0].reason, "timeout");
    let of_a = s
        .list_dead_letters(&DeadLetterFilter {
            plugin_id: Some("a".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(of_a.len(), 2);
    let a_pk1 = s
        .list_dead_letters(&DeadLetterFilter {
            plugin_id: Some("a".into()),
            product_key: Some("pk1".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(a_pk1.len(), 1);
    let older = s
        .list_dead_letters(&DeadLetterFilter {
            before_id: Some(all[0].id),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(older.len(), 1);
    assert_eq!(older[0].id, all[1].id);
}

async fn plugin_scripts_and_secrets(s: &Store, _url: &str) {
    let mut v1 = version("vendor", "1", b"runner");
    v1.script = Some("function rawDataToProtocol(b) { return {}; }");
    s.install_plugin(&v1).await.unwrap();
    s.upgrade_plugin(&version("vendor", "2", b"own"))
        .await
        .unwrap();
    let a1 = s.plugin_artifact("vendor", "1").await.unwrap();
    assert_eq!(a1.script.as_deref(), v1.script);
    assert_eq!(s.plugin_artifact("vendor", "2").await.unwrap().script, None);

    let row = s
        .set_plugin_secret("vendor", "sms-key", "k-1", "ops")
        .await
        .unwrap();
    assert_eq!(
        (row.name.as_str(), row.updated_by.as_str()),
        ("sms-key", "ops")
    );
    s.set_plugin_secret("vendor", "sms-key", "k-2", "sec")
        .await
        .unwrap();
    s.set_plugin_secret("vendor", "a-token", "t", "sec")
        .await
        .unwrap();
    assert_eq!(
        s.plugin_secret("vendor", "sms-key")
            .await
            .unwrap()
            .unwrap()
            .expose(),
        "k-2"
    );
    assert!(
        s.plugin_secret("vendor", "missing")
            .await
            .unwrap()
            .is_none()
    );
    let names: Vec<_> = s
        .list_plugin_secrets("vendor")
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.name, r.updated_by))
        .collect();
    assert_eq!(
        names,
        [
            ("a-token".into(), "sec".into()),
            ("sms-key".into(), "sec".into())
        ]
    );
    assert!(matches!(
        s.set_plugin_secret("nobody", "x", "v", "ops").await,
        Err(StorageError::NotFound(_))
    ));
    assert!(s.delete_plugin_secret("vendor", "a-token").await.unwrap());
    assert!(!s.delete_plugin_secret("vendor", "a-token").await.unwrap());
    // Removing the plugin removes its secrets with it.
    s.delete_plugin("vendor").await.unwrap();
    s.install_plugin(&version("vendor", "1", b"w"))
        .await
        .unwrap();
    assert!(s.list_plugin_secrets("vendor").await.unwrap().is_empty());
}
