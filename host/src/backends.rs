//! The one place that picks the backends from the host config and builds
//! them: the embedded log when there is no `[kafka]` table, Kafka when there
//! is. Everything else holds them as [`Source`], [`Topics`] and [`Output`].
//!
//! A third backend (say, NATS JetStream) implements those three traits
//! (`source/mod.rs`, `sink/mod.rs`) and adds its arm here.

use std::sync::Arc;

use crate::config::HostConfig;
use crate::sink::Outbox;
use crate::sink::Output;
use crate::sink::kafka::{KafkaDelivery, Producer};
use crate::source::kafka::Kafka;
use crate::source::log::EventLog;
use crate::source::{Source, Topics};
use crate::state::Store;

/// Where events come from, where topics are administered, where outputs go.
pub struct Backends {
    pub source: Arc<dyn Source>,
    pub topics: Arc<dyn Topics>,
    pub output: Arc<dyn Output>,
}

/// Build the backends `config` names, on the host's `store`.
pub fn connect(config: &HostConfig, store: &Arc<Store>) -> anyhow::Result<Backends> {
    match &config.kafka {
        None => {
            let log = EventLog::open(
                store.clone(),
                config.log.partitions,
                config.log.retention_events,
                config.log.auto_create_topics,
            )?;
            Ok(Backends {
                source: log.clone(),
                topics: log.clone(),
                output: log,
            })
        }
        Some(k) => {
            let kafka = Kafka::new(k.clone(), config.log.partitions, store.clone())
                .map_err(anyhow::Error::msg)?;
            let relay = Producer::new(kafka.producer_config(), kafka.health())
                .map_err(anyhow::Error::msg)?;
            let delivery = KafkaDelivery {
                producer: relay,
                kafka: kafka.clone(),
            };
            let outbox = Outbox::start(store.clone(), Box::new(delivery))
                .map_err(|e| anyhow::anyhow!("cannot start the outbox relay: {e}"))?;
            Ok(Backends {
                source: kafka.clone(),
                topics: kafka,
                output: Arc::new(outbox),
            })
        }
    }
}
