//! `lotus-plugin.toml`: what a plugin is, which world it implements, what it asks for.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The WIT world a component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    Codec,
    Rule,
    EventHandler,
    App,
    Channel,
}

impl World {
    pub const ALL: [World; 5] = [
        World::Codec,
        World::Rule,
        World::EventHandler,
        World::App,
        World::Channel,
    ];

    /// The world's name in WIT and in `lotus-plugin.toml`.
    pub fn name(self) -> &'static str {
        match self {
            World::Codec => "codec",
            World::Rule => "rule",
            World::EventHandler => "event-handler",
            World::App => "app",
            World::Channel => "channel",
        }
    }

    /// The host interfaces the world lets a component import (wit/v0.1.0/worlds.wit).
    pub fn offers(self) -> &'static [Capability] {
        use Capability::*;
        match self {
            World::Codec => &[Log, Kv, Clock],
            World::Rule => &[Log, Kv, Clock, Device],
            World::EventHandler => &[Log, Kv, Clock, Device, Event],
            World::App => &[Log, Kv, Clock, Http, Device, Publish, Event, Secrets],
            World::Channel => &[Log, Kv, Clock, Http, Secrets],
        }
    }

    /// The functions the world exports, as named in the component.
    pub fn exports(self) -> &'static [&'static str] {
        match self {
            World::Codec => &["decode", "encode"],
            World::Rule => &["evaluate"],
            World::EventHandler => &["handle"],
            World::App => &["on-message", "on-status", "on-event"],
            World::Channel => &["deliver"],
        }
    }

    /// The default per-call time budget: codecs sit on the uplink hot path, the rest may call out.
    pub fn default_call_timeout(self) -> Duration {
        match self {
            World::Codec => Duration::from_millis(50),
            _ => Duration::from_secs(5),
        }
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A host interface a plugin may import; each must be requested in the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    Log,
    Kv,
    Http,
    Device,
    Publish,
    Event,
    Clock,
    Secrets,
}

impl Capability {
    pub const ALL: [Capability; 8] = [
        Capability::Log,
        Capability::Kv,
        Capability::Http,
        Capability::Device,
        Capability::Publish,
        Capability::Event,
        Capability::Clock,
        Capability::Secrets,
    ];

    /// The WIT interface name (`lotus:plugin/<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Capability::Log => "log",
            Capability::Kv => "kv",
            Capability::Http => "http",
            Capability::Device => "device",
            Capability::Publish => "publish",
            Capability::Event => "event",
            Capability::Clock => "clock",
            Capability::Secrets => "secrets",
        }
    }

    pub fn from_name(name: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Bounds applied to every call into a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Largest linear memory an instance may grow to.
    pub memory_bytes: u64,
    /// Wasm fuel (≈ instructions) one call may burn.
    pub fuel_per_call: u64,
    /// Wall-clock budget for one call, host calls included.
    pub call_timeout: Duration,
    /// Largest result (decoded JSON, encoded bytes) and largest payload the plugin may hand the host.
    pub max_output_bytes: usize,
}

impl Limits {
    pub const DEFAULT_MEMORY_BYTES: u64 = 64 << 20;
    /// Roughly 100 ms of straight-line wasm on current x86 cores.
    pub const DEFAULT_FUEL_PER_CALL: u64 = 100_000_000;
    pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 1 << 20;

    /// The defaults for a world (only the call timeout differs between worlds).
    pub fn for_world(world: World) -> Limits {
        Limits {
            memory_bytes: Self::DEFAULT_MEMORY_BYTES,
            fuel_per_call: Self::DEFAULT_FUEL_PER_CALL,
            call_timeout: world.default_call_timeout(),
            max_output_bytes: Self::DEFAULT_MAX_OUTPUT_BYTES,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::for_world(World::Codec)
    }
}

/// A plugin's manifest, parsed from `lotus-plugin.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manifest {
    pub id: String,
    pub version: String,
    pub world: World,
    pub description: String,
    pub capabilities: Vec<Capability>,
    /// Hosts `http` may call: `host` (any port) or `host:port`.
    pub http_allow: Vec<String>,
    /// Secret names the plugin may read.
    pub secrets: Vec<String>,
    pub limits: Limits,
    /// Product keys the plugin binds to (codec) and whose devices `device` may touch.
    pub products: Vec<String>,
    /// Topic filters (`+`, `#` wildcards) the plugin binds to and may `publish` on.
    pub topics: Vec<String>,
}

/// Why a manifest was refused; the text names the field and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("lotus-plugin.toml is not valid TOML for a plugin manifest: {0}")]
    Syntax(String),
    #[error("lotus-plugin.toml: `{field}` {problem}")]
    Field {
        field: &'static str,
        problem: String,
    },
}

