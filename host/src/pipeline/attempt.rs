//! Calling the module: a batch of events in one `handle-batch` call, or one
//! event at a time after a failure or a trap; retries with exponential
//! backoff and full jitter, in place, so the partition's order holds; what a
//! failure means for the event (retry, or dead letter with its class).

use std::time::{Duration, Instant};

use rand::Rng;
use sluice_wire::{BatchWriter, EventRef};

use super::FailureClass;
use super::advance::Failed;
use super::read::Item;
use super::worker::Worker;
use crate::runtime::{GuestFailure, TrapKind, Trapped};
use crate::schema::{Policy, Stage, Validated, Verdict};
use crate::source::now_ms;
use crate::state::txn::InputMeta;
use crate::telemetry::trace::{Delivery, EventIds, EventSpan};
use crate::util::clip;

/// A failed attempt at one event.
pub(super) enum Attempt {
    Failed(GuestFailure),
    Trapped(Trapped),
    /// It emitted an event its type's schema refuses.
    Invalid(String),
}

/// The attempt a limit hit (or an invalid output) recorded against an event
/// makes.
fn poisoned(kind: &str, why: &str) -> Attempt {
    if kind == "schema" {
        return Attempt::Invalid(why.to_string());
    }
    Attempt::Trapped(Trapped {
        kind: TrapKind::of_limit(kind),
        message: why.to_string(),
    })
}

/// How an event handled alone ended.
enum Single {
    /// Applied or dead-lettered, and committed.
    Done,
    /// The pipeline is stopping, or the partition is no longer this
    /// host's; nothing was committed.
    Stopped,
}

/// What the overlay needs to know of an input event; its outputs carry the
/// trace context of `span` (else the input's own).
fn meta(ev: &EventRef<'_>, span: Option<&EventSpan>, schema: Option<u64>) -> InputMeta {
    let trace = match span {
        Some(s) => s.headers().to_vec(),
        None => ev
            .headers
            .iter()
            .filter(|(n, _)| {
                n.eq_ignore_ascii_case("traceparent") || n.eq_ignore_ascii_case("tracestate")
            })
            .map(|(n, v)| (n.to_ascii_lowercase(), v.to_vec()))
            .collect(),
    };
    InputMeta {
        source: ev.source.into(),
        id: ev.id.into(),
        key: ev.key.map(<[u8]>::to_vec),
        trace,
        validated: schema.map(|schema| Validated {
            schema,
            data: ev.data.to_vec(),
        }),
    }
}

