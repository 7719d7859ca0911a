//! The rate-limit stage of the exchange path (design §4): each client gets its own bucket on each
//! service, sized by the service's `rate_limit` or by a `[[quota]]` override for that client.
//! Buckets are GCRA cells from `governor`: lock-free, one atomic per check, no allocation once a
//! client has called.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota, RateLimiter};
use splpd_certs::id::{ClientId, ServiceId};

use crate::config::Config;

/// A limit in force: sustained calls per second and the burst allowed above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    /// Sustained calls per second.
    pub per_second: NonZeroU32,
    /// Calls that may be made at once after a quiet spell.
    pub burst: NonZeroU32,
}

impl Rate {
    /// A rate as the configuration writes it; `burst` defaults to `per_second`. Validation refuses
    /// zeros; should one reach here anyway it becomes 1, the strictest limit there is, rather than
    /// a panic or no limit at all.
    pub fn new(per_second: u32, burst: Option<u32>) -> Self {
        let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = burst.map_or(per_second, |b| NonZeroU32::new(b).unwrap_or(NonZeroU32::MIN));
        Self { per_second, burst }
    }

    fn quota(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let calls = if self.per_second.get() == 1 { "call" } else { "calls" };
        write!(f, "{} {calls}/s, burst {}", self.per_second, self.burst)
    }
}

/// Where a limit comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitSource {
    /// The service's `rate_limit`, which every client gets separately.
    Service,
    /// A `[[quota]]` for this client on this service.
    Quota,
}

/// A refused call: the client has used up its burst and must wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimited {
    /// Boxed so that `Result<(), RateLimited>` stays small on the path where calls pass.
    who: Box<(ClientId, ServiceId)>,
    rate: Rate,
    limit_source: LimitSource,
    wait: Duration,
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whose = match self.limit_source {
            LimitSource::Service => "the service's limit per client",
            LimitSource::Quota => "its quota",
        };
        write!(
            f,
            "{} is over its rate limit on {} ({}, {whose}); retry in {} s",
            self.who.0,
            self.who.1,
            self.rate,
            self.retry_after_secs()
        )
    }
}

impl std::error::Error for RateLimited {}

impl RateLimited {
    /// The client refused.
    pub fn client(&self) -> &ClientId {
        &self.who.0
    }

    /// The service it called.
    pub fn service(&self) -> &ServiceId {
        &self.who.1
    }

    /// The limit it hit.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Whether that limit is the service's or a per-client quota.
    pub fn limit_source(&self) -> LimitSource {
        self.limit_source
    }

    /// How long until the next call would be allowed.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// The wait for `Retry-After` ([`crate::error::retry_after_secs`]).
    pub fn retry_after_secs(&self) -> u64 {
        crate::error::retry_after_secs(self.wait)
    }
}

type Keyed<C> = RateLimiter<ClientId, DashMapStateStore<ClientId>, C, NoOpMiddleware<<C as Clock>::Instant>>;
type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// A limiter and the rate it enforces. Limiters sit behind `Arc` so that a new configuration
/// snapshot can keep the buckets of limits it did not change.
struct Bucket<L> {
    rate: Rate,
    limiter: Arc<L>,
}

struct ServiceLimits<C: Clock> {
    /// One bucket per client, created on its first call.
    ///
    /// The map grows by one entry per distinct client, and is bounded: this stage runs after
    /// authorize, so only clients that hold a grant on the service reach it, and those are named
    /// by the configuration (directly or through groups), under identities our PKI and trust
    /// scopes vouch for. `retain_recent` drops entries of clients that have gone quiet.
    default: Option<Bucket<Keyed<C>>>,
    /// Per-client quotas, each its own bucket.
    overrides: HashMap<ClientId, Bucket<Direct<C>>>,
}

/// The rate limits of one configuration snapshot.
pub struct Limiter<C: Clock = DefaultClock> {
    clock: C,
    services: HashMap<ServiceId, ServiceLimits<C>>,
}

