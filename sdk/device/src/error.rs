//! The one error type of the SDK.

use std::time::Duration;

/// What went wrong with a call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The platform answered with a non-200 code, e.g. `460` with a message naming the field
    /// that does not fit the thing model.
    #[error("the platform rejected the request: code {code}: {message}")]
    Rejected { code: i64, message: String },
    /// No answer within the configured reply timeout. The request may still have been applied.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The operation does not exist over this transport (CoAP carries uplink only).
    #[error("{what} is not supported over {transport}")]
    Unsupported {
        what: &'static str,
        transport: &'static str,
    },
    /// Not connected at the moment (posts are buffered instead; other calls fail fast).
    #[error("not connected")]
    NotConnected,
    /// The platform refused the login (bad signature, unknown or disabled device, …).
    #[error("login refused: {0}")]
    Refused(String),
    /// Dynamic registration did not yield a device secret.
    #[error("registration failed: {0}")]
    Registration(String),
    /// Network or protocol failure below the Alink layer.
    #[error("transport: {0}")]
    Transport(String),
    /// The TLS settings cannot be used (unreadable CA, …).
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The device handle was closed.
    #[error("the device client is closed")]
    Closed,
}

impl Error {
    /// The platform's reply code when it rejected the request.
    pub fn code(&self) -> Option<i64> {
        match self {
            Error::Rejected { code, .. } => Some(*code),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
