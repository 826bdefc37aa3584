//! What telemetry costs: the full-path filter and aggregator rows of the
//! pipeline bench with metrics off (the baseline), metrics on, and metrics
//! on with tracing at 1% and 100% sampling (spans exported over OTLP/HTTP to
//! a receiver in the same process that reads and discards them). Besides
//! throughput (best round), the CPU time per event (median round) of the
//! pipeline's own threads (the module's, the sampler, the span exporter;
//! from `/proc/self/task/*/schedstat`): on a shared machine wall time swings
//! by a third from run to run, a thread's CPU time less.
//!
//! `cargo bench -p sluice-tests --bench telemetry` (`SLUICE_BENCH_EVENTS`,
//! default 100000; `SLUICE_BENCH_ROUNDS`, default 5); how the variants are
//! run: [`sluice_tests::bench::compare`]. Prints a Markdown table for
//! docs/BENCHMARKS.md.

use sluice_tests::bench::{self, Tune};

fn main() {
    let Some(n) = sluice_tests::bench_size("SLUICE_BENCH_EVENTS", 100_000) else {
        return;
    };
    let evs = bench::order_events(n);
    let receiver = sluice_tests::obs::Receiver::start_discarding();
    let endpoint = format!("http://{}", receiver.addr);
    let traced = |share: f64| -> Tune {
        let e = endpoint.clone();
        Box::new(move |c| {
            c.telemetry.otlp_endpoint = Some(e.clone());
            c.telemetry.sampling = share;
        })
    };
    let variants: [(&str, Tune); 4] = [
        (
            "metrics off, no tracing",
            Box::new(|c| c.telemetry.metrics = false),
        ),
        ("metrics on", Box::new(|_| {})),
        ("metrics on, tracing 1%", traced(0.01)),
        ("metrics on, tracing 100%", traced(1.0)),
    ];
    bench::compare(&["filter", "aggregator"], &variants, &evs);
}
