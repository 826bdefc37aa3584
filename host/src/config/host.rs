//! The host's config file (`sluice.toml`).
//!
//! ```toml
//! data-dir = "data"            # RocksDB: embedded log, module state, cursors
//! modules-dir = "modules"      # one sub-directory per module, each with module.toml
//! shutdown-timeout = "30s"    # SIGTERM: longest wait for in-flight events and the outbox
//! [api]
//! listen = "127.0.0.1:7070"
//! token = "..."                # bearer token for mutating requests (else generated, see below)
//! max-upload = "64MiB"         # largest request body (a deploy's component, base64)
//! [deploy]
//! watch = true                 # deploy new or changed module directories while running
//! watch-interval = "1s"
//! compile-cache = true         # keep compiled components in <data-dir>/compiled
//! compile-cache-dir = "..."    # ... or here (hosts of one version may share it)
//! [log]                        # the embedded log (used when no broker is configured)
//! partitions = 3               # default partition count of a new topic
//! retention-events = 1000000   # per partition; older events are deleted
//! auto-create-topics = false   # produce to an unknown topic: 404 unless true
//! [[topics]]
//! name = "orders"
//! partitions = 3
//! [kafka]                      # present: topics live in Kafka, not the embedded log
//! "bootstrap.servers" = "127.0.0.1:9092"   # any librdkafka property, passed through
//! group-prefix = "sluice."     # each module consumes in group <prefix><module>
//! ```
//!
//! Relative paths are resolved against the config file's directory.
//!
//! Environment variables override the file and flags override both (see
//! `sluice run --help`): `SLUICE_DATA_DIR`, `SLUICE_MODULES_DIR`,
//! `SLUICE_LISTEN`, `SLUICE_API_TOKEN`, `SLUICE_KAFKA_BOOTSTRAP_SERVERS`,
//! `SLUICE_LOG_FORMAT`.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The whole host config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Where RocksDB lives.
    #[serde(rename = "data-dir", default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Where modules are loaded from at start.
    #[serde(rename = "modules-dir", default)]
    pub modules_dir: Option<PathBuf>,
    /// Admin / ingest HTTP API.
    #[serde(default)]
    pub api: Api,
    /// Embedded log settings.
    #[serde(default)]
    pub log: LogConfig,
    /// Topics created at start.
    #[serde(default)]
    pub topics: Vec<TopicConfig>,
    /// State store settings.
    #[serde(default)]
    pub state: StateConfig,
    /// Pipeline tuning.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// Kafka instead of the embedded log.
    #[serde(default)]
    pub kafka: Option<KafkaConfig>,
    /// Hot deploys and the modules directory.
    #[serde(default)]
    pub deploy: DeployConfig,
    /// Ceilings no module's `[limits]` may go above.
    #[serde(default)]
    pub limits: super::manifest::Ceilings,
    /// Metrics, lag status, traces.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// The schema registry: where schemas come from, what invalid events do.
    #[serde(default)]
    pub schemas: SchemasConfig,
    /// On SIGTERM, the longest wait for in-flight events to commit and the
    /// outbox to drain before exiting with an error.
    #[serde(
        rename = "shutdown-timeout",
        default = "default_shutdown_timeout",
        deserialize_with = "super::units::serde_units::duration"
    )]
    pub shutdown_timeout: std::time::Duration,
}

fn default_shutdown_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}

/// `[deploy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeployConfig {
    /// Watch the modules directory and deploy new or changed modules.
    pub watch: bool,
    /// How often the modules directory is scanned.
    #[serde(
        rename = "watch-interval",
        deserialize_with = "super::units::serde_units::duration"
    )]
    pub watch_interval: std::time::Duration,
    /// Keep compiled components in `<data-dir>/compiled`.
    #[serde(rename = "compile-cache")]
    pub compile_cache: bool,
    /// Keep them here instead (relative to the config file); several hosts
    /// of the same version may share one.
    #[serde(rename = "compile-cache-dir")]
    pub compile_cache_dir: Option<PathBuf>,
}

