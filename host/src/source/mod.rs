//! Where events come from: the backends behind three traits.
//!
//! - [`Input`]: one module's consumer. The module's thread polls it between
//!   batches, reads each partition it holds from the module's cursor, and
//!   tells it what was committed.
//! - [`Source`]: what builds a module's [`Input`] and answers for the
//!   module's position (cursor and end per partition) in status views.
//! - [`Topics`]: topic administration and the HTTP API's reads and writes
//!   (ensure, list, bounds, read, produce), used by `admin/`, `dlq/` and the
//!   module lifecycle.
//!
//! Two backends implement them: the embedded log ([`log::EventLog`], durable
//! topics in the host's RocksDB) and Kafka ([`kafka`], librdkafka). The output
//! side is `sink/`. Which backend runs is decided in one place,
//! `crate::backends::connect`; nothing else names a backend.
//!
//! On both, a topic has N partitions; an event with a key goes to
//! `murmur2(key) % N` (Kafka's default partitioner, see [`partition`]).

pub mod binding;
pub mod ingest;
pub mod kafka;
pub mod log;
pub mod partition;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_wire::OwnedEvent;
use thiserror::Error;

use crate::config::StartPosition;
use crate::state::StoreError;

/// Why a topic operation was refused.
#[derive(Debug, Error)]
pub enum TopicError {
    /// The topic does not exist and auto-creation is off.
    #[error(
        "unknown topic `{0}` (declare it under [[topics]] in the host config, use it in a module manifest, or set [log] auto-create-topics = true)"
    )]
    Unknown(String),
    /// Bad topic name.
    #[error("`{0}` is not a valid topic name (letters, digits, `-`, `_`, `.`)")]
    BadName(String),
    /// An event or a request names a partition the topic does not have.
    #[error("topic `{topic}` has {have} partitions; there is no partition {partition}")]
    NoPartition {
        topic: String,
        partition: u32,
        have: u32,
    },
    /// The topic exists with another partition count.
    #[error("topic `{topic}` has {have} partitions, {want} requested")]
    Partitions { topic: String, have: u32, want: u32 },
    /// The backend (a broker) did not answer or refused the request.
    #[error("{0}")]
    Unavailable(String),
    /// The backend cannot do this (yet).
    #[error("{0}")]
    Unsupported(String),
    /// It contradicts what the topic holds.
    #[error("{0}")]
    Conflict(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rocksdb::Error> for TopicError {
    fn from(e: rocksdb::Error) -> Self {
        TopicError::Store(StoreError::Rocks(e))
    }
}

/// One record of a partition, as a `sluice-wire` event frame.
#[derive(Debug, Clone)]
pub struct Record {
    pub offset: u64,
    pub frame: Vec<u8>,
    /// Set when the record could not be decoded into an event (from a broker):
    /// `frame` then holds a stand-in event with its raw value (see
    /// [`undecodable`]) and this the reason.
    pub invalid: Option<String>,
}

/// Records read by the API, with the partition's bounds at that moment.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub records: Vec<Record>,
    /// Oldest retained offset.
    pub first: u64,
    /// Next offset to be written.
    pub end: u64,
}

/// Where a produced event went.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Produced {
    /// Its id (`<topic>/<partition>/<offset>` when it came without one).
    pub id: String,
    pub partition: u32,
    pub offset: u64,
}

impl Produced {
    /// Where an event with `id` went (the id a reader gives it if empty).
    pub fn new(topic: &str, id: String, partition: u32, offset: u64) -> Produced {
        Produced {
            id: if id.is_empty() {
                format!("{topic}/{partition}/{offset}")
            } else {
                id
            },
            partition,
            offset,
        }
    }
}

/// The retained offsets of one partition: `first` is the oldest, `end` the
/// next to be written.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartitionBounds {
    pub partition: u32,
    pub first: u64,
    pub end: u64,
}

/// A topic and its partitions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: Vec<PartitionBounds>,
}

/// Where a module is in one partition: the next offset it will read and the
/// partition's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub topic: String,
    pub partition: u32,
    /// This host's cursor where it holds the partition, else the group's
    /// committed offset (0 without one).
    pub cursor: u64,
    pub end: u64,
    pub holder: Holder,
    /// `end` is old news: the broker has not answered for a while.
    pub stale: bool,
}

/// Who reads a partition, as far as this host can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Holder {
    /// This host.
    Here,
    /// Another member of the module's consumer group.
    OtherMember,
    /// Nobody: the partition waits for a rebalance.
    Unassigned,
    /// Not this host; the broker does not say whether anyone else does.
    NotHere,
}

/// A partition a module's input has just been given (at start, or by a
/// rebalance), with the offset it reads from next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub topic: String,
    pub partition: u32,
    pub at: u64,
}

/// Whether the backend answers, as its clients last saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Health {
    pub reachable: bool,
    pub last_ok_ms: u64,
    pub last_error: Option<String>,
    pub last_error_ms: Option<u64>,
}

