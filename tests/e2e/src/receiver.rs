//! An HTTP server on loopback that records every request and answers as scripted: the stand-in
//! for the webhooks, app endpoints and SMS gateways the platform calls out to.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Each request received: its head, lower-cased, and its body.
pub type Requests = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

pub struct Receiver {
    pub addr: SocketAddr,
    pub requests: Requests,
}

impl Receiver {
    /// Answers the n-th request with the n-th of `statuses` (the last one repeats), no body.
    pub async fn start(statuses: Vec<u16>) -> anyhow::Result<Receiver> {
        anyhow::ensure!(!statuses.is_empty(), "give at least one status");
        Self::answering(move |n| (statuses[(n - 1).min(statuses.len() - 1)], String::new())).await
    }

    /// Answers the n-th request (counting from 1) with `answer(n)`: a status and a JSON body
    /// (none when empty).
    pub async fn answering(
        answer: impl Fn(usize) -> (u16, String) + Send + 'static,
    ) -> anyhow::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let requests: Requests = Arc::default();
        let seen = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let Some(request) = read_request(&mut conn).await else {
                    continue;
                };
                let n = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(request);
                    seen.len()
                };
                let (status, body) = answer(n);
                let content_type = if body.is_empty() {
                    ""
                } else {
                    "content-type: application/json\r\n"
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\n{content_type}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            }
        });
        Ok(Receiver { addr, requests })
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// Each request's head and its body as JSON (null when it is not JSON).
    pub fn json_requests(&self) -> Vec<(String, Value)> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|(head, body)| {
                (
                    head.clone(),
                    serde_json::from_slice(body).unwrap_or(Value::Null),
                )
            })
            .collect()
    }
}

/// The head and the `content-length` body of one request; `None` when the connection ends first.
async fn read_request(conn: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if buf.len() >= end + 4 + len {
            return Some((head, buf[end + 4..end + 4 + len].to_vec()));
        }
    }
}
