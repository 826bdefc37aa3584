//! Publishing to Kafka: the idempotent producer (`enable.idempotence=true`,
//! `acks=all`), CloudEvents binary mode (`source/binding.rs`), keys and trace
//! headers carried. The outbox relay delivers through it, and so does the
//! HTTP API's produce on a Kafka host.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _, PurgeConfig};
use sluice_wire::OwnedEvent;

use super::Deliver;
use crate::source::binding::encode;
use crate::source::kafka::BrokerHealth;
use crate::source::partition::for_event;

/// How the producer picks each record's partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioning {
    /// By key, else by `source` + `id` (`source::partition::for_event`), as
    /// the embedded log does, so a resend lands where the original went.
    ByIdentity,
    /// The partition each event names (replays).
    AsGiven,
}

/// An idempotent producer.
pub struct Producer {
    producer: FutureProducer,
    /// Partition counts by topic, looked up once.
    partitions: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    /// Waits for delivery reports (built once, not per page).
    waiter: tokio::runtime::Runtime,
    health: Arc<BrokerHealth>,
    /// Set by the relay's aborter: publish nothing more.
    aborted: Arc<std::sync::atomic::AtomicBool>,
}

impl Producer {
    /// An idempotent producer with `cfg` (the host's `[kafka]` properties).
    pub fn new(mut cfg: ClientConfig, health: Arc<BrokerHealth>) -> Result<Producer, String> {
        cfg.set("enable.idempotence", "true").set("acks", "all");
        if cfg.get("partitioner").is_none() {
            // Java clients' partitioner (and the embedded log's): a key lands
            // in the same partition whoever produces it.
            cfg.set("partitioner", "murmur2_random");
        }
        if cfg.get("message.timeout.ms").is_none() {
            // Keep retrying through a broker outage for a while before the
            // relay sees an error and starts over from the outbox.
            cfg.set("message.timeout.ms", "30000");
        }
        let producer = cfg
            .create()
            .map_err(|e| format!("cannot create a Kafka producer: {e}"))?;
        let waiter = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| format!("cannot start a runtime for delivery reports: {e}"))?;
        Ok(Producer {
            producer,
            partitions: Default::default(),
            waiter,
            health,
            aborted: Default::default(),
        })
    }

    /// Publish `events` (in order) to their topics, placed as `partitioning`
    /// says, and wait for every delivery report. Returns `(partition,
    /// offset)` per event.
    pub fn publish(
        &self,
        events: &[OwnedEvent],
        partitioning: Partitioning,
    ) -> Result<Vec<(u32, u64)>, String> {
        let r = self.publish_inner(events, partitioning);
        match &r {
            Ok(_) => self.health.ok(),
            Err(e) => self.health.error(e),
        }
        r
    }

    /// The partition count of `topic` (cached).
    fn partition_count(&self, topic: &str) -> Result<u32, String> {
        if let Some(n) = self.partitions.lock().unwrap().get(topic) {
            return Ok(*n);
        }
        let md = self
            .producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| format!("Kafka metadata for `{topic}`: {e}"))?;
        let n = md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len() as u32)
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("Kafka topic `{topic}` does not exist"))?;
        self.partitions.lock().unwrap().insert(topic.to_string(), n);
        Ok(n)
    }

    fn publish_inner(
        &self,
        events: &[OwnedEvent],
        partitioning: Partitioning,
    ) -> Result<Vec<(u32, u64)>, String> {
        self.publish_each(events, partitioning)
            .into_iter()
            .map(|r| r.map_err(|e| e.message))
            .collect()
    }

    /// Publish `events` (in order), each on its own: where each went, or why
    /// it did not.
    fn publish_each(
        &self,
        events: &[OwnedEvent],
        partitioning: Partitioning,
    ) -> Vec<Result<(u32, u64), Undelivered>> {
        let mut pending: Vec<Result<_, Undelivered>> = Vec::with_capacity(events.len());
        for ev in events {
            if self.aborted.load(std::sync::atomic::Ordering::SeqCst) {
                pending.push(Err(Undelivered::transient(
                    "not sent: the relay is stopping".into(),
                )));
                continue;
            }
            let (key, value, headers) = encode(&ev.as_ref());
            let mut h = OwnedHeaders::new_with_capacity(headers.len());
            for (n, v) in &headers {
                h = h.insert(Header {
                    key: n,
                    value: Some(v),
                });
            }
            let mut record = FutureRecord::to(&ev.topic).payload(&value).headers(h);
            if let Some(k) = &key {
                record = record.key(k);
            }
            let partition = match partitioning {
                Partitioning::AsGiven => Some(ev.partition),
                Partitioning::ByIdentity => match self.partition_count(&ev.topic) {
                    Ok(n) => for_event(ev, n),
                    Err(e) => {
                        pending.push(Err(Undelivered::transient(e)));
                        continue;
                    }
                },
            };
            if let Some(p) = partition {
                record = record.partition(p as i32);
            }
            loop {
                match self.producer.send_result(record) {
                    Ok(f) => {
                        pending.push(Ok(f));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        self.producer.poll(Duration::from_millis(50));
                    }
                    Err((e, _)) => {
                        let message = format!("cannot produce to `{}`: {e}", ev.topic);
                        pending.push(Err(Undelivered::of(&e, message)));
                        break;
                    }
                }
            }
        }
        self.waiter.block_on(async {
            let mut placed = Vec::with_capacity(pending.len());
            for f in pending {
                placed.push(match f {
                    Err(e) => Err(e),
                    Ok(f) => match f.await {
                        Ok(Ok(d)) => Ok((d.partition.max(0) as u32, d.offset.max(0) as u64)),
                        Ok(Err((e, m))) => {
                            let message = format!(
                                "delivery to `{}` failed: {e}",
                                rdkafka::Message::topic(&m)
                            );
                            Err(Undelivered::of(&e, message))
                        }
                        Err(_) => Err(Undelivered::transient("the producer was dropped".into())),
                    },
                });
            }
            placed
        })
    }
}

