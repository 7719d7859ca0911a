//! OAuth2 client-credentials tokens for the national SPLP (RFC 6749 §4.4): a token is fetched
//! from the token endpoint, cached until shortly before it expires, and dropped when the API
//! manager refuses it with a 401, so that the next call fetches a fresh one. Secrets and tokens
//! never print: their `Debug` is redacted, and error messages quote only what the endpoint said.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use serde::Deserialize;

use crate::http::{HttpUpstream, UpstreamError};

/// A secret string (a client secret, an access token) that never shows in logs or errors.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps `text`.
    pub fn new(text: impl Into<Arc<str>>) -> Self {
        Self(text.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A token as the token endpoint granted it.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The access token.
    pub access_token: Secret,
    /// How long it is valid from the moment it was granted.
    pub expires_in: Duration,
}

/// Why no token could be obtained.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OAuthError {
    /// The token endpoint could not be reached or broke off.
    #[error("the token endpoint {url} could not be reached: {reason}")]
    Unreachable {
        /// The token endpoint.
        url: String,
        /// What went wrong.
        reason: String,
        /// The side a failed connection points to, where it was one.
        fault: Option<crate::http::ConnectFault>,
    },
    /// The token endpoint refused the request (RFC 6749 §5.2).
    #[error(
        "the token endpoint {url} refused the client credentials with {status}{}; check client_id and the client secret \
         the [national] table names",
        match (error, description) {
            (Some(e), Some(d)) => format!(" ({e}: {d})"),
            (Some(e), None) => format!(" ({e})"),
            _ => String::new(),
        }
    )]
    Refused {
        /// The token endpoint.
        url: String,
        /// The HTTP status.
        status: StatusCode,
        /// The OAuth2 `error` code, if the body held one.
        error: Option<String>,
        /// The OAuth2 `error_description`, if the body held one.
        description: Option<String>,
    },
    /// The token endpoint answered 200 with something that is not a token response.
    #[error("the token endpoint {url} answered with no usable token: {reason}")]
    Malformed {
        /// The token endpoint.
        url: String,
        /// What was wrong with the answer.
        reason: String,
    },
}

/// Where tokens come from: the token endpoint, or in tests a stand-in.
pub trait TokenSource: Send + Sync {
    /// Fetches a new token.
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Grant, OAuthError>> + Send + '_>>;
}

/// The time, as the cache sees it; tests turn it by hand.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> Instant;
}

/// The machine's monotonic clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A token handed out by the cache. Sent as `Bearer <token>`; its `Debug` is redacted.
#[derive(Debug, Clone)]
pub struct Token {
    secret: Secret,
    generation: u64,
}

impl Token {
    /// The header value `Bearer <token>`, marked sensitive so that HTTP/2 never indexes it.
    pub fn header_value(&self) -> Option<HeaderValue> {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", self.secret.expose())).ok()?;
        v.set_sensitive(true);
        Some(v)
    }

    /// The token itself.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }
}

#[derive(Debug)]
struct Cached {
    token: Token,
    refresh_at: Instant,
    expires_at: Instant,
}

/// The longest a token is refreshed before its expiry; shorter-lived tokens are refreshed when a
/// fifth of their life is left. Early enough that a call never leaves with a token that expires
/// on its way, late enough that a token is used for most of its life.
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// A cache of one client-credentials token. The token in force is read without a lock; fetching
/// a new one is done by one caller at a time, and the others wait for it rather than each
/// asking the endpoint.
pub struct TokenCache<S, C = SystemClock> {
    source: S,
    clock: C,
    current: ArcSwapOption<Cached>,
    fetching: tokio::sync::Mutex<u64>,
}

impl<S, C> std::fmt::Debug for TokenCache<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache").field("cached", &self.current.load().is_some()).finish()
    }
}

impl<S: TokenSource, C: Clock> TokenCache<S, C> {
    /// An empty cache over `source`.
    pub fn new(source: S, clock: C) -> Self {
        Self { source, clock, current: ArcSwapOption::empty(), fetching: tokio::sync::Mutex::new(0) }
    }

    fn fresh(&self) -> Option<Token> {
        let cached = self.current.load();
        let c = cached.as_ref()?;
        (self.clock.now() < c.refresh_at).then(|| c.token.clone())
    }

