//! Counts events per key and publishes every new count: the module the
//! upgrade and rewind tests swap between versions.
//!
//! Version 1 emits `count.updated` with `{"key": k, "count": n}`; version 2
//! (feature `v2`) keeps the same state (`count/<key>` = n) but emits
//! `count.updated.v2` with `{"format": 2, "counter": {"name": k, "value": n}}`,
//! so a test can tell which version handled each event.

use sluice_guest::{Event, Output, Result, state};

/// The key counted: the event's partition key, else `-`.
fn key_of(event: &Event) -> String {
    event.key_str().unwrap_or("-").to_string()
}

/// Add one to the event key's count and publish it.
pub fn handle(event: &Event) -> Result {
    let key = key_of(event);
    let skey = format!("count/{key}");
    let n: u64 = state::get_json(&skey)?.unwrap_or(0) + 1;
    state::set_json(&skey, &n)?;
    let ty = if cfg!(feature = "v2") {
        "count.updated.v2"
    } else {
        "count.updated"
    };
    let out = Output::new("counts", ty).key(&key);
    let out = if cfg!(feature = "v2") {
        out.json(&serde_json::json!({ "format": 2, "counter": { "name": key, "value": n } }))?
    } else {
        out.json(&serde_json::json!({ "key": key, "count": n }))?
    };
    out.send()
}

sluice_guest::export!(handle);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest::testing::{TestEvent, TestHost};

    #[test]
    fn counts_per_key() {
        let host = TestHost::install();
        for k in ["a", "b", "a"] {
            TestEvent::json("clicks", "click", "{}")
                .key(k)
                .with(handle)
                .unwrap();
        }
        let state = host.state();
        assert_eq!(state[&b"count/a".to_vec()], b"2");
        let out = host.emitted();
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].key.as_deref(), Some(&b"a"[..]));
    }
}
