//! Node configuration: defaults, then a TOML file, then `LOTUS_*` environment variables, then
//! command-line flags (each later source wins).

use std::net::SocketAddr;
use std::path::PathBuf;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the embedded database, the master key and other node files live.
    pub data_dir: PathBuf,
    /// `sqlite://…` (default: a file in data_dir) or `postgres://user:pass@host/db`.
    pub database_url: Option<String>,
    /// File holding the 32-byte key that encrypts secrets at rest (default: data_dir/master.key).
    pub master_key_file: Option<PathBuf>,
    /// The built operators' portal served at `/` (`npm --prefix portal run build` writes it),
    /// relative to the directory the node starts in.
    pub portal_dir: PathBuf,
    pub http: HttpConfig,
    pub mqtt: MqttConfig,
    pub coap: CoapConfig,
    pub log: LogConfig,
    pub auth: AuthConfig,
    pub writer: WriterSettings,
    pub plugins: PluginSettings,
    pub policy: PolicySettings,
    pub operations: OperationsSettings,
}

/// The event operations center: rules, alarms, events, workflows, notifications.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OperationsSettings {
    /// Wait before the first retry of a failed rule action or notification (milliseconds);
    /// each later retry waits twice as long, and the fifth failure is a dead letter.
    pub retry_base_ms: u64,
}

impl Default for OperationsSettings {
    fn default() -> Self {
        OperationsSettings {
            retry_base_ms: 2_000,
        }
    }
}

/// The Rego policies that decide every permission.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicySettings {
    /// The policy directory (default: data_dir/policies, filled with the defaults on first
    /// start). Edits to its files take effect when their tests pass.
    pub dir: Option<PathBuf>,
    /// Share of allowed decisions kept in the decision log (every deny is kept).
    pub sample_allows: f64,
    /// Decisions kept in memory for `GET /api/v1/decisions`.
    pub log_capacity: usize,
    /// JSON-lines file every kept decision is appended to (default: data_dir/decisions.jsonl).
    pub log_file: Option<PathBuf>,
    /// Decision points served by policies already compiled with `opa build -t wasm` instead
    /// of the Rego files: `[[policy.wasm]] package = "lotus.api" path = "…" entrypoint = "…"`.
    pub wasm: Vec<WasmBundle>,
}

/// A prebuilt OPA Wasm bundle serving one decision point.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WasmBundle {
    pub package: String,
    pub path: PathBuf,
    pub entrypoint: String,
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            dir: None,
            sample_allows: 0.01,
            log_capacity: 100_000,
            log_file: None,
            wasm: Vec::new(),
        }
    }
}

/// The Wasm plugin runtime (per-plugin bounds are in each plugin's manifest).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginSettings {
    /// Consecutive failures (traps, timeouts, limits, bad output) after which a plugin is
    /// suspended and an operator alarm is raised.
    pub suspend_after_failures: u32,
    /// Log lines kept per plugin for `lotus plugin logs`.
    pub log_lines_per_plugin: usize,
    /// Where compiled components are cached (default: data_dir/plugin-cache).
    pub cache_dir: Option<PathBuf>,
    /// The script runner component (`script_runner.wasm`, built by
    /// `sdk/plugin-js/build.mjs --runner`) that runs vendor JavaScript codecs uploaded as
    /// scripts; without it, script uploads are refused with this advice.
    pub script_runner: Option<PathBuf>,
}

impl Default for PluginSettings {
    fn default() -> Self {
        PluginSettings {
            suspend_after_failures: 10,
            log_lines_per_plugin: 1000,
            cache_dir: None,
            script_runner: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: Vec<SocketAddr>,
    /// HTTPS for the API and HTTP device access; used when a certificate and key are set.
    pub tls_listen: Vec<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The URL people and apps reach this node at (`https://iot.city.example`): the OpenID
    /// Connect issuer and the base of the URLs it publishes. Default: `http://` and the first
    /// HTTP listener's address.
    pub public_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// MQTT over TCP.
    pub listen: Vec<SocketAddr>,
    /// MQTT over WebSocket.
    pub ws_listen: Vec<SocketAddr>,
    /// MQTT over TLS; only served when `tls_cert` and `tls_key` are set.
    pub tls_listen: Vec<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Let generic MQTT clients without device credentials use topics outside the device
    /// namespaces, like a plain broker.
    pub allow_anonymous: bool,
    pub max_packet_size: usize,
    /// Messages kept per persistent session while its client is away.
    pub session_queue_limit: usize,
}

/// CoAP device access (Alink over CoAP). An empty address list turns that listener off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoapConfig {
    /// Serve CoAP at all.
    pub enabled: bool,
    /// Plain CoAP over UDP (token in option 2088).
    pub listen: Vec<SocketAddr>,
    /// CoAP over DTLS with a PSK derived from the device secret.
    pub dtls_listen: Vec<SocketAddr>,
    /// The symmetric-encrypted channel (AES-128-GCM payloads over plain UDP).
    pub encrypted_listen: Vec<SocketAddr>,
    /// Largest request or response body, after block-wise reassembly.
    pub max_body: usize,
    /// Requests processed at once per listener before it stops reading.
    pub max_in_flight: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `json` or `text`.
    pub format: String,
    /// A tracing filter such as `info` or `lotus_mqtt=debug,info`.
    pub level: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// How long an API token stays valid.
    pub session_ttl_secs: i64,
    /// How long a token issued to a CoAP or HTTP device by `/auth` stays valid.
    pub device_token_ttl_secs: u64,
    /// Failed log-ins in a row that lock an account (0: never).
    pub max_failed_logins: i64,
    /// How long a locked account refuses log-ins.
    pub lockout_secs: i64,
    /// How far the timestamp of an app's signed request may be from the node's clock.
    pub app_signature_window_secs: u64,
    /// How long a retired OpenID Connect signing key stays in the JWKS before it is deleted;
    /// keep it longer than the ID token life (an hour).
    pub oidc_key_retention_secs: u64,
    /// Log-in through the city's OpenID Connect provider (`[auth.oidc]`); absent: no button.
    pub oidc: Option<OidcLoginConfig>,
}

/// `[auth.oidc]`: the city's identity provider, with this node registered there as a client.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcLoginConfig {
    /// The provider's issuer URL (its metadata is at `/.well-known/openid-configuration`).
    pub issuer: String,
    pub client_id: String,
    /// Prefer `LOTUS_AUTH__OIDC__CLIENT_SECRET` to writing it in the file.
    pub client_secret: String,
    /// Register this at the provider. Default: `{public_url}/api/v1/auth/oidc/callback`.
    #[serde(default)]
    pub redirect_url: Option<String>,
    /// The claim of the ID token that holds the Lotus username.
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// The text of the log-in page's button (default: the portal's own, in the user's language).
    #[serde(default)]
    pub label: String,
    /// Space-separated scopes to ask for; must contain `openid`.
    #[serde(default = "default_oidc_scopes")]
    pub scopes: String,
}

