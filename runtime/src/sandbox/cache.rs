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

use wasmtime::Engine;
use wasmtime::component::Component;

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

    /// The entry of the module whose SHA-256 is `sha`.
    fn entry(&self, sha: &[u8; 32]) -> PathBuf {
        let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
        self.dir
            .join(format!("{hex}-{:016x}.cwasm", self.engine_hash))
    }

    /// The cached compilation of the module whose SHA-256 is `sha`, if
    /// there is a usable one.
    pub(super) fn load(&self, engine: &Engine, sha: &[u8; 32]) -> Option<Component> {
        let entry = self.entry(sha);
        if !entry.is_file() {
            return None;
        }
        // SAFETY: the entry was written by `store` with the output of this
        // engine configuration's compiler (its name carries both hashes)
        // into a directory only this user can write; wasmtime still checks
        // its header and version before using it.
        #[allow(unsafe_code)]
        let cached = unsafe { Component::deserialize_file(engine, &entry) };
        cached.ok()
    }

    /// Keeps `artifact`, the compilation of the module whose SHA-256 is
    /// `sha`. A cache that cannot be written only costs a compilation
    /// next time.
    pub(super) fn store(&self, sha: &[u8; 32], artifact: &[u8]) {
        let entry = self.entry(sha);
        let _ = std::fs::create_dir_all(&self.dir);
        let tmp = entry.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, artifact).is_err() || std::fs::rename(&tmp, &entry).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}
