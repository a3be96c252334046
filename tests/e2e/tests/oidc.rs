//! OpenID Connect through the real binary, both ways:
//! - a relying party written here (reqwest + jsonwebtoken, from the specifications) signs a
//!   user in with a Lotus node: discovery, authorization code + PKCE S256, token, ID token
//!   verified against the JWKS, userinfo; and the refusals (wrong verifier, reused code,
//!   unregistered redirect URI, a user whose role may not open the app);
//! - one Lotus node logs its operators in through another Lotus node as the city's provider.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use lotus_e2e::relying_party::{browser, location, query, random, s256};
use lotus_test_harness::node::{LotusNode, NodeOptions};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Map, Value, json};

const PASSWORD: &str = "Open-sesame-2026";

async fn create_user(node: &LotusNode, name: &str, roles: &[&str]) -> anyhow::Result<()> {
    node.expect(
        Method::POST,
        "/api/v1/users",
        Some(
            json!({"username": name, "password": PASSWORD, "roles": roles,
            "displayName": format!("{name} of the city"), "email": format!("{name}@city.example")}),
        ),
        201,
    )
    .await?;
    Ok(())
}

/// A session token of `name` on `node`.
async fn login(node: &LotusNode, name: &str) -> anyhow::Result<String> {
    let body: Value = node
        .client
        .post(format!("{}/api/v1/auth/login", node.http))
        .json(&json!({"username": name, "password": PASSWORD}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(body["token"].as_str().unwrap().to_string())
}

/// Registers an app; returns (client_id, secret).
async fn register_app(
    node: &LotusNode,
    name: &str,
    redirect_uris: &[&str],
    open_roles: &[&str],
) -> anyhow::Result<(String, String)> {
    let app = node
        .expect(
            Method::POST,
            "/api/v1/apps",
            Some(json!({
                "name": name, "type": "web", "url": "https://parking.city.example/",
                "vendor": "Hangzhou Parking Co.", "description": "Street parking",
                "redirectUris": redirect_uris, "openRoles": open_roles,
            })),
            201,
        )
        .await?;
    Ok((
        app["clientId"].as_str().unwrap().to_string(),
        app["secret"].as_str().unwrap().to_string(),
    ))
}

/// One authorization request as the app sends the browser with it.
struct Request {
    client_id: String,
    redirect_uri: String,
    state: String,
    nonce: String,
    verifier: String,
}

impl Request {
    fn new(client_id: &str, redirect_uri: &str) -> Self {
        Request {
            client_id: client_id.into(),
            redirect_uri: redirect_uri.into(),
            state: random(),
            nonce: random(),
            verifier: random(),
        }
    }

    fn params(&self) -> Value {
        json!({
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": "openid profile email",
            "state": self.state,
            "nonce": self.nonce,
            "code_challenge": s256(&self.verifier),
            "code_challenge_method": "S256",
        })
    }

    fn url(&self, authorization_endpoint: &str) -> Url {
        let mut url = Url::parse(authorization_endpoint).unwrap();
        for (k, v) in self.params().as_object().unwrap() {
            url.query_pairs_mut().append_pair(k, v.as_str().unwrap());
        }
        url
    }
}

/// The portal's part: `POST /api/v1/oauth2/authorize` as the logged-in user.
async fn approve(
    node: &LotusNode,
    user_token: &str,
    params: &Value,
) -> anyhow::Result<(StatusCode, Value)> {
    let resp = node
        .client
        .post(format!("{}/api/v1/oauth2/authorize", node.http))
        .bearer_auth(user_token)
        .json(params)
        .send()
        .await?;
    Ok((resp.status(), resp.json().await.unwrap_or(Value::Null)))
}

/// Browser and portal through to the code: GET the authorization endpoint (it must send the
/// browser to the portal's /authorize page with the same parameters), then approve.
async fn authorize(
    node: &LotusNode,
    discovery: &Value,
    user_token: &str,
    req: &Request,
) -> anyhow::Result<String> {
    let url = req.url(discovery["authorization_endpoint"].as_str().unwrap());
    let resp = browser().get(url.clone()).send().await?;
    assert_eq!(resp.status(), StatusCode::FOUND);
    let to = location(&resp);
    assert_eq!(to, format!("/authorize?{}", url.query().unwrap()));
    let (status, body) = approve(node, user_token, &req.params()).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let back = Url::parse(body["redirect"].as_str().unwrap())?;
    assert!(
        back.as_str().starts_with(&req.redirect_uri),
        "{back} is not {}",
        req.redirect_uri
    );
    let q = query(back.as_str());
    assert_eq!(q["state"], req.state.as_str());
    assert_eq!(q["iss"], discovery["issuer"]);
    Ok(q["code"].as_str().unwrap().to_string())
}

async fn token(
    discovery: &Value,
    client: (&str, &str),
    form: &[(&str, &str)],
) -> anyhow::Result<(StatusCode, Value)> {
    let resp = reqwest::Client::new()
        .post(discovery["token_endpoint"].as_str().unwrap())
        .basic_auth(client.0, Some(client.1))
        .form(form)
        .send()
        .await?;
    let status = resp.status();
    if status == StatusCode::OK {
        assert_eq!(
            resp.headers().get(reqwest::header::CACHE_CONTROL).unwrap(),
            "no-store"
        );
    }
    Ok((status, resp.json().await?))
}

/// Verifies an ID token against the provider's published keys.
async fn verify_id_token(
    discovery: &Value,
    client_id: &str,
    id_token: &str,
) -> anyhow::Result<(String, Map<String, Value>)> {
    let jwks: JwkSet = reqwest::get(discovery["jwks_uri"].as_str().unwrap())
        .await?
        .json()
        .await?;
    let header = jsonwebtoken::decode_header(id_token)?;
    assert_eq!(header.alg, Algorithm::ES256);
    let kid = header.kid.expect("the ID token names its key");
    let jwk = jwks.find(&kid).expect("the JWKS publishes the signing key");
    let mut v = Validation::new(Algorithm::ES256);
    v.set_issuer(&[discovery["issuer"].as_str().unwrap()]);
    v.set_audience(&[client_id]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let data =
        jsonwebtoken::decode::<Map<String, Value>>(id_token, &DecodingKey::from_jwk(jwk)?, &v)?;
    Ok((kid, data.claims))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_signs_a_user_in_with_authorization_code_and_pkce() -> anyhow::Result<()> {
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    node.login().await?;
    create_user(&node, "alice", &["viewer"]).await?;
    create_user(&node, "bob", &["operator"]).await?;
    let redirect_uri = "https://parking.city.example/oidc/callback";
    let (client_id, secret) = register_app(&node, "Parking", &[redirect_uri], &["viewer"]).await?;
    let client = (client_id.as_str(), secret.as_str());
    let alice = login(&node, "alice").await?;
    let bob = login(&node, "bob").await?;

    // Discovery: the issuer is the node's URL, and every endpoint lives under it.
    let discovery: Value = reqwest::get(format!("{}/.well-known/openid-configuration", node.http))
        .await?
        .json()
        .await?;
    assert_eq!(discovery["issuer"], node.http.as_str());
    for (key, path) in [
        ("authorization_endpoint", "/oauth2/authorize"),
        ("token_endpoint", "/oauth2/token"),
        ("userinfo_endpoint", "/oauth2/userinfo"),
        ("jwks_uri", "/oauth2/jwks"),
    ] {
        assert_eq!(discovery[key], format!("{}{path}", node.http));
    }
    assert_eq!(
        discovery["code_challenge_methods_supported"],
        json!(["S256"])
    );

    // The whole flow.
    let req = Request::new(&client_id, redirect_uri);
    let code = authorize(&node, &discovery, &alice, &req).await?;
    let (status, tokens) = token(
        &discovery,
        client,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", &req.verifier),
        ],
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert!(tokens["expires_in"].as_i64().unwrap() > 0);
    let (kid, claims) =
        verify_id_token(&discovery, &client_id, tokens["id_token"].as_str().unwrap()).await?;
    assert_eq!(claims["nonce"], req.nonce.as_str());
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(claims["name"], "alice of the city");
    assert_eq!(claims["email"], "alice@city.example");
    assert_eq!(claims["roles"], json!(["viewer"]));
    assert!(claims["auth_time"].as_i64().unwrap() <= claims["iat"].as_i64().unwrap());

    let info: Value = reqwest::Client::new()
        .get(discovery["userinfo_endpoint"].as_str().unwrap())
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(info["sub"], claims["sub"]);
    assert_eq!(info["preferred_username"], "alice");
    assert_eq!(info["email"], "alice@city.example");
    let bad = reqwest::Client::new()
        .get(discovery["userinfo_endpoint"].as_str().unwrap())
        .bearer_auth("not-a-token")
        .send()
        .await?;
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);

    // The code was used: a second exchange (here with client_secret_post) is refused.
    let resp = reqwest::Client::new()
        .post(discovery["token_endpoint"].as_str().unwrap())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect_uri),
            ("code_verifier", req.verifier.as_str()),
            ("client_id", client_id.as_str()),
            ("client_secret", secret.as_str()),
        ])
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.json::<Value>().await?["error"], "invalid_grant");

    // A wrong verifier is refused and burns the code: the right one no longer helps.
    let req = Request::new(&client_id, redirect_uri);
    let code = authorize(&node, &discovery, &alice, &req).await?;
    let wrong = random();
    for verifier in [wrong.as_str(), req.verifier.as_str()] {
        let (status, body) = token(
            &discovery,
            client,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", verifier),
            ],
        )
        .await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"], "invalid_grant", "{body}");
    }

    // A wrong client secret.
    let req = Request::new(&client_id, redirect_uri);
    let code = authorize(&node, &discovery, &alice, &req).await?;
    let (status, body) = token(
        &discovery,
        (&client_id, "not-the-secret"),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", &req.verifier),
        ],
    )
    .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");

    // An unregistered redirect URI: an error for the user, never a redirect to it.
    let evil = Request::new(&client_id, "https://evil.example/cb");
    let resp = browser()
        .get(evil.url(discovery["authorization_endpoint"].as_str().unwrap()))
        .header(reqwest::header::ACCEPT, "text/html")
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.headers().get(reqwest::header::LOCATION).is_none());
    assert!(resp.text().await?.contains("is not registered for app"));
    let (status, body) = approve(&node, &alice, &evil.params()).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.get("redirect").is_none(), "{body}");

    // PKCE plain goes back to the app as an error.
    let mut plain = Request::new(&client_id, redirect_uri)
        .url(discovery["authorization_endpoint"].as_str().unwrap());
    let pairs: Vec<(String, String)> = plain
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "code_challenge_method" {
                "plain".into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    plain.query_pairs_mut().clear().extend_pairs(pairs);
    let resp = browser().get(plain).send().await?;
    assert_eq!(resp.status(), StatusCode::FOUND);
    let back = Url::parse(&location(&resp))?;
    assert!(back.as_str().starts_with(redirect_uri));
    assert_eq!(query(back.as_str())["error"], "invalid_request");

    // Bob's role may not open the app: the policy's reason, and no code.
    let (status, body) = approve(
        &node,
        &bob,
        &Request::new(&client_id, redirect_uri).params(),
    )
    .await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("app.open") && detail.contains("viewer"),
        "{detail}"
    );

    // The app center shows the app to Alice only.
    let mine = |token: &str| {
        node.client
            .get(format!("{}/api/v1/me/apps", node.http))
            .bearer_auth(token.to_string())
            .send()
    };
    let alice_apps: Value = mine(&alice).await?.error_for_status()?.json().await?;
    assert_eq!(
        alice_apps[0]["clientId"],
        client_id.as_str(),
        "{alice_apps}"
    );
    assert_eq!(alice_apps[0]["url"], "https://parking.city.example/");
    let bob_apps: Value = mine(&bob).await?.error_for_status()?.json().await?;
    assert_eq!(bob_apps, json!([]));

    // An offline app signs nobody in.
    node.expect(
        Method::PATCH,
        &format!("/api/v1/apps/{client_id}"),
        Some(json!({"status": "offline"})),
        200,
    )
    .await?;
    let resp = browser()
        .get(
            Request::new(&client_id, redirect_uri)
                .url(discovery["authorization_endpoint"].as_str().unwrap()),
        )
        .send()
        .await?;
    let back = Url::parse(&location(&resp))?;
    assert_eq!(query(back.as_str())["error"], "access_denied");
    node.expect(
        Method::PATCH,
        &format!("/api/v1/apps/{client_id}"),
        Some(json!({"status": "online"})),
        200,
    )
    .await?;

    // Key rotation: new tokens carry the new key, the old one stays published.
    let rotated = node
        .expect(Method::POST, "/api/v1/oauth2/keys/rotate", None, 200)
        .await?;
    let new_kid = rotated["kid"].as_str().unwrap();
    assert_ne!(new_kid, kid);
    let jwks: Value = reqwest::get(discovery["jwks_uri"].as_str().unwrap())
        .await?
        .json()
        .await?;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [new_kid, kid.as_str()]);
    let req = Request::new(&client_id, redirect_uri);
    let code = authorize(&node, &discovery, &alice, &req).await?;
    let (_, tokens) = token(
        &discovery,
        client,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", &req.verifier),
        ],
    )
    .await?;
    let (signed_by, _) =
        verify_id_token(&discovery, &client_id, tokens["id_token"].as_str().unwrap()).await?;
    assert_eq!(signed_by, new_kid);

    // The audit log has the grants, the refusal and the tokens.
    let audit = node
        .expect(Method::GET, "/api/v1/audit?limit=1000", None, 200)
        .await?;
    let entries = audit["items"].as_array().unwrap();
    let seen = |action: &str, outcome: &str| {
        entries
            .iter()
            .any(|e| e["action"] == action && e["outcome"] == outcome)
    };
    assert!(seen("oidc.authorize", "ok"));
    assert!(seen("oidc.authorize", "denied"));
    assert!(seen("oidc.token", "ok"));
    assert!(seen("oidc.token", "failed"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_logs_its_operators_in_through_another_node() -> anyhow::Result<()> {
    // Node A is the city's identity provider.
    let mut a = LotusNode::start(NodeOptions::default()).await?;
    a.login().await?;
    create_user(&a, "carol", &["viewer"]).await?;
    create_user(&a, "dave", &["viewer"]).await?;
    let (client_id, secret) = register_app(
        &a,
        "Lotus district node",
        &["http://placeholder.invalid/cb"],
        &["viewer"],
    )
    .await?;

    // Node B relies on it; Carol has an account on B, Dave has none.
    let mut b = LotusNode::start(NodeOptions {
        extra_env: vec![
            ("LOTUS_AUTH__OIDC__ISSUER".into(), a.http.clone()),
            ("LOTUS_AUTH__OIDC__CLIENT_ID".into(), client_id.clone()),
            ("LOTUS_AUTH__OIDC__CLIENT_SECRET".into(), secret.clone()),
            ("LOTUS_AUTH__OIDC__LABEL".into(), "City account".into()),
        ],
        ..NodeOptions::default()
    })
    .await?;
    b.login().await?;
    create_user(&b, "carol", &["operator"]).await?;
    let callback = format!("{}/api/v1/auth/oidc/callback", b.http);
    a.expect(
        Method::PATCH,
        &format!("/api/v1/apps/{client_id}"),
        Some(json!({"redirectUris": [callback]})),
        200,
    )
    .await?;
    let shown: Value = reqwest::get(format!("{}/api/v1/auth/oidc", b.http))
        .await?
        .json()
        .await?;
    assert_eq!(shown["enabled"], true);
    assert_eq!(shown["label"], "City account");

    // start on B → A's authorization endpoint → A's portal approves as the user → B's callback.
    let through_a = async |user: &str| -> anyhow::Result<reqwest::Response> {
        let resp = browser()
            .get(format!(
                "{}/api/v1/auth/oidc/start?redirect=/devices",
                b.http
            ))
            .send()
            .await?;
        assert_eq!(resp.status(), StatusCode::FOUND);
        let at_a = Url::parse(&location(&resp))?;
        assert!(
            at_a.as_str()
                .starts_with(&format!("{}/oauth2/authorize?", a.http))
        );
        let params = query(at_a.as_str());
        assert_eq!(params["code_challenge_method"], "S256");
        assert_eq!(params["redirect_uri"], callback.as_str());
        assert!(params.contains_key("nonce") && params.contains_key("state"));
        let resp = browser().get(at_a.clone()).send().await?;
        assert_eq!(
            location(&resp),
            format!("/authorize?{}", at_a.query().unwrap())
        );
        let token = login(&a, user).await?;
        let (status, body) = approve(&a, &token, &Value::Object(params)).await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        Ok(browser()
            .get(body["redirect"].as_str().unwrap())
            .send()
            .await?)
    };

    let resp = through_a("carol").await?;
    assert_eq!(resp.status(), StatusCode::FOUND);
    let to = location(&resp);
    let fragment = to
        .strip_prefix("/login#")
        .expect("back to the portal's log-in page");
    let session = query(&format!("http://portal/?{fragment}"));
    assert_eq!(session["username"], "carol");
    assert_eq!(session["roles"], "operator");
    assert_eq!(session["redirect"], "/devices");
    let me: Value = b
        .client
        .get(format!("{}/api/v1/me", b.http))
        .bearer_auth(session["token"].as_str().unwrap())
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(me["username"], "carol");

    // Dave is known to A only: a clear refusal, and no session.
    let resp = through_a("dave").await?;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let problem: Value = resp.json().await?;
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("no Lotus account for 'dave'") && detail.contains("ask an administrator"),
        "{detail}"
    );

    // Carol's account on B is disabled: A still vouches for her, B refuses her, and the
    // session she had ends.
    b.expect(
        Method::PATCH,
        "/api/v1/users/carol",
        Some(json!({"disabled": true})),
        200,
    )
    .await?;
    let resp = through_a("carol").await?;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let problem: Value = resp.json().await?;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("this account is disabled"),
        "{problem}"
    );
    let old = b
        .client
        .get(format!("{}/api/v1/me", b.http))
        .bearer_auth(session["token"].as_str().unwrap())
        .send()
        .await?;
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);

    // A callback whose state was used already (or never issued) is refused, as a page for
    // a browser.
    let resp = browser()
        .get(format!("{callback}?code=x&state={}", random()))
        .header(reqwest::header::ACCEPT, "text/html")
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().await?.contains("start the log-in again"));

    let audit = b
        .expect(Method::GET, "/api/v1/audit?limit=1000", None, 200)
        .await?;
    let entries = audit["items"].as_array().unwrap();
    let oidc_logins: Vec<(&str, &str)> = entries
        .iter()
        .filter(|e| e["action"] == "auth.login" && e["detail"]["method"] == "oidc")
        .map(|e| (e["actor"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        oidc_logins,
        [("carol", "ok"), ("dave", "denied"), ("carol", "denied")]
    );
    Ok(())
}
