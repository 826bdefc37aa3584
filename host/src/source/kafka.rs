//! Kafka as the event source (librdkafka through the `rdkafka` crate).
//!
//! Each module consumes in its own consumer group (`<group-prefix><module>`).
//! The offset in RocksDB, committed with the module's state, is the truth: on
//! assignment the consumer is placed at `max(local cursor, group's committed
//! offset)` (the second is ahead only when another host processed the
//! partition meanwhile), and after each local commit the offset is also
//! committed to Kafka, so lag tools see progress. Offsets below the cursor are
//! skipped, so a redelivery is never applied twice. Rebalances are served in
//! `poll`, which the module's thread calls only between batches: a revoked
//! partition has nothing in flight; its pending Kafka commit is flushed
//! before it is released.
//!
//! Records are read with the CloudEvents Kafka binding, binary mode (`ce_*`
//! headers, value = data) and structured mode (`content-type:
//! application/cloudevents+json`). A record without an id gets
//! `<topic>/<partition>/<offset>`; one that cannot be decoded is handed to the
//! pipeline with the reason, which dead-letters it.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sluice_wire::OwnedEvent;

use super::log::Record;
use crate::config::KafkaConfig;
use crate::state::Store;

/// How long a metadata or admin request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to a Kafka cluster: configuration and topic administration.
pub struct Kafka {
    config: KafkaConfig,
    default_partitions: u32,
    /// What the host's Kafka clients last saw.
    pub health: Arc<Health>,
    /// API readers by partition, with the offset each is at.
    readers: Mutex<HashMap<(String, u32), (BaseConsumer, u64)>>,
}

/// Whether the broker answers, as the consumers and the relay last saw it.
#[derive(Debug, Default)]
pub struct Health {
    last_ok_ms: std::sync::atomic::AtomicU64,
    last_error: Mutex<Option<(u64, String)>>,
}

