//! Exactly-once under `kill -9`: the host is killed at random moments while
//! events are produced and processed; final state and outputs must be exact.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::Value;
use sluice_tests::*;

#[test]
fn sigkill_at_random_moments_loses_nothing_and_applies_nothing_twice() {
    crash_test("aggregator", 100_000, 6);
}

#[test]
fn sigkill_at_random_moments_with_the_python_module() {
    // CPython in wasm is slower per event: fewer events, as many kills.
    crash_test("aggregator-py", 20_000, 6);
}

/// Produce `n` orders in chunks of `n / 100` while SIGKILLing the host
/// `kills` times at random moments; then state and outputs must be exact.
fn crash_test(module: &str, n: usize, kills_wanted: u32) {
    const CHUNKS: usize = 100;
    let mut host = HostProc::start("[[topics]]\nname = \"orders\"\npartitions = 3\n", |m| {
        stage(m, &[module])
    });
    let (events, expected) = orders(n, 200, 7, "order-");
    let chunks: Vec<Value> = events
        .chunks(n / CHUNKS)
        .map(|c| Value::Array(c.to_vec()))
        .collect();

    // The producer resends a chunk until the host acknowledges it, as a real
    // at-least-once producer does; a chunk can land twice, which dedup absorbs.
    let addr = host.addr.clone();
    let sent = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let (sent, done) = (sent.clone(), done.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(600);
            for chunk in &chunks {
                while produce(&addr, "orders", chunk).is_err() {
                    assert!(Instant::now() < deadline, "producer gave up");
                    std::thread::sleep(Duration::from_millis(20));
                }
                sent.fetch_add(1, Ordering::SeqCst);
                // A steady stream (~20 chunks/s, at least 5 s in all), so the
                // kills below land while there is work in flight.
                std::thread::sleep(Duration::from_millis(50));
            }
            done.store(true, Ordering::SeqCst);
        })
    };

    let mut rng = rand::rng();
    let mut kills = 0;
    let mut mid_stream = 0;
    let start = Instant::now();
    while kills < kills_wanted || !done.load(Ordering::SeqCst) {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "crash test took too long"
        );
        std::thread::sleep(Duration::from_millis(rng.random_range(50..500)));
        if kills < kills_wanted {
            let lag = get(&host.addr, "/v1/status")
                .ok()
                .and_then(|s| s["lag"].as_u64());
            let chunks_sent = sent.load(Ordering::SeqCst);
            eprintln!(
                "kill {}: {chunks_sent}/{CHUNKS} chunks acknowledged, lag {lag:?}",
                kills + 1
            );
            if chunks_sent < CHUNKS || lag.is_some_and(|l| l > 0) {
                mid_stream += 1;
            }
            host.kill9();
            kills += 1;
            std::thread::sleep(Duration::from_millis(rng.random_range(0..100)));
            host.restart();
        }
    }
    producer.join().unwrap();
    assert!(
        mid_stream >= 3,
        "only {mid_stream} kills hit the host while it had work to do"
    );
    assert!(
        host.starts() > kills_wanted,
        "the host was restarted after every kill"
    );

    host.wait_caught_up(module, Duration::from_secs(300));
    let updates = wait_for(
        Duration::from_secs(120),
        "every update to be published",
        || {
            let u = host.read_all("totals");
            (u.len() >= n).then_some(u)
        },
    );

    // State: every customer's total and count equal the independent computation.
    host.assert_totals_of(module, &expected);

    // Outputs: exactly one update per input event, none published twice.
    let ids: HashSet<&str> = updates.iter().map(|u| u["id"].as_str().unwrap()).collect();
    let inputs: HashSet<&str> = updates
        .iter()
        .map(|u| u["data"]["input"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), n, "distinct output ids");
    assert_eq!(inputs.len(), n, "one update per input event");
    assert_eq!(updates.len(), n, "no output was published twice");
}
