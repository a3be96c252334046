//! Topic names, topic filters and a product's topic classes.
//!
//! A topic class is a template such as `/${productKey}/${deviceName}/user/update` with a
//! permission (publish, subscribe or both). Templates are compiled once into levels so that the
//! per-message check compares slices without allocating.

use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Serialize};

use crate::authz::{
    Application, Decision, DeviceId, Grant, GrantAction, Principal, TopicAction, TopicAuthorizer,
};

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

/// The classes a gateway product has on top of the system ones: managing its topology and
/// logging its sub-devices in and out over its own connection.
pub fn gateway_topic_classes() -> Vec<TopicClass> {
    use TopicOperation::{Pub, Sub};
    const SYS: &str = "/sys/${productKey}/${deviceName}";
    const SESSION: &str = "/ext/session/${productKey}/${deviceName}";
    let mut defs: Vec<(String, String, TopicOperation, &str)> = Vec::new();
    for (op, what) in [
        ("add", "Gateway adds sub-devices to its topology"),
        ("delete", "Gateway removes sub-devices from its topology"),
        ("get", "Gateway reads its topology"),
    ] {
        defs.push((
            format!("sys.topo.{op}"),
            format!("{SYS}/thing/topo/{op}"),
            Pub,
            what,
        ));
        defs.push((
            format!("sys.topo.{op}_reply"),
            format!("{SYS}/thing/topo/{op}_reply"),
            Sub,
            "Platform answers a topology request",
        ));
    }
    defs.push((
        "sys.topo.change".into(),
        format!("{SYS}/thing/topo/change"),
        Sub,
        "Platform tells the gateway its topology changed",
    ));
    for (op, what) in [
        ("login", "Gateway logs a sub-device in"),
        ("logout", "Gateway logs a sub-device out"),
    ] {
        defs.push((
            format!("ext.session.{op}"),
            format!("{SESSION}/combine/{op}"),
            Pub,
            what,
        ));
        defs.push((
            format!("ext.session.{op}_reply"),
            format!("{SESSION}/combine/{op}_reply"),
            Sub,
            "Platform answers a sub-device session request",
        ));
    }
    defs.into_iter()
        .map(|(id, t, op, d)| {
            TopicClass::new(id, t, op, d, true).expect("gateway topic classes are valid")
        })
        .collect()
}

/// The predefined classes of a product of this node type.
pub fn system_topic_classes_for(node_type: crate::product::NodeType) -> Vec<TopicClass> {
    let mut classes = system_topic_classes();
    if node_type == crate::product::NodeType::Gateway {
        classes.extend(gateway_topic_classes());
    }
    classes
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

    /// The gateway a sub-device is attached to, if any.
    fn sub_device(&self, _product_key: &str, _device_name: &str) -> Option<SubDeviceLink> {
        None
    }

    /// Changes whenever any product's topic classes change, so that decisions cached from
    /// them can be dropped.
    fn generation(&self) -> u64 {
        0
    }
}

impl<T: TopicClassSource + ?Sized> TopicClassSource for Arc<T> {
    fn topic_classes(&self, product_key: &str) -> Option<Arc<[TopicClass]>> {
        (**self).topic_classes(product_key)
    }

    fn sub_device(&self, product_key: &str, device_name: &str) -> Option<SubDeviceLink> {
        (**self).sub_device(product_key, device_name)
    }

    fn generation(&self) -> u64 {
        (**self).generation()
    }
}

/// A sub-device's place in a gateway's topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubDeviceLink {
    pub gateway: DeviceId,
    /// Logged in through the gateway's current connection (`combine/login`).
    pub online: bool,
}

/// The device a device-namespace topic (or filter) names: `/sys/{pk}/{dn}/…`,
/// `/ext/…/{pk}/{dn}/…`, `/shadow/{op}/{pk}/{dn}` or `/{pk}/{dn}/user/…`.
pub fn topic_device(topic: &str) -> Option<(&str, &str)> {
    let mut levels = topic.strip_prefix('/')?.split('/');
    let first = levels.next()?;
    let (pk, dn) = match first {
        "sys" => (levels.next()?, levels.next()?),
        "ext" | "shadow" => {
            levels.next()?;
            (levels.next()?, levels.next()?)
        }
        pk => {
            let dn = levels.next()?;
            if levels.next()? != "user" {
                return None;
            }
            (pk, dn)
        }
    };
    let concrete = |l: &str| !l.is_empty() && l != "+" && l != "#";
    (concrete(pk) && concrete(dn)).then_some((pk, dn))
}