/// One module's consumer, owned by the module's thread.
///
/// Records come out of [`read`](Input::read) in offset order from the
/// cursor asked for; the pipeline never reads a partition it was not
/// [placed](Placement) in, or that the backend took away.
pub trait Input: Send {
    /// Partition count of a subscribed topic (`None`: no such topic).
    fn partitions(&mut self, topic: &str) -> Option<u32>;
    /// Where the module starts in a partition it has no cursor for: the
    /// offset `start` names, to be recorded as its cursor; or `None` when the
    /// backend places the partition itself once it is given to this host
    /// (Kafka: the group's committed offset first, `start` only for a group
    /// that has none).
    fn start(
        &mut self,
        topic: &str,
        partition: u32,
        start: StartPosition,
    ) -> Result<Option<u64>, TopicError>;
    /// Whether this host still holds the partition (a Kafka member dropped
    /// from its group does not): nothing is committed for one it does not.
    fn holds(&mut self, topic: &str, partition: u32) -> bool;
    /// Serve the backend without waiting (fetch, rebalances). Returns the
    /// partitions placed since the last call.
    fn poll(&mut self) -> Vec<Placement>;
    /// Nothing progressed: wait up to `timeout` for more input. Returns the
    /// partitions placed meanwhile.
    fn idle(&mut self, timeout: Duration) -> Vec<Placement>;
    /// Up to `max` records of a partition from offset `from` (none from a
    /// partition this input does not hold). A first record beyond `from`
    /// means the records between are gone (retention, compaction).
    fn read(
        &mut self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<Record>, TopicError>;
    /// The module committed everything below `next` locally.
    fn committed(&mut self, topic: &str, partition: u32, next: u64);
}

/// What builds modules' inputs and reports where modules are.
pub trait Source: Send + Sync {
    /// A consumer for `module` of `topics` (its subscriptions with their
    /// start positions, the replay topic included). Partitions are placed at
    /// the module's cursors in the state store.
    fn input(
        &self,
        module: &str,
        topics: &[(String, StartPosition)],
    ) -> Result<Box<dyn Input>, TopicError>;
    /// Cursor and end of each partition of `topics` that `module` reads on
    /// this host (for status views; cheap, no scans).
    fn progress(&self, module: &str, topics: &[String]) -> Vec<Progress>;
    /// Move where `module` resumes in each `(topic, partition, offset)`, beside
    /// the local cursors a rewind writes. The module must not be running.
    fn rewind(&self, module: &str, to: &[Placement]) -> Result<(), TopicError>;
    /// Delete what retention no longer keeps. Returns how many events.
    fn enforce_retention(&self) -> Result<u64, TopicError>;
    /// Whether the backend answers (`None` when it is in-process).
    fn health(&self) -> Option<(&'static str, Health)>;
}

/// Topic administration and the API's reads and writes.
pub trait Topics: Send + Sync {
    /// Create each topic that does not exist (with its partition count, or
    /// the default); return every topic's partition count.
    fn ensure(&self, topics: &[(String, Option<u32>)]) -> Result<Vec<u32>, TopicError>;
    /// Every topic with its partition count, sorted by name.
    fn names(&self) -> Result<Vec<(String, u32)>, TopicError>;
    /// Partition count of `topic` (`None`: no such topic).
    fn partitions(&self, topic: &str) -> Result<Option<u32>, TopicError>;
    /// `(first, end)` offsets of a partition.
    fn bounds(&self, topic: &str, partition: u32) -> Result<(u64, u64), TopicError>;
    /// The first offset at or after time `ms` (or the end).
    fn offset_for_time(&self, topic: &str, partition: u32, ms: i64) -> Result<u64, TopicError>;
    /// Up to `limit` records of a partition from `from` (or from the first
    /// retained offset, if `from` is gone), waiting up to `wait` for the
    /// first (blocking).
    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        limit: usize,
        wait: Duration,
    ) -> Result<Page, TopicError>;
    /// Append events (placed by key; keyless ones spread). Returns where
    /// each went.
    fn produce(&self, topic: &str, events: Vec<OwnedEvent>) -> Result<Vec<Produced>, TopicError>;
    /// Append each event to the partition it names in `partition` (a replay
    /// must land where its original was read).
    fn produce_to_partitions(&self, topic: &str, events: Vec<OwnedEvent>)
    -> Result<(), TopicError>;
    /// Delete every record of `topic` present now. Returns how many.
    fn purge(&self, topic: &str) -> Result<u64, TopicError>;

    /// Every topic with each partition's bounds.
    fn list(&self) -> Result<Vec<TopicInfo>, TopicError> {
        self.names()?
            .into_iter()
            .map(|(name, n)| {
                let partitions = (0..n)
                    .map(|p| {
                        let (first, end) = self.bounds(&name, p)?;
                        Ok(PartitionBounds {
                            partition: p,
                            first,
                            end,
                        })
                    })
                    .collect::<Result<_, TopicError>>()?;
                Ok(TopicInfo { name, partitions })
            })
            .collect()
    }
}

/// The offset `start` names in a partition with `(first, end)` bounds; `time`
/// finds the first offset at or after a time.
pub fn start_offset(
    start: StartPosition,
    (first, end): (u64, u64),
    time: impl FnOnce(i64) -> Result<u64, TopicError>,
) -> Result<u64, TopicError> {
    Ok(match start {
        StartPosition::Earliest => first,
        StartPosition::Latest => end,
        StartPosition::Offset(o) => o.clamp(first, end),
        StartPosition::Time(ms) => time(ms)?,
    })
}

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
) -> OwnedEvent {
    OwnedEvent {
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
