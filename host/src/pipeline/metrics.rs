//! Per-module counters (lock-free; read by the admin API).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::runtime::TrapKind;

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
#[derive(Default, Debug)]
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
    /// The newest dead letter's reason, with its class and event id.
    last_error: std::sync::Mutex<Option<String>>,
}

/// A copy of [`Metrics`] for serialization.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
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
}

impl Metrics {
    /// Count a trap of `kind`.
    pub fn trap(&self, kind: TrapKind) {
        self.traps[kind as usize].add(1)
    }

    /// Remember the newest failure for `sluice modules`.
    pub fn set_last_error(&self, class: &str, id: &str, reason: &str) {
        let text = format!(
            "{class} {}: {}",
            crate::util::clip(id, 128),
            crate::util::clip(reason, 500)
        );
        *self.last_error.lock().unwrap() = Some(text);
    }

    /// A snapshot of every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
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
            last_error: self.last_error.lock().unwrap().clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_trap_kind_is_counted_under_its_own_name() {
        let m = Metrics::default();
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
}
