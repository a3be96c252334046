//! Registered apps calling the REST API of the real binary with signed requests: the client
//! below is written from `docs/app-api.md` alone (HMAC-SHA256 over the canonical request), and
//! every refusal the specification lists is provoked: an ungranted resource (403 with the
//! policy's reason), a bad signature, a replayed nonce, an expired timestamp, an offline app, a
//! rotated secret, and an app reaching for a personal center.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use lotus_e2e::{Fixture, Session, create_user};
use lotus_test_harness::node::LotusNode;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A nonce no other request of this process uses: 32 hex characters.
fn fresh_nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    format!(
        "{nanos:016x}{:016x}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The headers of one signed request, kept so that a test can send them again.
#[derive(Clone)]
struct Signed {
    method: Method,
    path_and_query: String,
    body: String,
    headers: Vec<(&'static str, String)>,
}

/// Signs as `docs/app-api.md` says: METHOD, PATH, the query's pairs sorted, TIMESTAMP, NONCE
/// and the hex SHA-256 of the body, joined by newlines; hex HMAC-SHA256 under the secret.
fn sign(
    client_id: &str,
    secret: &str,
    method: Method,
    path_and_query: &str,
    body: &str,
    timestamp: i64,
    nonce: &str,
) -> Signed {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let mut pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    pairs.sort();
    let canonical = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        method.as_str(),
        path,
        pairs.join("&"),
        timestamp,
        nonce,
        hex(&Sha256::digest(body.as_bytes()))
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(canonical.as_bytes());
    Signed {
        method,
        path_and_query: path_and_query.to_string(),
        body: body.to_string(),
        headers: vec![
            ("X-Lotus-App", client_id.to_string()),
            ("X-Lotus-Timestamp", timestamp.to_string()),
            ("X-Lotus-Nonce", nonce.to_string()),
            ("X-Lotus-Signature", hex(&mac.finalize().into_bytes())),
        ],
    }
}

/// An app as a test drives it.
struct App {
    id: i64,
    client_id: String,
    secret: String,
}

impl App {
    fn sign(&self, method: Method, path: &str, body: &str) -> Signed {
        sign(
            &self.client_id,
            &self.secret,
            method,
            path,
            body,
            now_ms(),
            &fresh_nonce(),
        )
    }

    async fn call(
        &self,
        node: &LotusNode,
        method: Method,
        path: &str,
    ) -> anyhow::Result<(u16, Value)> {
        send(node, &self.sign(method, path, "")).await
    }
}

async fn send(node: &LotusNode, s: &Signed) -> anyhow::Result<(u16, Value)> {
    let mut req = node.client.request(
        s.method.clone(),
        format!("{}{}", node.http, s.path_and_query),
    );
    for (k, v) in &s.headers {
        req = req.header(*k, v);
    }
    if !s.body.is_empty() {
        req = req
            .header("content-type", "application/json")
            .body(s.body.clone());
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

fn detail(v: &Value) -> &str {
    v["detail"].as_str().unwrap_or_default()
}

async fn register(node: &LotusNode, body: Value) -> anyhow::Result<App> {
    let created = node
        .expect(Method::POST, "/api/v1/apps", Some(body), 201)
        .await?;
    Ok(App {
        id: created["id"].as_i64().unwrap(),
        client_id: created["clientId"].as_str().unwrap().to_string(),
        secret: created["secret"].as_str().unwrap().to_string(),
    })
}

#[test]
fn the_client_reproduces_the_documented_examples() {
    // The worked examples of docs/app-api.md (computed there with openssl).
    let secret = "k7Qm2ZxP9vLr4TbN8sWc3HyJ6dFg1AeU5oRi0KpV";
    let get = sign(
        "app_j5kx2qmzrtw7vhbn3dpa",
        secret,
        Method::GET,
        "/api/v1/devices?status=online&pageSize=10&page=2",
        "",
        1767225600000,
        "3f9a1c0e7b5d4a2f8e6c0b1d2a3f4e5d",
    );
    assert_eq!(
        get.headers[3].1,
        "56927a3dfdb62ce1a0365cb76b35340af9412498b8c3711443f7c3bb7f298ab7"
    );
    let patch = sign(
        "app_j5kx2qmzrtw7vhbn3dpa",
        secret,
        Method::PATCH,
        "/api/v1/products/a1B2c3D4e5F/devices/lamp-0001",
        r#"{"nickname":"Lamp by the lake"}"#,
        1767225601000,
        "9b2e4d6f8a0c1e3b5d7f9a1c3e5b7d9f",
    );
    assert_eq!(
        patch.headers[3].1,
        "39604244684cd4192481419c8cad2fe07f304bf9764df6fb248a0f76b2d489c0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_calls_are_authorised_by_the_apps_grants() -> anyhow::Result<()> {
    let f = Fixture::start(2).await?;
    let node = &f.node;
    let pk = &f.product_key;
    let other = node
        .expect(
            Method::POST,
            "/api/v1/products",
            Some(json!({"name": "Water meter", "nodeType": "direct", "dataFormat": "alink"})),
            201,
        )
        .await?;
    let other_pk = other["productKey"].as_str().unwrap().to_string();
    node.expect(
        Method::POST,
        &format!("/api/v1/products/{other_pk}/devices"),
        Some(json!({"deviceName": "meter-1"})),
        201,
    )
    .await?;

    let app = register(
        node,
        json!({"name": "Lighting dashboard", "type": "dashboard", "vendor": "Example Ltd",
               "url": "https://lights.example.org/",
               "scopes": ["device.read", "device.write"],
               "resources": {"products": [pk]}}),
    )
    .await?;
    assert!(app.client_id.starts_with("app_"), "{}", app.client_id);
    // The secret is shown once: never in a read.
    let shown = node
        .expect(Method::GET, &format!("/api/v1/apps/{}", app.id), None, 200)
        .await?;
    assert!(shown.get("secret").is_none(), "{shown}");
    assert_eq!(shown["status"], "online");

    // A device of a granted product: 200.
    let lamp = f.device_path(0);
    let (status, body) = app.call(node, Method::GET, &lamp).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deviceName"], f.devices[0].device_name);

    // A device of a product it was not granted: 403 with the policy's reason.
    let meter = format!("/api/v1/products/{other_pk}/devices/meter-1");
    let (status, body) = app.call(node, Method::GET, &meter).await?;
    assert_eq!(status, 403, "{body}");
    assert!(
        detail(&body).contains(&format!(
            "app {} is not granted product {other_pk}",
            app.client_id
        )),
        "{body}"
    );
    // An API it was not granted.
    let set = app.sign(
        Method::POST,
        &format!("{lamp}/properties:set"),
        &json!({"params": {"LightSwitch": 1}}).to_string(),
    );
    let (status, body) = send(node, &set).await?;
    assert_eq!(status, 403, "{body}");
    assert!(
        detail(&body).contains(&format!(
            "app {} is not granted the API device.invoke",
            app.client_id
        )),
        "{body}"
    );

    // Lists are narrowed to what is granted; the query's order does not matter.
    let (status, body) = app
        .call(node, Method::GET, "/api/v1/devices?pageSize=100&page=1")
        .await?;
    assert_eq!(status, 200, "{body}");
    let listed: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["productKey"].as_str().unwrap())
        .collect();
    assert!(!listed.is_empty());
    assert!(listed.iter().all(|p| p == pk), "{body}");

    // A body is signed too: the signed one passes, a changed one does not.
    let patch = json!({"nickname": "Lamp by the lake"}).to_string();
    let signed = app.sign(Method::PATCH, &lamp, &patch);
    let (status, body) = send(node, &signed).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["nickname"], "Lamp by the lake");
    let mut tampered = app.sign(Method::PATCH, &lamp, &patch);
    tampered.body = json!({"nickname": "Mine now"}).to_string();
    let (status, body) = send(node, &tampered).await?;
    assert_eq!(status, 401, "{body}");
    assert!(detail(&body).contains("bad signature"), "{body}");

    // Replay: the same signed request a second time.
    let once = app.sign(Method::GET, &lamp, "");
    assert_eq!(send(node, &once).await?.0, 200);
    let (status, body) = send(node, &once).await?;
    assert_eq!(status, 401, "{body}");
    assert!(detail(&body).contains("replayed request"), "{body}");

    // A bad signature: signed with a secret that is not the app's.
    let forged = sign(
        &app.client_id,
        "not-the-secret",
        Method::GET,
        &lamp,
        "",
        now_ms(),
        &fresh_nonce(),
    );
    let (status, body) = send(node, &forged).await?;
    assert_eq!(status, 401, "{body}");
    assert!(detail(&body).contains("bad signature"), "{body}");

    // A timestamp outside the window (10 minutes old): refused even though correctly signed.
    let stale = sign(
        &app.client_id,
        &app.secret,
        Method::GET,
        &lamp,
        "",
        now_ms() - 600_000,
        &fresh_nonce(),
    );
    let (status, body) = send(node, &stale).await?;
    assert_eq!(status, 401, "{body}");
    assert!(detail(&body).contains("±300 s"), "{body}");

    // An unknown app and a missing header.
    let stranger = sign(
        "app_nobody",
        "x",
        Method::GET,
        &lamp,
        "",
        now_ms(),
        &fresh_nonce(),
    );
    let (status, body) = send(node, &stranger).await?;
    assert_eq!(status, 401, "{body}");
    assert!(detail(&body).contains("unknown app"), "{body}");
    let mut partial = app.sign(Method::GET, &lamp, "");
    partial.headers.retain(|(k, _)| *k != "X-Lotus-Nonce");
    let (status, body) = send(node, &partial).await?;
    assert_eq!(status, 401, "{body}");
    assert!(detail(&body).contains("x-lotus-nonce"), "{body}");

    // Apps have no personal center, tasks or messages.
    for path in ["/api/v1/me", "/api/v1/tasks", "/api/v1/messages"] {
        let (status, body) = app.call(node, Method::GET, path).await?;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(detail(&body).starts_with("apps have no"), "{path}: {body}");
    }

    // Offline: refused at once; online again: accepted.
    let app_path = format!("/api/v1/apps/{}", app.id);
    node.expect(
        Method::PATCH,
        &app_path,
        Some(json!({"status": "offline"})),
        200,
    )
    .await?;
    let (status, body) = app.call(node, Method::GET, &lamp).await?;
    assert_eq!(status, 401, "{body}");
    assert!(detail(&body).contains("is offline"), "{body}");
    node.expect(
        Method::PATCH,
        &app_path,
        Some(json!({"status": "online"})),
        200,
    )
    .await?;
    assert_eq!(app.call(node, Method::GET, &lamp).await?.0, 200);

    // Granting the other product through PATCH opens it.
    node.expect(
        Method::PATCH,
        &app_path,
        Some(json!({"resources": {"products": [pk, other_pk]}})),
        200,
    )
    .await?;
    assert_eq!(app.call(node, Method::GET, &meter).await?.0, 200);

    // Rotation: the old secret stops working, the new one works.
    let rotated = node
        .expect(Method::POST, &format!("{app_path}/secret"), None, 200)
        .await?;
    let new_secret = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, app.secret);
    let (status, body) = app.call(node, Method::GET, &lamp).await?;
    assert_eq!(status, 401, "{body}");
    assert!(detail(&body).contains("bad signature"), "{body}");
    let app = App {
        secret: new_secret,
        ..app
    };
    assert_eq!(app.call(node, Method::GET, &lamp).await?.0, 200);

    // Each of these is in the security audit log, and what the app did is attributed to it.
    let audit = node
        .expect(Method::GET, "/api/v1/audit?limit=1000", None, 200)
        .await?;
    let target = format!("app:{}", app.client_id);
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == target.as_str())
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for expected in ["app.create", "app.status", "app.grant", "app.secret.rotate"] {
        assert!(
            actions.contains(&expected),
            "{expected} missing: {actions:?}"
        );
    }

    // Deleted: unknown from then on.
    node.expect(Method::DELETE, &app_path, None, 204).await?;
    let (status, body) = app.call(node, Method::GET, &lamp).await?;
    assert_eq!(status, 401, "{body}");
    assert!(detail(&body).contains("unknown app"), "{body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_is_for_administrators_and_checks_what_it_stores() -> anyhow::Result<()> {
    let f = Fixture::start(1).await?;
    let node = &f.node;
    let pk = &f.product_key;
    register(
        node,
        json!({"name": "Water dashboard", "type": "dashboard", "scopes": ["device.read"],
               "resources": {"products": [pk], "regions": ["/hz/xihu"]},
               "redirectUris": ["https://water.example.org/callback"], "openRoles": ["operator"]}),
    )
    .await?;
    register(
        node,
        json!({"name": "Parking", "type": "mobile", "status": "offline"}),
    )
    .await?;

    // Search by type, by a part of the name, by status.
    let by_type = node
        .expect(Method::GET, "/api/v1/apps?type=mobile", None, 200)
        .await?;
    assert_eq!(by_type["total"], 1);
    assert_eq!(by_type["items"][0]["name"], "Parking");
    let by_name = node
        .expect(Method::GET, "/api/v1/apps?name=WATER", None, 200)
        .await?;
    assert_eq!(by_name["total"], 1);
    let water = &by_name["items"][0];
    assert_eq!(water["resources"]["regions"], json!(["/hz/xihu"]));
    assert_eq!(water["openRoles"], json!(["operator"]));
    let offline = node
        .expect(Method::GET, "/api/v1/apps?status=offline", None, 200)
        .await?;
    assert_eq!(offline["total"], 1);
    // By client id as well as by number.
    let client_id = water["clientId"].as_str().unwrap();
    let got = node
        .expect(Method::GET, &format!("/api/v1/apps/{client_id}"), None, 200)
        .await?;
    assert_eq!(got["id"], water["id"]);

    // Bad input says what to fix.
    for (body, field) in [
        (json!({"name": "x", "type": "robot"}), "type"),
        (
            json!({"name": "x", "type": "web", "scopes": ["policy.write"]}),
            "scopes[0]",
        ),
        (
            json!({"name": "x", "type": "web", "scopes": ["device"]}),
            "scopes[0]",
        ),
        (
            json!({"name": "x", "type": "web", "resources": {"products": ["nope"]}}),
            "resources.products[0]",
        ),
        (
            json!({"name": "x", "type": "web", "resources": {"devices": [format!("{pk}/ghost")]}}),
            "resources.devices[0]",
        ),
        (
            json!({"name": "x", "type": "web", "redirectUris": ["https://a.example/cb#frag"]}),
            "redirectUris[0]",
        ),
        (json!({"name": "", "type": "web"}), "name"),
    ] {
        let (status, p) = node
            .api(Method::POST, "/api/v1/apps", Some(body.clone()))
            .await?;
        assert_eq!(status, 422, "{body}: {p}");
        assert!(detail(&p).starts_with(field), "{body}: {p}");
    }
    let (status, _) = node.api(Method::GET, "/api/v1/apps/99999", None).await?;
    assert_eq!(status, 404);

    // Operators neither see nor change the registry.
    create_user(node, "ops", &["operator"], "/").await?;
    let ops = Session::login(node, "ops").await?;
    let (status, body) = ops.call(Method::GET, "/api/v1/apps", None).await?;
    assert_eq!(status, 403, "{body}");
    let (status, body) = ops
        .call(
            Method::POST,
            "/api/v1/apps",
            Some(json!({"name": "Mine", "type": "web"})),
        )
        .await?;
    assert_eq!(status, 403, "{body}");
    Ok(())
}
