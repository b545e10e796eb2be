use saga_runtime::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Input { pub id: u64 }

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Made { pub id: u64 }

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shipped { pub tracking: String }

pub struct Flow;

#[saga(name = "flow", input = Input)]
impl Flow {
    #[step(backoff_initial = "2s", backoff_max = "500ms")]
    async fn make(&self, input: &Input) -> Result<Made, StepError> {
        Ok(Made { id: input.id })
    }
}

fn main() {}
