//! The outbox relay thread: outbox entries, in commit order, to where
//! outputs go ([`Deliver`]), deleted after delivery: at least once, with
//! deterministic ids.
//!
//! Each record's delivery is judged on its own. A delivered one is deleted
//! (so a retry of the page does not publish it again); one the broker
//! refuses for what it is (too large, invalid) goes to the host's
//! [`UNDELIVERABLE`] topic with the reason and is deleted, so one poison
//! output never stalls every module's outputs; one that failed for a
//! passing reason (the broker is away) stays and is tried again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sluice_wire::{EventRef, OwnedEvent};

use super::kafka::Undelivered;
use crate::state::{CF_OUTBOX, Store};
use crate::util::{Signal, StoppableThread};

/// Where outputs the broker refused are kept, with `sluice.dlq.*` headers
/// saying which module made them and why (their data is left out: it may be
/// what was refused).
pub const UNDELIVERABLE: &str = "sluice.undeliverable";

/// Where the relay publishes.
pub trait Deliver: Send {
    /// Publish `events` in order; one result per event.
    fn deliver(&self, events: &[OwnedEvent]) -> Vec<Result<(), Undelivered>>;
    /// Wait for what is in flight (at shutdown).
    fn flush(&self);
    /// Make sure `topic` exists (it is written only when something is refused).
    fn ensure_topic(&self, topic: &str) -> Result<(), String>;
    /// Something another thread may call to make a [`deliver`](Deliver::deliver)
    /// that waits on an unreachable broker return soon, and later ones at
    /// once (their records failed, so they stay in the outbox). It may be
    /// called again and again. `None`: deliveries never wait long.
    fn aborter(&self) -> Option<Box<dyn Fn() + Send>> {
        None
    }
}

/// Publishes committed outputs from the outbox.
pub struct Relay {
    thread: StoppableThread,
    abort: Option<Box<dyn Fn() + Send>>,
    /// Set when the drain ran out of time: the relay returns at once.
    aborted: Arc<AtomicBool>,
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
        let abort = to.aborter();
        let aborted = Arc::new(AtomicBool::new(false));
        let gave_up = aborted.clone();
        let thread = StoppableThread::spawn("sluice-relay".into(), stop, move || {
            let mut backoff = Duration::from_millis(10);
            let mut next = 0;
            while !gave_up.load(Ordering::SeqCst) {
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
        Ok(Relay {
            thread,
            abort,
            aborted,
        })
    }

    /// Drain what is committed, then stop. What is not published within
    /// `drain` (the broker is unreachable) stays in the outbox for the next
    /// start.
    pub fn stop(&mut self, drain: Duration) {
        let abort = self.abort.take();
        let aborted = self.aborted.clone();
        self.thread.stop_within(drain, || {
            if !aborted.swap(true, Ordering::SeqCst) {
                tracing::warn!(?drain, "the outbox did not drain in time (broker unreachable?); what is left is published at the next start");
            }
            if let Some(abort) = &abort {
                abort();
            }
        });
    }
}

/// Publish up to `max` outbox entries from sequence `next` on, and move `next`
/// past what is done with. Returns how many were done with; an error when
/// some must be tried again.
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
    let cf = store.cf(CF_OUTBOX);
    let mut done = rocksdb::WriteBatch::default();
    let mut seqs = Vec::with_capacity(page.len());
    let mut events = Vec::with_capacity(page.len());
    for (seq, module, frame) in &page {
        match EventRef::decode(frame) {
            Ok(ev) => {
                seqs.push((*seq, module.as_str()));
                events.push(ev.to_owned_event());
            }
            Err(e) => {
                tracing::error!(module, seq, error = %e, "dropping an undecodable outbox entry");
                done.delete_cf(cf, seq.to_be_bytes());
            }
        }
    }
    let results = to.deliver(&events);
    let mut refused = Vec::new();
    let mut retry: Option<(u64, String)> = None;
    for (((seq, module), ev), r) in seqs.iter().zip(&events).zip(results) {
        match r {
            Ok(()) => done.delete_cf(cf, seq.to_be_bytes()),
            Err(e) if e.permanent => {
                tracing::error!(module, topic = %ev.topic, id = %crate::util::clip(&ev.id, 256), reason = %e.message, "an output the broker refuses; kept in {UNDELIVERABLE}");
                refused.push((*seq, undeliverable(ev, module, &e.message)));
            }
            Err(e) => {
                retry.get_or_insert((*seq, e.message));
            }
        }
    }
    if !refused.is_empty() {
        let letters: Vec<OwnedEvent> = refused.iter().map(|(_, l)| l.clone()).collect();
        // Only once they are kept somewhere do the refused outputs leave the outbox.
        let kept = to.ensure_topic(UNDELIVERABLE).is_ok()
            && to.deliver(&letters).iter().all(Result::is_ok);
        if kept {
            for (seq, _) in &refused {
                done.delete_cf(cf, seq.to_be_bytes());
            }
        } else {
            retry.get_or_insert((refused[0].0, "cannot keep refused outputs".into()));
        }
    }
    let n = done.len();
    store.write(done).map_err(|e| e.to_string())?;
    match retry {
        Some((seq, why)) => {
            // Read again from the first one left (what is before it is gone).
            *next = seq;
            Err(why)
        }
        None => {
            if let Some((last, _, _)) = page.last() {
                *next = last + 1;
                store.set_relay_next(*next);
            }
            Ok(n)
        }
    }
}

/// The record of an output the broker refused: its attributes, key and
/// headers, not its data, with why.
fn undeliverable(ev: &OwnedEvent, module: &str, reason: &str) -> OwnedEvent {
    let mut out = ev.clone();
    let size = out.data.len();
    out.data.clear();
    out.headers
        .retain(|(n, _)| !n.starts_with(crate::dlq::PREFIX));
    for (k, v) in [
        ("module", module.to_string()),
        ("class", "undeliverable".to_string()),
        ("message", crate::util::clip(reason, 1024).into_owned()),
        ("topic", ev.topic.clone()),
        ("data-size", size.to_string()),
    ] {
        out.headers
            .push((format!("{}{k}", crate::dlq::PREFIX), v.into_bytes()));
    }
    out.topic = UNDELIVERABLE.to_string();
    out
}
