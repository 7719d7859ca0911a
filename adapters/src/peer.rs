//! A peer gateway's endpoints, tried in order: a call goes to the endpoint that answered last,
//! and moves on to the next when that one cannot be reached. A request body is never replayed
//! once a byte of it has gone out, so a call moves on only while its body is still untouched:
//! the body lent to an attempt comes back when the attempt drops it unread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{Request, Response, Uri};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use crate::http::{HttpUpstream, UpstreamBody, UpstreamError};
use crate::retry::Unsent;
use crate::upstreams::endpoint_uri;

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
            let uri = endpoint_uri(&self.endpoints[i], path_and_query).map_err(|e| UpstreamError::Broken {
                authority: self.endpoints[i].authority().map(ToString::to_string).unwrap_or_default(),
                reason: format!("cannot build the peer URL: {e}"),
                fault: None,
            })?;
            // Handed back if the attempt drops it unread.
            let (lent, back) = Unsent::new(lent);
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
            fault: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

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
