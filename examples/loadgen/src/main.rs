//! `loadgen`: load generator for Lotus. See `docs/benchmarks.md`.

use std::time::Duration;

use clap::{Parser, Subcommand};
use lotus_loadgen::city::Mix;
use lotus_loadgen::water_meter::{CodecPlugin, Format};
use lotus_loadgen::{connections, loopback_addr, pipeline, raise_fd_limit, relay};

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "Load generator for Lotus (loopback targets only)"
)]
struct Cli {
    /// Print the report as JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Runtime worker threads (default: one per core).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Signed devices post properties (and events) and answer downlinks; what was stored is
    /// verified through the API at the end.
    Pipeline {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        api: String,
        #[arg(long, default_value = "127.0.0.1:1883")]
        mqtt: String,
        #[arg(long, default_value = "admin")]
        user: String,
        #[arg(long, env = "LOTUS_ADMIN_PASSWORD")]
        password: String,
        #[arg(long, default_value_t = 100)]
        devices: usize,
        /// Property posts per second over all devices.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Seconds of load.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
        qos: u8,
        /// street-light (one product), city (street lights, water meters, air-quality
        /// stations, manhole covers at coordinates in a city bounding box) or water-meter (one
        /// NB-IoT meter product posting what its binary frames carry, as Alink JSON or with
        /// --format raw as the frames; compares the codec path like for like).
        #[arg(long, default_value = "street-light")]
        mix: Mix,
        /// Downlinks per second (property sets and service calls through the API) that the
        /// devices answer; 0 for none.
        #[arg(long, default_value_t = 0.0)]
        downlink_rate: f64,
        /// The server's PID, to report its CPU beside the generator's.
        #[arg(long)]
        server_pid: Option<u32>,
        /// alink: JSON property posts; raw: binary water-meter frames on
        /// …/thing/model/up_raw, decoded by the codec plugin given by --codec-wasm and
        /// --codec-manifest (installed and bound to a new dataFormat custom product; implies
        /// --mix water-meter).
        #[arg(long, default_value = "alink")]
        format: Format,
        /// The codec plugin component (.wasm) for --format raw.
        #[arg(long, requires = "codec_manifest")]
        codec_wasm: Option<std::path::PathBuf>,
        /// The codec plugin's lotus-plugin.toml for --format raw; its `products` is set to the
        /// new product.
        #[arg(long, requires = "codec_wasm")]
        codec_manifest: Option<std::path::PathBuf>,
    },
    /// Publishers → one subscriber: anonymous on bench/{i} → bench/#, or (with --api) signed
    /// devices on /{pk}/{dn}/user/update → an application credential on /{pk}/+/user/update.
    Relay {
        #[arg(long, default_value = "127.0.0.1:1883")]
        mqtt: String,
        #[arg(long, default_value_t = 10)]
        publishers: usize,
        /// Payload bytes (at least 20: publisher, sequence, send time).
        #[arg(long, default_value_t = 100)]
        payload: usize,
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
        qos: u8,
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Total messages per second; unlimited when absent.
        #[arg(long)]
        rate: Option<u64>,
        /// The broker's PID, to report its CPU time.
        #[arg(long)]
        broker_pid: Option<u32>,
        /// Lotus's API: publish as signed devices and subscribe with an application credential
        /// created there (needs --password). Without it, all clients are anonymous.
        #[arg(long)]
        api: Option<String>,
        #[arg(long, default_value = "admin")]
        user: String,
        #[arg(long, env = "LOTUS_ADMIN_PASSWORD")]
        password: Option<String>,
    },
    /// Opens idle connections at a rate and holds them.
    Connections {
        #[arg(long, default_value = "127.0.0.1:1883")]
        mqtt: String,
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// New connections per second.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Seconds to hold the connections once all are open.
        #[arg(long, default_value_t = 5)]
        hold: u64,
        /// The broker's PID, for its resident memory before and after.
        #[arg(long)]
        target_pid: Option<u32>,
        /// Connect as signed devices created through this API (needs --password).
        #[arg(long)]
        api: Option<String>,
        #[arg(long, default_value = "admin")]
        user: String,
        #[arg(long, env = "LOTUS_ADMIN_PASSWORD")]
        password: Option<String>,
        /// The products of the signed devices: street-light or city.
        #[arg(long, default_value = "street-light")]
        mix: Mix,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    raise_fd_limit();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(t) = cli.threads {
        rt.worker_threads(t);
    }
    let rt = rt.build()?;
    let json = cli.json;
    rt.block_on(async move {
        match cli.command {
            Command::Pipeline {
                api,
                mqtt,
                user,
                password,
                devices,
                rate,
                duration,
                qos,
                mix,
                downlink_rate,
                server_pid,
                format,
                codec_wasm,
                codec_manifest,
            } => {
                let codec = match (codec_wasm, codec_manifest) {
                    (Some(wasm), Some(manifest)) => Some(CodecPlugin { wasm, manifest }),
                    _ => None,
                };
                if format == Format::Raw && codec.is_none() {
                    anyhow::bail!("--format raw needs --codec-wasm and --codec-manifest");
                }
                let report = pipeline::run(pipeline::Config {
                    api,
                    mqtt: loopback_addr(&mqtt)?,
                    user,
                    password,
                    devices,
                    rate,
                    duration: Duration::from_secs(duration),
                    qos,
                    mix,
                    downlink_rate,
                    server_pid,
                    format,
                    codec,
                })
                .await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    report.print();
                }
            }
            Command::Relay {
                mqtt,
                publishers,
                payload,
                qos,
                duration,
                rate,
                broker_pid,
                api,
                user,
                password,
            } => {
                let lotus = match (api, password) {
                    (Some(api), Some(password)) => Some(relay::LotusTarget {
                        api,
                        user,
                        password,
                    }),
                    (Some(_), None) => anyhow::bail!("--api needs --password"),
                    _ => None,
                };
                let report = relay::run(relay::Config {
                    mqtt: loopback_addr(&mqtt)?,
                    publishers,
                    payload,
                    qos,
                    duration: Duration::from_secs(duration),
                    rate,
                    broker_pid,
                    lotus,
                })
                .await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    report.print();
                }
            }
            Command::Connections {
                mqtt,
                count,
                rate,
                hold,
                target_pid,
                api,
                user,
                password,
                mix,
            } => {
                let api = match (api, password) {
                    (Some(a), Some(p)) => Some((a, user, p)),
                    (Some(_), None) => anyhow::bail!("--api needs --password"),
                    _ => None,
                };
                let report = connections::run(connections::Config {
                    mqtt: loopback_addr(&mqtt)?,
                    count,
                    rate,
                    hold: Duration::from_secs(hold),
                    target_pid,
                    api,
                    mix,
                })
                .await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    report.print();
                }
            }
        }
        Ok(())
    })
}
