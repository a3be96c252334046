//! The command-line client: every command is one call to the node's REST API.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

mod apps;
mod events;
mod org;
mod region;
mod role;
mod rules;
mod user;

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
    /// The app registry: ISV apps and dashboards, their grants and secrets; signed calls.
    #[command(subcommand)]
    App(Box<apps::AppCommand>),
    /// MQTT credentials for applications, confined to granted topic filters.
    #[command(subcommand, name = "app-credential")]
    AppCredential(AppCredentialCommand),
    /// Wasm plugins: codecs, rules, event handlers, apps, channels.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Rego policies: test and evaluate them locally, or manage a node's policies and read its
    /// decision log.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Operator accounts.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Rules of the event operations center: triggers, conditions, actions, counters.
    #[command(subcommand)]
    Rule(rules::RuleCommand),
    /// Alarms raised by rules: list, acknowledge, clear.
    #[command(subcommand)]
    Alarm(rules::AlarmCommand),
    /// Events: search, create, detail, statistics.
    #[command(subcommand)]
    Event(events::EventCommand),
    /// Your tasks: list and act on them.
    #[command(subcommand)]
    Task(events::TaskCommand),
    /// The administrative region tree scopes refer to.
    #[command(subcommand)]
    Region(region::RegionCommand),
    /// The organisation tree users and products belong to.
    #[command(subcommand)]
    Org(org::OrgCommand),
    /// Built-in and custom roles, and the roles a user holds.
    #[command(subcommand)]
    Role(role::RoleCommand),
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Run every `test_*` rule of the `*_test.rego` files (offline, like `opa test`); exits 1
    /// when one fails.
    Test {
        /// The policy directory.
        #[arg(default_value = "policies")]
        dir: PathBuf,
        /// Print every test, not only failures.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Evaluate one decision locally: a package (all its rules) or a rule such as
    /// `lotus.api.allow`, with an input JSON file.
    Eval {
        #[arg(long, default_value = "policies")]
        dir: PathBuf,
        /// A package or rule; with --wasm, the bundle's entrypoint.
        #[arg(long)]
        package: String,
        /// Input JSON file (`-` for standard input).
        #[arg(long)]
        input: PathBuf,
        /// Evaluate a policy compiled with `opa build -t wasm` instead of the Rego files.
        #[arg(long)]
        wasm: Option<PathBuf>,
    },
    /// The policy modules a node serves.
    List {
        #[command(flatten)]
        conn: Connection,
    },
    /// A package's source, tests and versions on a node.
    Get {
        #[command(flatten)]
        conn: Connection,
        package: String,
    },
    /// Replace a package's policy (or, with --tests, its tests) on a node; refused, with the
    /// parser's line and column or the failing tests, unless every policy test passes.
    Put {
        #[command(flatten)]
        conn: Connection,
        package: String,
        file: PathBuf,
        #[arg(long)]
        tests: bool,
    },
    /// Serve the package's previous source again.
    Rollback {
        #[command(flatten)]
        conn: Connection,
        package: String,
    },
    /// The node's decision log (every deny, a sample of allows), newest first, as JSON lines.
    Decisions {
        #[command(flatten)]
        conn: Connection,
        #[arg(long)]
        point: Option<String>,
        /// Only denies.
        #[arg(long)]
        denied: bool,
        #[arg(long)]
        principal: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
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
    /// Install a plugin: its lotus-plugin.toml and its .wasm component, or a vendor's
    /// JavaScript codec script as it is (run by the node's script runner).
    Install {
        #[command(flatten)]
        conn: Connection,
        #[arg(long)]
        manifest: PathBuf,
        #[command(flatten)]
        code: PluginCode,
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
        #[command(flatten)]
        code: PluginCode,
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
    /// Send a test notification through a channel plugin and print its delivery report.
    Deliver {
        #[command(flatten)]
        conn: Connection,
        id: String,
        /// A recipient (phone number, address, URL — as the channel understands it); repeatable.
        #[arg(long = "to", required = true)]
        recipients: Vec<String>,
        #[arg(long, default_value = "Lotus test notification")]
        subject: String,
        #[arg(long, default_value = "If you read this, the channel works.")]
        body: String,
    },
    /// Named credentials the plugin reads through its `secrets` capability.
    #[command(subcommand)]
    Secret(PluginSecretCommand),
    /// Run a plugin's test cases locally in the real plugin runtime (offline, no node needed).
    Test(crate::plugin_test::TestArgs),
    /// Make a codec plugin decode and encode a `dataFormat: custom` product's data.
    #[command(name = "bind-codec")]
    BindCodec {
        #[command(flatten)]
        conn: Connection,
        product_key: String,
        plugin: String,
    },
}

/// What a plugin version runs: a component, or a vendor script.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct PluginCode {
    /// The .wasm component.
    #[arg(long)]
    wasm: Option<PathBuf>,
    /// A vendor's Alibaba (`rawDataToProtocol`) or ChirpStack (`decodeUplink`) JavaScript
    /// codec, uploaded unchanged; the node runs it in its script runner.
    #[arg(long)]
    script: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum PluginSecretCommand {
    /// Set a secret; the value is read from --value-file, or else from standard input (so it
    /// stays out of the shell history).
    Set {
        #[command(flatten)]
        conn: Connection,
        id: String,
        name: String,
        #[arg(long)]
        value_file: Option<PathBuf>,
    },
    /// The names of a plugin's secrets (values are never shown).
    List {
        #[command(flatten)]
        conn: Connection,
        id: String,
    },
    Delete {
        #[command(flatten)]
        conn: Connection,
        id: String,
        name: String,
    },
}

/// A secret's value: the file's or standard input's text without its final line break.
fn secret_value(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the secret from {}", path.display()))?,
        None => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("cannot read the secret from standard input")?;
            text
        }
    };
    let value = text.strip_suffix('\n').unwrap_or(&text);
    let value = value.strip_suffix('\r').unwrap_or(value);
    if value.is_empty() {
        anyhow::bail!("the secret is empty: give --value-file FILE or pipe the value in");
    }
    Ok(value.to_string())
}

