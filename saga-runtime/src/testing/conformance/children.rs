//! Child sagas: a checkpoint's `tell` (a child's end, told to its parent) is delivered with
//! the write, wakes the parent if it waits for it, and never fails the write.

use std::time::Duration;

use super::{header, new_saga};
use crate::definition::{BoxFuture, SagaState};
use crate::status::StepStatus;
use crate::store::{Actor, Checkpoint, NewSignal, SagaStore, Saved};

/// `a` completed, so the saga `id` ends completed; telling `tell`.
fn ended(id: &str, tell: Option<NewSignal>) -> Checkpoint {
    let mut cp = Checkpoint::new(id, "a", 1, SagaState::Completed, header("conformance"));
    cp.steps = vec![
        StepStatus::completed(1, 1),
        StepStatus::completed(1, 2),
        StepStatus::completed(1, 3),
    ];
    cp.progress = true;
    cp.lease = Duration::from_secs(30);
    cp.tell = tell;
    cp
}

fn end_of(parent: &str, child: &str) -> NewSignal {
    let mut signal = NewSignal::new(parent, "child:b", "{}", Actor::new("parent saga"));
    signal.key = Some(format!("{child} completed"));
    signal
}

pub(super) fn a_childs_end_is_told_with_its_write(store: &dyn SagaStore) -> BoxFuture<'_, ()> {
    Box::pin(async move {
        let mut parent = new_saga("p", Some("a"), Duration::from_secs(30));
        parent.signals = &["child:b"];
        store.create(parent).await.expect("create the parent");
        let mut wait = Checkpoint::new("p", "a", 1, SagaState::Waiting, header("conformance"));
        wait.step_index = 1;
        wait.steps = vec![
            StepStatus::completed(1, 1),
            StepStatus::waiting(1),
            StepStatus::not_started(),
        ];
        wait.wake_after = Some(Duration::from_secs(3600));
        wait.waiting_for = Some("child:b".into());
        store.save(wait).await.expect("the parent waits");
        for child in ["p/b", "q/b", "lonely"] {
            store
                .create(new_saga(child, Some("a"), Duration::from_secs(30)))
                .await
                .expect("create a child");
        }

        // Told with the child's last write: the parent is due at once.
        let saved = store
            .save(ended("p/b", Some(end_of("p", "p/b"))))
            .await
            .expect("the child ends");
        assert!(matches!(saved, Saved::Written { .. }), "{saved:?}");
        let pending = store
            .next_signal("p", "child:b")
            .await
            .expect("next signal")
            .expect("the end was told");
        assert_eq!(pending.payload, "{}");
        let parent = store.load("p").await.expect("load").expect("the parent");
        let due = parent.wake_at.expect("a wake time");
        assert!(
            due <= std::time::SystemTime::now() + Duration::from_secs(60),
            "due now, not at its deadline"
        );

        // A parent that does not exist, and no parent: the write is made all the same.
        for (child, tell) in [("q/b", Some(end_of("q", "q/b"))), ("lonely", None)] {
            let saved = store.save(ended(child, tell)).await.expect("the write");
            assert!(matches!(saved, Saved::Written { .. }), "{child}: {saved:?}");
            let row = store.load(child).await.expect("load").expect("the child");
            assert_eq!(row.state, SagaState::Completed, "{child}");
        }
    })
}
