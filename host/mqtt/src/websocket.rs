//! MQTT over WebSocket: the HTTP upgrade, and a byte-stream view of binary frames.
//!
//! MQTT packets may span frames and frames may hold several packets, so frames are turned
//! back into a byte stream and the ordinary connection code runs on top.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Subprotocols we answer to, in order of preference (`mqttv3.1` is what older Paho sends).
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Frame limits and small buffers: tungstenite's defaults (128 KiB read buffer) would cost
/// every idle WebSocket connection far more than its MQTT state.
pub(crate) fn config(max_packet_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(max_packet_size + 1024))
        .max_frame_size(Some(max_packet_size + 1024))
}

/// Accepts the upgrade on any path if the client offers an MQTT subprotocol (or none, as
/// some clients do), and answers with the one chosen.
#[allow(clippy::result_large_err)] // the signature is tungstenite's handshake callback
pub(crate) fn choose_subprotocol(
    req: &Request,
    mut resp: Response,
) -> Result<Response, ErrorResponse> {
    let offered: Vec<&str> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if offered.is_empty() {
        return Ok(resp);
    }
    let chosen = SUBPROTOCOLS
        .iter()
        .find(|p| offered.iter().any(|o| o.eq_ignore_ascii_case(p)));
    match chosen {
        Some(p) => {
            resp.headers_mut()
                .insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
            Ok(resp)
        }
        None => {
            let mut err = ErrorResponse::new(Some(
                "MQTT over WebSocket needs the 'mqtt' subprotocol".into(),
            ));
            *err.status_mut() = StatusCode::BAD_REQUEST;
            Err(err)
        }
    }
}

/// A WebSocket connection seen as the byte stream its binary frames carry.
pub(crate) struct WsStream<S> {
    ws: WebSocketStream<S>,
    /// The unread rest of the last binary frame.
    read: Bytes,
}

impl<S> WsStream<S> {
    pub fn new(ws: WebSocketStream<S>) -> Self {
        Self {
            ws,
            read: Bytes::new(),
        }
    }
}

fn to_io(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    io::Error::other(e)
}

impl<S> AsyncRead for WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.read.is_empty() {
                let n = self.read.len().min(buf.remaining());
                buf.put_slice(&self.read[..n]);
                self.read.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(data))) => self.read = data,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "MQTT over WebSocket uses binary frames",
                    )));
                }
                // tungstenite answers pings itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
    }
}

impl<S> AsyncWrite for WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(to_io)?;
        // The connection writes a whole burst at once, so this is one frame per burst.
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(to_io)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(to_io)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_close(cx).map_err(to_io)
    }
}
