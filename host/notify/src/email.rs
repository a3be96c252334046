//! The e-mail channel: delivery over SMTP.
//!
//! One [`SmtpChannel`] is built from an [`SmtpConfig`] and sends [`Email`]s.
//! Each send opens a connection, delivers one message to all its recipients
//! and closes it; notification volumes do not justify holding idle
//! connections that relays tend to drop anyway.
//!
//! Encryption is chosen with [`Security`]. TLS uses rustls and the Mozilla
//! root certificates bundled at build time (webpki roots), so the host's
//! certificate store is not consulted and a relay with a certificate from a
//! private CA cannot be used with `tls`/`startTls`.

use std::collections::hash_map::RandomState;
use std::error::Error as _;
use std::fmt;
use std::hash::BuildHasher;
use std::io;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{CertificateStore, Tls, TlsParameters};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};

use crate::error::NotifyError;

/// Upper bound for `timeoutSecs`; a notification that takes longer than an
/// hour to hand over is better dead-lettered and looked at.
const MAX_TIMEOUT_SECS: u64 = 3600;

/// How the connection to the mail server is protected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Security {
    /// No encryption at all: the message **and the password** travel in
    /// clear text. Only for a relay on the same host (loopback) or a trusted
    /// internal relay, and for test servers.
    None,
    /// Plain connection upgraded with STARTTLS, which is then required
    /// (usually port 587).
    #[default]
    StartTls,
    /// TLS from the first byte, "implicit TLS" (usually port 465).
    Tls,
}

/// Settings of the SMTP channel, stored as JSON in camelCase:
/// `{"host": "smtp.example.org", "port": 587, "security": "startTls",
/// "username": "lotus", "password": "...", "from": "Lotus <alerts@example.org>",
/// "timeoutSecs": 30}`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SmtpConfig {
    /// Host name or IP address of the mail server, without scheme or port.
    pub host: String,
    /// TCP port, typically 587 (`startTls`), 465 (`tls`) or 25.
    pub port: u16,
    /// Connection protection; defaults to `startTls`.
    #[serde(default)]
    pub security: Security,
    /// Login name; omit for servers that accept mail without login.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for `username`.
    #[serde(default)]
    pub password: Option<String>,
    /// Sender, `alerts@example.org` or `Lotus <alerts@example.org>`.
    pub from: String,
    /// Limit for one delivery attempt, from connecting to the server's final
    /// reply, in seconds (1..=3600). Defaults to 30.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_timeout_secs() -> u64 {
    30
}

