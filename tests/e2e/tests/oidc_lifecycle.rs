//! The life of an OpenID Connect sign-in after the code, through the real binary, with a
//! relying party written here from the specifications (reqwest + jsonwebtoken):
//! refresh tokens with rotation and replay detection, a reused code revoking what it issued,
//! RFC 7009 revocation, `prompt=none` / `prompt=login` / `max_age` through the API the portal
//! uses, RP-initiated logout, CORS for registered origins, and retired keys leaving the JWKS.

use std::time::Duration;

use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use lotus_e2e::relying_party::{browser, location, query, random, s256};
use lotus_test_harness::node::{LotusNode, NodeOptions};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Map, Value, json};

const PASSWORD: &str = "Open-sesame-2026";
const REDIRECT_URI: &str = "https://parking.city.example/oidc/callback";
const LOGGED_OUT_URI: &str = "https://parking.city.example/goodbye";

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A node with an app registered for sign-in, its users, and the relying party's view of it.
struct Provider {
    node: LotusNode,
    discovery: Value,
    client_id: String,
    secret: String,
}

impl Provider {
    async fn start(options: NodeOptions) -> anyhow::Result<Provider> {
        let mut node = LotusNode::start(options).await?;
        node.login().await?;
        for (name, roles) in [("alice", ["viewer"]), ("bob", ["operator"])] {
            node.expect(
                Method::POST,
                "/api/v1/users",
                Some(
                    json!({"username": name, "password": PASSWORD, "roles": roles,
                    "displayName": format!("{name} of the city")}),
                ),
                201,
            )
            .await?;
        }
        let (client_id, secret) = register_app(&node, "Parking").await?;
        let discovery: Value =
            reqwest::get(format!("{}/.well-known/openid-configuration", node.http))
                .await?
                .json()
                .await?;
        Ok(Provider {
            node,
            discovery,
            client_id,
            secret,
        })
    }

    fn endpoint(&self, name: &str) -> &str {
        self.discovery[name]
            .as_str()
            .unwrap_or_else(|| panic!("discovery has no {name}"))
    }

    fn client(&self) -> (&str, &str) {
        (&self.client_id, &self.secret)
    }

    /// A portal session of `name`.
    async fn login(&self, name: &str) -> anyhow::Result<String> {
        let body: Value = self
            .node
            .client
            .post(format!("{}/api/v1/auth/login", self.node.http))
            .json(&json!({"username": name, "password": PASSWORD}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(body["token"].as_str().unwrap().to_string())
    }

    /// The portal's call: `POST /api/v1/oauth2/authorize` as the logged-in user.
    async fn approve(&self, session: &str, body: &Value) -> anyhow::Result<(StatusCode, Value)> {
        let resp = self
            .node
            .client
            .post(format!("{}/api/v1/oauth2/authorize", self.node.http))
            .bearer_auth(session)
            .json(body)
            .send()
            .await?;
        Ok((resp.status(), resp.json().await.unwrap_or(Value::Null)))
    }

    /// Browser and portal through to the code, then the exchange: (tokens, request).
    async fn sign_in(&self, session: &str, scope: &str) -> anyhow::Result<(Value, Request)> {
        let req = Request::new(&self.client_id, scope);
        let (status, body) = self.approve(session, &req.params()).await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        let back = body["redirect"].as_str().expect("a redirect").to_string();
        let code = query(&back)["code"].as_str().unwrap().to_string();
        let (status, tokens) = self.exchange(self.client(), &req, &code).await?;
        assert_eq!(status, StatusCode::OK, "{tokens}");
        Ok((tokens, req))
    }

    async fn exchange(
        &self,
        client: (&str, &str),
        req: &Request,
        code: &str,
    ) -> anyhow::Result<(StatusCode, Value)> {
        self.token(
            client,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT_URI),
                ("code_verifier", &req.verifier),
            ],
        )
        .await
    }

    async fn token(
        &self,
        client: (&str, &str),
        form: &[(&str, &str)],
    ) -> anyhow::Result<(StatusCode, Value)> {
        let resp = reqwest::Client::new()
            .post(self.endpoint("token_endpoint"))
            .basic_auth(client.0, Some(client.1))
            .form(form)
            .send()
            .await?;
        Ok((resp.status(), resp.json().await?))
    }

