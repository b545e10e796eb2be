use saga_runtime::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claim { pub cents: u64 }

/// Not `Deserialize`: it cannot arrive as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Approval { pub by: String }

pub struct Expense;

#[saga(name = "expense", input = Claim)]
impl Expense {
    #[step]
    async fn approve(&self, #[signal] approval: Approval) -> Result<String, StepError> {
        Ok(approval.by)
    }
}

fn main() {}