/// Why a record was not published, and whether trying again can help.
#[derive(Debug, Clone)]
pub struct Undelivered {
    /// The broker or the client refused this record for what it is (too
    /// large, invalid): every attempt would fail the same way.
    pub permanent: bool,
    pub message: String,
}

impl Undelivered {
    fn transient(message: String) -> Undelivered {
        Undelivered {
            permanent: false,
            message,
        }
    }

    fn of(e: &KafkaError, message: String) -> Undelivered {
        use RDKafkaErrorCode as C;
        let permanent = matches!(
            e.rdkafka_error_code(),
            Some(
                C::MessageSizeTooLarge
                    | C::InvalidMessageSize
                    | C::InvalidMessage
                    | C::InvalidRecord
                    | C::MessageBatchTooLarge
                    | C::InvalidTopic
                    | C::TopicAuthorizationFailed
                    | C::InvalidArgument
            )
        );
        Undelivered { permanent, message }
    }
}

/// The relay's way out on Kafka: the producer, and the cluster for the
/// topic refused outputs are kept in.
pub struct KafkaDelivery {
    pub producer: Producer,
    pub kafka: std::sync::Arc<crate::source::kafka::Kafka>,
}

impl Deliver for KafkaDelivery {
    fn deliver(&self, events: &[OwnedEvent]) -> Vec<Result<(), Undelivered>> {
        self.producer.deliver(events)
    }

    fn flush(&self) {
        self.producer.producer.flush(Duration::from_secs(10)).ok();
    }

    fn ensure_topic(&self, topic: &str) -> Result<(), String> {
        self.kafka
            .ensure_topics(&[(topic.to_string(), None)])
            .map(|_| ())
    }

    fn aborter(&self) -> Option<Box<dyn Fn() + Send>> {
        // Nothing more is sent, and purged records fail their deliveries at
        // once.
        let producer = self.producer.producer.clone();
        let aborted = self.producer.aborted.clone();
        Some(Box::new(move || {
            aborted.store(true, std::sync::atomic::Ordering::SeqCst);
            producer.purge(PurgeConfig::default().queue().inflight());
        }))
    }
}

impl Producer {
    /// Publish outputs, each on its own: one result per event.
    pub fn deliver(&self, events: &[OwnedEvent]) -> Vec<Result<(), Undelivered>> {
        let results = self.publish_each(events, Partitioning::ByIdentity);
        match results.iter().find_map(|r| r.as_ref().err()) {
            Some(e) => self.health.error(&e.message),
            None => self.health.ok(),
        }
        results.into_iter().map(|r| r.map(|_| ())).collect()
    }
}
