//! Active health checks: a background task per service asks each endpoint for a health path at
//! an interval, and takes an endpoint out after `unhealthy_threshold` failed checks in a row and
//! back after `healthy_threshold` passed ones. A passed check also ends an outlier ejection
//! early: the endpoint answers again, so there is no reason to wait the ejection out.

use std::time::Duration;

/// A service's health-check settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckOptions {
    /// The path asked for, under each endpoint's base URL.
    pub path: String,
    /// Time between checks of an endpoint.
    pub interval: Duration,
    /// Time allowed for an answer.
    pub timeout: Duration,
    /// Passed checks in a row that bring an endpoint back.
    pub healthy_threshold: u32,
    /// Failed checks in a row that take an endpoint out.
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheckOptions {
    fn default() -> Self {
        Self {
            path: "/".to_owned(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

/// What the checks of one endpoint have shown so far. Endpoints start healthy, so that a
/// gateway serves at once; passive ejection covers the time until the first checks fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthTracker {
    healthy: bool,
    run: u32,
}

impl Default for HealthTracker {
    fn default() -> Self {
        Self { healthy: true, run: 0 }
    }
}

impl HealthTracker {
    /// Whether the endpoint counts as healthy.
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Takes in one check's result; returns the new state when it changed.
    pub fn observe(&mut self, passed: bool, opts: &HealthCheckOptions) -> Option<bool> {
        if passed == self.healthy {
            self.run = 0;
            return None;
        }
        self.run += 1;
        let needed = if passed { opts.healthy_threshold } else { opts.unhealthy_threshold };
        if self.run >= needed.max(1) {
            self.healthy = passed;
            self.run = 0;
            Some(passed)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> HealthCheckOptions {
        HealthCheckOptions { healthy_threshold: 2, unhealthy_threshold: 3, ..HealthCheckOptions::default() }
    }

    #[test]
    fn failures_in_a_row_take_an_endpoint_out_and_successes_bring_it_back() {
        let (o, mut t) = (opts(), HealthTracker::default());
        assert!(t.healthy());
        assert_eq!(t.observe(false, &o), None);
        assert_eq!(t.observe(false, &o), None);
        assert_eq!(t.observe(false, &o), Some(false));
        assert!(!t.healthy());
        assert_eq!(t.observe(true, &o), None);
        assert_eq!(t.observe(true, &o), Some(true));
        assert!(t.healthy());
    }

    #[test]
    fn an_interrupted_run_starts_over() {
        let (o, mut t) = (opts(), HealthTracker::default());
        t.observe(false, &o);
        t.observe(false, &o);
        t.observe(true, &o);
        assert_eq!(t.observe(false, &o), None);
        assert_eq!(t.observe(false, &o), None);
        assert!(t.healthy(), "two failures after a pass are not three in a row");
        assert_eq!(t.observe(false, &o), Some(false));
    }
}
