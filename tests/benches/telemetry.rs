//! What telemetry costs: the full-path filter and aggregator rows of the
//! pipeline bench with metrics off (the baseline), metrics on, and metrics
//! on with tracing at 1% and 100% sampling (spans exported over OTLP/HTTP to
//! a receiver in this process that reads and discards them).
//!
//! `cargo bench -p sluice-tests --bench telemetry` (`SLUICE_BENCH_EVENTS`,
//! default 100000). Variants alternate within each of 5 rounds so that a
//! noisy neighbour slows all of them; each keeps its best round. Prints a
//! Markdown table for docs/BENCHMARKS.md.

use std::time::Duration;

use sluice::config::HostConfig;
use sluice_tests::bench::{self, rate};

const ROUNDS: usize = 5;

/// What a variant changes in the host config.
type Tune = Box<dyn Fn(&mut HostConfig)>;

fn main() {
    let Some(n) = sluice_tests::bench_size("SLUICE_BENCH_EVENTS", 100_000) else {
        return;
    };
    let evs = bench::order_events(n);
    let receiver = sluice_tests::obs::Receiver::start_discarding();
    let endpoint = format!("http://{}", receiver.addr);
    let variants: [(&str, Tune); 4] = [
        (
            "metrics off, no tracing",
            Box::new(|c| c.telemetry.metrics = false),
        ),
        ("metrics on", Box::new(|_| {})),
        ("metrics on, tracing 1%", {
            let e = endpoint.clone();
            Box::new(move |c| {
                c.telemetry.otlp_endpoint = Some(e.clone());
                c.telemetry.sampling = 0.01;
            })
        }),
        ("metrics on, tracing 100%", {
            let e = endpoint.clone();
            Box::new(move |c| {
                c.telemetry.otlp_endpoint = Some(e.clone());
                c.telemetry.sampling = 1.0;
            })
        }),
    ];
    println!("| module | telemetry | events/s | cost vs off |");
    println!("|---|---|---:|---:|");
    for module in ["filter", "aggregator"] {
        let mut best = [Duration::MAX; 4];
        for _ in 0..ROUNDS {
            for (i, (_, tune)) in variants.iter().enumerate() {
                best[i] = best[i].min(bench::full_path(module, &evs, tune));
            }
        }
        let base = rate(n, best[0]);
        for (i, (label, _)) in variants.iter().enumerate() {
            let r = rate(n, best[i]);
            println!("| {module} | {label} | {r:.0} | {:.3} |", base / r);
        }
    }
    eprintln!("{} spans received", receiver.received());
}
