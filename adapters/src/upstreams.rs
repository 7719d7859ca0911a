//! One service's endpoints and the way an exchange reaches one of them: the balancer picks among
//! the endpoints that are healthy, not ejected and whose circuit admits the request; the chosen
//! endpoint's circuit gives it a slot; the outcome feeds outlier ejection and the circuit; and a
//! failed attempt is retried on another endpoint when the request allows it and the retry budget
//! has room. Every attempt, and why a retry did or did not happen, is reported to the caller for
//! the exchange's record.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::{Body as _, Incoming};

use crate::arriving::{Arrival, Watched};
use crate::balance::{self, Rng};
use crate::circuit::{Circuit, CircuitOptions, CircuitState, Lease, PROBE_WAIT, Refusal};
use crate::clock::{self, Epoch};
use crate::health::{
    Checked, GRPC_HEALTH_CHECK_PATH, HealthCheckOptions, HealthTracker, grpc_check_body, read_grpc_health,
};
use crate::http::{BoxError, HttpUpstream, UpstreamBody, UpstreamError};
use crate::outlier::{OutlierOptions, OutlierState};
use crate::retry::{self, Failure, MAX_REPLAY_BODY, RetryBudget, RetryOptions, Unsent, idempotent};

/// How a service's endpoints are balanced, checked and retried.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Active health checks; none when absent.
    pub health: Option<HealthCheckOptions>,
    /// Passive outlier ejection.
    pub outlier: OutlierOptions,
    /// Limits and breaker per endpoint.
    pub circuit: CircuitOptions,
    /// Retries.
    pub retry: RetryOptions,
    /// A gRPC service: its calls are retried only when the connection was refused, since a call
    /// that reached the service may have streamed and acted.
    pub grpc: bool,
    /// The service's identifier, which the logs of its endpoints name: services may share one.
    pub service: String,
}

/// One endpoint and what is known about it.
#[derive(Debug)]
struct Endpoint {
    base: Uri,
    label: String,
    healthy: AtomicBool,
    outlier: OutlierState,
    circuit: Arc<Circuit>,
}

/// A task stopped when its owner goes.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A service's endpoints, the client towards them, and the state of each.
#[derive(Debug)]
pub struct ServiceUpstreams {
    endpoints: Arc<[Endpoint]>,
    client: HttpUpstream,
    policy: Policy,
    budget: RetryBudget,
    rng: Rng,
    epoch: Epoch,
    /// Held while a failure may eject, so that two endpoints reaching their thresholds together
    /// cannot both pass the cap ([`OutlierOptions::max_ejected`]).
    ejecting: std::sync::Mutex<()>,
    _health: Option<AbortOnDrop>,
}

/// A request on its way to one of the service's endpoints.
#[derive(Debug)]
pub struct Outgoing {
    /// The method.
    pub method: Method,
    /// Path and query appended to the endpoint's base URL.
    pub path_and_query: String,
    /// The headers to send.
    pub headers: HeaderMap,
    /// The body.
    pub body: UpstreamBody,
}

/// Whose limit the wait for an answer is: the service's `request_timeout`, or the caller's own
/// deadline (gRPC's `grpc-timeout`) when that is nearer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// The service's timeout: running out is the endpoint's failure.
    Service,
    /// The caller's: running out says nothing of the endpoint.
    Caller,
}

/// One attempt at an endpoint, for the exchange's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// `scheme://host:port` of the endpoint.
    pub endpoint: String,
    /// `answered 200`, or what went wrong.
    pub outcome: String,
}

/// An answer that has started.
#[derive(Debug)]
pub struct Forwarded {
    /// The response head, its body still to stream.
    pub response: Response<Incoming>,
    /// The URL of the attempt that answered.
    pub uri: Uri,
    /// The endpoint's slot, to hold until the answer has streamed.
    pub lease: Lease,
    /// Every attempt made, the answering one last.
    pub attempts: Vec<Attempt>,
    /// Why a retry happened, if one did.
    pub note: String,
}

