//! A peer gateway's endpoints, tried in order: a call goes to the endpoint that answered last,
//! and moves on to the next when that one cannot be reached. A request body is never replayed
//! once a byte of it has gone out, so a call moves on only while its body is still untouched:
//! the body lent to an attempt comes back when the attempt drops it unread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{Request, Response, Uri};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use crate::arriving::Watched;
use crate::http::{HttpUpstream, UpstreamBody, UpstreamError};
use crate::retry::Unsent;
use crate::upstreams::{Attempt, describe, endpoint_label, endpoint_uri};

/// The endpoints of one peer gateway behind one pooled HTTP/2 client.
#[derive(Debug)]
pub struct PeerEndpoints {
    client: HttpUpstream,
    endpoints: Vec<Uri>,
    /// The endpoint that answered last, where the next call starts.
    preferred: AtomicUsize,
}

impl PeerEndpoints {
    /// `endpoints` (base URLs; a call's path is appended) behind `client`.
    pub fn new(client: HttpUpstream, endpoints: Vec<Uri>) -> Self {
        Self { client, endpoints, preferred: AtomicUsize::new(0) }
    }

    /// The endpoints, in the order configured.
    pub fn endpoints(&self) -> &[Uri] {
        &self.endpoints
    }

    /// The client, for callers that need one connection pool towards the peer.
    pub fn client(&self) -> &HttpUpstream {
        &self.client
    }

    /// Sends `req` to `path_and_query` under the first endpoint that takes it, starting with the
    /// one that answered last, and waits at most `timeout` in all for the answer to start.
    /// Returns the answer, the endpoint that gave it, and every attempt. A call moves on to the
    /// next endpoint when the connection could not be opened, or broke before any of the body
    /// was sent; it never moves on after a timeout, since the peer may be acting on the request.
    pub async fn send(
        &self,
        req: Request<UpstreamBody>,
        path_and_query: &str,
        timeout: Duration,
    ) -> Result<PeerAnswer, PeerFailure> {
        let started = Instant::now();
        let (parts, body) = req.into_parts();
        // Whether the body, when the wait runs out, waits on the caller rather than the peer.
        let (body, arrival) = Watched::new(body);
        let mut body = Some(body.boxed());
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed);
        let mut attempts = Vec::new();
        let mut last: Option<(UpstreamError, Uri)> = None;
        for k in 0..n {
            let i = (first + k) % n;
            let Some(lent) = body.take() else { break };
            let uri = match endpoint_uri(&self.endpoints[i], path_and_query) {
                Ok(uri) => uri,
                Err(e) => {
                    let error = UpstreamError::Broken {
                        authority: self.endpoints[i].authority().map(ToString::to_string).unwrap_or_default(),
                        reason: format!("cannot build the peer URL: {e}"),
                        fault: None,
                    };
                    return Err(PeerFailure { error, endpoint: None, attempts, waiting_on_caller: false });
                }
            };
            // Handed back if the attempt drops it unread.
            let (lent, back) = Unsent::new(lent);
            let mut attempt = Request::new(lent.boxed());
            *attempt.method_mut() = parts.method.clone();
            *attempt.uri_mut() = uri.clone();
            *attempt.headers_mut() = parts.headers.clone();
            let left = timeout.saturating_sub(started.elapsed());
            let label = endpoint_label(&self.endpoints[i]);
            match self.client.send(attempt, left).await {
                Ok(response) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    attempts
                        .push(Attempt { endpoint: label, outcome: format!("answered {}", response.status().as_u16()) });
                    return Ok(PeerAnswer { response, endpoint: uri, attempts });
                }
                Err(error @ UpstreamError::Timeout { .. }) => {
                    let waiting_on_caller = arrival.waiting_on_caller();
                    let outcome = match waiting_on_caller {
                        true => "the request body was still arriving from the caller".to_owned(),
                        false => describe(&error),
                    };
                    attempts.push(Attempt { endpoint: label, outcome });
                    return Err(PeerFailure { error, endpoint: Some(uri), attempts, waiting_on_caller });
                }
                Err(e) => {
                    attempts.push(Attempt { endpoint: label, outcome: describe(&e) });
                    // The attempt is over and dropped; an untouched body is back.
                    body = back.await.ok();
                    if body.is_some() && k + 1 < n {
                        tracing::warn!(endpoint = %uri, "peer endpoint failed, trying the next: {e}");
                    }
                    last = Some((e, uri));
                }
            }
        }
        Err(match last {
            Some((error, uri)) => PeerFailure { error, endpoint: Some(uri), attempts, waiting_on_caller: false },
            None => PeerFailure {
                error: UpstreamError::Connect {
                    authority: String::new(),
                    reason: "the peer has no endpoint".into(),
                    fault: None,
                },
                endpoint: None,
                attempts,
                waiting_on_caller: false,
            },
        })
    }
}

