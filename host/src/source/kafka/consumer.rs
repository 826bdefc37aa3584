//! One module's Kafka consumer: per-partition buffers handed out
//! contiguously from the module's cursor, placement of partitions the group
//! gives it (`group.rs`), offset commits to the group after local commits,
//! and the positions the status views show.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::ends::{EndsWatcher, STALE_AFTER};
use super::group::{GroupContext, GroupEvent, committed_offsets, group_offset};
use super::placement::Placing;
use super::{Kafka, Positions, REQUEST_TIMEOUT, SetIfUnset, record_of};
use crate::config::StartPosition;
use crate::source::{Holder, Input, Placement, Progress, Record, TopicError};

/// Times a partition is read again from the same cursor before a gap in the
/// broker's offsets is believed.
const MAX_REPLACEMENTS: u32 = 5;

/// How long a partition being placed may get no records (while the broker
/// has some past the cursor) before it is sought further back.
const QUIET_PLACEMENT: Duration = Duration::from_millis(500);

/// How long a placed partition may stay quiet, with no sign of records past
/// its cursor, before it is sought back anyway.
const QUIET_UNKNOWN: Duration = Duration::from_secs(2);

/// Most records held in buffers before `poll` stops fetching.
const MAX_BUFFERED: usize = 20_000;

/// How often the positions the status views show are refreshed.
const POSITIONS_EVERY: Duration = Duration::from_millis(200);

/// One module's consumer: buffers what `poll` returns per partition and
/// hands it out in offset order.
pub struct KafkaInput {
    module: String,
    consumer: BaseConsumer<GroupContext>,
    buffers: HashMap<(String, u32), VecDeque<Record>>,
    assigned: HashSet<(String, u32)>,
    /// Partitions just placed at a cursor.
    placing: HashMap<(String, u32), Placing>,
    /// Partitions given to this host whose resume offset is not known yet
    /// (paused), with when it was last tried.
    unplaced: HashMap<(String, u32), Instant>,
    /// Per partition: the cursor a gap was last seen at, and how often.
    gaps: HashMap<(String, u32), (u64, u32)>,
    ends: EndsWatcher,
    last_commit: Instant,
    /// When `poll` last ran, and the group's session timeout and heartbeat
    /// interval: a gap longer than the session (the process was stopped,
    /// or starved) may have cost this member its partitions.
    last_poll: Instant,
    session: Duration,
    heartbeat: Duration,
    /// Set after such a gap: until the group has had a few heartbeats to say
    /// otherwise, this host does not trust that it still holds anything.
    suspect_since: Option<Instant>,
    buffered: usize,
    /// The broker answered a fetch with a batch after the one holding the
    /// offset asked for (see `placement.rs`).
    skips_batches: bool,
    /// The module's cursor in each held partition.
    cursors: HashMap<(String, u32), u64>,
    /// What the status views show, and every module's, to leave on drop.
    positions: Positions,
    registry: Arc<Mutex<HashMap<String, Positions>>>,
    last_positions: Option<Instant>,
}

