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
    #[step(compensate = "unmake")]
    async fn make(&self, input: &Input) -> Result<Made, StepError> {
        Ok(Made { id: input.id })
    }

    fn unmake(&self, make: &Made) -> Result<(), StepError> {
        let _ = make;
        Ok(())
    }
}

fn main() {}
