//! Throughput of the filter and aggregator modules, native vs through the host.
//!
//! `cargo bench -p sluice-tests --bench pipeline` (set `SLUICE_BENCH_EVENTS`
//! to change the event count). Prints a Markdown table for docs/BENCHMARKS.md:
//!
//! 1. the filter logic compiled natively, called in a loop (decode + handle);
//! 2. the same logic as a component through the host's invoke path, no I/O
//!    (batch encode, `handle-batch`, overlay), and the one-event-per-call path;
//! 3. the full path: embedded log -> filter -> commit;
//! 4. the aggregator with state, idempotency marks and outputs, committed.
//!
//! Rows 1, 2 and 2b are the best of 7 alternating rounds, rows 3 and 4 the best
//! of 3 runs; ratios are against (1) in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::runtime::{ModuleCtx, Runtime};
use sluice::state::txn::{InputMeta, TxnLimits};
use sluice::state::{Store, Txn};
use sluice_tests::bench::{self, best_of, rate};
use sluice_wire::{BatchWriter, EventRef, OwnedEvent};

/// Rounds of rows 1, 2 and 2b.
const ROUNDS: usize = 7;

fn native_filter(frames: &[Vec<u8>]) -> (Duration, usize) {
    let host = sluice_guest::testing::TestHost::install()
        .config("min-amount", "10000")
        .config("output", "large-orders");
    let mut passed = 0;
    let d = best_of(1, || {
        host.clear_emitted();
        let t = Instant::now();
        for f in frames {
            let ev = EventRef::decode(f).unwrap();
            filter::handle(&sluice_guest::Event(ev)).unwrap();
        }
        let d = t.elapsed();
        passed = host.emitted_count();
        d
    });
    (d, passed)
}

fn ctx(name: &str, config: &[(&str, &str)]) -> Arc<ModuleCtx> {
    Arc::new(ModuleCtx {
        name: name.into(),
        version: "bench".into(),
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        limits: Default::default(),
    })
}

fn wasm_filter(frames: &[Vec<u8>], metas: &[InputMeta], batch: usize) -> (Duration, usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), false).unwrap());
    let rt = Runtime::new(4 << 30).unwrap();
    let loaded = rt.load(&sluice_tests::component("filter")).unwrap();
    let limits = TxnLimits {
        max_emits: 100,
        max_emit_bytes: 1 << 20,
        max_state_value: 1 << 20,
        max_state_writes: 1000,
    };
    let txn = Txn::new(
        store,
        "filter".into(),
        vec!["large-orders".to_string()].into(),
        limits,
    );
    let mut inst = rt
        .instantiate(
            &loaded,
            ctx(
                "filter",
                &[("min-amount", "10000"), ("output", "large-orders")],
            ),
            txn,
        )
        .unwrap();
    let mut passed = 0;
    let d = best_of(1, || {
        passed = 0;
        let t = Instant::now();
        if batch > 1 {
            for (fs, ms) in frames.chunks(batch).zip(metas.chunks(batch)) {
                let mut w = BatchWriter::new();
                for f in fs {
                    w.push_frame(f);
                }
                let bytes = w.finish();
                inst.txn().begin(0, ms.to_vec());
                let r = inst.call_batch(&bytes, fs.len()).unwrap();
                assert!(r.iter().all(Result::is_ok));
                passed += inst.txn().emitted().len();
            }
        } else {
            for (f, m) in frames.iter().zip(metas) {
                inst.txn().begin(0, vec![m.clone()]);
                let ev = EventRef::decode(f).unwrap();
                inst.call_one(&ev).unwrap().unwrap();
                passed += inst.txn().emitted().len();
            }
        }
        t.elapsed()
    });
    (d, passed)
}

fn full_path(module: &str, evs: &[OwnedEvent]) -> Duration {
    best_of(3, || bench::full_path(module, evs, |_| {}))
}

fn main() {
    let Some(n) = sluice_tests::bench_size("SLUICE_BENCH_EVENTS", 200_000) else {
        return; // `cargo test --benches` probes with --list
    };
    let evs = bench::order_events(n);
    let frames: Vec<Vec<u8>> = evs.iter().map(|e| e.as_ref().encode()).collect();
    let metas: Vec<InputMeta> = evs
        .iter()
        .map(|e| InputMeta {
            source: e.source.clone(),
            id: e.id.clone(),
            key: e.key.clone(),
            trace: vec![],
            validated: None,
        })
        .collect();
    let avg = frames
        .iter()
        .map(|f| EventRef::decode(f).unwrap().data.len())
        .sum::<usize>()
        / n;
    eprintln!("{n} events, {avg}-byte JSON payloads");

    // For profiling: `SLUICE_BENCH_ONLY=invoke` runs just row 2,
    // `SLUICE_BENCH_ONLY=filter|aggregator` just that module's full path.
    if std::env::var("SLUICE_BENCH_ONLY").as_deref() == Ok("invoke") {
        let (d, _) = wasm_filter(&frames, &metas, 256);
        println!("invoke: {:.0} events/s", rate(n, d));
        return;
    }
    if let Ok(m) = std::env::var("SLUICE_BENCH_ONLY") {
        let d = full_path(&m, &evs);
        println!("{m}: {:.0} events/s", rate(n, d));
        return;
    }
    // Rows 1, 2 and 2b are measured in alternating rounds, so that a noisy
    // neighbour slows all of them rather than one; each keeps its best round.
    let (mut d1, mut d2, mut d2b) = (Duration::MAX, Duration::MAX, Duration::MAX);
    let (mut p1, mut p2, mut p2b) = (0, 0, 0);
    for _ in 0..ROUNDS {
        let (d, p) = native_filter(&frames);
        (d1, p1) = (d1.min(d), p);
        let (d, p) = wasm_filter(&frames, &metas, 256);
        (d2, p2) = (d2.min(d), p);
        let (d, p) = wasm_filter(&frames, &metas, 1);
        (d2b, p2b) = (d2b.min(d), p);
    }
    assert_eq!(p1, p2, "native and wasm filters agree");
    assert_eq!(p1, p2b);
    let d3 = full_path("filter", &evs);
    let d4 = full_path("aggregator", &evs);

    let base = rate(n, d1);
    println!("| # | path | events/s | ns/event | cost vs (1) |");
    println!("|---|---|---:|---:|---:|");
    for (i, label, d) in [
        ("1", "filter, native, called in a loop", d1),
        ("2", "filter, wasm, host invoke path, batches of 256", d2),
        ("2b", "filter, wasm, one `handle` call per event", d2b),
        ("3", "full path: embedded log -> filter -> commit", d3),
        (
            "4",
            "aggregator: log -> state + idempotency + outputs -> commit",
            d4,
        ),
    ] {
        let r = rate(n, d);
        println!(
            "| {i} | {label} | {:.0} | {:.0} | {:.2} |",
            r,
            1e9 / r,
            base / r
        );
    }
    eprintln!("filter passed {p1} of {n} events");
}
