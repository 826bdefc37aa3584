//! The transaction overlay a module's calls write into while it handles events.
//!
//! Writes and emits are tagged with the index of the event (within the current
//! batch) that made them. Reads see every write made so far in the batch, so the
//! events of a batch behave exactly as if each had been committed before the
//! next ran. When event `f` fails, [`Txn::truncate`] drops the effects of `f`
//! and of every later event (which may have read `f`'s writes); the effects of
//! events before `f` are still committed, in one `WriteBatch`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sluice_wire::OwnedEvent;

use super::{Entry, Store, StoreError, output_id};

/// Per-event limits the overlay enforces.
#[derive(Debug, Clone, Copy)]
pub struct TxnLimits {
    pub max_emits: u32,
    pub max_emit_bytes: u64,
    pub max_state_value: u64,
    pub max_state_writes: u32,
}

/// What the host needs to know about an input event to attribute its outputs.
#[derive(Debug, Clone)]
pub struct InputMeta {
    pub source: String,
    pub id: String,
    pub key: Option<Vec<u8>>,
    /// `traceparent` / `tracestate`, carried to every output.
    pub trace: Vec<(String, Vec<u8>)>,
    /// The schema version its data passed, if its type has one.
    pub validated: Option<crate::schema::Validated>,
}

/// One queued output event and the input event (batch index) that made it.
#[derive(Debug, Clone)]
pub struct Emitted {
    pub event: usize,
    pub out: OwnedEvent,
}

/// Checks one output (its type and data, and what its input event's data
/// passed): `Err(why)` when its type's schema refuses its data.
pub type OutputCheck =
    Arc<dyn Fn(&str, &[u8], Option<&crate::schema::Validated>) -> Result<(), String> + Send + Sync>;

/// A limit an event exceeded (reported to the guest as an error string; counted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitHit {
    Emits,
    EmitBytes,
    StateValue,
    StateWrites,
    UndeclaredTopic(String),
    /// An output its type's schema refuses (why, as JSON).
    Invalid(String),
}

impl LimitHit {
    /// The failure class of a resource limit (`None` for a plain mistake).
    pub fn kind(&self) -> Option<&'static str> {
        match self {
            LimitHit::Emits | LimitHit::EmitBytes => Some("output"),
            LimitHit::StateValue | LimitHit::StateWrites => Some("state"),
            LimitHit::UndeclaredTopic(_) => None,
            LimitHit::Invalid(_) => Some("schema"),
        }
    }
}

impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitHit::Emits => write!(
                f,
                "output limit: too many emitted events for one input (limits.max-emits)"
            ),
            LimitHit::EmitBytes => write!(
                f,
                "output limit: emitted event too large: key, headers, attributes and data together (limits.max-emit-bytes)"
            ),
            LimitHit::StateValue => {
                write!(
                    f,
                    "state limit: key and value too large (limits.max-state-value)"
                )
            }
            LimitHit::StateWrites => write!(
                f,
                "state limit: too many writes for one event (limits.max-state-writes)"
            ),
            LimitHit::UndeclaredTopic(t) => write!(
                f,
                "topic `{t}` is not declared under [[produce]] in the manifest"
            ),
            LimitHit::Invalid(why) => write!(f, "an emitted event fails its schema: {why}"),
        }
    }
}

