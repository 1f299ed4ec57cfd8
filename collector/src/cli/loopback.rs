//! The loopback redirect listener of `gatehouse login` (RFC 8252 section 7.3): 127.0.0.1 on
//! a random port, takes the first `/callback` request, checks `state`, then closes.

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// Path of the redirect URI.
pub const CALLBACK_PATH: &str = "/callback";

/// Why the redirect did not yield a code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoopbackError {
    /// Binding 127.0.0.1 failed.
    #[error("cannot listen on 127.0.0.1 for the login redirect: {0}")]
    Bind(String),
    /// The redirect's `state` is not the one this login sent (a forged or stale redirect).
    #[error(
        "login refused: the redirect's state does not match this login (forged or stale redirect)"
    )]
    StateMismatch,
    /// The issuer redirected with an OAuth error.
    #[error("the issuer refused the login: {0}")]
    Denied(String),
    /// The redirect carried no code.
    #[error("the login redirect carried no authorization code")]
    NoCode,
    /// No redirect arrived in time.
    #[error("no login redirect arrived within {0:?}; run `gatehouse login` again")]
    Timeout(Duration),
}

/// A bound loopback listener.
#[derive(Debug)]
pub struct Loopback {
    listener: TcpListener,
    port: u16,
}

impl Loopback {
    /// Binds 127.0.0.1 on a port the OS picks.
    pub async fn bind() -> Result<Self, LoopbackError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| LoopbackError::Bind(e.to_string()))?;
        let port = listener
            .local_addr()
            .map_err(|e| LoopbackError::Bind(e.to_string()))?
            .port();
        Ok(Self { listener, port })
    }

    /// `http://127.0.0.1:PORT/callback`.
    pub fn redirect_uri(&self) -> String {
        format!("http://127.0.0.1:{}{CALLBACK_PATH}", self.port)
    }

    /// Waits for the first callback request and returns its `code` once `state` matched.
    /// Other paths (a browser's `/favicon.ico`) get 404 and do not count.
    pub async fn wait(self, state: &str, timeout: Duration) -> Result<String, LoopbackError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<String, LoopbackError>>(1);
        let state: Arc<str> = Arc::from(state);
        let serve = async {
            loop {
                tokio::select! {
                    accepted = self.listener.accept() => {
                        let Ok((tcp, _)) = accepted else { continue };
                        // Each connection in its own task: a browser's idle preconnect
                        // must not block the real redirect.
                        tokio::spawn(serve_one(tcp, state.clone(), tx.clone()));
                    }
                    result = rx.recv() => {
                        return result.unwrap_or(Err(LoopbackError::NoCode));
                    }
                }
            }
        };
        tokio::time::timeout(timeout, serve)
            .await
            .map_err(|_| LoopbackError::Timeout(timeout))?
    }
}

async fn serve_one(
    tcp: tokio::net::TcpStream,
    state: Arc<str>,
    tx: tokio::sync::mpsc::Sender<Result<String, LoopbackError>>,
) {
    let outcome: Arc<Mutex<Option<Result<String, LoopbackError>>>> = Arc::default();
    let seen = outcome.clone();
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let (state, seen) = (state.clone(), seen.clone());
        async move {
            if req.uri().path() != CALLBACK_PATH {
                return Ok::<_, std::convert::Infallible>(page(404, "Not found."));
            }
            let result = judge(req.uri().query(), &state);
            let resp = match &result {
                Ok(_) => page(
                    200,
                    "Gatehouse login complete. You can close this window and return to the terminal.",
                ),
                Err(e) => page(400, &format!("Gatehouse login failed: {e}")),
            };
            if let Ok(mut slot) = seen.lock() {
                *slot = Some(result);
            }
            Ok(resp)
        }
    });
    // keep_alive off: the connection closes once the answer is written, so the page reaches
    // the browser before the CLI moves on.
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .serve_connection(TokioIo::new(tcp), service)
        .await;
    let result = outcome.lock().ok().and_then(|mut s| s.take());
    if let Some(result) = result {
        let _ = tx.send(result).await;
    }
}

/// What a callback query means for this login.
fn judge(query: Option<&str>, state: &str) -> Result<String, LoopbackError> {
    let params: Vec<(String, String)> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    // State first: an error redirect with a foreign state is as untrusted as a code.
    if get("state") != Some(state) {
        return Err(LoopbackError::StateMismatch);
    }
    if let Some(error) = get("error") {
        let desc = get("error_description").unwrap_or_default();
        return Err(LoopbackError::Denied(if desc.is_empty() {
            error.to_string()
        } else {
            format!("{error} ({desc})")
        }));
    }
    match get("code") {
        Some(code) if !code.is_empty() => Ok(code.to_string()),
        _ => Err(LoopbackError::NoCode),
    }
}

fn page(status: u16, text: &str) -> http::Response<Full<Bytes>> {
    let mut resp = http::Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn judge_checks_state_then_error_then_code() {
        assert_eq!(judge(Some("code=c1&state=s"), "s"), Ok("c1".into()));
        assert_eq!(
            judge(Some("code=c1&state=other"), "s"),
            Err(LoopbackError::StateMismatch)
        );
        assert_eq!(
            judge(Some("code=c1"), "s"),
            Err(LoopbackError::StateMismatch)
        );
        assert_eq!(
            judge(
                Some("error=access_denied&error_description=no&state=s"),
                "s"
            ),
            Err(LoopbackError::Denied("access_denied (no)".into()))
        );
        assert_eq!(judge(Some("state=s"), "s"), Err(LoopbackError::NoCode));
        assert_eq!(judge(None, "s"), Err(LoopbackError::StateMismatch));
    }

    async fn get(port: u16, path: &str) -> anyhow::Result<String> {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await?;
        let mut out = String::new();
        tcp.read_to_string(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn first_callback_wins_after_other_paths() -> anyhow::Result<()> {
        let lb = Loopback::bind().await?;
        let uri = lb.redirect_uri();
        let port: u16 = uri
            .trim_start_matches("http://127.0.0.1:")
            .trim_end_matches(CALLBACK_PATH)
            .parse()?;
        let waiter = tokio::spawn(lb.wait("st", Duration::from_secs(20)));
        assert!(get(port, "/favicon.ico").await?.starts_with("HTTP/1.1 404"));
        let page = get(port, "/callback?code=abc&state=st").await?;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert_eq!(waiter.await?, Ok("abc".into()));
        // Closed after the one redirect.
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
        );
        Ok(())
    }

    #[tokio::test]
    async fn no_redirect_times_out() -> anyhow::Result<()> {
        let lb = Loopback::bind().await?;
        let r = lb.wait("st", Duration::from_millis(50)).await;
        assert!(matches!(r, Err(LoopbackError::Timeout(_))));
        Ok(())
    }
}
