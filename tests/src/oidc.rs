//! Local OpenID Connect issuer for tests and the dev stack.
//!
//! Serves HTTPS on `127.0.0.1` (certificate from a [`Ca`]):
//! - `GET /.well-known/openid-configuration` — discovery;
//! - `GET /jwks` — one ES256 (P-256) signing key, `kid` = its thumbprint prefix;
//! - `POST /token` — OAuth2 password grant for the dev users: form fields
//!   `grant_type=password&username=alice&password=gatehouse-dev`; answers
//!   `{"id_token", "access_token", "token_type", "expires_in"}` (12 h);
//! - `GET /dev/token?user=alice` — the same ID token as plain text, for `curl`.
//! - interactive login for `gatehouse login` ([`login`]): `GET /authorize` (authorization
//!   code + PKCE S256, auto-approved for the login user, 302 to a loopback `redirect_uri`),
//!   `POST /token` with `authorization_code`, `refresh_token` (rotating) and
//!   `urn:ietf:params:oauth:grant-type:device_code`, `POST /device_authorization`, and
//!   `GET|POST /device` (a test approves or denies a user code by HTTP call).
//!
//! Tokens carry `iss`, `aud` (the client id), `sub` and `preferred_username` (the user name),
//! `email` (`<name>@example.com` unless the name already is an address), `email_verified`,
//! `groups`, `iat`, `nbf`, `exp`, and a `kid` header. Only for loopback use: the password
//! is the same for every user and is printed in the docs.

use crate::pki::{Ca, PkiError};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;

pub mod login;

/// The password every dev user logs in with at `POST /token`.
pub const DEV_PASSWORD: &str = "gatehouse-dev";
/// The OAuth client id (token audience) the issuer mints for.
pub const CLIENT_ID: &str = "gatehouse";
/// Lifetime of tokens handed out by `/token` and `/dev/token`.
pub const DEV_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

/// Errors starting the issuer or minting tokens.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// Key or certificate generation failed.
    #[error("generating issuer keys")]
    Pki(#[from] PkiError),
    /// rcgen refused to generate the signing key.
    #[error("generating the signing key")]
    Key(#[from] rcgen::Error),
    /// Binding the listener failed.
    #[error("binding the issuer's listener")]
    Bind(#[source] std::io::Error),
    /// Signing failed.
    #[error("signing a token")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// A user the issuer knows (for `/token` and `/dev/token`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevUser {
    /// Name (`sub`, `preferred_username`, and the local part of `email`).
    pub name: String,
    /// Groups (`groups` claim).
    pub groups: Vec<String>,
}

impl DevUser {
    /// A user with groups.
    pub fn new(name: &str, groups: &[&str]) -> Self {
        Self {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }
}

struct Signer {
    issuer: String,
    /// The key that signs and is published now ([`OidcIssuer::rotate_signing_key`] swaps it).
    current: std::sync::RwLock<SigningKey>,
    users: HashMap<String, DevUser>,
    // --- negative tests ---
    /// While set, `/jwks` answers 503 (an IdP outage).
    jwks_down: std::sync::atomic::AtomicBool,
    // --- interactive login (gatehouse login) ---
    login: login::LoginState,
}

impl Signer {
    fn claims(&self, user: &str, groups: &[&str], ttl: Duration) -> Value {
        let now = jsonwebtoken::get_current_timestamp();
        let email = if user.contains('@') {
            user.to_string()
        } else {
            format!("{user}@example.com")
        };
        json!({
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "sub": user,
            "preferred_username": user,
            "email": email,
            "email_verified": true,
            "groups": groups,
            "iat": now,
            "nbf": now,
            "exp": now + ttl.as_secs(),
        })
    }

    fn sign(&self, claims: &Value) -> Result<String, OidcError> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(current.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &current.key)?)
    }

    fn dev_token(&self, user: &str) -> Option<Result<String, OidcError>> {
        let u = self.users.get(user)?;
        let groups: Vec<&str> = u.groups.iter().map(String::as_str).collect();
        Some(self.sign(&self.claims(&u.name, &groups, DEV_TOKEN_TTL)))
    }
}

/// A running issuer; stops when [`OidcIssuer::shutdown`] is called or it is dropped.
pub struct OidcIssuer {
    signer: Arc<Signer>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for OidcIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcIssuer")
            .field("issuer", &self.signer.issuer)
            .finish_non_exhaustive()
    }
}

