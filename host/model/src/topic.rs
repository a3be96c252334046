//! Topic names, topic filters and a product's topic classes.
//!
//! A topic class is a template such as `/${productKey}/${deviceName}/user/update` with a
//! permission (publish, subscribe or both). Templates are compiled once into levels so that the
//! per-message check compares slices without allocating.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::authz::{Decision, DeviceId, Principal, TopicAction, TopicAuthorizer};

/// Which way a topic class may be used by the device it is instantiated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TopicOperation {
    /// The device publishes to it.
    Pub,
    /// The device subscribes to it.
    Sub,
    /// Both.
    All,
}

impl TopicOperation {
    pub fn allows(self, action: TopicAction) -> bool {
        matches!(
            (self, action),
            (TopicOperation::All, _)
                | (TopicOperation::Pub, TopicAction::Publish)
                | (
                    TopicOperation::Sub,
                    TopicAction::Subscribe | TopicAction::Deliver
                )
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TopicOperation::Pub => "pub",
            TopicOperation::Sub => "sub",
            TopicOperation::All => "all",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pub" => Some(TopicOperation::Pub),
            "sub" => Some(TopicOperation::Sub),
            "all" => Some(TopicOperation::All),
            _ => None,
        }
    }
}

/// One level of a compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(Box<str>),
    ProductKey,
    DeviceName,
    /// `+` or a placeholder such as `${tsl.event.identifier}`: any single level.
    AnyOne,
    /// A placeholder followed by a fixed suffix, e.g. `${tsl.service.identifier}_reply`.
    AnyWithSuffix(Box<str>),
    /// `#`: this level and everything below it.
    Rest,
}

impl Level {
    fn matches(&self, device: &DeviceId, level: &str) -> bool {
        match self {
            Level::Literal(l) => **l == *level,
            Level::ProductKey => *device.product_key == *level,
            Level::DeviceName => *device.device_name == *level,
            Level::AnyOne | Level::Rest => true,
            Level::AnyWithSuffix(suffix) => {
                level.len() > suffix.len() && level.ends_with(&**suffix)
            }
        }
    }
}

/// A topic class compiled for matching.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicClass {
    /// Stable id: system classes use a name (`sys.property.post`), custom ones a number.
    pub id: String,
    pub template: String,
    pub operation: TopicOperation,
    #[serde(default)]
    pub description: String,
    /// System classes are predefined and read-only.
    #[serde(default)]
    pub system: bool,
    #[serde(skip)]
    levels: Vec<Level>,
}

/// Why a topic template, name or filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic must not be empty")]
    Empty,
    #[error("topic is longer than 65535 bytes")]
    TooLong,
    #[error("topic must not contain the NUL character")]
    Nul,
    #[error("'#' must be the last level of a filter, alone in its level")]
    MisplacedHash,
    #[error("'+' must stand alone in its level")]
    MisplacedPlus,
    #[error("a topic name must not contain wildcards ('+' or '#')")]
    WildcardInName,
    #[error(
        "unknown placeholder '{0}': use ${{productKey}}, ${{deviceName}} or ${{…}} for any one level"
    )]
    UnknownPlaceholder(String),
    #[error(
        "a custom topic class must start with /${{productKey}}/${{deviceName}}/user/ (got '{0}')"
    )]
    NotInUserNamespace(String),
}

fn check_common(t: &str) -> Result<(), TopicError> {
    if t.is_empty() {
        return Err(TopicError::Empty);
    }
    if t.len() > 65535 {
        return Err(TopicError::TooLong);
    }
    if t.contains('\0') {
        return Err(TopicError::Nul);
    }
    Ok(())
}

/// Validates a topic name used in PUBLISH.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    check_common(name)?;
    if name.contains(['+', '#']) {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Validates a topic filter used in SUBSCRIBE.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    check_common(filter)?;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::MisplacedHash);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::MisplacedPlus);
        }
    }
    Ok(())
}

/// Does a topic name match a filter (MQTT 3.1.1 §4.7)? Topics starting with `$` are not
/// matched by filters starting with a wildcard.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

