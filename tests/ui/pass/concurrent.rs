use saga_runtime::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trip { pub id: u64 }

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flight { pub code: String }

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hotel { pub code: String }

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Car { pub code: String }

pub struct Travel;

#[saga(name = "travel", input = Trip)]
impl Travel {
    #[step(concurrent, compensate = "cancel_flight")]
    async fn reserve_flight(&self, input: &Trip) -> Result<Flight, StepError> {
        Ok(Flight { code: format!("F{}", input.id) })
    }

    #[step(concurrent, compensate = "cancel_hotel")]
    async fn reserve_hotel(&self, input: &Trip) -> Result<Hotel, StepError> {
        Ok(Hotel { code: format!("H{}", input.id) })
    }

    #[step(concurrent, after = "reserve_flight", compensate = "cancel_car")]
    async fn reserve_car(&self, reserve_hotel: &Hotel) -> Result<Car, StepError> {
        Ok(Car { code: reserve_hotel.code.clone() })
    }

    #[step(pivot)]
    async fn charge(&self, reserve_flight: &Flight, reserve_car: &Car) -> Result<(), StepError> {
        let _ = (reserve_flight, reserve_car);
        Ok(())
    }

    #[step(concurrent = false)]
    async fn confirm(&self) -> Result<(), StepError> {
        Ok(())
    }

    async fn cancel_flight(&self, reserve_flight: &Flight) -> Result<(), StepError> {
        let _ = reserve_flight;
        Ok(())
    }

    async fn cancel_hotel(&self) -> Result<(), StepError> {
        Ok(())
    }

    async fn cancel_car(&self) -> Result<(), StepError> {
        Ok(())
    }
}

fn main() {
    let steps = Travel::DEFINITION.steps();
    let deps: Vec<&[usize]> = steps.iter().map(|s| s.depends_on()).collect();
    assert_eq!(deps, [&[][..], &[], &[0, 1], &[0, 1, 2], &[0, 1, 2, 3]]);
    assert!(steps[1].is_concurrent() && !steps[3].is_concurrent());
    assert!(!Travel::DEFINITION.is_chain());
}
