//! One connection to the collector: TCP, TLS (ALPN h2, optional client certificate) and
//! the HTTP/2 handshake, then the `POST /v1/ingest` stream whose acks come back on a
//! channel.

use super::{ShipConfig, ShipError};
use crate::forward::credential::TokenFile;
use bytes::Bytes;
use gatehouse_common::ingest::{Ack, FRAMES_CONTENT_TYPE, FrameDecoder, INGEST_PATH};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

type StreamBodyOf =
    StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

/// Where and how to connect, prepared once from [`ShipConfig`].
pub struct Connector {
    host: String,
    port: u16,
    authority: String,
    tls: Option<tokio_rustls::TlsConnector>,
    token: Option<TokenFile>,
    connect_timeout: Duration,
}

/// An open ingest stream: frames go into `frames`, acks come out of `acks`.
pub struct Stream {
    /// Request body: send one frame per batch.
    pub frames: mpsc::Sender<Bytes>,
    /// Acks in arrival order; an `Err` (or the end) means the stream is over.
    pub acks: mpsc::Receiver<Result<Ack, ShipError>>,
    /// Tasks of this stream (the h2 connection and the response reader), stopped on drop.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Connector {
    /// Checks the URL and loads the TLS material.
    pub fn new(config: &ShipConfig) -> Result<Self, ShipError> {
        let url = url::Url::parse(&config.collector_url).map_err(|e| {
            ShipError::Config(format!("--collector-url {:?}: {e}", config.collector_url))
        })?;
        let host = url
            .host_str()
            .ok_or_else(|| ShipError::Config("--collector-url has no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let tls = match url.scheme() {
            "https" => Some(tokio_rustls::TlsConnector::from(Arc::new(client_tls(
                config,
            )?))),
            // Cleartext h2 only to this host (a sidecar or a test): audit events are sensitive.
            "http" if loopback => None,
            "http" => {
                return Err(ShipError::Config(
                    "--collector-url must be https:// (http:// is allowed only for loopback)"
                        .into(),
                ));
            }
            other => {
                return Err(ShipError::Config(format!(
                    "--collector-url scheme {other:?} is not https"
                )));
            }
        };
        let port = url.port_or_known_default().unwrap_or(443);
        Ok(Self {
            authority: format!("{}:{port}", url.host_str().unwrap_or_default()),
            host,
            port,
            tls,
            token: config.token_file.clone().map(TokenFile::new),
            connect_timeout: config.connect_timeout,
        })
    }

    /// Connects and opens the ingest stream (`window` frames may wait in the body).
    pub async fn open(&self, window: usize) -> Result<Stream, ShipError> {
        // Read per connection, so a rotated projected token is picked up.
        let token = match &self.token {
            Some(t) => Some(
                t.token()
                    .map_err(|e| ShipError::Credential(e.to_string()))?,
            ),
            None => None,
        };
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| ShipError::Connect("connect timed out".into()))?
        .map_err(|e| ShipError::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let mut tasks = Vec::new();
        let sender = match &self.tls {
            Some(tls) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|e| ShipError::Config(format!("collector host: {e}")))?;
                let stream = tokio::time::timeout(self.connect_timeout, tls.connect(name, tcp))
                    .await
                    .map_err(|_| ShipError::Connect("TLS handshake timed out".into()))?
                    .map_err(|e| ShipError::Connect(format!("TLS: {e}")))?;
                handshake(TokioIo::new(stream), &mut tasks).await?
            }
            None => handshake(TokioIo::new(tcp), &mut tasks).await?,
        };
        self.start_stream(sender, token, window, tasks).await
    }

    async fn start_stream(
        &self,
        mut sender: SendRequest<StreamBodyOf>,
        token: Option<String>,
        window: usize,
        mut tasks: Vec<tokio::task::JoinHandle<()>>,
    ) -> Result<Stream, ShipError> {
        let (frames_tx, frames_rx) = mpsc::channel::<Bytes>(window.max(1));
        let body_stream = futures_util::stream::unfold(frames_rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok(Frame::data(b)), rx))
        });
        let body = StreamBody::new(futures_util::StreamExt::boxed(body_stream));
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut req = Request::post(format!("{scheme}://{}{INGEST_PATH}", self.authority))
            .header(header::CONTENT_TYPE, FRAMES_CONTENT_TYPE);
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req
            .body(body)
            .map_err(|e| ShipError::Protocol(e.to_string()))?;
        sender
            .ready()
            .await
            .map_err(|e| ShipError::Connect(format!("HTTP/2: {e}")))?;
        let response = sender.send_request(req);
        let (acks_tx, acks_rx) = mpsc::channel(window.max(1) + 1);
        tasks.push(tokio::spawn(async move {
            let result = read_acks(response, &acks_tx).await;
            let _ = acks_tx.send(Err(result)).await;
        }));
        Ok(Stream {
            frames: frames_tx,
            acks: acks_rx,
            tasks,
        })
    }
}