impl Health {
    /// A request to the broker succeeded.
    pub fn ok(&self) {
        self.last_ok_ms
            .store(super::now_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    /// A request failed.
    pub fn error(&self, e: impl std::fmt::Display) {
        *self.last_error.lock().unwrap() = Some((super::now_ms(), e.to_string()));
    }

    /// `{"reachable", "last_ok_ms", "last_error", "last_error_ms"}`.
    pub fn report(&self) -> serde_json::Value {
        let ok = self.last_ok_ms.load(std::sync::atomic::Ordering::Relaxed);
        let err = self.last_error.lock().unwrap().clone();
        let reachable = err.as_ref().is_none_or(|(at, _)| ok >= *at);
        serde_json::json!({
            "reachable": reachable,
            "last_ok_ms": ok,
            "last_error": err.as_ref().map(|e| e.1.clone()),
            "last_error_ms": err.map(|e| e.0),
        })
    }
}

impl Kafka {
    /// `default_partitions` is used for topics created without a count.
    pub fn new(config: KafkaConfig, default_partitions: u32) -> Kafka {
        Kafka {
            config,
            default_partitions,
            health: Arc::new(Health::default()),
            readers: Mutex::new(HashMap::new()),
        }
    }

    /// A librdkafka config with every `[kafka]` property (for a consumer).
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in &self.config.properties {
            c.set(k, v);
        }
        c
    }

    /// The same without consumer-only properties (librdkafka warns about
    /// them on a producer or admin client).
    pub fn producer_config(&self) -> ClientConfig {
        const CONSUMER_ONLY: &[&str] = &[
            "session.timeout.ms",
            "heartbeat.interval.ms",
            "group.",
            "auto.offset.reset",
            "enable.auto.",
            "max.poll.interval.ms",
            "fetch.",
            "partition.assignment.strategy",
            "isolation.level",
        ];
        let mut c = ClientConfig::new();
        for (k, v) in &self.config.properties {
            if !CONSUMER_ONLY.iter().any(|p| k.starts_with(p)) {
                c.set(k, v);
            }
        }
        c
    }

    /// The consumer group of `module`.
    pub fn group(&self, module: &str) -> String {
        format!("{}{module}", self.config.group_prefix)
    }

    /// Create each topic that does not exist (with its partition count, or
    /// the default), and return every topic's partition count.
    pub fn ensure_topics(&self, topics: &[(String, Option<u32>)]) -> Result<Vec<u32>, String> {
        let admin: AdminClient<DefaultClientContext> = self
            .producer_config()
            .create()
            .map_err(|e| format!("cannot create a Kafka admin client: {e}"))?;
        let mut out = Vec::with_capacity(topics.len());
        let missing: Vec<(String, u32)> = topics
            .iter()
            .filter(|(t, _)| self.partitions_of(&admin, t).ok().flatten().is_none())
            .map(|(t, n)| (t.clone(), n.unwrap_or(self.default_partitions)))
            .collect();
        if !missing.is_empty() {
            let new: Vec<NewTopic<'_>> = missing
                .iter()
                .map(|(t, n)| NewTopic::new(t, *n as i32, TopicReplication::Fixed(1)))
                .collect();
            let opts = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
            let results = block_on(admin.create_topics(&new, &opts))
                .map_err(|e| format!("cannot create Kafka topics: {e}"))?;
            for r in results {
                match r {
                    Ok(t) => tracing::info!(topic = %t, "created Kafka topic"),
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((t, e)) => return Err(format!("cannot create Kafka topic `{t}`: {e}")),
                }
            }
        }
        for (t, _) in topics {
            // A new topic's metadata may take a moment to appear.
            let deadline = Instant::now() + REQUEST_TIMEOUT;
            loop {
                match self.partitions_of(&admin, t) {
                    Ok(Some(n)) => {
                        out.push(n);
                        break;
                    }
                    Ok(None) | Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(100))
                    }
                    Ok(None) => return Err(format!("Kafka topic `{t}` does not appear")),
                    Err(e) => return Err(format!("Kafka metadata for `{t}`: {e}")),
                }
            }
        }
        Ok(out)
    }

    fn partitions_of(
        &self,
        admin: &AdminClient<DefaultClientContext>,
        topic: &str,
    ) -> Result<Option<u32>, KafkaError> {
        let md = admin.inner().fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
        Ok(partition_count(&md, topic))
    }

    /// A consumer for `module`'s `topics`, in its group.
    pub fn input(
        &self,
        module: &str,
        topics: &[String],
        store: Arc<Store>,
    ) -> Result<KafkaInput, String> {
        let ctx = GroupContext {
            health: self.health.clone(),
            module: module.into(),
            store,
            events: Arc::new(Mutex::new(Vec::new())),
            pending: Arc::new(Mutex::new(BTreeMap::new())),
        };
        let mut cfg = self.client_config();
        cfg.set("group.id", self.group(module))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set_if_unset("session.timeout.ms", "10000")
            .set_if_unset("partition.assignment.strategy", "range");
        let consumer: BaseConsumer<GroupContext> = cfg
            .create_with_context(ctx)
            .map_err(|e| format!("cannot create a Kafka consumer for {module}: {e}"))?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| format!("cannot subscribe {module} to {names:?}: {e}"))?;
        let ends = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        self.watch_ends(module, topics, ends.clone(), stop.clone())?;
        Ok(KafkaInput {
            consumer,
            buffers: HashMap::new(),
            assigned: HashSet::new(),
            placing: HashMap::new(),
            skips_batches: false,
            gaps: HashMap::new(),
            ends,
            stop_watch: stop,
            last_commit: Instant::now(),
            buffered: 0,
        })
    }
}

