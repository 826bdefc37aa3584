//! The module's loop: place its partitions, make passes over them (read,
//! prepare, apply), wait for input when a pass moved nothing, sit out a
//! quarantine.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::read::{self, Read};
use super::{Context, Metrics, ModuleStatus};
use crate::config::{Manifest, StartPosition};
use crate::dlq;
use crate::runtime::{Loaded, ModuleCtx, ModuleInstance};
use crate::source::{Input, Placement};
use crate::state::Commit;
use crate::state::txn::{Txn, TxnLimits};
use crate::util::Flag;

/// What a worker shares with its [`Pipeline`](super::Pipeline) handle.
pub(super) struct Controls {
    pub(super) metrics: Arc<Metrics>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) status: Arc<Mutex<ModuleStatus>>,
    pub(super) quarantine: Arc<Flag>,
}

/// One topic the module reads.
#[derive(Debug, Clone)]
pub(super) struct Subscription {
    pub(super) topic: String,
    /// CloudEvents types it takes (all if empty).
    pub(super) types: Vec<String>,
    pub(super) partitions: u32,
    /// Where it starts when the module has no cursor yet.
    pub(super) start: StartPosition,
    /// The module's replay topic: its events are shown as first read.
    pub(super) replay: bool,
}

/// The module as the pipeline calls it.
pub(super) struct Module {
    pub(super) manifest: Arc<Manifest>,
    pub(super) name: Arc<str>,
    pub(super) loaded: Loaded,
    pub(super) ctx: Arc<ModuleCtx>,
    pub(super) produce: Arc<[String]>,
    pub(super) dlq_topic: String,
    pub(super) ttl_ms: u64,
}

pub(super) struct Worker {
    pub(super) cx: Context,
    pub(super) module: Module,
    pub(super) controls: Controls,
    pub(super) subs: Vec<Subscription>,
    pub(super) input: Box<dyn Input>,
    /// Next offset per partition.
    pub(super) cursors: HashMap<(String, u32), u64>,
    /// The instance, reused across events until a trap discards it.
    pub(super) instance: Option<ModuleInstance>,
    /// After a trap in a batch, run this many more events one at a time.
    pub(super) single_mode: usize,
    /// Of the events of the current read that passed their type's schema:
    /// offset and the version's id, by offset.
    pub(super) passed: Vec<(u64, u64)>,
    /// Dead-lettered events since the last success.
    pub(super) consecutive_failures: u32,
}

impl Worker {
    pub(super) fn new(
        cx: Context,
        manifest: Arc<Manifest>,
        loaded: Loaded,
        controls: Controls,
    ) -> anyhow::Result<Worker> {
        let name: Arc<str> = manifest.name.as_str().into();
        let ctx = Arc::new(ModuleCtx {
            name: name.clone(),
            version: manifest.version.clone(),
            config: manifest.config_strings(),
            limits: manifest.limits.clone(),
        });
        let replay_topic = manifest.replay_topic();
        let topics: Vec<(String, StartPosition)> = manifest
            .subscribe
            .iter()
            .map(|s| (s.topic.clone(), s.start))
            .chain([(replay_topic.clone(), StartPosition::Earliest)])
            .collect();
        let mut input = cx.source.input(&manifest.name, &topics)?;
        let mut subs = Vec::new();
        for s in &manifest.subscribe {
            let partitions = input
                .partitions(&s.topic)
                .ok_or_else(|| anyhow::anyhow!("subscribed topic `{}` does not exist", s.topic))?;
            subs.push(Subscription {
                topic: s.topic.clone(),
                types: s.types.clone(),
                partitions,
                start: s.start,
                replay: false,
            });
        }
        // Replayed dead letters: read from the start, whatever types they have.
        if let Some(partitions) = input.partitions(&replay_topic) {
            subs.push(Subscription {
                topic: replay_topic,
                types: Vec::new(),
                partitions,
                start: StartPosition::Earliest,
                replay: true,
            });
        }
        let module = Module {
            dlq_topic: manifest.dlq_topic(),
            ttl_ms: manifest.idempotency.ttl.as_millis() as u64,
            produce: manifest.produce.iter().map(|p| p.topic.clone()).collect(),
            name,
            loaded,
            ctx,
            manifest,
        };
        let mut w = Worker {
            cx,
            module,
            controls,
            subs,
            input,
            cursors: HashMap::new(),
            instance: None,
            single_mode: 0,
            passed: Vec::new(),
            consecutive_failures: 0,
        };
        if w.cx.store.is_quarantined(&w.module.name)? {
            w.controls.quarantine.set(true);
        }
        w.init_cursors()?;
        w.instance = Some(w.instantiate()?);
        Ok(w)
    }

