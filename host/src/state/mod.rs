//! RocksDB: the embedded log, module state, idempotency sets, cursors and the
//! outbox, in one database so that one `WriteBatch` commits an event's effects.
//!
//! Column families and key layout (`|` is concatenation, integers big-endian so
//! that byte order is numeric order):
//!
//! | family      | key                                             | value                |
//! |-------------|-------------------------------------------------|----------------------|
//! | `log`       | topic `\0` partition:u32 offset:u64             | event frame          |
//! | `meta`      | `topic/` name                                   | partitions:u32       |
//! | `meta`      | `module/` name                                  | registry record (JSON) |
//! | `meta`      | `quarantine/` name                              | `1`                  |
//! | `state`     | module `\0` partition:u32 user-key              | user value           |
//! | `dedup`     | module `\0` partition:u32 len(source):u32 source id | expiry ms:u64    |
//! | `dedup_exp` | expiry ms:u64 dedup-key                         | empty                |
//! | `cursor`    | module `\0` topic `\0` partition:u32            | next offset:u64      |
//! | `outbox`    | seq:u64                                         | len(module):u32 module frame |
//!
//! Module and topic names cannot contain `\0` (see `config::manifest::valid_name`).

mod commit;
pub mod txn;

pub use commit::Commit;

use rocksdb::{
    BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options,
    ReadOptions, WriteBatch, WriteOptions,
};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use thiserror::Error;

pub use txn::Txn;

/// A storage failure. The pipeline stops the module on these (they are not the
/// event's fault); the host keeps running.
#[derive(Debug, Error)]
pub enum StoreError {
    /// RocksDB said no.
    #[error("state store: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A read made from inside a module's call failed.
    #[error("state store: {0}")]
    Read(String),
}

pub(crate) const CF_LOG: &str = "log";
pub(crate) const CF_META: &str = "meta";
pub(crate) const CF_STATE: &str = "state";
pub(crate) const CF_DEDUP: &str = "dedup";
pub(crate) const CF_DEDUP_EXP: &str = "dedup_exp";
pub(crate) const CF_CURSOR: &str = "cursor";
pub(crate) const CF_OUTBOX: &str = "outbox";

const ALL_CFS: [&str; 7] = [
    CF_LOG,
    CF_META,
    CF_STATE,
    CF_DEDUP,
    CF_DEDUP_EXP,
    CF_CURSOR,
    CF_OUTBOX,
];

/// The host's RocksDB database.
pub struct Store {
    db: DB,
    sync: bool,
    /// Next outbox sequence number. Only read and advanced under `outbox_lock`,
    /// together with the write, so sequence order is commit order and the relay
    /// can safely read on from where it stopped.
    outbox_seq: AtomicU64,
    outbox_lock: std::sync::Mutex<()>,
    /// Where the relay will read next (entries below it are published).
    relay_next: AtomicU64,
    /// Writes hold it shared; the idempotency sweep holds it exclusively while it
    /// checks and deletes expired marks, so it never deletes a mark that a
    /// commit wrote again between its check and its delete.
    sweep_lock: std::sync::RwLock<()>,
    /// Atomic writes made (see [`Store::writes`]).
    writes: AtomicU64,
    /// Each module's state size as of the last [`Store::measure_state`]:
    /// what status shows, so that reading status never scans.
    state_sizes: std::sync::Mutex<Option<std::collections::HashMap<String, StateSize>>>,
}

/// A state entry: `(user key, value)`.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Size of one module's state.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct StateSize {
    /// Number of keys.
    pub keys: u64,
    /// Bytes of keys and values.
    pub bytes: u64,
}