impl OidcIssuer {
    /// Starts the issuer on a free loopback port with a certificate from `ca`.
    pub async fn start(users: Vec<DevUser>, ca: &Ca) -> Result<Self, OidcError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(OidcError::Bind)?;
        let addr = listener.local_addr().map_err(OidcError::Bind)?;
        let tls = ca
            .issue_server("oidc-issuer", &[])?
            .server_config(&[b"http/1.1"])?;
        // The first configured user approves interactive logins unless a test says otherwise.
        let first_user = users.first().map(|u| u.name.clone());
        let signer = Arc::new(Signer {
            issuer: format!("https://{addr}"),
            current: std::sync::RwLock::new(new_signing_key()?),
            users: users.into_iter().map(|u| (u.name.clone(), u)).collect(),
            jwks_down: std::sync::atomic::AtomicBool::new(false),
            login: login::LoginState::new(first_user, DEV_TOKEN_TTL),
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(serve(
            listener,
            tokio_rustls::TlsAcceptor::from(tls),
            signer.clone(),
            stopped,
        ));
        Ok(Self {
            signer,
            stop,
            task: Some(task),
        })
    }

    /// `https://127.0.0.1:PORT` — the `iss` of every token and the discovery base.
    pub fn issuer_url(&self) -> &str {
        &self.signer.issuer
    }

    /// The audience tokens are minted for.
    pub fn client_id(&self) -> &str {
        CLIENT_ID
    }

    /// An ID token for `user` with `groups`, valid for `ttl`.
    pub fn mint(&self, user: &str, groups: &[&str], ttl: Duration) -> Result<String, OidcError> {
        self.signer.sign(&self.signer.claims(user, groups, ttl))
    }

    /// An ID token with the standard claims for `user`, then `overrides` merged over
    /// them (e.g. `{"aud": "other"}` or `{"exp": 0}`), for negative tests.
    pub fn mint_with(&self, user: &str, overrides: Value) -> Result<String, OidcError> {
        let mut claims = self.signer.claims(user, &[], Duration::from_secs(600));
        if let (Some(c), Some(o)) = (claims.as_object_mut(), overrides.as_object()) {
            for (k, v) in o {
                c.insert(k.clone(), v.clone());
            }
        }
        self.signer.sign(&claims)
    }

    /// A 12-hour ID token for a configured dev user, with that user's groups.
    pub fn mint_dev(&self, user: &str) -> Option<Result<String, OidcError>> {
        self.signer.dev_token(user)
    }

    /// Stops serving and waits for the server task.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for OidcIssuer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

// --- signing keys and rotation ---

/// A signing key with its `kid` and public JWK.
struct SigningKey {
    kid: String,
    key: EncodingKey,
    jwk: Value,
}

/// A fresh P-256 key; `kid` is a thumbprint prefix of the public key.
fn new_signing_key() -> Result<SigningKey, OidcError> {
    let pair = rcgen::KeyPair::generate()?;
    let raw = pair.public_key_raw();
    let (x, y) = (
        URL_SAFE_NO_PAD.encode(raw.get(1..33).unwrap_or_default()),
        URL_SAFE_NO_PAD.encode(raw.get(33..65).unwrap_or_default()),
    );
    let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(raw)[..12]);
    Ok(SigningKey {
        jwk: json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256",
                    "kid": kid, "x": x, "y": y}),
        kid,
        key: EncodingKey::from_ec_der(&pair.serialize_der()),
    })
}

impl Signer {
    fn current_jwk(&self) -> Value {
        self.current
            .read()
            .map_or(Value::Null, |current| current.jwk.clone())
    }

    fn current_kid(&self) -> String {
        self.current
            .read()
            .map(|current| current.kid.clone())
            .unwrap_or_default()
    }
}

