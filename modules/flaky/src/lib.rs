//! Test module for failure handling. Every event first writes state and emits,
//! then acts on its `action` field: `ok`, `reject`, `retry-once` / `retry-twice`
//! (fail the first one or two attempts of each event id, then succeed),
//! `retry-always`, or `panic`. Built with the `fixed` feature (version 0.2.0
//! in the tests), it accepts `reject` events instead: an upgrade that fixes a
//! bug, so its dead letters can be replayed. The
//! host must leave no trace of any failed attempt.

use serde::Deserialize;
use sluice_guest::{Event, Failure, Result, emit_json, state};
use std::cell::RefCell;
use std::collections::HashMap;

#[derive(Deserialize)]
struct Input<'a> {
    action: &'a str,
    #[serde(default)]
    key: &'a str,
}

thread_local! {
    static FAILURES: RefCell<HashMap<String, u32>> = RefCell::new(HashMap::new());
}

/// Apply the event's effects, then fail as its `action` says.
pub fn handle(event: &Event) -> Result {
    let input: Input = event.json()?;
    state::set(format!("touched/{}", event.id), b"1")?;
    let key = format!("count/{}", input.key);
    let n: u64 = state::get_json(&key)?.unwrap_or(0);
    state::set_json(&key, &(n + 1))?;
    emit_json(
        "flaky-out",
        "flaky.done",
        &serde_json::json!({"id": event.id}),
    )?;
    match input.action {
        "ok" => Ok(()),
        "reject" if cfg!(feature = "fixed") => Ok(()),
        "reject" => Err(Failure::reject(format!(
            "event {} asked to be rejected",
            event.id
        ))),
        "retry-once" => fail_first(event, 1),
        "retry-twice" => fail_first(event, 2),
        "retry-always" => Err(Failure::retry("this event never succeeds")),
        "panic" => panic!("event {} asked for a panic", event.id),
        other => Err(Failure::reject(format!("unknown action `{other}`"))),
    }
}

/// Fail the first `k` attempts at `event` with `retry`, then succeed.
fn fail_first(event: &Event, k: u32) -> Result {
    let failed = FAILURES.with(|f| {
        let mut f = f.borrow_mut();
        let n = f.entry(event.id.to_string()).or_default();
        *n += 1;
        *n - 1
    });
    if failed < k {
        Err(Failure::retry(format!(
            "attempt {} of {k} that fail",
            failed + 1
        )))
    } else {
        Ok(())
    }
}

sluice_guest::export!(handle);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest::testing::{TestEvent, TestHost};

    #[test]
    fn retry_once_fails_then_succeeds() {
        TestHost::install();
        let ev = TestEvent::json("t", "x", r#"{"action":"retry-once","key":"a"}"#);
        assert!(matches!(ev.with(handle), Err(Failure::Retry(_))));
        assert!(ev.with(handle).is_ok());
        let ev = TestEvent::json("t", "y", r#"{"action":"retry-twice","key":"a"}"#);
        assert!(matches!(ev.with(handle), Err(Failure::Retry(_))));
        assert!(matches!(ev.with(handle), Err(Failure::Retry(_))));
        assert!(ev.with(handle).is_ok());
    }
}
