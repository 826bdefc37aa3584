//! The host's config file (`sluice.toml`).
//!
//! ```toml
//! data-dir = "data"            # RocksDB: embedded log, module state, cursors
//! modules-dir = "modules"      # one sub-directory per module, each with module.toml
//! [api]
//! listen = "127.0.0.1:7070"
//! [log]                        # the embedded log (used when no broker is configured)
//! partitions = 3               # default partition count of a new topic
//! retention-events = 1000000   # per partition; older events are deleted
//! auto-create-topics = false   # produce to an unknown topic: 404 unless true
//! [[topics]]
//! name = "orders"
//! partitions = 3
//! ```
//!
//! Relative paths are resolved against the config file's directory.

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
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

/// `[api]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Api {
    /// Address to listen on.
    pub listen: SocketAddr,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
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
        c.validate()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), String> {
        if self.log.partitions == 0 {
            return Err("log.partitions: must be at least 1".into());
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
        }
        Ok(())
    }
}
