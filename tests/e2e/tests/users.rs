//! Administrators managing operator accounts, against the real binary: moving a user to
//! another organisation or region (refused outside the caller's scope and into unknown
//! organisations or regions), disabling an account (its sessions end at once, log-in is
//! refused only once the password checked out), enabling it again, resetting a forgotten
//! password, what may not be done to one's own account, the audit trail, and the CLI.

use lotus_e2e::{PASSWORD, Session, create_user};
use lotus_test_harness::node::{ADMIN_PASSWORD, LotusNode, NodeOptions, binary};
use reqwest::Method;
use serde_json::{Value, json};

fn detail(v: &Value) -> String {
    v["detail"].as_str().unwrap_or_default().to_string()
}

async fn audit(node: &LotusNode) -> anyhow::Result<Vec<Value>> {
    let v = node
        .expect(Method::GET, "/api/v1/audit?limit=1000", None, 200)
        .await?;
    Ok(v["items"].as_array().unwrap().clone())
}

async fn audit_intact(node: &LotusNode) -> anyhow::Result<()> {
    let verify = node
        .expect(Method::GET, "/api/v1/audit/verify", None, 200)
        .await?;
    anyhow::ensure!(verify["intact"] == true, "the audit chain broke: {verify}");
    Ok(())
}

/// A log-in as anyone: the status and the answer.
async fn login(node: &LotusNode, username: &str, password: &str) -> anyhow::Result<(u16, Value)> {
    let resp = node
        .client
        .post(format!("{}/api/v1/auth/login", node.http))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await?))
}