impl TopicClass {
    /// Compiles a template. Placeholders: `${productKey}`, `${deviceName}`; any other `${…}`
    /// (for example `${tsl.event.identifier}`) and `+` match one level; `#` matches the rest.
    pub fn new(
        id: impl Into<String>,
        template: impl Into<String>,
        operation: TopicOperation,
        description: impl Into<String>,
        system: bool,
    ) -> Result<Self, TopicError> {
        let template = template.into();
        check_common(&template)?;
        let mut levels = Vec::new();
        let mut parts = template.split('/').peekable();
        while let Some(part) = parts.next() {
            let level = match part {
                "${productKey}" => Level::ProductKey,
                "${deviceName}" => Level::DeviceName,
                "+" => Level::AnyOne,
                "#" if parts.peek().is_none() => Level::Rest,
                "#" => return Err(TopicError::MisplacedHash),
                p if p.starts_with("${") => match p.find('}') {
                    Some(end) if end > 2 && !p[end + 1..].contains(['$', '{', '}', '+', '#']) => {
                        if end + 1 == p.len() {
                            Level::AnyOne
                        } else {
                            Level::AnyWithSuffix(p[end + 1..].into())
                        }
                    }
                    _ => return Err(TopicError::UnknownPlaceholder(p.to_string())),
                },
                p if p.contains('#') => return Err(TopicError::MisplacedHash),
                p if p.contains('+') => return Err(TopicError::MisplacedPlus),
                p if p.contains("${") => return Err(TopicError::UnknownPlaceholder(p.to_string())),
                p => Level::Literal(p.into()),
            };
            levels.push(level);
        }
        Ok(Self {
            id: id.into(),
            template,
            operation,
            description: description.into(),
            system,
            levels,
        })
    }

    /// A custom (user) class: its template must stay inside the device's own user namespace so
    /// that a product owner cannot open other devices' topics by accident.
    pub fn custom(
        id: impl Into<String>,
        template: impl Into<String>,
        operation: TopicOperation,
        description: impl Into<String>,
    ) -> Result<Self, TopicError> {
        let template = template.into();
        if !template.starts_with("/${productKey}/${deviceName}/user/") {
            return Err(TopicError::NotInUserNamespace(template));
        }
        Self::new(id, template, operation, description, false)
    }

    /// Does this class, instantiated for `device`, match the concrete topic name?
    pub fn matches_name(&self, device: &DeviceId, topic: &str) -> bool {
        let mut t = topic.split('/');
        for level in &self.levels {
            let Some(tl) = t.next() else {
                return false;
            };
            if *level == Level::Rest {
                return true;
            }
            if !level.matches(device, tl) {
                return false;
            }
        }
        t.next().is_none()
    }

    /// Is every topic matched by `filter` also matched by this class instantiated for `device`?
    pub fn covers_filter(&self, device: &DeviceId, filter: &str) -> bool {
        let mut f = filter.split('/');
        for level in &self.levels {
            let Some(fl) = f.next() else {
                return false;
            };
            if *level == Level::Rest {
                return true;
            }
            if fl == "#" {
                return false;
            }
            // A `+` in the filter is covered only by a level that accepts anything.
            let ok = if fl == "+" {
                *level == Level::AnyOne
            } else {
                level.matches(device, fl)
            };
            if !ok {
                return false;
            }
        }
        f.next().is_none()
    }

    /// The concrete topic for a device (placeholders other than product key and device name
    /// are left as they are).
    pub fn instantiate(&self, device: &DeviceId) -> String {
        self.template
            .replace("${productKey}", &device.product_key)
            .replace("${deviceName}", &device.device_name)
    }
}