/// A request that got no answer.
#[derive(Debug)]
pub struct Failed {
    /// What went wrong in the end.
    pub error: DispatchError,
    /// The URL of the last attempt, if one was made.
    pub uri: Option<Uri>,
    /// Every attempt made.
    pub attempts: Vec<Attempt>,
    /// Why the request was not retried (further), or why no endpoint took it.
    pub note: String,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The last attempt failed.
    #[error(transparent)]
    Upstream(UpstreamError),
    /// No endpoint could take the request: none healthy, all ejected, or circuits open.
    #[error("{why}")]
    Unavailable {
        /// Each endpoint and why it is not offered requests.
        why: String,
        /// When the first endpoint is offered requests again, where that is known (an ejection
        /// or an open circuit ends); `None` while the only hope is a health check passing.
        retry_after: Option<Duration>,
    },
    /// The request waited for a free slot until its deadline.
    #[error("{0}")]
    QueueTimeout(String),
    /// The request body did not arrive from the caller within the time allowed: read whole to be
    /// sent again should an attempt fail, or streamed to a service that was waiting for it.
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(Duration),
    /// The request body could not be read from the client.
    #[error("{0}")]
    Body(BoxError),
    /// The request body, streamed to the service, broke off on the caller's side (over the
    /// service's limit, or cut off by the caller), and the attempt with it.
    #[error("the request body broke off on the caller's side")]
    CallerBody,
    /// The caller's own deadline, nearer than the service's timeout, passed before an answer
    /// started.
    #[error("the caller's deadline of {0:?} passed before the service answered")]
    CallerDeadline(Duration),
    /// The endpoint's URL and the path do not make a URL (a configuration the validator missed).
    #[error("cannot build the upstream URL: {0}")]
    BadUri(String),
}

/// An endpoint's state, for status pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStatus {
    /// Its base URL.
    pub url: String,
    /// Whether it would be offered a request now.
    pub available: bool,
    /// What active health checks say (always true without them).
    pub healthy: bool,
    /// Whether active health checks run: without them, `healthy` says nothing of the endpoint,
    /// which only failed calls can show as down.
    pub checked: bool,
    /// The end of its outlier ejection, when it is ejected.
    pub ejected_until: Option<SystemTime>,
    /// Gateway failures in a row.
    pub consecutive_failures: u32,
    /// Its circuit.
    pub circuit: CircuitStatus,
    /// Requests in flight.
    pub active: u32,
    /// Requests waiting for a slot.
    pub pending: u32,
}

/// A circuit's state on the wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitStatus {
    /// Requests pass within the limits.
    Closed,
    /// Requests are refused until then.
    Open {
        /// When it half-opens.
        until: SystemTime,
    },
    /// The next request probes.
    HalfOpen,
}

/// The request body across attempts: kept whole when small (sent again as often as needed), or
/// streamed once, coming back only if it was never sent.
enum Payload {
    Replay(Bytes),
    Stream(Option<UpstreamBody>),
}

/// A response that counts as the endpoint failing: the gateway-failure statuses a proxy or load
/// balancer in front of the service answers with.
fn gateway_failure(status: StatusCode) -> bool {
    matches!(status, StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT)
}

/// `scheme://host:port` of a URL: what the record and status pages show of an endpoint.
pub fn endpoint_label(uri: &Uri) -> String {
    let mut label = String::new();
    if let Some(scheme) = uri.scheme_str() {
        label.push_str(scheme);
        label.push_str("://");
    }
    label.push_str(uri.host().unwrap_or_default());
    if let Some(port) = uri.port_u16() {
        let _ = write!(label, ":{port}");
    }
    label
}

/// The URL of one attempt: the endpoint's base URL with the checked path and query appended.
/// Nothing else from the client goes into it.
pub fn endpoint_uri(base: &Uri, path_and_query: &str) -> Result<Uri, String> {
    let base_path = base.path().trim_end_matches('/');
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(format!("{base_path}{path_and_query}").parse().map_err(|e| format!("{e}"))?);
    Uri::from_parts(parts).map_err(|e| format!("{e}"))
}

