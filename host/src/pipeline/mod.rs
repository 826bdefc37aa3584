//! One running module: read its partitions in order, skip what it has already
//! applied, call it, commit, retry, dead-letter.
//!
//! Per partition, a read of up to `batch-size` events becomes one
//! `handle-batch` call and one RocksDB `WriteBatch` holding every successful
//! event's state writes, idempotency mark and outputs plus the new cursor. When
//! event `f` of a batch fails, the events before it are committed, `f` is
//! retried alone (its batch attempt counts as attempt 1), and the rest are read
//! again. A trap discards the instance and the whole batch's effects; the
//! events are then run one at a time so the culprit is found.
//!
//! Each pipeline runs on its own OS thread, never on the async reactor. The
//! steps, one file each:
//!
//! | file | step |
//! |---|---|
//! | `worker.rs` | the loop: poll the input, one pass over the partitions, wait |
//! | `read.rs` | decode a read, restore replayed events, filter by type, look up the idempotency set |
//! | `attempt.rs` | call the module (a batch, or one event), retry with backoff, classify failures |
//! | `advance.rs` | commit effects and move the cursor (the one path), dead letters, quarantine |
//! | `metrics.rs` | per-module counters |

mod advance;
mod attempt;
mod metrics;
mod read;
mod worker;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use crate::config::Manifest;
use crate::runtime::{Loaded, Runtime, TrapKind};
use crate::sink::Output;
use crate::source::Source;
use crate::state::Store;
use crate::util::{Flag, StoppableThread};

pub use metrics::{Metrics, MetricsSnapshot};

/// Everything a pipeline needs from its host.
#[derive(Clone)]
pub struct Context {
    pub store: Arc<Store>,
    pub runtime: Arc<Runtime>,
    /// Where the module's input comes from.
    pub source: Arc<dyn Source>,
    /// How its commits and outputs leave.
    pub output: Arc<dyn Output>,
    pub batch_size: usize,
    /// Metrics registry and tracer.
    pub telemetry: Arc<crate::telemetry::Telemetry>,
    /// What spans call the backend: `kafka`, or `sluice` for the embedded log.
    pub system: &'static str,
    /// On Kafka, module `m` consumes in group `<group_prefix><m>`.
    pub group_prefix: Option<String>,
    /// Event schemas: inputs and outputs are validated against them.
    pub schemas: Arc<crate::schema::Registry>,
}

/// What a module is doing, as `sluice modules` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleStatus {
    Running,
    /// Stopped by an operator until resumed.
    Paused,
    /// Stopped by too many failures in a row until resumed.
    Quarantined,
    /// Its pipeline ended (the host is stopping).
    Stopped,
    /// It could not be loaded or its pipeline failed: why.
    Failed(String),
    /// Known to the registry, not deployed now.
    Undeployed,
}

impl ModuleStatus {
    /// The status without its reason: `running`, `failed`, ...
    pub fn name(&self) -> &'static str {
        match self {
            ModuleStatus::Running => "running",
            ModuleStatus::Paused => "paused",
            ModuleStatus::Quarantined => "quarantined",
            ModuleStatus::Stopped => "stopped",
            ModuleStatus::Failed(_) => "failed",
            ModuleStatus::Undeployed => "undeployed",
        }
    }
}

impl std::fmt::Display for ModuleStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModuleStatus::Failed(why) => write!(f, "failed: {why}"),
            simple => f.write_str(simple.name()),
        }
    }
}

impl std::str::FromStr for ModuleStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "running" => ModuleStatus::Running,
            "paused" => ModuleStatus::Paused,
            "quarantined" => ModuleStatus::Quarantined,
            "stopped" => ModuleStatus::Stopped,
            "undeployed" => ModuleStatus::Undeployed,
            _ => match s.strip_prefix("failed: ") {
                Some(why) => ModuleStatus::Failed(why.to_string()),
                None => return Err(format!("unknown module status `{s}`")),
            },
        })
    }
}

impl serde::Serialize for ModuleStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ModuleStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl PartialEq<&str> for ModuleStatus {
    fn eq(&self, other: &&str) -> bool {
        match self {
            ModuleStatus::Failed(why) => other.strip_prefix("failed: ").is_some_and(|w| w == why),
            simple => simple.name() == *other,
        }
    }
}

