//! Once a second, the sampler looks at every module the way `sluice modules`
//! does (counters, cursors, ends, status) and turns that into everything
//! that is judged or kept over time: lag status over its window, the age of
//! each partition's oldest unprocessed event, the dashboard's history, and
//! the Prometheus series. A scrape then only renders what the sampler set;
//! it takes no host lock and reads nothing from the store.
//!
//! Heavier reads (each dead-letter topic's bounds, the outbox length) are
//! done every fifth sample.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::lag::{LagStatus, Window};
use super::{HISTORY, ModuleSeen, Point, Telemetry};
use crate::Service;
use crate::deploy::status::{ModuleInfo, PartitionInfo};
use crate::pipeline::{MetricsSnapshot, ModuleStatus};
use crate::source::{Topics, now_ms, parse_rfc3339_ms};
use crate::util::StoppableThread;

/// Time between two samples.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Statuses a module's `sluice_module_status` series take.
const MODULE_STATUSES: [&str; 5] = ["running", "paused", "quarantined", "stopped", "failed"];

/// Start sampling `svc` until it is dropped or the thread is stopped.
pub fn spawn(svc: Weak<Service>) -> std::io::Result<StoppableThread> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    StoppableThread::spawn("sluice-telemetry".into(), stop, move || {
        let mut sampler = Sampler::default();
        let mut next = Instant::now();
        while !s.load(Ordering::Relaxed) {
            if Instant::now() >= next {
                let Some(svc) = svc.upgrade() else { return };
                sampler.sample(&svc, &s);
                next += INTERVAL;
                if next < Instant::now() {
                    next = Instant::now() + INTERVAL;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

/// What the sampler carries from one sample to the next.
#[derive(Default)]
struct Sampler {
    samples: u64,
    windows: HashMap<(String, String, u32), Window>,
    /// Per partition: the cursor last looked at, and its event's time.
    oldest: HashMap<(String, String, u32), (u64, Option<u64>)>,
    depths: HashMap<String, u64>,
    outbox: u64,
}

impl Sampler {
    /// Take one sample. Once `stop` is set it asks the broker nothing more:
    /// no event read for its age, no dead-letter depths (a call to Kafka may
    /// take seconds on a loaded machine or with the broker down, and
    /// shutdown waits for this sample).
    fn sample(&mut self, svc: &Service, stop: &AtomicBool) {
        let tel = svc.telemetry();
        let now = now_ms();
        let modules = svc.lifecycle().modules();
        if self.samples.is_multiple_of(5) && !stop.load(Ordering::Relaxed) {
            self.outbox = svc.store().outbox_len().unwrap_or(self.outbox);
            self.depths = modules
                .iter()
                .filter_map(|m| {
                    if stop.load(Ordering::Relaxed) {
                        return None;
                    }
                    let (dlq, _) = svc.lifecycle().dlq_topics(&m.name).ok()?;
                    Some((m.name.clone(), depth(svc.topics(), &dlq)?))
                })
                .collect();
        }
        self.samples += 1;
        let mut live = HashSet::new();
        let mut seen = BTreeMap::new();
        for m in &modules {
            let consuming = m.status == ModuleStatus::Running;
            let mut module = ModuleSeen {
                lag_status: if consuming {
                    LagStatus::Ok
                } else {
                    LagStatus::Stop
                },
                dead_letter_depth: self.depths.get(&m.name).copied(),
                ..ModuleSeen::default()
            };
            for p in &m.partitions {
                let key = (m.name.clone(), p.topic.clone(), p.partition);
                let window = self
                    .windows
                    .entry(key.clone())
                    .or_insert_with(|| Window::new(tel.window));
                window.push(p.cursor, p.lag);
                let status = window.status(consuming);
                let age = self.age(svc.topics(), &key, p, now, stop);
                module.lag_status = module.lag_status.max(status);
                module
                    .partitions
                    .insert((p.topic.clone(), p.partition), (status, age));
                live.insert(key);
            }
            publish_module(tel, m, &module);
            seen.insert(m.name.clone(), module);
        }
        self.windows.retain(|k, _| live.contains(k));
        self.oldest.retain(|k, _| live.contains(k));
        self.publish_host(svc);
        let mut shared = tel.seen.write().unwrap();
        for m in &modules {
            let Some(mut module) = seen.remove(&m.name) else {
                continue;
            };
            module.history = shared
                .modules
                .remove(&m.name)
                .map(|old| old.history)
                .unwrap_or_default();
            if module.history.len() == HISTORY {
                module.history.pop_front();
            }
            let c = m.metrics.clone().unwrap_or_default();
            module.history.push_back(Point {
                t_ms: now,
                events_in: c.events_in,
                applied: c.applied,
                dead_letters: c.dead_letters,
                lag: m.partitions.iter().map(|p| p.lag).sum(),
                dead_letter_depth: module.dead_letter_depth.unwrap_or(0),
            });
            seen.insert(m.name.clone(), module);
        }
        shared.modules = seen;
    }

    /// Seconds since the oldest unprocessed event of `p` was made (its
    /// `time`; the host stamps one at ingest when it has none). The event is
    /// read once per cursor position.
    fn age(
        &mut self,
        topics: &dyn Topics,
        key: &(String, String, u32),
        p: &PartitionInfo,
        now: u64,
        stop: &AtomicBool,
    ) -> Option<f64> {
        if p.lag == 0 {
            self.oldest.remove(key);
            return Some(0.0);
        }
        let time = match self.oldest.get(key) {
            Some((cursor, time)) if *cursor == p.cursor => *time,
            _ if stop.load(Ordering::Relaxed) => return None,
            _ => {
                let time = event_time(topics, &p.topic, p.partition, p.cursor);
                self.oldest.insert(key.clone(), (p.cursor, time));
                time
            }
        };
        time.map(|t| now.saturating_sub(t) as f64 / 1000.0)
    }

    fn publish_host(&self, svc: &Service) {
        let prom = svc.telemetry().prom();
        let readiness = svc.readiness();
        prom.gauge("sluice_outbox_pending", &[])
            .set(self.outbox as f64);
        prom.gauge("sluice_ready", &[])
            .set(f64::from(u8::from(readiness.ready)));
        if let Some(kafka) = readiness.backend.get("kafka") {
            prom.gauge("sluice_kafka_up", &[])
                .set(f64::from(u8::from(kafka.reachable)));
        }
        prom.gauge("sluice_wasm_memory_bytes", &[])
            .set(svc.runtime().memory_budget().used() as f64);
        prom.gauge("sluice_wasm_memory_budget_bytes", &[])
            .set(svc.config().pipeline.memory_budget as f64);
        prom.gauge(
            "sluice_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
        )
        .set(1.0);
        for c in svc.telemetry().counted.lock().unwrap().values() {
            c.increment(0);
        }
        prom.upkeep();
    }
}

/// Records in a dead-letter topic now.
fn depth(topics: &dyn Topics, topic: &str) -> Option<u64> {
    let n = topics.partitions(topic).ok()??;
    (0..n)
        .map(|p| topics.bounds(topic, p).ok().map(|(first, end)| end - first))
        .sum()
}

/// The `time` of the event at `offset` (or the first after it), in Unix ms.
fn event_time(topics: &dyn Topics, topic: &str, partition: u32, offset: u64) -> Option<u64> {
    let page = topics
        .read(topic, partition, offset, 1, Duration::ZERO)
        .ok()?;
    let record = page.records.first()?;
    let ev = sluice_wire::EventRef::decode(&record.frame).ok()?;
    parse_rfc3339_ms(ev.time?).and_then(|t| u64::try_from(t).ok())
}

/// Set one module's series.
fn publish_module(tel: &Telemetry, m: &ModuleInfo, seen: &ModuleSeen) {
    let prom = tel.prom();
    if !prom.enabled() {
        return;
    }
    let module = m.name.as_str();
    let by_module = [("module", module)];
    if let Some(c) = &m.metrics {
        counters(tel, module, c);
    }
    for p in &m.partitions {
        let part = p.partition.to_string();
        let labels = [
            ("module", module),
            ("topic", p.topic.as_str()),
            ("partition", part.as_str()),
        ];
        prom.gauge("sluice_lag_events", &labels).set(p.lag as f64);
        let Some((status, age)) = seen.partitions.get(&(p.topic.clone(), p.partition)) else {
            continue;
        };
        if let Some(age) = age {
            prom.gauge("sluice_lag_seconds", &labels).set(*age);
        }
        for s in LagStatus::ALL {
            let labels = [
                ("module", module),
                ("topic", p.topic.as_str()),
                ("partition", part.as_str()),
                ("status", s.as_str()),
            ];
            prom.gauge("sluice_lag_status", &labels)
                .set(f64::from(u8::from(s == *status)));
        }
    }
    for s in LagStatus::ALL {
        prom.gauge(
            "sluice_module_lag_status",
            &[("module", module), ("status", s.as_str())],
        )
        .set(f64::from(u8::from(s == seen.lag_status)));
    }
    for s in MODULE_STATUSES {
        prom.gauge("sluice_module_status", &[("module", module), ("status", s)])
            .set(f64::from(u8::from(s == m.status.name())));
    }
    if let Some(version) = &m.version {
        let revision = m.revision.unwrap_or(0).to_string();
        prom.gauge(
            "sluice_module_info",
            &[
                ("module", module),
                ("version", version.as_str()),
                ("revision", revision.as_str()),
            ],
        )
        .set(1.0);
    }
    if let Some(depth) = seen.dead_letter_depth {
        prom.gauge("sluice_dead_letter_depth", &by_module)
            .set(depth as f64);
    }
    if let Some(state) = &m.state {
        prom.gauge("sluice_state_keys", &by_module)
            .set(state.keys as f64);
        prom.gauge("sluice_state_bytes", &by_module)
            .set(state.bytes as f64);
    }
}

/// A module's counters, from its own atomics.
fn counters(tel: &Telemetry, module: &str, c: &MetricsSnapshot) {
    let prom = tel.prom();
    let by_module = [("module", module)];
    for (name, value) in [
        ("sluice_events_in_total", c.events_in),
        ("sluice_events_applied_total", c.applied),
        ("sluice_events_emitted_total", c.emitted),
        ("sluice_events_filtered_total", c.filtered),
        ("sluice_dedup_hits_total", c.dedup_hits),
        ("sluice_retries_total", c.retries),
        ("sluice_dead_letters_total", c.dead_letters),
        ("sluice_batches_total", c.batches),
        ("sluice_lost_to_retention_total", c.lost_to_retention),
        ("sluice_keyless_state_writes_total", c.keyless_state_writes),
        ("sluice_module_starts_total", c.starts),
    ] {
        prom.counter(name, &by_module).absolute(value);
    }
    for (class, n) in &c.failures {
        prom.counter(
            "sluice_failures_total",
            &[("module", module), ("class", class.as_str())],
        )
        .absolute(*n);
    }
    for (kind, n) in &c.traps {
        prom.counter(
            "sluice_traps_total",
            &[("module", module), ("kind", kind.as_str())],
        )
        .absolute(*n);
    }
}
