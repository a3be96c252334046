//! The one authorisation interface every permission decision goes through.
//!
//! The device plane asks it for every PUBLISH, SUBSCRIBE and delivery. The built-in
//! implementation ([`crate::topic::TopicClassAuthorizer`]) evaluates the product's topic
//! classes; a policy engine implements the same trait, so swapping it in is a one-line change
//! where the node is wired together.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::topic::AppGrant;

/// Who is acting on a connection or an API call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// A device authenticated with its own (or its product's) secret.
    Device(DeviceId),
    /// A generic MQTT client admitted by `allow_anonymous`; it only sees topics outside the
    /// device namespaces (`/sys`, `/shadow`, `/ext`, product custom topics).
    Anonymous { client_id: Arc<str> },
    /// An application (ISV app, city dashboard) logged in with an application credential;
    /// confined to the topic filters its credential grants (see
    /// [`crate::topic::TopicClassAuthorizer`] for the exact rules).
    Application(Application),
    /// The platform itself (API downlinks, rules). Always allowed.
    Platform,
}

/// What a grant of an application credential permits on its filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GrantAction {
    /// SUBSCRIBE with filters the grant covers, and receive messages on topics it matches.
    Subscribe,
    /// PUBLISH to topic names the grant matches (within the limits of the authorizer).
    Publish,
}

impl GrantAction {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantAction::Subscribe => "subscribe",
            GrantAction::Publish => "publish",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "subscribe" => Some(GrantAction::Subscribe),
            "publish" => Some(GrantAction::Publish),
            _ => None,
        }
    }
}

/// A topic filter granted to an application credential, as stored and shown:
/// `{"filter": "/a1b2c3/+/user/update", "actions": ["subscribe"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub filter: String,
    pub actions: Vec<GrantAction>,
}

/// An application on a connection: its credential's id and compiled grants.
///
/// Equality and hashing use the id only, so the broker finds every connection of a credential
/// (to disconnect it) from the id alone, whatever grants those connections were admitted with.
#[derive(Clone)]
pub struct Application {
    pub id: Arc<str>,
    pub grants: Arc<[AppGrant]>,
    /// A registered app of the app registry (`id` is its client id) rather than an application
    /// credential (`id` is the credential's number): the same rules, but refusals name the app.
    pub registered_app: bool,
}

impl Application {
    /// An application credential's login.
    pub fn new(id: impl Into<Arc<str>>, grants: impl Into<Arc<[AppGrant]>>) -> Self {
        Self {
            id: id.into(),
            grants: grants.into(),
            registered_app: false,
        }
    }

    /// A registered app's login, by its client id.
    pub fn registered(client_id: impl Into<Arc<str>>, grants: impl Into<Arc<[AppGrant]>>) -> Self {
        Self {
            registered_app: true,
            ..Self::new(client_id, grants)
        }
    }

    /// The principal with this id and no grants: enough to look its connections up.
    pub fn key(id: impl Into<Arc<str>>) -> Self {
        Self::new(id, Vec::new())
    }
}

impl PartialEq for Application {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Application {}

impl Hash for Application {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl fmt::Debug for Application {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Application")
            .field("id", &self.id)
            .field(
                "grants",
                &self.grants.iter().map(AppGrant::filter).collect::<Vec<_>>(),
            )
            .field("registered_app", &self.registered_app)
            .finish()
    }
}

/// A device's identity: product key plus device name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId {
    pub product_key: Arc<str>,
    pub device_name: Arc<str>,
}

impl DeviceId {
    pub fn new(product_key: impl Into<Arc<str>>, device_name: impl Into<Arc<str>>) -> Self {
        Self {
            product_key: product_key.into(),
            device_name: device_name.into(),
        }
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.product_key, self.device_name)
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Device(id) => write!(f, "device:{id}"),
            Principal::Anonymous { client_id } => write!(f, "anonymous:{client_id}"),
            Principal::Application(app) => write!(f, "application:{}", app.id),
            Principal::Platform => f.write_str("platform"),
        }
    }
}

/// What a principal wants to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicAction {
    /// Send a PUBLISH to this topic name.
    Publish,
    /// Subscribe with this topic filter (may contain wildcards).
    Subscribe,
    /// Receive a message published on this topic name through one of its subscriptions.
    /// Checked at delivery so that a revoked permission takes effect at once.
    Deliver,
}

impl TopicAction {
    pub fn as_str(self) -> &'static str {
        match self {
            TopicAction::Publish => "publish",
            TopicAction::Subscribe => "subscribe",
            TopicAction::Deliver => "deliver",
        }
    }
}

/// The outcome of a permission decision. A denial carries a reason that is logged and, where
/// the protocol allows, returned to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(Arc<str>),
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

/// Decides whether a principal may use a topic. Called on the hot path: implementations must
/// not block and should cache.
pub trait TopicAuthorizer: Send + Sync + 'static {
    fn authorize_topic(&self, principal: &Principal, action: TopicAction, topic: &str) -> Decision;
}
