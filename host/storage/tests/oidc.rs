//! OpenID Connect state against both back ends: signing keys and their rotation, single-use
//! authorization codes and log-in states, access tokens.

use lotus_model::scope::Scope;
use lotus_storage::{OidcAccessToken, OidcCode, OidcLoginState, Secret, Store};
use sqlx::Row;

#[macro_use]
mod backends;

on_both_backends!(
    signing_keys_rotate_and_stay_published,
    codes_are_single_use_and_expire,
    login_states_are_single_use_and_sealed,
    access_tokens_expire
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
    assert_eq!(s.take_oidc_code("h1", now()).await.unwrap(), Some(c));
    assert_eq!(s.take_oidc_code("h1", now()).await.unwrap(), None);
    // An expired code is gone too, not merely refused.
    s.create_oidc_code("h2", &code(uid, now() + 1_000))
        .await
        .unwrap();
    assert_eq!(s.take_oidc_code("h2", now() + 2_000).await.unwrap(), None);
    assert_eq!(s.take_oidc_code("h2", now()).await.unwrap(), None);
    // A code of an unknown user cannot be stored.
    assert!(
        s.create_oidc_code("h3", &code(uid + 100, now() + 60_000))
            .await
            .is_err()
    );
    assert_eq!(
        s.username_of_user(uid).await.unwrap().as_deref(),
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

async fn access_tokens_expire(s: &Store, _url: &str) {
    let uid = user(s, "bob").await;
    let t = OidcAccessToken {
        client_id: "app_one".into(),
        user_id: uid,
        scope: "openid".into(),
        expires_at: now() + 3_600_000,
    };
    s.create_oidc_access_token("t1", &t).await.unwrap();
    assert_eq!(
        s.oidc_access_token("t1", now()).await.unwrap(),
        Some(t.clone())
    );
    assert_eq!(s.oidc_access_token("t1", t.expires_at).await.unwrap(), None);
    assert_eq!(s.oidc_access_token("nope", now()).await.unwrap(), None);
}
