//! Gateways and sub-devices: how LoRa, NB-IoT and Modbus field devices reach the platform.
//!
//! A gateway adds sub-devices to its topology (`thing/topo/add`, signed with each
//! sub-device's own secret, so a gateway cannot claim devices it was not given), logs them in
//! and out over its own connection (`combine/login|logout`), and then carries their messages
//! on their own topics. The ACL lets a gateway use a sub-device's topics only while the
//! sub-device is in its topology, and publish only while it is logged in; a sub-device is
//! online exactly while it is logged in through a connected gateway.

use std::collections::HashSet;
use std::sync::Arc;

use dashmap::DashMap;
use lotus_model::alink::{Reply, Request, SignMethod, UplinkTopic, code};
use lotus_model::authz::DeviceId;
use lotus_model::product::NodeType;
use lotus_model::topic::SubDeviceLink;
use lotus_mqtt::{InboundPublish, PublishVerdict};
use lotus_storage::TopologyLink;
use serde_json::{Value, json};

use crate::DevicePlane;
use crate::connect::{LoginRefusal, Proof};
use crate::uplink::Answer;

/// Lotus codes for topology errors, in the Alink 6xxx range used for device-side errors.
pub mod topology_code {
    /// The sub-device is not in this gateway's topology.
    pub const NOT_IN_TOPOLOGY: i64 = 6401;
    /// The device is not a gateway, or the sub-device's product is not a sub-device product.
    pub const WRONG_NODE_TYPE: i64 = 6402;
    /// The sub-device's signature or state does not allow it.
    pub const SUB_DEVICE_REFUSED: i64 = 6403;
}

struct Link {
    gateway: DeviceId,
    /// The gateway connection the sub-device is logged in through.
    session: Option<u64>,
}

/// The topology in memory, so that the ACL never waits on storage.
#[derive(Default)]
pub struct Topology {
    links: DashMap<DeviceId, Link>,
    by_gateway: DashMap<DeviceId, HashSet<DeviceId>>,
}

impl Topology {
    pub(crate) fn load(rows: Vec<TopologyLink>) -> Self {
        let t = Topology::default();
        for r in rows {
            t.attach(
                &DeviceId::new(r.product_key, r.device_name),
                &DeviceId::new(r.gateway_product_key, r.gateway_device_name),
            );
        }
        t
    }

    pub fn link(&self, product_key: &str, device_name: &str) -> Option<SubDeviceLink> {
        self.links
            .get(&DeviceId::new(product_key, device_name))
            .map(|l| SubDeviceLink {
                gateway: l.gateway.clone(),
                online: l.session.is_some(),
            })
    }

    /// Whether `gateway` speaks for the device `pk/dn`.
    pub(crate) fn speaks_for(&self, gateway: &DeviceId, pk: &str, dn: &str) -> bool {
        self.links
            .get(&DeviceId::new(pk, dn))
            .is_some_and(|l| l.gateway == *gateway)
    }

    /// Attaches; returns the session the sub-device had through a previous gateway.
    fn attach(&self, sub: &DeviceId, gateway: &DeviceId) -> Option<u64> {
        let previous = self.links.insert(
            sub.clone(),
            Link {
                gateway: gateway.clone(),
                session: None,
            },
        );
        if let Some(p) = &previous
            && p.gateway != *gateway
        {
            self.remove_from_gateway(&p.gateway, sub);
        }
        self.by_gateway
            .entry(gateway.clone())
            .or_default()
            .insert(sub.clone());
        previous.and_then(|p| p.session)
    }

    fn remove_from_gateway(&self, gateway: &DeviceId, sub: &DeviceId) {
        if let Some(mut subs) = self.by_gateway.get_mut(gateway) {
            subs.remove(sub);
        }
        self.by_gateway
            .remove_if(gateway, |_, subs| subs.is_empty());
    }

    /// Detaches; returns the session it had.
    fn detach(&self, sub: &DeviceId) -> Option<u64> {
        let (_, link) = self.links.remove(sub)?;
        self.remove_from_gateway(&link.gateway, sub);
        link.session
    }

    fn login(&self, sub: &DeviceId, connection_id: u64) {
        if let Some(mut l) = self.links.get_mut(sub) {
            l.session = Some(connection_id);
        }
    }

    /// Ends a sub-device's session; returns the connection it was logged in through.
    fn logout(&self, sub: &DeviceId) -> Option<u64> {
        self.links.get_mut(sub).and_then(|mut l| l.session.take())
    }

