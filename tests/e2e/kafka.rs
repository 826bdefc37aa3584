//! Sluice on a real Kafka-compatible broker (tansu): exactly-once effects
//! through SIGKILLs, broker restarts, several hosts, independent modules,
//! malformed records.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::Value;
use sluice_tests::kafka::{Broker, Storage};
use sluice_tests::*;

/// The output topic, deduplicated by event id, holds one update per input.
fn assert_one_update_per_input(broker: &Broker, n: usize) {
    let updates = wait_for(Duration::from_secs(120), "every update published", || {
        let u = broker.read_all("totals");
        let ids: HashSet<String> = u
            .iter()
            .filter_map(|x| x["id"].as_str().map(str::to_owned))
            .collect();
        eprintln!(
            "output topic: {} records, {} distinct ids",
            u.len(),
            ids.len()
        );
        (ids.len() >= n).then_some(u)
    });
    let mut by_id: HashMap<&str, &Value> = HashMap::new();
    for u in &updates {
        let id = u["id"].as_str().unwrap();
        if let Some(prev) = by_id.insert(id, u) {
            // A re-publish after a crash carries the same id and content.
            assert_eq!(prev["data"], u["data"], "{id} published with two contents");
        }
    }
    let inputs: HashSet<&str> = by_id
        .values()
        .map(|u| u["data"]["input"].as_str().unwrap())
        .collect();
    assert_eq!(by_id.len(), n, "distinct output ids");
    assert_eq!(inputs.len(), n, "one update per input event");
    eprintln!(
        "{} records on the output topic, {} distinct ids",
        updates.len(),
        by_id.len()
    );
}

#[test]
fn kafka_sigkill_at_random_moments_is_exactly_once() {
    const EVENTS: usize = 100_000;
    const KILLS: usize = 5;
    let broker = Broker::start(Storage::Memory);
    broker.create_topic("orders", 3);
    let mut host = HostProc::start(&broker.host_config(), |m| stage(m, &["aggregator"]));
    let (events, expected) = orders(EVENTS, 200, 11, "k-order-");
    // One portion before the first kill, one while the host is down after
    // each: every restart finds a backlog, so every kill can land mid-stream.
    let mut portions = events.chunks(EVENTS.div_ceil(KILLS + 1));
    let client = sluice_tests::kafka::Client::new(&broker.bootstrap());
    let mut produced = 0u64;
    let mut produce = |portion: Option<&[Value]>| {
        if let Some(p) = portion {
            client.produce("orders", p);
            produced += p.len() as u64;
        }
        produced
    };
    produce(portions.next());

    let mut rng = rand::rng();
    let start = Instant::now();
    let mut mid_stream = 0;
    let mut last = 0;
    for kill in 1..=KILLS {
        assert!(start.elapsed() < Duration::from_secs(900), "took too long");
        // Kill while it works: at the first to third time it is seen with
        // progress since its restart but not done (a backlog takes it well
        // under a second; it is looked at every 10 ms).
        let so_far = produce(None);
        let skip = rng.random_range(0..3);
        let mut mid = 0;
        let seen = wait_for(Duration::from_secs(120), "progress after a restart", || {
            let n = host.aggregator_applied()?;
            if n > last && n < so_far {
                mid += 1;
                if mid > skip {
                    return Some(n);
                }
            }
            if n >= so_far {
                return Some(n);
            }
            std::thread::sleep(Duration::from_millis(10));
            None
        });
        last = seen;
        host.kill9();
        eprintln!("kill {kill}: applied {seen} of {so_far} produced");
        if seen < so_far {
            mid_stream += 1;
        }
        produce(portions.next());
        host.restart();
    }
    produce(portions.next());
    assert_eq!(produce(None), EVENTS as u64);
    assert!(mid_stream >= 3, "only {mid_stream} kills landed mid-stream");

    wait_for(Duration::from_secs(600), "every event applied", || {
        (host.aggregator_applied() == Some(EVENTS as u64)).then_some(())
    });
    eprintln!("all applied after {:?}", start.elapsed());
    host.assert_aggregator_totals(&expected);
    assert_one_update_per_input(&broker, EVENTS);
}

