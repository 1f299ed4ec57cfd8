//! A loopback HTTP front for moto: every STS call passes through it and is counted per
//! action at the STS side (so a test sees how often the agent really called STS). It
//! learns the secret of every credential moto hands out, verifies presigned
//! `GetCallerIdentity` URLs against it (signature, 15-minute age limit, as real STS),
//! and passes verified ones on to moto as header-signed requests, which moto answers
//! with the caller's ARN. `set_available(false)` plays an outage: connections are closed
//! unanswered.

use super::sigv4::Presigned;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How old a presigned `GetCallerIdentity` may be (STS's limit for EKS tokens).
pub const PRESIGN_MAX_AGE: Duration = Duration::from_secs(15 * 60);

#[derive(Default)]
struct State {
    calls: Mutex<Vec<String>>,
    secrets: Mutex<HashMap<String, String>>,
    refusals: Mutex<Vec<String>>,
}

/// The running front.
pub struct StsFront {
    addr: SocketAddr,
    state: Arc<State>,
    available: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for StsFront {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StsFront")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

type MotoClient = Client<HttpConnector, Full<Bytes>>;

impl StsFront {
    /// Listens on a free loopback port, forwarding to moto at `moto`.
    pub async fn start(moto: SocketAddr) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let available = Arc::new(AtomicBool::new(true));
        let client: MotoClient = Client::builder(TokioExecutor::new()).build_http();
        let (st, up) = (state.clone(), available.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if !up.load(Ordering::SeqCst) {
                    drop(stream);
                    continue;
                }
                let (st, client) = (st.clone(), client.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let (st, client) = (st.clone(), client.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(handle(&st, &client, moto, req).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            state,
            available,
            task,
        })
    }

    /// `http://127.0.0.1:PORT` (the STS endpoint to configure everywhere).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Up (default) or down (connections closed unanswered).
    pub fn set_available(&self, up: bool) {
        self.available.store(up, Ordering::SeqCst);
    }

    /// How many calls of `action` reached STS.
    pub fn calls(&self, action: &str) -> usize {
        self.state
            .calls
            .lock()
            .map(|c| c.iter().filter(|a| *a == action).count())
            .unwrap_or(0)
    }

    /// Every call's action, in order.
    pub fn all_calls(&self) -> Vec<String> {
        self.state
            .calls
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// Why presigned calls were refused, in order.
    pub fn refusals(&self) -> Vec<String> {
        self.state
            .refusals
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}

impl Drop for StsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn xml_error(code: StatusCode, kind: &str, message: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>\
         <Code>{kind}</Code><Message>{message}</Message></Error><RequestId>front</RequestId></ErrorResponse>"
    );
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = code;
    resp
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(close)? + start;
    Some(&text[start..end])
}

async fn handle(
    state: &State,
    client: &MotoClient,
    moto: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return xml_error(StatusCode::BAD_REQUEST, "InvalidRequest", &e.to_string()),
    };
    let query: Vec<(String, String)> =
        form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let action = query
        .iter()
        .chain(form.iter())
        .find(|(k, _)| k == "Action")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    if let Ok(mut calls) = state.calls.lock() {
        calls.push(action.clone());
    }
    let mut forward = Request::builder().method(parts.method.clone()).uri(format!(
        "http://{moto}{}",
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    ));
    let presigned =
        parts.method == http::Method::GET && query.iter().any(|(k, _)| k == "X-Amz-Signature");
    if presigned {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let verified = verify(state, &parts.method, parts.uri.path(), header, query);
        match verified {
            Ok(access_key_id) => {
                // moto answers GetCallerIdentity by the Authorization header's key only.
                forward = forward
                    .uri(format!("http://{moto}/?Action=GetCallerIdentity&Version=2011-06-15"))
                    .header(
                        http::header::AUTHORIZATION,
                        format!(
                            "AWS4-HMAC-SHA256 Credential={access_key_id}/20000101/us-east-1/sts/aws4_request, \
                             SignedHeaders=host, Signature=verified-by-front"
                        ),
                    );
                if let Some(accept) = parts.headers.get(http::header::ACCEPT) {
                    forward = forward.header(http::header::ACCEPT, accept);
                }
            }
            Err((code, kind, message)) => {
                if let Ok(mut refusals) = state.refusals.lock() {
                    refusals.push(format!("{kind}: {message}"));
                }
                return xml_error(code, kind, &message);
            }
        }
    } else {
        for (name, value) in &parts.headers {
            if name != http::header::HOST {
                forward = forward.header(name, value);
            }
        }
    }
    let request = match forward.body(Full::new(body)) {
        Ok(r) => r,
        Err(e) => return xml_error(StatusCode::BAD_REQUEST, "InvalidRequest", &e.to_string()),
    };
    let resp = match client.request(request).await {
        Ok(r) => r,
        Err(e) => {
            return xml_error(
                StatusCode::BAD_GATEWAY,
                "ServiceUnavailable",
                &e.to_string(),
            );
        }
    };
    let (rparts, rbody) = resp.into_parts();
    let rbody = rbody
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if matches!(action.as_str(), "AssumeRole" | "AssumeRoleWithWebIdentity") {
        let text = String::from_utf8_lossy(&rbody);
        if let (Some(id), Some(secret)) = (
            between(&text, "<AccessKeyId>", "</AccessKeyId>"),
            between(&text, "<SecretAccessKey>", "</SecretAccessKey>"),
        ) && let Ok(mut secrets) = state.secrets.lock()
        {
            secrets.insert(id.to_string(), secret.to_string());
        }
    }
    Response::from_parts(rparts, Full::new(rbody))
}

type Refusal = (StatusCode, &'static str, String);

fn verify(
    state: &State,
    method: &http::Method,
    path: &str,
    header: impl Fn(&str) -> Option<String>,
    query: Vec<(String, String)>,
) -> Result<String, Refusal> {
    let denied = |m: String| (StatusCode::FORBIDDEN, "SignatureDoesNotMatch", m);
    let presigned = Presigned::parse(query)
        .map_err(|m| (StatusCode::BAD_REQUEST, "InvalidParameterValue", m))?;
    let secret = state
        .secrets
        .lock()
        .ok()
        .and_then(|s| s.get(&presigned.access_key_id).cloned())
        .ok_or_else(|| {
            (
                StatusCode::FORBIDDEN,
                "InvalidClientTokenId",
                format!("the access key {} is not known", presigned.access_key_id),
            )
        })?;
    let signed_at = chrono::NaiveDateTime::parse_from_str(&presigned.amz_date, "%Y%m%dT%H%M%SZ")
        .map_err(|e| denied(format!("X-Amz-Date: {e}")))?
        .and_utc();
    let age = chrono::Utc::now().signed_duration_since(signed_at);
    if age > chrono::Duration::from_std(PRESIGN_MAX_AGE).unwrap_or_default() {
        return Err((
            StatusCode::FORBIDDEN,
            "ExpiredToken",
            format!("request signed {age} ago has expired"),
        ));
    }
    let expected = presigned
        .expected_signature(method.as_str(), path, header, &secret)
        .map_err(denied)?;
    if expected != presigned.signature {
        return Err(denied(
            "the request signature we calculated does not match the signature you provided".into(),
        ));
    }
    Ok(presigned.access_key_id)
}
