//! Where committed outputs go. The [`Relay`] moves outbox entries to their
//! topics: on the embedded log the append and the outbox delete are one
//! `WriteBatch`, so each output is published exactly once.

pub mod kafka;
mod relay;

pub use relay::{Publisher, Relay};