impl Default for DeployConfig {
    fn default() -> Self {
        DeployConfig {
            watch: true,
            watch_interval: std::time::Duration::from_secs(1),
            compile_cache: true,
            compile_cache_dir: None,
        }
    }
}

/// `[kafka]`: Sluice's own keys, and every other key (they contain a `.`)
/// handed to librdkafka untouched.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Consumer group of module `m` is `<group-prefix><m>`.
    pub group_prefix: String,
    /// Join each group as a static member (`group.instance.id`, stable per
    /// data directory and module; KIP-345, Kafka 2.3+). Off by default: a
    /// restarted host removes its previous run from the group instead, which
    /// works on every broker (tansu 0.6 never fails a dead static member
    /// over to the other hosts).
    pub static_membership: bool,
    /// Replication factor of the topics Sluice creates (`-1`: the broker's
    /// default; managed clusters usually require 3). 1 by default.
    pub replication_factor: i32,
    /// librdkafka properties (`bootstrap.servers`, `security.protocol`, ...).
    pub properties: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    /// No properties yet (a usable config needs `bootstrap.servers`).
    fn default() -> Self {
        KafkaConfig {
            group_prefix: "sluice.".into(),
            static_membership: false,
            replication_factor: 1,
            properties: Default::default(),
        }
    }
}

impl<'de> Deserialize<'de> for KafkaConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let table = std::collections::BTreeMap::<String, toml::Value>::deserialize(d)?;
        let mut cfg = KafkaConfig::default();
        for (k, v) in table {
            let text = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => {
                    return Err(D::Error::custom(format!(
                        "[kafka] {k}: expected a string, number or boolean, found {}",
                        other.type_str()
                    )));
                }
            };
            match k.as_str() {
                "group-prefix" => cfg.group_prefix = text,
                "topic-replication-factor" => {
                    cfg.replication_factor = text
                        .parse()
                        .ok()
                        .filter(|n: &i32| *n == -1 || *n >= 1)
                        .ok_or_else(|| {
                            D::Error::custom(format!(
                                "[kafka] topic-replication-factor: expected -1 (the broker's default) or a count of 1 or more, found `{text}`"
                            ))
                        })?
                }
                "static-membership" => {
                    cfg.static_membership = text.parse().map_err(|_| {
                        D::Error::custom(format!(
                            "[kafka] static-membership: expected true or false, found `{text}`"
                        ))
                    })?
                }
                _ if k.contains('.') => {
                    cfg.properties.insert(k, text);
                }
                _ => {
                    return Err(D::Error::custom(format!(
                        "[kafka] unknown key `{k}`: Sluice's keys are `group-prefix`, `static-membership` and `topic-replication-factor`; librdkafka properties contain a `.` (e.g. `bootstrap.servers`)"
                    )));
                }
            }
        }
        if !cfg.properties.contains_key("bootstrap.servers") {
            return Err(D::Error::custom(
                "[kafka] needs \"bootstrap.servers\" (e.g. \"127.0.0.1:9092\")",
            ));
        }
        Ok(cfg)
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

/// `[api]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Api {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Bearer token every mutating request must carry. Unset: the one in
    /// `<data-dir>/api-token`, generated (and printed once) on loopback.
    pub token: Option<String>,
    /// Largest request body accepted (a deploy carries its component base64).
    #[serde(
        rename = "max-upload",
        deserialize_with = "super::units::serde_units::size"
    )]
    pub max_upload: u64,
    /// Whether reads (state, dead letters, topics, status) need the token
    /// too. Unset: yes when listening on anything but loopback.
    #[serde(rename = "read-token")]
    pub read_token: Option<bool>,
}

impl Api {
    /// Whether a read needs the token (see `read_token`).
    pub fn reads_need_token(&self) -> bool {
        self.read_token.unwrap_or(!self.listen.ip().is_loopback())
    }
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("max_upload", &self.max_upload)
            .finish()
    }
}

