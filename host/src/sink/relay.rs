//! The outbox relay thread: outbox entries, in commit order, to the
//! embedded log (append and delete in one `WriteBatch`: exactly once) or to
//! Kafka (delete after the delivery reports: at least once, deterministic ids).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sluice_wire::EventRef;

use super::kafka::KafkaSink;
use crate::source::EventLog;
use crate::state::{CF_OUTBOX, Store};

/// Where the relay publishes.
pub enum Publisher {
    /// The embedded log.
    Log(Arc<EventLog>),
    /// A Kafka cluster.
    Kafka(KafkaSink),
}
use crate::util::{Signal, StoppableThread};

/// Publishes committed outputs from the outbox.
pub struct Relay {
    thread: StoppableThread,
}

impl Relay {
    /// Start the relay thread.
    pub fn start(
        store: Arc<Store>,
        publisher: Publisher,
        signal: Arc<Signal>,
    ) -> std::io::Result<Relay> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = StoppableThread::spawn("sluice-relay".into(), stop, move || {
            let mut backoff = Duration::from_millis(10);
            let mut next = 0;
            loop {
                let seen = signal.seen();
                match relay_once(&store, &publisher, &mut next, 2048) {
                    Ok(0) => {
                        if s.load(Ordering::Relaxed) {
                            if let Publisher::Kafka(k) = &publisher {
                                k.flush();
                            }
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
pub fn relay_once(
    store: &Store,
    publisher: &Publisher,
    next: &mut u64,
    max: usize,
) -> Result<usize, String> {
    let page = store.outbox_page(*next, max).map_err(|e| e.to_string())?;
    if page.is_empty() {
        return Ok(0);
    }
    let mut by_topic: BTreeMap<String, Vec<sluice_wire::OwnedEvent>> = BTreeMap::new();
    let mut seqs = Vec::with_capacity(page.len());
    for (seq, module, frame) in &page {
        seqs.push(*seq);
        match EventRef::decode(frame) {
            Ok(ev) => by_topic
                .entry(ev.topic.to_string())
                .or_default()
                .push(ev.to_owned_event()),
            Err(e) => {
                tracing::error!(module, seq, error = %e, "dropping an undecodable outbox entry")
            }
        }
    }
    let n = page.len();
    let cf = store.cf(CF_OUTBOX);
    match publisher {
        Publisher::Log(log) => {
            log.append_many(by_topic.into_iter().collect(), |wb| {
                for s in seqs {
                    wb.delete_cf(cf, s.to_be_bytes());
                }
            })
            .map_err(|e| e.to_string())?;
        }
        Publisher::Kafka(k) => {
            let events: Vec<_> = by_topic.into_values().flatten().collect();
            k.publish(&events)?;
            let mut wb = rocksdb::WriteBatch::default();
            for s in seqs {
                wb.delete_cf(cf, s.to_be_bytes());
            }
            store.write(wb).map_err(|e| e.to_string())?;
        }
    }
    if let Some((last, _, _)) = page.last() {
        *next = last + 1;
        store.set_relay_next(*next);
    }
    Ok(n)
}
