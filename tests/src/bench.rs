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

/// Append `evs` to a fresh host configured by `tune`, then deploy `module`
/// and time until its cursor reaches the end of the log (the component's
/// compile time taken out).
pub fn full_path(module: &str, evs: &[OwnedEvent], tune: impl Fn(&mut HostConfig)) -> Duration {
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
    let t = Instant::now();
    svc.lifecycle().deploy_dir(&mods.join(module)).unwrap();
    loop {
        if svc.store().cursor(module, "orders", 0).unwrap() == Some(end) {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let d = t.elapsed().saturating_sub(compile);
    svc.shutdown();
    d
}
