//! Every way to wait composes with concurrent steps: a branch with a delay, a branch that
//! waits for a signal, a child step with a delay, and a step after the join that waits.
use saga_runtime::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Parcel { pub grams: u32 }

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Review { pub ok: bool }

pub struct Courier;

#[saga(name = "courier", input = Parcel)]
impl Courier {
    #[step]
    async fn label(&self, input: &Parcel) -> Result<u32, StepError> {
        Ok(input.grams)
    }
}

pub struct Shop;

#[saga(name = "shop", input = Parcel)]
impl Shop {
    #[step]
    async fn pack(&self) -> Result<(), StepError> {
        Ok(())
    }

    #[step(concurrent, child, delay = "1h")]
    async fn ship(&self, input: &Parcel) -> Result<Child<Courier>, StepError> {
        Ok(Child::start(input.clone()))
    }

    #[step(concurrent, timeout = "2d")]
    async fn review(&self, #[signal] review: Review) -> Result<bool, StepError> {
        Ok(review.ok)
    }

    #[step(concurrent, delay = "10m")]
    async fn invoice(&self) -> Result<(), StepError> {
        Ok(())
    }

    #[step]
    async fn close(&self, #[signal] archive: Review) -> Result<(), StepError> {
        let _ = archive;
        Ok(())
    }
}

fn main() {
    assert_eq!(Shop::DEFINITION.signals(), ["review", "archive", "child:ship"]);
}
