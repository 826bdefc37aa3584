//! The Prometheus side: one recorder per host (not the process-global one,
//! so two hosts in one test process keep their numbers apart), every metric
//! described once, rendered as Prometheus text by `metrics-exporter-prometheus`.
//!
//! The hot path records into handles it got at start (histograms); counters
//! and gauges are set from the modules' own atomics by the sampler, so a
//! scrape only renders: no lock of the host's, no read of the store.

use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use metrics_util::MetricKindMask;

static META: Metadata<'static> = Metadata::new("sluice", metrics::Level::INFO, None);

/// Histogram buckets in seconds: 100 µs to 10 s.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// A series nobody touched for this long is dropped (an undeployed module's).
/// The sampler touches every live one each second.
const IDLE: Duration = Duration::from_secs(60);

/// Counters: name, help.
pub const COUNTERS: &[(&str, &str)] = &[
    (
        "sluice_events_in_total",
        "Events read from the module's input topics.",
    ),
    (
        "sluice_events_applied_total",
        "Events whose effects the module committed.",
    ),
    (
        "sluice_events_emitted_total",
        "Events the module emitted to its output topics.",
    ),
    (
        "sluice_events_filtered_total",
        "Events skipped by the subscription's type filter.",
    ),
    (
        "sluice_dedup_hits_total",
        "Events skipped because the module had already applied them.",
    ),
    (
        "sluice_retries_total",
        "Attempts repeated after a retryable failure or trap.",
    ),
    (
        "sluice_dead_letters_total",
        "Events written to the module's dead-letter topic.",
    ),
    (
        "sluice_failures_total",
        "Events that failed for good, by failure class (each is dead-lettered).",
    ),
    (
        "sluice_traps_total",
        "Traps and limit hits of the module's instances, by kind (retried ones included).",
    ),
    ("sluice_batches_total", "Batches handed to the module."),
    (
        "sluice_lost_to_retention_total",
        "Events deleted by retention before the module read them.",
    ),
    (
        "sluice_keyless_state_writes_total",
        "Events without a partition key whose commit changed state.",
    ),
    (
        "sluice_module_starts_total",
        "Times the module's pipeline started (deploys, upgrades, resumes, rewinds).",
    ),
    (
        "sluice_ingest_requests_total",
        "HTTP ingest requests, by response status code.",
    ),
    (
        "sluice_ingest_events_total",
        "Events accepted by HTTP ingest, by topic.",
    ),
    (
        "sluice_schema_failures_total",
        "Events that failed their type's schema, by type, version and stage (ingest, input, output).",
    ),
];

/// Gauges: name, help.
pub const GAUGES: &[(&str, &str)] = &[
    (
        "sluice_lag_events",
        "Events in the partition the module has not processed yet.",
    ),
    (
        "sluice_lag_seconds",
        "Age of the oldest event the module has not processed yet (0 when caught up).",
    ),
    (
        "sluice_lag_status",
        "1 for the partition's lag status (OK, WARN, STALL, STOP), 0 for the others.",
    ),
    (
        "sluice_module_lag_status",
        "1 for the module's lag status (its worst partition's), 0 for the others.",
    ),
    (
        "sluice_module_status",
        "1 for the module's status (running, paused, quarantined, stopped, failed), 0 for the others.",
    ),
    (
        "sluice_module_info",
        "The module's running version and revision (always 1).",
    ),
    (
        "sluice_dead_letter_depth",
        "Records in the module's dead-letter topic now.",
    ),
    (
        "sluice_state_keys",
        "Keys in the module's state (measured every few seconds).",
    ),
    (
        "sluice_state_bytes",
        "Bytes of keys and values in the module's state (measured every few seconds).",
    ),
    (
        "sluice_outbox_pending",
        "Outputs committed and not yet published.",
    ),
    (
        "sluice_kafka_up",
        "1 while the Kafka brokers answer, 0 when they do not (hosts on Kafka only).",
    ),
    (
        "sluice_ready",
        "1 when the host is ready (modules loaded, backend reachable).",
    ),
    (
        "sluice_wasm_memory_bytes",
        "Linear memory of all module instances.",
    ),
    (
        "sluice_wasm_memory_budget_bytes",
        "The host's budget for linear memory of all module instances.",
    ),
    ("sluice_build_info", "The host's version (always 1)."),
];

