//! Compiled modules cached on disk, so a restart does not recompile.
//!
//! An entry's name is the SHA-256 of the module's bytes and a hash of the
//! engine's compatibility settings (wasmtime version, target, tunables), so
//! a changed module or engine simply misses. Entries are written to a
//! temporary file and renamed into place, so a crash never leaves half an
//! entry. Loading an entry maps native code into the process: the cache
//! directory must be writable only by the user the runtime runs as.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::LoadError;

#[derive(Debug)]
pub(super) struct ModuleCache {
    dir: PathBuf,
    engine_hash: u64,
}

impl ModuleCache {
    pub(super) fn new(dir: &Path, engine: &Engine) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        ModuleCache {
            dir: dir.to_path_buf(),
            engine_hash: hasher.finish(),
        }
    }

    fn entry(&self, bytes: &[u8]) -> PathBuf {
        let digest = Sha256::digest(bytes);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.dir
            .join(format!("{hex}-{:016x}.cwasm", self.engine_hash))
    }

    /// The cached compilation of `bytes`, or a fresh one (then cached).
    /// A cache that cannot be read or written only costs a compilation.
    pub(super) fn load_or_compile(
        &self,
        engine: &Engine,
        path: &Path,
        bytes: &[u8],
    ) -> Result<Component, LoadError> {
        let entry = self.entry(bytes);
        if entry.is_file() {
            // SAFETY: the entry was written by `Component::serialize` of this
            // engine configuration (its name carries both hashes) into a
            // directory only this user can write; wasmtime still checks its
            // header and version before using it.
            #[allow(unsafe_code)]
            let cached = unsafe { Component::deserialize_file(engine, &entry) };
            if let Ok(component) = cached {
                return Ok(component);
            }
        }
        let component = compile(engine, path, bytes)?;
        if let Ok(serialized) = component.serialize() {
            let _ = std::fs::create_dir_all(&self.dir);
            let tmp = entry.with_extension(format!("tmp{}", std::process::id()));
            if std::fs::write(&tmp, serialized).is_ok() && std::fs::rename(&tmp, &entry).is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
        }
        Ok(component)
    }
}

/// Compiles `bytes` with Cranelift.
pub(super) fn compile(engine: &Engine, path: &Path, bytes: &[u8]) -> Result<Component, LoadError> {
    Component::from_binary(engine, bytes).map_err(|e| LoadError::Invalid {
        path: path.to_path_buf(),
        message: format!("{e:#}"),
    })
}
