//! The in-memory platform the harness runs a plugin on: what it was given (kv, device
//! properties, secrets) and what the plugin asked it to do (publishes, property sets, service
//! calls, events), kept for the test to inspect.

use std::collections::{BTreeMap, HashMap};

use lotus_plugin::{EventInput, HostError, HostServices};
use parking_lot::Mutex;
use serde_json::{Map, Value};

/// One `publish` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
}

/// One `device.set-property` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertySetCall {
    pub product_key: String,
    pub device_name: String,
    /// The JSON object the plugin sent.
    pub params: String,
}

/// One `device.invoke-service` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCall {
    pub product_key: String,
    pub device_name: String,
    pub identifier: String,
    /// The JSON object the plugin sent.
    pub params: String,
}

/// One `event.update` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventUpdate {
    pub id: String,
    pub state: String,
    pub note: String,
}

#[derive(Default)]
pub(crate) struct State {
    pub kv: BTreeMap<(String, String), Vec<u8>>,
    /// (product key, device name) → the host's answer shape: `{"Id": {"value", "time"}}`.
    pub devices: HashMap<(String, String), Map<String, Value>>,
    pub secrets: HashMap<String, String>,
    pub published: Vec<Published>,
    pub property_sets: Vec<PropertySetCall>,
    pub service_calls: Vec<ServiceCall>,
    pub raised: Vec<EventInput>,
    pub updated: Vec<EventUpdate>,
    pub suspended: Vec<String>,
    pub next_id: u64,
}

impl State {
    fn next_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{}", self.next_id)
    }

    /// Forgets what the plugin did; keeps what it was given.
    pub fn clear_recorded(&mut self) {
        self.published.clear();
        self.property_sets.clear();
        self.service_calls.clear();
        self.raised.clear();
        self.updated.clear();
        self.suspended.clear();
    }
}

/// [`HostServices`] in memory. The runtime has checked each capability against the manifest
/// before any of these runs, exactly as on a node.
#[derive(Default)]
pub(crate) struct MemoryHost {
    pub state: Mutex<State>,
}

impl HostServices for MemoryHost {
    fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, HostError> {
        Ok(self
            .state
            .lock()
            .kv
            .get(&(plugin.to_owned(), key.to_owned()))
            .cloned())
    }

    fn kv_set(&self, plugin: &str, key: &str, value: &[u8]) -> Result<(), HostError> {
        self.state
            .lock()
            .kv
            .insert((plugin.to_owned(), key.to_owned()), value.to_vec());
        Ok(())
    }

    fn kv_delete(&self, plugin: &str, key: &str) -> Result<(), HostError> {
        self.state
            .lock()
            .kv
            .remove(&(plugin.to_owned(), key.to_owned()));
        Ok(())
    }

    fn device_properties(
        &self,
        _plugin: &str,
        product_key: &str,
        device_name: &str,
    ) -> Result<String, HostError> {
        match self
            .state
            .lock()
            .devices
            .get(&(product_key.to_owned(), device_name.to_owned()))
        {
            Some(properties) => Ok(Value::Object(properties.clone()).to_string()),
            None => Err(HostError::NotFound(format!(
                "device {product_key}/{device_name} (the test harness has no properties for it; \
                 give them with set_device_properties or a `devices` table)"
            ))),
        }
    }

    fn set_property(
        &self,
        _plugin: &str,
        product_key: &str,
        device_name: &str,
        params: &str,
    ) -> Result<String, HostError> {
        check_object("params", params)?;
        let mut state = self.state.lock();
        state.property_sets.push(PropertySetCall {
            product_key: product_key.to_owned(),
            device_name: device_name.to_owned(),
            params: params.to_owned(),
        });
        Ok(state.next_id("msg"))
    }

    fn invoke_service(
        &self,
        _plugin: &str,
        product_key: &str,
        device_name: &str,
        identifier: &str,
        params: &str,
    ) -> Result<String, HostError> {
        check_object("params", params)?;
        let mut state = self.state.lock();
        state.service_calls.push(ServiceCall {
            product_key: product_key.to_owned(),
            device_name: device_name.to_owned(),
            identifier: identifier.to_owned(),
            params: params.to_owned(),
        });
        // As a node answers when the device has not replied (yet): the downlink's message id.
        let id = state.next_id("msg");
        Ok(serde_json::json!({ "messageId": id }).to_string())
    }

    fn publish(
        &self,
        _plugin: &str,
        topic: &str,
        payload: &[u8],
        qos: u8,
    ) -> Result<(), HostError> {
        if qos > 1 {
            return Err(HostError::Invalid(format!(
                "qos {qos} is not supported for plugin publishes: use 0 or 1"
            )));
        }
        self.state.lock().published.push(Published {
            topic: topic.to_owned(),
            payload: payload.to_vec(),
            qos,
        });
        Ok(())
    }

    fn raise_event(&self, _plugin: &str, event: EventInput) -> Result<String, HostError> {
        check_object("fields", &event.fields)?;
        let mut state = self.state.lock();
        state.raised.push(event);
        Ok(state.next_id("event"))
    }

    fn update_event(
        &self,
        _plugin: &str,
        id: &str,
        state: &str,
        note: &str,
    ) -> Result<(), HostError> {
        self.state.lock().updated.push(EventUpdate {
            id: id.to_owned(),
            state: state.to_owned(),
            note: note.to_owned(),
        });
        Ok(())
    }

    fn secret(&self, plugin: &str, name: &str) -> Result<String, HostError> {
        self.state.lock().secrets.get(name).cloned().ok_or_else(|| {
            HostError::NotFound(format!(
                "no secret '{name}' is configured for plugin '{plugin}' (in the test harness: \
                 set_secret or a `secrets` table)"
            ))
        })
    }

    fn plugin_suspended(&self, plugin: &str, reason: &str) {
        self.state
            .lock()
            .suspended
            .push(format!("{plugin}: {reason}"));
    }
}

fn check_object(what: &str, text: &str) -> Result<(), HostError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(_)) => Ok(()),
        _ => Err(HostError::Invalid(format!("{what} must be a JSON object"))),
    }
}
