use saga_runtime::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Input { pub id: u64 }

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Made { pub id: u64 }

pub struct Flow;

#[saga(name = "flow", input = Input)]
impl Flow {
    #[step(timout = 30)]
    async fn make(&self, input: &Input) -> Result<Made, StepError> {
        Ok(Made { id: input.id })
    }
}

fn main() {}
