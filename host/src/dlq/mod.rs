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
//! It is committed in the same batch that moves the cursor past the event
//! (appended to the topic on the embedded log, written to the outbox on
//! Kafka), so a dead letter is never lost; on the log it is never written
//! twice either.
//!
//! **Replay** copies dead letters to the module's replay topic
//! (`<module>.replay`, partitioned like its input), each into the partition its
//! original was read from, with the `sluice.dlq.*` headers dropped and
//! `sluice.replay.topic` / `sluice.replay.offset` added. The module reads that
//! topic like its other inputs, but sees each event with its original topic
//! and offset, and the replay goes through the idempotency set: replaying an
//! event that was since applied (or replaying twice) applies nothing. An event
//! that fails again becomes a new dead letter. **Purge** deletes the dead
//! letters present now.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sluice_wire::{EventRef, OwnedEvent};

use crate::pipeline::FailureClass;
use crate::source::{TopicError, Topics};

/// Header name prefix.
pub const PREFIX: &str = "sluice.dlq.";

/// Why an event is being dead-lettered.
pub struct DeadLetter<'a> {
    pub module: &'a str,
    pub version: &'a str,
    pub class: FailureClass,
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
            ("class", self.class.as_str().to_string()),
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

/// Headers a replayed event carries: where its original was read.
pub const REPLAY_TOPIC: &str = "sluice.replay.topic";
/// See [`REPLAY_TOPIC`].
pub const REPLAY_OFFSET: &str = "sluice.replay.offset";

/// What a dead-letter topic holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Summary {
    pub module: String,
    pub topic: String,
    pub count: u64,
    /// Earliest and latest `sluice.dlq.last-failure` (Unix ms).
    pub oldest_ms: Option<u64>,
    pub newest_ms: Option<u64>,
    /// Count per `sluice.dlq.class`.
    pub by_class: BTreeMap<String, u64>,
}

