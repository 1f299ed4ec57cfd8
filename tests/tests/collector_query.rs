//! The audit query API of the real `gatehouse-collector` (`--api-listen`) over a real
//! ClickHouse 18.16, with ID tokens of the real test OIDC issuer, and the real `gatehouse`
//! CLI against it: filters, paging (every event once, in order), NDJSON export, session
//! detail, 401/403/400, and filter values with quotes and backslashes.

mod collector_support;

use bytes::Bytes;
use collector_support::{Collector, Pki, WAIT, client_tls};
use gatehouse_collector::store::AuditStore;
use gatehouse_collector::store::clickhouse::{ClickHouseConfig, ClickHouseStore};
use gatehouse_common::audit::{
    ApiRequestEvent, AuditEvent, Decision, ExecParams, SessionEndEvent, SessionKind,
};
use gatehouse_tests::clickhouse::ClickHouse;
use gatehouse_tests::harness::ports::free_loopback_addr;
use gatehouse_tests::oidc::{DevUser, OidcIssuer};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const DB: &str = "gatehouse";
/// Requests stored besides the special ones below.
const BULK: u32 = 250;
const EVIL_USER: &str = r#"o'brien\"); DROP TABLE api_requests; --\"#;
const SESSION_ID: &str = "sess-1";

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

fn request(n: u32) -> ApiRequestEvent {
    // Three events per second: on 18.16 (whole seconds) the event_id orders them.
    let time = chrono::DateTime::from_timestamp(1_760_000_000 + i64::from(n / 3), 250_000_000)
        .unwrap_or_default();
    let delete = n.is_multiple_of(10);
    ApiRequestEvent {
        event_id: format!("ev-{n:05}-{}", uuid::Uuid::new_v4()),
        request_id: uuid::Uuid::new_v4().to_string(),
        time,
        cluster: "test".into(),
        node: "node-a".into(),
        user: if n.is_multiple_of(2) { "alice" } else { "bob" }.into(),
        groups: vec!["dev".into()],
        method: if delete { "DELETE" } else { "GET" }.into(),
        verb: if delete { "delete" } else { "get" }.into(),
        resource: if delete { "secrets" } else { "pods" }.into(),
        namespace: "prod".into(),
        name: if delete {
            "db".into()
        } else {
            format!("web-{n}")
        },
        decision: if delete {
            Decision::Deny
        } else {
            Decision::Allow
        },
        status_code: if delete { 403 } else { 200 },
        ..ApiRequestEvent::default()
    }
}

fn events() -> Vec<AuditEvent> {
    let mut all: Vec<AuditEvent> = (0..BULK)
        .map(|n| AuditEvent::ApiRequest(request(n)))
        .collect();
    let mut evil = request(BULK + 1);
    evil.user = EVIL_USER.into();
    evil.verb = "get".into();
    all.push(AuditEvent::ApiRequest(evil));
    let exec = ExecParams {
        command: vec!["sh".into(), "-c".into(), "cat /etc/shadow".into()],
        container: "web".into(),
        stdin: true,
        tty: true,
    };
    let mut upgrade = request(BULK + 2);
    upgrade.session_id = Some(SESSION_ID.into());
    upgrade.verb = "create".into();
    upgrade.subresource = "exec".into();
    upgrade.exec = Some(exec.clone());
    upgrade.decision = Decision::Allow;
    upgrade.status_code = 101;
    all.push(AuditEvent::ApiRequest(upgrade.clone()));
    all.push(AuditEvent::SessionEnd(SessionEndEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        session_id: SESSION_ID.into(),
        request_id: upgrade.request_id.clone(),
        cluster: "test".into(),
        node: "node-a".into(),
        user: "alice".into(),
        kind: SessionKind::Exec,
        namespace: "prod".into(),
        pod: "web-0".into(),
        exec: Some(exec),
        started: upgrade.time,
        ended: upgrade.time + chrono::Duration::seconds(7),
        end_reason: "closed".into(),
        ..SessionEndEvent::default()
    }));
    all
}

struct Api {
    h1: HttpsClient,
    h2: HttpsClient,
    base: String,
}

