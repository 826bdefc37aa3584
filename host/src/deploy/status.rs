//! What the API shows of the host and its modules: typed views, serialized
//! as they are, read back by the CLI.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Revision;
use super::lifecycle::{self, Lifecycle, LifecycleError};
use super::modules::{LoadedModule, Slot};
use crate::pipeline::{MetricsSnapshot, ModuleStatus};
use crate::runtime::CacheStats;
use crate::source::{Health, Holder, Progress};
use crate::state::StateSize;
use crate::telemetry::lag::LagStatus;

/// A module as `sluice modules` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModuleInfo {
    pub name: String,
    pub version: Option<String>,
    pub status: ModuleStatus,
    /// Where the running revision came from (`api`, `dir <path>`, ...).
    pub dir: String,
    /// The running revision (1, 2, ...).
    #[serde(default)]
    pub revision: Option<u32>,
    /// SHA-256 of the running component.
    #[serde(default)]
    pub component: Option<String>,
    /// Per input partition: the subscribed topics, and the replay topic's
    /// partitions that hold something.
    pub partitions: Vec<PartitionInfo>,
    pub state: Option<StateSize>,
    pub metrics: Option<MetricsSnapshot>,
    /// The newest failure: a refused upgrade (the previous revision kept
    /// running), or the newest dead letter's reason.
    #[serde(default)]
    pub last_error: Option<String>,
    /// How it keeps up: its worst partition's lag status (from the sampler).
    #[serde(default)]
    pub lag_status: Option<LagStatus>,
    /// Records in its dead-letter topic (from the sampler).
    #[serde(default)]
    pub dead_letter_depth: Option<u64>,
}

/// Cursor and lag of one partition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionInfo {
    pub topic: String,
    pub partition: u32,
    pub cursor: u64,
    pub end: u64,
    pub lag: u64,
    /// Who reads it: this host (`here`), another member of the group, nobody
    /// (`unassigned`), or not this host when the broker does not say more.
    /// (Older hosts list only the partitions they hold.)
    #[serde(default = "here")]
    pub holder: Holder,
    /// The end offset is old news (the broker has not answered lately).
    #[serde(default)]
    pub stale: bool,
    /// OK, WARN, STALL or STOP over the lag window (from the sampler).
    #[serde(default)]
    pub lag_status: Option<LagStatus>,
    /// Seconds since the oldest unprocessed event was made (0 when caught up).
    #[serde(default)]
    pub lag_seconds: Option<f64>,
}

fn here() -> Holder {
    Holder::Here
}

impl From<Progress> for PartitionInfo {
    fn from(p: Progress) -> Self {
        PartitionInfo {
            lag: p.end.saturating_sub(p.cursor),
            topic: p.topic,
            partition: p.partition,
            cursor: p.cursor,
            end: p.end,
            holder: p.holder,
            stale: p.stale,
            lag_status: None,
            lag_seconds: None,
        }
    }
}

/// Lag over every partition of the running modules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LagSummary {
    /// Events not yet processed.
    pub lag: u64,
    /// Partitions with records that nobody in their group holds.
    pub unassigned: u64,
    /// Partitions whose end offset is old news.
    pub stale: u64,
}

/// One revision in a module's history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevisionInfo {
    pub revision: u32,
    pub version: String,
    pub component: String,
    pub source: String,
    pub deployed_at_ms: u64,
    pub current: bool,
}

impl RevisionInfo {
    /// `rev` of a module whose current revision is `current`.
    pub fn of(rev: &Revision, current: Option<u32>) -> RevisionInfo {
        RevisionInfo {
            revision: rev.revision,
            version: rev.version.clone(),
            component: rev.component.clone(),
            source: rev.source.clone(),
            deployed_at_ms: rev.deployed_at_ms,
            current: Some(rev.revision) == current,
        }
    }
}

/// One module in detail: what `sluice modules` shows (or just its name and
/// status once undeployed), its revisions, and what its sandbox grants.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleDetail {
    #[serde(flatten)]
    pub info: DetailInfo,
    pub revisions: Vec<RevisionInfo>,
    pub sandbox: serde_json::Value,
}

/// The part of [`ModuleDetail`] that depends on whether it is deployed.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum DetailInfo {
    Deployed(Box<ModuleInfo>),
    Undeployed { name: String, status: ModuleStatus },
}

/// What a deploy or rollback did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployOutcome {
    pub module: String,
    /// `deployed`, `upgraded`, `rolled-back`, `unchanged`.
    pub action: String,
    pub version: String,
    pub revision: u32,
    /// The version that ran before, if any.
    pub previous: Option<String>,
}

/// What an undeploy did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Undeployed {
    pub module: String,
    /// The version that ran, if one was loaded.
    pub undeployed: Option<String>,
    pub purged: bool,
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

/// Whether the host is ready, and why not.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub modules_loaded: bool,
    pub modules: usize,
    pub failed: usize,
    pub startup_ms: Option<u64>,
    pub compiled_cache: CacheStats,
    /// The backend's health by its name (`kafka`), if it is not in-process.
    #[serde(flatten)]
    pub backend: BTreeMap<&'static str, Health>,
}

