//! `lotus serve`: wires storage, bus, device plane, broker and API into one node.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, bail};
use figment::providers::Serialized;
use lotus_api::ApiState;
use lotus_bus::LocalBus;
use lotus_device::hooks::PlaneHooks;
use lotus_device::writer::WriterConfig;
use lotus_device::{DevicePlane, PlaneConfig};
use lotus_mqtt::{Broker, BrokerConfig, bind_tcp};
use lotus_storage::{SecretBox, Store};
use serde_json::json;
use tokio::net::TcpListener;

use crate::ServeArgs;
use crate::config::Config;

fn flag_overrides(a: &ServeArgs) -> serde_json::Value {
    let mut root = serde_json::Map::new();
    let mut mqtt = serde_json::Map::new();
    let mut http = serde_json::Map::new();
    let mut log = serde_json::Map::new();
    let mut coap = serde_json::Map::new();
    if !a.coap_listen.is_empty() {
        coap.insert("listen".into(), json!(a.coap_listen));
    }
    if !a.coap_dtls_listen.is_empty() {
        coap.insert("dtls_listen".into(), json!(a.coap_dtls_listen));
    }
    if !a.coap_encrypted_listen.is_empty() {
        coap.insert("encrypted_listen".into(), json!(a.coap_encrypted_listen));
    }
    if let Some(v) = &a.data_dir {
        root.insert("data_dir".into(), json!(v));
    }
    if let Some(v) = &a.database_url {
        root.insert("database_url".into(), json!(v));
    }
    if let Some(v) = &a.portal_dir {
        root.insert("portal_dir".into(), json!(v));
    }
    if !a.http_listen.is_empty() {
        http.insert("listen".into(), json!(a.http_listen));
    }
    if !a.https_listen.is_empty() {
        http.insert("tls_listen".into(), json!(a.https_listen));
    }
    if !a.mqtt_listen.is_empty() {
        mqtt.insert("listen".into(), json!(a.mqtt_listen));
    }
    if !a.mqtt_ws_listen.is_empty() {
        mqtt.insert("ws_listen".into(), json!(a.mqtt_ws_listen));
    }
    if !a.mqtt_tls_listen.is_empty() {
        mqtt.insert("tls_listen".into(), json!(a.mqtt_tls_listen));
    }
    // The node's certificate serves MQTT over TLS and HTTPS alike.
    if let Some(v) = &a.tls_cert {
        mqtt.insert("tls_cert".into(), json!(v));
        http.insert("tls_cert".into(), json!(v));
    }
    if let Some(v) = &a.tls_key {
        mqtt.insert("tls_key".into(), json!(v));
        http.insert("tls_key".into(), json!(v));
    }
    if a.allow_anonymous {
        mqtt.insert("allow_anonymous".into(), json!(true));
    }
    if let Some(v) = &a.log_format {
        log.insert("format".into(), json!(v));
    }
    if let Some(v) = &a.log_level {
        log.insert("level".into(), json!(v));
    }
    for (k, m) in [("mqtt", mqtt), ("http", http), ("log", log), ("coap", coap)] {
        if !m.is_empty() {
            root.insert(k.into(), serde_json::Value::Object(m));
        }
    }
    serde_json::Value::Object(root)
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .with_context(|| format!("log level '{}' is not a valid filter", config.log.level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format.as_str() {
        "json" => builder.json().flatten_event(true).init(),
        "text" => builder.init(),
        other => bail!("log format '{other}' unknown: use json or text"),
    }
    Ok(())
}

/// Binds every address; an IPv6 address on a host without IPv6 is skipped with a warning, but
/// at least one address of each list must bind.
fn bind_all(what: &str, addrs: &[SocketAddr]) -> anyhow::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for addr in addrs {
        match bind_tcp(*addr) {
            Ok(l) => out.push(l),
            Err(e) if addr.is_ipv6() && e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                tracing::warn!(%addr, error = %e, "IPv6 is not available here; skipping");
            }
            Err(e) => return Err(e).with_context(|| format!("cannot listen for {what} on {addr}")),
        }
    }
    if out.is_empty() && !addrs.is_empty() {
        bail!("no {what} address could be bound");
    }
    Ok(out)
}

/// Binds the UDP sockets of one CoAP listener, skipping unavailable IPv6 like [`bind_all`].
fn bind_udp_all(what: &str, addrs: &[SocketAddr]) -> anyhow::Result<Vec<tokio::net::UdpSocket>> {
    let mut out = Vec::new();
    for addr in addrs {
        match lotus_coap::bind_udp(*addr) {
            Ok(s) => out.push(s),
            Err(e) if addr.is_ipv6() && e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                tracing::warn!(%addr, error = %e, "IPv6 is not available here; skipping");
            }
            Err(e) => return Err(e).with_context(|| format!("cannot listen for {what} on {addr}")),
        }
    }
    if out.is_empty() && !addrs.is_empty() {
        bail!("no {what} address could be bound");
    }
    Ok(out)
}