impl Api {
    fn new(ca_pem: &str, addr: SocketAddr) -> anyhow::Result<Self> {
        // The connector sets ALPN itself (http/1.1 here, h2 below).
        let mut tls1 = client_tls(ca_pem, None)?;
        tls1.alpn_protocols.clear();
        let mut tls2 = client_tls(ca_pem, None)?;
        tls2.alpn_protocols.clear();
        let h1 = Client::builder(TokioExecutor::new()).build(
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls1)
                .https_only()
                .enable_http1()
                .build(),
        );
        let h2 = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(
                hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls2)
                    .https_only()
                    .enable_http2()
                    .build(),
            );
        Ok(Self {
            h1,
            h2,
            base: format!("https://127.0.0.1:{}", addr.port()),
        })
    }

    async fn get_with(
        &self,
        h2: bool,
        path: &str,
        token: Option<&str>,
        accept: Option<&str>,
    ) -> anyhow::Result<(u16, String)> {
        let mut req = http::Request::get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        let client = if h2 { &self.h2 } else { &self.h1 };
        let resp = tokio::time::timeout(WAIT, client.request(req.body(Empty::new())?)).await??;
        let code = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((code, String::from_utf8(body.to_vec())?))
    }

    async fn get(&self, path: &str, token: Option<&str>) -> anyhow::Result<(u16, Value)> {
        let (code, body) = self.get_with(false, path, token, None).await?;
        Ok((code, serde_json::from_str(&body)?))
    }

    /// Every item of a list, following `next`; asserts every page is newest first.
    async fn all(&self, path: &str, token: &str) -> anyhow::Result<(Vec<Value>, usize)> {
        let mut items = Vec::new();
        let mut pages = 0;
        let mut cursor: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let url = match &cursor {
                Some(c) => format!("{path}{sep}cursor={c}"),
                None => path.to_string(),
            };
            let (code, page) = self.get(&url, Some(token)).await?;
            assert_eq!(code, 200, "{url}: {page}");
            pages += 1;
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return Ok((items, pages)),
            }
        }
    }
}

/// `(time, event_id)` of an item, truncated to seconds (18.16 keeps whole seconds).
fn key(item: &Value, time_field: &str) -> (i64, String) {
    let t = item[time_field]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp())
        .unwrap_or_default();
    (t, item["event_id"].as_str().unwrap_or_default().to_string())
}

fn assert_newest_first(items: &[Value]) {
    for pair in items.windows(2) {
        assert!(
            key(&pair[0], "time") > key(&pair[1], "time"),
            "not strictly newest first: {} then {}",
            pair[0]["event_id"],
            pair[1]["event_id"]
        );
    }
}

fn cli_bin() -> anyhow::Result<PathBuf> {
    Ok(gatehouse_tests::harness::stack::find_bin_dir()?.join("gatehouse"))
}

/// Runs the real `gatehouse` CLI: (exit success, stdout, stderr).
async fn cli(home: &Path, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(cli_bin()?)
            .args(args)
            .env("XDG_CACHE_HOME", home.join("cache"))
            .env("HOME", home)
            .env_remove("GATEHOUSE_ISSUER_URL")
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await??;
    Ok((
        out.status.success(),
        String::from_utf8(out.stdout)?,
        String::from_utf8(out.stderr)?,
    ))
}

/// The ```sql blocks of the README's "Reading the audit trail" section.
fn readme_sql() -> anyhow::Result<Vec<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(path)?;
    let start = text
        .find("### Reading the audit trail")
        .ok_or_else(|| anyhow::anyhow!("README has no audit-trail section"))?;
    let section = &text[start..];
    let end = section[4..].find("\n### ").map_or(section.len(), |i| i + 4);
    Ok(section[..end]
        .split("```sql\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .map(|b| b.trim().to_string())
        .collect())
}

/// A PKI and the test issuer with `sam` (security) and `dan` (dev); its CA file.
async fn pki_and_issuer() -> anyhow::Result<(Pki, OidcIssuer, PathBuf)> {
    let pki = Pki::new()?;
    let issuer = OidcIssuer::start(
        vec![
            DevUser::new("sam", &["security"]),
            DevUser::new("dan", &["dev"]),
        ],
        &pki.server_ca,
    )
    .await?;
    let ca_file = pki.dir.path().join("server-ca.crt");
    pki.server_ca.write_cert(&ca_file)?;
    Ok((pki, issuer, ca_file))
}

