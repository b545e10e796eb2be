//! The sagas this runner is executing: their leases, and callers waiting for them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::oneshot;

/// Sagas executing in this process.
#[derive(Debug)]
pub(crate) struct Active {
    epoch: Instant,
    sagas: Mutex<HashMap<Arc<str>, Entry>>,
}

#[derive(Debug)]
struct Entry {
    lease: Arc<LeaseClock>,
    waiters: Vec<oneshot::Sender<()>>,
}

/// When a saga's lease was last extended, in milliseconds since the registry's epoch. Each
/// checkpoint write extends it; the renewal loop extends only leases that went quiet.
#[derive(Debug, Default)]
pub(crate) struct LeaseClock {
    renewed_ms: AtomicU64,
}

impl LeaseClock {
    pub(crate) fn touch(&self, active: &Active) {
        self.renewed_ms.store(active.now_ms(), Ordering::Relaxed);
    }
}

/// What [`Active::enter`] found.
pub(crate) enum Entered {
    /// This caller runs the saga; dropping the guard removes it and wakes waiters.
    Run(ActiveGuard),
    /// The saga is already executing here; the receiver fires when it ends.
    Wait(oneshot::Receiver<()>),
}

impl Active {
    pub(crate) fn new() -> Self {
        Active {
            epoch: Instant::now(),
            sagas: Mutex::new(HashMap::new()),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Entry>> {
        self.sagas
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers `saga_id` as executing here, unless it already is.
    pub(crate) fn enter(self: &Arc<Self>, saga_id: &Arc<str>) -> Entered {
        let mut sagas = self.lock();
        if let Some(entry) = sagas.get_mut(saga_id) {
            let (tx, rx) = oneshot::channel();
            entry.waiters.push(tx);
            return Entered::Wait(rx);
        }
        let lease = Arc::new(LeaseClock::default());
        lease.touch(self);
        sagas.insert(
            saga_id.clone(),
            Entry {
                lease: lease.clone(),
                waiters: Vec::new(),
            },
        );
        Entered::Run(ActiveGuard {
            active: self.clone(),
            saga_id: saga_id.clone(),
            lease,
        })
    }

    /// Ids whose lease was last extended more than `older_than_ms` ago.
    pub(crate) fn quiet_since(&self, older_than_ms: u64) -> Vec<Arc<str>> {
        let now = self.now_ms();
        self.lock()
            .iter()
            .filter(|(_, e)| {
                now.saturating_sub(e.lease.renewed_ms.load(Ordering::Relaxed)) >= older_than_ms
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Marks leases as extended now.
    pub(crate) fn touch_all(&self, ids: &[Arc<str>]) {
        let sagas = self.lock();
        for id in ids {
            if let Some(entry) = sagas.get(id) {
                entry.lease.touch(self);
            }
        }
    }

    /// Whether `saga_id` is executing here.
    pub(crate) fn contains(&self, saga_id: &str) -> bool {
        self.lock().contains_key(saga_id)
    }

    /// Every id executing here.
    pub(crate) fn ids(&self) -> Vec<Arc<str>> {
        self.lock().keys().cloned().collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Held by the task that executes a saga. Dropping it (also on panic or cancellation of the
/// task) stops the lease renewal, so another runner can recover the saga.
#[derive(Debug)]
pub(crate) struct ActiveGuard {
    active: Arc<Active>,
    saga_id: Arc<str>,
    lease: Arc<LeaseClock>,
}

impl ActiveGuard {
    pub(crate) fn touch(&self) {
        self.lease.touch(&self.active);
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let entry = self.active.lock().remove(&self.saga_id);
        if let Some(entry) = entry {
            for waiter in entry.waiters {
                let _ = waiter.send(());
            }
        }
    }
}
