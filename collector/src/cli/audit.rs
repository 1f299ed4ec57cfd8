//! `gatehouse audit search` / `gatehouse sessions list|show`: a client of the collector's
//! query API (bearer ID token, TLS), and the terminal tables it prints.

use crate::store::query::SessionDetail;
use bytes::Bytes;
use gatehouse_common::audit::{ApiRequestEvent, SessionEndEvent};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// `--ca-file` is unusable.
    #[error("--ca-file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The URL is not https or does not parse.
    #[error("--collector-url {0:?}: must be an https:// URL")]
    Url(String),
    /// Connecting or reading failed.
    #[error("querying {url}: {reason}")]
    Transport {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The API answered with an error (its message says why).
    #[error("the collector answered {code}: {message}")]
    Status {
        /// HTTP status.
        code: u16,
        /// The `message` of its Status body.
        message: String,
    },
    /// The answer is not the JSON the API sends.
    #[error("unexpected answer from the collector: {0}")]
    Json(#[from] serde_json::Error),
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

/// One page as the API sends it.
#[derive(Debug, Deserialize)]
pub struct PageJson<T> {
    /// The items.
    pub items: Vec<T>,
    /// The next cursor, when there is more.
    pub next: Option<String>,
}

/// A client of one collector's query API.
pub struct QueryClient {
    base: String,
    token: String,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl std::fmt::Debug for QueryClient {
    // The token stays out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Time one request may take before its answer starts.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

impl QueryClient {
    /// A client for `base` (`https://collector:9443`) trusting `ca_file` (else the Mozilla
    /// roots), sending `token` as the bearer.
    pub fn new(base: &str, ca_file: Option<&Path>, token: String) -> Result<Self, QueryError> {
        let base = base.trim_end_matches('/').to_string();
        if !base.starts_with("https://") || base.parse::<http::Uri>().is_err() {
            return Err(QueryError::Url(base));
        }
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let err = |reason: String| QueryError::CaFile {
                    path: path.to_path_buf(),
                    reason,
                };
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .map_err(|e| err(e.to_string()))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| err(e.to_string()))?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(err("no usable PEM certificate in it".into()));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| QueryError::Transport {
            url: base.clone(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        Ok(Self {
            base,
            token,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    async fn send(
        &self,
        path_and_query: &str,
        ndjson: bool,
    ) -> Result<http::Response<hyper::body::Incoming>, QueryError> {
        let url = format!("{}{path_and_query}", self.base);
        let transport = |reason: String| QueryError::Transport {
            url: url.clone(),
            reason,
        };
        let req = http::Request::get(url.as_str())
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .header(
                http::header::ACCEPT,
                if ndjson {
                    "application/x-ndjson"
                } else {
                    "application/json"
                },
            )
            .body(Empty::new())
            .map_err(|e| transport(e.to_string()))?;
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| transport("timed out".into()))?
            .map_err(|e| transport(error_chain(&e)))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let code = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
        Err(QueryError::Status { code, message })
    }

    /// `GET path_and_query` as JSON.
    pub async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path_and_query: &str,
    ) -> Result<T, QueryError> {
        let resp = self.send(path_and_query, false).await?;
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| QueryError::Transport {
                url: path_and_query.to_string(),
                reason: e.to_string(),
            })?
            .to_bytes();
        Ok(serde_json::from_slice(&body)?)
    }

    /// `GET path_and_query`, the body as text (a recording).
    pub async fn get_text(&self, path_and_query: &str) -> Result<String, QueryError> {
        let resp = self.send(path_and_query, false).await?;
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| QueryError::Transport {
                url: path_and_query.to_string(),
                reason: e.to_string(),
            })?
            .to_bytes();
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// `GET path_and_query` as NDJSON, copied to `out` as it arrives; returns the line count.
    pub async fn stream_to(
        &self,
        path_and_query: &str,
        out: &mut impl Write,
    ) -> Result<u64, QueryError> {
        let mut body = self.send(path_and_query, true).await?.into_body();
        let mut lines = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| QueryError::Transport {
                url: path_and_query.to_string(),
                reason: format!("export interrupted: {}", error_chain(&e)),
            })?;
            if let Ok(data) = frame.into_data() {
                lines += data.iter().filter(|b| **b == b'\n').count() as u64;
                out.write_all(&data)?;
            }
        }
        out.flush()?;
        Ok(lines)
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

/// `path?k=v&...` with the set parameters, URL-encoded.
pub fn with_query(path: &str, params: &[(&str, Option<String>)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        if let Some(v) = v {
            ser.append_pair(k, v);
        }
    }
    let q = ser.finish();
    if q.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{q}")
    }
}

/// Cuts `s` to `max` characters, marking the cut with `…`.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Left-aligned columns separated by two spaces.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            s.push_str(c);
            if i < last {
                s.push_str(&" ".repeat(w - c.chars().count() + 2));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The requests table: time, user, verb, resource, ns/name, decision, status.
pub fn requests_table(items: &[ApiRequestEvent]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|e| {
            let resource = if e.subresource.is_empty() {
                e.resource.clone()
            } else {
                format!("{}/{}", e.resource, e.subresource)
            };
            let resource = if resource.is_empty() {
                cut(&e.path, 30)
            } else {
                resource
            };
            let target = match (e.namespace.is_empty(), e.name.is_empty()) {
                (true, true) => "-".to_string(),
                (true, false) => e.name.clone(),
                (false, true) => format!("{}/", e.namespace),
                (false, false) => format!("{}/{}", e.namespace, e.name),
            };
            vec![
                when(e.time),
                cut(&e.user, 28),
                e.verb.clone(),
                cut(&resource, 24),
                cut(&target, 36),
                e.decision.as_str().to_string(),
                e.status_code.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "TIME", "USER", "VERB", "RESOURCE", "NS/NAME", "DECISION", "STATUS",
        ],
        &rows,
    )
}

fn kind_name(e: &SessionEndEvent) -> String {
    match serde_json::to_value(e.kind) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

fn command(e: &SessionEndEvent) -> String {
    e.exec
        .as_ref()
        .map(|x| x.command.join(" "))
        .unwrap_or_default()
}

/// The sessions table: started, user, kind, ns/pod, duration, command, id.
pub fn sessions_table(items: &[SessionEndEvent]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|s| {
            let secs = (s.ended - s.started).num_seconds().max(0);
            vec![
                when(s.started),
                cut(&s.user, 28),
                kind_name(s),
                cut(&format!("{}/{}", s.namespace, s.pod), 36),
                format!("{secs}s"),
                s.session_id.clone(),
                cut(&command(s), 40),
            ]
        })
        .collect();
    table(
        &[
            "STARTED", "USER", "KIND", "NS/POD", "DURATION", "SESSION", "COMMAND",
        ],
        &rows,
    )
}

/// One session and its API calls, for `gatehouse sessions show`.
pub fn session_text(d: &SessionDetail) -> String {
    let s = &d.session;
    let mut out = format!(
        "Session:   {}\nUser:      {}\nKind:      {}\nPod:       {}/{}\nNode:      {}\n\
         Started:   {}\nEnded:     {} ({})\nCommand:   {}\nBytes:     {} from client, {} to client\n",
        s.session_id,
        s.user,
        kind_name(s),
        s.namespace,
        s.pod,
        s.node,
        when(s.started),
        when(s.ended),
        s.end_reason,
        command(s),
        s.bytes_from_client,
        s.bytes_to_client,
    );
    // --- recording fields (issue 6) ---
    let exit = s
        .exit_code
        .map_or_else(|| "-".to_string(), |c| c.to_string());
    out.push_str(&format!(
        "Duration:  {:.1}s\nExit code: {exit}\nTerminal:  {}\nStreams:   {} stdin bytes, {} output bytes\n\
         Recording: {} chunks{}\n",
        s.duration_ms / 1000.0,
        if s.terminal.is_empty() { "-" } else { &s.terminal },
        s.stdin_bytes,
        s.output_bytes,
        s.recording_chunks,
        if s.recording_chunks > 0 {
            format!(" (gatehouse sessions replay {})", s.session_id)
        } else {
            String::new()
        },
    ));
    for p in &s.ports {
        out.push_str(&format!(
            "Port:      {} ({} connections, {} bytes in, {} bytes out)\n",
            p.port, p.connections, p.bytes_from_client, p.bytes_to_client
        ));
    }
    out.push('\n');
    out.push_str(&requests_table(&d.requests));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_encoded_and_skip_unset() {
        let q = with_query(
            "/v1/audit/requests",
            &[
                ("user", Some("o'brien&x=1".into())),
                ("verb", None),
                ("since", Some("24h".into())),
            ],
        );
        assert_eq!(q, "/v1/audit/requests?user=o%27brien%26x%3D1&since=24h");
        assert_eq!(with_query("/v1/sessions", &[("pod", None)]), "/v1/sessions");
    }

    #[test]
    fn table_aligns_and_cuts() {
        let e = ApiRequestEvent {
            user: "a-very-long-user-name-that-goes-on@example.com".into(),
            verb: "delete".into(),
            resource: "secrets".into(),
            namespace: "prod".into(),
            name: "db".into(),
            status_code: 403,
            ..ApiRequestEvent::default()
        };
        let t = requests_table(&[e]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("TIME"));
        assert!(lines[1].contains("prod/db") && lines[1].contains("403"));
        assert!(lines[1].contains('…'));
        assert!(lines.iter().all(|l| l.chars().count() < 160));
    }

    #[test]
    fn non_https_urls_are_refused() {
        assert!(matches!(
            QueryClient::new("http://x", None, String::new()),
            Err(QueryError::Url(_))
        ));
    }
}