/// The predefined, read-only classes every product has (Alink's system topics).
pub fn system_topic_classes() -> Vec<TopicClass> {
    use TopicOperation::{Pub, Sub};
    const SYS: &str = "/sys/${productKey}/${deviceName}";
    let defs: &[(&str, String, TopicOperation, &str)] = &[
        (
            "sys.property.post",
            format!("{SYS}/thing/event/property/post"),
            Pub,
            "Device reports properties",
        ),
        (
            "sys.property.post_reply",
            format!("{SYS}/thing/event/property/post_reply"),
            Sub,
            "Platform answers a property report",
        ),
        (
            "sys.event.post",
            format!("{SYS}/thing/event/${{tsl.event.identifier}}/post"),
            Pub,
            "Device reports an event",
        ),
        (
            "sys.event.post_reply",
            format!("{SYS}/thing/event/${{tsl.event.identifier}}/post_reply"),
            Sub,
            "Platform answers an event report",
        ),
        (
            "sys.property.set",
            format!("{SYS}/thing/service/property/set"),
            Sub,
            "Platform sets properties",
        ),
        (
            "sys.property.set_reply",
            format!("{SYS}/thing/service/property/set_reply"),
            Pub,
            "Device answers a property set",
        ),
        (
            "sys.property.get",
            format!("{SYS}/thing/service/property/get"),
            Sub,
            "Platform reads properties",
        ),
        (
            "sys.property.get_reply",
            format!("{SYS}/thing/service/property/get_reply"),
            Pub,
            "Device answers a property read",
        ),
        (
            "sys.service.call",
            format!("{SYS}/thing/service/${{tsl.service.identifier}}"),
            Sub,
            "Platform invokes a service",
        ),
        (
            "sys.service.reply",
            format!("{SYS}/thing/service/${{tsl.service.identifier}}_reply"),
            Pub,
            "Device answers a service call",
        ),
        (
            "sys.rrpc.request",
            format!("{SYS}/rrpc/request/${{messageId}}"),
            Sub,
            "Synchronous call to the device",
        ),
        (
            "sys.rrpc.response",
            format!("{SYS}/rrpc/response/${{messageId}}"),
            Pub,
            "Device answers a synchronous call",
        ),
        (
            "sys.raw.up",
            format!("{SYS}/thing/model/up_raw"),
            Pub,
            "Device reports raw data (decoded by the product's codec)",
        ),
        (
            "sys.raw.up_reply",
            format!("{SYS}/thing/model/up_raw_reply"),
            Sub,
            "Platform answers a raw report",
        ),
        (
            "sys.raw.down",
            format!("{SYS}/thing/model/down_raw"),
            Sub,
            "Platform sends raw data",
        ),
        (
            "sys.raw.down_reply",
            format!("{SYS}/thing/model/down_raw_reply"),
            Pub,
            "Device answers raw data",
        ),
        (
            "sys.deviceinfo.update",
            format!("{SYS}/thing/deviceinfo/update"),
            Pub,
            "Device reports tags",
        ),
        (
            "sys.deviceinfo.update_reply",
            format!("{SYS}/thing/deviceinfo/update_reply"),
            Sub,
            "Platform answers a tag report",
        ),
        (
            "sys.deviceinfo.delete",
            format!("{SYS}/thing/deviceinfo/delete"),
            Pub,
            "Device deletes tags",
        ),
        (
            "sys.deviceinfo.delete_reply",
            format!("{SYS}/thing/deviceinfo/delete_reply"),
            Sub,
            "Platform answers a tag deletion",
        ),
        (
            "shadow.update",
            "/shadow/update/${productKey}/${deviceName}".to_string(),
            Pub,
            "Device updates or reads its shadow",
        ),
        (
            "shadow.get",
            "/shadow/get/${productKey}/${deviceName}".to_string(),
            Sub,
            "Platform sends the shadow to the device",
        ),
        (
            "ext.error",
            "/ext/error/${productKey}/${deviceName}".to_string(),
            Sub,
            "Platform reports errors to the device",
        ),
    ];
    defs.iter()
        .map(|(id, t, op, d)| {
            TopicClass::new(*id, t.clone(), *op, *d, true).expect("system topic classes are valid")
        })
        .collect()
}

/// The custom classes a new product starts with (as on Alibaba's platform).
pub fn default_custom_topic_classes() -> Vec<(String, TopicOperation, String)> {
    vec![
        (
            "/${productKey}/${deviceName}/user/update".into(),
            TopicOperation::Pub,
            "Device reports custom data".into(),
        ),
        (
            "/${productKey}/${deviceName}/user/update/error".into(),
            TopicOperation::Pub,
            "Device reports errors".into(),
        ),
        (
            "/${productKey}/${deviceName}/user/get".into(),
            TopicOperation::Sub,
            "Device receives custom data".into(),
        ),
    ]
}

