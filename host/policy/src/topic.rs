//! The MQTT topic ACL as a policy: `lotus.device.topic` decides every PUBLISH, SUBSCRIBE and
//! delivery of the broker, through the device plane's `TopicAuthorizer` interface.
//!
//! The host classifies, the policy decides. For a device the host works out whose topic it is
//! (its own, a sub-device's behind it as a gateway, or another device's) and which of that
//! product's topic classes the topic (or, for SUBSCRIBE, the whole filter) falls in; the
//! policy gets those facts and the classes, and says allow or deny with a reason. Because the
//! input names classes rather than devices, one decision holds for every device of a product in
//! the same relation, so the cache stays as small as the number of products × topic classes ×
//! actions, however many devices connect. It is emptied whenever the policy or any product's
//! topic classes change. Rules must therefore decide from the input alone; the topic and the
//! device's name go to the decision log, not to the rule.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use lotus_model::authz::{Decision, DeviceId, Principal, TopicAction, TopicAuthorizer};
use lotus_model::topic::{
    TopicClass, TopicClassSource, first_level, in_device_namespace, topic_device,
};
use regorus::Value as Rego;
use serde_json::{Value, json};

use crate::PolicyEngine;
use crate::log::DecisionRecord;

/// The decision point.
pub const PACKAGE: &str = "lotus.device.topic";

/// Entries kept before the cache starts over (a city has thousands of products at most, each
/// with tens of classes: this bound is only reached under a flood of distinct app facts).
const CACHE_LIMIT: usize = 200_000;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Relation {
    Own,
    SubDevice { online: bool },
    Other,
}

impl Relation {
    fn as_str(self) -> &'static str {
        match self {
            Relation::Own => "self",
            Relation::SubDevice { .. } => "sub_device",
            Relation::Other => "other",
        }
    }
}

/// A device's topic as asked: the classification depends on nothing else (the product's
/// classes are covered by the generation the caches are filled under).
#[derive(Clone, PartialEq, Eq, Hash)]
struct ClassifyKey {
    target: DeviceId,
    relation: Relation,
    action: u8,
    topic: Box<str>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum CacheKey {
    Device {
        product_key: Box<str>,
        relation: Relation,
        action: u8,
        /// Indices of the product's classes that match; `None` when the product is gone.
        matched: Option<Box<[u16]>>,
    },
    Application {
        id: Arc<str>,
        action: u8,
        facts: u8,
    },
    Anonymous {
        action: u8,
        facts: u8,
    },
}

fn action_code(action: TopicAction) -> u8 {
    match action {
        TopicAction::Publish => 0,
        TopicAction::Subscribe => 1,
        TopicAction::Deliver => 2,
    }
}

fn action_name(action: TopicAction) -> &'static str {
    match action {
        TopicAction::Publish => "publish",
        TopicAction::Subscribe => "subscribe",
        TopicAction::Deliver => "deliver",
    }
}

/// The broker's topic ACL, decided by `lotus.device.topic`.
pub struct PolicyTopicAuthorizer<S> {
    engine: PolicyEngine,
    source: S,
    cache: DashMap<CacheKey, Decision>,
    /// Which of the product's classes a device's topic falls in, per exact (device, action,
    /// topic): matching a topic against every class costs far more than the lookup, and a
    /// device keeps using the same few topics.
    classified: DashMap<ClassifyKey, Option<Box<[u16]>>>,
    /// Each product's topic classes as policy input, once with `matches: false` and once with
    /// `true`: an uncached decision then shares them instead of building a hundred small
    /// objects, which cost as much as the decision itself.
    class_inputs: DashMap<Box<str>, Arc<[[Rego; 2]]>>,
    /// (policy generation, topic-class generation) the cache was filled under, packed.
    filled_under: AtomicU64,
    /// Ask the policy every time (see [`PolicyTopicAuthorizer::uncached`]).
    bypass_cache: bool,
}

