//! The embedded log: durable topics in the host's RocksDB (`log` column
//! family), fed over the HTTP API.
//!
//! Offsets are dense per partition; an event goes to the partition
//! `partition::for_event` names (by key, else by source and id). Retention keeps the newest
//! `retention-events` per partition. A module's outputs are appended in the
//! same `WriteBatch` as its state and cursor (`sink/log.rs`), so the log is
//! its own outbox. [`backend`] implements the source traits over it.

mod backend;

pub use backend::LogInput;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

use rocksdb::{Direction, IteratorMode, WriteBatch};
use sluice_wire::{EventRef, OwnedEvent};

use super::{Record, TopicError};
use crate::state::{CF_LOG, CF_META, Store, be_u64};

struct PartitionState {
    /// Oldest retained offset.
    first: u64,
    /// Next offset to assign.
    next: u64,
}

struct Topic {
    partitions: Vec<Mutex<PartitionState>>,
    round_robin: AtomicU64,
}

/// Durable topics in RocksDB.
pub struct EventLog {
    /// Itself, for the module inputs it hands out.
    me: std::sync::Weak<EventLog>,
    store: Arc<Store>,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    default_partitions: u32,
    retention: u64,
    auto_create: bool,
    /// Serialises appends so offsets are assigned and written in order.
    append_lock: Mutex<()>,
    generation: Mutex<u64>,
    changed: Condvar,
}

/// How [`EventLog::append_placed`] picks partitions.
#[derive(Clone, Copy)]
enum Placing {
    /// By the key's hash (Kafka's murmur2), else by `source` + `id`, round
    /// robin for an event with neither (see `partition::for_event`).
    ByKey,
    /// The partition the event already names.
    AsGiven,
}

pub(crate) fn log_key(topic: &str, partition: u32, offset: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + 13);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

impl EventLog {
    /// Open the log on `store`, loading the topics it already has.
    pub fn open(
        store: Arc<Store>,
        default_partitions: u32,
        retention: u64,
        auto_create: bool,
    ) -> Result<Arc<EventLog>, TopicError> {
        let log = Arc::new_cyclic(|me| EventLog {
            me: me.clone(),
            store,
            topics: RwLock::new(HashMap::new()),
            default_partitions,
            retention: retention.max(1),
            auto_create,
            append_lock: Mutex::new(()),
            generation: Mutex::new(0),
            changed: Condvar::new(),
        });
        let meta = log.store.cf(CF_META);
        let prefix = b"topic/";
        let mut found = Vec::new();
        for item in log
            .store
            .db()
            .iterator_cf(meta, IteratorMode::From(prefix, Direction::Forward))
        {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            found.push((name, u32::from_be_bytes([v[0], v[1], v[2], v[3]])));
        }
        for (name, n) in found {
            let t = log.load_topic(&name, n)?;
            log.topics.write().unwrap().insert(name, Arc::new(t));
        }
        Ok(log)
    }

    fn load_topic(&self, name: &str, partitions: u32) -> Result<Topic, TopicError> {
        let mut parts = Vec::new();
        for p in 0..partitions {
            let lo = log_key(name, p, 0);
            let hi = log_key(name, p, u64::MAX);
            let first = self.offset_at(&lo, Direction::Forward)?;
            let last = self.offset_at(&hi, Direction::Reverse)?;
            let (first, next) = match (first, last) {
                (Some(f), Some(l)) => (f, l + 1),
                _ => {
                    let low = self.stored_low_water(name, p)?;
                    (low, low)
                }
            };
            parts.push(Mutex::new(PartitionState { first, next }));
        }
        Ok(Topic {
            partitions: parts,
            round_robin: AtomicU64::new(0),
        })
    }

    /// The offset of the first log key at or beyond `key` in `direction`, if it
    /// belongs to the same topic partition.
    fn offset_at(&self, key: &[u8], direction: Direction) -> Result<Option<u64>, TopicError> {
        let cf = self.store.cf(CF_LOG);
        let Some(item) = self
            .store
            .db()
            .iterator_cf(cf, IteratorMode::From(key, direction))
            .next()
        else {
            return Ok(None);
        };
        let (k, _) = item?;
        let prefix = key.len() - 8;
        Ok((k.len() == key.len() && k[..prefix] == key[..prefix]).then(|| be_u64(&k[prefix..])))
    }

