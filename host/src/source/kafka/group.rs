//! One module's membership of its consumer group: the rebalance context
//! librdkafka calls inside `poll` (commit what was done before letting
//! partitions go, unless they were lost or the broker is gone; place each partition given at the furthest of the local
//! cursor and the group's offset, or the subscription's start for a group
//! without one; never guess when the broker does not answer), and the
//! events it leaves for the consumer.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{BrokerHealth, Kafka, REQUEST_TIMEOUT};
use crate::config::StartPosition;
use crate::source::{Placement, TopicError, start_offset};
use crate::state::Store;

/// A rebalance seen in `poll`.
pub(super) enum GroupEvent {
    /// Given to this host and placed.
    Assigned(Vec<Placement>),
    /// Given to this host, but where it resumes could not be known (the
    /// broker did not answer): paused until it can.
    Unplaced(Vec<(String, u32)>),
    Revoked(Vec<(String, u32)>),
}

/// Serves the group's rebalances (librdkafka calls it inside `poll`).
pub(super) struct GroupContext {
    pub(super) health: Arc<BrokerHealth>,
    pub(super) module: String,
    pub(super) store: Arc<Store>,
    /// Each subscribed topic's start position, for a group without offsets.
    pub(super) starts: HashMap<String, StartPosition>,
    pub(super) events: Mutex<Vec<GroupEvent>>,
    /// Offsets committed locally but not yet to Kafka.
    pub(super) pending: Mutex<BTreeMap<(String, u32), u64>>,
    /// Whether a revocation commits `pending` first. Cleared when the
    /// consumer leaves after its last commit failed: a synchronous commit
    /// with no coordinator to answer waits without end, and the local
    /// cursor holds anyway.
    pub(super) commit_on_revoke: AtomicBool,
}

impl ClientContext for GroupContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(module = %self.module, error = %error, reason, "Kafka client error; librdkafka retries");
        self.health.error(format!("{error}: {reason}"));
    }
}

fn tpl_entries(tpl: &TopicPartitionList) -> Vec<(String, u32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition() as u32))
        .collect()
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // Nothing is in flight (poll runs between batches): hand over
            // what this host committed before letting the partitions go.
            let revoked = tpl_entries(tpl);
            let mut pending = self.pending.lock().unwrap();
            let mut commit = TopicPartitionList::new();
            for (t, p) in &revoked {
                if let Some(o) = pending.remove(&(t.clone(), *p)) {
                    let _ = commit.add_partition_offset(t, *p as i32, Offset::Offset(o as i64));
                }
            }
            drop(pending);
            let lost = consumer.assignment_lost();
            if commit.count() > 0 && (lost || !self.commit_on_revoke.load(Ordering::SeqCst)) {
                // Lost partitions may be someone else's already, and with
                // the broker gone the commit would wait without end.
                tracing::warn!(module = %self.module, lost, "offsets not committed on revocation (the broker is unreachable or the partitions were lost); the local cursor still holds");
            } else if commit.count() > 0
                && let Err(e) = consumer.commit(&commit, CommitMode::Sync)
            {
                tracing::warn!(module = %self.module, error = %e, "offset commit on revocation failed (the local cursor still holds)");
            }
            tracing::info!(module = %self.module, partitions = ?revoked, "partitions revoked");
            self.events
                .lock()
                .unwrap()
                .push(GroupEvent::Revoked(revoked));
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else {
            return;
        };
        let committed = committed_offsets(consumer, tpl);
        let mut placed = TopicPartitionList::new();
        let mut assigned = Vec::new();
        let mut unplaced = Vec::new();
        for (t, p) in tpl_entries(tpl) {
            let group = match &committed {
                Ok(c) => group_offset(c, &t, p),
                Err(e) => Err(e.clone()),
            };
            match self.resume_at(consumer, &t, p, group) {
                Ok(at) => {
                    let _ = placed.add_partition_offset(&t, p as i32, Offset::Offset(at as i64));
                    assigned.push(Placement {
                        topic: t,
                        partition: p,
                        at,
                    });
                }
                Err(e) => {
                    tracing::warn!(module = %self.module, topic = %t, partition = p, error = %e, "cannot tell where this partition resumes; it waits until the broker answers");
                    let _ = placed.add_partition_offset(&t, p as i32, Offset::End);
                    unplaced.push((t, p));
                }
            }
        }
        if let Err(e) = consumer.assign(&placed) {
            tracing::error!(module = %self.module, error = %e, "cannot place the assigned partitions at their cursors");
        }
        if !unplaced.is_empty() {
            let mut paused = TopicPartitionList::new();
            for (t, p) in &unplaced {
                let _ = paused.add_partition(t, *p as i32);
            }
            if let Err(e) = consumer.pause(&paused) {
                tracing::error!(module = %self.module, error = %e, "cannot pause the partitions that wait");
            }
        }
        tracing::info!(module = %self.module, partitions = ?assigned, waiting = ?unplaced, "partitions assigned");
        let mut events = self.events.lock().unwrap();
        events.push(GroupEvent::Assigned(assigned));
        if !unplaced.is_empty() {
            events.push(GroupEvent::Unplaced(unplaced));
        }
    }
}