/// A peer's answer, with every attempt it took.
#[derive(Debug)]
pub struct PeerAnswer {
    /// The answer, its body still to stream.
    pub response: Response<Incoming>,
    /// The URL it came from.
    pub endpoint: Uri,
    /// Each endpoint tried, in order; the last one answered.
    pub attempts: Vec<Attempt>,
}

/// No answer from a peer: the last attempt's error, with every attempt.
#[derive(Debug)]
pub struct PeerFailure {
    /// Why the last attempt failed.
    pub error: UpstreamError,
    /// The URL of the last attempt, if one was made.
    pub endpoint: Option<Uri>,
    /// Each endpoint tried, in order.
    pub attempts: Vec<Attempt>,
    /// The wait ran out while the peer was reading the request body and the caller had not sent
    /// the rest: the caller's slowness, not the peer's.
    pub waiting_on_caller: bool,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A peer over cleartext HTTP/2 that reads each request's body whole, then answers, except
    /// under `/never`, where it never answers.
    async fn peer_reading_bodies() -> std::net::SocketAddr {
        use http_body_util::{BodyExt as _, Empty};
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                        let never = req.uri().path() == "/never";
                        let _ = req.into_body().collect().await;
                        if never {
                            std::future::pending::<()>().await;
                        }
                        Ok::<_, std::convert::Infallible>(Response::new(Empty::<bytes::Bytes>::new()))
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_wait_that_runs_out_while_the_caller_still_sends_its_body_is_the_callers() {
        use http_body_util::{BodyExt as _, Full, StreamBody};
        use hyper::body::Frame;
        let addr = peer_reading_bodies().await;
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let opts = crate::http::UpstreamOptions { http2_only: true, ..Default::default() };
        let peer =
            PeerEndpoints::new(HttpUpstream::new(tls, &opts).unwrap(), vec![format!("http://{addr}").parse().unwrap()]);
        let wait = Duration::from_millis(300);

        // The first bytes of the body, and no more while the wait lasts.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<bytes::Bytes>, crate::http::BoxError>>(1);
        tx.send(Ok(Frame::data(bytes::Bytes::from_static(b"first")))).await.unwrap();
        let frames = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
        let req = Request::post("/r1/x").body(StreamBody::new(frames).boxed()).unwrap();
        let failed = peer.send(req, "/r1/x", wait).await.unwrap_err();
        assert!(failed.waiting_on_caller, "{:?}", failed.attempts);
        assert!(failed.attempts[0].outcome.contains("still arriving from the caller"), "{:?}", failed.attempts);
        drop(tx);

        // A body sent whole to a peer that does not answer in time: the peer's doing.
        let whole = Full::new(bytes::Bytes::from_static(b"all of it")).map_err(|never| match never {}).boxed();
        let failed = peer.send(Request::post("/never").body(whole).unwrap(), "/never", wait).await.unwrap_err();
        assert!(!failed.waiting_on_caller && matches!(failed.error, UpstreamError::Timeout { .. }));
    }

    #[test]
    fn a_call_path_goes_under_the_endpoint_base() {
        let base: Uri = "https://127.0.0.1:8443/gw/".parse().unwrap();
        assert_eq!(
            endpoint_uri(&base, "/r1/ID/PEMDA/1601/X/svc/a?b=1").unwrap(),
            "https://127.0.0.1:8443/gw/r1/ID/PEMDA/1601/X/svc/a?b=1"
        );
        let bare: Uri = "https://127.0.0.1:8443".parse().unwrap();
        assert_eq!(endpoint_uri(&bare, "/pkg.Svc/Call").unwrap(), "https://127.0.0.1:8443/pkg.Svc/Call");
    }
}
