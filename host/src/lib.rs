//! Sluice: a WebAssembly stream-processor host.
//!
//! A [`Service`] consumes topics — from Kafka, or from a log embedded in the
//! host's own RocksDB — and hands every event to sandboxed consumer modules,
//! WebAssembly components implementing the `sluice:processor` world. Each
//! module's state, idempotency set, cursor and outputs are committed in one
//! RocksDB batch per group of events, so every module applies each event's
//! effect exactly once across crashes, redeliveries and replays.
//!
//! The flow of one event, and which module owns each step, is in
//! `docs/ARCHITECTURE.md`:
//!
//! - [`source`]: where events come from (the [`source::Source`],
//!   [`source::Input`] and [`source::Topics`] traits; the embedded log and
//!   Kafka behind them), ingest parsing, the CloudEvents Kafka binding.
//! - [`sink`]: where a commit's outputs go (the [`sink::Output`] trait): in
//!   the same batch on the embedded log, through the outbox and its relay
//!   on Kafka.
//! - [`backends`]: the one place that picks and builds the backends.
//! - [`pipeline`]: one running module: cursor, dedup, invoke, commit, retry.
//! - [`runtime`]: wasmtime, the component bindings, limits. The only place that
//!   names wasmtime.
//! - [`state`]: the RocksDB layout and the transaction overlay.
//! - [`dlq`]: dead-letter records, replay.
//! - [`schema`]: the schema registry, validation, consumer contracts,
//!   `sluice schema check`.
//! - [`deploy`]: the registry, the component store, the module lifecycle,
//!   status views, the watched directory.
//! - [`admin`]: the HTTP API. [`server`]: the host process (`sluice run`).
//! - [`cli`]: the `sluice` command. [`config`]: files.

pub mod admin;
pub mod backends;
pub mod cli;
pub mod config;
pub mod deploy;
pub mod dlq;
pub mod pipeline;
pub mod runtime;
pub mod schema;
pub mod server;
mod service;
pub mod sink;
pub mod source;
pub mod state;
pub mod telemetry;
pub mod util;

pub use deploy::lifecycle::{DeployRequest, Lifecycle, LifecycleError};
pub use deploy::status::{DeployOutcome, ModuleInfo, PartitionInfo, RewoundPartition};
pub use service::Service;
pub use source::Holder;