/// Supplies the compiled topic classes of a product (system + custom), usually from an
/// in-memory cache that the registry keeps current, so a change applies to the next packet.
pub trait TopicClassSource: Send + Sync + 'static {
    /// `None` when the product does not exist.
    fn topic_classes(&self, product_key: &str) -> Option<Arc<[TopicClass]>>;
}

impl<T: TopicClassSource + ?Sized> TopicClassSource for Arc<T> {
    fn topic_classes(&self, product_key: &str) -> Option<Arc<[TopicClass]>> {
        (**self).topic_classes(product_key)
    }
}

/// First levels reserved for devices; anonymous clients may not use them.
const DEVICE_NAMESPACES: [&str; 4] = ["sys", "shadow", "ext", "ota"];

/// The built-in authorizer: devices are confined to their product's topic classes; anonymous
/// clients (when admitted) to topics outside every device namespace.
pub struct TopicClassAuthorizer<S> {
    source: S,
}

impl<S: TopicClassSource> TopicClassAuthorizer<S> {
    pub fn new(source: S) -> Self {
        Self { source }
    }

    fn device(&self, device: &DeviceId, action: TopicAction, topic: &str) -> Decision {
        let Some(classes) = self.source.topic_classes(&device.product_key) else {
            return Decision::Deny("the device's product no longer exists".into());
        };
        let permitted =
            classes
                .iter()
                .filter(|c| c.operation.allows(action))
                .any(|c| match action {
                    TopicAction::Subscribe => c.covers_filter(device, topic),
                    TopicAction::Publish | TopicAction::Deliver => c.matches_name(device, topic),
                });
        if permitted {
            Decision::Allow
        } else {
            Decision::Deny(
                match action {
                    TopicAction::Publish => {
                        "no topic class of the product lets this device publish here"
                    }
                    TopicAction::Subscribe => {
                        "no topic class of the product lets this device subscribe to this filter"
                    }
                    TopicAction::Deliver => "the device may no longer receive this topic",
                }
                .into(),
            )
        }
    }

    fn anonymous(&self, action: TopicAction, topic: &str) -> Decision {
        if action == TopicAction::Publish && topic.starts_with('$') {
            return Decision::Deny("topics starting with '$' are reserved for the broker".into());
        }
        let first = topic
            .strip_prefix('/')
            .unwrap_or(topic)
            .split('/')
            .next()
            .unwrap_or("");
        let wildcard = first == "+" || first == "#";
        if wildcard && action == TopicAction::Subscribe {
            // Deliveries are checked one by one, so a wildcard never leaks device topics.
            return Decision::Allow;
        }
        if DEVICE_NAMESPACES.contains(&first) || self.source.topic_classes(first).is_some() {
            return Decision::Deny("device topics are not open to anonymous clients".into());
        }
        Decision::Allow
    }
}

