//! Kafka as the event source (librdkafka through the `rdkafka` crate).
//!
//! Each module consumes in its own consumer group (`<group-prefix><module>`).
//! The offset in RocksDB, committed with the module's state, is the truth: on
//! assignment the consumer is placed at `max(local cursor, group's committed
//! offset)` (the second is ahead only when another host processed the
//! partition meanwhile), and after each local commit the offset is also
//! committed to Kafka, so lag tools see progress. Offsets below the cursor are
//! skipped, so a redelivery is never applied twice. Rebalances are served in
//! `poll`, which the module's thread calls only between batches: a revoked
//! partition has nothing in flight; its pending Kafka commit is flushed
//! before it is released.
//!
//! Records are read with the CloudEvents Kafka binding (`source/binding.rs`);
//! one that cannot be decoded is handed to the pipeline with the reason,
//! which dead-letters it.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the connection: client configs, group names, health; the [`Source`] and [`Topics`] implementations |
//! | `admin.rs` | topic creation and metadata |
//! | `consumer.rs` | one module's consumer |
//! | `group.rs` | its rebalance context: where a partition given to it resumes |
//! | `placement.rs` | placing a partition at an offset on a broker that answers from a later batch |
//! | `reader.rs` | the HTTP API's reads |
//! | `ends.rs` | the watcher of a module's partitions: ends, group offsets, assignment |
//! | `evict.rs` | a restarted host removes its previous run from the group |

mod admin;
mod consumer;
mod ends;
mod evict;
mod group;
mod placement;
mod reader;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use sluice_wire::OwnedEvent;

pub use consumer::KafkaInput;

use super::binding::decode;
use super::{
    Health, Input, Page, Placement, Produced, Progress, Record, Source, TopicError, Topics,
};
use crate::config::{KafkaConfig, StartPosition};
use crate::sink::kafka::{Partitioning, Producer};
use crate::state::Store;

/// How long a metadata or admin request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What one module's status shows of each partition of its topics.
type Positions = Arc<Mutex<BTreeMap<(String, u32), Progress>>>;

/// A connection to a Kafka cluster: the source of every module, the topics
/// the API reads and writes.
pub struct Kafka {
    config: KafkaConfig,
    default_partitions: u32,
    store: Arc<Store>,
    health: Arc<BrokerHealth>,
    /// Metadata and watermark requests.
    client: BaseConsumer,
    /// Publishes what the API produces.
    producer: Producer,
    /// API readers, one kept per partition and re-placed for each read.
    readers: reader::Readers,
    /// Per module: what its consumer holds, for status views.
    positions: Arc<Mutex<HashMap<String, Positions>>>,
    /// The topics this host uses (its config's, its modules', its own): the
    /// only ones the API reads or lists, whatever else the credentials see.
    managed: std::sync::RwLock<std::collections::HashSet<String>>,
    /// This data directory's name in consumer groups.
    host_id: String,
    /// The end of each partition after what this host produced to it: what
    /// status counts at once, before the watchers see it.
    produced: Mutex<HashMap<(String, u32), u64>>,
    /// Modules whose groups this process has cleared of its previous run.
    evicted: Mutex<std::collections::HashSet<String>>,
}

/// Where the data directory keeps its name in consumer groups.
const HOST_ID_KEY: &str = "kafka.host-id";

/// The data directory's stable name, made on first use: a host restarted on
/// the same data directory has the same member name in its groups.
fn host_id(store: &Store) -> Result<String, String> {
    if let Some(id) = store
        .meta_get(HOST_ID_KEY)
        .map_err(|e| format!("reading the host id: {e}"))?
    {
        return String::from_utf8(id).map_err(|_| "the stored host id is not UTF-8".to_string());
    }
    let id = format!("{:016x}", rand::random::<u64>());
    store
        .meta_put(HOST_ID_KEY, id.as_bytes())
        .map_err(|e| format!("storing the host id: {e}"))?;
    Ok(id)
}

