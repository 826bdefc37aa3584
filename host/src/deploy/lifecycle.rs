//! The module lifecycle: deploy, upgrade, rollback, pause, resume,
//! undeploy, rewind.
//!
//! Every way a module arrives (the API, `sluice deploy`, the watched modules
//! directory, the registry at start) goes through [`Lifecycle::deploy`] or
//! [`Lifecycle::rollback`], which validate everything before anything
//! changes and then swap the module's pipeline between two batches.
//! Operations are serialized by one lock; the modules they do not name are
//! never touched.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::modules::{LoadedModule, Modules, Slot};
use super::status::{DeployOutcome, Undeployed};
use super::{ComponentStore, ModuleRecord, Registry, Revision};
use crate::config::manifest::Ceilings;
use crate::config::{Manifest, StartPosition};
use crate::pipeline::{Context, Metrics};
use crate::runtime::{Loaded, component_hash};
use crate::source::{Topics, now_ms};
use crate::state::Store;

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

pub(crate) type Result<T> = std::result::Result<T, LifecycleError>;

pub(super) fn internal(e: impl std::fmt::Display) -> LifecycleError {
    LifecycleError::Internal(e.to_string())
}

/// A module to deploy: manifest text and component bytes.
pub struct DeployRequest {
    pub manifest: String,
    pub component: Vec<u8>,
    /// `api`, `dir <path>`.
    pub source: String,
    /// Overrides every subscription's `start` (for a module without cursors).
    pub start: Option<String>,
}

/// The modules of a host and what changes them.
pub struct Lifecycle {
    pub(crate) registry: Registry,
    components: ComponentStore,
    pub(crate) modules: Modules,
    pub(crate) cx: Context,
    pub(crate) topics: Arc<dyn Topics>,
    /// What no module's limits may go above.
    ceilings: Ceilings,
    /// Serializes deploy, rollback, pause, resume, undeploy and rewind.
    pub(super) serial: Mutex<()>,
}

impl Lifecycle {
    pub(crate) fn new(
        cx: Context,
        topics: Arc<dyn Topics>,
        components: ComponentStore,
        ceilings: Ceilings,
    ) -> Self {
        Lifecycle {
            ceilings,
            registry: Registry::new(cx.store.clone()),
            components,
            modules: Modules::new(cx.clone()),
            cx,
            topics,
            serial: Mutex::new(()),
        }
    }

    pub(super) fn store(&self) -> &Store {
        &self.cx.store
    }

    /// Start what the registry says runs. A module that fails is reported
    /// (log, `sluice modules`); the others start anyway.
    pub(crate) fn start_registered(&self) {
        let records = match self.registry.all() {
            Ok(r) => r,
            Err(e) => return tracing::error!(error = %e, "cannot read the module registry"),
        };
        for rec in records {
            let Some(rev) = rec.current().cloned() else {
                continue;
            };
            if let Err(e) = self.start_revision(&rev, rec.paused) {
                tracing::error!(module = %rec.name, revision = rev.revision, error = %e, "module not loaded");
                let failed = Slot::Failed {
                    dir: rev.source.clone(),
                    error: e.to_string(),
                };
                self.modules.put(&rec.name, failed);
            }
        }
    }

    /// The manifests of the modules loaded now (paused and quarantined ones
    /// included; failed ones have none).
    pub fn manifests(&self) -> Vec<Arc<Manifest>> {
        self.modules.with(|slots| {
            slots
                .values()
                .filter_map(|s| s.module().map(|m| m.manifest.clone()))
                .collect()
        })
    }

