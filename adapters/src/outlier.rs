//! Passive outlier ejection: an endpoint that fails several exchanges in a row is taken out of
//! the rotation for a while, longer each time it is ejected again soon after coming back. What
//! counts as a failure is a gateway failure, as Envoy calls it: no connection, a broken exchange,
//! no answer in time, or an answer of 502, 503 or 504.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::clock::Epoch;

/// When an endpoint is ejected and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierOptions {
    /// Failures in a row that eject an endpoint.
    pub consecutive_failures: u32,
    /// How long the first ejection lasts; each ejection soon after the last doubles it.
    pub base_ejection: Duration,
    /// The longest an ejection lasts.
    pub max_ejection: Duration,
    /// At most this share of a service's endpoints is ejected at once (at least one, never all),
    /// so that a fault shared by every endpoint does not empty the service.
    pub max_ejected_percent: u32,
}

impl Default for OutlierOptions {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

impl OutlierOptions {
    /// How many of `endpoints` may be ejected at once: `max_ejected_percent` of them, at least
    /// one, and never all. An ejection steers calls to the other endpoints; with none left it
    /// would turn every call, including those the service would answer, into the gateway's 503
    /// for the ejection's length, over some calls' failures (a service's own 503 on one path).
    /// nginx never marks a lone server down, and Envoy's panic routing sends to every endpoint
    /// once too few are healthy: the same rule.
    pub fn max_ejected(&self, endpoints: usize) -> usize {
        (endpoints * self.max_ejected_percent.min(100) as usize / 100).max(1).min(endpoints.saturating_sub(1))
    }
}

/// One endpoint's record of failures and ejections, updated lock-free from every exchange.
#[derive(Debug, Default)]
pub struct OutlierState {
    consecutive: AtomicU32,
    /// End of the current or last ejection ([`Epoch`] nanoseconds, 0 for never).
    ejected_until: AtomicU64,
    /// Ejections in the current streak, which sets the next one's length.
    ejections: AtomicU32,
}

impl OutlierState {
    /// Whether the endpoint is out of the rotation at `now`.
    pub fn is_ejected(&self, epoch: Epoch, now: Instant) -> bool {
        self.ejected_until(epoch, now).is_some()
    }

    /// The end of the ejection in force at `now`, if any.
    pub fn ejected_until(&self, epoch: Epoch, now: Instant) -> Option<Instant> {
        epoch.instant(self.ejected_until.load(Ordering::Acquire)).filter(|until| *until > now)
    }

    /// Failures in a row so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive.load(Ordering::Relaxed)
    }

    /// Takes on `old`'s state, whose times count from `old_epoch`: the same endpoint in a new
    /// configuration, so that a reload neither lets an ejected endpoint back nor forgets its
    /// failures in a row.
    pub fn take_over(&self, old: &OutlierState, old_epoch: Epoch, epoch: Epoch) {
        self.consecutive.store(old.consecutive.load(Ordering::Relaxed), Ordering::Relaxed);
        self.ejections.store(old.ejections.load(Ordering::Relaxed), Ordering::Relaxed);
        let until = old_epoch.instant(old.ejected_until.load(Ordering::Acquire)).map_or(0, |at| epoch.nanos(at));
        self.ejected_until.store(until, Ordering::Release);
    }

    /// An exchange succeeded: the run of failures is over.
    pub fn success(&self) {
        self.consecutive.store(0, Ordering::Relaxed);
    }

