//! The HTTP surface: log-in (with lock-out after repeated failures), problem documents, OpenAPI,
//! health, metrics and the CLI.

use lotus_e2e::{Fixture, street_light_tsl};
use lotus_test_harness::node::{ADMIN_PASSWORD, LotusNode, NodeOptions, binary};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_problems_openapi_and_operations() -> anyhow::Result<()> {
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    // No token.
    let p = node
        .expect(Method::GET, "/api/v1/products", None, 401)
        .await?;
    assert!(p["detail"].as_str().unwrap().contains("Bearer"));
    // Wrong password.
    node.expect(
        Method::POST,
        "/api/v1/auth/login",
        Some(json!({"username": "admin", "password": "nope"})),
        401,
    )
    .await?;
    node.login().await?;

    // Malformed bodies get problem+json naming what is wrong.
    let resp = node
        .client
        .post(format!("{}/api/v1/products", node.http))
        .bearer_auth(node.token.as_ref().unwrap())
        .json(&json!({"name": "x", "nodeType": "toaster", "dataFormat": "alink"}))
        .send()
        .await?;
    assert_eq!(resp.status(), 422);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert!(resp.text().await?.contains("toaster"));

    // A malformed thing model names the bad element.
    let p = node
        .expect(
            Method::POST,
            "/api/v1/products",
            Some(json!({"name": "Meter", "nodeType": "direct", "dataFormat": "alink"})),
            201,
        )
        .await?;
    let pk = p["productKey"].as_str().unwrap();
    let mut tsl = street_light_tsl();
    tsl["properties"][1]["dataType"]["specs"]["min"] = json!("500");
    let bad = node
        .expect(
            Method::PUT,
            &format!("/api/v1/products/{pk}/thing-model"),
            Some(tsl),
            422,
        )
        .await?;
    assert!(
        bad["detail"].as_str().unwrap().contains("properties[1]"),
        "{bad}"
    );

    // Versioned, exported as full TSL with the generated post event and set/get services.
    node.expect(
        Method::PUT,
        &format!("/api/v1/products/{pk}/thing-model"),
        Some(street_light_tsl()),
        200,
    )
    .await?;
    let saved = node
        .expect(
            Method::PUT,
            &format!("/api/v1/products/{pk}/thing-model"),
            Some(street_light_tsl()),
            200,
        )
        .await?;
    assert_eq!(saved["version"], 2);
    let full = node
        .expect(
            Method::GET,
            &format!("/api/v1/products/{pk}/thing-model"),
            None,
            200,
        )
        .await?;
    assert_eq!(full["profile"]["productKey"], pk);
    assert!(
        full["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["identifier"] == "post")
    );
    let services: Vec<&str> = full["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["identifier"].as_str().unwrap())
        .collect();
    assert!(
        services.contains(&"set") && services.contains(&"get"),
        "{services:?}"
    );
    let versions = node
        .expect(
            Method::GET,
            &format!("/api/v1/products/{pk}/thing-model/versions"),
            None,
            200,
        )
        .await?;
    assert_eq!(versions.as_array().unwrap().len(), 2);

    // Paging and filters.
    node.expect(
        Method::POST,
        &format!("/api/v1/products/{pk}/devices:batch"),
        Some(json!({"count": 25})),
        201,
    )
    .await?;
    let page = node
        .expect(
            Method::GET,
            &format!("/api/v1/products/{pk}/devices?page=2&pageSize=10"),
            None,
            200,
        )
        .await?;
    assert_eq!(page["total"], 25);
    assert_eq!(page["items"].as_array().unwrap().len(), 10);
    let inactive = node
        .expect(
            Method::GET,
            &format!("/api/v1/devices?productKey={pk}&status=inactive&pageSize=100"),
            None,
            200,
        )
        .await?;
    assert_eq!(inactive["total"], 25);
    node.expect(Method::GET, "/api/v1/devices?status=sleeping", None, 400)
        .await?;
    // Duplicate names conflict, all or nothing.
    node.expect(
        Method::POST,
        &format!("/api/v1/products/{pk}/devices"),
        Some(json!({"deviceName": "meter-1"})),
        201,
    )
    .await?;
    node.expect(
        Method::POST,
        &format!("/api/v1/products/{pk}/devices:batch"),
        Some(json!({"deviceNames": ["meter-2", "meter-1"]})),
        409,
    )
    .await?;
    node.expect(
        Method::GET,
        &format!("/api/v1/products/{pk}/devices/meter-2"),
        None,
        404,
    )
    .await?;
    // A product with devices cannot be deleted.
    node.expect(Method::DELETE, &format!("/api/v1/products/{pk}"), None, 409)
        .await?;

    // OpenAPI 3.1 and Swagger UI.
    let doc = node
        .expect(Method::GET, "/api/v1/openapi.json", None, 200)
        .await?;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(doc["paths"]["/api/v1/products/{productKey}/thing-model"].is_object());
    let ui = reqwest::get(format!("{}/api/docs/", node.http)).await?;
    assert_eq!(ui.status(), 200);
    assert!(ui.text().await?.contains("swagger"));

    // Operations.
    assert_eq!(
        reqwest::get(format!("{}/healthz", node.http))
            .await?
            .status(),
        200
    );
    assert_eq!(
        reqwest::get(format!("{}/readyz", node.http))
            .await?
            .status(),
        200
    );
    let metrics = reqwest::get(format!("{}/metrics", node.http))
        .await?
        .text()
        .await?;
    assert!(metrics.contains("lotus_"), "metrics: {metrics}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_drives_the_api() -> anyhow::Result<()> {
    let f = Fixture::start(0).await?;
    let home = tempfile::tempdir()?;
    let run = |args: &[&str]| {
        std::process::Command::new(binary())
            .args(args)
            .env("XDG_CONFIG_HOME", home.path())
            .env("LOTUS_URL", &f.node.http)
            .env_remove("LOTUS_TOKEN")
            .output()
    };
    let out = run(&["product", "list"])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lotus login"));
    let out = run(&["login", "--username", "admin", "--password", ADMIN_PASSWORD])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["device", "create", &f.product_key, "--name", "cli-lamp-1"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(created["deviceName"], "cli-lamp-1");
    assert_eq!(created["deviceSecret"].as_str().unwrap().len(), 32);
    let out = run(&["device", "list", "--product-key", &f.product_key])?;
    let list: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(list["total"], 1);
    let out = run(&["device", "get", &f.product_key, "no-such"])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    let help = run(&["serve", "--help"])?;
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--database-url",
        "--mqtt-listen",
        "--tls-cert",
        "--allow-anonymous",
        "--config",
    ] {
        assert!(help.contains(flag), "serve --help documents {flag}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_logins_lock_the_account_until_an_administrator_unlocks_it()
-> anyhow::Result<()> {
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    node.login().await?;
    lotus_e2e::create_user(&node, "night-ops", &["operator"], "/hz").await?;
    let attempt = |password: &str| {
        let req = node
            .client
            .post(format!("{}/api/v1/auth/login", node.http))
            .json(&serde_json::json!({"username": "night-ops", "password": password}));
        async move {
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await?;
            anyhow::Ok((status, body))
        }
    };
    // Failures below the limit are forgotten after a successful log-in.
    for _ in 0..4 {
        assert_eq!(attempt("wrong-password-1").await?.0, 401);
    }
    assert_eq!(attempt(lotus_e2e::PASSWORD).await?.0, 200);
    for _ in 0..4 {
        assert_eq!(attempt("wrong-password-1").await?.0, 401);
    }
    // The fifth failure in a row locks it, and says so.
    let (status, problem) = attempt("wrong-password-1").await?;
    assert_eq!(status, 403, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("locked") && detail.contains("5 failed log-ins"),
        "{detail}"
    );
    // Even the right password is refused while it is locked.
    let (status, problem) = attempt(lotus_e2e::PASSWORD).await?;
    assert_eq!(status, 403, "{problem}");
    // Unknown names are not locked (nothing to lock), and still just fail.
    let resp = node
        .client
        .post(format!("{}/api/v1/auth/login", node.http))
        .json(&serde_json::json!({"username": "nobody", "password": "x"}))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 401);

    // An administrator unlocks it.
    node.expect(Method::POST, "/api/v1/users/nobody/unlock", None, 404)
        .await?;
    node.expect(Method::POST, "/api/v1/users/night-ops/unlock", None, 204)
        .await?;
    assert_eq!(attempt(lotus_e2e::PASSWORD).await?.0, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_person_cannot_hold_two_administrator_duties() -> anyhow::Result<()> {
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    node.login().await?;
    let (status, problem) = node
        .api(
            Method::POST,
            "/api/v1/users",
            Some(
                json!({"username": "all-powerful", "password": lotus_e2e::PASSWORD,
                "roles": ["admin", "auditor"], "region": "/"}),
            ),
        )
        .await?;
    assert_eq!(status, 403, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("may not hold admin and auditor"),
        "{problem}"
    );
    lotus_e2e::create_user(&node, "the-auditor", &["auditor"], "/").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_actions_are_in_a_hash_chained_audit_log_the_auditor_verifies()
-> anyhow::Result<()> {
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    node.login().await?;
    lotus_e2e::create_user(&node, "the-auditor", &["auditor"], "/").await?;
    lotus_e2e::create_user(&node, "night-ops", &["operator"], "/hz").await?;
    let resp = node
        .client
        .post(format!("{}/api/v1/auth/login", node.http))
        .json(&json!({"username": "night-ops", "password": "not-the-password"}))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 401);

    // Credentials handed out to devices and applications, and taken back.
    let p = node
        .expect(
            Method::POST,
            "/api/v1/products",
            Some(json!({"name": "Hydrant", "nodeType": "direct", "dataFormat": "alink"})),
            201,
        )
        .await?;
    let pk = p["productKey"].as_str().unwrap();
    node.expect(
        Method::POST,
        &format!("/api/v1/products/{pk}/devices"),
        Some(json!({"deviceName": "hydrant-1"})),
        201,
    )
    .await?;
    node.expect(
        Method::POST,
        &format!("/api/v1/products/{pk}/devices/hydrant-1/disable"),
        None,
        200,
    )
    .await?;
    node.expect(
        Method::DELETE,
        &format!("/api/v1/products/{pk}/devices/hydrant-1"),
        None,
        204,
    )
    .await?;
    let credential = node
        .expect(
            Method::POST,
            "/api/v1/app-credentials",
            Some(json!({"name": "dashboard", "grants": [{"filter": format!("/{pk}/+/user/update")}]})),
            201,
        )
        .await?;
    let credential = credential["id"].as_i64().unwrap();
    node.expect(
        Method::DELETE,
        &format!("/api/v1/app-credentials/{credential}"),
        None,
        204,
    )
    .await?;

    let auditor = lotus_e2e::Session::login(&node, "the-auditor").await?;
    let log = auditor
        .expect(Method::GET, "/api/v1/audit?limit=1000", None, 200)
        .await?;
    let items = log["items"].as_array().unwrap();
    let has = |action: &str, target: &str, outcome: &str| {
        items
            .iter()
            .any(|e| e["action"] == action && e["target"] == target && e["outcome"] == outcome)
    };
    assert!(has("auth.login", "user:admin", "ok"), "{log}");
    assert!(has("user.create", "user:the-auditor", "ok"), "{log}");
    assert!(has("auth.login", "user:night-ops", "failed"), "{log}");
    let device = format!("device:{pk}/hydrant-1");
    assert!(
        has("device.credentials.issue", &format!("product:{pk}"), "ok"),
        "{log}"
    );
    assert!(has("device.disable", &device, "ok"), "{log}");
    assert!(has("device.credentials.revoke", &device, "ok"), "{log}");
    let app = format!("app-credential:{credential}");
    assert!(has("application.credentials.issue", &app, "ok"), "{log}");
    assert!(has("application.credentials.revoke", &app, "ok"), "{log}");
    assert!(!log.to_string().contains("deviceSecret"), "{log}");
    for pair in items.windows(2) {
        assert_eq!(pair[1]["prevHash"], pair[0]["hash"], "{log}");
        assert_eq!(pair[1]["seq"], pair[0]["seq"].as_i64().unwrap() + 1);
    }
    let check = auditor
        .expect(Method::GET, "/api/v1/audit/verify", None, 200)
        .await?;
    assert_eq!(check["intact"], true, "{check}");
    assert_eq!(check["entries"], items.len(), "{check}");

    // An operator may not read it.
    lotus_e2e::create_user(&node, "ops-2", &["operator"], "/hz").await?;
    let ops = lotus_e2e::Session::login(&node, "ops-2").await?;
    ops.expect(Method::GET, "/api/v1/audit", None, 403).await?;
    ops.expect(Method::GET, "/api/v1/audit/verify", None, 403)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn products_are_searched_by_name_or_key_within_the_callers_scope() -> anyhow::Result<()> {
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    node.login().await?;
    let mut keys = Vec::new();
    for (name, region) in [
        ("Street lamp north", "/hz/xihu"),
        ("Street lamp south", "/hz/binjiang"),
        ("Water meter 100%", "/hz/xihu"),
        ("Water meter 1000", "/hz/xihu"),
    ] {
        let p = node
            .expect(
                Method::POST,
                "/api/v1/products",
                Some(
                    json!({"name": name, "nodeType": "direct", "dataFormat": "alink",
                    "region": region}),
                ),
                201,
            )
            .await?;
        keys.push(p["productKey"].as_str().unwrap().to_string());
    }
    let names = |page: &serde_json::Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    };

    // Part of the name, any case, spaces around it ignored.
    let lamps = node
        .expect(Method::GET, "/api/v1/products?search=%20LAMP%20", None, 200)
        .await?;
    assert_eq!(names(&lamps), ["Street lamp north", "Street lamp south"]);
    assert_eq!(lamps["total"], 2);

    // Part of the product key, in another case.
    let tail = keys[3][2..].to_uppercase();
    let by_key = node
        .expect(
            Method::GET,
            &format!("/api/v1/products?search={tail}"),
            None,
            200,
        )
        .await?;
    assert_eq!(names(&by_key), ["Water meter 1000"], "{by_key}");

    // `%` is the character itself, not "anything".
    let percent = node
        .expect(Method::GET, "/api/v1/products?search=100%25", None, 200)
        .await?;
    assert_eq!(names(&percent), ["Water meter 100%"]);
    let nothing = node
        .expect(Method::GET, "/api/v1/products?search=lamp%25x", None, 200)
        .await?;
    assert_eq!(nothing["total"], 0);
    assert!(nothing["items"].as_array().unwrap().is_empty());

    // Paging goes through the matches only; the total counts all of them.
    let second = node
        .expect(
            Method::GET,
            "/api/v1/products?search=meter&page=2&pageSize=1",
            None,
            200,
        )
        .await?;
    assert_eq!(names(&second), ["Water meter 1000"]);
    assert_eq!(second["total"], 2);
    assert_eq!(second["page"], 2);

    // Too long a search is refused with what to fix; 100 characters are still fine.
    let (status, problem) = node
        .api(
            Method::GET,
            &format!("/api/v1/products?search={}", "a".repeat(101)),
            None,
        )
        .await?;
    assert_eq!(status, 400, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("search must be at most 100 characters"),
        "{problem}"
    );
    node.expect(
        Method::GET,
        &format!("/api/v1/products?search={}", "a".repeat(100)),
        None,
        200,
    )
    .await?;

    // An operator of one district finds only that district's products.
    lotus_e2e::create_user(&node, "xihu-ops", &["operator"], "/hz/xihu").await?;
    let xihu = lotus_e2e::Session::login(&node, "xihu-ops").await?;
    let seen = xihu
        .expect(Method::GET, "/api/v1/products?search=lamp", None, 200)
        .await?;
    assert_eq!(names(&seen), ["Street lamp north"]);
    assert_eq!(seen["total"], 1);
    Ok(())
}
