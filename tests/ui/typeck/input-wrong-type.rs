use saga_runtime::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Input { pub id: u64 }

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order { pub id: u64 }

pub struct Flow;

#[saga(name = "flow", input = Input)]
impl Flow {
    #[step]
    async fn make(&self, input: &Order) -> Result<u64, StepError> {
        Ok(input.id)
    }
}

fn main() {}
