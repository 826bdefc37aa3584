//! What the host tells its operators: logs (`tracing` to stderr), Prometheus
//! metrics ([`prom`]), lag status judged over a window ([`lag`]), the
//! sampler that feeds both and the dashboard's history ([`sampler`]), and
//! OpenTelemetry spans per event ([`trace`]).

pub mod lag;
pub mod prom;
pub mod sampler;
pub mod trace;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, RwLock};

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

use crate::config::host::TelemetryConfig;
use lag::LagStatus;

/// Install the global subscriber. Safe to call twice (the second is ignored).
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,wasmtime=warn,cranelift=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// How many history points a module keeps (one a second: ten minutes).
pub const HISTORY: usize = 600;

/// The host's telemetry: the metrics registry, what the sampler last saw,
/// the tracer.
pub struct Telemetry {
    prom: prom::Prom,
    tracer: trace::Tracer,
    /// Samples in the lag window.
    window: usize,
    seen: RwLock<Seen>,
    /// Counters of things that happen now and then (HTTP ingest, schema
    /// failures), touched by the sampler so an idle one is kept.
    counted: Mutex<BTreeMap<(&'static str, Vec<String>), metrics::Counter>>,
}

/// What the sampler saw last, per module.
#[derive(Debug, Default)]
pub struct Seen {
    pub modules: BTreeMap<String, ModuleSeen>,
}

/// One module, as the sampler saw it.
#[derive(Debug, Default, Clone)]
pub struct ModuleSeen {
    pub lag_status: LagStatus,
    /// Per `(topic, partition)`: lag status and age of the oldest unprocessed event.
    pub partitions: BTreeMap<(String, u32), (LagStatus, Option<f64>)>,
    pub dead_letter_depth: Option<u64>,
    pub history: VecDeque<Point>,
}

/// One second of a module's history.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Point {
    pub t_ms: u64,
    pub events_in: u64,
    pub applied: u64,
    pub dead_letters: u64,
    pub lag: u64,
    pub dead_letter_depth: u64,
}

/// `GET /v1/history`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct History {
    pub interval_ms: u64,
    pub modules: Vec<ModuleHistory>,
}

/// One module's points, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModuleHistory {
    pub name: String,
    pub points: Vec<Point>,
}

impl Telemetry {
    /// Telemetry as `[telemetry]` says (the exporter of spans included).
    pub fn new(config: &TelemetryConfig) -> anyhow::Result<Telemetry> {
        let window =
            (config.lag_window.as_millis() / sampler::INTERVAL.as_millis()).max(2) as usize;
        Ok(Telemetry {
            prom: prom::Prom::new(config.metrics),
            tracer: trace::Tracer::new(config)?,
            window,
            seen: RwLock::default(),
            counted: Mutex::default(),
        })
    }

    /// Telemetry that records nothing and exports nothing (tests, tools).
    pub fn off() -> Telemetry {
        Telemetry {
            prom: prom::Prom::new(false),
            tracer: trace::Tracer::off(),
            window: 10,
            seen: RwLock::default(),
            counted: Mutex::default(),
        }
    }

    /// The metrics registry.
    pub fn prom(&self) -> &prom::Prom {
        &self.prom
    }

    /// The tracer of per-event spans.
    pub fn tracer(&self) -> &trace::Tracer {
        &self.tracer
    }

    /// One module as the sampler last saw it.
    pub fn module(&self, name: &str) -> Option<ModuleSeen> {
        let seen = self.seen.read().unwrap();
        seen.modules.get(name).map(|m| ModuleSeen {
            history: VecDeque::new(),
            ..m.clone()
        })
    }

    /// Every module's history.
    pub fn history(&self) -> History {
        let seen = self.seen.read().unwrap();
        History {
            interval_ms: sampler::INTERVAL.as_millis() as u64,
            modules: seen
                .modules
                .iter()
                .map(|(name, m)| ModuleHistory {
                    name: name.clone(),
                    points: m.history.iter().copied().collect(),
                })
                .collect(),
        }
    }

    /// Count an HTTP ingest request answered with `code`.
    pub fn ingest_request(&self, code: u16) {
        self.count(
            "sluice_ingest_requests_total",
            &[("code", &code.to_string())],
            1,
        );
    }

    /// Count `events` HTTP ingest added to `topic`.
    pub fn ingest_events(&self, topic: &str, events: usize) {
        self.count(
            "sluice_ingest_events_total",
            &[("topic", topic)],
            events as u64,
        );
    }

    /// Add `n` to counter `name` with `labels` (kept while idle).
    pub fn count(&self, name: &'static str, labels: &[(&'static str, &str)], n: u64) {
        if !self.prom.enabled() {
            return;
        }
        let key = (name, labels.iter().map(|(_, v)| v.to_string()).collect());
        self.counted
            .lock()
            .unwrap()
            .entry(key)
            .or_insert_with(|| self.prom.counter(name, labels))
            .increment(n);
    }
}