#[test]
fn kafka_broker_restart_mid_stream_recovers_by_itself() {
    // tansu on sqlite takes tens of milliseconds per produced record.
    const EVENTS: usize = 600;
    let mut broker = Broker::start(Storage::Sqlite);
    broker.create_topic("orders", 3);
    let host = HostProc::start(&broker.host_config(), |m| stage(m, &["aggregator"]));
    let (events, expected) = orders(EVENTS, 20, 12, "r-order-");
    broker.produce("orders", &events[..EVENTS / 2]);
    wait_for(Duration::from_secs(120), "some progress", || {
        (host.aggregator_applied().unwrap_or(0) > 0).then_some(())
    });

    // The broker goes away for ~10 s while the host has work in flight.
    broker.stop();
    let outage = Instant::now();
    let status = wait_for(Duration::from_secs(30), "the outage to be reported", || {
        let s = host.get("/v1/status");
        (s["kafka"]["reachable"] == false).then_some(s)
    });
    eprintln!("status during the outage: {status}");
    std::thread::sleep(Duration::from_secs(10).saturating_sub(outage.elapsed()));
    broker.restart();
    broker.produce("orders", &events[EVENTS / 2..]);

    wait_for(Duration::from_secs(300), "every event applied", || {
        (host.aggregator_applied() == Some(EVENTS as u64)).then_some(())
    });
    wait_for(
        Duration::from_secs(60),
        "the host to see the broker again",
        || (host.get("/v1/status")["kafka"]["reachable"] == true).then_some(()),
    );
    host.assert_aggregator_totals(&expected);
    assert_one_update_per_input(&broker, EVENTS);
}

