//! The rows the store reads and writes. Times are Unix milliseconds throughout.

use std::fmt;

use lotus_model::product::{DataFormat, NodeType};
pub use lotus_model::scope::Scope;
use lotus_model::topic::TopicOperation;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One page of a listing. Listings are ordered by creation time, then by key, so pages stay
/// stable while rows are added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub offset: i64,
    pub limit: i64,
}

impl Default for Page {
    fn default() -> Self {
        Self {
            offset: 0,
            limit: 50,
        }
    }
}

/// A console user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    /// PHC string (argon2); never the password.
    pub password_hash: String,
    pub roles: Vec<String>,
    pub created_at: i64,
    /// The organisation and region the user acts in (see `lotus_model::scope`).
    pub scope: Scope,
    /// What the user says about themselves (the personal center).
    pub profile: UserProfile,
    /// The `<kind>.<verb>` actions the custom roles among `roles` permit; filled in where the
    /// user acts (`session_user`, `user_by_name`), empty in lists.
    pub permissions: Vec<String>,
    /// The user's organisation and every organisation below it (what they have in scope);
    /// filled in with `permissions`, empty in lists.
    pub org_subtree: Vec<String>,
    /// When an administrator disabled the account; `None` while it is active. A disabled
    /// user has no session (`Store::session_user`) and must not be let in by any other way
    /// either (see [`UserRow::is_active`]).
    pub disabled_at: Option<i64>,
    /// Until when repeated failed log-ins lock the account (it may lie in the past).
    pub locked_until: Option<i64>,
    /// When an administrator last set the password; `None` once the user chose their own.
    /// While set, the user is asked to change it at log-in.
    pub password_reset_at: Option<i64>,
}

impl UserRow {
    /// Whether the account may log in and act at all: every way in (password, the city's
    /// identity provider, tokens issued to apps) refuses an account that is not.
    pub fn is_active(&self) -> bool {
        self.disabled_at.is_none()
    }
}

/// A user's name and contact details as they gave them; `None` where they gave nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserProfile {
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
}

/// A product to create. The secret is given in plain and encrypted by the store.
#[derive(Clone)]
pub struct NewProduct {
    pub product_key: String,
    pub name: String,
    pub node_type: NodeType,
    pub data_format: DataFormat,
    pub dynamic_registration: bool,
    /// Dynamic registration without pre-created devices (Alibaba's `regnwl`).
    pub allow_unregistered: bool,
    pub replay_window_secs: Option<i64>,
    pub description: String,
    /// Plain; stored encrypted.
    pub product_secret: String,
    /// The owning organisation and the region its devices are in unless they say otherwise.
    pub scope: Scope,
}

impl fmt::Debug for NewProduct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewProduct")
            .field("product_key", &self.product_key)
            .field("name", &self.name)
            .field("node_type", &self.node_type)
            .field("data_format", &self.data_format)
            .field("dynamic_registration", &self.dynamic_registration)
            .field("allow_unregistered", &self.allow_unregistered)
            .field("replay_window_secs", &self.replay_window_secs)
            .field("description", &self.description)
            .field("product_secret", &"***")
            .finish()
    }
}

/// Changes to a product; `None` leaves a field as it is. The key, node type and secret never
/// change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductUpdate {
    pub name: Option<String>,
    pub data_format: Option<DataFormat>,
    pub dynamic_registration: Option<bool>,
    pub allow_unregistered: Option<bool>,
    /// `Some(None)` turns the replay window off.
    pub replay_window_secs: Option<Option<i64>>,
    pub description: Option<String>,
    pub org: Option<String>,
    pub region: Option<String>,
}

/// A stored product (without its secret: see [`crate::Store::product_secret`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductRow {
    pub product_key: String,
    pub name: String,
    pub node_type: NodeType,
    pub data_format: DataFormat,
    pub dynamic_registration: bool,
    pub allow_unregistered: bool,
    pub replay_window_secs: Option<i64>,
    pub description: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// The latest thing model version, if a model was ever uploaded.
    pub thing_model_version: Option<i64>,
    pub device_count: i64,
    pub scope: Scope,
}