async fn handshake<I>(
    io: I,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<SendRequest<StreamBodyOf>, ShipError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        // A collector that vanishes without a FIN is noticed, not waited on forever.
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .handshake(io)
        .await
        .map_err(|e| ShipError::Connect(format!("HTTP/2 handshake: {e}")))?;
    tasks.push(tokio::spawn(async move {
        if let Err(err) = conn.await {
            tracing::debug!(error = %err, "collector connection ended");
        }
    }));
    Ok(sender)
}

/// Reads the response: status, then ack frames until the stream ends. Returns why it ended.
async fn read_acks(
    response: impl std::future::Future<Output = hyper::Result<http::Response<hyper::body::Incoming>>>,
    acks: &mpsc::Sender<Result<Ack, ShipError>>,
) -> ShipError {
    let resp = match response.await {
        Ok(resp) => resp,
        Err(e) => return ShipError::Connect(format!("ingest stream: {e}")),
    };
    let status = resp.status();
    let mut body = resp.into_body();
    if status != StatusCode::OK {
        // A short excerpt of the collector's reason (bounded: it is a foreign peer).
        let mut text = Vec::new();
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(d) = frame.data_ref() {
                text.extend_from_slice(&d[..d.len().min(1024 - text.len().min(1024))]);
            }
            if text.len() >= 1024 {
                break;
            }
        }
        return ShipError::Refused(status, String::from_utf8_lossy(&text).into_owned());
    }
    let mut decoder = FrameDecoder::new();
    loop {
        match body.frame().await {
            None => return ShipError::Protocol("collector ended the ingest stream".into()),
            Some(Err(e)) => return ShipError::Connect(format!("ingest stream: {e}")),
            Some(Ok(frame)) => {
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                decoder.push(data);
                loop {
                    match decoder.next_frame::<Ack>() {
                        Ok(Some(ack)) => {
                            if acks.send(Ok(ack)).await.is_err() {
                                return ShipError::Protocol("stream dropped".into());
                            }
                        }
                        Ok(None) => break,
                        Err(e) => return ShipError::Protocol(format!("bad ack frame: {e}")),
                    }
                }
            }
        }
    }
}

/// rustls client config: the collector's CA (or the Mozilla roots), ALPN h2, and the
/// agent's client certificate when configured.
pub(crate) fn client_tls(config: &ShipConfig) -> Result<rustls::ClientConfig, ShipError> {
    let tls_err = |e: &dyn std::fmt::Display| ShipError::Config(format!("collector TLS: {e}"));
    let mut tls = match (&config.client_cert, &config.client_key) {
        (None, None) => {
            crate::tls::client_config(config.ca_file.as_deref()).map_err(|e| tls_err(&e))?
        }
        (Some(cert), Some(key)) => {
            let mut roots = rustls::RootCertStore::empty();
            match &config.ca_file {
                Some(ca) => {
                    let (added, _) = roots.add_parsable_certificates(
                        crate::tls::read_certs(ca).map_err(|e| tls_err(&e))?,
                    );
                    if added == 0 {
                        return Err(ShipError::Config(format!(
                            "{} holds no usable CA certificate",
                            ca.display()
                        )));
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| ShipError::Config(format!("{}: {e}", cert.display())))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| ShipError::Config(format!("{}: {e}", key.display())))?;
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err(&e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| tls_err(&e))?
        }
        _ => {
            return Err(ShipError::Config(
                "--collector-client-cert and --collector-client-key go together".into(),
            ));
        }
    };
    tls.alpn_protocols = vec![b"h2".to_vec()];
    Ok(tls)
}