#[test]
fn two_hosts_share_the_partitions_of_a_stateless_module() {
    const EVENTS: usize = 20_000;
    let broker = Broker::start(Storage::Memory);
    broker.create_topic("orders", 3);
    let (mut events, _) = orders(EVENTS, 100, 13, "two-");
    for (i, e) in events.iter_mut().enumerate() {
        e["data"]["seq"] = Value::from(i);
    }
    broker.produce("orders", &events[..5_000]);
    // Host A starts alone; host B joins while orders keep coming and A is at
    // work, so partitions move with work in flight.
    let a = HostProc::start(&broker.host_config(), |m| stage(m, &["router"]));
    wait_for(Duration::from_secs(120), "host A under way", || {
        let m = a.module("router").metrics?;
        (m.applied > 500).then_some(())
    });
    let rest = events[5_000..].to_vec();
    let client = sluice_tests::kafka::Client::new(&broker.bootstrap());
    let feeder = std::thread::spawn(move || {
        for chunk in rest.chunks(1_000) {
            client.produce("orders", chunk);
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let b = HostProc::start(&broker.host_config(), |m| stage(m, &["router"]));
    let (pa, pb) = wait_for(
        Duration::from_secs(60),
        "both hosts to hold partitions",
        || {
            let (pa, pb) = (a.held("router"), b.held("router"));
            (!pa.is_empty() && !pb.is_empty() && pa.len() + pb.len() == 3).then_some((pa, pb))
        },
    );
    eprintln!("assignment: host A holds {pa:?}, host B holds {pb:?}");
    assert!(
        pa.iter().all(|p| !pb.contains(p)),
        "disjoint: {pa:?} {pb:?}"
    );
    feeder.join().unwrap();
    let out = wait_for(Duration::from_secs(300), "every output", || {
        let o = broker.read_all("order-events");
        let seqs: HashSet<u64> = o.iter().filter_map(|x| x["data"]["seq"].as_u64()).collect();
        (seqs.len() == EVENTS).then_some(o)
    });
    // Exactly one output per input: a re-publish carries the same id and the
    // same content, never a second id for one input.
    let mut by_seq: HashMap<u64, HashSet<&str>> = HashMap::new();
    let mut by_id: HashMap<&str, &Value> = HashMap::new();
    for o in &out {
        let id = o["id"].as_str().unwrap();
        by_seq
            .entry(o["data"]["seq"].as_u64().unwrap())
            .or_default()
            .insert(id);
        if let Some(prev) = by_id.insert(id, &o["data"]) {
            assert_eq!(prev, &o["data"], "{id} published with two contents");
        }
    }
    assert!(
        by_seq.values().all(|ids| ids.len() == 1),
        "an input with two outputs"
    );
    assert_eq!(by_id.len(), EVENTS, "one output id per input");
    eprintln!(
        "{} records for {EVENTS} inputs ({} re-published)",
        out.len(),
        out.len() - EVENTS
    );
    // Both hosts did part of the work.
    for (name, h) in [("A", &a), ("B", &b)] {
        let m = h.module("router").metrics.unwrap();
        eprintln!("host {name} applied {}", m.applied);
        assert!(m.applied > 0, "host {name} did nothing");
    }
}

#[test]
fn a_stopped_module_does_not_hold_back_another_modules_offsets() {
    const EVENTS: usize = 3_000;
    let broker = Broker::start(Storage::Memory);
    broker.create_topic("orders", 3);
    let host = HostProc::start(&broker.host_config(), |m| {
        stage(m, &["aggregator", "flaky"]);
        // flaky on the orders topic rejects every order (no `action`) and is
        // quarantined after three in a row.
        let path = m.join("flaky/module.toml");
        let manifest = std::fs::read_to_string(&path)
            .unwrap()
            .replace("topic = \"flaky-in\"", "topic = \"orders\"")
            .replace("max-attempts = 3", "max-attempts = 1\nquarantine-after = 3");
        std::fs::write(path, manifest).unwrap();
    });
    let (events, expected) = orders(EVENTS, 20, 14, "ind-");
    broker.produce("orders", &events);
    wait_for(Duration::from_secs(120), "aggregator done", || {
        (host.aggregator_applied() == Some(EVENTS as u64)).then_some(())
    });
    host.assert_aggregator_totals(&expected);
    wait_for(Duration::from_secs(30), "flaky quarantined", || {
        (host.module("flaky").status == "quarantined").then_some(())
    });
    let committed = |group: &str| -> i64 {
        broker
            .committed(group, "orders", 3)
            .into_iter()
            .map(|o| o.max(0))
            .sum()
    };
    let agg = wait_for(
        Duration::from_secs(30),
        "aggregator offsets committed",
        || {
            let c = committed("sluice.aggregator");
            (c == EVENTS as i64).then_some(c)
        },
    );
    // The quarantined module dead-lettered exactly three events, committed
    // their offsets, and took no more.
    let flaky = wait_for(Duration::from_secs(30), "flaky's three offsets", || {
        let c = committed("sluice.flaky");
        (c >= 3).then_some(c)
    });
    eprintln!("committed offsets: sluice.aggregator {agg}, sluice.flaky {flaky}");
    assert_eq!(flaky, 3, "the quarantined module stopped after 3 events");
    let m = host.module("flaky").metrics.unwrap();
    assert_eq!((m.dead_letters, m.applied), (3, 0));
}

#[test]
fn malformed_records_are_dead_lettered_with_the_reason() {
    let broker = Broker::start(Storage::Memory);
    broker.create_topic("orders", 1);
    let mut host = HostProc::start(&broker.host_config(), |m| stage(m, &["aggregator"]));
    let (events, expected) = orders(10, 3, 15, "mal-");
    let ct = |v: &str| ("content-type".to_string(), v.as_bytes().to_vec());
    let ce = |pairs: &[(&str, &[u8])]| -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect()
    };
    let bad = vec![
        (
            None,
            b"{not json".to_vec(),
            vec![ct("application/cloudevents+json")],
        ),
        (
            None,
            br#"{"specversion":"1.0","id":"x","source":"/s"}"#.to_vec(),
            vec![ct("application/cloudevents+json")],
        ),
        (
            None,
            b"{}".to_vec(),
            ce(&[("ce_id", b"m1"), ("ce_type", b"order.created")]),
        ),
        (
            None,
            b"{}".to_vec(),
            ce(&[
                ("ce_source", b"/s"),
                ("ce_type", &[0xc3, 0x28]),
                ("ce_id", b"m2"),
            ]),
        ),
    ];
    broker.produce_raw("orders", bad);
    broker.produce("orders", &events);
    wait_for(Duration::from_secs(120), "the valid events applied", || {
        (host.aggregator_applied() == Some(10)).then_some(())
    });
    host.assert_aggregator_totals(&expected);
    let dlq = wait_for(Duration::from_secs(60), "four dead letters", || {
        let d = broker.read_all("aggregator.dlq");
        (d.len() >= 4).then_some(d)
    });
    assert_eq!(dlq.len(), 4);
    let reasons: Vec<String> = dlq
        .iter()
        .map(|d| {
            assert_eq!(d["headers"]["sluice.dlq.class"], "undecodable", "{d}");
            d["headers"]["sluice.dlq.message"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for want in ["not JSON", "type", "ce_source", "UTF-8"] {
        assert!(
            reasons.iter().any(|r| r.contains(want)),
            "{want}: {reasons:?}"
        );
    }
    assert!(host.alive(), "the host survived");
}

/// SIGTERM while the broker is gone: the host neither waits for it without
/// end (an offset commit on leaving the group, the outbox draining) nor loses
/// anything. It exits 0 within its shutdown-timeout, and once the broker is
/// back, a restart publishes what was left: exact totals, one output id per
/// input.
#[test]
fn kafka_sigterm_with_the_broker_gone_exits_in_time_and_loses_nothing() {
    // tansu on sqlite takes tens of milliseconds per produced record.
    const EVENTS: usize = 400;
    let mut broker = Broker::start(Storage::Sqlite);
    broker.create_topic("orders", 3);
    let mut host = HostProc::start(&broker.host_config(), |m| stage(m, &["aggregator"]));
    let (events, expected) = orders(EVENTS, 20, 14, "gone-");
    broker.produce("orders", &events);
    wait_for(Duration::from_secs(120), "the aggregator under way", || {
        (host.aggregator_applied().unwrap_or(0) > 0).then_some(())
    });
    broker.stop();
    wait_for(Duration::from_secs(30), "the outage to be reported", || {
        (host.get("/v1/status")["kafka"]["reachable"] == false).then_some(())
    });
    let stopping = Instant::now();
    let code = host.terminate();
    eprintln!(
        "exit {code:?} {:?} after SIGTERM with the broker gone",
        stopping.elapsed()
    );
    // Exit 1 would be the shutdown-timeout (30 s) running out.
    assert_eq!(code, Some(0), "log:\n{}", host.log_tail(40));

    broker.restart();
    host.restart();
    wait_for(Duration::from_secs(300), "every event applied", || {
        (host.aggregator_applied() == Some(EVENTS as u64)).then_some(())
    });
    host.assert_aggregator_totals(&expected);
    assert_one_update_per_input(&broker, EVENTS);
}

#[test]
fn kafka_sigterm_mid_stream_drains_the_outbox_and_exits_zero() {
    const EVENTS: usize = 20_000;
    let broker = Broker::start(Storage::Memory);
    broker.create_topic("orders", 3);
    let mut host = HostProc::start(&broker.host_config(), |m| stage(m, &["aggregator"]));
    let (events, expected) = orders(EVENTS, 50, 13, "t-order-");
    broker.produce("orders", &events);
    wait_for(Duration::from_secs(120), "the aggregator under way", || {
        (host.aggregator_applied().unwrap_or(0) > 2_000).then_some(())
    });
    let seen = host.aggregator_applied().unwrap_or(0);
    let code = host.terminate();
    assert_eq!(code, Some(0), "log:\n{}", host.log());
    eprintln!("SIGTERM after {seen} of {EVENTS} applied");
    // Everything committed before the stop was published: a restart finds
    // an empty outbox, and nothing is published twice.
    host.restart();
    let status = host.get("/v1/status");
    assert_eq!(status["outbox_at_start"], 0, "{status}");
    let deadline = Instant::now() + Duration::from_secs(300);
    while host.aggregator_applied() != Some(EVENTS as u64) {
        if Instant::now() > deadline {
            let log = host.log();
            panic!(
                "not every event applied after the restart ({:?}); {:?} log tail:\n{}",
                host.aggregator_applied(),
                host.module("aggregator").partitions,
                &log[log.len().saturating_sub(6000)..]
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    host.assert_aggregator_totals(&expected);
    assert_one_update_per_input(&broker, EVENTS);
    let records = broker.read_all("totals").len();
    assert_eq!(records, EVENTS, "a graceful stop re-publishes nothing");
}
