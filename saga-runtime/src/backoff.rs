//! Retry policies: per-attempt timeout, retry budget, exponential backoff with jitter.

use std::time::Duration;

use crate::config::SagaConfig;
use crate::definition::{CompensationSpec, StepSpec};

/// Runtime-wide backoff defaults, used where a step sets no backoff key.
///
/// The delay after failed attempt `n` (from 1) is `initial * multiplier^(n-1)`, capped at
/// `max`, then reduced by a random fraction of at most `jitter` so that many sagas failing
/// together do not retry in lockstep.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Backoff {
    /// Delay after the first failed attempt. Default 100 ms.
    pub initial: Duration,
    /// Growth per attempt. Default 2.0.
    pub multiplier: f64,
    /// Upper bound of a delay. Default 30 s.
    pub max: Duration,
    /// Fraction of the delay that is random, from 0.0 to 1.0. Default 0.2.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            max: Duration::from_secs(30),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// Sets all four values.
    #[must_use]
    pub fn new(initial: Duration, multiplier: f64, max: Duration, jitter: f64) -> Self {
        Backoff {
            initial,
            multiplier,
            max,
            jitter,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err("multiplier must be a finite number of at least 1.0".into());
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err("jitter must be between 0.0 and 1.0".into());
        }
        if self.max < self.initial {
            return Err("max is shorter than initial".into());
        }
        Ok(())
    }
}

/// The resolved policy of one step or compensation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub(crate) timeout: Duration,
    /// Attempts allowed: retries + 1.
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
}

impl Policy {
    pub(crate) fn for_step(spec: &StepSpec, config: &SagaConfig, defaults: &Backoff) -> Self {
        let b = spec.backoff;
        let mut backoff = Backoff {
            initial: b.initial.unwrap_or(defaults.initial),
            multiplier: b.multiplier.unwrap_or(defaults.multiplier),
            max: b.max.unwrap_or(defaults.max),
            jitter: b.jitter.unwrap_or(defaults.jitter),
        };
        if backoff.max < backoff.initial {
            backoff.max = backoff.initial;
        }
        Policy {
            timeout: spec.timeout.unwrap_or(config.default_timeout),
            max_attempts: spec
                .retries
                .unwrap_or(config.default_max_retries)
                .saturating_add(1),
            backoff,
        }
    }

    /// A compensation uses its own timeout and retries when given, else its step's.
    pub(crate) fn for_compensation(
        step: &StepSpec,
        comp: &CompensationSpec,
        config: &SagaConfig,
        defaults: &Backoff,
    ) -> Self {
        let mut policy = Policy::for_step(step, config, defaults);
        if let Some(timeout) = comp.timeout {
            policy.timeout = timeout;
        }
        if let Some(retries) = comp.retries {
            policy.max_attempts = retries.saturating_add(1);
        }
        policy
    }

    /// The delay before the attempt after failed attempt `attempt` (from 1).
    pub(crate) fn delay(&self, attempt: u32, rng: &mut Rng) -> Duration {
        let b = &self.backoff;
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let base = b.initial.as_secs_f64() * b.multiplier.powi(exponent);
        let capped = if base.is_finite() {
            base.min(b.max.as_secs_f64())
        } else {
            b.max.as_secs_f64()
        };
        let factor = 1.0 - b.jitter * rng.next_f64();
        Duration::from_secs_f64((capped * factor).max(0.0))
    }
}

/// SplitMix64: small, fast, and seedable so that tests see exact delays.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    #[cfg(test)]
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// A generator for one saga: the runtime seed mixed with the saga id, so a saga's delays
    /// do not depend on what other sagas do.
    pub(crate) fn for_saga(seed: u64, saga_id: &str) -> Self {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in saga_id.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        Rng(seed ^ hash)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A seed for jitter, from the operating system's generator.
pub(crate) fn random_seed() -> u64 {
    crate::random::u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> Policy {
        Policy {
            timeout: Duration::from_secs(1),
            max_attempts: 10,
            backoff: Backoff::new(
                Duration::from_millis(100),
                2.0,
                Duration::from_secs(1),
                jitter,
            ),
        }
    }

    #[test]
    fn exponential_and_capped_without_jitter() {
        let p = policy(0.0);
        let mut rng = Rng::new(1);
        let delays: Vec<u128> = (1..=6).map(|n| p.delay(n, &mut rng).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_only_shortens_and_is_deterministic() {
        let p = policy(0.5);
        let a: Vec<Duration> = (1..=20).map(|n| p.delay(n, &mut Rng::new(7))).collect();
        let b: Vec<Duration> = (1..=20).map(|n| p.delay(n, &mut Rng::new(7))).collect();
        assert_eq!(a, b);
        for (n, d) in (1..=20).zip(&a) {
            let full = policy(0.0).delay(n, &mut Rng::new(0));
            assert!(*d <= full && *d >= full / 2, "{d:?} vs {full:?}");
        }
    }
}
