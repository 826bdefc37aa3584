//! One running module: read its partitions in order, skip what it has already
//! applied, call it, commit, retry, dead-letter.
//!
//! Per partition, a read of up to `batch-size` events becomes one
//! `handle-batch` call and one RocksDB `WriteBatch` holding every successful
//! event's state writes, idempotency mark and outputs plus the new cursor. When
//! event `f` of a batch fails, the events before it are committed, `f` is
//! retried alone (its batch attempt counts as attempt 1), and the rest are read
//! again. A trap discards the instance and the whole batch's effects; the
//! events are then run one at a time so the culprit is found.
//!
//! Each pipeline runs on its own OS thread, never on the async reactor.

mod metrics;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use sluice_wire::{BatchWriter, EventRef, OwnedEvent};

use crate::config::{Manifest, StartPosition};
use crate::dlq;
use crate::runtime::{GuestFailure, Loaded, ModuleCtx, ModuleInstance, Runtime, TrapKind, Trapped};
use crate::source::kafka::{Kafka, KafkaInput};
use crate::source::{EventLog, Record, TopicError, now_ms};
use crate::state::txn::{InputMeta, TxnLimits};
use crate::state::{Commit, Store, Txn, dedup_key};
use crate::util::{Flag, Signal, StoppableThread};

pub use metrics::{Metrics, MetricsSnapshot};

/// Everything a pipeline needs from its host.
#[derive(Clone)]
pub struct Shared {
    pub store: Arc<Store>,
    pub log: Arc<EventLog>,
    pub runtime: Arc<Runtime>,
    pub batch_size: usize,
    /// Set when topics live in Kafka instead of the embedded log.
    pub kafka: Option<Arc<Kafka>>,
    /// Wakes the outbox relay after a commit with outputs.
    pub relay: Arc<Signal>,
}

/// Where a module reads its input.
enum Input {
    Log,
    Kafka(Box<KafkaInput>),
}

/// A partition's cursor and end, as seen by this host (for the status API).
pub type Positions = Arc<Mutex<std::collections::BTreeMap<(String, u32), (u64, u64)>>>;

/// A handle to a running module.
pub struct Pipeline {
    pub manifest: Arc<Manifest>,
    pub metrics: Arc<Metrics>,
    /// `running`, `quarantined`, `stopped`, or `failed: <reason>`.
    pub status: Arc<Mutex<String>>,
    /// Set while the module is quarantined.
    pub quarantine: Arc<Flag>,
    /// On Kafka: cursor and end of the partitions this host holds.
    pub positions: Positions,
    thread: StoppableThread,
}

impl Pipeline {
    /// Start `manifest`'s module on its own thread, counting into `metrics`
    /// (kept by the caller across upgrades and pauses).
    pub fn start(
        shared: Shared,
        manifest: Arc<Manifest>,
        loaded: Loaded,
        metrics: Arc<Metrics>,
    ) -> Result<Pipeline, String> {
        metrics.starts.add(1);
        let status = Arc::new(Mutex::new("running".to_string()));
        let stop = Arc::new(AtomicBool::new(false));
        let quarantine = Arc::new(Flag::default());
        let positions = Positions::default();
        let mut worker = Worker::new(
            shared,
            manifest.clone(),
            loaded,
            Controls {
                metrics: metrics.clone(),
                stop: stop.clone(),
                status: status.clone(),
                quarantine: quarantine.clone(),
                positions: positions.clone(),
            },
        )
        .map_err(|e| format!("module {}: {e:#}", manifest.name))?;
        let st = status.clone();
        let name = manifest.name.clone();
        let thread = StoppableThread::spawn(format!("module-{name}"), stop, move || {
            if let Err(e) = worker.run() {
                tracing::error!(module = %name, error = %e, "module stopped");
                *st.lock().unwrap() = format!("failed: {e}");
            } else {
                *st.lock().unwrap() = "stopped".into();
            }
        })
        .map_err(|e| format!("cannot start a thread for module {}: {e}", manifest.name))?;
        Ok(Pipeline {
            manifest,
            metrics,
            status,
            quarantine,
            positions,
            thread,
        })
    }

