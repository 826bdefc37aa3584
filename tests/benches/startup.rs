//! Restart time of a host with 20 deployed modules, with and without the
//! compiled-component cache, in the same run.
//!
//! `cargo bench -p sluice-tests --bench startup` (`SLUICE_BENCH_MODULES` sets
//! the module count, default 20). Each module is the `aggregator` component
//! with its own custom section, so each has its own hash and is compiled (or
//! cached) on its own, as twenty different modules would be.
//!
//! For each mode the host is restarted 3 times over the same data directory
//! (the modules come from its registry); the figures are the best of the 3:
//!
//! - "own work": `startup_ms` from `/readyz`, from opening the data directory
//!   to every module loaded and running;
//! - "to ready": from spawning the process until `/readyz` answers 200
//!   (adds process start, RocksDB open, binding the API, and polling).

use std::time::{Duration, Instant};

use sluice_tests::*;

const RUNS: usize = 3;

/// Restart `host` with `compile-cache` set as given; `(own work, to ready)`.
fn restart(host: &mut HostProc, cache: bool) -> (Duration, Duration) {
    let text = std::fs::read_to_string(&host.config).unwrap();
    let base = text.split("[deploy]").next().unwrap().to_string();
    std::fs::write(
        &host.config,
        format!("{base}[deploy]\ncompile-cache = {cache}\n"),
    )
    .unwrap();
    assert_eq!(host.terminate(), Some(0));
    let t = Instant::now();
    host.restart();
    let to_ready = t.elapsed();
    let r = host.get("/readyz");
    let own = Duration::from_millis(r["startup_ms"].as_u64().unwrap());
    let stats = &r["compiled_cache"];
    if cache {
        assert_eq!(stats["misses"], 0, "{r}");
    } else {
        assert_eq!(stats["hits"], 0, "{r}");
    }
    (own, to_ready)
}

fn best(v: &[(Duration, Duration)]) -> (Duration, Duration) {
    (
        v.iter().map(|x| x.0).min().unwrap(),
        v.iter().map(|x| x.1).min().unwrap(),
    )
}

fn main() {
    let Some(n) = sluice_tests::bench_size("SLUICE_BENCH_MODULES", 20) else {
        return; // `cargo test --benches` probes with --list
    };
    let size = component_bytes("aggregator").len();
    let mut host = HostProc::start("[[topics]]\nname = \"orders\"\npartitions = 3\n", |m| {
        for i in 0..n {
            stage_renamed(m, "aggregator", &format!("agg{i:02}"), 16 + i);
        }
    });
    assert_eq!(host.get("/readyz")["modules"], n);
    let without: Vec<_> = (0..RUNS).map(|_| restart(&mut host, false)).collect();
    // The first start with the cache on fills it.
    restart(&mut host, true);
    let with: Vec<_> = (0..RUNS).map(|_| restart(&mut host, true)).collect();
    let (w_own, w_ready) = best(&without);
    let (c_own, c_ready) = best(&with);
    println!("{n} modules, each a {size}-byte component (aggregator), best of {RUNS} restarts");
    println!("| | own work (startup_ms) | spawn to /readyz 200 |");
    println!("|---|---|---|");
    println!(
        "| compiling every component | {} ms | {} ms |",
        w_own.as_millis(),
        w_ready.as_millis()
    );
    println!(
        "| from the compiled cache | {} ms | {} ms |",
        c_own.as_millis(),
        c_ready.as_millis()
    );
    println!(
        "| ratio (compiling / cache) | {:.1}x | {:.1}x |",
        w_own.as_secs_f64() / c_own.as_secs_f64().max(1e-3),
        w_ready.as_secs_f64() / c_ready.as_secs_f64().max(1e-3)
    );
}