impl OidcIssuer {
    /// Rotates like an IdP does: a new key (new `kid`) signs from now on and the JWKS
    /// publishes only it, so the old key is retired. Returns the new `kid`.
    pub fn rotate_signing_key(&self) -> Result<String, OidcError> {
        let key = new_signing_key()?;
        let kid = key.kid.clone();
        if let Ok(mut current) = self.signer.current.write() {
            *current = key;
        }
        Ok(kid)
    }
}

// --- negative tests: outages and forged tokens ---

impl OidcIssuer {
    /// Makes `/jwks` answer 503 (`true`) or serve again (`false`), like an IdP outage.
    pub fn set_jwks_down(&self, down: bool) {
        self.signer.jwks_down.store(down, Ordering::Relaxed);
    }

    /// Valid claims for `user` under an `alg: none` header with the current `kid` and an
    /// empty signature (RFC 7519 "unsecured JWT"), which a verifier must refuse.
    pub fn forge_alg_none(&self, user: &str) -> String {
        let header = json!({"alg": "none", "typ": "JWT", "kid": self.signer.current_kid()});
        let claims = self.signer.claims(user, &[], Duration::from_secs(600));
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    /// Valid claims signed with HS256 keyed by the issuer's public key (the published JWK
    /// as JSON), under the current `kid`: the classic algorithm-confusion forgery.
    pub fn forge_hs256_with_public_key(&self, user: &str) -> Result<String, OidcError> {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.signer.current_kid());
        let secret = self.signer.current_jwk().to_string();
        let claims = self.signer.claims(user, &[], Duration::from_secs(600));
        Ok(jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )?)
    }

    /// Valid claims signed by a key the issuer never published, under a `kid` it never
    /// used: the agent can only refuse it (after at most one JWKS fetch).
    pub fn mint_with_unknown_kid(&self, user: &str) -> Result<String, OidcError> {
        let stranger = new_signing_key()?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(format!("unknown-{}", stranger.kid));
        let claims = self.signer.claims(user, &[], Duration::from_secs(600));
        Ok(jsonwebtoken::encode(&header, &claims, &stranger.key)?)
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    signer: Arc<Signer>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
            _ = stopped.changed() => return,
        };
        let (tls, signer, mut stopped) = (tls.clone(), signer.clone(), stopped.clone());
        tokio::spawn(async move {
            let Ok(stream) = tls.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let signer = signer.clone();
                async move { Ok::<_, std::convert::Infallible>(route(&signer, req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = stopped.changed() => {}
            }
        });
    }
}

type Resp = Response<Full<Bytes>>;

fn respond(code: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = code;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

fn json_resp(code: StatusCode, body: &Value) -> Resp {
    respond(
        code,
        "application/json",
        serde_json::to_vec(body).unwrap_or_default(),
    )
}

fn oauth_error(code: StatusCode, error: &str, description: &str) -> Resp {
    json_resp(
        code,
        &json!({"error": error, "error_description": description}),
    )
}

async fn route(signer: &Signer, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/.well-known/openid-configuration") => json_resp(
            StatusCode::OK,
            &json!({
                "issuer": signer.issuer,
                "jwks_uri": format!("{}/jwks", signer.issuer),
                "token_endpoint": format!("{}/token", signer.issuer),
                "authorization_endpoint": format!("{}/authorize", signer.issuer),
                "device_authorization_endpoint": format!("{}/device_authorization", signer.issuer),
                "code_challenge_methods_supported": ["S256"],
                "scopes_supported": ["openid", "offline_access", "email", "profile", "groups"],
                "token_endpoint_auth_methods_supported": ["none"],
                "response_types_supported": ["code", "id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
                "grant_types_supported": ["password", "authorization_code", "refresh_token",
                                          login::DEVICE_CODE_GRANT],
                "claims_supported": ["sub", "email", "email_verified", "preferred_username", "groups"],
            }),
        ),
        (Method::GET, "/jwks") if signer.jwks_down.load(Ordering::Relaxed) => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "jwks unavailable (test outage)\n",
        ),
        (Method::GET, "/jwks") => {
            json_resp(StatusCode::OK, &json!({"keys": [signer.current_jwk()]}))
        }
        (Method::GET, "/dev/token") => {
            let user = query_param(req.uri().query(), "user").unwrap_or_default();
            match signer.dev_token(&user) {
                Some(Ok(token)) => respond(StatusCode::OK, "text/plain", format!("{token}\n")),
                Some(Err(_)) => respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    "signing failed\n",
                ),
                None => respond(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    format!("unknown dev user {user:?}\n"),
                ),
            }
        }
        (Method::POST, "/token") => token_endpoint(signer, req).await,
        (Method::GET, "/authorize") => authorize_endpoint(signer, req.uri().query()),
        (Method::POST, "/device_authorization") => device_authorization(signer, req).await,
        (Method::GET, "/device") => respond(
            StatusCode::OK,
            "text/plain",
            "Gatehouse test issuer: POST user_code=XXXX-XXXX&action=approve|deny here.\n",
        ),
        (Method::POST, "/device") => device_decision(signer, req).await,
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

