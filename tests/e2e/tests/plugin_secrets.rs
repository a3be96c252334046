//! Operator-configured plugin secrets through the real binary: a channel plugin posts to a
//! webhook with a bearer token it reads through its `secrets` capability. The operator sets,
//! rotates and deletes the token over the API and the CLI; the value is never returned, is not
//! stored in clear, and reaches only the plugin whose manifest lists it.

use std::sync::Arc;

use lotus_plugin_artifacts as artifacts;
use lotus_test_harness::node::{ADMIN_PASSWORD, LotusNode, NodeOptions, binary};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

/// A webhook on loopback that records each request's `authorization` header and answers 200
/// with a provider id.
async fn webhook() -> anyhow::Result<(u16, Arc<Mutex<Vec<String>>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut sock, _)) = listener.accept().await {
            n += 1;
            let mut buf = vec![0u8; 16 * 1024];
            let mut len = 0;
            // Headers, then the Content-Length body.
            while let Ok(read) = sock.read(&mut buf[len..]).await {
                if read == 0 {
                    break;
                }
                len += read;
                let text = String::from_utf8_lossy(&buf[..len]).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let body_len = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if len >= end + 4 + body_len {
                        break;
                    }
                }
            }
            let text = String::from_utf8_lossy(&buf[..len]).to_string();
            let auth = text
                .lines()
                .find_map(|l| {
                    let lower = l.to_ascii_lowercase();
                    lower
                        .starts_with("authorization:")
                        .then(|| l["authorization:".len()..].trim().to_string())
                })
                .unwrap_or_default();
            record.lock().await.push(auth);
            let body = format!("msg-{n}");
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(response.as_bytes()).await;
        }
    });
    Ok((port, seen))
}

fn channel_manifest(port: u16) -> String {
    format!(
        "id = \"ops-webhook\"\nversion = \"1.0.0\"\nworld = \"channel\"\n\
         description = \"posts notifications to the operations webhook\"\n\
         capabilities = [\"http\", \"secrets\"]\nhttp_allow = [\"127.0.0.1:{port}\"]\n\
         secrets = [\"webhook-token\"]\n"
    )
}

