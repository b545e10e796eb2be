use saga_runtime::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claim { pub cents: u64 }

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Approval { pub by: String }

pub struct Expense;

#[saga(name = "expense", input = Claim)]
impl Expense {
    #[step]
    async fn approve(
        &self,
        #[signal] manager: Approval,
        #[signal] finance: Approval,
    ) -> Result<String, StepError> {
        Ok(format!("{} {}", manager.by, finance.by))
    }
}

fn main() {}