impl<S: TopicClassSource> PolicyTopicAuthorizer<S> {
    pub fn new(engine: PolicyEngine, source: S) -> Self {
        PolicyTopicAuthorizer {
            engine,
            source,
            cache: DashMap::new(),
            classified: DashMap::new(),
            class_inputs: DashMap::new(),
            filled_under: AtomicU64::new(u64::MAX),
            bypass_cache: false,
        }
    }

    /// An authorizer that asks the policy on every request, as the broker's does on a cache
    /// miss: what benchmarks measure as the cost of an uncached decision.
    pub fn uncached(engine: PolicyEngine, source: S) -> Self {
        PolicyTopicAuthorizer {
            bypass_cache: true,
            ..Self::new(engine, source)
        }
    }

    /// Cached decisions right now (for tests and metrics).
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    fn current_generation(&self) -> u64 {
        // Both counters grow slowly; mixing them keeps one atomic compare on the hot path.
        self.engine.generation().wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.source.generation()
    }

    /// Empties both caches when the policy or any product's classes changed since they were
    /// filled.
    fn refresh(&self) {
        let generation = self.current_generation();
        if self.filled_under.load(Ordering::Acquire) != generation {
            self.cache.clear();
            self.classified.clear();
            self.class_inputs.clear();
            self.filled_under.store(generation, Ordering::Release);
        }
    }

    /// `product_key`'s classes as policy input (see `class_inputs`).
    fn class_inputs(&self, product_key: &str, classes: &[TopicClass]) -> Arc<[[Rego; 2]]> {
        if let Some(hit) = self.class_inputs.get(product_key) {
            return hit.value().clone();
        }
        let inputs: Arc<[[Rego; 2]]> = classes
            .iter()
            .map(|c| {
                let class = |matches: bool| {
                    object([
                        ("id", Rego::from(c.id.as_str())),
                        ("template", Rego::from(c.template.as_str())),
                        ("operation", Rego::from(c.operation.as_str())),
                        ("system", Rego::from(c.system)),
                        ("matches", Rego::from(matches)),
                    ])
                };
                [class(false), class(true)]
            })
            .collect();
        self.class_inputs.insert(product_key.into(), inputs.clone());
        inputs
    }

