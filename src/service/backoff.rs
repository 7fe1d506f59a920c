//! How long to wait before asking an EHR again: exponential backoff and jitter, shared by partner-driven
//! polls and the background poller.

use uuid::Uuid;

/// Exponential backoff from `base` seconds after `failures` failed polls, capped at `max`.
pub fn backoff_secs(base: u64, failures: i64, max: u64) -> u64 {
    let exp = failures.clamp(0, 20) as u32;
    base.max(1)
        .saturating_mul(2u64.saturating_pow(exp))
        .min(max)
}

/// ±20% so many jobs or replicas do not retry in step.
pub fn jitter(secs: u64) -> u64 {
    let spread = (secs / 5).max(1);
    let r = (Uuid::new_v4().as_u128() % u128::from(2 * spread + 1)) as u64;
    (secs + r).saturating_sub(spread).max(1)
}

#[cfg(test)]
mod tests {
    use super::{backoff_secs, jitter};

    #[test]
    fn backoff_doubles_from_the_base_and_stops_at_the_cap() {
        assert_eq!(backoff_secs(5, 0, 600), 5);
        assert_eq!(backoff_secs(5, 1, 600), 10);
        assert_eq!(backoff_secs(5, 3, 600), 40);
        assert_eq!(backoff_secs(5, 30, 600), 600);
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        for _ in 0..200 {
            let j = jitter(100);
            assert!((80..=120).contains(&j), "{j}");
        }
        assert!(jitter(1) >= 1);
    }
}
