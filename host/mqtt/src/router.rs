//! Which sessions want a topic.
//!
//! Filters without wildcards (most device subscriptions: `/sys/{pk}/{dn}/…/set`) live in one
//! hash table keyed by the whole filter, so a publish finds them with a single lookup and
//! each costs one small entry. Filters with wildcards live in a trie, one node per level,
//! where `+` and `#` have their own slots: matching walks only the branches that can match,
//! comparing `&str` slices of the topic without allocating. Both sit behind one `RwLock`:
//! publishers only take the read side (many at once); SUBSCRIBE, UNSUBSCRIBE and session end
//! take the write side.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use lotus_model::topic::validate_topic_filter;
use parking_lot::RwLock;

use crate::hooks::QoS;
use crate::session::Session;

/// Filters deeper than this are refused: matching recurses once per level.
const MAX_FILTER_LEVELS: usize = 128;

/// What a subscription asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SubOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub sub_id: Option<NonZeroU32>,
}

/// A topic filter, split from its shared-subscription prefix (`$share/{group}/{filter}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Filter<'a> {
    pub group: Option<&'a str>,
    pub path: &'a str,
}

/// Parses and validates a SUBSCRIBE / UNSUBSCRIBE filter.
pub(crate) fn parse_filter(full: &str) -> Result<Filter<'_>, String> {
    let filter = match full.strip_prefix("$share/") {
        Some(rest) => {
            let (group, path) = rest
                .split_once('/')
                .ok_or_else(|| "a shared subscription needs $share/{group}/{filter}".to_string())?;
            if group.is_empty() || group.contains(['+', '#']) {
                return Err("invalid shared subscription group name".into());
            }
            Filter {
                group: Some(group),
                path,
            }
        }
        None => Filter {
            group: None,
            path: full,
        },
    };
    validate_topic_filter(filter.path).map_err(|e| e.to_string())?;
    if filter.path.split('/').count() > MAX_FILTER_LEVELS {
        return Err(format!(
            "a filter may have at most {MAX_FILTER_LEVELS} levels"
        ));
    }
    Ok(filter)
}

/// A session that a message should go to.
#[derive(Clone)]
pub(crate) struct Target {
    pub session: Arc<Session>,
    pub opts: SubOptions,
    /// Chosen from a shared-subscription group.
    pub shared: bool,
}

struct Entry {
    session: Arc<Session>,
    opts: SubOptions,
}

struct Group {
    name: Box<str>,
    members: Vec<Entry>,
    next: AtomicUsize,
}

/// The subscriptions whose filter ends at one place of the trie.
#[derive(Default)]
struct Subscribers {
    direct: Vec<Entry>,
    groups: Vec<Group>,
}

impl Subscribers {
    fn is_empty(&self) -> bool {
        self.direct.is_empty() && self.groups.is_empty()
    }

    fn upsert(&mut self, group: Option<&str>, session: &Arc<Session>, opts: SubOptions) {
        let entries = match group {
            None => &mut self.direct,
            Some(name) => {
                let i = match self.groups.iter().position(|g| &*g.name == name) {
                    Some(i) => i,
                    None => {
                        self.groups.push(Group {
                            name: name.into(),
                            members: Vec::new(),
                            next: AtomicUsize::new(0),
                        });
                        self.groups.len() - 1
                    }
                };
                &mut self.groups[i].members
            }
        };
        match entries.iter_mut().find(|e| e.session.id == session.id) {
            Some(e) => e.opts = opts,
            None => {
                // Most filters have one subscriber: do not reserve room for four.
                entries.reserve_exact(1);
                entries.push(Entry {
                    session: session.clone(),
                    opts,
                });
            }
        }
    }

    fn remove(&mut self, group: Option<&str>, session_id: u64) -> bool {
        match group {
            None => remove_entry(&mut self.direct, session_id),
            Some(name) => {
                let Some(i) = self.groups.iter().position(|g| &*g.name == name) else {
                    return false;
                };
                let removed = remove_entry(&mut self.groups[i].members, session_id);
                if self.groups[i].members.is_empty() {
                    self.groups.swap_remove(i);
                }
                removed
            }
        }
    }

