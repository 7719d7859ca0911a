//! Time as the resilience units keep it: every decision takes `now` from its caller, so a test
//! can drive the state machines with made-up instants, and instants are stored in atomics as
//! nanoseconds since an [`Epoch`] taken when the service's endpoints were set up.

use std::time::{Duration, Instant, SystemTime};

/// The origin of the nanosecond counts kept in atomics. `0` stands for "never", so counts start at 1.
#[derive(Debug, Clone, Copy)]
pub struct Epoch(Instant);

impl Epoch {
    /// An epoch at `origin`.
    pub fn new(origin: Instant) -> Self {
        Self(origin)
    }

    /// `at` as a count; instants before the epoch count as its first nanosecond.
    pub fn nanos(self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.0).as_nanos()).unwrap_or(u64::MAX - 1).saturating_add(1)
    }

    /// A count back as an instant; `None` for 0 ("never").
    pub fn instant(self, nanos: u64) -> Option<Instant> {
        (nanos != 0).then(|| self.0 + Duration::from_nanos(nanos - 1))
    }
}

/// `at` on the wall clock, for status pages: now plus the time still to go.
pub fn wall(at: Instant, now: Instant) -> SystemTime {
    SystemTime::now() + at.saturating_duration_since(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_survive_the_round_trip_and_zero_means_never() {
        let origin = Instant::now();
        let epoch = Epoch::new(origin);
        let later = origin + Duration::from_millis(1500);
        assert_eq!(epoch.instant(epoch.nanos(later)), Some(later));
        assert_eq!(epoch.instant(epoch.nanos(origin)), Some(origin));
        assert_eq!(epoch.instant(0), None);
        assert!(epoch.nanos(origin) > 0);
    }
}