impl Store {
    /// Open (or create) the database in `dir`.
    pub fn open(dir: &Path, sync: bool) -> Result<Store, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.increase_parallelism(2);
        opts.set_enable_pipelined_write(true);
        let cfs = ALL_CFS.iter().map(|name| {
            let mut o = Options::default();
            o.set_write_buffer_size(128 << 20);
            if matches!(*name, CF_STATE | CF_DEDUP) {
                let mut b = BlockBasedOptions::default();
                b.set_bloom_filter(10.0, false);
                o.set_block_based_table_factory(&b);
            }
            ColumnFamilyDescriptor::new(*name, o)
        });
        let db = DB::open_cf_descriptors(&opts, dir, cfs)?;
        let store = Store {
            db,
            sync,
            outbox_seq: AtomicU64::new(0),
            outbox_lock: std::sync::Mutex::new(()),
            relay_next: AtomicU64::new(0),
            sweep_lock: std::sync::RwLock::new(()),
            writes: AtomicU64::new(0),
            state_sizes: Default::default(),
        };
        let next = store
            .db
            .iterator_cf(store.cf(CF_OUTBOX), IteratorMode::End)
            .next()
            .transpose()?
            .map(|(k, _)| be_u64(&k) + 1)
            .unwrap_or(0);
        store.outbox_seq.store(next, Ordering::SeqCst);
        Ok(store)
    }

    pub(crate) fn cf(&self, name: &str) -> &ColumnFamily {
        // The families are all created in `open`.
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    /// Write a batch (fsync'd if `[state] sync-writes`).
    pub fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let _shared = self.sweep_lock.read().unwrap_or_else(|e| e.into_inner());
        self.write_unlocked(batch)
    }

    fn write_unlocked(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync);
        self.db.write_opt(batch, &wo)?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// How many atomic writes (`WriteBatch`es) this store has made.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// A module's committed state value.
    pub fn get_state(
        &self,
        module: &str,
        partition: u32,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .db
            .get_cf(self.cf(CF_STATE), state_key(module, partition, key))?)
    }

    /// Committed state entries with keys starting with `prefix`, after `after`
    /// (exclusive), at most `limit`.
    pub fn scan_state(
        &self,
        module: &str,
        partition: u32,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let base = state_key(module, partition, b"");
        let full_prefix = state_key(module, partition, prefix);
        // Start at the prefix, or just after `after` if that sorts later.
        let start = match after {
            Some(a) => {
                let mut k = state_key(module, partition, a);
                k.push(0);
                k.max(full_prefix.clone())
            }
            None => full_prefix.clone(),
        };
        let mut out = Vec::new();
        let it = self.db.iterator_cf(
            self.cf(CF_STATE),
            IteratorMode::From(&start, Direction::Forward),
        );
        for item in it {
            let (k, v) = item?;
            if !k.starts_with(&full_prefix) || out.len() >= limit {
                break;
            }
            out.push((k[base.len()..].to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Every state entry of a module (all partitions) whose user key starts with
    /// `prefix`: `(partition, key, value)`, at most `limit`.
    pub fn dump_state(
        &self,
        module: &str,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<(u32, Entry)>, StoreError> {
        let mp = module_prefix(module);
        let mut out = Vec::new();
        let it = self.db.iterator_cf(
            self.cf(CF_STATE),
            IteratorMode::From(&mp, Direction::Forward),
        );
        for item in it {
            let (k, v) = item?;
            if !k.starts_with(&mp) || out.len() >= limit {
                break;
            }
            let rest = &k[mp.len()..];
            if rest.len() < 4 {
                continue;
            }
            let partition = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
            if rest[4..].starts_with(prefix) {
                out.push((partition, (rest[4..].to_vec(), v.to_vec())));
            }
        }
        Ok(out)
    }

    /// Measure every module's state (one pass over the `state` family, off
    /// any request: housekeeping does it) for [`Store::measured_state_size`].
    pub fn measure_state(&self) -> Result<(), StoreError> {
        let mut sizes: std::collections::HashMap<String, StateSize> = Default::default();
        for item in self.db.iterator_cf(self.cf(CF_STATE), IteratorMode::Start) {
            let (k, v) = item?;
            let Some(end) = k.iter().position(|b| *b == 0) else {
                continue;
            };
            let module = String::from_utf8_lossy(&k[..end]);
            let size = match sizes.get_mut(module.as_ref()) {
                Some(s) => s,
                None => sizes.entry(module.into_owned()).or_default(),
            };
            size.keys += 1;
            size.bytes += (k.len().saturating_sub(end + 5) + v.len()) as u64;
        }
        *self.state_sizes.lock().unwrap() = Some(sizes);
        Ok(())
    }

    /// A module's state size as last measured (at most a few seconds old);
    /// `None` before the first measurement.
    pub fn measured_state_size(&self, module: &str) -> Option<StateSize> {
        let sizes = self.state_sizes.lock().unwrap();
        Some(sizes.as_ref()?.get(module).copied().unwrap_or_default())
    }

    /// Which of `keys` (dedup keys) are already applied and not expired at `now_ms`.
    pub fn applied(&self, keys: &[Vec<u8>], now_ms: u64) -> Result<Vec<bool>, StoreError> {
        let cf = self.cf(CF_DEDUP);
        let res = self.db.batched_multi_get_cf(cf, keys.iter(), false);
        res.into_iter()
            .map(|r| {
                Ok(match r? {
                    Some(v) => be_u64(&v) > now_ms,
                    None => false,
                })
            })
            .collect()
    }

    /// A module's cursor (next offset) for a topic partition.
    pub fn cursor(
        &self,
        module: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, StoreError> {
        Ok(self
            .db
            .get_cf(self.cf(CF_CURSOR), cursor_key(module, topic, partition))?
            .map(|v| be_u64(&v)))
    }

    /// Record that the relay has published everything below `next`.
    pub fn set_relay_next(&self, next: u64) {
        self.relay_next.store(next, Ordering::SeqCst);
    }

    /// Up to `max` outbox entries with sequence numbers `>= from`, in order:
    /// `(seq, module, frame)`. Starting past what was already relayed keeps the
    /// read from walking over the tombstones of deleted entries.
    pub fn outbox_page(
        &self,
        from: u64,
        max: usize,
    ) -> Result<Vec<(u64, String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        let start = from.to_be_bytes();
        let mode = IteratorMode::From(&start, Direction::Forward);
        for item in self.db.iterator_cf(self.cf(CF_OUTBOX), mode) {
            let (k, v) = item?;
            if out.len() >= max {
                break;
            }
            if v.len() < 4 {
                continue;
            }
            let n = u32::from_be_bytes([v[0], v[1], v[2], v[3]]) as usize;
            let module = String::from_utf8_lossy(&v[4..4 + n.min(v.len() - 4)]).into_owned();
            out.push((be_u64(&k), module, v[4 + n..].to_vec()));
        }
        Ok(out)
    }

    /// Number of entries waiting in the outbox.
    pub fn outbox_len(&self) -> Result<u64, StoreError> {
        let mut n = 0;
        let start = self.relay_next.load(Ordering::SeqCst).to_be_bytes();
        let mode = IteratorMode::From(&start, Direction::Forward);
        for item in self.db.iterator_cf(self.cf(CF_OUTBOX), mode) {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// Delete idempotency marks that expired before `now_ms`. Returns how many.
    ///
    /// A mark is deleted only if its stored expiry has passed too, so a mark
    /// written again after an earlier one expired is kept.
    pub fn sweep_expired(&self, now_ms: u64) -> Result<u64, StoreError> {
        let exp = self.cf(CF_DEDUP_EXP);
        let dedup = self.cf(CF_DEDUP);
        let mut n = 0;
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(now_ms.to_be_bytes().to_vec());
        for item in self.db.iterator_cf_opt(exp, ro, IteratorMode::Start) {
            let (k, v) = item?;
            // Check and delete under the exclusive lock (see `sweep_lock`).
            let _exclusive = self.sweep_lock.write().unwrap_or_else(|e| e.into_inner());
            let mut batch = WriteBatch::default();
            batch.delete_cf(exp, &k);
            let mut rest = &v[..];
            while rest.len() >= 12 {
                let expiry = be_u64(&rest[..8]);
                let len = u32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]) as usize;
                let Some(key) = rest.get(12..12 + len) else {
                    break;
                };
                rest = &rest[12 + len..];
                if expiry > now_ms {
                    continue;
                }
                let current = self.db.get_cf(dedup, key)?.map(|c| be_u64(&c));
                if current.is_some_and(|c| c <= now_ms) {
                    batch.delete_cf(dedup, key);
                    n += 1;
                }
            }
            self.write_unlocked(batch)?;
        }
        Ok(n)
    }

    /// Remember (or forget) that `module` is quarantined, across restarts.
    pub fn set_quarantined(&self, module: &str, on: bool) -> Result<(), StoreError> {
        let mut c = Commit::new(self);
        c.quarantine(module, on);
        c.commit()
    }

    /// Whether `module` was quarantined and not resumed.
    pub fn is_quarantined(&self, module: &str) -> Result<bool, StoreError> {
        Ok(self
            .db
            .get_cf(self.cf(CF_META), quarantine_key(module))?
            .is_some())
    }

    /// A host-level record in the `meta` family (module registry, ...).
    pub fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(CF_META), key)?)
    }

    /// Write a host-level record (synced: these are rare and must survive).
    pub fn meta_put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META), key, value);
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }

    /// Every host-level record whose key starts with `prefix`.
    pub fn meta_scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        let it = self.db.iterator_cf(
            self.cf(CF_META),
            IteratorMode::From(prefix.as_bytes(), Direction::Forward),
        );
        for item in it {
            let (k, v) = item?;
            if !k.starts_with(prefix.as_bytes()) {
                break;
            }
            out.push((String::from_utf8_lossy(&k).into_owned(), v.to_vec()));
        }
        Ok(out)
    }

    /// Delete a module's state and idempotency marks, and with `cursors` also
    /// its cursors and quarantine mark: what `undeploy --purge` and
    /// `rewind --reset-state` throw away. The module must not be running.
    pub fn forget_module(&self, module: &str, cursors: bool) -> Result<(), StoreError> {
        let mut c = Commit::new(self);
        c.forget_module(module, cursors);
        c.commit()
    }

    /// Whether a dedup key is present at all (expired or not), for tests and tools.
    pub fn dedup_present(&self, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.db.get_cf(self.cf(CF_DEDUP), key)?.is_some())
    }
}

