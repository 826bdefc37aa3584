//! Misbehaving modules are contained: each kind of abuse ends as a dead letter
//! of the right class, the host stays up and bounded, and a healthy module on
//! the same input is exact.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::*;

/// Peak resident memory the host may reach while containing them.
const RSS_BOUND: u64 = 512 << 20;

#[test]
fn misbehaving_module_is_contained_and_the_healthy_one_stays_exact() {
    let mut host = HostProc::start("", |m| stage(m, &["aggregator", "adversary"]));
    let modes = [
        ("loop", "deadline", ""),
        ("memory", "memory", ""),
        ("recursion", "stack", ""),
        ("panic", "panic", ""),
        ("flood", "output", "output limit"),
        ("state-bomb", "state", "state limit"),
        ("busy-over", "deadline", ""),
        ("sleep-over", "deadline", "per-event deadline"),
        // Every byte handed to the host counts: headers, keys, state keys.
        ("header-bomb", "output", "output limit"),
        ("key-bomb", "output", "output limit"),
        ("state-key-bomb", "state", "state limit"),
    ];
    // Close to the deadline but under it: these must succeed like any other.
    // Log lines of 4 MiB are cut, not refused.
    let harmless = ["busy-under", "sleep-under", "log-bomb"];
    let (mut events, expected) = orders(720, 20, 5, "adv-");
    let mut expect: BTreeMap<String, (&str, &str)> = BTreeMap::new();
    for (i, e) in events.iter_mut().enumerate() {
        if i % 12 == 0 {
            let (mode, class, msg) = modes[(i / 12) % modes.len()];
            e["data"]["mode"] = json!(mode);
            expect.insert(e["id"].as_str().unwrap().to_string(), (class, msg));
        } else if i % 12 == 6 {
            e["data"]["mode"] = json!(harmless[(i / 12) % harmless.len()]);
        }
    }
    host.produce("orders", &Value::Array(events));
    host.wait_caught_up("aggregator", Duration::from_secs(120));
    host.wait_caught_up("adversary", Duration::from_secs(300));
    assert!(host.alive(), "host died; log:\n{}", host.log());

    // The healthy module saw every event and is exact.
    host.assert_aggregator_totals(&expected);

    // Every abusive event is a dead letter of the right class; nothing else is.
    let dlq = host.read_all("adversary.dlq");
    let got: HashSet<&str> = dlq.iter().map(|d| d["id"].as_str().unwrap()).collect();
    let missing: Vec<_> = expect
        .iter()
        .filter(|(id, _)| !got.contains(id.as_str()))
        .collect();
    assert!(missing.is_empty(), "not dead-lettered: {missing:?}");
    assert_eq!(dlq.len(), expect.len());
    for d in &dlq {
        let id = d["id"].as_str().unwrap();
        let (class, msg) = expect[id];
        let h = &d["headers"];
        assert_eq!(h["sluice.dlq.class"], class, "{id}: {h}");
        assert!(
            h["sluice.dlq.message"].as_str().unwrap().contains(msg),
            "{id}: {h}"
        );
    }
    // The other events went through the same module normally.
    let ok: HashSet<String> = host
        .read_all("adversary-out")
        .iter()
        .filter(|e| e["type"] == "ok")
        .map(|e| e["data"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        ok.len(),
        720 - expect.len(),
        "one output per harmless event, none from the flood"
    );
    assert!(
        host.read_all("adversary-out")
            .iter()
            .all(|e| e["type"] == "ok"),
        "no flood output committed"
    );

    let m = host.module("adversary").metrics.unwrap();
    for kind in ["deadline", "memory", "stack", "panic", "output", "state"] {
        assert!(m.traps[kind] >= 5, "{kind} traps counted: {:?}", m.traps);
    }
    let longest = host.log().lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 8192, "a log line of {longest} bytes");
    let peak = host.peak_rss();
    eprintln!("host peak RSS: {} MiB; traps: {:?}", peak >> 20, m.traps);
    assert!(
        peak < RSS_BOUND,
        "peak RSS {} MiB over the {} MiB bound",
        peak >> 20,
        RSS_BOUND >> 20
    );
}

#[test]
fn a_module_gets_no_files_environment_or_network() {
    // Something real to reach: a listening socket (a closed port would be
    // refused whatever the sandbox said).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let host = HostProc::start("", |m| stage(m, &["adversary"]));
    let events: Vec<Value> = ["fs", "env", "net", "print"]
        .iter()
        .map(|mode| json!({"id": mode, "type": "t", "data": {"mode": mode, "port": port}}))
        .collect();
    host.produce("orders", &Value::Array(events));
    host.wait_caught_up("adversary", Duration::from_secs(60));
    let outcomes = wait_for(Duration::from_secs(30), "three outcomes", || {
        let o: Vec<String> = host
            .read_all("adversary-out")
            .iter()
            .filter(|e| e["type"] == "authority")
            .map(|e| e["data"].as_str().unwrap().to_string())
            .collect();
        (o.len() == 3).then_some(o)
    });
    for what in ["fs", "env", "net"] {
        let o = outcomes.iter().find(|o| o.starts_with(what)).unwrap();
        assert!(o.starts_with(&format!("{what}: denied")), "{o}");
    }
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "nothing connected to the listening socket"
    );
    assert_eq!(
        host.read_all("adversary.dlq").len(),
        0,
        "the denials are ordinary errors, not traps"
    );
}

