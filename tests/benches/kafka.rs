//! Throughput on Kafka: a module consuming through the host, against raw
//! librdkafka consumption of the same records from the same broker, in the
//! same run.
//!
//! `cargo bench -p sluice-tests --bench kafka` (needs tansu:
//! `scripts/kafka-broker.sh install`; `SLUICE_BENCH_EVENTS` sets the count,
//! default 100,000). Starts its own broker on a free loopback port.
//!
//! 1. raw: an rdkafka `BaseConsumer` assigned to every partition from offset
//!    0, polling until it has seen every record (no decoding);
//! 2. sluice, `filter`: from the moment the module has its partitions until
//!    every record is applied and every output published (outbox empty);
//! 3. sluice, `aggregator`: the same with per-key state, idempotency marks and
//!    one output per input.
//!
//! Each row is the best of 3 runs; ratios are against (1).

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use sluice_tests::kafka::{Broker, Storage};
use sluice_tests::*;

fn raw(broker: &Broker, n: usize) -> Duration {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", format!("bench-raw-{}", rand::random::<u64>()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset("orders", p, Offset::Offset(0))
            .unwrap();
    }
    let start = Instant::now();
    c.assign(&tpl).unwrap();
    let mut seen = 0;
    while seen < n {
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            m.unwrap();
            seen += 1;
        }
        assert!(start.elapsed() < Duration::from_secs(600), "raw read stuck");
    }
    start.elapsed()
}

fn through_host(broker: &Broker, module: &str, n: usize) -> Duration {
    // A fresh group each run: a new data directory joining an old group
    // would start at the group's offsets (ADR 0003).
    let config = format!(
        "{}group-prefix = \"bench-{}.\"\n",
        broker.host_config(),
        rand::random::<u32>()
    );
    let host = HostProc::start(&config, |m| stage(m, &[module]));
    let done = |h: &HostProc| -> (u64, u64) {
        let m = h.module(module).metrics.unwrap_or_default();
        let pending = h.get("/v1/status")["outbox_pending"]
            .as_u64()
            .unwrap_or(u64::MAX);
        (m.events_in + m.filtered, pending)
    };
    // Timing starts when the module has joined its group and holds partitions.
    wait_for(Duration::from_secs(60), "partitions assigned", || {
        (!host.module(module).partitions.is_empty()).then_some(())
    });
    let start = Instant::now();
    loop {
        let (seen, pending) = done(&host);
        if seen >= n as u64 && pending == 0 {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(600), "{module} stuck");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn main() {
    let Some(n) = bench_size("SLUICE_BENCH_EVENTS", 100_000) else {
        return; // `cargo test --benches` probes with --list
    };
    let broker = Broker::start(Storage::Memory);
    broker.create_topic("orders", 3);
    let (mut events, _) = orders(n, 1000, 21, "bench-");
    for (i, e) in events.iter_mut().enumerate() {
        // The filter module reads orders with an id and an amount.
        e["data"]["order_id"] = serde_json::Value::from(format!("o-{i}"));
        e["data"]["amount"] = serde_json::Value::from(i as u64 % 20_000);
    }
    for chunk in events.chunks(10_000) {
        broker.produce("orders", chunk);
    }
    eprintln!("{n} events on a 3-partition topic");

    let best = |f: &dyn Fn() -> Duration| (0..3).map(|_| f()).min().unwrap();
    let d1 = best(&|| raw(&broker, n));
    let d2 = best(&|| through_host(&broker, "filter", n));
    let d3 = best(&|| through_host(&broker, "aggregator", n));
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("| # | path | events/s | cost vs (1) |");
    println!("|---|---|---:|---:|");
    for (i, what, d) in [
        ("1", "raw librdkafka consumption (poll only)", d1),
        (
            "2",
            "sluice: Kafka -> filter -> commit -> outputs published",
            d2,
        ),
        (
            "3",
            "sluice: Kafka -> aggregator (state, dedup) -> commit -> outputs published",
            d3,
        ),
    ] {
        println!(
            "| {i} | {what} | {:.0} | {:.2} |",
            rate(d),
            d.as_secs_f64() / d1.as_secs_f64()
        );
    }
}