async fn install(node: &LotusNode, manifest: String, wasm: &str) -> anyhow::Result<(u16, Value)> {
    lotus_e2e::upload_plugin(
        node,
        Method::POST,
        "/api/v1/plugins",
        &manifest,
        "wasm",
        std::fs::read(wasm)?,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_plugin_reads_the_secret_the_operator_sets() -> anyhow::Result<()> {
    let (port, seen) = webhook().await?;
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    node.login().await?;
    let (status, body) = install(&node, channel_manifest(port), artifacts::MINIMAL_CHANNEL).await?;
    // It calls out over http: stored, and waiting for a security administrator's approval.
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "pending_approval", "{body}");
    assert!(
        body["statusReason"]
            .as_str()
            .unwrap()
            .contains("security_admin"),
        "{body}"
    );
    let (status, p) = node
        .api(
            Method::POST,
            "/api/v1/plugins/ops-webhook/deliver",
            Some(json!({"recipients": ["x"], "subject": "s", "body": "b"})),
        )
        .await?;
    assert_ne!(
        status.as_u16(),
        200,
        "a plugin waiting for approval does not run: {p}"
    );
    // The installer cannot approve their own upload.
    let (status, p) = node
        .api(Method::POST, "/api/v1/plugins/ops-webhook/approve", None)
        .await?;
    assert_eq!(status.as_u16(), 403, "{p}");
    let approved = lotus_e2e::approve_plugin(&node, "ops-webhook").await?;
    assert_eq!(approved["status"], "active", "{approved}");
    let url = format!("http://127.0.0.1:{port}/hook");
    let notify = json!({"recipients": [url], "subject": "pump 7", "body": "pressure low"});

    // Before the operator sets it, the plugin's read fails and the delivery says so.
    let (status, p) = node
        .api(
            Method::POST,
            "/api/v1/plugins/ops-webhook/deliver",
            Some(notify.clone()),
        )
        .await?;
    assert_eq!(status.as_u16(), 502, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("secret"), "{p}");
    assert!(seen.lock().await.is_empty());

    // Only names the manifest lists can be set; values are validated.
    let (status, p) = node
        .api(
            Method::PUT,
            "/api/v1/plugins/ops-webhook/secrets/other-token",
            Some(json!({"value": "x"})),
        )
        .await?;
    assert_eq!(status.as_u16(), 422, "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("webhook-token"),
        "{p}"
    );
    let (status, _) = node
        .api(
            Method::PUT,
            "/api/v1/plugins/ops-webhook/secrets/webhook-token",
            Some(json!({"value": ""})),
        )
        .await?;
    assert_eq!(status.as_u16(), 422);
    let (status, _) = node
        .api(
            Method::PUT,
            "/api/v1/plugins/nobody/secrets/webhook-token",
            Some(json!({"value": "x"})),
        )
        .await?;
    assert_eq!(status.as_u16(), 404);

    let set = node
        .expect(
            Method::PUT,
            "/api/v1/plugins/ops-webhook/secrets/webhook-token",
            Some(json!({"value": "tok-0f3a9c"})),
            200,
        )
        .await?;
    assert_eq!(set["name"], "webhook-token");
    assert_eq!(set["updatedBy"], "admin");
    let listed = node
        .expect(
            Method::GET,
            "/api/v1/plugins/ops-webhook/secrets",
            None,
            200,
        )
        .await?;
    assert_eq!(listed["items"][0]["name"], "webhook-token");
    assert!(
        !listed.to_string().contains("tok-0f3a9c"),
        "values are never returned"
    );
    let plugin = node
        .expect(Method::GET, "/api/v1/plugins/ops-webhook", None, 200)
        .await?;
    assert!(!plugin.to_string().contains("tok-0f3a9c"));

    let report = node
        .expect(
            Method::POST,
            "/api/v1/plugins/ops-webhook/deliver",
            Some(notify.clone()),
            200,
        )
        .await?;
    assert_eq!(report["status"], "delivered", "{report}");
    assert_eq!(report["providerId"], "msg-1");
    assert_eq!(seen.lock().await.as_slice(), ["Bearer tok-0f3a9c"]);

    // Sealed under the master key: the clear value is nowhere in the database file.
    let db = std::fs::read(node.data_dir.join("lotus.db"))?;
    let wal = std::fs::read(node.data_dir.join("lotus.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(10).any(|w| w == b"tok-0f3a9c"),
            "the secret is stored in clear"
        );
    }

    // Rotation through the CLI, the value read from standard input.
    let home = tempfile::tempdir()?;
    let cli = |args: &[&str], stdin: Option<&str>| -> anyhow::Result<std::process::Output> {
        let mut child = std::process::Command::new(binary())
            .args(args)
            .env("XDG_CONFIG_HOME", home.path())
            .env("LOTUS_URL", &node.http)
            .env_remove("LOTUS_TOKEN")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        if let Some(text) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
        }
        drop(child.stdin.take());
        Ok(child.wait_with_output()?)
    };
    let out = cli(
        &["login", "--username", "admin", "--password", ADMIN_PASSWORD],
        None,
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(
        &["plugin", "secret", "set", "ops-webhook", "webhook-token"],
        Some("tok-rotated\n"),
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["plugin", "secret", "list", "ops-webhook"], None)?;
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("webhook-token") && !listed.contains("tok-rotated"),
        "{listed}"
    );
    let out = cli(&["plugin", "deliver", "ops-webhook", "--to", &url], None)?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("delivered"));
    assert_eq!(
        seen.lock().await.last().map(String::as_str),
        Some("Bearer tok-rotated")
    );
    let out = cli(
        &["plugin", "secret", "set", "ops-webhook", "webhook-token"],
        Some(""),
    )?;
    assert!(!out.status.success(), "an empty secret is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));

    // Deleted: the plugin's next read fails again.
    let out = cli(
        &["plugin", "secret", "delete", "ops-webhook", "webhook-token"],
        None,
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, p) = node
        .api(
            Method::POST,
            "/api/v1/plugins/ops-webhook/deliver",
            Some(notify),
        )
        .await?;
    assert_eq!(status.as_u16(), 502, "{p}");
    let (status, _) = node
        .api(
            Method::DELETE,
            "/api/v1/plugins/ops-webhook/secrets/webhook-token",
            None,
        )
        .await?;
    assert_eq!(status.as_u16(), 404);
    node.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_reaches_only_the_plugin_that_lists_it() -> anyhow::Result<()> {
    let (port, seen) = webhook().await?;
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    node.login().await?;
    // The same component, installed as a plugin whose manifest grants `secrets` but lists a
    // different name: the runtime denies the read before the host looks anything up.
    let manifest = channel_manifest(port)
        .replace("ops-webhook", "other-webhook")
        .replace("secrets = [\"webhook-token\"]", "secrets = [\"unrelated\"]");
    let (status, body) = install(&node, manifest, artifacts::MINIMAL_CHANNEL).await?;
    assert_eq!(status, 202, "{body}");
    lotus_e2e::approve_plugin(&node, "other-webhook").await?;
    let (status, body) = install(&node, channel_manifest(port), artifacts::MINIMAL_CHANNEL).await?;
    assert_eq!(status, 202, "{body}");
    lotus_e2e::approve_plugin(&node, "ops-webhook").await?;
    node.expect(
        Method::PUT,
        "/api/v1/plugins/ops-webhook/secrets/webhook-token",
        Some(json!({"value": "tok-private"})),
        200,
    )
    .await?;
    let notify =
        json!({"recipients": [format!("http://127.0.0.1:{port}/")], "subject": "s", "body": "b"});
    let (status, p) = node
        .api(
            Method::POST,
            "/api/v1/plugins/other-webhook/deliver",
            Some(notify.clone()),
        )
        .await?;
    assert_eq!(status.as_u16(), 502, "{p}");
    assert!(
        seen.lock().await.is_empty(),
        "no request left with another plugin's token"
    );
    node.expect(
        Method::POST,
        "/api/v1/plugins/ops-webhook/deliver",
        Some(notify),
        200,
    )
    .await?;
    assert_eq!(seen.lock().await.as_slice(), ["Bearer tok-private"]);
    node.stop()?;
    Ok(())
}
