//! A peer gateway's endpoints, tried in order: a call goes to the endpoint that answered last,
//! and moves on to the next when that one cannot be reached. A request body is never replayed
//! once a byte of it has gone out, so a call moves on only while its body is still untouched:
//! the body lent to an attempt comes back when the attempt drops it unread.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::oneshot;

use crate::http::{BoxError, HttpUpstream, UpstreamBody, UpstreamError};

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
    /// Returns the answer and the endpoint that gave it. A call moves on to the next endpoint
    /// when the connection could not be opened, or broke before any of the body was sent; it
    /// never moves on after a timeout, since the peer may be acting on the request.
    pub async fn send(
        &self,
        req: Request<UpstreamBody>,
        path_and_query: &str,
        timeout: Duration,
    ) -> Result<(Response<Incoming>, Uri), UpstreamError> {
        let started = Instant::now();
        let (parts, body) = req.into_parts();
        let mut body = Some(body);
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last_err = None;
        for k in 0..n {
            let i = (first + k) % n;
            let Some(lent) = body.take() else { break };
            let uri = join(&self.endpoints[i], path_and_query).map_err(|reason| UpstreamError::Broken {
                authority: self.endpoints[i].authority().map(ToString::to_string).unwrap_or_default(),
                reason,
            })?;
            let (lent, back) = Lent::new(lent);
            let mut attempt = Request::new(lent.boxed());
            *attempt.method_mut() = parts.method.clone();
            *attempt.uri_mut() = uri.clone();
            *attempt.headers_mut() = parts.headers.clone();
            let left = timeout.saturating_sub(started.elapsed());
            match self.client.send(attempt, left).await {
                Ok(resp) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok((resp, uri));
                }
                Err(e @ UpstreamError::Timeout { .. }) => return Err(e),
                Err(e) => {
                    // The attempt is over and dropped; an untouched body is back.
                    body = back.await.ok();
                    if body.is_some() && k + 1 < n {
                        tracing::warn!(endpoint = %uri, "peer endpoint failed, trying the next: {e}");
                    }
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| UpstreamError::Connect {
            authority: String::new(),
            reason: "the peer has no endpoint".into(),
        }))
    }
}

/// `base` with `path_and_query` appended to its path.
fn join(base: &Uri, path_and_query: &str) -> Result<Uri, String> {
    let mut parts = base.clone().into_parts();
    let pq = format!("{}{path_and_query}", base.path().trim_end_matches('/'));
    parts.path_and_query = Some(pq.parse().map_err(|e| format!("cannot build the peer URL: {e}"))?);
    Uri::from_parts(parts).map_err(|e| format!("cannot build the peer URL: {e}"))
}

/// A request body lent to one attempt: handed back through a channel if the attempt drops it
/// without having read from it.
struct Lent {
    inner: Option<UpstreamBody>,
    back: Option<oneshot::Sender<UpstreamBody>>,
    touched: bool,
}

impl Lent {
    fn new(inner: UpstreamBody) -> (Self, oneshot::Receiver<UpstreamBody>) {
        let (tx, rx) = oneshot::channel();
        (Self { inner: Some(inner), back: Some(tx), touched: false }, rx)
    }
}

impl Body for Lent {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.touched = true;
        match self.inner.as_mut() {
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

impl Drop for Lent {
    fn drop(&mut self) {
        if !self.touched
            && let (Some(inner), Some(back)) = (self.inner.take(), self.back.take())
        {
            let _ = back.send(inner);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use http_body_util::Full;

    use super::*;

    #[test]
    fn a_call_path_goes_under_the_endpoint_base() {
        let base: Uri = "https://127.0.0.1:8443/gw/".parse().unwrap();
        assert_eq!(
            join(&base, "/r1/ID/PEMDA/1601/X/svc/a?b=1").unwrap(),
            "https://127.0.0.1:8443/gw/r1/ID/PEMDA/1601/X/svc/a?b=1"
        );
        let bare: Uri = "https://127.0.0.1:8443".parse().unwrap();
        assert_eq!(join(&bare, "/pkg.Svc/Call").unwrap(), "https://127.0.0.1:8443/pkg.Svc/Call");
    }

    #[tokio::test]
    async fn an_untouched_body_comes_back_and_a_read_one_does_not() {
        let body = || Full::new(Bytes::from_static(b"payload")).map_err(|never| match never {}).boxed();
        let (lent, back) = Lent::new(body());
        drop(lent);
        let returned = back.await.unwrap();
        assert_eq!(returned.collect().await.unwrap().to_bytes(), "payload");

        let (mut lent, back) = Lent::new(body());
        let frame = std::future::poll_fn(|cx| Pin::new(&mut lent).poll_frame(cx)).await;
        assert!(frame.is_some());
        drop(lent);
        assert!(back.await.is_err(), "a body that was read from must not be sent again");
    }
}
