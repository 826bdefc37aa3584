//! End-to-end tests: real `sluice` processes, real RocksDB, guest modules built
//! from source by `build.rs`.

mod adversaries;
mod bad_input;
mod crash;
mod dlq;
mod duplicates;
mod exactly_once;
mod failures;
mod governance;
mod kafka;
mod kafka_exactly_once;
mod kafka_restart;
mod kafka_tls;
mod languages;
mod lifecycle;
mod observability;
mod quickstart;
mod scaffold;
