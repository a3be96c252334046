//! The host side of the operators' portal through the real binary: the built app served at `/`
//! with its cache headers and history fallback (and a clear answer while it is not built), the
//! personal center, the platform style, and a device's live feed over Server-Sent Events.

use std::path::Path;
use std::time::{Duration, Instant};

use lotus_e2e::{Fixture, PASSWORD, Session, create_user, sys};
use lotus_test_harness::device::mqtt_options;
use lotus_test_harness::mqtt::Client;
use lotus_test_harness::node::{LotusNode, NodeOptions};
use reqwest::{Method, StatusCode, header};
use rumqttc::QoS;
use serde_json::{Value, json};

const BUILD: &str = "npm --prefix portal ci && npm --prefix portal run build";

async fn node_with(options: NodeOptions) -> anyhow::Result<LotusNode> {
    let mut node = LotusNode::start(options).await?;
    node.login().await?;
    Ok(node)
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(path.parent().unwrap())?;
    std::fs::write(path, text)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_is_served_with_cache_headers_and_history_fallback() -> anyhow::Result<()> {
    let build = tempfile::tempdir()?;
    let dist = build.path().join("dist");
    let node = node_with(NodeOptions {
        extra_args: vec!["--portal-dir".into(), dist.display().to_string()],
        ..NodeOptions::default()
    })
    .await?;
    let get = |path: &str| node.client.get(format!("{}{path}", node.http));

    // Not built yet: a problem for programs, a page for browsers, both with the command.
    let r = get("/").send().await?;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        r.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    let problem: Value = r.json().await?;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains(BUILD), "{detail}");
    assert!(detail.contains(&dist.display().to_string()), "{detail}");
    let r = get("/devices/abc")
        .header(header::ACCEPT, "text/html,application/xhtml+xml")
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        r.headers()[header::CONTENT_TYPE]
            .to_str()?
            .starts_with("text/html")
    );
    let page = r.text().await?;
    assert!(page.contains("The portal is not built"), "{page}");
    assert!(page.contains("npm --prefix portal ci &amp;&amp; npm --prefix portal run build"));
    // The API does not depend on the portal.
    node.expect(Method::GET, "/api/v1/style", None, 200).await?;

    // Built while the node runs: served without a restart.
    let script = format!("console.log('lotus');\n{}", "// padding\n".repeat(300));
    write(
        &dist.join("index.html"),
        "<!doctype html><title>Lotus portal</title><div id=app></div>",
    )?;
    write(&dist.join("assets/x.js"), &script)?;
    write(
        &dist.join("favicon.svg"),
        "<svg xmlns='http://www.w3.org/2000/svg'/>",
    )?;

    for path in [
        "/",
        "/index.html",
        "/devices/abc",
        "/products/p1/devices/d.1",
    ] {
        let r = get(path).send().await?;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache", "{path}");
        assert!(
            r.headers()[header::CONTENT_TYPE]
                .to_str()?
                .starts_with("text/html"),
            "{path}"
        );
        assert!(r.text().await?.contains("Lotus portal"), "{path}");
    }
    let r = get("/assets/x.js").send().await?;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()[header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    assert!(
        r.headers()[header::CONTENT_TYPE]
            .to_str()?
            .contains("javascript")
    );
    assert_eq!(r.text().await?, script);
    let r = get("/favicon.svg").send().await?;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");

    // Compressed for clients that accept it.
    let r = get("/assets/x.js")
        .header(header::ACCEPT_ENCODING, "gzip")
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip");
    assert!(r.bytes().await?.len() < script.len() / 4);

    // A missing asset is not the app's page (it would be cached as the script).
    let r = get("/assets/gone.js").send().await?;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        r.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );

    // The node's own paths keep their answers.
    for path in ["/api/v1/nope", "/api", "/auth/nope", "/topic"] {
        let r = get(path).send().await?;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "application/problem+json",
            "{path}"
        );
    }
    let r = get("/healthz").send().await?;
    assert_eq!(r.status(), StatusCode::OK);
    let r = node
        .client
        .post(format!("{}/devices/abc", node.http))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let doc = node
        .expect(Method::GET, "/api/v1/openapi.json", None, 200)
        .await?;
    for path in [
        "/api/v1/me",
        "/api/v1/me/password",
        "/api/v1/style",
        "/api/v1/products/{productKey}/devices/{deviceName}/live",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not documented");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_center_reads_and_changes_profile_and_password() -> anyhow::Result<()> {
    let node = node_with(NodeOptions::default()).await?;
    create_user(&node, "ops", &["operator"], "/hz/xihu").await?;
    let ops = Session::login(&node, "ops").await?;

    let me = ops.expect(Method::GET, "/api/v1/me", None, 200).await?;
    assert_eq!(me["username"], "ops");
    assert_eq!(me["roles"], json!(["operator"]));
    assert_eq!(me["region"], "/hz/xihu");
    assert_eq!(me["org"], "");
    assert_eq!(me["displayName"], Value::Null);
    assert!(me["createdAt"].as_i64().unwrap() > 0);
    let (status, _) = node
        .client
        .get(format!("{}/api/v1/me", node.http))
        .send()
        .await
        .map(|r| (r.status(), ()))?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let me = ops
        .expect(
            Method::PUT,
            "/api/v1/me",
            Some(json!({"displayName": " Li Lei ", "email": "li.lei@xihu.gov.cn", "phone": "+8613812345678"})),
            200,
        )
        .await?;
    assert_eq!(me["displayName"], "Li Lei");
    assert_eq!(me["email"], "li.lei@xihu.gov.cn");
    assert_eq!(me["phone"], "+8613812345678");
    for (body, field) in [
        (json!({"email": "li.lei"}), "email"),
        (json!({"email": "li lei@xihu.gov.cn"}), "email"),
        (json!({"phone": "13812345678"}), "phone"),
        (json!({"phone": "+86 138"}), "phone"),
        (json!({"phone": "+12345"}), "phone"),
        (json!({"displayName": "x".repeat(65)}), "displayName"),
    ] {
        let p = ops
            .expect(Method::PUT, "/api/v1/me", Some(body.clone()), 422)
            .await?;
        assert!(
            p["detail"].as_str().unwrap().starts_with(field),
            "{body}: {p}"
        );
    }
    // Roles and region are not the user's to change.
    ops.expect(
        Method::PUT,
        "/api/v1/me",
        Some(json!({"roles": ["admin"]})),
        422,
    )
    .await?;
    // A field left out keeps its value; null clears it.
    let me = ops
        .expect(Method::PUT, "/api/v1/me", Some(json!({"phone": null})), 200)
        .await?;
    assert_eq!(me["phone"], Value::Null);
    assert_eq!(me["email"], "li.lei@xihu.gov.cn");
    let me = ops.expect(Method::GET, "/api/v1/me", None, 200).await?;
    assert_eq!(me["displayName"], "Li Lei");
    assert_eq!(me["roles"], json!(["operator"]));

    // Administrators see the details in the user list and may give them at creation.
    let users = node.expect(Method::GET, "/api/v1/users", None, 200).await?;
    let listed = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "ops")
        .unwrap();
    assert_eq!(listed["email"], "li.lei@xihu.gov.cn");
    assert_eq!(listed["displayName"], "Li Lei");
    let created = node
        .expect(
            Method::POST,
            "/api/v1/users",
            Some(
                json!({"username": "han", "password": PASSWORD, "roles": ["viewer"],
                "displayName": "Han Meimei", "email": "han@example.org", "phone": "+861234567"}),
            ),
            201,
        )
        .await?;
    assert_eq!(created["displayName"], "Han Meimei");
    assert_eq!(created["phone"], "+861234567");
    let p = node
        .expect(
            Method::POST,
            "/api/v1/users",
            Some(json!({"username": "bad", "password": PASSWORD, "roles": ["viewer"], "email": "nope"})),
            422,
        )
        .await?;
    assert!(p["detail"].as_str().unwrap().starts_with("email"), "{p}");

    // Passwords: the current one must be right, the new one must keep the rule.
    let other = Session::login(&node, "ops").await?;
    let p = ops
        .expect(
            Method::POST,
            "/api/v1/me/password",
            Some(json!({"current": "wrong-password-1", "new": "Brand-new-secret-2"})),
            403,
        )
        .await?;
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("current password is wrong"),
        "{p}"
    );
    for (new, rule) in [
        ("short-1", "at least 10 characters"),
        (
            "onlyletterslong",
            "at least two of letters, digits and other",
        ),
        ("my-ops-password-1", "must not contain the username"),
    ] {
        let p = ops
            .expect(
                Method::POST,
                "/api/v1/me/password",
                Some(json!({"current": PASSWORD, "new": new})),
                422,
            )
            .await?;
        assert_eq!(p["status"], 422);
        assert!(p["detail"].as_str().unwrap().contains(rule), "{new}: {p}");
    }
    ops.expect(
        Method::POST,
        "/api/v1/me/password",
        Some(json!({"current": PASSWORD, "new": "Brand-new-secret-2"})),
        204,
    )
    .await?;
    // This session goes on; the other one ended; only the new password logs in.
    ops.expect(Method::GET, "/api/v1/me", None, 200).await?;
    other.expect(Method::GET, "/api/v1/me", None, 401).await?;
    let login = |password: &str| {
        node.client
            .post(format!("{}/api/v1/auth/login", node.http))
            .json(&json!({"username": "ops", "password": password}))
            .send()
    };
    assert_eq!(login(PASSWORD).await?.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(login("Brand-new-secret-2").await?.status(), StatusCode::OK);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_style_is_public_and_changed_by_administrators() -> anyhow::Result<()> {
    let node = node_with(NodeOptions::default()).await?;
    let anonymous = || async {
        let r = node
            .client
            .get(format!("{}/api/v1/style", node.http))
            .send()
            .await?;
        anyhow::ensure!(
            r.status() == StatusCode::OK,
            "GET /api/v1/style: {}",
            r.status()
        );
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
        Ok::<Value, anyhow::Error>(r.json().await?)
    };
    assert_eq!(
        anonymous().await?,
        json!({"title": "Lotus", "themeColor": "#1f6feb", "logo": null, "loginBackground": null})
    );

    let logo = "data:image/svg+xml;base64,PHN2ZyB4bWxucz0naHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmcnLz4=";
    let style = node
        .expect(
            Method::PUT,
            "/api/v1/style",
            Some(json!({"title": "Hangzhou City IoT", "themeColor": "#0A7D4F", "logo": logo})),
            200,
        )
        .await?;
    assert_eq!(style["title"], "Hangzhou City IoT");
    assert_eq!(style["themeColor"], "#0a7d4f");
    assert_eq!(style["logo"], logo);
    // Applied at once, for everyone, logged in or not.
    let seen = anonymous().await?;
    assert_eq!(seen["title"], "Hangzhou City IoT");
    assert_eq!(seen["themeColor"], "#0a7d4f");
    assert_eq!(seen["logo"], logo);
    assert_eq!(seen["loginBackground"], Value::Null);

    for (body, field) in [
        (json!({"themeColor": "green"}), "themeColor"),
        (json!({"themeColor": "#12345"}), "themeColor"),
        (json!({"title": ""}), "title"),
        (json!({"title": "t".repeat(65)}), "title"),
        (json!({"logo": "https://example.org/logo.png"}), "logo"),
        (
            json!({"loginBackground": "data:text/html;base64,PGgxPg=="}),
            "loginBackground",
        ),
    ] {
        let p = node
            .expect(Method::PUT, "/api/v1/style", Some(body.clone()), 422)
            .await?;
        assert!(
            p["detail"].as_str().unwrap().starts_with(field),
            "{body}: {p}"
        );
    }
    let big = format!(
        "data:image/png;base64,{}",
        "A".repeat((512 * 1024 + 3) / 3 * 4 + 8)
    );
    let p = node
        .expect(
            Method::PUT,
            "/api/v1/style",
            Some(json!({"loginBackground": big})),
            422,
        )
        .await?;
    assert!(p["detail"].as_str().unwrap().contains("512 KiB"), "{p}");
    // Nothing of a refused change was kept.
    assert_eq!(anonymous().await?["themeColor"], "#0a7d4f");

    // Plain users may not change it; the policy says why.
    create_user(&node, "ops", &["operator"], "/").await?;
    let ops = Session::login(&node, "ops").await?;
    let p = ops
        .expect(
            Method::PUT,
            "/api/v1/style",
            Some(json!({"themeColor": "#ff0000"})),
            403,
        )
        .await?;
    assert!(p["detail"].as_str().unwrap().contains("style.write"), "{p}");
    let (status, _) = node
        .client
        .put(format!("{}/api/v1/style", node.http))
        .json(&json!({"themeColor": "#ff0000"}))
        .send()
        .await
        .map(|r| (r.status(), ()))?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // null restores a default.
    let style = node
        .expect(
            Method::PUT,
            "/api/v1/style",
            Some(json!({"themeColor": null, "logo": null})),
            200,
        )
        .await?;
    assert_eq!(style["themeColor"], "#1f6feb");
    assert_eq!(style["logo"], Value::Null);
    assert_eq!(style["title"], "Hangzhou City IoT");
    Ok(())
}

/// A Server-Sent Events reader over a streaming response.
struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

impl EventStream {
    /// Opens a feed with the token in the query, as a browser's `EventSource` must.
    async fn open(node: &LotusNode, path: &str, token: &str) -> anyhow::Result<EventStream> {
        let request = node
            .client
            .get(format!("{}{path}?access_token={token}", node.http));
        Self::start(request, path).await
    }

    /// Opens a feed with the token in the `Authorization` header.
    async fn open_with_header(
        node: &LotusNode,
        path: &str,
        token: &str,
    ) -> anyhow::Result<EventStream> {
        let request = node
            .client
            .get(format!("{}{path}", node.http))
            .bearer_auth(token);
        Self::start(request, path).await
    }

    async fn start(request: reqwest::RequestBuilder, path: &str) -> anyhow::Result<EventStream> {
        let response = request
            .header(header::ACCEPT, "text/event-stream")
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == StatusCode::OK,
            "GET {path}: {}",
            response.status()
        );
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        Ok(EventStream {
            response,
            buffer: String::new(),
        })
    }

    /// The next event (name, JSON data), skipping keep-alive comments.
    async fn next(&mut self, deadline: Instant) -> anyhow::Result<(String, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut name, mut data) = (String::from("message"), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return Ok((name, serde_json::from_str(&data)?));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.response.chunk())
                .await
                .map_err(|_| anyhow::anyhow!("no event in time"))??
                .ok_or_else(|| anyhow::anyhow!("the feed ended"))?;
            self.buffer.push_str(std::str::from_utf8(&chunk)?);
        }
    }

    /// Waits for an event named `name` whose data satisfies `want`; returns it.
    async fn expect(&mut self, name: &str, want: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        loop {
            match self.next(deadline).await {
                Ok((n, data)) if n == name && want(&data) => return Ok(data),
                Ok(other) => seen.push(other),
                Err(e) => anyhow::bail!("waiting for a '{name}' event: {e}; saw {seen:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_feed_streams_a_devices_properties_and_messages() -> anyhow::Result<()> {
    let mut f = Fixture::start(2).await?;
    let d = &f.devices[0].clone();
    let live = format!("{}/live", f.device_path(0));
    // The device is in Xihu; an operator of Binjiang may not watch it.
    f.node
        .expect(
            Method::PATCH,
            &f.device_path(0),
            Some(json!({"region": "/hz/xihu"})),
            200,
        )
        .await?;
    create_user(&f.node, "ops-xihu", &["operator"], "/hz/xihu").await?;
    create_user(&f.node, "ops-binjiang", &["operator"], "/hz/binjiang").await?;
    let binjiang = Session::login(&f.node, "ops-binjiang").await?;
    let r = f
        .node
        .client
        .get(format!(
            "{}{live}?access_token={}",
            f.node.http, binjiang.token
        ))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let p: Value = r.json().await?;
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("outside your region"),
        "{p}"
    );
    // Without a token, with a bad one, or for a device that does not exist.
    let r = f
        .node
        .client
        .get(format!("{}{live}", f.node.http))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = f
        .node
        .client
        .get(format!("{}{live}?access_token=nope", f.node.http))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = f
        .node
        .client
        .get(format!(
            "{}/api/v1/products/{}/devices/ghost/live",
            f.node.http, f.product_key
        ))
        .bearer_auth(f.node.token.as_deref().unwrap())
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let xihu = Session::login(&f.node, "ops-xihu").await?;
    let mut feed = EventStream::open(&f.node, &live, &xihu.token).await?;
    let ready = feed.expect("ready", |_| true).await?;
    assert_eq!(ready["deviceName"], d.device_name.as_str());
    assert_eq!(ready["status"], "offline");

    let mut device = Client::connected(mqtt_options(d, f.node.mqtt)).await?;
    feed.expect("status", |s| s["status"] == "online").await?;

    let post = sys(d, "thing/event/property/post");
    let msg = json!({"id": "1", "version": "1.0", "params": {"Brightness": 42, "Current": 1.5},
        "method": "thing.event.property.post"});
    device
        .publish(&post, QoS::AtLeastOnce, msg.to_string())
        .await?;
    let p = feed
        .expect("property", |p| p["identifier"] == "Brightness")
        .await?;
    assert_eq!(p["value"], 42);
    assert!(p["time"].as_i64().unwrap() > 0);
    let m = feed.expect("message", |m| m["direction"] == "up").await?;
    assert_eq!(m["topic"], post);
    assert_eq!(m["encoding"], "utf-8");
    let payload: Value = serde_json::from_str(m["payload"].as_str().unwrap())?;
    assert_eq!(payload["params"]["Brightness"], 42);

    let fault = sys(d, "thing/event/LampFault/post");
    device
        .publish(
            &fault,
            QoS::AtLeastOnce,
            json!({"id": "2", "version": "1.0", "params": {"value": {"ErrorCode": 3}},
                "method": "thing.event.LampFault.post"})
            .to_string(),
        )
        .await?;
    let e = feed
        .expect("event", |e| e["identifier"] == "LampFault")
        .await?;
    assert_eq!(e["eventType"], "alert");
    assert_eq!(e["params"]["ErrorCode"], 3);

    // What the debug panel sends shows as a downlink.
    device
        .subscribe(&sys(d, "thing/service/property/set"), QoS::AtLeastOnce)
        .await?;
    let accepted = xihu
        .expect(
            Method::POST,
            &format!("{}/properties:set", f.device_path(0)),
            Some(json!({"params": {"Brightness": 7}})),
            202,
        )
        .await?;
    let down = feed.expect("message", |m| m["direction"] == "down").await?;
    assert_eq!(down["topic"], sys(d, "thing/service/property/set"));
    let request: Value = serde_json::from_str(down["payload"].as_str().unwrap())?;
    assert_eq!(request["id"], accepted["messageId"]);
    assert_eq!(request["params"]["Brightness"], 7);

    device.disconnect().await;
    feed.expect("status", |s| s["status"] == "offline").await?;

    // Deleting a device ends its feeds.
    let second = format!("{}/live", f.device_path(1));
    let mut gone =
        EventStream::open_with_header(&f.node, &second, f.node.token.as_deref().unwrap()).await?;
    gone.expect("ready", |_| true).await?;
    f.node
        .expect(Method::DELETE, &f.device_path(1), None, 204)
        .await?;
    gone.expect("lifecycle", |l| l["action"] == "deleted")
        .await?;
    let end = gone.expect("end", |_| true).await?;
    assert_eq!(end["reason"], "the device was deleted");
    anyhow::ensure!(
        gone.next(Instant::now() + Duration::from_secs(5))
            .await
            .is_err_and(|e| e.to_string().contains("ended")),
        "the feed of a deleted device goes on"
    );

    // An open feed does not hold up a graceful shutdown: it is told, then ended.
    let status = f.node.stop()?;
    assert!(status.success(), "{status}");
    let end = feed.expect("end", |_| true).await?;
    assert!(
        end["reason"].as_str().unwrap().contains("shutting down"),
        "{end}"
    );
    Ok(())
}
