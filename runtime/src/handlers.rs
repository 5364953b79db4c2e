//! Finding and loading the handler of a queue.
//!
//! One handler per queue, found by name, adapted to cargo: queue `my-queue-name` is served
//! by crate `my-queue-name-job`, whose artifact is `my_queue_name_job.wasm`,
//! looked up in the handlers directory. Config can map any queue to any
//! module file instead. Each module is loaded once per process.
//!
//! Hot swap: [`HandlerRegistry::refresh`] (a worker calls it every second)
//! looks at each loaded module's file and loads it again when it changed.
//! A new version that fails to load is logged, naming the file, and the
//! old one keeps serving. A job takes its handler once, at its start, so it
//! runs entirely on one version.
//!
//! A module published through the backend (`runtime deploy`) is installed
//! with [`HandlerRegistry::install`] and takes the place of the queue's
//! file until it is withdrawn.
//!
//! A module file that fails to load is not tried again until it changes:
//! every job of its queue fails with the same reason at the cost of one
//! `stat`, so a compile bomb costs one compile, not one per job. Only one
//! job per queue loads at a time; the others wait for its handler.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::config::{Config, QueueSettings, TenantSettings};
use crate::error::LoadError;
use crate::job::{QueueName, TenantName};
use crate::sandbox::{Handler, Sandbox};

/// Queue name to loaded handler.
#[derive(Debug)]
pub struct HandlerRegistry {
    sandbox: Arc<Sandbox>,
    handlers_dir: PathBuf,
    config: Config,
    loaded: Mutex<HashMap<QueueName, Loaded>>,
    settings: Mutex<HashMap<QueueName, Arc<QueueSettings>>>,
    /// Per queue, the version of its file that failed to load, and why.
    failed: Mutex<HashMap<QueueName, (Stamp, LoadError)>>,
    /// Per queue, held by the job that is loading its handler.
    loading: Mutex<HashMap<QueueName, Arc<tokio::sync::Mutex<()>>>>,
}

impl HandlerRegistry {
    /// A registry looking in `handlers_dir`, with per-queue settings from
    /// `config`.
    pub fn new(sandbox: Arc<Sandbox>, handlers_dir: PathBuf, config: Config) -> Self {
        HandlerRegistry {
            sandbox,
            handlers_dir,
            config,
            loaded: Mutex::new(HashMap::new()),
            settings: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
            loading: Mutex::new(HashMap::new()),
        }
    }

    /// The sandbox handlers run in.
    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    /// The settings of `queue` (resolved once, then shared).
    pub fn settings(&self, queue: &QueueName) -> Arc<QueueSettings> {
        let mut cache = crate::sync::lock(&self.settings);
        cache
            .entry(queue.clone())
            .or_insert_with(|| Arc::new(self.config.queue(queue)))
            .clone()
    }

    /// The settings of `tenant` from the config.
    pub fn tenant_settings(&self, tenant: &TenantName) -> TenantSettings {
        self.config.tenant(tenant)
    }

    /// Where the module of `queue` is: the config's mapping, else the
    /// naming rule in the handlers directory.
    pub fn module_path(&self, queue: &QueueName) -> PathBuf {
        self.settings(queue)
            .module
            .clone()
            .unwrap_or_else(|| queue.handler_path(&self.handlers_dir))
    }

    /// The handler of `queue`, loading it on first use. Blocks while
    /// compiling: async callers use [`HandlerRegistry::handler_async`].
    pub fn handler(&self, queue: &QueueName) -> Result<Arc<Handler>, LoadError> {
        if let Some(handler) = self.loaded(queue) {
            return Ok(handler);
        }
        let (path, stamp) = self.file_to_load(queue)?;
        let loaded = self
            .sandbox
            .load(&path, self.settings(queue).limits.clone());
        self.loaded_file(queue, stamp, loaded)
    }

    /// Like [`HandlerRegistry::handler`], without blocking the calling
    /// async thread: the load runs on blocking threads and a compile slot,
    /// and jobs of the same queue that ask meanwhile wait for this load
    /// instead of starting their own.
    pub async fn handler_async(&self, queue: &QueueName) -> Result<Arc<Handler>, LoadError> {
        if let Some(handler) = self.loaded(queue) {
            return Ok(handler);
        }
        let gate = {
            let mut loading = crate::sync::lock(&self.loading);
            loading.entry(queue.clone()).or_default().clone()
        };
        let _turn = gate.lock().await;
        if let Some(handler) = self.loaded(queue) {
            return Ok(handler);
        }
        let (path, stamp) = self.file_to_load(queue)?;
        let loaded = self
            .sandbox
            .load_async(&path, self.settings(queue).limits.clone())
            .await;
        self.loaded_file(queue, stamp, loaded)
    }

    fn loaded(&self, queue: &QueueName) -> Option<Arc<Handler>> {
        self.lock().get(queue).map(|l| l.handler.clone())
    }

    /// Where the module of `queue` is and which version of the file it is;
    /// the error of its last load if that version failed before.
    fn file_to_load(&self, queue: &QueueName) -> Result<(PathBuf, Stamp), LoadError> {
        let path = self.module_path(queue);
        let Some(stamp) = Stamp::of(&path) else {
            return Err(LoadError::NotFound {
                queue: queue.clone(),
                path,
            });
        };
        let failed = crate::sync::lock(&self.failed);
        match failed.get(queue) {
            Some((seen, error)) if *seen == stamp => Err(error.clone()),
            _ => Ok((path, stamp)),
        }
    }

