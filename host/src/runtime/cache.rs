//! The compiled-component cache: wasmtime's serialized form of each component,
//! in `<data-dir>/compiled/<component sha256>-<engine hash>.cwasm`.
//!
//! The engine hash covers the wasmtime version and every engine setting that
//! changes generated code (`Engine::precompile_compatibility_hash`), so a host
//! upgrade or a config change never loads an incompatible artifact: it
//! compiles again under a new name. Files are written to a temporary name and
//! renamed, so a crash never leaves half an artifact under the real name; one
//! that fails to load anyway is compiled again and replaced.
//!
//! An artifact is native code the host runs: whoever can write to the
//! directory can make the host run anything. So the directory must belong to
//! the host's user and be closed to everyone else (mode 0700; one of ours
//! that is more open is tightened, one of someone else's is refused), a
//! symlinked directory or artifact is never followed, and temporary files
//! are created exclusively (`O_EXCL`, `O_NOFOLLOW`).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::LoadError;

/// Hex SHA-256 of a component's bytes: its name in the component store and
/// the compiled cache.
pub fn component_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// How often the cache saved a compilation.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CacheStats {
    /// Components loaded from their compiled artifact.
    pub hits: u64,
    /// Components compiled (and then stored).
    pub misses: u64,
}

pub(super) struct CompileCache {
    dir: PathBuf,
    engine_hash: String,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl CompileCache {
    pub(super) fn open(dir: &Path, engine: &Engine) -> anyhow::Result<CompileCache> {
        private_dir(dir)?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(CompileCache {
            dir: dir.to_path_buf(),
            engine_hash: format!("{:016x}", h.finish()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    pub(super) fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// The compiled component with `hash`, from disk if it is there, else
    /// from `compile` (and then stored).
    pub(super) fn get_or_compile(
        &self,
        engine: &Engine,
        hash: &str,
        compile: impl FnOnce() -> Result<Component, LoadError>,
    ) -> Result<Component, LoadError> {
        let path = self.dir.join(format!("{hash}-{}.cwasm", self.engine_hash));
        if let Some(bytes) = read_no_follow(&path) {
            // SAFETY: the bytes come from a regular file (not a symlink) in a
            // directory only the host's user can write, written there by
            // `Component::serialize` of an engine with the same compatibility
            // hash (it is in the name) and renamed into place only when
            // complete. wasmtime also checks the header and engine settings
            // and refuses a mismatch, which falls through to compiling again.
            #[allow(unsafe_code)]
            let loaded = unsafe { Component::deserialize(engine, &bytes) };
            match loaded {
                Ok(c) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(c);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "compiled artifact unusable; compiling again");
                }
            }
        }
        let component = compile()?;
        self.misses.fetch_add(1, Ordering::Relaxed);
        match component.serialize() {
            Ok(bytes) => {
                if let Err(e) = store(&path, &bytes) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot store the compiled component");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot serialize the compiled component"),
        }
        Ok(component)
    }
}

/// Make sure `dir` exists, is a real directory of this user's, and is closed
/// to everyone else.
#[cfg(unix)]
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let md = std::fs::symlink_metadata(dir)?;
    if md.file_type().is_symlink() || !md.is_dir() {
        anyhow::bail!(
            "compile-cache-dir {} is not a directory (a symlink is not followed)",
            dir.display()
        );
    }
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    let me = unsafe { libc::geteuid() };
    if md.uid() != me {
        anyhow::bail!(
            "compile-cache-dir {} belongs to uid {}, not to this host's user (uid {me}): the host runs the native code it finds there, so it must be the host's own",
            dir.display(),
            md.uid()
        );
    }
    if md.mode() & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), mode = format!("{:o}", md.mode() & 0o777), "compile-cache-dir was open to other users; closing it (0700)");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    Ok(())
}

/// The bytes of a regular file at `path`, never through a symlink.
fn read_no_follow(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NOFOLLOW);
    let mut f = opts.open(path).ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// Write `bytes` to a new temporary file beside `path` (created exclusively,
/// never through a symlink), then rename it into place.
fn store(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension(format!(
        "tmp{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NOFOLLOW);
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    }
    let res = opts.open(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    });
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_cache_dir_must_be_the_hosts_own_and_closed() {
        let engine = Engine::default();
        let root = tempfile::tempdir().unwrap();
        let open = root.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        CompileCache::open(&open, &engine).unwrap();
        let mode = std::fs::metadata(&open).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "tightened");

        let link = root.path().join("link");
        std::os::unix::fs::symlink(&open, &link).unwrap();
        let e = CompileCache::open(&link, &engine).err().unwrap();
        assert!(e.to_string().contains("symlink"), "{e}");

        // SAFETY: geteuid(2) has no preconditions.
        #[allow(unsafe_code)]
        if unsafe { libc::geteuid() } == 0 {
            // As root the test can give the directory to someone else.
            let theirs = root.path().join("theirs");
            std::fs::create_dir(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(54321), None).unwrap();
            let e = CompileCache::open(&theirs, &engine).err().unwrap();
            assert!(e.to_string().contains("uid 54321"), "{e}");
        }
    }

    #[test]
    fn artifacts_are_never_read_through_a_symlink() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("real.cwasm");
        std::fs::write(&real, b"planted").unwrap();
        let link = root.path().join("x.cwasm");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(read_no_follow(&real).as_deref(), Some(&b"planted"[..]));
        assert_eq!(read_no_follow(&link), None);
        // Storing replaces the link itself, not what it points to.
        store(&link, b"compiled").unwrap();
        assert_eq!(std::fs::read(&real).unwrap(), b"planted");
        assert_eq!(read_no_follow(&link).as_deref(), Some(&b"compiled"[..]));
    }
}
