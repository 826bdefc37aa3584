//! Exactly-once under `kill -9`: the host is killed at random moments while
//! events are produced and processed; final state and outputs must be exact.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::Value;
use sluice_tests::*;

const EVENTS: usize = 100_000;
const KILLS: u32 = 6;

#[test]
fn sigkill_at_random_moments_loses_nothing_and_applies_nothing_twice() {
    let mut host = HostProc::start("[[topics]]\nname = \"orders\"\npartitions = 3\n", |m| {
        stage(m, &["aggregator"])
    });
    let (events, expected) = orders(EVENTS, 200, 7, "order-");
    let chunks: Vec<Value> = events
        .chunks(1000)
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
    while kills < KILLS || !done.load(Ordering::SeqCst) {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "crash test took too long"
        );
        std::thread::sleep(Duration::from_millis(rng.random_range(50..500)));
        if kills < KILLS {
            let lag = get(&host.addr, "/v1/status")
                .ok()
                .and_then(|s| s["lag"].as_u64());
            let chunks_sent = sent.load(Ordering::SeqCst);
            eprintln!(
                "kill {}: {chunks_sent}/100 chunks acknowledged, lag {lag:?}",
                kills + 1
            );
            if chunks_sent < 100 || lag.is_some_and(|l| l > 0) {
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
        host.starts() > KILLS,
        "the host was restarted after every kill"
    );

    host.wait_caught_up("aggregator", Duration::from_secs(300));
    let updates = wait_for(
        Duration::from_secs(120),
        "every update to be published",
        || {
            let u = host.read_all("totals");
            (u.len() >= EVENTS).then_some(u)
        },
    );

    // State: every customer's total and count equal the independent computation.
    host.assert_aggregator_totals(&expected);

    // Outputs: exactly one update per input event, none published twice.
    let ids: HashSet<&str> = updates.iter().map(|u| u["id"].as_str().unwrap()).collect();
    let inputs: HashSet<&str> = updates
        .iter()
        .map(|u| u["data"]["input"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), EVENTS, "distinct output ids");
    assert_eq!(inputs.len(), EVENTS, "one update per input event");
    assert_eq!(updates.len(), EVENTS, "no output was published twice");
}
