//! Who is whose child: a child saga's id is `<parent>/<step>`, and it tells its parent of
//! its end with a signal named `child:<step>`. Pure functions of ids, used by the
//! orchestrator's side of children (`executor::child`) and by the state machine (`run`)
//! alike, so that neither calls the other for them.

use crate::definition::SagaState;
use crate::store::{Actor, NewSignal};

/// Who a parent's actions on its child are recorded as.
pub(crate) const PARENT: &str = "parent saga";

/// The id of the child that step `step` of saga `parent` starts: a re-run of the step
/// attaches to the same child.
pub(crate) fn child_id(parent: &str, step: &str) -> String {
    format!("{parent}/{step}")
}

/// The parent and step of a saga whose id says it is a child (`<parent>/<step>`).
pub(crate) fn parent_of(saga_id: &str) -> Option<(&str, &str)> {
    let (parent, step) = saga_id.rsplit_once('/')?;
    (!parent.is_empty() && !step.is_empty()).then_some((parent, step))
}

/// The signal by which child `saga_id`, ending in `state`, tells its parent: delivered by
/// the store with the child's last write ([`Checkpoint::tell`](crate::store::Checkpoint)),
/// so that no crash between the two leaves the parent waiting. `None` unless the id says
/// it is a child (`<parent>/<step>`); a saga whose id merely holds a `/` tells nobody (the
/// store finds no such parent, or no such signal, and ignores it).
pub(crate) fn tell(saga_id: &str, state: SagaState) -> Option<NewSignal> {
    let (parent, step) = parent_of(saga_id)?;
    let payload = serde_json::json!({ "child": saga_id, "state": state.as_str() }).to_string();
    let mut signal = NewSignal::new(parent, format!("child:{step}"), payload, Actor::new(PARENT));
    signal.key = Some(format!("{saga_id} {}", state.as_str()));
    Some(signal)
}