/// Whether the broker answers, as the consumers and producers last saw it.
#[derive(Debug, Default)]
pub struct BrokerHealth {
    last_ok_ms: AtomicU64,
    last_error: Mutex<Option<(u64, String)>>,
}

impl BrokerHealth {
    /// A request to the broker succeeded.
    pub fn ok(&self) {
        self.last_ok_ms.store(super::now_ms(), Ordering::Relaxed);
    }

    /// A request failed.
    pub fn error(&self, e: impl std::fmt::Display) {
        *self.last_error.lock().unwrap() = Some((super::now_ms(), e.to_string()));
    }

    /// Reachable unless the newest news is an error.
    pub fn report(&self) -> Health {
        let ok = self.last_ok_ms.load(Ordering::Relaxed);
        let err = self.last_error.lock().unwrap().clone();
        Health {
            reachable: err.as_ref().is_none_or(|(at, _)| ok >= *at),
            last_ok_ms: ok,
            last_error: err.as_ref().map(|e| e.1.clone()),
            last_error_ms: err.map(|e| e.0),
        }
    }
}

/// Properties librdkafka accepts on consumers only (it warns about them on a
/// producer or admin client).
const CONSUMER_ONLY: &[&str] = &[
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "group.",
    "auto.offset.reset",
    "enable.auto.",
    "max.poll.interval.ms",
    "fetch.",
    "partition.assignment.strategy",
    "isolation.level",
];

impl Kafka {
    /// Connect (lazily: librdkafka connects on first use). `default_partitions`
    /// is used for topics created without a count.
    pub fn new(
        config: KafkaConfig,
        default_partitions: u32,
        store: Arc<Store>,
    ) -> Result<Arc<Kafka>, String> {
        let health = Arc::new(BrokerHealth::default());
        let k = Kafka {
            host_id: host_id(&store)?,
            produced: Mutex::default(),
            evicted: Mutex::default(),
            client: client_config(&config)
                .create()
                .map_err(|e| format!("cannot create a Kafka client: {e}"))?,
            producer: Producer::new(producer_config(&config), health.clone())?,
            config,
            default_partitions,
            store,
            health,
            readers: reader::Readers::default(),
            positions: Default::default(),
            managed: std::sync::RwLock::new(
                [crate::sink::UNDELIVERABLE.to_string()]
                    .into_iter()
                    .collect(),
            ),
        };
        Ok(Arc::new(k))
    }

    /// A librdkafka config with every `[kafka]` property (for a consumer).
    pub fn client_config(&self) -> ClientConfig {
        client_config(&self.config)
    }

    /// The same without consumer-only properties.
    pub fn producer_config(&self) -> ClientConfig {
        producer_config(&self.config)
    }

    /// What the host's Kafka clients last saw of the broker.
    pub fn health(&self) -> Arc<BrokerHealth> {
        self.health.clone()
    }

    /// Remember where what this host just produced ended.
    fn note_produced(&self, topic: &str, placed: &[(u32, u64)]) {
        let mut produced = self.produced.lock().unwrap();
        for (partition, offset) in placed {
            let end = produced.entry((topic.to_string(), *partition)).or_default();
            *end = (*end).max(offset + 1);
        }
    }

    /// The consumer group of `module`.
    pub fn group(&self, module: &str) -> String {
        format!("{}{module}", self.config.group_prefix)
    }

    /// This host's name in `module`'s group: the consumer's `client.id`,
    /// and its `group.instance.id` with static membership.
    pub fn member_name(&self, module: &str) -> String {
        format!("sluice-{}-{module}", self.host_id)
    }

    /// Whether the consumers join as static members.
    pub fn static_membership(&self) -> bool {
        self.config.static_membership && !self.config.properties.contains_key("group.instance.id")
    }