impl Kafka {
    /// Every topic with its partition count.
    pub fn topics(&self) -> Result<Vec<(String, u32)>, String> {
        let c: BaseConsumer = self.client_config().create().map_err(|e| e.to_string())?;
        let md = c
            .fetch_metadata(None, REQUEST_TIMEOUT)
            .map_err(|e| format!("Kafka metadata: {e}"))?;
        let mut out: Vec<(String, u32)> = md
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && !t.name().starts_with("__"))
            .map(|t| (t.name().to_string(), t.partitions().len() as u32))
            .collect();
        out.sort();
        Ok(out)
    }

    /// For the read API: up to `limit` records of a partition from `from`,
    /// waiting up to `wait` for the first; and `(first, end)` offsets.
    ///
    /// A reader left where the previous request stopped is reused, so paging
    /// through a partition (`sluice tail`) does not place a new consumer for
    /// every page.
    pub fn read(
        &self,
        topic: &str,
        p: u32,
        from: u64,
        limit: usize,
        wait: Duration,
    ) -> Result<(Vec<Record>, (u64, u64)), String> {
        let key = (topic.to_string(), p);
        let cached = self.readers.lock().unwrap().remove(&key);
        let (c, placed_at) = match cached {
            Some((c, next)) if next == from => (c, Some(from)),
            _ => {
                let c: BaseConsumer = self
                    .client_config()
                    .set(
                        "group.id",
                        format!("sluice-api-reader-{}", rand::random::<u64>()),
                    )
                    .set("enable.auto.commit", "false")
                    .set("fetch.wait.max.ms", "50")
                    .create()
                    .map_err(|e| e.to_string())?;
                (c, None)
            }
        };
        let (lo, hi) = c
            .fetch_watermarks(topic, p as i32, REQUEST_TIMEOUT)
            .map_err(|e| format!("Kafka `{topic}`/{p}: {e}"))?;
        let (first, end) = (lo.max(0) as u64, hi.max(0) as u64);
        let from = from.max(first);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok((out, (first, end)));
        }
        // No early return at `end`: tansu's high watermark can lag the
        // records it serves.
        let mut placed = placed_at == Some(from);
        if !placed {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, p as i32, Offset::Offset(from as i64))
                .map_err(|e| e.to_string())?;
            c.assign(&tpl).map_err(|e| e.to_string())?;
        }
        let mut deadline = Instant::now() + wait.max(Duration::from_millis(500));
        // See `KafkaInput::placed`: fetch from before `from` if the broker
        // skipped ahead.
        let mut back = 0u64;
        let mut next = from;
        let placing_deadline = Instant::now() + REQUEST_TIMEOUT;
        while out.len() < limit
            && (Instant::now() < deadline || !placed && Instant::now() < placing_deadline)
        {
            match c.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let r = record_of(&m);
                    if !placed {
                        if r.offset > from && back < from - first {
                            back = (back * 2).max(1).min(from - first);
                            c.seek(
                                topic,
                                p as i32,
                                Offset::Offset((from - back) as i64),
                                REQUEST_TIMEOUT,
                            )
                            .map_err(|e| e.to_string())?;
                            continue;
                        }
                        placed = true;
                        deadline = Instant::now() + wait.max(Duration::from_millis(500));
                    }
                    if r.offset < next {
                        continue;
                    }
                    next = r.offset + 1;
                    out.push(r);
                }
                Some(Err(e)) => return Err(e.to_string()),
                None if !out.is_empty() => break,
                None => {}
            }
        }
        if placed {
            let mut readers = self.readers.lock().unwrap();
            if readers.len() >= 64 {
                readers.clear();
            }
            readers.insert(key, (c, next));
        }
        Ok((out, (first, end)))
    }

    /// A thread that keeps `ends` (each partition's high watermark) fresh,
    /// about once a second, off the module's thread: a broker round trip per
    /// partition must not slow processing down.
    fn watch_ends(
        &self,
        module: &str,
        topics: &[String],
        ends: Arc<Mutex<HashMap<(String, u32), u64>>>,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<(), String> {
        let client: BaseConsumer = self
            .client_config()
            .create()
            .map_err(|e| format!("cannot create a Kafka client for {module}: {e}"))?;
        let topics = topics.to_vec();
        std::thread::Builder::new()
            .name(format!("kafka-ends-{module}"))
            .spawn(move || {
                use std::sync::atomic::Ordering;
                while !stop.load(Ordering::Relaxed) {
                    for t in &topics {
                        let n = client
                            .fetch_metadata(Some(t), REQUEST_TIMEOUT)
                            .ok()
                            .and_then(|md| partition_count(&md, t))
                            .unwrap_or(0);
                        for p in 0..n as i32 {
                            if let Ok((_, hi)) = client.fetch_watermarks(t, p, REQUEST_TIMEOUT) {
                                ends.lock()
                                    .unwrap()
                                    .insert((t.clone(), p as u32), hi.max(0) as u64);
                            }
                        }
                    }
                    for _ in 0..10 {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        Ok(())
    }
}

/// Partition count of `topic` in `md`, if it exists (and has partitions).
fn partition_count(md: &rdkafka::metadata::Metadata, topic: &str) -> Option<u32> {
    md.topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len() as u32)
        .filter(|n| *n > 0)
}

trait SetIfUnset {
    fn set_if_unset(&mut self, k: &str, v: &str) -> &mut Self;
}

impl SetIfUnset for ClientConfig {
    fn set_if_unset(&mut self, k: &str, v: &str) -> &mut Self {
        if self.get(k).is_none() {
            self.set(k, v);
        }
        self
    }
}

/// Run a future to completion on this thread (rdkafka's futures need no reactor).
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime")
        .block_on(f)
}

/// A rebalance seen in `poll`.
enum GroupEvent {
    Assigned(Vec<(String, u32, u64)>),
    Revoked(Vec<(String, u32)>),
}

struct GroupContext {
    health: Arc<Health>,
    module: String,
    store: Arc<Store>,
    events: Arc<Mutex<Vec<GroupEvent>>>,
    /// Offsets committed locally but not yet to Kafka.
    pending: Arc<Mutex<BTreeMap<(String, u32), u64>>>,
}

impl ClientContext for GroupContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(module = %self.module, error = %error, reason, "Kafka client error; librdkafka retries");
        self.health.error(format!("{error}: {reason}"));
    }
}

