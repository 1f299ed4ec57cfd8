//! Interactive-login grants of the test issuer: authorization code + PKCE (auto-approved
//! for a configured test user, no browser), rotating refresh tokens, and the RFC 8628
//! device flow with a `/device` page tests approve by HTTP call.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lifetime of an authorization code (RFC 6749 recommends at most 10 minutes).
pub const CODE_TTL: Duration = Duration::from_secs(60);
/// RFC 8628 section 3.5: each `slow_down` adds 5 seconds to the polling interval.
pub const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);
/// The `grant_type` of a device-code token request.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// An OAuth error answer: `error` code, human description, and whether it is a 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantError {
    /// RFC 6749 / 8628 error code (`invalid_grant`, `authorization_pending`, ...).
    pub error: &'static str,
    /// Human-readable `error_description`.
    pub description: String,
}

fn err(error: &'static str, description: impl Into<String>) -> GrantError {
    GrantError {
        error,
        description: description.into(),
    }
}

/// Who a successful grant is for (the caller signs the tokens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    /// User name the ID token is minted for.
    pub user: String,
    /// New refresh token (rotated on every use).
    pub refresh_token: String,
}

/// What `/authorize` was asked (already parsed from the query).
#[derive(Debug, Clone, Default)]
pub struct AuthorizeRequest {
    /// `response_type`.
    pub response_type: String,
    /// `client_id`.
    pub client_id: String,
    /// `redirect_uri`.
    pub redirect_uri: String,
    /// `code_challenge`.
    pub code_challenge: String,
    /// `code_challenge_method`.
    pub code_challenge_method: String,
}

/// How `/authorize` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeOutcome {
    /// The request cannot be redirected (bad client or redirect URI): show an error page.
    Refuse(String),
    /// Redirect back with `error` (RFC 6749 section 4.1.2.1).
    RedirectError(&'static str, String),
    /// Redirect back with this `code`.
    Code(String),
}

/// A new device authorization (RFC 8628 section 3.2).
#[derive(Debug, Clone)]
pub struct DeviceStart {
    /// Secret the CLI polls with.
    pub device_code: String,
    /// Short code the user types at `/device`.
    pub user_code: String,
    /// Lifetime of both codes.
    pub expires_in: Duration,
    /// Minimum polling interval.
    pub interval: Duration,
}

struct CodeGrant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    user: String,
    expires: Instant,
}

struct RefreshGrant {
    user: String,
    client_id: String,
    family: u64,
    revoked: bool,
}

#[derive(Clone, PartialEq, Eq)]
enum DeviceStatus {
    Pending,
    Approved(String),
    Denied,
}

struct DeviceGrant {
    user_code: String,
    client_id: String,
    status: DeviceStatus,
    expires: Instant,
    interval: Duration,
    last_poll: Option<Instant>,
}

struct Inner {
    code_ttl: Duration,
    login_user: Option<String>,
    login_ttl: Duration,
    device_interval: Duration,
    device_ttl: Duration,
    slow_down_next: u32,
    codes: HashMap<String, CodeGrant>,
    used_codes: HashSet<String>,
    refresh: HashMap<String, RefreshGrant>,
    next_family: u64,
    devices: HashMap<String, DeviceGrant>,
    refreshes_served: u64,
}

/// All interactive-login state of one issuer.
pub struct LoginState {
    inner: Mutex<Inner>,
}

