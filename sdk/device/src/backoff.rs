//! Exponential reconnect back-off with full jitter, so that a city's worth of devices that lost
//! the platform at the same moment do not all come back in the same second.

use std::time::Duration;

/// Delay before reconnect attempt `n` (0-based): a random duration in
/// `[base·2ⁿ / 2, base·2ⁿ]`, capped at `max`. Half the window is kept fixed so that a device
/// never hammers the platform with near-zero delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
        }
    }

    /// The delay before attempt `attempt` (0 is the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
            .min(self.max);
        let half = ceiling / 2;
        let jitter_ms = half.as_millis() as u64;
        let extra = if jitter_ms == 0 {
            0
        } else {
            rand::random_range(0..=jitter_ms)
        };
        half + Duration::from_millis(extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_is_jittered_and_capped() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        for _ in 0..100 {
            let d0 = b.delay(0);
            assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
            let d3 = b.delay(3);
            assert!(d3 >= Duration::from_millis(400) && d3 <= Duration::from_millis(800));
            let d30 = b.delay(30);
            assert!(d30 >= Duration::from_secs(1) && d30 <= Duration::from_secs(2));
            assert!(b.delay(u32::MAX) <= Duration::from_secs(2));
        }
        let spread: std::collections::HashSet<_> = (0..50).map(|_| b.delay(5)).collect();
        assert!(spread.len() > 1, "delays are jittered");
    }
}
