//! Rewind: read a module's inputs again from a time or an offset. Planned
//! first (a bad target changes nothing); then, with the module stopped, the
//! source is told where it resumes and the local cursors move, with the
//! module's state dropped in the same write if asked; then it starts again.

use super::lifecycle::{Lifecycle, LifecycleError, Result, internal, not_deployed};
use super::status::RewoundPartition;
use crate::config::{Manifest, StartPosition};
use crate::source::{Placement, TopicError, start_offset};
use crate::state::Commit;

impl Lifecycle {
    /// Move a module's cursors back (or forward) to `to` on every partition
    /// of its subscriptions. Without `reset_state`, events already applied are
    /// skipped by the idempotency set (while their marks live, see
    /// `[idempotency] ttl`), so state does not change; with it, state and
    /// idempotency set are dropped first and rebuilt from the events read
    /// again.
    pub fn rewind(
        &self,
        name: &str,
        to: StartPosition,
        reset_state: bool,
    ) -> Result<Vec<RewoundPartition>> {
        let _serial = self.serial.lock().unwrap();
        let manifest = self
            .modules
            .get(name, |s| s.module().map(|m| m.manifest.clone()))
            .flatten()
            .ok_or_else(|| not_deployed(name))?;
        // Plan first, so a bad target changes nothing.
        let plan = self.rewind_plan(name, &manifest, to).map_err(internal)?;
        if let Some(Some(mut p)) = self.modules.halt(name, false) {
            p.stop();
        }
        let res = self.move_cursors(name, &plan, reset_state);
        self.modules.resume(name, false);
        res?;
        tracing::info!(module = %name, reset_state, partitions = plan.len(), "rewound");
        Ok(plan)
    }

    fn rewind_plan(
        &self,
        name: &str,
        manifest: &Manifest,
        to: StartPosition,
    ) -> std::result::Result<Vec<RewoundPartition>, TopicError> {
        let mut plan = Vec::new();
        for s in &manifest.subscribe {
            for p in 0..self.topics.partitions(&s.topic)?.unwrap_or(0) {
                let (first, end) = self.topics.bounds(&s.topic, p)?;
                let target = start_offset(to, (first, end), |ms| {
                    self.topics.offset_for_time(&s.topic, p, ms)
                })?;
                let from = self.store().cursor(name, &s.topic, p)?.unwrap_or(first);
                plan.push(RewoundPartition {
                    topic: s.topic.clone(),
                    partition: p,
                    from,
                    to: target,
                    end,
                });
            }
        }
        Ok(plan)
    }

    /// With the module stopped: move where the source resumes it, then its
    /// local cursors (and drop its state first if asked).
    fn move_cursors(&self, name: &str, plan: &[RewoundPartition], reset_state: bool) -> Result<()> {
        let to: Vec<Placement> = plan
            .iter()
            .map(|r| Placement {
                topic: r.topic.clone(),
                partition: r.partition,
                at: r.to,
            })
            .collect();
        self.cx.source.rewind(name, &to).map_err(|e| match e {
            TopicError::Unsupported(m) => LifecycleError::Invalid(m),
            TopicError::Conflict(m) => LifecycleError::Conflict(m),
            e => internal(e),
        })?;
        // One write: state dropped and cursors moved together, or neither.
        let mut c = Commit::new(self.store());
        if reset_state {
            c.forget_module(name, false);
        }
        for r in plan {
            c.cursor(name, &r.topic, r.partition, r.to);
        }
        c.commit().map_err(internal)
    }
}
