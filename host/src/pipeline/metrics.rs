//! Per-module counters (lock-free; read by the admin API and, through the
//! sampler, by `/metrics`) and the latency histograms the pipeline records
//! into.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::Histogram;
use serde::{Deserialize, Serialize};

use super::FailureClass;
use crate::runtime::TrapKind;
use crate::telemetry::prom::Prom;

/// How many recent failures a module keeps for the dashboard.
const RECENT_FAILURES: usize = 20;

/// A monotonically increasing counter.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What one module has done since the host started.
#[derive(Debug)]
pub struct Metrics {
    pub events_in: Counter,
    pub applied: Counter,
    pub emitted: Counter,
    pub dedup_hits: Counter,
    pub filtered: Counter,
    pub retries: Counter,
    pub rejected: Counter,
    pub dead_letters: Counter,
    pub batches: Counter,
    /// Events deleted by retention before this module read them.
    pub lost_to_retention: Counter,
    /// Events without a partition key whose commit changed state.
    pub keyless_state_writes: Counter,
    /// Times the module's pipeline was started (1 + upgrades, rollbacks,
    /// resumes after a pause, rewinds).
    pub starts: Counter,
    /// Traps and limit hits, indexed like [`TrapKind::ALL`].
    traps: [Counter; TrapKind::ALL.len()],
    /// Events that failed for good, indexed like [`FailureClass::ALL`].
    failures: [Counter; FailureClass::ALL.len()],
    /// The newest dead letters' reasons, newest last.
    recent: std::sync::Mutex<VecDeque<RecentFailure>>,
    /// Time in the module per event.
    pub wasm_seconds: Histogram,
    /// Time of one batch, read to commit.
    pub batch_seconds: Histogram,
    /// Time of one batch's commit.
    pub commit_seconds: Histogram,
}

/// One dead letter, as the dashboard lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecentFailure {
    pub time_ms: u64,
    pub class: String,
    pub id: String,
    pub message: String,
}

/// A copy of [`Metrics`] for serialization.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct MetricsSnapshot {
    pub events_in: u64,
    pub applied: u64,
    pub emitted: u64,
    pub dedup_hits: u64,
    pub filtered: u64,
    pub retries: u64,
    pub rejected: u64,
    pub dead_letters: u64,
    pub batches: u64,
    #[serde(default)]
    pub lost_to_retention: u64,
    #[serde(default)]
    pub keyless_state_writes: u64,
    #[serde(default)]
    pub starts: u64,
    pub traps: std::collections::BTreeMap<String, u64>,
    /// The newest dead letter: `<class> <event id>: <reason>`.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Events that failed for good, by class.
    #[serde(default)]
    pub failures: std::collections::BTreeMap<String, u64>,
    /// The newest dead letters, newest first.
    #[serde(default)]
    pub recent_failures: Vec<RecentFailure>,
}

impl Metrics {
    /// Counters at zero; histograms of `module` in `prom`.
    pub fn new(prom: &Prom, module: &str) -> Metrics {
        let labels = [("module", module)];
        Metrics {
            events_in: Counter::default(),
            applied: Counter::default(),
            emitted: Counter::default(),
            dedup_hits: Counter::default(),
            filtered: Counter::default(),
            retries: Counter::default(),
            rejected: Counter::default(),
            dead_letters: Counter::default(),
            batches: Counter::default(),
            lost_to_retention: Counter::default(),
            keyless_state_writes: Counter::default(),
            starts: Counter::default(),
            traps: Default::default(),
            failures: Default::default(),
            recent: Default::default(),
            wasm_seconds: prom.histogram("sluice_event_wasm_seconds", &labels),
            batch_seconds: prom.histogram("sluice_batch_seconds", &labels),
            commit_seconds: prom.histogram("sluice_batch_commit_seconds", &labels),
        }
    }

    /// Counters at zero, histograms that record nothing.
    pub fn detached() -> Metrics {
        Metrics::new(&Prom::new(false), "")
    }

    /// Count a trap of `kind`.
    pub fn trap(&self, kind: TrapKind) {
        self.traps[kind as usize].add(1)
    }

    /// Count an event that failed for good (dead-lettered) and remember it
    /// for `sluice modules` and the dashboard.
    pub fn failed(&self, class: FailureClass, id: &str, reason: &str) {
        self.failures[class.index()].add(1);
        let mut recent = self.recent.lock().unwrap();
        if recent.len() == RECENT_FAILURES {
            recent.pop_front();
        }
        recent.push_back(RecentFailure {
            time_ms: crate::source::now_ms(),
            class: class.as_str().to_string(),
            id: crate::util::clip(id, 128).to_string(),
            message: crate::util::clip(reason, 500).to_string(),
        });
    }

    /// A snapshot of every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let recent = self.recent.lock().unwrap();
        let traps = TrapKind::ALL
            .iter()
            .map(|k| (k.as_str().to_string(), self.traps[*k as usize].get()))
            .collect();
        MetricsSnapshot {
            events_in: self.events_in.get(),
            applied: self.applied.get(),
            emitted: self.emitted.get(),
            dedup_hits: self.dedup_hits.get(),
            filtered: self.filtered.get(),
            retries: self.retries.get(),
            rejected: self.rejected.get(),
            dead_letters: self.dead_letters.get(),
            batches: self.batches.get(),
            lost_to_retention: self.lost_to_retention.get(),
            keyless_state_writes: self.keyless_state_writes.get(),
            starts: self.starts.get(),
            traps,
            failures: FailureClass::ALL
                .iter()
                .map(|c| (c.as_str().to_string(), self.failures[c.index()].get()))
                .collect(),
            last_error: recent
                .back()
                .map(|f| format!("{} {}: {}", f.class, f.id, f.message)),
            recent_failures: recent.iter().rev().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_trap_kind_is_counted_under_its_own_name() {
        let m = Metrics::detached();
        for (i, k) in TrapKind::ALL.iter().enumerate() {
            for _ in 0..=i {
                m.trap(*k);
            }
        }
        let s = m.snapshot();
        assert_eq!(s.traps.len(), TrapKind::ALL.len());
        for (i, k) in TrapKind::ALL.iter().enumerate() {
            assert_eq!(s.traps[k.as_str()], i as u64 + 1, "{}", k.as_str());
        }
    }

    #[test]
    fn failures_are_counted_by_class_and_the_newest_kept_first() {
        let m = Metrics::detached();
        for (i, c) in FailureClass::ALL.iter().enumerate() {
            for _ in 0..=i {
                m.failed(*c, &format!("e{i}"), "why");
            }
        }
        let s = m.snapshot();
        for (i, c) in FailureClass::ALL.iter().enumerate() {
            assert_eq!(s.failures[c.as_str()], i as u64 + 1, "{}", c.as_str());
        }
        assert_eq!(s.recent_failures.len(), RECENT_FAILURES);
        let last = FailureClass::ALL.len() - 1;
        assert_eq!(s.recent_failures[0].id, format!("e{last}"));
        assert_eq!(
            s.last_error.as_deref(),
            Some(&*format!(
                "{} e{last}: why",
                FailureClass::ALL[last].as_str()
            ))
        );
    }
}
