//! Which of a shard's sagas a claim reads: the live ones (running, compensating, waiting),
//! and the waiting ones by wake time. Every write that changes a saga's state or its
//! `wake_at` files it again, so that a recovery pass reads the sagas it may take rather
//! than every saga the store has held, and a wake-up reads only the waits that are due.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use super::Row;
use crate::definition::SagaState;

#[derive(Debug, Default)]
pub(super) struct Live {
    /// Each live saga, with the wake time it is filed under in `wakes` (a waiting saga's
    /// `wake_at`; `None` for the others).
    sagas: HashMap<Arc<str>, Option<SystemTime>>,
    /// Waiting sagas by wake time, earliest first.
    wakes: BTreeSet<(SystemTime, Arc<str>)>,
}

/// How a saga is filed: not at all (ended, or gone), or live with its wake time, if any.
pub(super) type Filing = Option<Option<SystemTime>>;

/// How saga `row` is filed as it now is (`None`: it is gone). A waiting saga that a
/// runner has claimed is filed with the leased ones: it is that runner's until it writes
/// or its lease runs out, and a wake-up need not read it again meanwhile.
pub(super) fn filing(row: Option<&Row>) -> Filing {
    row.filter(|r| r.state.is_live()).map(|r| {
        if r.state == SagaState::Waiting && r.owner.is_none() {
            r.wake_at
        } else {
            None
        }
    })
}

impl Live {
    /// Files saga `saga_id` as `now` says.
    pub(super) fn file(&mut self, saga_id: &Arc<str>, now: Filing) {
        let filed = self.sagas.get(saga_id).copied();
        // The common case: a running saga's checkpoint, filed as it was.
        if filed == now {
            return;
        }
        let Some(wake) = now else {
            self.forget(saga_id);
            return;
        };
        if let Some(Some(at)) = filed {
            self.wakes.remove(&(at, saga_id.clone()));
        }
        if let Some(at) = wake {
            self.wakes.insert((at, saga_id.clone()));
        }
        self.sagas.insert(saga_id.clone(), wake);
    }

    /// Files saga `saga_id` nowhere: it ended, or is gone.
    pub(super) fn forget(&mut self, saga_id: &str) {
        if let Some((id, Some(at))) = self.sagas.remove_entry(saga_id) {
            self.wakes.remove(&(at, id));
        }
    }

    /// The live sagas not filed by wake time: those running or compensating, waiting ones
    /// a runner has claimed (and any waiting without a wake time), whose lease may have
    /// run out.
    pub(super) fn leased(&self) -> impl Iterator<Item = &str> {
        self.sagas
            .iter()
            .filter(|(_, wake)| wake.is_none())
            .map(|(id, _)| &**id)
    }

    /// The waiting sagas due by `clock`, earliest first.
    pub(super) fn due(&self, clock: SystemTime) -> impl Iterator<Item = &str> {
        self.wakes
            .iter()
            .take_while(move |(at, _)| *at <= clock)
            .map(|(_, id)| &**id)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use super::Live;

    #[test]
    fn sagas_are_filed_by_state_and_wake_time() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let later = t0 + Duration::from_secs(60);
        let mut live = Live::default();
        let (s, t): (Arc<str>, Arc<str>) = ("s".into(), "t".into());
        live.file(&s, Some(None));
        assert_eq!(live.leased().collect::<Vec<_>>(), ["s"], "running");
        assert_eq!(live.due(later).count(), 0);
        live.file(&s, Some(Some(later)));
        assert_eq!(live.leased().count(), 0, "a wait holds no lease");
        assert_eq!(live.due(t0).count(), 0, "not due yet");
        assert_eq!(live.due(later).collect::<Vec<_>>(), ["s"]);
        // A signal makes it due now: filed again, once.
        live.file(&s, Some(Some(t0)));
        assert_eq!(live.due(later).collect::<Vec<_>>(), ["s"]);
        assert_eq!(live.due(t0).collect::<Vec<_>>(), ["s"]);
        live.file(&t, Some(Some(t0 - Duration::from_secs(1))));
        assert_eq!(
            live.due(t0).collect::<Vec<_>>(),
            ["t", "s"],
            "earliest first"
        );
        live.file(&s, None);
        live.file(&t, None);
        assert!(live.sagas.is_empty() && live.wakes.is_empty());
    }
}
