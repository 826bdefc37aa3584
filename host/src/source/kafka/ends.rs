//! The end offsets (high watermarks) of a module's partitions, kept fresh by
//! a thread of their own: a broker round trip per partition must not slow
//! the module's thread down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use super::admin::partition_count;
use super::{Kafka, REQUEST_TIMEOUT};

/// Each partition's last known end offset.
pub(super) type Ends = Arc<Mutex<HashMap<(String, u32), u64>>>;

/// A running watcher; dropping it stops the thread (without waiting: a
/// metadata request to an unreachable broker may take its whole timeout).
pub(super) struct EndsWatcher {
    ends: Ends,
    stop: Arc<AtomicBool>,
}

impl EndsWatcher {
    /// Watch every partition of `topics`, about once a second.
    pub(super) fn start(kafka: &Kafka, module: &str, topics: &[String]) -> Result<Self, String> {
        let client: BaseConsumer = kafka
            .client_config()
            .create()
            .map_err(|e| format!("cannot create a Kafka client for {module}: {e}"))?;
        let ends = Ends::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (e, s, topics) = (ends.clone(), stop.clone(), topics.to_vec());
        std::thread::Builder::new()
            .name(format!("kafka-ends-{module}"))
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    for t in &topics {
                        let n = client
                            .fetch_metadata(Some(t), REQUEST_TIMEOUT)
                            .ok()
                            .and_then(|md| partition_count(&md, t))
                            .unwrap_or(0);
                        for p in 0..n as i32 {
                            if let Ok((_, hi)) = client.fetch_watermarks(t, p, REQUEST_TIMEOUT) {
                                e.lock()
                                    .unwrap()
                                    .insert((t.clone(), p as u32), hi.max(0) as u64);
                            }
                        }
                    }
                    for _ in 0..10 {
                        if s.load(Ordering::Relaxed) {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        Ok(EndsWatcher { ends, stop })
    }

    /// The last known end offsets.
    pub(super) fn snapshot(&self) -> HashMap<(String, u32), u64> {
        self.ends.lock().unwrap().clone()
    }

    /// The last known end offset of one partition.
    pub(super) fn end(&self, key: &(String, u32)) -> Option<u64> {
        self.ends.lock().unwrap().get(key).copied()
    }
}

impl Drop for EndsWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
