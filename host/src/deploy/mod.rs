//! What is deployed, durably: the content-addressed component store and the
//! module registry.
//!
//! Every deploy, upgrade and rollback becomes a [`Revision`] of its module:
//! the manifest text as it was submitted and the SHA-256 of the component,
//! whose bytes live once in `<data-dir>/components/<sha256>.wasm`. The
//! registry record (`module/<name>` in the `meta` column family) keeps every
//! revision, which one runs now, and whether the module is paused. At start
//! the host runs what the registry says; the modules directory only adds
//! revisions it has not seen (see [`watch`]).
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the registry and the component store |
//! | `lifecycle.rs` | the operations: deploy, upgrade, rollback, pause, resume, undeploy |
//! | `rewind.rs` | rewind: read a module's inputs again |
//! | `modules.rs` | the modules a host has, one slot each, and the one place pipelines start |
//! | `status.rs` | typed status views of modules and the host |
//! | `watch.rs` | the watched modules directory |

pub mod lifecycle;
mod modules;
mod rewind;
pub mod status;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::state::{Store, StoreError};

/// One deployed version of a module.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Revision {
    /// 1, 2, ... per module.
    pub revision: u32,
    /// The manifest's `version`.
    pub version: String,
    /// SHA-256 of the component (its name in the component store).
    pub component: String,
    /// The manifest text as submitted.
    pub manifest: String,
    /// Where it came from: `api`, `dir <path>`, `rollback to revision N`.
    pub source: String,
    /// Unix milliseconds.
    pub deployed_at_ms: u64,
    /// Start position given at deploy, overriding the manifest's.
    #[serde(default)]
    pub start: Option<String>,
}

impl Revision {
    /// Whether `self` is the same build and manifest as `(component, manifest)`.
    pub fn same_content(&self, component: &str, manifest: &str) -> bool {
        self.component == component && self.manifest == manifest
    }
}

/// A module's registry record.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ModuleRecord {
    pub name: String,
    /// Oldest first.
    pub revisions: Vec<Revision>,
    /// The revision that runs; `None` once undeployed.
    pub current: Option<u32>,
    /// Paused by an operator (kept across restarts).
    #[serde(default)]
    pub paused: bool,
}

impl ModuleRecord {
    /// A record with no revisions yet.
    pub fn new(name: &str) -> ModuleRecord {
        ModuleRecord {
            name: name.into(),
            ..Default::default()
        }
    }

    /// The revision that runs now.
    pub fn current(&self) -> Option<&Revision> {
        let n = self.current?;
        self.revisions.iter().find(|r| r.revision == n)
    }

    /// Append a revision and make it current; returns its number.
    pub fn push(&mut self, mut rev: Revision) -> u32 {
        let n = self.revisions.last().map_or(1, |r| r.revision + 1);
        rev.revision = n;
        self.revisions.push(rev);
        self.current = Some(n);
        n
    }

    /// Whether any revision has exactly this content.
    pub fn has_content(&self, component: &str, manifest: &str) -> bool {
        self.revisions
            .iter()
            .any(|r| r.same_content(component, manifest))
    }

    /// The revision to roll back to: the newest one with `version` (if
    /// given), else the newest one older than the current revision whose
    /// content differs from it.
    pub fn rollback_target(&self, version: Option<&str>) -> Result<&Revision, String> {
        let cur = self.current();
        let differs =
            |r: &&Revision| cur.is_none_or(|c| !r.same_content(&c.component, &c.manifest));
        match version {
            Some(v) => self
                .revisions
                .iter()
                .rev()
                .filter(|r| r.version == v)
                .find(differs)
                .ok_or_else(|| {
                    let known: Vec<&str> =
                        self.revisions.iter().map(|r| r.version.as_str()).collect();
                    format!(
                        "module `{}` has no other revision with version `{v}` (known versions: {})",
                        self.name,
                        known.join(", ")
                    )
                }),
            None => {
                let below = cur.map_or(u32::MAX, |c| c.revision);
                self.revisions
                    .iter()
                    .rev()
                    .filter(|r| r.revision < below)
                    .find(differs)
                    .ok_or_else(|| {
                        format!(
                            "module `{}` has no earlier revision to roll back to",
                            self.name
                        )
                    })
            }
        }
    }
}

