//! An in-memory view of every product: settings, compiled thing model and topic classes.
//!
//! Every CONNECT, PUBLISH and SUBSCRIBE consults it, so it must never wait on storage. The API
//! refreshes a product after changing it, which is what makes a topic-class change apply to
//! connected devices at once.

use std::collections::HashMap;
use std::sync::Arc;

use lotus_model::product::{DataFormat, NodeType};
use lotus_model::thing_model::{CompiledThingModel, ThingModel};
use lotus_model::topic::{SubDeviceLink, TopicClass, TopicClassSource, system_topic_classes_for};
use lotus_storage::{ProductRow, StorageError, Store, TopicClassRow};
use parking_lot::RwLock;

use crate::gateway::Topology;

/// A product's thing model as the uplink uses it.
pub struct ThingModelEntry {
    pub version: i64,
    pub model: ThingModel,
    pub compiled: CompiledThingModel,
}

/// What the hot path needs to know about a product.
pub struct ProductEntry {
    pub product_key: String,
    pub node_type: NodeType,
    pub data_format: DataFormat,
    pub dynamic_registration: bool,
    pub allow_unregistered: bool,
    pub replay_window_secs: Option<i64>,
    pub thing_model: Option<Arc<ThingModelEntry>>,
    pub topic_classes: Arc<[TopicClass]>,
}

#[derive(Default)]
pub struct Registry {
    products: RwLock<HashMap<String, Arc<ProductEntry>>>,
    /// Which gateway each sub-device is attached to.
    pub topology: Topology,
    /// Bumped by every refresh (see `TopicClassSource::generation`).
    generation: std::sync::atomic::AtomicU64,
}

impl Registry {
    /// Loads every product at start.
    pub async fn load(store: &Store) -> Result<Arc<Self>, StorageError> {
        let registry = Arc::new(Registry {
            products: RwLock::default(),
            topology: Topology::load(store.all_topology().await?),
            generation: Default::default(),
        });
        let mut classes: HashMap<String, Vec<TopicClassRow>> = HashMap::new();
        for row in store.all_topic_classes().await? {
            classes
                .entry(row.product_key.clone())
                .or_default()
                .push(row);
        }
        let mut offset = 0;
        loop {
            let (rows, total) = store
                .list_products(lotus_storage::Page { offset, limit: 500 }, None, None)
                .await?;
            let n = rows.len() as i64;
            for row in rows {
                let custom = classes.remove(&row.product_key).unwrap_or_default();
                let entry = build_entry(store, &row, custom).await?;
                registry
                    .products
                    .write()
                    .insert(row.product_key.clone(), Arc::new(entry));
            }
            offset += n;
            if n == 0 || offset >= total {
                break;
            }
        }
        Ok(registry)
    }

    pub fn get(&self, product_key: &str) -> Option<Arc<ProductEntry>> {
        self.products.read().get(product_key).cloned()
    }

    /// Re-reads one product after a change; removes it when it no longer exists.
    pub async fn refresh(&self, store: &Store, product_key: &str) -> Result<(), StorageError> {
        match store.get_product(product_key).await? {
            None => {
                self.products.write().remove(product_key);
            }
            Some(row) => {
                let custom = store.list_topic_classes(product_key).await?;
                let entry = build_entry(store, &row, custom).await?;
                self.products
                    .write()
                    .insert(product_key.to_string(), Arc::new(entry));
            }
        }
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.products.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

async fn build_entry(
    store: &Store,
    row: &ProductRow,
    custom: Vec<TopicClassRow>,
) -> Result<ProductEntry, StorageError> {
    let thing_model = match store.thing_model(&row.product_key, None).await? {
        None => None,
        Some((version, tsl, _)) => match ThingModel::parse(&tsl) {
            Ok(model) => {
                let compiled = model.compile();
                Some(Arc::new(ThingModelEntry {
                    version,
                    model,
                    compiled,
                }))
            }
            Err(e) => {
                // Stored models were validated on upload; this only happens if validation
                // rules tightened since. Keep serving without a model rather than refusing.
                tracing::error!(product = %row.product_key, error = %e, "stored thing model no longer parses");
                None
            }
        },
    };
    Ok(ProductEntry {
        product_key: row.product_key.clone(),
        node_type: row.node_type,
        data_format: row.data_format,
        dynamic_registration: row.dynamic_registration,
        allow_unregistered: row.allow_unregistered,
        replay_window_secs: row.replay_window_secs,
        thing_model,
        topic_classes: compile_topic_classes(row.node_type, &custom),
    })
}

/// System classes (for the node type) plus the product's custom ones, compiled for matching.
pub fn compile_topic_classes(node_type: NodeType, custom: &[TopicClassRow]) -> Arc<[TopicClass]> {
    let mut classes = system_topic_classes_for(node_type);
    for row in custom {
        match TopicClass::custom(
            row.id.to_string(),
            &row.template,
            row.operation,
            &row.description,
        ) {
            Ok(c) => classes.push(c),
            Err(e) => {
                tracing::error!(product = %row.product_key, template = %row.template, error = %e, "skipping invalid stored topic class")
            }
        }
    }
    classes.into()
}

impl TopicClassSource for Registry {
    fn topic_classes(&self, product_key: &str) -> Option<Arc<[TopicClass]>> {
        self.products
            .read()
            .get(product_key)
            .map(|p| p.topic_classes.clone())
    }

    fn sub_device(&self, product_key: &str, device_name: &str) -> Option<SubDeviceLink> {
        self.topology.link(product_key, device_name)
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }
}
