//! Docs and lint attributes on steps survive the expansion, and generated items are
//! documented (this crate denies missing docs).
#![deny(missing_docs, warnings)]

use saga_runtime::prelude::*;

/// Input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Input {
    /// Id.
    pub id: u64,
}

/// The saga.
pub struct Flow;

#[saga(name = "flow", input = Input)]
impl Flow {
    /// Makes a thing.
    #[step]
    #[must_use = "a step's result matters"]
    pub async fn make(&self, input: &Input) -> Result<u64, StepError> {
        Ok(input.id)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // `#[must_use]` survived: using the result silences it; `let _ =` would be the explicit way.
    let made = Flow.make(&Input { id: 3 }).await;
    assert_eq!(made.ok(), Some(3));
}
