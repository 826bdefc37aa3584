//! The compiled-component cache: wasmtime's serialized form of each component,
//! in `<data-dir>/compiled/<component sha256>-<engine hash>.cwasm`.
//!
//! The engine hash covers the wasmtime version and every engine setting that
//! changes generated code (`Engine::precompile_compatibility_hash`), so a host
//! upgrade or a config change never loads an incompatible artifact: it
//! compiles again under a new name. Files are written to a temporary name and
//! renamed, so a crash never leaves half an artifact under the real name; one
//! that fails to load anyway is compiled again and replaced.

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
        std::fs::create_dir_all(dir)?;
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
        if path.is_file() {
            // SAFETY: the file was written by `Component::serialize` of an
            // engine with the same compatibility hash (it is in the name), into
            // the host's own data directory, and renamed into place only when
            // complete. wasmtime also checks the header and engine settings and
            // refuses a mismatch, which falls through to compiling again.
            #[allow(unsafe_code)]
            let loaded = unsafe { Component::deserialize_file(engine, &path) };
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
                let tmp = path.with_extension(format!("tmp{}", std::process::id()));
                let written =
                    std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &path));
                if let Err(e) = written {
                    let _ = std::fs::remove_file(&tmp);
                    tracing::warn!(path = %path.display(), error = %e, "cannot store the compiled component");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot serialize the compiled component"),
        }
        Ok(component)
    }
}