fn local_udp(ss: &[tokio::net::UdpSocket]) -> Vec<String> {
    ss.iter()
        .filter_map(|s| s.local_addr().ok())
        .map(|a| a.to_string())
        .collect()
}

fn local(ls: &[TcpListener]) -> Vec<String> {
    ls.iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .collect()
}

/// The node's public URL (`[http] public_url`, else the first HTTP listener; an unspecified
/// address becomes `localhost`) and the external identity provider of `[auth.oidc]`.
fn oidc_settings(config: &Config, http: &[TcpListener]) -> lotus_api::oidc::OidcSettings {
    let issuer = config.http.public_url.clone().unwrap_or_else(|| {
        match http.first().and_then(|l| l.local_addr().ok()) {
            Some(a) if a.ip().is_unspecified() => format!("http://localhost:{}", a.port()),
            Some(a) => format!("http://{a}"),
            None => "http://localhost".into(),
        }
    });
    let login = config
        .auth
        .oidc
        .as_ref()
        .map(|o| lotus_api::oidc::login::ExternalProvider {
            issuer: o.issuer.clone(),
            client_id: o.client_id.clone(),
            client_secret: lotus_storage::Secret::new(o.client_secret.clone()),
            redirect_url: o.redirect_url.clone(),
            username_claim: o.username_claim.clone(),
            label: o.label.clone(),
            // Without `openid` the provider would answer with plain OAuth and no ID token.
            scopes: if o.scopes.split_whitespace().any(|s| s == "openid") {
                o.scopes.clone()
            } else {
                format!("openid {}", o.scopes)
            },
        });
    lotus_api::oidc::OidcSettings {
        issuer,
        login,
        key_retention: std::time::Duration::from_secs(config.auth.oidc_key_retention_secs),
    }
}

