//! Regions, organisations and roles against the real binary: the region tree with its delete
//! refusals and unknown-region refusals, custom roles that grant exactly their permissions
//! within the holder's scope and nothing reserved, role changes in the audit log, and the CLI.

use lotus_e2e::{PASSWORD, Session, create_user};
use lotus_test_harness::node::{LotusNode, NodeOptions, binary};
use reqwest::Method;
use serde_json::{Value, json};

async fn audit(node: &LotusNode) -> anyhow::Result<Vec<Value>> {
    let v = node
        .expect(Method::GET, "/api/v1/audit?limit=1000", None, 200)
        .await?;
    Ok(v["items"].as_array().unwrap().clone())
}

fn detail(v: &Value) -> String {
    v["detail"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_tree_crud_and_refusals() -> anyhow::Result<()> {
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    node.login().await?;

    // No tree yet: any well-formed region is accepted, as before regions existed.
    create_user(&node, "early", &["viewer"], "/sh/pudong").await?;

    let hz = node
        .expect(
            Method::POST,
            "/api/v1/regions",
            Some(json!({"path": "/hz", "name": "杭州市", "code": "330100"})),
            201,
        )
        .await?;
    assert_eq!(hz["parent"], "/");
    node.expect(
        Method::POST,
        "/api/v1/regions",
        Some(json!({"path": "/hz/xihu", "name": "西湖", "code": "330106"})),
        201,
    )
    .await?;
    node.expect(
        Method::POST,
        "/api/v1/regions",
        Some(json!({"path": "/hz/binjiang", "name": "滨江区"})),
        201,
    )
    .await?;
    // A parent must exist, a path appears once, and bad input says what to fix.
    let (status, v) = node
        .api(
            Method::POST,
            "/api/v1/regions",
            Some(json!({"path": "/hz/gongshu/x", "name": "x"})),
        )
        .await?;
    assert_eq!(status, 422);
    assert!(
        detail(&v).contains("parent region '/hz/gongshu' does not exist"),
        "{v}"
    );
    let (status, _) = node
        .api(
            Method::POST,
            "/api/v1/regions",
            Some(json!({"path": "/hz", "name": "again"})),
        )
        .await?;
    assert_eq!(status, 409);
    let (status, v) = node
        .api(
            Method::POST,
            "/api/v1/regions",
            Some(json!({"path": "/hz/a", "name": "a", "code": "33x"})),
        )
        .await?;
    assert_eq!(status, 422);
    assert!(detail(&v).contains("code"), "{v}");

    // The tree, parents first; and one level of it.
    let all = node
        .expect(Method::GET, "/api/v1/regions", None, 200)
        .await?;
    let paths: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/hz", "/hz/binjiang", "/hz/xihu"]);
    let below = node
        .expect(Method::GET, "/api/v1/regions?parent=/hz", None, 200)
        .await?;
    assert_eq!(below["items"].as_array().unwrap().len(), 2);
    let top = node
        .expect(Method::GET, "/api/v1/regions?parent=/", None, 200)
        .await?;
    assert_eq!(top["items"].as_array().unwrap().len(), 1);

    // Rename, both URL spellings of a path.
    let renamed = node
        .expect(
            Method::PATCH,
            "/api/v1/regions/hz/xihu",
            Some(json!({"name": "西湖区"})),
            200,
        )
        .await?;
    assert_eq!(renamed["name"], "西湖区");
    assert_eq!(renamed["code"], "330106");
    let got = node
        .expect(Method::GET, "/api/v1/regions/%2Fhz%2Fxihu", None, 200)
        .await?;
    assert_eq!(got["name"], "西湖区");

    // Now that the tree has entries, unknown regions are refused with the nearest known one.
    let (status, v) = node
        .api(
            Method::POST,
            "/api/v1/users",
            Some(
                json!({"username": "lost", "password": PASSWORD, "roles": ["viewer"],
                "region": "/hz/gongshu/x"}),
            ),
        )
        .await?;
    assert_eq!(status, 422, "{v}");
    assert!(
        detail(&v).contains("nearest existing region is '/hz'"),
        "{v}"
    );
    let (status, v) = node
        .api(
            Method::POST,
            "/api/v1/products",
            Some(
                json!({"name": "p", "nodeType": "direct", "dataFormat": "alink",
                "region": "/nowhere"}),
            ),
        )
        .await?;
    assert_eq!(status, 422, "{v}");
    assert!(detail(&v).contains("nearest existing region is '/'"), "{v}");

    // Delete refusals say what is in the way, and how much.
    create_user(&node, "ops-xihu", &["operator"], "/hz/xihu").await?;
    let product = node
        .expect(
            Method::POST,
            "/api/v1/products",
            Some(
                json!({"name": "lights", "nodeType": "direct", "dataFormat": "alink",
                "region": "/hz/binjiang"}),
            ),
            201,
        )
        .await?;
    let pk = product["productKey"].as_str().unwrap();
    let (status, v) = node.api(Method::DELETE, "/api/v1/regions/hz", None).await?;
    assert_eq!(status, 409);
    assert!(detail(&v).contains("2 sub-region(s)"), "{v}");
    let (status, v) = node
        .api(Method::DELETE, "/api/v1/regions/hz/xihu", None)
        .await?;
    assert_eq!(status, 409);
    assert!(detail(&v).contains("1 user(s)"), "{v}");
    let (status, v) = node
        .api(Method::DELETE, "/api/v1/regions/hz/binjiang", None)
        .await?;
    assert_eq!(status, 409);
    assert!(detail(&v).contains("1 product(s)"), "{v}");
    node.expect(Method::DELETE, &format!("/api/v1/products/{pk}"), None, 204)
        .await?;
    node.expect(Method::DELETE, "/api/v1/regions/hz/binjiang", None, 204)
        .await?;
    node.expect(Method::GET, "/api/v1/regions/hz/binjiang", None, 404)
        .await?;

    // An operator reads the part of the tree in their region and changes none of it.
    let ops = Session::login(&node, "ops-xihu").await?;
    let seen = ops
        .expect(Method::GET, "/api/v1/regions", None, 200)
        .await?;
    let seen: Vec<&str> = seen["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(seen, ["/hz/xihu"]);
    ops.expect(
        Method::POST,
        "/api/v1/regions",
        Some(json!({"path": "/hz/xihu/lingyin", "name": "灵隐街道"})),
        403,
    )
    .await?;

    let actions: Vec<String> = audit(&node)
        .await?
        .iter()
        .filter(|e| e["target"].as_str().unwrap_or("").starts_with("region:"))
        .map(|e| {
            format!(
                "{} {}",
                e["action"].as_str().unwrap(),
                e["target"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            "region.create region:/hz",
            "region.create region:/hz/xihu",
            "region.create region:/hz/binjiang",
            "region.update region:/hz/xihu",
            "region.delete region:/hz/binjiang",
        ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_tree_with_delete_refusals() -> anyhow::Result<()> {
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    node.login().await?;
    node.expect(
        Method::POST,
        "/api/v1/orgs",
        Some(json!({"id": "city", "name": "市政府"})),
        201,
    )
    .await?;
    let water = node
        .expect(
            Method::POST,
            "/api/v1/orgs",
            Some(
                json!({"id": "water", "name": "水务集团", "parent": "city", "region": "/hz",
                "contact": "+8657100000000"}),
            ),
            201,
        )
        .await?;
    assert_eq!(water["parent"], "city");
    let (status, v) = node
        .api(
            Method::POST,
            "/api/v1/orgs",
            Some(json!({"id": "x", "name": "x", "parent": "nobody"})),
        )
        .await?;
    assert_eq!(status, 422);
    assert!(detail(&v).contains("'nobody' does not exist"), "{v}");
    let (status, _) = node
        .api(
            Method::POST,
            "/api/v1/orgs",
            Some(json!({"id": "a/b", "name": "x"})),
        )
        .await?;
    assert_eq!(status, 422);
    let children = node
        .expect(Method::GET, "/api/v1/orgs?parent=city", None, 200)
        .await?;
    assert_eq!(children["items"][0]["id"], "water");

    node.expect(
        Method::POST,
        "/api/v1/users",
        Some(
            json!({"username": "plumber", "password": PASSWORD, "roles": ["viewer"],
            "org": "water", "region": "/"}),
        ),
        201,
    )
    .await?;
    // Once the tree exists, accounts and products belong to organisations in it.
    let (status, v) = node
        .api(
            Method::POST,
            "/api/v1/users",
            Some(
                json!({"username": "fitter", "password": PASSWORD, "roles": ["viewer"],
                "org": "gas", "region": "/"}),
            ),
        )
        .await?;
    assert_eq!(status, 422, "{v}");
    assert!(
        detail(&v).contains("'gas' is not in the organisation tree"),
        "{v}"
    );
    let (status, v) = node
        .api(
            Method::POST,
            "/api/v1/products",
            Some(json!({"name": "Gas meter", "nodeType": "direct", "dataFormat": "alink", "org": "gas"})),
        )
        .await?;
    assert_eq!(status, 422, "{v}");
    assert!(detail(&v).contains("POST /api/v1/orgs"), "{v}");
    let (status, v) = node.api(Method::DELETE, "/api/v1/orgs/city", None).await?;
    assert_eq!(status, 409);
    assert!(detail(&v).contains("1 sub-organisation(s)"), "{v}");
    let (status, v) = node.api(Method::DELETE, "/api/v1/orgs/water", None).await?;
    assert_eq!(status, 409);
    assert!(detail(&v).contains("1 user(s)"), "{v}");

    // A member reads their own organisation only, and changes nothing.
    let plumber = Session::login(&node, "plumber").await?;
    let seen = plumber
        .expect(Method::GET, "/api/v1/orgs", None, 200)
        .await?;
    assert_eq!(seen["items"].as_array().unwrap().len(), 1);
    assert_eq!(seen["items"][0]["id"], "water");
    plumber
        .expect(
            Method::PATCH,
            "/api/v1/orgs/water",
            Some(json!({"name": "mine now"})),
            403,
        )
        .await?;
    let renamed = node
        .expect(
            Method::PATCH,
            "/api/v1/orgs/water",
            Some(json!({"name": "市水务集团", "contact": ""})),
            200,
        )
        .await?;
    assert_eq!(renamed["name"], "市水务集团");
    assert_eq!(renamed["contact"], Value::Null);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_role_grants_exactly_its_permissions_within_scope() -> anyhow::Result<()> {
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    node.login().await?;
    let product = |name: &str, org: &str, region: &str| {
        json!({"name": name, "nodeType": "direct", "dataFormat": "alink", "org": org,
            "region": region})
    };
    let mine = node
        .expect(
            Method::POST,
            "/api/v1/products",
            Some(product("xihu", "", "/hz/xihu")),
            201,
        )
        .await?["productKey"]
        .as_str()
        .unwrap()
        .to_string();
    let elsewhere = node
        .expect(
            Method::POST,
            "/api/v1/products",
            Some(product("binjiang", "", "/hz/binjiang")),
            201,
        )
        .await?["productKey"]
        .as_str()
        .unwrap()
        .to_string();
    let other_org = node
        .expect(
            Method::POST,
            "/api/v1/products",
            Some(product("water", "water", "/hz/xihu")),
            201,
        )
        .await?["productKey"]
        .as_str()
        .unwrap()
        .to_string();
    for pk in [&mine, &elsewhere, &other_org] {
        node.expect(
            Method::POST,
            &format!("/api/v1/products/{pk}/devices"),
            Some(json!({"deviceName": "dev-1"})),
            201,
        )
        .await?;
    }

    // Reserved actions and built-in names are refused before anything is stored.
    for reserved in [
        "policy.write",
        "audit.read",
        "user.write",
        "role.write",
        "decision.read",
    ] {
        let (status, v) = node
            .api(
                Method::POST,
                "/api/v1/roles",
                Some(json!({"name": "sneaky", "permissions": ["device.read", reserved]})),
            )
            .await?;
        assert_eq!(status, 422, "{reserved}: {v}");
        assert!(detail(&v).contains("cannot be granted"), "{v}");
    }
    let (status, _) = node
        .api(
            Method::POST,
            "/api/v1/roles",
            Some(json!({"name": "admin", "permissions": ["device.read"]})),
        )
        .await?;
    assert_eq!(status, 422);
    let role = node
        .expect(
            Method::POST,
            "/api/v1/roles",
            Some(
                json!({"name": "inspector", "description": "Reads devices in the field",
                "permissions": ["device.read", "product.read"]}),
            ),
            201,
        )
        .await?;
    assert_eq!(role["builtIn"], false);
    let roles = node.expect(Method::GET, "/api/v1/roles", None, 200).await?;
    let names: Vec<&str> = roles["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(names.starts_with(&["admin", "operator"]) && names.contains(&"inspector"));
    assert!(
        roles["grantable"]
            .as_array()
            .unwrap()
            .contains(&json!("device.invoke"))
    );
    assert!(
        !roles["grantable"]
            .as_array()
            .unwrap()
            .contains(&json!("policy.write"))
    );

    // Unknown roles are refused when given to someone.
    let (status, v) = node
        .api(
            Method::POST,
            "/api/v1/users",
            Some(json!({"username": "x", "password": PASSWORD, "roles": ["inspectr"]})),
        )
        .await?;
    assert_eq!(status, 422);
    assert!(detail(&v).contains("inspectr"), "{v}");

    create_user(&node, "insp", &["inspector"], "/hz/xihu").await?;
    let insp = Session::login(&node, "insp").await?;
    let device = |pk: &str| format!("/api/v1/products/{pk}/devices/dev-1");
    insp.expect(Method::GET, &device(&mine), None, 200).await?;
    insp.expect(Method::GET, &format!("/api/v1/products/{mine}"), None, 200)
        .await?;
    // Not a permission it has…
    insp.expect(
        Method::PATCH,
        &device(&mine),
        Some(json!({"nickname": "x"})),
        403,
    )
    .await?;
    insp.expect(Method::DELETE, &device(&mine), None, 403)
        .await?;
    insp.expect(
        Method::POST,
        "/api/v1/products",
        Some(product("mine", "", "/hz/xihu")),
        403,
    )
    .await?;
    // …nor outside its region or organisation…
    let (status, v) = insp.call(Method::GET, &device(&elsewhere), None).await?;
    assert_eq!(status, 403);
    assert!(detail(&v).contains("outside your region"), "{v}");
    let (status, v) = insp.call(Method::GET, &device(&other_org), None).await?;
    assert_eq!(status, 403);
    assert!(detail(&v).contains("organisation"), "{v}");
    let listed = insp
        .expect(Method::GET, "/api/v1/devices", None, 200)
        .await?;
    let listed: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["productKey"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [mine.as_str()]);
    // …nor anything reserved.
    insp.expect(Method::GET, "/api/v1/audit", None, 403).await?;
    insp.expect(Method::GET, "/api/v1/roles", None, 403).await?;
    insp.expect(
        Method::PUT,
        "/api/v1/users/insp/roles",
        Some(json!({"roles": ["admin"]})),
        403,
    )
    .await?;

    // A changed role applies to its holders' next request.
    node.expect(
        Method::PATCH,
        "/api/v1/roles/inspector",
        Some(json!({"permissions": ["device.read", "device.write", "product.read"]})),
        200,
    )
    .await?;
    insp.expect(
        Method::PATCH,
        &device(&mine),
        Some(json!({"nickname": "checked"})),
        200,
    )
    .await?;
    insp.expect(
        Method::PATCH,
        &device(&elsewhere),
        Some(json!({"nickname": "x"})),
        403,
    )
    .await?;
    let (status, v) = node
        .api(
            Method::PATCH,
            "/api/v1/roles/inspector",
            Some(json!({"permissions": ["policy.write"]})),
        )
        .await?;
    assert_eq!(status, 422, "{v}");

    // A held role cannot go; changing who holds it is audited, and separation of duties holds.
    let (status, v) = node
        .api(Method::DELETE, "/api/v1/roles/inspector", None)
        .await?;
    assert_eq!(status, 409);
    assert!(detail(&v).contains("held by 1 user(s) (insp)"), "{v}");
    let (status, v) = node
        .api(
            Method::PUT,
            "/api/v1/users/insp/roles",
            Some(json!({"roles": ["admin", "auditor"]})),
        )
        .await?;
    assert_eq!(status, 403);
    assert!(detail(&v).contains("different people"), "{v}");
    let changed = node
        .expect(
            Method::PUT,
            "/api/v1/users/insp/roles",
            Some(json!({"roles": ["viewer"]})),
            200,
        )
        .await?;
    assert_eq!(changed["roles"], json!(["viewer"]));
    insp.expect(
        Method::PATCH,
        &device(&mine),
        Some(json!({"nickname": "again"})),
        403,
    )
    .await?;
    node.expect(Method::DELETE, "/api/v1/roles/inspector", None, 204)
        .await?;
    node.expect(Method::GET, "/api/v1/roles/inspector", None, 404)
        .await?;

    let log = audit(&node).await?;
    let change = log
        .iter()
        .find(|e| e["action"] == "user.roles")
        .expect("the role change is audited");
    assert_eq!(change["target"], "user:insp");
    assert_eq!(change["detail"]["from"], json!(["inspector"]));
    assert_eq!(change["detail"]["to"], json!(["viewer"]));
    let role_actions: Vec<&str> = log
        .iter()
        .filter(|e| e["target"] == "role:inspector")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(role_actions, ["role.create", "role.update", "role.delete"]);
    let verify = node
        .expect(Method::GET, "/api/v1/audit/verify", None, 200)
        .await?;
    assert_eq!(verify["intact"], true);

    // Users come a page at a time, searchable.
    let page = node
        .expect(
            Method::GET,
            "/api/v1/users?page=1&pageSize=1&q=ins",
            None,
            200,
        )
        .await?;
    assert_eq!(page["total"], 1);
    assert_eq!(page["items"][0]["username"], "insp");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_manages_regions_orgs_and_roles() -> anyhow::Result<()> {
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    node.login().await?;
    let token = node.token.clone().unwrap();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(binary())
            .args(args)
            .env("LOTUS_URL", &node.http)
            .env("LOTUS_TOKEN", &token)
            .env("HOME", node.data_dir.as_os_str())
            .output()
            .expect("the CLI runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = cli(&[
        "region",
        "add",
        "/hz",
        "--name",
        "杭州市",
        "--code",
        "330100",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("杭州市"), "{out}");
    let (ok, _, err) = cli(&["region", "add", "/hz/xihu", "--name", "西湖区"]);
    assert!(ok, "{err}");
    let (ok, out, err) = cli(&["region", "update", "/hz/xihu", "--code", "330106"]);
    assert!(ok, "{err}");
    assert!(out.contains("330106"), "{out}");
    let (ok, out, _) = cli(&["region", "list", "--parent", "/hz"]);
    assert!(ok && out.contains("/hz/xihu"), "{out}");
    let (ok, _, err) = cli(&["region", "delete", "/hz"]);
    assert!(
        !ok && err.contains("409") && err.contains("1 sub-region(s)"),
        "{err}"
    );

    let (ok, _, err) = cli(&["org", "add", "water", "--name", "水务", "--region", "/hz"]);
    assert!(ok, "{err}");
    let (ok, out, _) = cli(&["org", "list"]);
    assert!(ok && out.contains("\"water\""), "{out}");

    let (ok, _, err) = cli(&["role", "create", "inspector", "--permission", "device.read"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&["role", "create", "bad", "--permission", "policy.write"]);
    assert!(!ok && err.contains("422"), "{err}");
    create_user(&node, "alice", &["viewer"], "/hz/xihu").await?;
    let (ok, out, err) = cli(&["role", "assign", "alice", "--role", "inspector"]);
    assert!(ok, "{err}");
    assert!(out.contains("inspector"), "{out}");
    let (ok, _, err) = cli(&["role", "delete", "inspector"]);
    assert!(!ok && err.contains("alice"), "{err}");
    let (ok, _, err) = cli(&["org", "delete", "water"]);
    assert!(ok, "{err}");
    Ok(())
}

/// A department sees what its sub-units own, a sub-unit not its parent's nor its siblings',
/// in lists and one by one; a new sub-unit counts at once, without logging in again.
async fn organisation_scope_covers_the_subtree(options: NodeOptions) -> anyhow::Result<()> {
    let mut node = LotusNode::start(options).await?;
    node.login().await?;
    for (id, parent) in [
        ("city", None),
        ("water", Some("city")),
        ("power", Some("city")),
    ] {
        node.expect(
            Method::POST,
            "/api/v1/orgs",
            Some(json!({"id": id, "name": id, "parent": parent})),
            201,
        )
        .await?;
    }
    let mut products = std::collections::HashMap::new();
    for org in ["city", "water", "power"] {
        let p = node
            .expect(
                Method::POST,
                "/api/v1/products",
                Some(json!({"name": format!("{org} meter"), "nodeType": "direct",
                    "dataFormat": "alink", "org": org})),
                201,
            )
            .await?;
        products.insert(org, p["productKey"].as_str().unwrap().to_string());
    }
    node.expect(
        Method::POST,
        &format!("/api/v1/products/{}/devices", products["water"]),
        Some(json!({"deviceName": "meter-1"})),
        201,
    )
    .await?;
    for (name, org) in [("mayor", "city"), ("plumber", "water")] {
        node.expect(
            Method::POST,
            "/api/v1/users",
            Some(
                json!({"username": name, "password": PASSWORD, "roles": ["operator"],
                "org": org, "region": "/"}),
            ),
            201,
        )
        .await?;
    }
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["productKey"].as_str().unwrap().to_string())
            .collect();
        k.sort();
        k
    };
    let mut all: Vec<String> = products.values().cloned().collect();
    all.sort();

    let mayor = Session::login(&node, "mayor").await?;
    let seen = mayor
        .expect(Method::GET, "/api/v1/products?pageSize=100", None, 200)
        .await?;
    assert_eq!(keys(&seen), all, "{seen}");
    mayor
        .expect(
            Method::GET,
            &format!("/api/v1/products/{}", products["water"]),
            None,
            200,
        )
        .await?;
    let devices = mayor
        .expect(Method::GET, "/api/v1/devices?pageSize=100", None, 200)
        .await?;
    assert_eq!(devices["total"], 1, "{devices}");
    mayor
        .expect(
            Method::GET,
            &format!("/api/v1/products/{}/devices/meter-1", products["water"]),
            None,
            200,
        )
        .await?;
    let orgs = mayor.expect(Method::GET, "/api/v1/orgs", None, 200).await?;
    assert_eq!(orgs["items"].as_array().unwrap().len(), 3, "{orgs}");

    let plumber = Session::login(&node, "plumber").await?;
    let seen = plumber
        .expect(Method::GET, "/api/v1/products?pageSize=100", None, 200)
        .await?;
    assert_eq!(keys(&seen), vec![products["water"].clone()], "{seen}");
    for org in ["city", "power"] {
        let (status, v) = plumber
            .call(
                Method::GET,
                &format!("/api/v1/products/{}", products[org]),
                None,
            )
            .await?;
        assert_eq!(status, 403, "{v}");
        assert!(
            detail(&v).contains(&format!("belongs to organisation {org}, not yours (water)")),
            "{v}"
        );
    }

    // A sub-unit created now is in the plumber's scope on their next request.
    node.expect(
        Method::POST,
        "/api/v1/orgs",
        Some(json!({"id": "water-north", "name": "north works", "parent": "water"})),
        201,
    )
    .await?;
    let north = node
        .expect(
            Method::POST,
            "/api/v1/products",
            Some(
                json!({"name": "north meter", "nodeType": "direct", "dataFormat": "alink",
                "org": "water-north"}),
            ),
            201,
        )
        .await?;
    let north = north["productKey"].as_str().unwrap().to_string();
    let seen = plumber
        .expect(Method::GET, "/api/v1/products?pageSize=100", None, 200)
        .await?;
    let mut expected = vec![products["water"].clone(), north.clone()];
    expected.sort();
    assert_eq!(keys(&seen), expected, "{seen}");
    plumber
        .expect(
            Method::PATCH,
            &format!("/api/v1/products/{north}"),
            Some(json!({"description": "maintained by the water group"})),
            200,
        )
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organisation_scope_covers_the_subtree_on_sqlite() -> anyhow::Result<()> {
    organisation_scope_covers_the_subtree(NodeOptions::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organisation_scope_covers_the_subtree_on_postgres() -> anyhow::Result<()> {
    let pg = lotus_test_harness::postgres::TestPostgres::start()?;
    organisation_scope_covers_the_subtree(NodeOptions {
        database_url: Some(pg.url.clone()),
        ..Default::default()
    })
    .await
}
