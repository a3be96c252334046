//! Test fixtures: an in-memory platform (HostServices) and a loopback HTTP server. Tests only.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use lotus_plugin::{
    EventInput, HostError, HostServices, Manifest, MessageContext, PluginRuntime, RuntimeConfig,
};
use parking_lot::Mutex;

/// (plugin, topic, payload, qos)
pub type Published = (String, String, Vec<u8>, u8);
/// (plugin, event id, state, note)
pub type EventUpdate = (String, String, String, String);

/// Records what plugins asked the platform to do.
#[derive(Default)]
pub struct RecordingHost {
    pub kv: Mutex<HashMap<(String, String), Vec<u8>>>,
    pub published: Mutex<Vec<Published>>,
    pub raised: Mutex<Vec<(String, EventInput)>>,
    pub updated: Mutex<Vec<EventUpdate>>,
    pub secrets: Mutex<HashMap<String, String>>,
    pub suspended: Mutex<Vec<(String, String)>>,
}

impl HostServices for RecordingHost {
    fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, HostError> {
        Ok(self
            .kv
            .lock()
            .get(&(plugin.to_string(), key.to_string()))
            .cloned())
    }
    fn kv_set(&self, plugin: &str, key: &str, value: &[u8]) -> Result<(), HostError> {
        self.kv
            .lock()
            .insert((plugin.to_string(), key.to_string()), value.to_vec());
        Ok(())
    }
    fn kv_delete(&self, plugin: &str, key: &str) -> Result<(), HostError> {
        self.kv
            .lock()
            .remove(&(plugin.to_string(), key.to_string()));
        Ok(())
    }
    fn device_properties(
        &self,
        _plugin: &str,
        product_key: &str,
        device_name: &str,
    ) -> Result<String, HostError> {
        Ok(format!(r#"{{"device":"{product_key}/{device_name}"}}"#))
    }
    fn set_property(
        &self,
        _plugin: &str,
        _pk: &str,
        _dn: &str,
        _params: &str,
    ) -> Result<String, HostError> {
        Ok("msg-1".to_string())
    }
    fn invoke_service(
        &self,
        _plugin: &str,
        _pk: &str,
        _dn: &str,
        _id: &str,
        _params: &str,
    ) -> Result<String, HostError> {
        Ok("msg-2".to_string())
    }
    fn publish(&self, plugin: &str, topic: &str, payload: &[u8], qos: u8) -> Result<(), HostError> {
        self.published
            .lock()
            .push((plugin.to_string(), topic.to_string(), payload.to_vec(), qos));
        Ok(())
    }
    fn raise_event(&self, plugin: &str, event: EventInput) -> Result<String, HostError> {
        self.raised.lock().push((plugin.to_string(), event));
        Ok("event-1".to_string())
    }
    fn update_event(
        &self,
        plugin: &str,
        id: &str,
        state: &str,
        note: &str,
    ) -> Result<(), HostError> {
        self.updated.lock().push((
            plugin.to_string(),
            id.to_string(),
            state.to_string(),
            note.to_string(),
        ));
        Ok(())
    }
    fn secret(&self, _plugin: &str, name: &str) -> Result<String, HostError> {
        self.secrets
            .lock()
            .get(name)
            .cloned()
            .ok_or_else(|| HostError::NotFound(format!("secret {name}")))
    }
    fn plugin_suspended(&self, plugin: &str, reason: &str) {
        self.suspended
            .lock()
            .push((plugin.to_string(), reason.to_string()));
    }
}

/// A runtime on a recording host. Compiled components are cached under cargo's per-target temp
/// dir, because cranelift in the dev profile takes seconds per component.
pub fn runtime(mut config: RuntimeConfig) -> (PluginRuntime, Arc<RecordingHost>) {
    if config.cache_dir.is_none() {
        config.cache_dir =
            Some(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("lotus-plugin-cache"));
    }
    let host = Arc::new(RecordingHost::default());
    let runtime = PluginRuntime::new(config, host.clone()).expect("runtime starts");
    (runtime, host)
}

pub fn wasm(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// A codec manifest bound to product `pk1`; `extra` is appended (more keys or a [limits] table).
pub fn codec_manifest(id: &str, extra: &str) -> Manifest {
    Manifest::from_toml(&format!(
        "id = \"{id}\"\nversion = \"1.0.0\"\nworld = \"codec\"\nproducts = [\"pk1\"]\n{extra}"
    ))
    .expect("test manifest is valid")
}

/// Prepares and activates; panics with the prepare error so a broken fixture is obvious.
pub fn install(runtime: &PluginRuntime, manifest: Manifest, path: &str) {
    let prepared = runtime
        .prepare(manifest, &wasm(path))
        .unwrap_or_else(|e| panic!("prepare {path}: {e}"));
    runtime.activate(prepared);
}

pub fn context() -> MessageContext {
    MessageContext {
        product_key: "pk1".into(),
        device_name: "dev1".into(),
        topic: "/pk1/dev1/user/raw".into(),
        at_ms: 1,
    }
}

/// One request as the loopback server saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub request_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A loopback HTTP/1.1 server answering every request with `status` and `reply` after `delay`.
pub struct TestServer {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<SeenRequest>>>,
}

impl TestServer {
    pub fn start(status: u16, reply: &'static str, delay: Duration) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let record = record.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).is_err() {
                        return;
                    }
                    let mut headers = Vec::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.trim_end().split_once(':') {
                            headers
                                .push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
                        }
                    }
                    let length = headers
                        .iter()
                        .find(|(name, _)| name == "content-length")
                        .and_then(|(_, v)| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; length];
                    let _ = reader.read_exact(&mut body);
                    record.lock().push(SeenRequest {
                        request_line: request_line.trim_end().to_string(),
                        headers,
                        body,
                    });
                    std::thread::sleep(delay);
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                        reply.len()
                    );
                });
            }
        });
        TestServer { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }
}
