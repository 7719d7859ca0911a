//! Retries: which requests may be sent again, with what body, and how many retries a service may
//! spend. A retry budget in the spirit of linkerd's and Envoy's keeps retries to a share of the
//! traffic (plus a small floor), so that retrying never multiplies the load on a service that is
//! already failing.

use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

use crate::clock::Epoch;

/// The largest request body kept in memory so that it can be sent again. A small bound: most
/// idempotent calls carry no body at all, and a larger one streams through unbuffered (and is
/// retried only when the connection was refused before any of it was sent).
pub const MAX_REPLAY_BODY: u64 = 64 * 1024;

/// A service's retry settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryOptions {
    /// Attempts per request, the first included; 1 turns retries off.
    pub max_attempts: u32,
    /// Retries may add at most this percentage of the service's requests…
    pub budget_percent: u32,
    /// …plus this many retries per second, so that a quiet service can still retry.
    pub min_per_second: u32,
    /// Retry POST and PATCH too, as if they were idempotent (the service opts in).
    pub non_idempotent: bool,
}

impl Default for RetryOptions {
    fn default() -> Self {
        Self { max_attempts: 3, budget_percent: 20, min_per_second: 10, non_idempotent: false }
    }
}

/// Whether a method may be repeated without changing the outcome (RFC 9110 §9.2.2). POST and
/// PATCH are not; nor is a method the gateway does not know.
pub fn idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}

/// How an attempt failed, as far as retrying it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection: nothing reached the endpoint.
    Refused,
    /// The exchange broke off before an answer started: the endpoint may have acted on it.
    Broken,
    /// No answer started before the exchange's deadline.
    TimedOut,
}

/// Why a failed attempt may not be retried, or `None` when it may (another endpoint and the
/// budget permitting). `body_kept`: the request body can be sent again (kept whole, or never
/// read); `attempts`: attempts made so far.
pub fn no_retry(
    opts: &RetryOptions,
    grpc: bool,
    method: &Method,
    failure: Failure,
    body_kept: bool,
    attempts: usize,
) -> Option<String> {
    if attempts >= opts.max_attempts.max(1) as usize {
        Some(format!("{attempts} attempt(s) made, the most allowed"))
    } else if failure == Failure::TimedOut {
        Some("the request timeout is spent".to_owned())
    } else if grpc && failure != Failure::Refused {
        Some("a gRPC call is retried only when its connection was refused, before anything was sent".into())
    } else if !grpc && !idempotent(method) && !opts.non_idempotent && failure != Failure::Refused {
        // Refused, nothing of it reached the endpoint: any method may go to another (as nginx
        // and gRPC have it), since the service cannot have acted on it.
        Some(format!("{method} is not idempotent (a service may opt in with [service.retry] non_idempotent)"))
    } else if !body_kept {
        Some(format!(
            "the request body was already sent and is not kept (it is over {} KiB or of unknown length)",
            MAX_REPLAY_BODY / 1024
        ))
    } else {
        None
    }
}

/// How long deposits and the per-second floor accumulate: unspent retries older than this lapse.
const BUDGET_WINDOW_SECS: i64 = 10;

/// The retries a service may spend, as a token bucket in thousandths of a retry: every request
/// deposits `budget_percent`/100 of a retry, time adds `min_per_second`, and a retry withdraws one.
#[derive(Debug)]
pub struct RetryBudget {
    percent: i64,
    floor: i64,
    cap: i64,
    milli: AtomicI64,
    epoch: Epoch,
    refilled: AtomicU64,
}

impl RetryBudget {
    /// A budget with `opts`, full at `now` with a second's floor.
    pub fn new(opts: &RetryOptions, epoch: Epoch, now: Instant) -> Self {
        let floor = i64::from(opts.min_per_second) * 1000;
        let cap = floor.max(1000) * BUDGET_WINDOW_SECS;
        Self {
            percent: i64::from(opts.budget_percent.min(100)),
            floor,
            cap,
            milli: AtomicI64::new(floor),
            epoch,
            refilled: AtomicU64::new(epoch.nanos(now)),
        }
    }

    fn add(&self, milli: i64) {
        let _ = self.milli.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |m| Some((m + milli).min(self.cap)));
    }

    /// A request was made: its share of a retry goes into the budget.
    pub fn deposit(&self) {
        self.add(self.percent * 10);
    }

    /// Takes one retry out of the budget at `now`, if there is one.
    pub fn withdraw(&self, now: Instant) -> bool {
        // The floor accrues with time; whoever moves the refill time adds what accrued.
        let last = self.refilled.load(Ordering::Acquire);
        let nanos = self.epoch.nanos(now);
        if nanos > last && self.refilled.compare_exchange(last, nanos, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            let elapsed = Duration::from_nanos(nanos - last);
            let accrued = i128::from(self.floor) * elapsed.as_millis().min(1 << 40) as i128 / 1000;
            self.add(i64::try_from(accrued).unwrap_or(i64::MAX));
        }
        self.milli.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |m| (m >= 1000).then_some(m - 1000)).is_ok()
    }

    /// Retries available now, whole.
    pub fn available(&self) -> i64 {
        self.milli.load(Ordering::Relaxed) / 1000
    }
}

