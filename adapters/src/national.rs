//! The national SPLP connector: an API manager reached at tenant URLs
//! (`<base>/t/<tenant>/<api>/<version>/…`) with OAuth2 client-credentials tokens sent in a
//! configurable header. National service identifiers map to those URLs; the token is cached and
//! refreshed by [`crate::oauth::TokenCache`], and a call the API manager refuses with 401 is sent
//! once more with a fresh token.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HeaderName;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use splpd_certs::id::ServiceId;

use crate::http::{HttpUpstream, UpstreamBody, UpstreamError};
use crate::oauth::{ClientCredentials, OAuthError, Secret, SystemClock, TokenCache};

/// Time allowed for the token endpoint to answer.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the connector needs to know, from `[national]`.
#[derive(Debug, Clone)]
pub struct NationalSettings {
    /// The API manager's base URL.
    pub base_url: Uri,
    /// The tenant domain of `/t/<tenant>/`.
    pub tenant: String,
    /// The OAuth2 token endpoint.
    pub token_url: Uri,
    /// The OAuth2 client id.
    pub client_id: String,
    /// The header the token goes in (`Authorization`, `AuthorizationSPLP`, …).
    pub token_header: HeaderName,
    /// National services: identifier → (API context, version).
    pub apis: Vec<(ServiceId, String, String)>,
}

/// Why a national call failed before the API manager answered it.
#[derive(Debug, thiserror::Error)]
pub enum NationalError {
    /// No token could be had.
    #[error("no token for the national SPLP: {0}")]
    Token(#[from] OAuthError),
    /// The API manager could not be reached or broke off.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The caller's request body could not be read.
    #[error("reading the request body failed: {0}")]
    Body(String),
    /// A tenant URL could not be formed (the validator should have caught it).
    #[error("cannot form the national URL for {service}: {reason}")]
    BadUrl {
        /// The service.
        service: ServiceId,
        /// Why.
        reason: String,
    },
}

/// The connector towards one national SPLP.
#[derive(Debug)]
pub struct NationalConnector {
    client: HttpUpstream,
    tokens: TokenCache<ClientCredentials, SystemClock>,
    header: HeaderName,
    /// Tenant base URL of each national service.
    apis: HashMap<ServiceId, Uri>,
}

impl NationalConnector {
    /// A connector over `client` (which trusts the API manager's certificate), authenticating
    /// with `secret`.
    pub fn new(client: HttpUpstream, settings: NationalSettings, secret: &Secret) -> Result<Self, NationalError> {
        let base = settings.base_url.to_string();
        let base = base.trim_end_matches('/');
        let mut apis = HashMap::new();
        for (service, api, version) in settings.apis {
            let url = format!("{base}/t/{}/{api}/{version}", settings.tenant);
            let uri = url
                .parse::<Uri>()
                .map_err(|e| NationalError::BadUrl { service: service.clone(), reason: e.to_string() })?;
            apis.insert(service, uri);
        }
        let source =
            ClientCredentials::new(client.clone(), settings.token_url, &settings.client_id, secret, TOKEN_TIMEOUT);
        Ok(Self { client, tokens: TokenCache::new(source, SystemClock), header: settings.token_header, apis })
    }

    /// The client towards the API manager.
    pub fn client(&self) -> &HttpUpstream {
        &self.client
    }

    /// The tenant base URL a national service is called at, if it is mapped.
    pub fn api_base(&self, service: &ServiceId) -> Option<&Uri> {
        self.apis.get(service)
    }

    /// Sends `req` (its URI already under the service's tenant base) with a token, waiting at
    /// most `timeout` in all for the answer to start. The body is read first: a call refused
    /// with 401 is sent once more with a fresh token, and only a whole body can be sent twice
    /// (national API calls are documents of modest size, bounded by the service's limit).
    pub async fn send(
        &self,
        req: Request<UpstreamBody>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, NationalError> {
        let started = Instant::now();
        let (parts, body) = req.into_parts();
        let body: Bytes = body.collect().await.map_err(|e| NationalError::Body(e.to_string()))?.to_bytes();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let token = self.tokens.token().await?;
            let mut out = Request::new(Full::new(body.clone()).map_err(|never| match never {}).boxed());
            *out.method_mut() = parts.method.clone();
            *out.uri_mut() = parts.uri.clone();
            *out.headers_mut() = parts.headers.clone();
            if let Some(value) = token.header_value() {
                out.headers_mut().insert(self.header.clone(), value);
            }
            let resp = self.client.send(out, timeout.saturating_sub(started.elapsed())).await?;
            if resp.status() == StatusCode::UNAUTHORIZED && attempt == 1 {
                // Revoked or expired early on the API manager's side: one more try, fresh token.
                // The host alone: the path and query are the caller's, and may hold personal data.
                let host = parts.uri.authority().map_or("", |a| a.as_str());
                tracing::info!(host, "the national SPLP refused the token; fetching a new one");
                self.tokens.invalidate(&token);
                continue;
            }
            return Ok(resp);
        }
    }
}
