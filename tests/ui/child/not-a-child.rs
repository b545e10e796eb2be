use saga_runtime::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Parcel { pub grams: u32 }

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
    #[step(child)]
    async fn ship(&self, input: &Parcel) -> Result<Parcel, StepError> {
        Ok(input.clone())
    }
}

fn main() {}
