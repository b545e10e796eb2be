//! The outputs of steps on their way into a saga's typed context.

/// The output of one step attempt, on its way into the context.
pub type StepOutput = Box<dyn core::any::Any + Send + Sync>;

/// Boxes a step's output for the runtime, which stores it into the context with
/// [`Saga::store_output`](crate::Saga::store_output) once no other step reads the context.
#[inline]
pub fn step_output<T: Send + Sync + 'static>(output: T) -> StepOutput {
    Box::new(output)
}

/// Outputs of steps that completed while other steps of the same saga were still running
/// (and reading the context): each step's slot is set once, through a shared reference, and
/// moved into the context when no step runs.
pub struct Outputs {
    slots: Box<[std::sync::OnceLock<StepOutput>]>,
    /// Outputs set but then withdrawn (they could not be checkpointed): read as absent.
    withdrawn: Box<[std::sync::atomic::AtomicBool]>,
}

impl core::fmt::Debug for Outputs {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let set: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].get().is_some() && !self.is_withdrawn(i))
            .collect();
        f.debug_struct("Outputs")
            .field("set", &set)
            .finish_non_exhaustive()
    }
}

impl Outputs {
    /// No outputs, for a saga of `steps` steps.
    pub(crate) fn new(steps: usize) -> Self {
        Outputs {
            slots: (0..steps).map(|_| std::sync::OnceLock::new()).collect(),
            withdrawn: (0..steps)
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect(),
        }
    }

    /// The output of step `step`, if it is here and of type `T`.
    #[must_use]
    pub fn get<T: 'static>(&self, step: usize) -> Option<&T> {
        if self.is_withdrawn(step) {
            return None;
        }
        self.slots.get(step)?.get()?.downcast_ref()
    }

    fn is_withdrawn(&self, step: usize) -> bool {
        self.withdrawn
            .get(step)
            .is_none_or(|flag| flag.load(std::sync::atomic::Ordering::Acquire))
    }

    /// Withdraws step `step`'s output: it reads as absent, and is dropped when drained.
    pub(crate) fn withdraw(&self, step: usize) {
        if let Some(flag) = self.withdrawn.get(step) {
            flag.store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// Sets step `step`'s output; `false` if the slot does not exist or is taken.
    pub(crate) fn set(&self, step: usize, output: StepOutput) -> bool {
        self.slots
            .get(step)
            .is_some_and(|slot| slot.set(output).is_ok())
    }

    /// Moves every output that was not withdrawn out, with its step index.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (usize, StepOutput)> + '_ {
        self.slots
            .iter_mut()
            .zip(self.withdrawn.iter_mut())
            .enumerate()
            .filter_map(|(step, (slot, withdrawn))| {
                let output = slot.take()?;
                (!*withdrawn.get_mut()).then_some((step, output))
            })
    }
}