    /// Ask the module to stop after its current batch, without waiting.
    pub fn request_stop(&self) {
        self.thread.request_stop();
    }

    /// Ask the module to stop after its current batch and wait for it.
    pub fn stop(&mut self) {
        self.thread.stop();
    }
}

/// What a worker shares with its [`Pipeline`] handle.
struct Controls {
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    status: Arc<Mutex<String>>,
    quarantine: Arc<Flag>,
    positions: Positions,
}

struct Worker {
    shared: Shared,
    manifest: Arc<Manifest>,
    module: Arc<str>,
    loaded: Loaded,
    ctx: Arc<ModuleCtx>,
    produce: Arc<[String]>,
    instance: Option<ModuleInstance>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    dlq_topic: String,
    ttl_ms: u64,
    /// Subscriptions: topic, type filter, partitions.
    subs: Vec<(String, Vec<String>, u32)>,
    /// Where each subscription starts when the module has no cursor yet.
    starts: Vec<StartPosition>,
    /// The index in `subs` of the replay topic.
    replay_sub: Option<usize>,
    cursors: std::collections::HashMap<(String, u32), u64>,
    /// After a trap in a batch, run this many more events one at a time.
    single_mode: usize,
    status: Arc<Mutex<String>>,
    quarantine: Arc<Flag>,
    /// Dead-lettered events since the last success.
    consecutive_failures: u32,
    input: Input,
    positions: Positions,
    last_positions: std::time::Instant,
}

/// One event of a read, decoded enough to route it.
struct Item<'a> {
    offset: u64,
    frame: &'a [u8],
    ev: EventRef<'a>,
}

/// A failed attempt at one event.
enum Attempt {
    Failed(GuestFailure),
    Trapped(Trapped),
}

/// Why and how often an event failed, for its dead letter.
struct Failed<'a> {
    class: &'a str,
    message: &'a str,
    attempts: u32,
    first_failure_ms: Option<u64>,
}

enum Single {
    /// Applied and committed.
    Done,
    /// The pipeline is stopping; nothing was committed.
    Stopped,
}

impl Worker {
    fn new(
        shared: Shared,
        manifest: Arc<Manifest>,
        loaded: Loaded,
        controls: Controls,
    ) -> anyhow::Result<Worker> {
        let Controls {
            metrics,
            stop,
            status,
            quarantine,
            positions,
        } = controls;
        let module: Arc<str> = manifest.name.as_str().into();
        let ctx = Arc::new(ModuleCtx {
            name: module.clone(),
            version: manifest.version.clone(),
            config: manifest.config_strings(),
            limits: manifest.limits.clone(),
        });
        let produce: Arc<[String]> = manifest.produce.iter().map(|p| p.topic.clone()).collect();
        let mut subs = Vec::new();
        let mut starts = Vec::new();
        let input = match &shared.kafka {
            None => Input::Log,
            Some(k) => {
                let topics: Vec<String> =
                    manifest.subscribe.iter().map(|s| s.topic.clone()).collect();
                Input::Kafka(Box::new(
                    k.input(&manifest.name, &topics, shared.store.clone())
                        .map_err(anyhow::Error::msg)?,
                ))
            }
        };
        for s in &manifest.subscribe {
            let n = match &input {
                Input::Log => shared.log.partitions(&s.topic),
                Input::Kafka(k) => k.partitions(&s.topic),
            }
            .ok_or_else(|| anyhow::anyhow!("subscribed topic `{}` does not exist", s.topic))?;
            subs.push((s.topic.clone(), s.types.clone(), n));
            starts.push(s.start);
        }
        // Replayed dead letters (embedded log): read from the start, whatever types they have.
        let replay_topic = match &input {
            Input::Log => shared.log.partitions(&manifest.replay_topic()),
            Input::Kafka(_) => None,
        };
        let replay_sub = match replay_topic {
            Some(n) => {
                subs.push((manifest.replay_topic(), Vec::new(), n));
                starts.push(StartPosition::Earliest);
                Some(subs.len() - 1)
            }
            None => None,
        };
        let mut w = Worker {
            dlq_topic: manifest.dlq_topic(),
            ttl_ms: manifest.idempotency.ttl.as_millis() as u64,
            shared,
            module,
            loaded,
            ctx,
            produce,
            instance: None,
            metrics,
            stop,
            subs,
            cursors: Default::default(),
            starts,
            replay_sub,
            single_mode: 0,
            status,
            quarantine,
            consecutive_failures: 0,
            input,
            positions,
            last_positions: std::time::Instant::now(),
            manifest,
        };
        if w.shared.store.is_quarantined(&w.module)? {
            w.quarantine.set(true);
        }
        w.init_cursors()?;
        w.instance = Some(w.instantiate()?);
        Ok(w)
    }

