//! Failed attempts leave no trace; retried events apply once; rejected and
//! exhausted events land in the dead-letter topic with their reasons.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::*;

#[test]
fn failed_attempts_leave_no_trace_and_retries_apply_once() {
    let host = HostProc::start("", |m| stage(m, &["flaky"]));
    let actions = [
        "ok",
        "reject",
        "ok",
        "retry-once",
        "ok",
        "retry-always",
        "ok",
        "panic",
        "retry-twice",
        "ok",
    ];
    let mut expect: BTreeMap<String, &str> = BTreeMap::new();
    let events: Vec<Value> = (0..300)
        .map(|i| {
            let action = actions[i % actions.len()];
            let id = format!("f-{i}");
            expect.insert(id.clone(), action);
            json!({"id": id, "source": "/test", "type": "t", "partitionkey": format!("k{}", i % 7),
                   "data": {"action": action, "key": format!("k{}", i % 7)}})
        })
        .collect();
    host.produce("flaky-in", &Value::Array(events));
    host.wait_caught_up("flaky", Duration::from_secs(120));

    let succeeded: HashSet<&String> = expect
        .iter()
        .filter(|(_, a)| matches!(**a, "ok" | "retry-once" | "retry-twice"))
        .map(|(id, _)| id)
        .collect();
    let state: BTreeMap<String, Value> = host.state("flaky").into_iter().collect();
    let touched: HashSet<String> = state
        .keys()
        .filter_map(|k| k.strip_prefix("touched/"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        touched.len(),
        succeeded.len(),
        "only successful events left state"
    );
    for id in &touched {
        assert!(succeeded.contains(id), "{id} failed but left state");
    }
    // Per-key counters count each successful event exactly once.
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for (i, (id, a)) in expect.iter().enumerate() {
        let _ = i;
        if matches!(*a, "ok" | "retry-once" | "retry-twice") {
            let n: usize = id.trim_start_matches("f-").parse().unwrap();
            *counts.entry(format!("count/k{}", n % 7)).or_default() += 1;
        }
    }
    for (k, n) in &counts {
        assert_eq!(state[k].as_u64(), Some(*n), "{k}");
    }

    let out = wait_for(Duration::from_secs(60), "outputs", || {
        let o = host.read_all("flaky-out");
        (o.len() >= succeeded.len()).then_some(o)
    });
    let out_ids: Vec<&str> = out
        .iter()
        .map(|o| o["data"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        out_ids.len(),
        succeeded.len(),
        "one output per successful event, none from failed attempts"
    );
    assert_eq!(
        out_ids.iter().collect::<HashSet<_>>().len(),
        succeeded.len()
    );

    let dlq = wait_for(Duration::from_secs(60), "dead letters", || {
        let d = host.read_all("flaky.dlq");
        (d.len() >= 90).then_some(d)
    });
    assert_eq!(dlq.len(), 90, "30 rejected + 30 exhausted + 30 panicked");
    for d in &dlq {
        let id = d["id"].as_str().unwrap();
        let h = &d["headers"];
        let (class, attempts) = match expect[id] {
            "reject" => ("reject", "1"),
            "retry-always" => ("retry", "3"),
            "panic" => ("panic", "3"),
            other => panic!("{id} ({other}) should not be dead-lettered"),
        };
        assert_eq!(h["sluice.dlq.class"], class, "{id}");
        assert_eq!(h["sluice.dlq.attempts"], attempts, "{id}");
        assert_eq!(h["sluice.dlq.module"], "flaky");
        assert_eq!(h["sluice.dlq.module-version"], "0.1.0");
        assert_eq!(h["sluice.dlq.topic"], "flaky-in");
        for k in [
            "partition",
            "offset",
            "timestamp",
            "first-failure",
            "last-failure",
            "message",
        ] {
            assert!(
                h[format!("sluice.dlq.{k}")]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{id} lacks {k}"
            );
        }
        assert_eq!(d["data"]["action"], expect[id], "original data kept");
    }
    let m = host.module("flaky").metrics.unwrap();
    assert!(m.traps["panic"] >= 30);
    // Attempts per event: retry-once 2, retry-twice 3, retry-always and panic
    // 3 (max-attempts): so 1 + 2 + 2 + 2 retries for each 30 of them.
    assert_eq!(m.retries, 30 * (1 + 2 + 2 + 2), "{m:?}");
}

#[test]
fn consecutive_failures_quarantine_the_module_until_resumed() {
    let mut host = HostProc::start("", |m| {
        stage(m, &["flaky"]);
        let manifest = std::fs::read_to_string(m.join("flaky/module.toml")).unwrap();
        let manifest =
            manifest.replace("max-attempts = 3", "max-attempts = 1\nquarantine-after = 3");
        std::fs::write(m.join("flaky/module.toml"), manifest).unwrap();
    });
    let rejects: Vec<Value> = (0..3)
        .map(|i| json!({"id": format!("r-{i}"), "type": "t", "partitionkey": "k", "data": {"action": "reject", "key": "k"}}))
        .collect();
    host.produce("flaky-in", &Value::Array(rejects));
    wait_for(Duration::from_secs(30), "quarantine", || {
        (host.module("flaky").status == "quarantined").then_some(())
    });

    // Quarantined: new events wait, lag grows, also across a restart.
    let oks: Vec<Value> = (0..20)
        .map(|i| json!({"id": format!("ok-{i}"), "type": "t", "partitionkey": "k", "data": {"action": "ok", "key": "k"}}))
        .collect();
    host.produce("flaky-in", &Value::Array(oks));
    let lag = |h: &HostProc| {
        h.module("flaky")
            .partitions
            .iter()
            .map(|p| p.lag)
            .sum::<u64>()
    };
    assert_eq!(lag(&host), 20);
    host.restart();
    assert_eq!(
        host.module("flaky").status,
        "quarantined",
        "quarantine survives a restart"
    );
    assert_eq!(lag(&host), 20);
    assert_eq!(host.read_all("flaky-out").len(), 0);

    // `sluice resume` drains it.
    let run = host.cli(&["resume", "flaky"]);
    assert!(run.ok, "{}", run.stderr);
    assert!(run.stderr.contains("resumed flaky"), "{}", run.stderr);
    host.wait_caught_up("flaky", Duration::from_secs(60));
    assert_eq!(host.module("flaky").status, "running");
    let outs = wait_for(Duration::from_secs(30), "20 outputs", || {
        let o = host.read_all("flaky-out");
        (o.len() == 20).then_some(o)
    });
    assert!(
        outs.iter()
            .all(|o| o["data"]["id"].as_str().unwrap().starts_with("ok-"))
    );
    assert_eq!(host.read_all("flaky.dlq").len(), 3);
}