/// A request body that comes back if it was never read: hyper drops a request whose connection
/// could not be made without touching its body, and then the body, still whole, can go to
/// another endpoint. Once hyper has polled it, it is gone for good.
#[derive(Debug)]
pub struct Unsent<B> {
    inner: Option<B>,
    back: Option<oneshot::Sender<B>>,
}

impl<B> Unsent<B> {
    /// Wraps `body`; the receiver gets it back if the wrapper is dropped before being polled.
    pub fn new(body: B) -> (Self, oneshot::Receiver<B>) {
        let (tx, rx) = oneshot::channel();
        (Self { inner: Some(body), back: Some(tx) }, rx)
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Unsent<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        this.back = None;
        match &mut this.inner {
            Some(inner) => Pin::new(inner).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map(Body::size_hint).unwrap_or_default()
    }
}

impl<B> Drop for Unsent<B> {
    fn drop(&mut self) {
        if let (Some(tx), Some(body)) = (self.back.take(), self.inner.take()) {
            let _ = tx.send(body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt as _, Full};

    #[test]
    fn only_idempotent_methods_are_retryable() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS, Method::PUT, Method::DELETE] {
            assert!(idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT, Method::from_bytes(b"PURGE").unwrap()] {
            assert!(!idempotent(&m), "{m}");
        }
    }

    #[test]
    fn what_may_be_retried() {
        let o = RetryOptions::default();
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(no_retry(&o, false, &get, Failure::Refused, true, 1), None);
        assert_eq!(no_retry(&o, false, &get, Failure::Broken, true, 2), None);
        assert!(no_retry(&o, false, &get, Failure::Broken, true, 3).unwrap().contains("3 attempt(s)"));
        assert!(no_retry(&o, false, &get, Failure::TimedOut, true, 1).unwrap().contains("timeout"));
        assert!(no_retry(&o, false, &get, Failure::Broken, false, 1).unwrap().contains("not kept"));
        // POST and PATCH: only when refused (nothing was sent), unless the service opts in.
        assert_eq!(no_retry(&o, false, &post, Failure::Refused, true, 1), None);
        assert!(no_retry(&o, false, &post, Failure::Broken, true, 1).unwrap().contains("POST is not idempotent"));
        assert!(no_retry(&o, false, &Method::PATCH, Failure::Broken, true, 1).is_some());
        let opted = RetryOptions { non_idempotent: true, ..RetryOptions::default() };
        assert_eq!(no_retry(&opted, false, &post, Failure::Broken, true, 1), None);
        // gRPC: only a refused connection, with the stream never read.
        assert_eq!(no_retry(&o, true, &post, Failure::Refused, true, 1), None);
        assert!(no_retry(&o, true, &post, Failure::Broken, true, 1).unwrap().contains("gRPC"));
        assert!(no_retry(&o, true, &post, Failure::Refused, false, 1).is_some());
        let off = RetryOptions { max_attempts: 1, ..RetryOptions::default() };
        assert!(no_retry(&off, false, &get, Failure::Refused, true, 1).is_some());
    }

    #[test]
    fn the_budget_allows_a_share_of_requests_plus_a_floor_per_second() {
        let t0 = Instant::now();
        let opts = RetryOptions { max_attempts: 3, budget_percent: 20, min_per_second: 2, non_idempotent: false };
        let budget = RetryBudget::new(&opts, Epoch::new(t0), t0);
        // The first second's floor.
        assert!(budget.withdraw(t0) && budget.withdraw(t0));
        assert!(!budget.withdraw(t0), "floor spent, no requests yet");
        // 100 requests buy 20 retries.
        for _ in 0..100 {
            budget.deposit();
        }
        let spent = (0..100).take_while(|_| budget.withdraw(t0)).count();
        assert_eq!(spent, 20);
        // Time refills the floor: two more after a second.
        let t1 = t0 + Duration::from_secs(1);
        assert!(budget.withdraw(t1) && budget.withdraw(t1));
        assert!(!budget.withdraw(t1));
    }

    #[test]
    fn unspent_retries_are_capped() {
        let t0 = Instant::now();
        let opts = RetryOptions { max_attempts: 3, budget_percent: 100, min_per_second: 1, non_idempotent: false };
        let budget = RetryBudget::new(&opts, Epoch::new(t0), t0);
        for _ in 0..1000 {
            budget.deposit();
        }
        assert_eq!(budget.available(), BUDGET_WINDOW_SECS);
    }

    #[tokio::test]
    async fn a_body_never_polled_comes_back_and_a_polled_one_does_not() {
        let (unsent, back) = Unsent::new(Full::new(Bytes::from_static(b"abc")));
        drop(unsent);
        let body = back.await.expect("the body comes back");
        assert_eq!(body.collect().await.unwrap().to_bytes(), Bytes::from_static(b"abc"));

        let (mut unsent, back) = Unsent::new(Full::new(Bytes::from_static(b"abc")));
        let frame = unsent.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"abc"));
        drop(unsent);
        assert!(back.await.is_err(), "a body that was read is gone");
    }
}