    /// An active health check passed: an ejected endpoint is back at once (it answers again, so
    /// there is no reason to wait out the ejection), and the run of failures is over.
    pub fn uneject(&self, epoch: Epoch, now: Instant) {
        self.consecutive.store(0, Ordering::Relaxed);
        let current = self.ejected_until.load(Ordering::Acquire);
        if epoch.instant(current).is_some_and(|until| until > now) {
            let _ = self.ejected_until.compare_exchange(current, epoch.nanos(now), Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// An exchange failed. Returns the end of the ejection when this failure ejected the
    /// endpoint; `may_eject` says whether the service's cap on ejected endpoints allows it.
    pub fn failure(
        &self,
        opts: &OutlierOptions,
        epoch: Epoch,
        now: Instant,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<Instant> {
        let failures = self.consecutive.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if failures < opts.consecutive_failures.max(1) {
            return None;
        }
        let current = self.ejected_until.load(Ordering::Acquire);
        let last_end = epoch.instant(current);
        if last_end.is_some_and(|until| until > now) || !may_eject() {
            return None;
        }
        // A streak ends when the endpoint stayed in for longer than the longest ejection.
        let calm = last_end.is_none_or(|end| now.saturating_duration_since(end) > opts.max_ejection);
        let streak = if calm { 0 } else { self.ejections.load(Ordering::Relaxed) };
        let length = opts.base_ejection.saturating_mul(1u32 << streak.min(16)).min(opts.max_ejection);
        let until = now + length;
        // Only one of several failures racing here ejects.
        self.ejected_until.compare_exchange(current, epoch.nanos(until), Ordering::AcqRel, Ordering::Relaxed).ok()?;
        self.ejections.store(streak.saturating_add(1), Ordering::Relaxed);
        self.consecutive.store(0, Ordering::Relaxed);
        Some(until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> OutlierOptions {
        OutlierOptions {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(60),
            max_ejected_percent: 50,
        }
    }

    #[test]
    fn the_threshold_of_failures_in_a_row_ejects_and_a_success_resets_the_count() {
        let t0 = Instant::now();
        let (epoch, o, s) = (Epoch::new(t0), opts(), OutlierState::default());
        assert_eq!(s.failure(&o, epoch, t0, || true), None);
        assert_eq!(s.failure(&o, epoch, t0, || true), None);
        s.success();
        assert_eq!(s.failure(&o, epoch, t0, || true), None);
        assert_eq!(s.failure(&o, epoch, t0, || true), None);
        assert!(!s.is_ejected(epoch, t0));
        let until = s.failure(&o, epoch, t0, || true).expect("ejected at the third failure in a row");
        assert_eq!(until, t0 + Duration::from_secs(10));
        assert!(s.is_ejected(epoch, t0 + Duration::from_secs(9)));
        assert!(!s.is_ejected(epoch, t0 + Duration::from_secs(10)), "back when the ejection ends");
    }

    #[test]
    fn a_new_configuration_takes_over_an_ejection_and_the_failures_in_a_row() {
        let t0 = Instant::now();
        let (old_epoch, o, old) = (Epoch::new(t0), opts(), OutlierState::default());
        for _ in 0..3 {
            old.failure(&o, old_epoch, t0, || true);
        }
        let until = old.ejected_until(old_epoch, t0).expect("ejected");
        // The reload's state counts time from later on.
        let t1 = t0 + Duration::from_secs(4);
        let (epoch, new) = (Epoch::new(t1), OutlierState::default());
        new.take_over(&old, old_epoch, epoch);
        assert_eq!(new.ejected_until(epoch, t1), Some(until), "the same end, counted from the new epoch");
        // Its streak goes on: the next ejection, soon after this one ends, is twice as long.
        let back = until + Duration::from_secs(1);
        for _ in 0..3 {
            new.failure(&o, epoch, back, || true);
        }
        assert_eq!(new.ejected_until(epoch, back), Some(back + Duration::from_secs(20)));
        // A state never ejected stays so, with its failures in a row.
        let failing = OutlierState::default();
        failing.failure(&o, old_epoch, t0, || true);
        failing.failure(&o, old_epoch, t0, || true);
        let fresh = OutlierState::default();
        fresh.take_over(&failing, old_epoch, epoch);
        assert!(!fresh.is_ejected(epoch, t1));
        assert_eq!(fresh.consecutive_failures(), 2);
        assert!(fresh.failure(&o, epoch, t1, || true).is_some(), "the third in a row ejects");
    }

    #[test]
    fn ejections_soon_after_coming_back_double_up_to_the_maximum() {
        let t0 = Instant::now();
        let (epoch, o, s) = (Epoch::new(t0), opts(), OutlierState::default());
        let mut now = t0;
        let mut lengths = Vec::new();
        for _ in 0..5 {
            let until = (0..3).find_map(|_| s.failure(&o, epoch, now, || true)).expect("ejected");
            lengths.push((until - now).as_secs());
            now = until + Duration::from_secs(1);
        }
        assert_eq!(lengths, vec![10, 20, 40, 60, 60]);
        // In for longer than the longest ejection: the next one starts short again.
        now += Duration::from_secs(61);
        let until = (0..3).find_map(|_| s.failure(&o, epoch, now, || true)).expect("ejected");
        assert_eq!((until - now).as_secs(), 10);
    }

    #[test]
    fn the_cap_on_ejected_endpoints_holds_one_back() {
        let t0 = Instant::now();
        let (epoch, o, s) = (Epoch::new(t0), opts(), OutlierState::default());
        for _ in 0..10 {
            assert_eq!(s.failure(&o, epoch, t0, || false), None);
        }
        assert!(!s.is_ejected(epoch, t0));
        assert_eq!(o.max_ejected(2), 1);
        assert_eq!(o.max_ejected(1), 0, "a lone endpoint is never ejected");
        assert_eq!(OutlierOptions { max_ejected_percent: 100, ..opts() }.max_ejected(3), 2, "nor all of them");
        assert_eq!(o.max_ejected(10), 5);
    }

    #[test]
    fn a_passing_health_check_ends_an_ejection_at_once() {
        let t0 = Instant::now();
        let (epoch, o, s) = (Epoch::new(t0), opts(), OutlierState::default());
        let until = (0..3).find_map(|_| s.failure(&o, epoch, t0, || true)).expect("ejected");
        let now = t0 + Duration::from_secs(2);
        assert_eq!(s.ejected_until(epoch, now), Some(until));
        s.uneject(epoch, now);
        assert!(!s.is_ejected(epoch, now));
        assert_eq!(s.consecutive_failures(), 0);
    }
}
