//! The HTTP API's reads of Kafka partitions (`sluice tail`, dead letters).
//!
//! Each read places a group-less consumer at the offset asked for (see
//! `placement.rs`). The reader of a partition is kept between requests and
//! reused: paging on from where it stopped needs no placing, and reading
//! elsewhere (the telemetry sampler reads the event at each module's cursor)
//! re-places it rather than creating a new client.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::placement::Placing;
use super::{Kafka, REQUEST_TIMEOUT, record_of};
use crate::source::Page;

/// Most readers kept between requests.
const MAX_READERS: usize = 64;

/// Readers by partition, with the offset each is at.
#[derive(Default)]
pub(super) struct Readers {
    idle: Mutex<HashMap<(String, u32), (BaseConsumer, u64)>>,
}

impl Readers {
    /// Up to `limit` records of a partition from `from`, waiting up to
    /// `wait` (at least half a second) for the first.
    pub(super) fn read(
        &self,
        kafka: &Kafka,
        topic: &str,
        p: u32,
        from: u64,
        limit: usize,
        wait: Duration,
    ) -> Result<Page, String> {
        let key = (topic.to_string(), p);
        let cached = self.idle.lock().unwrap().remove(&key);
        // A kept reader is reused wherever it is: placing it elsewhere is an
        // assign, cheaper than a new client (its threads and connections).
        let (c, placed_at) = match cached {
            Some((c, next)) => (c, Some(next)),
            None => {
                let c: BaseConsumer = kafka
                    .client_config()
                    .set(
                        "group.id",
                        format!("sluice-api-reader-{}", rand::random::<u64>()),
                    )
                    .set("enable.auto.commit", "false")
                    .set("fetch.wait.max.ms", "50")
                    .create()
                    .map_err(|e| e.to_string())?;
                (c, None)
            }
        };
        let (lo, hi) = c
            .fetch_watermarks(topic, p as i32, REQUEST_TIMEOUT)
            .map_err(|e| format!("Kafka `{topic}`/{p}: {e}"))?;
        let (first, end) = (lo.max(0) as u64, hi.max(0) as u64);
        let from = from.max(first);
        let mut records = Vec::new();
        if limit == 0 {
            return Ok(Page {
                records,
                first,
                end,
            });
        }
        // No early return at `end`: tansu's high watermark can lag the
        // records it serves.
        let mut placing = (placed_at != Some(from)).then(|| Placing::at(from, first));
        if placing.is_some() {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, p as i32, Offset::Offset(from as i64))
                .map_err(|e| e.to_string())?;
            c.assign(&tpl).map_err(|e| e.to_string())?;
        }
        let mut deadline = Instant::now() + wait.max(Duration::from_millis(500));
        let mut next = from;
        let placing_deadline = Instant::now() + REQUEST_TIMEOUT;
        while records.len() < limit
            && (Instant::now() < deadline || placing.is_some() && Instant::now() < placing_deadline)
        {
            match c.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let r = record_of(&m);
                    if let Some(pl) = &mut placing {
                        if let Some(to) = pl.on_record(r.offset) {
                            c.seek(topic, p as i32, Offset::Offset(to as i64), REQUEST_TIMEOUT)
                                .map_err(|e| e.to_string())?;
                            continue;
                        }
                        placing = None;
                        deadline = Instant::now() + wait.max(Duration::from_millis(500));
                    }
                    if r.offset < next {
                        continue;
                    }
                    next = r.offset + 1;
                    records.push(r);
                }
                Some(Err(e)) => return Err(e.to_string()),
                None if !records.is_empty() => break,
                None => {}
            }
        }
        if placing.is_none() {
            let mut idle = self.idle.lock().unwrap();
            if idle.len() >= MAX_READERS {
                idle.clear();
            }
            idle.insert(key, (c, next));
        }
        Ok(Page {
            records,
            first,
            end,
        })
    }
}
