//! Errors of notification delivery.

/// Why a notification could not be configured or delivered.
///
/// The `Display` text is meant for operators: it says what failed and what
/// to check. [`is_transient`](NotifyError::is_transient) tells a caller that
/// retries with back-off whether another attempt may succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// A channel configuration value is unusable; `field` is its JSON name.
    #[error("invalid SMTP configuration: `{field}` {reason}")]
    InvalidConfig {
        /// JSON name of the field, e.g. `from` or `timeoutSecs`.
        field: &'static str,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// The message has no recipient.
    #[error("the e-mail has no recipients; add at least one address to `to`")]
    NoRecipients,
    /// A recipient address is malformed; nothing was sent.
    #[error(
        "`{address}` is not a valid e-mail address ({reason}); correct it in the recipient's contact details"
    )]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The message could not be assembled (for example a header value that
    /// cannot be encoded).
    #[error("the e-mail could not be built: {reason}")]
    InvalidMessage {
        /// Reason reported by the message builder.
        reason: String,
    },
    /// No connection to the mail server could be opened.
    #[error(
        "cannot connect to the mail server {server}: {reason}; check `host` and `port`, that the \
         server is running and that Lotus can reach it through the firewall (retrying may help)"
    )]
    Connect {
        /// `host:port` of the mail server.
        server: String,
        /// Network error, e.g. "connection refused".
        reason: String,
    },
    /// The mail server did not answer in time.
    #[error(
        "the mail server {server} did not answer within {seconds} s; check that it is up and not \
         overloaded, and that `security` matches the port (`tls` for 465, `startTls` for 587) \
         (retrying may help)"
    )]
    Timeout {
        /// `host:port` of the mail server.
        server: String,
        /// The configured `timeoutSecs`.
        seconds: u64,
    },
    /// The TLS handshake or certificate check failed.
    #[error(
        "TLS with the mail server {server} failed: {reason}; check that `security` matches the \
         port (`tls` for 465, `startTls` for 587) and that the server's certificate is valid for \
         `host`"
    )]
    Tls {
        /// `host:port` of the mail server.
        server: String,
        /// Handshake or verification error.
        reason: String,
    },
    /// The server refused the login.
    #[error("the mail server {server} refused the login: {reply}; check `username` and `password`{}",
        retry_hint(*code))]
    Auth {
        /// `host:port` of the mail server.
        server: String,
        /// SMTP reply code, if the server sent one.
        code: Option<u16>,
        /// The server's reply or the client's explanation.
        reply: String,
    },
    /// The server refused the sender, a recipient or the message itself.
    #[error("the mail server {server} {} the message: {code} {reply}; {}",
        if *code < 500 { "temporarily refused" } else { "rejected" },
        rejection_hint(*code))]
    Rejected {
        /// `host:port` of the mail server.
        server: String,
        /// SMTP reply code (4xx temporary, 5xx permanent).
        code: u16,
        /// The server's reply text.
        reply: String,
    },
    /// The SMTP conversation broke down (connection lost, unexpected reply,
    /// a required extension missing).
    #[error("the SMTP conversation with {server} failed: {reason}{}",
        if *transient { " (retrying may help)" } else { "" })]
    Protocol {
        /// `host:port` of the mail server.
        server: String,
        /// What went wrong.
        reason: String,
        /// Whether another attempt may succeed.
        transient: bool,
    },
}

fn retry_hint(code: Option<u16>) -> &'static str {
    match code {
        Some(c) if c < 500 => " (the server reports a temporary problem; retrying may help)",
        _ => "",
    }
}

fn rejection_hint(code: u16) -> &'static str {
    match code {
        400..=499 => "the server reports a temporary problem (retrying may help)",
        550 | 551 | 553 => {
            "check the recipient addresses and that the server accepts `from` as the sender"
        }
        552 => "the message is too large or a mailbox is full",
        554 => {
            "the server refused the message as a whole; check its policy (spam filter, relay rules) for `from`"
        }
        _ => "check the recipient addresses, `from` and the server's relay policy",
    }
}

impl NotifyError {
    /// Whether retrying the same delivery later may succeed.
    ///
    /// True for connection failures, timeouts, lost connections and 4xx
    /// replies; false for configuration mistakes, invalid addresses, TLS
    /// failures, rejected logins and 5xx replies, which need someone to fix
    /// something first.
    pub fn is_transient(&self) -> bool {
        match self {
            NotifyError::Connect { .. } | NotifyError::Timeout { .. } => true,
            NotifyError::Auth { code, .. } => code.is_some_and(|c| c < 500),
            NotifyError::Rejected { code, .. } => *code < 500,
            NotifyError::Protocol { transient, .. } => *transient,
            NotifyError::InvalidConfig { .. }
            | NotifyError::NoRecipients
            | NotifyError::InvalidAddress { .. }
            | NotifyError::InvalidMessage { .. }
            | NotifyError::Tls { .. } => false,
        }
    }
}
