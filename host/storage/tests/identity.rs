//! Regions, organisations, custom roles and users' roles against both back ends (SQLite file
//! and PostgreSQL): every case runs on each.

use lotus_storage::{OrgRow, Page, Scope, StorageError, Store, UserFilter};

#[macro_use]
mod backends;

on_both_backends!(
    region_tree,
    org_tree,
    custom_roles_and_their_holders,
    users_by_page_scope_and_search
);

fn scope(org: &str, region: &str) -> Scope {
    Scope {
        org: org.into(),
        region: region.into(),
    }
}

async fn region_tree(s: &Store, _url: &str) {
    assert_eq!(s.region_count().await.unwrap(), 0);
    s.create_region("/hz", "杭州市", Some("330100"))
        .await
        .unwrap();
    s.create_region("/hz/xihu", "西湖", None).await.unwrap();
    s.create_region("/hz/x_hu", "trap", None).await.unwrap();
    assert!(matches!(
        s.create_region("/hz", "again", None).await,
        Err(StorageError::Conflict(_))
    ));
    let paths: Vec<String> = s
        .regions()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(paths, ["/hz", "/hz/x_hu", "/hz/xihu"]);

    let r = s
        .update_region("/hz/xihu", Some("西湖区"), Some(Some("330106")))
        .await
        .unwrap();
    assert_eq!(
        (r.name.as_str(), r.code.as_deref()),
        ("西湖区", Some("330106"))
    );
    let r = s.update_region("/hz/xihu", None, Some(None)).await.unwrap();
    assert_eq!((r.name.as_str(), r.code), ("西湖区", None));
    assert!(matches!(
        s.update_region("/nowhere", Some("x"), None).await,
        Err(StorageError::NotFound(_))
    ));

    // Only what is exactly in a region counts; sub-regions are counted as children.
    s.create_user("u1", "h", &["viewer".into()], &scope("", "/hz/xihu"))
        .await
        .unwrap();
    s.create_user(
        "u2",
        "h",
        &["viewer".into()],
        &scope("", "/hz/xihu/lingyin"),
    )
    .await
    .unwrap();
    let hz = s.region_occupancy("/hz").await.unwrap();
    assert_eq!(
        (hz.children, hz.users, hz.products, hz.devices),
        (2, 0, 0, 0)
    );
    let xihu = s.region_occupancy("/hz/xihu").await.unwrap();
    assert_eq!((xihu.children, xihu.users), (0, 1));
    assert!(!xihu.is_empty());
    assert!(s.region_occupancy("/hz/x_hu").await.unwrap().is_empty());
    assert!(s.delete_region("/hz/x_hu").await.unwrap());
    assert!(!s.delete_region("/hz/x_hu").await.unwrap());
    assert_eq!(s.region_count().await.unwrap(), 2);
}

async fn org_tree(s: &Store, _url: &str) {
    let org = |id: &str, parent: Option<&str>| OrgRow {
        id: id.into(),
        parent: parent.map(str::to_string),
        name: format!("{id} bureau"),
        region: Some("/hz".into()),
        contact: None,
        created_at: 0,
        updated_at: 0,
    };
    s.create_org(&org("city", None)).await.unwrap();
    let water = s.create_org(&org("water", Some("city"))).await.unwrap();
    assert!(water.created_at > 0);
    assert!(matches!(
        s.create_org(&org("water", None)).await,
        Err(StorageError::Conflict(_))
    ));
    assert!(matches!(
        s.create_org(&org("gas", Some("nobody"))).await,
        Err(StorageError::NotFound(_))
    ));
    let updated = s
        .update_org(
            "water",
            Some("市水务"),
            Some(None),
            Some(Some("+8657100000000")),
        )
        .await
        .unwrap();
    assert_eq!(updated.name, "市水务");
    assert_eq!(updated.region, None);
    assert_eq!(updated.contact.as_deref(), Some("+8657100000000"));
    assert_eq!(updated.parent.as_deref(), Some("city"));

    s.create_user("plumber", "h", &["viewer".into()], &scope("water", "/"))
        .await
        .unwrap();
    let city = s.org_occupancy("city").await.unwrap();
    assert_eq!((city.children, city.users), (1, 0));
    let w = s.org_occupancy("water").await.unwrap();
    assert_eq!((w.children, w.users, w.products), (0, 1, 0));
    let ids: Vec<String> = s.orgs().await.unwrap().into_iter().map(|o| o.id).collect();
    assert_eq!(ids, ["city", "water"]);
}

