//! How fast work moves on Kafka when a host goes away, and what the others
//! see meanwhile: a host killed and started again at once gets its
//! partitions back without waiting for the group to time its old run out (it
//! removes that run from the group), a host stopped on purpose hands its
//! partitions over at once (it leaves the group), and while a dead host
//! still holds partitions, the live ones count their lag.
//!
//! These tests measure time, so their bounds are generous: each is a fraction
//! of the session timeout the old behaviour had to wait out, which is the
//! difference under test, never a performance claim.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::kafka::{Broker, Storage};
use sluice_tests::*;

/// Produces `events` in small chunks until they run out or `stop` is set.
fn feed(broker: &Broker, events: Vec<Value>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let client = sluice_tests::kafka::Client::new(&broker.bootstrap());
    std::thread::spawn(move || {
        for chunk in events.chunks(50) {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            client.produce("orders", chunk);
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

/// The default session timeout (`session.timeout.ms` of the consumers the
/// host creates): what a host restarted without static membership waits out
/// before the broker gives its partitions to anyone, itself included.
const DEFAULT_SESSION: Duration = Duration::from_secs(10);

#[test]
fn kafka_a_killed_host_started_again_at_once_resumes_within_seconds() {
    const EVENTS: usize = 30_000;
    let broker = Broker::start(Storage::Memory);
    broker.create_topic("orders", 3);
    // The default settings: nothing but the broker's address.
    let config = format!(
        "[kafka]\n\"bootstrap.servers\" = \"{}\"\n",
        broker.bootstrap()
    );
    let mut host = HostProc::start(&config, |m| stage(m, &["aggregator"]));
    let (events, expected) = orders(EVENTS, 50, 17, "restart-");
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = feed(&broker, events, stop.clone());

    let mut resumed_after = Vec::new();
    for kill in 1..=2 {
        let before = wait_for(Duration::from_secs(120), "progress", || {
            host.aggregator_applied()
                .filter(|n| *n > 0 && *n < EVENTS as u64)
        });
        let killed = Instant::now();
        host.kill9();
        host.restart();
        let at_start = host
            .aggregator_applied()
            .expect("the restarted host answers");
        assert!(at_start >= before, "state went back: {at_start} < {before}");
        wait_for(
            Duration::from_secs(120),
            "progress after the restart",
            || {
                host.aggregator_applied()
                    .filter(|n| *n > at_start)
                    .map(|_| ())
            },
        );
        let took = killed.elapsed();
        eprintln!("kill {kill}: processing resumed {took:?} after the SIGKILL");
        resumed_after.push(took);
    }
    stop.store(true, Ordering::SeqCst);
    feeder.join().unwrap();
    // Without static membership the broker keeps the dead member's partitions
    // for a whole session timeout after its last heartbeat, and only then
    // rebalances: resuming sooner than that is the behaviour under test.
    for took in &resumed_after {
        assert!(
            *took < DEFAULT_SESSION,
            "resumed only after {took:?}: {resumed_after:?}"
        );
    }
    // And nothing was applied twice on the way.
    // The feeder has stopped and its deliveries are confirmed: the topic
    // holds every order it will.
    let produced: usize = broker.read_all("orders").len();
    let fed = wait_for(Duration::from_secs(60), "every order applied", || {
        host.aggregator_applied().filter(|n| *n >= produced as u64)
    });
    assert_eq!(fed, produced as u64, "every produced order applied once");
    if produced == EVENTS {
        host.assert_aggregator_totals(&expected);
    }
}

/// A `[kafka]` table for `broker` with the session timeout `session`.
fn with_session(broker: &Broker, session: Duration) -> String {
    format!(
        "[kafka]\n\"bootstrap.servers\" = \"{}\"\n\"session.timeout.ms\" = \"{}\"\n",
        broker.bootstrap(),
        session.as_millis()
    )
}

#[test]
fn kafka_a_host_stopped_on_purpose_hands_its_partitions_over_at_once() {
    let broker = Broker::start(Storage::Memory);
    broker.create_topic("orders", 3);
    // A long session timeout, so that waiting it out cannot pass for leaving.
    let session = Duration::from_secs(30);
    let config = with_session(&broker, session);
    let (events, _) = orders(3_000, 50, 19, "leave-");
    broker.produce("orders", &events);
    let mut a = HostProc::start(&config, |m| stage(m, &["router"]));
    let b = HostProc::start(&config, |m| stage(m, &["router"]));
    wait_for(
        Duration::from_secs(120),
        "both hosts to hold partitions",
        || {
            let (pa, pb) = (a.held("router"), b.held("router"));
            (!pa.is_empty() && !pb.is_empty() && pa.len() + pb.len() == 3).then_some(())
        },
    );
    let stopped = Instant::now();
    assert_eq!(a.terminate(), Some(0), "graceful stop exits zero");
    while b.held("router").len() < 3 {
        if stopped.elapsed() > Duration::from_secs(120) {
            let (la, lb) = (a.log(), b.log());
            panic!(
                "host B never held every partition; host A's log:\n{}\nhost B's log:\n{}",
                &la[la.len().saturating_sub(4000)..],
                &lb[lb.len().saturating_sub(6000)..]
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = stopped.elapsed();
    eprintln!("host B held every partition {took:?} after host A's SIGTERM");
    assert!(
        took < session / 2,
        "host B waited {took:?}: host A did not leave the group"
    );
}

#[test]
fn kafka_lag_counts_the_partitions_a_dead_host_still_holds() {
    let broker = Broker::start(Storage::Memory);
    broker.create_topic("orders", 3);
    // Long enough for the checks below to run while host A's partitions
    // still belong to its dead member.
    let session = Duration::from_secs(20);
    let config = with_session(&broker, session);
    let mut a = HostProc::start(&config, |m| stage(m, &["aggregator"]));
    let b = HostProc::start(&config, |m| stage(m, &["aggregator"]));
    let mine = wait_for(
        Duration::from_secs(120),
        "both hosts to hold partitions",
        || {
            let (pa, pb) = (a.held("aggregator"), b.held("aggregator"));
            (!pa.is_empty() && !pb.is_empty() && pa.len() + pb.len() == 3).then_some(pb)
        },
    );
    a.kill9();
    let killed = Instant::now();
    // Orders for every partition: host B processes its own, nobody the rest.
    let (events, _) = orders(600, 30, 23, "lag-");
    broker.produce("orders", &events);
    let lagging = wait_for(Duration::from_secs(10), "host B to see the lag", || {
        let s = b.get("/v1/status");
        (s["lag"].as_u64()? > 0).then_some(s)
    });
    assert!(
        killed.elapsed() < session,
        "host B saw the lag only after the session timeout; the test proves nothing"
    );
    eprintln!("host B's status with host A dead: {lagging}");
    assert_eq!(lagging["idle"], false);
    let count = |h: &HostProc| h.aggregator_applied().expect("the host answers");
    // The lag is the whole truth: what host B applied and what waits in
    // host A's partitions add up to every order produced.
    let m = wait_for(Duration::from_secs(10), "lag + applied = produced", || {
        let m = b.module("aggregator");
        let waiting: u64 = m
            .partitions
            .iter()
            .filter(|p| p.topic == "orders" && !mine.contains(&p.partition))
            .map(|p| p.lag)
            .sum();
        let done = count(&b);
        eprintln!("host B: applied {done}, host A's partitions lag {waiting}");
        (done + waiting == events.len() as u64).then_some(m)
    });
    assert!(
        killed.elapsed() < session,
        "the session timed out meanwhile; the test proves nothing"
    );
    let others: Vec<_> = m
        .partitions
        .iter()
        .filter(|p| p.topic == "orders" && !mine.contains(&p.partition))
        .collect();
    assert_eq!(others.len(), 3 - mine.len(), "{:?}", m.partitions);
    assert!(
        others
            .iter()
            .all(|p| p.holder != sluice::Holder::Here && p.lag > 0),
        "host A's partitions shown with their lag: {others:?}"
    );
    let listing = b.cli(&["modules"]);
    assert!(listing.ok, "{}", listing.stderr);
    eprintln!("{}", listing.stdout);
    let shown = listing
        .stdout
        .lines()
        .find(|l| l.starts_with("aggregator"))
        .unwrap();
    assert!(
        shown.contains("not here")
            || shown.contains("UNASSIGNED")
            || shown.contains("another host"),
        "{shown}"
    );
    // Waiting for idle does not return while host A's partitions wait.
    let waited = b.cli(&["status", "--wait-idle", "2"]);
    if killed.elapsed() < session {
        assert!(
            !waited.ok,
            "idle with partitions nobody reads: {}",
            waited.stdout
        );
    }
    // Host A comes back (and removes its dead run from the group): the
    // partitions are read again, and host B, which sees the whole group,
    // is idle only once every partition is processed.
    a.restart();
    let waited = b.cli(&["status", "--wait-idle", "120"]);
    assert!(
        waited.ok,
        "{} {}\n{:#?}",
        waited.stdout,
        waited.stderr,
        b.module("aggregator").partitions,
    );
    let lag: u64 = b
        .module("aggregator")
        .partitions
        .iter()
        .map(|p| p.lag)
        .sum();
    assert_eq!(lag, 0);
    assert_eq!(
        count(&a) + count(&b),
        events.len() as u64,
        "every order applied once"
    );
}
