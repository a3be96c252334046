//! OpenID Connect state against both back ends: signing keys and their rotation and retention,
//! single-use authorization codes and log-in states, grants with their access and refresh
//! tokens and their revocation, re-authenticated sessions.

use lotus_model::scope::Scope;
use lotus_storage::{
    CodeRedemption, OidcAccessToken, OidcCode, OidcGrant, OidcLoginState, OidcRefreshToken, Secret,
    Store,
};
use sqlx::Row;

#[macro_use]
mod backends;

on_both_backends!(
    signing_keys_rotate_and_stay_published,
    codes_are_single_use_and_expire,
    login_states_are_single_use_and_sealed,
    access_tokens_expire,
    refresh_tokens_are_spent_once_and_grants_revoke_together,
    a_reused_code_revokes_its_grant,
    logout_revokes_what_a_client_holds_for_a_user,
    sessions_record_re_authentication,
    retired_keys_are_deleted_after_retention
);

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn user(s: &Store, name: &str) -> i64 {
    s.create_user(
        name,
        "$argon2id$not-a-real-hash",
        &["viewer".into()],
        &Scope::default(),
    )
    .await
    .unwrap()
    .id
}

async fn signing_keys_rotate_and_stay_published(s: &Store, url: &str) {
    assert!(s.oidc_active_signing_key().await.unwrap().is_none());
    s.add_oidc_signing_key("k1", "ES256", &Secret::new("00aa"), r#"{"kid":"k1"}"#)
        .await
        .unwrap();
    let (active, private) = s.oidc_active_signing_key().await.unwrap().unwrap();
    assert_eq!((active.kid.as_str(), private.expose()), ("k1", "00aa"));
    s.add_oidc_signing_key(
        "k2",
        "ES256",
        &Secret::new("00bb00bb00bb00bb00bb00bb00bb00bb"),
        r#"{"kid":"k2"}"#,
    )
    .await
    .unwrap();
    let (active, private) = s.oidc_active_signing_key().await.unwrap().unwrap();
    assert_eq!(
        (active.kid.as_str(), private.expose()),
        ("k2", "00bb00bb00bb00bb00bb00bb00bb00bb")
    );
    let keys = s.oidc_signing_keys().await.unwrap();
    let kids: Vec<_> = keys
        .iter()
        .map(|k| (k.kid.as_str(), k.retired_at.is_some()))
        .collect();
    assert_eq!(kids, [("k2", false), ("k1", true)]);
    // The private key is sealed at rest.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let stored: String = sqlx::query("SELECT private_enc FROM oidc_signing_keys WHERE kid = 'k2'")
        .fetch_one(&pool)
        .await
        .unwrap()
        .try_get("private_enc")
        .unwrap();
    pool.close().await;
    assert!(!stored.contains("00bb00bb00bb00bb00bb00bb00bb00bb"));
}

fn code(user_id: i64, expires_at: i64) -> OidcCode {
    OidcCode {
        client_id: "app_one".into(),
        user_id,
        redirect_uri: "https://app.example/cb".into(),
        scope: "openid profile".into(),
        nonce: Some("n-1".into()),
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
        auth_time: 1,
        expires_at,
    }
}

async fn codes_are_single_use_and_expire(s: &Store, _url: &str) {
    let uid = user(s, "alice").await;
    let c = code(uid, now() + 60_000);
    s.create_oidc_code("h1", &c).await.unwrap();
    assert_eq!(
        s.redeem_oidc_code("h1", now()).await.unwrap(),
        CodeRedemption::Fresh(c)
    );
    assert_eq!(
        s.redeem_oidc_code("h1", now()).await.unwrap(),
        CodeRedemption::Reused {
            client_id: "app_one".into(),
            user_id: uid
        }
    );
    assert_eq!(
        s.redeem_oidc_code("unknown", now()).await.unwrap(),
        CodeRedemption::Unknown
    );
    // An expired code is refused, and spent: it does not come back later.
    s.create_oidc_code("h2", &code(uid, now() + 1_000))
        .await
        .unwrap();
    assert_eq!(
        s.redeem_oidc_code("h2", now() + 2_000).await.unwrap(),
        CodeRedemption::Unknown
    );
    assert_eq!(
        s.redeem_oidc_code("h2", now() + 2_000).await.unwrap(),
        CodeRedemption::Unknown
    );
    // A code of an unknown user cannot be stored.
    assert!(
        s.create_oidc_code("h3", &code(uid + 100, now() + 60_000))
            .await
            .is_err()
    );
    assert_eq!(
        s.user_by_id(uid)
            .await
            .unwrap()
            .map(|u| u.username)
            .as_deref(),
        Some("alice")
    );
}

async fn login_states_are_single_use_and_sealed(s: &Store, _url: &str) {
    let state = OidcLoginState {
        nonce: "nonce".into(),
        verifier: Secret::new("verifier-verifier-verifier-verifier-verifier"),
        return_to: "/devices".into(),
        expires_at: now() + 600_000,
    };
    s.create_oidc_login_state("st", &state).await.unwrap();
    assert_eq!(
        s.take_oidc_login_state("st", now()).await.unwrap(),
        Some(state)
    );
    assert_eq!(s.take_oidc_login_state("st", now()).await.unwrap(), None);
}

fn grant(id: &str, client_id: &str, user_id: i64) -> OidcGrant {
    OidcGrant {
        grant_id: id.into(),
        client_id: client_id.into(),
        user_id,
        auth_time: 7,
    }
}

fn access(client_id: &str, user_id: i64, grant_id: &str) -> OidcAccessToken {
    OidcAccessToken {
        client_id: client_id.into(),
        user_id,
        scope: "openid offline_access".into(),
        expires_at: now() + 3_600_000,
        grant_id: Some(grant_id.into()),
    }
}

fn refresh(client_id: &str, user_id: i64, grant_id: &str) -> OidcRefreshToken {
    OidcRefreshToken {
        grant_id: grant_id.into(),
        client_id: client_id.into(),
        user_id,
        scope: "openid offline_access".into(),
        expires_at: now() + 30 * 86_400_000,
        used_at: None,
        auth_time: 7,
    }
}

async fn access_tokens_expire(s: &Store, _url: &str) {
    let uid = user(s, "bob").await;
    let t = access("app_one", uid, "g1");
    assert!(
        s.issue_oidc_tokens(&grant("g1", "app_one", uid), "t1", &t, None)
            .await
            .unwrap()
    );
    assert_eq!(
        s.oidc_access_token("t1", now()).await.unwrap(),
        Some(t.clone())
    );
    assert_eq!(s.oidc_access_token("t1", t.expires_at).await.unwrap(), None);
    assert_eq!(s.oidc_access_token("nope", now()).await.unwrap(), None);
}

async fn refresh_tokens_are_spent_once_and_grants_revoke_together(s: &Store, _url: &str) {
    let uid = user(s, "carol").await;
    let g = grant("g1", "app_one", uid);
    let r1 = refresh("app_one", uid, "g1");
    assert!(
        s.issue_oidc_tokens(&g, "a1", &access("app_one", uid, "g1"), Some(("r1", &r1)))
            .await
            .unwrap()
    );
    let found = s.oidc_refresh_token("r1", now()).await.unwrap().unwrap();
    assert_eq!((found.auth_time, found.used_at), (7, None));
    assert!(s.spend_oidc_refresh_token("r1", now()).await.unwrap());
    assert!(!s.spend_oidc_refresh_token("r1", now()).await.unwrap());
    // Spent, but still known: a replay can be told from an unknown token.
    assert!(
        s.oidc_refresh_token("r1", now())
            .await
            .unwrap()
            .unwrap()
            .used_at
            .is_some()
    );
    // The rotation: a new pair under the same grant.
    assert!(
        s.issue_oidc_tokens(
            &g,
            "a2",
            &access("app_one", uid, "g1"),
            Some(("r2", &refresh("app_one", uid, "g1")))
        )
        .await
        .unwrap()
    );
    assert_eq!(
        s.oidc_grant("g1").await.unwrap().map(|g| g.user_id),
        Some(uid)
    );
    assert_eq!(s.revoke_oidc_grant(&g, now()).await.unwrap(), 4);
    for t in ["a1", "a2"] {
        assert_eq!(s.oidc_access_token(t, now()).await.unwrap(), None);
    }
    for t in ["r1", "r2"] {
        assert_eq!(s.oidc_refresh_token(t, now()).await.unwrap(), None);
    }
    // Nothing more is issued under a revoked grant.
    assert!(
        !s.issue_oidc_tokens(&g, "a3", &access("app_one", uid, "g1"), None)
            .await
            .unwrap()
    );
    assert_eq!(s.oidc_access_token("a3", now()).await.unwrap(), None);
    // RFC 7009: one client cannot revoke another's access token.
    let g2 = grant("g2", "app_one", uid);
    s.issue_oidc_tokens(&g2, "a4", &access("app_one", uid, "g2"), None)
        .await
        .unwrap();
    assert!(!s.revoke_oidc_access_token("a4", "app_two").await.unwrap());
    assert!(s.revoke_oidc_access_token("a4", "app_one").await.unwrap());
    assert_eq!(s.oidc_access_token("a4", now()).await.unwrap(), None);
}

async fn a_reused_code_revokes_its_grant(s: &Store, _url: &str) {
    let uid = user(s, "dave").await;
    s.create_oidc_code("c1", &code(uid, now() + 60_000))
        .await
        .unwrap();
    assert!(matches!(
        s.redeem_oidc_code("c1", now()).await.unwrap(),
        CodeRedemption::Fresh(_)
    ));
    let g = grant("c1", "app_one", uid);
    s.issue_oidc_tokens(
        &g,
        "a1",
        &access("app_one", uid, "c1"),
        Some(("r1", &refresh("app_one", uid, "c1"))),
    )
    .await
    .unwrap();
    assert!(matches!(
        s.redeem_oidc_code("c1", now()).await.unwrap(),
        CodeRedemption::Reused { .. }
    ));
    assert_eq!(s.oidc_access_token("a1", now()).await.unwrap(), None);
    assert_eq!(s.oidc_refresh_token("r1", now()).await.unwrap(), None);

    // A reuse that overtakes the first exchange's issuance still wins.
    s.create_oidc_code("c2", &code(uid, now() + 60_000))
        .await
        .unwrap();
    s.redeem_oidc_code("c2", now()).await.unwrap();
    s.redeem_oidc_code("c2", now()).await.unwrap();
    assert!(
        !s.issue_oidc_tokens(
            &grant("c2", "app_one", uid),
            "a2",
            &access("app_one", uid, "c2"),
            None
        )
        .await
        .unwrap()
    );
}

async fn logout_revokes_what_a_client_holds_for_a_user(s: &Store, _url: &str) {
    let erin = user(s, "erin").await;
    let frank = user(s, "frank").await;
    for (g, client, uid, a, r) in [
        ("g1", "app_one", erin, "a1", "r1"),
        ("g2", "app_one", erin, "a2", "r2"),
        ("g3", "app_two", erin, "a3", "r3"),
        ("g4", "app_one", frank, "a4", "r4"),
    ] {
        s.issue_oidc_tokens(
            &grant(g, client, uid),
            a,
            &access(client, uid, g),
            Some((r, &refresh(client, uid, g))),
        )
        .await
        .unwrap();
    }
    assert_eq!(
        s.revoke_oidc_tokens_of("app_one", erin, now())
            .await
            .unwrap(),
        4
    );
    for (t, alive) in [("a1", false), ("a2", false), ("a3", true), ("a4", true)] {
        assert_eq!(
            s.oidc_access_token(t, now()).await.unwrap().is_some(),
            alive,
            "{t}"
        );
    }
    assert!(
        !s.issue_oidc_tokens(
            &grant("g1", "app_one", erin),
            "a5",
            &access("app_one", erin, "g1"),
            None
        )
        .await
        .unwrap()
    );
}

async fn sessions_record_re_authentication(s: &Store, _url: &str) {
    let uid = user(s, "grace").await;
    s.create_session("sess", uid, now() + 3_600_000)
        .await
        .unwrap();
    let logged_in = s.session_authenticated_at("sess").await.unwrap().unwrap();
    assert!(logged_in <= now());
    s.reauthenticate_session("sess", logged_in + 5_000)
        .await
        .unwrap();
    assert_eq!(
        s.session_authenticated_at("sess").await.unwrap(),
        Some(logged_in + 5_000)
    );
    assert_eq!(s.session_authenticated_at("nope").await.unwrap(), None);
}

async fn retired_keys_are_deleted_after_retention(s: &Store, _url: &str) {
    s.add_oidc_signing_key("k1", "ES256", &Secret::new("00aa"), r#"{"kid":"k1"}"#)
        .await
        .unwrap();
    s.add_oidc_signing_key("k2", "ES256", &Secret::new("00bb"), r#"{"kid":"k2"}"#)
        .await
        .unwrap();
    let retired = s.oidc_signing_keys().await.unwrap()[1].retired_at.unwrap();
    assert!(
        s.delete_retired_oidc_signing_keys(retired)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.delete_retired_oidc_signing_keys(retired + 1)
            .await
            .unwrap(),
        ["k1"]
    );
    let kids: Vec<_> = s
        .oidc_signing_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(kids, ["k2"]);
}
