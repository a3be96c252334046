//! The telemetry writer's group commit: one transaction of property rows into history and
//! latest values (SQLite, on a real file with the product's durability settings).
//! `cargo bench -p lotus-storage --bench batch_write`.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lotus_storage::{PropertyRecord, SecretBox, Store, TelemetryBatch};
use serde_json::json;

/// A batch as the writer builds it under load: `devices` devices posting `properties` each.
fn batch(devices: usize, properties: usize, ts: i64) -> TelemetryBatch {
    let mut rows = Vec::with_capacity(devices * properties);
    for d in 0..devices {
        for p in 0..properties {
            let value = (ts % 1000) as f64 / 10.0 + p as f64;
            rows.push(PropertyRecord {
                product_key: "a1BenchLamp".into(),
                device_name: format!("lamp-{d:05}"),
                identifier: format!("Prop{p}"),
                value: json!(value),
                num: Some(value),
                ts,
            });
        }
    }
    TelemetryBatch {
        properties: rows,
        events: Vec::new(),
    }
}

fn batch_write(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = runtime
        .block_on(Store::open(&url, SecretBox::random()))
        .unwrap();

    let mut group = c.benchmark_group("telemetry batch write (sqlite)");
    for (devices, properties) in [(1000usize, 1usize), (200, 5), (4000, 1)] {
        let rows = devices * properties;
        group.throughput(Throughput::Elements(rows as u64));
        let mut ts = 1_700_000_000_000i64;
        group.bench_function(
            format!("{devices} devices x {properties} properties"),
            |b| {
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        ts += 1000;
                        let batch = batch(devices, properties, ts);
                        let started = Instant::now();
                        runtime.block_on(store.write_batch(&batch)).unwrap();
                        spent += started.elapsed();
                    }
                    spent
                })
            },
        );
    }
    group.finish();
    runtime.block_on(store.close());
}

criterion_group!(benches, batch_write);
criterion_main!(benches);
