//! The aggregator in Rust, JavaScript and Python, in the same run: events per
//! second through the host, instantiation time and linear memory per
//! instance; the same logic compiled natively is the baseline.
//!
//! `cargo bench -p sluice-tests --bench languages` (`SLUICE_BENCH_EVENTS`,
//! default 20,000). Prints a Markdown table for docs/BENCHMARKS.md.
//!
//! - native: `modules/aggregator` compiled for the host, called in a loop with
//!   the SDK's in-memory host (decode + handle, no commit);
//! - through the host: an in-process host (embedded log, RocksDB) with the
//!   events already in the log; the module is deployed (its compiled
//!   component comes from the cache) and timed from its start until its
//!   cursor reaches the end: read, dedup, call (one instance, reused), commit
//!   state + idempotency marks + outputs. Best of 3.
//! - instantiation: `Runtime::instantiate` of the compiled component, best of 5;
//!   memory: the linear memory the instance holds right after (what counts
//!   against `limits.memory` and the host's memory budget).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use sluice::config::HostConfig;
use sluice::config::manifest::Limits;
use sluice::runtime::{ModuleCtx, Runtime};
use sluice::state::txn::TxnLimits;
use sluice::state::{Store, Txn};
use sluice_wire::{EventRef, OwnedEvent};

const LANGS: [(&str, &str); 3] = [
    ("Rust", "aggregator"),
    ("JavaScript", "aggregator-js"),
    ("Python", "aggregator-py"),
];

fn events(n: usize) -> Vec<OwnedEvent> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    (0..n)
        .map(|i| {
            let customer = format!("c{}", rng.random_range(0..1000));
            let amount: i64 = rng.random_range(-50..20_000);
            OwnedEvent {
                id: format!("bench-{i}"),
                source: "/bench".into(),
                ty: "order.created".into(),
                datacontenttype: Some("application/json".into()),
                key: Some(customer.clone().into_bytes()),
                data: format!(
                    r#"{{"order_id":"o-{i}","customer":"{customer}","amount":{amount}}}"#
                )
                .into_bytes(),
                topic: "orders".into(),
                offset: i as u64,
                ..Default::default()
            }
        })
        .collect()
}

fn native(evs: &[OwnedEvent]) -> Duration {
    let frames: Vec<Vec<u8>> = evs.iter().map(|e| e.as_ref().encode()).collect();
    (0..3)
        .map(|_| {
            let _host = sluice_guest::testing::TestHost::install();
            let t = Instant::now();
            for f in &frames {
                let ev = EventRef::decode(f).unwrap();
                aggregator::handle(&sluice_guest::Event(ev)).unwrap();
            }
            t.elapsed()
        })
        .min()
        .unwrap()
}

/// Through an in-process host: from the module's start until it caught up.
fn through_host(module: &str, evs: &[OwnedEvent], cache: &std::path::Path) -> Duration {
    (0..3)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap();
            let mut config = HostConfig {
                data_dir: dir.path().join("data"),
                ..Default::default()
            };
            config.deploy.compile_cache_dir = Some(cache.to_path_buf());
            let svc = sluice::Service::start(config).unwrap();
            let topics = svc.topics();
            topics.ensure(&[("orders".into(), Some(1))]).unwrap();
            for chunk in evs.chunks(10_000) {
                topics.produce("orders", chunk.to_vec()).unwrap();
            }
            let end = topics.bounds("orders", 0).unwrap().1;
            let t = Instant::now();
            svc.lifecycle()
                .deploy_dir(&sluice_tests::staged_modules().join(module))
                .unwrap();
            while svc.store().cursor(module, "orders", 0).unwrap() != Some(end) {
                std::thread::sleep(Duration::from_millis(1));
                assert!(t.elapsed() < Duration::from_secs(900), "{module} stuck");
            }
            let d = t.elapsed();
            svc.shutdown();
            d
        })
        .min()
        .unwrap()
}

/// `(instantiation time, linear memory of one instance)`.
fn instantiate(module: &str) -> (Duration, usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), false).unwrap());
    let rt = Runtime::new(4 << 30).unwrap();
    let loaded = rt.load(&sluice_tests::component(module)).unwrap();
    let ctx = Arc::new(ModuleCtx {
        name: module.into(),
        version: "bench".into(),
        config: Default::default(),
        limits: Limits {
            memory: 512 << 20,
            ..Default::default()
        },
    });
    let limits = TxnLimits {
        max_emits: 100,
        max_emit_bytes: 1 << 20,
        max_state_value: 1 << 20,
        max_state_writes: 1000,
    };
    let mut best = Duration::MAX;
    let mut memory = 0;
    for _ in 0..5 {
        let txn = Txn::new(
            store.clone(),
            module.into(),
            vec!["totals".to_string()].into(),
            limits,
        );
        let before = rt.memory_budget().used();
        let t = Instant::now();
        let inst = rt.instantiate(&loaded, ctx.clone(), txn).unwrap();
        best = best.min(t.elapsed());
        memory = rt.memory_budget().used() - before;
        drop(inst);
    }
    (best, memory)
}

fn main() {
    let Some(n) = sluice_tests::bench_size("SLUICE_BENCH_EVENTS", 20_000) else {
        return; // `cargo test --benches` probes with --list
    };
    let evs = events(n);
    let cache = tempfile::tempdir().unwrap();
    let base = native(&evs);
    println!(
        "{n} orders (~60-byte JSON, 1,000 customers), aggregator; ratios against native in the same run"
    );
    println!();
    println!(
        "| module | events/s | cost vs native | instantiation | linear memory per instance | component size |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| native Rust (baseline, no commit) | {:.0} | 1.0 | - | - | - |",
        n as f64 / base.as_secs_f64()
    );
    for (lang, module) in LANGS {
        let size = std::fs::metadata(sluice_tests::component(module))
            .unwrap()
            .len();
        let (inst, mem) = instantiate(module);
        let d = through_host(module, &evs, cache.path());
        println!(
            "| {lang} (`{module}`), through the host | {:.0} | {:.1} | {:.2} ms | {:.1} MiB | {:.1} MB |",
            n as f64 / d.as_secs_f64(),
            d.as_secs_f64() / base.as_secs_f64(),
            inst.as_secs_f64() * 1000.0,
            mem as f64 / (1 << 20) as f64,
            size as f64 / 1e6
        );
    }
}
