//! The modules a host has: one [`Slot`] per name, running, paused, stopped
//! or failed to load, and the one place a module's pipeline is started.
//!
//! The slots' lock is held only to look or swap: stopping a pipeline (which
//! waits for its current batch) happens after its slot was changed, outside
//! the lock, so status requests never wait for a module.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::Revision;
use crate::config::Manifest;
use crate::pipeline::{Context, Metrics, ModuleStatus, Pipeline};
use crate::runtime::Loaded;

/// A module whose component is loaded.
#[derive(Clone)]
pub(crate) struct LoadedModule {
    pub(crate) revision: Revision,
    pub(crate) manifest: Arc<Manifest>,
    pub(crate) loaded: Loaded,
    /// Counters, kept across upgrades, pauses and restarts of the pipeline.
    pub(crate) metrics: Arc<Metrics>,
    /// Why the newest deploy of this module was refused, or why its
    /// pipeline could not start.
    pub(crate) deploy_error: Option<String>,
}

/// What one module name holds.
pub(crate) enum Slot {
    /// Consuming.
    Running(LoadedModule, Pipeline),
    /// Stopped by an operator (kept across restarts).
    Paused(LoadedModule),
    /// Loaded, not consuming: between a stop and a start, or its pipeline
    /// could not start (see `deploy_error`).
    Stopped(LoadedModule),
    /// Could not be loaded (from `dir`).
    Failed { dir: String, error: String },
}

impl Slot {
    /// The loaded module, unless it failed to load.
    pub(crate) fn module(&self) -> Option<&LoadedModule> {
        match self {
            Slot::Running(m, _) | Slot::Paused(m) | Slot::Stopped(m) => Some(m),
            Slot::Failed { .. } => None,
        }
    }

    fn module_mut(&mut self) -> Option<&mut LoadedModule> {
        match self {
            Slot::Running(m, _) | Slot::Paused(m) | Slot::Stopped(m) => Some(m),
            Slot::Failed { .. } => None,
        }
    }

    /// What it is doing.
    pub(crate) fn status(&self) -> ModuleStatus {
        match self {
            Slot::Running(_, p) => p.status(),
            Slot::Paused(_) => ModuleStatus::Paused,
            Slot::Stopped(_) => ModuleStatus::Stopped,
            Slot::Failed { error, .. } => ModuleStatus::Failed(error.clone()),
        }
    }

    pub(crate) fn is_paused(&self) -> bool {
        matches!(self, Slot::Paused(_))
    }
}

/// Every module of the host, by name.
pub(crate) struct Modules {
    slots: Mutex<BTreeMap<String, Slot>>,
    cx: Context,
}

impl Modules {
    pub(crate) fn new(cx: Context) -> Modules {
        Modules {
            slots: Mutex::new(BTreeMap::new()),
            cx,
        }
    }

    /// Start `module`'s pipeline: the one place pipelines start.
    pub(crate) fn start(&self, module: &LoadedModule) -> Result<Pipeline, String> {
        Pipeline::start(
            self.cx.clone(),
            module.manifest.clone(),
            module.loaded.clone(),
            module.metrics.clone(),
        )
    }

    /// Look at every slot (briefly: the lock is held while `f` runs).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&BTreeMap<String, Slot>) -> R) -> R {
        f(&self.slots.lock().unwrap())
    }

    /// Look at one module's slot.
    pub(crate) fn get<R>(&self, name: &str, f: impl FnOnce(&Slot) -> R) -> Option<R> {
        self.slots.lock().unwrap().get(name).map(f)
    }

    /// Put `slot` under `name`, returning what was there.
    pub(crate) fn put(&self, name: &str, slot: Slot) -> Option<Slot> {
        self.slots.lock().unwrap().insert(name.to_string(), slot)
    }

    /// Take `name`'s slot out.
    pub(crate) fn remove(&self, name: &str) -> Option<Slot> {
        self.slots.lock().unwrap().remove(name)
    }

    /// Forget the failed slots of modules loaded from `dir`.
    pub(crate) fn forget_failed_from(&self, dir: &str) {
        self.slots
            .lock()
            .unwrap()
            .retain(|_, s| !matches!(s, Slot::Failed { dir: d, .. } if d == dir));
    }

    /// Note why a deploy of a loaded module was refused. False if `name` is
    /// not loaded.
    pub(crate) fn note_error(&self, name: &str, error: &str) -> bool {
        match self
            .slots
            .lock()
            .unwrap()
            .get_mut(name)
            .and_then(Slot::module_mut)
        {
            Some(m) => {
                m.deploy_error = Some(error.to_string());
                true
            }
            None => false,
        }
    }

    /// Stop consuming: a running module's pipeline is handed back (stop it
    /// outside the lock) and its slot becomes `Paused` (if `pause`) or
    /// `Stopped`. `None` if `name` is not loaded.
    pub(crate) fn halt(&self, name: &str, pause: bool) -> Option<Option<Pipeline>> {
        let mut slots = self.slots.lock().unwrap();
        let slot = slots.remove(name)?;
        let (module, pipeline, was_paused) = match slot {
            Slot::Running(m, p) => (m, Some(p), false),
            Slot::Paused(m) => (m, None, true),
            Slot::Stopped(m) => (m, None, false),
            failed @ Slot::Failed { .. } => {
                slots.insert(name.to_string(), failed);
                return None;
            }
        };
        let next = if pause || was_paused {
            Slot::Paused(module)
        } else {
            Slot::Stopped(module)
        };
        slots.insert(name.to_string(), next);
        Some(pipeline)
    }

    /// Start the pipeline of a loaded module that is not running (`Stopped`,
    /// or `Paused` with `unpause`). An error is kept on the module.
    pub(crate) fn resume(&self, name: &str, unpause: bool) {
        let mut slots = self.slots.lock().unwrap();
        let Some(slot) = slots.remove(name) else {
            return;
        };
        let module = match slot {
            Slot::Stopped(m) => m,
            Slot::Paused(m) if unpause => m,
            other => {
                slots.insert(name.to_string(), other);
                return;
            }
        };
        let next = match self.start(&module) {
            Ok(p) => Slot::Running(module, p),
            Err(e) => {
                tracing::error!(module = %name, error = %e, "cannot start the module");
                let mut module = module;
                module.deploy_error = Some(e);
                Slot::Stopped(module)
            }
        };
        slots.insert(name.to_string(), next);
    }

    /// Take every slot out (at shutdown).
    pub(crate) fn take_all(&self) -> BTreeMap<String, Slot> {
        std::mem::take(&mut *self.slots.lock().unwrap())
    }
}