    /// Records how loading version `stamp` of the queue's file went.
    fn loaded_file(
        &self,
        queue: &QueueName,
        stamp: Stamp,
        loaded: Result<Handler, LoadError>,
    ) -> Result<Arc<Handler>, LoadError> {
        let mut failed = crate::sync::lock(&self.failed);
        match loaded {
            Ok(handler) => {
                failed.remove(queue);
                let handler = Arc::new(handler);
                let loaded = Loaded {
                    handler: handler.clone(),
                    seen: stamp,
                    deployed: None,
                };
                self.lock().insert(queue.clone(), loaded);
                Ok(handler)
            }
            Err(e) => {
                let e = e.for_queue(queue.as_str());
                if !e.may_pass_later() {
                    failed.insert(queue.clone(), (stamp, e.clone()));
                }
                Err(e)
            }
        }
    }

    /// Loads again every module whose file changed since it was loaded.
    /// A file that is gone or fails to load is logged, once per change,
    /// and the version already loaded keeps serving. Returns how many
    /// modules were swapped. Blocks while compiling: call it off the async
    /// threads.
    pub fn refresh(&self) -> usize {
        let candidates: Vec<(QueueName, PathBuf, Option<Stamp>)> = self
            .lock()
            .iter()
            .filter(|(_, loaded)| loaded.deployed.is_none())
            .filter_map(|(queue, loaded)| {
                let path = loaded.handler.path().to_path_buf();
                let now = Stamp::of(&path);
                (now.unwrap_or(Stamp::GONE) != loaded.seen).then(|| (queue.clone(), path, now))
            })
            .collect();
        let mut swapped = 0;
        for (queue, path, stamp) in candidates {
            let Some(stamp) = stamp else {
                tracing::error!(
                    queue = %queue,
                    file = %path.display(),
                    "handler module file is gone; still serving the version loaded before"
                );
                self.mark_seen(&queue, None);
                continue;
            };
            match self
                .sandbox
                .load(&path, self.settings(&queue).limits.clone())
                .map_err(|e| e.for_queue(queue.as_str()))
            {
                Ok(handler) => {
                    tracing::info!(queue = %queue, file = %path.display(), "handler module reloaded");
                    self.lock().insert(
                        queue,
                        Loaded {
                            handler: Arc::new(handler),
                            seen: stamp,
                            deployed: None,
                        },
                    );
                    swapped += 1;
                }
                Err(e) => {
                    tracing::error!(
                        queue = %queue,
                        file = %path.display(),
                        error = %e,
                        "new handler module cannot be loaded; still serving the version loaded before"
                    );
                    // Tried again next round if it may pass then.
                    if !e.may_pass_later() {
                        self.mark_seen(&queue, Some(stamp));
                    }
                }
            }
        }
        swapped
    }

    /// Installs the published module `version` of `queue`: it serves the
    /// queue's next jobs, in place of the module file, until withdrawn.
    /// Blocks while compiling.
    pub fn install(&self, queue: &QueueName, version: &str, bytes: &[u8]) -> Result<(), LoadError> {
        let short = version.get(..12).unwrap_or(version);
        let name = PathBuf::from(format!("deployed:{queue}@{short}"));
        let handler = self
            .sandbox
            .load_bytes(&name, bytes, self.settings(queue).limits.clone())
            .map_err(|e| e.for_queue(queue.as_str()))?;
        self.lock().insert(
            queue.clone(),
            Loaded {
                handler: Arc::new(handler),
                seen: Stamp::GONE,
                deployed: Some(version.to_string()),
            },
        );
        Ok(())
    }

    /// Drops a withdrawn published module: the queue's next job loads its
    /// module file again.
    pub fn withdraw(&self, queue: &QueueName) {
        let mut loaded = self.lock();
        if loaded.get(queue).is_some_and(|l| l.deployed.is_some()) {
            loaded.remove(queue);
        }
    }

    /// Remembers a version of the file as seen, so it is reported once.
    fn mark_seen(&self, queue: &QueueName, stamp: Option<Stamp>) {
        if let Some(loaded) = self.lock().get_mut(queue) {
            loaded.seen = stamp.unwrap_or(Stamp::GONE);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<QueueName, Loaded>> {
        crate::sync::lock(&self.loaded)
    }
}

impl LoadError {
    /// Whether loading the same bytes again may succeed: the file could
    /// not be read, or the compiler could not run. Anything about the
    /// module itself will not change until the module does.
    pub fn may_pass_later(&self) -> bool {
        matches!(self, LoadError::Read { .. } | LoadError::Compiler { .. })
    }
}

/// A loaded handler and where it came from: the version of its file last
/// looked at, or the published version.
#[derive(Debug)]
struct Loaded {
    handler: Arc<Handler>,
    seen: Stamp,
    deployed: Option<String>,
}

/// What tells one version of a file from another without reading it:
/// inode (a rename into place), size and modification time (a rewrite).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl Stamp {
    /// Stands for a file that was gone when last looked at.
    const GONE: Stamp = Stamp {
        inode: 0,
        len: 0,
        modified: None,
    };

    fn of(path: &Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
        Some(Stamp {
            inode: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}