    async fn refresh(
        &self,
        client: (&str, &str),
        refresh_token: &str,
        scope: Option<&str>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        self.token(client, &form).await
    }

    async fn userinfo(&self, access_token: &str) -> anyhow::Result<StatusCode> {
        Ok(reqwest::Client::new()
            .get(self.endpoint("userinfo_endpoint"))
            .bearer_auth(access_token)
            .send()
            .await?
            .status())
    }

    async fn revoke(
        &self,
        client: (&str, &str),
        token: &str,
        hint: Option<&str>,
    ) -> anyhow::Result<StatusCode> {
        let mut form = vec![("token", token)];
        if let Some(h) = hint {
            form.push(("token_type_hint", h));
        }
        Ok(reqwest::Client::new()
            .post(self.endpoint("revocation_endpoint"))
            .basic_auth(client.0, Some(client.1))
            .form(&form)
            .send()
            .await?
            .status())
    }

    /// Verifies an ID token against the published keys; its claims.
    async fn verify(&self, id_token: &str) -> anyhow::Result<Map<String, Value>> {
        let jwks: JwkSet = reqwest::get(self.endpoint("jwks_uri"))
            .await?
            .json()
            .await?;
        let kid = jsonwebtoken::decode_header(id_token)?
            .kid
            .expect("the ID token names its key");
        let jwk = jwks.find(&kid).expect("the JWKS publishes the signing key");
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&[self.endpoint("issuer")]);
        v.set_audience(&[&self.client_id]);
        v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        Ok(
            jsonwebtoken::decode::<Map<String, Value>>(id_token, &DecodingKey::from_jwk(jwk)?, &v)?
                .claims,
        )
    }

    async fn audit_actions(&self) -> anyhow::Result<Vec<String>> {
        let audit = self
            .node
            .expect(Method::GET, "/api/v1/audit?limit=1000", None, 200)
            .await?;
        Ok(audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_string())
            .collect())
    }
}

/// Registers an app that viewers may open; (client_id, secret).
async fn register_app(node: &LotusNode, name: &str) -> anyhow::Result<(String, String)> {
    let app = node
        .expect(
            Method::POST,
            "/api/v1/apps",
            Some(json!({
                "name": name, "type": "web", "url": "https://parking.city.example/",
                "redirectUris": [REDIRECT_URI], "openRoles": ["viewer"],
                "postLogoutRedirectUris": [LOGGED_OUT_URI],
            })),
            201,
        )
        .await?;
    assert_eq!(app["postLogoutRedirectUris"], json!([LOGGED_OUT_URI]));
    Ok((
        app["clientId"].as_str().unwrap().to_string(),
        app["secret"].as_str().unwrap().to_string(),
    ))
}

/// One authorization request.
struct Request {
    client_id: String,
    scope: String,
    state: String,
    nonce: String,
    verifier: String,
}

impl Request {
    fn new(client_id: &str, scope: &str) -> Self {
        Request {
            client_id: client_id.into(),
            scope: scope.into(),
            state: random(),
            nonce: random(),
            verifier: random(),
        }
    }

    fn params(&self) -> Value {
        json!({
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": REDIRECT_URI,
            "scope": self.scope,
            "state": self.state,
            "nonce": self.nonce,
            "code_challenge": s256(&self.verifier),
            "code_challenge_method": "S256",
        })
    }

