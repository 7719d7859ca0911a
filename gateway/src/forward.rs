//! Forward: what crosses the gateway between client and upstream. The header rules of X-Road's
//! REST protocol (user headers pass, hop-by-hop headers stop, X-Road headers are the gateway's
//! to set), the request hash, and metered bodies that hash and count bytes while they stream.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use aws_lc_rs::digest;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

use crate::audit::{BodyDigest, BodyHasher};

/// How a request body's summary says it was cut at its size limit ("body over N bytes").
pub(crate) const OVER_LIMIT: &str = "body over";

/// The words [`BodyError::TooLarge`] begins with, by which a body's error passed on by another
/// layer (tonic's status) is known as that.
pub(crate) const BODY_TOO_LARGE: &str = "the request body exceeds the";

/// Whether a request body's failure (`why`, from its summary) was its size limit.
pub(crate) fn over_limit(why: &str) -> bool {
    why.starts_with(OVER_LIMIT)
}

/// X-Road's message headers, set by the gateway, never taken from either side.
pub mod xroad {
    use http::header::HeaderName;

    /// The exchange id.
    pub const ID: HeaderName = HeaderName::from_static("x-road-id");
    /// The calling client.
    pub const CLIENT: HeaderName = HeaderName::from_static("x-road-client");
    /// The service called.
    pub const SERVICE: HeaderName = HeaderName::from_static("x-road-service");
    /// Base64 SHA-512 of the request as received.
    pub const REQUEST_HASH: HeaderName = HeaderName::from_static("x-road-request-hash");
    /// The gateway's error type.
    pub const ERROR: HeaderName = HeaderName::from_static("x-road-error");
    /// The end user on whose behalf the client calls (audit only).
    pub const USER_ID: HeaderName = HeaderName::from_static("x-road-userid");
    /// A case or issue number (audit only).
    pub const ISSUE: HeaderName = HeaderName::from_static("x-road-issue");
    /// The party the client represents (audit only).
    pub const REPRESENTED_PARTY: HeaderName = HeaderName::from_static("x-road-represented-party");
    /// The declared purpose, checked against purpose-bound grants.
    pub const PURPOSE: HeaderName = HeaderName::from_static("x-splp-purpose");
}

/// Headers that belong to one connection (RFC 9110 §7.6.1) and never cross the gateway.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Headers of a service's answer that say what software it runs, which callers in other agencies
/// and regions have no need to know: left out, as the service's address is.
const SERVICE_SOFTWARE: [HeaderName; 4] = [
    header::SERVER,
    HeaderName::from_static("x-powered-by"),
    HeaderName::from_static("x-aspnet-version"),
    HeaderName::from_static("x-aspnetmvc-version"),
];

/// Removes what a service's answer says of the software it runs on (`Server`, `X-Powered-By`).
pub fn strip_service_software(headers: &mut HeaderMap) {
    for name in &SERVICE_SOFTWARE {
        headers.remove(name);
    }
}

/// Removes hop-by-hop headers, those the `Connection` header names, and `Upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named = connection_named(headers);
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// The headers a `Connection` header names: hop-by-hop too (RFC 9110 §7.6.1).
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

/// Whether a header takes part in the request hash: everything the client sent except what is
/// hop-by-hop or the hash itself.
fn hashed_header(name: &HeaderName) -> bool {
    !HOP_BY_HOP.contains(name) && name != header::UPGRADE && name != xroad::REQUEST_HASH
}

/// Computes `X-Road-Request-Hash` while the request streams: SHA-512 over the request line,
/// the headers as received (lower-case `name: value` lines, sorted by name) and the body. The form is
/// fixed in `docs/design.md`; both sides of a gateway hop compute it the same way.
#[derive(Clone)]
pub struct RequestHasher {
    sha512: digest::Context,
}

impl std::fmt::Debug for RequestHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestHasher")
    }
}

