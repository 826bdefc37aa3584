//! The running host: config in, store, log, runtime, modules, relay and
//! housekeeping up; module lifecycle (deploy, upgrade, rollback, pause,
//! undeploy, rewind) while it runs; everything shut down in order.
//!
//! Every way a module arrives (the API, `sluice deploy`, the watched modules
//! directory, the registry at start) goes through [`Service::deploy`] or
//! [`Service::rollback`], which validate everything before anything changes
//! and then swap the module's pipeline between two batches. Lifecycle
//! operations are serialized by one lock; the modules they do not name are
//! never touched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::{HostConfig, Manifest, StartPosition};
use crate::deploy::watch::{Candidate, DirScanner};
use crate::deploy::{ComponentStore, ModuleRecord, Registry, Revision};
use crate::pipeline::{Metrics, MetricsSnapshot, Pipeline, Shared};
use crate::runtime::{Loaded, Runtime, component_hash};
use crate::sink::kafka::KafkaSink;
use crate::sink::{Publisher, Relay};
use crate::source::kafka::Kafka;
use crate::source::{EventLog, now_ms};
use crate::state::{Commit, StateSize, Store};
use crate::util::{Signal, StoppableThread};

/// A module as `sluice modules` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModuleInfo {
    pub name: String,
    pub version: Option<String>,
    /// `running`, `paused`, `quarantined`, `stopped`, `failed: ...`.
    pub status: String,
    /// Where the running revision came from (`api`, `dir <path>`, ...).
    pub dir: String,
    /// The running revision (1, 2, ...).
    #[serde(default)]
    pub revision: Option<u32>,
    /// SHA-256 of the running component.
    #[serde(default)]
    pub component: Option<String>,
    /// Per subscribed topic partition.
    pub partitions: Vec<PartitionInfo>,
    pub state: Option<StateSizeInfo>,
    pub metrics: Option<MetricsSnapshot>,
    /// The newest failure: a refused upgrade (the previous revision kept
    /// running), or the newest dead letter's reason.
    #[serde(default)]
    pub last_error: Option<String>,
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

/// Why a lifecycle operation was refused. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The request or what it carries is invalid (manifest field, component,
    /// import): fix it and submit again.
    #[error("{0}")]
    Invalid(String),
    /// It contradicts what is deployed (a version reused for other content).
    #[error("{0}")]
    Conflict(String),
    /// No such module.
    #[error("{0}")]
    NotFound(String),
    /// The host could not do it (storage).
    #[error("{0}")]
    Internal(String),
}

type Lifecycle<T> = Result<T, LifecycleError>;

/// A module to deploy: manifest text and component bytes.
pub struct DeployRequest {
    pub manifest: String,
    pub component: Vec<u8>,
    /// `api`, `dir <path>`.
    pub source: String,
    /// Overrides every subscription's `start` (for a module without cursors).
    pub start: Option<String>,
}

/// What a deploy or rollback did.
#[derive(Debug, Clone, Serialize)]
pub struct DeployOutcome {
    pub module: String,
    /// `deployed`, `upgraded`, `rolled-back`, `unchanged`.
    pub action: &'static str,
    pub version: String,
    pub revision: u32,
    /// The version that ran before, if any.
    pub previous: Option<String>,
}

/// One partition of a rewind: the cursor moved from `from` to `to`; `end` is
/// where the partition ended at that moment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RewoundPartition {
    pub topic: String,
    pub partition: u32,
    pub from: u64,
    pub to: u64,
    pub end: u64,
}

/// A loaded module: its running revision and, unless paused, its pipeline.
struct Entry {
    revision: Revision,
    manifest: Arc<Manifest>,
    loaded: Loaded,
    metrics: Arc<Metrics>,
    pipeline: Option<Pipeline>,
    paused: bool,
    /// Why the newest deploy of this module was refused.
    deploy_error: Option<String>,
}