    /// The next offset of an emptied partition is remembered in `meta` so that
    /// offsets are never reused after retention deletes everything.
    fn stored_low_water(&self, topic: &str, p: u32) -> Result<u64, TopicError> {
        let k = format!("low/{topic}/{p}");
        Ok(self
            .store
            .db()
            .get_cf(self.store.cf(CF_META), k)?
            .map(|v| be_u64(&v))
            .unwrap_or(0))
    }

    /// Create `topic` with `partitions` (default if `None`) unless it exists.
    pub fn ensure_topic(&self, topic: &str, partitions: Option<u32>) -> Result<u32, TopicError> {
        if !crate::config::manifest::valid_name(topic) {
            return Err(TopicError::BadName(topic.into()));
        }
        if let Some(t) = self.topics.read().unwrap().get(topic) {
            let have = t.partitions.len() as u32;
            if let Some(want) = partitions
                && want != have
            {
                return Err(TopicError::Partitions {
                    topic: topic.into(),
                    have,
                    want,
                });
            }
            return Ok(have);
        }
        let n = partitions.unwrap_or(self.default_partitions).max(1);
        let mut topics = self.topics.write().unwrap();
        if let Some(t) = topics.get(topic) {
            return Ok(t.partitions.len() as u32);
        }
        self.store.db().put_cf(
            self.store.cf(CF_META),
            format!("topic/{topic}"),
            n.to_be_bytes(),
        )?;
        topics.insert(topic.into(), Arc::new(self.load_topic(topic, n)?));
        tracing::info!(topic, partitions = n, "created topic");
        Ok(n)
    }

    fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().unwrap().get(name).cloned()
    }

    /// Partition count of `topic`, if it exists.
    pub fn partitions(&self, topic: &str) -> Option<u32> {
        self.topic(topic).map(|t| t.partitions.len() as u32)
    }

    /// All topics with their partition counts, sorted.
    pub fn topics(&self) -> Vec<(String, u32)> {
        let mut v: Vec<_> = self
            .topics
            .read()
            .unwrap()
            .iter()
            .map(|(k, t)| (k.clone(), t.partitions.len() as u32))
            .collect();
        v.sort();
        v
    }

    /// `(first retained, next)` offsets of a partition.
    pub fn bounds(&self, topic: &str, partition: u32) -> Option<(u64, u64)> {
        let t = self.topic(topic)?;
        let p = t.partitions.get(partition as usize)?.lock().unwrap();
        Some((p.first, p.next))
    }

    /// Append events to `topic`, assigning partitions, offsets and missing ids
    /// (`<topic>/<partition>/<offset>`) and times. Returns `(partition,
    /// offset)` per event.
    pub fn append(
        &self,
        topic: &str,
        events: Vec<OwnedEvent>,
    ) -> Result<Vec<(u32, u64)>, TopicError> {
        self.append_into(WriteBatch::default(), vec![(topic.to_string(), events)])
            .map(|mut v| v.pop().unwrap_or_default())
    }

    /// Append events in the same atomic write as the writes already in `wb`
    /// (a module's commit: state, idempotency marks, cursor).
    pub fn append_into(
        &self,
        wb: WriteBatch,
        batches: Vec<(String, Vec<OwnedEvent>)>,
    ) -> Result<Vec<Vec<(u32, u64)>>, TopicError> {
        self.append_placed(wb, batches, Placing::ByKey)
    }

    /// Append events to the partition each one names in `partition` (a
    /// replay must land where the original was read: state and idempotency
    /// marks are per partition).
    pub fn append_to_own_partitions(
        &self,
        topic: &str,
        events: Vec<OwnedEvent>,
    ) -> Result<Vec<(u32, u64)>, TopicError> {
        self.append_placed(
            WriteBatch::default(),
            vec![(topic.to_string(), events)],
            Placing::AsGiven,
        )
        .map(|mut v| v.pop().unwrap_or_default())
    }

    fn append_placed(
        &self,
        mut wb: WriteBatch,
        batches: Vec<(String, Vec<OwnedEvent>)>,
        placement: Placing,
    ) -> Result<Vec<Vec<(u32, u64)>>, TopicError> {
        let mut topics = Vec::with_capacity(batches.len());
        for (name, _) in &batches {
            let t = match self.topic(name) {
                Some(t) => t,
                None if self.auto_create => {
                    self.ensure_topic(name, None)?;
                    self.topic(name)
                        .ok_or_else(|| TopicError::Unknown(name.clone()))?
                }
                None => return Err(TopicError::Unknown(name.clone())),
            };
            topics.push(t);
        }
        let _guard = self.append_lock.lock().unwrap();
        let cf = self.store.cf(CF_LOG);
        let mut placed = Vec::with_capacity(batches.len());
        // Next offset per (topic, partition) touched by this append.
        let mut advanced: HashMap<(usize, u32), (Arc<Topic>, u64)> = HashMap::new();
        let mut frame = Vec::with_capacity(512);
        for ((name, events), t) in batches.into_iter().zip(&topics) {
            let n = t.partitions.len() as u32;
            let mut out = Vec::with_capacity(events.len());
            for mut ev in events {
                let p = match placement {
                    Placing::AsGiven if ev.partition < n => ev.partition,
                    Placing::AsGiven => {
                        return Err(TopicError::NoPartition {
                            topic: name,
                            partition: ev.partition,
                            have: n,
                        });
                    }
                    Placing::ByKey => match crate::source::partition::for_event(&ev, n) {
                        Some(p) => p,
                        None => (t.round_robin.fetch_add(1, Ordering::Relaxed) % n as u64) as u32,
                    },
                };
                let slot = advanced
                    .entry((Arc::as_ptr(t) as usize, p))
                    .or_insert_with(|| (t.clone(), t.partitions[p as usize].lock().unwrap().next));
                let offset = slot.1;
                slot.1 += 1;
                ev.topic.clone_from(&name);
                ev.partition = p;
                ev.offset = offset;
                if ev.id.is_empty() {
                    ev.id = format!("{name}/{p}/{offset}");
                }
                if ev.time.is_none() {
                    ev.time = Some(crate::source::now_rfc3339());
                }
                frame.clear();
                ev.as_ref().encode_into(&mut frame);
                wb.put_cf(cf, log_key(&name, p, offset), &frame);
                out.push((p, offset));
            }
            placed.push(out);
        }
        self.store.write(wb)?;
        for ((_, p), (t, next)) in advanced {
            let mut ps = t.partitions[p as usize].lock().unwrap();
            ps.next = ps.next.max(next);
        }
        drop(_guard);
        self.bump();
        Ok(placed)
    }

    fn bump(&self) {
        let mut g = self.generation.lock().unwrap();
        *g += 1;
        drop(g);
        self.changed.notify_all();
    }

    /// The current append generation (changes on every append).
    pub fn generation(&self) -> u64 {
        *self.generation.lock().unwrap()
    }

    /// Block until an append happens after generation `seen`, or `timeout`.
    pub fn wait_for_append(&self, seen: u64, timeout: Duration) {
        let g = self.generation.lock().unwrap();
        if *g != seen {
            return;
        }
        let _ = self.changed.wait_timeout_while(g, timeout, |g| *g == seen);
    }

    /// Up to `max` records of a partition starting at `from` (or at the first
    /// retained offset, if `from` was already deleted by retention).
    pub fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<Record>, TopicError> {
        let mut out = Vec::new();
        self.read_with(topic, partition, from, max, |offset, frame| {
            out.push(Record {
                offset,
                frame: frame.to_vec(),
                invalid: None,
            });
        })?;
        Ok(out)
    }

    /// Like [`read`](Self::read) but hands each frame to `f` without copying it.
    pub fn read_with(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
        mut f: impl FnMut(u64, &[u8]),
    ) -> Result<usize, TopicError> {
        let Some((_, next)) = self.bounds(topic, partition) else {
            return Err(TopicError::Unknown(topic.into()));
        };
        if from >= next || max == 0 {
            return Ok(0);
        }
        let start = log_key(topic, partition, from);
        let prefix_len = start.len() - 8;
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_iterate_upper_bound(log_key(topic, partition, next));
        let mut it = self
            .store
            .db()
            .raw_iterator_cf_opt(self.store.cf(CF_LOG), ro);
        it.seek(&start);
        let mut n = 0;
        while it.valid() && n < max {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if k.len() != start.len() || k[..prefix_len] != start[..prefix_len] {
                break;
            }
            f(be_u64(&k[prefix_len..]), v);
            n += 1;
            it.next();
        }
        it.status()?;
        Ok(n)
    }

    /// The first offset whose event `time` is at or after `ms` (or the end).
    pub fn offset_for_time(&self, topic: &str, partition: u32, ms: i64) -> Result<u64, TopicError> {
        let Some((first, next)) = self.bounds(topic, partition) else {
            return Err(TopicError::Unknown(topic.into()));
        };
        let mut found = None;
        let mut from = first;
        while found.is_none() && from < next {
            let mut last = from;
            self.read_with(topic, partition, from, 4096, |off, frame| {
                last = off + 1;
                if found.is_none()
                    && let Ok(ev) = EventRef::decode(frame)
                    && ev
                        .time
                        .and_then(crate::source::parse_rfc3339_ms)
                        .is_some_and(|t| t >= ms)
                {
                    found = Some(off);
                }
            })?;
            if last == from {
                break;
            }
            from = last;
        }
        Ok(found.unwrap_or(next))
    }

    /// Delete every event of `topic` before the current end of each partition
    /// (offsets are never reused). Returns how many were deleted.
    pub fn truncate(&self, topic: &str) -> Result<u64, TopicError> {
        let t = self
            .topic(topic)
            .ok_or_else(|| TopicError::Unknown(topic.into()))?;
        let mut deleted = 0;
        for (p, ps) in t.partitions.iter().enumerate() {
            let mut ps = ps.lock().unwrap();
            let end = ps.next;
            deleted += self.delete_before(topic, p as u32, &mut ps, end)?;
        }
        Ok(deleted)
    }

    /// Delete a partition's events before `low`.
    fn delete_before(
        &self,
        name: &str,
        p: u32,
        ps: &mut PartitionState,
        low: u64,
    ) -> Result<u64, TopicError> {
        if low <= ps.first {
            return Ok(0);
        }
        let mut wb = WriteBatch::default();
        wb.delete_range_cf(
            self.store.cf(CF_LOG),
            log_key(name, p, ps.first),
            log_key(name, p, low),
        );
        wb.put_cf(
            self.store.cf(CF_META),
            format!("low/{name}/{p}"),
            ps.next.to_be_bytes(),
        );
        self.store.write(wb)?;
        let deleted = low - ps.first;
        ps.first = low;
        Ok(deleted)
    }

    /// Delete events beyond the retention limit. Returns how many were deleted.
    pub fn enforce_retention(&self) -> Result<u64, TopicError> {
        let topics: Vec<(String, Arc<Topic>)> = self
            .topics
            .read()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut deleted = 0;
        for (name, t) in topics {
            for (p, ps) in t.partitions.iter().enumerate() {
                let mut ps = ps.lock().unwrap();
                if ps.next - ps.first <= self.retention {
                    continue;
                }
                let low = ps.next - self.retention;
                deleted += self.delete_before(&name, p as u32, &mut ps, low)?;
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(key: Option<&str>) -> OwnedEvent {
        OwnedEvent {
            source: "/t".into(),
            ty: "t".into(),
            key: key.map(|k| k.as_bytes().to_vec()),
            data: b"{}".to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn append_assigns_offsets_ids_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let in_a = {
            let store = Arc::new(Store::open(dir.path(), false).unwrap());
            let log = EventLog::open(store, 2, 100, false).unwrap();
            assert!(matches!(
                log.append("nope", vec![ev(None)]),
                Err(TopicError::Unknown(_))
            ));
            log.ensure_topic("t", Some(2)).unwrap();
            let placed = log
                .append("t", vec![ev(Some("a")), ev(Some("a")), ev(None)])
                .unwrap();
            assert_eq!(placed[0].0, placed[1].0, "same key, same partition");
            assert_eq!(placed[1].1, placed[0].1 + 1);
            let recs = log.read("t", placed[0].0, 0, 10).unwrap();
            let first = EventRef::decode(&recs[0].frame).unwrap();
            assert_eq!(first.id, format!("t/{}/0", placed[0].0));
            assert!(first.time.is_some());
            placed.iter().filter(|(p, _)| *p == placed[0].0).count() as u64
        };
        let store = Arc::new(Store::open(dir.path(), false).unwrap());
        let log = EventLog::open(store, 2, 100, false).unwrap();
        assert_eq!(log.partitions("t"), Some(2));
        let p = crate::source::partition::for_key(b"a", 2);
        assert_eq!(
            log.bounds("t", p).unwrap().1,
            in_a,
            "offsets continue after reopen"
        );
    }

    #[test]
    fn retention_deletes_old_events_and_keeps_offsets_growing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), false).unwrap());
        let log = EventLog::open(store.clone(), 1, 3, false).unwrap();
        log.ensure_topic("t", Some(1)).unwrap();
        log.append("t", (0..10).map(|_| ev(None)).collect())
            .unwrap();
        assert_eq!(log.enforce_retention().unwrap(), 7);
        assert_eq!(log.bounds("t", 0), Some((7, 10)));
        let recs = log.read("t", 0, 0, 100).unwrap();
        assert_eq!(recs.iter().map(|r| r.offset).collect::<Vec<_>>(), [7, 8, 9]);
    }
}