async fn bootstrap_admin(store: &Store) -> anyhow::Result<()> {
    if store.user_count().await? > 0 {
        return Ok(());
    }
    let (password, generated) = match std::env::var("LOTUS_ADMIN_PASSWORD") {
        Ok(p) if !p.is_empty() => (p, false),
        _ => (
            lotus_device::connect::generate_secret()[..20].to_string(),
            true,
        ),
    };
    let hash = tokio::task::spawn_blocking(move || {
        let h = lotus_api::auth::hash_password(&password);
        (h, password)
    })
    .await?;
    store
        .create_user(
            "admin",
            &hash.0,
            &["admin".to_string()],
            &Default::default(),
        )
        .await?;
    if generated {
        // Printed once, to the terminal, never logged: it is not stored in clear anywhere.
        println!(
            "\n  Created the administrator 'admin' with password: {}\n  Change it after logging in; it will not be shown again.\n",
            hash.1
        );
    } else {
        tracing::info!(
            "created the administrator 'admin' with the password from LOTUS_ADMIN_PASSWORD"
        );
    }
    Ok(())
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(
        args.config.as_deref(),
        figment::Figment::from(Serialized::defaults(flag_overrides(&args))),
    )
    .context("invalid configuration")?;
    init_logging(&config)?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;

    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let secrets =
        SecretBox::load_or_create(config.master_key_file()).context("loading the master key")?;
    let database_url = config.database_url();
    let store = Store::open(&database_url, secrets)
        .await
        .with_context(|| format!("cannot open the database ({})", redact(&database_url)))?;
    tracing::info!(backend = ?store.backend(), "storage ready");
    bootstrap_admin(&store).await?;

    let policy_dir = config.policy_dir();
    let policies = crate::policy_host::start(
        &policy_dir,
        lotus_policy::DecisionLogConfig {
            sample_allows: config.policy.sample_allows,
            capacity: config.policy.log_capacity,
            jsonl_path: Some(config.decision_log_file()),
        },
        &config.policy.wasm,
    )?;

    let bus = Arc::new(LocalBus::new(65_536));
    let plane_config = PlaneConfig {
        writer: WriterConfig {
            queue_capacity: config.writer.queue_capacity,
            max_batch_rows: config.writer.max_batch_rows,
        },
        allow_anonymous: config.mqtt.allow_anonymous,
        token_ttl: std::time::Duration::from_secs(config.auth.device_token_ttl_secs),
    };
    let topic_engine = policies.engine.clone();
    let (plane, tasks) = DevicePlane::start(store.clone(), bus, plane_config, move |registry| {
        Box::new(lotus_policy::topic::PolicyTopicAuthorizer::new(
            topic_engine,
            registry,
        ))
    })
    .await?;
    let plugin_cache = config.plugin_cache_dir();
    std::fs::create_dir_all(&plugin_cache).with_context(|| {
        format!(
            "cannot create the plugin cache directory {}",
            plugin_cache.display()
        )
    })?;
    // One event center for the operations center and the plugins' `event` interface, so that
    // what plugins raise is classified, merged and dispatched like everything else.
    let (event_center, platform_events) = lotus_operations::EventCenter::announcing(store.clone());
    let plugins = crate::plugin_host::start(
        lotus_plugin::RuntimeConfig {
            cache_dir: Some(plugin_cache),
            suspend_after_failures: config.plugins.suspend_after_failures,
            log_lines_per_plugin: config.plugins.log_lines_per_plugin,
            ..lotus_plugin::RuntimeConfig::default()
        },
        store.clone(),
        plane.clone(),
        plane.bus.clone(),
        config.plugins.script_runner.as_deref(),
        Arc::new(crate::policy_host::PolicyCapabilities::new(
            policies.engine.clone(),
        )),
        event_center.clone(),
    )
    .await?;

    let broker_config = BrokerConfig {
        max_packet_size: config.mqtt.max_packet_size,
        session_queue_limit: config.mqtt.session_queue_limit,
        ..BrokerConfig::default()
    };
    let broker = Broker::new(broker_config, Arc::new(PlaneHooks(plane.clone())));
    let replier = plane.attach_broker(broker.clone());

    let mqtt = bind_all("MQTT", &config.mqtt.listen)?;
    let ws = bind_all("MQTT over WebSocket", &config.mqtt.ws_listen)?;
    let tls = match (&config.mqtt.tls_cert, &config.mqtt.tls_key) {
        (Some(cert), Some(key)) => {
            let tls_config = lotus_mqtt::load_tls_config(cert, key)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("loading the MQTT TLS certificate")?;
            Some((
                bind_all("MQTT over TLS", &config.mqtt.tls_listen)?,
                tls_config,
            ))
        }
        (None, None) => None,
        _ => bail!("MQTT over TLS needs both tls_cert and tls_key"),
    };
    let http = bind_all("HTTP", &config.http.listen)?;
    let https = match (&config.http.tls_cert, &config.http.tls_key) {
        (Some(cert), Some(key)) => {
            let tls_config = lotus_mqtt::load_tls_config(cert, key)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("loading the HTTPS certificate")?;
            Some((bind_all("HTTPS", &config.http.tls_listen)?, tls_config))
        }
        (None, None) => None,
        _ => bail!("HTTPS needs both http.tls_cert and http.tls_key"),
    };
    // `coap.enabled = false` turns every CoAP listener off; an empty list turns off one.
    let coap_addrs = |addrs: &[SocketAddr]| {
        if config.coap.enabled {
            addrs.to_vec()
        } else {
            Vec::new()
        }
    };
    let coap_plain = bind_udp_all("CoAP", &coap_addrs(&config.coap.listen))?;
    let coap_dtls = bind_udp_all("CoAP over DTLS", &coap_addrs(&config.coap.dtls_listen))?;
    let coap_encrypted = bind_udp_all(
        "CoAP (encrypted channel)",
        &coap_addrs(&config.coap.encrypted_listen),
    )?;

    let ready = json!({
        "http": local(&http),
        "https": https.as_ref().map(|(l, _)| local(l)).unwrap_or_default(),
        "mqtt": local(&mqtt),
        "mqttWs": local(&ws),
        "mqttTls": tls.as_ref().map(|(l, _)| local(l)).unwrap_or_default(),
        "coap": local_udp(&coap_plain),
        "coapDtls": local_udp(&coap_dtls),
        "coapEncrypted": local_udp(&coap_encrypted),
    });
    let mut servers = Vec::new();
    for l in mqtt {
        servers.push(broker.serve_tcp(l));
    }
    for l in ws {
        servers.push(broker.serve_websocket(l));
    }
    if let Some((listeners, tls_config)) = tls {
        for l in listeners {
            servers.push(broker.serve_tls(l, tls_config.clone()));
        }
    }

    // CoAP listeners: one endpoint per mode, shared by its IPv4 and IPv6 sockets.
    let (stop_coap_tx, stop_coap) = tokio::sync::watch::channel(false);
    let mut coap_servers = Vec::new();
    {
        let access = Arc::new(lotus_coap::Plane(plane.clone()));
        let limits = lotus_coap::Limits {
            max_body: config.coap.max_body,
            max_in_flight: config.coap.max_in_flight,
            ..lotus_coap::Limits::default()
        };
        let endpoint = |mode| lotus_coap::Endpoint::new(mode, access.clone(), limits.clone());
        let (plain, dtls, encrypted) = (
            endpoint(lotus_coap::Mode::Plain),
            endpoint(lotus_coap::Mode::Dtls),
            endpoint(lotus_coap::Mode::Encrypted),
        );
        for s in coap_plain {
            coap_servers.push(tokio::spawn(plain.clone().serve_udp(s, stop_coap.clone())));
        }
        for s in coap_encrypted {
            coap_servers.push(tokio::spawn(
                encrypted.clone().serve_udp(s, stop_coap.clone()),
            ));
        }
        for s in coap_dtls {
            coap_servers.push(tokio::spawn(dtls.clone().serve_dtls(s, stop_coap.clone())));
        }
    }

    let (operations, operation_tasks) = lotus_operations::Operations::start(
        store.clone(),
        plane.bus.clone(),
        lotus_operations::Services {
            devices: Arc::new(crate::operations_host::PlaneCommands(plane.clone())),
            channels: Arc::new(crate::operations_host::PluginChannels(
                plugins.runtime.clone(),
            )),
            plugins: Arc::new(crate::operations_host::RuntimeWorlds(
                plugins.runtime.clone(),
            )),
            center: (event_center, platform_events),
        },
        lotus_operations::OperationsConfig {
            retry_base: std::time::Duration::from_millis(config.operations.retry_base_ms.max(1)),
        },
    )
    .await
    .context("starting the operations center")?;

    let state = ApiState::new(
        store.clone(),
        plane.clone(),
        config.auth.session_ttl_secs * 1000,
        Some(Arc::new(move || metrics.render())),
        Arc::new(crate::policy_host::PolicyApi::new(policies.engine.clone())),
    )
    .with_policy_admin(Arc::new(crate::policy_host::PolicyFiles {
        engine: policies.engine.clone(),
        dir: policies.dir.clone(),
    }))
    .with_plugins(Arc::new(crate::plugin_host::RuntimeManager {
        runtime: plugins.runtime.clone(),
        script_runner: plugins.script_runner.clone(),
    }))
    .with_operations(operations)
    .with_lockout(lotus_api::auth::Lockout {
        max_failures: config.auth.max_failed_logins.max(0),
        duration_ms: config.auth.lockout_secs.max(1).saturating_mul(1000),
    })
    .with_app_signature_window(std::time::Duration::from_secs(
        config.auth.app_signature_window_secs.max(1),
    ))
    .with_portal(config.portal_dir.clone())
    .with_oidc(oidc_settings(&config, &http));
    if config.portal_dir.join("index.html").is_file() {
        tracing::info!(dir = %config.portal_dir.display(), "serving the portal at /");
    } else {
        tracing::warn!(dir = %config.portal_dir.display(),
            "the portal is not built, so / explains how to build it: {}", lotus_api::portal::BUILD_COMMAND);
    }
    let shutting_down = state.shutting_down.clone();
    let live = state.live.clone();
    let app = lotus_api::router(state);
    let (stop_http_tx, stop_http) = tokio::sync::watch::channel(false);
    let mut http_servers = Vec::new();
    for l in http {
        let app = app.clone();
        let mut stop = stop_http.clone();
        http_servers.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(l, app).with_graceful_shutdown(shutdown).await {
                tracing::error!(error = %e, "HTTP server failed");
            }
        }));
    }
    for (l, tls_config) in https
        .into_iter()
        .flat_map(|(ls, c)| ls.into_iter().map(move |l| (l, c.clone())))
    {
        let app = app.clone();
        let mut stop = stop_http.clone();
        http_servers.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = lotus_api::tls::serve_tls(l, app, tls_config, shutdown).await {
                tracing::error!(error = %e, "HTTPS server failed");
            }
        }));
    }

    tracing::info!(listening = %ready, "lotus is ready");
    if let Some(path) = &args.ready_file {
        std::fs::write(path, ready.to_string())
            .with_context(|| format!("writing {}", path.display()))?;
    }

    shutdown_signal().await;
    tracing::info!("shutting down: closing device connections and flushing data");
    shutting_down.store(true, Ordering::Relaxed);
    // Open live feeds never end by themselves; the HTTP servers would wait for them.
    live.close();
    broker.shutdown().await;
    // CoAP requests in progress finish (their data is committed before they are answered).
    let _ = stop_coap_tx.send(true);
    for s in coap_servers {
        let _ = s.await;
    }
    plane.flush().await;
    let _ = stop_http_tx.send(true);
    for s in http_servers {
        let _ = s.await;
    }
    for s in servers {
        s.abort();
    }
    replier.abort();
    for t in operation_tasks {
        t.abort();
    }
    drop(tasks);
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Database URLs may carry a password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}
