//! Memory limits: each instance's own cap (`limits.memory`) and the
//! host-wide budget all instances share (`[pipeline] memory-budget`),
//! enforced by wasmtime's resource limiter as linear memory grows.

use std::sync::Arc;

/// Linear memory every instance of a host holds together, against a cap.
#[derive(Debug)]
pub struct MemoryBudget {
    max: usize,
    used: std::sync::atomic::AtomicUsize,
}

impl MemoryBudget {
    /// A budget of `max` bytes.
    pub fn new(max: u64) -> MemoryBudget {
        MemoryBudget {
            max: usize::try_from(max).unwrap_or(usize::MAX),
            used: Default::default(),
        }
    }

    /// Bytes held by live instances now.
    pub fn used(&self) -> usize {
        self.used.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Take `n` bytes if they fit.
    fn take(&self, n: usize) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.used
            .fetch_update(Relaxed, Relaxed, |u| {
                u.checked_add(n).filter(|t| *t <= self.max)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One store's memory limits: its module's own cap, and its share of the
/// host-wide budget (returned when the store is dropped).
pub(super) struct MemoryLimiter {
    pub(super) max: usize,
    pub(super) hit: bool,
    pub(super) budget: Arc<MemoryBudget>,
    pub(super) held: usize,
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        self.budget.give_back(self.held);
    }
}

/// Bytes a table element is counted as (a reference: a pointer on the host).
const TABLE_ELEMENT: usize = 8;

impl MemoryLimiter {
    /// Take `more` bytes for this instance: within its own cap (all its
    /// memories and tables together) and within the host's budget.
    fn grow(&mut self, more: usize, what: &str) -> wasmtime::Result<bool> {
        let total = self.held.saturating_add(more);
        if total > self.max {
            self.hit = true;
            wasmtime::bail!(
                "memory limit: {what} would take this instance to {total} bytes of memories and tables, limit is {} (limits.memory)",
                self.max
            );
        }
        if !self.budget.take(more) {
            self.hit = true;
            wasmtime::bail!(
                "host memory budget: {more} more bytes requested, {} of {} in use by all modules ([pipeline] memory-budget)",
                self.budget.used(),
                self.budget.max
            );
        }
        self.held = total;
        Ok(true)
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(desired.saturating_sub(current), "a memory growing")
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let more = desired
            .saturating_sub(current)
            .saturating_mul(TABLE_ELEMENT);
        self.grow(more, "a table growing")
    }
}
