use saga_runtime::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Input { pub id: u64 }

pub struct Flow;

#[saga(name = "flow", input = Input)]
impl Flow {
    #[step(pivot)]
    async fn charge(&self, input: &Input) -> Result<u64, StepError> {
        Ok(input.id)
    }

    #[step(retries = 3)]
    async fn ship(&self, charge: &u64) -> Result<u64, StepError> {
        Ok(*charge)
    }
}

fn main() {}