    /// Ends every session through this gateway connection; returns the sub-devices.
    fn gateway_gone(&self, gateway: &DeviceId, connection_id: u64) -> Vec<DeviceId> {
        let subs: Vec<DeviceId> = self
            .by_gateway
            .get(gateway)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        subs.into_iter()
            .filter(|sub| {
                self.links.get_mut(sub).is_some_and(|mut l| {
                    l.session == Some(connection_id) && l.session.take().is_some()
                })
            })
            .collect()
    }

    /// A device was deleted: forget it as a sub-device and as a gateway.
    fn forget(&self, device: &DeviceId) -> Vec<(DeviceId, u64)> {
        self.detach(device);
        let subs = self
            .by_gateway
            .remove(device)
            .map(|(_, s)| s)
            .unwrap_or_default();
        subs.into_iter()
            .filter_map(|sub| {
                let (_, link) = self.links.remove(&sub)?;
                link.session.map(|c| (sub, c))
            })
            .collect()
    }
}

/// One entry of `topo/add` or `combine/login`: a sub-device proving it holds its secret.
struct SubDeviceProof {
    product_key: String,
    device_name: String,
    client_id: String,
    timestamp: Option<String>,
    sign_method: SignMethod,
    sign: String,
}

fn field<'a>(v: &'a Value, name: &str, at: &str) -> Result<&'a str, String> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{at}.{name}: required string"))
}

impl SubDeviceProof {
    fn parse(v: &Value, at: &str) -> Result<Self, String> {
        let sign_method = match v
            .get("signmethod")
            .or_else(|| v.get("signMethod"))
            .and_then(Value::as_str)
        {
            // Alibaba's default when a device omits signmethod, as for MQTT logins.
            None => SignMethod::HmacMd5,
            Some(m) => SignMethod::parse(m)
                .ok_or_else(|| format!("{at}.signmethod: '{m}' is not supported"))?,
        };
        let timestamp = match v.get("timestamp") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        Ok(SubDeviceProof {
            product_key: field(v, "productKey", at)?.to_string(),
            device_name: field(v, "deviceName", at)?.to_string(),
            client_id: field(v, "clientId", at)?.to_string(),
            timestamp,
            sign_method,
            sign: field(v, "sign", at)?.to_string(),
        })
    }
}

type Refusal = (i64, String);

impl DevicePlane {
    /// The device a gateway's message on `pk/dn`'s topic is about, if the gateway speaks for it.
    pub(crate) fn sub_device_of(&self, gateway: &DeviceId, pk: &str, dn: &str) -> Option<DeviceId> {
        self.registry
            .topology
            .speaks_for(gateway, pk, dn)
            .then(|| DeviceId::new(pk, dn))
    }

    /// `thing/topo/*` and `combine/*` from a gateway.
    pub(crate) async fn gateway_request(
        self: &Arc<Self>,
        gateway: &DeviceId,
        kind: UplinkTopic<'_>,
        publish: &InboundPublish,
        answer: &Answer,
    ) -> PublishVerdict {
        let method = match kind {
            UplinkTopic::TopoAdd => "thing.topo.add",
            UplinkTopic::TopoDelete => "thing.topo.delete",
            UplinkTopic::TopoGet => "thing.topo.get",
            UplinkTopic::SubDeviceLogin => "combine.login",
            _ => "combine.logout",
        };
        let request: Request = match serde_json::from_slice(&publish.payload) {
            Ok(r) => r,
            Err(e) => {
                let m = format!("payload is not an Alink JSON request: {e}");
                return self
                    .answer_gateway(publish, answer, Err((code::REQUEST_ERROR, m)), "", method)
                    .await;
            }
        };
        let is_gateway = self
            .registry
            .get(&gateway.product_key)
            .is_some_and(|p| p.node_type == NodeType::Gateway);
        let result = if !is_gateway {
            Err((
                topology_code::WRONG_NODE_TYPE,
                format!(
                    "product '{}' is not a gateway product: only gateways manage sub-devices",
                    gateway.product_key
                ),
            ))
        } else {
            match kind {
                UplinkTopic::TopoAdd => self.topo_add(gateway, &request.params).await,
                UplinkTopic::TopoDelete => self.topo_delete(gateway, &request.params).await,
                UplinkTopic::TopoGet => self.topo_get(gateway).await,
                UplinkTopic::SubDeviceLogin => match answer {
                    Answer::Topic { connection_id } => {
                        self.sub_device_login(gateway, *connection_id, &request.params)
                            .await
                    }
                    Answer::Caller(_) => Err((
                        code::REQUEST_ERROR,
                        "sub-devices log in over the gateway's MQTT connection".into(),
                    )),
                },
                _ => self.sub_device_logout(gateway, &request.params),
            }
        };
        self.answer_gateway(publish, answer, result, &request.id, method)
            .await
    }