impl RequestHasher {
    /// Starts the hash with the request line and headers.
    pub fn new(method: &str, path_and_query: &str, headers: &HeaderMap) -> Self {
        let mut sha512 = digest::Context::new(&digest::SHA512);
        sha512.update(method.as_bytes());
        sha512.update(b" ");
        sha512.update(path_and_query.as_bytes());
        sha512.update(b"\n");
        // Sorted by name so that both sides of a hop agree whatever order a header map keeps;
        // values of one name keep the order they were sent in.
        // Headers the `Connection` header names are hop-by-hop as well: the next hop never sees them.
        let named = connection_named(headers);
        let mut lines: Vec<(&HeaderName, &HeaderValue)> =
            headers.iter().filter(|(n, _)| hashed_header(n) && !named.contains(n)).collect();
        lines.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        for (name, value) in lines {
            sha512.update(name.as_str().as_bytes());
            sha512.update(b": ");
            sha512.update(value.as_bytes());
            sha512.update(b"\n");
        }
        sha512.update(b"\n");
        Self { sha512 }
    }

    fn update(&mut self, data: &[u8]) {
        self.sha512.update(data);
    }

    /// The base64 form sent in `X-Road-Request-Hash`, and the raw bytes for the audit record.
    pub fn finish(self) -> (String, Vec<u8>) {
        let d = self.sha512.finish();
        (base64::engine::general_purpose::STANDARD.encode(d.as_ref()), d.as_ref().to_vec())
    }
}

/// What a metered body saw once it ended.
#[derive(Debug, Clone)]
pub struct BodySummary {
    /// Size and SHA-256 of the body.
    pub body: BodyDigest,
    /// The request hash: base64 and raw.
    pub request_hash: (String, Vec<u8>),
    /// The body's first bytes, for a service that keeps bodies in its records.
    pub kept: Option<Vec<u8>>,
}

impl BodySummary {
    /// Puts what it knows of the request's body into the exchange's record; the kept bytes move
    /// there.
    pub fn record_into(&mut self, record: &mut crate::audit::RecordBuilder) {
        record.set_request_body(self.body);
        record.set_request_hash(&self.request_hash.1);
        if let Some(kept) = self.kept.take() {
            record.set_request_content(kept);
        }
    }
}

/// The first bytes of a body as it streams past, for a service that keeps bodies in its audit
/// records (`store_bodies`): at most `limit` bytes, copied. Not slices of the chunks: a chunk
/// shares its connection's read buffer, and a slice kept of each would keep every buffer the
/// body was read into (a client sending a byte per TLS record would pin megabytes).
#[derive(Debug, Default)]
pub struct BodyKeeper {
    limit: usize,
    kept: Vec<u8>,
}

impl BodyKeeper {
    /// Keeps up to `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self { limit, kept: Vec::new() }
    }

    /// Takes what is still wanted of `data`.
    pub fn update(&mut self, data: &[u8]) {
        let room = self.limit.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&data[..room.min(data.len())]);
    }

    /// The bytes kept.
    pub fn finish(self) -> Vec<u8> {
        self.kept
    }
}

/// Why a metered request body stopped early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// More bytes than the service accepts.
    #[error("the request body exceeds the {limit} bytes the service accepts")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The client's side of the stream failed.
    #[error("reading the request body failed: {0}")]
    Read(String),
}

/// The far end of a [`MeteredRequestBody`]: the body's summary once it has ended (awaited, or
/// taken with `try_recv`), and meanwhile how many of its bytes have passed. An exchange can end
/// before its request body does (a service that answers without reading it all): its record then
/// says how much had passed, with no hash.
#[derive(Debug)]
pub struct RequestBodyWatch {
    summary: oneshot::Receiver<Result<BodySummary, String>>,
    passed: Arc<AtomicU64>,
}

impl RequestBodyWatch {
    /// The summary, if the body has ended (or failed) by now.
    pub fn try_recv(&mut self) -> Result<Result<BodySummary, String>, oneshot::error::TryRecvError> {
        self.summary.try_recv()
    }

    /// The body's bytes that have passed so far.
    pub fn passed(&self) -> u64 {
        self.passed.load(Ordering::Relaxed)
    }
}

impl Future for RequestBodyWatch {
    type Output = Result<Result<BodySummary, String>, oneshot::error::RecvError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.summary).poll(cx)
    }
}