/// An attempt's outcome in words for the record, e.g. "no connection (Connection refused)".
pub(crate) fn describe(err: &UpstreamError) -> String {
    match err {
        UpstreamError::Connect { reason, .. } => format!("no connection ({reason})"),
        UpstreamError::Timeout { after, .. } => format!("no answer within {after:?}"),
        UpstreamError::Broken { reason, .. } => format!("broke off ({reason})"),
        UpstreamError::Saturated { max, .. } => format!("no connection free ({max} open, its limit)"),
    }
}

impl ServiceUpstreams {
    /// The endpoints at `bases` reached through `client`. Starts the health-check task when the
    /// policy asks for one and a tokio runtime is running; it stops when this is dropped.
    pub fn new(bases: Vec<Uri>, client: HttpUpstream, policy: Policy) -> Self {
        let now = Instant::now();
        let epoch = Epoch::new(now);
        let endpoints: Arc<[Endpoint]> = bases
            .into_iter()
            .map(|base| Endpoint {
                label: endpoint_label(&base),
                base,
                healthy: AtomicBool::new(true),
                outlier: OutlierState::default(),
                circuit: Arc::new(Circuit::new(policy.circuit.clone(), epoch)),
            })
            .collect();
        let health = match (&policy.health, tokio::runtime::Handle::try_current()) {
            (Some(opts), Ok(rt)) if !endpoints.is_empty() => Some(AbortOnDrop(rt.spawn(check_health(
                Arc::clone(&endpoints),
                client.clone(),
                opts.clone(),
                epoch,
                (policy.grpc, policy.service.clone()),
            )))),
            _ => None,
        };
        Self {
            budget: RetryBudget::new(&policy.retry, epoch, now),
            endpoints,
            client,
            policy,
            rng: Rng::from_time(),
            epoch,
            ejecting: std::sync::Mutex::new(()),
            _health: health,
        }
    }