fn default_username_claim() -> String {
    "preferred_username".into()
}

fn default_oidc_scopes() -> String {
    "openid profile".into()
}

impl std::fmt::Debug for OidcLoginConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcLoginConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"***")
            .field("redirect_url", &self.redirect_url)
            .field("username_claim", &self.username_claim)
            .field("label", &self.label)
            .field("scopes", &self.scopes)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriterSettings {
    /// Uplinks waiting for the group commit; when full, devices are slowed down.
    pub queue_capacity: usize,
    pub max_batch_rows: usize,
}

fn dual(port: u16) -> Vec<SocketAddr> {
    vec![
        SocketAddr::from(([0, 0, 0, 0], port)),
        SocketAddr::from(([0u16; 8], port)),
    ]
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            database_url: None,
            master_key_file: None,
            portal_dir: PathBuf::from("./portal/dist"),
            http: HttpConfig::default(),
            mqtt: MqttConfig::default(),
            coap: CoapConfig::default(),
            log: LogConfig::default(),
            auth: AuthConfig::default(),
            writer: WriterSettings::default(),
            plugins: PluginSettings::default(),
            policy: PolicySettings::default(),
            operations: OperationsSettings::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: dual(8080),
            tls_listen: dual(8443),
            tls_cert: None,
            tls_key: None,
            public_url: None,
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            listen: dual(1883),
            ws_listen: dual(8083),
            tls_listen: dual(8883),
            tls_cert: None,
            tls_key: None,
            allow_anonymous: false,
            max_packet_size: 256 * 1024,
            session_queue_limit: 1000,
        }
    }
}

impl Default for CoapConfig {
    fn default() -> Self {
        let limits = lotus_coap::Limits::default();
        CoapConfig {
            enabled: true,
            listen: dual(5683),
            dtls_listen: dual(5684),
            encrypted_listen: dual(5682),
            max_body: limits.max_body,
            max_in_flight: limits.max_in_flight,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "json".into(),
            level: "info".into(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            session_ttl_secs: 12 * 3600,
            device_token_ttl_secs: lotus_device::access::DEFAULT_TOKEN_TTL.as_secs(),
            max_failed_logins: 5,
            lockout_secs: 15 * 60,
            app_signature_window_secs: lotus_api::signature::DEFAULT_WINDOW.as_secs(),
            oidc_key_retention_secs: lotus_api::oidc::keys::DEFAULT_RETENTION.as_secs(),
            oidc: None,
        }
    }
}

impl Default for WriterSettings {
    fn default() -> Self {
        let d = lotus_device::writer::WriterConfig::default();
        WriterSettings {
            queue_capacity: d.queue_capacity,
            max_batch_rows: d.max_batch_rows,
        }
    }
}

/// Environment variables that are not configuration keys (read elsewhere).
const NOT_CONFIG: [&str; 5] = ["CONFIG", "ADMIN_PASSWORD", "URL", "TOKEN", "PASSWORD"];

impl Config {
    /// Defaults ← TOML file ← `LOTUS_*` (nested keys with `__`, e.g. `LOTUS_MQTT__ALLOW_ANONYMOUS`) ← flags.
    pub fn load(
        file: Option<&std::path::Path>,
        flags: Figment,
    ) -> Result<Config, Box<figment::Error>> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            if !f.exists() {
                return Err(Box::new(figment::Error::from(format!(
                    "configuration file {} does not exist",
                    f.display()
                ))));
            }
            fig = fig.merge(Toml::file(f));
        }
        fig.merge(
            Env::prefixed("LOTUS_")
                .filter(|k| {
                    !NOT_CONFIG
                        .iter()
                        .any(|n| k.as_str().eq_ignore_ascii_case(n))
                })
                .split("__"),
        )
        .merge(flags)
        .extract()
        .map_err(Box::new)
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("lotus.db").display()))
    }

    pub fn policy_dir(&self) -> PathBuf {
        self.policy
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("policies"))
    }

    pub fn decision_log_file(&self) -> PathBuf {
        self.policy
            .log_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("decisions.jsonl"))
    }

    pub fn plugin_cache_dir(&self) -> PathBuf {
        self.plugins
            .cache_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("plugin-cache"))
    }

    pub fn master_key_file(&self) -> PathBuf {
        self.master_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("master.key"))
    }
}
