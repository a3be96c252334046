//! `lotus`: the node (`lotus serve`) and the command-line client that drives its API.

mod cli;
mod config;
mod operations_host;
mod plugin_host;
mod plugin_test;
mod policy_host;
mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "lotus", version, about = "Lotus smart-city IoT platform")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
// Parsed once at start-up: the size of the serve flags does not matter.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Run a node: MQTT broker, HTTP API and device plane.
    Serve(ServeArgs),
    #[command(flatten)]
    Client(cli::ClientCommand),
}

/// Every flag overrides the same key of the configuration file and of `LOTUS_*` variables.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "LOTUS_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the embedded database and the master key [default: ./data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// `sqlite://path` or `postgres://user:pass@host:port/db` [default: SQLite in the data dir].
    #[arg(long)]
    database_url: Option<String>,
    /// HTTP API listen address; repeat for several [default: 0.0.0.0:8080 and [::]:8080].
    #[arg(long = "http-listen")]
    http_listen: Vec<SocketAddr>,
    /// MQTT/TCP listen address; repeat for several [default: port 1883, IPv4 and IPv6].
    #[arg(long = "mqtt-listen")]
    mqtt_listen: Vec<SocketAddr>,
    /// MQTT/WebSocket listen address [default: port 8083, IPv4 and IPv6].
    #[arg(long = "mqtt-ws-listen")]
    mqtt_ws_listen: Vec<SocketAddr>,
    /// MQTT/TLS listen address, served when a certificate is configured [default: port 8883].
    #[arg(long = "mqtt-tls-listen")]
    mqtt_tls_listen: Vec<SocketAddr>,
    /// HTTPS listen address (API and HTTP device access), served when a certificate is
    /// configured [default: port 8443, IPv4 and IPv6].
    #[arg(long = "https-listen")]
    https_listen: Vec<SocketAddr>,
    /// PEM certificate chain for MQTT over TLS and HTTPS.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// PEM private key for MQTT over TLS and HTTPS.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Admit MQTT clients without device credentials (topics outside /sys, /shadow, /ext only).
    #[arg(long)]
    allow_anonymous: bool,
    /// Log format: json or text [default: json].
    #[arg(long)]
    log_format: Option<String>,
    /// Log filter, e.g. info or lotus_mqtt=debug,info [default: info].
    #[arg(long)]
    log_level: Option<String>,
    /// CoAP/UDP listen address; repeat for several [default: port 5683, IPv4 and IPv6].
    #[arg(long = "coap-listen")]
    coap_listen: Vec<SocketAddr>,
    /// CoAP/DTLS (PSK) listen address [default: port 5684, IPv4 and IPv6].
    #[arg(long = "coap-dtls-listen")]
    coap_dtls_listen: Vec<SocketAddr>,
    /// CoAP symmetric-encrypted channel listen address [default: port 5682, IPv4 and IPv6].
    #[arg(long = "coap-encrypted-listen")]
    coap_encrypted_listen: Vec<SocketAddr>,
    /// The built operators' portal, served at / [default: ./portal/dist].
    #[arg(long)]
    portal_dir: Option<PathBuf>,
    /// Write the bound addresses as JSON to this file once the node is ready (for scripts and tests).
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

/// The telemetry path allocates and frees many short buffers across threads (decoded posts, batch
/// SQL, bind arguments); glibc's allocator spent a quarter of the workers' time on them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let result = runtime.block_on(async {
        match args.command {
            Command::Serve(a) => serve::run(a).await,
            Command::Client(c) => cli::run(c).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
