//! Publishing to Kafka: the idempotent producer (`enable.idempotence=true`,
//! `acks=all`), CloudEvents binary mode (`source/binding.rs`), keys and trace
//! headers carried. The outbox relay delivers through it, and so does the
//! HTTP API's produce on a Kafka host.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use sluice_wire::OwnedEvent;

use super::Deliver;
use crate::source::binding::encode;
use crate::source::kafka::BrokerHealth;

/// An idempotent producer.
pub struct Producer {
    producer: FutureProducer,
    /// Waits for delivery reports (built once, not per page).
    waiter: tokio::runtime::Runtime,
    health: Arc<BrokerHealth>,
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
            waiter,
            health,
        })
    }

    /// Publish `events` (in order) to their topics and wait for every
    /// delivery report; with `own_partitions`, each to the partition it
    /// names. Returns `(partition, offset)` per event.
    pub fn publish(
        &self,
        events: &[OwnedEvent],
        own_partitions: bool,
    ) -> Result<Vec<(u32, u64)>, String> {
        let r = self.publish_inner(events, own_partitions);
        match &r {
            Ok(_) => self.health.ok(),
            Err(e) => self.health.error(e),
        }
        r
    }

    fn publish_inner(
        &self,
        events: &[OwnedEvent],
        own_partitions: bool,
    ) -> Result<Vec<(u32, u64)>, String> {
        let mut pending = Vec::with_capacity(events.len());
        for ev in events {
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
            if own_partitions {
                record = record.partition(ev.partition as i32);
            }
            loop {
                match self.producer.send_result(record) {
                    Ok(f) => {
                        pending.push(f);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        self.producer.poll(Duration::from_millis(50));
                    }
                    Err((e, _)) => return Err(format!("cannot produce to `{}`: {e}", ev.topic)),
                }
            }
        }
        self.waiter.block_on(async {
            let mut placed = Vec::with_capacity(pending.len());
            for f in pending {
                match f.await {
                    Ok(Ok(d)) => placed.push((d.partition.max(0) as u32, d.offset.max(0) as u64)),
                    Ok(Err((e, m))) => {
                        return Err(format!(
                            "delivery to `{}` failed: {e}",
                            rdkafka::Message::topic(&m)
                        ));
                    }
                    Err(_) => return Err("the producer was dropped".to_string()),
                }
            }
            Ok(placed)
        })
    }
}

impl Deliver for Producer {
    fn deliver(&self, events: &[OwnedEvent]) -> Result<(), String> {
        self.publish(events, false).map(|_| ())
    }

    fn flush(&self) {
        let _ = self.producer.flush(Duration::from_secs(10));
    }
}