const RECORD_PREFIX: &str = "module/";

/// Module records in the host's database.
pub struct Registry {
    store: Arc<Store>,
}

impl Registry {
    pub fn new(store: Arc<Store>) -> Registry {
        Registry { store }
    }

    /// Every module record, by name.
    pub fn all(&self) -> Result<Vec<ModuleRecord>, String> {
        self.store
            .meta_scan(RECORD_PREFIX)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(k, v)| {
                serde_json::from_slice(&v).map_err(|e| format!("registry record {k}: {e}"))
            })
            .collect()
    }

    /// One module's record.
    pub fn get(&self, name: &str) -> Result<Option<ModuleRecord>, String> {
        let key = format!("{RECORD_PREFIX}{name}");
        match self.store.meta_get(&key).map_err(|e| e.to_string())? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| format!("registry record {key}: {e}")),
        }
    }

    /// Store a record (synced).
    pub fn put(&self, rec: &ModuleRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(rec).expect("records serialize");
        self.store
            .meta_put(&format!("{RECORD_PREFIX}{}", rec.name), &bytes)
    }
}

/// Components by SHA-256, each stored once: `<dir>/<sha256>.wasm`.
pub struct ComponentStore {
    dir: PathBuf,
}

impl ComponentStore {
    /// Open (and create) the store in `dir`.
    pub fn open(dir: &Path) -> std::io::Result<ComponentStore> {
        std::fs::create_dir_all(dir)?;
        Ok(ComponentStore {
            dir: dir.to_path_buf(),
        })
    }

    /// Where the component with `hash` lives.
    pub fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(format!("{hash}.wasm"))
    }

    /// Store `bytes` under `hash` (written to a temporary name, synced and
    /// renamed, so a crash never leaves a partial component under its hash).
    pub fn put(&self, hash: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.path(hash);
        if path.is_file() {
            return Ok(());
        }
        let tmp = self.dir.join(format!(".{hash}.{}.tmp", std::process::id()));
        let res = (|| {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res
    }

    /// The bytes of the component with `hash`.
    pub fn read(&self, hash: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.path(hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(version: &str, component: &str) -> Revision {
        Revision {
            revision: 0,
            version: version.into(),
            component: component.into(),
            manifest: format!("version = \"{version}\""),
            source: "api".into(),
            deployed_at_ms: 0,
            start: None,
        }
    }

    #[test]
    fn rollback_picks_the_previous_different_revision_or_the_named_version() {
        let mut r = ModuleRecord::new("m");
        r.push(rev("1.0.0", "a"));
        r.push(rev("2.0.0", "b"));
        assert_eq!(r.rollback_target(None).unwrap().version, "1.0.0");
        assert_eq!(r.rollback_target(Some("1.0.0")).unwrap().revision, 1);
        let e = r.rollback_target(Some("3.0.0")).unwrap_err();
        assert!(e.contains("known versions: 1.0.0, 2.0.0"), "{e}");
        // Rolled back (revision 3 = content of 1): the previous different one is 2.
        let back = r.rollback_target(None).unwrap().clone();
        r.push(back);
        assert_eq!(r.current().unwrap().revision, 3);
        assert_eq!(r.rollback_target(None).unwrap().version, "2.0.0");
        assert!(r.has_content("a", "version = \"1.0.0\""));
        assert!(!r.has_content("c", "version = \"1.0.0\""));
        let mut only = ModuleRecord::new("m");
        only.push(rev("1.0.0", "a"));
        assert!(only.rollback_target(None).is_err());
    }

    #[test]
    fn components_are_stored_once_by_hash() {
        let dir = tempfile::tempdir().unwrap();
        let s = ComponentStore::open(dir.path()).unwrap();
        s.put("abc", b"one").unwrap();
        s.put("abc", b"one").unwrap();
        assert_eq!(s.read("abc").unwrap(), b"one");
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 1, "one file, no temporary left behind");
    }
}
