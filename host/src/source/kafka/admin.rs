//! Topic administration on Kafka: create what is missing, list what exists,
//! partition counts from metadata, each partition's bounds as the records
//! say them, and purging (below an offset: Kafka cannot delete single
//! records).

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::{Kafka, REQUEST_TIMEOUT, block_on};

/// Partition count of `topic` in `md`, if it exists (and has partitions).
pub(super) fn partition_count(md: &Metadata, topic: &str) -> Option<u32> {
    md.topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len() as u32)
        .filter(|n| *n > 0)
}

impl Kafka {
    /// Create each topic that does not exist (with its partition count, or
    /// the default), and return every topic's partition count.
    pub fn ensure_topics(&self, topics: &[(String, Option<u32>)]) -> Result<Vec<u32>, String> {
        let admin: AdminClient<DefaultClientContext> = self
            .producer_config()
            .create()
            .map_err(|e| format!("cannot create a Kafka admin client: {e}"))?;
        let mut out = Vec::with_capacity(topics.len());
        let missing: Vec<(String, u32)> = topics
            .iter()
            .filter(|(t, _)| partitions_of(&admin, t).ok().flatten().is_none())
            .map(|(t, n)| (t.clone(), n.unwrap_or(self.default_partitions)))
            .collect();
        if !missing.is_empty() {
            let new: Vec<NewTopic<'_>> = missing
                .iter()
                .map(|(t, n)| {
                    NewTopic::new(
                        t,
                        *n as i32,
                        TopicReplication::Fixed(self.config.replication_factor),
                    )
                })
                .collect();
            let opts = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
            let results = block_on(admin.create_topics(&new, &opts))
                .map_err(|e| format!("cannot create Kafka topics: {e}"))?;
            for r in results {
                match r {
                    Ok(t) => tracing::info!(topic = %t, "created Kafka topic"),
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((t, e)) => return Err(format!("cannot create Kafka topic `{t}`: {e}")),
                }
            }
        }
        for (t, _) in topics {
            // A new topic's metadata may take a moment to appear.
            let deadline = Instant::now() + REQUEST_TIMEOUT;
            loop {
                match partitions_of(&admin, t) {
                    Ok(Some(n)) => {
                        out.push(n);
                        break;
                    }
                    Ok(None) | Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(100))
                    }
                    Ok(None) => return Err(format!("Kafka topic `{t}` does not appear")),
                    Err(e) => return Err(format!("Kafka metadata for `{t}`: {e}")),
                }
            }
        }
        Ok(out)
    }

    /// Every topic with its partition count (internal `__` topics left out).
    pub fn topics(&self) -> Result<Vec<(String, u32)>, String> {
        let md = self
            .client
            .fetch_metadata(None, REQUEST_TIMEOUT)
            .map_err(|e| format!("Kafka metadata: {e}"))?;
        let mut out: Vec<(String, u32)> = md
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && !t.name().starts_with("__"))
            .map(|t| (t.name().to_string(), t.partitions().len() as u32))
            .collect();
        out.sort();
        Ok(out)
    }

    /// First and end offset of a partition. The end is past the last record
    /// a read from the broker's high watermark finds (tansu answers
    /// ListOffsets with the start of the last batch, plus one); the first is
    /// past what was purged through Sluice.
    pub fn partition_bounds(&self, topic: &str, partition: u32) -> Result<(u64, u64), String> {
        let (lo, hi) = self
            .client
            .fetch_watermarks(topic, partition as i32, REQUEST_TIMEOUT)
            .map_err(|e| format!("Kafka `{topic}`/{partition}: {e}"))?;
        let (lo, hi) = (lo.max(0) as u64, hi.max(0) as u64);
        let first = lo.max(self.purged_below(topic, partition)).min(hi);
        if hi <= first {
            return Ok((first, hi));
        }
        let page = self
            .readers
            .read(self, topic, partition, hi - 1, usize::MAX, Duration::ZERO)?;
        let end = page.records.last().map_or(hi, |r| hi.max(r.offset + 1));
        Ok((first, end))
    }

    /// Where `topic`/`partition` was last purged (0: never).
    pub(super) fn purged_below(&self, topic: &str, partition: u32) -> u64 {
        self.store
            .meta_get(&purge_key(topic, partition))
            .ok()
            .flatten()
            .and_then(|v| v.try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0)
    }

    /// Purge every record of `topic` present now: the offsets are recorded
    /// (Sluice reads nothing below them again, whatever the broker keeps)
    /// and the broker is asked to delete the records (DeleteRecords; where
    /// it cannot, they stay until its retention). Returns how many.
    pub fn purge_topic(&self, topic: &str) -> Result<u64, String> {
        let n = self
            .partition_count(topic)
            .map_err(|e| format!("Kafka metadata for `{topic}`: {e}"))?
            .ok_or_else(|| format!("unknown topic `{topic}`"))?;
        let mut purged = 0;
        let mut below = TopicPartitionList::new();
        for p in 0..n {
            let (first, end) = self.partition_bounds(topic, p)?;
            purged += end - first;
            self.store
                .meta_put(&purge_key(topic, p), &end.to_be_bytes())
                .map_err(|e| format!("recording the purge: {e}"))?;
            below
                .add_partition_offset(topic, p as i32, Offset::Offset(end as i64))
                .map_err(|e| e.to_string())?;
        }
        tracing::info!(
            topic,
            records = purged,
            "purged (recorded; asking the broker to delete them)"
        );
        let admin: AdminClient<DefaultClientContext> = self
            .producer_config()
            .create()
            .map_err(|e| format!("cannot create a Kafka admin client: {e}"))?;
        let opts = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        match block_on(admin.delete_records(&below, &opts)) {
            Ok(r) => {
                for e in r.elements() {
                    if let Err(err) = e.error() {
                        tracing::warn!(topic, partition = e.partition(), error = %err, "the broker kept the purged records (Sluice skips them)");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(topic, error = %e, "the broker cannot delete records (Sluice skips the purged ones)")
            }
        }
        Ok(purged)
    }

    /// Partition count of `topic` (`None`: it does not exist).
    pub fn partition_count(&self, topic: &str) -> Result<Option<u32>, KafkaError> {
        let md = self.client.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
        Ok(partition_count(&md, topic))
    }
}

fn partitions_of(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
) -> Result<Option<u32>, KafkaError> {
    let md = admin.inner().fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    Ok(partition_count(&md, topic))
}

/// The meta key of a partition's purge offset.
fn purge_key(topic: &str, partition: u32) -> String {
    format!("kafka.purged/{topic}/{partition}")
}
