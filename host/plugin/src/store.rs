//! What each wasm store carries, and the host side of the `lotus:plugin` interfaces: every call
//! passes the capability check before it reaches [`HostServices`].

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::guest_output::{GuestOutput, Stream};
use crate::host::{
    CapabilityCheck, CapabilityRequest, DeviceCall, EventInput, HostError, HostServices,
};
use crate::logs::{LogLevel, LogSource, PluginLog};
use crate::manifest::Manifest;
use crate::wit::v0_1_0::app::lotus::plugin as v1;

/// Longest guest log message kept; the rest is cut.
const MAX_LOG_MESSAGE_BYTES: usize = 4096;
/// Longest kv key; keys are names, not data.
const MAX_KV_KEY_BYTES: usize = 512;

/// Everything a host call needs, shared by all instances of one plugin version.
pub(crate) struct CallEnv {
    pub manifest: Arc<Manifest>,
    pub host: Arc<dyn HostServices>,
    pub check: Arc<dyn CapabilityCheck>,
    pub log: Arc<PluginLog>,
    pub http: ureq::Agent,
}

impl CallEnv {
    fn id(&self) -> &str {
        &self.manifest.id
    }

    fn authorize(&self, request: CapabilityRequest<'_>) -> Result<(), HostError> {
        self.check.check(&self.manifest, &request).map_err(|reason| {
            metrics::counter!("lotus_plugin_denied_total", "plugin" => self.manifest.id.clone(), "capability" => request.capability().name())
                .increment(1);
            self.log.push(LogSource::Host, LogLevel::Warn, &self.manifest.version, format!("denied {request}: {reason}"));
            HostError::Denied(reason)
        })
    }
}

/// Memory and table bounds for one store; remembers whether it refused a growth so a trap that
/// follows can be reported as the memory limit, and the largest memory granted.
pub(crate) struct GuestLimiter {
    pub memory_limit: usize,
    pub memory_peak: usize,
    pub memory_refused: bool,
}

/// Components built from Rust need a handful of core instances, memories and tables; these caps
/// only stop a component from exhausting the host with many small ones.
const MAX_INSTANCES: usize = 64;
const MAX_MEMORIES: usize = 8;
const MAX_TABLES: usize = 64;
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl wasmtime::ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_refused = true;
            return Ok(false);
        }
        self.memory_peak = self.memory_peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

/// The data of one store (one live instance of a plugin).
pub(crate) struct StoreData {
    pub env: Arc<CallEnv>,
    pub limiter: GuestLimiter,
    /// What the guest writes to stdout and stderr, taken after every call.
    pub output: Arc<GuestOutput>,
    wasi: WasiCtx,
    table: ResourceTable,
    /// When the current call must be over; host calls that wait (http) stop by then.
    pub deadline: Instant,
}