    /// A token to send: the cached one while it is not due for refresh, else a new one. When
    /// the endpoint fails but the cached token has not yet expired, the cached one is used.
    pub async fn token(&self) -> Result<Token, OAuthError> {
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        let mut generation = self.fetching.lock().await;
        // Another caller may have fetched while this one waited.
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        let asked = self.clock.now();
        match self.source.fetch().await {
            Ok(grant) => {
                *generation += 1;
                let life = grant.expires_in;
                let margin = (life / 5).min(MAX_REFRESH_MARGIN);
                let token = Token { secret: grant.access_token, generation: *generation };
                // Counted from when it was asked for: the endpoint's clock started before the
                // answer arrived.
                self.current.store(Some(Arc::new(Cached {
                    token: token.clone(),
                    refresh_at: asked + (life - margin),
                    expires_at: asked + life,
                })));
                tracing::debug!(valid_for = ?life, "obtained a national SPLP token");
                Ok(token)
            }
            Err(e) => {
                let cached = self.current.load();
                match cached.as_ref() {
                    Some(c) if self.clock.now() < c.expires_at => {
                        tracing::warn!("refreshing the national SPLP token failed, using the current one: {e}");
                        Ok(c.token.clone())
                    }
                    _ => Err(e),
                }
            }
        }
    }

    /// Forgets `token` after the API manager refused it, unless a newer one has replaced it
    /// already (many calls refused with the same token cause one fetch, not many).
    pub fn invalidate(&self, token: &Token) {
        self.current.rcu(|cur| match cur {
            Some(c) if c.token.generation == token.generation => None,
            other => other.clone(),
        });
    }
}

/// The token endpoint's success answer (RFC 6749 §5.1).
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// The token endpoint's error answer (RFC 6749 §5.2).
#[derive(Deserialize)]
struct ErrorResponse {
    error: Option<String>,
    error_description: Option<String>,
}

/// Validity assumed for a token whose answer gives no `expires_in` (the field is only
/// recommended): short, so that a long-lived token is merely refreshed more often.
const DEFAULT_TOKEN_LIFE: Duration = Duration::from_secs(300);

/// The largest token endpoint answer read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// The client-credentials grant against a token endpoint, over the gateway's own hyper client:
/// `POST` of `grant_type=client_credentials`, the client authenticated with HTTP Basic
/// (`client_secret_basic`, which RFC 6749 §2.3.1 requires every server to accept).
#[derive(Debug)]
pub struct ClientCredentials {
    client: HttpUpstream,
    url: Uri,
    basic: Secret,
    timeout: Duration,
}

impl ClientCredentials {
    /// A grant for `client_id` and `secret` at `url`.
    pub fn new(client: HttpUpstream, url: Uri, client_id: &str, secret: &Secret, timeout: Duration) -> Self {
        // RFC 6749 §2.3.1: both parts form-encoded before they are joined and base64-encoded.
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let pair = format!("{}:{}", enc(client_id), enc(secret.expose()));
        let basic = Secret::new(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair)));
        Self { client, url, basic, timeout }
    }

    async fn request(&self) -> Result<Grant, OAuthError> {
        let url = self.url.to_string();
        let failed = |reason: String, fault| OAuthError::Unreachable { url: url.clone(), reason, fault };
        let unreachable = |reason: String| failed(reason, None);
        let mut auth = HeaderValue::from_str(self.basic.expose())
            .map_err(|_| unreachable("the client credentials cannot be sent in a header".into()))?;
        auth.set_sensitive(true);
        let body =
            Full::new(Bytes::from_static(b"grant_type=client_credentials")).map_err(|never| match never {}).boxed();
        let mut req = Request::new(body);
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.url.clone();
        let h = req.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        h.insert(header::AUTHORIZATION, auth);
        let resp = self.client.send(req, self.timeout).await.map_err(|e| match e {
            UpstreamError::Connect { reason, fault, .. } | UpstreamError::Broken { reason, fault, .. } => {
                failed(reason, fault)
            }
            UpstreamError::Timeout { after, .. } => unreachable(format!("no answer within {after:?}")),
            e @ UpstreamError::Saturated { .. } => unreachable(e.to_string()),
        })?;
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), MAX_TOKEN_RESPONSE)
            .collect()
            .await
            .map_err(|e| unreachable(format!("reading the answer failed: {e}")))?
            .to_bytes();
        if !status.is_success() {
            let parsed: Option<ErrorResponse> = serde_json::from_slice(&bytes).ok();
            let (error, description) = parsed.map_or((None, None), |p| (p.error, p.error_description));
            return Err(OAuthError::Refused { url, status, error, description });
        }
        let parsed: TokenResponse = serde_json::from_slice(&bytes)
            .map_err(|e| OAuthError::Malformed { url: url.clone(), reason: format!("not a token response ({e})") })?;
        if let Some(kind) = &parsed.token_type
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(OAuthError::Malformed {
                url,
                reason: format!("token_type {kind:?}, where bearer was expected"),
            });
        }
        if parsed.access_token.is_empty() {
            return Err(OAuthError::Malformed { url, reason: "the access_token is empty".into() });
        }
        let expires_in = parsed.expires_in.map_or(DEFAULT_TOKEN_LIFE, Duration::from_secs);
        Ok(Grant { access_token: Secret::new(parsed.access_token), expires_in })
    }
}