/// `GET /v1/status`: is everything processed and published?
#[derive(Debug, Clone, Serialize)]
pub struct HostStatus {
    pub ready: bool,
    /// Outputs committed, not yet published.
    pub outbox_pending: u64,
    /// Outputs the previous run left in the outbox (0 after a clean stop).
    pub outbox_at_start: u64,
    /// Events not yet processed by running modules, over every partition
    /// they read (on Kafka: held by this host or not).
    pub lag: u64,
    /// Partitions with records that nobody reads.
    pub unassigned_partitions: u64,
    /// Partitions whose end offset is old news.
    pub stale_partitions: u64,
    /// Ready, nothing pending, no lag, no partition unassigned or stale.
    pub idle: bool,
    pub wasm_memory: WasmMemory,
    #[serde(flatten)]
    pub backend: BTreeMap<&'static str, Health>,
}

/// Linear memory of all module instances against the host's budget.
#[derive(Debug, Clone, Serialize)]
pub struct WasmMemory {
    pub used: usize,
    pub budget: u64,
}

impl Lifecycle {
    /// Cursor, end and lag of every partition `m` reads (its replay topic's
    /// included).
    fn progress(&self, m: &LoadedModule) -> Vec<PartitionInfo> {
        let topics: Vec<String> = m
            .manifest
            .subscribe
            .iter()
            .map(|s| s.topic.clone())
            .chain([m.manifest.replay_topic()])
            .collect();
        self.cx
            .source
            .progress(&m.manifest.name, &topics)
            .into_iter()
            .map(PartitionInfo::from)
            .collect()
    }

    fn info(&self, name: &str, slot: &Slot) -> ModuleInfo {
        let Some(m) = slot.module() else {
            let Slot::Failed { dir, error } = slot else {
                unreachable!("a slot without a module failed to load")
            };
            return ModuleInfo {
                name: name.to_string(),
                version: None,
                status: slot.status(),
                dir: dir.clone(),
                revision: None,
                component: None,
                partitions: vec![],
                state: None,
                metrics: None,
                last_error: Some(error.clone()),
                lag_status: None,
                dead_letter_depth: None,
            };
        };
        let replay = m.manifest.replay_topic();
        let metrics = m.metrics.snapshot();
        let mut partitions = self.progress(m);
        // The replay topic is internal: shown once something was replayed.
        partitions.retain(|p| p.topic != replay || p.end > 0);
        ModuleInfo {
            name: name.to_string(),
            version: Some(m.revision.version.clone()),
            status: slot.status(),
            dir: m.revision.source.clone(),
            revision: Some(m.revision.revision),
            component: Some(m.revision.component.clone()),
            partitions,
            state: self.cx.store.measured_state_size(name),
            last_error: m
                .deploy_error
                .clone()
                .or_else(|| metrics.last_error.clone()),
            metrics: Some(metrics),
            lag_status: None,
            dead_letter_depth: None,
        }
    }

    /// What is loaded (and what failed to load), with cursors and state size.
    pub fn modules(&self) -> Vec<ModuleInfo> {
        self.modules.with(|slots| {
            slots
                .iter()
                .map(|(name, slot)| self.info(name, slot))
                .collect()
        })
    }

    /// One module: what `modules` shows, plus its revision history.
    pub fn module(&self, name: &str) -> lifecycle::Result<ModuleDetail> {
        let info = self.modules.get(name, |slot| self.info(name, slot));
        let rec = self.registry.get(name).map_err(LifecycleError::Internal)?;
        if info.is_none() && rec.is_none() {
            return Err(LifecycleError::NotFound(format!(
                "no module named `{name}`"
            )));
        }
        let revisions = rec
            .as_ref()
            .map(|r| {
                r.revisions
                    .iter()
                    .map(|v| RevisionInfo::of(v, r.current))
                    .collect()
            })
            .unwrap_or_default();
        Ok(ModuleDetail {
            info: match info {
                Some(i) => DetailInfo::Deployed(Box::new(i)),
                None => DetailInfo::Undeployed {
                    name: name.to_string(),
                    status: ModuleStatus::Undeployed,
                },
            },
            revisions,
            sandbox: crate::runtime::Sandbox::DENY_ALL.report(),
        })
    }

    /// Lag of every loaded module but the paused ones (they wait on
    /// purpose), over every partition they read, held here or not.
    pub fn lag(&self) -> LagSummary {
        self.modules.with(|slots| {
            slots
                .values()
                .filter(|s| !s.is_paused())
                .filter_map(Slot::module)
                .flat_map(|m| self.progress(m))
                .fold(LagSummary::default(), |mut sum, p| {
                    sum.lag += p.lag;
                    sum.unassigned += u64::from(p.holder == Holder::Unassigned && p.end > 0);
                    sum.stale += u64::from(p.stale);
                    sum
                })
        })
    }

    /// `(dead-letter topic, replay topic)` of a loaded module.
    pub fn dlq_topics(&self, name: &str) -> Result<(String, String), String> {
        self.modules
            .get(name, |s| {
                s.module()
                    .map(|m| (m.manifest.dlq_topic(), m.manifest.replay_topic()))
            })
            .flatten()
            .ok_or_else(|| format!("no module named `{name}` is loaded"))
    }

    /// Whether `name` is loaded or failed to load.
    pub fn has_module(&self, name: &str) -> bool {
        self.modules.get(name, |_| ()).is_some()
    }

    /// How many modules are loaded, and how many failed to load.
    pub fn counts(&self) -> (usize, usize) {
        self.modules.with(|slots| {
            let loaded = slots.values().filter(|s| s.module().is_some()).count();
            (loaded, slots.len() - loaded)
        })
    }
}
