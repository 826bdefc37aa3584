//! The embedded log behind the source traits: [`Source`] (module inputs and
//! their progress), [`Topics`] (the API's topic operations) and one module's
//! [`Input`].
//!
//! Everything is in-process: a module reads its partitions straight from
//! RocksDB, waits on the log's append generation when it has nothing to do,
//! and its local cursors are the only positions there are.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_wire::OwnedEvent;

use super::EventLog;
use crate::config::StartPosition;
use crate::source::{
    Health, Holder, Input, Page, Placement, Produced, Progress, Record, Source, TopicError, Topics,
    start_offset,
};

/// One module's reader of the embedded log.
pub struct LogInput {
    log: Arc<EventLog>,
    /// The append generation when the last pass over the partitions began.
    seen: u64,
}

impl Input for LogInput {
    fn partitions(&mut self, topic: &str) -> Option<u32> {
        self.log.partitions(topic)
    }

    fn start(
        &mut self,
        topic: &str,
        partition: u32,
        start: StartPosition,
    ) -> Result<Option<u64>, TopicError> {
        let bounds = Topics::bounds(self.log.as_ref(), topic, partition)?;
        start_offset(start, bounds, |ms| {
            self.log.offset_for_time(topic, partition, ms)
        })
        .map(Some)
    }

    fn holds(&mut self, _topic: &str, _partition: u32) -> bool {
        true
    }

    fn poll(&mut self) -> Vec<Placement> {
        // An append after this point wakes `idle`, so nothing is missed
        // between reading the partitions and waiting.
        self.seen = self.log.generation();
        Vec::new()
    }

    fn idle(&mut self, timeout: Duration) -> Vec<Placement> {
        self.log.wait_for_append(self.seen, timeout);
        Vec::new()
    }

    fn read(
        &mut self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<Record>, TopicError> {
        self.log.read(topic, partition, from, max)
    }

    fn committed(&mut self, _topic: &str, _partition: u32, _next: u64) {
        // The local cursor, committed with the module's effects, is all there is.
    }
}

impl Source for EventLog {
    fn input(
        &self,
        _module: &str,
        _topics: &[(String, StartPosition)],
    ) -> Result<Box<dyn Input>, TopicError> {
        let log = self
            .me
            .upgrade()
            .expect("the log outlives the modules reading it");
        Ok(Box::new(LogInput { log, seen: 0 }))
    }

    fn progress(&self, module: &str, topics: &[String]) -> Vec<Progress> {
        let mut out = Vec::new();
        for topic in topics {
            for partition in 0..self.partitions(topic).unwrap_or(0) {
                let cursor = self
                    .store
                    .cursor(module, topic, partition)
                    .ok()
                    .flatten()
                    .unwrap_or(0);
                let end = self.bounds(topic, partition).map(|b| b.1).unwrap_or(0);
                out.push(Progress {
                    topic: topic.clone(),
                    partition,
                    cursor,
                    end,
                    holder: Holder::Here,
                    stale: false,
                });
            }
        }
        out
    }

    fn rewind(&self, _module: &str, _to: &[Placement]) -> Result<(), TopicError> {
        // Nothing outside the local cursors remembers where a module is.
        Ok(())
    }

    fn enforce_retention(&self) -> Result<u64, TopicError> {
        EventLog::enforce_retention(self)
    }

    fn health(&self) -> Option<(&'static str, Health)> {
        None
    }
}

impl Topics for EventLog {
    fn ensure(&self, topics: &[(String, Option<u32>)]) -> Result<Vec<u32>, TopicError> {
        topics
            .iter()
            .map(|(t, n)| self.ensure_topic(t, *n))
            .collect()
    }

    fn names(&self) -> Result<Vec<(String, u32)>, TopicError> {
        Ok(self.topics())
    }

    fn partitions(&self, topic: &str) -> Result<Option<u32>, TopicError> {
        Ok(EventLog::partitions(self, topic))
    }

    fn bounds(&self, topic: &str, partition: u32) -> Result<(u64, u64), TopicError> {
        if let Some(b) = EventLog::bounds(self, topic, partition) {
            return Ok(b);
        }
        Err(match EventLog::partitions(self, topic) {
            None => TopicError::Unknown(topic.into()),
            Some(have) => TopicError::NoPartition {
                topic: topic.into(),
                partition,
                have,
            },
        })
    }

    fn offset_for_time(&self, topic: &str, partition: u32, ms: i64) -> Result<u64, TopicError> {
        EventLog::offset_for_time(self, topic, partition, ms)
    }

    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        limit: usize,
        wait: Duration,
    ) -> Result<Page, TopicError> {
        Topics::bounds(self, topic, partition)?;
        let deadline = Instant::now() + wait;
        loop {
            let seen = self.generation();
            let records = EventLog::read(self, topic, partition, from, limit)?;
            let now = Instant::now();
            if !records.is_empty() || now >= deadline {
                let (first, end) = Topics::bounds(self, topic, partition)?;
                return Ok(Page {
                    records,
                    first,
                    end,
                });
            }
            self.wait_for_append(seen, deadline - now);
        }
    }

    fn produce(&self, topic: &str, events: Vec<OwnedEvent>) -> Result<Vec<Produced>, TopicError> {
        let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
        let placed = self.append(topic, events)?;
        Ok(placed
            .into_iter()
            .zip(ids)
            .map(|((partition, offset), id)| Produced::new(topic, id, partition, offset))
            .collect())
    }

    fn produce_to_partitions(
        &self,
        topic: &str,
        events: Vec<OwnedEvent>,
    ) -> Result<(), TopicError> {
        self.append_to_own_partitions(topic, events).map(|_| ())
    }

    fn purge(&self, topic: &str) -> Result<u64, TopicError> {
        self.truncate(topic)
    }
}