/// The multipart body of an install or upgrade, read from the files.
fn plugin_upload(
    manifest: &std::path::Path,
    code: &PluginCode,
) -> anyhow::Result<reqwest::multipart::Form> {
    if let Some(script) = &code.script {
        let manifest_text = std::fs::read_to_string(manifest).with_context(|| {
            format!(
                "cannot read the manifest {} (give --manifest lotus-plugin.toml)",
                manifest.display()
            )
        })?;
        let script_text = std::fs::read_to_string(script).with_context(|| {
            format!(
                "cannot read the script {} (give --script vendor.js, UTF-8 text)",
                script.display()
            )
        })?;
        return Ok(reqwest::multipart::Form::new()
            .text("manifest", manifest_text)
            .part(
                "script",
                reqwest::multipart::Part::text(script_text).file_name("script.js"),
            ));
    }
    let Some(wasm) = code.wasm.as_deref() else {
        anyhow::bail!("give --wasm file.wasm or --script vendor.js");
    };
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

pub(crate) struct Client {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl Client {
    pub(crate) fn new(conn: &Connection) -> Client {
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

    pub(crate) async fn call(
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

pub(crate) fn print(v: &Value) {
    if !v.is_null() {
        println!("{}", serde_json::to_string_pretty(v).expect("JSON prints"));
    }
}

pub(crate) fn enc(s: &str) -> String {
    s.replace('%', "%25")
        .replace('/', "%2F")
        .replace('?', "%3F")
        .replace('#', "%23")
}

pub async fn run(cmd: ClientCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    match cmd {
        ClientCommand::App(c) => apps::run(*c).await?,
        ClientCommand::Rule(c) => rules::run_rule(c).await?,
        ClientCommand::Region(c) => region::run(c).await?,
        ClientCommand::Org(c) => org::run(c).await?,
        ClientCommand::Role(c) => role::run(c).await?,
        ClientCommand::Alarm(c) => rules::run_alarm(c).await?,
        ClientCommand::Event(c) => events::run_event(c).await?,
        ClientCommand::Task(c) => events::run_task(c).await?,
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
        ClientCommand::Policy(p) => match p {
            PolicyCommand::Test { dir, verbose } => {
                let report = lotus_policy::run_tests(&dir)
                    .with_context(|| format!("the policies in {} do not load", dir.display()))?;
                report.print(&mut std::io::stdout(), verbose)?;
                if !report.passed() {
                    std::process::exit(1);
                }
            }
            PolicyCommand::Eval { dir, package, input, wasm } => {
                let text = if input.as_os_str() == "-" {
                    let mut text = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
                    text
                } else {
                    std::fs::read_to_string(&input)
                        .with_context(|| format!("cannot read the input {}", input.display()))?
                };
                let value: Value = serde_json::from_str(&text)
                    .with_context(|| format!("the input {} is not JSON", input.display()))?;
                match wasm {
                    Some(bundle) => print(&lotus_policy::OpaWasmPolicy::load(&bundle, &package)?.evaluate(&value)?),
                    None => print(&lotus_policy::eval_file_input(&dir, &package, value)?),
                }
            }
            PolicyCommand::List { conn } => print(&Client::new(&conn).call(Method::GET, "/api/v1/policies", None).await?),
            PolicyCommand::Get { conn, package } => print(
                &Client::new(&conn).call(Method::GET, &format!("/api/v1/policies/{}", enc(&package)), None).await?,
            ),
            PolicyCommand::Put { conn, package, file, tests } => {
                let source = std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let path = if tests {
                    format!("/api/v1/policies/{}/tests", enc(&package))
                } else {
                    format!("/api/v1/policies/{}", enc(&package))
                };
                let out = Client::new(&conn).call(Method::PUT, &path, Some(json!({"source": source}))).await?;
                println!("{package} now serves version {}", out["version"]);
            }
            PolicyCommand::Rollback { conn, package } => print(
                &Client::new(&conn)
                    .call(Method::POST, &format!("/api/v1/policies/{}/rollback", enc(&package)), None)
                    .await?,
            ),
            PolicyCommand::Decisions { conn, point, denied, principal, limit } => {
                let mut path = format!("/api/v1/decisions?limit={limit}");
                if let Some(p) = point {
                    path.push_str(&format!("&point={}", enc(&p)));
                }
                if denied {
                    path.push_str("&allow=false");
                }
                if let Some(p) = principal {
                    path.push_str(&format!("&principal={}", enc(&p)));
                }
                let out = Client::new(&conn).call(Method::GET, &path, None).await?;
                for item in out["items"].as_array().into_iter().flatten() {
                    println!("{item}");
                }
            }
        },
        ClientCommand::User(c) => user::run(c).await?,
        ClientCommand::Plugin(p) => match p {
            PluginCommand::Install { conn, manifest, code } => {
                let form = plugin_upload(&manifest, &code)?;
                print(&Client::new(&conn).upload(Method::POST, "/api/v1/plugins", form).await?)
            }
            PluginCommand::List { conn } => print(&Client::new(&conn).call(Method::GET, "/api/v1/plugins", None).await?),
            PluginCommand::Get { conn, id } => {
                print(&Client::new(&conn).call(Method::GET, &format!("/api/v1/plugins/{}", enc(&id)), None).await?)
            }
            PluginCommand::Upgrade { conn, id, manifest, code } => {
                let form = plugin_upload(&manifest, &code)?;
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
            PluginCommand::Deliver { conn, id, recipients, subject, body } => print(
                &Client::new(&conn)
                    .call(
                        Method::POST,
                        &format!("/api/v1/plugins/{}/deliver", enc(&id)),
                        Some(json!({"recipients": recipients, "subject": subject, "body": body})),
                    )
                    .await?,
            ),
            PluginCommand::Secret(PluginSecretCommand::Set { conn, id, name, value_file }) => {
                let value = secret_value(value_file.as_deref())?;
                print(
                    &Client::new(&conn)
                        .call(
                            Method::PUT,
                            &format!("/api/v1/plugins/{}/secrets/{}", enc(&id), enc(&name)),
                            Some(json!({"value": value})),
                        )
                        .await?,
                )
            }
            PluginCommand::Secret(PluginSecretCommand::List { conn, id }) => print(
                &Client::new(&conn).call(Method::GET, &format!("/api/v1/plugins/{}/secrets", enc(&id)), None).await?,
            ),
            PluginCommand::Secret(PluginSecretCommand::Delete { conn, id, name }) => {
                Client::new(&conn)
                    .call(Method::DELETE, &format!("/api/v1/plugins/{}/secrets/{}", enc(&id), enc(&name)), None)
                    .await?;
                println!("deleted secret {name} of plugin {id}");
            }
            PluginCommand::Test(args) => crate::plugin_test::run(args).await?,
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