    fn decide(
        &self,
        key: CacheKey,
        input: impl FnOnce() -> Rego,
        log: impl FnOnce() -> (Value, Value, &'static str),
    ) -> Decision {
        if self.bypass_cache {
            return self.compute(key, input, log);
        }
        if let Some(hit) = self.cache.get(&key) {
            let decision = hit.value().clone();
            drop(hit);
            metrics::counter!("lotus_policy_topic_cache_hits_total").increment(1);
            // Every deny is in the decision log, cached or not, and cached allows are sampled
            // like computed ones (the record is built only when it is kept: this is the hot
            // path). Latency 0 marks a decision served from the cache.
            if let Some(decision_log) = self.engine.decision_log() {
                let reason = match &decision {
                    Decision::Deny(reason) => Some(reason.to_string()),
                    Decision::Allow => None,
                };
                if reason.is_some() || decision_log.keep_allow() {
                    let (principal, resource, action) = log();
                    decision_log.record_kept(DecisionRecord {
                        at_ms: now_ms(),
                        point: PACKAGE.to_string(),
                        principal,
                        resource,
                        action: action.to_string(),
                        allow: reason.is_none(),
                        reason,
                        version: self.engine.package_version(PACKAGE).unwrap_or(0),
                        latency_us: 0,
                    });
                }
            }
            return decision;
        }
        metrics::counter!("lotus_policy_topic_cache_misses_total").increment(1);
        self.compute(key, input, log)
    }

    /// Asks the policy and caches what it says.
    fn compute(
        &self,
        key: CacheKey,
        input: impl FnOnce() -> Rego,
        log: impl FnOnce() -> (Value, Value, &'static str),
    ) -> Decision {
        let input = input();
        let (principal, resource, action) = log();
        let decision = match self
            .engine
            .decide_value_logged(PACKAGE, input, principal, resource, action)
        {
            Ok(d) if d.allow => Decision::Allow,
            Ok(d) => Decision::Deny(
                d.reason
                    .unwrap_or_else(|| format!("denied by policy {PACKAGE}"))
                    .into(),
            ),
            // A policy that cannot decide denies, and says so; nothing is cached, so a fixed
            // policy takes effect at the next message.
            Err(e) => {
                tracing::error!(error = %e, "policy {PACKAGE} failed to evaluate; denying");
                return Decision::Deny(format!("policy {PACKAGE} failed: {e}").into());
            }
        };
        if !self.bypass_cache {
            if self.cache.len() >= CACHE_LIMIT {
                self.cache.clear();
            }
            self.cache.insert(key, decision.clone());
        }
        decision
    }

    fn device(&self, device: &DeviceId, action: TopicAction, topic: &str) -> Decision {
        self.refresh();
        let (target, relation) = match topic_device(topic) {
            Some((pk, dn)) if *device.product_key != *pk || *device.device_name != *dn => {
                let target = DeviceId::new(pk, dn);
                let relation = match self.source.sub_device(pk, dn) {
                    Some(link) if link.gateway == *device => Relation::SubDevice {
                        online: link.online,
                    },
                    _ => Relation::Other,
                };
                (target, relation)
            }
            _ => (device.clone(), Relation::Own),
        };
        let classes = self.source.topic_classes(&target.product_key);
        let classify_key = ClassifyKey {
            target: target.clone(),
            relation,
            action: action_code(action),
            topic: topic.into(),
        };
        let matched: Option<Box<[u16]>> = match self.classified.get(&classify_key) {
            Some(hit) => hit.value().clone(),
            None => {
                let matched = classes.as_ref().map(|classes| {
                    if relation == Relation::Other {
                        return Box::default();
                    }
                    classes
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| match action {
                            TopicAction::Subscribe => c.covers_filter(&target, topic),
                            TopicAction::Publish | TopicAction::Deliver => {
                                c.matches_name(&target, topic)
                            }
                        })
                        .map(|(i, _)| i as u16)
                        .collect()
                });
                if self.classified.len() >= CACHE_LIMIT {
                    self.classified.clear();
                }
                self.classified.insert(classify_key, matched.clone());
                matched
            }
        };
        let key = CacheKey::Device {
            product_key: target.product_key.as_ref().into(),
            relation,
            action: action_code(action),
            matched: matched.clone(),
        };
        self.decide(
            key,
            || {
                let classes = match &classes {
                    Some(classes) => {
                        let inputs = self.class_inputs(&target.product_key, classes);
                        let matches = |i: usize| {
                            matched
                                .as_ref()
                                .is_some_and(|m| m.contains(&(i as u16)))
                        };
                        Rego::from(
                            inputs
                                .iter()
                                .enumerate()
                                .map(|(i, pair)| pair[usize::from(matches(i))].clone())
                                .collect::<Vec<_>>(),
                        )
                    }
                    None => Rego::Null,
                };
                object([
                    (
                        "principal",
                        object([
                            ("kind", Rego::from("device")),
                            ("product_key", Rego::from(&*device.product_key)),
                        ]),
                    ),
                    ("action", Rego::from(action_name(action))),
                    ("relation", Rego::from(relation.as_str())),
                    (
                        "sub_device_online",
                        Rego::from(matches!(relation, Relation::SubDevice { online: true })),
                    ),
                    ("product_key", Rego::from(&*target.product_key)),
                    ("classes", classes),
                ])
            },
            || {
                (
                    json!({"kind": "device", "product_key": &*device.product_key, "device_name": &*device.device_name}),
                    json!({"kind": "topic", "id": topic}),
                    action_name(action),
                )
            },
        )
    }

    fn application(
        &self,
        app: &lotus_model::authz::Application,
        action: TopicAction,
        topic: &str,
    ) -> Decision {
        self.refresh();
        let live = |pk: &str| self.source.topic_classes(pk).is_some();
        let dollar = topic.starts_with('$');
        let device_namespace = in_device_namespace(topic);
        let grant = app.grants.iter().any(|g| match action {
            TopicAction::Subscribe => {
                g.allows(lotus_model::authz::GrantAction::Subscribe)
                    && g.covers(topic)
                    && live(g.product_key())
            }
            TopicAction::Deliver => {
                g.allows(lotus_model::authz::GrantAction::Subscribe)
                    && g.matches(topic)
                    && live(g.product_key())
            }
            TopicAction::Publish => {
                g.allows(lotus_model::authz::GrantAction::Publish) && g.matches(topic)
            }
        });
        // Publishing reaches devices only on topics their product lets them receive.
        let downlink_class = action == TopicAction::Publish && {
            let mut levels = topic.strip_prefix('/').unwrap_or("").split('/');
            match (levels.next(), levels.next()) {
                (Some(pk), Some(dn)) => self.source.topic_classes(pk).is_some_and(|classes| {
                    let device = DeviceId::new(pk, dn);
                    classes.iter().any(|c| {
                        !c.system
                            && c.operation.allows(TopicAction::Deliver)
                            && c.matches_name(&device, topic)
                    })
                }),
                _ => false,
            }
        };
        let facts = u8::from(dollar)
            | u8::from(device_namespace) << 1
            | u8::from(grant) << 2
            | u8::from(downlink_class) << 3;
        self.decide(
            CacheKey::Application {
                id: app.id.clone(),
                action: action_code(action),
                facts,
            },
            || {
                object([
                    (
                        "principal",
                        object([
                            ("kind", Rego::from("application")),
                            ("id", Rego::from(&*app.id)),
                            // One kind for both logins (the same rules); this says which, so
                            // that refusals name the registered app rather than a credential.
                            ("registered_app", Rego::from(app.registered_app)),
                        ]),
                    ),
                    ("action", Rego::from(action_name(action))),
                    (
                        "facts",
                        object([
                            ("dollar", Rego::from(dollar)),
                            ("device_namespace", Rego::from(device_namespace)),
                            ("grant", Rego::from(grant)),
                            ("downlink_class", Rego::from(downlink_class)),
                        ]),
                    ),
                ])
            },
            || {
                (
                    json!({"kind": "application", "id": &*app.id, "registered_app": app.registered_app}),
                    json!({"kind": "topic", "id": topic}),
                    action_name(action),
                )
            },
        )
    }

    fn anonymous(&self, client_id: &str, action: TopicAction, topic: &str) -> Decision {
        self.refresh();
        let first = first_level(topic);
        let dollar = topic.starts_with('$');
        let wildcard_first_level = first == "+" || first == "#";
        let device_topic = in_device_namespace(topic) || self.source.topic_classes(first).is_some();
        let facts =
            u8::from(dollar) | u8::from(wildcard_first_level) << 1 | u8::from(device_topic) << 2;
        self.decide(
            CacheKey::Anonymous {
                action: action_code(action),
                facts,
            },
            || {
                object([
                    ("principal", object([("kind", Rego::from("anonymous"))])),
                    ("action", Rego::from(action_name(action))),
                    (
                        "facts",
                        object([
                            ("dollar", Rego::from(dollar)),
                            ("wildcard_first_level", Rego::from(wildcard_first_level)),
                            ("device_topic", Rego::from(device_topic)),
                        ]),
                    ),
                ])
            },
            || {
                (
                    json!({"kind": "anonymous", "client_id": client_id}),
                    json!({"kind": "topic", "id": topic}),
                    action_name(action),
                )
            },
        )
    }
}

impl<S: TopicClassSource> TopicAuthorizer for PolicyTopicAuthorizer<S> {
    fn authorize_topic(&self, principal: &Principal, action: TopicAction, topic: &str) -> Decision {
        match principal {
            Principal::Platform => Decision::Allow,
            Principal::Device(device) => self.device(device, action, topic),
            Principal::Anonymous { client_id } => self.anonymous(client_id, action, topic),
            Principal::Application(app) => self.application(app, action, topic),
        }
    }
}

/// A policy input object from its fields.
fn object<const N: usize>(fields: [(&str, Rego); N]) -> Rego {
    Rego::from(
        fields
            .into_iter()
            .map(|(k, v)| (Rego::from(k), v))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