    /// Load each partition's cursor; for a partition without one, ask the
    /// input where the subscription starts (and record it), unless the input
    /// places it itself when the partition is given to this host.
    fn init_cursors(&mut self) -> anyhow::Result<()> {
        let mut fresh = Vec::new();
        for s in &self.subs {
            for p in 0..s.partitions {
                let at = match self.cx.store.cursor(&self.module.name, &s.topic, p)? {
                    Some(c) => c,
                    None => match self.input.start(&s.topic, p, s.start)? {
                        Some(at) => {
                            fresh.push(Placement {
                                topic: s.topic.clone(),
                                partition: p,
                                at,
                            });
                            at
                        }
                        None => continue,
                    },
                };
                self.cursors.insert((s.topic.clone(), p), at);
            }
        }
        self.place(&fresh)?;
        Ok(())
    }

    /// Persist the cursors of partitions the input just placed. A partition
    /// beyond what a subscription knew (added to the topic since) is read
    /// from now on.
    pub(super) fn place(&mut self, placed: &[Placement]) -> anyhow::Result<()> {
        if placed.is_empty() {
            return Ok(());
        }
        let mut c = Commit::new(&self.cx.store);
        for pl in placed {
            c.cursor(&self.module.name, &pl.topic, pl.partition, pl.at);
            self.cursors.insert((pl.topic.clone(), pl.partition), pl.at);
            if let Some(s) = self.subs.iter_mut().find(|s| s.topic == pl.topic)
                && pl.partition >= s.partitions
            {
                tracing::info!(module = %self.module.name, topic = %pl.topic, partitions = pl.partition + 1, "the topic has more partitions now");
                s.partitions = pl.partition + 1;
            }
        }
        c.commit()?;
        Ok(())
    }

    /// Serve the input between attempts (a Kafka consumer must poll to stay
    /// in its group), recording what it placed.
    pub(super) fn serve_input(&mut self) -> anyhow::Result<()> {
        let placed = self.input.poll();
        self.place(&placed)
    }

    pub(super) fn instantiate(&self) -> anyhow::Result<ModuleInstance> {
        let limits = &self.module.manifest.limits;
        let txn = Txn::new(
            self.cx.store.clone(),
            self.module.name.clone(),
            self.module.produce.clone(),
            TxnLimits {
                max_emits: limits.max_emits,
                max_emit_bytes: limits.max_emit_bytes,
                max_state_value: limits.max_state_value,
                max_state_writes: limits.max_state_writes,
            },
        )
        .check_outputs({
            let schemas = self.cx.schemas.clone();
            std::sync::Arc::new(move |ty: &str, data: &[u8], input: Option<&_>| {
                match schemas.validate_output(ty, data, input).reason(ty) {
                    Some(why) => Err(why),
                    None => Ok(()),
                }
            })
        });
        self.cx
            .runtime
            .instantiate(&self.module.loaded, self.module.ctx.clone(), txn)
    }

    /// The instance, made anew after a trap discarded the last one.
    pub(super) fn instance(&mut self) -> anyhow::Result<&mut ModuleInstance> {
        if self.instance.is_none() {
            self.instance = Some(self.instantiate()?);
        }
        Ok(self.instance.as_mut().expect("just set"))
    }

