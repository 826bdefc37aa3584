//! From a read of one partition to the events to apply: decode each frame,
//! stop at a record that is not an event or at a second copy of an event in
//! the same read, drop the types the module did not subscribe to, and look
//! the rest up in the module's idempotency set.

use std::collections::HashSet;

use sluice_wire::EventRef;

use crate::source::{Record, now_ms};
use crate::state::{Store, StoreError, dedup_key};

/// One event to apply.
pub(super) struct Item<'a> {
    pub(super) offset: u64,
    pub(super) frame: &'a [u8],
    pub(super) ev: EventRef<'a>,
    /// Its key in the idempotency set.
    pub(super) key: Vec<u8>,
}

/// What a read holds.
pub(super) enum Read<'a> {
    /// The first record is not an event: dead-letter it alone.
    Undecodable {
        offset: u64,
        frame: &'a [u8],
        reason: String,
    },
    /// Events to apply, in order; after them the cursor moves to `cut`.
    Events {
        todo: Vec<Item<'a>>,
        cut: u64,
        /// Events of other types, skipped.
        filtered: usize,
        /// Events already applied, skipped.
        dedup_hits: usize,
    },
}

/// Prepare a read of `records` of partition `p` (`restored[i]`, if present,
/// replaces record `i`'s frame: a replayed event as first read). `end` is the
/// offset after the last record.
pub(super) fn prepare<'a>(
    store: &Store,
    module: &str,
    p: u32,
    records: &'a [Record],
    restored: &'a [Option<Vec<u8>>],
    types: &[String],
    end: u64,
) -> Result<Read<'a>, StoreError> {
    let mut events: Vec<(u64, &'a [u8], EventRef<'a>)> = Vec::with_capacity(records.len());
    let mut cut = end;
    let mut seen_ids = HashSet::new();
    for (i, r) in records.iter().enumerate() {
        // A broker record that is not a CloudEvent (or, which cannot happen
        // for frames this host wrote, a frame that does not decode).
        let decoded = match &r.invalid {
            Some(reason) => Err(reason.clone()),
            None => {
                let frame: &'a [u8] = match restored.get(i) {
                    Some(Some(f)) => f,
                    _ => &r.frame,
                };
                EventRef::decode(frame)
                    .map(|ev| (frame, ev))
                    .map_err(|e| e.to_string())
            }
        };
        let (frame, ev) = match decoded {
            Ok(d) => d,
            // Never dropped silently: dead-lettered as it is, alone.
            Err(reason) if events.is_empty() => {
                return Ok(Read::Undecodable {
                    offset: r.offset,
                    frame: &r.frame,
                    reason,
                });
            }
            Err(_) => {
                cut = r.offset;
                break;
            }
        };
        if !seen_ids.insert((ev.source, ev.id)) {
            // A duplicate inside one read: stop here, the next read checks it
            // against what this one commits.
            cut = r.offset;
            break;
        }
        events.push((r.offset, frame, ev));
    }
    let before = events.len();
    events.retain(|(_, _, ev)| types.is_empty() || types.iter().any(|t| t == ev.ty));
    let filtered = before - events.len();
    let keys: Vec<Vec<u8>> = events
        .iter()
        .map(|(_, _, ev)| dedup_key(module, p, ev.source, ev.id))
        .collect();
    let applied = store.applied(&keys, now_ms())?;
    let mut todo = Vec::with_capacity(events.len());
    let mut dedup_hits = 0;
    for (((offset, frame, ev), key), done) in events.into_iter().zip(keys).zip(applied) {
        if done {
            dedup_hits += 1;
        } else {
            todo.push(Item {
                offset,
                frame,
                ev,
                key,
            });
        }
    }
    Ok(Read::Events {
        todo,
        cut,
        filtered,
        dedup_hits,
    })
}
