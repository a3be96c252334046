//! The UDP listeners (plain 5683 and encrypted 5682): read datagrams, hand each to the endpoint
//! in its own task (bounded), send the answer back.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, watch};

use crate::access::DeviceAccess;
use crate::endpoint::Endpoint;

/// How often idle peers and expired keys are dropped.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// How long shutdown waits for requests being processed.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

impl<A: DeviceAccess> Endpoint<A> {
    /// Serves `socket` until `shutdown` turns true, then waits (bounded) for requests in flight,
    /// so that every acknowledged message is committed.
    pub async fn serve_udp(
        self: Arc<Self>,
        socket: UdpSocket,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let socket = Arc::new(socket);
        let max = self.limits.max_in_flight.max(1);
        let permits = Arc::new(Semaphore::new(max));
        // Large enough for any UDP datagram: a truncated one would be misread.
        let mut buf = vec![0u8; 65_536];
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            if *shutdown.borrow() {
                break;
            }
            // Taking the permit before reading makes a saturated node stop reading, so the
            // kernel buffer (and the devices' retransmissions) absorb the burst.
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = shutdown.changed() => break,
            };
            let (n, peer) = tokio::select! {
                r = socket.recv_from(&mut buf) => match r {
                    Ok(v) => v,
                    Err(e) => {
                        // ICMP errors from earlier sends surface here on some systems; they
                        // concern one peer, not the socket.
                        tracing::debug!(error = %e, "CoAP receive error");
                        continue;
                    }
                },
                _ = sweep.tick() => { self.sweep(); continue; }
                _ = shutdown.changed() => break,
            };
            let datagram = buf[..n].to_vec();
            let endpoint = self.clone();
            let socket = socket.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Some(answer) = endpoint.handle(peer, None, &datagram).await
                    && let Err(e) = socket.send_to(&answer, peer).await
                {
                    tracing::debug!(%peer, error = %e, "CoAP send failed");
                }
            });
        }
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, permits.acquire_many(max as u32)).await;
    }
}

/// Binds a UDP socket; an IPv6 address serves IPv6 only, so that `0.0.0.0` and `[::]` on the
/// same port can both be bound (as the MQTT listeners do).
pub fn bind_udp(addr: std::net::SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Bursts from many devices at once queue in the kernel while the workers are busy.
    let _ = socket.set_recv_buffer_size(4 * 1024 * 1024);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}