impl TokenSource for ClientCredentials {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Grant, OAuthError>> + Send + '_>> {
        Box::pin(self.request())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A clock that moves only when told to.
    #[derive(Debug, Clone)]
    struct FakeClock(Arc<Mutex<Instant>>);

    impl FakeClock {
        fn new() -> Self {
            Self(Arc::new(Mutex::new(Instant::now())))
        }
        fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
    }

    /// Grants `token-1`, `token-2`, … valid for `life`; fails while `failing` is set.
    #[derive(Debug, Clone)]
    struct Counting {
        fetches: Arc<AtomicUsize>,
        life: Duration,
        failing: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Counting {
        fn new(life: Duration) -> Self {
            Self { fetches: Arc::default(), life, failing: Arc::default() }
        }
        fn fetches(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }
    }

    impl TokenSource for Counting {
        fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Grant, OAuthError>> + Send + '_>> {
            Box::pin(async move {
                if self.failing.load(Ordering::SeqCst) {
                    return Err(OAuthError::Unreachable {
                        url: "https://token".into(),
                        reason: "down".into(),
                        fault: None,
                    });
                }
                let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
                Ok(Grant { access_token: Secret::new(format!("token-{n}")), expires_in: self.life })
            })
        }
    }

    fn cache(life: Duration) -> (TokenCache<Counting, FakeClock>, Counting, FakeClock) {
        let source = Counting::new(life);
        let clock = FakeClock::new();
        (TokenCache::new(source.clone(), clock.clone()), source, clock)
    }

    #[tokio::test]
    async fn a_token_is_reused_until_it_is_due_for_refresh() {
        let (cache, source, clock) = cache(Duration::from_secs(3600));
        let first = cache.token().await.unwrap();
        assert_eq!(first.secret().expose(), "token-1");
        // An hour-long token is refreshed 60 s before it expires.
        clock.advance(Duration::from_secs(3539));
        assert_eq!(cache.token().await.unwrap().secret().expose(), "token-1");
        assert_eq!(source.fetches(), 1);
        clock.advance(Duration::from_secs(1));
        assert_eq!(cache.token().await.unwrap().secret().expose(), "token-2", "refreshed early, before expiry");
        assert_eq!(source.fetches(), 2);
    }

    #[tokio::test]
    async fn a_short_lived_token_is_refreshed_with_a_fifth_of_its_life_left() {
        let (cache, source, clock) = cache(Duration::from_secs(100));
        cache.token().await.unwrap();
        clock.advance(Duration::from_secs(79));
        assert_eq!(cache.token().await.unwrap().secret().expose(), "token-1");
        clock.advance(Duration::from_secs(1));
        assert_eq!(cache.token().await.unwrap().secret().expose(), "token-2");
        assert_eq!(source.fetches(), 2);
    }

    #[tokio::test]
    async fn a_refused_token_is_replaced_once_however_many_calls_saw_the_refusal() {
        let (cache, source, _clock) = cache(Duration::from_secs(3600));
        let refused = cache.token().await.unwrap();
        cache.invalidate(&refused);
        let fresh = cache.token().await.unwrap();
        assert_eq!(fresh.secret().expose(), "token-2");
        // A second call that was refused with the old token does not throw the new one away.
        cache.invalidate(&refused);
        assert_eq!(cache.token().await.unwrap().secret().expose(), "token-2");
        assert_eq!(source.fetches(), 2);
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch() {
        let (cache, source, _clock) = cache(Duration::from_secs(3600));
        let cache = Arc::new(cache);
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let c = Arc::clone(&cache);
                tokio::spawn(async move { c.token().await.unwrap().secret().expose().to_owned() })
            })
            .collect();
        for c in calls {
            assert_eq!(c.await.unwrap(), "token-1");
        }
        assert_eq!(source.fetches(), 1);
    }

    #[tokio::test]
    async fn an_unexpired_token_outlives_a_failing_endpoint_and_an_expired_one_does_not() {
        let (cache, source, clock) = cache(Duration::from_secs(100));
        cache.token().await.unwrap();
        source.failing.store(true, Ordering::SeqCst);
        clock.advance(Duration::from_secs(90));
        assert_eq!(cache.token().await.unwrap().secret().expose(), "token-1");
        clock.advance(Duration::from_secs(10));
        let err = cache.token().await.unwrap_err();
        assert!(matches!(err, OAuthError::Unreachable { .. }), "{err}");
    }

    #[test]
    fn secrets_and_tokens_never_print() {
        let secret = Secret::new("s3cr3t-value");
        let token = Token { secret: secret.clone(), generation: 1 };
        assert!(!format!("{secret:?} {token:?}").contains("s3cr3t"));
        assert!(token.header_value().unwrap().is_sensitive());
        assert_eq!(token.header_value().unwrap(), "Bearer s3cr3t-value");
    }
}