impl Default for Api {
    fn default() -> Self {
        Api {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            token: None,
            max_upload: 64 << 20,
            read_token: None,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Partition count of topics created without one.
    pub partitions: u32,
    /// Events kept per partition.
    #[serde(rename = "retention-events")]
    pub retention_events: u64,
    /// Whether producing to an unknown topic creates it.
    #[serde(rename = "auto-create-topics")]
    pub auto_create_topics: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            partitions: 3,
            retention_events: 1_000_000,
            auto_create_topics: false,
        }
    }
}

/// One `[[topics]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Topic name.
    pub name: String,
    /// Partition count (default `[log] partitions`).
    pub partitions: Option<u32>,
    /// Where an event posted without a partition key takes one from: a JSON
    /// pointer into its `data` (`/customer`), applied at ingest. Keeps each
    /// entity's events, and so a stateful module's state for it, in one
    /// partition.
    pub key: Option<String>,
    /// What an event that fails its type's schema does on this topic
    /// (default `[schemas] policy`).
    #[serde(rename = "schema-policy", default)]
    pub schema_policy: Option<crate::schema::Policy>,
}

/// `[state]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// fsync every commit. Off, a commit survives a process crash (`kill -9`)
    /// but not a power loss.
    #[serde(rename = "sync-writes")]
    pub sync_writes: bool,
}

/// `[schemas]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SchemasConfig {
    /// The schema repository (`<dir>/<type>/<version>.json`, relative to the
    /// config file), registered at start and whenever it changes.
    pub dir: Option<PathBuf>,
    /// What an invalid event does where its topic says nothing: `reject`
    /// (HTTP 400; dead-lettered when read from a broker), `dead-letter`, `warn`.
    pub policy: crate::schema::Policy,
}

/// `[telemetry]`: Prometheus metrics, lag status, OpenTelemetry traces.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Serve `GET /metrics` and record latency histograms.
    pub metrics: bool,
    /// The window lag status is judged over (one sample a second).
    #[serde(
        rename = "lag-window",
        deserialize_with = "super::units::serde_units::duration"
    )]
    pub lag_window: std::time::Duration,
    /// Where spans are sent, OTLP over HTTP/protobuf (`http://host:4318`;
    /// `/v1/traces` is added unless the path names it). No endpoint, no
    /// tracing.
    #[serde(rename = "otlp-endpoint")]
    pub otlp_endpoint: Option<String>,
    /// Share of traces sampled where the input carries no sampling decision
    /// (0.0 to 1.0); an input's `traceparent` decides for its own trace.
    pub sampling: f64,
    /// `service.name` of the spans.
    #[serde(rename = "service-name")]
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            metrics: true,
            lag_window: std::time::Duration::from_secs(10),
            otlp_endpoint: None,
            sampling: 1.0,
            service_name: "sluice".into(),
        }
    }
}

/// `[pipeline]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Most events handed to a module in one call and committed in one batch.
    #[serde(rename = "batch-size")]
    pub batch_size: usize,
    /// Linear memory all module instances together may hold (each module is
    /// also capped by its own `limits.memory`). A module that would grow past
    /// it traps with `memory`; the others keep what they have.
    #[serde(
        rename = "memory-budget",
        deserialize_with = "super::units::serde_units::size"
    )]
    pub memory_budget: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            batch_size: 256,
            memory_budget: 4 << 30,
        }
    }
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            data_dir: default_data_dir(),
            modules_dir: None,
            api: Api::default(),
            log: LogConfig::default(),
            topics: Vec::new(),
            state: StateConfig::default(),
            pipeline: PipelineConfig::default(),
            kafka: None,
            telemetry: TelemetryConfig::default(),
            schemas: SchemasConfig::default(),
            deploy: DeployConfig::default(),
            limits: Default::default(),
            shutdown_timeout: default_shutdown_timeout(),
        }
    }
}

