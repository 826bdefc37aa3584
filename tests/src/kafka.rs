//! A real Kafka-compatible broker for the tests (tansu, started by PID on a
//! free loopback port) and a small rdkafka client to feed and read it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use crate::free_port;
pub use sluice::source::binding::KafkaRecord;

/// The tansu binary: on PATH or in `~/.cargo/bin` (`scripts/kafka-broker.sh install`).
pub fn tansu_bin() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_default();
    let candidates = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| PathBuf::from(d).join("tansu"))
        .chain([PathBuf::from(home).join(".cargo/bin/tansu")])
        .collect::<Vec<_>>();
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("tansu is not installed: run `scripts/kafka-broker.sh install` (CI does)")
        })
}

/// How a broker keeps its data.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    Memory,
    /// Survives a broker restart.
    Sqlite,
}

/// A tansu broker process on 127.0.0.1. Derefs to a [`Client`] of it.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    storage: Storage,
    /// More `tansu broker` arguments (authentication).
    extra: Vec<String>,
    /// The address the broker tells clients to connect to (a TLS proxy in
    /// front of it), if not its own.
    pub advertised: Option<u16>,
    dir: tempfile::TempDir,
    client: Client,
}

impl std::ops::Deref for Broker {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

/// A small rdkafka client: create topics, produce, read everything, offsets.
#[derive(Clone)]
pub struct Client {
    bootstrap: String,
}

impl Broker {
    /// Start a broker and wait until it accepts connections.
    pub fn start(storage: Storage) -> Broker {
        Broker::start_with(storage, &[])
    }

