//! The generated code names everything by absolute paths: shadowing std names beside the
//! saga changes nothing.
#![deny(warnings)]

use saga_runtime::prelude::{saga, step, Deserialize, Serialize, StepError};

#[allow(dead_code)]
struct Result;
#[allow(dead_code)]
struct Ok;
#[allow(dead_code)]
struct Err;
#[allow(dead_code)]
struct Some;
#[allow(dead_code)]
struct None;
#[allow(dead_code)]
struct Option;
#[allow(dead_code)]
struct Box;
#[allow(dead_code)]
struct Duration;
#[allow(dead_code)]
mod core {}
#[allow(dead_code)]
mod serde {}
#[allow(dead_code)]
trait Saga {}
#[allow(dead_code)]
trait Future {}

/// Input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Input {
    /// Id.
    pub id: u64,
}

/// The saga.
pub struct Flow;

#[saga(name = "flow", input = Input)]
impl Flow {
    #[step(timeout = 1, compensate = "unmake")]
    async fn make(&self, input: &Input) -> ::std::result::Result<u64, StepError> {
        ::std::result::Result::Ok(input.id)
    }

    async fn unmake(&self, make: &u64) -> ::std::result::Result<(), StepError> {
        let _ = make;
        ::std::result::Result::Ok(())
    }
}

fn main() {
    let _ = <Flow as saga_runtime::Saga>::DEFINITION;
}
