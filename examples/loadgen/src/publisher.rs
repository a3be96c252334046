//! A raw MQTT 3.1.1 publisher for the relay: it encodes every message that is due into one
//! buffer and writes it with one system call, with Nagle's algorithm off.
//!
//! A general client (rumqttc) flushes after each publish, so at 100k+ msg/s the generator spent
//! more CPU on syscalls than the broker it measured, and with Nagle on (its default) a QoS 0
//! publish waited for the peer's delayed ACK. Batching due messages keeps both costs down: one
//! write per timer tick when paced, one per batch of [`BATCH`] when unpaced.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Semaphore;

use crate::connections::encode_connect;

/// Messages per write when publishing as fast as possible.
pub const BATCH: usize = 64;

const KEEP_ALIVE_S: u16 = 60;
const CONNACK_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Publisher {
    writer: OwnedWriteHalf,
    topic: Vec<u8>,
    qos: u8,
    next_packet_id: u16,
    /// QoS 1 messages not yet PUBACKed may not exceed the window, like a client's inflight limit.
    window: Arc<Semaphore>,
    buf: BytesMut,
    reader: tokio::task::JoinHandle<()>,
}

impl Publisher {
    /// Connects (CONNECT → CONNACK) and starts counting PUBACKs into `acked`.
    pub async fn connect(
        addr: SocketAddr,
        client_id: &str,
        login: Option<(&str, &str)>,
        topic: &str,
        qos: u8,
        window: usize,
        acked: Arc<AtomicU64>,
    ) -> anyhow::Result<Publisher> {
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        stream
            .write_all(&encode_connect(client_id, login, KEEP_ALIVE_S))
            .await?;
        let mut connack = [0u8; 4];
        tokio::time::timeout(CONNACK_TIMEOUT, stream.read_exact(&mut connack))
            .await
            .context("no CONNACK within 10 s")??;
        if connack[0] != 0x20 {
            bail!("expected CONNACK, got packet type {:#04x}", connack[0]);
        }
        if connack[3] != 0 {
            bail!(
                "the broker refused the connection (return code {})",
                connack[3]
            );
        }
        let (read, writer) = stream.into_split();
        let window = Arc::new(Semaphore::new(window));
        let reader = tokio::spawn(count_pubacks(read, acked, window.clone()));
        Ok(Publisher {
            writer,
            topic: topic.as_bytes().to_vec(),
            qos,
            next_packet_id: 0,
            window,
            buf: BytesMut::with_capacity(64 * 1024),
            reader,
        })
    }

    /// Encodes up to `count` messages of `payload_len` bytes each, which `fill` writes; waits
    /// for the QoS 1 window only for the first. Returns how many were encoded.
    pub async fn encode(
        &mut self,
        count: usize,
        payload_len: usize,
        mut fill: impl FnMut(&mut BytesMut),
    ) -> usize {
        let mut encoded = 0;
        while encoded < count {
            if self.qos == 1 {
                let permit = if encoded == 0 {
                    self.window.acquire().await.ok()
                } else {
                    self.window.try_acquire().ok()
                };
                match permit {
                    Some(p) => p.forget(),
                    None => break,
                }
            }
            let id_len = if self.qos == 1 { 2 } else { 0 };
            self.buf.put_u8(0x30 | (self.qos << 1));
            put_remaining_length(&mut self.buf, 2 + self.topic.len() + id_len + payload_len);
            self.buf.put_u16(self.topic.len() as u16);
            self.buf.put_slice(&self.topic);
            if self.qos == 1 {
                self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
                self.buf.put_u16(self.next_packet_id);
            }
            let before = self.buf.len();
            fill(&mut self.buf);
            debug_assert_eq!(self.buf.len() - before, payload_len);
            encoded += 1;
        }
        encoded
    }

    /// Writes everything encoded so far in one go.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.writer.write_all(&self.buf).await?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Sends DISCONNECT and closes; PUBACKs that arrived before are counted.
    pub async fn disconnect(mut self) {
        let _ = self.flush().await;
        let _ = self.writer.write_all(&[0xE0, 0x00]).await;
        let _ = self.writer.shutdown().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.reader).await;
    }
}

fn put_remaining_length(buf: &mut BytesMut, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if len == 0 {
            break;
        }
    }
}

/// Reads the broker's packets until it closes, counting PUBACKs and reopening the window.
async fn count_pubacks(
    mut read: tokio::net::tcp::OwnedReadHalf,
    acked: Arc<AtomicU64>,
    window: Arc<Semaphore>,
) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        match read.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut pubacks = 0;
        while let Some((kind, header, body)) = next_packet(&buf) {
            if kind == 0x40 {
                pubacks += 1;
            }
            buf.advance(header + body);
        }
        if pubacks > 0 {
            acked.fetch_add(pubacks, Ordering::Relaxed);
            window.add_permits(pubacks as usize);
        }
    }
}

/// The type, fixed-header length and body length of the first whole packet in `buf`.
fn next_packet(buf: &[u8]) -> Option<(u8, usize, usize)> {
    let kind = *buf.first()? & 0xF0;
    let mut len = 0usize;
    for i in 0..4 {
        let byte = *buf.get(1 + i)?;
        len |= ((byte & 0x7F) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            let header = 2 + i;
            return (buf.len() >= header + len).then_some((kind, header, len));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_length_uses_the_mqtt_varint() {
        for (len, bytes) in [
            (0usize, vec![0x00]),
            (127, vec![0x7F]),
            (128, vec![0x80, 0x01]),
            (16_383, vec![0xFF, 0x7F]),
            (2_097_152, vec![0x80, 0x80, 0x80, 0x01]),
        ] {
            let mut buf = BytesMut::new();
            put_remaining_length(&mut buf, len);
            assert_eq!(&buf[..], &bytes[..], "length {len}");
        }
    }

    #[test]
    fn packets_are_split_only_when_whole() {
        let two_pubacks = [0x40, 0x02, 0x00, 0x01, 0x40, 0x02, 0x00];
        assert_eq!(next_packet(&two_pubacks), Some((0x40, 2, 2)));
        assert_eq!(next_packet(&two_pubacks[4..]), None);
        assert_eq!(next_packet(&[0x30]), None);
    }
}