pub(crate) fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(a)
}

/// Key (in `meta`) of a module's quarantine mark.
pub(crate) fn quarantine_key(module: &str) -> String {
    format!("quarantine/{module}")
}

pub(crate) fn module_prefix(module: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(module.len() + 1);
    k.extend_from_slice(module.as_bytes());
    k.push(0);
    k
}

/// Key of a state entry.
pub fn state_key(module: &str, partition: u32, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(module.len() + 5 + key.len());
    k.extend_from_slice(module.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// Key of an idempotency mark.
pub fn dedup_key(module: &str, partition: u32, source: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(module.len() + 9 + source.len() + id.len());
    k.extend_from_slice(module.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(&(source.len() as u32).to_be_bytes());
    k.extend_from_slice(source.as_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

/// The deterministic id of the `index`-th event a module emitted for an input.
pub fn output_id(module: &str, source: &str, id: &str, index: u32) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(module.as_bytes());
    h.update([0]);
    h.update(source.as_bytes());
    h.update([0]);
    h.update(id.as_bytes());
    h.update([0]);
    h.update(index.to_be_bytes());
    let d = h.finalize();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(32);
    for b in &d[..16] {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// Key of a cursor.
pub fn cursor_key(module: &str, topic: &str, partition: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(module.len() + topic.len() + 6);
    k.extend_from_slice(module.as_bytes());
    k.push(0);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_marks_are_really_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        let old = dedup_key("m", 0, "/s", "old");
        let fresh = dedup_key("m", 0, "/s", "fresh");
        let mut c = Commit::new(&store);
        c.mark_applied(&old, 1_000);
        c.commit().unwrap();
        let mut c = Commit::new(&store);
        c.mark_applied(&fresh, 5_000);
        c.commit().unwrap();
        assert_eq!(
            store.applied(&[old.clone(), fresh.clone()], 2_000).unwrap(),
            [false, true]
        );
        assert_eq!(store.sweep_expired(2_000).unwrap(), 1);
        assert!(!store.dedup_present(&old).unwrap());
        assert!(store.dedup_present(&fresh).unwrap());
        // Applied again after its mark expired, before a sweep: the old index
        // entry must not delete the new mark.
        let again = dedup_key("m", 0, "/s", "again");
        for expiry in [3_000, 9_000] {
            let mut c = Commit::new(&store);
            c.mark_applied(&again, expiry);
            c.commit().unwrap();
        }
        assert_eq!(
            store.sweep_expired(6_000).unwrap(),
            1,
            "only `fresh` expired"
        );
        assert!(store.dedup_present(&again).unwrap());
        assert_eq!(
            store.applied(std::slice::from_ref(&again), 6_000).unwrap(),
            [true]
        );
    }

    #[test]
    fn outbox_survives_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), false).unwrap();
            let mut c = Commit::new(&store);
            c.outbox("m", b"one");
            c.outbox("m", b"two");
            c.commit().unwrap();
        }
        let store = Store::open(dir.path(), false).unwrap();
        let page = store.outbox_page(0, 10).unwrap();
        assert_eq!(page.len(), 2);
        assert_eq!(page[1].2, b"two");
        assert_eq!(store.outbox_seq.load(Ordering::SeqCst), 2);
    }
}