    async fn answer_gateway(
        &self,
        publish: &InboundPublish,
        answer: &Answer,
        result: Result<Value, Refusal>,
        id: &str,
        method: &str,
    ) -> PublishVerdict {
        let (reply, verdict) = match result {
            Ok(data) => (
                Reply::success(id, data, Some(method)),
                PublishVerdict::Route { ack: None },
            ),
            Err((code, message)) => (
                Reply::error(id, code, &message, Some(method)),
                PublishVerdict::Refuse {
                    code: 0x99,
                    reason: message,
                },
            ),
        };
        self.reply_now(&publish.topic, &reply, answer).await;
        verdict
    }

    /// Checks a sub-device's own signature and that its product is a sub-device product.
    async fn check_sub_device(
        &self,
        proof: &SubDeviceProof,
        at: &str,
    ) -> Result<DeviceId, Refusal> {
        let node_type = self.registry.get(&proof.product_key).map(|p| p.node_type);
        if node_type != Some(NodeType::Subdevice) {
            return Err((
                topology_code::WRONG_NODE_TYPE,
                format!(
                    "{at}: product '{}' is not a sub-device product",
                    proof.product_key
                ),
            ));
        }
        let login = Proof::Sign {
            method: proof.sign_method,
            client_id: &proof.client_id,
            timestamp: proof.timestamp.as_deref(),
            sign: &proof.sign,
        };
        self.check_device_login(&proof.product_key, &proof.device_name, login)
            .await
            .map_err(|r| match r {
                LoginRefusal::BadCredentials(m) | LoginRefusal::NotAuthorized(m) => {
                    (topology_code::SUB_DEVICE_REFUSED, format!("{at}: {m}"))
                }
                LoginRefusal::Unavailable => (
                    code::SERVER_ERROR,
                    "storage unavailable; retry later".into(),
                ),
            })
    }