fn tpl_entries(tpl: &TopicPartitionList) -> Vec<(String, u32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition() as u32))
        .collect()
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // Nothing is in flight (poll runs between batches): hand over
            // what this host committed before letting the partitions go.
            let revoked = tpl_entries(tpl);
            let mut pending = self.pending.lock().unwrap();
            let mut commit = TopicPartitionList::new();
            for (t, p) in &revoked {
                if let Some(o) = pending.remove(&(t.clone(), *p)) {
                    let _ = commit.add_partition_offset(t, *p as i32, Offset::Offset(o as i64));
                }
            }
            drop(pending);
            if commit.count() > 0
                && let Err(e) = consumer.commit(&commit, CommitMode::Sync)
            {
                tracing::warn!(module = %self.module, error = %e, "offset commit on revocation failed (the local cursor still holds)");
            }
            tracing::info!(module = %self.module, partitions = ?revoked, "partitions revoked");
            self.events
                .lock()
                .unwrap()
                .push(GroupEvent::Revoked(revoked));
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else {
            return;
        };
        let parts = tpl_entries(tpl);
        let committed = consumer
            .committed_offsets((*tpl).clone(), REQUEST_TIMEOUT)
            .ok();
        let mut placed = TopicPartitionList::new();
        let mut assigned = Vec::new();
        for (t, p) in parts {
            let local = self
                .store
                .cursor(&self.module, &t, p)
                .ok()
                .flatten()
                .unwrap_or(0);
            let group = committed
                .as_ref()
                .and_then(|c| c.find_partition(&t, p as i32))
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) if o >= 0 => Some(o as u64),
                    _ => None,
                })
                .unwrap_or(0);
            let at = local.max(group);
            let _ = placed.add_partition_offset(&t, p as i32, Offset::Offset(at as i64));
            assigned.push((t, p, at));
        }
        if let Err(e) = consumer.assign(&placed) {
            tracing::error!(module = %self.module, error = %e, "cannot place the assigned partitions at their cursors");
        }
        tracing::info!(module = %self.module, partitions = ?assigned, "partitions assigned");
        self.events
            .lock()
            .unwrap()
            .push(GroupEvent::Assigned(assigned));
    }
}

/// One module's consumer: buffers what `poll` returns per partition and
/// hands it out in offset order.
pub struct KafkaInput {
    consumer: BaseConsumer<GroupContext>,
    buffers: HashMap<(String, u32), VecDeque<Record>>,
    assigned: HashSet<(String, u32)>,
    /// Partitions just placed at a cursor: `(cursor, how far back the last seek went)`.
    placing: HashMap<(String, u32), Placing>,
    /// Per partition: the cursor a gap was last seen at, and how often.
    gaps: HashMap<(String, u32), (u64, u32)>,
    /// Last known end offset (high watermark) per partition, kept fresh by a
    /// watcher thread.
    ends: Arc<Mutex<HashMap<(String, u32), u64>>>,
    stop_watch: Arc<std::sync::atomic::AtomicBool>,
    last_commit: Instant,
    buffered: usize,
    /// The broker answered a fetch with a batch after the one holding the
    /// offset asked for (see `placed`).
    skips_batches: bool,
}