/// Histograms: name, help.
pub const HISTOGRAMS: &[(&str, &str)] = &[
    (
        "sluice_event_wasm_seconds",
        "Time in the module per event (a batch's call divided over its events).",
    ),
    (
        "sluice_batch_seconds",
        "Time of one batch, from read to commit.",
    ),
    (
        "sluice_batch_commit_seconds",
        "Time of one batch's RocksDB commit.",
    ),
];

/// The host's metrics registry and its Prometheus rendering.
pub struct Prom {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    enabled: bool,
}

impl Prom {
    /// A registry; with `enabled` false every handle is a no-op and
    /// [`render`](Prom::render) answers `None`.
    pub fn new(enabled: bool) -> Prom {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .expect("the bucket list is not empty")
            .idle_timeout(MetricKindMask::COUNTER | MetricKindMask::GAUGE, Some(IDLE))
            .build_recorder();
        for &(name, help) in COUNTERS {
            recorder.describe_counter(
                KeyName::from_const_str(name),
                None,
                SharedString::const_str(help),
            );
        }
        for &(name, help) in GAUGES {
            recorder.describe_gauge(
                KeyName::from_const_str(name),
                None,
                SharedString::const_str(help),
            );
        }
        for &(name, help) in HISTOGRAMS {
            recorder.describe_histogram(
                KeyName::from_const_str(name),
                Some(Unit::Seconds),
                SharedString::const_str(help),
            );
        }
        let handle = recorder.handle();
        Prom {
            recorder,
            handle,
            enabled,
        }
    }

    /// Whether metrics are kept.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The counter `name` with `labels`.
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        if !self.enabled {
            return Counter::noop();
        }
        self.recorder.register_counter(&key(name, labels), &META)
    }

    /// The gauge `name` with `labels`.
    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        if !self.enabled {
            return Gauge::noop();
        }
        self.recorder.register_gauge(&key(name, labels), &META)
    }

    /// The histogram `name` with `labels`.
    pub fn histogram(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
        if !self.enabled {
            return Histogram::noop();
        }
        self.recorder.register_histogram(&key(name, labels), &META)
    }

    /// Fold recorded histogram samples in (bounds their memory when nobody scrapes).
    pub fn upkeep(&self) {
        if self.enabled {
            self.handle.run_upkeep();
        }
    }

    /// Everything, as Prometheus text (`None` when metrics are off).
    pub fn render(&self) -> Option<String> {
        self.enabled.then(|| self.handle.render())
    }
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(*k, v.to_string()))
        .collect();
    Key::from_parts(name, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_with_help_and_labels() {
        let p = Prom::new(true);
        p.counter("sluice_events_in_total", &[("module", "a\"b")])
            .absolute(7);
        p.histogram("sluice_batch_seconds", &[("module", "m")])
            .record(0.003);
        let text = p.render().unwrap();
        assert!(
            text.contains("# HELP sluice_events_in_total Events read"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE sluice_events_in_total counter"),
            "{text}"
        );
        assert!(
            text.contains(r#"sluice_events_in_total{module="a\"b"} 7"#),
            "{text}"
        );
        assert!(
            text.contains(r#"sluice_batch_seconds_bucket{module="m",le="0.0025"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"sluice_batch_seconds_bucket{module="m",le="0.005"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn a_counter_set_to_a_smaller_value_stays_monotonic() {
        let p = Prom::new(true);
        let c = p.counter("sluice_retries_total", &[("module", "m")]);
        c.absolute(5);
        c.absolute(3);
        assert!(
            p.render()
                .unwrap()
                .contains(r#"sluice_retries_total{module="m"} 5"#)
        );
    }

    #[test]
    fn disabled_metrics_render_nothing() {
        let p = Prom::new(false);
        p.counter("sluice_events_in_total", &[("module", "m")])
            .increment(1);
        assert_eq!(p.render(), None);
    }
}
