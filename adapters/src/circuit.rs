//! Circuit breaking for one endpoint: limits on the requests it has in flight and on those
//! waiting for a slot, and a breaker that opens when the limits overflow. An open circuit refuses
//! at once for `open_for`, giving an overwhelmed endpoint room to recover; then it half-opens and
//! lets one probe through, closing on its success and opening again on its failure.
//! (The limit on connections is kept by the connector, `http`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::clock::Epoch;

/// The limits of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitOptions {
    /// Most connections open to the endpoint.
    pub max_connections: u32,
    /// Most requests in flight (for gRPC: calls, streams included).
    pub max_requests: u32,
    /// Most requests waiting for a slot when all are taken; one more opens the circuit.
    pub max_pending: u32,
    /// How long an opened circuit refuses before it lets a probe through.
    pub open_for: Duration,
}

impl Default for CircuitOptions {
    fn default() -> Self {
        Self { max_connections: 1024, max_requests: 1024, max_pending: 1024, open_for: Duration::from_secs(5) }
    }
}

/// The breaker's state, as status pages show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Requests pass within the limits.
    Closed,
    /// Requests are refused until the instant given.
    Open {
        /// When the circuit half-opens.
        until: Instant,
    },
    /// The open interval is over: the next request is a probe (or one is in flight).
    HalfOpen,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The circuit is open.
    #[error("its circuit is open for another {left:?} (it opened when its limits overflowed)")]
    Open {
        /// Time until it half-opens.
        left: Duration,
    },
    /// The circuit is half-open and its one probe is in flight.
    #[error("its circuit is half-open and a probe request is under way")]
    Probing,
    /// Every slot is taken and the queue is full: the circuit opens now.
    #[error("it has {active} requests in flight and {pending} waiting, its limits; its circuit opens for {open_for:?}")]
    Overflow {
        /// Requests in flight.
        active: u32,
        /// Requests waiting.
        pending: u32,
        /// How long the circuit stays open.
        open_for: Duration,
    },
    /// The request waited for a slot until its deadline.
    #[error("no request slot became free within {waited:?}")]
    Timeout {
        /// How long it waited.
        waited: Duration,
    },
}

/// The wait suggested to a caller refused while a half-open circuit's probe is under way: the
/// probe's answer, which closes or reopens the circuit, is not timed, and a second is the least a
/// `Retry-After` can say.
pub const PROBE_WAIT: Duration = Duration::from_secs(1);

impl Refusal {
    /// When the endpoint may take a request again, for the caller's `Retry-After`; `None` for a
    /// wait for a slot that ran out, which says nothing of when one frees.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Open { left } => Some(*left),
            Self::Probing => Some(PROBE_WAIT),
            Self::Overflow { open_for, .. } => Some(*open_for),
            Self::Timeout { .. } => None,
        }
    }
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// One endpoint's limits and breaker.
#[derive(Debug)]
pub struct Circuit {
    opts: CircuitOptions,
    epoch: Epoch,
    slots: Arc<Semaphore>,
    pending: AtomicU32,
    state: AtomicU8,
    open_until: AtomicU64,
}

/// A slot held by a request until its answer ends. A probe's lease reports how the probe went;
/// dropped without a report (the client went away), it lets the next request probe instead.
#[derive(Debug)]
pub struct Lease {
    _slot: OwnedSemaphorePermit,
    probe: Option<Arc<Circuit>>,
}

