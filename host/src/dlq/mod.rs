//! Dead letters: an event a module could not apply, kept with why.
//!
//! A dead letter is the original event (id, source, type, data, key and headers
//! unchanged) written to the module's dead-letter topic (`<module>.dlq` unless
//! the manifest says otherwise) with `sluice.dlq.*` headers added:
//!
//! | header | value |
//! |---|---|
//! | `sluice.dlq.module`, `sluice.dlq.module-version` | who failed |
//! | `sluice.dlq.class` | `reject`, `retry` (attempts exhausted), `deadline`, `memory`, `stack`, `panic`, `output`, `state`, `trap`, `undecodable` |
//! | `sluice.dlq.message` | the failure message |
//! | `sluice.dlq.attempts` | attempts made |
//! | `sluice.dlq.topic`, `.partition`, `.offset`, `.timestamp` | where the original was read |
//! | `sluice.dlq.first-failure`, `sluice.dlq.last-failure` | Unix milliseconds |
//!
//! It is committed through the outbox in the same batch that moves the cursor
//! past the event, so a dead letter is neither lost nor written twice.

use sluice_wire::{EventRef, OwnedEvent};

/// Header name prefix.
pub const PREFIX: &str = "sluice.dlq.";

/// Why an event is being dead-lettered.
pub struct DeadLetter<'a> {
    pub module: &'a str,
    pub version: &'a str,
    pub class: &'a str,
    pub message: &'a str,
    pub attempts: u32,
    pub first_failure_ms: u64,
    pub last_failure_ms: u64,
}

impl DeadLetter<'_> {
    /// The dead-letter record for `ev`, addressed to `topic`.
    pub fn record(&self, ev: &EventRef<'_>, topic: &str) -> OwnedEvent {
        let mut out = ev.to_owned_event();
        out.headers.retain(|(n, _)| !n.starts_with(PREFIX));
        let timestamp = ev
            .time
            .and_then(crate::source::parse_rfc3339_ms)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let mut msg = self.message.to_string();
        msg.truncate(4096);
        for (k, v) in [
            ("module", self.module.to_string()),
            ("module-version", self.version.to_string()),
            ("class", self.class.to_string()),
            ("message", msg),
            ("attempts", self.attempts.to_string()),
            ("topic", ev.topic.to_string()),
            ("partition", ev.partition.to_string()),
            ("offset", ev.offset.to_string()),
            ("timestamp", timestamp),
            ("first-failure", self.first_failure_ms.to_string()),
            ("last-failure", self.last_failure_ms.to_string()),
        ] {
            out.headers.push((format!("{PREFIX}{k}"), v.into_bytes()));
        }
        out.topic = topic.into();
        out
    }
}