/// A request body on its way upstream: counted, hashed, bounded; reports its summary through a
/// [`RequestBodyWatch`] when it ends (nothing is sent if the upstream stops reading it, but the
/// watch still counts what passed).
pub struct MeteredRequestBody<B> {
    inner: B,
    limit: u64,
    bytes: u64,
    passed: Arc<AtomicU64>,
    empty: bool,
    sha256: Option<BodyHasher>,
    hasher: Option<RequestHasher>,
    keeper: Option<BodyKeeper>,
    done: Option<oneshot::Sender<Result<BodySummary, String>>>,
}

impl<B> std::fmt::Debug for MeteredRequestBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredRequestBody").field("limit", &self.limit).field("bytes", &self.bytes).finish()
    }
}

impl<B> MeteredRequestBody<B> {
    /// Wraps `inner`; the returned receiver yields the summary, or why the body failed. With
    /// `keep`, the summary also holds the body's first `keep` bytes.
    pub fn new(inner: B, limit: u64, hasher: RequestHasher, keep: Option<usize>) -> (Self, RequestBodyWatch)
    where
        B: Body,
    {
        let (tx, rx) = oneshot::channel();
        let passed = Arc::new(AtomicU64::new(0));
        let body = Self {
            empty: inner.is_end_stream(),
            inner,
            limit,
            bytes: 0,
            passed: Arc::clone(&passed),
            sha256: Some(BodyHasher::new()),
            hasher: Some(hasher),
            keeper: keep.map(BodyKeeper::new),
            done: Some(tx),
        };
        (body, RequestBodyWatch { summary: rx, passed })
    }

    fn finish(&mut self) {
        if let (Some(tx), Some(sha), Some(hasher)) = (self.done.take(), self.sha256.take(), self.hasher.take()) {
            let kept = self.keeper.take().map(BodyKeeper::finish);
            let summary = BodySummary { body: sha.finish(), request_hash: hasher.finish(), kept };
            let _ = tx.send(Ok(summary));
        }
    }

    fn fail(&mut self, why: String) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(Err(why));
        }
    }
}

impl<B> Body for MeteredRequestBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                let why = e.to_string();
                this.fail(why.clone());
                Poll::Ready(Some(Err(BodyError::Read(why))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                    this.passed.store(this.bytes, Ordering::Relaxed);
                    if this.bytes > this.limit {
                        this.fail(format!("{OVER_LIMIT} {} bytes", this.limit));
                        return Poll::Ready(Some(Err(BodyError::TooLarge { limit: this.limit })));
                    }
                    if let Some(sha) = &mut this.sha256 {
                        sha.update(data);
                    }
                    if let Some(h) = &mut this.hasher {
                        h.update(data);
                    }
                    if let Some(k) = &mut this.keeper {
                        k.update(data);
                    }
                }
                // hyper stops polling a body of known length once that length is sent, so the
                // end may never be reported as `None`: notice it here.
                if this.inner.is_end_stream() {
                    this.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for MeteredRequestBody<B> {
    fn drop(&mut self) {
        // An empty body (a GET) is never polled: the client sees its end up front. It is still
        // a complete body, and its summary is due.
        if self.empty {
            self.finish();
        }
    }
}

/// Whether a request of `method` with `body` is one whose body hyper's HTTP/1.1 client would
/// drop: a GET, HEAD or CONNECT streamed in without a length.
fn streamed_where_dropped(method: &http::Method, body: &impl Body) -> bool {
    [http::Method::GET, http::Method::HEAD, http::Method::CONNECT].contains(method)
        && !body.is_end_stream()
        && body.size_hint().exact().is_none()
}

/// Makes sure a body of unknown length is sent on: hyper's HTTP/1.1 client sends no body at all
/// for a GET, HEAD or CONNECT whose length it does not know unless `Transfer-Encoding: chunked`
/// is set, so a GET streamed in by a client (chunked, or HTTP/2 without Content-Length) would
/// reach the service empty, unhashed and past the size limit. (HTTP/2 upstreams drop the header.)
pub fn keep_streamed_body(method: &http::Method, body: &impl Body, headers: &mut HeaderMap) {
    if streamed_where_dropped(method, body) {
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    }
}

/// How long [`look_ahead`] waits for a streamed GET's first frame: a client that ends the
/// request with an empty DATA frame sends it with the HEADERS, so this is ample for it, and
/// short beside any upstream's answer for a GET that does stream a body.
const LOOK_AHEAD: std::time::Duration = std::time::Duration::from_millis(20);

/// Of such a request (see [`keep_streamed_body`]), waits at most [`LOOK_AHEAD`] for the first
/// frame of its body: some HTTP/2 clients end a request that has no body with an empty DATA
/// frame instead of on its HEADERS, and such a request goes on as one without a body, not as a
/// GET with an empty chunked body, which some servers refuse. Empty DATA frames carry nothing
/// and are skipped; a frame with something in it is kept and comes first. Every other body is
/// left as it is, unread.
pub async fn look_ahead<B>(method: &http::Method, mut body: B) -> LookedAhead<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    if !streamed_where_dropped(method, &body) {
        return LookedAhead { first: None, ended: false, inner: body };
    }
    let first = std::future::poll_fn(|cx| {
        loop {
            match Pin::new(&mut body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) if frame.data_ref().is_some_and(Bytes::is_empty) => {}
                Poll::Ready(read) => return Poll::Ready(read),
                Poll::Pending => return Poll::Pending,
            }
        }
    });
    match tokio::time::timeout(LOOK_AHEAD, first).await {
        Ok(None) => LookedAhead { first: None, ended: true, inner: body },
        Ok(Some(read)) => LookedAhead { first: Some(read), ended: false, inner: body },
        Err(_) => LookedAhead { first: None, ended: false, inner: body },
    }
}