    /// Make this host's previous run leave `module`'s group (see
    /// [`evict`]), once per process and module (a consumer this process
    /// stopped has left already); a no-op with static membership or on a
    /// listener that needs TLS or SASL.
    pub fn evict_previous(&self, module: &str) {
        if !self.evicted.lock().unwrap().insert(module.to_string()) {
            return;
        }
        let plaintext = self
            .config
            .properties
            .get("security.protocol")
            .is_none_or(|p| p.eq_ignore_ascii_case("plaintext"));
        if self.static_membership() || !plaintext {
            return;
        }
        let bootstrap = &self.config.properties["bootstrap.servers"];
        let group = self.group(module);
        match evict::evict_previous(&self.client, bootstrap, &group, &self.member_name(module)) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(module, group = %group, members = n, "removed this host's previous run from the group: its partitions move at once")
            }
            Err(e) => {
                tracing::warn!(module, group = %group, error = %e, "cannot remove this host's previous run from the group; its partitions move when its session times out")
            }
        }
    }
}

fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in &config.properties {
        c.set(k, v);
    }
    c
}

fn producer_config(config: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in &config.properties {
        if !CONSUMER_ONLY.iter().any(|p| k.starts_with(p)) {
            c.set(k, v);
        }
    }
    c
}

trait SetIfUnset {
    fn set_if_unset(&mut self, k: &str, v: &str) -> &mut Self;
}

impl SetIfUnset for ClientConfig {
    fn set_if_unset(&mut self, k: &str, v: &str) -> &mut Self {
        if self.get(k).is_none() {
            self.set(k, v);
        }
        self
    }
}

/// Run a future to completion on this thread (rdkafka's futures need no reactor).
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime")
        .block_on(f)
}

/// A Kafka record as a stored frame, or (if it cannot be decoded) its raw
/// value with the reason.
fn record_of<M: Message>(m: &M) -> Record {
    let topic = m.topic();
    let p = m.partition() as u32;
    let offset = m.offset().max(0) as u64;
    let mut headers: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    if let Some(h) = m.headers() {
        for i in 0..h.count() {
            if let Some(x) = h.try_get(i) {
                headers.push((x.key.to_string(), x.value.map(<[u8]>::to_vec)));
            }
        }
    }
    let ts = m.timestamp().to_millis();
    match decode(topic, p, offset, m.key(), m.payload(), &headers, ts) {
        Ok(ev) => Record {
            offset,
            frame: ev.as_ref().encode(),
            invalid: None,
        },
        Err(reason) => {
            let raw: Vec<(String, Vec<u8>)> = headers
                .into_iter()
                .map(|(n, v)| (n, v.unwrap_or_default()))
                .collect();
            let ev = super::undecodable(
                topic,
                p,
                offset,
                m.key(),
                m.payload().unwrap_or_default(),
                raw,
            );
            Record {
                offset,
                frame: ev.as_ref().encode(),
                invalid: Some(reason),
            }
        }
    }
}

impl Source for Kafka {
    fn input(
        &self,
        module: &str,
        topics: &[(String, StartPosition)],
    ) -> Result<Box<dyn Input>, TopicError> {
        let positions = Positions::default();
        self.positions
            .lock()
            .unwrap()
            .insert(module.to_string(), positions.clone());
        let input = KafkaInput::new(self, module, topics, positions, self.positions.clone())
            .map_err(TopicError::Unavailable)?;
        Ok(Box::new(input))
    }

    fn progress(&self, module: &str, topics: &[String]) -> Vec<Progress> {
        // Every partition of the module's topics, as its thread last saw
        // them: its own cursor where it holds one, the group's elsewhere.
        let Some(seen) = self.positions.lock().unwrap().get(module).cloned() else {
            return Vec::new();
        };
        let seen = seen.lock().unwrap();
        let produced = self.produced.lock().unwrap();
        seen.values()
            .filter(|p| topics.contains(&p.topic))
            .map(|p| Progress {
                end: p.end.max(
                    produced
                        .get(&(p.topic.clone(), p.partition))
                        .copied()
                        .unwrap_or(0),
                ),
                ..p.clone()
            })
            .collect()
    }

