//! `context`, `state`, `vis` and `crate` rename what the macro generates, set its
//! visibility, and say where it looks.
#![deny(warnings)]

use saga_runtime as runtime;
use runtime::prelude::{saga, step, Deserialize, Serialize, StepError};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Input {
    id: u64,
}

struct Flow;

#[saga(name = "flow", input = Input, context = FlowData, state = FlowPhase, vis = pub(crate), crate = runtime)]
impl Flow {
    #[step(pivot, timeout = "1m30s", backoff_initial = "10ms", backoff_multiplier = 3, backoff_max = "1s", jitter = 0.5)]
    async fn make(&self, input: &Input) -> Result<u64, StepError> {
        Ok(input.id)
    }
}

fn main() {
    use runtime::Saga as _;
    let data: FlowData = Flow::new_context(Input { id: 1 });
    assert!(data.make.is_none());
    let phase = FlowPhase::Make;
    assert_eq!(runtime::SagaState::from(phase), runtime::SagaState::Running);
    let step = &Flow::DEFINITION.steps()[0];
    assert!(step.is_pivot());
    assert_eq!(step.timeout(), Some(std::time::Duration::from_secs(90)));
    let _ = Flow;
}