    fn collect(&self, out: &mut Vec<Target>) {
        out.extend(self.direct.iter().map(|e| Target {
            session: e.session.clone(),
            opts: e.opts,
            shared: false,
        }));
        for g in &self.groups {
            // Round-robin, skipping members whose client is away while another is online.
            let n = g.members.len();
            let start = g.next.fetch_add(1, Ordering::Relaxed) % n;
            let pick = (0..n)
                .map(|i| &g.members[(start + i) % n])
                .find(|e| e.session.is_online())
                .unwrap_or(&g.members[start]);
            out.push(Target {
                session: pick.session.clone(),
                opts: pick.opts,
                shared: true,
            });
        }
    }
}

fn remove_entry(entries: &mut Vec<Entry>, session_id: u64) -> bool {
    match entries.iter().position(|e| e.session.id == session_id) {
        Some(i) => {
            entries.swap_remove(i);
            true
        }
        None => false,
    }
}

/// Children of a trie node: a short list while there are few (a chain of unique levels is
/// the common case and costs one small allocation per level), a hash table once there are
/// many (a level of device names under a product).
enum Children {
    Few(Vec<(Box<str>, Node)>),
    Many(HashMap<Box<str>, Node>),
}

const FEW_CHILDREN: usize = 8;

impl Default for Children {
    fn default() -> Self {
        Children::Few(Vec::new())
    }
}

impl Children {
    fn is_empty(&self) -> bool {
        match self {
            Children::Few(v) => v.is_empty(),
            Children::Many(m) => m.is_empty(),
        }
    }

    fn get(&self, level: &str) -> Option<&Node> {
        match self {
            Children::Few(v) => v.iter().find(|(l, _)| &**l == level).map(|(_, n)| n),
            Children::Many(m) => m.get(level),
        }
    }

    fn get_mut(&mut self, level: &str) -> Option<&mut Node> {
        match self {
            Children::Few(v) => v.iter_mut().find(|(l, _)| &**l == level).map(|(_, n)| n),
            Children::Many(m) => m.get_mut(level),
        }
    }

    fn get_or_insert(&mut self, level: &str) -> &mut Node {
        if let Children::Few(v) = self
            && v.len() >= FEW_CHILDREN
            && !v.iter().any(|(l, _)| &**l == level)
        {
            *self = Children::Many(std::mem::take(v).into_iter().collect());
        }
        match self {
            Children::Few(v) => {
                let i = match v.iter().position(|(l, _)| &**l == level) {
                    Some(i) => i,
                    None => {
                        v.reserve_exact(1);
                        v.push((level.into(), Node::default()));
                        v.len() - 1
                    }
                };
                &mut v[i].1
            }
            Children::Many(m) => m.entry(level.into()).or_default(),
        }
    }

    fn remove(&mut self, level: &str) {
        match self {
            Children::Few(v) => v.retain(|(l, _)| &**l != level),
            Children::Many(m) => {
                m.remove(level);
            }
        }
    }
}

/// Subscribers of the filters that end at a trie node.
#[derive(Default)]
struct Leaf {
    /// Filters ending at this node.
    exact: Subscribers,
    /// Filters ending with `/#` below this node (or `#` at the root).
    hash: Subscribers,
}

#[derive(Default)]
struct Node {
    children: Children,
    plus: Option<Box<Node>>,
    /// Boxed: most nodes are inner levels with no subscriber of their own.
    leaf: Option<Box<Leaf>>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.plus.is_none() && self.leaf.is_none()
    }

    fn leaf(&mut self) -> &mut Leaf {
        self.leaf.get_or_insert_with(Default::default)
    }

    fn collect(
        &self,
        mut rest: std::str::Split<'_, char>,
        at_root: bool,
        dollar: bool,
        out: &mut Vec<Target>,
    ) {
        // Wildcards in the first level never match topics starting with '$' (MQTT 4.7.2).
        let wildcards = !(at_root && dollar);
        if wildcards && let Some(leaf) = &self.leaf {
            // `a/#` also matches `a` itself, so `#` subscribers match before looking further.
            leaf.hash.collect(out);
        }
        match rest.next() {
            None => {
                if let Some(leaf) = &self.leaf {
                    leaf.exact.collect(out);
                }
            }
            Some(level) => {
                if let Some(child) = self.children.get(level) {
                    child.collect(rest.clone(), false, dollar, out);
                }
                if wildcards && let Some(plus) = &self.plus {
                    plus.collect(rest, false, dollar, out);
                }
            }
        }
    }
}

#[derive(Default)]
struct Tables {
    /// Filters without wildcards, by the whole filter.
    literal: HashMap<Box<str>, Subscribers>,
    /// Filters with wildcards.
    wildcard: Node,
}

