//! What the runtime needs from the platform, and the one seam for capability decisions.

use std::fmt;

use crate::manifest::{Capability, Manifest};

/// An event a plugin asks the platform to create (`event.raise`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventInput {
    pub event_type: String,
    pub severity: u8,
    /// `(product key, device name)` when the event concerns a device.
    pub device: Option<(String, String)>,
    pub title: String,
    /// A JSON object.
    pub fields: String,
}

/// Why the platform refused or failed a host call; reaches the guest as `host-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("denied: {0}")]
    Denied(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("limit: {0}")]
    Limit(String),
}

/// What the runtime needs from the platform; implemented by the binary.
///
/// Calls are synchronous and run on the thread that called into the plugin; an async
/// implementation bridges with `tokio::task::block_in_place` + `Handle::block_on` (plugin calls
/// run on threads where that is allowed). `plugin` is the calling plugin's id; the runtime has
/// already checked the capability and its scope before any of these is called.
pub trait HostServices: Send + Sync + 'static {
    fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, HostError>;
    fn kv_set(&self, plugin: &str, key: &str, value: &[u8]) -> Result<(), HostError>;
    fn kv_delete(&self, plugin: &str, key: &str) -> Result<(), HostError>;
    fn device_properties(
        &self,
        plugin: &str,
        product_key: &str,
        device_name: &str,
    ) -> Result<String, HostError>;
    fn set_property(
        &self,
        plugin: &str,
        product_key: &str,
        device_name: &str,
        params: &str,
    ) -> Result<String, HostError>;
    fn invoke_service(
        &self,
        plugin: &str,
        product_key: &str,
        device_name: &str,
        identifier: &str,
        params: &str,
    ) -> Result<String, HostError>;
    fn publish(&self, plugin: &str, topic: &str, payload: &[u8], qos: u8) -> Result<(), HostError>;
    fn raise_event(&self, plugin: &str, event: EventInput) -> Result<String, HostError>;
    fn update_event(
        &self,
        plugin: &str,
        id: &str,
        state: &str,
        note: &str,
    ) -> Result<(), HostError>;
    fn secret(&self, plugin: &str, name: &str) -> Result<String, HostError>;
    /// Called once when a plugin is suspended after repeated failures; the platform raises an
    /// operator alarm.
    fn plugin_suspended(&self, plugin: &str, reason: &str);
}

/// What a device call wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceCall<'a> {
    GetProperties,
    SetProperty,
    InvokeService { identifier: &'a str },
}

/// One host call a plugin is about to make, with the arguments that decide whether it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapabilityRequest<'a> {
    Log,
    Clock,
    Kv {
        key: &'a str,
    },
    Http {
        method: &'a str,
        url: &'a str,
        host: &'a str,
        port: u16,
    },
    Device {
        product_key: &'a str,
        device_name: &'a str,
        operation: DeviceCall<'a>,
    },
    Publish {
        topic: &'a str,
    },
    /// `device` is `(product key, device name)` when the event concerns one.
    RaiseEvent {
        event_type: &'a str,
        device: Option<(&'a str, &'a str)>,
    },
    UpdateEvent {
        id: &'a str,
        state: &'a str,
    },
    Secret {
        name: &'a str,
    },
}

impl CapabilityRequest<'_> {
    pub fn capability(&self) -> Capability {
        match self {
            CapabilityRequest::Log => Capability::Log,
            CapabilityRequest::Clock => Capability::Clock,
            CapabilityRequest::Kv { .. } => Capability::Kv,
            CapabilityRequest::Http { .. } => Capability::Http,
            CapabilityRequest::Device { .. } => Capability::Device,
            CapabilityRequest::Publish { .. } => Capability::Publish,
            CapabilityRequest::RaiseEvent { .. } | CapabilityRequest::UpdateEvent { .. } => {
                Capability::Event
            }
            CapabilityRequest::Secret { .. } => Capability::Secrets,
        }
    }
}

impl fmt::Display for CapabilityRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CapabilityRequest::Log => f.write_str("log"),
            CapabilityRequest::Clock => f.write_str("clock"),
            CapabilityRequest::Kv { key } => write!(f, "kv key {key:?}"),
            CapabilityRequest::Http {
                method, host, port, ..
            } => write!(f, "http {method} to {host}:{port}"),
            CapabilityRequest::Device {
                product_key,
                device_name,
                operation,
            } => {
                write!(f, "device {product_key}/{device_name} {operation:?}")
            }
            CapabilityRequest::Publish { topic } => write!(f, "publish on {topic:?}"),
            CapabilityRequest::RaiseEvent { event_type, .. } => {
                write!(f, "raise event {event_type:?}")
            }
            CapabilityRequest::UpdateEvent { id, state } => {
                write!(f, "update event {id:?} to {state:?}")
            }
            CapabilityRequest::Secret { name } => write!(f, "secret {name:?}"),
        }
    }
}