impl fmt::Debug for SmtpConfig {
    // The password must not end up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

impl SmtpConfig {
    /// Checks every field; the error names the first unusable one (by its
    /// JSON name) and says what is expected.
    pub fn validate(&self) -> Result<(), NotifyError> {
        check_host(&self.host)?;
        if self.port == 0 {
            return Err(invalid(
                "port",
                "must be between 1 and 65535 (usually 587, 465 or 25)",
            ));
        }
        parse_mailbox(&self.from).map_err(|reason| {
            invalid(
                "from",
                format!(
                    "`{}` is not a valid sender address ({reason}); use `alerts@example.org` or `Lotus <alerts@example.org>`",
                    self.from
                ),
            )
        })?;
        match (&self.username, &self.password) {
            (Some(user), _) if user.trim().is_empty() => {
                return Err(invalid(
                    "username",
                    "must not be empty; remove it to send without login",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid("username", "is missing while `password` is set"));
            }
            (Some(_), None) => {
                return Err(invalid("password", "is missing while `username` is set"));
            }
            _ => {}
        }
        if !(1..=MAX_TIMEOUT_SECS).contains(&self.timeout_secs) {
            return Err(invalid(
                "timeoutSecs",
                format!(
                    "must be between 1 and {MAX_TIMEOUT_SECS} seconds, got {}",
                    self.timeout_secs
                ),
            ));
        }
        Ok(())
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> NotifyError {
    NotifyError::InvalidConfig {
        field,
        reason: reason.into(),
    }
}

fn check_host(host: &str) -> Result<(), NotifyError> {
    if host.trim().is_empty() {
        return Err(invalid(
            "host",
            "must name the mail server, e.g. smtp.example.org",
        ));
    }
    if let Some((scheme, _)) = host.split_once("://") {
        return Err(invalid(
            "host",
            format!("must be a host name or IP address without a scheme; remove `{scheme}://`"),
        ));
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if host.contains(':') {
        return Err(invalid(
            "host",
            format!("`{host}` must not contain a port; put the port number in `port`"),
        ));
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(invalid(
            "host",
            format!(
                "`{host}` is not a valid host name; use letters, digits, `-` and dots, e.g. smtp.example.org"
            ),
        ));
    }
    Ok(())
}

fn parse_mailbox(s: &str) -> Result<Mailbox, String> {
    Mailbox::from_str(s.trim()).map_err(|err| {
        match err {
            lettre::address::AddressError::MissingParts => {
                "it needs a name and a domain around `@`"
            }
            lettre::address::AddressError::Unbalanced => "unbalanced `<` `>`",
            lettre::address::AddressError::InvalidUser => "the part before `@` is not valid",
            lettre::address::AddressError::InvalidDomain => "the domain after `@` is not valid",
            _ => "it is not of the form name@domain",
        }
        .to_owned()
    })
}

/// A message to send.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Email {
    /// Recipients, `someone@example.org` or `Name <someone@example.org>`.
    pub to: Vec<String>,
    /// Subject line (any Unicode; encoded as needed).
    pub subject: String,
    /// Plain-text body, always sent.
    pub body_text: String,
    /// Optional HTML alternative; mail clients that render HTML show it
    /// instead of the text body.
    #[serde(default)]
    pub body_html: Option<String>,
}

/// Outcome of a successful hand-over to the mail server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The `Message-ID` header of the message, including the angle brackets,
    /// for matching bounces and replies.
    pub message_id: String,
    /// The recipients the server accepted. SMTP delivery here is
    /// all-or-nothing: if the server refuses any recipient nothing is sent
    /// and an error is returned, so this lists every recipient.
    pub accepted: Vec<String>,
    /// The server's final reply, e.g. `250 2.0.0 Ok: queued as 4F3A2`,
    /// worth keeping with the delivery record when tracing a lost message.
    pub server_reply: String,
}

/// Sends e-mail through one SMTP server.
///
/// Cheap to share behind an `Arc`; `send` may be called concurrently.
pub struct SmtpChannel {
    config: SmtpConfig,
    from: Mailbox,
    server: String,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl fmt::Debug for SmtpChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpChannel")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SmtpChannel {
    /// Validates `config` and prepares the transport; does not connect.
    pub fn new(config: SmtpConfig) -> Result<SmtpChannel, NotifyError> {
        config.validate()?;
        let from = parse_mailbox(&config.from).map_err(|reason| invalid("from", reason))?;
        let server = if config.host.contains(':') {
            format!("[{}]:{}", config.host, config.port)
        } else {
            format!("{}:{}", config.host, config.port)
        };
        let tls = match config.security {
            Security::None => {
                let loopback = config.host == "localhost"
                    || config
                        .host
                        .parse::<IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                if config.username.is_some() && !loopback {
                    tracing::warn!(
                        server = %server,
                        "SMTP security is `none`: the password and every message are sent in clear text"
                    );
                }
                Tls::None
            }
            Security::StartTls => Tls::Required(tls_parameters(&config.host, &server)?),
            Security::Tls => Tls::Wrapper(tls_parameters(&config.host, &server)?),
        };
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(config.host.as_str())
                .port(config.port)
                .tls(tls)
                .timeout(Some(Duration::from_secs(config.timeout_secs)));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(SmtpChannel {
            transport: builder.build(),
            from,
            server,
            config,
        })
    }

    /// The configuration this channel was built from.
    pub fn config(&self) -> &SmtpConfig {
        &self.config
    }

    /// Connects, greets and logs in without sending anything, for a
    /// "test connection" action in the settings screen.
    pub async fn check(&self) -> Result<(), NotifyError> {
        let attempt = tokio::time::timeout(self.timeout(), self.transport.test_connection()).await;
        match attempt {
            Err(_) => Err(self.timeout_error()),
            Ok(Err(err)) => Err(self.classify(&err)),
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(NotifyError::Protocol {
                server: self.server.clone(),
                reason: "the server did not answer NOOP after the greeting".into(),
                transient: true,
            }),
        }
    }

    /// Sends `mail` to all its recipients in one SMTP transaction.
    ///
    /// Addresses are checked before connecting; an invalid one is reported
    /// as [`NotifyError::InvalidAddress`] naming it, and nothing is sent.
    /// The whole attempt is bounded by `timeoutSecs`.
    pub async fn send(&self, mail: &Email) -> Result<Delivery, NotifyError> {
        if mail.to.is_empty() {
            return Err(NotifyError::NoRecipients);
        }
        let mut recipients = Vec::with_capacity(mail.to.len());
        for address in &mail.to {
            let mailbox = parse_mailbox(address).map_err(|reason| NotifyError::InvalidAddress {
                address: address.clone(),
                reason,
            })?;
            if !recipients
                .iter()
                .any(|m: &Mailbox| m.email == mailbox.email)
            {
                recipients.push(mailbox);
            }
        }

        let message_id = new_message_id(&self.from.email);
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(mail.subject.as_str())
            .message_id(Some(message_id.clone()));
        for mailbox in &recipients {
            builder = builder.to(mailbox.clone());
        }
        let message = match &mail.body_html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                mail.body_text.clone(),
                html.clone(),
            )),
            None => builder.singlepart(SinglePart::plain(mail.body_text.clone())),
        }
        .map_err(|err| NotifyError::InvalidMessage {
            reason: err.to_string(),
        })?;

