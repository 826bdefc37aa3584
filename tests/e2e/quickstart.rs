//! The example modules end to end, through the CLI clients as a user runs them.

use std::time::Duration;

use sluice_tests::*;

#[test]
fn example_modules_filter_aggregate_and_route_the_sample_events() {
    let host = HostProc::start("", |m| stage(m, &["filter", "aggregator", "router"]));
    let sample = sluice_tests::obs::repo().join("examples/quickstart/orders.jsonl");
    let run = host.cli(&["produce", "orders", "--file", sample.to_str().unwrap()]);
    assert!(run.ok, "{}", run.stderr);
    let err = run.stderr;
    let lines = std::fs::read_to_string(sample).unwrap();
    let inputs: Vec<serde_json::Value> = lines
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        err.contains(&format!("produced {} events", inputs.len())),
        "{err}"
    );
    for m in ["filter", "aggregator", "router"] {
        host.wait_caught_up(m, Duration::from_secs(60));
    }

    // filter: exactly the order.created events with amount >= 10000.
    let large: Vec<&serde_json::Value> = inputs
        .iter()
        .filter(|e| e["type"] == "order.created" && e["data"]["amount"].as_i64().unwrap() >= 10_000)
        .collect();
    let got = wait_for(Duration::from_secs(30), "large orders", || {
        let g = host.read_all("large-orders");
        (g.len() >= large.len()).then_some(g)
    });
    assert_eq!(got.len(), large.len());
    assert!(
        !large.is_empty() && large.len() < inputs.len(),
        "the sample exercises both sides of the filter"
    );

    // aggregator: the last update per customer carries the sum of its orders.
    let created: Vec<_> = inputs
        .iter()
        .filter(|e| e["type"] == "order.created")
        .collect();
    let totals = wait_for(Duration::from_secs(30), "totals", || {
        let t = host.read_all("totals");
        (t.len() >= created.len()).then_some(t)
    });
    assert_eq!(totals.len(), created.len());
    let state = host.state("aggregator");
    for (k, v) in &state {
        let c = k.strip_prefix("total/").unwrap();
        let sum: i64 = created
            .iter()
            .filter(|e| e["data"]["customer"] == c)
            .map(|e| e["data"]["amount"].as_i64().unwrap())
            .sum();
        assert_eq!(v["total"].as_i64(), Some(sum), "{c}");
    }

    // router: order.* and payment.* routed, the rest dead-lettered.
    let orders_n = inputs
        .iter()
        .filter(|e| e["type"].as_str().unwrap().starts_with("order."))
        .count();
    let payments_n = inputs
        .iter()
        .filter(|e| e["type"].as_str().unwrap().starts_with("payment."))
        .count();
    let other_n = inputs.len() - orders_n - payments_n;
    assert!(other_n > 0 && payments_n > 0);
    wait_for(Duration::from_secs(30), "routed events", || {
        (host.read_all("order-events").len() == orders_n
            && host.read_all("payment-events").len() == payments_n
            && host.read_all("router.dlq").len() == other_n)
            .then_some(())
    });

    // The CLI shows it.
    let run = host.cli(&["modules"]);
    assert!(run.ok, "{}", run.stderr);
    let out = run.stdout;
    for m in ["filter", "aggregator", "router"] {
        assert!(out.contains(m), "{out}");
    }
    assert!(out.contains("orders/0"), "cursors shown: {out}");
    let run = host.cli(&["tail", "large-orders", "--no-follow"]);
    assert!(run.ok, "{}", run.stderr);
    let out = run.stdout;
    assert_eq!(out.lines().count(), large.len(), "{out}");
}