async fn token_endpoint(signer: &Signer, req: Request<Incoming>) -> Resp {
    let Ok(body) = Limited::new(req.into_body(), 64 * 1024).collect().await else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "unreadable body",
        );
    };
    let form: HashMap<String, String> = form_urlencoded::parse(&body.to_bytes())
        .into_owned()
        .collect();
    match form.get("grant_type").map(String::as_str) {
        Some("password") => {}
        Some("authorization_code" | "refresh_token" | login::DEVICE_CODE_GRANT) => {
            return login_grant(signer, &form);
        }
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "supported grant types: password, authorization_code, refresh_token, device_code",
            );
        }
    }
    let user = form.get("username").cloned().unwrap_or_default();
    if form.get("password").map(String::as_str) != Some(DEV_PASSWORD) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_grant",
            "wrong username or password",
        );
    }
    match signer.dev_token(&user) {
        Some(Ok(token)) => json_resp(
            StatusCode::OK,
            &json!({"id_token": token, "access_token": token, "token_type": "Bearer",
                    "expires_in": DEV_TOKEN_TTL.as_secs()}),
        ),
        Some(Err(_)) => oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "signing failed",
        ),
        None => oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_grant",
            "wrong username or password",
        ),
    }
}

// --- interactive login endpoints (gatehouse login) ---

async fn read_form(req: Request<Incoming>) -> Option<HashMap<String, String>> {
    let body = Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
        .ok()?;
    Some(
        form_urlencoded::parse(&body.to_bytes())
            .into_owned()
            .collect(),
    )
}

fn authorize_endpoint(signer: &Signer, query: Option<&str>) -> Resp {
    let q = |name| query_param(query, name).unwrap_or_default();
    let req = login::AuthorizeRequest {
        response_type: q("response_type"),
        client_id: q("client_id"),
        redirect_uri: q("redirect_uri"),
        code_challenge: q("code_challenge"),
        code_challenge_method: q("code_challenge_method"),
    };
    let state = query_param(query, "state");
    let mut params: Vec<(&str, String)> = match signer.login.authorize(&req, CLIENT_ID) {
        // Never redirect to an unvalidated URI: show the error instead.
        login::AuthorizeOutcome::Refuse(why) => {
            return respond(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("invalid authorization request: {why}\n"),
            );
        }
        login::AuthorizeOutcome::RedirectError(error, description) => {
            vec![
                ("error", error.to_string()),
                ("error_description", description),
            ]
        }
        login::AuthorizeOutcome::Code(code) => vec![("code", code)],
    };
    if let Some(state) = state {
        params.push(("state", state));
    }
    let Ok(mut location) = url::Url::parse(&req.redirect_uri) else {
        return respond(StatusCode::BAD_REQUEST, "text/plain", "bad redirect_uri\n");
    };
    location.query_pairs_mut().extend_pairs(params);
    let mut resp = respond(StatusCode::FOUND, "text/plain", "redirecting\n");
    if let Ok(v) = header::HeaderValue::from_str(location.as_str()) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

async fn device_authorization(signer: &Signer, req: Request<Incoming>) -> Resp {
    let Some(form) = read_form(req).await else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "unreadable body",
        );
    };
    if form.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "unknown client_id",
        );
    }
    let d = signer.login.start_device(CLIENT_ID);
    let uri = format!("{}/device", signer.issuer);
    json_resp(
        StatusCode::OK,
        &json!({
            "device_code": d.device_code,
            "user_code": d.user_code,
            "verification_uri": uri,
            "verification_uri_complete": format!("{uri}?user_code={}", d.user_code),
            "expires_in": d.expires_in.as_secs(),
            "interval": d.interval.as_secs(),
        }),
    )
}