/// Times a partition is read again from the same cursor before a gap in the
/// broker's offsets is believed.
const MAX_REPLACEMENTS: u32 = 5;

/// How long a partition being placed may get no records (while the broker
/// has some past the cursor) before it is sought further back.
const QUIET_PLACEMENT: Duration = Duration::from_millis(500);

/// A partition being placed at `target` (see `KafkaInput::placed`).
struct Placing {
    target: u64,
    /// How far before `target` the last seek went.
    back: u64,
    /// When that seek was made.
    since: Instant,
}

impl Placing {
    fn at(target: u64) -> Placing {
        Placing {
            target,
            back: 0,
            since: Instant::now(),
        }
    }
}

/// Most records held in buffers before `poll` stops fetching.
const MAX_BUFFERED: usize = 20_000;

impl KafkaInput {
    /// Poll for up to `wait` (records go to the buffers; rebalances are
    /// served). Returns positions of newly assigned partitions.
    pub fn poll(&mut self, wait: Duration) -> Vec<(String, u32, u64)> {
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
        self.nudge_quiet_placements();
        self.flush_commits(false);
        fresh
    }

    /// Whether a record at `offset` of a partition just placed at a cursor
    /// may be used. A broker must return the record batch that contains the
    /// offset fetched from; tansu returns the next batch instead, which would
    /// skip the rest of the batch. So when the first record comes from
    /// beyond the cursor, seek back (1, 2, 4, ... records before it) until a
    /// fetch starts at or before the cursor, or from offset 0, where a gap
    /// is real. Records before the cursor are dropped by `read`.
    fn placed(&mut self, key: &(String, u32), offset: u64) -> bool {
        let Some(p) = self.placing.get(key) else {
            return true;
        };
        if offset <= p.target || p.back >= p.target {
            self.placing.remove(key);
            return true;
        }
        // Only a broker that answers with a later batch does this (tansu).
        self.skips_batches = true;
        self.seek_back(key, Some(offset));
        false
    }

    /// Seek a partition being placed further back (twice as far as last time).
    fn seek_back(&mut self, key: &(String, u32), got: Option<u64>) {
        let Some(p) = self.placing.get_mut(key) else {
            return;
        };
        p.back = (p.back * 2).max(1).min(p.target);
        p.since = Instant::now();
        let (target, back) = (p.target, p.back);
        tracing::debug!(topic = %key.0, partition = key.1, cursor = target, ?got, back, "fetch did not start at the cursor; seeking back");
        if let Err(e) = self.consumer.seek(
            &key.0,
            key.1 as i32,
            Offset::Offset((target - back) as i64),
            REQUEST_TIMEOUT,
        ) {
            tracing::warn!(topic = %key.0, partition = key.1, error = %e, "seek failed; reading on from where the broker is");
            self.placing.remove(key);
        }
    }