fn header<'a>(ev: &'a EventRef<'_>, name: &str) -> Option<&'a str> {
    ev.headers
        .get(name)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Call `f` with every dead letter `module` wrote to `topic` (partition by
/// partition, oldest first). Dead letters of other modules are left alone:
/// a module lists, replays and purges only its own.
pub fn scan(
    topics: &dyn Topics,
    module: &str,
    topic: &str,
    mut f: impl FnMut(&[u8], &EventRef<'_>),
) -> Result<(), TopicError> {
    scan_all(topics, topic, |frame, ev| {
        if header(ev, "sluice.dlq.module") == Some(module) {
            f(frame, ev);
        }
    })
}

/// Every record of `topic`.
fn scan_all(
    topics: &dyn Topics,
    topic: &str,
    mut f: impl FnMut(&[u8], &EventRef<'_>),
) -> Result<(), TopicError> {
    let n = topics
        .partitions(topic)?
        .ok_or_else(|| TopicError::Unknown(topic.into()))?;
    for p in 0..n {
        let (mut from, end) = topics.bounds(topic, p)?;
        while from < end {
            let page = topics.read(topic, p, from, 1024, std::time::Duration::ZERO)?;
            let Some(last) = page.records.last() else {
                break;
            };
            from = last.offset + 1;
            for r in &page.records {
                if let Ok(ev) = EventRef::decode(&r.frame) {
                    f(&r.frame, &ev);
                }
            }
        }
    }
    Ok(())
}

/// Delete `module`'s dead letters: the whole topic, which must hold no other
/// module's (a topic cannot lose single records). Returns how many.
pub fn purge(topics: &dyn Topics, module: &str, topic: &str) -> Result<u64, TopicError> {
    let mut others = std::collections::BTreeSet::new();
    scan_all(topics, topic, |_, ev| {
        let owner = header(ev, "sluice.dlq.module").unwrap_or("?");
        if owner != module {
            others.insert(owner.to_string());
        }
    })?;
    if !others.is_empty() {
        let others: Vec<String> = others.into_iter().collect();
        return Err(TopicError::Conflict(format!(
            "`{topic}` also holds dead letters of {}; purging deletes the whole topic, so it is left as it is",
            others.join(", ")
        )));
    }
    topics.purge(topic)
}

/// Count, age and classes of `module`'s dead letters.
pub fn summary(topics: &dyn Topics, module: &str, topic: &str) -> Result<Summary, TopicError> {
    let mut s = Summary {
        module: module.into(),
        topic: topic.into(),
        ..Default::default()
    };
    scan(topics, module, topic, |_, ev| {
        s.count += 1;
        let class = header(ev, "sluice.dlq.class").unwrap_or("unknown");
        *s.by_class.entry(class.into()).or_default() += 1;
        if let Some(t) = header(ev, "sluice.dlq.last-failure").and_then(|t| t.parse().ok()) {
            s.oldest_ms = Some(s.oldest_ms.map_or(t, |o: u64| o.min(t)));
            s.newest_ms = Some(s.newest_ms.map_or(t, |o: u64| o.max(t)));
        }
    })?;
    Ok(s)
}

/// The stored frames of `module`'s dead letters whose id is in `ids` (all if
/// empty).
pub fn select(
    topics: &dyn Topics,
    module: &str,
    topic: &str,
    ids: &[String],
    limit: usize,
) -> Result<(u64, Vec<Vec<u8>>), TopicError> {
    let mut out = Vec::new();
    let mut total = 0;
    scan(topics, module, topic, |frame, ev| {
        if ids.is_empty() || ids.iter().any(|i| i == ev.id) {
            total += 1;
            if out.len() < limit {
                out.push(frame.to_vec());
            }
        }
    })?;
    Ok((total, out))
}

/// The event to replay for a dead letter, addressed to its original
/// partition; `None` if it cannot be replayed (an undecodable record, or one
/// without its origin headers).
pub fn replay_record(dead: &EventRef<'_>) -> Option<OwnedEvent> {
    if header(dead, "sluice.dlq.class") == Some("undecodable") {
        return None;
    }
    let topic = header(dead, "sluice.dlq.topic")?.to_string();
    let partition = header(dead, "sluice.dlq.partition")?.parse().ok()?;
    let offset = header(dead, "sluice.dlq.offset")?.to_string();
    let mut ev = dead.to_owned_event();
    ev.headers
        .retain(|(n, _)| !n.starts_with(PREFIX) && n != REPLAY_TOPIC && n != REPLAY_OFFSET);
    ev.headers.push((REPLAY_TOPIC.into(), topic.into_bytes()));
    ev.headers.push((REPLAY_OFFSET.into(), offset.into_bytes()));
    ev.partition = partition;
    Some(ev)
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Replayed {
    /// Events appended to the replay topic.
    pub replayed: u64,
    /// Their ids, in replay order.
    pub ids: Vec<String>,
    /// Requested ids with no dead letter.
    pub missing: Vec<String>,
    /// Dead letters that cannot be replayed, with why.
    pub skipped: Vec<(String, String)>,
}

/// Copy the dead letters with `ids` (all if empty) to `replay_topic`. When
/// an event was dead-lettered more than once, its latest dead letter is used.
pub fn replay(
    topics: &dyn Topics,
    module: &str,
    dlq_topic: &str,
    replay_topic: &str,
    ids: &[String],
) -> Result<Replayed, TopicError> {
    let mut latest: HashMap<(String, String), (u64, OwnedEvent)> = HashMap::new();
    let mut order = Vec::new();
    let mut out = Replayed::default();
    scan(topics, module, dlq_topic, |_, ev| {
        if !ids.is_empty() && !ids.iter().any(|i| i == ev.id) {
            return;
        }
        let Some(r) = replay_record(ev) else {
            out.skipped
                .push((ev.id.into(), "undecodable or without its origin".into()));
            return;
        };
        let when = header(ev, "sluice.dlq.last-failure")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        let k = (ev.source.to_string(), ev.id.to_string());
        match latest.get_mut(&k) {
            Some(slot) if slot.0 <= when => *slot = (when, r),
            Some(_) => {}
            None => {
                order.push(k.clone());
                latest.insert(k, (when, r));
            }
        }
    })?;
    out.missing = ids
        .iter()
        .filter(|i| !order.iter().any(|(_, id)| id == *i))
        .filter(|i| !out.skipped.iter().any(|(id, _)| id == *i))
        .cloned()
        .collect();
    let events: Vec<OwnedEvent> = order
        .iter()
        .filter_map(|k| latest.remove(k).map(|(_, e)| e))
        .collect();
    out.ids = events.iter().map(|e| e.id.clone()).collect();
    out.replayed = events.len() as u64;
    if !events.is_empty() {
        topics.produce_to_partitions(replay_topic, events)?;
    }
    Ok(out)
}

/// A replayed frame as the module must see it: with its original topic and
/// offset. Other frames are returned unchanged.
pub fn restore_origin(frame: &[u8]) -> Option<Vec<u8>> {
    let ev = EventRef::decode(frame).ok()?;
    let topic = header(&ev, REPLAY_TOPIC)?;
    let offset = header(&ev, REPLAY_OFFSET)?.parse().ok()?;
    let mut owned = ev.to_owned_event();
    owned.topic = topic.into();
    owned.offset = offset;
    Some(owned.as_ref().encode())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::TrapKind;
    use crate::source::log::EventLog;
    use std::sync::Arc;

    fn dead(id: &str, class: FailureClass, partition: u32, failed_at: u64) -> OwnedEvent {
        let original = OwnedEvent {
            id: id.into(),
            source: "/s".into(),
            ty: "t".into(),
            data: b"{}".to_vec(),
            headers: vec![("traceparent".into(), b"00-x".to_vec())],
            topic: "orders".into(),
            partition,
            offset: 7,
            ..Default::default()
        };
        let mut dl = DeadLetter {
            module: "m",
            version: "1",
            class,
            message: "no",
            attempts: 1,
            first_failure_ms: failed_at,
            last_failure_ms: failed_at,
        }
        .record(&original.as_ref(), "m.dlq");
        dl.partition = 0;
        dl
    }

    #[test]
    fn replay_targets_the_original_partition_once_per_event() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::state::Store::open(dir.path(), false).unwrap());
        let log = EventLog::open(store, 3, 1000, false).unwrap();
        log.ensure_topic("m.dlq", Some(1)).unwrap();
        log.ensure_topic("m.replay", Some(3)).unwrap();
        let letters = vec![
            dead("a", FailureClass::Reject, 2, 10),
            dead("b", FailureClass::Undecodable, 0, 11),
            dead("a", FailureClass::Retry, 2, 30),
            dead("c", FailureClass::Trap(TrapKind::Panic), 1, 20),
        ];
        log.append("m.dlq", letters).unwrap();

        let s = summary(log.as_ref(), "m", "m.dlq").unwrap();
        assert_eq!(s.count, 4);
        assert_eq!((s.oldest_ms, s.newest_ms), (Some(10), Some(30)));
        assert_eq!(s.by_class["reject"], 1);
        assert_eq!(s.by_class["undecodable"], 1);

        let r = replay(
            log.as_ref(),
            "m",
            "m.dlq",
            "m.replay",
            &["a".into(), "zz".into()],
        )
        .unwrap();
        assert_eq!(
            r.ids,
            vec!["a".to_string()],
            "latest dead letter of `a` only"
        );
        assert_eq!(r.missing, vec!["zz".to_string()]);
        let got = log.read("m.replay", 2, 0, 10).unwrap();
        assert_eq!(got.len(), 1, "in the original partition");
        let ev = EventRef::decode(&got[0].frame).unwrap();
        assert!(ev.headers.iter().all(|(n, _)| !n.starts_with(PREFIX)));
        assert_eq!(ev.headers.get("traceparent"), Some(&b"00-x"[..]));
        let restored = restore_origin(&got[0].frame).unwrap();
        let restored = EventRef::decode(&restored).unwrap();
        assert_eq!(
            (restored.topic, restored.offset, restored.partition),
            ("orders", 7, 2)
        );

        let all = replay(log.as_ref(), "m", "m.dlq", "m.replay", &[]).unwrap();
        assert_eq!(all.replayed, 2, "a and c; b is undecodable");
        assert_eq!(all.skipped.len(), 1);

        // Another module's dead letter in the same topic: not listed, not
        // replayed, and the topic is not purged under it.
        let mut foreign = dead("z", FailureClass::Reject, 0, 50);
        for (n, v) in foreign.headers.iter_mut() {
            if n == "sluice.dlq.module" {
                *v = b"other".to_vec();
            }
        }
        log.append("m.dlq", vec![foreign]).unwrap();
        assert_eq!(summary(log.as_ref(), "m", "m.dlq").unwrap().count, 4);
        let again = replay(log.as_ref(), "m", "m.dlq", "m.replay", &["z".into()]).unwrap();
        assert_eq!(again.missing, vec!["z".to_string()]);
        let e = purge(log.as_ref(), "m", "m.dlq").unwrap_err();
        assert!(e.to_string().contains("other"), "{e}");
        assert_eq!(log.truncate("m.dlq").unwrap(), 5);
        assert_eq!(summary(log.as_ref(), "m", "m.dlq").unwrap().count, 0);
        let more = log
            .append("m.dlq", vec![dead("d", FailureClass::Reject, 0, 40)])
            .unwrap();
        assert_eq!(more[0].1, 5, "offsets are not reused after a purge");
    }
}
