//! `gatehouse login`: OIDC authorization code + PKCE through a loopback redirect, or the
//! RFC 8628 device flow; both end in tokens for the cache.

use super::cache::CachedTokens;
use super::http::IssuerClient;
use super::loopback::{Loopback, LoopbackError};
use super::oidc::{self, DeviceAuthorization, OidcError};
use super::pkce::{Pkce, random_token};
use std::time::Duration;

/// The device-code `grant_type` (RFC 8628 section 3.4).
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// RFC 8628 section 3.5: `slow_down` adds 5 seconds to the interval for good.
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);

/// Why a login failed. Messages never contain token material.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Discovery or a token request failed.
    #[error(transparent)]
    Oidc(#[from] OidcError),
    /// The loopback redirect failed.
    #[error(transparent)]
    Loopback(#[from] LoopbackError),
    /// The issuer does not offer what this login needs.
    #[error("issuer {issuer} does not support {what}")]
    Unsupported {
        /// Issuer URL.
        issuer: String,
        /// Missing capability.
        what: &'static str,
    },
    /// The user denied the device login.
    #[error("the login was denied at the issuer")]
    Denied,
    /// The device code expired before the user approved it.
    #[error(
        "the device code expired before the login was approved; run `gatehouse login --device` again"
    )]
    Expired,
}

/// What every login needs.
#[derive(Debug, Clone)]
pub struct LoginParams {
    /// Issuer URL.
    pub issuer: String,
    /// OAuth client id.
    pub client_id: String,
    /// Space-separated scopes.
    pub scopes: String,
    /// How long to wait for the user.
    pub timeout: Duration,
}

/// How the authorization URL reaches the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Browser {
    /// Run this command with the URL (and print the URL in case it fails).
    Open(String),
    /// Only print the URL (`--no-browser`).
    Print,
}

/// The authorization request URL (RFC 6749 section 4.1.1 + RFC 7636 section 4.3).
pub fn authorize_url(
    endpoint: &str,
    p: &LoginParams,
    redirect_uri: &str,
    state: &str,
    challenge: &str,
) -> Result<String, LoginError> {
    let mut url = url::Url::parse(endpoint).map_err(|e| {
        LoginError::Oidc(OidcError::Protocol {
            url: endpoint.into(),
            reason: format!("authorization_endpoint is not a URL: {e}"),
        })
    })?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &p.client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", &p.scopes)
        .append_pair("state", state)
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256");
    Ok(url.into())
}

/// Authorization code + PKCE: show the URL, wait for the loopback redirect, redeem the code.
/// `say` gets the lines for the user (stderr).
pub async fn login_browser(
    client: &IssuerClient,
    p: &LoginParams,
    browser: &Browser,
    say: &mut dyn FnMut(&str),
) -> Result<CachedTokens, LoginError> {
    let d = oidc::discover(client, &p.issuer).await?;
    let Some(endpoint) = d.authorization_endpoint.as_deref() else {
        return Err(unsupported(
            p,
            "the authorization code flow (no authorization_endpoint)",
        ));
    };
    // Fail closed if the issuer says which PKCE methods it has and S256 is not one.
    if !d.code_challenge_methods_supported.is_empty()
        && !d
            .code_challenge_methods_supported
            .iter()
            .any(|m| m == "S256")
    {
        return Err(unsupported(p, "PKCE S256"));
    }
    let loopback = Loopback::bind().await?;
    let redirect_uri = loopback.redirect_uri();
    let pkce = Pkce::generate();
    let state = random_token(24);
    let url = authorize_url(endpoint, p, &redirect_uri, &state, &pkce.challenge)?;
    match browser {
        Browser::Print => {
            say(&format!(
                "To log in to {}, open this URL in a browser on this machine:",
                p.issuer
            ));
        }
        Browser::Open(cmd) => {
            let opened = std::process::Command::new(cmd)
                .arg(&url)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .is_ok();
            say(&if opened {
                format!(
                    "Opened a browser to log in to {}. If it did not open, visit:",
                    p.issuer
                )
            } else {
                format!(
                    "Could not run {cmd:?}; to log in to {}, open this URL:",
                    p.issuer
                )
            });
        }
    }
    say(&format!("  {url}"));
    let code = loopback.wait(&state, p.timeout).await?;
    let resp = oidc::token_request(
        client,
        &d.token_endpoint,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect_uri),
            ("client_id", &p.client_id),
            ("code_verifier", &pkce.verifier),
        ],
    )
    .await?;
    Ok(oidc::to_cached(
        &p.issuer,
        &p.client_id,
        resp,
        None,
        chrono::Utc::now(),
    )?)
}

