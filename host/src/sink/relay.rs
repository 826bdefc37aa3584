//! The outbox relay thread: outbox entries, in commit order, to where
//! outputs go ([`Deliver`]), deleted after delivery: at least once, with
//! deterministic ids.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sluice_wire::{EventRef, OwnedEvent};

use crate::state::{CF_OUTBOX, Store};
use crate::util::{Signal, StoppableThread};

/// Where the relay publishes.
pub trait Deliver: Send {
    /// Publish `events` in order; `Ok` once every one is acknowledged.
    fn deliver(&self, events: &[OwnedEvent]) -> Result<(), String>;
    /// Wait for what is in flight (at shutdown).
    fn flush(&self);
}

/// Publishes committed outputs from the outbox.
pub struct Relay {
    thread: StoppableThread,
}

impl Relay {
    /// Start the relay thread.
    pub fn start(
        store: Arc<Store>,
        to: Box<dyn Deliver>,
        signal: Arc<Signal>,
    ) -> std::io::Result<Relay> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = StoppableThread::spawn("sluice-relay".into(), stop, move || {
            let mut backoff = Duration::from_millis(10);
            let mut next = 0;
            loop {
                let seen = signal.seen();
                match relay_once(&store, to.as_ref(), &mut next, 2048) {
                    Ok(0) => {
                        if s.load(Ordering::Relaxed) {
                            to.flush();
                            return;
                        }
                        signal.wait(seen, Duration::from_millis(100));
                    }
                    Ok(_) => backoff = Duration::from_millis(10),
                    Err(e) => {
                        tracing::error!(error = %e, "outbox relay failed; retrying");
                        if s.load(Ordering::Relaxed) {
                            return;
                        }
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        })?;
        Ok(Relay { thread })
    }

    /// Drain what is committed, then stop.
    pub fn stop(&mut self) {
        self.thread.stop();
    }
}

/// Publish up to `max` outbox entries from sequence `next` on, and move `next`
/// past them. Returns how many.
fn relay_once(
    store: &Store,
    to: &dyn Deliver,
    next: &mut u64,
    max: usize,
) -> Result<usize, String> {
    let page = store.outbox_page(*next, max).map_err(|e| e.to_string())?;
    if page.is_empty() {
        return Ok(0);
    }
    let mut events = Vec::with_capacity(page.len());
    let mut wb = rocksdb::WriteBatch::default();
    let cf = store.cf(CF_OUTBOX);
    for (seq, module, frame) in &page {
        wb.delete_cf(cf, seq.to_be_bytes());
        match EventRef::decode(frame) {
            Ok(ev) => events.push(ev.to_owned_event()),
            Err(e) => {
                tracing::error!(module, seq, error = %e, "dropping an undecodable outbox entry")
            }
        }
    }
    to.deliver(&events)?;
    store.write(wb).map_err(|e| e.to_string())?;
    let n = page.len();
    if let Some((last, _, _)) = page.last() {
        *next = last + 1;
        store.set_relay_next(*next);
    }
    Ok(n)
}