    pub(super) fn stopping(&self) -> bool {
        self.controls.stop.load(Ordering::Relaxed)
    }

    fn set_status(&self, status: ModuleStatus) {
        *self.controls.status.lock().unwrap() = status;
    }

    pub(super) fn run(&mut self) -> anyhow::Result<()> {
        tracing::info!(module = %self.module.name, version = %self.module.manifest.version, "module started");
        while !self.stopping() {
            if self.controls.quarantine.is_set() {
                self.set_status(ModuleStatus::Quarantined);
                // Read nothing, but stay served: a Kafka member keeps its
                // group and commits what it did before the quarantine.
                self.serve_input()?;
                self.controls
                    .quarantine
                    .wait_cleared(Duration::from_millis(200));
                if !self.controls.quarantine.is_set() {
                    tracing::info!(module = %self.module.name, "resumed");
                    self.set_status(ModuleStatus::Running);
                    self.consecutive_failures = 0;
                }
                continue;
            }
            self.serve_input()?;
            let mut progressed = false;
            for si in 0..self.subs.len() {
                for p in 0..self.subs[si].partitions {
                    if self.stopping() {
                        return Ok(());
                    }
                    progressed |= self.poll_partition(si, p)?;
                }
            }
            if !progressed {
                let placed = self.input.idle(Duration::from_millis(200));
                self.place(&placed)?;
            }
        }
        Ok(())
    }

    /// Read and process one batch from a partition. Returns whether the cursor moved.
    fn poll_partition(&mut self, si: usize, p: u32) -> anyhow::Result<bool> {
        let topic = self.subs[si].topic.clone();
        let Some(&from) = self.cursors.get(&(topic.clone(), p)) else {
            return Ok(false); // not placed on this host (yet)
        };
        let records = self.input.read(&topic, p, from, self.cx.batch_size)?;
        let Some(last) = records.last() else {
            return Ok(false);
        };
        let started = std::time::Instant::now();
        if records[0].offset > from {
            let lost = records[0].offset - from;
            tracing::warn!(module = %self.module.name, topic, partition = p, from, to = records[0].offset, "{lost} events this module had not read are gone from the source (retention)");
            self.controls.metrics.lost_to_retention.add(lost);
        }
        let end = last.offset + 1;
        // A replayed event is shown to the module as it was first read.
        let restored: Vec<Option<Vec<u8>>> = if self.subs[si].replay {
            records
                .iter()
                .map(|r| dlq::restore_origin(&r.frame))
                .collect()
        } else {
            Vec::new()
        };
        let prepared = read::prepare(
            &self.cx.store,
            &self.module.name,
            p,
            &records,
            &restored,
            &self.subs[si].types,
            end,
        )?;
        let (todo, cut) = match prepared {
            Read::Undecodable {
                offset,
                frame,
                reason,
            } => {
                self.dead_letter_raw(&topic, p, offset, frame, &reason)?;
                return Ok(true);
            }
            Read::Events {
                todo,
                cut,
                filtered,
                dedup_hits,
            } => {
                let m = &self.controls.metrics;
                m.filtered.add(filtered as u64);
                m.dedup_hits.add(dedup_hits as u64);
                m.events_in.add(todo.len() as u64);
                (todo, cut)
            }
        };
        let applied = self.apply(&topic, p, &todo, cut)?;
        if !todo.is_empty() {
            self.controls
                .metrics
                .batch_seconds
                .record(started.elapsed().as_secs_f64());
        }
        if !applied {
            return Ok(true);
        }
        if todo.is_empty() || self.cursors.get(&(topic.clone(), p)) < Some(&cut) {
            // Everything left was filtered out or already applied.
            let store = self.cx.store.clone();
            let c = Commit::new(&store);
            self.advance(c, &topic, p, cut, Vec::new())?;
        }
        Ok(true)
    }
}
