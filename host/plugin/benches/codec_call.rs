//! Cost of one codec `decode` of a small payload through the full host call: handle lookup,
//! instance reuse from the idle pool, fuel/deadline setup, argument and result serialisation,
//! and the Alink shape check of the result.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use lotus_plugin::{
    EventInput, HostError, HostServices, Manifest, MessageContext, PluginRuntime, RuntimeConfig,
};

/// The codec under test imports no capability that reaches the platform.
struct NoPlatform;

impl HostServices for NoPlatform {
    fn kv_get(&self, _: &str, _: &str) -> Result<Option<Vec<u8>>, HostError> {
        Err(HostError::Unavailable("bench".into()))
    }
    fn kv_set(&self, _: &str, _: &str, _: &[u8]) -> Result<(), HostError> {
        Err(HostError::Unavailable("bench".into()))
    }
    fn kv_delete(&self, _: &str, _: &str) -> Result<(), HostError> {
        Err(HostError::Unavailable("bench".into()))
    }
    fn device_properties(&self, _: &str, _: &str, _: &str) -> Result<String, HostError> {
        Err(HostError::Unavailable("bench".into()))
    }
    fn set_property(&self, _: &str, _: &str, _: &str, _: &str) -> Result<String, HostError> {
        Err(HostError::Unavailable("bench".into()))
    }
    fn invoke_service(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: &str,
        _: &str,
    ) -> Result<String, HostError> {
        Err(HostError::Unavailable("bench".into()))
    }
    fn publish(&self, _: &str, _: &str, _: &[u8], _: u8) -> Result<(), HostError> {
        Err(HostError::Unavailable("bench".into()))
    }
    fn raise_event(&self, _: &str, _: EventInput) -> Result<String, HostError> {
        Err(HostError::Unavailable("bench".into()))
    }
    fn update_event(&self, _: &str, _: &str, _: &str, _: &str) -> Result<(), HostError> {
        Err(HostError::Unavailable("bench".into()))
    }
    fn secret(&self, _: &str, _: &str) -> Result<String, HostError> {
        Err(HostError::Unavailable("bench".into()))
    }
    fn plugin_suspended(&self, plugin: &str, reason: &str) {
        panic!("{plugin} suspended during the bench: {reason}");
    }
}

fn codec_decode(c: &mut Criterion) {
    let runtime =
        PluginRuntime::new(RuntimeConfig::default(), Arc::new(NoPlatform)).expect("runtime");
    let manifest = Manifest::from_toml("id = \"bench\"\nversion = \"1\"\nworld = \"codec\"\nproducts = [\"pk1\"]\ncapabilities = [\"log\"]\n[limits]\ncall_timeout_ms = 5000")
        .expect("manifest");
    // The deadline is generous: this measures the call, and a busy shared machine can
    // deschedule the thread for longer than a codec's default 50 ms.
    let wasm = std::fs::read(lotus_plugin_artifacts::GOOD_CODEC).expect("good codec built");
    runtime.activate(runtime.prepare(manifest, &wasm).expect("prepare"));
    let codec = runtime.codec("bench").expect("active");
    let context = MessageContext {
        product_key: "pk1".into(),
        device_name: "dev1".into(),
        topic: "/pk1/dev1/user/raw".into(),
        at_ms: 1,
    };
    let frame = [0x01, 0x00, 0xD7, 40];
    codec
        .decode(&context.topic, &frame, &context)
        .expect("decode works");

    c.bench_function("codec_decode_small_payload", |b| {
        b.iter(|| {
            codec
                .decode(&context.topic, std::hint::black_box(&frame), &context)
                .expect("decode")
        })
    });

    // The first-party water-meter codec on the data frame of its README (31 bytes, CRC,
    // 7 properties out): the codec the pipeline benchmark compares with Alink JSON.
    let manifest = Manifest::from_toml("id = \"water-meter\"\nversion = \"1\"\nworld = \"codec\"\nproducts = [\"pk1\"]\ncapabilities = [\"log\", \"kv\"]\n[limits]\ncall_timeout_ms = 5000")
        .expect("manifest");
    let wasm = std::fs::read(lotus_plugin_artifacts::WATER_METER_CODEC).expect("codec built");
    runtime.activate(runtime.prepare(manifest, &wasm).expect("prepare"));
    let meter = runtime.codec("water-meter").expect("active");
    let context = MessageContext {
        product_key: "pk1".into(),
        device_name: "20231115000042".into(),
        topic: "/sys/pk1/20231115000042/thing/model/up_raw".into(),
        at_ms: 1,
    };
    let frame: Vec<u8> = "68 01 01 01 02 20 23 11 15 00 00 42 0f 00 bc 61 4e 04 e2 0e 10 01 00 7d 00 00 00 3c f0 fa 16"
        .split(' ')
        .map(|b| u8::from_str_radix(b, 16).expect("hex"))
        .collect();
    meter
        .decode(&context.topic, &frame, &context)
        .expect("decode works");
    c.bench_function("codec_decode_water_meter_frame", |b| {
        b.iter(|| {
            meter
                .decode(&context.topic, std::hint::black_box(&frame), &context)
                .expect("decode")
        })
    });
}

/// The JavaScript and Python codecs of `examples/plugins/codec-js` and `codec-python` (built by
/// `sdk/plugin-js/build-all.sh`), the same air-quality frame through the same host call.
fn script_codec_decode(c: &mut Criterion) {
    let runtime =
        PluginRuntime::new(RuntimeConfig::default(), Arc::new(NoPlatform)).expect("runtime");
    let dir = lotus_plugin_artifacts::script_components();
    let context = MessageContext {
        product_key: "a1AirQuality".into(),
        device_name: "aq-0001".into(),
        topic: "/sys/a1AirQuality/aq-0001/thing/model/up_raw".into(),
        at_ms: 1,
    };
    let frame = [0x00, 0x23, 0x00, 0x50, 0x00, 0xd9, 0x37];
    for (name, file) in [
        ("javascript", "codec_js.wasm"),
        ("python", "codec_python.wasm"),
    ] {
        let manifest = Manifest::from_toml(&format!(
            "id = \"bench-{name}\"\nversion = \"1\"\nworld = \"codec\"\nproducts = [\"a1AirQuality\"]\n\
             capabilities = [\"log\", \"kv\", \"clock\"]\n[limits]\nmemory_mib = 64\ncall_timeout_ms = 5000"
        ))
        .expect("manifest");
        let wasm = std::fs::read(dir.join(file)).expect("script component built");
        runtime.activate(runtime.prepare(manifest, &wasm).expect("prepare"));
        let codec = runtime.codec(&format!("bench-{name}")).expect("active");
        codec
            .decode(&context.topic, &frame, &context)
            .expect("decode works");
        c.bench_function(&format!("codec_decode_small_payload_{name}"), |b| {
            b.iter(|| {
                codec
                    .decode(&context.topic, std::hint::black_box(&frame), &context)
                    .expect("decode")
            })
        });
    }
}

criterion_group!(benches, codec_decode, script_codec_decode);
criterion_main!(benches);
