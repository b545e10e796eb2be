//! Parallel steps: a flight, a hotel and a car are reserved at once, then the trip is
//! charged (the pivot) and confirmed.
//!
//! ```text
//! cargo run --example travel
//! DATABASE_URL=postgres://postgres@127.0.0.1/test cargo run --example travel
//! ```
//!
//! Run 1 completes: the three reservations overlap, so they take about one second, not
//! three. In run 2 the car rental has no cars left, a permanent error: nothing new starts,
//! the flight and hotel reservations under way finish, and both are cancelled at once
//! (neither depended on the other). Each step prints when it starts and ends, in seconds since its saga began.

use std::time::Duration;

use saga_runtime::prelude::*;
use tokio::time::Instant;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TripRequest {
    pub traveller: String,
    pub city: String,
    /// No car can be rented (run 2).
    pub no_cars: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flight {
    pub booking: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hotel {
    pub booking: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Car {
    pub booking: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Receipt {
    pub amount_cents: i64,
}

/// The services the steps call, simulated: each takes a while to answer.
pub struct TravelAgency {
    began: std::sync::Mutex<Instant>,
}

impl TravelAgency {
    fn log(&self, what: &str) {
        let began = *self
            .began
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        println!("  [{:>5.2}s] {what}", began.elapsed().as_secs_f64());
    }

    /// Calls a service: prints when it starts and ends.
    async fn call(&self, name: &str, takes: Duration) {
        self.log(&format!("{name} started"));
        tokio::time::sleep(takes).await;
        self.log(&format!("{name} ended"));
    }
}

#[saga(name = "travel", input = TripRequest)]
impl TravelAgency {
    #[step(concurrent, timeout = 10, retries = 2, compensate = "cancel_flight")]
    async fn reserve_flight(&self, input: &TripRequest) -> Result<Flight, StepError> {
        self.call("reserve_flight", Duration::from_millis(1000))
            .await;
        Ok(Flight {
            booking: format!("FL-{}", input.city.to_uppercase()),
        })
    }

    #[step(concurrent, timeout = 10, retries = 2, compensate = "cancel_hotel")]
    async fn reserve_hotel(&self, input: &TripRequest) -> Result<Hotel, StepError> {
        self.call("reserve_hotel", Duration::from_millis(800)).await;
        Ok(Hotel {
            booking: format!("HT-{}", input.traveller.to_uppercase()),
        })
    }

    #[step(concurrent, timeout = 10, retries = 2, compensate = "cancel_car")]
    async fn reserve_car(&self, input: &TripRequest) -> Result<Car, StepError> {
        self.call("reserve_car", Duration::from_millis(500)).await;
        if input.no_cars {
            return Err(StepError::permanent("no cars left").with_type("sold_out"));
        }
        Ok(Car {
            booking: "CR-42".to_owned(),
        })
    }

    /// The point of no return: waits for all three reservations.
    #[step(pivot, timeout = 10)]
    async fn charge(
        &self,
        reserve_flight: &Flight,
        reserve_hotel: &Hotel,
        reserve_car: &Car,
    ) -> Result<Receipt, StepError> {
        self.call(
            &format!(
                "charge for {}, {} and {}",
                reserve_flight.booking, reserve_hotel.booking, reserve_car.booking
            ),
            Duration::from_millis(300),
        )
        .await;
        Ok(Receipt {
            amount_cents: 129_900,
        })
    }

    #[step(timeout = 10)]
    async fn confirm(&self, input: &TripRequest, charge: &Receipt) -> Result<(), StepError> {
        self.call(
            &format!(
                "confirm to {}: {} cents charged",
                input.traveller, charge.amount_cents
            ),
            Duration::from_millis(100),
        )
        .await;
        Ok(())
    }

    async fn cancel_flight(&self, reserve_flight: &Flight) -> Result<(), StepError> {
        self.call(
            &format!("cancel_flight {}", reserve_flight.booking),
            Duration::from_millis(200),
        )
        .await;
        Ok(())
    }

    async fn cancel_hotel(&self, reserve_hotel: &Hotel) -> Result<(), StepError> {
        self.call(
            &format!("cancel_hotel {}", reserve_hotel.booking),
            Duration::from_millis(200),
        )
        .await;
        Ok(())
    }

    async fn cancel_car(&self, reserve_car: &Car) -> Result<(), StepError> {
        self.call(
            &format!("cancel_car {}", reserve_car.booking),
            Duration::from_millis(200),
        )
        .await;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://travel.db".to_owned());
    println!(
        "store: {} (set DATABASE_URL to use another)",
        saga_runtime::store::redact(&url)
    );
    let store = saga_runtime::store::open(&url).await?;
    let orchestrator = Orchestrator::builder(store).build()?;
    let travel = orchestrator.register(TravelAgency {
        began: std::sync::Mutex::new(Instant::now()),
    });
    let config = SagaConfig::new("travel");

    for (title, no_cars) in [
        ("run 1: every reservation succeeds", false),
        ("run 2: no cars left", true),
    ] {
        println!("\n== {title} ==");
        *travel
            .saga()
            .began
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
        let request = TripRequest {
            traveller: "ada".to_owned(),
            city: "lisbon".to_owned(),
            no_cars,
        };
        let started = Instant::now();
        let outcome = travel.execute(&config, request).await?;
        println!(
            "outcome: {} after {:.2}s (saga {})",
            outcome.state(),
            started.elapsed().as_secs_f64(),
            outcome.saga_id()
        );
        if let Some(error) = outcome.error() {
            println!("  error: {error}");
        }
    }
    orchestrator.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
