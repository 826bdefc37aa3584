//! Redelivery: events re-sent with ids already processed change nothing,
//! keyed or not.

use std::time::Duration;

use serde_json::Value;
use sluice_tests::*;

#[test]
fn resent_events_change_no_state_and_emit_nothing() {
    let host = HostProc::start("[[topics]]\nname = \"orders\"\npartitions = 3\n", |m| {
        stage(m, &["aggregator"])
    });
    let (mut events, expected) = orders(10_000, 50, 11, "dup-");
    // Half of them without a partition key: a resend must still find the
    // partition its original went to.
    for e in events.iter_mut().skip(1).step_by(2) {
        e.as_object_mut().unwrap().remove("partitionkey");
    }
    for c in events.chunks(1000) {
        host.produce("orders", &Value::Array(c.to_vec()));
    }
    host.wait_caught_up("aggregator", Duration::from_secs(120));
    let state_before = host.state("aggregator");
    let totals_before = wait_for(Duration::from_secs(60), "10,000 updates", || {
        let t = host.read_all("totals");
        (t.len() == 10_000).then_some(t.len())
    });
    // Keyless orders spread a customer over partitions: one running total
    // per customer and partition, together the expected ones.
    let mut sums: std::collections::BTreeMap<String, (i64, u64)> = Default::default();
    for (k, v) in &state_before {
        let s = sums
            .entry(k.trim_start_matches("total/").to_string())
            .or_default();
        s.0 += v["total"].as_i64().unwrap();
        s.1 += v["count"].as_u64().unwrap();
    }
    assert_eq!(sums, expected);
    let hits_before = host.module("aggregator").metrics.unwrap().dedup_hits;

    for c in events.chunks(1000) {
        host.produce("orders", &Value::Array(c.to_vec()));
    }
    host.wait_caught_up("aggregator", Duration::from_secs(120));
    let m = host.module("aggregator").metrics.unwrap();
    assert_eq!(
        m.dedup_hits - hits_before,
        10_000,
        "every resent event is a dedup hit"
    );
    assert_eq!(host.state("aggregator"), state_before, "state unchanged");
    assert_eq!(
        host.read_all("totals").len(),
        totals_before,
        "nothing emitted"
    );
    assert_eq!(m.applied, 10_000);
}