    fn rewind(&self, module: &str, to: &[Placement]) -> Result<(), TopicError> {
        group::move_offsets(self, module, to)
    }

    fn enforce_retention(&self) -> Result<u64, TopicError> {
        Ok(0) // the broker's own retention applies
    }

    fn health(&self) -> Option<(&'static str, Health)> {
        Some(("kafka", self.health.report()))
    }
}

impl Topics for Kafka {
    fn ensure(&self, topics: &[(String, Option<u32>)]) -> Result<Vec<u32>, TopicError> {
        let counts = self
            .ensure_topics(topics)
            .map_err(TopicError::Unavailable)?;
        self.managed
            .write()
            .unwrap()
            .extend(topics.iter().map(|(t, _)| t.clone()));
        Ok(counts)
    }

    fn names(&self) -> Result<Vec<(String, u32)>, TopicError> {
        let managed = self.managed.read().unwrap();
        let mut all = self.topics().map_err(TopicError::Unavailable)?;
        all.retain(|(t, _)| managed.contains(t));
        Ok(all)
    }

    fn partitions(&self, topic: &str) -> Result<Option<u32>, TopicError> {
        self.partition_count(topic)
            .map_err(|e| TopicError::Unavailable(format!("Kafka metadata for `{topic}`: {e}")))
    }

    fn bounds(&self, topic: &str, partition: u32) -> Result<(u64, u64), TopicError> {
        self.partition_bounds(topic, partition)
            .map_err(TopicError::Unavailable)
    }

    fn offset_for_time(&self, topic: &str, partition: u32, ms: i64) -> Result<u64, TopicError> {
        let unavailable = |e: rdkafka::error::KafkaError| {
            TopicError::Unavailable(format!("Kafka `{topic}`/{partition}: {e}"))
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition as i32, Offset::Offset(ms))
            .map_err(unavailable)?;
        let r = self
            .client
            .offsets_for_times(tpl, REQUEST_TIMEOUT)
            .map_err(unavailable)?;
        match r
            .find_partition(topic, partition as i32)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(o)) if o >= 0 => Ok(o as u64),
            _ => Ok(Topics::bounds(self, topic, partition)?.1),
        }
    }

    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        limit: usize,
        wait: Duration,
    ) -> Result<Page, TopicError> {
        if !self.managed.read().unwrap().contains(topic) {
            return Err(TopicError::Unknown(topic.into()));
        }
        // Nothing purged through Sluice is read again, whatever the broker
        // still keeps.
        let from = from.max(self.purged_below(topic, partition));
        self.readers
            .read(self, topic, partition, from, limit, wait)
            .map_err(TopicError::Unavailable)
    }

    fn produce(
        &self,
        topic: &str,
        mut events: Vec<OwnedEvent>,
    ) -> Result<Vec<Produced>, TopicError> {
        // What the API writes to, it may read.
        self.managed.write().unwrap().insert(topic.to_string());
        for e in &mut events {
            e.topic = topic.to_string();
            if e.time.is_none() {
                e.time = Some(super::now_rfc3339());
            }
        }
        let placed = self
            .producer
            .publish(&events, Partitioning::ByIdentity)
            .map_err(TopicError::Unavailable)?;
        self.note_produced(topic, &placed);
        Ok(events
            .into_iter()
            .zip(placed)
            .map(|(e, (partition, offset))| Produced::new(topic, e.id, partition, offset))
            .collect())
    }

    fn produce_to_partitions(
        &self,
        topic: &str,
        mut events: Vec<OwnedEvent>,
    ) -> Result<(), TopicError> {
        for e in &mut events {
            e.topic = topic.to_string();
        }
        let placed = self
            .producer
            .publish(&events, Partitioning::AsGiven)
            .map_err(TopicError::Unavailable)?;
        self.note_produced(topic, &placed);
        Ok(())
    }

    fn purge(&self, topic: &str) -> Result<u64, TopicError> {
        self.purge_topic(topic).map_err(TopicError::Unavailable)
    }
}
