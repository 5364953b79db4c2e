//! Finding and loading the handler of a queue.
//!
//! The seeds' naming rule, adapted to cargo: queue `my-queue-name` is served
//! by crate `my-queue-name-job`, whose artifact is `my_queue_name_job.wasm`,
//! looked up in the handlers directory. Config can map any queue to any
//! module file instead. Each module is loaded once per process.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::{Handler, Sandbox};
use crate::config::{Config, QueueSettings};
use crate::error::LoadError;
use crate::job::QueueName;

/// Queue name to loaded handler.
#[derive(Debug)]
pub struct HandlerRegistry {
    sandbox: Arc<Sandbox>,
    handlers_dir: PathBuf,
    config: Config,
    loaded: Mutex<HashMap<QueueName, Arc<Handler>>>,
    settings: Mutex<HashMap<QueueName, Arc<QueueSettings>>>,
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
        }
    }

    /// The sandbox handlers run in.
    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    /// The settings of `queue` (resolved once, then shared).
    pub fn settings(&self, queue: &QueueName) -> Arc<QueueSettings> {
        let mut cache = self.settings.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(queue.clone())
            .or_insert_with(|| Arc::new(self.config.queue(queue)))
            .clone()
    }

    /// Where the module of `queue` is: the config's mapping, else the
    /// naming rule in the handlers directory.
    pub fn module_path(&self, queue: &QueueName) -> PathBuf {
        self.settings(queue)
            .module
            .clone()
            .unwrap_or_else(|| self.handlers_dir.join(queue.handler_file_name()))
    }

    /// The handler of `queue`, loading it on first use.
    pub fn handler(&self, queue: &QueueName) -> Result<Arc<Handler>, LoadError> {
        if let Some(h) = self.lock().get(queue) {
            return Ok(h.clone());
        }
        let path = self.module_path(queue);
        if !path.is_file() {
            return Err(LoadError::NotFound {
                queue: queue.to_string(),
                file: queue.handler_file_name(),
                path,
            });
        }
        let handler = Arc::new(
            self.sandbox
                .load(&path, self.settings(queue).limits.clone())?,
        );
        self.lock().insert(queue.clone(), handler.clone());
        Ok(handler)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<QueueName, Arc<Handler>>> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }
}
