//! The sandbox: wasmtime's component model, and the only place that names
//! wasmtime types.
//!
//! [`Runtime`] owns the engine (epoch interruption on, a ticker thread driving
//! it) and a linker holding the `sluice:processor` imports plus WASI p2 with a
//! deny-all context. [`Runtime::load`] compiles and validates a component;
//! [`Runtime::instantiate`] makes a [`ModuleInstance`], which the pipeline
//! keeps across events and replaces after a trap.
//!
//! Calls never run on the async reactor: the pipeline calls from its own
//! thread.

mod cache;
mod host;
mod limits;
mod sandbox;
mod stdio;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;
use wasmtime::component::{Component, Func, HasSelf, InstancePre, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreContextMut, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::state::Txn;
use sluice_wire::EventRef;

pub use cache::{CacheStats, component_hash};
pub use host::ModuleCtx;
pub use limits::MemoryBudget;
pub use sandbox::Sandbox;

use limits::MemoryLimiter;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "sluice:processor/processor",
    });
}

use bindings::sluice::processor::types::Failure as WitFailure;

/// Granularity of per-event deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Why a component could not be loaded.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read component {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// Not a valid component (a core module, or corrupt).
    #[error("{path} is not a valid WebAssembly component: {reason}")]
    Invalid { path: String, reason: String },
    /// A required export is missing.
    #[error("{path} does not implement the sluice:processor world: missing export `{export}`")]
    MissingExport { path: String, export: String },
    /// It imports something the host does not provide.
    #[error("{path} imports something the host does not provide: {reason}")]
    Import { path: String, reason: String },
}

/// What kind of trap ended a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrapKind {
    /// The per-event deadline passed (epoch interruption).
    Deadline,
    /// Linear memory would have grown past the module's limit.
    Memory,
    /// Wasm stack exhausted.
    Stack,
    /// The guest panicked / hit `unreachable`.
    Panic,
    /// Emitted too many events or bytes for one input (`limits.max-emits`,
    /// `limits.max-emit-bytes`).
    Output,
    /// Wrote a state value too large or too many values for one input
    /// (`limits.max-state-value`, `limits.max-state-writes`).
    State,
    /// Any other trap.
    Other,
}

impl TrapKind {
    /// Every kind, in discriminant order.
    pub const ALL: [TrapKind; 7] = [
        TrapKind::Deadline,
        TrapKind::Memory,
        TrapKind::Stack,
        TrapKind::Panic,
        TrapKind::Output,
        TrapKind::State,
        TrapKind::Other,
    ];

    /// Stable name used in metrics and dead-letter headers.
    pub fn as_str(self) -> &'static str {
        match self {
            TrapKind::Deadline => "deadline",
            TrapKind::Memory => "memory",
            TrapKind::Stack => "stack",
            TrapKind::Panic => "panic",
            TrapKind::Output => "output",
            TrapKind::State => "state",
            TrapKind::Other => "trap",
        }
    }
}

impl TrapKind {
    /// The kind for a resource limit the overlay enforces (`output` or `state`).
    pub fn of_limit(kind: &str) -> TrapKind {
        match kind {
            "output" => TrapKind::Output,
            "state" => TrapKind::State,
            _ => TrapKind::Other,
        }
    }
}

/// A call that trapped, or an event that exceeded a limit. After a wasm trap
/// the instance must not be used again; after a limit it may.
#[derive(Debug, Clone)]
pub struct Trapped {
    pub kind: TrapKind,
    pub message: String,
}

/// A failure the guest returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestFailure {
    Retry(String),
    Reject(String),
}

/// The engine and linker shared by every module of a host.
pub struct Runtime {
    engine: Engine,
    budget: Arc<MemoryBudget>,
    linker: Linker<HostState>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// Compiled components on disk, keyed by component hash and engine settings.
    cache: Option<cache::CompileCache>,
}

/// A compiled, validated component, ready to instantiate.
#[derive(Clone)]
pub struct Loaded {
    pre: InstancePre<HostState>,
    /// Whether it exports the batched entry point.
    pub batched: bool,
}