    /// The same with more `tansu broker` arguments (`--authentication`). Its
    /// [`Client`] speaks plaintext: with authentication on, go through a
    /// host instead.
    pub fn start_with(storage: Storage, extra: &[&str]) -> Broker {
        let port = free_port();
        let mut b = Broker {
            child: None,
            port,
            storage,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            advertised: None,
            dir: tempfile::tempdir().unwrap(),
            client: Client::new(&format!("127.0.0.1:{port}")),
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let url = match self.storage {
            Storage::Memory => "memory://tansu/".to_string(),
            // Relative to the broker's working directory (tansu reads an
            // absolute path as relative).
            Storage::Sqlite => "sqlite://tansu.db".to_string(),
        };
        let listen = format!("tcp://127.0.0.1:{}", self.port);
        let advertise = format!("tcp://127.0.0.1:{}", self.advertised.unwrap_or(self.port));
        let log = std::fs::File::create(self.dir.path().join("tansu.log")).unwrap();
        let child = Command::new(tansu_bin())
            .current_dir(self.dir.path())
            .args(["broker", "--storage-engine", &url])
            .args([
                "--listener-url",
                &listen,
                "--advertised-listener-url",
                &advertise,
            ])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("tansu exited ({s}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The broker's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }

    /// Kill the broker (its PID).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port and storage with other arguments
    /// (and `advertised` port).
    pub fn restart_with(&mut self, extra: &[&str], advertised: Option<u16>) {
        self.extra = extra.iter().map(|s| s.to_string()).collect();
        self.advertised = advertised;
        self.restart();
    }

    /// Start it again on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The `[kafka]` table of a host config using this broker.
    pub fn host_config(&self) -> String {
        format!(
            "[kafka]\n\"bootstrap.servers\" = \"{}\"\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n",
            self.bootstrap()
        )
    }
}

impl Client {
    /// A client of the broker at `bootstrap`.
    pub fn new(bootstrap: &str) -> Client {
        Client {
            bootstrap: bootstrap.to_string(),
        }
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.bootstrap());
        c
    }

    /// Create `topic` with `partitions`.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<_> = self.client().create().unwrap();
        let rt = tokio_rt();
        let r = rt
            .block_on(admin.create_topics(
                &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new(),
            ))
            .unwrap();
        for x in r {
            if let Err((t, e)) = x {
                assert_eq!(
                    e,
                    rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                    "{t}: {e}"
                );
            }
        }
    }

    /// Produce CloudEvents (the JSON form `orders()` makes) in binary mode,
    /// keyed by `partitionkey`, idempotently; waits for every acknowledgement.
    pub fn produce(&self, topic: &str, events: &[Value]) {
        self.produce_raw(topic, events.iter().map(binary_record));
    }

    /// Produce `(key, value, headers)` records as they are, and check that
    /// the broker acknowledged every one.
    pub fn produce_raw(&self, topic: &str, records: impl IntoIterator<Item = KafkaRecord>) {
        let p: BaseProducer<Deliveries> = self
            .client()
            .set("enable.idempotence", "true")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .create_with_context(Deliveries::default())
            .unwrap();
        let mut sent = 0usize;
        for (key, value, headers) in records {
            let mut h = OwnedHeaders::new();
            for (n, v) in &headers {
                h = h.insert(Header {
                    key: n,
                    value: Some(v),
                });
            }
            let mut r = BaseRecord::<Vec<u8>, Vec<u8>>::to(topic)
                .payload(&value)
                .headers(h);
            if let Some(k) = &key {
                r = r.key(k);
            }
            let mut r = Some(r);
            while let Some(rec) = r.take() {
                if let Err((e, rec)) = p.send(rec) {
                    assert!(
                        matches!(
                            e,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ),
                        "produce: {e}"
                    );
                    p.poll(Duration::from_millis(20));
                    r = Some(rec);
                }
            }
            sent += 1;
        }
        p.flush(Duration::from_secs(60)).expect("produce flush");
        let d = p.context();
        let failed = d.failed.lock().unwrap();
        assert!(failed.is_none(), "a record was not delivered: {failed:?}");
        assert_eq!(
            d.delivered.load(std::sync::atomic::Ordering::SeqCst),
            sent,
            "delivery reports"
        );
    }

    /// Every record of `topic` (all partitions, oldest first) as JSON:
    /// `{"id", "type", "key", "data", "headers", "partition", "offset"}`.
    pub fn read_all(&self, topic: &str) -> Vec<Value> {
        // A throwaway group: librdkafka wants one even to assign; nothing is committed.
        let group = format!("sluice-test-reader-{}", rand::random::<u64>());
        let c: BaseConsumer = self
            .client()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let md = c
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        let n = md.topics()[0].partitions().len() as i32;
        let mut tpl = TopicPartitionList::new();
        let mut ends = BTreeMap::new();
        let mut first = BTreeMap::new();
        for p in 0..n {
            let (lo, hi) = c
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap();
            if hi > lo {
                tpl.add_partition_offset(topic, p, Offset::Offset(lo))
                    .unwrap();
                ends.insert(p, hi);
                first.insert(p, lo);
            }
        }
        let mut out = Vec::new();
        if ends.is_empty() {
            return out;
        }
        c.assign(&tpl).unwrap();
        // Read each partition contiguously. tansu answers a fetch from the
        // middle of a record batch with the next batch; when that skips
        // records, seek back until a fetch starts at or before them.
        let mut next: BTreeMap<i32, (i64, i64)> =
            ends.keys().map(|p| (*p, (first[p], 0))).collect();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut done = BTreeMap::new();
        while done.len() < ends.len() {
            assert!(Instant::now() < deadline, "reading {topic} timed out");
            let Some(m) = c.poll(Duration::from_millis(500)) else {
                continue;
            };
            let m = m.unwrap();
            let p = m.partition();
            let (want, back) = next[&p];
            if m.offset() < want {
                continue;
            }
            if m.offset() > want {
                let back = (back * 2).max(1).min(want - first[&p]);
                next.insert(p, (want, back));
                c.seek(
                    topic,
                    p,
                    Offset::Offset(want - back),
                    Duration::from_secs(10),
                )
                .unwrap();
                continue;
            }
            next.insert(p, (want + 1, 0));
            out.push(record_json(&m));
            if m.offset() + 1 >= ends[&p] {
                done.insert(p, ());
            }
        }
        // tansu's high watermark can lag what it serves: read on until the
        // broker has had nothing more for a while.
        let mut quiet = Instant::now();
        while quiet.elapsed() < Duration::from_millis(1500) {
            assert!(Instant::now() < deadline, "reading {topic} timed out");
            let Some(m) = c.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = m.unwrap();
            let p = m.partition();
            if m.offset() == next[&p].0 {
                next.insert(p, (m.offset() + 1, 0));
                out.push(record_json(&m));
                quiet = Instant::now();
            }
        }
        out
    }

    /// The offsets `group` committed for `topic`'s partitions.
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
        let c: BaseConsumer = self.client().set("group.id", group).create().unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let r = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
        (0..partitions)
            .map(|p| match r.find_partition(topic, p).unwrap().offset() {
                Offset::Offset(o) => o,
                _ => -1,
            })
            .collect()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A JSON CloudEvent as a binary-mode Kafka record.
pub fn binary_record(e: &Value) -> KafkaRecord {
    let mut h = vec![("ce_specversion".to_string(), b"1.0".to_vec())];
    for (attr, field) in [
        ("ce_id", "id"),
        ("ce_source", "source"),
        ("ce_type", "type"),
    ] {
        if let Some(v) = e[field].as_str() {
            h.push((attr.into(), v.as_bytes().to_vec()));
        }
    }
    h.push(("content-type".into(), b"application/json".to_vec()));
    let key = e["partitionkey"].as_str().map(|k| k.as_bytes().to_vec());
    (key, serde_json::to_vec(&e["data"]).unwrap(), h)
}

fn record_json<M: Message>(m: &M) -> Value {
    let mut headers = serde_json::Map::new();
    if let Some(h) = m.headers() {
        for x in h.iter() {
            let v = x
                .value
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            headers.insert(x.key.to_string(), Value::String(v));
        }
    }
    let data = m
        .payload()
        .map(|p| {
            serde_json::from_slice(p)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(p).into_owned()))
        })
        .unwrap_or(Value::Null);
    serde_json::json!({
        "id": headers.get("ce_id").cloned().unwrap_or(Value::Null),
        "type": headers.get("ce_type").cloned().unwrap_or(Value::Null),
        "key": m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        "data": data,
        "headers": headers,
        "partition": m.partition(),
        "offset": m.offset(),
    })
}

/// Counts a producer's delivery reports and keeps the first failure.
#[derive(Default)]
struct Deliveries {
    delivered: std::sync::atomic::AtomicUsize,
    failed: std::sync::Mutex<Option<String>>,
}

impl rdkafka::ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => {
                self.delivered
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            Err((e, _)) => {
                self.failed
                    .lock()
                    .unwrap()
                    .get_or_insert_with(|| e.to_string());
            }
        }
    }
}