impl HostConfig {
    /// Read `path`; relative paths inside are made relative to its directory.
    pub fn load(path: &Path) -> Result<HostConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        let mut c: HostConfig = toml::from_str(&text).map_err(|e| super::toml_error(path, &e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        c.data_dir = base.join(&c.data_dir);
        c.modules_dir = c.modules_dir.map(|d| base.join(d));
        c.schemas.dir = c.schemas.dir.map(|d| base.join(d));
        c.deploy.compile_cache_dir = c.deploy.compile_cache_dir.map(|d| base.join(d));
        c.validate()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(c)
    }

    /// What the backend is called in spans' `messaging.system`: `kafka`, or
    /// `sluice` for the embedded log.
    pub fn messaging_system(&self) -> &'static str {
        if self.kafka.is_some() {
            "kafka"
        } else {
            "sluice"
        }
    }

    /// Check values a file (or an override) may get wrong; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.log.partitions == 0 {
            return Err("log.partitions: must be at least 1".into());
        }
        if self.api.token.as_ref().is_some_and(|t| t.trim().len() < 16) {
            return Err("api.token: must be at least 16 characters".into());
        }
        if self.deploy.watch_interval.is_zero() {
            return Err("deploy.watch-interval: must be more than 0".into());
        }
        if self.pipeline.batch_size == 0 {
            return Err("pipeline.batch-size: must be at least 1".into());
        }
        for (i, t) in self.topics.iter().enumerate() {
            if !super::manifest::valid_name(&t.name) {
                return Err(format!(
                    "topics[{i}].name: `{}` is not a valid topic name",
                    t.name
                ));
            }
            if t.partitions == Some(0) {
                return Err(format!("topics[{i}].partitions: must be at least 1"));
            }
            if let Some(k) = &t.key
                && !k.starts_with('/')
            {
                return Err(format!(
                    "topics[{i}].key: `{k}` is not a JSON pointer into the event's data (like `/customer`)"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HostConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn kafka_properties_pass_through_and_sluice_keys_are_checked() {
        let c = parse(
            "[kafka]\n\"bootstrap.servers\" = \"127.0.0.1:9092\"\n\"session.timeout.ms\" = 6000\ngroup-prefix = \"team-a.\"\n",
        )
        .unwrap();
        let k = c.kafka.unwrap();
        assert_eq!(k.group_prefix, "team-a.");
        assert_eq!(k.properties["bootstrap.servers"], "127.0.0.1:9092");
        assert_eq!(k.properties["session.timeout.ms"], "6000");
        assert!(
            parse("").unwrap().kafka.is_none(),
            "no [kafka]: embedded log"
        );

        let e =
            parse("[kafka]\n\"bootstrap.servers\" = \"x\"\ngroup_prefix = \"a\"\n").unwrap_err();
        assert!(e.contains("unknown key `group_prefix`"), "{e}");
        let e = parse("[kafka]\ngroup-prefix = \"a\"\n").unwrap_err();
        assert!(e.contains("bootstrap.servers"), "{e}");
        let e = parse("[kafka]\n\"bootstrap.servers\" = [\"a\"]\n").unwrap_err();
        assert!(e.contains("bootstrap.servers"), "{e}");

        assert!(!k.static_membership, "off by default");
        assert_eq!(k.replication_factor, 1);
        let rf = parse("[kafka]\n\"bootstrap.servers\" = \"x\"\ntopic-replication-factor = 3\n")
            .unwrap();
        assert_eq!(rf.kafka.unwrap().replication_factor, 3);
        let e = parse("[kafka]\n\"bootstrap.servers\" = \"x\"\ntopic-replication-factor = 0\n")
            .unwrap_err();
        assert!(e.contains("topic-replication-factor"), "{e}");
        let on =
            parse("[kafka]\n\"bootstrap.servers\" = \"x\"\nstatic-membership = true\n").unwrap();
        assert!(on.kafka.unwrap().static_membership);
        let e = parse("[kafka]\n\"bootstrap.servers\" = \"x\"\nstatic-membership = \"yes\"\n")
            .unwrap_err();
        assert!(e.contains("static-membership"), "{e}");
    }
}