    /// Load each partition's cursor, or place and persist it from `start`.
    fn init_cursors(&mut self) -> anyhow::Result<()> {
        let store = self.shared.store.clone();
        let mut fresh = Commit::new(&store);
        let mut any = false;
        let subs = self.subs.clone();
        let starts = self.starts.clone();
        for (start, (topic, _, n)) in starts.iter().zip(&subs) {
            for p in 0..*n {
                let c = match self.shared.store.cursor(&self.module, topic, p)? {
                    Some(c) => c,
                    None => {
                        let (first, next) = self.bounds(topic, p).unwrap_or((0, 0));
                        let c = match *start {
                            StartPosition::Earliest => first,
                            StartPosition::Latest => next,
                            StartPosition::Offset(o) => o.clamp(first, next),
                            StartPosition::Time(ms) => match &mut self.input {
                                Input::Log => self.shared.log.offset_for_time(topic, p, ms)?,
                                Input::Kafka(k) => k.offset_for_time(topic, p, ms).unwrap_or(next),
                            },
                        };
                        fresh.cursor(&self.module, topic, p, c);
                        any = true;
                        c
                    }
                };
                self.cursors.insert((topic.clone(), p), c);
            }
        }
        if any {
            fresh.commit()?;
        }
        Ok(())
    }

    fn instantiate(&self) -> anyhow::Result<ModuleInstance> {
        let limits = &self.manifest.limits;
        let txn = Txn::new(
            self.shared.store.clone(),
            self.module.clone(),
            self.produce.clone(),
            TxnLimits {
                max_emits: limits.max_emits,
                max_emit_bytes: limits.max_emit_bytes,
                max_state_value: limits.max_state_value,
                max_state_writes: limits.max_state_writes,
            },
        );
        self.shared
            .runtime
            .instantiate(&self.loaded, self.ctx.clone(), txn)
    }

    fn instance(&mut self) -> anyhow::Result<&mut ModuleInstance> {
        if self.instance.is_none() {
            self.instance = Some(self.instantiate()?);
        }
        Ok(self.instance.as_mut().expect("just set"))
    }

    fn run(&mut self) -> anyhow::Result<()> {
        tracing::info!(module = %self.module, version = %self.manifest.version, "module started");
        while !self.stop.load(Ordering::Relaxed) {
            if self.quarantine.is_set() {
                *self.status.lock().unwrap() = "quarantined".into();
                self.quarantine.wait_cleared(Duration::from_millis(200));
                if !self.quarantine.is_set() {
                    tracing::info!(module = %self.module, "resumed");
                    *self.status.lock().unwrap() = "running".into();
                    self.consecutive_failures = 0;
                }
                continue;
            }
            let seen = self.shared.log.generation();
            self.poll_input(Duration::ZERO)?;
            let mut progressed = false;
            for si in 0..self.subs.len() {
                for p in 0..self.subs[si].2 {
                    if self.stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    progressed |= self.poll_partition(si, p)?;
                }
            }
            if !progressed {
                match &self.input {
                    Input::Log => self
                        .shared
                        .log
                        .wait_for_append(seen, Duration::from_millis(200)),
                    Input::Kafka(_) => self.poll_input(Duration::from_millis(200))?,
                }
            }
        }
        Ok(())
    }