        let started = std::time::Instant::now();
        let response =
            match tokio::time::timeout(self.timeout(), self.transport.send(message)).await {
                Err(_) => Err(self.timeout_error()),
                Ok(Err(err)) => Err(self.classify(&err)),
                Ok(Ok(response)) => Ok(response),
            };
        let response = match response {
            Ok(response) => response,
            Err(err) => {
                tracing::debug!(
                    server = %self.server,
                    message_id = %message_id,
                    transient = err.is_transient(),
                    error = %err,
                    "e-mail delivery failed"
                );
                return Err(err);
            }
        };
        let server_reply = format!(
            "{} {}",
            response.code(),
            response.message().collect::<Vec<_>>().join(" ")
        );
        tracing::debug!(
            server = %self.server,
            message_id = %message_id,
            recipients = recipients.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            reply = %server_reply,
            "e-mail handed over"
        );
        Ok(Delivery {
            message_id,
            accepted: recipients.iter().map(|m| m.email.to_string()).collect(),
            server_reply,
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.config.timeout_secs)
    }

    fn timeout_error(&self) -> NotifyError {
        NotifyError::Timeout {
            server: self.server.clone(),
            seconds: self.config.timeout_secs,
        }
    }

    /// Maps a lettre error to what an operator has to check.
    fn classify(&self, err: &lettre::transport::smtp::Error) -> NotifyError {
        let server = self.server.clone();
        let reason = source_text(err);
        if let Some(code) = err.status() {
            let code: u16 = code.to_string().parse().unwrap_or(0);
            // 454 and 53x are the reply codes of RFC 4954 (SMTP AUTH) and
            // of servers that demand a login before MAIL FROM.
            return if matches!(code, 454 | 530 | 534 | 535 | 538) {
                NotifyError::Auth {
                    server,
                    code: Some(code),
                    reply: format!("{code} {reason}"),
                }
            } else {
                NotifyError::Rejected {
                    server,
                    code,
                    reply: reason,
                }
            };
        }
        if err.is_timeout() {
            return self.timeout_error();
        }
        if err.is_tls() {
            return NotifyError::Tls { server, reason };
        }
        if err.is_client() {
            if reason.contains("authentication mechanism") {
                return NotifyError::Auth {
                    server,
                    code: None,
                    reply: "the server offers no login method Lotus supports (PLAIN, LOGIN); \
                            many servers offer login only over TLS, so check `security`"
                        .into(),
                };
            }
            if reason.contains("STARTTLS") {
                return NotifyError::Tls {
                    server,
                    reason: "the server does not offer STARTTLS".into(),
                };
            }
            return NotifyError::Protocol {
                server,
                reason,
                transient: false,
            };
        }
        if err.is_response() {
            // lettre reports end-of-stream while waiting for a reply as an
            // "incomplete response": the server hung up, which is usually load
            // shedding or a restart.
            let hung_up = reason.contains("incomplete response");
            return NotifyError::Protocol {
                server,
                reason: if hung_up {
                    "the server closed the connection without replying".into()
                } else {
                    format!(
                        "unexpected reply ({reason}); check that `host` and `port` point to an SMTP server"
                    )
                },
                transient: hung_up,
            };
        }
        let io_kind = io_error_kind(err);
        match io_kind {
            Some(io::ErrorKind::ConnectionRefused) => NotifyError::Connect {
                server,
                reason: "connection refused, nothing is listening on that port".into(),
            },
            Some(io::ErrorKind::TimedOut) => self.timeout_error(),
            // tokio-rustls reports handshake and certificate failures as
            // InvalidData; with `security: none` there is no handshake.
            Some(io::ErrorKind::InvalidData) if self.config.security != Security::None => {
                NotifyError::Tls { server, reason }
            }
            Some(
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof,
            ) => NotifyError::Protocol {
                server,
                reason: format!("the connection was lost ({reason})"),
                transient: true,
            },
            // lettre's Display starts with the error kind; "Connection error"
            // covers name resolution and connect, before any SMTP exchange.
            _ if err.to_string().starts_with("Connection error") => {
                NotifyError::Connect { server, reason }
            }
            _ => NotifyError::Protocol {
                server,
                reason,
                transient: true,
            },
        }
    }
}

fn tls_parameters(host: &str, server: &str) -> Result<TlsParameters, NotifyError> {
    TlsParameters::builder(host.to_owned())
        .certificate_store(CertificateStore::WebpkiRoots)
        .build_rustls()
        .map_err(|err| NotifyError::Tls {
            server: server.to_owned(),
            reason: source_text(&err),
        })
}

/// The causes of an error, without lettre's generic kind prefix.
fn source_text(err: &lettre::transport::smtp::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = err.source();
    while let Some(cause) = source {
        // lettre nests its own errors (a TLS failure inside a connection
        // error); their text only repeats the kind, the cause follows.
        let nested = cause
            .downcast_ref::<lettre::transport::smtp::Error>()
            .is_some();
        let text = cause.to_string();
        if !nested && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    if parts.is_empty() {
        err.to_string()
    } else {
        parts.join(": ")
    }
}

fn io_error_kind(err: &lettre::transport::smtp::Error) -> Option<io::ErrorKind> {
    let mut source = err.source();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        source = cause.source();
    }
    None
}

/// A globally unique `Message-ID` under the sender's domain.
///
/// The sender's domain is used rather than the machine's host name, which
/// would leak internal names (container ids) to every recipient.
fn new_message_id(from: &Address) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    // RandomState is seeded randomly per process, which separates ids made in
    // the same nanosecond by different Lotus instances.
    let random = RandomState::new().hash_one((nanos, count, std::process::id()));
    format!("<{nanos:x}.{count:x}.{random:016x}@{}>", from.domain())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SmtpConfig {
        SmtpConfig {
            host: "smtp.example.org".into(),
            port: 587,
            security: Security::StartTls,
            username: Some("lotus".into()),
            password: Some("secret".into()),
            from: "Lotus 告警 <alerts@example.org>".into(),
            timeout_secs: 30,
        }
    }

