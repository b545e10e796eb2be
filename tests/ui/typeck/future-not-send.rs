use saga_runtime::prelude::*;
use std::rc::Rc;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Input { pub id: u64 }

pub struct Flow;

#[saga(name = "flow", input = Input)]
impl Flow {
    #[step]
    async fn make(&self, input: &Input) -> Result<u64, StepError> {
        let held = Rc::new(input.id);
        tokio::task::yield_now().await;
        Ok(*held)
    }
}

fn main() {}
