//! `cargo bench -p lotus-operations --bench operations`: the operations center on the embedded
//! default (SQLite file, in-process bus), measured end to end.
//!
//! - **rules on the bus**: property posts published on the bus, evaluated by 10 simple SQL rules
//!   (none matching, the common case): messages evaluated per second.
//! - **events through rules**: property posts from distinct devices, each crossing a rule's
//!   threshold; the rule's `event` action creates an event and starts its one-step disposal
//!   workflow (task, in-app message to the role's holder, timeline): events per second until
//!   the last is stored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lotus_bus::{Bus, DeviceEvent, Envelope, LocalBus};
use lotus_model::product::{DataFormat, NodeType};
use lotus_model::scope::Scope;
use lotus_operations::{
    ChannelPlugins, DeviceCommands, EventCenter, NoPlugins, Operations, OperationsConfig, Services,
};
use lotus_storage::{EventFilter, NewProduct, NewRule, SecretBox, Store};
use serde_json::{Map, Value, json};

struct NoDevices;

#[async_trait]
impl DeviceCommands for NoDevices {
    async fn set_properties(&self, _: &str, _: &str, _: Value) -> Result<String, String> {
        Err("not in this benchmark".into())
    }
    async fn invoke_service(&self, _: &str, _: &str, _: &str, _: Value) -> Result<Value, String> {
        Err("not in this benchmark".into())
    }
    async fn publish(&self, _: &str, _: Vec<u8>, _: u8) -> Result<usize, String> {
        Ok(0)
    }
}

struct NoChannels;

#[async_trait]
impl ChannelPlugins for NoChannels {
    async fn deliver(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: &str,
    ) -> Result<Option<String>, (String, bool)> {
        Err(("not in this benchmark".into(), false))
    }
}

fn post(pk: &str, dn: &str, pressure: f64) -> Envelope {
    let mut values = Map::new();
    values.insert("pressure".into(), json!(pressure));
    values.insert("flow".into(), json!(12.5));
    // Stamped now: an event reported at the epoch would have its task overdue at once, and
    // the workflow ticker would send overdue notices during the run.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    Envelope::device(pk, dn, now, DeviceEvent::Properties { values })
}

async fn rule(store: &Store, id: &str, definition: Value) {
    store
        .create_rule(&NewRule {
            id,
            name: id,
            description: "",
            enabled: true,
            definition: &definition,
            org: "",
            region: "/",
            created_by: "bench",
        })
        .await
        .expect("rule stored");
}

async fn setup(devices: usize) -> (tempfile::TempDir, Store, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/lotus.db", dir.path().display());
    let store = Store::open(&url, SecretBox::random()).await.unwrap();
    let pk = "bench0pk001".to_string();
    store
        .create_product(&NewProduct {
            product_key: pk.clone(),
            name: "Water mains".into(),
            node_type: NodeType::Direct,
            data_format: DataFormat::Alink,
            dynamic_registration: false,
            allow_unregistered: false,
            replay_window_secs: None,
            description: String::new(),
            product_secret: "s".into(),
            scope: Scope {
                org: String::new(),
                region: "/hz".into(),
            },
        })
        .await
        .unwrap();
    let names: Vec<(String, String)> = (0..devices)
        .map(|i| (format!("pump-{i:05}"), "secret".to_string()))
        .collect();
    for chunk in names.chunks(1000) {
        store.create_devices(&pk, chunk).await.unwrap();
    }
    (dir, store, pk)
}

