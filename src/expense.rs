//! An expense claim that waits for a manager's approval: a signal, typed, with a deadline.
//! Shared by `examples/approval.rs` and the web service (`POST /expenses`, then
//! `POST /sagas/{id}/signals/approval`).
//!
//! The budget is reserved first (and released if the claim is not approved); the approval
//! step waits for its signal, durably, held by no runner, until the saga's step timeout
//! (`SagaConfig::default_timeout`) passes; then the claim is paid.

use std::sync::Mutex;

use saga_runtime::prelude::*;
use tokio::time::Instant;

/// What an employee claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claim {
    pub employee: String,
    pub cents: u64,
}

/// The budget held for a claim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reservation {
    pub id: String,
    pub cents: u64,
}

/// A manager's answer: the signal `approval`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Approval {
    pub by: String,
    #[serde(default)]
    pub note: String,
}

/// The payment made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payment {
    pub reference: String,
}

/// The finance desk: reserves budget and pays; prints what it does, in seconds since it
/// was created (or last reset).
#[derive(Debug)]
pub struct FinanceDesk {
    began: Mutex<Instant>,
}

impl Default for FinanceDesk {
    fn default() -> Self {
        FinanceDesk {
            began: Mutex::new(Instant::now()),
        }
    }
}

impl FinanceDesk {
    /// Starts the clock of the printed times again.
    pub fn reset_clock(&self) {
        *self
            .began
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
    }

    /// Prints `what` with the time since the clock started.
    pub fn log(&self, what: &str) {
        let began = *self
            .began
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        println!("  [{:>5.2}s] {what}", began.elapsed().as_secs_f64());
    }
}

fn euros(cents: u64) -> String {
    format!("{}.{:02} EUR", cents / 100, cents % 100)
}

#[saga(name = "expense_claim", input = Claim)]
impl FinanceDesk {
    #[step(timeout = 5, compensate = "release_budget")]
    async fn reserve_budget(&self, input: &Claim) -> Result<Reservation, StepError> {
        let id = format!("BUD-{}", input.employee.to_uppercase());
        self.log(&format!("budget {id} reserved: {}", euros(input.cents)));
        Ok(Reservation {
            id,
            cents: input.cents,
        })
    }

    async fn release_budget(&self, reserve_budget: &Reservation) -> Result<(), StepError> {
        self.log(&format!("budget {} released", reserve_budget.id));
        Ok(())
    }

    /// Waits for the signal `approval`; the deadline is the saga's step timeout.
    #[step(retries = 0)]
    async fn approve(
        &self,
        input: &Claim,
        #[signal] approval: Approval,
    ) -> Result<Approval, StepError> {
        self.log(&format!(
            "{}'s claim approved by {} ({:?})",
            input.employee, approval.by, approval.note
        ));
        Ok(approval)
    }

    #[step(timeout = 5, pivot)]
    async fn pay(&self, reserve_budget: &Reservation) -> Result<Payment, StepError> {
        let reference = format!("PAY-{}", reserve_budget.id);
        self.log(&format!(
            "paid {} ({reference})",
            euros(reserve_budget.cents)
        ));
        Ok(Payment { reference })
    }
}
