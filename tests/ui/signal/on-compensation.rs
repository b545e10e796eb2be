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

    async fn unbook(&self, book: &u64, #[signal] approval: Approval) -> Result<(), StepError> {
        let _ = (book, approval);
        Ok(())
    }
}

fn main() {}
