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
use std::time::SystemTime;

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
