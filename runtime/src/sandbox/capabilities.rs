//! What a guest can reach beyond its own instance, in one type:
//! [`Capabilities`]. Every attempt's host state holds one, and nothing else
//! of the host's: a guest that is given no capability reaches nothing.
//!
//! Two kinds of capability:
//! - dispatching follow-up jobs. The guest never sees the queue itself
//!   (claims, deletes, purges, the module store): the [`Dispatcher`] has
//!   one method, and the job queue is adapted to it by [`QueueDispatcher`];
//! - the queue's [`Grants`], which its config opens one by one: outbound
//!   HTTP to listed hosts, environment variables (settings and secrets),
//!   read-only directories.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::QueueError;
use crate::job::{JobId, Lineage, NewJob, TreeBudget};
use crate::queue::JobQueue;

use super::outbound::HttpGrant;

/// Where a guest's follow-up jobs go.
#[async_trait]
pub trait Dispatcher: Send + Sync + std::fmt::Debug + 'static {
    /// Enqueue `job` as a follow-up in `lineage`'s job tree, within
    /// `budget` (see [`JobQueue::dispatch_follow_up`]).
    async fn dispatch(
        &self,
        job: NewJob,
        lineage: Lineage,
        budget: TreeBudget,
    ) -> Result<JobId, QueueError>;
}

/// A job queue seen as a [`Dispatcher`]: follow-ups only.
#[derive(Debug, Clone)]
pub struct QueueDispatcher(pub Arc<dyn JobQueue>);

#[async_trait]
impl Dispatcher for QueueDispatcher {
    async fn dispatch(
        &self,
        job: NewJob,
        lineage: Lineage,
        budget: TreeBudget,
    ) -> Result<JobId, QueueError> {
        self.0.dispatch_follow_up(job, lineage, budget).await
    }
}

/// Everything an attempt may reach outside its instance. The default
/// grants nothing.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    /// Where follow-ups go; `None`: the guest's `dispatch` returns an
    /// error saying it is unavailable.
    pub dispatch: Option<Arc<dyn Dispatcher>>,
    /// What the job's queue grants.
    pub grants: Arc<Grants>,
}

impl Capabilities {
    /// Follow-ups go to `queue`.
    pub fn dispatch_to(queue: Arc<dyn JobQueue>) -> Self {
        Capabilities {
            dispatch: Some(Arc::new(QueueDispatcher(queue))),
            grants: Arc::default(),
        }
    }

    /// These capabilities with `grants` (a queue's) in place of their own.
    pub fn granting(&self, grants: Arc<Grants>) -> Self {
        Capabilities {
            dispatch: self.dispatch.clone(),
            grants,
        }
    }
}

/// What one queue's config opens to its handler. The default opens nothing:
/// every HTTP request is denied, the environment is empty, no directory is
/// visible.
#[derive(Clone, Default)]
pub struct Grants {
    /// Outbound HTTP.
    pub http: Arc<HttpGrant>,
    /// Environment variables, in order: `[queues.NAME.env]`. Values may be
    /// secrets: they reach the guest and nothing else (not `Debug`, not
    /// logs, not errors).
    pub env: Arc<[(String, String)]>,
    /// Directories the guest sees, read-only: `[queues.NAME.files]`.
    pub files: Arc<[Preopen]>,
}

impl fmt::Debug for Grants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grants")
            .field("http", &self.http)
            .field(
                "env",
                &self.env.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            )
            .field("files", &self.files)
            .finish()
    }
}

/// A host directory the guest sees at `guest`, read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preopen {
    /// Where the guest sees it, e.g. `/templates`.
    pub guest: String,
    /// The directory on the host.
    pub host: PathBuf,
}