impl Lease {
    /// The exchange's outcome, which closes or reopens a half-open circuit.
    pub fn settle(&mut self, ok: bool, now: Instant) {
        if let Some(circuit) = self.probe.take() {
            if ok {
                circuit.state.store(CLOSED, Ordering::Release);
                tracing::info!("circuit closed: the probe request succeeded");
            } else {
                circuit.trip(now);
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(circuit) = self.probe.take() {
            // Unknown outcome: another request may probe.
            let _ = circuit.state.compare_exchange(HALF_OPEN, OPEN, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

impl Circuit {
    /// A closed circuit with `opts`.
    pub fn new(opts: CircuitOptions, epoch: Epoch) -> Self {
        let slots = Arc::new(Semaphore::new(opts.max_requests.max(1) as usize));
        Self {
            opts,
            epoch,
            slots,
            pending: AtomicU32::new(0),
            state: AtomicU8::new(CLOSED),
            open_until: AtomicU64::new(0),
        }
    }

    /// The state at `now`.
    pub fn state(&self, now: Instant) -> CircuitState {
        match self.state.load(Ordering::Acquire) {
            CLOSED => CircuitState::Closed,
            HALF_OPEN => CircuitState::HalfOpen,
            _ => match self.epoch.instant(self.open_until.load(Ordering::Acquire)) {
                Some(until) if until > now => CircuitState::Open { until },
                _ => CircuitState::HalfOpen,
            },
        }
    }

    /// Whether a request could be let through at `now` (closed, or ready to probe).
    pub fn admits(&self, now: Instant) -> bool {
        match self.state.load(Ordering::Acquire) {
            CLOSED => true,
            HALF_OPEN => false,
            _ => !matches!(self.state(now), CircuitState::Open { .. }),
        }
    }

    /// Requests in flight.
    pub fn active(&self) -> u32 {
        let free = u32::try_from(self.slots.available_permits()).unwrap_or(u32::MAX);
        self.opts.max_requests.max(1).saturating_sub(free)
    }

    /// Requests waiting for a slot.
    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Requests in flight and waiting: the load the balancer compares.
    pub fn load(&self) -> u32 {
        self.active().saturating_add(self.pending())
    }

    /// Opens the circuit for `open_for` from `now`.
    fn trip(&self, now: Instant) {
        self.open_until.store(self.epoch.nanos(now + self.opts.open_for), Ordering::Release);
        if self.state.swap(OPEN, Ordering::AcqRel) != OPEN {
            tracing::warn!(open_for = ?self.opts.open_for, "circuit opened");
        }
    }

    /// A slot for one request: at once, or after waiting at most `wait` in the queue.
    pub async fn acquire(self: &Arc<Self>, now: Instant, wait: Duration) -> Result<Lease, Refusal> {
        let probe = match self.state.load(Ordering::Acquire) {
            CLOSED => false,
            HALF_OPEN => return Err(Refusal::Probing),
            _ => match self.state(now) {
                CircuitState::Open { until } => return Err(Refusal::Open { left: until - now }),
                // The first to get here probes.
                _ => {
                    if self.state.compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                        return Err(Refusal::Probing);
                    }
                    tracing::info!("circuit half-open: letting a probe request through");
                    true
                }
            },
        };
        let lease = |slot| Lease { _slot: slot, probe: probe.then(|| Arc::clone(self)) };
        if let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(lease(slot));
        }
        let overflow = |this: &Self| {
            let refusal =
                Refusal::Overflow { active: this.active(), pending: this.pending(), open_for: this.opts.open_for };
            this.trip(now);
            Err(refusal)
        };
        if probe {
            return overflow(self);
        }
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.opts.max_pending {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return overflow(self);
        }
        let waited = tokio::time::timeout(wait, Arc::clone(&self.slots).acquire_owned()).await;
        self.pending.fetch_sub(1, Ordering::AcqRel);
        match waited {
            Ok(Ok(slot)) => Ok(lease(slot)),
            // The semaphore is never closed; a closed one would mean no slot ever again.
            Ok(Err(_)) | Err(_) => Err(Refusal::Timeout { waited: wait }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circuit(max_requests: u32, max_pending: u32, t0: Instant) -> Arc<Circuit> {
        let opts = CircuitOptions { max_connections: 10, max_requests, max_pending, open_for: Duration::from_secs(5) };
        Arc::new(Circuit::new(opts, Epoch::new(t0)))
    }

    #[tokio::test]
    async fn overflow_opens_the_circuit_which_half_opens_after_its_interval_and_closes_on_success() {
        let t0 = Instant::now();
        let c = circuit(2, 0, t0);
        let a = c.acquire(t0, Duration::ZERO).await.unwrap();
        let b = c.acquire(t0, Duration::ZERO).await.unwrap();
        assert_eq!((c.active(), c.state(t0)), (2, CircuitState::Closed));
        let over = c.acquire(t0, Duration::ZERO).await.unwrap_err();
        assert!(matches!(over, Refusal::Overflow { active: 2, pending: 0, .. }), "{over:?}");
        drop((a, b));
        // Open: refused although slots are free again.
        let t1 = t0 + Duration::from_secs(4);
        assert_eq!(c.state(t1), CircuitState::Open { until: t0 + Duration::from_secs(5) });
        assert!(!c.admits(t1));
        assert_eq!(c.acquire(t1, Duration::ZERO).await.unwrap_err(), Refusal::Open { left: Duration::from_secs(1) });
        // Half-open: one probe, and the others wait for its outcome.
        let t2 = t0 + Duration::from_secs(5);
        assert_eq!(c.state(t2), CircuitState::HalfOpen);
        assert!(c.admits(t2));
        let mut probe = c.acquire(t2, Duration::ZERO).await.unwrap();
        assert_eq!(c.acquire(t2, Duration::ZERO).await.unwrap_err(), Refusal::Probing);
        probe.settle(true, t2);
        assert_eq!(c.state(t2), CircuitState::Closed);
        assert!(c.acquire(t2, Duration::ZERO).await.is_ok());
    }

    #[tokio::test]
    async fn a_failed_probe_opens_the_circuit_again_and_an_abandoned_one_lets_another_probe() {
        let t0 = Instant::now();
        let c = circuit(1, 0, t0);
        let held = c.acquire(t0, Duration::ZERO).await.unwrap();
        assert!(c.acquire(t0, Duration::ZERO).await.is_err());
        drop(held);
        let t1 = t0 + Duration::from_secs(6);
        c.acquire(t1, Duration::ZERO).await.unwrap().settle(false, t1);
        assert_eq!(c.state(t1), CircuitState::Open { until: t1 + Duration::from_secs(5) });
        let t2 = t1 + Duration::from_secs(5);
        drop(c.acquire(t2, Duration::ZERO).await.unwrap());
        assert_eq!(c.state(t2), CircuitState::HalfOpen);
        assert!(c.acquire(t2, Duration::ZERO).await.is_ok(), "a new probe after the abandoned one");
    }

    #[tokio::test]
    async fn a_pending_request_gets_the_slot_that_frees_and_times_out_otherwise() {
        let t0 = Instant::now();
        let c = circuit(1, 1, t0);
        let held = c.acquire(t0, Duration::ZERO).await.unwrap();
        let waiter = {
            let c = Arc::clone(&c);
            tokio::spawn(async move { c.acquire(t0, Duration::from_secs(30)).await.map(drop) })
        };
        while c.pending() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(c.load(), 2);
        drop(held);
        assert!(waiter.await.unwrap().is_ok());
        let held = c.acquire(t0, Duration::ZERO).await.unwrap();
        let err = c.acquire(t0, Duration::from_millis(1)).await.unwrap_err();
        assert_eq!(err, Refusal::Timeout { waited: Duration::from_millis(1) });
        assert_eq!(c.state(t0), CircuitState::Closed, "a wait that ran out is no overflow");
        drop(held);
    }
}
