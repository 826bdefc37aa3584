//! Exactly once on a real broker (tansu): a keyless event posted again, and
//! a host that joins later (issue 12).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::kafka::{Broker, Storage};
use sluice_tests::*;

/// How many records of `topic` carry each `data.<field>`.
fn count_by(broker: &Broker, topic: &str, field: &str) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for r in broker.read_all(topic) {
        *n.entry(r["data"][field].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    n
}

#[test]
fn kafka_a_keyless_event_posted_again_is_applied_once() {
    let broker = Broker::start(Storage::Memory);
    broker.create_topic("orders", 3);
    let host = HostProc::start(&broker.host_config(), |m| stage(m, &["aggregator"]));
    let order = |id: &str, amount: i64| {
        json!({"id": id, "source": "/shop", "type": "order.created",
               "data": {"customer": "c1", "amount": amount}})
    };
    for _ in 0..3 {
        host.produce("orders", &json!([order("k-1", 10)]));
    }
    let file = host.dir.path().join("again.jsonl");
    std::fs::write(
        &file,
        format!("{}\n{}\n", order("k-1", 10), order("k-2", 5)),
    )
    .unwrap();
    for _ in 0..2 {
        let r = host.cli(&["produce", "orders", "--file", file.to_str().unwrap()]);
        assert!(r.ok, "{}", r.stderr);
    }
    let out = wait_for(Duration::from_secs(60), "both outputs", || {
        let o = count_by(&broker, "totals", "input");
        (o.len() == 2).then_some(o)
    });
    // Anything more would have arrived by now: the resends were all read.
    wait_for(Duration::from_secs(60), "everything read", || {
        let s = host.get("/v1/status");
        (s["idle"] == true).then_some(())
    });
    let out_after = count_by(&broker, "totals", "input");
    assert_eq!(out_after, out);
    assert_eq!(
        out,
        BTreeMap::from([("k-1".to_string(), 1), ("k-2".to_string(), 1)]),
        "one output per input"
    );
}

/// Stage flaky with `start`, and its backoff between attempts `backoff`.
fn flaky_with(start: &'static str, backoff: &'static str) -> impl Fn(&std::path::Path) {
    move |m: &std::path::Path| {
        stage(m, &["flaky"]);
        let path = m.join("flaky/module.toml");
        let manifest = std::fs::read_to_string(&path)
            .unwrap()
            .replace("start = \"earliest\"", &format!("start = \"{start}\""))
            .replace(
                "backoff = { initial = \"1ms\", max = \"10ms\" }",
                &format!("backoff = {{ initial = \"{backoff}\", max = \"{backoff}\" }}"),
            );
        std::fs::write(path, manifest).unwrap();
    }
}

#[test]
fn kafka_a_host_that_starts_later_resumes_at_the_groups_offset() {
    const EVENTS: usize = 1_000;
    let broker = Broker::start(Storage::Memory);
    broker.create_topic("flaky-in", 3);
    // Each event fails once on each host, then succeeds after 20 ms: about
    // 50 a second, one event per call (in a batch, only the first failure is
    // retried alone; the events after it, having failed once in the same
    // instance, then pass at once, and A could finish before it is stopped).
    let events: Vec<Value> = (0..EVENTS)
        .map(|i| {
            json!({"id": format!("late-{i}"), "source": "/t", "type": "t",
                   "partitionkey": format!("k{}", i % 7),
                   "data": {"action": "retry-once", "key": format!("k{}", i % 7)}})
        })
        .collect();
    broker.produce("flaky-in", &events);
    let committed = || broker.committed("sluice.flaky", "flaky-in", 3);
    // Host A reads from the start and is stopped part of the way through;
    // stopping commits its offsets to the group.
    let config = format!("{}[pipeline]\nbatch-size = 1\n", broker.host_config());
    let mut a = HostProc::start(&config, flaky_with("earliest", "20ms"));
    wait_for(Duration::from_secs(120), "host A to apply some", || {
        (a.module("flaky").metrics?.applied >= 50).then_some(())
    });
    assert_eq!(a.terminate(), Some(0));
    let at_stop = committed();
    let total: i64 = at_stop.iter().map(|o| (*o).max(0)).sum();
    eprintln!("group offsets when A stopped: {at_stop:?}, {total} of {EVENTS}");
    assert!(
        total > 0 && (total as usize) < EVENTS,
        "A stopped part of the way: {at_stop:?}"
    );
    // Host B, new, with `start = "latest"`: the group has offsets, so the
    // manifest's start does not apply; B reads on from them.
    let b = HostProc::start(&config, flaky_with("latest", "20ms"));
    let done = wait_for(Duration::from_secs(240), "every event's output", || {
        let n = count_by(&broker, "flaky-out", "id");
        (n.len() >= EVENTS).then_some(n)
    });
    assert_eq!(done.len(), EVENTS, "no event skipped");
    drop(b);
}

#[test]
fn kafka_an_output_the_broker_refuses_is_kept_aside_and_stalls_nothing() {
    let broker = Broker::start(Storage::Memory);
    broker.create_topic("orders", 1);
    // Records over 20,000 bytes are refused (by the client, as a broker
    // with that message.max.bytes would).
    let config = format!(
        "{}\"message.max.bytes\" = \"20000\"\n",
        broker.host_config()
    );
    let host = HostProc::start(&config, |m| stage(m, &["router", "aggregator"]));
    let (mut events, expected) = orders(200, 10, 31, "big-");
    // One order carries 40 KB: the router's copy of it cannot be published.
    events[57]["data"]["note"] = json!("n".repeat(40_000));
    broker.produce("orders", &events);
    let routed = wait_for(Duration::from_secs(120), "199 orders routed", || {
        let n = broker.read_all("order-events").len();
        (n >= 199).then_some(n)
    });
    assert_eq!(routed, 199);
    wait_for(Duration::from_secs(60), "every total published", || {
        (broker.read_all("totals").len() >= 200).then_some(())
    });
    host.assert_aggregator_totals(&expected);
    let refused = wait_for(Duration::from_secs(60), "the refused output kept", || {
        let r = broker.read_all("sluice.undeliverable");
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(refused.len(), 1, "{refused:?}");
    let h = &refused[0]["headers"];
    assert_eq!(h["sluice.dlq.module"], "router", "{h}");
    assert_eq!(h["sluice.dlq.class"], "undeliverable", "{h}");
    assert_eq!(h["sluice.dlq.topic"], "order-events", "{h}");
    assert!(
        h["sluice.dlq.message"]
            .as_str()
            .unwrap()
            .contains("too large"),
        "{h}"
    );
    wait_for(Duration::from_secs(30), "the outbox drained", || {
        (host.get("/v1/status")["outbox_pending"] == 0).then_some(())
    });
}

#[test]
fn kafka_the_api_reads_only_the_hosts_own_topics() {
    let broker = Broker::start(Storage::Memory);
    broker.create_topic("orders", 1);
    broker.create_topic("payroll", 1);
    let (events, _) = orders(3, 2, 41, "pay-");
    broker.produce("payroll", &events);
    let host = HostProc::start(&broker.host_config(), |m| stage(m, &["aggregator"]));
    let (code, body) = api(
        &host.addr,
        "GET",
        "/v1/topics/payroll/partitions/0/events?from=0",
        None,
        None,
    );
    assert_eq!(code, 404, "another team's topic: {body}");
    let listed = host.get("/v1/topics");
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"payroll"), "{names:?}");
    assert!(
        names.contains(&"orders") && names.contains(&"totals"),
        "{names:?}"
    );
}