/// The overlay. One per module instance; reset for every batch.
pub struct Txn {
    store: Arc<Store>,
    module: Arc<str>,
    /// `source` of every event this module emits.
    output_source: Arc<str>,
    produce: Arc<[String]>,
    limits: TxnLimits,
    partition: u32,
    inputs: Vec<InputMeta>,
    /// `time` of this batch's outputs (one clock read per batch).
    now: String,
    current: usize,
    writes: Vec<(usize, Vec<u8>, Option<Vec<u8>>)>,
    view: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Committed values read or written recently, by `partition | key`. This
    /// pipeline is the only writer of its module's state, so the cache stays
    /// true; it is dropped with the instance (after a trap) and when it grows
    /// past `CACHE_ENTRIES`.
    cache: HashMap<Vec<u8>, Option<Vec<u8>>>,
    emitted: Vec<Emitted>,
    emits_this_event: u32,
    writes_this_event: u32,
    /// A storage error seen by a host call; fails the batch.
    pub store_error: Option<String>,
    /// The index the next `start-event` must carry.
    next_event: usize,
    /// The guest broke the `start-event` protocol (the batch is re-run one event at a time).
    protocol_error: Option<String>,
    /// Events that exceeded a resource limit: they fail whatever the guest
    /// returns, with the limit's kind (`output` or `state`).
    poisoned: Vec<(usize, &'static str, String)>,
    /// Validates each output (type, data) before it is kept.
    check_output: Option<OutputCheck>,
}

impl Txn {
    /// A new, empty overlay for `module`.
    pub fn new(
        store: Arc<Store>,
        module: Arc<str>,
        produce: Arc<[String]>,
        limits: TxnLimits,
    ) -> Txn {
        Txn {
            store,
            output_source: format!("/sluice/{module}").into(),
            module,
            produce,
            limits,
            partition: 0,
            inputs: Vec::new(),
            now: String::new(),
            current: 0,
            writes: Vec::new(),
            view: HashMap::new(),
            cache: HashMap::new(),
            emitted: Vec::new(),
            emits_this_event: 0,
            writes_this_event: 0,
            store_error: None,
            next_event: 0,
            protocol_error: None,
            poisoned: Vec::new(),
            check_output: None,
        }
    }

    /// Validate every output with `check` (its type and data) as it is
    /// emitted: an invalid one fails its event with class `schema`.
    pub fn check_outputs(mut self, check: OutputCheck) -> Txn {
        self.check_output = Some(check);
        self
    }

    /// Start a batch of events from one partition.
    pub fn begin(&mut self, partition: u32, inputs: Vec<InputMeta>) {
        self.partition = partition;
        self.inputs = inputs;
        self.now.clear();
        self.current = 0;
        self.writes.clear();
        self.view.clear();
        self.emitted.clear();
        self.emits_this_event = 0;
        self.writes_this_event = 0;
        self.store_error = None;
        self.next_event = 0;
        self.protocol_error = None;
        self.poisoned.clear();
    }

    /// The guest is starting event `index` of the batch.
    ///
    /// Indices must come in order, once each, within the batch; anything else is
    /// recorded as a protocol error (effects could not be attributed) and the
    /// call's effects are left attributed to the previous event.
    pub fn start_event(&mut self, index: usize) {
        if index != self.next_event || index >= self.inputs.len() {
            self.protocol_error.get_or_insert_with(|| {
                format!(
                    "batch.start-event({index}) out of order: expected {} of a batch of {}",
                    self.next_event,
                    self.inputs.len()
                )
            });
            return;
        }
        self.current = index;
        self.next_event = index + 1;
        self.emits_this_event = 0;
        self.writes_this_event = 0;
    }

    /// After a batch call of `n` events: did the guest mark every event, in order?
    pub fn check_batch(&self, n: usize) -> Result<(), String> {
        if let Some(e) = &self.protocol_error {
            return Err(e.clone());
        }
        if self.next_event != n {
            return Err(format!(
                "handle-batch marked {} of {n} events with batch.start-event",
                self.next_event
            ));
        }
        Ok(())
    }

    /// Delete a key. A delete has no result for the guest to check; a limit
    /// hit fails the event all the same (see [`Txn::poisoned`]).
    pub fn delete(&mut self, key: Vec<u8>) {
        let _ = self.put(key, None);
    }