/// One seam for every capability decision; the policy engine replaces [`ManifestCapabilityCheck`].
/// `Err` carries the reason the guest receives in `host-error::denied`.
pub trait CapabilityCheck: Send + Sync {
    fn check(&self, manifest: &Manifest, request: &CapabilityRequest<'_>) -> Result<(), String>;
}

/// Grants exactly what the manifest requests, within the manifest's scopes: `http` only to
/// `http_allow`, `device` only on `products`, `publish` only on `topics`, `secrets` only those
/// listed.
#[derive(Debug, Default, Clone, Copy)]
pub struct ManifestCapabilityCheck;

impl CapabilityCheck for ManifestCapabilityCheck {
    fn check(&self, manifest: &Manifest, request: &CapabilityRequest<'_>) -> Result<(), String> {
        let capability = request.capability();
        if !manifest.requests(capability) {
            return Err(format!(
                "capability `{capability}` is not granted to plugin {}",
                manifest.id
            ));
        }
        match *request {
            CapabilityRequest::Log | CapabilityRequest::Clock | CapabilityRequest::Kv { .. } => {
                Ok(())
            }
            CapabilityRequest::UpdateEvent { .. } => Ok(()),
            CapabilityRequest::Http { host, port, .. } => {
                if http_host_allowed(&manifest.http_allow, host, port) {
                    Ok(())
                } else {
                    Err(format!(
                        "http to {host}:{port} is not on the allow-list of plugin {}",
                        manifest.id
                    ))
                }
            }
            CapabilityRequest::Device { product_key, .. } => in_products(manifest, product_key),
            CapabilityRequest::RaiseEvent { device, .. } => match device {
                Some((product_key, _)) => in_products(manifest, product_key),
                None => Ok(()),
            },
            CapabilityRequest::Publish { topic } => {
                if manifest
                    .topics
                    .iter()
                    .any(|filter| topic_matches(filter, topic))
                {
                    Ok(())
                } else {
                    Err(format!(
                        "publishing on {topic:?} is outside the topics of plugin {}",
                        manifest.id
                    ))
                }
            }
            CapabilityRequest::Secret { name } => {
                if manifest.secrets.iter().any(|s| s == name) {
                    Ok(())
                } else {
                    Err(format!(
                        "secret {name:?} is not listed for plugin {}",
                        manifest.id
                    ))
                }
            }
        }
    }
}

fn in_products(manifest: &Manifest, product_key: &str) -> Result<(), String> {
    if manifest.products.iter().any(|p| p == product_key) {
        Ok(())
    } else {
        Err(format!(
            "product {product_key:?} is outside the products of plugin {}",
            manifest.id
        ))
    }
}

/// `host` allows the host on any port; `host:port` only that port. Host names compare
/// case-insensitively; IPv6 entries are written in brackets (`[::1]:8080`).
pub fn http_host_allowed(allow: &[String], host: &str, port: u16) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    allow.iter().any(|entry| {
        let (entry_host, entry_port) = split_host_port(entry);
        entry_host.eq_ignore_ascii_case(host) && entry_port.is_none_or(|p| p == port)
    })
}

fn split_host_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        // [v6]:port or [v6]
        return match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (rest, None),
        };
    }
    match entry.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(port) => (host, Some(port)),
            Err(_) => (entry, None),
        },
        _ => (entry, None),
    }
}

/// MQTT-style filter matching: `+` matches one level, a final `#` matches the rest (including
/// nothing).
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut levels = topic.split('/');
    for part in filter.split('/') {
        match part {
            "#" => return true,
            "+" => {
                if levels.next().is_none() {
                    return false;
                }
            }
            literal => {
                if levels.next() != Some(literal) {
                    return false;
                }
            }
        }
    }
    levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_filters_match_like_mqtt() {
        assert!(topic_matches("/pk/+/user/up", "/pk/dev1/user/up"));
        assert!(!topic_matches("/pk/+/user/up", "/pk/dev1/user/down"));
        assert!(topic_matches("app/#", "app/status/pk/dn"));
        assert!(topic_matches("app/#", "app"));
        assert!(!topic_matches("app/+", "app/a/b"));
        assert!(!topic_matches("app/a/b", "app/a"));
    }

    #[test]
    fn http_allow_list_honours_ports() {
        let allow = vec![
            "api.example.com".to_string(),
            "127.0.0.1:8080".to_string(),
            "[::1]:9000".to_string(),
        ];
        assert!(http_host_allowed(&allow, "API.example.com", 443));
        assert!(http_host_allowed(&allow, "127.0.0.1", 8080));
        assert!(!http_host_allowed(&allow, "127.0.0.1", 8081));
        assert!(http_host_allowed(&allow, "[::1]", 9000));
        assert!(!http_host_allowed(&allow, "evil.example.com", 443));
    }
}