/// Why an event failed, as dead letters and metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The module rejected it.
    Reject,
    /// The module asked for retries until `max-attempts` ran out.
    Retry,
    /// A trap or a limit.
    Trap(TrapKind),
    /// The record is not an event.
    Undecodable,
    /// The event, or an event the module emitted for it, fails its type's schema.
    Schema,
}

impl FailureClass {
    /// Every class: the module's own verdicts, undecodable input, then each trap kind.
    pub const ALL: [FailureClass; 4 + TrapKind::ALL.len()] = {
        let mut all = [FailureClass::Reject; 4 + TrapKind::ALL.len()];
        all[1] = FailureClass::Retry;
        all[2] = FailureClass::Undecodable;
        all[3] = FailureClass::Schema;
        let mut i = 0;
        while i < TrapKind::ALL.len() {
            all[4 + i] = FailureClass::Trap(TrapKind::ALL[i]);
            i += 1;
        }
        all
    };

    /// Where the class is in [`FailureClass::ALL`].
    pub fn index(self) -> usize {
        match self {
            FailureClass::Reject => 0,
            FailureClass::Retry => 1,
            FailureClass::Undecodable => 2,
            FailureClass::Schema => 3,
            FailureClass::Trap(kind) => 4 + kind as usize,
        }
    }

    /// The name in `sluice.dlq.class` headers.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Reject => "reject",
            FailureClass::Retry => "retry",
            FailureClass::Trap(kind) => kind.as_str(),
            FailureClass::Undecodable => "undecodable",
            FailureClass::Schema => "schema",
        }
    }
}

/// A module's running pipeline, seen from the host.
pub struct Pipeline {
    /// Running, quarantined, stopped or failed.
    status: Arc<Mutex<ModuleStatus>>,
    /// Set while the module is quarantined.
    quarantine: Arc<Flag>,
    thread: StoppableThread,
}

impl Pipeline {
    /// Start `manifest`'s module on its own thread, counting into `metrics`
    /// (kept by the caller across upgrades and pauses).
    pub fn start(
        cx: Context,
        manifest: Arc<Manifest>,
        loaded: Loaded,
        metrics: Arc<Metrics>,
    ) -> Result<Pipeline, String> {
        metrics.starts.add(1);
        let status = Arc::new(Mutex::new(ModuleStatus::Running));
        let stop = Arc::new(AtomicBool::new(false));
        let quarantine = Arc::new(Flag::default());
        let controls = worker::Controls {
            metrics,
            stop: stop.clone(),
            status: status.clone(),
            quarantine: quarantine.clone(),
        };
        let mut worker = worker::Worker::new(cx, manifest.clone(), loaded, controls)
            .map_err(|e| format!("module {}: {e:#}", manifest.name))?;
        let st = status.clone();
        let name = manifest.name.clone();
        let thread = StoppableThread::spawn(format!("module-{name}"), stop, move || {
            let end = match worker.run() {
                Ok(()) => ModuleStatus::Stopped,
                Err(e) => {
                    tracing::error!(module = %name, error = %e, "module stopped");
                    ModuleStatus::Failed(e.to_string())
                }
            };
            *st.lock().unwrap() = end;
        })
        .map_err(|e| format!("cannot start a thread for module {}: {e}", manifest.name))?;
        Ok(Pipeline {
            status,
            quarantine,
            thread,
        })
    }

    /// What the module is doing now.
    pub fn status(&self) -> ModuleStatus {
        self.status.lock().unwrap().clone()
    }

    /// End a quarantine: the module reads on from its cursors.
    pub fn lift_quarantine(&self) {
        self.quarantine.set(false);
    }

    /// Ask the module to stop after its current batch, without waiting.
    pub fn request_stop(&self) {
        self.thread.request_stop();
    }

    /// Ask the module to stop after its current batch and wait for it.
    pub fn stop(&mut self) {
        self.thread.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_back_as_they_are_shown() {
        for s in [
            ModuleStatus::Running,
            ModuleStatus::Paused,
            ModuleStatus::Quarantined,
            ModuleStatus::Stopped,
            ModuleStatus::Undeployed,
            ModuleStatus::Failed("no: really".into()),
        ] {
            let text = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<ModuleStatus>(&text).unwrap(), s);
        }
        assert_eq!(ModuleStatus::Failed("x".into()).to_string(), "failed: x");
        assert!(ModuleStatus::Paused == "paused");
        assert!(ModuleStatus::Failed("x".into()) == "failed: x");
        assert!(ModuleStatus::Failed("x".into()) != "failed: y");
        assert!("nope".parse::<ModuleStatus>().is_err());
    }
}
