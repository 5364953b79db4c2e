//! What a guest can reach beyond its own instance, in one type:
//! [`Capabilities`]. Every attempt's host state holds one, and nothing else
//! of the host's: a guest that is given no capability reaches nothing.
//!
//! Today the only capability is dispatching follow-up jobs. The guest never
//! sees the queue itself (claims, deletes, purges, the module store): the
//! [`Dispatcher`] has one method, and the job queue is adapted to it by
//! [`QueueDispatcher`].

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::QueueError;
use crate::job::{JobId, Lineage, NewJob, TreeBudget};
use crate::queue::JobQueue;

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
}

impl Capabilities {
    /// Follow-ups go to `queue`.
    pub fn dispatch_to(queue: Arc<dyn JobQueue>) -> Self {
        Capabilities {
            dispatch: Some(Arc::new(QueueDispatcher(queue))),
        }
    }
}
