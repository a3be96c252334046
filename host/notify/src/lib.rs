//! Notifications of Lotus: message templates, the SMTP e-mail channel and
//! per-user channel preferences.
//!
//! The rule and workflow engines render a [`MessageTemplate`] with the event
//! that fired, ask each recipient's [`Preferences`] which channels to use,
//! and hand e-mails to an [`SmtpChannel`]. SMS and IM are delivered by
//! channel plugins; in-app messages by the application itself.

pub mod email;
pub mod error;
pub mod preference;
pub mod template;

pub use email::{Delivery, Email, Security, SmtpChannel, SmtpConfig};
pub use error::NotifyError;
pub use preference::{ChannelKind, PreferenceError, Preferences, QuietHours};
pub use template::{MessageTemplate, Rendered, TemplateError, TemplatePart};