/// Waits (bounded) until the collector's query API accepts connections.
async fn wait_listening(api_addr: SocketAddr, collector: &Collector) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(api_addr).await.is_err() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "query API did not listen:\n{}",
            collector.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn query_api_and_cli_read_the_audit_trail() -> anyhow::Result<()> {
    let Some(ch) = ClickHouse::launch()? else {
        return Ok(());
    };
    let (pki, issuer, ca_file) = pki_and_issuer().await?;

    // Events go in through the store the collector uses, then one not-yet-merged copy of
    // an event is added behind the store's back: it must still show once.
    let mut config = ClickHouseConfig::new(ch.url(), DB);
    config.timeout = Duration::from_secs(20);
    let store = ClickHouseStore::new(config);
    store.migrate().await?;
    let all = events();
    store.insert(&all).await?;
    let dup = all[7].event_id().to_string();
    ch.query(&format!(
        "INSERT INTO {DB}.api_requests SELECT * FROM {DB}.api_requests WHERE event_id = '{dup}'"
    ))?;
    let raw: u64 = ch
        .query(&format!("SELECT count() FROM {DB}.api_requests"))?
        .trim()
        .parse()?;
    assert_eq!(
        raw,
        u64::from(BULK) + 3,
        "the duplicate row is really there"
    );

    let api_addr = free_loopback_addr()?;
    let collector = Collector::start_with(
        &pki,
        &ch.url(),
        DB,
        &[
            format!("--api-listen={api_addr}"),
            format!("--oidc-issuer-url={}", issuer.issuer_url()),
            format!("--oidc-client-id={}", issuer.client_id()),
            format!("--oidc-ca-file={}", ca_file.display()),
            "--query-groups=security,auditors".into(),
        ],
    )
    .await?;
    wait_listening(api_addr, &collector).await?;
    let api = Api::new(&pki.server_ca.cert_pem(), api_addr)?;
    let sam = issuer.mint("sam", &["security"], Duration::from_secs(600))?;
    let dan = issuer.mint("dan", &["dev"], Duration::from_secs(600))?;

    // --- who may ask ---
    let (code, body) = api.get("/v1/audit/requests", None).await?;
    assert_eq!(
        (code, body["kind"].as_str()),
        (401, Some("Status")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("bearer token"),
        "{body}"
    );
    let (code, _) = api.get("/v1/audit/requests", Some("not.a.jwt")).await?;
    assert_eq!(code, 401);
    let expired = issuer.mint_with("sam", serde_json::json!({"exp": 1, "groups": ["security"]}))?;
    let (code, body) = api.get("/v1/audit/requests", Some(&expired)).await?;
    assert_eq!(code, 401, "{body}");
    let (code, body) = api.get("/v1/sessions", Some(&dan)).await?;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap_or("").contains("security"),
        "{body}"
    );

    // --- every event exactly once, in order, across pages ---
    let (items, pages) = api.all("/v1/audit/requests?limit=100", &sam).await?;
    assert_eq!(items.len(), BULK as usize + 2);
    assert_eq!(pages, 3);
    assert_newest_first(&items);
    let ids: HashSet<&str> = items
        .iter()
        .filter_map(|i| i["event_id"].as_str())
        .collect();
    assert_eq!(ids.len(), items.len());
    assert!(ids.contains(dup.as_str()));
    // The same over h2 with a small page.
    let (code, body) = api
        .get_with(
            true,
            "/v1/audit/requests?limit=7&user=bob",
            Some(&sam),
            None,
        )
        .await?;
    assert_eq!(code, 200, "{body}");
    let page: Value = serde_json::from_str(&body)?;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(7));
    assert!(page["next"].is_string());

    // --- filters ---
    let (alice, _) = api
        .all("/v1/audit/requests?user=alice&limit=40", &sam)
        .await?;
    assert_eq!(alice.len(), 126, "125 bulk + the exec upgrade");
    assert!(alice.iter().all(|i| i["user"] == "alice"));
    assert_newest_first(&alice);
    let (denied, _) = api
        .all(
            "/v1/audit/requests?decision=deny&verb=delete&resource=secrets&name=db&status=403",
            &sam,
        )
        .await?;
    assert_eq!(denied.len(), 25);
    let (code, page) = api
        .get(
            "/v1/audit/requests?session=sess-1&namespace=prod",
            Some(&sam),
        )
        .await?;
    assert_eq!(code, 200);
    assert_eq!(page["items"][0]["exec"]["command"][2], "cat /etc/shadow");
    let since = "2025-10-09T08:53:40Z"; // 1_760_000_020: bulk events 60.. (seconds 20..)
    let (ranged, _) = api
        .all(
            &format!("/v1/audit/requests?since={since}&until=2025-10-09T08:53:50Z"),
            &sam,
        )
        .await?;
    assert_eq!(ranged.len(), 30, "ten seconds of three events");

    // --- hostile filter values are data, not SQL ---
    let q: String = form_urlencoded::byte_serialize(EVIL_USER.as_bytes()).collect();
    let (code, page) = api
        .get(&format!("/v1/audit/requests?user={q}"), Some(&sam))
        .await?;
    assert_eq!(code, 200, "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(page["items"][0]["user"], EVIL_USER);
    for hostile in [
        "prod' OR '1'='1",
        "prod\\",
        "x') OR 1=1 --",
        "?",
        "prod\\' OR 1=1 --",
    ] {
        let q: String = form_urlencoded::byte_serialize(hostile.as_bytes()).collect();
        let (code, page) = api
            .get(&format!("/v1/audit/requests?namespace={q}"), Some(&sam))
            .await?;
        assert_eq!(code, 200, "{hostile}: {page}");
        assert_eq!(
            page["items"].as_array().map(Vec::len),
            Some(0),
            "{hostile}: {page}"
        );
    }
    let (code, _) = api
        .get("/v1/sessions?pod=web-0%27%20OR%201%3D1", Some(&sam))
        .await?;
    assert_eq!(code, 200);

    // --- bad parameters ---
    for (query, word) in [
        ("since=yesterday", "since"),
        ("until=2026-13-40", "until"),
        ("status=abc", "status"),
        ("status=1000", "status"),
        ("cursor=bm90LWEtY3Vyc29y", "cursor"),
        ("limit=many", "limit"),
        ("verbb=get", "verbb"),
    ] {
        let (code, body) = api
            .get(&format!("/v1/audit/requests?{query}"), Some(&sam))
            .await?;
        assert_eq!(code, 400, "{query}: {body}");
        assert!(
            body["message"].as_str().unwrap_or("").contains(word),
            "{query}: {body}"
        );
    }
    let (code, page) = api.get("/v1/audit/requests?limit=0", Some(&sam)).await?;
    assert_eq!(
        (code, page["items"].as_array().map(Vec::len)),
        (200, Some(100))
    );
    let (code, page) = api
        .get("/v1/audit/requests?limit=5000&since=30d", Some(&sam))
        .await?;
    assert_eq!(code, 200, "{page}");
    let (code, page) = api.get("/v1/audit/requests?limit=5000", Some(&sam)).await?;
    assert_eq!(
        (code, page["items"].as_array().map(Vec::len)),
        (200, Some(BULK as usize + 2))
    );

    // --- NDJSON export ---
    let (code, body) = api
        .get_with(
            false,
            "/v1/audit/requests",
            Some(&sam),
            Some("application/x-ndjson"),
        )
        .await?;
    assert_eq!(code, 200);
    let lines: Vec<Value> = body
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), BULK as usize + 2);
    assert_newest_first(&lines);
    let (code, body) = api
        .get_with(
            true,
            "/v1/audit/requests?format=ndjson&user=bob",
            Some(&sam),
            None,
        )
        .await?;
    assert_eq!((code, body.lines().count()), (200, 125));

    // --- sessions ---
    let (code, page) = api
        .get("/v1/sessions?kind=exec&namespace=prod", Some(&sam))
        .await?;
    assert_eq!(code, 200);
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["items"][0]["session_id"], SESSION_ID);
    let (code, detail) = api.get("/v1/sessions/sess-1", Some(&sam)).await?;
    assert_eq!(code, 200, "{detail}");
    assert_eq!(detail["session"]["pod"], "web-0");
    assert_eq!(detail["requests"].as_array().map(Vec::len), Some(1));
    assert_eq!(detail["requests"][0]["subresource"], "exec");
    let (code, body) = api.get("/v1/sessions/no-such-session", Some(&sam)).await?;
    assert_eq!(code, 404, "{body}");

    // --- the real CLI ---
    let home = tempfile::tempdir()?;
    let token_file = home.path().join("token");
    std::fs::write(&token_file, format!("{sam}\n"))?;
    let url = api.base.clone();
    let ca = ca_file.display().to_string();
    let tf = token_file.display().to_string();
    let base = [
        "--collector-url",
        &url,
        "--ca-file",
        &ca,
        "--token-file",
        &tf,
    ];
    let run = |extra: &[&str]| {
        let mut args: Vec<&str> = extra.to_vec();
        args.extend_from_slice(&base);
        args.iter().map(|s| s.to_string()).collect::<Vec<String>>()
    };
    let args = run(&["audit", "search", "--user", "alice", "--verb", "delete"]);
    let (ok, out, err) = cli(
        home.path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await?;
    assert!(ok, "{err}");
    let rows: Vec<&str> = out.lines().collect();
    assert!(
        rows[0].starts_with("TIME") && rows[0].contains("DECISION"),
        "{out}"
    );
    assert_eq!(rows.len(), 1 + 25, "{out}");
    assert!(
        rows[1].contains("prod/db") && rows[1].contains("deny") && rows[1].contains("403"),
        "{out}"
    );

    let args = run(&["audit", "search", "--output", "ndjson", "--user", "bob"]);
    let (ok, out, err) = cli(
        home.path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await?;
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 125);

    let args = run(&[
        "audit", "search", "--output", "json", "--limit", "50", "--all", "--since", "3650d",
    ]);
    let (ok, out, err) = cli(
        home.path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await?;
    assert!(ok, "{err}");
    let doc: Value = serde_json::from_str(&out)?;
    assert_eq!(
        doc["items"].as_array().map(Vec::len),
        Some(BULK as usize + 2)
    );

    let args = run(&["sessions", "show", SESSION_ID]);
    let (ok, out, err) = cli(
        home.path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await?;
    assert!(ok, "{err}");
    assert!(
        out.contains("sh -c cat /etc/shadow") && out.contains("prod/web-0"),
        "{out}"
    );
    assert!(out.contains("pods/exec"), "{out}");

    let args = run(&["sessions", "list", "--user", "alice"]);
    let (ok, out, err) = cli(
        home.path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await?;
    assert!(ok, "{err}");
    assert!(out.contains(SESSION_ID) && out.contains("exec"), "{out}");

    let args = run(&["audit", "search", "--since", "soon"]);
    let (ok, _, err) = cli(
        home.path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await?;
    assert!(!ok && err.contains("400") && err.contains("since"), "{err}");

    // The `gatehouse login` cache instead of --token-file.
    gatehouse_collector::cli::cache::TokenCache::new(home.path().join("cache/gatehouse")).store(
        &gatehouse_collector::cli::cache::CachedTokens {
            issuer: issuer.issuer_url().to_string(),
            client_id: issuer.client_id().to_string(),
            id_token: sam.clone(),
            expires_at: chrono::Utc::now() + chrono::Duration::minutes(9),
            refresh_token: None,
        },
    )?;
    let (ok, out, err) = cli(
        home.path(),
        &[
            "sessions",
            "show",
            SESSION_ID,
            "--collector-url",
            &url,
            "--ca-file",
            &ca,
            "--issuer-url",
            issuer.issuer_url(),
            "--client-id",
            issuer.client_id(),
            "--issuer-ca-file",
            &ca,
            "--output",
            "json",
        ],
    )
    .await?;
    assert!(ok, "{err}");
    let detail: Value = serde_json::from_str(&out)?;
    assert_eq!(detail["session"]["session_id"], SESSION_ID);
    let (ok, _, err) = cli(
        home.path(),
        &["audit", "search", "--collector-url", &url, "--ca-file", &ca],
    )
    .await?;
    assert!(!ok && err.contains("--token-file"), "{err}");

    std::fs::write(&token_file, &dan)?;
    let args = run(&["sessions", "show", SESSION_ID]);
    let (ok, _, err) = cli(
        home.path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await?;
    assert!(!ok && err.contains("403"), "{err}");

    // --- the README's ready-made SQL runs on 18.16 and finds the test's events ---
    let blocks = readme_sql()?;
    assert_eq!(blocks.len(), 5, "README investigations");
    for sql in &blocks {
        let out = ch.query(sql)?;
        assert!(!out.trim().is_empty(), "no rows for README query:\n{sql}");
    }

    // --- who queried what is logged, tokens never ---
    let log = collector.log_text();
    assert!(log.contains("audit query") && log.contains("sam"), "{log}");
    assert!(log.contains("not in a query group"), "{log}");
    for token in [&sam, &dan] {
        assert!(!log.contains(token.as_str()), "a token is in the log");
    }
    collector.stop().await?;
    Ok(())
}

/// The same API over the embedded store (a collector without ClickHouse): one query
/// contract, so pages, filters, session detail and hostile values behave the same.
#[tokio::test(flavor = "multi_thread")]
async fn query_api_reads_the_embedded_store_the_same_way() -> anyhow::Result<()> {
    use gatehouse_collector::store::embedded::EmbeddedStore;
    let (pki, issuer, ca_file) = pki_and_issuer().await?;
    let store_dir = pki.dir.path().join("audit");
    {
        let (store, _) = EmbeddedStore::open(&store_dir, Duration::from_secs(20))?;
        let all = events();
        assert_eq!(store.insert(&all).await?.inserted, all.len() as u64);
        // A re-sent batch adds nothing, so the API below must see each event once.
        assert_eq!(store.insert(&all).await?.inserted, 0);
    }

    let api_addr = free_loopback_addr()?;
    let collector = Collector::start_embedded_with(
        &pki,
        &store_dir,
        free_loopback_addr()?,
        &[
            format!("--api-listen={api_addr}"),
            format!("--oidc-issuer-url={}", issuer.issuer_url()),
            format!("--oidc-client-id={}", issuer.client_id()),
            format!("--oidc-ca-file={}", ca_file.display()),
        ],
    )
    .await?;
    wait_listening(api_addr, &collector).await?;
    let api = Api::new(&pki.server_ca.cert_pem(), api_addr)?;
    let sam = issuer.mint("sam", &["security"], Duration::from_secs(600))?;
    let dan = issuer.mint("dan", &["dev"], Duration::from_secs(600))?;
    assert_eq!(api.get("/v1/audit/requests", None).await?.0, 401);
    assert_eq!(api.get("/v1/audit/requests", Some(&dan)).await?.0, 403);

    let (items, pages) = api.all("/v1/audit/requests?limit=100", &sam).await?;
    assert_eq!(items.len(), BULK as usize + 2);
    assert_eq!(pages, 3);
    assert_newest_first(&items);
    let ids: HashSet<&str> = items
        .iter()
        .filter_map(|i| i["event_id"].as_str())
        .collect();
    assert_eq!(ids.len(), items.len());
    let (alice, _) = api
        .all("/v1/audit/requests?user=alice&limit=40", &sam)
        .await?;
    assert_eq!(alice.len(), 126, "125 bulk + the exec upgrade");
    let q: String = form_urlencoded::byte_serialize(EVIL_USER.as_bytes()).collect();
    let (code, page) = api
        .get(&format!("/v1/audit/requests?user={q}"), Some(&sam))
        .await?;
    assert_eq!(code, 200, "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    let (code, detail) = api
        .get(&format!("/v1/sessions/{SESSION_ID}"), Some(&sam))
        .await?;
    assert_eq!(code, 200, "{detail}");
    assert_eq!(detail["session"]["session_id"], SESSION_ID);
    assert!(
        detail["requests"].as_array().is_some_and(|r| !r.is_empty()),
        "{detail}"
    );
    assert_eq!(api.get("/v1/sessions/nope", Some(&sam)).await?.0, 404);
    collector.stop().await?;
    Ok(())
}