    async fn topo_add(&self, gateway: &DeviceId, params: &Value) -> Result<Value, Refusal> {
        let items = params.as_array().ok_or_else(|| {
            (
                code::PARAM_ERROR,
                "params must be an array of signed sub-devices".to_string(),
            )
        })?;
        // All or nothing: check every entry before attaching any.
        let mut subs = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let at = format!("params[{i}]");
            let proof = SubDeviceProof::parse(item, &at).map_err(|m| (code::PARAM_ERROR, m))?;
            subs.push(self.check_sub_device(&proof, &at).await?);
        }
        let now = crate::now_ms();
        let mut added = Vec::new();
        for sub in subs {
            let previous = self
                .store
                .attach_sub_device(
                    (&sub.product_key, &sub.device_name),
                    (&gateway.product_key, &gateway.device_name),
                    now,
                )
                .await
                .map_err(storage_refusal)?;
            if let Some((pk, dn)) = previous {
                tracing::info!(sub_device = %sub, from = %format!("{pk}/{dn}"), to = %gateway, "sub-device moved to another gateway");
            }
            if let Some(connection_id) = self.registry.topology.attach(&sub, gateway) {
                self.status
                    .disconnected(&sub, connection_id, "moved_to_another_gateway");
            }
            added.push(json!({"productKey": &*sub.product_key, "deviceName": &*sub.device_name}));
        }
        Ok(Value::Array(added))
    }

    async fn topo_delete(&self, gateway: &DeviceId, params: &Value) -> Result<Value, Refusal> {
        let items = params.as_array().ok_or_else(|| {
            (
                code::PARAM_ERROR,
                "params must be an array of {productKey, deviceName}".to_string(),
            )
        })?;
        let mut subs = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let at = format!("params[{i}]");
            let pk = field(item, "productKey", &at).map_err(|m| (code::PARAM_ERROR, m))?;
            let dn = field(item, "deviceName", &at).map_err(|m| (code::PARAM_ERROR, m))?;
            if !self.registry.topology.speaks_for(gateway, pk, dn) {
                return Err((
                    topology_code::NOT_IN_TOPOLOGY,
                    format!("{at}: {pk}/{dn} is not in this gateway's topology"),
                ));
            }
            subs.push(DeviceId::new(pk, dn));
        }
        let mut removed = Vec::new();
        for sub in subs {
            self.store
                .detach_sub_device(
                    (&sub.product_key, &sub.device_name),
                    (&gateway.product_key, &gateway.device_name),
                )
                .await
                .map_err(storage_refusal)?;
            if let Some(connection_id) = self.registry.topology.detach(&sub) {
                self.status
                    .disconnected(&sub, connection_id, "removed_from_topology");
            }
            removed.push(json!({"productKey": &*sub.product_key, "deviceName": &*sub.device_name}));
        }
        Ok(Value::Array(removed))
    }

    async fn topo_get(&self, gateway: &DeviceId) -> Result<Value, Refusal> {
        let links = self
            .store
            .sub_devices(&gateway.product_key, &gateway.device_name)
            .await
            .map_err(storage_refusal)?;
        Ok(Value::Array(
            links
                .into_iter()
                .map(|l| json!({"productKey": l.product_key, "deviceName": l.device_name}))
                .collect(),
        ))
    }

    async fn sub_device_login(
        &self,
        gateway: &DeviceId,
        connection_id: u64,
        params: &Value,
    ) -> Result<Value, Refusal> {
        let proof = SubDeviceProof::parse(params, "params").map_err(|m| (code::PARAM_ERROR, m))?;
        if !self
            .registry
            .topology
            .speaks_for(gateway, &proof.product_key, &proof.device_name)
        {
            return Err((
                topology_code::NOT_IN_TOPOLOGY,
                format!(
                    "{}/{} is not in this gateway's topology: add it with thing/topo/add first",
                    proof.product_key, proof.device_name
                ),
            ));
        }
        let sub = self.check_sub_device(&proof, "params").await?;
        self.registry.topology.login(&sub, connection_id);
        self.status.connected(&sub, connection_id);
        Ok(json!({"productKey": &*sub.product_key, "deviceName": &*sub.device_name}))
    }

    fn sub_device_logout(&self, gateway: &DeviceId, params: &Value) -> Result<Value, Refusal> {
        let pk = field(params, "productKey", "params").map_err(|m| (code::PARAM_ERROR, m))?;
        let dn = field(params, "deviceName", "params").map_err(|m| (code::PARAM_ERROR, m))?;
        let Some(sub) = self.sub_device_of(gateway, pk, dn) else {
            return Err((
                topology_code::NOT_IN_TOPOLOGY,
                format!("{pk}/{dn} is not in this gateway's topology"),
            ));
        };
        if let Some(connection_id) = self.registry.topology.logout(&sub) {
            self.status.disconnected(&sub, connection_id, "logout");
        }
        Ok(json!({"productKey": pk, "deviceName": dn}))
    }

    /// A gateway's connection ended: its sub-devices go offline with it.
    pub(crate) fn gateway_disconnected(&self, gateway: &DeviceId, connection_id: u64) {
        for sub in self.registry.topology.gateway_gone(gateway, connection_id) {
            self.status
                .disconnected(&sub, connection_id, "gateway_offline");
        }
    }

    /// Ends a sub-device's session (the device was disabled or its secret revoked).
    pub(crate) fn end_sub_device_session(&self, device: &DeviceId, reason: &str) {
        if let Some(connection_id) = self.registry.topology.logout(device) {
            self.status.disconnected(device, connection_id, reason);
        }
    }

    /// A deleted device leaves every topology it was part of.
    pub fn forget_device(&self, device: &DeviceId) {
        for (sub, connection_id) in self.registry.topology.forget(device) {
            self.status
                .disconnected(&sub, connection_id, "gateway_deleted");
        }
    }

    /// The sub-devices of a gateway, for the API.
    pub async fn sub_devices(
        &self,
        gateway: &DeviceId,
    ) -> Result<Vec<(TopologyLink, bool)>, lotus_storage::StorageError> {
        let links = self
            .store
            .sub_devices(&gateway.product_key, &gateway.device_name)
            .await?;
        Ok(links
            .into_iter()
            .map(|l| {
                let online = self
                    .registry
                    .topology
                    .link(&l.product_key, &l.device_name)
                    .is_some_and(|x| x.online);
                (l, online)
            })
            .collect())
    }
}

fn storage_refusal(e: lotus_storage::StorageError) -> Refusal {
    tracing::error!(error = %e, "topology storage failed");
    (
        code::SERVER_ERROR,
        "storage unavailable; retry later".into(),
    )
}
