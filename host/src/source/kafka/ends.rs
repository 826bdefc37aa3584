//! What the group looks like from outside one host, kept fresh by a thread
//! of its own (a broker round trip per partition must not slow the module's
//! thread down): every partition of a module's topics with its end offset
//! (high watermark) and the group's committed offset, and, where the broker
//! describes the group's assignment, which partitions some member holds.
//! Status views build their lag over every partition from it, not only the
//! ones this host holds.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::admin::partition_count;
use super::{Kafka, REQUEST_TIMEOUT};

/// One partition as last seen from outside.
#[derive(Debug, Clone, Copy)]
pub(super) struct Seen {
    /// End offset (high watermark).
    pub(super) end: u64,
    /// The group's committed offset, if it has one.
    pub(super) committed: Option<u64>,
    /// When `end` was fetched.
    pub(super) at: Instant,
}

/// The last view of the group.
#[derive(Debug, Default)]
pub(super) struct GroupView {
    pub(super) partitions: HashMap<(String, u32), Seen>,
    /// The partitions some member of the group holds, when the broker says
    /// (`None` when it does not describe assignments).
    pub(super) held: Option<HashSet<(String, u32)>>,
}

type Shared = Arc<Mutex<GroupView>>;

/// How often the view is refreshed.
const EVERY: Duration = Duration::from_secs(1);

/// An end offset older than this is stale: the broker has not answered for
/// several rounds.
pub(super) const STALE_AFTER: Duration = Duration::from_secs(5);

/// A running watcher; dropping it stops the thread (without waiting: a
/// metadata request to an unreachable broker may take its whole timeout).
pub(super) struct EndsWatcher {
    view: Shared,
    stop: Arc<AtomicBool>,
}

impl EndsWatcher {
    /// Watch every partition of `topics` and `module`'s group, about once a
    /// second.
    pub(super) fn start(kafka: &Kafka, module: &str, topics: &[String]) -> Result<Self, String> {
        // A client of the group's offsets that never joins it.
        let mut cfg = kafka.client_config();
        cfg.set("group.id", kafka.group(module))
            .set("enable.auto.commit", "false");
        let client: BaseConsumer = cfg
            .create()
            .map_err(|e| format!("cannot create a Kafka client for {module}: {e}"))?;
        // Fetches the last record of every partition: its offset says where
        // the partition ends where ListOffsets does not (tansu answers it
        // with the start of the partition's last batch, plus one).
        let tail: BaseConsumer = kafka
            .client_config()
            // librdkafka wants a group to assign partitions; it never joins
            // it nor commits to it.
            .set("group.id", format!("{}.ends", kafka.group(module)))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "10")
            .create()
            .map_err(|e| format!("cannot create a Kafka client for {module}: {e}"))?;
        let group = kafka.group(module);
        let view = Shared::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (v, s, topics) = (view.clone(), stop.clone(), topics.to_vec());
        std::thread::Builder::new()
            .name(format!("kafka-ends-{module}"))
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    refresh(&client, &tail, &group, &topics, &v);
                    for _ in 0..10 {
                        if s.load(Ordering::Relaxed) {
                            return;
                        }
                        std::thread::sleep(EVERY / 10);
                    }
                }
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        Ok(EndsWatcher { view, stop })
    }

    /// Run `f` on the last view.
    pub(super) fn with<T>(&self, f: impl FnOnce(&GroupView) -> T) -> T {
        f(&self.view.lock().unwrap())
    }

    /// The last known end offset of one partition.
    pub(super) fn end(&self, key: &(String, u32)) -> Option<u64> {
        self.with(|v| v.partitions.get(key).map(|s| s.end))
    }
}

