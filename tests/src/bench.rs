//! What the pipeline benchmarks share: the order events they process and the
//! full path (embedded log -> module -> commit) on a fresh in-process host.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use sluice::config::HostConfig;
use sluice_wire::OwnedEvent;

/// `n` order events over 1000 customers, ~300-byte JSON payloads.
pub fn order_events(n: usize) -> Vec<OwnedEvent> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    (0..n)
        .map(|i| {
            let customer = format!("c{}", rng.random_range(0..1000));
            let amount: u64 = rng.random_range(0..20_000);
            let data = format!(
                r#"{{"order_id":"o-{i:07}","customer":"{customer}","amount":{amount},"currency":"EUR","channel":"web","items":[{{"sku":"SKU-1001","qty":2,"price":2500}},{{"sku":"SKU-2002","qty":1,"price":7345}}],"note":"gift wrap"}}"#
            );
            OwnedEvent {
                id: format!("bench-{i}"),
                source: "/bench".into(),
                ty: "order.created".into(),
                datacontenttype: Some("application/json".into()),
                time: Some("2026-11-28T10:00:00Z".into()),
                key: Some(customer.into_bytes()),
                data: data.into_bytes(),
                topic: "orders".into(),
                offset: i as u64,
                ..Default::default()
            }
        })
        .collect()
}

/// The shortest of `runs` runs of `f`.
pub fn best_of(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..runs).map(|_| f()).min().unwrap()
}

/// Events per second.
pub fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// CPU time of this process's threads whose name starts with one of
/// `prefixes` (from `/proc/self/task/*/schedstat`, in nanoseconds).
pub fn threads_cpu(prefixes: &[&str]) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| prefixes.iter().any(|p| c.trim_end().starts_with(p)))
        })
        .filter_map(|t| {
            let s = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            s.split_whitespace().next()?.parse::<u64>().ok()
        })
        .map(Duration::from_nanos)
        .sum()
}

/// What one full-path run took.
pub struct Run {
    pub wall: Duration,
    /// CPU of the module's thread (from its first commit on, scaled to the
    /// whole run) and the telemetry threads (sampler, span exporter): the
    /// pipeline's own work.
    pub pipeline_cpu: Duration,
}

/// [`full_path_cpu`]'s wall time.
pub fn full_path(module: &str, evs: &[OwnedEvent], tune: impl Fn(&mut HostConfig)) -> Duration {
    full_path_cpu(module, evs, tune).wall
}

/// Append `evs` to a fresh host configured by `tune`, then deploy `module`
/// and time until its cursor reaches the end of the log (the component's
/// compile time taken out), with the CPU time spent meanwhile.
pub fn full_path_cpu(module: &str, evs: &[OwnedEvent], tune: impl Fn(&mut HostConfig)) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let mut config = HostConfig {
        data_dir: dir.path().join("data"),
        ..Default::default()
    };
    tune(&mut config);
    let svc = sluice::Service::start(config).unwrap();
    let topics = svc.topics();
    topics.ensure(&[("orders".into(), Some(1))]).unwrap();
    for chunk in evs.chunks(10_000) {
        topics.produce("orders", chunk.to_vec()).unwrap();
    }
    let end = topics.bounds("orders", 0).unwrap().1;
    let mods = dir.path().join("modules");
    crate::stage(&mods, &[module]);
    // Deploying compiles the component; time a compile of the same file and
    // take it out, so the figure is the steady-state event rate.
    let c = Instant::now();
    svc.runtime()
        .load(&mods.join(module).join(format!("{module}.wasm")))
        .unwrap();
    let compile = c.elapsed();
    let telemetry = ["sluice-telemetr", "OpenTelemetry"];
    let telemetry_before = threads_cpu(&telemetry);
    let t = Instant::now();
    svc.lifecycle().deploy_dir(&mods.join(module)).unwrap();
    // Thread names are cut to 15 bytes.
    let thread: String = format!("module-{module}").chars().take(15).collect();
    // The module thread's CPU is counted from its first commit on, past
    // instantiation: (events committed then, its CPU then).
    let mut first: Option<(u64, Duration)> = None;
    loop {
        let at = svc.store().cursor(module, "orders", 0).unwrap();
        if first.is_none() && at.is_some_and(|c| c > 0) {
            first = Some((at.unwrap(), threads_cpu(&[&thread])));
        }
        if at == Some(end) {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let wall = t.elapsed().saturating_sub(compile);
    let (from, module_before) = first.unwrap_or((0, Duration::ZERO));
    let own = threads_cpu(&[&thread]).saturating_sub(module_before)
        + threads_cpu(&telemetry).saturating_sub(telemetry_before);
    // Per event of the whole run.
    let pipeline_cpu = own.mul_f64(end as f64 / (end - from).max(1) as f64);
    svc.shutdown();
    Run { wall, pipeline_cpu }
}

/// What a variant changes in the host config.
pub type Tune = Box<dyn Fn(&mut HostConfig)>;

/// Rounds (`SLUICE_BENCH_ROUNDS`, default 5).
fn rounds() -> usize {
    std::env::var("SLUICE_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
}

/// Compare `variants` of the host config on the full path of each of
/// `modules` over `evs`, the first variant being the baseline, and print a
/// Markdown table: throughput (best round) and the pipeline threads' CPU
/// per event (median round), each with its ratio to the baseline.
///
/// Each measurement runs in a process of its own (this binary again, with
/// `SLUICE_BENCH_ONLY=<module>:<variant>`, which makes this function run
/// that one and print its figures): run one after another in one process, a
/// variant inherited the threads and allocator state of the hosts before it
/// and the order showed in the figures. Variants alternate within each
/// round, each round starting with the next one, so that a noisy neighbour
/// slows all of them and none always follows the heaviest.
pub fn compare(modules: &[&str], variants: &[(&str, Tune)], evs: &[OwnedEvent]) {
    let n = evs.len();
    if let Ok(only) = std::env::var("SLUICE_BENCH_ONLY") {
        let (module, i) = only.split_once(':').expect("<module>:<variant index>");
        let (_, tune) = &variants[i.parse::<usize>().unwrap()];
        let run = full_path_cpu(module, evs, tune);
        println!(
            "{:.0} {:.0}",
            rate(n, run.wall),
            run.pipeline_cpu.as_nanos() as f64 / n as f64
        );
        return;
    }
    println!(
        "| module | variant | events/s (best) | slower than the first | pipeline CPU ns/event (median) | vs the first |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for module in modules {
        let mut best = vec![0f64; variants.len()];
        let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
        for r in 0..rounds() {
            for k in 0..variants.len() {
                let i = (r + k) % variants.len();
                let [rate, own] = measure(module, i);
                best[i] = best[i].max(rate);
                cpu[i].push(own);
            }
        }
        let cpu: Vec<f64> = cpu.into_iter().map(median).collect();
        for (i, (label, _)) in variants.iter().enumerate() {
            println!(
                "| {module} | {label} | {:.0} | {:.3} | {:.0} | {:.3} |",
                best[i],
                best[0] / best[i],
                cpu[i],
                cpu[i] / cpu[0],
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