    /// Takes on what the same service before a reload knew of the same endpoints (by URL):
    /// their outlier ejections and failures in a row, and, when the health checks are the same,
    /// their verdict. A reload then neither sends calls to an endpoint known to be down, nor
    /// forgets one that is failing, until the checks and calls say otherwise.
    pub fn take_over(&self, old: &ServiceUpstreams) {
        let same_checks = self.policy.health.is_some() && self.policy.health == old.policy.health;
        for endpoint in self.endpoints.iter() {
            let Some(before) = old.endpoints.iter().find(|o| o.base == endpoint.base) else { continue };
            endpoint.outlier.take_over(&before.outlier, old.epoch, self.epoch);
            if same_checks {
                endpoint.healthy.store(before.healthy.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
    }

    /// The pooled client towards the endpoints.
    pub fn client(&self) -> &HttpUpstream {
        &self.client
    }

    /// The base URLs of the endpoints.
    pub fn urls(&self) -> impl Iterator<Item = &Uri> {
        self.endpoints.iter().map(|e| &e.base)
    }

    /// The state of each endpoint now.
    pub fn status(&self) -> Vec<EndpointStatus> {
        let now = Instant::now();
        self.endpoints
            .iter()
            .map(|e| EndpointStatus {
                url: e.label.clone(),
                available: self.available(e, now),
                healthy: e.healthy.load(Ordering::Relaxed),
                checked: self.policy.health.is_some(),
                ejected_until: e.outlier.ejected_until(self.epoch, now).map(|until| clock::wall(until, now)),
                consecutive_failures: e.outlier.consecutive_failures(),
                circuit: match e.circuit.state(now) {
                    CircuitState::Closed => CircuitStatus::Closed,
                    CircuitState::HalfOpen => CircuitStatus::HalfOpen,
                    CircuitState::Open { until } => CircuitStatus::Open { until: clock::wall(until, now) },
                },
                active: e.circuit.active(),
                pending: e.circuit.pending(),
            })
            .collect()
    }

    fn available(&self, e: &Endpoint, now: Instant) -> bool {
        e.healthy.load(Ordering::Relaxed) && !e.outlier.is_ejected(self.epoch, now) && e.circuit.admits(now)
    }

    /// Why an endpoint is not offered requests, for the refusal's message, and how soon it will
    /// be: when its ejection and open circuit end, or a second while its circuit's probe is under
    /// way; `None` when it fails its health checks, since when it passes one is not known.
    fn unavailable_because(&self, e: &Endpoint, now: Instant) -> (String, Option<Duration>) {
        let mut why = Vec::new();
        let healthy = e.healthy.load(Ordering::Relaxed);
        if !healthy {
            why.push("fails its health checks".to_owned());
        }
        let mut wait = Duration::ZERO;
        if let Some(until) = e.outlier.ejected_until(self.epoch, now) {
            why.push(format!("ejected for another {}s after failing in a row", (until - now).as_secs() + 1));
            wait = until - now;
        }
        match e.circuit.state(now) {
            CircuitState::Open { until } => {
                why.push(format!("its circuit is open for another {}s", (until - now).as_secs() + 1));
                wait = wait.max(until - now);
            }
            CircuitState::HalfOpen if !e.circuit.admits(now) => {
                why.push("its circuit is half-open, probing".into());
                wait = wait.max(PROBE_WAIT);
            }
            _ => {}
        }
        if why.is_empty() {
            why.push("already tried".to_owned());
        }
        (format!("{} {}", e.label, why.join(", ")), healthy.then_some(wait))
    }

    /// The outcome of an exchange with endpoint `i`, for outlier ejection.
    fn report(&self, i: usize, ok: bool, now: Instant) {
        let e = &self.endpoints[i];
        if ok {
            e.outlier.success();
            return;
        }
        let opts = &self.policy.outlier;
        let cap = opts.max_ejected(self.endpoints.len());
        // An ejection steers calls elsewhere: only while another endpoint can take them (one
        // failing its health checks cannot), and within the cap.
        let may_eject = || {
            let ejected = self.endpoints.iter().filter(|o| o.outlier.is_ejected(self.epoch, now)).count();
            let elsewhere = self.endpoints.iter().enumerate().any(|(j, o)| j != i && self.available(o, now));
            ejected < cap && elsewhere
        };
        let _one_at_a_time = self.ejecting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(until) = e.outlier.failure(opts, self.epoch, now, may_eject) {
            tracing::warn!(
                service = %self.policy.service,
                endpoint = %e.label,
                for_secs = (until - now).as_secs(),
                "endpoint ejected after {} gateway failures in a row",
                opts.consecutive_failures
            );
        }
    }

    /// Sends `req` to an endpoint, retrying on others as the policy allows, and waits at most
    /// `wait` in all for an answer to start: the service's timeout, or the caller's deadline
    /// when nearer (`whose`), whose passing is no fault of the endpoint's.
    pub async fn dispatch(&self, req: Outgoing, wait: Duration, whose: Deadline) -> Result<Forwarded, Failed> {
        let start = Instant::now();
        let deadline = start + wait;
        self.budget.deposit();
        let Outgoing { method, path_and_query, headers, body } = req;
        let retry = &self.policy.retry;
        let repeatable = idempotent(&method) || retry.non_idempotent;
        let fail = |error, uri, attempts, note: &[String]| Failed { error, uri, attempts, note: note.join("; ") };

        // Of a body streamed to the service: whether it still waits on the caller.
        let mut caller: Option<Arrival> = None;
        let mut payload = if body.is_end_stream() {
            Payload::Replay(Bytes::new())
        } else if !self.policy.grpc
            && repeatable
            && retry.max_attempts > 1
            && self.endpoints.len() > 1
            && body.size_hint().exact().is_some_and(|n| n <= MAX_REPLAY_BODY)
        {
            // Small enough to keep: read it whole, so it can be sent again after a broken attempt.
            match tokio::time::timeout(wait, body.collect()).await {
                Ok(Ok(collected)) => Payload::Replay(collected.to_bytes()),
                Ok(Err(e)) => return Err(fail(DispatchError::Body(e), None, Vec::new(), &[])),
                Err(_) => return Err(fail(DispatchError::BodyTimeout(wait), None, Vec::new(), &[])),
            }
        } else {
            let (watched, arrival) = Watched::new(body);
            caller = Some(arrival);
            Payload::Stream(Some(watched.boxed()))
        };

        let mut attempts: Vec<Attempt> = Vec::new();
        let mut notes: Vec<String> = Vec::new();
        let mut tried: Vec<usize> = Vec::new();
        let mut last: Option<(UpstreamError, Uri)> = None;
        loop {
            let now = Instant::now();
            let candidates: Vec<usize> = (0..self.endpoints.len())
                .filter(|i| !tried.contains(i) && self.available(&self.endpoints[*i], now))
                .collect();
            let Some(i) = balance::pick(&candidates, |i| self.endpoints[i].circuit.load(), &self.rng) else {
                if let Some((err, uri)) = last {
                    // Checked before every retry, so only a race gets here.
                    notes.push("no retry: no other endpoint is available".into());
                    return Err(fail(DispatchError::Upstream(err), Some(uri), attempts, &notes));
                }
                let (reasons, waits): (Vec<String>, Vec<Option<Duration>>) =
                    self.endpoints.iter().map(|e| self.unavailable_because(e, now)).unzip();
                let why = format!("no endpoint of the service can take the call: {}", reasons.join("; "));
                notes.push(why.clone());
                let retry_after = waits.into_iter().flatten().min();
                return Err(fail(DispatchError::Unavailable { why, retry_after }, None, attempts, &notes));
            };
            tried.push(i);
            let endpoint = &self.endpoints[i];
            let left = deadline.saturating_duration_since(now);
            let mut lease = match endpoint.circuit.acquire(now, left).await {
                Ok(lease) => lease,
                Err(refusal) => {
                    let why = format!("{} refused the call: {refusal}", endpoint.label);
                    notes.push(why.clone());
                    let error = match (last, refusal) {
                        (Some((err, uri)), _) => {
                            return Err(fail(DispatchError::Upstream(err), Some(uri), attempts, &notes));
                        }
                        (None, Refusal::Timeout { .. }) => DispatchError::QueueTimeout(why),
                        (None, refusal) => DispatchError::Unavailable { why, retry_after: refusal.retry_after() },
                    };
                    return Err(fail(error, None, attempts, &notes));
                }
            };
            let uri = match endpoint_uri(&endpoint.base, &path_and_query) {
                Ok(uri) => uri,
                Err(e) => return Err(fail(DispatchError::BadUri(e), None, attempts, &notes)),
            };
            let (body, back) = match &mut payload {
                Payload::Replay(bytes) if bytes.is_empty() => {
                    (Empty::new().map_err(|never| match never {}).boxed(), None)
                }
                Payload::Replay(bytes) => (Full::new(bytes.clone()).map_err(|never| match never {}).boxed(), None),
                Payload::Stream(slot) => match slot.take() {
                    Some(body) => {
                        let (unsent, back) = Unsent::new(body);
                        (unsent.boxed(), Some(back))
                    }
                    None => {
                        let why = "the request body is gone".to_owned();
                        return Err(fail(DispatchError::BadUri(why), None, attempts, &notes));
                    }
                },
            };
            let mut request = Request::new(body);
            *request.method_mut() = method.clone();
            *request.uri_mut() = uri.clone();
            *request.headers_mut() = headers.clone();
            let result = self.client.send(request, deadline.saturating_duration_since(Instant::now())).await;
            let now = Instant::now();
            let err = match result {
                Ok(response) => {
                    let ok = !gateway_failure(response.status());
                    self.report(i, ok, now);
                    lease.settle(ok, now);
                    let outcome = format!("answered {}", response.status().as_u16());
                    attempts.push(Attempt { endpoint: endpoint.label.clone(), outcome });
                    return Ok(Forwarded { response, uri, lease, attempts, note: notes.join("; ") });
                }
                // What the caller did, which says nothing of the endpoint and is not retried:
                // neither success nor failure (a probe of a half-open circuit stays unsettled).
                // The service was reading the body and the caller had not sent the rest.
                Err(UpstreamError::Timeout { .. }) if caller.as_ref().is_some_and(Arrival::waiting_on_caller) => {
                    drop(lease);
                    let outcome = "the request body was still arriving from the caller".to_owned();
                    attempts.push(Attempt { endpoint: endpoint.label.clone(), outcome });
                    return Err(fail(DispatchError::BodyTimeout(wait), Some(uri), attempts, &notes));
                }
                // The body broke off (over the limit, or the caller stopped sending it), and the
                // attempt with it, whatever the client library calls that.
                Err(_) if caller.as_ref().is_some_and(Arrival::broke) => {
                    drop(lease);
                    let outcome = "the request body broke off on the caller's side".to_owned();
                    attempts.push(Attempt { endpoint: endpoint.label.clone(), outcome });
                    return Err(fail(DispatchError::CallerBody, Some(uri), attempts, &notes));
                }
                // The caller's deadline, shorter than the service's timeout, passed.
                Err(UpstreamError::Timeout { .. }) if whose == Deadline::Caller => {
                    drop(lease);
                    let outcome = "the caller's deadline passed first".to_owned();
                    attempts.push(Attempt { endpoint: endpoint.label.clone(), outcome });
                    return Err(fail(DispatchError::CallerDeadline(wait), Some(uri), attempts, &notes));
                }
                // The wait is the exchange's, across attempts: say so rather than what was left of it.
                Err(UpstreamError::Timeout { authority, .. }) => UpstreamError::Timeout { authority, after: wait },
                Err(err) => err,
            };
            // Our own connection limit says nothing of the endpoint's health.
            if !matches!(err, UpstreamError::Saturated { .. }) {
                self.report(i, false, now);
            }
            lease.settle(false, now);
            drop(lease);
            attempts.push(Attempt { endpoint: endpoint.label.clone(), outcome: describe(&err) });
            if let (Payload::Stream(slot), Some(mut back)) = (&mut payload, back) {
                *slot = back.try_recv().ok();
            }
            let body_kept = match &payload {
                Payload::Replay(_) => true,
                Payload::Stream(slot) => slot.is_some(),
            };
            let failure = match err {
                UpstreamError::Connect { .. } | UpstreamError::Saturated { .. } => Failure::Refused,
                UpstreamError::Broken { .. } => Failure::Broken,
                UpstreamError::Timeout { .. } => Failure::TimedOut,
            };
            let others =
                || (0..self.endpoints.len()).any(|j| !tried.contains(&j) && self.available(&self.endpoints[j], now));
            let no_retry = retry::no_retry(retry, self.policy.grpc, &method, failure, body_kept, attempts.len())
                .or_else(|| (!others()).then(|| "no other endpoint is available".to_owned()))
                .or_else(|| (!self.budget.withdraw(now)).then(|| "the service's retry budget is spent".to_owned()));
            match no_retry {
                Some(why) => {
                    notes.push(format!("no retry after {} {}: {why}", endpoint.label, describe(&err)));
                    return Err(fail(DispatchError::Upstream(err), Some(uri), attempts, &notes));
                }
                None => {
                    notes.push(format!("retried after {} {}", endpoint.label, describe(&err)));
                    last = Some((err, uri));
                }
            }
        }
    }
}

/// Checks every endpoint at the policy's interval, until the service is dropped.
async fn check_health(
    endpoints: Arc<[Endpoint]>,
    client: HttpUpstream,
    opts: HealthCheckOptions,
    epoch: Epoch,
    (grpc, service): (bool, String),
) {
    let mut trackers = vec![HealthTracker::default(); endpoints.len()];
    // Endpoints already said to have no gRPC health service: said once each.
    let mut told = vec![false; endpoints.len()];
    let mut tick = tokio::time::interval(opts.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let probes = endpoints.iter().map(|e| probe(&client, e, &opts, grpc));
        let results = futures_util::future::join_all(probes).await;
        let now = Instant::now();
        for (((endpoint, tracker), told), result) in endpoints.iter().zip(&mut trackers).zip(&mut told).zip(results) {
            let passed = result.passed();
            if passed {
                endpoint.outlier.uneject(epoch, now);
            }
            if result == Checked::NoHealthService && !std::mem::replace(told, true) {
                tracing::warn!(
                    %service,
                    endpoint = %endpoint.label,
                    "endpoint has no gRPC health service (grpc.health.v1.Health answered UNIMPLEMENTED); its checks \
                     only show that it answers"
                );
            }
            // A verdict taken over from the configuration before a reload (`take_over`).
            let carried = endpoint.healthy.load(Ordering::Relaxed);
            if tracker.healthy() != carried {
                *tracker = HealthTracker::starting(carried);
            }
            if let Some(healthy) = tracker.observe(passed, &opts) {
                endpoint.healthy.store(healthy, Ordering::Relaxed);
                if healthy {
                    tracing::info!(%service, endpoint = %endpoint.label, "endpoint passes its health checks again");
                } else {
                    let why = if let Checked::Failed(why) = &result { why.as_str() } else { "" };
                    tracing::warn!(
                        %service,
                        endpoint = %endpoint.label,
                        last = why,
                        "endpoint fails its health checks; taken out"
                    );
                }
            }
        }
    }
}

/// One health check. A REST endpoint is asked for the health path with a GET and passes with a
/// 2xx answer; a gRPC one is asked `grpc.health.v1.Health/Check` (see [`crate::health`]).
async fn probe(client: &HttpUpstream, endpoint: &Endpoint, opts: &HealthCheckOptions, grpc: bool) -> Checked {
    let path = if grpc { GRPC_HEALTH_CHECK_PATH } else { opts.path.as_str() };
    let uri = match endpoint_uri(&endpoint.base, path) {
        Ok(uri) => uri,
        Err(e) => return Checked::Failed(e.to_string()),
    };
    let mut request = if grpc {
        let body = Full::new(grpc_check_body(&opts.grpc_service)).map_err(|never| match never {}).boxed();
        let mut request = Request::new(body);
        *request.method_mut() = Method::POST;
        let headers = request.headers_mut();
        headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
        headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
        request
    } else {
        Request::new(Empty::new().map_err(|never| match never {}).boxed())
    };
    *request.uri_mut() = uri;
    request.headers_mut().insert(http::header::USER_AGENT, http::HeaderValue::from_static("splpd-health-check"));
    let response = match client.send(request, opts.timeout).await {
        Ok(response) => response,
        Err(e) => return Checked::Failed(describe(&e)),
    };
    let (parts, body) = response.into_parts();
    // The body is read off in any case, so that the connection goes back to the pool.
    let collected = tokio::time::timeout(opts.timeout, body.collect()).await;
    if !grpc {
        return if parts.status.is_success() {
            Checked::Passed
        } else {
            Checked::Failed(format!("answered {}", parts.status.as_u16()))
        };
    }
    match collected {
        Ok(Ok(collected)) => {
            let trailers = collected.trailers().cloned();
            read_grpc_health(parts.status, &parts.headers, trailers.as_ref(), &collected.to_bytes())
        }
        Ok(Err(e)) => Checked::Failed(format!("answer broken off: {e}")),
        Err(_) => Checked::Failed("no whole answer in time".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_url_appends_the_checked_path_to_the_base() {
        let base: Uri = "http://10.0.0.5:8080/api/".parse().unwrap();
        assert_eq!(endpoint_uri(&base, "/nik/1?x=1").unwrap(), "http://10.0.0.5:8080/api/nik/1?x=1");
        let bare: Uri = "https://nik.local".parse().unwrap();
        assert_eq!(endpoint_uri(&bare, "/health").unwrap(), "https://nik.local/health");
        assert_eq!(endpoint_label(&"https://u:p@10.1.2.3:8443/x?y".parse().unwrap()), "https://10.1.2.3:8443");
    }

    #[test]
    fn gateway_failures_are_the_proxy_statuses_only() {
        assert!(gateway_failure(StatusCode::BAD_GATEWAY));
        assert!(gateway_failure(StatusCode::SERVICE_UNAVAILABLE));
        assert!(gateway_failure(StatusCode::GATEWAY_TIMEOUT));
        assert!(!gateway_failure(StatusCode::INTERNAL_SERVER_ERROR), "a service's own error is its answer");
        assert!(!gateway_failure(StatusCode::NOT_FOUND));
    }
}
