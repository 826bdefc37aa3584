//! Where events come from: the embedded log ([`EventLog`]), durable topics in
//! the host's RocksDB fed over the HTTP API ([`ingest`]), or Kafka
//! ([`kafka`]), chosen by the host config.
//!
//! A topic has N partitions; an event goes to `murmur2(key) % N` (Kafka's
//! default partitioner, so keys land the same way they would on Kafka) or
//! round-robin when it has no key. Offsets are dense per partition. Retention
//! keeps the newest `retention-events` per partition.

pub mod ingest;
pub mod kafka;
mod log;
pub mod partition;

pub use log::{EventLog, Record, TopicError};

/// CloudEvents type of the stand-in for a record that is not a valid event.
pub const UNDECODABLE_TYPE: &str = "sluice.undecodable";

/// A stand-in event for a record that could not be decoded: its raw value as
/// data, its key and headers, id `<topic>/<partition>/<offset>`.
pub fn undecodable(
    topic: &str,
    partition: u32,
    offset: u64,
    key: Option<&[u8]>,
    value: &[u8],
    headers: Vec<(String, Vec<u8>)>,
) -> sluice_wire::OwnedEvent {
    sluice_wire::OwnedEvent {
        id: format!("{topic}/{partition}/{offset}"),
        source: "/sluice/undecodable".into(),
        ty: UNDECODABLE_TYPE.into(),
        key: key.map(<[u8]>::to_vec),
        data: value.to_vec(),
        headers,
        topic: topic.into(),
        partition,
        offset,
        ..Default::default()
    }
}

/// Now, as RFC 3339 (UTC, milliseconds).
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now
        .replace_nanosecond(now.millisecond() as u32 * 1_000_000)
        .unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Unix milliseconds as RFC 3339 (UTC).
pub fn rfc3339_of_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
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