impl GroupContext {
    /// Where this host resumes a partition it was just given: the furthest
    /// of its local cursor and the group's committed offset (`group`; the
    /// second is ahead when another host processed the partition meanwhile);
    /// with neither, the subscription's start position, committed to the
    /// group at once. A manifest's start applies only to a group that has no
    /// offset; what cannot be known now
    /// (`Err`) is never guessed: reading from a wrong place would apply
    /// events twice or skip them.
    pub(super) fn resume_at(
        &self,
        consumer: &BaseConsumer<Self>,
        t: &str,
        p: u32,
        group: Result<Option<u64>, String>,
    ) -> Result<u64, String> {
        let local = self
            .store
            .cursor(&self.module, t, p)
            .map_err(|e| format!("local cursor: {e}"))?;
        Ok(match (local, group?) {
            (Some(l), Some(g)) => l.max(g),
            (Some(l), None) => l,
            (None, Some(g)) => g,
            (None, None) => {
                let start = self
                    .starts
                    .get(t)
                    .copied()
                    .unwrap_or(StartPosition::Earliest);
                let (lo, hi) = consumer
                    .fetch_watermarks(t, p as i32, REQUEST_TIMEOUT)
                    .map_err(|e| format!("watermarks: {e}"))?;
                let bounds = (lo.max(0) as u64, hi.max(0) as u64);
                let at = start_offset(start, bounds, |ms| {
                    Ok(offset_for_time(consumer, t, p, ms).unwrap_or(bounds.1))
                })
                .map_err(|e| e.to_string())?;
                // The group starts here: recorded at once, so a host that
                // takes the partition over before anything is committed
                // resumes here too instead of at its own start position.
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(t, p as i32, Offset::Offset(at as i64))
                    .map_err(|e| e.to_string())?;
                consumer
                    .commit(&tpl, CommitMode::Sync)
                    .map_err(|e| format!("recording the start offset: {e}"))?;
                at
            }
        })
    }
}

/// The group's committed offsets for `tpl`, asked a few times before giving up.
pub(super) fn committed_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tpl: &TopicPartitionList,
) -> Result<TopicPartitionList, String> {
    let mut last = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(500));
        }
        match consumer.committed_offsets(tpl.clone(), REQUEST_TIMEOUT) {
            Ok(c) => return Ok(c),
            Err(e) => last = format!("committed offsets: {e}"),
        }
    }
    Err(last)
}

/// A partition's entry in committed offsets: `None` when the group has none.
pub(super) fn group_offset(c: &TopicPartitionList, t: &str, p: u32) -> Result<Option<u64>, String> {
    let e = c
        .find_partition(t, p as i32)
        .ok_or_else(|| format!("no committed offset entry for {t}/{p}"))?;
    if let Err(err) = e.error() {
        return Err(format!("committed offset of {t}/{p}: {err}"));
    }
    Ok(match e.offset() {
        Offset::Offset(o) if o >= 0 => Some(o as u64),
        _ => None,
    })
}

/// The first offset at or after time `ms`, if the broker has one.
fn offset_for_time<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    t: &str,
    p: u32,
    ms: i64,
) -> Option<u64> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(t, p as i32, Offset::Offset(ms))
        .ok()?;
    let r = consumer.offsets_for_times(tpl, REQUEST_TIMEOUT).ok()?;
    match r.find_partition(t, p as i32)?.offset() {
        Offset::Offset(o) if o >= 0 => Some(o as u64),
        _ => None,
    }
}

/// Commit `to` as `module`'s group offsets (a rewind: this host's consumer of
/// the module has stopped and left). Like Kafka's own offset reset tool this
/// needs a group without members: a live member elsewhere would go on from
/// where it is and commit over the new offsets. Refused, naming the members,
/// while another host still reads the module.
pub(super) fn move_offsets(
    kafka: &Kafka,
    module: &str,
    to: &[Placement],
) -> Result<(), TopicError> {
    let group = kafka.group(module);
    let mut cfg = kafka.client_config();
    cfg.set("group.id", &group)
        .set("enable.auto.commit", "false");
    let client: BaseConsumer = cfg
        .create()
        .map_err(|e| TopicError::Unavailable(format!("cannot create a Kafka client: {e}")))?;
    // Our own member has just left; give the broker a moment to say so.
    let mut members = Vec::new();
    for attempt in 0..10 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(300));
        }
        members = group_members(&client, &group).map_err(TopicError::Unavailable)?;
        if members.is_empty() {
            break;
        }
    }
    if !members.is_empty() {
        return Err(TopicError::Conflict(format!(
            "consumer group {group} still has {} member(s) ({}): the module runs on another host; pause it there (sluice pause {module}) and rewind again, then resume it everywhere",
            members.len(),
            members.join(", ")
        )));
    }
    let mut tpl = TopicPartitionList::new();
    for p in to {
        tpl.add_partition_offset(&p.topic, p.partition as i32, Offset::Offset(p.at as i64))
            .map_err(|e| TopicError::Unavailable(e.to_string()))?;
    }
    client
        .commit(&tpl, CommitMode::Sync)
        .map_err(|e| TopicError::Unavailable(format!("moving group {group}'s offsets: {e}")))
}

/// The member ids of `group`, as the broker describes it.
pub(super) fn group_members<C: ConsumerContext>(
    client: &BaseConsumer<C>,
    group: &str,
) -> Result<Vec<String>, String> {
    let groups = client
        .fetch_group_list(Some(group), REQUEST_TIMEOUT)
        .map_err(|e| format!("describing group {group}: {e}"))?;
    Ok(groups
        .groups()
        .iter()
        .filter(|g| g.name() == group)
        .flat_map(|g| g.members())
        .map(|m| m.id().to_string())
        .collect())
}