    /// A partition placed at a cursor inside the broker's last record batch
    /// gets nothing back from tansu at all (there is no next batch to return
    /// instead): when a placed partition stays quiet, seek back as if a later
    /// batch had come — if the broker is known to answer that way, or reports
    /// records past the cursor (tansu's high watermark can lag, so that alone
    /// is not enough). On a broker that behaves, an idle partition is left
    /// alone.
    fn nudge_quiet_placements(&mut self) {
        if self.placing.is_empty() {
            return; // the usual case: nothing being placed, nothing to copy
        }
        let ends = self.ends.lock().unwrap().clone();
        let quiet: Vec<(String, u32)> = self
            .placing
            .iter()
            .filter(|(k, p)| {
                p.back < p.target
                    && p.since.elapsed() >= QUIET_PLACEMENT
                    && (self.skips_batches || ends.get(*k).is_some_and(|end| *end > p.target))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in quiet {
            self.seek_back(&k, None);
        }
    }

    fn apply_group_events(&mut self) -> Vec<(String, u32, u64)> {
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
                        self.assigned.remove(&k);
                    }
                }
                GroupEvent::Assigned(parts) => {
                    for (t, p, at) in parts {
                        let k = (t.clone(), p);
                        if let Some(b) = self.buffers.remove(&k) {
                            self.buffered -= b.len();
                        }
                        self.assigned.insert(k.clone());
                        self.placing.insert(k, Placing::at(at));
                        fresh.push((t, p, at));
                    }
                }
            }
        }
        fresh
    }

    /// Whether this host holds `(topic, p)` now.
    pub fn owns(&self, topic: &str, p: u32) -> bool {
        self.assigned.contains(&(topic.to_string(), p))
    }

    /// Up to `max` buffered records of a partition from offset `from`.
    ///
    /// Records come out contiguous: if the next buffered record is beyond
    /// `from`, the partition is placed at `from` again (see
    /// [`placed`](Self::placed)) and nothing is returned until the missing
    /// records arrive. Only after [`MAX_REPLACEMENTS`] tries at the same
    /// offset is the gap taken as real (retention, compaction) and skipped.
    pub fn read(&mut self, topic: &str, p: u32, from: u64, max: usize) -> Vec<Record> {
        let key = (topic.to_string(), p);
        if self.placing.contains_key(&key) {
            return Vec::new();
        }
        let Some(buf) = self.buffers.get_mut(&key) else {
            return Vec::new();
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
                self.placing.insert(key.clone(), Placing::at(from));
                if let Err(e) = self.consumer.seek(
                    topic,
                    p as i32,
                    Offset::Offset(from as i64),
                    REQUEST_TIMEOUT,
                ) {
                    tracing::warn!(topic, partition = p, error = %e, "seek failed");
                    self.placing.remove(&key);
                }
                return Vec::new();
            }
            tracing::warn!(
                topic,
                partition = p,
                from,
                first,
                "offsets {from}..{first} are not on the broker (retention or compaction); skipping them"
            );
        }
        buf.iter().take(max).cloned().collect()
    }

    /// Record that the module committed up to `next` locally; it reaches
    /// Kafka with the next flush.
    pub fn committed(&mut self, topic: &str, p: u32, next: u64) {
        self.consumer
            .context()
            .pending
            .lock()
            .unwrap()
            .insert((topic.to_string(), p), next);
    }

    /// Commit pending offsets to Kafka (at most every 200 ms unless `now`).
    pub fn flush_commits(&mut self, now: bool) {
        if !now && self.last_commit.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.last_commit = Instant::now();
        let pending = std::mem::take(&mut *self.consumer.context().pending.lock().unwrap());
        if pending.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in &pending {
            if self.assigned.contains(&(t.clone(), *p)) {
                let _ = tpl.add_partition_offset(t, *p as i32, Offset::Offset(*o as i64));
            }
        }
        if tpl.count() == 0 {
            return;
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
        }
    }

    /// `(first, end)` offsets of a partition, from the broker.
    pub fn bounds(&mut self, topic: &str, p: u32) -> Option<(u64, u64)> {
        let (lo, hi) = self
            .consumer
            .fetch_watermarks(topic, p as i32, REQUEST_TIMEOUT)
            .ok()?;
        Some((lo.max(0) as u64, hi.max(0) as u64))
    }

    /// The first offset at or after time `ms` (or the end).
    pub fn offset_for_time(&mut self, topic: &str, p: u32, ms: i64) -> Option<u64> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p as i32, Offset::Offset(ms))
            .ok()?;
        let r = self.consumer.offsets_for_times(tpl, REQUEST_TIMEOUT).ok()?;
        match r.find_partition(topic, p as i32)?.offset() {
            Offset::Offset(o) if o >= 0 => Some(o as u64),
            _ => self.bounds(topic, p).map(|b| b.1),
        }
    }

    /// Partition count of `topic`.
    pub fn partitions(&self, topic: &str) -> Option<u32> {
        let md = self
            .consumer
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .ok()?;
        partition_count(&md, topic)
    }

    /// The last known end offsets (high watermarks).
    pub fn ends(&self) -> HashMap<(String, u32), u64> {
        self.ends.lock().unwrap().clone()
    }
}

impl Drop for KafkaInput {
    fn drop(&mut self) {
        self.stop_watch
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.flush_commits(true);
    }
}

