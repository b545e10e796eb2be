//! Crash recovery, end to end, on a SQLite file.
//!
//! ```text
//! cargo run --example recovery              # 1st run: starts a saga, crashes inside a step
//! cargo run --example recovery              # 2nd run: finds it, recovers it, finishes it
//! cargo run --example recovery -- --reset   # start over
//! ```
//!
//! Both runs use the same runner id, as a restarted process on the same host would, so the
//! second run may take the saga over at once instead of waiting for the dead runner's lease
//! to expire. A different runner would wait for the lease (30 s here), then its recovery
//! loop would do the same without being asked.

use std::time::Duration;

use saga_runtime::prelude::*;

const SAGA_ID: &str = "order-1001";
const DB: &str = "recovery.db";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub order_id: u64,
    pub amount_cents: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reservation {
    pub reservation_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payment {
    pub payment_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shipment {
    pub tracking: String,
}

/// `crash` makes the first attempt of `charge_payment` abort the process.
pub struct OrderWorkflow {
    crash: bool,
}

#[saga(name = "order_workflow", input = Order)]
impl OrderWorkflow {
    #[step(timeout = 5, retries = 2, compensate = "release_stock")]
    async fn reserve_stock(
        &self,
        input: &Order,
        ctx: &StepContext,
    ) -> Result<Reservation, StepError> {
        println!(
            "  reserve_stock  attempt {}: reserved stock for order {}",
            ctx.attempt(),
            input.order_id
        );
        Ok(Reservation {
            reservation_id: format!("R-{}", input.order_id),
        })
    }

    async fn release_stock(&self, reserve_stock: &Reservation) -> Result<(), StepError> {
        println!("  release_stock: released {}", reserve_stock.reservation_id);
        Ok(())
    }

    #[step(timeout = 5, retries = 2, compensate = "refund")]
    async fn charge_payment(&self, input: &Order, ctx: &StepContext) -> Result<Payment, StepError> {
        println!(
            "  charge_payment attempt {}: charging {} cents with idempotency key {}",
            ctx.attempt(),
            input.amount_cents,
            ctx.idempotency_key()
        );
        if self.crash {
            println!("  !! the process crashes in the middle of charge_payment (abort)");
            std::process::abort();
        }
        Ok(Payment {
            payment_id: format!("P-{}", input.order_id),
        })
    }

    async fn refund(&self, charge_payment: &Payment) -> Result<(), StepError> {
        println!("  refund: refunded {}", charge_payment.payment_id);
        Ok(())
    }

    #[step(timeout = 5, retries = 2)]
    async fn ship(
        &self,
        charge_payment: &Payment,
        ctx: &StepContext,
    ) -> Result<Shipment, StepError> {
        println!(
            "  ship           attempt {}: shipped (paid by {})",
            ctx.attempt(),
            charge_payment.payment_id
        );
        Ok(Shipment {
            tracking: "TRACK-1001".into(),
        })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().any(|a| a == "--reset") {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{DB}{suffix}"));
        }
        println!("removed {DB}; the next run starts over");
        return Ok(());
    }
    let store = SqliteStore::open(DB).await?;
    let existing = store.load(SAGA_ID).await?;
    let crash = existing.is_none();
    let orchestrator = Orchestrator::builder(store)
        .runner_id("recovery-example")
        .lease(Duration::from_secs(30))
        .build()?;
    let orders = orchestrator.register(OrderWorkflow { crash });

    let outcome = match existing {
        None => {
            println!("stage 1: starting saga {SAGA_ID} in {DB}");
            let order = Order {
                order_id: 1001,
                amount_cents: 4_999,
            };
            orders
                .execute_with_id(SAGA_ID, &SagaConfig::new("order_workflow"), order)
                .await?
        }
        Some(record) if record.state.is_active() => {
            println!(
                "stage 2: found saga {SAGA_ID} {} at step `{}` (attempt {} was interrupted); recovering it",
                record.state,
                record.current_step.as_deref().unwrap_or("?"),
                record.attempt
            );
            orders.recover(SAGA_ID).await?
        }
        Some(record) => {
            println!("stage 3: saga {SAGA_ID} already ended: {}", record.state);
            orders.outcome(SAGA_ID).await?.ok_or("saga vanished")?
        }
    };
    println!("outcome: {}", outcome.state());
    println!("context: {:?}", outcome.context().ship);
    println!("audit trail:");
    for event in orchestrator
        .audit_log(&AuditQuery::new().saga_id(SAGA_ID))
        .await?
    {
        println!(
            "  {:<22} {:<15} attempt {}",
            event.event_type,
            event.step_name.unwrap_or_default(),
            event.attempt.map_or_else(|| "-".into(), |a| a.to_string())
        );
    }
    if outcome.state().is_finished() {
        println!("(run `cargo run --example recovery -- --reset` to start over)");
    }
    Ok(())
}
