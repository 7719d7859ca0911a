//! The refusal budget: how many refusals of callers it could not identify the gateway answers
//! and records per client address and minute (`[limits] refusals_per_address`).
//!
//! Why: such a refusal costs the gateway an answer and an audit record made durable, and the
//! caller next to nothing (a resumed TLS handshake, or on a listener that lets callers without
//! a certificate in, one more request). One address could so write thousands of records a second
//! and fill the audit disk, after which the log fails closed and every agency is refused. Past
//! its budget, an address's unidentified callers get no record:
//! - a connection that can only be refused (no certificate the gateway accepts, where one is
//!   required) is closed after its handshake, unanswered, as a handshake refused in TLS is;
//! - a request refused for want of an identity on a listener that serves callers without a
//!   certificate (`tls` or `http` opt-ins) gets a bare 401, and its connection stays open, since
//!   others may be calling on it (a proxy's); an HTTP/1.1 head hyper refuses there itself
//!   (malformed, too large) gets hyper's answer and no record.
//!
//! They are counted (`splpd_refusals_unrecorded_total`) and the operator is warned, with the
//! address, at most once a minute per address. Identified callers are never held to it.
//!
//! The budget is the gateway's, across its listeners, and survives reloads that keep its size.
//! An IPv6 address counts by its /64, which one host usually holds whole, so that a caller
//! cannot multiply its budget by walking its own prefix. The address is the TCP peer's: the
//! gateway reads neither the PROXY protocol nor `X-Forwarded-For`, so behind a load balancer
//! every unidentified caller shares the balancer's budget.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

/// After this many checks, addresses whose budget is full again are forgotten.
const FORGET_EVERY: u64 = 4096;

/// Most warnings a minute, over all addresses: a flood from many addresses must not flood the
/// operator's log in their place.
const WARNINGS_PER_MINUTE: NonZeroU32 = NonZeroU32::MIN.saturating_add(9);

/// The gateway's refusal budget per client address.
#[derive(Debug)]
pub struct RefusalBudget {
    /// The limiter, and the budget it was built for: a reload that changes the budget starts
    /// every address afresh under the new one.
    limiter: Mutex<Option<(NonZeroU32, Arc<DefaultKeyedRateLimiter<IpAddr>>)>>,
    checks: AtomicU64,
    unrecorded: AtomicU64,
    /// One warning a minute per address, and at most [`WARNINGS_PER_MINUTE`] in all.
    warned: DefaultKeyedRateLimiter<IpAddr>,
    warnings: DefaultDirectRateLimiter,
}

impl Default for RefusalBudget {
    fn default() -> Self {
        Self {
            limiter: Mutex::default(),
            checks: AtomicU64::new(0),
            unrecorded: AtomicU64::new(0),
            warned: RateLimiter::keyed(Quota::per_minute(NonZeroU32::MIN)),
            warnings: RateLimiter::direct(Quota::per_minute(WARNINGS_PER_MINUTE)),
        }
    }
}

impl RefusalBudget {
    /// Whether a refusal of an unidentified caller at `address` may be answered and recorded,
    /// within a budget of `per_minute` a minute (a burst of as many, then one every
    /// 60/`per_minute` seconds). Counts it either way; one past the budget is counted as
    /// unrecorded and warned of.
    pub fn allows(&self, per_minute: u32, address: IpAddr) -> bool {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        let key = counted_as(address);
        let limiter = self.limiter(per_minute);
        if self.checks.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
            self.warned.retain_recent();
            self.warned.shrink_to_fit();
        }
        if limiter.check_key(&key).is_ok() {
            return true;
        }
        let unrecorded = self.unrecorded.fetch_add(1, Ordering::Relaxed) + 1;
        // The address's turn is taken first: when the overall cap then says no, that address
        // waits a minute for its next warning, which costs less than spending the cap's few
        // warnings on addresses already warned of.
        if self.warned.check_key(&key).is_ok() && self.warnings.check().is_ok() {
            let address = shown(key);
            tracing::warn!(
                %address,
                refusals_per_address = per_minute,
                unrecorded,
                "callers at {address} that the gateway cannot identify were refused more often than [limits] \
                 refusals_per_address allows a minute: past it their refusals go unrecorded (the connection closed \
                 unanswered, or a bare 401 where callers without a certificate are served; \
                 splpd_refusals_unrecorded_total); if it is an agency's application, it needs its client certificate \
                 (or, on a listener that opts it in, its X-Road-Client)"
            );
        }
        false
    }

    /// Refusals left unrecorded since start.
    pub fn unrecorded(&self) -> u64 {
        self.unrecorded.load(Ordering::Relaxed)
    }

    fn limiter(&self, per_minute: NonZeroU32) -> Arc<DefaultKeyedRateLimiter<IpAddr>> {
        let mut slot = self.limiter.lock().unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            Some((built_for, limiter)) if *built_for == per_minute => Arc::clone(limiter),
            _ => {
                let limiter = Arc::new(RateLimiter::keyed(Quota::per_minute(per_minute)));
                *slot = Some((per_minute, Arc::clone(&limiter)));
                limiter
            }
        }
    }
}

/// The address a caller's refusals count under: an IPv4 address (mapped into IPv6 or not) as
/// itself, an IPv6 address by its /64.
pub(crate) fn counted_as(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

/// An address as [`counted_as`] gave it, as the log names it: an IPv6 one with its /64.
pub(crate) fn shown(counted: IpAddr) -> String {
    match counted {
        IpAddr::V6(prefix) => format!("{prefix}/64"),
        v4 => v4.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_own_budget_and_no_more() {
        let budget = RefusalBudget::default();
        let a: IpAddr = "10.20.0.7".parse().unwrap();
        let b: IpAddr = "10.20.0.8".parse().unwrap();
        assert!((0..3).all(|_| budget.allows(3, a)));
        assert!(!budget.allows(3, a), "a fourth within the minute is over");
        assert!(budget.allows(3, b), "another address is not held to a's count");
        // IPv4 mapped into IPv6 is the same caller.
        assert!(!budget.allows(3, "::ffff:10.20.0.7".parse().unwrap()));
        assert_eq!(budget.unrecorded(), 2);
    }

    #[test]
    fn an_ipv6_caller_counts_by_its_64_prefix() {
        let budget = RefusalBudget::default();
        assert!(budget.allows(1, "2001:db8:1:2::7".parse().unwrap()));
        assert!(!budget.allows(1, "2001:db8:1:2:ffff::1".parse().unwrap()), "same /64");
        assert!(budget.allows(1, "2001:db8:1:3::7".parse().unwrap()), "another /64");
    }

    #[test]
    fn a_new_budget_starts_every_address_afresh() {
        let budget = RefusalBudget::default();
        let a: IpAddr = "10.20.0.7".parse().unwrap();
        assert!(budget.allows(1, a));
        assert!(!budget.allows(1, a));
        assert!(budget.allows(2, a), "the budget was raised by a reload");
    }
}