    /// Events that must fail whatever the guest returned, because they
    /// exceeded a resource limit: `(index, kind, reason)`, kind `output` or
    /// `state`. The guest also saw the error, but may have ignored it.
    pub fn poisoned(&self) -> &[(usize, &'static str, String)] {
        &self.poisoned
    }

    /// The `traceparent` the current event's outputs carry.
    pub fn current_traceparent(&self) -> Option<&[u8]> {
        self.inputs
            .get(self.current)?
            .trace
            .iter()
            .find(|(n, _)| n == "traceparent")
            .map(|(_, v)| v.as_slice())
    }

    /// Record `hit` against the current event and hand it back.
    fn limit(&mut self, hit: LimitHit) -> LimitHit {
        if let Some(kind) = hit.kind()
            && !self.poisoned.iter().any(|(i, _, _)| *i == self.current)
        {
            self.poisoned.push((self.current, kind, hit.to_string()));
        }
        hit
    }

    /// The partition of the current batch.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Read a key, seeing this batch's writes.
    pub fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        if let Some(v) = self.view.get(key) {
            return v.clone();
        }
        let ck = cache_key(self.partition, key);
        if let Some(v) = self.cache.get(&ck) {
            return v.clone();
        }
        match self.store.get_state(&self.module, self.partition, key) {
            Ok(v) => {
                self.cache_put(ck, v.clone());
                v
            }
            Err(e) => {
                self.store_error = Some(e.to_string());
                None
            }
        }
    }

    fn cache_put(&mut self, ck: Vec<u8>, v: Option<Vec<u8>>) {
        if self.cache.len() >= CACHE_ENTRIES {
            self.cache.clear();
        }
        self.cache.insert(ck, v);
    }

    /// The batch's (remaining) writes were committed: keep them in the cache.
    pub fn committed(&mut self) {
        let writes = std::mem::take(&mut self.writes);
        for (_, k, v) in writes {
            let ck = cache_key(self.partition, &k);
            self.cache_put(ck, v);
        }
        self.view.clear();
    }

    /// Take the queued output events (to commit them).
    pub fn take_emitted(&mut self) -> Vec<Emitted> {
        std::mem::take(&mut self.emitted)
    }