/// First levels reserved for devices; anonymous clients may not use them.
const DEVICE_NAMESPACES: [&str; 4] = ["sys", "shadow", "ext", "ota"];

/// Why a grant of an application credential was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("{0}")]
    Filter(TopicError),
    #[error(
        "a granted filter must name one product: /{{productKey}}/… or /sys/{{productKey}}/… (got '{0}')"
    )]
    NotAProductFilter(String),
    #[error("the product segment of '{0}' must be a product key, not a wildcard")]
    WildcardProduct(String),
    #[error("'$' is not allowed in a granted filter")]
    Dollar,
    #[error("a grant needs at least one action: subscribe or publish")]
    NoActions,
    #[error(
        "publish cannot be granted in a device namespace (/sys, /shadow, /ext, /ota): \
         applications reach devices through the API's property set and service calls"
    )]
    PublishIntoDeviceNamespace,
}

/// A grant compiled for matching. Built once per connection, at CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppGrant {
    class: TopicClass,
    product_key: Box<str>,
    subscribe: bool,
    publish: bool,
}

/// Grants contain no `${…}` placeholders, so matching never looks at this device.
static NO_DEVICE: LazyLock<DeviceId> = LazyLock::new(|| DeviceId::new("", ""));

/// The product a granted filter is about: `/{pk}/…` or `/sys/{pk}/…`.
pub fn grant_product_key(filter: &str) -> Result<&str, GrantError> {
    let not_product = || GrantError::NotAProductFilter(filter.to_string());
    let rest = filter.strip_prefix('/').ok_or_else(not_product)?;
    let mut levels = rest.split('/');
    let first = levels.next().unwrap_or("");
    let pk = match first {
        "sys" => levels.next().ok_or_else(not_product)?,
        ns if DEVICE_NAMESPACES.contains(&ns) => return Err(not_product()),
        pk => pk,
    };
    match pk {
        "" => Err(not_product()),
        "+" | "#" => Err(GrantError::WildcardProduct(filter.to_string())),
        pk => Ok(pk),
    }
}

impl AppGrant {
    /// Validates and compiles a grant. Whether its product exists is for the caller to check
    /// ([`AppGrant::product_key`]); the authorizer refuses grants of deleted products.
    pub fn compile(grant: &Grant) -> Result<AppGrant, GrantError> {
        let filter = grant.filter.as_str();
        validate_topic_filter(filter).map_err(GrantError::Filter)?;
        if filter.contains('$') {
            return Err(GrantError::Dollar);
        }
        let product_key = grant_product_key(filter)?;
        if grant.actions.is_empty() {
            return Err(GrantError::NoActions);
        }
        let subscribe = grant.actions.contains(&GrantAction::Subscribe);
        let publish = grant.actions.contains(&GrantAction::Publish);
        if publish && in_device_namespace(filter) {
            return Err(GrantError::PublishIntoDeviceNamespace);
        }
        let class = TopicClass::new("grant", filter, TopicOperation::All, "", false)
            .map_err(GrantError::Filter)?;
        Ok(AppGrant {
            product_key: product_key.into(),
            class,
            subscribe,
            publish,
        })
    }

    pub fn filter(&self) -> &str {
        &self.class.template
    }

    pub fn product_key(&self) -> &str {
        &self.product_key
    }

    pub fn allows(&self, action: GrantAction) -> bool {
        match action {
            GrantAction::Subscribe => self.subscribe,
            GrantAction::Publish => self.publish,
        }
    }

    /// Is every topic `filter` matches also matched by this grant?
    pub fn covers(&self, filter: &str) -> bool {
        self.class.covers_filter(&NO_DEVICE, filter)
    }

    /// Does this grant match the topic name?
    pub fn matches(&self, topic: &str) -> bool {
        self.class.matches_name(&NO_DEVICE, topic)
    }
}