async fn device_decision(signer: &Signer, req: Request<Incoming>) -> Resp {
    let Some(form) = read_form(req).await else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "unreadable body",
        );
    };
    let approve = match form.get("action").map(String::as_str) {
        Some("approve") | None => true,
        Some("deny") => false,
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "action must be approve or deny",
            );
        }
    };
    let user_code = form.get("user_code").cloned().unwrap_or_default();
    match signer
        .login
        .decide_device(&user_code, approve, form.get("user").cloned())
    {
        Ok(()) => respond(
            StatusCode::OK,
            "text/plain",
            if approve { "approved\n" } else { "denied\n" },
        ),
        Err(e) => oauth_error(StatusCode::BAD_REQUEST, e.error, &e.description),
    }
}

fn login_grant(signer: &Signer, form: &HashMap<String, String>) -> Resp {
    let f = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    if f("client_id") != CLIENT_ID {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "unknown client_id",
        );
    }
    let granted = match f("grant_type") {
        "authorization_code" => {
            signer
                .login
                .redeem_code(f("code"), CLIENT_ID, f("redirect_uri"), f("code_verifier"))
        }
        "refresh_token" => signer.login.refresh(f("refresh_token"), CLIENT_ID),
        _ => signer.login.poll_device(f("device_code"), CLIENT_ID),
    };
    let granted = match granted {
        Ok(g) => g,
        Err(e) => return oauth_error(StatusCode::BAD_REQUEST, e.error, &e.description),
    };
    let ttl = signer.login.login_ttl();
    let groups: Vec<&str> = signer
        .users
        .get(&granted.user)
        .map(|u| u.groups.iter().map(String::as_str).collect())
        .unwrap_or_default();
    match signer.sign(&signer.claims(&granted.user, &groups, ttl)) {
        Ok(token) => json_resp(
            StatusCode::OK,
            &json!({"id_token": token, "access_token": token, "token_type": "Bearer",
                    "expires_in": ttl.as_secs(), "refresh_token": granted.refresh_token,
                    "scope": "openid offline_access"}),
        ),
        Err(_) => oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "signing failed",
        ),
    }
}

impl OidcIssuer {
    /// Who `/authorize` and `/device` approve logins for (default: the first user).
    pub fn set_login_user(&self, user: Option<&str>) {
        self.signer.login.set_login_user(user.map(str::to_string));
    }

    /// Lifetime of ID tokens from the code, refresh and device grants (default 12 h);
    /// one under `gatehouse token`'s 30 s skew makes every call refresh.
    pub fn set_login_token_ttl(&self, ttl: Duration) {
        self.signer.login.set_login_ttl(ttl);
    }

    /// Polling interval and lifetime of device codes issued from now on (default 5 s, 10 min).
    pub fn set_device_timing(&self, interval: Duration, ttl: Duration) {
        self.signer.login.set_device_timing(interval, ttl);
    }

    /// The next `n` device-code polls answer `slow_down`.
    pub fn slow_down_next_polls(&self, n: u32) {
        self.signer.login.slow_down_next_polls(n);
    }

    /// How many `refresh_token` grants succeeded so far.
    pub fn refreshes_served(&self) -> u64 {
        self.signer.login.refreshes_served()
    }

    /// Revokes every refresh token handed out so far.
    pub fn revoke_all_refresh_tokens(&self) {
        self.signer.login.revoke_all_refresh_tokens();
    }
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::client::legacy::Client;

