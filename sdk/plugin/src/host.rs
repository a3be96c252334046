//! The host interfaces a plugin may call, each a capability the plugin must request in
//! `lotus-plugin.toml` and the operator must grant. An ungranted call returns
//! [`HostError::Denied`](crate::types::HostError::Denied).
//!
//! These functions only work inside the host: in a native `cargo test` they panic, so keep
//! the logic you unit-test free of them and pass their results in.

use crate::types::HostError;

/// The generated `Display` of `HostError` prints its `Debug` form; these read better in
/// messages a plugin returns or logs.
impl HostError {
    /// `denied`, `not-found`, `invalid`, `unavailable` or `limit`, as in the WIT.
    pub fn kind(&self) -> &'static str {
        match self {
            HostError::Denied(_) => "denied",
            HostError::NotFound(_) => "not-found",
            HostError::Invalid(_) => "invalid",
            HostError::Unavailable(_) => "unavailable",
            HostError::Limit(_) => "limit",
        }
    }

    /// The host's explanation.
    pub fn detail(&self) -> &str {
        match self {
            HostError::Denied(s)
            | HostError::NotFound(s)
            | HostError::Invalid(s)
            | HostError::Unavailable(s)
            | HostError::Limit(s) => s,
        }
    }

    /// `kind: detail`, e.g. `unavailable: http call failed: timeout`.
    pub fn describe(&self) -> String {
        format!("{}: {}", self.kind(), self.detail())
    }
}

/// The plugin's log, queryable per plugin (`lotus plugin logs`). Capability `log`.
pub mod log {
    pub use crate::bindings::log::Level;

    pub fn log(level: Level, message: &str) {
        crate::bindings::log::log(level, message);
    }

    pub fn trace(message: &str) {
        log(Level::Trace, message);
    }

    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }

    pub fn info(message: &str) {
        log(Level::Info, message);
    }

    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }

    pub fn error(message: &str) {
        log(Level::Error, message);
    }
}

/// State private to this plugin's installation, kept across versions and restarts. Operators
/// put configuration here too. Capability `kv`.
pub mod kv {
    use crate::types::HostError;

    pub use crate::bindings::kv::{delete, get, set};

    /// A value as UTF-8 text, e.g. a JSON configuration.
    pub fn get_string(key: &str) -> Result<Option<String>, HostError> {
        match get(key)? {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|e| HostError::Invalid(format!("kv value '{key}' is not UTF-8: {e}"))),
        }
    }

    pub fn set_string(key: &str, value: &str) -> Result<(), HostError> {
        set(key, value.as_bytes())
    }
}

/// Capability `clock`.
pub mod clock {
    /// Milliseconds since the Unix epoch.
    pub fn now_ms() -> i64 {
        crate::bindings::clock::now_ms()
    }
}

/// Outbound HTTP to the hosts on the plugin's allow-list. Capability `http`.
pub mod http {
    pub use crate::bindings::http::{Request, Response, send};

    /// A `POST` of a JSON body with the given extra headers.
    pub fn post_json(url: &str, headers: Vec<(String, String)>, body: Vec<u8>) -> Request {
        let mut headers = headers;
        headers.push(("content-type".to_owned(), "application/json".to_owned()));
        Request {
            method: "POST".to_owned(),
            url: url.to_owned(),
            headers,
            body: Some(body),
            timeout_ms: None,
        }
    }

    impl Response {
        /// The first header of that name, compared case-insensitively as HTTP requires.
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        pub fn is_success(&self) -> bool {
            (200..300).contains(&self.status)
        }
    }
}

/// Devices of the products the plugin is bound to. Capability `device`.
pub mod device {
    pub use crate::bindings::device::{get_properties, invoke_service, set_property};
}

/// The platform bus. Capability `publish`.
pub mod publish {
    pub use crate::bindings::publish::publish;
}

/// Platform events. Capability `event`.
pub mod event {
    pub use crate::bindings::event::{raise, update};
}

/// Named credentials the operator configures. Capability `secrets`.
pub mod secrets {
    pub use crate::bindings::secrets::get;
}

#[cfg(test)]
mod tests {
    use super::HostError;
    use super::http::Response;

    #[test]
    fn host_error_describes_itself() {
        let e = HostError::Denied("capability `http` is not granted".into());
        assert_eq!(e.describe(), "denied: capability `http` is not granted");
    }

    #[test]
    fn response_header_is_case_insensitive() {
        let r = Response {
            status: 202,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: vec![],
        };
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(r.is_success());
    }
}
