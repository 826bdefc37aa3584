//! The running host: config in, the store, the backends, the runtime and the
//! module lifecycle up; housekeeping; everything shut down in order.
//!
//! What changes modules is [`Lifecycle`] (`deploy/`); what the API shows is
//! `deploy/status.rs`. This file is the wiring and the order of start and
//! stop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::backends::Backends;
use crate::config::HostConfig;
use crate::deploy::ComponentStore;
use crate::deploy::lifecycle::Lifecycle;
use crate::deploy::status::{HostStatus, LagSummary, Readiness, WasmMemory};
use crate::pipeline::Context;
use crate::runtime::Runtime;
use crate::schema::Registry;
use crate::sink::Output;
use crate::source::{Source, Topics, now_ms};
use crate::state::Store;
use crate::telemetry::Telemetry;
use crate::util::StoppableThread;

/// The running host.
pub struct Service {
    config: HostConfig,
    store: Arc<Store>,
    runtime: Arc<Runtime>,
    source: Arc<dyn Source>,
    topics: Arc<dyn Topics>,
    output: Arc<dyn Output>,
    lifecycle: Arc<Lifecycle>,
    telemetry: Arc<Telemetry>,
    schemas: Arc<Registry>,
    housekeeping: Mutex<Option<StoppableThread>>,
    sampler: Mutex<Option<StoppableThread>>,
    watcher: Mutex<Option<StoppableThread>>,
    opened: Instant,
    /// Set when the modules of the registry and the modules directory are loaded.
    ready: AtomicBool,
    /// Milliseconds from opening to ready.
    startup_ms: AtomicU64,
    /// Outputs the previous run left in the outbox (0 after a clean stop).
    outbox_at_start: u64,
}

impl Service {
    /// [`Service::open`] and [`Service::load_modules`].
    pub fn start(config: HostConfig) -> anyhow::Result<Arc<Service>> {
        let svc = Service::open(config)?;
        svc.load_modules();
        Ok(svc)
    }

    /// Open the data directory, connect the backends, create configured
    /// topics, start housekeeping. No module runs yet:
    /// [`Service::load_modules`] does that.
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
        let Backends {
            source,
            topics,
            output,
        } = crate::backends::connect(&config, &store)?;
        for t in &config.topics {
            topics
                .ensure(&[(t.name.clone(), t.partitions)])
                .with_context(|| format!("topic `{}` from the host config", t.name))?;
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
        let telemetry = Arc::new(Telemetry::new(&config.telemetry)?);
        let policies = config
            .topics
            .iter()
            .filter_map(|t| Some((t.name.clone(), t.schema_policy?)))
            .collect();
        let schemas = Arc::new(
            Registry::open(
                store.clone(),
                config.schemas.dir.clone(),
                telemetry.clone(),
                config.schemas.policy,
                policies,
            )
            .context("cannot open the schema registry")?,
        );
        let cx = Context {
            store: store.clone(),
            runtime: runtime.clone(),
            source: source.clone(),
            output: output.clone(),
            batch_size: config.pipeline.batch_size,
            telemetry: telemetry.clone(),
            system: config.messaging_system(),
            group_prefix: config.kafka.as_ref().map(|k| k.group_prefix.clone()),
            schemas: schemas.clone(),
        };
        let lifecycle = Arc::new(Lifecycle::new(
            cx,
            topics.clone(),
            components,
            config.limits.clone(),
        ));
        let housekeeping = housekeeping(store.clone(), source.clone(), schemas.clone())
            .context("cannot start housekeeping")?;
        let svc = Arc::new(Service {
            config,
            store,
            runtime,
            source,
            topics,
            output,
            lifecycle,
            telemetry,
            schemas,
            housekeeping: Mutex::new(Some(housekeeping)),
            sampler: Mutex::new(None),
            watcher: Mutex::new(None),
            opened,
            ready: AtomicBool::new(false),
            startup_ms: AtomicU64::new(0),
            outbox_at_start,
        });
        let sampler = crate::telemetry::sampler::spawn(Arc::downgrade(&svc))
            .context("cannot start the telemetry sampler")?;
        *svc.sampler.lock().unwrap() = Some(sampler);
        Ok(svc)
    }

    /// Start what the registry says runs, then deploy what is new in the
    /// modules directory, then (if configured) watch that directory.
    pub fn load_modules(&self) {
        self.lifecycle.start_registered();
        if let Some(dir) = self.config.modules_dir.clone() {
            let interval = self
                .config
                .deploy
                .watch
                .then_some(self.config.deploy.watch_interval);
            *self.watcher.lock().unwrap() =
                crate::deploy::watch::load_and_watch(&self.lifecycle, dir, interval);
        }
        let ms = self.opened.elapsed().as_millis() as u64;
        self.startup_ms.store(ms, Ordering::SeqCst);
        self.ready.store(true, Ordering::SeqCst);
        let stats = self.runtime.cache_stats();
        let (modules, failed) = self.lifecycle.counts();
        tracing::info!(
            modules,
            failed,
            compiled_from_cache = stats.hits,
            compiled = stats.misses,
            startup_ms = ms,
            "ready"
        );
    }

    /// The module lifecycle: deploy, rollback, pause, ..., and module views.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// The topics of the backend the host runs on.
    pub fn topics(&self) -> &dyn Topics {
        self.topics.as_ref()
    }

    /// The host's database.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The schema registry.
    pub fn schemas(&self) -> &Registry {
        &self.schemas
    }