async fn custom_roles_and_their_holders(s: &Store, _url: &str) {
    let perms = vec!["device.read".to_string(), "device.invoke".to_string()];
    s.create_role("inspector", "field checks", &perms)
        .await
        .unwrap();
    s.create_role("in_spector", "a LIKE trap", &["alarm.read".into()])
        .await
        .unwrap();
    assert!(matches!(
        s.create_role("inspector", "", &perms).await,
        Err(StorageError::Conflict(_))
    ));
    s.create_user(
        "alice",
        "h",
        &["viewer".into(), "inspector".into()],
        &scope("", "/"),
    )
    .await
    .unwrap();
    // `in_spector` as a LIKE pattern would match `inspector`; holders are matched literally.
    assert_eq!(s.role_holders("inspector").await.unwrap(), ["alice"]);
    assert!(s.role_holders("in_spector").await.unwrap().is_empty());

    // The permissions travel with the user wherever the user acts.
    let alice = s.user_by_name("alice").await.unwrap().unwrap();
    assert_eq!(alice.permissions, ["device.invoke", "device.read"]);
    s.create_session("tok", alice.id, i64::MAX).await.unwrap();
    let by_session = s.session_user("tok", 0).await.unwrap().unwrap();
    assert_eq!(by_session.permissions, ["device.invoke", "device.read"]);
    s.update_role("inspector", None, Some(&["device.read".to_string()]))
        .await
        .unwrap();
    let by_session = s.session_user("tok", 0).await.unwrap().unwrap();
    assert_eq!(by_session.permissions, ["device.read"]);
    assert!(matches!(
        s.update_role("nobody", Some("x"), None).await,
        Err(StorageError::NotFound(_))
    ));

    match s.delete_role("inspector").await {
        Err(StorageError::Conflict(m)) => assert!(m.contains("1 user(s) (alice)"), "{m}"),
        other => panic!("a held role was deleted: {other:?}"),
    }
    s.set_user_roles("alice", &["viewer".into()]).await.unwrap();
    assert!(matches!(
        s.set_user_roles("nobody", &["viewer".into()]).await,
        Err(StorageError::NotFound(_))
    ));
    let alice = s.user_by_name("alice").await.unwrap().unwrap();
    assert_eq!(alice.roles, ["viewer"]);
    assert!(alice.permissions.is_empty());
    assert!(s.delete_role("inspector").await.unwrap());
    assert!(!s.delete_role("inspector").await.unwrap());
    let names: Vec<String> = s
        .roles()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["in_spector"]);
}

async fn users_by_page_scope_and_search(s: &Store, _url: &str) {
    for (name, org, region) in [
        ("ann", "water", "/hz/xihu"),
        ("bob", "water", "/hz/binjiang"),
        ("cat", "gas", "/hz/xihu"),
        ("dan", "", "/hz/xihu/lingyin"),
        ("eve", "water", "/hz/xihuan"),
    ] {
        s.create_user(name, "h", &["operator".into()], &scope(org, region))
            .await
            .unwrap();
    }
    let page = |offset, limit| Page { offset, limit };
    let (rows, total) = s
        .list_users_matching(
            page(0, 2),
            &UserFilter {
                within: None,
                search: None,
                disabled: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(total, 5);
    let names: Vec<&str> = rows.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["ann", "bob"]);
    let (rows, _) = s
        .list_users_matching(
            page(4, 2),
            &UserFilter {
                within: None,
                search: None,
                disabled: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(rows[0].username, "eve");

    let (rows, total) = s
        .list_users_matching(
            page(0, 10),
            &UserFilter {
                within: Some(&scope("water", "/hz/xihu")),
                search: None,
                disabled: None,
            },
        )
        .await
        .unwrap();
    let names: Vec<&str> = rows.iter().map(|u| u.username.as_str()).collect();
    assert_eq!((names, total), (vec!["ann", "dan"], 2));

    let (rows, total) = s
        .list_users_matching(
            page(0, 10),
            &UserFilter {
                within: None,
                search: Some("BINJ"),
                disabled: None,
            },
        )
        .await
        .unwrap();
    assert_eq!((rows[0].username.as_str(), total), ("bob", 1));
    let (_, total) = s
        .list_users_matching(
            page(0, 10),
            &UserFilter {
                within: None,
                search: Some("100%"),
                disabled: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(total, 0);
}