/// Device flow: show the verification URI and user code, poll until approved.
pub async fn login_device(
    client: &IssuerClient,
    p: &LoginParams,
    say: &mut dyn FnMut(&str),
) -> Result<CachedTokens, LoginError> {
    let d = oidc::discover(client, &p.issuer).await?;
    let Some(endpoint) = d.device_authorization_endpoint.as_deref() else {
        return Err(unsupported(
            p,
            "the device flow (no device_authorization_endpoint)",
        ));
    };
    let reply = client
        .post_form(
            endpoint,
            &[("client_id", &p.client_id), ("scope", &p.scopes)],
        )
        .await
        .map_err(OidcError::from)?;
    if !reply.status.is_success() {
        return Err(oidc::parse_error(endpoint, &reply).into());
    }
    let auth: DeviceAuthorization =
        serde_json::from_slice(&reply.body).map_err(|e| OidcError::Protocol {
            url: endpoint.into(),
            reason: e.to_string(),
        })?;
    say(&format!(
        "To log in to {}, open {} and enter the code: {}",
        p.issuer, auth.verification_uri, auth.user_code
    ));
    if let Some(complete) = &auth.verification_uri_complete {
        say(&format!("  (or open {complete})"));
    }
    say("Waiting for the login to be approved...");
    let deadline =
        tokio::time::Instant::now() + p.timeout.min(Duration::from_secs(auth.expires_in));
    let mut interval = Duration::from_secs(auth.interval);
    loop {
        if tokio::time::Instant::now() + interval > deadline {
            return Err(LoginError::Expired);
        }
        tokio::time::sleep(interval).await;
        let polled = oidc::token_request(
            client,
            &d.token_endpoint,
            &[
                ("grant_type", DEVICE_CODE_GRANT),
                ("device_code", &auth.device_code),
                ("client_id", &p.client_id),
            ],
        )
        .await;
        match polled {
            Ok(resp) => {
                return Ok(oidc::to_cached(
                    &p.issuer,
                    &p.client_id,
                    resp,
                    None,
                    chrono::Utc::now(),
                )?);
            }
            Err(OidcError::OAuth(e)) => match next_poll(&e.error, interval) {
                Poll::Again(next) => interval = next,
                Poll::Stop(err) => return Err(err.unwrap_or(OidcError::OAuth(e).into())),
            },
            Err(other) => return Err(other.into()),
        }
    }
}

enum Poll {
    Again(Duration),
    /// `None`: report the issuer's own error.
    Stop(Option<LoginError>),
}

/// RFC 8628 section 3.5 error handling.
fn next_poll(error: &str, interval: Duration) -> Poll {
    match error {
        "authorization_pending" => Poll::Again(interval),
        "slow_down" => Poll::Again(interval + SLOW_DOWN_STEP),
        "access_denied" => Poll::Stop(Some(LoginError::Denied)),
        "expired_token" => Poll::Stop(Some(LoginError::Expired)),
        _ => Poll::Stop(None),
    }
}

fn unsupported(p: &LoginParams, what: &'static str) -> LoginError {
    LoginError::Unsupported {
        issuer: p.issuer.clone(),
        what,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> LoginParams {
        LoginParams {
            issuer: "https://i".into(),
            client_id: "gatehouse".into(),
            scopes: "openid offline_access".into(),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn authorize_url_carries_pkce_and_state() -> anyhow::Result<()> {
        let u = authorize_url(
            "https://i/authorize?tenant=x",
            &params(),
            "http://127.0.0.1:5/callback",
            "st",
            "ch",
        )?;
        let url = url::Url::parse(&u)?;
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["tenant"], "x");
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["redirect_uri"], "http://127.0.0.1:5/callback");
        assert_eq!(q["scope"], "openid offline_access");
        assert_eq!(q["state"], "st");
        assert_eq!(q["code_challenge"], "ch");
        assert_eq!(q["code_challenge_method"], "S256");
        assert!(authorize_url("not a url", &params(), "r", "s", "c").is_err());
        Ok(())
    }

    #[test]
    fn device_poll_errors_follow_rfc8628() {
        let i = Duration::from_secs(2);
        assert!(matches!(next_poll("authorization_pending", i), Poll::Again(d) if d == i));
        assert!(matches!(next_poll("slow_down", i), Poll::Again(d) if d == Duration::from_secs(7)));
        assert!(matches!(
            next_poll("access_denied", i),
            Poll::Stop(Some(LoginError::Denied))
        ));
        assert!(matches!(
            next_poll("expired_token", i),
            Poll::Stop(Some(LoginError::Expired))
        ));
        assert!(matches!(next_poll("invalid_client", i), Poll::Stop(None)));
    }
}
