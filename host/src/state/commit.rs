//! The commit builder: the one `WriteBatch` that holds a group of events'
//! effects (state writes, idempotency marks with their expiry index, the
//! module's cursor, outbox entries), written atomically.

use std::sync::atomic::Ordering;

use rocksdb::WriteBatch;

use super::{
    CF_CURSOR, CF_DEDUP, CF_DEDUP_EXP, CF_META, CF_OUTBOX, CF_STATE, Store, StoreError, cursor_key,
    module_prefix, quarantine_key, state_key,
};

/// Builds the one `WriteBatch` that commits a group of events' effects.
pub struct Commit<'s> {
    store: &'s Store,
    batch: WriteBatch,
    outbox: Vec<Vec<u8>>,
    /// Idempotency marks of this commit by expiry, for one index entry each.
    marks: Vec<(u64, Vec<u8>)>,
}

impl<'s> Commit<'s> {
    /// An empty commit.
    pub fn new(store: &'s Store) -> Self {
        Commit {
            store,
            batch: WriteBatch::default(),
            outbox: Vec::new(),
            marks: Vec::new(),
        }
    }
    /// Write or delete a state key.
    pub fn state(&mut self, module: &str, partition: u32, key: &[u8], value: Option<&[u8]>) {
        let k = state_key(module, partition, key);
        match value {
            Some(v) => self.batch.put_cf(self.store.cf(CF_STATE), k, v),
            None => self.batch.delete_cf(self.store.cf(CF_STATE), k),
        }
    }
    /// Mark an event applied until `expiry_ms`.
    pub fn mark_applied(&mut self, dedup_key: &[u8], expiry_ms: u64) {
        self.batch
            .put_cf(self.store.cf(CF_DEDUP), dedup_key, expiry_ms.to_be_bytes());
        self.marks.push((expiry_ms, dedup_key.to_vec()));
    }
    /// Set a cursor.
    pub fn cursor(&mut self, module: &str, topic: &str, partition: u32, next: u64) {
        self.batch.put_cf(
            self.store.cf(CF_CURSOR),
            cursor_key(module, topic, partition),
            next.to_be_bytes(),
        );
    }
    /// Remember (or forget) that `module` is quarantined.
    pub fn quarantine(&mut self, module: &str, on: bool) {
        let (cf, key) = (self.store.cf(CF_META), quarantine_key(module));
        if on {
            self.batch.put_cf(cf, key, b"1");
        } else {
            self.batch.delete_cf(cf, key);
        }
    }

    /// Delete a module's state and idempotency marks, and with `cursors` also
    /// its cursors and quarantine mark (what `undeploy --purge` and `rewind
    /// --reset-state` throw away). Writes after this one in the same commit
    /// (a rewind's new cursors) stand. The module must not be running.
    pub fn forget_module(&mut self, module: &str, cursors: bool) {
        let from = module_prefix(module);
        let mut to = from.clone();
        *to.last_mut().expect("prefix ends with 0") = 1;
        let mut families = vec![CF_STATE, CF_DEDUP];
        if cursors {
            families.push(CF_CURSOR);
            self.quarantine(module, false);
        }
        for cf in families {
            self.batch.delete_range_cf(self.store.cf(cf), &from, &to);
        }
        // Expiry entries of deleted marks are left for the sweep, which skips
        // marks that are gone.
    }

    /// Queue an event frame for the relay.
    pub fn outbox(&mut self, module: &str, frame: &[u8]) {
        let mut v = Vec::with_capacity(4 + module.len() + frame.len());
        v.extend_from_slice(&(module.len() as u32).to_be_bytes());
        v.extend_from_slice(module.as_bytes());
        v.extend_from_slice(frame);
        self.outbox.push(v);
    }
    /// The finished batch, for a caller that adds more writes (the embedded
    /// log appends a module's outputs to it). Outbox entries need [`commit`](Self::commit).
    pub fn into_batch(mut self) -> WriteBatch {
        debug_assert!(
            self.outbox.is_empty(),
            "outbox entries are written by commit()"
        );
        self.index_marks();
        self.batch
    }

    /// One expiry-index entry per commit (not per event): key `expiry | first
    /// mark`, value the marks' keys, each `u32 len | key`. The sweep reads it
    /// back to delete the marks.
    fn index_marks(&mut self) {
        let marks = std::mem::take(&mut self.marks);
        let Some((expiry, first)) = marks.first() else {
            return;
        };
        let mut k = Vec::with_capacity(8 + first.len());
        k.extend_from_slice(&expiry.to_be_bytes());
        k.extend_from_slice(first);
        let mut v = Vec::with_capacity(marks.iter().map(|(_, m)| m.len() + 12).sum());
        for (e, m) in &marks {
            v.extend_from_slice(&e.to_be_bytes());
            v.extend_from_slice(&(m.len() as u32).to_be_bytes());
            v.extend_from_slice(m);
        }
        self.batch.put_cf(self.store.cf(CF_DEDUP_EXP), k, v);
    }

    /// Write it all, atomically.
    pub fn commit(mut self) -> Result<(), StoreError> {
        self.index_marks();
        if self.outbox.is_empty() {
            return self.store.write(self.batch);
        }
        // Sequence numbers are taken and written under one lock, so a lower
        // number is never committed after a higher one.
        let _order = self
            .store
            .outbox_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let cf = self.store.cf(CF_OUTBOX);
        let first = self.store.outbox_seq.load(Ordering::SeqCst);
        for (i, v) in self.outbox.iter().enumerate() {
            self.batch.put_cf(cf, (first + i as u64).to_be_bytes(), v);
        }
        self.store.write(self.batch)?;
        self.store
            .outbox_seq
            .store(first + self.outbox.len() as u64, Ordering::SeqCst);
        Ok(())
    }
}
