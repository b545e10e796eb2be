use saga_runtime::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Input { pub id: u64 }

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Made { pub id: u64 }

pub struct Flow;

pub trait Workflow {}

#[saga(name = "flow", input = Input)]
impl Workflow for Flow {}

fn main() {}
