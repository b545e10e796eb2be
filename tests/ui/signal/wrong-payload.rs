use saga_runtime::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claim { pub cents: u64 }

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Approval { pub by: String }

pub struct Expense;

#[saga(name = "expense", input = Claim)]
impl Expense {
    #[step]
    async fn approve(&self, #[signal] approval: Approval) -> Result<String, StepError> {
        Ok(approval.by)
    }
}

async fn send(expenses: saga_runtime::Executor<Expense>) {
    // The payload of `approval` is an `Approval`, not a string.
    let _ = expenses.signal("e-1", ExpenseSignal::Approval("ada".to_owned())).await;
}

fn main() {
    let _ = send;
}