impl StoreData {
    pub fn new(env: Arc<CallEnv>) -> StoreData {
        let memory_limit = usize::try_from(env.manifest.limits.memory_bytes).unwrap_or(usize::MAX);
        // No files, no environment, no arguments, no network, no stdin: Rust guests import WASI
        // interfaces, but a plugin reaches the world only through its capabilities. stdout and
        // stderr go to the plugin log, where an ISV looks for its codec's panic message.
        let output = GuestOutput::new();
        let wasi = WasiCtx::builder()
            .stdout(output.stream(Stream::Stdout))
            .stderr(output.stream(Stream::Stderr))
            .build();
        StoreData {
            env,
            limiter: GuestLimiter {
                memory_limit,
                memory_peak: 0,
                memory_refused: false,
            },
            output,
            wasi,
            table: ResourceTable::new(),
            deadline: Instant::now(),
        }
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    fn check_size(&self, what: &str, len: usize) -> Result<(), HostError> {
        let limit = self.env.manifest.limits.max_output_bytes;
        if len > limit {
            return Err(HostError::Limit(format!(
                "{what} is {len} bytes, above the plugin's limit of {limit}"
            )));
        }
        Ok(())
    }
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

fn to_wit(error: HostError) -> v1::types::HostError {
    match error {
        HostError::Denied(m) => v1::types::HostError::Denied(m),
        HostError::NotFound(m) => v1::types::HostError::NotFound(m),
        HostError::Invalid(m) => v1::types::HostError::Invalid(m),
        HostError::Unavailable(m) => v1::types::HostError::Unavailable(m),
        HostError::Limit(m) => v1::types::HostError::Limit(m),
    }
}

fn cut(mut message: String, max: usize) -> String {
    if message.len() > max {
        let mut end = max;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

impl v1::types::Host for StoreData {}

impl v1::log::Host for StoreData {
    fn log(&mut self, level: v1::log::Level, message: String) {
        if self.env.authorize(CapabilityRequest::Log).is_err() {
            return;
        }
        let level = match level {
            v1::log::Level::Trace => LogLevel::Trace,
            v1::log::Level::Debug => LogLevel::Debug,
            v1::log::Level::Info => LogLevel::Info,
            v1::log::Level::Warn => LogLevel::Warn,
            v1::log::Level::Error => LogLevel::Error,
        };
        self.env.log.push(
            LogSource::Guest,
            level,
            &self.env.manifest.version,
            cut(message, MAX_LOG_MESSAGE_BYTES),
        );
    }
}

impl v1::clock::Host for StoreData {
    fn now_ms(&mut self) -> i64 {
        // The clock capability is harmless; a denial still answers, with 0, so a codec that
        // only stamps times keeps working while the operator sees the denial counted.
        if self.env.authorize(CapabilityRequest::Clock).is_err() {
            return 0;
        }
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

impl v1::kv::Host for StoreData {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, v1::types::HostError> {
        self.kv_key(&key).map_err(to_wit)?;
        self.env.host.kv_get(self.env.id(), &key).map_err(to_wit)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), v1::types::HostError> {
        self.kv_key(&key).map_err(to_wit)?;
        self.check_size("kv value", value.len()).map_err(to_wit)?;
        self.env
            .host
            .kv_set(self.env.id(), &key, &value)
            .map_err(to_wit)
    }

    fn delete(&mut self, key: String) -> Result<(), v1::types::HostError> {
        self.kv_key(&key).map_err(to_wit)?;
        self.env.host.kv_delete(self.env.id(), &key).map_err(to_wit)
    }
}

impl StoreData {
    fn kv_key(&self, key: &str) -> Result<(), HostError> {
        self.env.authorize(CapabilityRequest::Kv { key })?;
        if key.is_empty() || key.len() > MAX_KV_KEY_BYTES {
            return Err(HostError::Invalid(format!(
                "kv key must be 1 to {MAX_KV_KEY_BYTES} bytes, got {}",
                key.len()
            )));
        }
        Ok(())
    }

    fn device(
        &self,
        device: &v1::types::DeviceRef,
        operation: DeviceCall<'_>,
    ) -> Result<(), HostError> {
        self.env.authorize(CapabilityRequest::Device {
            product_key: &device.product_key,
            device_name: &device.device_name,
            operation,
        })
    }
}

impl v1::device::Host for StoreData {
    fn get_properties(
        &mut self,
        device: v1::types::DeviceRef,
    ) -> Result<String, v1::types::HostError> {
        self.device(&device, DeviceCall::GetProperties)
            .map_err(to_wit)?;
        self.env
            .host
            .device_properties(self.env.id(), &device.product_key, &device.device_name)
            .map_err(to_wit)
    }

    fn set_property(
        &mut self,
        device: v1::types::DeviceRef,
        params: String,
    ) -> Result<String, v1::types::HostError> {
        self.device(&device, DeviceCall::SetProperty)
            .map_err(to_wit)?;
        self.check_size("property params", params.len())
            .map_err(to_wit)?;
        self.env
            .host
            .set_property(
                self.env.id(),
                &device.product_key,
                &device.device_name,
                &params,
            )
            .map_err(to_wit)
    }

    fn invoke_service(
        &mut self,
        device: v1::types::DeviceRef,
        identifier: String,
        params: String,
    ) -> Result<String, v1::types::HostError> {
        self.device(
            &device,
            DeviceCall::InvokeService {
                identifier: &identifier,
            },
        )
        .map_err(to_wit)?;
        self.check_size("service params", params.len())
            .map_err(to_wit)?;
        self.env
            .host
            .invoke_service(
                self.env.id(),
                &device.product_key,
                &device.device_name,
                &identifier,
                &params,
            )
            .map_err(to_wit)
    }
}

impl v1::publish::Host for StoreData {
    fn publish(
        &mut self,
        topic: String,
        payload: Vec<u8>,
        qos: u8,
    ) -> Result<(), v1::types::HostError> {
        self.env
            .authorize(CapabilityRequest::Publish { topic: &topic })
            .map_err(to_wit)?;
        if qos > 2 {
            return Err(to_wit(HostError::Invalid(format!(
                "qos must be 0, 1 or 2, got {qos}"
            ))));
        }
        self.check_size("publish payload", payload.len())
            .map_err(to_wit)?;
        self.env
            .host
            .publish(self.env.id(), &topic, &payload, qos)
            .map_err(to_wit)
    }
}

impl v1::event::Host for StoreData {
    fn raise(&mut self, event: v1::types::EventInput) -> Result<String, v1::types::HostError> {
        let device = event
            .device
            .as_ref()
            .map(|d| (d.product_key.as_str(), d.device_name.as_str()));
        self.env
            .authorize(CapabilityRequest::RaiseEvent {
                event_type: &event.event_type,
                device,
            })
            .map_err(to_wit)?;
        self.check_size("event fields", event.fields.len())
            .map_err(to_wit)?;
        let input = EventInput {
            event_type: event.event_type,
            severity: event.severity,
            device: event.device.map(|d| (d.product_key, d.device_name)),
            title: event.title,
            fields: event.fields,
        };
        self.env
            .host
            .raise_event(self.env.id(), input)
            .map_err(to_wit)
    }

    fn update(
        &mut self,
        id: String,
        state: String,
        note: String,
    ) -> Result<(), v1::types::HostError> {
        self.env
            .authorize(CapabilityRequest::UpdateEvent {
                id: &id,
                state: &state,
            })
            .map_err(to_wit)?;
        self.check_size("event note", note.len()).map_err(to_wit)?;
        self.env
            .host
            .update_event(self.env.id(), &id, &state, &note)
            .map_err(to_wit)
    }
}

impl v1::secrets::Host for StoreData {
    fn get(&mut self, name: String) -> Result<String, v1::types::HostError> {
        self.env
            .authorize(CapabilityRequest::Secret { name: &name })
            .map_err(to_wit)?;
        self.env.host.secret(self.env.id(), &name).map_err(to_wit)
    }
}

impl v1::http::Host for StoreData {
    fn send(
        &mut self,
        request: v1::http::Request,
    ) -> Result<v1::http::Response, v1::types::HostError> {
        self.http_send(request).map_err(to_wit)
    }
}

impl StoreData {
    fn http_send(&mut self, request: v1::http::Request) -> Result<v1::http::Response, HostError> {
        let uri: ureq::http::Uri = request.url.parse().map_err(|e| {
            HostError::Invalid(format!("url {:?} is not a valid URL: {e}", request.url))
        })?;
        let default_port = match uri.scheme_str() {
            Some("http") => 80,
            Some("https") => 443,
            other => {
                return Err(HostError::Invalid(format!(
                    "url scheme must be http or https, got {other:?}"
                )));
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| HostError::Invalid(format!("url {:?} has no host", request.url)))?;
        let port = uri.port_u16().unwrap_or(default_port);
        self.env.authorize(CapabilityRequest::Http {
            method: &request.method,
            url: &request.url,
            host,
            port,
        })?;
        refuse_internal_resolution(host, port)?;
        if let Some(body) = &request.body {
            self.check_size("http request body", body.len())?;
        }

        let remaining = self.remaining();
        let timeout = match request.timeout_ms {
            Some(ms) => remaining.min(Duration::from_millis(u64::from(ms))),
            None => remaining,
        };
        if timeout.is_zero() {
            return Err(HostError::Limit(
                "the call's time budget is spent".to_string(),
            ));
        }

        let method: ureq::http::Method = request.method.parse().map_err(|_| {
            HostError::Invalid(format!("http method {:?} is not valid", request.method))
        })?;
        let mut builder = ureq::http::Request::builder().method(method).uri(uri);
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let http_request = builder
            .body(request.body.unwrap_or_default())
            .map_err(|e| HostError::Invalid(format!("http request refused: {e}")))?;
        let agent = &self.env.http;
        let http_request = agent
            .configure_request(http_request)
            .timeout_global(Some(timeout))
            .build();
        let started = Instant::now();
        let mut response = agent.run(http_request).map_err(|e| match e {
            ureq::Error::Timeout(_) => HostError::Limit(format!(
                "http call timed out after {} ms",
                started.elapsed().as_millis()
            )),
            other => HostError::Unavailable(format!("http call failed: {other}")),
        })?;
        let limit = self.env.manifest.limits.max_output_bytes as u64;
        let body = response
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => HostError::Limit(format!(
                    "http response body above the plugin's limit of {limit} bytes"
                )),
                ureq::Error::Timeout(_) => {
                    HostError::Limit("http response body timed out".to_string())
                }
                other => HostError::Unavailable(format!("http response body: {other}")),
            })?;
        let headers = response
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
            })
            .collect();
        Ok(v1::http::Response {
            status: response.status().as_u16(),
            headers,
            body,
        })
    }
}

/// An allow-listed *name* must not lead into the platform's own network: a name that resolves
/// to a loopback, private, link-local or otherwise internal address is refused (a vendor's DNS
/// record, or a rebinding attack, would otherwise turn a granted host into a path to the
/// database or the cloud metadata service). An operator who means an internal service
/// allow-lists its address literally, which is not resolved and so not refused.
fn refuse_internal_resolution(host: &str, port: u16) -> Result<(), HostError> {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if literal.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let addrs = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(|e| HostError::Unavailable(format!("cannot resolve {host}: {e}")))?;
    for addr in addrs {
        if is_internal(addr.ip()) {
            return Err(HostError::Denied(format!(
                "{host} resolves to the internal address {}; allow-list that address itself \
                 if the plugin is meant to reach it",
                addr.ip()
            )));
        }
    }
    Ok(())
}

fn is_internal(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                // 100.64.0.0/10, carrier-grade NAT: internal to the operator's network.
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        std::net::IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(std::net::IpAddr::V4(v4));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // fc00::/7 unique local, fe80::/10 link-local.
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod internal_address_tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "100.128.0.1"] {
            assert!(!is_internal(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn a_name_resolving_inside_is_refused_a_literal_is_not() {
        assert!(matches!(
            refuse_internal_resolution("localhost", 80),
            Err(HostError::Denied(_))
        ));
        assert!(refuse_internal_resolution("127.0.0.1", 80).is_ok());
        assert!(refuse_internal_resolution("[::1]", 80).is_ok());
    }
}
