//! Modules in JavaScript and Python, built from source by the harness with the
//! pinned toolchains: the same aggregator in three languages gives the same
//! outputs, and what the sandbox does not grant fails inside the guest.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::*;

const AGGREGATORS: [&str; 3] = ["aggregator", "aggregator-js", "aggregator-py"];

#[test]
fn the_same_aggregator_in_rust_javascript_and_python_gives_identical_outputs() {
    const N: usize = 10_000;
    let host = HostProc::start("[[topics]]\nname = \"orders\"\npartitions = 3\n", |m| {
        stage(m, &AGGREGATORS)
    });
    let (mut events, expected) = orders(N, 97, 61, "lang-");
    // A few that are not orders: each language must reject them, not emit.
    for (i, bad) in [
        json!("not an order"),
        json!({"customer": "c1"}),
        json!({"customer": 7, "amount": 1}),
    ]
    .into_iter()
    .enumerate()
    {
        events.push(
            json!({"specversion": "1.0", "id": format!("bad-{i}"), "source": "/test/orders",
                           "type": "order.created", "partitionkey": "c1", "data": bad}),
        );
    }
    for c in events.chunks(1000) {
        produce(&host.addr, "orders", &Value::Array(c.to_vec())).unwrap();
    }
    for m in AGGREGATORS {
        host.wait_caught_up(m, Duration::from_secs(600));
        host.assert_totals_of(m, &expected);
    }
    // Per module: input id -> (type, key, data exactly as emitted).
    let outputs = host.read_all("totals");
    let mut by_module: BTreeMap<String, BTreeMap<String, (Value, Value, String)>> = BTreeMap::new();
    for o in &outputs {
        let module = o["source"]
            .as_str()
            .unwrap()
            .trim_start_matches("/sluice/")
            .to_string();
        let data = o["data"].clone();
        let input = data["input"].as_str().unwrap().to_string();
        let entry = (
            o["type"].clone(),
            o["partitionkey"].clone(),
            data.to_string(),
        );
        let prev = by_module.entry(module).or_default().insert(input, entry);
        assert!(prev.is_none(), "one output per input");
    }
    assert_eq!(by_module.len(), 3, "{:?}", by_module.keys());
    let rust = &by_module["aggregator"];
    assert_eq!(rust.len(), N);
    for m in ["aggregator-js", "aggregator-py"] {
        assert_eq!(
            &by_module[m], rust,
            "{m}'s outputs differ from the Rust module's"
        );
        let info = host.module(m);
        let metrics = info.metrics.unwrap();
        assert_eq!(
            metrics.dead_letters, 3,
            "{m}: the 3 non-orders are dead-lettered"
        );
        assert_eq!(
            metrics.traps.values().sum::<u64>(),
            0,
            "{m}: {:?}",
            metrics.traps
        );
    }
    // And the same state, byte for byte (JSON written the same way).
    let states: Vec<Vec<(String, Value)>> = AGGREGATORS.iter().map(|m| host.state(m)).collect();
    assert_eq!(states[0], states[1]);
    assert_eq!(states[0], states[2]);
}

#[test]
fn javascript_and_python_modules_get_nothing_they_try_to_reach() {
    // Something to reach: a listening socket, a file, an environment variable.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let host = HostProc::start("[[topics]]\nname = \"snoop-in\"\npartitions = 1\n", |m| {
        stage(m, &["snoop-js", "snoop-py"]);
        for name in ["snoop-js", "snoop-py"] {
            let p = m.join(name).join("module.toml");
            let t = std::fs::read_to_string(&p).unwrap();
            std::fs::write(&p, t.replace("port = \"0\"", &format!("port = \"{port}\""))).unwrap();
        }
    });
    let events: Vec<Value> = (0..3)
        .map(|i| json!({"specversion": "1.0", "id": format!("s-{i}"), "source": "/t", "type": "go", "data": {}}))
        .collect();
    produce(&host.addr, "snoop-in", &Value::Array(events)).unwrap();
    for m in ["snoop-js", "snoop-py"] {
        host.wait_caught_up(m, Duration::from_secs(300));
    }
    let out = host.read_all("snoop-out");
    assert_eq!(
        out.len(),
        6,
        "every attempt reported, by both modules: {out:?}"
    );
    for o in &out {
        let d = &o["data"];
        eprintln!("{}: {d}", o["partitionkey"]);
        for what in ["file", "socket", "env"] {
            let r = d[what].as_str().unwrap();
            assert!(r.starts_with("failed: "), "{what} was reachable: {r}");
        }
        if o["partitionkey"] == "py" {
            assert!(
                d["listdir"].as_str().unwrap().starts_with("failed: "),
                "{d}"
            );
            assert_eq!(d["environ"], json!({}), "an empty environment");
        }
    }
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "nothing connected to the listening socket"
    );
    for m in ["snoop-js", "snoop-py"] {
        // The host says what it granted: nothing.
        let detail = host.get(&format!("/v1/modules/{m}"));
        let sandbox = &detail["sandbox"];
        assert_eq!(sandbox["directories"], json!([]), "{detail}");
        assert_eq!(sandbox["network"], "denied");
        assert_eq!(sandbox["environment"], json!({}));
        let info = host.module(m);
        assert_eq!(info.status, "running");
        assert_eq!(info.metrics.unwrap().dead_letters, 0);
    }
    assert!(get(&host.addr, "/healthz").is_ok(), "the host is up");
    // Their log lines reach the host's log through the log import.
    let log = host.log();
    assert!(log.contains("snoop-js tried 3 things"), "{log}");
    assert!(log.contains("snoop-py tried 5 things"), "{log}");
}
