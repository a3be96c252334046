//! CoAP over DTLS 1.2 (5684) with a pre-shared key derived from the device secret.
//!
//! PSK identity `{productKey}&{deviceName}`, key `HMAC-SHA256(deviceSecret, identity)[0..16]`.
//! A finished handshake proves the device, so requests on the session need no token.
//!
//! The DTLS records are handled by `webrtc-dtls` (pure Rust). Its own UDP listener keeps every
//! peer forever in an unbounded buffer, so this module demultiplexes the socket itself: one
//! bounded channel per peer, a bounded number of peers, and a peer's entry removed when its
//! session ends or a new handshake from the same address replaces it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use lotus_model::authz::DeviceId;
use parking_lot::Mutex;
use sha2::Sha256;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use webrtc_dtls::cipher_suite::CipherSuiteId;
use webrtc_dtls::config::{Config, ExtendedMasterSecretType};
use webrtc_dtls::conn::DTLSConn;
use webrtc_util::Conn;

use crate::access::{AccessError, DeviceAccess};
use crate::endpoint::Endpoint;
use crate::server::{DRAIN_TIMEOUT, SWEEP_INTERVAL};

/// Records queued per peer before the session task reads them; more are dropped (UDP).
const PEER_QUEUE: usize = 64;

/// `HMAC-SHA256(key = deviceSecret, message = identity)`, first 16 bytes.
pub fn derive_psk(device_secret: &str, identity: &str) -> [u8; 16] {
    let mut mac = Hmac::<Sha256>::new_from_slice(device_secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(identity.as_bytes());
    let full = mac.finalize().into_bytes();
    let mut psk = [0u8; 16];
    psk.copy_from_slice(&full[..16]);
    psk
}

/// `{productKey}&{deviceName}` → the device.
pub fn parse_identity(identity: &[u8]) -> Option<DeviceId> {
    let s = std::str::from_utf8(identity).ok()?;
    let (pk, dn) = s.split_once('&')?;
    (!pk.is_empty() && !dn.is_empty() && !dn.contains('&')).then(|| DeviceId::new(pk, dn))
}

/// Is this datagram a DTLS record carrying a ClientHello in epoch 0 (a new handshake)?
fn is_client_hello(d: &[u8]) -> bool {
    // Record: type(1)=22 handshake, version(2), epoch(2)=0, seq(6), length(2); then the
    // handshake header's type(1)=1 ClientHello.
    d.len() > 13 && d[0] == 22 && d[3] == 0 && d[4] == 0 && d[13] == 1
}

/// One peer's datagrams, as a connection `webrtc-dtls` can run over.
struct PeerConn {
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    rx: tokio::sync::Mutex<mpsc::Receiver<Vec<u8>>>,
}

type UtilResult<T> = Result<T, webrtc_util::Error>;

#[async_trait]
impl Conn for PeerConn {
    async fn connect(&self, _addr: SocketAddr) -> UtilResult<()> {
        Err(webrtc_util::Error::Other(
            "a peer connection is already connected".into(),
        ))
    }

    async fn recv(&self, buf: &mut [u8]) -> UtilResult<usize> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> UtilResult<(usize, SocketAddr)> {
        match self.rx.lock().await.recv().await {
            Some(d) => {
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                Ok((n, self.peer))
            }
            None => Err(webrtc_util::Error::ErrUseClosedNetworkConn),
        }
    }

    async fn send(&self, buf: &[u8]) -> UtilResult<usize> {
        Ok(self.socket.send_to(buf, self.peer).await?)
    }

    async fn send_to(&self, buf: &[u8], _target: SocketAddr) -> UtilResult<usize> {
        self.send(buf).await
    }

    fn local_addr(&self) -> UtilResult<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        Some(self.peer)
    }

    async fn close(&self) -> UtilResult<()> {
        self.rx.lock().await.close();
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

struct Link {
    id: u64,
    tx: mpsc::Sender<Vec<u8>>,
    established: Arc<AtomicBool>,
}

type Links = Arc<Mutex<HashMap<SocketAddr, Link>>>;

/// Removes a session's entry when its task ends, unless a newer session took the address.
struct Unlink {
    links: Links,
    peer: SocketAddr,
    id: u64,
}

impl Drop for Unlink {
    fn drop(&mut self) {
        let mut map = self.links.lock();
        if map.get(&self.peer).is_some_and(|l| l.id == self.id) {
            map.remove(&self.peer);
        }
    }
}

impl<A: DeviceAccess> Endpoint<A> {
    /// The DTLS server configuration: PSK suites only, keys looked up by identity.
    fn dtls_config(self: &Arc<Self>) -> Config {
        // webrtc-dtls builds rustls verifiers from the process default provider, which rustls
        // cannot pick by itself when both ring and aws-lc are linked (as in the node). An
        // already installed provider is fine too.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let access = self.access.clone();
        let runtime = tokio::runtime::Handle::current();
        let psk = move |identity: &[u8]| -> Result<Vec<u8>, webrtc_dtls::Error> {
            let Some(device) = parse_identity(identity) else {
                return Err(webrtc_dtls::Error::Other(
                    "PSK identity must be {productKey}&{deviceName}".into(),
                ));
            };
            // The library asks synchronously, from inside the handshake task; the secret is in
            // storage. block_in_place lets this worker wait without stalling the others.
            if runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
                return Err(webrtc_dtls::Error::Other(
                    "DTLS needs the multi-threaded runtime".into(),
                ));
            }
            let secret = tokio::task::block_in_place(|| {
                runtime.block_on(access.device_secret(&device.product_key, &device.device_name))
            });
            match secret {
                Ok(s) => Ok(derive_psk(
                    &s,
                    &format!("{}&{}", device.product_key, device.device_name),
                )
                .to_vec()),
                Err(e) => {
                    let why = match e {
                        AccessError::Unavailable(m) => m,
                        other => other.to_string(),
                    };
                    tracing::info!(%device, reason = %why, "CoAP DTLS handshake refused");
                    Err(webrtc_dtls::Error::Other(why))
                }
            }
        };
        Config {
            psk: Some(Arc::new(psk)),
            // The library's defaults are certificate suites only; CCM_8 is CoAP's mandatory one.
            cipher_suites: vec![
                CipherSuiteId::Tls_Psk_With_Aes_128_Ccm_8,
                CipherSuiteId::Tls_Psk_With_Aes_128_Ccm,
                CipherSuiteId::Tls_Psk_With_Aes_128_Gcm_Sha256,
            ],
            extended_master_secret: ExtendedMasterSecretType::Request,
            ..Default::default()
        }
    }

    /// Serves CoAP over DTLS on `socket` until `shutdown` turns true.
    pub async fn serve_dtls(
        self: Arc<Self>,
        socket: UdpSocket,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let socket = Arc::new(socket);
        let config = self.dtls_config();
        let links: Links = Arc::new(Mutex::new(HashMap::new()));
        let next_id = AtomicU64::new(0);
        let mut sessions = tokio::task::JoinSet::new();
        let mut buf = vec![0u8; 65_536];
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            if *shutdown.borrow() {
                break;
            }
            let (n, peer) = tokio::select! {
                r = socket.recv_from(&mut buf) => match r {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::debug!(error = %e, "CoAP DTLS receive error");
                        continue;
                    }
                },
                _ = sweep.tick() => {
                    self.sweep();
                    while sessions.try_join_next().is_some() {}
                    continue;
                }
                _ = shutdown.changed() => break,
            };
            let datagram = buf[..n].to_vec();
            let hello = is_client_hello(&datagram);
            let mut map = links.lock();
            if let Some(link) = map.get(&peer) {
                // A device that rebooted starts over from the same address: replace its session.
                if !(hello && link.established.load(Ordering::Relaxed)) {
                    // A full queue means the session is not keeping up: drop, as UDP would.
                    let _ = link.tx.try_send(datagram);
                    continue;
                }
                map.remove(&peer);
            }
            if !hello || map.len() >= self.limits.max_sessions {
                continue;
            }
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            let _ = tx.try_send(datagram);
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            let established = Arc::new(AtomicBool::new(false));
            map.insert(
                peer,
                Link {
                    id,
                    tx,
                    established: established.clone(),
                },
            );
            drop(map);
            let conn = Arc::new(PeerConn {
                socket: socket.clone(),
                peer,
                rx: tokio::sync::Mutex::new(rx),
            });
            let endpoint = self.clone();
            let config = config.clone();
            let links = links.clone();
            let shutdown = shutdown.clone();
            sessions.spawn(async move {
                // Unlinks the peer however the session ends, a panic in the library included.
                let _unlink = Unlink { links, peer, id };
                endpoint.session(conn, config, established, shutdown).await;
            });
        }
        // Sessions finish the request they are processing, then close.
        links.lock().clear();
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        sessions.abort_all();
    }

    /// One DTLS session: handshake, then CoAP requests until the peer goes quiet or away.
    async fn session(
        self: Arc<Self>,
        conn: Arc<PeerConn>,
        config: Config,
        established: Arc<AtomicBool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let peer = conn.peer;
        let handshake = tokio::time::timeout(
            self.limits.handshake_timeout,
            DTLSConn::new(conn, config, false, None),
        )
        .await;
        let dtls = match handshake {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "CoAP DTLS handshake failed");
                metrics::counter!("lotus_coap_dtls_handshake_failures_total").increment(1);
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "CoAP DTLS handshake timed out");
                metrics::counter!("lotus_coap_dtls_handshake_failures_total").increment(1);
                return;
            }
        };
        let state = dtls.connection_state().await;
        let Some(device) = parse_identity(&state.identity_hint) else {
            let _ = dtls.close().await;
            return;
        };
        established.store(true, Ordering::Relaxed);
        tracing::debug!(%peer, %device, "CoAP DTLS session established");
        let mut buf = vec![0u8; 65_536];
        loop {
            let n = tokio::select! {
                r = dtls.read(&mut buf, Some(self.limits.session_idle)) => match r {
                    Ok(n) => n,
                    Err(_) => break,
                },
                _ = shutdown.changed() => break,
            };
            if let Some(answer) = self.handle(peer, Some(&device), &buf[..n]).await
                && dtls.write(&answer, None).await.is_err()
            {
                break;
            }
        }
        let _ = dtls.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_parsing() {
        let d = parse_identity(b"pk1&dev-1").unwrap();
        assert_eq!((&*d.product_key, &*d.device_name), ("pk1", "dev-1"));
        assert!(parse_identity(b"nodelimiter").is_none());
        assert!(parse_identity(b"&dn").is_none());
        assert!(parse_identity(b"pk&").is_none());
        assert!(parse_identity(&[0xff, b'&', b'a']).is_none());
    }

    #[test]
    fn psk_is_the_documented_hmac() {
        let psk = derive_psk("secret", "pk&dn");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"secret").unwrap();
        mac.update(b"pk&dn");
        assert_eq!(psk[..], mac.finalize().into_bytes()[..16]);
    }

    #[test]
    fn client_hello_detection_survives_garbage() {
        assert!(!is_client_hello(&[]));
        assert!(!is_client_hello(&[22; 5]));
        let mut hello = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 1];
        assert!(is_client_hello(&hello));
        hello[4] = 1;
        assert!(!is_client_hello(&hello), "epoch 1 is an encrypted record");
    }
}
