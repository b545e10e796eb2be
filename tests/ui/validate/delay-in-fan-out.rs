use saga_runtime::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trip { pub id: u64 }

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Booking { pub code: String }

pub struct Travel;

#[saga(name = "travel", input = Trip)]
impl Travel {
    #[step]
    async fn flight(&self, input: &Trip) -> Result<Booking, StepError> {
        Ok(Booking { code: format!("{}{}", "flight", input.id) })
    }

    #[step(concurrent, delay = "1h")]
    async fn hotel(&self, input: &Trip) -> Result<Booking, StepError> {
        Ok(Booking { code: format!("{}{}", "hotel", input.id) })
    }
}

fn main() {}