impl Worker {
    /// Apply `todo` (prepared from one read of partition `p`), committing as
    /// it goes; events after the last one the cursor moves to `cut`. False if
    /// the pipeline stopped or was quarantined in between.
    pub(super) fn apply(
        &mut self,
        topic: &str,
        p: u32,
        todo: &[Item<'_>],
        cut: u64,
    ) -> anyhow::Result<bool> {
        let invalid = self.schema_failures(topic, todo);
        let mut i = 0;
        let mut served = Instant::now();
        while i < todo.len() {
            if self.stopping() || self.controls.quarantine.is_set() {
                return Ok(false);
            }
            // One event at a time (after a trap) can take long: keep the
            // input served (a Kafka member must poll to keep its partitions).
            if served.elapsed() > Duration::from_millis(500) {
                self.serve_input()?;
                served = Instant::now();
                if !self.input.holds(topic, p) {
                    return Ok(false);
                }
            }
            if let Some(why) = &invalid[i] {
                let next = todo.get(i + 1).map(|it| it.offset).unwrap_or(cut);
                let failed = Failed {
                    class: FailureClass::Schema,
                    message: why,
                    attempts: 0,
                    first_failure_ms: now_ms(),
                    span: None,
                };
                if !self.dead_letter(topic, p, &todo[i], failed, next)? {
                    return Ok(false);
                }
                i += 1;
                continue;
            }
            // The valid events up to the next invalid one; after them the
            // cursor moves to `cut` of this run.
            let stop = invalid[i..]
                .iter()
                .position(Option::is_some)
                .map_or(todo.len(), |k| i + k);
            let cut = todo.get(stop).map(|it| it.offset).unwrap_or(cut);
            let rest = &todo[i..stop];
            let batched = self.single_mode == 0 && rest.len() > 1 && self.instance()?.batched();
            if !batched {
                self.single_mode = self.single_mode.saturating_sub(1);
                let next = rest.get(1).map(|it| it.offset).unwrap_or(cut);
                match self.handle_single(topic, p, &rest[0], 0, None, None, next)? {
                    Single::Done => i += 1,
                    Single::Stopped => return Ok(false),
                }
                continue;
            }
            let mut spans = self.spans(topic, p, rest);
            match self.call_batch(p, rest, &spans)? {
                Ok(results) => {
                    let fail = results.iter().position(|r| r.is_err());
                    let ok = fail.unwrap_or(rest.len());
                    let next = match fail {
                        Some(f) => rest[f].offset,
                        None => cut,
                    };
                    let committed = self.commit_effects(topic, p, &rest[..ok], next)?;
                    let mut spans = spans.drain(..);
                    spans.by_ref().take(ok).flatten().for_each(EventSpan::end);
                    if !committed {
                        return Ok(false);
                    }
                    i += ok;
                    if let Some(f) = fail {
                        let failure = results.into_iter().nth(f).and_then(Result::err);
                        let span = spans.next().flatten();
                        // The events after it are read again: their spans end here.
                        for mut s in spans.flatten() {
                            s.set("sluice.outcome", "redone");
                            s.end();
                        }
                        let after = rest.get(f + 1).map(|it| it.offset).unwrap_or(cut);
                        match self.handle_single(topic, p, &rest[f], 1, failure, span, after)? {
                            Single::Done => i += 1,
                            Single::Stopped => return Ok(false),
                        }
                    }
                }
                Err(trap) => {
                    tracing::warn!(module = %self.module.name, kind = trap.kind.as_str(), error = %trap.message, "trap in a batch; retrying its events one at a time");
                    self.controls.metrics.trap(trap.kind);
                    self.instance = None;
                    self.single_mode = rest.len();
                    for mut s in spans.into_iter().flatten() {
                        s.set("sluice.outcome", "redone");
                        s.fail(trap.kind.as_str(), &trap.message);
                        s.end();
                    }
                }
            }
        }
        Ok(true)
    }

    /// The id of the schema version the event at `offset` of the current
    /// read passed, if it has one.
    fn passed(&self, offset: u64) -> Option<u64> {
        self.passed
            .binary_search_by_key(&offset, |(o, _)| *o)
            .ok()
            .map(|i| self.passed[i].1)
    }

    /// Per event of `todo`: why it fails its type's schema, where the
    /// topic's policy dead-letters it (`warn` logs it and lets it through).
    /// The versions valid ones passed are kept for their outputs' checks.
    fn schema_failures(&mut self, topic: &str, todo: &[Item<'_>]) -> Vec<Option<String>> {
        let schemas = self.cx.schemas.clone();
        let policy = schemas.policy(topic);
        self.passed.clear();
        todo.iter()
            .map(|it| {
                let v = schemas.validate(Stage::Input, it.ev.ty, it.ev.dataschema, it.ev.data);
                if let Verdict::Valid { id, .. } = v {
                    self.passed.push((it.offset, id));
                }
                let why = v.reason(it.ev.ty)?;
                if policy == Policy::Warn {
                    tracing::warn!(module = %self.module.name, topic, offset = it.offset, id = %clip(it.ev.id, 256), "event fails its schema (policy warn: processed anyway): {why}");
                    return None;
                }
                Some(why)
            })
            .collect()
    }

    /// With tracing on, a span for each of `items` (the child of its
    /// `traceparent`).
    fn spans(&self, topic: &str, p: u32, items: &[Item<'_>]) -> Vec<Option<EventSpan>> {
        let tracer = self.cx.telemetry.tracer();
        if !tracer.enabled() {
            return Vec::new();
        }
        let group = self
            .cx
            .group_prefix
            .as_ref()
            .map(|prefix| format!("{prefix}{}", self.module.name));
        items
            .iter()
            .map(|it| {
                let at = Delivery {
                    system: self.cx.system,
                    module: &self.module.name,
                    group: group.as_deref(),
                    topic,
                    partition: p,
                    offset: it.offset,
                };
                let ids = EventIds {
                    id: it.ev.id,
                    source: it.ev.source,
                    ty: it.ev.ty,
                };
                tracer.process(&at, &ids, it.ev.headers.iter())
            })
            .collect()
    }

    /// One `handle-batch` call over `rest` (outputs in the trace of each
    /// event's span): each event's result, or a trap that spoils the whole
    /// batch.
    fn call_batch(
        &mut self,
        p: u32,
        rest: &[Item<'_>],
        spans: &[Option<EventSpan>],
    ) -> anyhow::Result<Result<Vec<Result<(), Attempt>>, Trapped>> {
        let mut batch = BatchWriter::new();
        let mut metas = Vec::with_capacity(rest.len());
        for (i, it) in rest.iter().enumerate() {
            batch.push_frame(it.frame);
            metas.push(meta(
                &it.ev,
                spans.get(i).and_then(Option::as_ref),
                self.passed(it.offset),
            ));
        }
        let bytes = batch.finish();
        self.controls.metrics.batches.add(1);
        let wasm = self.controls.metrics.wasm_seconds.clone();
        let inst = self.instance()?;
        inst.txn().begin(p, metas);
        let started = Instant::now();
        let r = inst.call_batch(&bytes, rest.len());
        let per_event = started.elapsed().as_secs_f64() / rest.len() as f64;
        wasm.record_many(per_event, rest.len());
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
                            *r = Err(poisoned(kind, why));
                        }
                    }
                    Ok(results)
                }
            },
            Err(t) => Err(t),
        };
        Ok(r)
    }

    /// Run one event alone until it succeeds or is dead-lettered. `attempts`,
    /// `failure` and `span` carry a failed batch attempt. Afterwards the
    /// cursor is at `next`.
    #[allow(clippy::too_many_arguments)]
    fn handle_single(
        &mut self,
        topic: &str,
        p: u32,
        item: &Item<'_>,
        mut attempts: u32,
        mut failure: Option<Attempt>,
        span: Option<EventSpan>,
        next: u64,
    ) -> anyhow::Result<Single> {
        let mut span = match span {
            Some(s) => Some(s),
            None => self
                .spans(topic, p, std::slice::from_ref(item))
                .pop()
                .flatten(),
        };
        let done = self.attempt_single(
            topic,
            p,
            item,
            &mut attempts,
            &mut failure,
            span.as_mut(),
            next,
        );
        if let Some(mut s) = span {
            s.set("sluice.attempts", i64::from(attempts));
            s.end();
        }
        done
    }

    #[allow(clippy::too_many_arguments)]
    fn attempt_single(
        &mut self,
        topic: &str,
        p: u32,
        item: &Item<'_>,
        attempts: &mut u32,
        failure: &mut Option<Attempt>,
        mut span: Option<&mut EventSpan>,
        next: u64,
    ) -> anyhow::Result<Single> {
        let policy = self.module.manifest.retry.clone();
        if let Some(Attempt::Trapped(t)) = &failure {
            self.controls.metrics.trap(t.kind);
        }
        let mut first_failure_ms = failure.as_ref().map(|_| now_ms());
        loop {
            // Decide what the last failed attempt means: dead letter, or try again.
            if let Some(f) = failure.take() {
                let (class, message, retryable) = match f {
                    Attempt::Failed(GuestFailure::Reject(m)) => {
                        self.controls.metrics.rejected.add(1);
                        (FailureClass::Reject, m, false)
                    }
                    Attempt::Failed(GuestFailure::Retry(m)) => (FailureClass::Retry, m, true),
                    // The same output is invalid again on every attempt.
                    Attempt::Invalid(m) => (FailureClass::Schema, m, false),
                    // A limit is hit again by every attempt: never retried.
                    Attempt::Trapped(t) => {
                        let limit = matches!(
                            t.kind,
                            TrapKind::Output | TrapKind::State | TrapKind::Memory
                        );
                        let retry = policy.retry_traps && !limit;
                        (FailureClass::Trap(t.kind), t.message, retry)
                    }
                };
                if !retryable || *attempts >= policy.max_attempts {
                    if let Some(s) = span.as_deref_mut() {
                        s.fail(class.as_str(), &message);
                    }
                    let failed = Failed {
                        class,
                        message: &message,
                        attempts: *attempts,
                        first_failure_ms: first_failure_ms.unwrap_or_else(now_ms),
                        span: span.as_deref(),
                    };
                    return Ok(match self.dead_letter(topic, p, item, failed, next)? {
                        true => Single::Done,
                        false => Single::Stopped,
                    });
                }
                self.controls.metrics.retries.add(1);
                if !self.backoff(*attempts)? || !self.input.holds(topic, p) {
                    return Ok(Single::Stopped);
                }
            }
            let wasm = self.controls.metrics.wasm_seconds.clone();
            let m = meta(&item.ev, span.as_deref(), self.passed(item.offset));
            let inst = self.instance()?;
            inst.txn().begin(p, vec![m]);
            let started = Instant::now();
            let called = inst.call_one(&item.ev);
            wasm.record(started.elapsed().as_secs_f64());
            let hit = inst
                .txn()
                .poisoned()
                .first()
                .map(|(_, kind, why)| poisoned(kind, why));
            let r = match (called, hit) {
                (Err(trap), _) => Err(Attempt::Trapped(trap)),
                (Ok(_), Some(hit)) => Err(hit),
                (Ok(Ok(())), None) => Ok(()),
                (Ok(Err(f)), None) => Err(Attempt::Failed(f)),
            };
            inst.txn().take_store_error()?;
            *attempts += 1;
            let r = match r {
                Ok(()) => {
                    return Ok(
                        match self.commit_effects(topic, p, std::slice::from_ref(item), next)? {
                            true => Single::Done,
                            false => Single::Stopped,
                        },
                    );
                }
                Err(attempt) => attempt,
            };
            first_failure_ms.get_or_insert_with(now_ms);
            match &r {
                Attempt::Invalid(why) => {
                    tracing::debug!(module = %self.module.name, id = %clip(item.ev.id, 256), "an output fails its schema: {why}");
                }
                Attempt::Failed(f) => {
                    tracing::debug!(module = %self.module.name, id = %clip(item.ev.id, 256), attempts, failure = %clip(&format!("{f:?}"), 1024), "event failed");
                }
                Attempt::Trapped(trap) => {
                    self.controls.metrics.trap(trap.kind);
                    if !matches!(trap.kind, TrapKind::Output | TrapKind::State) {
                        // A wasm trap leaves the instance unusable; a limit does not.
                        self.instance = None;
                    }
                    tracing::warn!(module = %self.module.name, id = %clip(item.ev.id, 256), attempts, kind = trap.kind.as_str(), error = %clip(&trap.message, 1024), "event trapped");
                }
            }
            *failure = Some(r);
        }
    }

    /// Sleep before attempt `attempts + 1` (exponential, full jitter),
    /// serving the input meanwhile. False if stopping.
    fn backoff(&mut self, attempts: u32) -> anyhow::Result<bool> {
        let b = &self.module.manifest.retry.backoff;
        let exp = b
            .initial
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
        let cap = exp.min(b.max);
        let wait = cap.mul_f64(rand::rng().random_range(0.5..=1.0));
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if self.stopping() {
                return Ok(false);
            }
            std::thread::sleep((deadline - Instant::now()).min(Duration::from_millis(50)));
            self.serve_input()?;
        }
        Ok(true)
    }
}
