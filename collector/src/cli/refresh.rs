//! Fresh tokens for `gatehouse token`: the cached ID token while it is valid, else a
//! refresh-token grant under the cache lock so concurrent kubectl invocations refresh once.

use super::cache::{CacheError, CachedTokens, TokenCache};
use super::http::IssuerClient;
use super::oidc::{self, OAuthError, OidcError};
use chrono::{Duration, Utc};

/// Why no usable token could be produced. Messages never contain token material.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Nothing cached for this issuer and client.
    #[error("not logged in to {0}")]
    NotLoggedIn(String),
    /// The ID token expired and there is no refresh token.
    #[error("the login to {0} has expired")]
    Expired(String),
    /// The issuer refused the refresh token (revoked, expired, rotated away).
    #[error("the login to {issuer} has expired and the issuer refused to renew it: {reason}")]
    Refused {
        /// Issuer URL.
        issuer: String,
        /// The issuer's OAuth error.
        reason: OAuthError,
    },
    /// The refresh could not be done (issuer unreachable, bad answer).
    #[error("the login to {issuer} has expired and renewing it failed: {source}")]
    RefreshFailed {
        /// Issuer URL.
        issuer: String,
        /// What failed.
        source: OidcError,
    },
    /// Reading or writing the cache failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// A token valid for at least `skew` more, refreshing it if needed. `client` is only built
/// (and the issuer only contacted) when a refresh is due.
pub async fn fresh_tokens(
    cache: &TokenCache,
    issuer: &str,
    client_id: &str,
    skew: Duration,
    client: impl FnOnce() -> Result<IssuerClient, OidcError>,
) -> Result<CachedTokens, TokenError> {
    let valid = |t: &CachedTokens| t.id_token_valid(Utc::now(), skew);
    match cache.load(issuer, client_id)? {
        None => return Err(TokenError::NotLoggedIn(issuer.into())),
        Some(t) if valid(&t) => return Ok(t),
        Some(t) if t.refresh_token.is_none() => return Err(TokenError::Expired(issuer.into())),
        Some(_) => {}
    }
    let locker = cache.clone();
    let (i, c) = (issuer.to_string(), client_id.to_string());
    let _lock = tokio::task::spawn_blocking(move || locker.lock(&i, &c))
        .await
        .map_err(|e| {
            TokenError::Cache(CacheError::Io {
                path: Default::default(),
                source: std::io::Error::other(e),
            })
        })??;
    // Whoever held the lock before us may have refreshed already.
    let cached = match cache.load(issuer, client_id)? {
        None => return Err(TokenError::NotLoggedIn(issuer.into())),
        Some(t) if valid(&t) => return Ok(t),
        Some(t) => t,
    };
    let Some(refresh_token) = cached.refresh_token.clone() else {
        return Err(TokenError::Expired(issuer.into()));
    };
    let failed = |source| TokenError::RefreshFailed {
        issuer: issuer.into(),
        source,
    };
    let client = client().map_err(failed)?;
    let discovery = oidc::discover(&client, issuer).await.map_err(failed)?;
    let answer = oidc::token_request(
        &client,
        &discovery.token_endpoint,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh_token),
            ("client_id", client_id),
        ],
    )
    .await;
    let resp = match answer {
        Ok(resp) => resp,
        Err(OidcError::OAuth(reason)) => {
            if reason.error == "invalid_grant" {
                // Never valid again: forget it so later calls fail fast without the issuer.
                cache.store(&CachedTokens {
                    refresh_token: None,
                    ..cached
                })?;
            }
            return Err(TokenError::Refused {
                issuer: issuer.into(),
                reason,
            });
        }
        Err(other) => return Err(failed(other)),
    };
    let fresh = oidc::to_cached(issuer, client_id, resp, Some(refresh_token), Utc::now())
        .map_err(failed)?;
    cache.store(&fresh)?;
    Ok(fresh)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(expires_in: i64, refresh: Option<&str>) -> CachedTokens {
        CachedTokens {
            issuer: "https://i".into(),
            client_id: "c".into(),
            id_token: "t".into(),
            expires_at: Utc::now() + Duration::seconds(expires_in),
            refresh_token: refresh.map(str::to_string),
        }
    }

    fn no_client() -> Result<IssuerClient, OidcError> {
        Err(OidcError::Protocol {
            url: "none".into(),
            reason: "must not be contacted".into(),
        })
    }

    #[tokio::test]
    async fn valid_token_is_used_without_the_issuer() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let cache = TokenCache::new(dir.path());
        cache.store(&tokens(600, Some("r")))?;
        let t = fresh_tokens(&cache, "https://i", "c", Duration::seconds(30), no_client).await?;
        assert_eq!(t.id_token, "t");
        Ok(())
    }

    #[tokio::test]
    async fn expired_without_refresh_or_cache_is_a_clear_error() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let cache = TokenCache::new(dir.path());
        let r = fresh_tokens(&cache, "https://i", "c", Duration::seconds(30), no_client).await;
        assert!(matches!(r, Err(TokenError::NotLoggedIn(_))));
        cache.store(&tokens(10, None))?;
        let r = fresh_tokens(&cache, "https://i", "c", Duration::seconds(30), no_client).await;
        assert!(matches!(r, Err(TokenError::Expired(_))));
        cache.store(&tokens(10, Some("r")))?;
        let r = fresh_tokens(&cache, "https://i", "c", Duration::seconds(30), no_client).await;
        assert!(matches!(r, Err(TokenError::RefreshFailed { .. })));
        Ok(())
    }
}
