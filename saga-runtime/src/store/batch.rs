//! Group commit: the creates and checkpoints of concurrent sagas are gathered into shared
//! transactions and multi-row statements, so that the database pays one commit (and, on
//! SQLite, one statement round trip per kind of row) for many sagas.
//!
//! Each caller still waits for its own write to commit before its saga goes on: batching
//! changes how writes are grouped, never their order or durability. A writer takes what is
//! queued when it becomes free (it does not wait for more unless `max_wait` says so), so a
//! lone saga pays nothing but a channel hop.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, Notify, mpsc, oneshot};

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
    /// Transactions in flight at once. The first writer gathers whatever is queued into
    /// one commit; each further one commits beside it only while a backlog of 64 writes
    /// waits, so that a few concurrent sagas still share one commit. Default 1 (SQLite
    /// has one writer anyway); `PostgresStore` uses 2.
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

/// What a store's group commit has done since it opened: how many transactions, how many
/// writes they carried, and how long they took. Writes per batch and time per batch tell
/// whether concurrent sagas share their commits.
///
/// ```
/// # async fn demo() -> Result<(), saga_runtime::StoreError> {
/// let store = saga_runtime::store::SqliteStore::open("sagas.db").await?;
/// let stats = store.group_commit_stats();
/// println!("{} writes in {} batches", stats.writes, stats.batches);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupCommitStats {
    /// Transactions committed (or attempted) by the writers.
    pub batches: u64,
    /// Writes (creates and checkpoints) they carried.
    pub writes: u64,
    /// Time spent in those transactions, from sending to the answer.
    pub busy: Duration,
}

impl GroupCommitStats {
    /// Mean writes per transaction (0 before the first).
    #[must_use]
    pub fn writes_per_batch(&self) -> f64 {
        if self.batches == 0 {
            0.0
        } else {
            self.writes as f64 / self.batches as f64
        }
    }