impl Limiter {
    /// The limits of `config`, timed by the monotonic clock.
    pub fn new(config: &Config) -> Self {
        Self::with_clock(config, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Limiter<C> {
    /// The limits of `config`, timed by `clock` (tests pass `governor::clock::FakeRelativeClock`).
    pub fn with_clock(config: &Config, clock: C) -> Self {
        Self::build(config, clock, None)
    }

    /// The limits of a new configuration snapshot. Buckets whose limit did not change carry over,
    /// so that a reload neither hands every client a fresh burst nor forgets one that is over.
    #[must_use]
    pub fn reconfigure(&self, config: &Config) -> Self {
        Self::build(config, self.clock.clone(), Some(self))
    }

    fn build(config: &Config, clock: C, previous: Option<&Self>) -> Self {
        let mut services: HashMap<ServiceId, ServiceLimits<C>> = HashMap::new();
        for s in &config.services {
            let old = previous.and_then(|p| p.services.get(&s.id));
            let default = s.rate_limit.map(|rl| {
                let rate = Rate::new(rl.per_second, rl.burst);
                let limiter = match old.and_then(|o| o.default.as_ref()).filter(|b| b.rate == rate) {
                    Some(b) => Arc::clone(&b.limiter),
                    None => Arc::new(RateLimiter::dashmap_with_clock(rate.quota(), clock.clone())),
                };
                Bucket { rate, limiter }
            });
            services.insert(s.id.clone(), ServiceLimits { default, overrides: HashMap::new() });
        }
        for q in &config.quotas {
            let rate = Rate::new(q.per_second, q.burst);
            let old = previous.and_then(|p| p.services.get(&q.service)).and_then(|o| o.overrides.get(&q.client));
            let limiter = match old.filter(|b| b.rate == rate) {
                Some(b) => Arc::clone(&b.limiter),
                None => Arc::new(RateLimiter::direct_with_clock(rate.quota(), clock.clone())),
            };
            // A quota for a service not in `[[service]]` is refused by validation; keeping it
            // does no harm, as such a service is never routed to.
            let limits = services
                .entry(q.service.clone())
                .or_insert_with(|| ServiceLimits { default: None, overrides: HashMap::new() });
            limits.overrides.insert(q.client.clone(), Bucket { rate, limiter });
        }
        Self { clock, services }
    }
}

impl<C: Clock> Limiter<C> {
    /// Takes one call from `client`'s bucket on `service`, or says how long it must wait.
    /// Services with neither a `rate_limit` nor a quota for the client are unlimited.
    pub fn check(&self, client: &ClientId, service: &ServiceId) -> Result<(), RateLimited> {
        let Some(limits) = self.services.get(service) else {
            return Ok(());
        };
        let (outcome, rate, source) = if let Some(b) = limits.overrides.get(client) {
            (b.limiter.check(), b.rate, LimitSource::Quota)
        } else if let Some(b) = &limits.default {
            (b.limiter.check_key(client), b.rate, LimitSource::Service)
        } else {
            return Ok(());
        };
        outcome.map_err(|not_until| self.refusal(client, service, rate, source, &not_until))
    }

    /// The limit that applies to `client` on `service`, if any (for `X-RateLimit-*` style headers
    /// and the directory).
    pub fn limit(&self, client: &ClientId, service: &ServiceId) -> Option<(Rate, LimitSource)> {
        let limits = self.services.get(service)?;
        match limits.overrides.get(client) {
            Some(b) => Some((b.rate, LimitSource::Quota)),
            None => limits.default.as_ref().map(|b| (b.rate, LimitSource::Service)),
        }
    }

    /// Forgets the buckets of clients that have been quiet long enough for them to be full
    /// again, which is indistinguishable from never having called. For a periodic housekeeping
    /// task; checks go on concurrently.
    pub fn retain_recent(&self) {
        for limits in self.services.values() {
            if let Some(b) = &limits.default {
                // No shrink_to_fit: the set of clients is bounded, so the capacity is too, and
                // it will be wanted again on the next busy spell.
                b.limiter.retain_recent();
            }
        }
    }

    /// How many per-client buckets the services' limits hold now (quota buckets not counted),
    /// for metrics.
    pub fn tracked_clients(&self) -> usize {
        self.services.values().filter_map(|l| l.default.as_ref()).map(|b| b.limiter.len()).sum()
    }

    #[cold]
    fn refusal(
        &self,
        client: &ClientId,
        service: &ServiceId,
        rate: Rate,
        source: LimitSource,
        not_until: &NotUntil<C::Instant>,
    ) -> RateLimited {
        RateLimited {
            who: Box::new((client.clone(), service.clone())),
            rate,
            limit_source: source,
            wait: not_until.wait_time_from(self.clock.now()),
        }
    }
}

impl<C: Clock> fmt::Debug for Limiter<C> {
    /// Shows the limits, not the buckets: those hold one entry per client.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (service, limits) in &self.services {
            let quotas: Vec<_> = limits.overrides.iter().map(|(c, b)| (c, b.rate)).collect();
            m.entry(service, &(limits.default.as_ref().map(|b| b.rate), quotas));
        }
        m.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    const BASE: &str = r#"
[gateway]
id = "ID/PEMDA/1602/gw1"
cert = "gw.pem"
key = "gw.key"

[[service]]
id = "ID/PEMDA/1602/DISDUKCAPIL/nik-verify"
upstreams = ["http://127.0.0.1:9001"]
rate_limit = { per_second = 2, burst = 3 }

[[service]]
id = "ID/PEMDA/1602/DINKES/rujukan"
upstreams = ["http://127.0.0.1:9002"]
"#;

    const NIK: &str = "ID/PEMDA/1602/DISDUKCAPIL/nik-verify";
    const RUJUKAN: &str = "ID/PEMDA/1602/DINKES/rujukan";

    fn config(extra: &str) -> Config {
        toml::from_str(&format!("{BASE}{extra}")).unwrap()
    }

    fn limiter(extra: &str) -> (Limiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (Limiter::with_clock(&config(extra), clock.clone()), clock)
    }

    fn ids(client: &str, service: &str) -> (ClientId, ServiceId) {
        (client.parse().unwrap(), service.parse().unwrap())
    }

    /// How many calls in a row pass before the first refusal (gives up at 1000).
    fn passes(l: &Limiter<FakeRelativeClock>, client: &ClientId, service: &ServiceId) -> usize {
        (0..1000).take_while(|_| l.check(client, service).is_ok()).count()
    }

    #[test]
    fn burst_passes_then_calls_are_refused() {
        let (l, _) = limiter("");
        let (dinkes, nik) = ids("ID/PEMDA/1602/DINKES", NIK);
        assert_eq!(passes(&l, &dinkes, &nik), 3);
        let err = l.check(&dinkes, &nik).unwrap_err();
        assert_eq!(err.limit_source(), LimitSource::Service);
        assert_eq!(err.wait(), Duration::from_millis(500));
    }

    #[test]
    fn bucket_refills_as_the_clock_advances() {
        let (l, clock) = limiter("");
        let (dinkes, nik) = ids("ID/PEMDA/1602/DINKES", NIK);
        assert_eq!(passes(&l, &dinkes, &nik), 3);
        clock.advance(Duration::from_millis(499));
        assert!(l.check(&dinkes, &nik).is_err());
        clock.advance(Duration::from_millis(1));
        assert!(l.check(&dinkes, &nik).is_ok());
        assert!(l.check(&dinkes, &nik).is_err());
        // A long quiet spell refills the burst, and no more than the burst.
        clock.advance(Duration::from_secs(60));
        assert_eq!(passes(&l, &dinkes, &nik), 3);
    }

    #[test]
    fn burst_defaults_to_the_rate() {
        assert_eq!(Rate::new(2, None), Rate::new(2, Some(2)));
        let (l, _) =
            limiter(&format!("[[quota]]\nservice = \"{NIK}\"\nclient = \"ID/PEMDA/1602/BPKAD\"\nper_second = 5\n"));
        let (bpkad, nik) = ids("ID/PEMDA/1602/BPKAD", NIK);
        assert_eq!(passes(&l, &bpkad, &nik), 5);
    }

    #[test]
    fn a_quota_overrides_the_service_limit_for_its_client_only() {
        let (l, _) = limiter(&format!(
            "[[quota]]\nservice = \"{NIK}\"\nclient = \"ID/PEMDA/1602/DINKES\"\nper_second = 10\nburst = 20\n\
             [[quota]]\nservice = \"{NIK}\"\nclient = \"ID/PEMDA/1602/BAPPEDA\"\nper_second = 1\n"
        ));
        let (dinkes, nik) = ids("ID/PEMDA/1602/DINKES", NIK);
        let (bappeda, _) = ids("ID/PEMDA/1602/BAPPEDA", NIK);
        let (bpkad, _) = ids("ID/PEMDA/1602/BPKAD", NIK);
        assert_eq!(passes(&l, &dinkes, &nik), 20);
        assert_eq!(passes(&l, &bappeda, &nik), 1);
        assert_eq!(passes(&l, &bpkad, &nik), 3);
        let err = l.check(&dinkes, &nik).unwrap_err();
        assert_eq!(err.limit_source(), LimitSource::Quota);
        assert_eq!(err.wait(), Duration::from_millis(100));
        assert_eq!(l.limit(&bappeda, &nik), Some((Rate::new(1, None), LimitSource::Quota)));
        assert_eq!(l.limit(&bpkad, &nik), Some((Rate::new(2, Some(3)), LimitSource::Service)));
    }

    #[test]
    fn a_quota_limits_a_service_that_has_no_limit_of_its_own() {
        let (l, _) = limiter(&format!(
            "[[quota]]\nservice = \"{RUJUKAN}\"\nclient = \"ID/PEMDA/1602/DINKES\"\nper_second = 2\n"
        ));
        let (dinkes, rujukan) = ids("ID/PEMDA/1602/DINKES", RUJUKAN);
        let (bappeda, _) = ids("ID/PEMDA/1602/BAPPEDA", RUJUKAN);
        assert_eq!(passes(&l, &dinkes, &rujukan), 2);
        assert_eq!(passes(&l, &bappeda, &rujukan), 1000);
    }

    #[test]
    fn clients_do_not_share_a_bucket() {
        let (l, _) = limiter("");
        let (dinkes, nik) = ids("ID/PEMDA/1602/DINKES", NIK);
        let (other_region, _) = ids("ID/PEMDA/1601/DINKES", NIK);
        assert_eq!(passes(&l, &dinkes, &nik), 3);
        assert_eq!(passes(&l, &other_region, &nik), 3);
        assert_eq!(l.tracked_clients(), 2);
    }

    #[test]
    fn unlimited_services_never_refuse() {
        let (l, _) = limiter("");
        let (dinkes, rujukan) = ids("ID/PEMDA/1602/DINKES", RUJUKAN);
        let (_, unknown) = ids("ID/PEMDA/1602/DINKES", "ID/PEMDA/1602/BPKAD/gaji");
        assert_eq!(passes(&l, &dinkes, &rujukan), 1000);
        assert_eq!(passes(&l, &dinkes, &unknown), 1000);
        assert_eq!(l.limit(&dinkes, &rujukan), None);
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
        let (dinkes, nik) = ids("ID/PEMDA/1602/DINKES", NIK);
        let refusal = |wait| RateLimited {
            who: Box::new((dinkes.clone(), nik.clone())),
            rate: Rate::new(2, Some(3)),
            limit_source: LimitSource::Service,
            wait,
        };
        assert_eq!(refusal(Duration::ZERO).retry_after_secs(), 1);
        assert_eq!(refusal(Duration::from_nanos(1)).retry_after_secs(), 1);
        assert_eq!(refusal(Duration::from_millis(500)).retry_after_secs(), 1);
        assert_eq!(refusal(Duration::from_secs(1)).retry_after_secs(), 1);
        assert_eq!(refusal(Duration::from_millis(1001)).retry_after_secs(), 2);
        assert_eq!(refusal(Duration::from_secs(2)).retry_after_secs(), 2);
        // From a real refusal: a 1 call/s quota half-way through its interval.
        let (l, clock) = limiter(&format!("[[quota]]\nservice = \"{NIK}\"\nclient = \"{dinkes}\"\nper_second = 1\n"));
        assert!(l.check(&dinkes, &nik).is_ok());
        clock.advance(Duration::from_millis(300));
        let err = l.check(&dinkes, &nik).unwrap_err();
        assert_eq!(err.wait(), Duration::from_millis(700));
        assert_eq!(err.retry_after_secs(), 1);
    }

    #[test]
    fn refusal_names_client_service_and_limit() {
        let (l, _) = limiter("");
        let (dinkes, nik) = ids("ID/PEMDA/1602/DINKES", NIK);
        assert_eq!(passes(&l, &dinkes, &nik), 3);
        let err = l.check(&dinkes, &nik).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ID/PEMDA/1602/DINKES is over its rate limit on ID/PEMDA/1602/DISDUKCAPIL/nik-verify \
             (2 calls/s, burst 3, the service's limit per client); retry in 1 s"
        );
    }

    #[test]
    fn reconfigure_keeps_buckets_whose_limit_is_unchanged() {
        let (l, clock) = limiter("");
        let (dinkes, nik) = ids("ID/PEMDA/1602/DINKES", NIK);
        assert_eq!(passes(&l, &dinkes, &nik), 3);
        let same = l.reconfigure(&config(""));
        assert!(same.check(&dinkes, &nik).is_err(), "a reload must not hand out a fresh burst");
        let changed = l.reconfigure(&config("").tap_rate(NIK, 5, None));
        assert_eq!(passes(&changed, &dinkes, &nik), 5);
        // The carried-over clock keeps time for the new snapshot too.
        clock.advance(Duration::from_millis(500));
        assert!(same.check(&dinkes, &nik).is_ok());
    }

    #[test]
    fn retain_recent_forgets_only_full_buckets() {
        let (l, clock) = limiter("");
        let (dinkes, nik) = ids("ID/PEMDA/1602/DINKES", NIK);
        let (bappeda, _) = ids("ID/PEMDA/1602/BAPPEDA", NIK);
        assert_eq!(passes(&l, &dinkes, &nik), 3);
        clock.advance(Duration::from_secs(10));
        assert!(l.check(&bappeda, &nik).is_ok());
        l.retain_recent();
        assert_eq!(l.tracked_clients(), 1, "DINKES's bucket is full again and can go; BAPPEDA's is not");
        assert_eq!(passes(&l, &bappeda, &nik), 2);
    }

    trait TapRate {
        fn tap_rate(self, service: &str, per_second: u32, burst: Option<u32>) -> Self;
    }

    impl TapRate for Config {
        fn tap_rate(mut self, service: &str, per_second: u32, burst: Option<u32>) -> Self {
            for s in &mut self.services {
                if s.id.to_string() == service {
                    s.rate_limit = Some(crate::config::RateLimit { per_second, burst });
                }
            }
            self
        }
    }
}