impl Drop for EndsWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One round: ends, committed offsets, assignment. What the broker does not
/// answer keeps its last value (and its age says so).
fn refresh(
    client: &BaseConsumer,
    tail: &BaseConsumer,
    group: &str,
    topics: &[String],
    view: &Shared,
) {
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        let n = client
            .fetch_metadata(Some(t), REQUEST_TIMEOUT)
            .ok()
            .and_then(|md| partition_count(&md, t))
            .unwrap_or(0);
        for p in 0..n {
            let _ = tpl.add_partition(t, p as i32);
            if let Ok((_, hi)) = client.fetch_watermarks(t, p as i32, REQUEST_TIMEOUT) {
                let mut v = view.lock().unwrap();
                let seen = v.partitions.entry((t.clone(), p)).or_insert(Seen {
                    end: 0,
                    committed: None,
                    at: Instant::now(),
                });
                // Ends only grow; a trailing answer must not move one back.
                seen.end = seen.end.max(hi.max(0) as u64);
                seen.at = Instant::now();
            }
        }
    }
    fetched_ends(tail, &tpl, view);
    if tpl.count() > 0
        && let Ok(committed) = client.committed_offsets(tpl, REQUEST_TIMEOUT)
    {
        let mut v = view.lock().unwrap();
        for e in committed.elements() {
            if let Some(seen) = v
                .partitions
                .get_mut(&(e.topic().to_string(), e.partition() as u32))
            {
                seen.committed = match e.offset() {
                    Offset::Offset(o) if o >= 0 => Some(o as u64),
                    _ => None,
                };
            }
        }
    }
    if let Ok(groups) = client.fetch_group_list(Some(group), REQUEST_TIMEOUT) {
        let held = groups
            .groups()
            .iter()
            .find(|g| g.name() == group)
            .and_then(|g| {
                let mut held = HashSet::new();
                for m in g.members() {
                    held.extend(decode_assignment(m.assignment()?)?);
                }
                // A group with members but no assignment described: the
                // broker does not say who holds what.
                (g.members().is_empty() || !held.is_empty()).then_some(held)
            });
        view.lock().unwrap().held = held;
    }
}

/// Raise each partition's end past the records a fetch of its last record
/// returns (that one record where ListOffsets is right; the whole last
/// batch on tansu). The records are dropped.
fn fetched_ends(tail: &BaseConsumer, partitions: &TopicPartitionList, view: &Shared) {
    let mut at_end = TopicPartitionList::new();
    for e in partitions.elements() {
        // From the last record the broker admits to: on tansu, the first of
        // the last batch (it answers nothing from inside a batch).
        let _ = at_end.add_partition_offset(e.topic(), e.partition(), Offset::OffsetTail(1));
    }
    if at_end.count() == 0 {
        return;
    }
    if let Err(e) = tail.assign(&at_end) {
        tracing::debug!(error = %e, "cannot fetch at the ends");
        return;
    }
    let mut past: HashMap<(String, u32), u64> = HashMap::new();
    let deadline = Instant::now() + Duration::from_millis(300);
    while Instant::now() < deadline {
        let got = tail.poll(Duration::from_millis(50));
        if let Some(Err(e)) = &got {
            tracing::debug!(error = %e, "fetch at the end");
        }
        if let Some(Ok(m)) = got {
            let next = m.offset().max(0) as u64 + 1;
            let e = past
                .entry((m.topic().to_string(), m.partition() as u32))
                .or_default();
            *e = (*e).max(next);
        }
    }
    let mut v = view.lock().unwrap();
    for (key, next) in past {
        if let Some(seen) = v.partitions.get_mut(&key) {
            seen.end = seen.end.max(next);
        }
    }
}

/// The partitions in a consumer-protocol assignment (version, then per
/// topic its name and partition numbers, then user data); `None` for bytes
/// that are empty or do not parse.
fn decode_assignment(bytes: &[u8]) -> Option<Vec<(String, u32)>> {
    struct Reader<'a>(&'a [u8]);
    impl Reader<'_> {
        fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
            let (head, rest) = self.0.split_first_chunk::<N>()?;
            self.0 = rest;
            Some(*head)
        }
        fn i16(&mut self) -> Option<i16> {
            self.take::<2>().map(i16::from_be_bytes)
        }
        fn i32(&mut self) -> Option<i32> {
            self.take::<4>().map(i32::from_be_bytes)
        }
    }
    let mut r = Reader(bytes);
    r.i16()?; // version
    let mut out = Vec::new();
    for _ in 0..r.i32()?.max(0) {
        let len = usize::try_from(r.i16()?).ok()?;
        let name = r.0.get(..len)?;
        let topic = std::str::from_utf8(name).ok()?.to_string();
        r.0 = &r.0[len..];
        for _ in 0..r.i32()?.max(0) {
            out.push((topic.clone(), u32::try_from(r.i32()?).ok()?));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::decode_assignment;

    #[test]
    fn an_assignment_decodes_to_its_partitions() {
        let mut b = vec![0, 1]; // version 1
        b.extend(2i32.to_be_bytes()); // two topics
        for (t, ps) in [("orders", &[0i32, 2][..]), ("refunds", &[1][..])] {
            b.extend((t.len() as i16).to_be_bytes());
            b.extend(t.as_bytes());
            b.extend((ps.len() as i32).to_be_bytes());
            for p in ps {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend((-1i32).to_be_bytes()); // no user data
        assert_eq!(
            decode_assignment(&b).unwrap(),
            vec![
                ("orders".to_string(), 0),
                ("orders".to_string(), 2),
                ("refunds".to_string(), 1)
            ]
        );
        assert_eq!(decode_assignment(&[]), None);
        assert_eq!(decode_assignment(&b[..9]), None, "cut inside a name");
    }
}