    /// Mean time per transaction.
    #[must_use]
    pub fn time_per_batch(&self) -> Duration {
        u32::try_from(self.batches)
            .ok()
            .and_then(|batches| self.busy.checked_div(batches))
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    writes: AtomicU64,
    busy_micros: AtomicU64,
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
    queue: OnceLock<(mpsc::UnboundedSender<Pending>, Arc<Shared>)>,
    counters: Arc<Counters>,
}

/// What the writers share: the queue's receiving end, and what the extra writers watch.
struct Shared {
    rx: Mutex<mpsc::UnboundedReceiver<Pending>>,
    /// Writes sent and not yet taken by a writer.
    queued: AtomicUsize,
    /// Wakes an extra writer when `queued` reaches [`BACKLOG`], or when the queue closed.
    backlog: Notify,
    closed: AtomicBool,
}

/// Writes waiting before an extra writer starts a transaction beside the first one. Below
/// it, one writer gathering everything into one commit is faster: concurrent sagas then
/// share a commit instead of splitting into groups that each pay for their own.
const BACKLOG: usize = 64;

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
            counters: Arc::default(),
        }
    }

    /// What the writers have done so far.
    pub(crate) fn stats(&self) -> GroupCommitStats {
        let counters = &self.counters;
        GroupCommitStats {
            batches: counters.batches.load(Ordering::Relaxed),
            writes: counters.writes.load(Ordering::Relaxed),
            busy: Duration::from_micros(counters.busy_micros.load(Ordering::Relaxed)),
        }
    }

    fn queue(&self) -> &(mpsc::UnboundedSender<Pending>, Arc<Shared>) {
        self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let shared = Arc::new(Shared {
                rx: Mutex::new(rx),
                queued: AtomicUsize::new(0),
                backlog: Notify::new(),
                closed: AtomicBool::new(false),
            });
            let writer_of = |shared: &Arc<Shared>| Writer {
                backend: self.backend.clone(),
                shared: shared.clone(),
                settings: self.settings,
                counters: self.counters.clone(),
            };
            tokio::spawn(writer(writer_of(&shared)));
            for _ in 1..self.settings.writers.max(1) {
                tokio::spawn(extra_writer(writer_of(&shared)));
            }
            (tx, shared)
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
        let (queue, shared) = self.queue();
        // Counted before it is sent, so that a writer never takes more than was counted.
        let queued = shared.queued.fetch_add(1, Ordering::Relaxed) + 1;
        if let Err(mpsc::error::SendError(pending)) = queue.send(Pending { op, reply }) {
            shared.queued.fetch_sub(1, Ordering::Relaxed);
            // The writers are gone (their runtime shut down): write directly.
            return write_alone(&*self.backend, pending.op).await;
        }
        if queued >= BACKLOG {
            shared.backlog.notify_one();
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

/// How many times a writer yields, at most, while the queue grows before it takes a batch.
const GATHER_YIELDS: usize = 8;

/// What each writer task holds.
struct Writer {
    backend: Arc<dyn BatchBackend>,
    shared: Arc<Shared>,
    settings: GroupCommit,
    counters: Arc<Counters>,
}

impl Writer {
    /// Commits `batch`, counted.
    async fn commit(&self, batch: Vec<Pending>) {
        self.shared.queued.fetch_sub(batch.len(), Ordering::Relaxed);
        let started = Instant::now();
        let writes = batch.len() as u64;
        commit(&*self.backend, batch).await;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        self.counters.writes.fetch_add(writes, Ordering::Relaxed);
        self.counters
            .busy_micros
            .fetch_add(micros, Ordering::Relaxed);
    }
}

/// The first writer: waits for a write, gathers what comes with it, commits.
async fn writer(this: Writer) {
    let (shared, settings) = (&this.shared, this.settings);
    loop {
        let mut batch: Vec<Pending> = Vec::new();
        {
            let mut rx = shared.rx.lock().await;
            let Some(first) = rx.recv().await else {
                shared.closed.store(true, Ordering::Release);
                shared.backlog.notify_waiters();
                return;
            };
            batch.push(first);
            // Sagas woken by one commit write again at nearly the same moment: let them
            // run up to their next write before taking the queue (yielding while the queue
            // still grows, a few times at most). Otherwise a writer takes only the first of
            // them, and concurrent sagas settle into cohorts that alternate, each paying for
            // the other's commit as well as its own.
            let mut queued = rx.len();
            for _ in 0..GATHER_YIELDS {
                tokio::task::yield_now().await;
                if rx.len() == queued || rx.len() + 1 >= settings.max_batch {
                    break;
                }
                queued = rx.len();
            }
            drain(&mut rx, &mut batch, settings.max_batch);
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
        this.commit(batch).await;
    }
}

/// An extra writer: commits beside the first only while a backlog of [`BACKLOG`] writes
/// waits, and takes what is queued without waiting for more.
async fn extra_writer(this: Writer) {
    let (shared, settings) = (&this.shared, this.settings);
    loop {
        let notified = shared.backlog.notified();
        tokio::pin!(notified);
        // Registered before the checks, so that a wake-up between them is not lost.
        notified.as_mut().enable();
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        if shared.queued.load(Ordering::Relaxed) < BACKLOG {
            notified.await;
            continue;
        }
        let mut batch: Vec<Pending> = Vec::new();
        drain(&mut *shared.rx.lock().await, &mut batch, settings.max_batch);
        if batch.is_empty() {
            continue;
        }
        this.commit(batch).await;
    }
}

/// Moves what is queued into `batch`, up to `max_batch` in all.
fn drain(rx: &mut mpsc::UnboundedReceiver<Pending>, batch: &mut Vec<Pending>, max_batch: usize) {
    while batch.len() < max_batch {
        match rx.try_recv() {
            Ok(pending) => batch.push(pending),
            Err(_) => break,
        }
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
