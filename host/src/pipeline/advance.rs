//! Moving a module's cursor: the one path ([`Worker::advance`]) every commit
//! takes, whether it carries an event's effects, a dead letter, or only
//! skips what was filtered out. Also what a run of dead letters leads to:
//! quarantine.

use sluice_wire::{EventRef, OwnedEvent};

use super::read::Item;
use super::worker::Worker;
use super::{FailureClass, ModuleStatus};
use crate::dlq;
use crate::source::{TopicError, now_ms};
use crate::state::Commit;
use crate::telemetry::trace::EventSpan;
use crate::util::clip;

/// Why and how often an event failed, for its dead letter.
pub(super) struct Failed<'a> {
    pub(super) class: FailureClass,
    pub(super) message: &'a str,
    pub(super) attempts: u32,
    pub(super) first_failure_ms: u64,
    /// The event's span: the dead letter continues its trace.
    pub(super) span: Option<&'a EventSpan>,
}

impl Worker {
    /// Commit `c` with `outputs` (dead letters included) through the sink,
    /// with the cursor of `(topic, p)` at `next`, and remember it. Nothing is
    /// committed for a partition this host no longer holds (another host
    /// has it now): `Ok(false)`.
    pub(super) fn advance(
        &mut self,
        mut c: Commit<'_>,
        topic: &str,
        p: u32,
        next: u64,
        outputs: Vec<(String, Vec<OwnedEvent>)>,
    ) -> Result<bool, TopicError> {
        if !self.input.holds(topic, p) {
            tracing::warn!(module = %self.module.name, topic, partition = p, "this host no longer holds the partition; what it was applying is dropped, the new holder applies it");
            return Ok(false);
        }
        c.cursor(&self.module.name, topic, p, next);
        let started = std::time::Instant::now();
        self.cx.output.commit(c, &self.module.name, outputs)?;
        self.controls
            .metrics
            .commit_seconds
            .record(started.elapsed().as_secs_f64());
        self.cursors.insert((topic.to_string(), p), next);
        self.input.committed(topic, p, next);
        Ok(true)
    }

    /// Commit the overlay's effects for `done` (the events of the last call
    /// that succeeded, in order) and move the cursor to `next`. False if the
    /// partition is no longer this host's (nothing committed).
    pub(super) fn commit_effects(
        &mut self,
        topic: &str,
        p: u32,
        done: &[Item<'_>],
        next: u64,
    ) -> Result<bool, TopicError> {
        let expiry = now_ms() + self.module.ttl_ms;
        let store = self.cx.store.clone();
        let module = self.module.name.clone();
        let inst = self
            .instance
            .as_mut()
            .expect("instance exists after a call");
        let txn = inst.txn();
        txn.truncate(done.len());
        let mut c = Commit::new(&store);
        let mut state_writes = false;
        for (k, v) in txn.writes() {
            c.state(&module, p, k, v);
            state_writes = true;
        }
        for it in done {
            c.mark_applied(&it.key, expiry);
        }
        let keyless = done.iter().filter(|it| it.ev.key.is_none()).count() as u64;
        let outputs = txn.take_emitted();
        let emitted = outputs.len();
        let held = self.advance(
            c,
            topic,
            p,
            next,
            group_by_topic(outputs.into_iter().map(|e| e.out)),
        )?;
        if let Some(inst) = self.instance.as_mut() {
            inst.txn().committed();
        }
        if !held {
            return Ok(false);
        }
        if !done.is_empty() {
            self.consecutive_failures = 0;
        }
        let m = &self.controls.metrics;
        m.applied.add(done.len() as u64);
        m.emitted.add(emitted as u64);
        if state_writes && keyless > 0 {
            if m.keyless_state_writes.get() == 0 {
                tracing::warn!(module = %self.module.name, topic, partition = p, "keyless events change the state of module {module}: an entity's events may be spread over partitions, each with its own state; give events a partitionkey, or declare the topic's key ([[topics]] key = \"/field\")");
            }
            m.keyless_state_writes.add(keyless);
        }
        Ok(true)
    }

    /// Dead-letter `item` and move the cursor to `next`.
    pub(super) fn dead_letter(
        &mut self,
        topic: &str,
        p: u32,
        item: &Item<'_>,
        failed: Failed<'_>,
        next: u64,
    ) -> Result<bool, TopicError> {
        let Failed {
            class,
            message,
            attempts,
            first_failure_ms,
            span,
        } = failed;
        let mut dl = dlq::DeadLetter {
            module: &self.module.name,
            version: &self.module.manifest.version,
            class,
            message,
            attempts,
            first_failure_ms,
            last_failure_ms: now_ms(),
        }
        .record(&item.ev, &self.module.dlq_topic);
        if let Some(span) = span {
            span.stamp(&mut dl.headers);
        }
        tracing::warn!(module = %self.module.name, id = %clip(item.ev.id, 256), topic, partition = p, offset = item.offset, class = class.as_str(), attempts, reason = %clip(message, 1024), "dead-lettered");
        let store = self.cx.store.clone();
        let mut c = Commit::new(&store);
        let limit = self.module.manifest.retry.quarantine_after;
        let quarantine = limit > 0 && self.consecutive_failures + 1 >= limit;
        if quarantine {
            // Remembered in the same write as the dead letter that caused it.
            c.quarantine(&self.module.name, true);
        }
        let dlq_topic = self.module.dlq_topic.clone();
        if !self.advance(c, topic, p, next, vec![(dlq_topic, vec![dl])])? {
            return Ok(false);
        }
        self.controls.metrics.dead_letters.add(1);
        self.controls.metrics.failed(class, item.ev.id, message);
        self.consecutive_failures += 1;
        if quarantine {
            tracing::error!(module = %self.module.name, failures = self.consecutive_failures, "quarantined: too many failures in a row; `sluice resume` brings it back");
            self.controls.quarantine.set(true);
            *self.controls.status.lock().unwrap() = ModuleStatus::Quarantined;
        }
        Ok(true)
    }

    /// Dead-letter a record that is not an event (`frame` is the source's
    /// stand-in for it, or raw bytes) and move the cursor past it.
    pub(super) fn dead_letter_raw(
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
        let dl = dlq::DeadLetter {
            module: &self.module.name,
            version: &self.module.manifest.version,
            class: FailureClass::Undecodable,
            message: reason,
            attempts: 0,
            first_failure_ms: now,
            last_failure_ms: now,
        }
        .record(&original.as_ref(), &self.module.dlq_topic);
        let store = self.cx.store.clone();
        let c = Commit::new(&store);
        let dlq_topic = self.module.dlq_topic.clone();
        if !self.advance(c, topic, p, offset + 1, vec![(dlq_topic, vec![dl])])? {
            return Ok(());
        }
        self.controls.metrics.dead_letters.add(1);
        let at = format!("{topic}/{p}/{offset}");
        self.controls
            .metrics
            .failed(FailureClass::Undecodable, &at, reason);
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