    /// Write (`Some`) or delete (`None`) a key.
    pub fn put(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<(), LimitHit> {
        // Every byte the module hands over counts: the key too.
        let size = key.len() + value.as_ref().map_or(0, Vec::len);
        if size as u64 > self.limits.max_state_value {
            return Err(self.limit(LimitHit::StateValue));
        }
        if self.writes_this_event >= self.limits.max_state_writes {
            return Err(self.limit(LimitHit::StateWrites));
        }
        self.writes_this_event += 1;
        self.view.insert(key.clone(), value.clone());
        self.writes.push((self.current, key, value));
        Ok(())
    }

    /// Keys with `prefix` after `after`, at most `limit`, merged with this
    /// batch's writes. Returns the page and whether more may follow.
    pub fn scan(
        &mut self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> (Vec<Entry>, bool) {
        let in_range = |k: &[u8]| k.starts_with(prefix) && after.is_none_or(|a| k > a);
        let overlay: BTreeMap<&Vec<u8>, &Option<Vec<u8>>> =
            self.view.iter().filter(|(k, _)| in_range(k)).collect();
        // Enough committed entries to fill the page even if the overlay deletes some.
        let want = limit + overlay.len() + 1;
        let committed =
            match self
                .store
                .scan_state(&self.module, self.partition, prefix, after, want)
            {
                Ok(c) => c,
                Err(e) => {
                    self.store_error = Some(e.to_string());
                    Vec::new()
                }
            };
        let committed_full = committed.len() >= want;
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = committed.into_iter().collect();
        for (k, v) in overlay {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        let more = merged.len() > limit || committed_full;
        (merged.into_iter().take(limit).collect(), more)
    }

    /// Queue an output event for the current input event.
    #[allow(clippy::too_many_arguments)]
    pub fn emit(
        &mut self,
        topic: String,
        ty: String,
        key: Option<Vec<u8>>,
        data: Vec<u8>,
        subject: Option<String>,
        datacontenttype: Option<String>,
        headers: Vec<(String, Vec<u8>)>,
    ) -> Result<(), LimitHit> {
        if !self.produce.contains(&topic) {
            return Err(LimitHit::UndeclaredTopic(topic));
        }
        if self.emits_this_event >= self.limits.max_emits {
            return Err(self.limit(LimitHit::Emits));
        }
        // Every byte the module hands over counts, not only the data.
        let size = topic.len()
            + ty.len()
            + key.as_ref().map_or(0, Vec::len)
            + data.len()
            + subject.as_ref().map_or(0, String::len)
            + datacontenttype.as_ref().map_or(0, String::len)
            + headers
                .iter()
                .map(|(n, v)| n.len() + v.len())
                .sum::<usize>();
        if size as u64 > self.limits.max_emit_bytes {
            return Err(self.limit(LimitHit::EmitBytes));
        }
        let index = self.emits_this_event;
        self.emits_this_event += 1;
        let time = self.batch_time();
        let Some(input) = self.inputs.get(self.current) else {
            // The guest marked an event index outside the batch; nothing to attribute to.
            self.store_error = Some(format!("emit for unknown batch index {}", self.current));
            return Ok(());
        };
        let mut all_headers = headers;
        for (n, v) in &input.trace {
            if !all_headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(n)) {
                all_headers.push((n.clone(), v.clone()));
            }
        }
        let out = OwnedEvent {
            id: output_id(&self.module, &input.source, &input.id, index),
            source: self.output_source.to_string(),
            ty,
            subject,
            time: Some(time),
            datacontenttype: Some(datacontenttype.unwrap_or_else(|| "application/json".into())),
            dataschema: None,
            key: key.or_else(|| input.key.clone()),
            data,
            headers: all_headers,
            topic,
            partition: 0,
            offset: 0,
        };
        let input = self
            .inputs
            .get(self.current)
            .and_then(|i| i.validated.as_ref());
        if let Some(check) = &self.check_output
            && let Err(why) = check(&out.ty, &out.data, input)
        {
            return Err(self.limit(LimitHit::Invalid(why)));
        }
        self.emitted.push(Emitted {
            event: self.current,
            out,
        });
        Ok(())
    }

    fn batch_time(&mut self) -> String {
        if self.now.is_empty() {
            self.now = crate::source::now_rfc3339();
        }
        self.now.clone()
    }

    /// Drop the effects of event `from` and every later event of the batch.
    pub fn truncate(&mut self, from: usize) {
        self.writes.retain(|(e, _, _)| *e < from);
        self.emitted.retain(|e| e.event < from);
        self.view.clear();
        for (_, k, v) in &self.writes {
            self.view.insert(k.clone(), v.clone());
        }
    }

    /// The state writes in the order they were made.
    pub fn writes(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.writes
            .iter()
            .map(|(_, k, v)| (k.as_slice(), v.as_deref()))
    }

    /// The queued output events.
    pub fn emitted(&self) -> &[Emitted] {
        &self.emitted
    }

    /// Check a storage error seen during the batch.
    pub fn take_store_error(&mut self) -> Result<(), StoreError> {
        match self.store_error.take() {
            None => Ok(()),
            Some(e) => Err(StoreError::Read(e)),
        }
    }
}

const CACHE_ENTRIES: usize = 100_000;

fn cache_key(partition: u32, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + key.len());
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(key);
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Commit;

    fn txn(store: Arc<Store>) -> Txn {
        Txn::new(
            store,
            "m".into(),
            vec!["out".to_string()].into(),
            TxnLimits {
                max_emits: 2,
                max_emit_bytes: 100,
                max_state_value: 10,
                max_state_writes: 100,
            },
        )
    }

    fn meta(id: &str) -> InputMeta {
        InputMeta {
            source: "/s".into(),
            id: id.into(),
            key: None,
            trace: vec![],
            validated: None,
        }
    }

    #[test]
    fn reads_see_own_writes_and_truncate_drops_later_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), false).unwrap());
        let mut c = Commit::new(&store);
        c.state("m", 0, b"k", Some(b"committed"));
        c.commit().unwrap();
        let mut t = txn(store);
        t.begin(0, vec![meta("a"), meta("b")]);
        assert_eq!(t.get(b"k").as_deref(), Some(&b"committed"[..]));
        t.start_event(0);
        t.put(b"k".to_vec(), Some(b"a".to_vec())).unwrap();
        t.emit("out".into(), "t".into(), None, vec![], None, None, vec![])
            .unwrap();
        t.start_event(1);
        assert_eq!(t.get(b"k").as_deref(), Some(&b"a"[..]));
        t.put(b"k".to_vec(), None).unwrap();
        assert_eq!(t.get(b"k"), None);
        t.emit("out".into(), "t".into(), None, vec![], None, None, vec![])
            .unwrap();
        t.truncate(1);
        assert_eq!(t.get(b"k").as_deref(), Some(&b"a"[..]));
        assert_eq!(t.emitted().len(), 1);
        assert_eq!(t.writes().count(), 1);
    }

    #[test]
    fn limits_and_undeclared_topics_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = txn(Arc::new(Store::open(dir.path(), false).unwrap()));
        t.begin(0, vec![meta("a")]);
        assert_eq!(
            t.put(b"k".to_vec(), Some(vec![0; 11])),
            Err(LimitHit::StateValue)
        );
        assert_eq!(t.poisoned()[0].1, "state");
        t.begin(0, vec![meta("a")]);
        let e = t.emit(
            "elsewhere".into(),
            "t".into(),
            None,
            vec![],
            None,
            None,
            vec![],
        );
        assert_eq!(e, Err(LimitHit::UndeclaredTopic("elsewhere".into())));
        for _ in 0..2 {
            t.emit("out".into(), "t".into(), None, vec![], None, None, vec![])
                .unwrap();
        }
        let e = t.emit("out".into(), "t".into(), None, vec![], None, None, vec![]);
        assert_eq!(e, Err(LimitHit::Emits));
        assert_eq!(
            t.poisoned(),
            &[(0, "output", LimitHit::Emits.to_string())],
            "a limit fails the event even if the guest ignores the error; an undeclared topic does not"
        );
    }

    #[test]
    fn start_event_protocol_is_checked_and_a_failed_delete_fails_its_event() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = txn(Arc::new(Store::open(dir.path(), false).unwrap()));
        t.begin(0, vec![meta("a"), meta("b")]);
        t.start_event(0);
        t.start_event(1);
        assert_eq!(t.check_batch(2), Ok(()));
        t.begin(0, vec![meta("a"), meta("b")]);
        t.start_event(0);
        assert!(
            t.check_batch(2).unwrap_err().contains("1 of 2"),
            "not every event marked"
        );
        t.start_event(0);
        assert!(t.check_batch(2).unwrap_err().contains("out of order"));
        t.begin(0, vec![meta("a")]);
        t.start_event(5);
        assert!(t.check_batch(1).is_err(), "index beyond the batch");

        t.begin(0, vec![meta("a")]);
        t.start_event(0);
        for i in 0..100 {
            t.put(vec![i], Some(vec![1])).unwrap();
        }
        t.delete(b"x".to_vec());
        assert_eq!(t.poisoned().len(), 1);
        assert_eq!(t.poisoned()[0].0, 0);
        assert_eq!(t.poisoned()[0].1, "state");
    }

    #[test]
    fn scan_sees_committed_and_own_writes_after_a_resume_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), false).unwrap());
        let mut c = Commit::new(&store);
        for k in [&b"a"[..], b"aa", b"b/1", b"b/3"] {
            c.state("m", 0, k, Some(b"v"));
        }
        c.commit().unwrap();
        let mut t = txn(store);
        t.begin(0, vec![meta("a")]);
        t.start_event(0);
        t.put(b"b/2".to_vec(), Some(b"new".to_vec())).unwrap();
        t.put(b"b/3".to_vec(), None).unwrap();
        // `after` sorts before the prefix: the scan still starts at the prefix.
        let (page, more) = t.scan(b"b/", Some(b"a"), 10);
        let keys: Vec<&[u8]> = page.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(keys, [&b"b/1"[..], b"b/2"]);
        assert!(!more);
        let (page, _) = t.scan(b"b/", Some(b"b/1"), 10);
        assert_eq!(page.len(), 1);
    }

    #[test]
    fn output_ids_are_deterministic_and_distinct() {
        assert_eq!(output_id("m", "/s", "1", 0), output_id("m", "/s", "1", 0));
        assert_ne!(output_id("m", "/s", "1", 0), output_id("m", "/s", "1", 1));
        assert_ne!(output_id("m", "/s", "1", 0), output_id("n", "/s", "1", 0));
    }
}
