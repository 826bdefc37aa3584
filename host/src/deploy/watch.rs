//! The watched modules directory: which module directories changed and are
//! complete enough to deploy.
//!
//! A directory is looked at when its fingerprint (size and modification time
//! of `module.toml` and of the component it names) is the same in two scans
//! in a row and differs from the one last acted on. A module being copied in
//! file by file keeps changing until the copy ends, so it is not read
//! half-written; if a writer pauses longer than a scan interval, what is read
//! fails validation (a truncated component or manifest never loads) and the
//! directory is tried again when it changes. Each fingerprint is acted on
//! once, so a directory that stays broken is reported once, not every scan.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use super::lifecycle::{DeployRequest, Lifecycle};
use super::modules::Slot;
use crate::runtime::component_hash;
use crate::util::StoppableThread;

/// What identifies one state of a module directory.
type Fingerprint = Vec<(u64, Option<SystemTime>)>;

/// A module directory ready to deploy.
#[derive(Debug)]
pub struct Candidate {
    pub dir: PathBuf,
    /// `module.toml`'s text, and the component's bytes; or why they could not
    /// be read.
    pub content: Result<(String, Vec<u8>), String>,
}

/// Scan state across calls.
#[derive(Default)]
pub struct DirScanner {
    last_seen: HashMap<PathBuf, Fingerprint>,
    acted: HashMap<PathBuf, Fingerprint>,
}

fn stat(path: &Path) -> (u64, Option<SystemTime>) {
    match std::fs::metadata(path) {
        Ok(m) => (m.len(), m.modified().ok()),
        Err(_) => (u64::MAX, None),
    }
}

/// The component path a manifest names, read leniently (the manifest is
/// validated properly at deploy).
fn component_path(dir: &Path, manifest: &str) -> Option<PathBuf> {
    let v: toml::Table = toml::from_str(manifest).ok()?;
    Some(dir.join(v.get("component")?.as_str()?))
}

fn fingerprint(dir: &Path) -> Fingerprint {
    let manifest = dir.join("module.toml");
    let mut fp = vec![stat(&manifest)];
    if let Some(c) = std::fs::read_to_string(&manifest)
        .ok()
        .and_then(|t| component_path(dir, &t))
    {
        fp.push(stat(&c));
    }
    fp
}

fn read(dir: &Path) -> Result<(String, Vec<u8>), String> {
    let mpath = dir.join("module.toml");
    let manifest = std::fs::read_to_string(&mpath)
        .map_err(|e| format!("{}: cannot read manifest: {e}", mpath.display()))?;
    let cpath = component_path(dir, &manifest).ok_or_else(|| {
        format!(
            "{}: component: missing (the component file's name)",
            mpath.display()
        )
    })?;
    let bytes = std::fs::read(&cpath)
        .map_err(|e| format!("cannot read component {}: {e}", cpath.display()))?;
    Ok((manifest, bytes))
}

impl DirScanner {
    /// The module directories under `root` to deploy now. With `initial`
    /// (the scan at start) every directory not acted on yet is returned
    /// without waiting for a second look.
    pub fn scan(&mut self, root: &Path, initial: bool) -> Result<Vec<Candidate>, String> {
        let entries = std::fs::read_dir(root)
            .map_err(|e| format!("cannot read modules directory {}: {e}", root.display()))?;
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.join("module.toml").is_file())
            .collect();
        dirs.sort();
        let mut out = Vec::new();
        for dir in dirs {
            let fp = fingerprint(&dir);
            let stable = initial || self.last_seen.get(&dir) == Some(&fp);
            self.last_seen.insert(dir.clone(), fp.clone());
            if !stable || self.acted.get(&dir) == Some(&fp) {
                continue;
            }
            let content = read(&dir);
            // Read again: a change while reading means it is still being written.
            if !initial && fingerprint(&dir) != fp {
                continue;
            }
            self.acted.insert(dir.clone(), fp);
            out.push(Candidate { dir, content });
        }
        Ok(out)
    }
}

