//! The running host: config in, store, log, runtime, modules, relay and
//! housekeeping up; everything shut down in order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::config::{HostConfig, Manifest};
use crate::pipeline::{MetricsSnapshot, Pipeline, Shared};
use crate::runtime::Runtime;
use crate::sink::kafka::KafkaSink;
use crate::sink::{Publisher, Relay};
use crate::source::EventLog;
use crate::source::kafka::Kafka;
use crate::state::{StateSize, Store};
use crate::util::Signal;

/// A module as `sluice modules` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModuleInfo {
    pub name: String,
    pub version: Option<String>,
    /// `running`, `stopped`, `failed: ...`.
    pub status: String,
    pub dir: String,
    /// Per subscribed topic partition.
    pub partitions: Vec<PartitionInfo>,
    pub state: Option<StateSizeInfo>,
    pub metrics: Option<MetricsSnapshot>,
}

/// State size, serializable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateSizeInfo {
    pub keys: u64,
    pub bytes: u64,
}

impl From<StateSize> for StateSizeInfo {
    fn from(s: StateSize) -> Self {
        StateSizeInfo {
            keys: s.keys,
            bytes: s.bytes,
        }
    }
}

/// Cursor and lag of one partition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionInfo {
    pub topic: String,
    pub partition: u32,
    pub cursor: u64,
    pub end: u64,
    pub lag: u64,
}

struct Failed {
    dir: PathBuf,
    error: String,
}

/// The running host.
pub struct Service {
    pub config: HostConfig,
    pub store: Arc<Store>,
    pub log: Arc<EventLog>,
    pub runtime: Arc<Runtime>,
    /// Set when topics live in Kafka.
    pub kafka: Option<Arc<Kafka>>,
    /// A producer for the ingest API, on Kafka.
    pub kafka_producer: Option<KafkaSink>,
    shared: Shared,
    modules: Mutex<BTreeMap<String, (PathBuf, Pipeline)>>,
    failed: Mutex<BTreeMap<String, Failed>>,
    relay: Mutex<Option<Relay>>,
    housekeeping_stop: Arc<AtomicBool>,
}

