//! Redelivery: events re-sent with ids already processed change nothing.

use std::time::Duration;

use serde_json::Value;
use sluice_tests::*;

#[test]
fn resent_events_change_no_state_and_emit_nothing() {
    let host = HostProc::start("", |m| stage(m, &["aggregator"]));
    let (events, expected) = orders(10_000, 50, 11, "dup-");
    for c in events.chunks(1000) {
        host.produce("orders", &Value::Array(c.to_vec()));
    }
    host.wait_caught_up("aggregator", Duration::from_secs(120));
    let state_before = host.state("aggregator");
    let totals_before = wait_for(Duration::from_secs(60), "10,000 updates", || {
        let t = host.read_all("totals");
        (t.len() == 10_000).then_some(t.len())
    });
    assert_eq!(state_before.len(), expected.len());
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