impl KafkaInput {
    /// A consumer for `module`'s `topics`, in its group.
    pub(super) fn new(
        kafka: &Kafka,
        module: &str,
        subs: &[(String, StartPosition)],
        positions: Positions,
        registry: Arc<Mutex<HashMap<String, Positions>>>,
    ) -> Result<KafkaInput, String> {
        let topics: Vec<String> = subs.iter().map(|(t, _)| t.clone()).collect();
        let ctx = GroupContext {
            health: kafka.health(),
            module: module.into(),
            store: kafka.store.clone(),
            starts: subs.iter().cloned().collect(),
            events: Mutex::new(Vec::new()),
            pending: Mutex::new(BTreeMap::new()),
            commit_on_revoke: AtomicBool::new(true),
        };
        let mut cfg = kafka.client_config();
        cfg.set("group.id", kafka.group(module))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set_if_unset("session.timeout.ms", "10000")
            .set_if_unset("partition.assignment.strategy", "range")
            // Partitions added to a topic are noticed within seconds, not
            // librdkafka's default five minutes.
            .set_if_unset("topic.metadata.refresh.interval.ms", "10000");
        cfg.set("client.id", kafka.member_name(module));
        if kafka.static_membership() {
            cfg.set("group.instance.id", kafka.member_name(module));
        } else {
            kafka.evict_previous(module);
        }
        let ms = |k: &str, default: u64| {
            Duration::from_millis(cfg.get(k).and_then(|v| v.parse().ok()).unwrap_or(default))
        };
        let (session, heartbeat) = (
            ms("session.timeout.ms", 10_000),
            ms("heartbeat.interval.ms", 3_000),
        );
        let consumer: BaseConsumer<GroupContext> = cfg
            .create_with_context(ctx)
            .map_err(|e| format!("cannot create a Kafka consumer for {module}: {e}"))?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| format!("cannot subscribe {module} to {names:?}: {e}"))?;
        Ok(KafkaInput {
            module: module.into(),
            consumer,
            buffers: HashMap::new(),
            assigned: HashSet::new(),
            placing: HashMap::new(),
            unplaced: HashMap::new(),
            skips_batches: false,
            gaps: HashMap::new(),
            ends: EndsWatcher::start(kafka, module, &topics)?,
            last_commit: Instant::now(),
            last_poll: Instant::now(),
            session,
            heartbeat,
            suspect_since: None,
            buffered: 0,
            cursors: HashMap::new(),
            positions,
            registry,
            last_positions: None,
        })
    }

    /// Poll for up to `wait` (records go to the buffers; rebalances are
    /// served). Returns the newly assigned partitions, placed.
    fn poll_for(&mut self, wait: Duration) -> Vec<Placement> {
        if self.last_poll.elapsed() > self.session {
            tracing::warn!(module = %self.module, gap = ?self.last_poll.elapsed(), "no poll for longer than the group session; not committing until the group confirms this host's partitions");
            self.suspect_since = Some(Instant::now());
        }
        if self
            .suspect_since
            .is_some_and(|t| t.elapsed() > self.heartbeat * 3)
        {
            self.suspect_since = None;
        }
        let deadline = Instant::now() + wait;
        let mut first = true;
        let mut fresh = Vec::new();
        while self.buffered < MAX_BUFFERED {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = if first { left } else { Duration::ZERO };
            first = false;
            let polled = match self.consumer.poll(timeout) {
                None => None,
                Some(Err(e)) => Some(Err(e)),
                Some(Ok(m)) => Some(Ok((
                    (m.topic().to_string(), m.partition() as u32),
                    record_of(&m),
                ))),
            };
            // A rebalance served inside this poll comes before the record it
            // returned (which may already be from a newly placed partition):
            // apply it first, or that record would be thrown away with the
            // partition's old buffer.
            fresh.extend(self.apply_group_events());
            match polled {
                None => break,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "Kafka consumer error; retrying");
                    self.consumer.context().health.error(&e);
                    break;
                }
                Some(Ok((key, rec))) => {
                    self.consumer.context().health.ok();
                    if !self.assigned.contains(&key) || !self.placed(&key, rec.offset) {
                        continue;
                    }
                    let buf = self.buffers.entry(key).or_default();
                    if buf.back().is_none_or(|b| b.offset < rec.offset) {
                        buf.push_back(rec);
                        self.buffered += 1;
                    }
                }
            }
        }
        self.last_poll = Instant::now();
        self.nudge_quiet_placements();
        fresh.extend(self.place_waiting());
        let _ = self.flush_commits(false);
        self.publish_positions(!fresh.is_empty());
        fresh
    }

    /// Try again, about once a second, to place the partitions that wait
    /// (see [`GroupEvent::Unplaced`]); each one placed is sought to its
    /// offset and resumed.
    fn place_waiting(&mut self) -> Vec<Placement> {
        let due: Vec<(String, u32)> = self
            .unplaced
            .iter()
            .filter(|(_, tried)| tried.elapsed() >= Duration::from_secs(1))
            .map(|(k, _)| k.clone())
            .collect();
        let mut placed = Vec::new();
        for key in due {
            let (t, p) = (&key.0, key.1);
            let mut tpl = TopicPartitionList::new();
            let _ = tpl.add_partition(t, p as i32);
            let group =
                committed_offsets(&self.consumer, &tpl).and_then(|c| group_offset(&c, t, p));
            match self
                .consumer
                .context()
                .resume_at(&self.consumer, t, p, group)
            {
                Ok(at) => {
                    if let Err(e) =
                        self.consumer
                            .seek(t, p as i32, Offset::Offset(at as i64), REQUEST_TIMEOUT)
                    {
                        tracing::warn!(topic = %t, partition = p, error = %e, "seek failed; trying again");
                        self.unplaced.insert(key, Instant::now());
                        continue;
                    }
                    let _ = self.consumer.resume(&tpl);
                    tracing::info!(module = %self.module, topic = %t, partition = p, at, "partition placed");
                    self.unplaced.remove(&key);
                    self.cursors.insert(key.clone(), at);
                    self.placing.insert(key.clone(), Placing::at(at, 0));
                    placed.push(Placement {
                        topic: key.0,
                        partition: p,
                        at,
                    });
                }
                Err(e) => {
                    tracing::debug!(topic = %t, partition = p, error = %e, "still cannot tell where this partition resumes");
                    self.unplaced.insert(key, Instant::now());
                }
            }
        }
        placed
    }

    /// Whether a record at `offset` of a partition being placed may be used
    /// (see `placement.rs`); if not, the partition was sought back.
    fn placed(&mut self, key: &(String, u32), offset: u64) -> bool {
        let Some(p) = self.placing.get_mut(key) else {
            return true;
        };
        match p.on_record(offset) {
            None => {
                self.placing.remove(key);
                true
            }
            Some(to) => {
                // Only a broker that answers with a later batch does this (tansu).
                self.skips_batches = true;
                self.seek(key, to, Some(offset));
                false
            }
        }
    }

    /// Seek a partition being placed to `to` (`got`: the record that came instead).
    fn seek(&mut self, key: &(String, u32), to: u64, got: Option<u64>) {
        tracing::debug!(topic = %key.0, partition = key.1, to, ?got, "fetch did not start at the cursor; seeking back");
        if let Err(e) = self.consumer.seek(
            &key.0,
            key.1 as i32,
            Offset::Offset(to as i64),
            REQUEST_TIMEOUT,
        ) {
            tracing::warn!(topic = %key.0, partition = key.1, error = %e, "seek failed; reading on from where the broker is");
            self.placing.remove(key);
        }
    }

    /// A partition placed at a cursor inside the broker's last record batch
    /// gets nothing back from tansu at all (there is no next batch to return
    /// instead), and its high watermark can trail the records it has, so
    /// that alone proves nothing. When a placed partition stays quiet, seek
    /// back as if a later batch had come: after [`QUIET_PLACEMENT`] if the
    /// broker is known to answer that way or reports records past the
    /// cursor, after [`QUIET_UNKNOWN`] otherwise. On a broker that behaves,
    /// that costs one fetch of a record before the cursor, which is dropped.
    fn nudge_quiet_placements(&mut self) {
        if self.placing.is_empty() {
            return; // the usual case: nothing being placed, nothing to look up
        }
        let quiet: Vec<(String, u32)> = self
            .placing
            .iter()
            .filter(|(k, p)| {
                let evidence =
                    self.skips_batches || self.ends.end(k).is_some_and(|end| end > p.target);
                let wait = if evidence {
                    QUIET_PLACEMENT
                } else {
                    QUIET_UNKNOWN
                };
                !p.exhausted() && p.since.elapsed() >= wait
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in quiet {
            if let Some(to) = self.placing.get_mut(&k).map(Placing::seek_back) {
                self.seek(&k, to, None);
            }
        }
    }

    fn apply_group_events(&mut self) -> Vec<Placement> {
        let events = std::mem::take(&mut *self.consumer.context().events.lock().unwrap());
        let mut fresh = Vec::new();
        for e in events {
            match e {
                GroupEvent::Revoked(parts) => {
                    for k in parts {
                        if let Some(b) = self.buffers.remove(&k) {
                            self.buffered -= b.len();
                        }
                        self.placing.remove(&k);
                        self.unplaced.remove(&k);
                        self.assigned.remove(&k);
                        self.cursors.remove(&k);
                    }
                }
                GroupEvent::Unplaced(parts) => {
                    for k in parts {
                        if let Some(b) = self.buffers.remove(&k) {
                            self.buffered -= b.len();
                        }
                        self.assigned.insert(k.clone());
                        self.unplaced.insert(k, Instant::now());
                    }
                }
                GroupEvent::Assigned(parts) => {
                    for pl in parts {
                        let k = (pl.topic.clone(), pl.partition);
                        if let Some(b) = self.buffers.remove(&k) {
                            self.buffered -= b.len();
                        }
                        self.assigned.insert(k.clone());
                        self.cursors.insert(k.clone(), pl.at);
                        self.placing.insert(k, Placing::at(pl.at, 0));
                        fresh.push(pl);
                    }
                }
            }
        }
        fresh
    }

    /// Refresh what the status views show (at most every
    /// [`POSITIONS_EVERY`], or at once after a rebalance).
    fn publish_positions(&mut self, now: bool) {
        if !now
            && self
                .last_positions
                .is_some_and(|t| t.elapsed() < POSITIONS_EVERY)
        {
            return;
        }
        self.last_positions = Some(Instant::now());
        let mut pos = self.positions.lock().unwrap();
        pos.clear();
        self.ends.with(|view| {
            for (key, seen) in &view.partitions {
                let (cursor, holder) = if self.assigned.contains(key) {
                    let c = self.cursors.get(key).copied().unwrap_or(0);
                    (c, Holder::Here)
                } else {
                    let holder = match &view.held {
                        Some(held) if held.contains(key) => Holder::OtherMember,
                        Some(_) => Holder::Unassigned,
                        None => Holder::NotHere,
                    };
                    (seen.committed.unwrap_or(0), holder)
                };
                pos.insert(
                    key.clone(),
                    Progress {
                        topic: key.0.clone(),
                        partition: key.1,
                        cursor,
                        // The broker's watermark can trail what it served.
                        end: seen.end.max(cursor),
                        holder,
                        stale: seen.at.elapsed() > STALE_AFTER,
                    },
                );
            }
        });
    }

    /// Commit the pending offsets to Kafka (`now`: synchronously, else at
    /// most every 200 ms and asynchronously). False if the commit failed
    /// (the offsets stay pending).
    fn flush_commits(&mut self, now: bool) -> bool {
        if !now && self.last_commit.elapsed() < Duration::from_millis(200) {
            return true;
        }
        self.last_commit = Instant::now();
        let pending = std::mem::take(&mut *self.consumer.context().pending.lock().unwrap());
        if pending.is_empty() {
            return true;
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in &pending {
            if self.assigned.contains(&(t.clone(), *p)) {
                let _ = tpl.add_partition_offset(t, *p as i32, Offset::Offset(*o as i64));
            }
        }
        if tpl.count() == 0 {
            return true;
        }
        let mode = if now {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        if let Err(e) = self.consumer.commit(&tpl, mode) {
            tracing::debug!(error = %e, "Kafka offset commit failed; will retry");
            let mut p = self.consumer.context().pending.lock().unwrap();
            for (k, o) in pending {
                p.entry(k).or_insert(o);
            }
            return false;
        }
        true
    }
}

impl Input for KafkaInput {
    fn partitions(&mut self, topic: &str) -> Option<u32> {
        let md = self
            .consumer
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .ok()?;
        super::admin::partition_count(&md, topic)
    }

    fn start(
        &mut self,
        _topic: &str,
        _p: u32,
        _start: StartPosition,
    ) -> Result<Option<u64>, TopicError> {
        // Placed when the group gives the partition to this host.
        Ok(None)
    }

    fn holds(&mut self, topic: &str, p: u32) -> bool {
        // A gap since the last poll longer than the session: the group may
        // have moved on without this member (see `poll_for`).
        self.last_poll.elapsed() <= self.session
            && self.suspect_since.is_none()
            && self.assigned.contains(&(topic.to_string(), p))
            && !self.unplaced.contains_key(&(topic.to_string(), p))
            && !self.consumer.assignment_lost()
    }

    fn poll(&mut self) -> Vec<Placement> {
        self.poll_for(Duration::ZERO)
    }

    fn idle(&mut self, timeout: Duration) -> Vec<Placement> {
        self.poll_for(timeout)
    }

    /// Records come out contiguous: if the next buffered record is beyond
    /// `from`, the partition is placed at `from` again and nothing is
    /// returned until the missing records arrive. Only after
    /// [`MAX_REPLACEMENTS`] tries at the same offset is the gap taken as real
    /// (retention, compaction) and the records beyond it returned.
    fn read(
        &mut self,
        topic: &str,
        p: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<Record>, TopicError> {
        let key = (topic.to_string(), p);
        if self.placing.contains_key(&key) || self.unplaced.contains_key(&key) {
            return Ok(Vec::new());
        }
        let Some(buf) = self.buffers.get_mut(&key) else {
            return Ok(Vec::new());
        };
        while buf.front().is_some_and(|r| r.offset < from) {
            buf.pop_front();
            self.buffered -= 1;
        }
        if let Some(first) = buf.front().map(|r| r.offset)
            && first > from
        {
            let tries = self.gaps.entry(key.clone()).or_insert((from, 0));
            if tries.0 != from {
                *tries = (from, 0);
            }
            tries.1 += 1;
            if tries.1 <= MAX_REPLACEMENTS {
                tracing::debug!(
                    topic,
                    partition = p,
                    from,
                    first,
                    "gap in what the broker returned; reading again from the cursor"
                );
                self.buffered -= buf.len();
                buf.clear();
                self.placing.insert(key.clone(), Placing::at(from, 0));
                self.seek(&key, from, None);
                return Ok(Vec::new());
            }
            tracing::warn!(
                topic,
                partition = p,
                from,
                first,
                "offsets {from}..{first} are not on the broker (retention or compaction); skipping them"
            );
        }
        Ok(buf.iter().take(max).cloned().collect())
    }

    fn committed(&mut self, topic: &str, p: u32, next: u64) {
        let key = (topic.to_string(), p);
        if self.assigned.contains(&key) {
            self.cursors.insert(key.clone(), next);
        }
        self.consumer
            .context()
            .pending
            .lock()
            .unwrap()
            .insert(key, next);
    }
}

impl KafkaInput {
    /// Leave the group now, so other hosts take the partitions over at once.
    /// (Closing alone does not: a static member keeps its partitions for a
    /// session timeout, waiting for itself to come back.) What was done is
    /// committed first, in the revocation.
    fn leave(&mut self) {
        self.consumer.unsubscribe();
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        while Instant::now() < deadline {
            // Serves the revocation; records still arriving are not ours
            // any more and are dropped unprocessed.
            let _ = self.consumer.poll(Duration::from_millis(50));
            if self.consumer.assignment().map_or(true, |a| a.count() == 0) {
                break;
            }
        }
    }
}

impl Drop for KafkaInput {
    fn drop(&mut self) {
        if !self.flush_commits(true) {
            // The broker did not take the commit just now: leaving must not
            // wait on it again in the revocation.
            self.consumer
                .context()
                .commit_on_revoke
                .store(false, Ordering::SeqCst);
        }
        self.leave();
        let mut registry = self.registry.lock().unwrap();
        if registry
            .get(&self.module)
            .is_some_and(|p| Arc::ptr_eq(p, &self.positions))
        {
            registry.remove(&self.module);
        }
    }
}