/// All subscriptions of all sessions.
#[derive(Default)]
pub(crate) struct Router {
    tables: RwLock<Tables>,
}

fn has_wildcard(path: &str) -> bool {
    path.contains(['+', '#'])
}

impl Router {
    /// Adds or replaces (same session, same filter) a subscription.
    pub fn subscribe(&self, filter: &Filter<'_>, session: &Arc<Session>, opts: SubOptions) {
        let mut tables = self.tables.write();
        if !has_wildcard(filter.path) {
            let subscribers = match tables.literal.get_mut(filter.path) {
                Some(s) => s,
                None => tables.literal.entry(filter.path.into()).or_default(),
            };
            return subscribers.upsert(filter.group, session, opts);
        }
        let mut node = &mut tables.wildcard;
        for level in filter.path.split('/') {
            node = match level {
                "#" => return node.leaf().hash.upsert(filter.group, session, opts),
                "+" => node.plus.get_or_insert_with(Default::default),
                l => node.children.get_or_insert(l),
            };
        }
        node.leaf().exact.upsert(filter.group, session, opts);
    }

    pub fn unsubscribe(&self, filter: &Filter<'_>, session_id: u64) -> bool {
        let mut tables = self.tables.write();
        if !has_wildcard(filter.path) {
            let Some(subscribers) = tables.literal.get_mut(filter.path) else {
                return false;
            };
            let removed = subscribers.remove(filter.group, session_id);
            if subscribers.is_empty() {
                tables.literal.remove(filter.path);
            }
            return removed;
        }
        remove(
            &mut tables.wildcard,
            filter.path.split('/'),
            filter.group,
            session_id,
        )
    }

    /// Appends every subscription matching `topic` (one pick per shared group).
    pub fn collect(&self, topic: &str, out: &mut Vec<Target>) {
        let tables = self.tables.read();
        if let Some(subscribers) = tables.literal.get(topic) {
            subscribers.collect(out);
        }
        if !tables.wildcard.is_empty() {
            tables
                .wildcard
                .collect(topic.split('/'), true, topic.starts_with('$'), out);
        }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        let tables = self.tables.read();
        tables.literal.is_empty() && tables.wildcard.is_empty()
    }
}

/// Removes a wildcard subscription below `node`; returns whether it existed. Empty branches
/// are pruned so that short-lived unique filters do not leave nodes behind.
fn remove(
    node: &mut Node,
    mut levels: std::str::Split<'_, char>,
    group: Option<&str>,
    session_id: u64,
) -> bool {
    match levels.next() {
        None => remove_from_leaf(node, false, group, session_id),
        Some("#") => remove_from_leaf(node, true, group, session_id),
        Some("+") => {
            let Some(plus) = node.plus.as_mut() else {
                return false;
            };
            let removed = remove(plus, levels, group, session_id);
            if plus.is_empty() {
                node.plus = None;
            }
            removed
        }
        Some(level) => {
            let Some(child) = node.children.get_mut(level) else {
                return false;
            };
            let removed = remove(child, levels, group, session_id);
            if child.is_empty() {
                node.children.remove(level);
            }
            removed
        }
    }
}

