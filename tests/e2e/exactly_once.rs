//! Exactly once, without exceptions: an event re-sent without a partition
//! key, events posted without a source to two topics, binary-mode attributes
//! with non-ASCII characters. Each of these once applied an event twice or
//! confused two events (issue 12).

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::*;

const ORDERS_3: &str = "[[topics]]\nname = \"orders\"\npartitions = 3\n";

/// How many outputs in `totals` quote each input id.
fn outputs_per_input(host: &HostProc) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for o in host.read_all("totals") {
        *n.entry(o["data"]["input"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    n
}

fn keyless_order(id: &str, customer: &str, amount: i64) -> Value {
    json!({"id": id, "source": "/shop", "type": "order.created",
           "data": {"customer": customer, "amount": amount}})
}

#[test]
fn a_keyless_event_posted_again_is_applied_once() {
    let host = HostProc::start(ORDERS_3, |m| stage(m, &["aggregator"]));
    // The same keyless event three times in separate requests, and twice more
    // through `sluice produce`: one event, applied once.
    for _ in 0..3 {
        host.produce("orders", &json!([keyless_order("k-1", "c1", 10)]));
    }
    let file = host.dir.path().join("again.jsonl");
    std::fs::write(
        &file,
        format!(
            "{}\n{}\n",
            keyless_order("k-1", "c1", 10),
            keyless_order("k-2", "c1", 5)
        ),
    )
    .unwrap();
    for _ in 0..2 {
        let r = host.cli(&["produce", "orders", "--file", file.to_str().unwrap()]);
        assert!(r.ok, "{}", r.stderr);
    }
    host.wait_caught_up("aggregator", Duration::from_secs(60));
    let out = wait_for(Duration::from_secs(30), "two outputs", || {
        let o = outputs_per_input(&host);
        (o.values().sum::<usize>() >= 2).then_some(o)
    });
    assert_eq!(
        out,
        BTreeMap::from([("k-1".to_string(), 1), ("k-2".to_string(), 1)]),
        "one output per input, whatever partition a resend went to"
    );
    // Two events, applied once each (keyless, they may sit in two
    // partitions, each with its own running total).
    let totals: Vec<(String, Value)> = host.state("aggregator");
    let sum = |f: &str| {
        totals
            .iter()
            .map(|(_, v)| v[f].as_i64().unwrap())
            .sum::<i64>()
    };
    assert_eq!((sum("total"), sum("count")), (15, 2), "{totals:?}");
}

#[test]
fn a_topic_key_pointer_keeps_one_total_per_customer() {
    let host = HostProc::start(&format!("{ORDERS_3}key = \"/customer\"\n"), |m| {
        stage(m, &["aggregator"])
    });
    let mut expected = BTreeMap::new();
    let events: Vec<Value> = (0..60)
        .map(|i| {
            let c = format!("c{}", i % 4);
            let e = expected.entry(c.clone()).or_insert((0i64, 0u64));
            e.0 += i as i64;
            e.1 += 1;
            keyless_order(&format!("p-{i}"), &c, i as i64)
        })
        .collect();
    host.produce("orders", &Value::Array(events));
    host.wait_caught_up("aggregator", Duration::from_secs(60));
    // One partition per customer, so one running total per customer.
    host.assert_aggregator_totals(&expected);
    let read = host.read_all("orders");
    assert!(
        read.iter()
            .all(|e| e["partitionkey"] == e["data"]["customer"]),
        "the key is taken from data/customer"
    );
    // An event the pointer finds nothing in is refused, naming what is missing.
    let (code, body) = post_raw(
        &host.addr,
        "/v1/topics/orders/events",
        "application/json",
        br#"[{"id":"x","source":"/s","type":"order.created","data":{"amount":1}}]"#,
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("/customer"),
        "{body}"
    );
    assert_eq!(body["index"], 0);
}

#[test]
fn a_keyless_event_reaching_a_stateful_module_is_warned_about() {
    let host = HostProc::start(ORDERS_3, |m| stage(m, &["aggregator"]));
    host.produce("orders", &json!([keyless_order("w-1", "c1", 1)]));
    host.wait_caught_up("aggregator", Duration::from_secs(60));
    wait_for(Duration::from_secs(10), "the warning", || {
        host.log()
            .contains("keyless events change the state of module aggregator")
            .then_some(())
    });
    let m = host.module("aggregator").metrics.unwrap();
    assert_eq!(m.keyless_state_writes, 1);
}

#[test]
fn events_without_a_source_on_two_topics_are_two_events() {
    let host = HostProc::start(
        "[[topics]]\nname = \"flaky-in\"\npartitions = 1\n[[topics]]\nname = \"flaky-in2\"\npartitions = 1\n",
        |m| {
            stage(m, &["flaky"]);
            let path = m.join("flaky/module.toml");
            let manifest = std::fs::read_to_string(&path).unwrap().replace(
                "[[produce]]",
                "[[subscribe]]\ntopic = \"flaky-in2\"\n\n[[produce]]",
            );
            std::fs::write(path, manifest).unwrap();
        },
    );
    // Same id, no source, two topics the module reads: an order and a refund.
    let ev = json!([{"id": "1", "type": "t", "data": {"action": "ok", "key": "k"}}]);
    host.produce("flaky-in", &ev);
    host.produce("flaky-in2", &ev);
    host.wait_caught_up("flaky", Duration::from_secs(60));
    let count = host
        .state("flaky")
        .into_iter()
        .find(|(k, _)| k == "count/k")
        .map(|(_, v)| v);
    assert_eq!(count, Some(json!(2)), "both events applied");
    let sources: Vec<String> = ["flaky-in", "flaky-in2"]
        .iter()
        .map(|t| host.read_all(t)[0]["source"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        sources,
        ["/sluice/topics/flaky-in", "/sluice/topics/flaky-in2"]
    );
}

/// One raw HTTP/1.1 request (header values as bytes, which HTTP clients
/// refuse to send when they are not ASCII); returns the status and body.
fn raw_post(addr: &str, path: &str, headers: &[(&str, &[u8])], body: &[u8]) -> (u16, Value) {
    let host = addr.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    for (n, v) in headers {
        req.extend_from_slice(n.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(v);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    s.write_all(&req).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp);
    let code = text[9..12].parse().unwrap();
    let json = text
        .split("\r\n\r\n")
        .nth(1)
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (code, json)
}

#[test]
fn binary_mode_attributes_are_decoded_never_dropped() {
    let host = HostProc::start("[[topics]]\nname = \"flaky-in\"\npartitions = 3\n", |m| {
        stage(m, &["flaky"])
    });
    let headers: &[(&str, &[u8])] = &[
        ("ce-specversion", b"1.0"),
        ("ce-type", b"t"),
        // Percent-encoded, as the CloudEvents HTTP binding says.
        ("ce-source", b"/shop/m%C3%BCnchen"),
        // Sent raw (UTF-8), which some producers do.
        ("ce-id", "caf\u{e9}-1".as_bytes()),
        ("ce-subject", b"100%25"),
        ("content-type", b"application/json"),
    ];
    let body = br#"{"action":"ok","key":"k"}"#;
    // Posted three times: one event.
    for _ in 0..3 {
        let (code, resp) = raw_post(&host.addr, "/v1/topics/flaky-in/events", headers, body);
        assert_eq!(code, 200, "{resp}");
    }
    host.wait_caught_up("flaky", Duration::from_secs(60));
    let stored = host.read_all("flaky-in");
    assert_eq!(stored.len(), 3);
    for e in &stored {
        assert_eq!(e["source"], "/shop/m\u{fc}nchen", "{e}");
        assert_eq!(e["id"], "caf\u{e9}-1", "{e}");
        assert_eq!(e["subject"], "100%", "{e}");
    }
    let count = host
        .state("flaky")
        .into_iter()
        .find(|(k, _)| k == "count/k")
        .map(|(_, v)| v);
    assert_eq!(count, Some(json!(1)), "applied once");

    // What cannot be decoded is refused, naming the header.
    let (code, resp) = raw_post(
        &host.addr,
        "/v1/topics/flaky-in/events",
        &[
            ("ce-type", b"t"),
            ("ce-id", b"2"),
            ("ce-source", b"/s/\xff\xfe"),
        ],
        body,
    );
    assert_eq!(code, 400, "{resp}");
    assert_eq!(resp["field"], "ce-source", "{resp}");
}

#[test]
fn a_module_owns_its_dead_letters() {
    let host = HostProc::start("[[topics]]\nname = \"flaky-in\"\npartitions = 1\n", |m| {
        stage(m, &["flaky"])
    });
    // Another module may not write into flaky's dead-letter topic.
    let taker = manifest_text("counter", Some("taker"), None, "").replacen(
        "name = ",
        "dead-letter-topic = \"flaky.dlq\"\nname = ",
        1,
    );
    let (code, body) = api(
        &host.addr,
        "POST",
        "/v1/modules",
        Some(&deploy_body(&taker, &component_bytes("counter"))),
        Some(TOKEN),
    );
    assert_eq!(code, 422, "{body}");
    let e = body["error"].as_str().unwrap();
    assert!(
        e.contains("dead-letter-topic") && e.contains("flaky"),
        "{e}"
    );

    host.produce(
        "flaky-in",
        &json!([{"id": "r-1", "source": "/t", "type": "t", "data": {"action": "reject", "key": "k"}}]),
    );
    host.wait_caught_up("flaky", Duration::from_secs(60));
    // A dead letter some other module left in the same topic (as one did
    // before topics were owned).
    let foreign: &[(&str, &[u8])] = &[
        ("ce-type", b"t"),
        ("ce-id", b"r-1"),
        ("ce-source", b"/other"),
        ("ce-sluice.dlq.module", b"other"),
        ("ce-sluice.dlq.class", b"reject"),
        ("ce-sluice.dlq.topic", b"flaky-in"),
        ("ce-sluice.dlq.partition", b"0"),
        ("ce-sluice.dlq.offset", b"0"),
        ("content-type", b"application/json"),
    ];
    let (code, resp) = raw_post(
        &host.addr,
        "/v1/topics/flaky.dlq/events",
        foreign,
        br#"{"action":"ok","key":"other"}"#,
    );
    assert_eq!(code, 200, "{resp}");

    let ls = host.cli(&["dlq", "ls", "flaky"]);
    assert!(ls.stdout.contains("flaky: 1 dead letters"), "{}", ls.stdout);
    let show = host.cli(&["dlq", "show", "flaky", "--id", "r-1"]);
    assert_eq!(show.stdout.lines().count(), 1, "{}", show.stdout);
    let replay = host.cli(&["dlq", "replay", "flaky", "--all", "--no-wait"]);
    assert!(replay.ok, "{}", replay.stderr);
    assert!(replay.stderr.contains("queued 1/1"), "{}", replay.stderr);
    host.wait_caught_up("flaky", Duration::from_secs(60));
    let held = host.read_all("flaky.dlq").len();
    let purge = host.cli(&["dlq", "purge", "flaky"]);
    assert!(!purge.ok, "{}", purge.stdout);
    assert!(purge.stderr.contains("other"), "{}", purge.stderr);
    assert_eq!(host.read_all("flaky.dlq").len(), held, "nothing was purged");
}

/// An in-process host on the embedded log with `module` deployed from the
/// staged modules and `events` in its input topic, caught up.
fn in_process(
    module: &str,
    topic: &str,
    events: Vec<sluice_wire::OwnedEvent>,
) -> (tempfile::TempDir, std::sync::Arc<sluice::Service>) {
    let dir = tempfile::tempdir().unwrap();
    let config = sluice::config::HostConfig {
        data_dir: dir.path().join("data"),
        ..Default::default()
    };
    let svc = sluice::Service::start(config).unwrap();
    svc.topics().ensure(&[(topic.into(), Some(1))]).unwrap();
    svc.lifecycle()
        .deploy_dir(&staged_modules().join(module))
        .unwrap();
    let n = events.len() as u64;
    svc.topics().produce(topic, events).unwrap();
    wait_for(Duration::from_secs(60), "the module to catch up", || {
        (svc.store().cursor(module, topic, 0).unwrap() == Some(n)).then_some(())
    });
    (dir, svc)
}

fn click(i: usize) -> sluice_wire::OwnedEvent {
    sluice_wire::OwnedEvent {
        id: format!("c-{i}"),
        source: "/test".into(),
        ty: "click".into(),
        key: Some(format!("k{}", i % 3).into_bytes()),
        data: b"{}".to_vec(),
        ..Default::default()
    }
}

#[test]
fn a_rewind_that_resets_state_moves_the_cursors_in_the_same_write() {
    let (_dir, svc) = in_process("counter", "clicks", (0..30).map(click).collect());
    svc.lifecycle().pause("counter").unwrap();
    let before = svc.store().writes();
    svc.lifecycle()
        .rewind("counter", sluice::config::StartPosition::Earliest, true)
        .unwrap();
    assert_eq!(
        svc.store().writes() - before,
        1,
        "state dropped and cursors moved in one atomic write"
    );
    assert_eq!(svc.store().cursor("counter", "clicks", 0).unwrap(), Some(0));
    svc.shutdown();
}

#[test]
fn a_quarantine_is_recorded_with_the_dead_letter_that_caused_it() {
    let dir = tempfile::tempdir().unwrap();
    let mods = dir.path().join("modules");
    stage(&mods, &["flaky"]);
    let path = mods.join("flaky/module.toml");
    let manifest = std::fs::read_to_string(&path)
        .unwrap()
        .replace("max-attempts = 3", "max-attempts = 1\nquarantine-after = 1");
    std::fs::write(&path, manifest).unwrap();
    let config = sluice::config::HostConfig {
        data_dir: dir.path().join("data"),
        ..Default::default()
    };
    let svc = sluice::Service::start(config).unwrap();
    svc.topics()
        .ensure(&[("flaky-in".into(), Some(1))])
        .unwrap();
    svc.lifecycle().deploy_dir(&mods.join("flaky")).unwrap();
    let before = svc.store().writes();
    let reject = sluice_wire::OwnedEvent {
        id: "r".into(),
        source: "/t".into(),
        ty: "t".into(),
        data: br#"{"action":"reject","key":"k"}"#.to_vec(),
        ..Default::default()
    };
    svc.topics().produce("flaky-in", vec![reject]).unwrap();
    wait_for(Duration::from_secs(30), "the quarantine", || {
        (svc.lifecycle().modules()[0].status == "quarantined").then_some(())
    });
    assert!(svc.store().is_quarantined("flaky").unwrap());
    assert_eq!(
        svc.store().writes() - before,
        2,
        "the append, then one write for the dead letter, the cursor and the quarantine"
    );
    svc.shutdown();
}

/// A source that reads the embedded log but can be told the host no longer
/// holds its partitions (as a Kafka member dropped from its group), or that
/// the group gave it a partition it did not know of (as Kafka does when a
/// topic grows).
struct Losable {
    log: std::sync::Arc<sluice::source::log::EventLog>,
    held: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Partitions the input admits to at start (all if 0).
    shown: u32,
    /// Placements the next poll hands out.
    grow: std::sync::Arc<std::sync::Mutex<Vec<sluice::source::Placement>>>,
}

struct LosableInput {
    inner: Box<dyn sluice::source::Input>,
    held: std::sync::Arc<std::sync::atomic::AtomicBool>,
    shown: u32,
    grow: std::sync::Arc<std::sync::Mutex<Vec<sluice::source::Placement>>>,
}

impl sluice::source::Input for LosableInput {
    fn partitions(&mut self, topic: &str) -> Option<u32> {
        let n = self.inner.partitions(topic)?;
        Some(if self.shown > 0 { n.min(self.shown) } else { n })
    }
    fn start(
        &mut self,
        topic: &str,
        p: u32,
        start: sluice::config::StartPosition,
    ) -> Result<Option<u64>, sluice::source::TopicError> {
        self.inner.start(topic, p, start)
    }
    fn holds(&mut self, _topic: &str, _p: u32) -> bool {
        self.held.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn poll(&mut self) -> Vec<sluice::source::Placement> {
        let mut placed = self.inner.poll();
        placed.append(&mut self.grow.lock().unwrap());
        placed
    }
    fn idle(&mut self, timeout: Duration) -> Vec<sluice::source::Placement> {
        self.inner.idle(timeout)
    }
    fn read(
        &mut self,
        topic: &str,
        p: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<sluice::source::Record>, sluice::source::TopicError> {
        self.inner.read(topic, p, from, max)
    }
    fn committed(&mut self, topic: &str, p: u32, next: u64) {
        self.inner.committed(topic, p, next)
    }
}

impl sluice::source::Source for Losable {
    fn input(
        &self,
        module: &str,
        topics: &[(String, sluice::config::StartPosition)],
    ) -> Result<Box<dyn sluice::source::Input>, sluice::source::TopicError> {
        Ok(Box::new(LosableInput {
            inner: self.log.input(module, topics)?,
            held: self.held.clone(),
            shown: self.shown,
            grow: self.grow.clone(),
        }))
    }
    fn progress(&self, module: &str, topics: &[String]) -> Vec<sluice::source::Progress> {
        self.log.progress(module, topics)
    }
    fn rewind(
        &self,
        module: &str,
        to: &[sluice::source::Placement],
    ) -> Result<(), sluice::source::TopicError> {
        sluice::source::Source::rewind(self.log.as_ref(), module, to)
    }
    fn enforce_retention(&self) -> Result<u64, sluice::source::TopicError> {
        Ok(0)
    }
    fn health(&self) -> Option<(&'static str, sluice::source::Health)> {
        None
    }
}

/// A module's pipeline started in-process on an embedded log, reading
/// through a [`Losable`] source.
struct Rig {
    _dir: tempfile::TempDir,
    store: std::sync::Arc<sluice::state::Store>,
    log: std::sync::Arc<sluice::source::log::EventLog>,
    metrics: std::sync::Arc<sluice::pipeline::Metrics>,
    pipeline: sluice::pipeline::Pipeline,
}

/// Start the staged `module` (its manifest changed by `tune`) with `topics`
/// created and `events` already in `input`, its source told which
/// partitions to show (`shown`, 0 for all), whether it holds them (`held`)
/// and what to place later (`grow`).
fn rig(
    module: &str,
    topics: &[(&str, Option<u32>)],
    (input, events): (&str, Vec<sluice_wire::OwnedEvent>),
    tune: impl FnOnce(&mut sluice::config::Manifest),
    held: std::sync::Arc<std::sync::atomic::AtomicBool>,
    shown: u32,
    grow: std::sync::Arc<std::sync::Mutex<Vec<sluice::source::Placement>>>,
) -> Rig {
    use sluice::source::Topics as _;
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(sluice::state::Store::open(dir.path(), false).unwrap());
    let log = sluice::source::log::EventLog::open(store.clone(), 1, 1000, true).unwrap();
    let topics: Vec<(String, Option<u32>)> =
        topics.iter().map(|(t, n)| (t.to_string(), *n)).collect();
    log.ensure(&topics).unwrap();
    log.produce(input, events).unwrap();
    let runtime = std::sync::Arc::new(sluice::runtime::Runtime::new(1 << 30).unwrap());
    let mut manifest =
        sluice::config::Manifest::load(&staged_modules().join(module).join("module.toml")).unwrap();
    tune(&mut manifest);
    let loaded = runtime.load(&component(module)).unwrap();
    let metrics = std::sync::Arc::new(sluice::pipeline::Metrics::detached());
    let cx = sluice::pipeline::Context {
        store: store.clone(),
        runtime,
        source: std::sync::Arc::new(Losable {
            log: log.clone(),
            held,
            shown,
            grow,
        }),
        output: log.clone(),
        batch_size: 64,
        telemetry: std::sync::Arc::new(sluice::telemetry::Telemetry::off()),
        system: "sluice",
        group_prefix: None,
        schemas: std::sync::Arc::new(sluice::schema::Registry::empty(store.clone())),
    };
    let pipeline = sluice::pipeline::Pipeline::start(
        cx,
        std::sync::Arc::new(manifest),
        loaded,
        metrics.clone(),
    )
    .unwrap();
    Rig {
        _dir: dir,
        store,
        log,
        metrics,
        pipeline,
    }
}

#[test]
fn a_host_that_lost_its_partition_commits_nothing_for_it() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let held = std::sync::Arc::new(AtomicBool::new(true));
    let event = sluice_wire::OwnedEvent {
        id: "lost-1".into(),
        source: "/t".into(),
        ty: "t".into(),
        data: br#"{"action":"retry-once","key":"k"}"#.to_vec(),
        ..Default::default()
    };
    let mut r = rig(
        "flaky",
        &[
            ("flaky-in", Some(1)),
            ("flaky-out", None),
            ("flaky.dlq", None),
        ],
        ("flaky-in", vec![event]),
        |m| {
            m.retry.backoff.initial = Duration::from_millis(1500);
            m.retry.backoff.max = Duration::from_millis(1500);
        },
        held.clone(),
        0,
        Default::default(),
    );
    // The first attempt fails; during the backoff the partition goes to
    // another host.
    wait_for(Duration::from_secs(30), "the first attempt", || {
        (r.metrics.retries.get() >= 1).then_some(())
    });
    held.store(false, Ordering::SeqCst);
    // Past the 1.5 s backoff: the retry would have succeeded and committed.
    std::thread::sleep(Duration::from_secs(3));
    r.pipeline.stop();
    assert_eq!(
        r.metrics.applied.get(),
        0,
        "applied after losing the partition"
    );
    assert_eq!(r.store.cursor("flaky", "flaky-in", 0).unwrap(), Some(0));
    assert_eq!(
        r.log.bounds("flaky-out", 0),
        Some((0, 0)),
        "nothing published"
    );
}

#[test]
fn a_partition_the_source_adds_later_is_read() {
    let events: Vec<sluice_wire::OwnedEvent> = (0..40)
        .map(|i| sluice_wire::OwnedEvent {
            key: Some(format!("key-{i}").into_bytes()),
            ..click(i)
        })
        .collect();
    let on = |p: u32| {
        events
            .iter()
            .filter(|e| sluice::source::partition::for_event(e, 2) == Some(p))
            .count() as u64
    };
    let (in0, in1) = (on(0), on(1));
    assert!(in0 > 0 && in1 > 0, "both partitions get events");
    let grow = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    // The input admits to one partition of `clicks` at start.
    let mut r = rig(
        "counter",
        &[("clicks", Some(2)), ("counts", None), ("counter.dlq", None)],
        ("clicks", events),
        |_| {},
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        1,
        grow.clone(),
    );
    wait_for(Duration::from_secs(30), "partition 0 read", || {
        (r.store.cursor("counter", "clicks", 0).unwrap() == Some(in0)).then_some(())
    });
    assert_eq!(r.metrics.applied.get(), in0);
    // Now the group gives it partition 1, which the topic has grown to.
    grow.lock().unwrap().push(sluice::source::Placement {
        topic: "clicks".into(),
        partition: 1,
        at: 0,
    });
    wait_for(Duration::from_secs(30), "partition 1 read", || {
        (r.store.cursor("counter", "clicks", 1).unwrap() == Some(in1)).then_some(())
    });
    assert_eq!(r.metrics.applied.get(), in0 + in1);
    r.pipeline.stop();
}