    fn field_of(result: Result<(), NotifyError>) -> &'static str {
        match result {
            Err(NotifyError::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn valid_config_passes() {
        config().validate().unwrap();
        for host in [
            "127.0.0.1",
            "::1",
            "mail-relay.internal",
            "smtp.example.org.",
        ] {
            SmtpConfig {
                host: host.into(),
                ..config()
            }
            .validate()
            .unwrap();
        }
    }

    #[test]
    fn invalid_config_names_the_field() {
        let cases: Vec<(SmtpConfig, &str, &str)> = vec![
            (
                SmtpConfig {
                    host: "".into(),
                    ..config()
                },
                "host",
                "must name the mail server",
            ),
            (
                SmtpConfig {
                    host: "smtp://mail.example.org".into(),
                    ..config()
                },
                "host",
                "remove `smtp://`",
            ),
            (
                SmtpConfig {
                    host: "mail.example.org:587".into(),
                    ..config()
                },
                "host",
                "put the port number in `port`",
            ),
            (
                SmtpConfig {
                    host: "mail example.org".into(),
                    ..config()
                },
                "host",
                "not a valid host name",
            ),
            (
                SmtpConfig {
                    port: 0,
                    ..config()
                },
                "port",
                "between 1 and 65535",
            ),
            (
                SmtpConfig {
                    from: "alerts.example.org".into(),
                    ..config()
                },
                "from",
                "`alerts.example.org` is not a valid sender address",
            ),
            (
                SmtpConfig {
                    username: None,
                    ..config()
                },
                "username",
                "missing while `password` is set",
            ),
            (
                SmtpConfig {
                    password: None,
                    ..config()
                },
                "password",
                "missing while `username` is set",
            ),
            (
                SmtpConfig {
                    username: Some(" ".into()),
                    ..config()
                },
                "username",
                "must not be empty",
            ),
            (
                SmtpConfig {
                    timeout_secs: 0,
                    ..config()
                },
                "timeoutSecs",
                "got 0",
            ),
        ];
        for (cfg, field, text) in cases {
            let err = cfg.validate().unwrap_err();
            assert_eq!(field_of(Err(err.clone())), field, "{err}");
            assert!(err.to_string().contains(text), "{err}");
            assert!(!err.is_transient());
        }
    }

    #[test]
    fn config_serde_is_camel_case_with_defaults() {
        let cfg: SmtpConfig = serde_json::from_value(serde_json::json!({
            "host": "smtp.example.org",
            "port": 465,
            "security": "tls",
            "from": "alerts@example.org",
        }))
        .unwrap();
        assert_eq!(cfg.security, Security::Tls);
        assert_eq!(cfg.timeout_secs, 30);
        assert_eq!(cfg.username, None);
        let json = serde_json::to_value(SmtpConfig {
            security: Security::StartTls,
            ..config()
        })
        .unwrap();
        assert_eq!(json["security"], "startTls");
        assert_eq!(json["timeoutSecs"], 30);
        assert!(
            serde_json::from_value::<SmtpConfig>(serde_json::json!({
                "host": "h", "port": 25, "from": "a@b.c", "tls": true
            }))
            .is_err()
        );
    }

    #[test]
    fn debug_redacts_password() {
        let text = format!("{:?}", config());
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("<redacted>"));
    }

    #[test]
    fn tls_channels_build_with_webpki_roots() {
        SmtpChannel::new(config()).unwrap();
        SmtpChannel::new(SmtpConfig {
            security: Security::Tls,
            port: 465,
            ..config()
        })
        .unwrap();
    }

    #[test]
    fn message_ids_are_unique_and_use_sender_domain() {
        let from: Address = "alerts@example.org".parse().unwrap();
        let ids: std::collections::HashSet<String> =
            (0..1000).map(|_| new_message_id(&from)).collect();
        assert_eq!(ids.len(), 1000);
        assert!(
            ids.iter()
                .all(|id| id.starts_with('<') && id.ends_with("@example.org>"))
        );
    }
}
