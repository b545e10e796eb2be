//! A saga that waits for a typed signal, sent through its generated enum.
use saga_runtime::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claim { pub cents: u64 }

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Approval { pub by: String }

pub struct Expense;

#[saga(name = "expense", input = Claim)]
impl Expense {
    #[step(compensate = "unbook")]
    async fn book(&self, input: &Claim) -> Result<u64, StepError> {
        Ok(input.cents)
    }

    async fn unbook(&self, book: &u64) -> Result<(), StepError> {
        let _ = book;
        Ok(())
    }

    #[step(timeout = "2d", delay = "1h")]
    async fn approve(&self, book: &u64, #[signal] manager_approval: Approval) -> Result<String, StepError> {
        Ok(format!("{} approved {book}", manager_approval.by))
    }
}

async fn send(expenses: saga_runtime::Executor<Expense>) -> Result<(), SagaError> {
    let signal = ExpenseSignal::ManagerApproval(Approval { by: "ada".to_owned() });
    println!("{signal:?}");
    expenses.signal("e-1", signal).await?;
    Ok(())
}

fn main() {
    assert_eq!(Expense::DEFINITION.signals(), ["manager_approval"]);
    let _ = send;
}