/// A Kafka record as a stored frame, or (if it cannot be decoded) its raw
/// value with the reason.
fn record_of<M: Message>(m: &M) -> Record {
    let topic = m.topic();
    let p = m.partition() as u32;
    let offset = m.offset().max(0) as u64;
    let mut headers: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    if let Some(h) = m.headers() {
        for i in 0..h.count() {
            if let Some(x) = h.try_get(i) {
                headers.push((x.key.to_string(), x.value.map(<[u8]>::to_vec)));
            }
        }
    }
    let ts = m.timestamp().to_millis();
    match decode(topic, p, offset, m.key(), m.payload(), &headers, ts) {
        Ok(ev) => Record {
            offset,
            frame: ev.as_ref().encode(),
            invalid: None,
        },
        Err(reason) => {
            let raw: Vec<(String, Vec<u8>)> = headers
                .into_iter()
                .map(|(n, v)| (n, v.unwrap_or_default()))
                .collect();
            let ev = super::undecodable(
                topic,
                p,
                offset,
                m.key(),
                m.payload().unwrap_or_default(),
                raw,
            );
            Record {
                offset,
                frame: ev.as_ref().encode(),
                invalid: Some(reason),
            }
        }
    }
}

/// Decode one Kafka record with the CloudEvents Kafka binding.
pub fn decode(
    topic: &str,
    partition: u32,
    offset: u64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(String, Option<Vec<u8>>)],
    timestamp_ms: Option<i64>,
) -> Result<OwnedEvent, String> {
    let value = value.unwrap_or_default();
    let text = |name: &str, v: &Option<Vec<u8>>| -> Result<String, String> {
        let v = v.as_deref().unwrap_or_default();
        std::str::from_utf8(v)
            .map(str::to_owned)
            .map_err(|_| format!("header `{name}` is not UTF-8"))
    };
    let content_type = match headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
    {
        Some((n, v)) => Some(text(n, v)?),
        None => None,
    };
    let structured = content_type
        .as_deref()
        .is_some_and(|c| c.trim_start().starts_with("application/cloudevents"));
    let mut ev = if structured {
        let v: serde_json::Value = serde_json::from_slice(value)
            .map_err(|e| format!("structured-mode record is not JSON: {e}"))?;
        super::ingest::structured(v).map_err(|e| e.to_string())?
    } else {
        let mut ce = Vec::new();
        for (n, v) in headers {
            if let Some(attr) = n.strip_prefix("ce_") {
                ce.push((format!("ce-{attr}"), text(n, v)?));
            }
        }
        if ce.is_empty() {
            return Err(
                "not a CloudEvent: no ce_* headers and no content-type application/cloudevents+json"
                    .into(),
            );
        }
        if !ce.iter().any(|(n, _)| n == "ce-source") {
            return Err("required header `ce_source` is missing".into());
        }
        super::ingest::binary(&ce, content_type.as_deref(), value)
            .map_err(|e| e.to_string().replace("ce-", "ce_"))?
    };
    for (n, v) in headers {
        if n.starts_with("ce_") || n.eq_ignore_ascii_case("content-type") {
            continue;
        }
        if ev.headers.iter().any(|(h, _)| h == n) {
            continue;
        }
        ev.headers.push((n.clone(), v.clone().unwrap_or_default()));
    }
    if let Some(k) = key {
        ev.key = Some(k.to_vec());
    }
    if ev.id.is_empty() {
        ev.id = format!("{topic}/{partition}/{offset}");
    }
    if ev.time.is_none()
        && let Some(ms) = timestamp_ms
    {
        ev.time = Some(super::rfc3339_of_ms(ms));
    }
    ev.topic = topic.into();
    ev.partition = partition;
    ev.offset = offset;
    Ok(ev)
}

/// A Kafka record's parts: key, value, headers.
pub type KafkaRecord = (Option<Vec<u8>>, Vec<u8>, Vec<(String, Vec<u8>)>);