fn remove_from_leaf(node: &mut Node, hash: bool, group: Option<&str>, session_id: u64) -> bool {
    let Some(leaf) = node.leaf.as_mut() else {
        return false;
    };
    let subscribers = if hash {
        &mut leaf.hash
    } else {
        &mut leaf.exact
    };
    let removed = subscribers.remove(group, session_id);
    if leaf.exact.is_empty() && leaf.hash.is_empty() {
        node.leaf = None;
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::tests::session;

    fn opts(qos: QoS) -> SubOptions {
        SubOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            sub_id: None,
        }
    }

    fn matches(r: &Router, topic: &str) -> Vec<(u64, QoS)> {
        let mut out = Vec::new();
        r.collect(topic, &mut out);
        let mut ids: Vec<_> = out.iter().map(|t| (t.session.id, t.opts.qos)).collect();
        ids.sort();
        ids
    }

    #[test]
    fn wildcards_match_as_mqtt_says() {
        let r = Router::default();
        let (s1, s2, s3) = (session(1), session(2), session(3));
        r.subscribe(&parse_filter("a/+/c").unwrap(), &s1, opts(QoS::AtMostOnce));
        r.subscribe(&parse_filter("a/#").unwrap(), &s2, opts(QoS::AtLeastOnce));
        r.subscribe(&parse_filter("#").unwrap(), &s3, opts(QoS::ExactlyOnce));
        assert_eq!(
            matches(&r, "a/b/c"),
            vec![
                (1, QoS::AtMostOnce),
                (2, QoS::AtLeastOnce),
                (3, QoS::ExactlyOnce)
            ]
        );
        assert_eq!(
            matches(&r, "a"),
            vec![(2, QoS::AtLeastOnce), (3, QoS::ExactlyOnce)]
        );
        assert_eq!(matches(&r, "b"), vec![(3, QoS::ExactlyOnce)]);
        assert_eq!(matches(&r, "$SYS/x"), vec![]);
        r.subscribe(&parse_filter("$SYS/#").unwrap(), &s1, opts(QoS::AtMostOnce));
        assert_eq!(matches(&r, "$SYS/x"), vec![(1, QoS::AtMostOnce)]);
        assert_eq!(matches(&r, "/x"), vec![(3, QoS::ExactlyOnce)]);
    }

    #[test]
    fn unsubscribe_prunes_the_trie() {
        let r = Router::default();
        let s = session(1);
        for f in ["a/b/c", "a/+/#", "x/#", "$share/g/a/b"] {
            r.subscribe(&parse_filter(f).unwrap(), &s, opts(QoS::AtMostOnce));
        }
        // Subscribing again replaces instead of adding.
        r.subscribe(&parse_filter("a/b/c").unwrap(), &s, opts(QoS::AtLeastOnce));
        assert_eq!(
            matches(&r, "a/b/c"),
            vec![(1, QoS::AtMostOnce), (1, QoS::AtLeastOnce)]
        );
        for f in ["a/b/c", "a/+/#", "x/#", "$share/g/a/b"] {
            assert!(r.unsubscribe(&parse_filter(f).unwrap(), 1), "{f}");
        }
        assert!(!r.unsubscribe(&parse_filter("a/b/c").unwrap(), 1));
        assert!(r.is_empty());
    }

    #[test]
    fn wide_levels_switch_to_a_hash_table_and_back_out() {
        let r = Router::default();
        let sessions: Vec<_> = (0..40).map(session).collect();
        for (i, s) in sessions.iter().enumerate() {
            r.subscribe(
                &parse_filter(&format!("/sys/pk/d{i}/rrpc/+")).unwrap(),
                s,
                opts(QoS::AtLeastOnce),
            );
            r.subscribe(
                &parse_filter(&format!("/sys/pk/d{i}/set")).unwrap(),
                s,
                opts(QoS::AtMostOnce),
            );
        }
        assert_eq!(
            matches(&r, "/sys/pk/d17/rrpc/42"),
            vec![(17, QoS::AtLeastOnce)]
        );
        assert_eq!(matches(&r, "/sys/pk/d39/set"), vec![(39, QoS::AtMostOnce)]);
        assert_eq!(matches(&r, "/sys/pk/d40/set"), vec![]);
        for (i, s) in sessions.iter().enumerate() {
            assert!(r.unsubscribe(
                &parse_filter(&format!("/sys/pk/d{i}/rrpc/+")).unwrap(),
                s.id
            ));
            assert!(r.unsubscribe(&parse_filter(&format!("/sys/pk/d{i}/set")).unwrap(), s.id));
        }
        assert!(r.is_empty());
    }

    #[test]
    fn shared_groups_take_turns() {
        let r = Router::default();
        let (s1, s2) = (session(1), session(2));
        let f = parse_filter("$share/workers/jobs/+").unwrap();
        r.subscribe(&f, &s1, opts(QoS::AtMostOnce));
        r.subscribe(&f, &s2, opts(QoS::AtMostOnce));
        let picks: Vec<u64> = (0..4).map(|_| matches(&r, "jobs/1")[0].0).collect();
        assert_eq!(picks, vec![1, 2, 1, 2]);
    }

    #[test]
    fn filter_parsing() {
        assert_eq!(
            parse_filter("$share/g/a/#").unwrap(),
            Filter {
                group: Some("g"),
                path: "a/#"
            }
        );
        assert!(parse_filter("$share/g").is_err());
        assert!(parse_filter("$share//a").is_err());
        assert!(parse_filter("a/#/b").is_err());
        assert!(parse_filter(&"a/".repeat(200)).is_err());
    }
}