async fn regions_and_orgs(node: &LotusNode) -> anyhow::Result<()> {
    for (path, name) in [
        ("/hz", "杭州市"),
        ("/hz/xihu", "西湖区"),
        ("/hz/binjiang", "滨江区"),
    ] {
        node.expect(
            Method::POST,
            "/api/v1/regions",
            Some(json!({"path": path, "name": name})),
            201,
        )
        .await?;
    }
    for id in ["water", "power"] {
        node.expect(
            Method::POST,
            "/api/v1/orgs",
            Some(json!({"id": id, "name": id})),
            201,
        )
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_a_users_scope_and_contact_details() -> anyhow::Result<()> {
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    node.login().await?;
    regions_and_orgs(&node).await?;
    node.expect(
        Method::POST,
        "/api/v1/users",
        Some(
            json!({"username": "alice", "password": PASSWORD, "roles": ["operator"],
            "org": "water", "region": "/hz/xihu", "email": "alice@example.org"}),
        ),
        201,
    )
    .await?;

    let moved = node
        .expect(
            Method::PATCH,
            "/api/v1/users/alice",
            Some(
                json!({"org": "power", "region": "/hz/binjiang", "displayName": "李工",
                "phone": "+8613812345678", "email": ""}),
            ),
            200,
        )
        .await?;
    assert_eq!(moved["org"], "power");
    assert_eq!(moved["region"], "/hz/binjiang");
    assert_eq!(moved["displayName"], "李工");
    assert_eq!(moved["phone"], "+8613812345678");
    assert_eq!(moved["email"], Value::Null);
    assert_eq!(moved["roles"], json!(["operator"]));
    assert_eq!(moved["disabled"], false);
    let got = node
        .expect(Method::GET, "/api/v1/users/alice", None, 200)
        .await?;
    assert_eq!(got, moved);
    node.expect(Method::GET, "/api/v1/users/nobody", None, 404)
        .await?;
    // The moved user acts in the new scope on their next request.
    let alice = Session::login(&node, "alice").await?;
    let me = alice.expect(Method::GET, "/api/v1/me", None, 200).await?;
    assert_eq!(me["region"], "/hz/binjiang", "{me}");

    // Unknown organisations and regions, and malformed details, say what to fix; nothing
    // changes.
    let refusals = [
        (json!({"org": "gas"}), "not in the organisation tree"),
        (
            json!({"region": "/hz/gongshu"}),
            "nearest existing region is '/hz'",
        ),
        (json!({"region": "hz"}), "region"),
        (json!({"email": "not-an-address"}), "email"),
        (json!({"phone": "12345"}), "phone"),
        (json!({"displayName": "x".repeat(65)}), "displayName"),
    ];
    for (body, expected) in refusals {
        let (status, v) = node
            .api(Method::PATCH, "/api/v1/users/alice", Some(body.clone()))
            .await?;
        assert_eq!(status, 422, "{body}: {v}");
        assert!(detail(&v).contains(expected), "{body}: {v}");
    }
    let (status, _) = node
        .api(
            Method::PATCH,
            "/api/v1/users/alice",
            Some(json!({"roles": ["admin"]})),
        )
        .await?;
    assert!(status.is_client_error(), "roles change through PUT …/roles");
    assert_eq!(
        node.expect(Method::GET, "/api/v1/users/alice", None, 200)
            .await?,
        moved
    );

    // A district administrator (a custom role the policy lets write users in its scope) edits
    // the users of its district but cannot move one out of it, nor touch anyone elsewhere.
    node.expect(
        Method::POST,
        "/api/v1/roles",
        Some(
            json!({"name": "district_admin", "description": "Manages the district's accounts",
            "permissions": []}),
        ),
        201,
    )
    .await?;
    let package = node
        .expect(Method::GET, "/api/v1/policies/lotus.api", None, 200)
        .await?;
    let extended = format!(
        "{}\n# District administrators manage the accounts of their district.\nscoped if {{\n\thas_role(\"district_admin\")\n\tkind == \"user\"\n\tverb in {{\"read\", \"write\"}}\n}}\n",
        package["source"].as_str().unwrap()
    );
    let resp = node
        .client
        .put(format!("{}/api/v1/policies/lotus.api", node.http))
        .bearer_auth(node.token.as_deref().unwrap())
        .header("content-type", "text/plain")
        .body(extended)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200, "{}", resp.text().await?);
    create_user(&node, "xihu-admin", &["district_admin"], "/hz/xihu").await?;
    create_user(&node, "xihu-ops", &["operator"], "/hz/xihu").await?;
    let district = Session::login(&node, "xihu-admin").await?;
    let changed = district
        .expect(
            Method::PATCH,
            "/api/v1/users/xihu-ops",
            Some(json!({"displayName": "巡检员"})),
            200,
        )
        .await?;
    assert_eq!(changed["displayName"], "巡检员");
    let (status, v) = district
        .call(
            Method::PATCH,
            "/api/v1/users/xihu-ops",
            Some(json!({"region": "/hz/binjiang"})),
        )
        .await?;
    assert_eq!(status, 403, "{v}");
    assert!(detail(&v).contains("outside your region"), "{v}");
    let (status, v) = district
        .call(
            Method::PATCH,
            "/api/v1/users/alice",
            Some(json!({"region": "/hz/xihu"})),
        )
        .await?;
    assert_eq!(status, 403, "{v}");
    district
        .expect(Method::GET, "/api/v1/users/alice", None, 403)
        .await?;
    district
        .expect(Method::GET, "/api/v1/users/xihu-ops", None, 200)
        .await?;
    let ops = node
        .expect(Method::GET, "/api/v1/users/xihu-ops", None, 200)
        .await?;
    assert_eq!(ops["region"], "/hz/xihu");

    // A viewer reads nobody's account and changes none.
    create_user(&node, "watcher", &["viewer"], "/").await?;
    let viewer = Session::login(&node, "watcher").await?;
    viewer
        .expect(Method::GET, "/api/v1/users/alice", None, 403)
        .await?;
    viewer
        .expect(
            Method::PATCH,
            "/api/v1/users/alice",
            Some(json!({"region": "/"})),
            403,
        )
        .await?;
    viewer
        .expect(
            Method::PATCH,
            "/api/v1/users/alice",
            Some(json!({"disabled": true})),
            403,
        )
        .await?;
    viewer
        .expect(
            Method::POST,
            "/api/v1/users/alice/password",
            Some(json!({"password": "another-pw-2026"})),
            403,
        )
        .await?;

    // Each change is in the audit log with what it was and what it became.
    let log = audit(&node).await?;
    let updates: Vec<&Value> = log
        .iter()
        .filter(|e| e["action"] == "user.update" && e["target"] == "user:alice")
        .collect();
    assert_eq!(
        updates.len(),
        1,
        "refused changes are not recorded: {updates:?}"
    );
    let d = &updates[0]["detail"];
    assert_eq!(d["from"]["org"], "water");
    assert_eq!(d["to"]["org"], "power");
    assert_eq!(d["from"]["region"], "/hz/xihu");
    assert_eq!(d["to"]["region"], "/hz/binjiang");
    assert_eq!(d["from"]["email"], "alice@example.org");
    assert_eq!(d["to"]["email"], Value::Null);
    assert!(d["from"].get("roles").is_none(), "only changed fields: {d}");
    let by_district = log
        .iter()
        .find(|e| e["action"] == "user.update" && e["target"] == "user:xihu-ops")
        .expect("the district administrator's change is audited");
    assert_eq!(by_district["actor"], "xihu-admin");
    audit_intact(&node).await?;

    // The routes are in the OpenAPI document.
    let doc = node
        .expect(Method::GET, "/api/v1/openapi.json", None, 200)
        .await?;
    let user = &doc["paths"]["/api/v1/users/{username}"];
    assert!(
        user["get"].is_object() && user["patch"].is_object(),
        "{user}"
    );
    assert!(doc["paths"]["/api/v1/users/{username}/password"]["post"].is_object());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_ends_sessions_and_refuses_log_in_until_enabled_on_sqlite() -> anyhow::Result<()>
{
    disabling_ends_sessions_and_refuses_log_in_until_enabled(NodeOptions::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_ends_sessions_and_refuses_log_in_until_enabled_on_postgres() -> anyhow::Result<()>
{
    let pg = lotus_test_harness::postgres::TestPostgres::start()?;
    disabling_ends_sessions_and_refuses_log_in_until_enabled(NodeOptions {
        database_url: Some(pg.url.clone()),
        ..Default::default()
    })
    .await
}

async fn disabling_ends_sessions_and_refuses_log_in_until_enabled(
    options: NodeOptions,
) -> anyhow::Result<()> {
    let mut node = LotusNode::start(options).await?;
    node.login().await?;
    create_user(&node, "bob", &["operator"], "/").await?;
    let bob = Session::login(&node, "bob").await?;
    let second = Session::login(&node, "bob").await?;
    bob.expect(Method::GET, "/api/v1/me", None, 200).await?;

    let disabled = node
        .expect(
            Method::PATCH,
            "/api/v1/users/bob",
            Some(json!({"disabled": true})),
            200,
        )
        .await?;
    assert_eq!(disabled["disabled"], true);
    assert!(disabled["disabledAt"].as_i64().unwrap() > 0);
    // Every session of theirs ends at once, and says why.
    for session in [&bob, &second] {
        let (status, v) = session.call(Method::GET, "/api/v1/me", None).await?;
        assert_eq!(status, 401, "{v}");
        assert!(detail(&v).contains("disabled"), "{v}");
    }
    let (status, v) = bob.call(Method::GET, "/api/v1/products", None).await?;
    assert_eq!(status, 401, "{v}");
    // The right password learns that the account is disabled; a wrong one learns nothing.
    let (status, v) = login(&node, "bob", PASSWORD).await?;
    assert_eq!(status, 403, "{v}");
    assert!(detail(&v).contains("disabled"), "{v}");
    let (status, v) = login(&node, "bob", "wrong-password-1").await?;
    assert_eq!(status, 401, "{v}");
    assert!(!detail(&v).contains("disabled"), "{v}");
    let (status, v) = login(&node, "nobody", "wrong-password-1").await?;
    assert_eq!(status, 401);
    assert!(!detail(&v).contains("disabled"), "{v}");
    // Disabling again changes nothing.
    let again = node
        .expect(
            Method::PATCH,
            "/api/v1/users/bob",
            Some(json!({"disabled": true})),
            200,
        )
        .await?;
    assert_eq!(again["disabledAt"], disabled["disabledAt"]);

    let listed = node
        .expect(Method::GET, "/api/v1/users?disabled=true", None, 200)
        .await?;
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bob"]);
    let active = node
        .expect(Method::GET, "/api/v1/users?disabled=false", None, 200)
        .await?;
    assert!(
        active["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["username"] != "bob" && u["disabled"] == false),
        "{active}"
    );

    // Enabled again: log-in works, the sessions from before stay ended.
    let enabled = node
        .expect(
            Method::PATCH,
            "/api/v1/users/bob",
            Some(json!({"disabled": false})),
            200,
        )
        .await?;
    assert_eq!(enabled["disabled"], false);
    assert_eq!(enabled["disabledAt"], Value::Null);
    let (status, v) = bob.call(Method::GET, "/api/v1/me", None).await?;
    assert_eq!(status, 401, "{v}");
    assert!(!detail(&v).contains("disabled"), "{v}");
    let bob = Session::login(&node, "bob").await?;
    bob.expect(Method::GET, "/api/v1/me", None, 200).await?;

    // Nobody disables their own account; another administrator may disable an administrator.
    let (status, v) = node
        .api(
            Method::PATCH,
            "/api/v1/users/admin",
            Some(json!({"disabled": true})),
        )
        .await?;
    assert_eq!(status, 409, "{v}");
    assert!(detail(&v).contains("your own account"), "{v}");
    create_user(&node, "admin2", &["admin"], "/").await?;
    let admin2 = Session::login(&node, "admin2").await?;
    admin2
        .expect(
            Method::PATCH,
            "/api/v1/users/admin",
            Some(json!({"disabled": true})),
            200,
        )
        .await?;
    let (status, _) = login(&node, "admin", ADMIN_PASSWORD).await?;
    assert_eq!(status, 403);
    let (status, v) = admin2
        .call(
            Method::PATCH,
            "/api/v1/users/admin2",
            Some(json!({"disabled": true})),
        )
        .await?;
    assert_eq!(status, 409, "{v}");
    admin2
        .expect(
            Method::PATCH,
            "/api/v1/users/admin",
            Some(json!({"disabled": false})),
            200,
        )
        .await?;
    node.login().await?;

    let log = audit(&node).await?;
    let on_bob: Vec<&str> = log
        .iter()
        .filter(|e| e["target"] == "user:bob" && e["action"] != "auth.login")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        on_bob,
        ["user.create", "user.disable", "user.enable"],
        "{log:?}"
    );
    let refused = log
        .iter()
        .find(|e| {
            e["action"] == "auth.login" && e["target"] == "user:bob" && e["outcome"] == "denied"
        })
        .expect("the refused log-in is audited");
    assert_eq!(refused["detail"]["reason"], "disabled");
    assert!(log.iter().any(|e| e["action"] == "user.disable"
        && e["target"] == "user:admin"
        && e["actor"] == "admin2"));
    audit_intact(&node).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_password_ends_sessions_and_asks_for_a_new_one() -> anyhow::Result<()> {
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    node.login().await?;
    create_user(&node, "carol", &["viewer"], "/").await?;
    let carol = Session::login(&node, "carol").await?;
    const NEW: &str = "reset-by-admin-2026";

    // The rule for new accounts holds; one's own password is changed in the personal center.
    let (status, v) = node
        .api(
            Method::POST,
            "/api/v1/users/carol/password",
            Some(json!({"password": "short"})),
        )
        .await?;
    assert_eq!(status, 422, "{v}");
    assert!(detail(&v).contains("at least 10"), "{v}");
    let (status, v) = node
        .api(
            Method::POST,
            "/api/v1/users/carol/password",
            Some(json!({"password": "carol-carol-2026"})),
        )
        .await?;
    assert_eq!(status, 422);
    assert!(detail(&v).contains("username"), "{v}");
    let (status, v) = node
        .api(
            Method::POST,
            "/api/v1/users/admin/password",
            Some(json!({"password": NEW})),
        )
        .await?;
    assert_eq!(status, 409, "{v}");
    assert!(detail(&v).contains("/api/v1/me/password"), "{v}");
    node.expect(
        Method::POST,
        "/api/v1/users/nobody/password",
        Some(json!({"password": NEW})),
        404,
    )
    .await?;
    carol.expect(Method::GET, "/api/v1/me", None, 200).await?;

    node.expect(
        Method::POST,
        "/api/v1/users/carol/password",
        Some(json!({"password": NEW})),
        204,
    )
    .await?;
    carol.expect(Method::GET, "/api/v1/me", None, 401).await?;
    let (status, _) = login(&node, "carol", PASSWORD).await?;
    assert_eq!(status, 401);
    let (status, v) = login(&node, "carol", NEW).await?;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["mustChangePassword"], true, "{v}");
    let shown = node
        .expect(Method::GET, "/api/v1/users/carol", None, 200)
        .await?;
    assert_eq!(shown["mustChangePassword"], true);

    // Once carol chooses her own, she is no longer asked to.
    let token = v["token"].as_str().unwrap().to_string();
    let carol = Session { node: &node, token };
    carol
        .expect(
            Method::POST,
            "/api/v1/me/password",
            Some(json!({"current": NEW, "new": "my-own-choice-2026"})),
            204,
        )
        .await?;
    let (status, v) = login(&node, "carol", "my-own-choice-2026").await?;
    assert_eq!(status, 200);
    assert_eq!(v["mustChangePassword"], false);
    let (_, v) = login(&node, "admin", ADMIN_PASSWORD).await?;
    assert_eq!(v["mustChangePassword"], false);

    let log = audit(&node).await?;
    let resets: Vec<&Value> = log
        .iter()
        .filter(|e| e["action"] == "user.password_reset")
        .collect();
    assert_eq!(resets.len(), 1, "{resets:?}");
    assert_eq!(resets[0]["target"], "user:carol");
    assert_eq!(resets[0]["actor"], "admin");
    assert_eq!(resets[0]["detail"]["sessionsEnded"], 1);
    let text = serde_json::to_string(&log)?;
    assert!(!text.contains(NEW), "a password reached the audit log");
    audit_intact(&node).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_updates_disables_enables_and_resets() -> anyhow::Result<()> {
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    node.login().await?;
    regions_and_orgs(&node).await?;
    create_user(&node, "dave", &["operator"], "/hz/xihu").await?;
    let token = node.token.clone().unwrap();
    let cli = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(binary())
            .args(args)
            .env("LOTUS_URL", &node.http)
            .env("LOTUS_TOKEN", &token)
            .env("HOME", node.data_dir.as_os_str())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the CLI runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().expect("the CLI ends");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };

    let (ok, out, err) = cli(
        &[
            "user",
            "update",
            "dave",
            "--region",
            "/hz/binjiang",
            "--org",
            "water",
            "--email",
            "dave@example.org",
        ],
        "",
    );
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out)?;
    assert_eq!(
        (v["region"].as_str(), v["org"].as_str(), v["email"].as_str()),
        (
            Some("/hz/binjiang"),
            Some("water"),
            Some("dave@example.org")
        )
    );
    let (ok, _, err) = cli(&["user", "update", "dave", "--org", "gas"], "");
    assert!(!ok && err.contains("422") && err.contains("gas"), "{err}");
    let (ok, _, err) = cli(&["user", "update", "dave"], "");
    assert!(!ok && err.contains("nothing to change"), "{err}");

    let dave = Session::login(&node, "dave").await?;
    let (ok, out, err) = cli(&["user", "disable", "dave"], "");
    assert!(ok, "{err}");
    assert!(out.contains("disabled"), "{out}");
    dave.expect(Method::GET, "/api/v1/me", None, 401).await?;
    let (ok, out, _) = cli(&["user", "list", "--disabled"], "");
    assert!(ok && out.contains("\"dave\""), "{out}");
    let (ok, out, _) = cli(&["user", "list", "--active"], "");
    assert!(ok && !out.contains("\"dave\""), "{out}");
    let (ok, _, err) = cli(&["user", "disable", "admin"], "");
    assert!(!ok && err.contains("409"), "{err}");
    let (ok, _, err) = cli(&["user", "enable", "dave"], "");
    assert!(ok, "{err}");
    Session::login(&node, "dave").await?;

    // The password comes on standard input, never on the command line.
    let (ok, _, err) = cli(&["user", "reset-password", "dave"], "cli-reset-pw-2026\n");
    assert!(ok, "{err}");
    let (status, _) = login(&node, "dave", "cli-reset-pw-2026").await?;
    assert_eq!(status, 200);
    let (ok, _, err) = cli(&["user", "reset-password", "dave"], "");
    assert!(!ok && err.contains("standard input"), "{err}");
    let (ok, _, err) = cli(&["user", "reset-password", "dave"], "short\n");
    assert!(!ok && err.contains("at least 10"), "{err}");
    let (ok, out, err) = cli(&["user", "get", "dave"], "");
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out)?;
    assert_eq!(v["mustChangePassword"], true);
    assert_eq!(v["disabled"], false);
    audit_intact(&node).await?;
    Ok(())
}

/// The last active administrator keeps the admin role: without it nobody could give it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_active_administrator_keeps_the_role() -> anyhow::Result<()> {
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    node.login().await?;
    let (status, v) = node
        .api(
            Method::PUT,
            "/api/v1/users/admin/roles",
            Some(json!({"roles": ["operator"]})),
        )
        .await?;
    assert_eq!(status, 409, "{v}");
    assert!(detail(&v).contains("last active administrator"), "{v}");
    // With a second administrator, the first may step down.
    create_user(&node, "deputy", &["admin"], "/").await?;
    node.expect(
        Method::PUT,
        "/api/v1/users/admin/roles",
        Some(json!({"roles": ["operator"]})),
        200,
    )
    .await?;
    let deputy = Session::login(&node, "deputy").await?;
    let (status, v) = deputy
        .call(
            Method::PUT,
            "/api/v1/users/deputy/roles",
            Some(json!({"roles": ["viewer"]})),
        )
        .await?;
    assert_eq!(status, 409, "{v}");
    Ok(())
}
