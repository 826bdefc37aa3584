//! `sluice dlq`: dead letters are listed and shown; after the module is
//! upgraded with a fix they are replayed through it and applied exactly once;
//! a second replay applies nothing; purge empties the dead-letter topic. On
//! the embedded log and on Kafka.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::*;

fn event(i: usize, action: &str) -> Value {
    json!({"id": format!("e-{i}"), "source": "/test", "type": "t", "partitionkey": format!("k{}", i % 5),
           "data": {"action": action, "key": format!("k{}", i % 5)}})
}

/// `count/<key>` values of the flaky module's state.
fn counts(host: &HostProc) -> BTreeMap<String, u64> {
    host.state("flaky")
        .into_iter()
        .filter(|(k, _)| k.starts_with("count/"))
        .map(|(k, v)| (k, v.as_u64().unwrap()))
        .collect()
}

#[test]
fn dead_letters_replayed_after_an_upgrade_apply_once() {
    dead_letter_scenario("");
}

#[test]
fn kafka_dead_letters_replayed_after_an_upgrade_apply_once() {
    let broker = sluice_tests::kafka::Broker::start(sluice_tests::kafka::Storage::Memory);
    dead_letter_scenario(&broker.host_config());
}

/// List, show, replay twice and purge, on the backend `config` names.
fn dead_letter_scenario(config: &str) {
    let mut host = HostProc::start(config, |m| stage(m, &["flaky"]));
    // Every fifth event is one version 0.1.0 rejects.
    let events: Vec<Value> = (0..100)
        .map(|i| event(i, if i % 5 == 2 { "reject" } else { "ok" }))
        .collect();
    host.produce("flaky-in", &Value::Array(events));
    host.wait_caught_up("flaky", Duration::from_secs(60));
    let dead = wait_for(Duration::from_secs(30), "20 dead letters", || {
        let d = host.read_all("flaky.dlq");
        (d.len() == 20).then_some(d)
    });
    assert!(
        dead.iter()
            .all(|d| d["headers"]["sluice.dlq.class"] == "reject")
    );

    let ls = host.cli(&["dlq", "ls", "flaky"]);
    assert!(ls.ok, "{}", ls.stderr);
    assert!(
        ls.stdout.contains("flaky: 20 dead letters in flaky.dlq"),
        "{}",
        ls.stdout
    );
    assert!(
        ls.stdout.contains("reject") && ls.stdout.contains(" 20"),
        "{}",
        ls.stdout
    );
    assert!(
        ls.stdout.contains("oldest:") && ls.stdout.contains("newest:"),
        "{}",
        ls.stdout
    );

    let show = host.cli(&["dlq", "show", "flaky", "--id", "e-7", "--id", "e-8"]);
    assert!(show.ok, "{}", show.stderr);
    let shown: Vec<Value> = show
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(shown.len(), 1, "{}", show.stdout);
    assert_eq!(shown[0]["id"], "e-7");
    assert_eq!(shown[0]["data"]["action"], "reject");
    assert!(
        show.stderr.contains("no dead letter for event id `e-8`"),
        "{}",
        show.stderr
    );

    let before = counts(&host);
    assert_eq!(before.values().sum::<u64>(), 80);

    // Upgrade: version 0.2.0 accepts what 0.1.0 rejected.
    assert_eq!(host.terminate(), Some(0));
    let dir = host.dir.path().join("modules/flaky");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    for f in std::fs::read_dir(staged_modules().join("flaky-v2")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dir.join(f.file_name())).unwrap();
    }
    host.restart();
    assert_eq!(host.module("flaky").version.as_deref(), Some("0.2.0"));

    let replay = host.cli(&["dlq", "replay", "flaky", "--all", "--rate", "40"]);
    assert!(replay.ok, "{}", replay.stderr);
    assert!(replay.stderr.contains("queued 20/20"), "{}", replay.stderr);
    assert!(replay.stderr.contains("read 20/20"), "{}", replay.stderr);
    host.wait_caught_up("flaky", Duration::from_secs(60));

    // Each replayed event applied once: every key's count is its event count.
    let mut expect: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..100 {
        *expect.entry(format!("count/k{}", i % 5)).or_default() += 1;
    }
    let after = counts(&host);
    assert_eq!(after, expect);
    let outputs = |h: &HostProc| {
        let mut n: HashMap<String, usize> = HashMap::new();
        for o in h.read_all("flaky-out") {
            *n.entry(o["data"]["id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        n
    };
    let out = wait_for(Duration::from_secs(30), "100 outputs", || {
        let o = outputs(&host);
        (o.len() == 100).then_some(o)
    });
    assert!(
        out.values().all(|n| *n == 1),
        "one output per event: {out:?}"
    );
    // The rejected events' own effects are there now.
    let replayed_state = host.state("flaky");
    assert!(replayed_state.iter().any(|(k, _)| k == "touched/e-2"));

    // Replaying again (one id, then all) applies nothing.
    let dedup_before = host.module("flaky").metrics.unwrap().dedup_hits;
    for args in [
        &["dlq", "replay", "flaky", "--id", "e-2"][..],
        &["dlq", "replay", "flaky", "--all"][..],
    ] {
        let again = host.cli(args);
        assert!(again.ok, "{}", again.stderr);
    }
    host.wait_caught_up("flaky", Duration::from_secs(60));
    assert_eq!(counts(&host), expect, "a second replay changed state");
    assert_eq!(outputs(&host), out, "a second replay emitted");
    assert_eq!(
        host.module("flaky").metrics.unwrap().dedup_hits - dedup_before,
        21,
        "every replayed event was recognised as applied"
    );

    let purge = host.cli(&["dlq", "purge", "flaky"]);
    assert!(purge.ok, "{}", purge.stderr);
    assert!(purge.stderr.contains("purged 20"), "{}", purge.stderr);
    assert!(host.read_all("flaky.dlq").is_empty());
    let ls = host.cli(&["dlq", "ls", "flaky"]);
    assert!(ls.stdout.contains("flaky: 0 dead letters"), "{}", ls.stdout);

    let bad = host.cli(&["dlq", "ls", "nope"]);
    assert!(
        !bad.ok && bad.stderr.contains("no module named `nope`"),
        "{}",
        bad.stderr
    );
}