/// Per-store data: WASI context, the transaction overlay, limits.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    /// The overlay the current call writes to.
    pub txn: Txn,
    ctx: Arc<ModuleCtx>,
    log_bucket: host::LogBucket,
    /// When the current call's deadline passes.
    deadline_at: Instant,
    /// The call trapped because it would have waited past `deadline_at`.
    deadline_hit: bool,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl Runtime {
    /// A new engine with epoch interruption, and a linker with every import a
    /// module may use. All instances together hold at most `memory_budget`
    /// bytes of linear memory.
    pub fn new(memory_budget: u64) -> anyhow::Result<Runtime> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.max_wasm_stack(512 << 10);
        let engine = Engine::new(&config)?;
        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        bound_guest_sleeps(&mut linker)?;
        bindings::Processor::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        linker.instance("sluice:processor/batch@0.1.0")?.func_wrap(
            "start-event",
            |mut cx: StoreContextMut<'_, HostState>, (i,): (u32,)| {
                cx.data_mut().txn.start_event(i as usize);
                Ok(())
            },
        )?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (e, s) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                while !s.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    e.increment_epoch();
                }
            })?;
        Ok(Runtime {
            engine,
            budget: Arc::new(MemoryBudget::new(memory_budget)),
            linker,
            stop,
            cache: None,
        })
    }

    /// Keep compiled components in `dir` (created if missing), so a restart
    /// does not compile them again.
    pub fn with_compile_cache(mut self, dir: &Path) -> anyhow::Result<Runtime> {
        self.cache = Some(cache::CompileCache::open(dir, &self.engine)?);
        Ok(self)
    }

    /// Hits and misses of the compiled-component cache.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache
            .as_ref()
            .map(cache::CompileCache::stats)
            .unwrap_or_default()
    }

    /// Compile and validate the component at `path`.
    pub fn load(&self, path: &Path) -> Result<Loaded, LoadError> {
        let p = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: p.clone(),
            source,
        })?;
        self.load_bytes(&bytes, &p)
    }

    /// Compile (or take from the compiled cache) and validate a component
    /// from memory; `name` is used in errors.
    pub fn load_bytes(&self, bytes: &[u8], name: &str) -> Result<Loaded, LoadError> {
        self.load_hashed(&component_hash(bytes), name, || Ok(bytes.to_vec()))
    }

    /// Load the component whose SHA-256 is `hash`: from the compiled cache if
    /// it is there (then `bytes` is never called), else compiled from `bytes()`.
    pub fn load_hashed(
        &self,
        hash: &str,
        name: &str,
        bytes: impl FnOnce() -> std::io::Result<Vec<u8>>,
    ) -> Result<Loaded, LoadError> {
        let compile = || {
            let bytes = bytes().map_err(|source| LoadError::Read {
                path: name.into(),
                source,
            })?;
            Component::new(&self.engine, &bytes).map_err(|e| LoadError::Invalid {
                path: name.into(),
                reason: format!("{e:#}"),
            })
        };
        let component = match &self.cache {
            Some(c) => c.get_or_compile(&self.engine, hash, compile)?,
            None => compile()?,
        };
        // Imports first: a component that needs something the host does not
        // provide is refused with that import named.
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Import {
                path: name.into(),
                reason: format!("{e:#}"),
            })?;
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        if !exports.iter().any(|e| e == "handle") {
            return Err(LoadError::MissingExport {
                path: name.into(),
                export: "handle".into(),
            });
        }
        let batched = exports.iter().any(|e| e == "handle-batch");
        Ok(Loaded { pre, batched })
    }

    /// A fresh instance of `loaded` with an empty overlay.
    pub fn instantiate(
        &self,
        loaded: &Loaded,
        ctx: Arc<ModuleCtx>,
        txn: Txn,
    ) -> anyhow::Result<ModuleInstance> {
        let state = HostState {
            wasi: Sandbox::DENY_ALL.wasi(&ctx.name),
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                max: ctx.limits.memory as usize,
                hit: false,
                budget: self.budget.clone(),
                held: 0,
            },
            txn,
            log_bucket: host::LogBucket::new(),
            deadline_at: Instant::now() + ctx.limits.deadline,
            deadline_hit: false,
            ctx,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        // Start functions run guest code too: give them the per-event deadline.
        let deadline = store.data().ctx.limits.deadline;
        store.set_epoch_deadline(deadline.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64 + 1);
        let instance = loaded.pre.instantiate(&mut store)?;
        let processor = bindings::Processor::new(&mut store, &instance)?;
        let batch = if loaded.batched {
            instance.get_func(&mut store, "handle-batch")
        } else {
            None
        };
        Ok(ModuleInstance {
            store,
            processor,
            batch,
        })
    }
}