    /// Read and process one batch from a partition. Returns whether the cursor moved.
    fn poll_partition(&mut self, si: usize, p: u32) -> anyhow::Result<bool> {
        let topic = self.subs[si].0.clone();
        let from = self.cursors[&(topic.clone(), p)];
        let records = self.read(&topic, p, from)?;
        let Some(last) = records.last() else {
            return Ok(false);
        };
        if records[0].offset > from && matches!(self.input, Input::Log) {
            let lost = records[0].offset - from;
            tracing::warn!(module = %self.module, topic, partition = p, from, to = records[0].offset, "retention deleted {lost} events this module had not read");
            self.metrics.lost_to_retention.add(lost);
        }
        let end = last.offset + 1;
        let types = &self.subs[si].1;
        // A replayed event is shown to the module as it was first read.
        let restored: Vec<Option<Vec<u8>>> = if Some(si) == self.replay_sub {
            records
                .iter()
                .map(|r| dlq::restore_origin(&r.frame))
                .collect()
        } else {
            Vec::new()
        };

        let mut items: Vec<Item<'_>> = Vec::with_capacity(records.len());
        let mut cut = end;
        let mut seen_ids = HashSet::new();
        for (i, r) in records.iter().enumerate() {
            if let Some(reason) = &r.invalid {
                // A broker record that is not a CloudEvent: dead-letter it as is.
                cut = r.offset;
                if items.is_empty() {
                    self.dead_letter_raw(&topic, p, r.offset, &r.frame, reason)?;
                    return Ok(true);
                }
                break;
            }
            let frame: &[u8] = match restored.get(i) {
                Some(Some(f)) => f,
                _ => &r.frame,
            };
            let ev = match EventRef::decode(frame) {
                Ok(ev) => ev,
                Err(e) => {
                    // Cannot happen for frames this host wrote; never drop it silently.
                    cut = r.offset;
                    if items.is_empty() {
                        self.dead_letter_raw(&topic, p, r.offset, &r.frame, &e.to_string())?;
                        return Ok(true);
                    }
                    break;
                }
            };
            if !seen_ids.insert((ev.source, ev.id)) {
                // A duplicate inside one read: stop here, the next read checks it
                // against what this one commits.
                cut = r.offset;
                break;
            }
            items.push(Item {
                offset: r.offset,
                frame,
                ev,
            });
        }
        let matching: Vec<&Item<'_>> = items
            .iter()
            .filter(|it| types.is_empty() || types.iter().any(|t| t == it.ev.ty))
            .collect();
        self.metrics
            .filtered
            .add((items.len() - matching.len()) as u64);
        let keys: Vec<Vec<u8>> = matching
            .iter()
            .map(|it| dedup_key(&self.module, p, it.ev.source, it.ev.id))
            .collect();
        let applied = self.shared.store.applied(&keys, now_ms())?;
        let mut todo: Vec<(&Item<'_>, Vec<u8>)> = Vec::with_capacity(matching.len());
        for ((it, key), done) in matching.into_iter().zip(keys).zip(applied) {
            if done {
                self.metrics.dedup_hits.add(1);
            } else {
                todo.push((it, key));
            }
        }
        self.metrics.events_in.add(todo.len() as u64);

        let mut i = 0;
        while i < todo.len() {
            if self.stop.load(Ordering::Relaxed) || self.quarantine.is_set() {
                return Ok(true);
            }
            let rest = &todo[i..];
            let batched = self.single_mode == 0 && rest.len() > 1 && self.instance()?.batched();
            if !batched {
                self.single_mode = self.single_mode.saturating_sub(1);
                let next = rest.get(1).map(|(it, _)| it.offset).unwrap_or(cut);
                match self.handle_single(&topic, p, rest[0].0, &rest[0].1, 0, None, next)? {
                    Single::Done => i += 1,
                    Single::Stopped => return Ok(true),
                }
                continue;
            }
            match self.call_batch(p, rest)? {
                Ok(results) => {
                    let fail = results.iter().position(|r| r.is_err());
                    let ok = fail.unwrap_or(rest.len());
                    let next = match fail {
                        Some(f) => rest[f].0.offset,
                        None => cut,
                    };
                    self.commit_txn(&topic, p, &rest[..ok], next)?;
                    i += ok;
                    if let Some(f) = fail {
                        let failure = results.into_iter().nth(f).and_then(Result::err);
                        let after = rest.get(f + 1).map(|(it, _)| it.offset).unwrap_or(cut);
                        match self
                            .handle_single(&topic, p, rest[f].0, &rest[f].1, 1, failure, after)?
                        {
                            Single::Done => i += 1,
                            Single::Stopped => return Ok(true),
                        }
                    }
                }
                Err(trap) => {
                    tracing::warn!(module = %self.module, kind = trap.kind.as_str(), error = %trap.message, "trap in a batch; retrying its events one at a time");
                    self.metrics.trap(trap.kind);
                    self.instance = None;
                    self.single_mode = rest.len();
                }
            }
        }
        if todo.is_empty() || self.cursors[&(topic.clone(), p)] < cut {
            // Everything left was filtered out or already applied.
            let store = self.shared.store.clone();
            let mut c = Commit::new(&store);
            c.cursor(&self.module, &topic, p, cut);
            self.publish(c, Vec::new())?;
            self.set_cursor(&topic, p, cut);
        }
        Ok(true)
    }

    /// `(first, end)` of a partition.
    fn bounds(&mut self, topic: &str, p: u32) -> Option<(u64, u64)> {
        match &mut self.input {
            Input::Log => self.shared.log.bounds(topic, p),
            Input::Kafka(k) => k.bounds(topic, p),
        }
    }

    /// Up to a batch of records of a partition from `from` (none from a
    /// Kafka partition another host holds).
    fn read(&mut self, topic: &str, p: u32, from: u64) -> Result<Vec<Record>, TopicError> {
        match &mut self.input {
            Input::Log => self.shared.log.read(topic, p, from, self.shared.batch_size),
            Input::Kafka(k) => Ok(k.read(topic, p, from, self.shared.batch_size)),
        }
    }

    /// On Kafka: fetch, serve rebalances (placing newly assigned partitions at
    /// their cursors), publish positions for the status API.
    fn poll_input(&mut self, wait: Duration) -> anyhow::Result<()> {
        let Input::Kafka(k) = &mut self.input else {
            return Ok(());
        };
        let fresh = k.poll(wait);
        let ends =
            if self.last_positions.elapsed() > Duration::from_millis(200) || !fresh.is_empty() {
                self.last_positions = std::time::Instant::now();
                Some(k.ends())
            } else {
                None
            };
        if !fresh.is_empty() {
            let mut c = Commit::new(&self.shared.store);
            for (t, p, at) in &fresh {
                c.cursor(&self.module, t, *p, *at);
                self.cursors.insert((t.clone(), *p), *at);
            }
            c.commit()?;
        }
        if let (Some(ends), Input::Kafka(k)) = (ends, &self.input) {
            let mut pos = self.positions.lock().unwrap();
            pos.clear();
            for ((t, p), end) in ends {
                if k.owns(&t, p) {
                    let c = self.cursors.get(&(t.clone(), p)).copied().unwrap_or(0);
                    pos.insert((t, p), (c, end.max(c)));
                }
            }
        }
        Ok(())
    }

    /// Commit `c`, with `outputs` (dead letters included): on the embedded log
    /// appended in the same batch (ADR 0001); on Kafka written to the outbox
    /// in the same batch, for the relay.
    fn publish(
        &mut self,
        mut c: Commit<'_>,
        outputs: Vec<(String, Vec<OwnedEvent>)>,
    ) -> Result<(), TopicError> {
        match &self.input {
            Input::Log => {
                if outputs.is_empty() {
                    c.commit()?;
                } else {
                    self.shared.log.append_into(c.into_batch(), outputs)?;
                }
            }
            Input::Kafka(_) => {
                let any = !outputs.is_empty();
                let mut frame = Vec::new();
                for (_, events) in &outputs {
                    for e in events {
                        frame.clear();
                        e.as_ref().encode_into(&mut frame);
                        c.outbox(&self.module, &frame);
                    }
                }
                c.commit()?;
                if any {
                    self.shared.relay.ring();
                }
            }
        }
        Ok(())
    }

    fn set_cursor(&mut self, topic: &str, p: u32, next: u64) {
        self.cursors.insert((topic.to_string(), p), next);
        if let Input::Kafka(k) = &mut self.input {
            k.committed(topic, p, next);
        }
    }

    fn meta(ev: &EventRef<'_>) -> InputMeta {
        let trace = ev
            .headers
            .iter()
            .filter(|(n, _)| {
                n.eq_ignore_ascii_case("traceparent") || n.eq_ignore_ascii_case("tracestate")
            })
            .map(|(n, v)| (n.to_ascii_lowercase(), v.to_vec()))
            .collect();
        InputMeta {
            source: ev.source.into(),
            id: ev.id.into(),
            key: ev.key.map(<[u8]>::to_vec),
            trace,
        }
    }

    fn call_batch(
        &mut self,
        p: u32,
        rest: &[(&Item<'_>, Vec<u8>)],
    ) -> anyhow::Result<Result<Vec<Result<(), Attempt>>, Trapped>> {
        let mut batch = BatchWriter::new();
        let mut metas = Vec::with_capacity(rest.len());
        for (it, _) in rest {
            batch.push_frame(it.frame);
            metas.push(Self::meta(&it.ev));
        }
        let bytes = batch.finish();
        self.metrics.batches.add(1);
        let inst = self.instance()?;
        inst.txn().begin(p, metas);
        let r = inst.call_batch(&bytes, rest.len());
        inst.txn().take_store_error()?;
        let r = match r {
            Ok(mut results) => match inst.txn().check_batch(rest.len()) {
                Err(message) => Err(Trapped {
                    kind: TrapKind::Other,
                    message,
                }),
                Ok(()) => {
                    let mut results: Vec<Result<(), Attempt>> = results
                        .drain(..)
                        .map(|r| r.map_err(Attempt::Failed))
                        .collect();
                    for (i, kind, why) in inst.txn().poisoned() {
                        if let Some(r) = results.get_mut(*i) {
                            *r = Err(Attempt::Trapped(Trapped {
                                kind: TrapKind::of_limit(kind),
                                message: why.clone(),
                            }));
                        }
                    }
                    Ok(results)
                }
            },
            Err(t) => Err(t),
        };
        Ok(r)
    }

    /// Commit the overlay's effects for `done` (already truncated to them) and move the cursor to `next`.
    fn commit_txn(
        &mut self,
        topic: &str,
        p: u32,
        done: &[(&Item<'_>, Vec<u8>)],
        next: u64,
    ) -> Result<(), TopicError> {
        let expiry = now_ms() + self.ttl_ms;
        let store = self.shared.store.clone();
        let module = self.module.clone();
        let inst = self
            .instance
            .as_mut()
            .expect("instance exists after a call");
        let txn = inst.txn();
        txn.truncate(done.len());
        let mut c = Commit::new(&store);
        for (k, v) in txn.writes() {
            c.state(&module, p, k, v);
        }
        for (_, key) in done {
            c.mark_applied(key, expiry);
        }
        c.cursor(&module, topic, p, next);
        // On the embedded log the outputs are appended in the same WriteBatch
        // (ADR 0001): the log is the outbox.
        let outputs = txn.take_emitted();
        let emitted = outputs.len();
        self.publish(c, group_by_topic(outputs.into_iter().map(|e| e.out)))?;
        if let Some(inst) = self.instance.as_mut() {
            inst.txn().committed();
        }
        self.set_cursor(topic, p, next);
        if !done.is_empty() {
            self.consecutive_failures = 0;
        }
        self.metrics.applied.add(done.len() as u64);
        self.metrics.emitted.add(emitted as u64);
        Ok(())
    }

    /// Run one event alone until it succeeds or is dead-lettered. `attempts` and
    /// `failure` carry a failed batch attempt. On success the cursor moves to `next`.
    #[allow(clippy::too_many_arguments)]
    fn handle_single(
        &mut self,
        topic: &str,
        p: u32,
        item: &Item<'_>,
        key: &[u8],
        mut attempts: u32,
        mut failure: Option<Attempt>,
        next: u64,
    ) -> anyhow::Result<Single> {
        let policy = self.manifest.retry.clone();
        if let Some(Attempt::Trapped(t)) = &failure {
            self.metrics.trap(t.kind);
        }
        let mut first_failure_ms = failure.as_ref().map(|_| now_ms());
        loop {
            // Decide what the last failed attempt means: dead letter, or try again.
            if let Some(f) = failure.take() {
                let (class, message, retryable) = match f {
                    Attempt::Failed(GuestFailure::Reject(m)) => {
                        self.metrics.rejected.add(1);
                        ("reject", m, false)
                    }
                    Attempt::Failed(GuestFailure::Retry(m)) => ("retry", m, true),
                    Attempt::Trapped(t) => (t.kind.as_str(), t.message, policy.retry_traps),
                };
                if !retryable || attempts >= policy.max_attempts {
                    let failed = Failed {
                        class,
                        message: &message,
                        attempts,
                        first_failure_ms,
                    };
                    self.dead_letter(topic, p, item, failed, next)?;
                    return Ok(Single::Done);
                }
                self.metrics.retries.add(1);
                if !self.backoff(attempts) {
                    return Ok(Single::Stopped);
                }
            }
            let inst = self.instance()?;
            inst.txn().begin(p, vec![Self::meta(&item.ev)]);
            let r = match inst.call_one(&item.ev) {
                Ok(r) => match inst.txn().poisoned().first() {
                    Some((_, kind, why)) => Err(Trapped {
                        kind: TrapKind::of_limit(kind),
                        message: why.clone(),
                    }),
                    None => Ok(r),
                },
                Err(t) => Err(t),
            };
            inst.txn().take_store_error()?;
            attempts += 1;
            if r.as_ref().is_ok_and(Result::is_ok) {
                self.commit_txn(topic, p, &[(item, key.to_vec())], next)?;
                return Ok(Single::Done);
            }
            first_failure_ms.get_or_insert_with(now_ms);
            failure = Some(match r {
                Ok(Err(f)) => {
                    tracing::debug!(module = %self.module, id = item.ev.id, attempts, failure = ?f, "event failed");
                    Attempt::Failed(f)
                }
                Err(trap) => {
                    self.metrics.trap(trap.kind);
                    if !matches!(trap.kind, TrapKind::Output | TrapKind::State) {
                        // A wasm trap leaves the instance unusable; a limit does not.
                        self.instance = None;
                    }
                    tracing::warn!(module = %self.module, id = item.ev.id, attempts, kind = trap.kind.as_str(), error = %trap.message, "event trapped");
                    Attempt::Trapped(trap)
                }
                Ok(Ok(())) => unreachable!("handled above"),
            });
        }
    }

    /// Sleep before attempt `attempts + 1` (exponential, full jitter). False if stopping.
    fn backoff(&self, attempts: u32) -> bool {
        let b = &self.manifest.retry.backoff;
        let exp = b
            .initial
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
        let cap = exp.min(b.max);
        let wait = cap.mul_f64(rand::rng().random_range(0.5..=1.0));
        let deadline = std::time::Instant::now() + wait;
        while std::time::Instant::now() < deadline {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep(
                (deadline - std::time::Instant::now()).min(Duration::from_millis(50)),
            );
        }
        true
    }

    fn dead_letter(
        &mut self,
        topic: &str,
        p: u32,
        item: &Item<'_>,
        failed: Failed<'_>,
        next: u64,
    ) -> Result<(), TopicError> {
        let Failed {
            class,
            message,
            attempts,
            first_failure_ms,
        } = failed;
        let now = now_ms();
        let dl = dlq::DeadLetter {
            module: &self.module,
            version: &self.manifest.version,
            class,
            message,
            attempts,
            first_failure_ms: first_failure_ms.unwrap_or(now),
            last_failure_ms: now,
        }
        .record(&item.ev, &self.dlq_topic);
        tracing::warn!(module = %self.module, id = item.ev.id, topic, partition = p, offset = item.offset, class, attempts, reason = message, "dead-lettered");
        self.metrics.set_last_error(class, item.ev.id, message);
        let store = self.shared.store.clone();
        let mut c = Commit::new(&store);
        c.cursor(&self.module, topic, p, next);
        self.publish(c, vec![(self.dlq_topic.clone(), vec![dl])])?;
        self.set_cursor(topic, p, next);
        self.metrics.dead_letters.add(1);
        self.consecutive_failures += 1;
        let limit = self.manifest.retry.quarantine_after;
        if limit > 0 && self.consecutive_failures >= limit {
            tracing::error!(module = %self.module, failures = self.consecutive_failures, "quarantined: too many failures in a row; `sluice resume` brings it back");
            self.shared.store.set_quarantined(&self.module, true)?;
            self.quarantine.set(true);
            *self.status.lock().unwrap() = "quarantined".into();
        }
        Ok(())
    }

    fn dead_letter_raw(
        &mut self,
        topic: &str,
        p: u32,
        offset: u64,
        frame: &[u8],
        reason: &str,
    ) -> Result<(), TopicError> {
        let now = now_ms();
        let original = match EventRef::decode(frame) {
            // A broker record the source already wrapped, with its key and headers.
            Ok(ev) if ev.ty == crate::source::UNDECODABLE_TYPE => ev.to_owned_event(),
            _ => crate::source::undecodable(topic, p, offset, None, frame, Vec::new()),
        };
        let ev = dlq::DeadLetter {
            module: &self.module,
            version: &self.manifest.version,
            class: "undecodable",
            message: reason,
            attempts: 0,
            first_failure_ms: now,
            last_failure_ms: now,
        }
        .record(&original.as_ref(), &self.dlq_topic);
        let store = self.shared.store.clone();
        let mut c = Commit::new(&store);
        c.cursor(&self.module, topic, p, offset + 1);
        self.publish(c, vec![(self.dlq_topic.clone(), vec![ev])])?;
        self.set_cursor(topic, p, offset + 1);
        self.metrics.dead_letters.add(1);
        let at = format!("{topic}/{p}/{offset}");
        self.metrics.set_last_error("undecodable", &at, reason);
        Ok(())
    }
}

/// Group output events by topic, keeping their order within each topic.
fn group_by_topic(events: impl Iterator<Item = OwnedEvent>) -> Vec<(String, Vec<OwnedEvent>)> {
    let mut out: Vec<(String, Vec<OwnedEvent>)> = Vec::new();
    for e in events {
        match out.iter_mut().find(|(t, _)| *t == e.topic) {
            Some((_, v)) => v.push(e),
            None => out.push((e.topic.clone(), vec![e])),
        }
    }
    out
}
