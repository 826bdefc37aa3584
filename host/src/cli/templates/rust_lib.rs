//! {{name}}: counts events per partition key and emits each new count.
//! Replace `handle` with your logic; `cargo test` runs the test below natively.

use sluice_guest::{Event, Output, Result, state};

/// Count the event under its key and publish the new count.
pub fn handle(event: &Event) -> Result {
    let key = event.key_str().unwrap_or("-").to_string();
    let skey = format!("count/{key}");
    let n: u64 = state::get_json(&skey)?.unwrap_or(0) + 1;
    state::set_json(&skey, &n)?;
    Output::new("{{name}}-out", "count.updated")
        .key(&key)
        .json(&serde_json::json!({ "key": key, "count": n }))?
        .send()
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
            TestEvent::json("{{name}}-in", "thing.happened", "{}")
                .key(k)
                .with(handle)
                .unwrap();
        }
        assert_eq!(host.state()[&b"count/a".to_vec()], b"2");
        assert_eq!(host.emitted().len(), 3);
    }
}
