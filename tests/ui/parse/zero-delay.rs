use saga_runtime::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order { pub id: u64 }

pub struct Hold;

#[saga(name = "hold", input = Order)]
impl Hold {
    #[step(delay = "0s")]
    async fn charge(&self, input: &Order) -> Result<u64, StepError> {
        Ok(input.id)
    }
}

fn main() {}
