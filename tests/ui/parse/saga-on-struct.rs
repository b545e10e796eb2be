use saga_runtime::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Input { pub id: u64 }

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Made { pub id: u64 }

pub struct Flow;

#[saga(name = "flow", input = Input)]
pub struct NotAnImpl;

fn main() {}
