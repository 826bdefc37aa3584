//! An in-memory host for unit-testing modules on the native target.
//!
//! [`TestHost::install`] gives the current thread a fresh host; the SDK's state,
//! emit, log and config calls then go to it, so a handler can be called directly
//! and its effects inspected. (Transactions are not simulated here: that is the
//! real host's job and its tests' subject.)
//!
//! ```
//! use sluice_guest::testing::{TestHost, TestEvent};
//! let host = TestHost::install().config("threshold", "10");
//! let ev = TestEvent::json("orders", "order.created", r#"{"amount": 12}"#);
//! assert!(ev.with(|e| e.json::<serde_json::Value>()).is_ok());
//! assert!(host.emitted().is_empty());
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use crate::Event;
use crate::log::Level;

/// One event a handler emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    pub topic: String,
    pub ty: String,
    pub key: Option<Vec<u8>>,
    pub data: Vec<u8>,
}

impl Emitted {
    /// The payload parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.data).expect("emitted data is JSON")
    }
}

#[derive(Default)]
struct Inner {
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    emitted: Vec<Emitted>,
    config: BTreeMap<String, String>,
    logs: Vec<(Level, String)>,
}

thread_local! {
    static HOST: RefCell<Option<Rc<RefCell<Inner>>>> = const { RefCell::new(None) };
}

/// Handle to the current thread's in-memory host.
#[derive(Clone)]
pub struct TestHost(Rc<RefCell<Inner>>);

impl TestHost {
    /// Install a fresh host for this thread and return a handle to it.
    pub fn install() -> TestHost {
        let inner = Rc::new(RefCell::new(Inner::default()));
        HOST.with(|h| *h.borrow_mut() = Some(inner.clone()));
        TestHost(inner)
    }
    /// Set a config value (as the manifest's `[config]` would).
    pub fn config(self, key: &str, value: &str) -> Self {
        self.0.borrow_mut().config.insert(key.into(), value.into());
        self
    }
    /// Everything emitted so far.
    pub fn emitted(&self) -> Vec<Emitted> {
        self.0.borrow().emitted.clone()
    }
    /// Forget what was emitted so far (e.g. between benchmark iterations).
    pub fn clear_emitted(&self) {
        self.0.borrow_mut().emitted.clear()
    }
    /// Number of events emitted so far.
    pub fn emitted_count(&self) -> usize {
        self.0.borrow().emitted.len()
    }
    /// The current state.
    pub fn state(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.0.borrow().state.clone()
    }
    /// Log lines written so far.
    pub fn logs(&self) -> Vec<(Level, String)> {
        self.0.borrow().logs.clone()
    }
}

fn with<R>(f: impl FnOnce(&mut Inner) -> R) -> R {
    HOST.with(|h| {
        let mut slot = h.borrow_mut();
        let inner = slot.get_or_insert_with(|| Rc::new(RefCell::new(Inner::default())));
        let mut guard = inner.borrow_mut();
        f(&mut guard)
    })
}

/// An owned event for tests.
#[derive(Debug, Clone)]
pub struct TestEvent(pub sluice_wire::OwnedEvent);

impl TestEvent {
    /// An event with a JSON payload and a fresh id.
    pub fn json(topic: &str, ty: &str, data: &str) -> TestEvent {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        TestEvent(sluice_wire::OwnedEvent {
            id: format!("test-{n}"),
            source: "/test".into(),
            ty: ty.into(),
            datacontenttype: Some("application/json".into()),
            data: data.as_bytes().to_vec(),
            topic: topic.into(),
            offset: n,
            ..Default::default()
        })
    }
    /// Set the partition key.
    pub fn key(mut self, key: &str) -> Self {
        self.0.key = Some(key.as_bytes().to_vec());
        self
    }
    /// Run `f` with the event as a handler sees it.
    pub fn with<R>(&self, f: impl FnOnce(&Event<'_>) -> R) -> R {
        f(&Event(self.0.as_ref()))
    }
}

pub(crate) mod backend {
    use super::{Emitted, with};
    use crate::Result;
    use crate::log::Level;

    pub fn state_get(key: &[u8]) -> Option<Vec<u8>> {
        with(|h| h.state.get(key).cloned())
    }
    pub fn state_set(key: &[u8], value: &[u8]) -> Result {
        with(|h| h.state.insert(key.to_vec(), value.to_vec()));
        Ok(())
    }
    pub fn state_delete(key: &[u8]) {
        with(|h| h.state.remove(key));
    }
    pub fn state_scan(prefix: &[u8], after: Option<&[u8]>, limit: u32) -> crate::state::Page {
        with(|h| {
            let entries: Vec<_> = h
                .state
                .range(prefix.to_vec()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .filter(|(k, _)| after.is_none_or(|a| k.as_slice() > a))
                .take(limit as usize + 1)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if entries.len() > limit as usize {
                let page = entries[..limit as usize].to_vec();
                let next = page.last().map(|(k, _)| k.clone());
                (page, next)
            } else {
                (entries, None)
            }
        })
    }
    pub fn emit(out: &crate::Output<'_>) -> Result {
        with(|h| {
            h.emitted.push(Emitted {
                topic: out.topic.into(),
                ty: out.ty.into(),
                key: out.key.clone(),
                data: out.data.clone(),
            })
        });
        Ok(())
    }
    pub fn log(level: Level, msg: &str) {
        with(|h| h.logs.push((level, msg.into())));
    }
    pub fn config_get(key: &str) -> Option<String> {
        with(|h| h.config.get(key).cloned())
    }
    pub fn config_all() -> Vec<(String, String)> {
        with(|h| {
            h.config
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }
}