/// Epoch interruption only stops wasm code; a guest blocked in a host call
/// (`sleep` is a wait on a monotonic-clock pollable) would hold its thread
/// past the deadline. Replace the two ways to make such a pollable with
/// versions that trap with `deadline` at once when the wait would end past the
/// current call's deadline. Nothing else a module can wait on may become ready
/// in this sandbox (no sockets, no files, empty stdin), so such a wait could
/// only end in the deadline anyway.
fn bound_guest_sleeps(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    use wasmtime::component::Resource;
    use wasmtime_wasi::p2::DynPollable;
    use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::Host as _;

    fn check(s: &mut HostState, ns: u64) -> wasmtime::Result<()> {
        let left = s.deadline_at.saturating_duration_since(Instant::now());
        if u128::from(ns) > left.as_nanos() {
            s.deadline_hit = true;
            wasmtime::bail!(
                "deadline: the module waits {} ms with {} ms left of its per-event deadline (limits.deadline)",
                ns / 1_000_000,
                left.as_millis()
            );
        }
        Ok(())
    }
    fn clocks(s: &mut HostState) -> wasmtime_wasi::clocks::WasiClocksCtxView<'_> {
        wasmtime_wasi::clocks::WasiClocksView::clocks(s)
    }
    linker.allow_shadowing(true);
    // Redefining an instance replaces all of it: `now` and `resolution` too.
    let mut clock = linker.instance("wasi:clocks/monotonic-clock@0.2.6")?;
    clock.func_wrap("now", |mut cx: StoreContextMut<'_, HostState>, (): ()| {
        Ok((clocks(cx.data_mut()).now()?,))
    })?;
    clock.func_wrap(
        "resolution",
        |mut cx: StoreContextMut<'_, HostState>, (): ()| Ok((clocks(cx.data_mut()).resolution()?,)),
    )?;
    clock.func_wrap(
        "subscribe-duration",
        |mut cx: StoreContextMut<'_, HostState>,
         (ns,): (u64,)|
         -> wasmtime::Result<(Resource<DynPollable>,)> {
            let s = cx.data_mut();
            check(s, ns)?;
            Ok((clocks(s).subscribe_duration(ns)?,))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut cx: StoreContextMut<'_, HostState>,
         (when,): (u64,)|
         -> wasmtime::Result<(Resource<DynPollable>,)> {
            let s = cx.data_mut();
            let now = clocks(s).now()?;
            check(s, when.saturating_sub(now))?;
            Ok((clocks(s).subscribe_instant(when)?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

impl Runtime {
    /// The host-wide memory budget.
    pub fn memory_budget(&self) -> &MemoryBudget {
        &self.budget
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A live module instance and its store.
pub struct ModuleInstance {
    store: Store<HostState>,
    processor: bindings::Processor,
    batch: Option<Func>,
}

fn failure(f: WitFailure) -> GuestFailure {
    match f {
        WitFailure::Retry(m) => GuestFailure::Retry(m),
        WitFailure::Reject(m) => GuestFailure::Reject(m),
    }
}

impl ModuleInstance {
    /// The overlay (inspect after a call, reset before one).
    pub fn txn(&mut self) -> &mut Txn {
        &mut self.store.data_mut().txn
    }

    /// Whether this instance takes batches.
    pub fn batched(&self) -> bool {
        self.batch.is_some()
    }

    fn arm(&mut self) {
        let per_event = self.store.data().ctx.limits.deadline;
        // A batch shares one deadline of `per_event`: a healthy batch is far
        // below it; one that is not is retried one event at a time.
        let ticks = per_event.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64 + 1;
        self.store.set_epoch_deadline(ticks);
        let data = self.store.data_mut();
        data.limiter.hit = false;
        data.deadline_hit = false;
        data.deadline_at = Instant::now() + per_event;
    }

    fn classify(&self, e: &wasmtime::Error) -> Trapped {
        let kind = if self.store.data().limiter.hit {
            TrapKind::Memory
        } else if self.store.data().deadline_hit {
            TrapKind::Deadline
        } else {
            match e.downcast_ref::<Trap>() {
                Some(Trap::Interrupt) => TrapKind::Deadline,
                Some(Trap::StackOverflow) => TrapKind::Stack,
                Some(Trap::UnreachableCodeReached) => TrapKind::Panic,
                _ => TrapKind::Other,
            }
        };
        // The cause first: the chain's head is a long wasm backtrace.
        let cause = e.root_cause().to_string();
        Trapped {
            kind,
            message: format!("{cause}\n{e:#}"),
        }
    }

    /// Call `handle-batch` with an encoded batch of `n` events.
    pub fn call_batch(
        &mut self,
        batch: &[u8],
        n: usize,
    ) -> Result<Vec<Result<(), GuestFailure>>, Trapped> {
        let Some(func) = self.batch else {
            return Err(Trapped {
                kind: TrapKind::Other,
                message: "module has no handle-batch export".into(),
            });
        };
        self.arm();
        let typed = func
            .typed::<(&[u8],), (Vec<Result<(), WitFailure>>,)>(&self.store)
            .map_err(|e| Trapped {
                kind: TrapKind::Other,
                message: format!("handle-batch has the wrong type: {e:#}"),
            })?;
        match typed.call(&mut self.store, (batch,)) {
            Ok((results,)) => {
                if results.len() != n {
                    return Err(Trapped {
                        kind: TrapKind::Other,
                        message: format!(
                            "handle-batch returned {} results for {n} events",
                            results.len()
                        ),
                    });
                }
                Ok(results.into_iter().map(|r| r.map_err(failure)).collect())
            }
            Err(e) => Err(self.classify(&e)),
        }
    }

    /// Call `handle` with one event.
    pub fn call_one(&mut self, ev: &EventRef<'_>) -> Result<Result<(), GuestFailure>, Trapped> {
        self.arm();
        self.store.data_mut().txn.start_event(0);
        let wit = bindings::sluice::processor::types::Event {
            id: ev.id.into(),
            source: ev.source.into(),
            type_: ev.ty.into(),
            subject: ev.subject.map(Into::into),
            time: ev.time.map(Into::into),
            datacontenttype: ev.datacontenttype.map(Into::into),
            dataschema: ev.dataschema.map(Into::into),
            data: ev.data.to_vec(),
            key: ev.key.map(<[u8]>::to_vec),
            headers: ev
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_vec()))
                .collect(),
            topic: ev.topic.into(),
            partition: ev.partition,
            offset: ev.offset,
        };
        match self.processor.call_handle(&mut self.store, &wit) {
            Ok(r) => Ok(r.map_err(failure)),
            Err(e) => Err(self.classify(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter as _;

    #[test]
    fn the_budget_is_shared_and_returned_when_a_store_goes() {
        let budget = Arc::new(MemoryBudget::new(100));
        let limiter = |max| MemoryLimiter {
            max,
            hit: false,
            budget: budget.clone(),
            held: 0,
        };
        let mut a = limiter(80);
        let mut b = limiter(80);
        assert!(a.memory_growing(0, 60, None).unwrap());
        let e = b.memory_growing(0, 60, None).unwrap_err();
        assert!(e.to_string().contains("memory-budget"), "{e}");
        assert!(b.hit);
        assert!(b.memory_growing(0, 40, None).unwrap(), "what is left fits");
        let e = a.memory_growing(60, 90, None).unwrap_err();
        assert!(
            e.to_string().contains("limits.memory"),
            "own cap first: {e}"
        );
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 40);
        assert!(b.memory_growing(40, 80, None).unwrap());
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn every_memory_and_table_of_an_instance_counts_against_its_limit() {
        let budget = Arc::new(MemoryBudget::new(1 << 20));
        let mut one = MemoryLimiter {
            max: 100,
            hit: false,
            budget: budget.clone(),
            held: 0,
        };
        // Two memories of 50 bytes each: the second reaches the limit.
        assert!(one.memory_growing(0, 50, None).unwrap());
        let e = one.memory_growing(0, 51, None).unwrap_err();
        assert!(e.to_string().contains("limits.memory"), "{e}");
        assert!(one.hit);
        // A table's elements count too (8 bytes each).
        assert!(one.table_growing(0, 6, None).unwrap());
        assert!(one.table_growing(6, 7, None).is_err());
        assert_eq!(budget.used(), 98);
    }
}
