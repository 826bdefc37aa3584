//! The module's durable key-value state, scoped to (module, partition).
//!
//! Reads see the current event's own writes; writes are committed together with
//! the event's idempotency mark and cursor only if the handler returns `Ok`.
//!
//! ```
//! # sluice_guest::testing::TestHost::install();
//! use sluice_guest::state;
//! state::set_json("total/c1", &42u64)?;
//! assert_eq!(state::get_json::<u64>("total/c1")?, Some(42));
//! # Ok::<(), sluice_guest::Failure>(())
//! ```

use crate::{Failure, Result, backend};
use serde::{Serialize, de::DeserializeOwned};

/// One page of a scan from the host: entries, and the key to continue after.
pub(crate) type Page = (Vec<(Vec<u8>, Vec<u8>)>, Option<Vec<u8>>);

/// Raw bytes stored under `key`.
pub fn get(key: impl AsRef<[u8]>) -> Option<Vec<u8>> {
    backend::state_get(key.as_ref())
}

/// Store raw bytes under `key`.
pub fn set(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result {
    backend::state_set(key.as_ref(), value.as_ref())
}

/// Remove `key`.
pub fn delete(key: impl AsRef<[u8]>) {
    backend::state_delete(key.as_ref())
}

/// The JSON value stored under `key`. A stored value that does not parse as `T`
/// is a reject (retrying would not change it).
pub fn get_json<T: DeserializeOwned>(key: impl AsRef<[u8]>) -> Result<Option<T>> {
    let key = key.as_ref();
    match get(key) {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Failure::Reject(format!(
                "state key {:?} does not hold the expected JSON: {e}",
                String::from_utf8_lossy(key)
            ))
        }),
    }
}

/// Store `value` as JSON under `key`.
pub fn set_json<T: Serialize + ?Sized>(key: impl AsRef<[u8]>, value: &T) -> Result {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| Failure::Reject(format!("cannot serialize state value: {e}")))?;
    set(key, bytes)
}

/// All `(key, value)` pairs whose key starts with `prefix`, in key order,
/// fetched from the host a page at a time.
pub fn scan_prefix(prefix: impl AsRef<[u8]>) -> Scan {
    Scan {
        prefix: prefix.as_ref().to_vec(),
        page: Vec::new().into_iter(),
        next: None,
        done: false,
    }
}

/// Iterator returned by [`scan_prefix`].
pub struct Scan {
    prefix: Vec<u8>,
    page: std::vec::IntoIter<(Vec<u8>, Vec<u8>)>,
    next: Option<Vec<u8>>,
    done: bool,
}

const PAGE: u32 = 256;

impl Iterator for Scan {
    type Item = (Vec<u8>, Vec<u8>);
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.page.next() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            let (entries, next) = backend::state_scan(&self.prefix, self.next.as_deref(), PAGE);
            self.done = next.is_none();
            self.next = next;
            self.page = entries.into_iter();
        }
    }
}
