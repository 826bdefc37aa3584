//! What telemetry costs: the full-path filter and aggregator rows of the
//! pipeline bench with metrics off (the baseline), metrics on, and metrics
//! on with tracing at 1% and 100% sampling (spans exported over OTLP/HTTP to
//! a receiver in this process that reads and discards them). Besides
//! throughput (best round), the CPU time per event (median round) of the
//! pipeline's own threads (the module's, the sampler, the span exporter;
//! from `/proc/self/task/*/schedstat`): on a shared machine wall time swings
//! by a third from run to run, a thread's CPU time far less.
//!
//! `cargo bench -p sluice-tests --bench telemetry` (`SLUICE_BENCH_EVENTS`,
//! default 100000; `SLUICE_BENCH_ROUNDS`, default 5). Each measurement runs in a process of its own (this
//! binary again, with `SLUICE_BENCH_ONLY=<module>:<variant>`): run one after
//! another in one process, a variant inherited the threads and allocator
//! state of the hosts before it and the order showed in the figures.
//! Variants alternate within each round, each round starting with the
//! next one, so that a noisy neighbour slows all of them; each keeps its
//! best round. Prints a Markdown table for
//! docs/BENCHMARKS.md.

use sluice::config::HostConfig;
use sluice_tests::bench::{self, rate};

/// Rounds (`SLUICE_BENCH_ROUNDS`, default 5).
fn rounds() -> usize {
    std::env::var("SLUICE_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
}

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
    // One measurement (also for profiling): `SLUICE_BENCH_ONLY=<module>:<variant>`.
    if let Ok(only) = std::env::var("SLUICE_BENCH_ONLY") {
        let (module, i) = only.split_once(':').expect("<module>:<variant index>");
        let (_, tune) = &variants[i.parse::<usize>().unwrap()];
        let run = bench::full_path_cpu(module, &evs, tune);
        let per_event = |d: std::time::Duration| d.as_nanos() as f64 / n as f64;
        println!(
            "{:.0} {:.0}",
            rate(n, run.wall),
            per_event(run.pipeline_cpu)
        );
        eprintln!("{} spans received", receiver.received());
        return;
    }
    println!(
        "| module | telemetry | events/s (best) | slower than off | pipeline CPU ns/event (median) | vs off |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for module in ["filter", "aggregator"] {
        let mut best = [0f64; 4];
        let mut pipeline: [Vec<f64>; 4] = Default::default();
        // Each round starts with the next variant, so none always follows
        // the heaviest one (the 100% run leaves the most to write back).
        for r in 0..rounds() {
            for k in 0..best.len() {
                let i = (r + k) % best.len();
                let [rate, own] = measure(module, i);
                best[i] = best[i].max(rate);
                pipeline[i].push(own);
            }
        }
        let pipeline = pipeline.map(median);
        for (i, (label, _)) in variants.iter().enumerate() {
            println!(
                "| {module} | {label} | {:.0} | {:.3} | {:.0} | {:.3} |",
                best[i],
                best[0] / best[i],
                pipeline[i],
                pipeline[i] / pipeline[0],
            );
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Events per second and pipeline CPU nanoseconds per event of one run of
/// `module` with variant `i`, in a process of its own.
fn measure(module: &str, i: usize) -> [f64; 2] {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--bench")
        .env("SLUICE_BENCH_ONLY", format!("{module}:{i}"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "{module}:{i} failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().unwrap());
    [(); 2].map(|_| fields.next().unwrap())
}