    /// The event catalog of what this host runs: its registered types and
    /// deployed modules, on its Kafka cluster or its embedded log.
    pub fn catalog(&self) -> crate::schema::catalog::Catalog {
        use crate::schema::catalog::{Catalog, Server};
        let servers = match &self.config.kafka {
            Some(k) => k
                .properties
                .get("bootstrap.servers")
                .map(|b| {
                    b.split(',')
                        .map(str::trim)
                        .filter(|h| !h.is_empty())
                        .enumerate()
                        .map(|(i, host)| Server {
                            name: format!("kafka-{}", i + 1),
                            host: host.into(),
                            protocol: "kafka".into(),
                            pathname: None,
                            description: "A Kafka broker of the cluster the host consumes from."
                                .into(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            None => vec![Server {
                name: "sluice".into(),
                host: self.config.api.listen.to_string(),
                protocol: "http".into(),
                pathname: Some("/v1/topics".into()),
                description: "A Sluice host's embedded log: POST /v1/topics/{topic}/events appends, GET /v1/topics/{topic}/partitions/{p}/events reads."
                    .into(),
            }],
        };
        Catalog::of_host(
            &self.config.telemetry.service_name,
            servers,
            &self.schemas,
            &self.lifecycle.manifests(),
        )
    }

    /// Metrics, lag status, history, tracer.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// What `sluice modules` shows, with what the sampler judged (lag
    /// status, age of the oldest unprocessed event, dead-letter depth).
    pub fn modules(&self) -> Vec<crate::ModuleInfo> {
        let mut modules = self.lifecycle.modules();
        for m in &mut modules {
            self.annotate(m);
        }
        modules
    }

    /// Add what the sampler judged to `m`.
    pub fn annotate(&self, m: &mut crate::ModuleInfo) {
        let Some(seen) = self.telemetry.module(&m.name) else {
            return;
        };
        m.lag_status = Some(seen.lag_status);
        m.dead_letter_depth = seen.dead_letter_depth;
        for p in &mut m.partitions {
            if let Some((status, age)) = seen.partitions.get(&(p.topic.clone(), p.partition)) {
                p.lag_status = Some(*status);
                p.lag_seconds = *age;
            }
        }
    }

    /// The WebAssembly runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The config the host runs with.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// Whether the host is ready (modules loaded, backend reachable), and why not.
    pub fn readiness(&self) -> Readiness {
        let loaded = self.ready.load(Ordering::SeqCst);
        let backend: std::collections::BTreeMap<_, _> = self.source.health().into_iter().collect();
        let reachable = backend.values().all(|h| h.reachable);
        let (modules, failed) = self.lifecycle.counts();
        Readiness {
            ready: loaded && reachable,
            modules_loaded: loaded,
            modules,
            failed,
            startup_ms: loaded.then(|| self.startup_ms.load(Ordering::SeqCst)),
            compiled_cache: self.runtime.cache_stats(),
            backend,
        }
    }

    /// Outbox backlog, lag and whether everything is processed (blocking:
    /// reads the store).
    pub fn status(&self) -> HostStatus {
        let outbox = self.store.outbox_len().unwrap_or(u64::MAX);
        let lag = self.lifecycle.lag();
        let readiness = self.readiness();
        HostStatus {
            ready: readiness.ready,
            outbox_pending: outbox,
            outbox_at_start: self.outbox_at_start,
            lag: lag.lag,
            unassigned_partitions: lag.unassigned,
            stale_partitions: lag.stale,
            idle: readiness.ready && outbox == 0 && lag == LagSummary::default(),
            wasm_memory: WasmMemory {
                used: self.runtime.memory_budget().used(),
                budget: self.config.pipeline.memory_budget,
            },
            backend: readiness.backend,
        }
    }

    /// Stop intake of every module, let in-flight events commit, drain the
    /// outbox, stop housekeeping.
    ///
    /// The modules stop first: nothing else may hold them up. The module
    /// watcher is stopped before them (it must not deploy while they stop);
    /// the sampler and housekeeping are told to stop at once but waited for
    /// only after the modules, since a sample may wait on the broker.
    pub fn shutdown(&self) {
        let started = Instant::now();
        if let Some(mut w) = self.watcher.lock().unwrap().take() {
            w.stop();
        }
        let sampler = self.sampler.lock().unwrap().take();
        let housekeeping = self.housekeeping.lock().unwrap().take();
        for t in sampler.iter().chain(&housekeeping) {
            t.request_stop();
        }
        self.lifecycle.stop_all();
        // The outbox drains for up to half of shutdown-timeout (a reachable
        // broker usually takes it in well under a second; whatever is
        // purged unacknowledged is published again at the next start, same
        // ids); the other half is for what comes after, which may wait on
        // the broker too.
        let drain = (self.config.shutdown_timeout / 2)
            .saturating_sub(started.elapsed())
            .max(Duration::from_secs(1));
        self.output.stop(drain);
        for mut t in sampler.into_iter().chain(housekeeping) {
            t.stop();
        }
        self.telemetry.tracer().shutdown();
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

/// Every five seconds: state sizes measured (for status), retention,
/// expired idempotency marks deleted, new schemas in the schema directory
/// registered.
fn housekeeping(
    store: Arc<Store>,
    source: Arc<dyn Source>,
    schemas: Arc<Registry>,
) -> std::io::Result<StoppableThread> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    StoppableThread::spawn("sluice-housekeeping".into(), stop, move || {
        let mut tick = 0u64;
        while !s.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            tick += 1;
            if tick % 25 != 1 {
                continue;
            }
            if let Err(e) = store.measure_state() {
                tracing::error!(error = %e, "measuring state failed");
            }
            if let Err(e) = source.enforce_retention() {
                tracing::error!(error = %e, "retention failed");
            }
            schemas.sync_dir();
            match store.sweep_expired(now_ms()) {
                Ok(0) => {}
                Ok(n) => tracing::debug!(removed = n, "expired idempotency marks removed"),
                Err(e) => tracing::error!(error = %e, "idempotency sweep failed"),
            }
        }
    })
}