#[test]
fn a_host_wide_memory_budget_bounds_every_module_together() {
    // Below the adversary's own 32 MiB cap: the budget is what stops it.
    let host = HostProc::start("[pipeline]\nmemory-budget = \"12MiB\"\n", |m| {
        stage(m, &["aggregator", "adversary"])
    });
    let (mut events, expected) = orders(60, 6, 3, "budget-");
    for e in events.iter_mut().step_by(20) {
        e["data"]["mode"] = json!("memory");
    }
    host.produce("orders", &Value::Array(events));
    host.wait_caught_up("aggregator", Duration::from_secs(120));
    host.wait_caught_up("adversary", Duration::from_secs(120));

    host.assert_aggregator_totals(&expected);
    let dlq = host.read_all("adversary.dlq");
    assert_eq!(dlq.len(), 3, "{dlq:?}");
    for d in &dlq {
        assert_eq!(d["headers"]["sluice.dlq.class"], "memory");
        let msg = d["headers"]["sluice.dlq.message"].as_str().unwrap();
        assert!(msg.contains("memory-budget"), "{msg}");
    }
    let status = host.get("/v1/status");
    let used = status["wasm_memory"]["used"].as_u64().unwrap();
    assert!(used > 0 && used <= 12 << 20, "{status}");
}

/// A component of two core instances, each with a memory of its own; every
/// event grows each by 40 MiB. Its manifest allows 64 MiB.
const TWO_MEMORIES: &str = r#"(component
  (core module $other
    (memory (export "mem") 1)
    (func (export "grow") (result i32) (memory.grow (i32.const 640))))
  (core module $main
    (import "other" "grow" (func $grow (result i32)))
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 1024))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
      (global.set $heap (i32.add (local.get $p) (local.get 3)))
      (block $fits
        (br_if $fits (i32.le_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536))))
        (drop (memory.grow (i32.add (i32.shr_u (i32.sub (global.get $heap)
          (i32.mul (memory.size) (i32.const 65536))) (i32.const 16)) (i32.const 1)))))
      (local.get $p))
    (func (export "handle") (param i32) (result i32)
      (drop (call $grow))
      (drop (memory.grow (i32.const 640)))
      (i32.store (i32.const 16) (i32.const 0))
      (i32.const 16)))
  (core instance $o (instantiate $other))
  (core instance $m (instantiate $main (with "other" (instance $o))))
  (type $event' (record
    (field "id" string) (field "source" string) (field "type" string)
    (field "subject" (option string)) (field "time" (option string))
    (field "datacontenttype" (option string)) (field "dataschema" (option string))
    (field "data" (list u8)) (field "key" (option (list u8)))
    (field "headers" (list (tuple string (list u8))))
    (field "topic" string) (field "partition" u32) (field "offset" u64)))
  (export $event "event" (type $event'))
  (type $failure' (variant (case "retry" string) (case "reject" string)))
  (export $failure "failure" (type $failure'))
  (func $handle (param "event" $event) (result (result (error $failure)))
    (canon lift (core func $m "handle") (memory (core memory $m "memory"))
      (realloc (core func $m "realloc"))))
  (export "handle" (func $handle)))"#;

#[test]
fn every_memory_of_a_component_counts_against_its_limit() {
    let host = HostProc::start("", |m| {
        stage(m, &["aggregator"]);
        let dir = m.join("two-memories");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("c.wasm"), wat::parse_str(TWO_MEMORIES).unwrap()).unwrap();
        std::fs::write(
            dir.join("module.toml"),
            "name = \"two-memories\"\nversion = \"1\"\ncomponent = \"c.wasm\"\n[[subscribe]]\ntopic = \"orders\"\n[limits]\nmemory = \"64MiB\"\n[retry]\nmax-attempts = 1\n",
        )
        .unwrap();
    });
    assert_eq!(host.module("two-memories").status, "running");
    let (events, expected) = orders(20, 4, 9, "mem-");
    host.produce("orders", &Value::Array(events));
    host.wait_caught_up("aggregator", Duration::from_secs(60));
    host.wait_caught_up("two-memories", Duration::from_secs(60));
    // 40 + 40 MiB is over 64 MiB, though each memory alone is under it. A
    // limiter that counted memories one by one would let every other event
    // through (the first growth of a fresh instance fits).
    let dlq = host.read_all("two-memories.dlq");
    assert_eq!(dlq.len(), 20, "every event failed");
    assert!(
        dlq.iter()
            .all(|d| d["headers"]["sluice.dlq.class"] == "memory"),
        "{:?}",
        dlq[0]["headers"]
    );
    assert_eq!(host.module("two-memories").metrics.unwrap().applied, 0);
    host.assert_aggregator_totals(&expected);
    let peak = host.peak_rss();
    assert!(peak < RSS_BOUND, "peak RSS {} MiB", peak >> 20);
}