impl Lifecycle {
    /// A module directory found by the scanner: deploy it unless this exact
    /// content was deployed before (so a restart, or a rollback, is not undone
    /// by the files still lying there). A refusal is logged and shown on the
    /// module (or as a failed module).
    pub(crate) fn deploy_candidate(&self, c: Candidate) {
        let (manifest, component) = match c.content {
            Ok(content) => content,
            Err(e) => return self.note_refused(None, &c.dir, &e),
        };
        let name = toml::from_str::<toml::Table>(&manifest)
            .ok()
            .and_then(|t| t.get("name")?.as_str().map(str::to_owned));
        if let Some(n) = &name
            && let Ok(Some(rec)) = self.registry.get(n)
            && rec.has_content(&component_hash(&component), &manifest)
        {
            return;
        }
        let res = self.deploy(DeployRequest {
            manifest,
            component,
            source: format!("dir {}", c.dir.display()),
            start: None,
        });
        match res {
            Ok(o) => {
                tracing::info!(module = %o.module, action = o.action, version = %o.version, dir = %c.dir.display(), "modules directory");
                // An earlier refusal of this directory is over.
                self.modules
                    .forget_failed_from(&c.dir.display().to_string());
            }
            Err(e) => self.note_refused(name.as_deref(), &c.dir, &e.to_string()),
        }
    }

    /// Record why a deploy from `dir` was refused: on the running module if
    /// there is one, else as a failed module (named by the manifest, or by the
    /// directory when the manifest has no readable name).
    fn note_refused(&self, name: Option<&str>, dir: &Path, error: &str) {
        tracing::error!(dir = %dir.display(), error, "module directory not deployed");
        let name = name.map(str::to_owned).unwrap_or_else(|| {
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        if !self.modules.note_error(&name, error) {
            let failed = Slot::Failed {
                dir: dir.display().to_string(),
                error: error.to_string(),
            };
            self.modules.put(&name, failed);
        }
    }
}

/// Deploy what is new in `dir` now, then (with `interval`) go on scanning it
/// on a thread of its own until that thread is stopped.
pub(crate) fn load_and_watch(
    lifecycle: &Arc<Lifecycle>,
    dir: PathBuf,
    interval: Option<Duration>,
) -> Option<StoppableThread> {
    let mut scanner = DirScanner::default();
    match scanner.scan(&dir, true) {
        Ok(found) => found
            .into_iter()
            .for_each(|c| lifecycle.deploy_candidate(c)),
        Err(e) => tracing::error!(error = %e, "modules directory not loaded"),
    }
    let interval = interval?;
    let stop = Arc::new(AtomicBool::new(false));
    let weak = Arc::downgrade(lifecycle);
    let s = stop.clone();
    let thread = StoppableThread::spawn("sluice-watch".into(), stop, move || {
        while !s.load(Ordering::Relaxed) {
            let deadline = Instant::now() + interval;
            while Instant::now() < deadline && !s.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50).min(interval));
            }
            let Some(lifecycle) = weak.upgrade() else {
                return;
            };
            match scanner.scan(&dir, false) {
                Ok(found) => found
                    .into_iter()
                    .for_each(|c| lifecycle.deploy_candidate(c)),
                Err(e) => tracing::warn!(error = %e, "cannot scan the modules directory"),
            }
        }
    });
    match thread {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the modules-directory watcher");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_offered_once_after_it_stops_changing() {
        let root = tempfile::tempdir().unwrap();
        let mut s = DirScanner::default();
        assert!(s.scan(root.path(), true).unwrap().is_empty());
        let d = root.path().join("m");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("module.toml"), "component = \"m.wasm\"\n").unwrap();
        std::fs::write(d.join("m.wasm"), b"part").unwrap();
        // First sight: not yet (it may still be written).
        assert!(s.scan(root.path(), false).unwrap().is_empty());
        // Still being written: the component grew.
        std::fs::write(d.join("m.wasm"), b"partpart").unwrap();
        assert!(s.scan(root.path(), false).unwrap().is_empty());
        // Unchanged for a whole interval: offered, complete.
        let c = s.scan(root.path(), false).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].content.as_ref().unwrap().1, b"partpart");
        // And not again while it stays the same.
        assert!(s.scan(root.path(), false).unwrap().is_empty());
        assert!(s.scan(root.path(), false).unwrap().is_empty());
    }

    #[test]
    fn a_missing_component_is_reported_with_its_path() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("m");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("module.toml"), "component = \"m.wasm\"\n").unwrap();
        let c = DirScanner::default().scan(root.path(), true).unwrap();
        let e = c[0].content.as_ref().unwrap_err();
        assert!(e.contains("m.wasm"), "{e}");
    }
}
