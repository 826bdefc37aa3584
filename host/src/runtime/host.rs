//! The host side of the `sluice:processor` imports: state, emit, log, config.
//!
//! Each is a thin mapping onto the store's [`Txn`](crate::state::Txn) overlay or
//! the module's context; limits are enforced there and reported to the guest
//! as an error string (the guest usually turns it into a failure).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use super::HostState;
use super::bindings::sluice::processor::{config, emit, log, state, types};
use crate::config::manifest::Limits;

/// What a module instance knows about its module.
#[derive(Debug)]
pub struct ModuleCtx {
    /// Module name.
    pub name: Arc<str>,
    /// Module version.
    pub version: String,
    /// The manifest's `[config]`, as strings.
    pub config: BTreeMap<String, String>,
    /// Limits.
    pub limits: Limits,
}

/// Longest guest log line written; the rest is cut.
pub(crate) const MAX_LOG_LINE: usize = 4096;

/// Token bucket for guest log lines: bursts of 200, then 50 lines/s.
pub(crate) struct LogBucket {
    tokens: f64,
    last: Instant,
    dropped: u64,
}

impl LogBucket {
    pub(crate) fn new() -> Self {
        LogBucket {
            tokens: 200.0,
            last: Instant::now(),
            dropped: 0,
        }
    }
    /// Whether a line may be written now; `Some(n)` reports lines dropped before it.
    pub(crate) fn take(&mut self) -> Option<u64> {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * 50.0).min(200.0);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Some(std::mem::take(&mut self.dropped))
        } else {
            self.dropped += 1;
            None
        }
    }
}

impl types::Host for HostState {}

impl state::Host for HostState {
    fn get(&mut self, key: Vec<u8>) -> Option<Vec<u8>> {
        self.txn.get(&key)
    }

    fn set(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), String> {
        self.txn.put(key, Some(value)).map_err(|e| e.to_string())
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.txn.delete(key);
    }

    fn scan_prefix(
        &mut self,
        prefix: Vec<u8>,
        start_after: Option<Vec<u8>>,
        limit: u32,
    ) -> state::ScanPage {
        let limit = limit.clamp(1, 10_000) as usize;
        let (entries, more) = self.txn.scan(&prefix, start_after.as_deref(), limit);
        let next = if more {
            entries.last().map(|(k, _)| k.clone())
        } else {
            None
        };
        state::ScanPage { entries, next }
    }
}

impl emit::Host for HostState {
    fn emit(&mut self, e: types::OutgoingEvent) -> Result<(), String> {
        self.txn
            .emit(
                e.topic,
                e.type_,
                e.key,
                e.data,
                e.subject,
                e.datacontenttype,
                e.headers,
            )
            .map_err(|e| e.to_string())
    }
}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) {
        let Some(dropped) = self.log_bucket.take() else {
            return;
        };
        let module = &*self.ctx.name;
        if dropped > 0 {
            tracing::warn!(module, dropped, "guest log lines dropped by the rate limit");
        }
        let message = crate::util::clip(&message, MAX_LOG_LINE);
        // The event's span (or, with tracing off, the trace it came with).
        let ids = self
            .txn
            .current_traceparent()
            .and_then(crate::telemetry::trace::ids);
        let trace_id = ids.map(|(t, _)| t);
        let span_id = ids.map(|(_, s)| s);
        match level {
            log::Level::Trace => tracing::trace!(module, trace_id, span_id, "{message}"),
            log::Level::Debug => tracing::debug!(module, trace_id, span_id, "{message}"),
            log::Level::Info => tracing::info!(module, trace_id, span_id, "{message}"),
            log::Level::Warn => tracing::warn!(module, trace_id, span_id, "{message}"),
            log::Level::Error => tracing::error!(module, trace_id, span_id, "{message}"),
        }
    }
}

impl config::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.ctx.config.get(&key).cloned()
    }

    fn all(&mut self) -> Vec<(String, String)> {
        self.ctx
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
