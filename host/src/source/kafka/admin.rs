//! Topic administration on Kafka: create what is missing, list what exists,
//! partition counts from metadata.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaErrorCode;

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
                .map(|(t, n)| NewTopic::new(t, *n as i32, TopicReplication::Fixed(1)))
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
