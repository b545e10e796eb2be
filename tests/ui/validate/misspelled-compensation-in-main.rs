// A realistic program with one mistake: only that mistake is reported, not the code that
// uses the saga (registering it, reading its context).
use saga_runtime::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trip { pub id: u64 }

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flight { pub seat: String }

pub struct Travel;

#[saga(name = "travel", input = Trip)]
impl Travel {
    #[step(compensate = "cancel_flgiht")]
    async fn reserve_flight(&self, input: &Trip) -> Result<Flight, StepError> {
        Ok(Flight { seat: format!("{}A", input.id) })
    }

    async fn cancel_flight(&self, reserve_flight: &Flight) -> Result<(), StepError> {
        let _ = reserve_flight;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let orchestrator = Orchestrator::builder(MemoryStore::new()).build()?;
    let travel = orchestrator.register(Travel);
    let outcome = travel.execute(&SagaConfig::default(), Trip { id: 7 }).await?;
    let context: &TravelContext = outcome.context();
    println!("{:?}", context.reserve_flight.as_ref().map(|f| &f.seat));
    Ok(())
}