struct Failed {
    dir: String,
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
    registry: Registry,
    components: ComponentStore,
    modules: Mutex<BTreeMap<String, Entry>>,
    failed: Mutex<BTreeMap<String, Failed>>,
    /// Serializes deploy, rollback, pause, resume, undeploy and rewind.
    lifecycle: Mutex<()>,
    relay: Mutex<Option<Relay>>,
    housekeeping_stop: Arc<AtomicBool>,
    watcher: Mutex<Option<StoppableThread>>,
    opened: Instant,
    /// Set when the modules of the registry and the modules directory are loaded.
    ready: AtomicBool,
    /// Milliseconds from opening to ready.
    startup_ms: AtomicU64,
    /// Outputs the previous run left in the outbox (0 after a clean stop).
    pub outbox_at_start: u64,
}

impl Service {
    /// [`Service::open`] and [`Service::load_modules`].
    pub fn start(config: HostConfig) -> anyhow::Result<Arc<Service>> {
        let svc = Service::open(config)?;
        svc.load_modules();
        Ok(svc)
    }

    /// Open the data directory, create configured topics, start the relay and
    /// housekeeping. No module runs yet: [`Service::load_modules`] does that.
    pub fn open(config: HostConfig) -> anyhow::Result<Arc<Service>> {
        let opened = Instant::now();
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
        let outbox_at_start = store.outbox_len().unwrap_or(0);
        if outbox_at_start > 0 {
            tracing::info!(
                outputs = outbox_at_start,
                "the previous run left outputs in the outbox; publishing them"
            );
        }
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
        let mut runtime = Runtime::new(config.pipeline.memory_budget)
            .context("cannot start the WebAssembly engine")?;
        if config.deploy.compile_cache {
            let dir = config
                .deploy
                .compile_cache_dir
                .clone()
                .unwrap_or_else(|| config.data_dir.join("compiled"));
            runtime = runtime
                .with_compile_cache(&dir)
                .context("cannot open the compiled-component cache")?;
        }
        let runtime = Arc::new(runtime);
        let components = ComponentStore::open(&config.data_dir.join("components"))
            .context("cannot open the component store")?;
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
            registry: Registry::new(store.clone()),
            store,
            log,
            runtime,
            kafka,
            kafka_producer,
            shared,
            components,
            modules: Mutex::new(BTreeMap::new()),
            failed: Mutex::new(BTreeMap::new()),
            lifecycle: Mutex::new(()),
            relay: Mutex::new(Some(relay)),
            housekeeping_stop: Arc::new(AtomicBool::new(false)),
            watcher: Mutex::new(None),
            opened,
            ready: AtomicBool::new(false),
            startup_ms: AtomicU64::new(0),
            outbox_at_start,
        });
        svc.start_housekeeping()?;
        Ok(svc)
    }

    /// Start what the registry says runs, then deploy what is new in the
    /// modules directory, then (if configured) watch that directory. A module
    /// that fails is reported (log, `sluice modules`); the others start anyway.
    pub fn load_modules(self: &Arc<Self>) {
        match self.registry.all() {
            Ok(records) => {
                for rec in records {
                    let Some(rev) = rec.current().cloned() else {
                        continue;
                    };
                    if let Err(e) = self.start_revision(&rev, rec.paused) {
                        tracing::error!(module = %rec.name, revision = rev.revision, error = %e, "module not loaded");
                        self.failed.lock().unwrap().insert(
                            rec.name.clone(),
                            Failed {
                                dir: rev.source.clone(),
                                error: e.to_string(),
                            },
                        );
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the module registry"),
        }
        if let Some(dir) = self.config.modules_dir.clone() {
            let mut scanner = DirScanner::default();
            match scanner.scan(&dir, true) {
                Ok(found) => found.into_iter().for_each(|c| self.deploy_candidate(c)),
                Err(e) => tracing::error!(error = %e, "modules directory not loaded"),
            }
            if self.config.deploy.watch {
                self.watch(dir, scanner);
            }
        }
        let ms = self.opened.elapsed().as_millis() as u64;
        self.startup_ms.store(ms, Ordering::SeqCst);
        self.ready.store(true, Ordering::SeqCst);
        let stats = self.runtime.cache_stats();
        tracing::info!(
            modules = self.modules.lock().unwrap().len(),
            failed = self.failed.lock().unwrap().len(),
            compiled_from_cache = stats.hits,
            compiled = stats.misses,
            startup_ms = ms,
            "ready"
        );
    }

    fn watch(self: &Arc<Self>, dir: PathBuf, mut scanner: DirScanner) {
        let stop = Arc::new(AtomicBool::new(false));
        let weak = Arc::downgrade(self);
        let interval = self.config.deploy.watch_interval;
        let s = stop.clone();
        let thread = StoppableThread::spawn("sluice-watch".into(), stop, move || {
            while !s.load(Ordering::Relaxed) {
                let deadline = Instant::now() + interval;
                while Instant::now() < deadline && !s.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50).min(interval));
                }
                let Some(svc) = weak.upgrade() else { return };
                match scanner.scan(&dir, false) {
                    Ok(found) => found.into_iter().for_each(|c| svc.deploy_candidate(c)),
                    Err(e) => tracing::warn!(error = %e, "cannot scan the modules directory"),
                }
            }
        });
        match thread {
            Ok(t) => *self.watcher.lock().unwrap() = Some(t),
            Err(e) => tracing::error!(error = %e, "cannot start the modules-directory watcher"),
        }
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

    /// Deploy the module in `dir` (with `module.toml`) as the modules
    /// directory would.
    pub fn deploy_dir(&self, dir: &Path) -> Lifecycle<DeployOutcome> {
        let mpath = dir.join("module.toml");
        let manifest = Manifest::load(&mpath).map_err(LifecycleError::Invalid)?;
        let text = std::fs::read_to_string(&mpath)
            .map_err(|e| LifecycleError::Invalid(format!("{}: {e}", mpath.display())))?;
        let cpath = dir.join(&manifest.component);
        let component = std::fs::read(&cpath).map_err(|e| {
            LifecycleError::Invalid(format!("cannot read component {}: {e}", cpath.display()))
        })?;
        self.deploy(DeployRequest {
            manifest: text,
            component,
            source: format!("dir {}", dir.display()),
            start: None,
        })
    }

    /// A module directory found by the scanner: deploy it unless this exact
    /// content was deployed before (so a restart, or a rollback, is not undone
    /// by the files still lying there). A refusal is logged and shown on the
    /// module (or as a failed module).
    fn deploy_candidate(&self, c: Candidate) {
        let (manifest, component) = match c.content {
            Ok(content) => content,
            Err(e) => return self.note_refused(None, &c.dir, &e),
        };
        let name = toml::from_str::<toml::Table>(&manifest)
            .ok()
            .and_then(|t| t.get("name")?.as_str().map(str::to_owned));
        if let Some(n) = &name
            && let Ok(Some(rec)) = self.registry.get(n)
            && rec.has_content(&component_hash(&component), &manifest)
        {
            return;
        }
        let res = self.deploy(DeployRequest {
            manifest,
            component,
            source: format!("dir {}", c.dir.display()),
            start: None,
        });
        match res {
            Ok(o) => {
                tracing::info!(module = %o.module, action = o.action, version = %o.version, dir = %c.dir.display(), "modules directory");
                // An earlier refusal of this directory is over.
                let dir = c.dir.display().to_string();
                self.failed.lock().unwrap().retain(|_, f| f.dir != dir);
            }
            Err(e) => self.note_refused(name.as_deref(), &c.dir, &e.to_string()),
        }
    }

    /// Record why a deploy from `dir` was refused: on the running module if
    /// there is one, else as a failed module (named by the manifest, or by the
    /// directory when the manifest has no readable name).
    fn note_refused(&self, name: Option<&str>, dir: &Path, error: &str) {
        tracing::error!(dir = %dir.display(), error, "module directory not deployed");
        let name = name.map(str::to_owned).unwrap_or_else(|| {
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        if let Some(e) = self.modules.lock().unwrap().get_mut(&name) {
            e.deploy_error = Some(error.to_string());
            return;
        }
        self.failed.lock().unwrap().insert(
            name,
            Failed {
                dir: dir.display().to_string(),
                error: error.to_string(),
            },
        );
    }

    /// Deploy a new module, or upgrade a deployed one to new content. The
    /// manifest, the component (its imports and exports) and its topics are
    /// checked first; a refusal changes nothing. An upgrade swaps the
    /// component between two batches and keeps state, cursors and the
    /// idempotency set.
    pub fn deploy(&self, req: DeployRequest) -> Lifecycle<DeployOutcome> {
        let _serial = self.lifecycle.lock().unwrap();
        let mut manifest = Manifest::parse_str(&req.manifest, Path::new("module.toml"))
            .map_err(LifecycleError::Invalid)?;
        apply_start(&mut manifest, req.start.as_deref())?;
        let name = manifest.name.clone();
        let hash = component_hash(&req.component);
        let mut rec = self
            .registry
            .get(&name)
            .map_err(LifecycleError::Internal)?
            .unwrap_or_else(|| ModuleRecord::new(&name));
        let loaded_now = self.modules.lock().unwrap().contains_key(&name);
        if loaded_now
            && let Some(cur) = rec.current()
            && cur.same_content(&hash, &req.manifest)
        {
            return Ok(DeployOutcome {
                module: name,
                action: "unchanged",
                version: cur.version.clone(),
                revision: cur.revision,
                previous: None,
            });
        }
        if let Some(r) = rec
            .revisions
            .iter()
            .find(|r| r.version == manifest.version && !r.same_content(&hash, &req.manifest))
        {
            return Err(LifecycleError::Conflict(format!(
                "module.toml: version: `{}` of module `{name}` was deployed before (revision {}) with a different component or manifest; give this build a new version",
                manifest.version, r.revision
            )));
        }
        let loaded = self
            .runtime
            .load_hashed(&hash, &name, || Ok(req.component.clone()))
            .map_err(|e| LifecycleError::Invalid(format!("module `{name}`: {e}")))?;
        self.components
            .put(&hash, &req.component)
            .map_err(|e| LifecycleError::Internal(format!("cannot store the component: {e}")))?;
        let rev = Revision {
            revision: 0,
            version: manifest.version.clone(),
            component: hash,
            manifest: req.manifest,
            source: req.source,
            deployed_at_ms: now_ms(),
            start: req.start,
        };
        let action = if loaded_now { "upgraded" } else { "deployed" };
        self.activate(&mut rec, manifest, loaded, rev, action)
    }

    /// Run an earlier revision again (the newest with `version`, or the one
    /// before the current). It becomes a new revision; state carries over.
    pub fn rollback(&self, name: &str, version: Option<&str>) -> Lifecycle<DeployOutcome> {
        let _serial = self.lifecycle.lock().unwrap();
        let mut rec = self.record(name)?;
        if rec.current.is_none() {
            return Err(LifecycleError::Conflict(format!(
                "module `{name}` is undeployed; deploy it to run it again"
            )));
        }
        let target = rec
            .rollback_target(version)
            .map_err(LifecycleError::NotFound)?
            .clone();
        let (manifest, loaded) = self.load_revision(&target)?;
        let rev = Revision {
            source: format!("rollback to revision {}", target.revision),
            deployed_at_ms: now_ms(),
            ..target
        };
        self.activate(&mut rec, manifest, loaded, rev, "rolled-back")
    }

    /// Make `rev` the running revision of its module: create its topics, stop
    /// the old pipeline after its current batch, start the new one (or put the
    /// old one back if that fails), and record it.
    fn activate(
        &self,
        rec: &mut ModuleRecord,
        manifest: Manifest,
        loaded: Loaded,
        rev: Revision,
        action: &'static str,
    ) -> Lifecycle<DeployOutcome> {
        let name = manifest.name.clone();
        self.ensure_module_topics(&manifest)
            .map_err(|e| LifecycleError::Invalid(format!("module `{name}`: {e}")))?;
        let manifest = Arc::new(manifest);
        let (old, metrics, paused, previous) = {
            let mut modules = self.modules.lock().unwrap();
            match modules.get_mut(&name) {
                Some(e) => (
                    e.pipeline.take(),
                    e.metrics.clone(),
                    e.paused,
                    Some(e.revision.version.clone()),
                ),
                None => (None, Arc::new(Metrics::default()), false, None),
            }
        };
        if let Some(mut p) = old {
            p.stop();
        }
        let pipeline = if paused {
            None
        } else {
            match Pipeline::start(
                self.shared.clone(),
                manifest.clone(),
                loaded.clone(),
                metrics.clone(),
            ) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.restart_pipeline(&name);
                    return Err(LifecycleError::Invalid(e));
                }
            }
        };
        let revision = rec.push(rev);
        rec.paused = paused;
        if let Err(e) = self.registry.put(rec) {
            tracing::error!(module = %name, error = %e, "cannot record the deploy; it runs but will not be restored after a restart");
        }
        let revision_rec = rec.current().expect("just pushed").clone();
        let version = revision_rec.version.clone();
        tracing::info!(module = %name, action, version = %version, revision, previous = ?previous, "module {action}");
        self.modules.lock().unwrap().insert(
            name.clone(),
            Entry {
                revision: revision_rec,
                manifest,
                loaded,
                metrics,
                pipeline,
                paused,
                deploy_error: None,
            },
        );
        self.failed.lock().unwrap().remove(&name);
        Ok(DeployOutcome {
            module: name,
            action,
            version,
            revision,
            previous,
        })
    }

    /// A recorded revision's manifest (with its start override) and its
    /// component from the store (compiled, or from the compiled cache).
    fn load_revision(&self, rev: &Revision) -> Lifecycle<(Manifest, Loaded)> {
        let what = format!("revision {} ({})", rev.revision, rev.source);
        let mut manifest = Manifest::parse_str(&rev.manifest, Path::new(&what))
            .map_err(LifecycleError::Internal)?;
        apply_start(&mut manifest, rev.start.as_deref())?;
        let loaded = self
            .runtime
            .load_hashed(&rev.component, &manifest.name, || {
                self.components.read(&rev.component)
            })
            .map_err(|e| LifecycleError::Internal(e.to_string()))?;
        Ok((manifest, loaded))
    }

    /// Start a registry revision at host start.
    fn start_revision(&self, rev: &Revision, paused: bool) -> Lifecycle<()> {
        let (manifest, loaded) = self.load_revision(rev)?;
        self.ensure_module_topics(&manifest)
            .map_err(LifecycleError::Internal)?;
        let manifest = Arc::new(manifest);
        let metrics = Arc::new(Metrics::default());
        let pipeline = if paused {
            None
        } else {
            Some(
                Pipeline::start(
                    self.shared.clone(),
                    manifest.clone(),
                    loaded.clone(),
                    metrics.clone(),
                )
                .map_err(LifecycleError::Internal)?,
            )
        };
        self.modules.lock().unwrap().insert(
            manifest.name.clone(),
            Entry {
                revision: rev.clone(),
                manifest,
                loaded,
                metrics,
                pipeline,
                paused,
                deploy_error: None,
            },
        );
        Ok(())
    }

    /// Start the pipeline of a loaded, unpaused module that has none.
    fn restart_pipeline(&self, name: &str) {
        let mut modules = self.modules.lock().unwrap();
        let Some(e) = modules.get_mut(name) else {
            return;
        };
        if e.paused || e.pipeline.is_some() {
            return;
        }
        match Pipeline::start(
            self.shared.clone(),
            e.manifest.clone(),
            e.loaded.clone(),
            e.metrics.clone(),
        ) {
            Ok(p) => e.pipeline = Some(p),
            Err(err) => {
                tracing::error!(module = %name, error = %err, "cannot restart the module");
                e.deploy_error = Some(err);
            }
        }
    }

    fn record(&self, name: &str) -> Lifecycle<ModuleRecord> {
        self.registry
            .get(name)
            .map_err(LifecycleError::Internal)?
            .ok_or_else(|| LifecycleError::NotFound(format!("no module named `{name}`")))
    }

    /// Stop a module's pipeline (after its current batch) and hand it back.
    fn take_pipeline(&self, name: &str) -> Lifecycle<Option<Pipeline>> {
        let mut modules = self.modules.lock().unwrap();
        let e = modules.get_mut(name).ok_or_else(|| {
            LifecycleError::NotFound(format!("no module named `{name}` is deployed"))
        })?;
        Ok(e.pipeline.take())
    }

    /// Stop consuming; state, cursors and the loaded component stay. Kept
    /// across restarts. Returns whether it was running.
    pub fn pause(&self, name: &str) -> Lifecycle<bool> {
        let _serial = self.lifecycle.lock().unwrap();
        let mut rec = self.record(name)?;
        let old = self.take_pipeline(name)?;
        let was_running = old.is_some();
        if let Some(mut p) = old {
            p.stop();
        }
        if let Some(e) = self.modules.lock().unwrap().get_mut(name) {
            e.paused = true;
        }
        rec.paused = true;
        self.registry
            .put(&rec)
            .map_err(|e| LifecycleError::Internal(e.to_string()))?;
        tracing::info!(module = %name, "paused");
        Ok(was_running)
    }

    /// Bring a paused or quarantined module back: it continues from its
    /// cursors. Returns `(was paused, was quarantined)`.
    pub fn resume(&self, name: &str) -> Lifecycle<(bool, bool)> {
        let _serial = self.lifecycle.lock().unwrap();
        let mut rec = self.record(name)?;
        let (was_paused, quarantine) = {
            let modules = self.modules.lock().unwrap();
            let e = modules.get(name).ok_or_else(|| {
                LifecycleError::NotFound(format!("no module named `{name}` is deployed"))
            })?;
            (e.paused, e.pipeline.as_ref().map(|p| p.quarantine.clone()))
        };
        let was_quarantined = self.store.is_quarantined(name).unwrap_or(false);
        self.store
            .set_quarantined(name, false)
            .map_err(|e| LifecycleError::Internal(e.to_string()))?;
        if let Some(q) = quarantine {
            q.set(false);
        }
        if was_paused {
            rec.paused = false;
            self.registry
                .put(&rec)
                .map_err(|e| LifecycleError::Internal(e.to_string()))?;
            if let Some(e) = self.modules.lock().unwrap().get_mut(name) {
                e.paused = false;
            }
            self.restart_pipeline(name);
            tracing::info!(module = %name, "resumed");
        }
        Ok((was_paused, was_quarantined))
    }

    /// Stop and unload a module. Its state, idempotency set and cursors stay
    /// (a later deploy continues from them) unless `purge`. Its revision
    /// history stays, so the modules directory does not deploy the same
    /// content again by itself.
    pub fn undeploy(&self, name: &str, purge: bool) -> Lifecycle<Value> {
        let _serial = self.lifecycle.lock().unwrap();
        let failed = self.failed.lock().unwrap().remove(name).is_some();
        let rec = self.registry.get(name).map_err(LifecycleError::Internal)?;
        let entry = self.modules.lock().unwrap().remove(name);
        if rec.is_none() && entry.is_none() && !failed {
            return Err(LifecycleError::NotFound(format!(
                "no module named `{name}`"
            )));
        }
        let version = entry.as_ref().map(|e| e.revision.version.clone());
        if let Some(mut p) = entry.and_then(|e| e.pipeline) {
            p.stop();
        }
        if let Some(mut rec) = rec {
            rec.current = None;
            rec.paused = false;
            self.registry
                .put(&rec)
                .map_err(|e| LifecycleError::Internal(e.to_string()))?;
        }
        if purge {
            self.store
                .forget_module(name, true)
                .map_err(|e| LifecycleError::Internal(e.to_string()))?;
        }
        tracing::info!(module = %name, purge, "undeployed");
        Ok(json!({ "module": name, "undeployed": version, "purged": purge }))
    }

    /// Move a module's cursors back (or forward) to `to` on every partition
    /// of its subscriptions. Without `reset_state`, events already applied are
    /// skipped by the idempotency set (while their marks live, see
    /// `[idempotency] ttl`), so state does not change; with it, state and
    /// idempotency set are dropped first and rebuilt from the events read
    /// again. Embedded log only.
    pub fn rewind(
        &self,
        name: &str,
        to: StartPosition,
        reset_state: bool,
    ) -> Lifecycle<Vec<RewoundPartition>> {
        if self.kafka.is_some() {
            return Err(LifecycleError::Invalid(
                "rewind works on the embedded log only for now (on Kafka the consumer group's offsets would also have to move)".into(),
            ));
        }
        let _serial = self.lifecycle.lock().unwrap();
        let manifest = {
            let modules = self.modules.lock().unwrap();
            let e = modules.get(name).ok_or_else(|| {
                LifecycleError::NotFound(format!("no module named `{name}` is deployed"))
            })?;
            e.manifest.clone()
        };
        // Plan first, so a bad target changes nothing.
        let mut plan = Vec::new();
        for s in &manifest.subscribe {
            let n = self.log.partitions(&s.topic).unwrap_or(0);
            for p in 0..n {
                let (first, end) = self.log.bounds(&s.topic, p).unwrap_or((0, 0));
                let target = match to {
                    StartPosition::Earliest => first,
                    StartPosition::Latest => end,
                    StartPosition::Offset(o) => o.clamp(first, end),
                    StartPosition::Time(ms) => self
                        .log
                        .offset_for_time(&s.topic, p, ms)
                        .map_err(|e| LifecycleError::Internal(e.to_string()))?,
                };
                let from = self
                    .store
                    .cursor(name, &s.topic, p)
                    .map_err(|e| LifecycleError::Internal(e.to_string()))?
                    .unwrap_or(first);
                plan.push(RewoundPartition {
                    topic: s.topic.clone(),
                    partition: p,
                    from,
                    to: target,
                    end,
                });
            }
        }
        if let Some(mut p) = self.take_pipeline(name)? {
            p.stop();
        }
        let res = (|| {
            if reset_state {
                self.store.forget_module(name, false)?;
            }
            let mut c = Commit::new(&self.store);
            for r in &plan {
                c.cursor(name, &r.topic, r.partition, r.to);
            }
            c.commit()
        })();
        self.restart_pipeline(name);
        res.map_err(|e| LifecycleError::Internal(e.to_string()))?;
        tracing::info!(module = %name, reset_state, partitions = plan.len(), "rewound");
        Ok(plan)
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
    fn partitions(&self, name: &str, e: &Entry) -> Vec<PartitionInfo> {
        let manifest = &e.manifest;
        if self.kafka.is_some() {
            // The partitions this host holds now, as its module thread saw them.
            let Some(p) = &e.pipeline else {
                return Vec::new();
            };
            return p
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

    /// Total lag of every running module (paused ones wait on purpose).
    pub fn lag(&self) -> u64 {
        let modules = self.modules.lock().unwrap();
        modules
            .iter()
            .filter(|(_, e)| !e.paused)
            .flat_map(|(name, e)| self.partitions(name, e))
            .map(|p| p.lag)
            .sum()
    }

    /// `(dead-letter topic, replay topic)` of a loaded module.
    pub fn dlq_topics(&self, name: &str) -> Result<(String, String), String> {
        let modules = self.modules.lock().unwrap();
        let Some(e) = modules.get(name) else {
            return Err(format!("no module named `{name}` is loaded"));
        };
        Ok((e.manifest.dlq_topic(), e.manifest.replay_topic()))
    }

    /// Whether `name` is loaded or failed to load.
    pub fn has_module(&self, name: &str) -> bool {
        self.modules.lock().unwrap().contains_key(name)
            || self.failed.lock().unwrap().contains_key(name)
    }

    fn info(&self, name: &str, e: &Entry) -> ModuleInfo {
        let status = match &e.pipeline {
            _ if e.paused => "paused".to_string(),
            Some(p) => p.status.lock().unwrap().clone(),
            None => "stopped".to_string(),
        };
        let metrics = e.metrics.snapshot();
        ModuleInfo {
            name: name.to_string(),
            version: Some(e.revision.version.clone()),
            status,
            dir: e.revision.source.clone(),
            revision: Some(e.revision.revision),
            component: Some(e.revision.component.clone()),
            partitions: self.partitions(name, e),
            state: self.store.state_size(name).ok().map(Into::into),
            last_error: e
                .deploy_error
                .clone()
                .or_else(|| metrics.last_error.clone()),
            metrics: Some(metrics),
        }
    }

    /// What is loaded (and what failed to load), with cursors and state size.
    pub fn modules(&self) -> Vec<ModuleInfo> {
        let mut out: Vec<ModuleInfo> = self
            .modules
            .lock()
            .unwrap()
            .iter()
            .map(|(name, e)| self.info(name, e))
            .collect();
        out.extend(
            self.failed
                .lock()
                .unwrap()
                .iter()
                .map(|(name, f)| failed_info(name, f)),
        );
        out
    }

    /// One module: what `modules` shows, plus its revision history.
    pub fn module(&self, name: &str) -> Lifecycle<Value> {
        let info = {
            let modules = self.modules.lock().unwrap();
            modules.get(name).map(|e| self.info(name, e))
        };
        let info = info.or_else(|| {
            let failed = self.failed.lock().unwrap();
            failed.get(name).map(|f| failed_info(name, f))
        });
        let rec = self.registry.get(name).map_err(LifecycleError::Internal)?;
        if info.is_none() && rec.is_none() {
            return Err(LifecycleError::NotFound(format!(
                "no module named `{name}`"
            )));
        }
        let history: Vec<Value> = rec
            .as_ref()
            .map(|r| {
                r.revisions
                    .iter()
                    .map(|v| {
                        json!({
                            "revision": v.revision,
                            "version": v.version,
                            "component": v.component,
                            "source": v.source,
                            "deployed_at_ms": v.deployed_at_ms,
                            "current": Some(v.revision) == r.current,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut v = match info {
            Some(i) => serde_json::to_value(i).expect("serializes"),
            None => json!({ "name": name, "status": "undeployed" }),
        };
        v["revisions"] = Value::Array(history);
        v["sandbox"] = crate::runtime::GRANTS.clone();
        Ok(v)
    }

    /// Whether the host is ready (modules loaded, sources reachable), and why not.
    pub fn readiness(&self) -> (bool, Value) {
        let loaded = self.ready.load(Ordering::SeqCst);
        let kafka = self.kafka.as_ref().map(|k| k.health.report());
        let reachable = kafka
            .as_ref()
            .is_none_or(|k| k["reachable"].as_bool().unwrap_or(true));
        let stats = self.runtime.cache_stats();
        let ready = loaded && reachable;
        let mut v = json!({
            "ready": ready,
            "modules_loaded": loaded,
            "modules": self.modules.lock().unwrap().len(),
            "failed": self.failed.lock().unwrap().len(),
            "startup_ms": loaded.then(|| self.startup_ms.load(Ordering::SeqCst)),
            "compiled_cache": stats,
        });
        if let Some(k) = kafka {
            v["kafka"] = k;
        }
        (ready, v)
    }

    /// How many components the content-addressed store holds.
    pub fn stored_components(&self) -> usize {
        self.components.count()
    }

    /// Stop intake of every module, let in-flight events commit, drain the outbox.
    pub fn shutdown(&self) {
        if let Some(mut w) = self.watcher.lock().unwrap().take() {
            w.stop();
        }
        let _serial = self.lifecycle.lock().unwrap();
        let mut modules = std::mem::take(&mut *self.modules.lock().unwrap());
        for p in modules.values().filter_map(|e| e.pipeline.as_ref()) {
            p.request_stop();
        }
        for p in modules.values_mut().filter_map(|e| e.pipeline.as_mut()) {
            p.stop();
        }
        if let Some(mut r) = self.relay.lock().unwrap().take() {
            r.stop();
        }
        self.housekeeping_stop.store(true, Ordering::SeqCst);
        let left = self.store.outbox_len().unwrap_or(0);
        if left > 0 {
            tracing::warn!(
                outputs = left,
                "outputs left in the outbox (broker unreachable?); they are published at the next start"
            );
        }
        tracing::info!("stopped");
    }
}

/// How a module that failed to load shows in the module list.
fn failed_info(name: &str, f: &Failed) -> ModuleInfo {
    ModuleInfo {
        name: name.to_string(),
        version: None,
        status: format!("failed: {}", f.error),
        dir: f.dir.clone(),
        revision: None,
        component: None,
        partitions: vec![],
        state: None,
        metrics: None,
        last_error: Some(f.error.clone()),
    }
}

/// Override every subscription's start with `start`, if given.
fn apply_start(manifest: &mut Manifest, start: Option<&str>) -> Lifecycle<()> {
    if let Some(s) = start {
        let pos: StartPosition = s
            .parse()
            .map_err(|e| LifecycleError::Invalid(format!("start: {e}")))?;
        for sub in &mut manifest.subscribe {
            sub.start = pos;
        }
    }
    Ok(())
}
