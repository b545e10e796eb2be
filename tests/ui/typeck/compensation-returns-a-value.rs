use saga_runtime::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Input { pub id: u64 }

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refund { pub amount: u64 }

pub struct Flow;

#[saga(name = "flow", input = Input)]
impl Flow {
    #[step(compensate = "refund")]
    async fn charge(&self, input: &Input) -> Result<u64, StepError> {
        Ok(input.id)
    }

    async fn refund(&self, charge: &u64) -> Result<Refund, StepError> {
        Ok(Refund { amount: *charge })
    }
}

fn main() {}
