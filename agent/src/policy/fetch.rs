//! `--policy-url`: follows the collector's active policy with a long-poll
//! (`GET /v1/policy?after=<version>&wait=<secs>`), authenticated like the shipper (client
//! certificate and/or bearer token). A new version that does not validate is refused and
//! the old one stays; the collector being down changes nothing (last good policy stays).

use super::ActivePolicy;
use crate::forward::credential::TokenFile;
use crate::ship::ShipConfig;
use bytes::Bytes;
use gatehouse_common::policy::{POLICY_PATH, Policy};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Largest policy response read (a real policy is far smaller).
const MAX_BODY: usize = 4 << 20;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Why one fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// URL or TLS material unusable (at start).
    #[error("{0}")]
    Config(String),
    /// The collector could not be reached or answered badly.
    #[error("collector: {0}")]
    Unavailable(String),
    /// The collector served a policy that does not validate.
    #[error("{0}")]
    Invalid(#[from] gatehouse_common::policy::PolicyError),
}

/// The long-poll loop's settings and client.
pub struct Fetcher {
    base: String,
    client: HttpsClient,
    token: Option<TokenFile>,
    wait: Duration,
    cache: Option<PathBuf>,
}

impl Fetcher {
    /// Prepares the client from the collector settings in `ship`.
    pub fn new(
        ship: &ShipConfig,
        wait: Duration,
        cache: Option<PathBuf>,
    ) -> Result<Self, FetchError> {
        let url = url::Url::parse(&ship.collector_url)
            .map_err(|e| FetchError::Config(format!("{:?}: {e}", ship.collector_url)))?;
        let loopback = url.host_str().is_some_and(|h| {
            h == "localhost"
                || h.trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => {
                return Err(FetchError::Config(
                    "must be https:// (http:// only for loopback)".into(),
                ));
            }
        }
        let mut tls =
            crate::ship::conn::client_tls(ship).map_err(|e| FetchError::Config(e.to_string()))?;
        // The connector sets ALPN itself (and refuses a config that already has it).
        tls.alpn_protocols.clear();
        // The collector's agent listener speaks HTTP/2 only.
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http2()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(connector);
        Ok(Self {
            base: ship.collector_url.trim_end_matches('/').to_string(),
            client,
            token: ship.token_file.clone().map(TokenFile::new),
            wait,
            cache,
        })
    }

    /// Follows the collector forever, with capped exponential backoff on failures.
    pub async fn run(self, active: Arc<ActivePolicy>) {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.poll_once(&active).await {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(err) => {
                    match &err {
                        FetchError::Invalid(_) => active.reject(&self.base, &err),
                        _ => tracing::warn!(
                            error = %err,
                            active = ?active.version(),
                            "policy fetch failed; keeping the current policy"
                        ),
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// One long-poll: applies a new version if the collector has one.
    pub async fn poll_once(&self, active: &ActivePolicy) -> Result<(), FetchError> {
        let after = active.version().unwrap_or_default();
        let uri = format!(
            "{}{POLICY_PATH}?after={after}&wait={}",
            self.base,
            self.wait.as_secs()
        );
        let mut req = Request::get(&uri);
        if let Some(token) = &self.token {
            let token = token
                .token()
                .map_err(|e| FetchError::Unavailable(format!("token file: {e}")))?;
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| FetchError::Config(e.to_string()))?;
        let limit = self.wait + Duration::from_secs(15);
        let resp = tokio::time::timeout(limit, self.client.request(req))
            .await
            .map_err(|_| FetchError::Unavailable("long-poll timed out".into()))?
            .map_err(|e| FetchError::Unavailable(e.to_string()))?;
        let status = resp.status();
        if status == StatusCode::NOT_MODIFIED {
            return Ok(());
        }
        let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| FetchError::Unavailable(e.to_string()))?
            .to_bytes();
        if status != StatusCode::OK {
            let text = String::from_utf8_lossy(&body);
            return Err(FetchError::Unavailable(format!(
                "{status}: {}",
                text.chars().take(300).collect::<String>()
            )));
        }
        let text = std::str::from_utf8(&body)
            .map_err(|_| FetchError::Unavailable("policy is not UTF-8".into()))?;
        let policy = Policy::parse(text)?;
        let changed = active.set(policy.clone());
        // Written after the policy is active, so an existing cache file means "loaded".
        if let Some(cache) = &self.cache
            && changed
            && let Err(err) = super::cache::store(cache, &policy)
        {
            tracing::warn!(path = %cache.display(), error = %err, "policy cache not written");
        }
        Ok(())
    }
}
