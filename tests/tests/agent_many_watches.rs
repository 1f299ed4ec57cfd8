//! Many long-lived watches through the agent must not starve other requests: the API
//! server caps concurrent streams per HTTP/2 connection (200 in the emulator, 1000 in
//! kube-apiserver), so the agent must not put every watch on one shared upstream h2
//! connection.
//!
//! Needs the binaries: `cargo build -p gatehouse-agent -p gatehouse-collector --bins`.

use bytes::Bytes;
use gatehouse_tests::harness::stack::{Stack, StackOptions};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// More than the emulator's 200 concurrent h2 streams, fewer than the agent's 250 per
/// client connection, so all of them fit on the one h2 connection kubectl would use.
const WATCHES: usize = 220;

#[tokio::test]
async fn short_requests_pass_while_more_watches_than_one_h2_connection_holds() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let stack = Stack::start(StackOptions::new(dir.path())).await?;
    let token = stack
        .issuer
        .mint_dev("alice")
        .ok_or_else(|| anyhow::anyhow!("alice is a dev user"))??;
    let ca_pem = std::fs::read_to_string(stack.ca_cert_path())?;
    let tls = gatehouse_tests::pki::client_config_trusting(&ca_pem)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_only()
        .enable_http2()
        .build();
    // HTTP/2 only, like kubectl: every request below shares one connection to the agent.
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(connector);
    let base = stack.agent_url().trim_end_matches('/').to_string();
    let get = |path: &str| {
        http::Request::get(format!("{base}{path}"))
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Empty::<Bytes>::new())
    };

    let mut watches = Vec::with_capacity(WATCHES);
    for i in 0..WATCHES {
        let response = tokio::time::timeout(
            Duration::from_secs(30),
            client.request(get("/api/v1/namespaces/dev/pods?watch=1")?),
        )
        .await
        .map_err(|_| anyhow::anyhow!("watch {i} did not open within 30 s"))??;
        assert_eq!(response.status(), 200, "watch {i}");
        watches.push(response.into_body());
    }

    // With every watch still open, a list answers.
    let response = tokio::time::timeout(
        Duration::from_secs(30),
        client.request(get("/api/v1/namespaces/dev/pods")?),
    )
    .await
    .map_err(|_| anyhow::anyhow!("a list stalled behind {WATCHES} open watches"))??;
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await?.to_bytes();
    let list: serde_json::Value = serde_json::from_slice(&body)?;
    assert_eq!(list["kind"], "PodList", "{list}");

    drop(watches);
    stack.shutdown().await;
    Ok(())
}