/// The Kafka record for an event, CloudEvents binary mode.
pub fn encode(ev: &sluice_wire::EventRef<'_>) -> KafkaRecord {
    let mut h: Vec<(String, Vec<u8>)> = vec![
        ("ce_specversion".into(), b"1.0".to_vec()),
        ("ce_id".into(), ev.id.as_bytes().to_vec()),
        ("ce_source".into(), ev.source.as_bytes().to_vec()),
        ("ce_type".into(), ev.ty.as_bytes().to_vec()),
    ];
    for (n, v) in [
        ("ce_subject", ev.subject),
        ("ce_time", ev.time),
        ("ce_dataschema", ev.dataschema),
        ("content-type", ev.datacontenttype),
    ] {
        if let Some(v) = v {
            h.push((n.into(), v.as_bytes().to_vec()));
        }
    }
    for (n, v) in ev.headers.iter() {
        h.push((n.to_string(), v.to_vec()));
    }
    (ev.key.map(<[u8]>::to_vec), ev.data.to_vec(), h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &[u8])]) -> Vec<(String, Option<Vec<u8>>)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), Some(v.to_vec())))
            .collect()
    }

    #[test]
    fn binary_mode_round_trips_and_fills_a_missing_id() {
        let ev = OwnedEvent {
            id: "e1".into(),
            source: "/s".into(),
            ty: "order.created".into(),
            time: Some("2026-01-01T00:00:00Z".into()),
            datacontenttype: Some("application/json".into()),
            key: Some(b"k".to_vec()),
            data: br#"{"a":1}"#.to_vec(),
            headers: vec![("traceparent".into(), b"00-abc-01".to_vec())],
            ..Default::default()
        };
        let (key, value, headers) = encode(&ev.as_ref());
        let headers: Vec<_> = headers.into_iter().map(|(n, v)| (n, Some(v))).collect();
        let back = decode("t", 2, 9, key.as_deref(), Some(&value), &headers, None).unwrap();
        assert_eq!(back.id, "e1");
        assert_eq!(back.ty, "order.created");
        assert_eq!(back.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(back.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(back.headers, ev.headers);
        assert_eq!(
            (back.topic.as_str(), back.partition, back.offset),
            ("t", 2, 9)
        );

        let no_id = h(&[
            ("ce_source", b"/s"),
            ("ce_type", b"t"),
            ("ce_specversion", b"1.0"),
        ]);
        let e = decode("t", 1, 5, None, Some(b"x"), &no_id, Some(0)).unwrap();
        assert_eq!(e.id, "t/1/5");
        assert_eq!(e.time.as_deref(), Some("1970-01-01T00:00:00Z"));
    }

    #[test]
    fn structured_mode_decodes() {
        let body = br#"{"specversion":"1.0","id":"s1","source":"/x","type":"t","data":{"n":1}}"#;
        let e = decode(
            "t",
            0,
            0,
            Some(b"key"),
            Some(body),
            &h(&[(
                "content-type",
                b"application/cloudevents+json; charset=utf-8",
            )]),
            None,
        )
        .unwrap();
        assert_eq!((e.id.as_str(), e.ty.as_str()), ("s1", "t"));
        assert_eq!(e.key.as_deref(), Some(&b"key"[..]));
    }

    #[test]
    fn malformed_records_are_refused_with_the_reason() {
        let ct = &[("content-type", &b"application/cloudevents+json"[..])];
        let bad_json = decode("t", 0, 0, None, Some(b"{nope"), &h(ct), None).unwrap_err();
        assert!(bad_json.contains("not JSON"), "{bad_json}");
        let no_type = decode(
            "t",
            0,
            0,
            None,
            Some(br#"{"id":"x","source":"/s"}"#),
            &h(ct),
            None,
        )
        .unwrap_err();
        assert!(no_type.contains("type"), "{no_type}");
        let missing = decode(
            "t",
            0,
            0,
            None,
            Some(b"x"),
            &h(&[("ce_id", b"1"), ("ce_type", b"t")]),
            None,
        )
        .unwrap_err();
        assert!(missing.contains("ce_source"), "{missing}");
        let not_utf8 = decode(
            "t",
            0,
            0,
            None,
            Some(b"x"),
            &h(&[("ce_source", b"/s"), ("ce_type", &[0xff, 0xfe])]),
            None,
        )
        .unwrap_err();
        assert!(
            not_utf8.contains("ce_type") && not_utf8.contains("UTF-8"),
            "{not_utf8}"
        );
        let plain = decode("t", 0, 0, None, Some(b"hello"), &[], None).unwrap_err();
        assert!(plain.contains("not a CloudEvent"), "{plain}");
    }
}