impl LoginState {
    /// `login_user` is who `/authorize` and `/device` approve by default.
    pub fn new(login_user: Option<String>, login_ttl: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner {
                code_ttl: CODE_TTL,
                login_user,
                login_ttl,
                device_interval: Duration::from_secs(5),
                device_ttl: Duration::from_secs(600),
                slow_down_next: 0,
                codes: HashMap::new(),
                used_codes: HashSet::new(),
                refresh: HashMap::new(),
                next_family: 0,
                devices: HashMap::new(),
                refreshes_served: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets who logins are approved for (`None`: `/authorize` answers `access_denied`).
    pub fn set_login_user(&self, user: Option<String>) {
        self.lock().login_user = user;
    }

    /// The user logins are approved for.
    pub fn login_user(&self) -> Option<String> {
        self.lock().login_user.clone()
    }

    /// Lifetime of ID tokens from the code, refresh and device grants.
    pub fn login_ttl(&self) -> Duration {
        self.lock().login_ttl
    }

    /// Changes that lifetime for tokens issued from now on.
    pub fn set_login_ttl(&self, ttl: Duration) {
        self.lock().login_ttl = ttl;
    }

    /// Lifetime of authorization codes issued from now on (default [`CODE_TTL`]).
    pub fn set_code_ttl(&self, ttl: Duration) {
        self.lock().code_ttl = ttl;
    }

    /// Polling interval and lifetime of device codes issued from now on.
    pub fn set_device_timing(&self, interval: Duration, ttl: Duration) {
        let mut inner = self.lock();
        inner.device_interval = interval;
        inner.device_ttl = ttl;
    }

    /// The next `n` device-code polls answer `slow_down` whatever their timing.
    pub fn slow_down_next_polls(&self, n: u32) {
        self.lock().slow_down_next = n;
    }

    /// How many `refresh_token` grants succeeded.
    pub fn refreshes_served(&self) -> u64 {
        self.lock().refreshes_served
    }

    /// Revokes every refresh token handed out so far (an admin ending all sessions).
    pub fn revoke_all_refresh_tokens(&self) {
        for grant in self.lock().refresh.values_mut() {
            grant.revoked = true;
        }
    }

    /// Validates an authorization request and issues a code for the login user.
    pub fn authorize(&self, req: &AuthorizeRequest, client_id: &str) -> AuthorizeOutcome {
        if req.client_id != client_id {
            return AuthorizeOutcome::Refuse(format!("unknown client_id {:?}", req.client_id));
        }
        if !is_loopback_http(&req.redirect_uri) {
            return AuthorizeOutcome::Refuse(
                "redirect_uri must be http://127.0.0.1:PORT/..., http://[::1]:PORT/... or http://localhost:PORT/..."
                    .into(),
            );
        }
        if req.response_type != "code" {
            return AuthorizeOutcome::RedirectError(
                "unsupported_response_type",
                "only response_type=code is supported".into(),
            );
        }
        if req.code_challenge_method != "S256" || !valid_pkce_string(&req.code_challenge) {
            return AuthorizeOutcome::RedirectError(
                "invalid_request",
                "PKCE is required: code_challenge with code_challenge_method=S256".into(),
            );
        }
        let mut inner = self.lock();
        let Some(user) = inner.login_user.clone() else {
            return AuthorizeOutcome::RedirectError(
                "access_denied",
                "no test user is configured to approve logins".into(),
            );
        };
        let code = random_token(32);
        let expires = Instant::now() + inner.code_ttl;
        inner.codes.insert(
            code.clone(),
            CodeGrant {
                client_id: req.client_id.clone(),
                redirect_uri: req.redirect_uri.clone(),
                challenge: req.code_challenge.clone(),
                user,
                expires,
            },
        );
        AuthorizeOutcome::Code(code)
    }

    /// `grant_type=authorization_code`: single-use, unexpired, same client and redirect
    /// URI, and `S256(code_verifier)` equal to the challenge.
    pub fn redeem_code(
        &self,
        code: &str,
        client_id: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<Granted, GrantError> {
        let mut inner = self.lock();
        // Removed before any check: a code is spent by its first use, right or wrong.
        let Some(grant) = inner.codes.remove(code) else {
            if inner.used_codes.contains(code) {
                return Err(err("invalid_grant", "authorization code was already used"));
            }
            return Err(err("invalid_grant", "unknown authorization code"));
        };
        inner.used_codes.insert(code.to_string());
        if grant.expires <= Instant::now() {
            return Err(err("invalid_grant", "authorization code expired"));
        }
        if grant.client_id != client_id {
            return Err(err("invalid_grant", "code was issued to another client"));
        }
        if grant.redirect_uri != redirect_uri {
            return Err(err(
                "invalid_grant",
                "redirect_uri differs from the authorization request",
            ));
        }
        if !valid_pkce_string(verifier) || challenge_s256(verifier) != grant.challenge {
            return Err(err(
                "invalid_grant",
                "code_verifier does not match the code_challenge",
            ));
        }
        let family = inner.new_family();
        Ok(inner.grant(grant.user, client_id, family))
    }

    /// `grant_type=refresh_token`: rotates the token; a revoked or already-rotated token is
    /// refused, and replaying a rotated one revokes its whole family (token theft).
    pub fn refresh(&self, token: &str, client_id: &str) -> Result<Granted, GrantError> {
        let mut inner = self.lock();
        let Some(old) = inner.refresh.get_mut(token) else {
            return Err(err("invalid_grant", "unknown refresh token"));
        };
        if old.client_id != client_id {
            return Err(err(
                "invalid_grant",
                "refresh token was issued to another client",
            ));
        }
        if old.revoked {
            let family = old.family;
            for g in inner.refresh.values_mut().filter(|g| g.family == family) {
                g.revoked = true;
            }
            return Err(err("invalid_grant", "refresh token is revoked"));
        }
        old.revoked = true;
        let (user, family) = (old.user.clone(), old.family);
        inner.refreshes_served += 1;
        Ok(inner.grant(user, client_id, family))
    }

    /// Starts a device authorization for `client_id`.
    pub fn start_device(&self, client_id: &str) -> DeviceStart {
        let mut inner = self.lock();
        let device_code = random_token(32);
        let user_code = user_code();
        let (interval, ttl) = (inner.device_interval, inner.device_ttl);
        inner.devices.insert(
            device_code.clone(),
            DeviceGrant {
                user_code: user_code.clone(),
                client_id: client_id.to_string(),
                status: DeviceStatus::Pending,
                expires: Instant::now() + ttl,
                interval,
                last_poll: None,
            },
        );
        DeviceStart {
            device_code,
            user_code,
            expires_in: ttl,
            interval,
        }
    }

    /// The `/device` page: approve (for `user`, else the login user) or deny a user code.
    pub fn decide_device(
        &self,
        user_code: &str,
        approve: bool,
        user: Option<String>,
    ) -> Result<(), GrantError> {
        let mut inner = self.lock();
        let user = user.or_else(|| inner.login_user.clone());
        let wanted = normalize_user_code(user_code);
        let Some(grant) = inner
            .devices
            .values_mut()
            .find(|g| normalize_user_code(&g.user_code) == wanted)
        else {
            return Err(err("invalid_request", "unknown user code"));
        };
        if grant.expires <= Instant::now() {
            return Err(err("expired_token", "user code expired"));
        }
        if grant.status != DeviceStatus::Pending {
            return Err(err("invalid_request", "user code was already used"));
        }
        grant.status = match (approve, user) {
            (true, Some(u)) => DeviceStatus::Approved(u),
            (true, None) => return Err(err("invalid_request", "no user to approve for")),
            (false, _) => DeviceStatus::Denied,
        };
        Ok(())
    }

    /// `grant_type=urn:ietf:params:oauth:grant-type:device_code` (RFC 8628 section 3.5).
    pub fn poll_device(&self, device_code: &str, client_id: &str) -> Result<Granted, GrantError> {
        let mut inner = self.lock();
        let force_slow_down = inner.slow_down_next > 0;
        if force_slow_down {
            inner.slow_down_next -= 1;
        }
        let now = Instant::now();
        let Some(grant) = inner.devices.get_mut(device_code) else {
            return Err(err("invalid_grant", "unknown device code"));
        };
        if grant.client_id != client_id {
            return Err(err(
                "invalid_grant",
                "device code was issued to another client",
            ));
        }
        if grant.expires <= now {
            inner.devices.remove(device_code);
            return Err(err("expired_token", "device code expired"));
        }
        // Tolerant of scheduling jitter: only a poll well inside the interval is too fast.
        let too_fast = grant
            .last_poll
            .is_some_and(|last| now.duration_since(last) < grant.interval * 3 / 4);
        grant.last_poll = Some(now);
        if force_slow_down || too_fast {
            grant.interval += SLOW_DOWN_STEP;
            return Err(err("slow_down", "polling too fast"));
        }
        match grant.status.clone() {
            DeviceStatus::Pending => Err(err(
                "authorization_pending",
                "the user has not approved yet",
            )),
            DeviceStatus::Denied => {
                inner.devices.remove(device_code);
                Err(err("access_denied", "the user denied the request"))
            }
            DeviceStatus::Approved(user) => {
                inner.devices.remove(device_code);
                let family = inner.new_family();
                Ok(inner.grant(user, client_id, family))
            }
        }
    }
}

impl Inner {
    fn new_family(&mut self) -> u64 {
        self.next_family += 1;
        self.next_family
    }

    fn grant(&mut self, user: String, client_id: &str, family: u64) -> Granted {
        let refresh_token = random_token(32);
        self.refresh.insert(
            refresh_token.clone(),
            RefreshGrant {
                user: user.clone(),
                client_id: client_id.to_string(),
                family,
                revoked: false,
            },
        );
        Granted {
            user,
            refresh_token,
        }
    }
}

/// RFC 8252 section 7.3: loopback redirect URIs use `http` and a literal loopback host.
pub fn is_loopback_http(uri: &str) -> bool {
    let Ok(url) = url::Url::parse(uri) else {
        return false;
    };
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    url.scheme() == "http" && loopback && url.port().is_some() && url.fragment().is_none()
}

/// RFC 7636 section 4.1: 43-128 characters of `[A-Za-z0-9-._~]`.
fn valid_pkce_string(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

fn challenge_s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// `XXXX-XXXX` from consonants only (RFC 8628 section 6.1: no vowels, no look-alikes).
fn user_code() -> String {
    const ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
    let mut buf = [0u8; 8];
    rand::rng().fill_bytes(&mut buf);
    let chars: String = buf
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    format!("{}-{}", &chars[..4], &chars[4..])
}

fn normalize_user_code(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    fn authorize(state: &LoginState, redirect: &str) -> AuthorizeOutcome {
        state.authorize(
            &AuthorizeRequest {
                response_type: "code".into(),
                client_id: "gatehouse".into(),
                redirect_uri: redirect.into(),
                code_challenge: challenge_s256(VERIFIER),
                code_challenge_method: "S256".into(),
            },
            "gatehouse",
        )
    }

    fn new_code(state: &LoginState) -> Result<String, GrantError> {
        match authorize(state, "http://127.0.0.1:1/cb") {
            AuthorizeOutcome::Code(c) => Ok(c),
            other => Err(err("test", format!("no code: {other:?}"))),
        }
    }

    #[test]
    fn loopback_redirects_only() {
        assert!(is_loopback_http("http://127.0.0.1:5000/callback"));
        assert!(is_loopback_http("http://[::1]:5000/cb"));
        assert!(is_loopback_http("http://localhost:5000/cb"));
        assert!(!is_loopback_http("https://127.0.0.1:5000/cb"));
        assert!(!is_loopback_http("http://evil.example:5000/cb"));
        assert!(!is_loopback_http("http://127.0.0.1/cb"));
        assert!(!is_loopback_http("not a url"));
    }

    #[test]
    fn code_is_single_use_and_bound_to_verifier() -> Result<(), GrantError> {
        let s = LoginState::new(Some("alice".into()), Duration::from_secs(60));
        let code = new_code(&s)?;
        let wrong = "x".repeat(43);
        assert_eq!(
            s.redeem_code(&code, "gatehouse", "http://127.0.0.1:1/cb", &wrong)
                .map_err(|e| e.error),
            Err("invalid_grant")
        );
        // Spent by the failed attempt.
        let again = s.redeem_code(&code, "gatehouse", "http://127.0.0.1:1/cb", VERIFIER);
        assert!(again.is_err_and(|e| e.description.contains("already used")));
        let code = new_code(&s)?;
        let ok = s.redeem_code(&code, "gatehouse", "http://127.0.0.1:1/cb", VERIFIER);
        assert!(ok.is_ok_and(|g| g.user == "alice"));
        Ok(())
    }

    #[test]
    fn expired_code_is_refused() -> Result<(), GrantError> {
        let s = LoginState::new(Some("alice".into()), Duration::from_secs(60));
        s.set_code_ttl(Duration::ZERO);
        let code = new_code(&s)?;
        let r = s.redeem_code(&code, "gatehouse", "http://127.0.0.1:1/cb", VERIFIER);
        assert!(r.is_err_and(|e| e.description.contains("expired")));
        Ok(())
    }

    #[test]
    fn code_is_bound_to_client_and_redirect_uri() -> Result<(), GrantError> {
        let s = LoginState::new(Some("alice".into()), Duration::from_secs(60));
        for (client, redirect) in [
            ("other", "http://127.0.0.1:1/cb"),
            ("gatehouse", "http://127.0.0.1:2/cb"),
        ] {
            let code = new_code(&s)?;
            assert!(s.redeem_code(&code, client, redirect, VERIFIER).is_err());
        }
        Ok(())
    }

    #[test]
    fn no_login_user_or_no_pkce_redirects_with_an_error() {
        let s = LoginState::new(None, Duration::from_secs(60));
        assert!(matches!(
            authorize(&s, "http://127.0.0.1:1/cb"),
            AuthorizeOutcome::RedirectError("access_denied", _)
        ));
        let plain = AuthorizeRequest {
            response_type: "code".into(),
            client_id: "gatehouse".into(),
            redirect_uri: "http://127.0.0.1:1/cb".into(),
            code_challenge: VERIFIER.into(),
            code_challenge_method: "plain".into(),
        };
        assert!(matches!(
            s.authorize(&plain, "gatehouse"),
            AuthorizeOutcome::RedirectError("invalid_request", _)
        ));
    }

    #[test]
    fn refresh_rotates_and_replay_revokes_family() -> Result<(), GrantError> {
        let s = LoginState::new(Some("alice".into()), Duration::from_secs(60));
        let code = new_code(&s)?;
        let first = s.redeem_code(&code, "gatehouse", "http://127.0.0.1:1/cb", VERIFIER)?;
        let second = s.refresh(&first.refresh_token, "gatehouse")?;
        assert_ne!(first.refresh_token, second.refresh_token);
        assert_eq!(s.refreshes_served(), 1);
        assert!(s.refresh(&first.refresh_token, "gatehouse").is_err());
        // The replay revoked the rotated-to token too.
        assert!(s.refresh(&second.refresh_token, "gatehouse").is_err());
        Ok(())
    }

    #[test]
    fn device_flow_states() -> Result<(), GrantError> {
        let s = LoginState::new(Some("alice".into()), Duration::from_secs(60));
        s.set_device_timing(Duration::ZERO, Duration::from_secs(60));
        let d = s.start_device("gatehouse");
        assert_eq!(
            s.poll_device(&d.device_code, "gatehouse")
                .map_err(|e| e.error),
            Err("authorization_pending")
        );
        s.slow_down_next_polls(1);
        assert_eq!(
            s.poll_device(&d.device_code, "gatehouse")
                .map_err(|e| e.error),
            Err("slow_down")
        );
        s.set_device_timing(Duration::ZERO, Duration::from_secs(60));
        s.decide_device(&d.user_code.to_lowercase(), true, None)?;
        // slow_down raised this code's interval: an immediate poll is too fast again.
        assert_eq!(
            s.poll_device(&d.device_code, "gatehouse")
                .map_err(|e| e.error),
            Err("slow_down")
        );
        let d2 = s.start_device("gatehouse");
        s.decide_device(&d2.user_code, false, None)?;
        assert_eq!(
            s.poll_device(&d2.device_code, "gatehouse")
                .map_err(|e| e.error),
            Err("access_denied")
        );
        s.set_device_timing(Duration::ZERO, Duration::ZERO);
        let d3 = s.start_device("gatehouse");
        assert_eq!(
            s.poll_device(&d3.device_code, "gatehouse")
                .map_err(|e| e.error),
            Err("expired_token")
        );
        let d4 = {
            s.set_device_timing(Duration::ZERO, Duration::from_secs(60));
            s.start_device("gatehouse")
        };
        s.decide_device(&d4.user_code, true, Some("bob".into()))?;
        assert_eq!(s.poll_device(&d4.device_code, "gatehouse")?.user, "bob");
        Ok(())
    }
}
