//! Where a commit's outputs and dead letters go: the [`Output`] trait.
//!
//! - Embedded log (`log.rs`): appended to their topics in the same RocksDB
//!   `WriteBatch` as the module's state, idempotency marks and cursor, so
//!   each output exists exactly once (ADR 0001). Nothing else to do.
//! - Kafka (`outbox.rs`, `relay.rs`, `kafka.rs`): written to the `outbox`
//!   column family in that same batch; the relay thread publishes them with
//!   the idempotent producer and deletes them after the broker acknowledges.
//!   A crash re-publishes at most one page; output ids are deterministic, so
//!   a consumer that deduplicates by id sees each output once.
//!
//! Which one runs is decided in `crate::backends::connect`.

pub mod kafka;
mod log;
mod outbox;
mod relay;

use sluice_wire::OwnedEvent;

pub use outbox::Outbox;
pub use relay::{Deliver, Relay, UNDELIVERABLE};

use crate::source::TopicError;
use crate::state::Commit;

/// How a module's commit leaves with its outputs.
pub trait Output: Send + Sync {
    /// Write `commit` (state, marks, cursor) and `outputs` (by topic, in
    /// emit order; dead letters included) atomically.
    fn commit(
        &self,
        commit: Commit<'_>,
        module: &str,
        outputs: Vec<(String, Vec<OwnedEvent>)>,
    ) -> Result<(), TopicError>;

    /// Deliver what is committed and stop background work (at shutdown);
    /// what is not delivered within `drain` is left for the next start.
    fn stop(&self, drain: std::time::Duration);
}