/// A request body after [`look_ahead`]: the frame it read first, if any, then the rest.
pub struct LookedAhead<B: Body> {
    first: Option<Result<Frame<Bytes>, B::Error>>,
    /// The body ended while looked at: hyper's HTTP/1.1 `Incoming` would not say so itself.
    ended: bool,
    inner: B,
}

impl<B: Body> std::fmt::Debug for LookedAhead<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookedAhead").field("first", &self.first.is_some()).field("ended", &self.ended).finish()
    }
}

impl<B> Body for LookedAhead<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(first));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.ended && self.first.is_none() {
            return SizeHint::with_exact(0);
        }
        let first = match &self.first {
            Some(Ok(frame)) => frame.data_ref().map_or(0, |d| d.len() as u64),
            _ => 0,
        };
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + first);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + first);
        }
        hint
    }
}

/// Sets a header from a string the gateway made; such strings are always valid header values.
pub fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// Boxes any body whose error converts into a boxed error.
pub fn boxed<B>(body: B) -> splpd_adapters::http::UpstreamBody
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<splpd_adapters::http::BoxError>,
{
    body.map_err(Into::into).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[test]
    fn hop_by_hop_headers_are_stripped_and_user_headers_kept() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert("x-agency-trace", HeaderValue::from_static("abc"));
        strip_hop_by_hop(&mut h);
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["content-type", "x-agency-trace"]);
    }

    #[test]
    fn request_hash_covers_line_headers_and_body() {
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("1"));
        let base = |body: &[u8], path: &str, headers: &HeaderMap| {
            let mut r = RequestHasher::new("POST", path, headers);
            r.update(body);
            r.finish().0
        };
        let a = base(b"{}", "/r1/ID/X/1/A/s", &h);
        assert_eq!(a, base(b"{}", "/r1/ID/X/1/A/s", &h));
        assert_ne!(a, base(b"{ }", "/r1/ID/X/1/A/s", &h));
        assert_ne!(a, base(b"{}", "/r1/ID/X/1/A/t", &h));
        let mut h2 = h.clone();
        h2.insert("x-a", HeaderValue::from_static("2"));
        assert_ne!(a, base(b"{}", "/r1/ID/X/1/A/s", &h2));
        // Connection-level headers do not change it: they differ hop by hop.
        let mut h3 = h.clone();
        h3.insert(header::CONNECTION, HeaderValue::from_static("close"));
        assert_eq!(a, base(b"{}", "/r1/ID/X/1/A/s", &h3));
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(&a).unwrap().len(), 64);
    }

    #[tokio::test]
    async fn metered_body_reports_size_and_hashes() {
        let hasher = RequestHasher::new("POST", "/x", &HeaderMap::new());
        let (body, rx) = MeteredRequestBody::new(Full::new(Bytes::from_static(b"hello")), 10, hasher.clone(), None);
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"hello");
        let summary = rx.await.unwrap().unwrap();
        assert_eq!(summary.body, BodyDigest::of(b"hello"));
        let mut expect = hasher;
        expect.update(b"hello");
        assert_eq!(summary.request_hash.0, expect.finish().0);
        assert_eq!(summary.kept, None, "kept only when asked for");
    }

    #[test]
    fn a_body_keeper_keeps_the_first_bytes_across_chunks_and_no_more() {
        let mut keeper = BodyKeeper::new(5);
        for chunk in [&b"ab"[..], b"", b"cde", b"fgh"] {
            keeper.update(chunk);
        }
        assert_eq!(&keeper.finish()[..], b"abcde");
        let mut one = BodyKeeper::new(10);
        one.update(b"xyz");
        assert_eq!(&one.finish()[..], b"xyz");
        assert!(BodyKeeper::new(10).finish().is_empty());
    }

    #[tokio::test]
    async fn metered_body_stops_at_the_limit() {
        let hasher = RequestHasher::new("POST", "/x", &HeaderMap::new());
        let (body, rx) = MeteredRequestBody::new(Full::new(Bytes::from_static(b"0123456789ab")), 10, hasher, None);
        let err = body.collect().await.unwrap_err();
        assert!(matches!(err, BodyError::TooLarge { limit: 10 }));
        assert!(rx.await.unwrap().is_err());
    }
}

