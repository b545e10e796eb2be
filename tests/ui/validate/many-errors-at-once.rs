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
    #[step(timeout = 0, retries = -2, compensate = "nothing")]
    fn make(&self, input: &Input) -> Made {
        Made { id: input.id }
    }

    #[step(pivot)]
    async fn ship(&self, later: &Made, ctx: StepContext) -> Result<Shipped, StepError> {
        let _ = (later, ctx);
        Ok(Shipped { tracking: String::new() })
    }
}

fn main() {}