/// The first level of a topic, ignoring one leading `/`.
pub fn first_level(topic: &str) -> &str {
    topic
        .strip_prefix('/')
        .unwrap_or(topic)
        .split('/')
        .next()
        .unwrap_or("")
}

/// Is the first level one of the device namespaces (`sys`, `shadow`, `ext`, `ota`)?
pub fn in_device_namespace(topic: &str) -> bool {
    DEVICE_NAMESPACES.contains(&first_level(topic))
}

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
        if let Some((pk, dn)) = topic_device(topic)
            && (*device.product_key != *pk || *device.device_name != *dn)
        {
            return self.gateway_for(device, pk, dn, action, topic);
        }
        self.own(device, action, topic)
    }

    /// A gateway speaks for the sub-devices in its topology, on their topics, and nobody else
    /// speaks for any device. Publishing also needs the sub-device to be logged in through the
    /// gateway, so a removed or logged-out sub-device's data stops at once.
    fn gateway_for(
        &self,
        gateway: &DeviceId,
        pk: &str,
        dn: &str,
        action: TopicAction,
        topic: &str,
    ) -> Decision {
        match self.source.sub_device(pk, dn) {
            Some(link) if link.gateway == *gateway => {
                if action == TopicAction::Publish && !link.online {
                    return Decision::Deny(
                        format!(
                            "sub-device {pk}/{dn} is not logged in: publish combine/login on the gateway's session topic first"
                        )
                        .into(),
                    );
                }
                self.own(&DeviceId::new(pk, dn), action, topic)
            }
            _ => Decision::Deny(
                match action {
                    TopicAction::Publish => "devices publish only to their own topics (or, for a gateway, its sub-devices')",
                    TopicAction::Subscribe => "devices subscribe only to their own topics (or, for a gateway, its sub-devices')",
                    TopicAction::Deliver => "the device may no longer receive this topic",
                }
                .into(),
            ),
        }
    }

    fn own(&self, device: &DeviceId, action: TopicAction, topic: &str) -> Decision {
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

    /// Applications (application credentials). The rules, as an auditor would check them:
    ///
    /// - **SUBSCRIBE** only with a filter that one subscribe grant covers entirely (`#`, `+` in
    ///   the product segment, another product's topics are refused), and only while the grant's
    ///   product exists.
    /// - **DELIVER** only messages whose topic a subscribe grant of a still-existing product
    ///   matches: the check is repeated for every message, so a deleted product stops the flow.
    /// - **PUBLISH** only to a topic a publish grant matches, and then only in the platform's
    ///   direction of the product's custom topics: the topic must be `/{pk}/{dn}/user/…` and a
    ///   topic class of the product must let device `{dn}` *receive* it (a `sub` or `all`
    ///   class). An application therefore never publishes into a device namespace (`/sys`,
    ///   `/shadow`, `/ext`, `/ota`: property sets and service calls go through the API, which
    ///   validates, records and correlates them) and never forges a device's uplink (a `pub`
    ///   class such as `/{pk}/{dn}/user/update`), so what subscribers see on a device's topics
    ///   came from that device or from the platform. Topics starting with `$` are refused.
    fn application(&self, app: &Application, action: TopicAction, topic: &str) -> Decision {
        let live = |g: &AppGrant| self.source.topic_classes(g.product_key()).is_some();
        match action {
            TopicAction::Subscribe => {
                if app
                    .grants
                    .iter()
                    .any(|g| g.allows(GrantAction::Subscribe) && g.covers(topic) && live(g))
                {
                    Decision::Allow
                } else {
                    Decision::Deny(
                        "no subscribe grant of the application credential covers this filter"
                            .into(),
                    )
                }
            }
            TopicAction::Deliver => {
                if app
                    .grants
                    .iter()
                    .any(|g| g.allows(GrantAction::Subscribe) && g.matches(topic) && live(g))
                {
                    Decision::Allow
                } else {
                    Decision::Deny("the application may no longer receive this topic".into())
                }
            }
            TopicAction::Publish => {
                if topic.starts_with('$') {
                    return Decision::Deny(
                        "topics starting with '$' are reserved for the broker".into(),
                    );
                }
                if in_device_namespace(topic) {
                    return Decision::Deny(
                        "applications do not publish into device namespaces: use the API".into(),
                    );
                }
                if !app
                    .grants
                    .iter()
                    .any(|g| g.allows(GrantAction::Publish) && g.matches(topic))
                {
                    return Decision::Deny(
                        "no publish grant of the application credential matches this topic".into(),
                    );
                }
                let mut levels = topic.strip_prefix('/').unwrap_or("").split('/');
                let (Some(pk), Some(dn)) = (levels.next(), levels.next()) else {
                    return Decision::Deny("not a device topic of a product".into());
                };
                let Some(classes) = self.source.topic_classes(pk) else {
                    return Decision::Deny("the granted product no longer exists".into());
                };
                let device = DeviceId::new(pk, dn);
                let downlink = classes
                    .iter()
                    .filter(|c| !c.system && c.operation.allows(TopicAction::Deliver))
                    .any(|c| c.matches_name(&device, topic));
                if downlink {
                    Decision::Allow
                } else {
                    Decision::Deny(
                        "applications publish only to topics the product's devices receive \
                         (a sub or all topic class), never as a device"
                            .into(),
                    )
                }
            }
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
            Principal::Application(app) => self.application(app, action, topic),
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

    fn app(grants: &[(&str, &[GrantAction])]) -> Principal {
        let grants: Vec<AppGrant> = grants
            .iter()
            .map(|(f, a)| {
                AppGrant::compile(&Grant {
                    filter: f.to_string(),
                    actions: a.to_vec(),
                })
                .unwrap()
            })
            .collect();
        Principal::Application(Application::new("7", grants))
    }

    const SUB: &[GrantAction] = &[GrantAction::Subscribe];
    const PUB: &[GrantAction] = &[GrantAction::Publish];
    const BOTH: &[GrantAction] = &[GrantAction::Subscribe, GrantAction::Publish];

    #[test]
    fn grants_are_validated() {
        let compile = |f: &str, a: &[GrantAction]| {
            AppGrant::compile(&Grant {
                filter: f.into(),
                actions: a.to_vec(),
            })
        };
        assert!(compile("/pk1/+/user/update", SUB).is_ok());
        assert!(compile("/sys/pk1/+/thing/event/property/post", SUB).is_ok());
        assert!(compile("/pk1/#", BOTH).is_ok());
        assert_eq!(
            compile("/pk1/+/user/update", SUB).unwrap().product_key(),
            "pk1"
        );
        assert_eq!(
            compile("/sys/pk1/#", SUB).unwrap().product_key(),
            "pk1",
            "the product of a system filter is its second level"
        );
        assert!(matches!(
            compile("#", SUB),
            Err(GrantError::NotAProductFilter(_))
        ));
        assert!(matches!(
            compile("pk1/+", SUB),
            Err(GrantError::NotAProductFilter(_))
        ));
        assert!(matches!(
            compile("/+/d1/user/update", SUB),
            Err(GrantError::WildcardProduct(_))
        ));
        assert!(matches!(
            compile("/sys/#", SUB),
            Err(GrantError::WildcardProduct(_))
        ));
        assert!(matches!(
            compile("/sys/+/d1/x", SUB),
            Err(GrantError::WildcardProduct(_))
        ));
        assert!(matches!(
            compile("/shadow/get/pk1/d1", SUB),
            Err(GrantError::NotAProductFilter(_))
        ));
        assert!(matches!(
            compile("/pk1/a#", SUB),
            Err(GrantError::Filter(_))
        ));
        assert_eq!(
            compile("/pk1/${deviceName}/user/get", SUB),
            Err(GrantError::Dollar)
        );
        assert_eq!(compile("/pk1/+/user/get", &[]), Err(GrantError::NoActions));
        assert_eq!(
            compile("/sys/pk1/+/thing/service/property/set", PUB),
            Err(GrantError::PublishIntoDeviceNamespace)
        );
        let g: Grant =
            serde_json::from_str(r#"{"filter": "/pk1/#", "actions": ["subscribe", "publish"]}"#)
                .unwrap();
        assert_eq!(g.actions, BOTH);
    }

    #[test]
    fn application_subscribes_only_within_its_grants() {
        let a = authorizer();
        let p = app(&[
            ("/pk1/+/user/update", SUB),
            ("/sys/pk1/+/thing/event/property/post", SUB),
        ]);
        let ok = |act, t: &str| a.authorize_topic(&p, act, t).is_allowed();
        assert!(ok(TopicAction::Subscribe, "/pk1/+/user/update"));
        assert!(ok(TopicAction::Subscribe, "/pk1/d7/user/update"));
        assert!(ok(
            TopicAction::Subscribe,
            "/sys/pk1/+/thing/event/property/post"
        ));
        for refused in [
            "#",
            "+/#",
            "/#",
            "/pk1/#",
            "/pk1/+/user/#",
            "/pk1/+/+/update",
            "/+/+/user/update",
            "/pk2/+/user/update",
            "/sys/pk2/+/thing/event/property/post",
            "/sys/pk1/+/thing/service/property/set",
            "/sys/#",
            "$SYS/#",
            "/pk1/+/user/update/error",
        ] {
            assert!(
                !ok(TopicAction::Subscribe, refused),
                "{refused} must be refused"
            );
        }
        assert!(ok(TopicAction::Deliver, "/pk1/d1/user/update"));
        assert!(ok(
            TopicAction::Deliver,
            "/sys/pk1/d1/thing/event/property/post"
        ));
        assert!(!ok(TopicAction::Deliver, "/pk1/d1/user/get"));
        assert!(!ok(TopicAction::Deliver, "/pk2/d1/user/update"));
        assert!(!ok(
            TopicAction::Deliver,
            "/sys/pk1/d1/thing/service/property/set"
        ));
        // Subscribe grants do not let it publish.
        assert!(!ok(TopicAction::Publish, "/pk1/d1/user/update"));
    }

    #[test]
    fn grants_of_a_deleted_product_stop_working() {
        let a = authorizer();
        let p = app(&[("/pk9/+/user/update", SUB)]);
        assert!(
            !a.authorize_topic(&p, TopicAction::Subscribe, "/pk9/+/user/update")
                .is_allowed()
        );
        assert!(
            !a.authorize_topic(&p, TopicAction::Deliver, "/pk9/d1/user/update")
                .is_allowed()
        );
    }

    #[test]
    fn application_publishes_only_downlink_custom_topics() {
        let a = authorizer();
        let p = app(&[("/pk1/#", BOTH)]);
        let ok = |act, t: &str| a.authorize_topic(&p, act, t).is_allowed();
        // `/user/get` is a `sub` class: devices receive it, so the application may send it.
        assert!(ok(TopicAction::Publish, "/pk1/d1/user/get"));
        // `/user/update` is the device's uplink: publishing there would impersonate it.
        assert!(!ok(TopicAction::Publish, "/pk1/d1/user/update"));
        assert!(!ok(TopicAction::Publish, "/pk1/d1/user/anything"));
        assert!(!ok(TopicAction::Publish, "/pk2/d1/user/get"));
        assert!(!ok(TopicAction::Publish, "$SYS/x"));
        // No grant can open a device namespace, whatever it says.
        let wide = Principal::Application(Application::new(
            "8",
            vec![AppGrant {
                class: TopicClass::new("g", "/sys/pk1/#", TopicOperation::All, "", false).unwrap(),
                product_key: "pk1".into(),
                subscribe: true,
                publish: true,
            }],
        ));
        assert!(
            !a.authorize_topic(
                &wide,
                TopicAction::Publish,
                "/sys/pk1/d1/thing/service/property/set"
            )
            .is_allowed()
        );
        // Without a publish grant nothing is published.
        let reader = app(&[("/pk1/#", SUB)]);
        assert!(
            !a.authorize_topic(&reader, TopicAction::Publish, "/pk1/d1/user/get")
                .is_allowed()
        );
    }

    #[test]
    fn application_principals_are_keyed_by_id() {
        let a = app(&[("/pk1/#", SUB)]);
        let key = Principal::Application(Application::key("7"));
        assert_eq!(a, key);
        let mut set = std::collections::HashSet::new();
        set.insert(a);
        assert!(set.contains(&key));
        assert_eq!(key.to_string(), "application:7");
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

#[cfg(test)]
mod gateway_tests {
    use super::*;
    use crate::product::NodeType;

    /// Gateway product `gw` with device `g1`; sub-device product `sub` with `s1` (attached to
    /// g1, online), `s2` (attached to g1, logged out) and `s3` (attached to another gateway).
    struct Topology;
    impl TopicClassSource for Topology {
        fn topic_classes(&self, pk: &str) -> Option<Arc<[TopicClass]>> {
            match pk {
                "gw" => Some(system_topic_classes_for(NodeType::Gateway).into()),
                "sub" => Some(system_topic_classes_for(NodeType::Subdevice).into()),
                _ => None,
            }
        }
        fn sub_device(&self, pk: &str, dn: &str) -> Option<SubDeviceLink> {
            let link = |gw: &str, online| SubDeviceLink {
                gateway: DeviceId::new("gw", gw),
                online,
            };
            match (pk, dn) {
                ("sub", "s1") => Some(link("g1", true)),
                ("sub", "s2") => Some(link("g1", false)),
                ("sub", "s3") => Some(link("g2", true)),
                _ => None,
            }
        }
    }

    fn allowed(action: TopicAction, topic: &str) -> bool {
        TopicClassAuthorizer::new(Topology)
            .authorize_topic(&Principal::Device(DeviceId::new("gw", "g1")), action, topic)
            .is_allowed()
    }

    #[test]
    fn a_gateway_speaks_only_for_its_own_logged_in_sub_devices() {
        use TopicAction::{Deliver, Publish, Subscribe};
        assert!(allowed(Publish, "/sys/gw/g1/thing/topo/add"));
        assert!(allowed(Publish, "/ext/session/gw/g1/combine/login"));
        assert!(allowed(Publish, "/sys/sub/s1/thing/event/property/post"));
        assert!(allowed(Subscribe, "/sys/sub/s1/thing/service/property/set"));
        assert!(allowed(Deliver, "/sys/sub/s1/thing/service/property/set"));
        // Logged out: may still subscribe (to be ready), may not publish.
        assert!(allowed(Subscribe, "/sys/sub/s2/thing/service/property/set"));
        assert!(!allowed(Publish, "/sys/sub/s2/thing/event/property/post"));
        // Another gateway's sub-device, an unknown device, wildcards: refused.
        assert!(!allowed(Publish, "/sys/sub/s3/thing/event/property/post"));
        assert!(!allowed(
            Subscribe,
            "/sys/sub/s3/thing/service/property/set"
        ));
        assert!(!allowed(Publish, "/sys/sub/s9/thing/event/property/post"));
        assert!(!allowed(Subscribe, "/sys/sub/+/thing/service/property/set"));
        assert!(!allowed(Subscribe, "#"));
        // The sub-device's own classes still apply: it cannot publish a downlink topic.
        assert!(!allowed(Publish, "/sys/sub/s1/thing/service/property/set"));
    }

    #[test]
    fn only_gateway_products_have_topology_topics() {
        let direct = TopicClassAuthorizer::new(Topology);
        let sub = Principal::Device(DeviceId::new("sub", "s1"));
        assert!(
            !direct
                .authorize_topic(&sub, TopicAction::Publish, "/sys/sub/s1/thing/topo/add")
                .is_allowed()
        );
    }

    #[test]
    fn topic_device_names_the_device_a_topic_is_about() {
        assert_eq!(
            topic_device("/sys/pk/dn/thing/event/property/post"),
            Some(("pk", "dn"))
        );
        assert_eq!(
            topic_device("/ext/session/pk/dn/combine/login"),
            Some(("pk", "dn"))
        );
        assert_eq!(topic_device("/shadow/update/pk/dn"), Some(("pk", "dn")));
        assert_eq!(topic_device("/pk/dn/user/update"), Some(("pk", "dn")));
        assert_eq!(topic_device("/pk/dn/other"), None);
        assert_eq!(topic_device("/sys/+/dn/x"), None);
        assert_eq!(topic_device("plain"), None);
    }
}
