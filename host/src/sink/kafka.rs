//! Publishing committed outputs to Kafka: the idempotent producer
//! (`enable.idempotence=true`, `acks=all`), CloudEvents binary mode (`ce_*`
//! headers), keys and trace headers carried. The relay deletes outbox entries
//! only after every record of a page has its delivery report, so a crash
//! re-publishes at most that page; output ids are deterministic, so a
//! consumer that deduplicates by id sees each output once.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use sluice_wire::OwnedEvent;

use crate::source::kafka::{Kafka, encode};

/// A producer for the relay.
pub struct KafkaSink {
    producer: FutureProducer,
    /// Waits for delivery reports (built once, not per page).
    waiter: tokio::runtime::Runtime,
    health: std::sync::Arc<crate::source::kafka::Health>,
}

impl KafkaSink {
    /// An idempotent producer with the host's `[kafka]` properties.
    pub fn new(kafka: &Kafka) -> Result<KafkaSink, String> {
        let mut cfg = kafka.producer_config();
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
        Ok(KafkaSink {
            producer,
            waiter,
            health: kafka.health.clone(),
        })
    }

    /// Publish `events` (in order) and wait for every delivery report.
    pub fn publish(&self, events: &[OwnedEvent]) -> Result<(), String> {
        let r = self.publish_inner(events);
        match &r {
            Ok(()) => self.health.ok(),
            Err(e) => self.health.error(e),
        }
        r
    }

    fn publish_inner(&self, events: &[OwnedEvent]) -> Result<(), String> {
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
            for f in pending {
                match f.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, m))) => {
                        return Err(format!(
                            "delivery to `{}` failed: {e}",
                            rdkafka::Message::topic(&m)
                        ));
                    }
                    Err(_) => return Err("the producer was dropped".to_string()),
                }
            }
            Ok(())
        })
    }

    /// Wait for what is in flight (at shutdown).
    pub fn flush(&self) {
        let _ = self.producer.flush(Duration::from_secs(10));
    }
}
