//! Accepting connections: TCP, TLS and WebSocket listeners, binding, and TLS configuration.

use std::fs::File;
use std::io::{self, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, ServerConfig};

use crate::broker::Inner;
use crate::connection;
use crate::hooks::{BrokerHooks, Transport};
use crate::websocket::{self, WsStream};

/// Binds a TCP listener for MQTT. IPv6 sockets are IPv6-only, so that `0.0.0.0:1883` and
/// `[::]:1883` can both be bound; `SO_REUSEADDR` lets a restarted broker bind at once.
pub fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    // Bursts of thousands of CONNECTs per second need a deep accept queue.
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// Why a TLS certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{0}: no certificate found")]
    NoCertificate(PathBuf),
    #[error("{0}: no private key found")]
    NoPrivateKey(PathBuf),
    #[error("invalid TLS certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Loads a PEM certificate chain and private key into a TLS server configuration (ring).
pub fn load_tls_config(
    cert_pem: &Path,
    key_pem: &Path,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let open = |path: &Path| {
        File::open(path)
            .map(BufReader::new)
            .map_err(|source| TlsConfigError::Read {
                path: path.to_owned(),
                source,
            })
    };
    let certs = rustls_pemfile::certs(&mut open(cert_pem)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsConfigError::Read {
            path: cert_pem.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate(cert_pem.to_owned()));
    }
    let key = rustls_pemfile::private_key(&mut open(key_pem)?)
        .map_err(|source| TlsConfigError::Read {
            path: key_pem.to_owned(),
            source,
        })?
        .ok_or_else(|| TlsConfigError::NoPrivateKey(key_pem.to_owned()))?;
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// Low latency for small packets (writes are batched anyway), and TCP keep-alive so that
/// clients with MQTT keep-alive 0 that vanish are noticed eventually.
fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(300))
        .with_interval(Duration::from_secs(30));
    let _ = SockRef::from(stream).set_tcp_keepalive(&keepalive);
}

/// Accepts until shutdown, handing each socket to `spawn`.
async fn accept_loop<H: BrokerHooks>(
    inner: Arc<Inner<H>>,
    listener: TcpListener,
    transport: Transport,
    spawn: impl Fn(Arc<Inner<H>>, TcpStream, SocketAddr),
) {
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "unknown".into());
    tracing::info!(addr = %local, transport = transport.as_str(), "MQTT listener started");
    loop {
        let accepted = tokio::select! {
            () = inner.stop_accepting.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                tune(&stream);
                spawn(inner.clone(), stream, peer);
            }
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(addr = %local, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    tracing::info!(addr = %local, transport = transport.as_str(), "MQTT listener stopped");
}

pub(crate) async fn serve_tcp<H: BrokerHooks>(inner: Arc<Inner<H>>, listener: TcpListener) {
    accept_loop(inner, listener, Transport::Tcp, |inner, stream, peer| {
        tokio::spawn(connection::serve(inner, stream, Transport::Tcp, peer));
    })
    .await;
}

pub(crate) async fn serve_tls<H: BrokerHooks>(
    inner: Arc<Inner<H>>,
    listener: TcpListener,
    tls: Arc<ServerConfig>,
) {
    let acceptor = TlsAcceptor::from(tls);
    accept_loop(
        inner,
        listener,
        Transport::Tls,
        move |inner, stream, peer| {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match timeout(inner.config.connect_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => connection::serve(inner, tls, Transport::Tls, peer).await,
                    Ok(Err(e)) => {
                        inner.metrics.connect("tls_error");
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        inner.metrics.connect("timeout");
                        tracing::debug!(%peer, "TLS handshake timed out");
                    }
                }
            });
        },
    )
    .await;
}

pub(crate) async fn serve_websocket<H: BrokerHooks>(inner: Arc<Inner<H>>, listener: TcpListener) {
    accept_loop(
        inner,
        listener,
        Transport::WebSocket,
        |inner, stream, peer| {
            tokio::spawn(async move {
                let config = websocket::config(inner.config.max_packet_size);
                let upgrade = tokio_tungstenite::accept_hdr_async_with_config(
                    stream,
                    websocket::choose_subprotocol,
                    Some(config),
                );
                match timeout(inner.config.connect_timeout, upgrade).await {
                    Ok(Ok(ws)) => {
                        connection::serve(inner, WsStream::new(ws), Transport::WebSocket, peer)
                            .await
                    }
                    Ok(Err(e)) => {
                        inner.metrics.connect("websocket_error");
                        tracing::debug!(%peer, error = %e, "WebSocket upgrade failed");
                    }
                    Err(_) => {
                        inner.metrics.connect("timeout");
                        tracing::debug!(%peer, "WebSocket upgrade timed out");
                    }
                }
            });
        },
    )
    .await;
}