async fn rules_on_the_bus() {
    let (_dir, store, pk) = setup(1).await;
    for i in 0..10 {
        rule(
            &store,
            &format!("r{i}"),
            json!({"trigger": {"kind": "sql", "sql": format!(
                "SELECT items.pressure.value AS p FROM '/sys/+/+/thing/event/property/post' \
                 WHERE items.pressure.value < 0.{i} AND deviceName() LIKE 'pump-%'")},
                "actions": [{"kind": "clearAlarm", "alarmType": "x"}]}),
        )
        .await;
    }
    let bus = Arc::new(LocalBus::new(65_536));
    let (ops, tasks) = Operations::start(
        store.clone(),
        bus.clone(),
        Services {
            devices: Arc::new(NoDevices),
            channels: Arc::new(NoChannels),
            plugins: Arc::new(NoPlugins),
            center: EventCenter::announcing(store.clone()),
        },
        OperationsConfig::default(),
    )
    .await
    .unwrap();
    let total: u64 = 300_000;
    let env = post(&pk, "pump-00000", 0.95);
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        // Stay within the bus's buffer: a broadcast subscriber that falls behind loses messages.
        if sent - ops.engine.evaluated() < 30_000 {
            bus.publish(env.clone());
            sent += 1;
        } else {
            tokio::task::yield_now().await;
        }
    }
    while ops.engine.evaluated() < total {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "rules on the bus: {total} property posts x 10 SQL rules in {secs:.2} s = {:.0} messages/s",
        total as f64 / secs
    );
    for t in tasks {
        t.abort();
    }
}

async fn events_through_rules() {
    let n = 10_000;
    let (_dir, store, pk) = setup(n).await;
    // The holder of the role the workflow assigns to: every task also puts a message in their
    // message center.
    store
        .create_user(
            "dispatcher-1",
            "not-a-password-hash",
            &["dispatcher".to_string()],
            &Scope {
                org: String::new(),
                region: "/".into(),
            },
        )
        .await
        .unwrap();
    store
        .put_event_type(
            "water.pressure_low",
            &json!({"code": "water.pressure_low", "name": "Low water pressure", "description": "",
                    "defaultLevel": 2, "fields": []}),
        )
        .await
        .unwrap();
    let workflow = json!({"id": "dispatch", "name": "Dispatch", "version": 1,
        "appliesTo": {"eventType": "water.pressure_low"}, "start": "dispatch",
        "steps": [{"id": "dispatch", "name": "Send a crew", "assignee": {"role": "dispatcher"},
                   "deadlineSecs": 3600, "next": "end"}]});
    store
        .put_workflow_definition("dispatch", "water.pressure_low", &workflow, "bench")
        .await
        .unwrap();
    rule(
        &store,
        "pressure-low",
        json!({"trigger": {"kind": "sql", "sql":
            "SELECT items.pressure.value AS p FROM '/sys/+/+/thing/event/property/post' WHERE items.pressure.value < 0.2"},
            "actions": [{"kind": "event", "eventType": "water.pressure_low", "title": "Low pressure at {{ device.deviceName }}"}]}),
    )
    .await;
    let bus = Arc::new(LocalBus::new(65_536));
    let (_ops, tasks) = Operations::start(
        store.clone(),
        bus.clone(),
        Services {
            devices: Arc::new(NoDevices),
            channels: Arc::new(NoChannels),
            plugins: Arc::new(NoPlugins),
            center: EventCenter::announcing(store.clone()),
        },
        OperationsConfig::default(),
    )
    .await
    .unwrap();
    let started = Instant::now();
    for i in 0..n {
        bus.publish(post(&pk, &format!("pump-{i:05}"), 0.1));
        if i % 1000 == 999 {
            tokio::task::yield_now().await;
        }
    }
    let filter = EventFilter {
        limit: 1,
        ..EventFilter::default()
    };
    loop {
        let (_, count) = store.list_events(&filter).await.unwrap();
        if count as usize >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let tasks_made = store
        .list_tasks_for(&lotus_storage::TaskAssigneeFilter {
            username: "nobody",
            roles: &["dispatcher".to_string()],
            org: "",
            region: "/",
            state: None,
            limit: 1,
            offset: 0,
        })
        .await
        .unwrap()
        .1;
    let messages = store
        .list_messages("dispatcher-1", false, 1, 0)
        .await
        .unwrap()
        .1;
    println!(
        "events through rules: {n} events with workflows started ({tasks_made} tasks, {messages} messages) in {secs:.2} s = {:.0} events/s",
        n as f64 / secs
    );
    for t in tasks {
        t.abort();
    }
}

fn main() {
    // `cargo test --benches` runs benches as tests with `--bench` absent: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(rules_on_the_bus());
    rt.block_on(events_through_rules());
}