impl Service {
    /// Open the data directory, create configured topics, load every module in
    /// the modules directory, and start them. A module that fails to load is
    /// reported (log, `sluice modules`) and the others start anyway.
    pub fn start(config: HostConfig) -> anyhow::Result<Arc<Service>> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!("cannot create data directory {}", config.data_dir.display())
        })?;
        let store = Arc::new(
            Store::open(&config.data_dir.join("db"), config.state.sync_writes).with_context(
                || {
                    format!(
                        "cannot open the database in {} (is another sluice using it?)",
                        config.data_dir.display()
                    )
                },
            )?,
        );
        let log = Arc::new(EventLog::open(
            store.clone(),
            config.log.partitions,
            config.log.retention_events,
            config.log.auto_create_topics,
        )?);
        let kafka = config
            .kafka
            .clone()
            .map(|k| Arc::new(Kafka::new(k, config.log.partitions)));
        match &kafka {
            None => {
                for t in &config.topics {
                    log.ensure_topic(&t.name, t.partitions)
                        .with_context(|| format!("topic `{}` from the host config", t.name))?;
                }
            }
            Some(k) => {
                let topics: Vec<(String, Option<u32>)> = config
                    .topics
                    .iter()
                    .map(|t| (t.name.clone(), t.partitions))
                    .collect();
                k.ensure_topics(&topics).map_err(anyhow::Error::msg)?;
            }
        }
        let runtime = Arc::new(
            Runtime::new(config.pipeline.memory_budget)
                .context("cannot start the WebAssembly engine")?,
        );
        let signal = Arc::new(Signal::default());
        let shared = Shared {
            store: store.clone(),
            log: log.clone(),
            runtime: runtime.clone(),
            batch_size: config.pipeline.batch_size,
            kafka: kafka.clone(),
            relay: signal.clone(),
        };
        let (publisher, kafka_producer) = match &kafka {
            None => (Publisher::Log(log.clone()), None),
            Some(k) => (
                Publisher::Kafka(KafkaSink::new(k).map_err(anyhow::Error::msg)?),
                Some(KafkaSink::new(k).map_err(anyhow::Error::msg)?),
            ),
        };
        let relay = Relay::start(store.clone(), publisher, signal)
            .context("cannot start the outbox relay")?;
        let svc = Arc::new(Service {
            config,
            store,
            log,
            runtime,
            kafka,
            kafka_producer,
            shared,
            modules: Mutex::new(BTreeMap::new()),
            failed: Mutex::new(BTreeMap::new()),
            relay: Mutex::new(Some(relay)),
            housekeeping_stop: Arc::new(AtomicBool::new(false)),
        });
        svc.start_housekeeping()?;
        if let Some(dir) = svc.config.modules_dir.clone() {
            svc.load_dir(&dir)?;
        }
        Ok(svc)
    }

    fn start_housekeeping(&self) -> std::io::Result<()> {
        let (store, log, stop) = (
            self.store.clone(),
            self.log.clone(),
            self.housekeeping_stop.clone(),
        );
        std::thread::Builder::new()
            .name("sluice-housekeeping".into())
            .spawn(move || {
                let mut tick = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    tick += 1;
                    if !tick.is_multiple_of(25) {
                        continue;
                    }
                    if let Err(e) = log.enforce_retention() {
                        tracing::error!(error = %e, "retention failed");
                    }
                    match store.sweep_expired(crate::source::now_ms()) {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(removed = n, "expired idempotency marks removed"),
                        Err(e) => tracing::error!(error = %e, "idempotency sweep failed"),
                    }
                }
            })?;
        Ok(())
    }

    /// Load every `*/module.toml` under `dir`.
    pub fn load_dir(&self, dir: &Path) -> anyhow::Result<()> {
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read modules directory {}", dir.display()))?;
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.join("module.toml").is_file())
            .collect();
        dirs.sort();
        for d in dirs {
            if let Err(e) = self.deploy_dir(&d) {
                let name = d
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                tracing::error!(module = %name, dir = %d.display(), error = %e, "module not loaded");
                self.failed.lock().unwrap().insert(
                    name,
                    Failed {
                        dir: d.clone(),
                        error: e,
                    },
                );
            }
        }
        Ok(())
    }

    /// Validate and start the module in `dir` (with `module.toml`).
    pub fn deploy_dir(&self, dir: &Path) -> Result<(), String> {
        let manifest = Manifest::load(&dir.join("module.toml"))?;
        if self.modules.lock().unwrap().contains_key(&manifest.name) {
            return Err(format!("module `{}` is already loaded", manifest.name));
        }
        let component = dir.join(&manifest.component);
        let loaded = self
            .runtime
            .load(&component)
            .map_err(|e| format!("module `{}`: {e}", manifest.name))?;
        self.ensure_module_topics(&manifest)
            .map_err(|e| format!("module `{}`: {e}", manifest.name))?;
        let name = manifest.name.clone();
        let pipeline = Pipeline::start(self.shared.clone(), manifest, loaded)?;
        self.failed.lock().unwrap().remove(&name);
        self.modules
            .lock()
            .unwrap()
            .insert(name, (dir.to_path_buf(), pipeline));
        Ok(())
    }

    /// Create the topics a module reads and writes (its dead-letter topic, and
    /// on the embedded log its replay topic, included) and check that its
    /// subscriptions are co-partitioned.
    fn ensure_module_topics(&self, manifest: &Manifest) -> Result<(), String> {
        let subscribed: Vec<(String, Option<u32>)> = manifest
            .subscribe
            .iter()
            .map(|s| (s.topic.clone(), None))
            .collect();
        let mut others: Vec<(String, Option<u32>)> = manifest
            .produce
            .iter()
            .map(|p| (p.topic.clone(), None))
            .collect();
        others.push((manifest.dlq_topic(), None));
        let counts: Vec<u32> = match &self.kafka {
            Some(k) => {
                k.ensure_topics(&others)?;
                k.ensure_topics(&subscribed)?
            }
            None => {
                for (t, n) in &others {
                    self.log.ensure_topic(t, *n).map_err(|e| e.to_string())?;
                }
                subscribed
                    .iter()
                    .map(|(t, n)| self.log.ensure_topic(t, *n))
                    .collect::<Result<_, _>>()
                    .map_err(|e| e.to_string())?
            }
        };
        if let Some(n0) = counts.first()
            && let Some(i) = counts.iter().position(|n| n != n0)
        {
            return Err(format!(
                "subscribed topics must be co-partitioned, but `{}` has {n0} partitions and `{}` has {}",
                subscribed[0].0, subscribed[i].0, counts[i]
            ));
        }
        // Replays land in the partition their original came from.
        if let (Some(n), None) = (counts.first(), &self.kafka) {
            self.log
                .ensure_topic(&manifest.replay_topic(), Some(*n))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Cursor, end and lag of each partition a module reads.
    fn partitions(&self, name: &str, pipeline: &Pipeline) -> Vec<PartitionInfo> {
        let manifest = &pipeline.manifest;
        if self.kafka.is_some() {
            // The partitions this host holds now, as its module thread saw them.
            return pipeline
                .positions
                .lock()
                .unwrap()
                .iter()
                .map(|((topic, partition), (cursor, end))| PartitionInfo {
                    topic: topic.clone(),
                    partition: *partition,
                    cursor: *cursor,
                    end: *end,
                    lag: end.saturating_sub(*cursor),
                })
                .collect();
        }
        let mut out = Vec::new();
        let replay = manifest.replay_topic();
        let topics = manifest.subscribe.iter().map(|s| &s.topic).chain([&replay]);
        for topic in topics {
            for part in 0..self.log.partitions(topic).unwrap_or(0) {
                let cursor = self
                    .store
                    .cursor(name, topic, part)
                    .ok()
                    .flatten()
                    .unwrap_or(0);
                let end = self.log.bounds(topic, part).map(|b| b.1).unwrap_or(0);
                out.push(PartitionInfo {
                    topic: topic.clone(),
                    partition: part,
                    cursor,
                    end,
                    lag: end.saturating_sub(cursor),
                });
            }
        }
        out
    }

    /// Total lag of every loaded module (without the cost of sizing their state).
    pub fn lag(&self) -> u64 {
        let modules = self.modules.lock().unwrap();
        modules
            .iter()
            .flat_map(|(name, (_, p))| self.partitions(name, p))
            .map(|p| p.lag)
            .sum()
    }

    /// `(dead-letter topic, replay topic)` of a loaded module.
    pub fn dlq_topics(&self, name: &str) -> Result<(String, String), String> {
        let modules = self.modules.lock().unwrap();
        let Some((_, p)) = modules.get(name) else {
            return Err(format!("no module named `{name}` is loaded"));
        };
        Ok((p.manifest.dlq_topic(), p.manifest.replay_topic()))
    }

    /// Whether `name` is loaded or failed to load.
    pub fn has_module(&self, name: &str) -> bool {
        self.modules.lock().unwrap().contains_key(name)
            || self.failed.lock().unwrap().contains_key(name)
    }

    /// What is loaded (and what failed to load), with cursors and state size.
    pub fn modules(&self) -> Vec<ModuleInfo> {
        let mut out = Vec::new();
        for (name, (dir, p)) in self.modules.lock().unwrap().iter() {
            let partitions = self.partitions(name, p);
            out.push(ModuleInfo {
                name: name.clone(),
                version: Some(p.manifest.version.clone()),
                status: p.status.lock().unwrap().clone(),
                dir: dir.display().to_string(),
                partitions,
                state: self.store.state_size(name).ok().map(Into::into),
                metrics: Some(p.metrics.snapshot()),
            });
        }
        for (name, f) in self.failed.lock().unwrap().iter() {
            out.push(ModuleInfo {
                name: name.clone(),
                version: None,
                status: format!("failed: {}", f.error),
                dir: f.dir.display().to_string(),
                partitions: vec![],
                state: None,
                metrics: None,
            });
        }
        out
    }

    /// Bring a quarantined module back: it resumes from its cursor.
    pub fn resume(&self, name: &str) -> Result<bool, String> {
        let modules = self.modules.lock().unwrap();
        let Some((_, p)) = modules.get(name) else {
            return Err(format!("no module named `{name}`"));
        };
        let was = p.quarantine.is_set();
        self.store
            .set_quarantined(name, false)
            .map_err(|e| e.to_string())?;
        p.quarantine.set(false);
        Ok(was)
    }

    /// Stop intake of every module, let in-flight events commit, drain the outbox.
    pub fn shutdown(&self) {
        let mut modules = std::mem::take(&mut *self.modules.lock().unwrap());
        for (_, (_, p)) in modules.iter_mut() {
            p.stop();
        }
        if let Some(mut r) = self.relay.lock().unwrap().take() {
            r.stop();
        }
        self.housekeeping_stop.store(true, Ordering::SeqCst);
        tracing::info!("stopped");
    }
}
