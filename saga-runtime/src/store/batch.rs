//! Group commit: the creates and checkpoints of concurrent sagas are gathered into shared
//! transactions and multi-row statements, so that the database pays one commit (and, on
//! SQLite, one statement round trip per kind of row) for many sagas.
//!
//! Each caller still waits for its own write to commit before its saga goes on: batching
//! changes how writes are grouped, never their order or durability. A writer takes what is
//! queued when it becomes free (it does not wait for more unless `max_wait` says so), so a
//! lone saga pays nothing but a channel hop.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, oneshot};

use super::{Checkpoint, Created, NewSaga, Saved};
use crate::definition::BoxFuture;
use crate::error::StoreError;

/// Group-commit settings of a SQL store.
///
/// ```
/// use saga_runtime::store::GroupCommit;
/// use std::time::Duration;
///
/// let settings = GroupCommit::default().max_batch(200).max_wait(Duration::from_micros(200)).writers(2);
/// # let _ = settings;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupCommit {
    /// Most writes in one transaction. Default 500; 1 turns batching off.
    pub max_batch: usize,
    /// How long a writer waits for more writes once it has some. Default 0: it takes what
    /// is queued and goes, so a lone saga is not slowed down.
    pub max_wait: Duration,
    /// Transactions in flight at once. Default 1 (SQLite has one writer anyway); more can
    /// help PostgreSQL.
    pub writers: usize,
}

impl Default for GroupCommit {
    fn default() -> Self {
        GroupCommit {
            max_batch: 500,
            max_wait: Duration::ZERO,
            writers: 1,
        }
    }
}

impl GroupCommit {
    /// Sets `max_batch` (at least 1).
    #[must_use]
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    /// Sets `max_wait`.
    #[must_use]
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Sets `writers` (at least 1).
    #[must_use]
    pub fn writers(mut self, writers: usize) -> Self {
        self.writers = writers.max(1);
        self
    }
}

/// One write.
#[derive(Debug)]
pub(crate) enum Op {
    Create(NewSaga),
    Save(Checkpoint),
}

/// Its result.
#[derive(Debug)]
pub(crate) enum Reply {
    Created(Created),
    Saved(Saved),
}

/// A store's batch writer: all of `ops` in one transaction, one result per op in order;
/// `Err` only when the transaction as a whole failed.
pub(crate) trait BatchBackend: Send + Sync + 'static {
    fn write<'a>(
        &'a self,
        ops: &'a [Op],
    ) -> BoxFuture<'a, Result<Vec<Result<Reply, StoreError>>, StoreError>>;
}

/// The per-op results a backend filled in, in order; an op left without one (a backend
/// bug, not a database answer) gets an error instead of a panic.
pub(crate) fn replies(
    results: Vec<Option<Result<Reply, StoreError>>>,
) -> Vec<Result<Reply, StoreError>> {
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(StoreError::Invalid {
                    what: "batch",
                    reason: "a write got no result".into(),
                })
            })
        })
        .collect()
}

struct Pending {
    op: Op,
    reply: oneshot::Sender<Result<Reply, StoreError>>,
}