    async fn get(
        ca: &Ca,
        method: Method,
        url: &str,
        body: &str,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let tls = crate::pki::client_config_trusting(&ca.cert_pem())?;
        let connector = hyper_rustls_connector((*tls).clone());
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
        let req = Request::builder()
            .method(method)
            .uri(url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body.to_string())))?;
        let resp = client.request(req).await?;
        let status = resp.status();
        Ok((status, resp.into_body().collect().await?.to_bytes()))
    }

    fn hyper_rustls_connector(
        tls: rustls::ClientConfig,
    ) -> hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector> {
        hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build()
    }

    #[tokio::test]
    async fn discovery_jwks_and_tokens_fit_together() -> anyhow::Result<()> {
        let ca = Ca::new("oidc-test")?;
        let issuer = OidcIssuer::start(vec![DevUser::new("alice", &["engineers"])], &ca).await?;
        let base = issuer.issuer_url().to_string();
        let (code, body) = get(
            &ca,
            Method::GET,
            &format!("{base}/.well-known/openid-configuration"),
            "",
        )
        .await?;
        assert_eq!(code, StatusCode::OK);
        let discovery: Value = serde_json::from_slice(&body)?;
        assert_eq!(discovery["issuer"], base);
        assert_eq!(
            discovery["code_challenge_methods_supported"],
            json!(["S256"])
        );
        assert_eq!(
            discovery["authorization_endpoint"],
            format!("{base}/authorize")
        );
        assert_eq!(
            discovery["device_authorization_endpoint"],
            format!("{base}/device_authorization")
        );
        for grant in [
            "authorization_code",
            "refresh_token",
            login::DEVICE_CODE_GRANT,
        ] {
            assert!(
                discovery["grant_types_supported"]
                    .as_array()
                    .is_some_and(|g| g.iter().any(|v| v == grant)),
                "{grant} not advertised"
            );
        }
        let jwks_uri = discovery["jwks_uri"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let (_, body) = get(&ca, Method::GET, &jwks_uri, "").await?;
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&body)?;

        let token = issuer.mint("bob", &["sre-leads"], Duration::from_secs(60))?;
        let kid = jsonwebtoken::decode_header(&token)?.kid.unwrap_or_default();
        let jwk = jwks
            .find(&kid)
            .ok_or_else(|| anyhow::anyhow!("kid {kid} not in JWKS"))?;
        let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
        validation.set_issuer(&[base.as_str()]);
        validation.set_audience(&[CLIENT_ID]);
        let data = jsonwebtoken::decode::<Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_jwk(jwk)?,
            &validation,
        )?;
        assert_eq!(data.claims["sub"], "bob");
        assert_eq!(data.claims["email"], "bob@example.com");
        assert_eq!(data.claims["groups"], json!(["sre-leads"]));

        let (code, body) = get(
            &ca,
            Method::GET,
            &format!("{base}/dev/token?user=alice"),
            "",
        )
        .await?;
        assert_eq!(code, StatusCode::OK);
        let claims = jsonwebtoken::dangerous::insecure_decode_claims::<Value>(
            String::from_utf8(body.to_vec())?.trim(),
        )?;
        assert_eq!(claims["groups"], json!(["engineers"]));

        let form = format!("grant_type=password&username=alice&password={DEV_PASSWORD}");
        let (code, body) = get(&ca, Method::POST, &format!("{base}/token"), &form).await?;
        assert_eq!(code, StatusCode::OK);
        let resp: Value = serde_json::from_slice(&body)?;
        assert_eq!(resp["token_type"], "Bearer");
        assert!(
            resp["id_token"]
                .as_str()
                .is_some_and(|t| t.split('.').count() == 3)
        );

        let (code, _) = get(
            &ca,
            Method::POST,
            &format!("{base}/token"),
            "grant_type=password&username=alice&password=nope",
        )
        .await?;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        let (code, _) = get(
            &ca,
            Method::GET,
            &format!("{base}/dev/token?user=mallory"),
            "",
        )
        .await?;
        assert_eq!(code, StatusCode::NOT_FOUND);
        issuer.shutdown().await;
        Ok(())
    }
}
