//! Every capability in one saga: an order is fulfilled by reserving stock and authorising
//! the payment at once, beside a manual review (a typed signal) and shipping (a child
//! saga); once all four are done, the payment is captured.
//!
//! ```text
//! cargo run --example fulfil
//! DATABASE_URL=postgres://postgres@127.0.0.1/test cargo run --example fulfil
//! cargo run --example fulfil -- wait      # one order, reviewed from the CLI:
//! cargo run --bin saga -- --database-url sqlite://fulfil.db show <ID>
//! cargo run --bin saga -- --database-url sqlite://fulfil.db \
//!     signal <ID> review --json '{"by":"grace","approved":true}'
//! ```
//!
//! Run 1 completes: stock, payment and the courier's label are done within half a second,
//! while the review waits; the saga then waits as a whole, held by no runner, until the
//! reviewer's approval arrives a second later; then the payment is captured. In run 2 the
//! card is declined: nothing new starts, the review's wait ends without effect (its body
//! never runs), and the stock, the payment and the shipment (the child saga, undone by its
//! parent) are compensated.

use std::time::Duration;

use saga_runtime::prelude::*;
use tokio::time::Instant;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub item: String,
    pub cents: u64,
    /// The card is declined (run 2).
    pub decline: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Parcel {
    pub item: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Review {
    pub by: String,
    pub approved: bool,
}

/// Prints what happens, in seconds since the program began.
fn log(began: Instant, what: &str) {
    println!("  [{:>5.2}s] {what}", began.elapsed().as_secs_f64());
}

/// The child saga: a courier labels the parcel and books a pickup.
pub struct Courier {
    began: Instant,
}

#[saga(name = "courier", input = Parcel)]
impl Courier {
    #[step(compensate = "void_label")]
    async fn label(&self, input: &Parcel) -> Result<String, StepError> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        log(
            self.began,
            &format!("courier: label printed for {}", input.item),
        );
        Ok(format!("LBL-{}", input.item.to_uppercase()))
    }

    async fn void_label(&self, label: &String) -> Result<(), StepError> {
        log(self.began, &format!("courier: label {label} voided"));
        Ok(())
    }

    #[step]
    async fn book_pickup(&self, label: &String) -> Result<String, StepError> {
        log(self.began, &format!("courier: pickup booked for {label}"));
        Ok(format!("PICKUP-{label}"))
    }
}

pub struct Warehouse {
    began: Instant,
}

#[saga(name = "fulfil", input = Order)]
impl Warehouse {
    #[step(concurrent, timeout = 10, retries = 2, compensate = "release_stock")]
    async fn reserve_stock(&self, input: &Order) -> Result<String, StepError> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        log(self.began, &format!("stock reserved: {}", input.item));
        Ok(format!("RES-{}", input.item))
    }

    async fn release_stock(&self, reserve_stock: &String) -> Result<(), StepError> {
        log(self.began, &format!("stock released: {reserve_stock}"));
        Ok(())
    }

    #[step(concurrent, timeout = 10, retries = 2, compensate = "void_payment")]
    async fn authorise_payment(&self, input: &Order) -> Result<String, StepError> {
        tokio::time::sleep(Duration::from_millis(400)).await;
        if input.decline {
            log(self.began, "payment declined");
            return Err(StepError::permanent("card declined").with_type("declined"));
        }
        log(
            self.began,
            &format!("payment authorised: {} cents", input.cents),
        );
        Ok("AUTH-7".to_owned())
    }

    async fn void_payment(&self, authorise_payment: &String) -> Result<(), StepError> {
        log(self.began, &format!("payment voided: {authorise_payment}"));
        Ok(())
    }

    /// A person reviews the order; the deadline of the wait is an hour.
    #[step(concurrent, timeout = "1h", retries = 0)]
    async fn review(&self, #[signal] review: Review) -> Result<String, StepError> {
        if !review.approved {
            return Err(StepError::permanent(format!(
                "{} rejected the order",
                review.by
            )));
        }
        log(self.began, &format!("review: approved by {}", review.by));
        Ok(review.by)
    }

    /// Shipping is a saga of its own; its outcome is this step's output.
    #[step(concurrent, child, timeout = "1h")]
    async fn ship(&self, input: &Order) -> Result<Child<Courier>, StepError> {
        log(self.began, "shipping: courier saga started");
        Ok(Child::start(Parcel {
            item: input.item.clone(),
        }))
    }

    /// Waits for all four.
    #[step(pivot, timeout = 10)]
    async fn capture(
        &self,
        authorise_payment: &String,
        review: &String,
        ship: &Completed<Courier>,
    ) -> Result<String, StepError> {
        let pickup = ship.context().book_pickup.clone().unwrap_or_default();
        log(
            self.began,
            &format!("captured {authorise_payment} (reviewed by {review}, {pickup})"),
        );
        Ok(format!("CAP-{authorise_payment}"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://fulfil.db".to_owned());
    println!(
        "store: {} (set DATABASE_URL to use another)",
        saga_runtime::store::redact(&url)
    );
    let store = saga_runtime::store::open(&url).await?;
    let orchestrator = Orchestrator::builder(store)
        .recovery_interval(Duration::from_millis(200))
        .build()?;
    let began = Instant::now();
    orchestrator.register(Courier { began });
    let orders = orchestrator.register(Warehouse { began });
    let config = SagaConfig::new("fulfil");
    let poll = Duration::from_millis(20);

    if std::env::args().nth(1).as_deref() == Some("wait") {
        let order = Order {
            item: "kettle".to_owned(),
            cents: 4_900,
            decline: false,
        };
        let id = orders.execute(&config, order).await?.saga_id().to_owned();
        println!("order {id} waits for its review; from another shell:");
        let url = saga_runtime::store::redact(&url);
        println!("  cargo run --bin saga -- --database-url {url} show {id}");
        println!(
            "  cargo run --bin saga -- --database-url {url} signal {id} review --json '{{\"by\":\"grace\",\"approved\":true}}'"
        );
        let outcome = orders.ended(&id, poll).await?;
        println!("outcome: {} (saga {id})", outcome.state());
        orchestrator.shutdown(Duration::from_secs(2)).await;
        return Ok(());
    }

    for (title, decline) in [
        ("run 1: reviewed and approved", false),
        ("run 2: the card is declined", true),
    ] {
        println!("\n== {title} ==");
        let order = Order {
            item: "kettle".to_owned(),
            cents: 4_900,
            decline,
        };
        let outcome = orders.execute(&config, order).await?;
        let id = outcome.saga_id().to_owned();
        log(
            began,
            &format!("execute returned: saga {id} is {}", outcome.state()),
        );
        if !decline {
            let record = orchestrator.store().load(&id).await?;
            if let Some(record) = record {
                for (name, status) in record.step_names().iter().zip(&record.steps) {
                    println!("    {name:<18} {status}");
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            log(began, "the reviewer approves");
            let review = Review {
                by: "grace".to_owned(),
                approved: true,
            };
            orders.signal(&id, WarehouseSignal::Review(review)).await?;
        }
        let outcome =
            tokio::time::timeout(Duration::from_secs(30), orders.ended(&id, poll)).await??;
        println!("outcome: {} (saga {id})", outcome.state());
        if let Some(error) = outcome.error() {
            println!("  error: {error}");
        }
        if let Some(child) = orchestrator.store().load(&format!("{id}/ship")).await? {
            println!("  its child {}: {}", child.saga_id, child.state);
        }
    }
    orchestrator.shutdown(Duration::from_secs(2)).await;
    Ok(())
}