#[cfg(test)]
mod empty_body_tests {
    use super::*;
    use http_body_util::Empty;

    #[tokio::test]
    async fn an_empty_body_that_is_never_polled_still_reports() {
        let hasher = RequestHasher::new("GET", "/x", &HeaderMap::new());
        let (body, rx) = MeteredRequestBody::new(Empty::<Bytes>::new(), 10, hasher.clone(), None);
        drop(body);
        let summary = rx.await.unwrap().unwrap();
        assert_eq!(summary.body.bytes, 0);
        assert_eq!(summary.request_hash.0, hasher.finish().0);
    }

    /// A body of the given data frames, each already arrived, of no declared length.
    fn arrived(frames: &[&'static [u8]]) -> impl Body<Data = Bytes, Error = std::convert::Infallible> + Unpin {
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> =
            frames.iter().map(|f| Ok(Frame::data(Bytes::from_static(f)))).collect();
        http_body_util::StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn a_streamed_get_whose_end_has_come_is_one_without_a_body() {
        // Ended by an empty DATA frame: no body, so no chunked one upstream.
        let body = look_ahead(&http::Method::GET, arrived(&[b""])).await;
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        let mut headers = HeaderMap::new();
        keep_streamed_body(&http::Method::GET, &body, &mut headers);
        assert!(headers.get(header::TRANSFER_ENCODING).is_none());
        assert!(body.collect().await.unwrap().to_bytes().is_empty());

        // One with something in it keeps every byte, in order, and stays streamed.
        let body = look_ahead(&http::Method::GET, arrived(&[b"", b"AB", b"", b"CD"])).await;
        assert!(!body.is_end_stream());
        assert_eq!(body.size_hint().lower(), 2);
        keep_streamed_body(&http::Method::GET, &body, &mut headers);
        assert_eq!(headers.get(header::TRANSFER_ENCODING).map(HeaderValue::as_bytes), Some(&b"chunked"[..]));
        assert_eq!(body.collect().await.unwrap().to_bytes(), Bytes::from_static(b"ABCD"));

        // One whose first frame has not come within the wait streams on, unread.
        let silent = http_body_util::StreamBody::new(futures_util::stream::pending::<
            Result<Frame<Bytes>, std::convert::Infallible>,
        >());
        let body = look_ahead(&http::Method::GET, silent).await;
        assert!(!body.is_end_stream() && body.first.is_none() && !body.ended);

        // A POST is left as it is, not read ahead: hyper sends its body whatever its length.
        let body = look_ahead(&http::Method::POST, arrived(&[b""])).await;
        assert!(!body.is_end_stream() && body.first.is_none() && !body.ended);
    }
}