impl<S: TopicClassSource> TopicAuthorizer for TopicClassAuthorizer<S> {
    fn authorize_topic(&self, principal: &Principal, action: TopicAction, topic: &str) -> Decision {
        match principal {
            Principal::Platform => Decision::Allow,
            Principal::Device(device) => self.device(device, action, topic),
            Principal::Anonymous { .. } => self.anonymous(action, topic),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Classes(HashMap<String, Arc<[TopicClass]>>);
    impl TopicClassSource for Classes {
        fn topic_classes(&self, pk: &str) -> Option<Arc<[TopicClass]>> {
            self.0.get(pk).cloned()
        }
    }

    fn authorizer() -> TopicClassAuthorizer<Classes> {
        let mut classes = system_topic_classes();
        for (i, (t, op, d)) in default_custom_topic_classes().into_iter().enumerate() {
            classes.push(TopicClass::custom(i.to_string(), t, op, d).unwrap());
        }
        let mut map = HashMap::new();
        map.insert("pk1".to_string(), Arc::from(classes));
        TopicClassAuthorizer::new(Classes(map))
    }

    fn dev(dn: &str) -> Principal {
        Principal::Device(DeviceId::new("pk1", dn))
    }

    #[test]
    fn filters_match_as_mqtt_says() {
        assert!(filter_matches("a/+/c", "a/b/c"));
        assert!(filter_matches("a/#", "a"));
        assert!(filter_matches("#", "/x"));
        assert!(!filter_matches("#", "$SYS/x"));
        assert!(!filter_matches("a/+", "a/b/c"));
        assert!(filter_matches("+/+", "/x"));
    }

    #[test]
    fn filter_validation() {
        assert!(validate_topic_filter("a/#").is_ok());
        assert_eq!(
            validate_topic_filter("a/#/b"),
            Err(TopicError::MisplacedHash)
        );
        assert_eq!(
            validate_topic_filter("a/b+"),
            Err(TopicError::MisplacedPlus)
        );
        assert_eq!(validate_topic_name("a/+"), Err(TopicError::WildcardInName));
    }

    #[test]
    fn device_confined_to_own_topics() {
        let a = authorizer();
        let d1 = dev("d1");
        let ok = |p: &Principal, act, t: &str| a.authorize_topic(p, act, t).is_allowed();
        assert!(ok(
            &d1,
            TopicAction::Publish,
            "/sys/pk1/d1/thing/event/property/post"
        ));
        assert!(!ok(
            &d1,
            TopicAction::Publish,
            "/sys/pk1/d2/thing/event/property/post"
        ));
        assert!(!ok(
            &d1,
            TopicAction::Subscribe,
            "/sys/pk1/d1/thing/event/property/post"
        ));
        assert!(ok(
            &d1,
            TopicAction::Subscribe,
            "/sys/pk1/d1/thing/service/property/set"
        ));
        assert!(ok(
            &d1,
            TopicAction::Subscribe,
            "/sys/pk1/d1/rrpc/request/+"
        ));
        assert!(ok(
            &d1,
            TopicAction::Publish,
            "/sys/pk1/d1/thing/event/alarm/post"
        ));
        assert!(!ok(&d1, TopicAction::Subscribe, "#"));
        assert!(!ok(
            &d1,
            TopicAction::Subscribe,
            "/sys/+/+/thing/service/property/set"
        ));
        assert!(!ok(
            &d1,
            TopicAction::Subscribe,
            "/sys/pk1/+/thing/service/property/set"
        ));
        assert!(!ok(&d1, TopicAction::Subscribe, "/sys/pk1/d1/#"));
        assert!(ok(&d1, TopicAction::Publish, "/pk1/d1/user/update"));
        assert!(!ok(&d1, TopicAction::Publish, "/pk1/d2/user/update"));
        assert!(ok(&d1, TopicAction::Deliver, "/pk1/d1/user/get"));
        assert!(!ok(&d1, TopicAction::Deliver, "/pk1/d2/user/get"));
        assert!(!ok(
            &dev("x"),
            TopicAction::Publish,
            "/sys/pk2/x/thing/event/property/post"
        ));
        assert!(ok(
            &d1,
            TopicAction::Publish,
            "/sys/pk1/d1/thing/service/Reboot_reply"
        ));
        assert!(!ok(
            &d1,
            TopicAction::Publish,
            "/sys/pk1/d1/thing/service/_reply"
        ));
    }

    #[test]
    fn anonymous_kept_out_of_device_namespaces() {
        let a = authorizer();
        let anon = Principal::Anonymous {
            client_id: "c".into(),
        };
        let ok = |act, t: &str| a.authorize_topic(&anon, act, t).is_allowed();
        assert!(ok(TopicAction::Publish, "city/lights"));
        assert!(!ok(TopicAction::Publish, "$SYS/x"));
        assert!(!ok(
            TopicAction::Publish,
            "/sys/pk1/d1/thing/event/property/post"
        ));
        assert!(!ok(TopicAction::Publish, "/pk1/d1/user/update"));
        assert!(ok(TopicAction::Subscribe, "#"));
        assert!(!ok(
            TopicAction::Deliver,
            "/sys/pk1/d1/thing/service/property/set"
        ));
        assert!(ok(TopicAction::Deliver, "city/lights"));
    }

    #[test]
    fn custom_classes_must_stay_in_user_namespace() {
        assert!(
            TopicClass::custom(
                "1",
                "/${productKey}/${deviceName}/user/x",
                TopicOperation::Pub,
                ""
            )
            .is_ok()
        );
        assert!(
            TopicClass::custom("1", "/sys/${productKey}/+/x", TopicOperation::Pub, "").is_err()
        );
        assert!(
            TopicClass::custom("1", "/${productKey}/+/user/x", TopicOperation::Pub, "").is_err()
        );
    }
}
