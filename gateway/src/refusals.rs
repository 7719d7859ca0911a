//! The refusal budget: how many connections that can only be refused (no client certificate
//! the gateway accepts) one client address may have answered and recorded per minute
//! (`[limits] refusals_per_address`).
//!
//! Why: each such connection costs the gateway an answer and an audit record, and the caller
//! only a TLS handshake (a resumed one at best). One address could so write thousands of records
//! a second and fill the audit disk, after which the log fails closed and every agency is refused.
//! Past its budget, an address's connections of that kind are closed after the handshake,
//! unanswered and unrecorded, as a handshake refused in TLS is, and counted
//! (`splpd_listener_refusals_unrecorded_total`). Identified callers are never held to it.
//!
//! An IPv6 address counts by its /64, which one host usually holds whole, so that a caller
//! cannot multiply its budget by walking its own prefix.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// After this many checks, addresses whose budget is full again are forgotten.
const FORGET_EVERY: u64 = 4096;

/// One listener's refusal budget per client address.
#[derive(Debug, Default)]
pub struct RefusalBudget {
    /// The limiter, and the budget it was built for: a reload that changes the budget starts
    /// every address afresh under the new one.
    limiter: Mutex<Option<(NonZeroU32, Arc<DefaultKeyedRateLimiter<IpAddr>>)>>,
    checks: AtomicU64,
}

impl RefusalBudget {
    /// Whether a connection from `address` that can only be refused is still within a budget of
    /// `per_minute` such connections a minute (a burst of as many, then one every 60/`per_minute`
    /// seconds). Counts it either way.
    pub fn allows(&self, per_minute: NonZeroU32, address: IpAddr) -> bool {
        let limiter = self.limiter(per_minute);
        if self.checks.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        limiter.check_key(&counted_as(address)).is_ok()
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

/// The address a connection's refusals count under: an IPv4 address (mapped into IPv6 or not)
/// as itself, an IPv6 address by its /64.
fn counted_as(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn each_address_gets_its_own_budget_and_no_more() {
        let budget = RefusalBudget::default();
        let a: IpAddr = "10.20.0.7".parse().unwrap();
        let b: IpAddr = "10.20.0.8".parse().unwrap();
        assert!((0..3).all(|_| budget.allows(nz(3), a)));
        assert!(!budget.allows(nz(3), a), "a fourth within the minute is over");
        assert!(budget.allows(nz(3), b), "another address is not held to a's count");
        // IPv4 mapped into IPv6 is the same caller.
        assert!(!budget.allows(nz(3), "::ffff:10.20.0.7".parse().unwrap()));
    }

    #[test]
    fn an_ipv6_caller_counts_by_its_64_prefix() {
        let budget = RefusalBudget::default();
        assert!(budget.allows(nz(1), "2001:db8:1:2::7".parse().unwrap()));
        assert!(!budget.allows(nz(1), "2001:db8:1:2:ffff::1".parse().unwrap()), "same /64");
        assert!(budget.allows(nz(1), "2001:db8:1:3::7".parse().unwrap()), "another /64");
    }

    #[test]
    fn a_new_budget_starts_every_address_afresh() {
        let budget = RefusalBudget::default();
        let a: IpAddr = "10.20.0.7".parse().unwrap();
        assert!(budget.allows(nz(1), a));
        assert!(!budget.allows(nz(1), a));
        assert!(budget.allows(nz(2), a), "the budget was raised by a reload");
    }
}
