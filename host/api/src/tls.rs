//! Serving the HTTP surface over TLS, so devices posting with tokens and operators logging in
//! never send secrets in clear text across the city's networks.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use tokio::net::TcpListener;
use tokio_rustls::rustls::ServerConfig;

/// Serves `app` on `listener` over TLS until `shutdown` completes, then lets requests in
/// flight finish.
pub async fn serve_tls(
    listener: TcpListener,
    app: Router,
    tls: Arc<ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut tls = (*tls).clone();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    axum_server::from_tcp_rustls(
        listener.into_std()?,
        RustlsConfig::from_config(Arc::new(tls)),
    )?
    .handle(handle)
    .serve(app.into_make_service())
    .await
}