    /// Deploy the module in `dir` (with `module.toml`) as the modules
    /// directory would.
    pub fn deploy_dir(&self, dir: &Path) -> Result<DeployOutcome> {
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

    /// Deploy a new module, or upgrade a deployed one to new content. The
    /// manifest, the component (its imports and exports) and its topics are
    /// checked first; a refusal changes nothing. An upgrade swaps the
    /// component between two batches and keeps state, cursors and the
    /// idempotency set.
    pub fn deploy(&self, req: DeployRequest) -> Result<DeployOutcome> {
        let _serial = self.serial.lock().unwrap();
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
        let loaded_now = self
            .modules
            .get(&name, |s| s.module().is_some())
            .unwrap_or(false);
        if loaded_now
            && let Some(cur) = rec.current()
            && cur.same_content(&hash, &req.manifest)
        {
            return Ok(DeployOutcome {
                module: name,
                action: "unchanged".into(),
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
            .cx
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
    pub fn rollback(&self, name: &str, version: Option<&str>) -> Result<DeployOutcome> {
        let _serial = self.serial.lock().unwrap();
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
    ) -> Result<DeployOutcome> {
        let name = manifest.name.clone();
        manifest
            .limits
            .within(&self.ceilings)
            .map_err(|e| LifecycleError::Invalid(format!("module.toml: {e}")))?;
        self.check_dead_letter_topic(&manifest)?;
        self.check_contracts(&manifest)?;
        self.ensure_module_topics(&manifest)
            .map_err(|e| LifecycleError::Invalid(format!("module `{name}`: {e}")))?;
        let before = self
            .modules
            .get(&name, |s| {
                s.module()
                    .map(|m| (m.metrics.clone(), s.is_paused(), m.revision.version.clone()))
            })
            .flatten();
        let (metrics, paused, previous) = match before {
            Some((m, paused, version)) => (m, paused, Some(version)),
            None => (
                Arc::new(Metrics::new(self.cx.telemetry.prom(), &name)),
                false,
                None,
            ),
        };
        if let Some(Some(mut p)) = self.modules.halt(&name, paused) {
            p.stop();
        }
        let before = rec.clone();
        let revision = rec.push(rev);
        rec.paused = paused;
        let module = LoadedModule {
            revision: rec.current().expect("just pushed").clone(),
            manifest: Arc::new(manifest),
            loaded,
            metrics,
            deploy_error: None,
        };
        // Recorded before it runs: a crash from here on restarts the new
        // revision, never the old one over the new one's effects.
        if let Err(e) = self.registry.put(rec) {
            self.modules.resume(&name, false);
            return Err(LifecycleError::Internal(format!(
                "cannot record the deploy of module `{name}` (the previous revision runs on): {e}"
            )));
        }
        let slot = if paused {
            Slot::Paused(module.clone())
        } else {
            match self.modules.start(&module) {
                Ok(p) => Slot::Running(module.clone(), p),
                Err(e) => {
                    // The previous revision runs on, and is what is recorded.
                    *rec = before;
                    if let Err(e) = self.registry.put(rec) {
                        tracing::error!(module = %name, error = %e, "cannot restore the module's record after a failed start");
                    }
                    self.modules.resume(&name, false);
                    return Err(LifecycleError::Invalid(e));
                }
            }
        };
        self.cx
            .schemas
            .set_consumer(&name, module.manifest.consumes.clone());
        let version = module.revision.version.clone();
        tracing::info!(module = %name, action, version = %version, revision, previous = ?previous, "module {action}");
        self.modules.put(&name, slot);
        Ok(DeployOutcome {
            module: name,
            action: action.into(),
            version,
            revision,
            previous,
        })
    }

    /// What the module consumes must be satisfiable by registered schemas,
    /// its contracts must hold for every version it accepts, and what it
    /// produces must have a schema: else the deploy is refused, naming the
    /// type, the version and the field.
    fn check_contracts(&self, manifest: &Manifest) -> Result<()> {
        let schemas = &self.cx.schemas;
        if !schemas.governed() {
            return Ok(());
        }
        let lookup = |ty: &str| {
            schemas.get(ty).map(|t| {
                t.versions
                    .iter()
                    .map(|(v, s)| (*v, s.schema.clone()))
                    .collect()
            })
        };
        let problems = crate::schema::contract::problems(
            &manifest.name,
            &manifest.consumes,
            &manifest.produces,
            &lookup,
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(LifecycleError::Invalid(problems.join("; ")))
        }
    }

    /// A module's dead letters are its own: its dead-letter topic may not be
    /// another loaded module's (the manifest checks the rest: not its own
    /// input or output, not a replay topic).
    fn check_dead_letter_topic(&self, manifest: &Manifest) -> Result<()> {
        let dlq = manifest.dlq_topic();
        let owner = self.modules.with(|slots| {
            slots
                .iter()
                .filter(|(n, _)| **n != manifest.name)
                .find(|(_, s)| s.module().is_some_and(|m| m.manifest.dlq_topic() == dlq))
                .map(|(n, _)| n.clone())
        });
        match owner {
            Some(o) => Err(LifecycleError::Invalid(format!(
                "module.toml: dead-letter-topic: `{dlq}` is the dead-letter topic of module `{o}`; each module's dead letters need a topic of their own"
            ))),
            None => Ok(()),
        }
    }

    /// A recorded revision's manifest (with its start override) and its
    /// component from the store (compiled, or from the compiled cache).
    fn load_revision(&self, rev: &Revision) -> Result<(Manifest, Loaded)> {
        let what = format!("revision {} ({})", rev.revision, rev.source);
        let mut manifest = Manifest::parse_str(&rev.manifest, Path::new(&what))
            .map_err(LifecycleError::Internal)?;
        apply_start(&mut manifest, rev.start.as_deref())?;
        let loaded = self
            .cx
            .runtime
            .load_hashed(&rev.component, &manifest.name, || {
                self.components.read(&rev.component)
            })
            .map_err(internal)?;
        Ok((manifest, loaded))
    }

    /// Start a registry revision at host start.
    fn start_revision(&self, rev: &Revision, paused: bool) -> Result<()> {
        let (manifest, loaded) = self.load_revision(rev)?;
        self.cx
            .schemas
            .set_consumer(&manifest.name, manifest.consumes.clone());
        self.ensure_module_topics(&manifest)
            .map_err(LifecycleError::Internal)?;
        let name = manifest.name.clone();
        let module = LoadedModule {
            revision: rev.clone(),
            manifest: Arc::new(manifest),
            loaded,
            metrics: Arc::new(Metrics::new(self.cx.telemetry.prom(), &name)),
            deploy_error: None,
        };
        let slot = if paused {
            Slot::Paused(module)
        } else {
            let p = self
                .modules
                .start(&module)
                .map_err(LifecycleError::Internal)?;
            Slot::Running(module, p)
        };
        self.modules.put(&name, slot);
        Ok(())
    }

    fn record(&self, name: &str) -> Result<ModuleRecord> {
        self.registry
            .get(name)
            .map_err(LifecycleError::Internal)?
            .ok_or_else(|| LifecycleError::NotFound(format!("no module named `{name}`")))
    }

    /// Stop consuming; state, cursors and the loaded component stay. Kept
    /// across restarts. Returns whether it was running.
    pub fn pause(&self, name: &str) -> Result<bool> {
        let _serial = self.serial.lock().unwrap();
        let mut rec = self.record(name)?;
        let old = self
            .modules
            .halt(name, true)
            .ok_or_else(|| not_deployed(name))?;
        let was_running = old.is_some();
        if let Some(mut p) = old {
            p.stop();
        }
        rec.paused = true;
        self.registry.put(&rec).map_err(internal)?;
        tracing::info!(module = %name, "paused");
        Ok(was_running)
    }

    /// Bring a paused or quarantined module back: it continues from its
    /// cursors. Returns `(was paused, was quarantined)`.
    pub fn resume(&self, name: &str) -> Result<(bool, bool)> {
        let _serial = self.serial.lock().unwrap();
        let mut rec = self.record(name)?;
        let was_paused = self
            .modules
            .get(name, |s| s.module().map(|_| s.is_paused()))
            .flatten()
            .ok_or_else(|| not_deployed(name))?;
        let was_quarantined = self.store().is_quarantined(name).unwrap_or(false);
        self.store()
            .set_quarantined(name, false)
            .map_err(internal)?;
        self.modules.get(name, |s| {
            if let Slot::Running(_, p) = s {
                p.lift_quarantine();
            }
        });
        if was_paused {
            rec.paused = false;
            self.registry.put(&rec).map_err(internal)?;
            self.modules.resume(name, true);
            tracing::info!(module = %name, "resumed");
        }
        Ok((was_paused, was_quarantined))
    }

    /// Stop and unload a module. Its state, idempotency set and cursors stay
    /// (a later deploy continues from them) unless `purge`. Its revision
    /// history stays, so the modules directory does not deploy the same
    /// content again by itself.
    pub fn undeploy(&self, name: &str, purge: bool) -> Result<Undeployed> {
        let _serial = self.serial.lock().unwrap();
        let rec = self.registry.get(name).map_err(LifecycleError::Internal)?;
        let slot = self.modules.remove(name);
        self.cx.schemas.remove_consumer(name);
        if rec.is_none() && slot.is_none() {
            return Err(LifecycleError::NotFound(format!(
                "no module named `{name}`"
            )));
        }
        let version = slot
            .as_ref()
            .and_then(Slot::module)
            .map(|m| m.revision.version.clone());
        if let Some(Slot::Running(_, mut p)) = slot {
            p.stop();
        }
        if let Some(mut rec) = rec {
            rec.current = None;
            rec.paused = false;
            self.registry.put(&rec).map_err(internal)?;
        }
        if purge {
            self.store().forget_module(name, true).map_err(internal)?;
        }
        tracing::info!(module = %name, purge, "undeployed");
        Ok(Undeployed {
            module: name.to_string(),
            undeployed: version,
            purged: purge,
        })
    }

    /// Create the topics a module reads and writes (its dead-letter and
    /// replay topics included) and check that its subscriptions are
    /// co-partitioned.
    fn ensure_module_topics(&self, manifest: &Manifest) -> std::result::Result<(), String> {
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
        self.topics.ensure(&others).map_err(|e| e.to_string())?;
        let counts = self.topics.ensure(&subscribed).map_err(|e| e.to_string())?;
        if let Some(n0) = counts.first()
            && let Some(i) = counts.iter().position(|n| n != n0)
        {
            return Err(format!(
                "subscribed topics must be co-partitioned, but `{}` has {n0} partitions and `{}` has {}",
                subscribed[0].0, subscribed[i].0, counts[i]
            ));
        }
        // Replays land in the partition their original came from.
        if let Some(n) = counts.first() {
            self.topics
                .ensure(&[(manifest.replay_topic(), Some(*n))])
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Stop every module: all are asked first, then each is waited for.
    pub(crate) fn stop_all(&self) {
        let _serial = self.serial.lock().unwrap();
        let mut slots = self.modules.take_all();
        for slot in slots.values() {
            if let Slot::Running(_, p) = slot {
                p.request_stop();
            }
        }
        for slot in slots.values_mut() {
            if let Slot::Running(_, p) = slot {
                p.stop();
            }
        }
    }
}

pub(super) fn not_deployed(name: &str) -> LifecycleError {
    LifecycleError::NotFound(format!("no module named `{name}` is deployed"))
}

/// Override every subscription's start with `start`, if given.
fn apply_start(manifest: &mut Manifest, start: Option<&str>) -> Result<()> {
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
