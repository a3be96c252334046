//! The command-line client: every command is one call to the node's REST API.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Log in and remember the token for later commands.
    Login {
        #[command(flatten)]
        conn: Connection,
        #[arg(long, default_value = "admin")]
        username: String,
        /// Or set LOTUS_PASSWORD.
        #[arg(long, env = "LOTUS_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// Products.
    #[command(subcommand)]
    Product(ProductCommand),
    /// A product's thing model (Alink TSL).
    #[command(subcommand, name = "thing-model")]
    ThingModel(ThingModelCommand),
    /// A product's topic classes.
    #[command(subcommand, name = "topic-class")]
    TopicClass(TopicClassCommand),
    /// Devices.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// MQTT credentials for applications, confined to granted topic filters.
    #[command(subcommand, name = "app-credential")]
    AppCredential(AppCredentialCommand),
    /// Wasm plugins: codecs, rules, event handlers, apps, channels.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Args, Clone)]
pub struct Connection {
    /// The node's HTTP address [default: the one used at login, else http://127.0.0.1:8080].
    #[arg(long, env = "LOTUS_URL", global = true)]
    url: Option<String>,
    /// An API token [default: the one saved by `lotus login`].
    #[arg(long, env = "LOTUS_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
pub enum ProductCommand {
    Create {
        #[command(flatten)]
        conn: Connection,
        #[arg(long)]
        name: String,
        /// direct, gateway or subdevice.
        #[arg(long, default_value = "direct")]
        node_type: String,
        /// alink or custom.
        #[arg(long, default_value = "alink")]
        data_format: String,
        #[arg(long)]
        dynamic_registration: bool,
        #[arg(long)]
        description: Option<String>,
    },
    List {
        #[command(flatten)]
        conn: Connection,
        #[arg(long, default_value_t = 1)]
        page: i64,
        #[arg(long, default_value_t = 50)]
        page_size: i64,
    },
    Get {
        #[command(flatten)]
        conn: Connection,
        product_key: String,
    },
    Delete {
        #[command(flatten)]
        conn: Connection,
        product_key: String,
    },
}

#[derive(Subcommand)]
pub enum ThingModelCommand {
    /// Upload a TSL JSON file (a new version).
    Put {
        #[command(flatten)]
        conn: Connection,
        product_key: String,
        file: PathBuf,
    },
    /// Print the full TSL.
    Get {
        #[command(flatten)]
        conn: Connection,
        product_key: String,
        #[arg(long)]
        version: Option<i64>,
    },
}

#[derive(Subcommand)]
pub enum TopicClassCommand {
    List {
        #[command(flatten)]
        conn: Connection,
        product_key: String,
    },
    Add {
        #[command(flatten)]
        conn: Connection,
        product_key: String,
        /// e.g. /${productKey}/${deviceName}/user/alarm
        #[arg(long)]
        template: String,
        /// pub, sub or all.
        #[arg(long)]
        operation: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    Delete {
        #[command(flatten)]
        conn: Connection,
        product_key: String,
        id: String,
    },
}

#[derive(Subcommand)]
pub enum DeviceCommand {
    /// Register a device and print its secret (shown only once).
    Create {
        #[command(flatten)]
        conn: Connection,
        product_key: String,
        #[arg(long)]
        name: Option<String>,
    },
    List {
        #[command(flatten)]
        conn: Connection,
        /// Only this product's devices.
        #[arg(long)]
        product_key: Option<String>,
        /// inactive, online, offline or disabled.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 1)]
        page: i64,
        #[arg(long, default_value_t = 50)]
        page_size: i64,
    },
    Get {
        #[command(flatten)]
        conn: Connection,
        product_key: String,
        device_name: String,
    },
    Enable {
        #[command(flatten)]
        conn: Connection,
        product_key: String,
        device_name: String,
    },
    Disable {
        #[command(flatten)]
        conn: Connection,
        product_key: String,
        device_name: String,
    },
    /// Delete a device: its secret is revoked and it is disconnected.
    Delete {
        #[command(flatten)]
        conn: Connection,
        product_key: String,
        device_name: String,
    },
    /// Latest property values.
    Properties {
        #[command(flatten)]
        conn: Connection,
        product_key: String,
        device_name: String,
    },
}

#[derive(Subcommand)]
pub enum AppCredentialCommand {
    /// Create a credential and print its username and secret (the secret is shown only once).
    Create {
        #[command(flatten)]
        conn: Connection,
        #[arg(long)]
        name: String,
        /// A filter the application may subscribe to, e.g. /a1B2c3D4e5F/+/user/update
        /// (repeatable).
        #[arg(long = "subscribe", value_name = "FILTER")]
        subscribe: Vec<String>,
        /// A filter the application may publish to (custom topics devices receive; repeatable).
        #[arg(long = "publish", value_name = "FILTER")]
        publish: Vec<String>,
    },
    List {
        #[command(flatten)]
        conn: Connection,
        #[arg(long, default_value_t = 1)]
        page: i64,
        #[arg(long, default_value_t = 50)]
        page_size: i64,
    },
    Get {
        #[command(flatten)]
        conn: Connection,
        id: i64,
    },
    /// Delete a credential: connected applications using it are disconnected.
    Delete {
        #[command(flatten)]
        conn: Connection,
        id: i64,
    },
}

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Install a plugin: its lotus-plugin.toml and its .wasm component.
    Install {
        #[command(flatten)]
        conn: Connection,
        #[arg(long)]
        manifest: PathBuf,
        #[arg(long)]
        wasm: PathBuf,
    },
    List {
        #[command(flatten)]
        conn: Connection,
    },
    /// A plugin with its versions and runtime status.
    Get {
        #[command(flatten)]
        conn: Connection,
        id: String,
    },
    /// Replace a plugin's running version with a new one (the old one is kept for rollback).
    Upgrade {
        #[command(flatten)]
        conn: Connection,
        id: String,
        #[arg(long)]
        manifest: PathBuf,
        #[arg(long)]
        wasm: PathBuf,
    },
    /// Go back to the version installed before the running one.
    Rollback {
        #[command(flatten)]
        conn: Connection,
        id: String,
    },
    Disable {
        #[command(flatten)]
        conn: Connection,
        id: String,
    },
    Enable {
        #[command(flatten)]
        conn: Connection,
        id: String,
    },
    /// Lift a suspension after repeated failures.
    Resume {
        #[command(flatten)]
        conn: Connection,
        id: String,
    },
    /// Remove a plugin and all its versions.
    Remove {
        #[command(flatten)]
        conn: Connection,
        id: String,
    },
    /// The plugin's newest log lines.
    Logs {
        #[command(flatten)]
        conn: Connection,
        id: String,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Messages plugins failed on, newest first.
    #[command(name = "dead-letters")]
    DeadLetters {
        #[command(flatten)]
        conn: Connection,
        #[arg(long)]
        plugin: Option<String>,
        #[arg(long)]
        product_key: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Make a codec plugin decode and encode a `dataFormat: custom` product's data.
    #[command(name = "bind-codec")]
    BindCodec {
        #[command(flatten)]
        conn: Connection,
        product_key: String,
        plugin: String,
    },
}

/// The multipart body of an install or upgrade, read from the two files.
fn plugin_upload(
    manifest: &std::path::Path,
    wasm: &std::path::Path,
) -> anyhow::Result<reqwest::multipart::Form> {
    let manifest_text = std::fs::read_to_string(manifest).with_context(|| {
        format!(
            "cannot read the manifest {} (give --manifest lotus-plugin.toml)",
            manifest.display()
        )
    })?;
    let wasm_bytes = std::fs::read(wasm).with_context(|| {
        format!(
            "cannot read the component {} (give --wasm file.wasm)",
            wasm.display()
        )
    })?;
    let file_name = wasm
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin.wasm".into());
    Ok(reqwest::multipart::Form::new()
        .text("manifest", manifest_text)
        .part(
            "wasm",
            reqwest::multipart::Part::bytes(wasm_bytes).file_name(file_name),
        ))
}

/// Grants from `--subscribe` and `--publish` filters; a filter given to both gets both actions.
fn grants_json(subscribe: &[String], publish: &[String]) -> Value {
    let mut grants: Vec<(String, Vec<&str>)> = Vec::new();
    for (filters, action) in [(subscribe, "subscribe"), (publish, "publish")] {
        for f in filters {
            match grants.iter_mut().find(|(g, _)| g == f) {
                Some((_, actions)) => actions.push(action),
                None => grants.push((f.clone(), vec![action])),
            }
        }
    }
    Value::Array(
        grants
            .into_iter()
            .map(|(filter, actions)| json!({"filter": filter, "actions": actions}))
            .collect(),
    )
}

#[derive(Serialize, Deserialize)]
struct Saved {
    url: String,
    token: String,
}

fn session_file() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("lotus").join("session.json")
}

fn saved() -> Option<Saved> {
    let text = std::fs::read_to_string(session_file()).ok()?;
    serde_json::from_str(&text).ok()
}

struct Client {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl Client {
    fn new(conn: &Connection) -> Client {
        let saved = saved();
        let url = conn
            .url
            .clone()
            .or_else(|| saved.as_ref().map(|s| s.url.clone()))
            .unwrap_or_else(|| "http://127.0.0.1:8080".into());
        let token = conn.token.clone().or_else(|| saved.map(|s| s.token));
        Client {
            http: reqwest::Client::new(),
            url: url.trim_end_matches('/').to_string(),
            token,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req).await
    }

    /// A multipart upload (plugins).
    async fn upload(
        &self,
        method: reqwest::Method,
        path: &str,
        form: reqwest::multipart::Form,
    ) -> anyhow::Result<Value> {
        let req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .multipart(form);
        self.send(req).await
    }

    async fn send(&self, mut req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the Lotus node at {}", self.url))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let detail = value
                .get("detail")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string());
            if status == reqwest::StatusCode::UNAUTHORIZED {
                bail!("{detail} (run `lotus login`)");
            }
            bail!(
                "{} {}: {detail}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            );
        }
        Ok(value)
    }
}

fn print(v: &Value) {
    if !v.is_null() {
        println!("{}", serde_json::to_string_pretty(v).expect("JSON prints"));
    }
}

fn enc(s: &str) -> String {
    s.replace('%', "%25")
        .replace('/', "%2F")
        .replace('?', "%3F")
        .replace('#', "%23")
}

pub async fn run(cmd: ClientCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    match cmd {
        ClientCommand::Login { conn, username, password } => {
            let client = Client::new(&conn);
            let v = client
                .call(Method::POST, "/api/v1/auth/login", Some(json!({"username": username, "password": password})))
                .await?;
            let token = v["token"].as_str().context("the node returned no token")?.to_string();
            let path = session_file();
            std::fs::create_dir_all(path.parent().expect("has a parent"))?;
            std::fs::write(&path, serde_json::to_string(&Saved { url: client.url.clone(), token })?)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            }
            println!("logged in to {} as {username}", client.url);
        }
        ClientCommand::Product(p) => match p {
            ProductCommand::Create { conn, name, node_type, data_format, dynamic_registration, description } => print(
                &Client::new(&conn)
                    .call(Method::POST, "/api/v1/products", Some(json!({
                        "name": name, "nodeType": node_type, "dataFormat": data_format,
                        "dynamicRegistration": dynamic_registration, "description": description.unwrap_or_default(),
                    })))
                    .await?,
            ),
            ProductCommand::List { conn, page, page_size } => print(
                &Client::new(&conn)
                    .call(Method::GET, &format!("/api/v1/products?page={page}&pageSize={page_size}"), None)
                    .await?,
            ),
            ProductCommand::Get { conn, product_key } => print(
                &Client::new(&conn)
                    .call(Method::GET, &format!("/api/v1/products/{}", enc(&product_key)), None)
                    .await?,
            ),
            ProductCommand::Delete { conn, product_key } => {
                Client::new(&conn)
                    .call(Method::DELETE, &format!("/api/v1/products/{}", enc(&product_key)), None)
                    .await?;
                println!("deleted product {product_key}");
            }
        },
        ClientCommand::ThingModel(t) => match t {
            ThingModelCommand::Put { conn, product_key, file } => {
                let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
                let tsl: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
                print(
                    &Client::new(&conn)
                        .call(Method::PUT, &format!("/api/v1/products/{}/thing-model", enc(&product_key)), Some(tsl))
                        .await?,
                )
            }
            ThingModelCommand::Get { conn, product_key, version } => {
                let q = version.map(|v| format!("?version={v}")).unwrap_or_default();
                print(
                    &Client::new(&conn)
                        .call(Method::GET, &format!("/api/v1/products/{}/thing-model{q}", enc(&product_key)), None)
                        .await?,
                )
            }
        },
        ClientCommand::TopicClass(t) => match t {
            TopicClassCommand::List { conn, product_key } => print(
                &Client::new(&conn)
                    .call(Method::GET, &format!("/api/v1/products/{}/topic-classes", enc(&product_key)), None)
                    .await?,
            ),
            TopicClassCommand::Add { conn, product_key, template, operation, description } => print(
                &Client::new(&conn)
                    .call(
                        Method::POST,
                        &format!("/api/v1/products/{}/topic-classes", enc(&product_key)),
                        Some(json!({"template": template, "operation": operation, "description": description})),
                    )
                    .await?,
            ),
            TopicClassCommand::Delete { conn, product_key, id } => {
                Client::new(&conn)
                    .call(Method::DELETE, &format!("/api/v1/products/{}/topic-classes/{}", enc(&product_key), enc(&id)), None)
                    .await?;
                println!("deleted topic class {id}");
            }
        },
        ClientCommand::Device(d) => {
            let dev = |pk: &str, dn: &str| format!("/api/v1/products/{}/devices/{}", enc(pk), enc(dn));
            match d {
                DeviceCommand::Create { conn, product_key, name } => print(
                    &Client::new(&conn)
                        .call(
                            Method::POST,
                            &format!("/api/v1/products/{}/devices", enc(&product_key)),
                            Some(json!({"deviceName": name})),
                        )
                        .await?,
                ),
                DeviceCommand::List { conn, product_key, status, page, page_size } => {
                    let mut q = format!("?page={page}&pageSize={page_size}");
                    if let Some(p) = product_key {
                        q.push_str(&format!("&productKey={}", enc(&p)));
                    }
                    if let Some(s) = status {
                        q.push_str(&format!("&status={s}"));
                    }
                    print(&Client::new(&conn).call(Method::GET, &format!("/api/v1/devices{q}"), None).await?)
                }
                DeviceCommand::Get { conn, product_key, device_name } => {
                    print(&Client::new(&conn).call(Method::GET, &dev(&product_key, &device_name), None).await?)
                }
                DeviceCommand::Enable { conn, product_key, device_name } => print(
                    &Client::new(&conn)
                        .call(Method::POST, &format!("{}/enable", dev(&product_key, &device_name)), None)
                        .await?,
                ),
                DeviceCommand::Disable { conn, product_key, device_name } => print(
                    &Client::new(&conn)
                        .call(Method::POST, &format!("{}/disable", dev(&product_key, &device_name)), None)
                        .await?,
                ),
                DeviceCommand::Delete { conn, product_key, device_name } => {
                    Client::new(&conn)
                        .call(Method::DELETE, &dev(&product_key, &device_name), None)
                        .await?;
                    println!("deleted device {device_name}; its secret is revoked");
                }
                DeviceCommand::Properties { conn, product_key, device_name } => print(
                    &Client::new(&conn)
                        .call(Method::GET, &format!("{}/properties", dev(&product_key, &device_name)), None)
                        .await?,
                ),
            }
        }
        ClientCommand::AppCredential(a) => match a {
            AppCredentialCommand::Create { conn, name, subscribe, publish } => {
                if subscribe.is_empty() && publish.is_empty() {
                    bail!("give at least one --subscribe or --publish filter");
                }
                print(
                    &Client::new(&conn)
                        .call(
                            Method::POST,
                            "/api/v1/app-credentials",
                            Some(json!({"name": name, "grants": grants_json(&subscribe, &publish)})),
                        )
                        .await?,
                )
            }
            AppCredentialCommand::List { conn, page, page_size } => print(
                &Client::new(&conn)
                    .call(Method::GET, &format!("/api/v1/app-credentials?page={page}&pageSize={page_size}"), None)
                    .await?,
            ),
            AppCredentialCommand::Get { conn, id } => {
                print(&Client::new(&conn).call(Method::GET, &format!("/api/v1/app-credentials/{id}"), None).await?)
            }
            AppCredentialCommand::Delete { conn, id } => {
                Client::new(&conn)
                    .call(Method::DELETE, &format!("/api/v1/app-credentials/{id}"), None)
                    .await?;
                println!("deleted application credential {id}; its connections are closed");
            }
        },
        ClientCommand::Plugin(p) => match p {
            PluginCommand::Install { conn, manifest, wasm } => {
                let form = plugin_upload(&manifest, &wasm)?;
                print(&Client::new(&conn).upload(Method::POST, "/api/v1/plugins", form).await?)
            }
            PluginCommand::List { conn } => print(&Client::new(&conn).call(Method::GET, "/api/v1/plugins", None).await?),
            PluginCommand::Get { conn, id } => {
                print(&Client::new(&conn).call(Method::GET, &format!("/api/v1/plugins/{}", enc(&id)), None).await?)
            }
            PluginCommand::Upgrade { conn, id, manifest, wasm } => {
                let form = plugin_upload(&manifest, &wasm)?;
                print(&Client::new(&conn).upload(Method::PUT, &format!("/api/v1/plugins/{}", enc(&id)), form).await?)
            }
            PluginCommand::Rollback { conn, id } => print(
                &Client::new(&conn).call(Method::POST, &format!("/api/v1/plugins/{}/rollback", enc(&id)), None).await?,
            ),
            PluginCommand::Disable { conn, id } => print(
                &Client::new(&conn).call(Method::POST, &format!("/api/v1/plugins/{}/disable", enc(&id)), None).await?,
            ),
            PluginCommand::Enable { conn, id } => print(
                &Client::new(&conn).call(Method::POST, &format!("/api/v1/plugins/{}/enable", enc(&id)), None).await?,
            ),
            PluginCommand::Resume { conn, id } => print(
                &Client::new(&conn).call(Method::POST, &format!("/api/v1/plugins/{}/resume", enc(&id)), None).await?,
            ),
            PluginCommand::Remove { conn, id } => {
                Client::new(&conn).call(Method::DELETE, &format!("/api/v1/plugins/{}", enc(&id)), None).await?;
                println!("removed plugin {id} and all its versions");
            }
            PluginCommand::Logs { conn, id, limit } => {
                let logs = Client::new(&conn)
                    .call(Method::GET, &format!("/api/v1/plugins/{}/logs?limit={limit}", enc(&id)), None)
                    .await?;
                for line in logs.get("items").and_then(Value::as_array).into_iter().flatten() {
                    let field = |k: &str| line.get(k).map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()));
                    println!(
                        "{} {:5} {:5} v{} {}",
                        field("at_ms").unwrap_or_default(),
                        field("level").unwrap_or_default(),
                        field("source").unwrap_or_default(),
                        field("version").unwrap_or_default(),
                        field("message").unwrap_or_default()
                    );
                }
            }
            PluginCommand::DeadLetters { conn, plugin, product_key, limit } => {
                let mut path = format!("/api/v1/dead-letters?limit={limit}");
                if let Some(p) = plugin {
                    path.push_str(&format!("&plugin={}", enc(&p)));
                }
                if let Some(pk) = product_key {
                    path.push_str(&format!("&product_key={}", enc(&pk)));
                }
                print(&Client::new(&conn).call(Method::GET, &path, None).await?)
            }
            PluginCommand::BindCodec { conn, product_key, plugin } => print(
                &Client::new(&conn)
                    .call(
                        Method::PUT,
                        &format!("/api/v1/products/{}/codec", enc(&product_key)),
                        Some(json!({"plugin": plugin})),
                    )
                    .await?,
            ),
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_from_flags_merge_actions() {
        let g = grants_json(
            &["/pk/+/user/update".into(), "/pk/+/user/get".into()],
            &["/pk/+/user/get".into()],
        );
        assert_eq!(
            g,
            json!([
                {"filter": "/pk/+/user/update", "actions": ["subscribe"]},
                {"filter": "/pk/+/user/get", "actions": ["subscribe", "publish"]},
            ])
        );
    }
}
