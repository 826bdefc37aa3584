//! Where events come from. Today: the embedded log ([`EventLog`]), durable
//! topics in the host's RocksDB, fed over the HTTP API ([`ingest`]).
//!
//! A topic has N partitions; an event goes to `murmur2(key) % N` (Kafka's
//! default partitioner, so keys land the same way they would on Kafka) or
//! round-robin when it has no key. Offsets are dense per partition. Retention
//! keeps the newest `retention-events` per partition.

pub mod ingest;
mod log;
pub mod partition;

pub use log::{EventLog, Record, TopicError};

/// Now, as RFC 3339 (UTC, milliseconds).
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now
        .replace_nanosecond(now.millisecond() as u32 * 1_000_000)
        .unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Parse an RFC 3339 time into Unix milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}