    /// The parameters with more (`prompt`, `max_age`, `password`).
    fn with(&self, more: Value) -> Value {
        let mut p = self.params();
        for (k, v) in more.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("no {key} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_rotate_and_a_replay_revokes_the_sign_in() -> anyhow::Result<()> {
    let p = Provider::start(NodeOptions::default()).await?;
    let d = &p.discovery;
    assert_eq!(
        d["grant_types_supported"],
        json!(["authorization_code", "refresh_token"])
    );
    assert!(
        d["scopes_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("offline_access"))
    );
    let alice = p.login("alice").await?;

    // Without offline_access there is no refresh token.
    let (tokens, _) = p.sign_in(&alice, "openid profile").await?;
    assert!(tokens.get("refresh_token").is_none(), "{tokens}");

    let (first, req) = p.sign_in(&alice, "openid profile offline_access").await?;
    let r1 = str_of(&first, "refresh_token").to_string();
    let first_claims = p.verify(str_of(&first, "id_token")).await?;
    assert_eq!(first_claims["nonce"], req.nonce.as_str());

    // A refresh: new access, ID and refresh tokens; same subject and log-in time, no nonce.
    let (status, second) = p.refresh(p.client(), &r1, None).await?;
    assert_eq!(status, StatusCode::OK, "{second}");
    let r2 = str_of(&second, "refresh_token").to_string();
    assert_ne!(r2, r1);
    assert_ne!(second["access_token"], first["access_token"]);
    assert_eq!(second["scope"], "openid profile offline_access");
    let claims = p.verify(str_of(&second, "id_token")).await?;
    assert_eq!(claims["sub"], first_claims["sub"]);
    assert_eq!(claims["auth_time"], first_claims["auth_time"]);
    assert_eq!(claims["name"], "alice of the city");
    assert!(claims.get("nonce").is_none(), "{claims:?}");
    assert_eq!(
        p.userinfo(str_of(&second, "access_token")).await?,
        StatusCode::OK
    );

    // A wider scope is refused, and the token is not spent by the refusal.
    let (status, body) = p.refresh(p.client(), &r2, Some("openid email")).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_scope", "{body}");
    // Another app cannot use it.
    let (other_id, other_secret) = register_app(&p.node, "Other").await?;
    let (status, body) = p.refresh((&other_id, &other_secret), &r2, None).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant", "{body}");
    // A narrower scope is granted.
    let (status, third) = p
        .refresh(p.client(), &r2, Some("openid offline_access"))
        .await?;
    assert_eq!(status, StatusCode::OK, "{third}");
    assert_eq!(third["scope"], "openid offline_access");
    let claims = p.verify(str_of(&third, "id_token")).await?;
    assert!(claims.get("name").is_none(), "{claims:?}");
    let r3 = str_of(&third, "refresh_token").to_string();

    // The spent r1 comes back (a stolen copy): refused, and the whole sign-in is revoked.
    let (status, body) = p.refresh(p.client(), &r1, None).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant", "{body}");
    let (status, body) = p.refresh(p.client(), &r3, None).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    for t in [&first, &second, &third] {
        assert_eq!(
            p.userinfo(str_of(t, "access_token")).await?,
            StatusCode::UNAUTHORIZED
        );
    }
    // Another sign-in of the same user is not touched.
    assert_eq!(
        p.userinfo(str_of(&tokens, "access_token")).await?,
        StatusCode::OK
    );
    assert!(
        p.audit_actions()
            .await?
            .contains(&"oidc.revoke".to_string())
    );

    // A locked user's refresh token no longer works.
    let bob_session = {
        // Bob may not open "Parking"; give the viewers' app to operators for this part.
        p.node
            .expect(
                Method::PATCH,
                &format!("/api/v1/apps/{}", p.client_id),
                Some(json!({"openRoles": ["viewer", "operator"]})),
                200,
            )
            .await?;
        p.login("bob").await?
    };
    let (bob_tokens, _) = p.sign_in(&bob_session, "openid offline_access").await?;
    for _ in 0..5 {
        let resp = p
            .node
            .client
            .post(format!("{}/api/v1/auth/login", p.node.http))
            .json(&json!({"username": "bob", "password": "wrong"}))
            .send()
            .await?;
        assert!(resp.status().is_client_error());
    }
    let (status, body) = p
        .refresh(p.client(), str_of(&bob_tokens, "refresh_token"), None)
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    assert!(
        str_of(&body, "error_description").contains("locked"),
        "{body}"
    );

    // An offline app refreshes nothing.
    let (alice_tokens, _) = p.sign_in(&alice, "openid offline_access").await?;
    p.node
        .expect(
            Method::PATCH,
            &format!("/api/v1/apps/{}", p.client_id),
            Some(json!({"status": "offline"})),
            200,
        )
        .await?;
    let (status, body) = p
        .refresh(p.client(), str_of(&alice_tokens, "refresh_token"), None)
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "unauthorized_client");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_code_revokes_the_tokens_issued_from_it() -> anyhow::Result<()> {
    let p = Provider::start(NodeOptions::default()).await?;
    let alice = p.login("alice").await?;
    let req = Request::new(&p.client_id, "openid offline_access");
    let (_, body) = p.approve(&alice, &req.params()).await?;
    let code = query(str_of(&body, "redirect"))["code"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, tokens) = p.exchange(p.client(), &req, &code).await?;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let access = str_of(&tokens, "access_token");
    assert_eq!(p.userinfo(access).await?, StatusCode::OK);

    // The code again (an attacker who intercepted it, or a confused client).
    let (status, body) = p.exchange(p.client(), &req, &code).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant", "{body}");
    assert!(
        str_of(&body, "error_description").contains("revoked"),
        "{body}"
    );
    assert_eq!(p.userinfo(access).await?, StatusCode::UNAUTHORIZED);
    let (status, body) = p
        .refresh(p.client(), str_of(&tokens, "refresh_token"), None)
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant", "{body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revocation_endpoint_revokes_tokens_of_the_calling_app() -> anyhow::Result<()> {
    let p = Provider::start(NodeOptions::default()).await?;
    assert_eq!(
        p.endpoint("revocation_endpoint"),
        format!("{}/oauth2/revoke", p.node.http)
    );
    let alice = p.login("alice").await?;
    let (a, _) = p.sign_in(&alice, "openid offline_access").await?;
    let (b, _) = p.sign_in(&alice, "openid offline_access").await?;

    // An access token: that token only.
    assert_eq!(
        p.revoke(p.client(), str_of(&a, "access_token"), Some("access_token"))
            .await?,
        StatusCode::OK
    );
    assert_eq!(
        p.userinfo(str_of(&a, "access_token")).await?,
        StatusCode::UNAUTHORIZED
    );
    let (status, refreshed) = p
        .refresh(p.client(), str_of(&a, "refresh_token"), None)
        .await?;
    assert_eq!(status, StatusCode::OK, "{refreshed}");

    // Another app's revocation of b's tokens changes nothing (and says nothing).
    let (other_id, other_secret) = register_app(&p.node, "Other").await?;
    let other = (other_id.as_str(), other_secret.as_str());
    for t in ["access_token", "refresh_token"] {
        assert_eq!(p.revoke(other, str_of(&b, t), None).await?, StatusCode::OK);
    }
    assert_eq!(
        p.userinfo(str_of(&b, "access_token")).await?,
        StatusCode::OK
    );

    // A refresh token (no hint): its whole sign-in.
    assert_eq!(
        p.revoke(p.client(), str_of(&b, "refresh_token"), None)
            .await?,
        StatusCode::OK
    );
    assert_eq!(
        p.userinfo(str_of(&b, "access_token")).await?,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = p
        .refresh(p.client(), str_of(&b, "refresh_token"), None)
        .await?;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_grant"))
    );
    // The other sign-in lives on.
    assert_eq!(
        p.userinfo(str_of(&refreshed, "access_token")).await?,
        StatusCode::OK
    );

    // Unknown tokens and repeated revocations are fine; no client authentication is not.
    assert_eq!(
        p.revoke(p.client(), "no-such-token", None).await?,
        StatusCode::OK
    );
    assert_eq!(
        p.revoke(
            p.client(),
            str_of(&b, "refresh_token"),
            Some("refresh_token")
        )
        .await?,
        StatusCode::OK
    );
    let resp = reqwest::Client::new()
        .post(p.endpoint("revocation_endpoint"))
        .form(&[("token", str_of(&refreshed, "access_token"))])
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json::<Value>().await?["error"], "invalid_client");
    assert_eq!(
        p.revoke(
            (&p.client_id, "wrong"),
            str_of(&refreshed, "access_token"),
            None
        )
        .await?,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        p.userinfo(str_of(&refreshed, "access_token")).await?,
        StatusCode::OK
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_none_and_re_authentication_for_prompt_login_and_max_age() -> anyhow::Result<()> {
    let p = Provider::start(NodeOptions::default()).await?;
    assert_eq!(p.discovery["prompt_values_supported"][0], "none");
    let req = Request::new(&p.client_id, "openid");

    // prompt=none: the browser still goes to the portal, which holds the session (if any).
    let mut url = Url::parse(p.endpoint("authorization_endpoint"))?;
    for (k, v) in req.with(json!({"prompt": "none"})).as_object().unwrap() {
        url.query_pairs_mut().append_pair(k, v.as_str().unwrap());
    }
    let resp = browser().get(url.clone()).send().await?;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(
        location(&resp),
        format!("/authorize?{}", url.query().unwrap())
    );
    // The portal has nobody logged in: back to the app with login_required, no page.
    let resp = p
        .node
        .client
        .post(format!(
            "{}/api/v1/oauth2/authorize/login-required",
            p.node.http
        ))
        .json(&req.with(json!({"prompt": "none"})))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let back: Value = resp.json().await?;
    let q = query(str_of(&back, "redirect"));
    assert!(str_of(&back, "redirect").starts_with(REDIRECT_URI));
    assert_eq!(q["error"], "login_required");
    assert_eq!(q["state"], req.state.as_str());
    assert!(q.get("code").is_none());
    // Only prompt=none is answered without a log-in.
    let resp = p
        .node
        .client
        .post(format!(
            "{}/api/v1/oauth2/authorize/login-required",
            p.node.http
        ))
        .json(&req.params())
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    let login_started = now_secs();
    let alice = p.login("alice").await?;
    let bob = p.login("bob").await?;
    // prompt=none with a session: a code without a page.
    let (status, body) = p
        .approve(&alice, &req.with(json!({"prompt": "none"})))
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(query(str_of(&body, "redirect")).contains_key("code"));
    // prompt=none for a user the policy refuses: access_denied to the app, not a 403 page.
    let (status, body) = p
        .approve(&bob, &req.with(json!({"prompt": "none"})))
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(query(str_of(&body, "redirect"))["error"], "access_denied");
    // Nonsense prompts go back to the app.
    for bad in [
        json!({"prompt": "none login"}),
        json!({"prompt": "later"}),
        json!({"max_age": "soon"}),
    ] {
        let (status, body) = p.approve(&alice, &req.with(bad)).await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(query(str_of(&body, "redirect"))["error"], "invalid_request");
    }

    // prompt=login: the password first, however fresh the session.
    let (status, body) = p
        .approve(&alice, &req.with(json!({"prompt": "login"})))
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["reauthenticate"], "login");
    assert!(body.get("redirect").is_none(), "{body}");
    let (status, body) = p
        .approve(
            &alice,
            &req.with(json!({"prompt": "login", "password": "wrong"})),
        )
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(str_of(&body, "detail").contains("password"), "{body}");
    // The wrong password did not end the portal session.
    p.node
        .client
        .get(format!("{}/api/v1/me", p.node.http))
        .bearer_auth(&alice)
        .send()
        .await?
        .error_for_status()?;

    // max_age: a log-in older than it asks for the password again.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let (status, body) = p
        .approve(&alice, &req.with(json!({"max_age": "1"})))
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["reauthenticate"], "max_age");
    // ... and with prompt=none, login_required goes back to the app.
    let (_, body) = p
        .approve(&alice, &req.with(json!({"max_age": 1, "prompt": "none"})))
        .await?;
    assert_eq!(query(str_of(&body, "redirect"))["error"], "login_required");

    let reauthenticated = now_secs();
    let (status, body) = p
        .approve(
            &alice,
            &req.with(json!({"max_age": "1", "password": PASSWORD})),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let code = query(str_of(&body, "redirect"))["code"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, tokens) = p.exchange(p.client(), &req, &code).await?;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let claims = p.verify(str_of(&tokens, "id_token")).await?;
    let auth_time = claims["auth_time"].as_i64().unwrap();
    assert!(
        auth_time >= reauthenticated && auth_time > login_started,
        "auth_time {auth_time} is the re-authentication ({reauthenticated}), not the log-in ({login_started})"
    );
    // The session's log-in time is now the re-authentication: a generous max_age passes.
    let (status, body) = p
        .approve(&alice, &req.with(json!({"max_age": "60"})))
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        query(str_of(&body, "redirect")).contains_key("code"),
        "{body}"
    );
    assert!(
        p.audit_actions()
            .await?
            .contains(&"auth.reauthenticate".to_string())
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rp_initiated_logout_revokes_tokens_and_ends_the_portal_session() -> anyhow::Result<()> {
    let p = Provider::start(NodeOptions::default()).await?;
    let end_session = p.endpoint("end_session_endpoint").to_string();
    assert_eq!(end_session, format!("{}/oauth2/logout", p.node.http));
    let alice = p.login("alice").await?;
    let (tokens, _) = p.sign_in(&alice, "openid offline_access").await?;
    let id_token = str_of(&tokens, "id_token");
    let logout_url = |params: &[(&str, &str)]| {
        let mut url = Url::parse(&end_session).unwrap();
        url.query_pairs_mut().extend_pairs(params);
        url
    };

    // Refused with a page, never a redirect: an unregistered post-logout URI, no hint, a
    // forged hint.
    // Bob's subject in Alice's token, with Alice's signature.
    let forged = {
        let parts: Vec<&str> = id_token.split('.').collect();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims: Value = serde_json::from_slice(&b64.decode(parts[1])?)?;
        claims["sub"] = json!("1");
        format!(
            "{}.{}.{}",
            parts[0],
            b64.encode(claims.to_string()),
            parts[2]
        )
    };
    for params in [
        vec![
            ("id_token_hint", id_token),
            ("post_logout_redirect_uri", "https://evil.example/"),
        ],
        vec![("post_logout_redirect_uri", LOGGED_OUT_URI)],
        vec![
            ("id_token_hint", forged.as_str()),
            ("post_logout_redirect_uri", LOGGED_OUT_URI),
        ],
        vec![
            ("id_token_hint", id_token),
            ("client_id", "app_someone_else"),
        ],
    ] {
        let resp = browser()
            .get(logout_url(&params))
            .header(reqwest::header::ACCEPT, "text/html")
            .send()
            .await?;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{params:?}");
        assert!(resp.headers().get(reqwest::header::LOCATION).is_none());
        assert!(resp.text().await?.contains("data-test=\"oidc-error\""));
    }
    assert_eq!(
        p.userinfo(str_of(&tokens, "access_token")).await?,
        StatusCode::OK
    );

    // The logout: tokens revoked, then the portal's page to end its session.
    let state = random();
    let params = [
        ("id_token_hint", id_token),
        ("post_logout_redirect_uri", LOGGED_OUT_URI),
        ("state", state.as_str()),
        ("client_id", p.client_id.as_str()),
    ];
    let url = logout_url(&params);
    let resp = browser().get(url.clone()).send().await?;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(
        location(&resp),
        format!("/logout-complete?{}", url.query().unwrap())
    );
    assert_eq!(
        p.userinfo(str_of(&tokens, "access_token")).await?,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = p
        .refresh(p.client(), str_of(&tokens, "refresh_token"), None)
        .await?;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_grant"))
    );
    assert!(
        p.audit_actions()
            .await?
            .contains(&"oidc.logout".to_string())
    );

    // The portal's page: another user's session is left alone, Alice's ends.
    let body: Value = params
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect::<Map<_, _>>()
        .into();
    let end = |session: Option<String>| {
        let mut r = p
            .node
            .client
            .post(format!("{}/api/v1/oauth2/end-session", p.node.http))
            .json(&body);
        if let Some(s) = session {
            r = r.bearer_auth(s);
        }
        r.send()
    };
    let bob = p.login("bob").await?;
    let answer: Value = end(Some(bob.clone()))
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(answer["sessionEnded"], false);
    let answer: Value = end(Some(alice.clone()))
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(answer["sessionEnded"], true);
    let redirect = str_of(&answer, "redirect");
    assert!(redirect.starts_with(LOGGED_OUT_URI), "{redirect}");
    assert_eq!(query(redirect)["state"], state.as_str());
    let me = |s: &str| {
        p.node
            .client
            .get(format!("{}/api/v1/me", p.node.http))
            .bearer_auth(s.to_string())
            .send()
    };
    assert_eq!(me(&alice).await?.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(me(&bob).await?.status(), StatusCode::OK);
    // Without a portal session, the page only learns where to go.
    let answer: Value = end(None).await?.error_for_status()?.json().await?;
    assert_eq!(answer["sessionEnded"], false);
    assert!(str_of(&answer, "redirect").starts_with(LOGGED_OUT_URI));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_registered_origins_only() -> anyhow::Result<()> {
    let p = Provider::start(NodeOptions::default()).await?;
    let app_origin = "https://parking.city.example";
    let acao = |resp: &reqwest::Response| {
        resp.headers()
            .get(reqwest::header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .map(|v| v.to_str().unwrap().to_string())
    };
    for endpoint in [
        "token_endpoint",
        "userinfo_endpoint",
        "revocation_endpoint",
        "jwks_uri",
    ] {
        let preflight = |origin: &str| {
            reqwest::Client::new()
                .request(Method::OPTIONS, p.endpoint(endpoint))
                .header(reqwest::header::ORIGIN, origin)
                .header("Access-Control-Request-Method", "POST")
                .header("Access-Control-Request-Headers", "authorization")
                .send()
        };
        let resp = preflight(app_origin).await?;
        assert!(resp.status().is_success(), "{endpoint}: {}", resp.status());
        assert_eq!(acao(&resp).as_deref(), Some(app_origin), "{endpoint}");
        let methods = resp
            .headers()
            .get(reqwest::header::ACCESS_CONTROL_ALLOW_METHODS)
            .unwrap()
            .to_str()?;
        assert!(methods.contains("POST"), "{methods}");
        let headers = resp
            .headers()
            .get(reqwest::header::ACCESS_CONTROL_ALLOW_HEADERS)
            .unwrap()
            .to_str()?
            .to_lowercase();
        assert!(headers.contains("authorization"), "{headers}");
        let resp = preflight("https://evil.example").await?;
        assert_eq!(acao(&resp), None, "{endpoint}");
    }
    for (origin, expected) in [
        (app_origin, Some(app_origin)),
        ("https://evil.example", None),
        ("https://parking.city.example:8443", None),
    ] {
        let resp = reqwest::Client::new()
            .get(p.endpoint("issuer").to_string() + "/.well-known/openid-configuration")
            .header(reqwest::header::ORIGIN, origin)
            .send()
            .await?;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(acao(&resp).as_deref(), expected, "{origin}");
        let vary = resp
            .headers()
            .get(reqwest::header::VARY)
            .unwrap()
            .to_str()?;
        assert!(vary.contains("Origin"), "{vary}");
    }
    // The actual call, as a browser app's backend-for-frontend makes it.
    let alice = p.login("alice").await?;
    let (tokens, _) = p.sign_in(&alice, "openid").await?;
    let resp = reqwest::Client::new()
        .get(p.endpoint("userinfo_endpoint"))
        .header(reqwest::header::ORIGIN, app_origin)
        .bearer_auth(str_of(&tokens, "access_token"))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(acao(&resp).as_deref(), Some(app_origin));
    // The portal's own API is not opened up.
    let resp = reqwest::Client::new()
        .request(
            Method::OPTIONS,
            format!("{}/api/v1/oauth2/authorize", p.node.http),
        )
        .header(reqwest::header::ORIGIN, app_origin)
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await?;
    assert_eq!(acao(&resp), None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retired_keys_leave_the_jwks_after_the_retention() -> anyhow::Result<()> {
    let p = Provider::start(NodeOptions {
        // Seconds instead of the default day and an hour, so the test can wait for it.
        extra_env: vec![("LOTUS_AUTH__OIDC_KEY_RETENTION_SECS".into(), "3".into())],
        ..Default::default()
    })
    .await?;
    let kids = || async {
        let jwks: JwkSet = reqwest::get(p.endpoint("jwks_uri")).await?.json().await?;
        anyhow::Ok(
            jwks.keys
                .iter()
                .map(|k| k.common.key_id.clone().unwrap())
                .collect::<Vec<_>>(),
        )
    };
    let first = kids().await?;
    assert_eq!(first.len(), 1);
    let alice = p.login("alice").await?;
    let (tokens, _) = p.sign_in(&alice, "openid").await?;
    let rotated = p
        .node
        .expect(Method::POST, "/api/v1/oauth2/keys/rotate", None, 200)
        .await?;
    let second = str_of(&rotated, "kid").to_string();
    // Right after the rotation both are published: the old key's tokens still verify.
    assert_eq!(kids().await?, vec![second.clone(), first[0].clone()]);
    p.verify(str_of(&tokens, "id_token")).await?;
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert_eq!(kids().await?, vec![second.clone()]);
    // Gone from the database too: it does not come back, and the new key still signs.
    assert_eq!(kids().await?, vec![second.clone()]);
    let (tokens, _) = p.sign_in(&alice, "openid").await?;
    assert_eq!(
        jsonwebtoken::decode_header(str_of(&tokens, "id_token"))?.kid,
        Some(second)
    );
    Ok(())
}
