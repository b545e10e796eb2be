use saga_runtime::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Input { pub id: u64 }

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Made { pub id: u64 }

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shipped { pub tracking: String }

pub struct Flow;

#[saga(name = "flow", input = Input)]
impl Flow {
    #[step]
    async fn make(&self, input: &Input) {
        let _ = input;
    }
}

fn main() {}
