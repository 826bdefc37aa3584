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

/// Post `chunks` to `orders` on a thread, `pause` apart, each resent until
/// the host acknowledges it, as a real at-least-once producer does (a chunk
/// can land twice, which dedup absorbs). Returns how many are acknowledged,
/// whether all are, and the thread.
fn feed(
    addr: &str,
    chunks: Vec<Value>,
    pause: Duration,
) -> (
    Arc<AtomicUsize>,
    Arc<AtomicBool>,
    std::thread::JoinHandle<()>,
) {
    let addr = addr.to_string();
    let sent = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (s, d) = (sent.clone(), done.clone());
    let thread = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(600);
        for chunk in &chunks {
            while produce(&addr, "orders", chunk).is_err() {
                assert!(Instant::now() < deadline, "producer gave up");
                std::thread::sleep(Duration::from_millis(20));
            }
            s.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(pause);
        }
        d.store(true, Ordering::SeqCst);
    });
    (sent, done, thread)
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

    // A steady stream (~20 chunks/s, at least 5 s in all), so the kills
    // below land while there is work in flight.
    let (sent, done, producer) = feed(&host.addr, chunks, Duration::from_millis(50));

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

/// The duplicate flood of issue 12: 20,000 orders, half of them without a
/// partition key, each posted one to three times in random order while the
/// host is SIGKILLed five times. Every customer's total is exact, every input
/// has one output, nothing is applied twice.
#[test]
fn a_duplicate_flood_through_kills_applies_every_event_once() {
    use rand::seq::SliceRandom;
    const N: usize = 20_000;
    const KILLS: u32 = 5;
    let mut host = HostProc::start("[[topics]]\nname = \"orders\"\npartitions = 3\n", |m| {
        stage(m, &["aggregator"])
    });
    let (mut events, expected) = orders(N, 100, 17, "flood-");
    for e in events.iter_mut().skip(1).step_by(2) {
        e.as_object_mut().unwrap().remove("partitionkey");
    }
    let mut rng = rand::rng();
    let mut sends: Vec<Value> = events
        .iter()
        .flat_map(|e| std::iter::repeat_n(e.clone(), rng.random_range(1..=3)))
        .collect();
    sends.shuffle(&mut rng);
    let total_sends = sends.len();
    let chunks: Vec<Value> = sends
        .chunks(400)
        .map(|c| Value::Array(c.to_vec()))
        .collect();
    let n_chunks = chunks.len();
    let (sent, done, producer) = feed(&host.addr, chunks, Duration::from_millis(40));
    let mut kills = 0;
    let start = Instant::now();
    while kills < KILLS || !done.load(Ordering::SeqCst) {
        assert!(start.elapsed() < Duration::from_secs(600), "took too long");
        std::thread::sleep(Duration::from_millis(rng.random_range(100..600)));
        if kills < KILLS {
            eprintln!(
                "kill {}: {}/{n_chunks} chunks acknowledged",
                kills + 1,
                sent.load(Ordering::SeqCst)
            );
            host.kill9();
            kills += 1;
            host.restart();
        }
    }
    producer.join().unwrap();
    eprintln!("{total_sends} posts of {N} events");
    host.wait_caught_up("aggregator", Duration::from_secs(300));
    let updates = wait_for(Duration::from_secs(120), "every update", || {
        let u = host.read_all("totals");
        (u.len() >= N).then_some(u)
    });
    // Keyless orders spread a customer over partitions: the totals of each
    // customer's partitions add up to the independent computation.
    let mut sums: std::collections::BTreeMap<String, (i64, u64)> = Default::default();
    for (k, v) in host.state("aggregator") {
        let s = sums
            .entry(k.trim_start_matches("total/").to_string())
            .or_default();
        s.0 += v["total"].as_i64().unwrap();
        s.1 += v["count"].as_u64().unwrap();
    }
    assert_eq!(sums, expected, "every per-customer total exact");
    let inputs: HashSet<&str> = updates
        .iter()
        .map(|u| u["data"]["input"].as_str().unwrap())
        .collect();
    assert_eq!(inputs.len(), N, "one update per input");
    assert_eq!(updates.len(), N, "nothing applied twice");
}