fn field(field: &'static str, problem: impl Into<String>) -> ManifestError {
    ManifestError::Field {
        field,
        problem: problem.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    id: Option<String>,
    version: Option<String>,
    world: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    http_allow: Vec<String>,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    limits: LimitsFile,
    #[serde(default)]
    products: Vec<String>,
    #[serde(default)]
    topics: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    memory_mib: Option<u64>,
    fuel_per_call: Option<u64>,
    call_timeout_ms: Option<u64>,
    max_output_kib: Option<u64>,
}

/// Upper bounds an operator can rely on whatever a manifest asks for.
const MAX_MEMORY_MIB: u64 = 4096;
const MAX_CALL_TIMEOUT_MS: u64 = 300_000;
const MAX_OUTPUT_KIB: u64 = 64 << 10;

impl Manifest {
    /// Parses and checks `lotus-plugin.toml`:
    ///
    /// ```toml
    /// id = "acme-water-meter"          # lower-case letters, digits, '-', '_', '.'
    /// version = "1.2.0"
    /// world = "codec"                  # codec | rule | event-handler | app | channel
    /// description = "ACME WM-3 frames"
    /// capabilities = ["log", "kv"]
    /// http_allow = ["api.acme.example:443"]
    /// secrets = ["acme-token"]
    /// products = ["a1WaterMeter"]
    /// topics = ["/a1WaterMeter/+/user/raw"]
    /// [limits]
    /// memory_mib = 64
    /// fuel_per_call = 100000000
    /// call_timeout_ms = 50
    /// max_output_kib = 1024
    /// ```
    pub fn from_toml(text: &str) -> Result<Manifest, ManifestError> {
        let file: ManifestFile =
            toml::from_str(text).map_err(|e| ManifestError::Syntax(e.to_string()))?;

        let id = file
            .id
            .ok_or_else(|| field("id", "is missing; add e.g. `id = \"acme-water-meter\"`"))?;
        if id.is_empty() || id.len() > 64 {
            return Err(field(
                "id",
                format!("must be 1 to 64 characters, got {}", id.len()),
            ));
        }
        if let Some(bad) = id.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
        }) {
            return Err(field(
                "id",
                format!("contains {bad:?}; use lower-case letters, digits, '-', '_' and '.'"),
            ));
        }
        let version = file
            .version
            .ok_or_else(|| field("version", "is missing; add e.g. `version = \"1.0.0\"`"))?;
        if version.trim().is_empty() || version.len() > 64 {
            return Err(field(
                "version",
                "must be a non-empty version string of at most 64 characters",
            ));
        }
        let world_name = file.world.ok_or_else(|| {
            field(
                "world",
                "is missing; one of codec, rule, event-handler, app, channel",
            )
        })?;
        let world = World::ALL
            .into_iter()
            .find(|w| w.name() == world_name)
            .ok_or_else(|| {
                field(
                    "world",
                    format!(
                        "is {world_name:?}; use one of codec, rule, event-handler, app, channel"
                    ),
                )
            })?;

        let mut capabilities = Vec::new();
        for name in &file.capabilities {
            let capability = Capability::from_name(name).ok_or_else(|| {
                field("capabilities", format!("lists unknown capability {name:?}; known: log, kv, http, device, publish, event, clock, secrets"))
            })?;
            if !world.offers().contains(&capability) {
                let offered: Vec<&str> = world.offers().iter().map(|c| c.name()).collect();
                return Err(field(
                    "capabilities",
                    format!(
                        "lists {name:?}, which the {world} world does not offer; it offers {}",
                        offered.join(", ")
                    ),
                ));
            }
            if !capabilities.contains(&capability) {
                capabilities.push(capability);
            }
        }
        if !file.http_allow.is_empty() && !capabilities.contains(&Capability::Http) {
            return Err(field(
                "http_allow",
                "is set but `capabilities` does not request \"http\"",
            ));
        }
        for host in &file.http_allow {
            if host.is_empty() || host.contains('/') || host.contains("://") {
                return Err(field(
                    "http_allow",
                    format!("entry {host:?} must be a host or host:port, without scheme or path"),
                ));
            }
        }
        if !file.secrets.is_empty() && !capabilities.contains(&Capability::Secrets) {
            return Err(field(
                "secrets",
                "is set but `capabilities` does not request \"secrets\"",
            ));
        }
        for topic in &file.topics {
            if topic.is_empty()
                || topic
                    .split('/')
                    .any(|level| level.len() > 1 && (level.contains('+') || level.contains('#')))
            {
                return Err(field(
                    "topics",
                    format!(
                        "entry {topic:?} is not a topic filter ('+' and '#' must fill a whole level)"
                    ),
                ));
            }
            if topic.split('/').rev().skip(1).any(|level| level == "#") {
                return Err(field(
                    "topics",
                    format!("entry {topic:?} has '#' before the last level"),
                ));
            }
        }
        if world == World::Codec && file.products.is_empty() && file.topics.is_empty() {
            return Err(field(
                "products",
                "is empty; a codec must bind to at least one product key (or topic)",
            ));
        }

        let mut limits = Limits::for_world(world);
        if let Some(mib) = file.limits.memory_mib {
            if mib == 0 || mib > MAX_MEMORY_MIB {
                return Err(field(
                    "limits.memory_mib",
                    format!("is {mib}; use 1 to {MAX_MEMORY_MIB}"),
                ));
            }
            limits.memory_bytes = mib << 20;
        }
        if let Some(fuel) = file.limits.fuel_per_call {
            if fuel == 0 {
                return Err(field("limits.fuel_per_call", "must be above 0"));
            }
            limits.fuel_per_call = fuel;
        }
        if let Some(ms) = file.limits.call_timeout_ms {
            if ms == 0 || ms > MAX_CALL_TIMEOUT_MS {
                return Err(field(
                    "limits.call_timeout_ms",
                    format!("is {ms}; use 1 to {MAX_CALL_TIMEOUT_MS}"),
                ));
            }
            limits.call_timeout = Duration::from_millis(ms);
        }
        if let Some(kib) = file.limits.max_output_kib {
            if kib == 0 || kib > MAX_OUTPUT_KIB {
                return Err(field(
                    "limits.max_output_kib",
                    format!("is {kib}; use 1 to {MAX_OUTPUT_KIB}"),
                ));
            }
            limits.max_output_bytes = (kib as usize) << 10;
        }

        Ok(Manifest {
            id,
            version,
            world,
            description: file.description,
            capabilities,
            http_allow: file.http_allow,
            secrets: file.secrets,
            limits,
            products: file.products,
            topics: file.topics,
        })
    }

    pub fn requests(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }
}