/// A custom topic class of a product. System classes are not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicClassRow {
    pub id: i64,
    pub product_key: String,
    pub template: String,
    pub operation: TopicOperation,
    pub description: String,
}

/// A device's status as the console shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    /// Registered but never connected.
    Inactive,
    Online,
    Offline,
    /// Refused at CONNECT until enabled again.
    Disabled,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Inactive => "inactive",
            DeviceStatus::Online => "online",
            DeviceStatus::Offline => "offline",
            DeviceStatus::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "inactive" => Some(DeviceStatus::Inactive),
            "online" => Some(DeviceStatus::Online),
            "offline" => Some(DeviceStatus::Offline),
            "disabled" => Some(DeviceStatus::Disabled),
            _ => None,
        }
    }
}

impl fmt::Display for DeviceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for DeviceStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A stored device (without its secret: see [`crate::Store::device_secret`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRow {
    pub product_key: String,
    pub device_name: String,
    pub nickname: Option<String>,
    pub enabled: bool,
    pub online: bool,
    pub first_online_at: Option<i64>,
    pub last_online_at: Option<i64>,
    pub last_offline_at: Option<i64>,
    pub last_offline_reason: Option<String>,
    /// A JSON object of the device's tags.
    pub tags: Value,
    pub created_at: i64,
    pub updated_at: i64,
    /// The device's own region; `None` when it is where its product is.
    pub region: Option<String>,
}

impl DeviceRow {
    /// Disabled wins over everything; a device that never connected is inactive.
    pub fn status(&self) -> DeviceStatus {
        if !self.enabled {
            DeviceStatus::Disabled
        } else if self.first_online_at.is_none() {
            DeviceStatus::Inactive
        } else if self.online {
            DeviceStatus::Online
        } else {
            DeviceStatus::Offline
        }
    }
}

/// Which devices to list; every field narrows the result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    pub product_key: Option<String>,
    /// Case-insensitive substring of the device name.
    pub name_like: Option<String>,
    /// `online`, `offline`, `inactive` or `disabled` (see [`DeviceStatus`]).
    pub status: Option<String>,
    /// Only devices of this organisation (or of none) in this region or below it.
    pub within: Option<Scope>,
    /// Devices in this region or below it (the device's own region, else its product's).
    pub region: Option<String>,
    /// Devices whose tag `.0` has the value `.1` (compared as text).
    pub tag: Option<(String, String)>,
}

/// One connect or disconnect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRow {
    pub online: bool,
    pub reason: String,
    pub at: i64,
}

/// A property value reported by a device.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyRecord {
    pub product_key: String,
    pub device_name: String,
    pub identifier: String,
    pub value: Value,
    /// The value as a number when it is one, for aggregation in SQL.
    pub num: Option<f64>,
    pub ts: i64,
}

/// An event posted by a device.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub product_key: String,
    pub device_name: String,
    pub identifier: String,
    /// `info`, `alert` or `error`.
    pub event_type: String,
    pub params: Value,
    pub ts: i64,
}

/// Everything one group commit of the telemetry writer stores.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TelemetryBatch {
    pub properties: Vec<PropertyRecord>,
    pub events: Vec<EventRecord>,
}

/// How [`crate::Store::property_aggregate`] folds the points of a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    /// Mean of the numeric points.
    Avg,
    /// Smallest numeric point.
    Min,
    /// Largest numeric point.
    Max,
    /// Number of points, numeric or not.
    Count,
    /// The newest point's value, whatever its type.
    Last,
}

/// A device shadow: what the platform wants (`desired`) and what the device says (`reported`).
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowRow {
    pub desired: Value,
    pub reported: Value,
    pub version: i64,
    pub desired_updated_at: Option<i64>,
    pub reported_updated_at: Option<i64>,
    pub updated_at: i64,
}

/// A downlink request (property set, service call) and, once known, the device's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct DownlinkRow {
    pub message_id: String,
    pub product_key: String,
    pub device_name: String,
    pub method: String,
    pub params: Value,
    /// `sent`, `replied`, `timeout` or `failed`.
    pub status: String,
    pub reply_code: Option<i64>,
    pub reply_data: Option<Value>,
    pub reply_message: Option<String>,
    pub created_at: i64,
    pub replied_at: Option<i64>,
}
