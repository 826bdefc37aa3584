//! Sluice: a WebAssembly stream-processor host.
//!
//! A [`Service`] consumes topics (the embedded log in RocksDB) and hands every
//! event to sandboxed consumer modules, WebAssembly components implementing
//! the `sluice:processor` world. Each module's state, idempotency set, cursor
//! and outputs are committed in one RocksDB batch per group of events, so every
//! module applies each event's effect exactly once across crashes, redeliveries
//! and replays.
//!
//! The flow of one event, and which module owns each step, is in
//! `docs/ARCHITECTURE.md`:
//!
//! - [`source`]: the embedded log and ingest (CloudEvents JSON / HTTP binary).
//! - [`pipeline`]: one running module: cursor, dedup, invoke, commit, retry.
//! - [`runtime`]: wasmtime, the component bindings, limits. The only place that
//!   names wasmtime.
//! - [`state`]: the RocksDB layout and the transaction overlay.
//! - [`sink`]: the outbox relay. [`dlq`]: dead-letter records.
//! - [`deploy`]: the component store and the module registry (revisions).
//! - [`admin`]: the HTTP API. [`server`]: the host process (`sluice run`).
//! - [`cli`]: the `sluice` command. [`config`]: files.

pub mod admin;
pub mod cli;
pub mod config;
pub mod deploy;
pub mod dlq;
pub mod pipeline;
pub mod runtime;
pub mod server;
mod service;
pub mod sink;
pub mod source;
pub mod state;
pub mod telemetry;
pub mod util;

pub use service::{
    DeployOutcome, DeployRequest, LifecycleError, ModuleInfo, RewoundPartition, Service,
};