/// The queue in front of a store's writers. Writers start on first use, inside the
/// caller's runtime.
pub(crate) struct Committer {
    backend: Arc<dyn BatchBackend>,
    settings: GroupCommit,
    queue: OnceLock<mpsc::UnboundedSender<Pending>>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Committer {
    pub(crate) fn new(backend: Arc<dyn BatchBackend>, settings: GroupCommit) -> Self {
        Committer {
            backend,
            settings,
            queue: OnceLock::new(),
        }
    }

    fn queue(&self) -> &mpsc::UnboundedSender<Pending> {
        self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let rx = Arc::new(Mutex::new(rx));
            for _ in 0..self.settings.writers.max(1) {
                tokio::spawn(writer(self.backend.clone(), rx.clone(), self.settings));
            }
            tx
        })
    }

    /// Creates a saga in the next batch and waits for its commit.
    pub(crate) async fn create(&self, saga: NewSaga) -> Result<Created, StoreError> {
        match self.submit(Op::Create(saga)).await? {
            Reply::Created(created) => Ok(created),
            Reply::Saved(_) => Err(wrong_reply()),
        }
    }

    /// Writes a checkpoint in the next batch and waits for its commit.
    pub(crate) async fn save(&self, checkpoint: Checkpoint) -> Result<Saved, StoreError> {
        match self.submit(Op::Save(checkpoint)).await? {
            Reply::Saved(saved) => Ok(saved),
            Reply::Created(_) => Err(wrong_reply()),
        }
    }

    /// Writes `op` in the next batch and waits for its commit.
    async fn submit(&self, op: Op) -> Result<Reply, StoreError> {
        if self.settings.max_batch <= 1 {
            return write_alone(&*self.backend, op).await;
        }
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(pending)) = self.queue().send(Pending { op, reply }) {
            // The writers are gone (their runtime shut down): write directly.
            return write_alone(&*self.backend, pending.op).await;
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Invalid {
                what: "store writer",
                reason:
                    "the writer stopped before answering; the write may or may not have committed"
                        .into(),
            })
        })
    }
}

/// A batch answered a create with a save's result or the other way round (a bug).
fn wrong_reply() -> StoreError {
    StoreError::Invalid {
        what: "batch result",
        reason: "the writer answered with the result of another kind of write".into(),
    }
}

async fn write_alone(backend: &dyn BatchBackend, op: Op) -> Result<Reply, StoreError> {
    let ops = [op];
    let mut results = backend.write(&ops).await?;
    results.pop().unwrap_or_else(|| {
        Err(StoreError::Invalid {
            what: "batch result",
            reason: "the store answered no result".into(),
        })
    })
}

async fn writer(
    backend: Arc<dyn BatchBackend>,
    queue: Arc<Mutex<mpsc::UnboundedReceiver<Pending>>>,
    settings: GroupCommit,
) {
    loop {
        let mut batch: Vec<Pending> = Vec::new();
        {
            let mut rx = queue.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            batch.push(first);
            while batch.len() < settings.max_batch {
                match rx.try_recv() {
                    Ok(pending) => batch.push(pending),
                    Err(_) => break,
                }
            }
            if !settings.max_wait.is_zero() && batch.len() < settings.max_batch {
                let deadline = tokio::time::Instant::now() + settings.max_wait;
                while batch.len() < settings.max_batch {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(pending)) => batch.push(pending),
                        _ => break,
                    }
                }
            }
        }
        commit(&*backend, batch).await;
    }
}

/// Writes a batch; if the shared transaction fails, each write is retried on its own so
/// that one bad write cannot fail the others.
async fn commit(backend: &dyn BatchBackend, batch: Vec<Pending>) {
    let (ops, replies): (Vec<Op>, Vec<_>) = batch.into_iter().map(|p| (p.op, p.reply)).unzip();
    match backend.write(&ops).await {
        Ok(results) if results.len() == ops.len() => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        Ok(_) | Err(_) if ops.len() > 1 => {
            for (op, reply) in ops.into_iter().zip(replies) {
                let _ = reply.send(write_alone(backend, op).await);
            }
        }
        Ok(_) => {
            for reply in replies {
                let _ = reply.send(Err(StoreError::Invalid {
                    what: "batch result",
                    reason: "the store answered the wrong number of results".into(),
                }));
            }
        }
        Err(error) => {
            let message = error.to_string();
            let mut replies = replies.into_iter();
            if let Some(first) = replies.next() {
                let _ = first.send(Err(error));
            }
            for reply in replies {
                let _ = reply.send(Err(StoreError::Invalid {
                    what: "batch",
                    reason: message.clone(),
                }));
            }
        }
    }
}
