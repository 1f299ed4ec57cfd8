//! The real `gatehouse-collector` binary's ingest endpoint against a real ClickHouse 18.16:
//! a test client speaks the batch/ack frames over TLS + HTTP/2 like the agent's shipper.

mod collector_support;

use bytes::Bytes;
use collector_support::{
    Collector, IngestClient, Pki, api_event, batch, client_tls, count, http_get, metric,
    session_event,
};
use gatehouse_tests::clickhouse::ClickHouse;

const DB: &str = "gatehouse";

async fn agent_client(
    pki: &Pki,
    collector: &Collector,
    name: &str,
) -> anyhow::Result<IngestClient> {
    let cert = pki.agent(name)?;
    IngestClient::connect(
        collector.ingest,
        client_tls(&pki.server_ca.cert_pem(), Some(&cert))?,
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_is_stored_once_and_a_resent_batch_adds_no_rows() -> anyhow::Result<()> {
    let Some(ch) = ClickHouse::launch()? else {
        return Ok(());
    };
    let pki = Pki::new()?;
    let collector = Collector::start(&pki, &ch.url(), DB).await?;
    let events = vec![api_event(1), api_event(2), session_event(), api_event(3)];

    let mut client = agent_client(&pki, &collector, "node-a").await?;
    let mut stream = client.open().await?;
    assert_eq!(stream.status, 200);
    stream.send(&batch("node-a", 1, &events[..2])).await?;
    stream.send(&batch("node-a", 2, &events[2..])).await?;
    let first = stream
        .next_ack()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no ack"))?;
    let second = stream
        .next_ack()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no ack"))?;
    assert_eq!((first.seq, first.committed, first.inserted), (1, true, 2));
    assert_eq!(
        (second.seq, second.committed, second.inserted),
        (2, true, 2)
    );
    stream.finish();
    assert!(
        stream.next_ack().await?.is_none(),
        "stream ends after the body"
    );
    assert_eq!(count(&ch, DB, "api_requests")?, 3);
    assert_eq!(count(&ch, DB, "sessions")?, 1);

    // A reconnecting agent re-sends everything it never saw acked, seq restarting at 1.
    let mut client = agent_client(&pki, &collector, "node-a").await?;
    let mut stream = client.open().await?;
    stream.send(&batch("node-a", 1, &events)).await?;
    let ack = stream
        .next_ack()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no ack"))?;
    assert_eq!((ack.seq, ack.committed, ack.inserted), (1, true, 0));
    assert_eq!(count(&ch, DB, "api_requests")?, 3);
    assert_eq!(count(&ch, DB, "sessions")?, 1);

    let (_, metrics) = http_get(collector.ops, "/metrics").await?;
    assert_eq!(
        metric(&metrics, "gatehouse_collector_ingest_inserted_total"),
        Some(4.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "gatehouse_collector_ingest_duplicates_total"),
        Some(4.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "gatehouse_collector_ingest_batches_total"),
        Some(3.0),
        "{metrics}"
    );
    Ok(())
}

/// Polls `/readyz` (it follows a periodic store health check) until it answers `code`.
async fn wait_for_readyz(collector: &Collector, code: u16) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + collector_support::WAIT;
    loop {
        let (got, _) = http_get(collector.ops, "/readyz").await?;
        if got == code {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "/readyz stayed {got}, expected {code}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_down_is_not_acked_then_the_batch_commits_when_it_is_back() -> anyhow::Result<()>
{
    let Some(mut ch) = ClickHouse::launch()? else {
        return Ok(());
    };
    let pki = Pki::new()?;
    let collector = Collector::start(&pki, &ch.url(), DB).await?;
    let events = vec![api_event(1), api_event(2), api_event(3)];
    let mut client = agent_client(&pki, &collector, "node-a").await?;
    let mut stream = client.open().await?;

    ch.stop();
    stream.send(&batch("node-a", 1, &events)).await?;
    let ack = stream
        .next_ack()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no ack"))?;
    assert_eq!(ack.seq, 1);
    assert!(!ack.committed, "{ack:?}");
    assert!(ack.error.contains("store unavailable"), "{ack:?}");
    let (code, _) = http_get(collector.ops, "/healthz").await?;
    assert_eq!(code, 200, "the collector stays up while the store is down");
    wait_for_readyz(&collector, 503).await?;

    ch.start()?;
    wait_for_readyz(&collector, 200).await?;
    stream.send(&batch("node-a", 2, &events)).await?;
    let ack = stream
        .next_ack()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no ack"))?;
    assert_eq!(
        (ack.seq, ack.committed, ack.inserted),
        (2, true, 3),
        "{ack:?}"
    );
    assert_eq!(count(&ch, DB, "api_requests")?, 3);
    let (_, metrics) = http_get(collector.ops, "/metrics").await?;
    assert_eq!(
        metric(&metrics, "gatehouse_collector_ingest_store_errors_total"),
        Some(1.0),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_without_a_valid_credential_are_refused_and_nothing_is_stored() -> anyhow::Result<()>
{
    let Some(ch) = ClickHouse::launch()? else {
        return Ok(());
    };
    let pki = Pki::new()?;
    let collector = Collector::start(&pki, &ch.url(), DB).await?;

    // No client certificate: HTTP 401 with a Status.
    let mut anon = IngestClient::connect(
        collector.ingest,
        client_tls(&pki.server_ca.cert_pem(), None)?,
    )
    .await?;
    let mut stream = anon.open().await?;
    assert_eq!(stream.status, 401);
    let _ = stream.send(&batch("node-a", 1, &[api_event(1)])).await;
    let text = stream.text().await?;
    assert!(
        text.contains("\"kind\":\"Status\"") && text.contains("client certificate"),
        "{text}"
    );

    // A certificate from another CA: the TLS handshake fails.
    let rogue = gatehouse_tests::pki::Ca::new("rogue")?.issue_client("node-a", &[])?;
    let refused = IngestClient::connect(
        collector.ingest,
        client_tls(&pki.server_ca.cert_pem(), Some(&rogue))?,
    )
    .await;
    let handshake_refused = match refused {
        Err(_) => true,
        // TLS 1.3 reports the client-certificate verdict after the client's handshake ends.
        Ok(mut c) => c.open().await.is_err(),
    };
    assert!(handshake_refused);

    // A valid certificate for node-a cannot ship batches in node-b's name.
    let mut client = agent_client(&pki, &collector, "node-a").await?;
    let mut stream = client.open().await?;
    stream.send(&batch("node-b", 1, &[api_event(2)])).await?;
    let ack = stream
        .next_ack()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no error frame"))?;
    assert_eq!((ack.seq, ack.committed), (0, false));
    assert!(ack.error.contains("node-b"), "{ack:?}");
    assert!(stream.next_ack().await?.is_none(), "the stream is closed");

    assert_eq!(count(&ch, DB, "api_requests")?, 0);
    let (_, metrics) = http_get(collector.ops, "/metrics").await?;
    assert_eq!(
        metric(&metrics, "gatehouse_collector_ingest_unauthenticated_total"),
        Some(1.0),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_and_oversized_frames_close_the_stream_and_the_collector_stays_healthy()
-> anyhow::Result<()> {
    let Some(ch) = ClickHouse::launch()? else {
        return Ok(());
    };
    let pki = Pki::new()?;
    let collector = Collector::start(&pki, &ch.url(), DB).await?;
    let mut client = agent_client(&pki, &collector, "node-a").await?;

    // A good batch, then garbage: the ack for the good one comes first, then the error.
    let mut stream = client.open().await?;
    stream.send(&batch("node-a", 1, &[api_event(1)])).await?;
    let mut garbage = 5u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(b"hello");
    stream.send_raw(Bytes::from(garbage)).await?;
    let ack = stream
        .next_ack()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no ack"))?;
    assert_eq!((ack.seq, ack.committed), (1, true));
    let err = stream
        .next_ack()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no error frame"))?;
    assert_eq!((err.seq, err.committed), (0, false));
    assert!(err.error.contains("not valid JSON"), "{err:?}");
    assert!(stream.next_ack().await?.is_none());

    // A frame announced over the limit is refused before its bytes arrive.
    let mut stream = client.open().await?;
    stream
        .send_raw(Bytes::from((64u32 << 20).to_be_bytes().to_vec()))
        .await?;
    let err = stream
        .next_ack()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no error frame"))?;
    assert!(err.error.contains("over the"), "{err:?}");

    // seq must increase on a stream.
    let mut stream = client.open().await?;
    stream.send(&batch("node-a", 5, &[api_event(2)])).await?;
    stream.send(&batch("node-a", 5, &[api_event(3)])).await?;
    let ack = stream
        .next_ack()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no ack"))?;
    assert_eq!((ack.seq, ack.committed), (5, true));
    let err = stream
        .next_ack()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no error frame"))?;
    assert!(err.error.contains("does not follow"), "{err:?}");

    // A body ending inside a frame.
    let mut stream = client.open().await?;
    stream
        .send_raw(Bytes::from_static(&[0, 0, 0, 9, b'{']))
        .await?;
    stream.finish();
    let err = stream
        .next_ack()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no error frame"))?;
    assert!(err.error.contains("ended inside a frame"), "{err:?}");

    // Still healthy, and a new stream on the same connection works.
    assert_eq!(http_get(collector.ops, "/healthz").await?.0, 200);
    let mut stream = client.open().await?;
    stream.send(&batch("node-a", 1, &[api_event(4)])).await?;
    let ack = stream
        .next_ack()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no ack"))?;
    assert!(ack.committed, "{ack:?}");
    assert_eq!(count(&ch, DB, "api_requests")?, 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn migrations_are_applied_once_across_collector_restarts() -> anyhow::Result<()> {
    let Some(ch) = ClickHouse::launch()? else {
        return Ok(());
    };
    let pki = Pki::new()?;
    let first = Collector::start(&pki, &ch.url(), DB).await?;
    let log = first.log.clone();
    first.stop().await?;
    let first_log = std::fs::read_to_string(&log)?;
    assert!(
        first_log.contains("applied schema migration"),
        "{first_log}"
    );

    let second = Collector::start(&pki, &ch.url(), DB).await?;
    let mut client = agent_client(&pki, &second, "node-a").await?;
    let mut stream = client.open().await?;
    stream.send(&batch("node-a", 1, &[api_event(1)])).await?;
    assert!(stream.next_ack().await?.is_some_and(|a| a.committed));
    let second_log = second.log_text();
    assert!(
        !second_log.contains("applied schema migration"),
        "{second_log}"
    );
    assert!(
        second_log.contains("audit store schema current"),
        "{second_log}"
    );
    assert_eq!(
        ch.query(&format!("SELECT count() FROM {DB}.schema_migrations"))?
            .trim(),
        "2",
        "migrations 1 (tables) and 2 (session recording fields)"
    );
    let tables = ch.query(&format!(
        "SELECT name FROM system.tables WHERE database = '{DB}' ORDER BY name"
    ))?;
    assert_eq!(
        tables.split_whitespace().collect::<Vec<_>>(),
        [
            "api_requests",
            "approvals",
            "network_events",
            "process_events",
            "schema_migrations",
            "session_chunks",
            "sessions"
        ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn collector_started_while_clickhouse_is_down_commits_once_it_is_up() -> anyhow::Result<()> {
    let Some(mut ch) = ClickHouse::launch()? else {
        return Ok(());
    };
    ch.stop();
    let pki = Pki::new()?;
    let collector = Collector::start(&pki, &ch.url(), DB).await?;
    let mut client = agent_client(&pki, &collector, "node-a").await?;
    let mut stream = client.open().await?;
    let events = [api_event(1), api_event(2)];
    stream.send(&batch("node-a", 1, &events)).await?;
    assert!(stream.next_ack().await?.is_some_and(|a| !a.committed));
    ch.start()?;
    stream.send(&batch("node-a", 2, &events)).await?;
    let ack = stream
        .next_ack()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no ack"))?;
    assert_eq!((ack.committed, ack.inserted), (true, 2), "{ack:?}");
    assert_eq!(count(&ch, DB, "api_requests")?, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_service_account_tokens_are_checked_with_a_token_review() -> anyhow::Result<()> {
    use gatehouse_tests::emulator::api::{Emulator, EmulatorConfig};
    use gatehouse_tests::emulator::authn::UserInfo;
    use gatehouse_tests::emulator::runtime::RuntimeConfig;
    use gatehouse_tests::emulator::seed::Seed;

    let Some(ch) = ClickHouse::launch()? else {
        return Ok(());
    };
    let pki = Pki::new()?;
    let emu_dir = tempfile::tempdir()?;
    let emulator = Emulator::start(EmulatorConfig {
        dir: emu_dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse()?,
        seed: Seed::default(),
        runtime: RuntimeConfig {
            cgroup_root: None,
            work_dir: emu_dir.path().join("runtime"),
        },
    })
    .await?;
    emulator.add_token(
        "default-sa-token",
        UserInfo::new("system:serviceaccount:default:default", &[]),
    );
    let collector = Collector::start_with(
        &pki,
        &ch.url(),
        DB,
        &[
            format!("--token-review-url={}", emulator.url()),
            format!(
                "--token-review-ca-file={}",
                emulator.ca_cert_path().display()
            ),
            format!(
                "--token-review-token-file={}",
                emu_dir.path().join("admin-token").display()
            ),
        ],
    )
    .await?;
    let tls = || client_tls(&pki.server_ca.cert_pem(), None);

    // The agent's service-account token: accepted (no node binding: any agent name).
    let mut agent = IngestClient::connect(collector.ingest, tls()?).await?;
    agent.bearer = Some(emulator.agent_token());
    let mut stream = agent.open().await?;
    assert_eq!(stream.status, 200);
    stream.send(&batch("node-x", 1, &[api_event(1)])).await?;
    let ack = stream
        .next_ack()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no ack"))?;
    assert_eq!((ack.committed, ack.inserted), (true, 1), "{ack:?}");

    // A valid token of a service account that is not an agent: 403.
    let mut other = IngestClient::connect(collector.ingest, tls()?).await?;
    other.bearer = Some("default-sa-token".into());
    let stream = other.open().await?;
    assert_eq!(stream.status, 403);
    assert!(
        stream
            .text()
            .await?
            .contains("not an agent service account")
    );

    // A token the API server does not know: 401.
    let mut bogus = IngestClient::connect(collector.ingest, tls()?).await?;
    bogus.bearer = Some("not-a-token".into());
    let stream = bogus.open().await?;
    assert_eq!(stream.status, 401);

    // The API server unreachable: refused with 503 (fail closed, retry later).
    let dead = gatehouse_tests::harness::ports::free_loopback_addr()?;
    let blind = Collector::start_with(
        &pki,
        &ch.url(),
        DB,
        &[
            format!("--token-review-url=https://{dead}"),
            format!(
                "--token-review-ca-file={}",
                emulator.ca_cert_path().display()
            ),
            format!(
                "--token-review-token-file={}",
                emu_dir.path().join("admin-token").display()
            ),
        ],
    )
    .await?;
    let mut agent = IngestClient::connect(blind.ingest, tls()?).await?;
    agent.bearer = Some(emulator.agent_token());
    let stream = agent.open().await?;
    assert_eq!(stream.status, 503);

    assert_eq!(count(&ch, DB, "api_requests")?, 1);
    let reviews = emulator
        .request_log()
        .iter()
        .filter(|r| r.path.ends_with("/tokenreviews"))
        .count();
    assert_eq!(reviews, 3, "one TokenReview per stream");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_password_comes_from_a_file_and_is_never_shown() -> anyhow::Result<()> {
    let Some(ch) = ClickHouse::launch()? else {
        return Ok(());
    };
    let (user, password) = gatehouse_tests::clickhouse::PASSWORD_USER;
    let pki = Pki::new()?;
    let good = pki.dir.path().join("ch-password");
    std::fs::write(&good, format!("{password}\n"))?;
    let wrong_password = "wrong-password-91bc";
    let wrong = pki.dir.path().join("ch-wrong-password");
    std::fs::write(&wrong, wrong_password)?;
    let args = |file: &std::path::Path| {
        vec![
            format!("--clickhouse-user={user}"),
            format!("--clickhouse-password-file={}", file.display()),
        ]
    };

    let collector = Collector::start_with(&pki, &ch.url(), DB, &args(&good)).await?;
    let mut client = agent_client(&pki, &collector, "node-a").await?;
    let mut stream = client.open().await?;
    stream.send(&batch("node-a", 1, &[api_event(1)])).await?;
    let ack = stream
        .next_ack()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no ack"))?;
    assert!(ack.committed, "{ack:?}");

    let refused = Collector::start_with(&pki, &ch.url(), DB, &args(&wrong)).await?;
    let mut client = agent_client(&pki, &refused, "node-a").await?;
    let mut stream = client.open().await?;
    stream.send(&batch("node-a", 1, &[api_event(2)])).await?;
    let ack = stream
        .next_ack()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no ack"))?;
    assert!(!ack.committed, "{ack:?}");
    assert!(!ack.error.contains(wrong_password), "{ack:?}");
    assert_eq!(count(&ch, DB, "api_requests")?, 1);

    for log in [collector.log_text(), refused.log_text()] {
        assert!(
            !log.contains(password) && !log.contains(wrong_password),
            "{log}"
        );
    }
    Ok(())
}

/// A rough throughput figure for the report (debug build, one stream, pipelined batches);
/// asserts only that every event is stored exactly once. `cargo test ... -- --ignored`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement, run by hand"]
async fn measure_one_stream_throughput() -> anyhow::Result<()> {
    let Some(ch) = ClickHouse::launch()? else {
        return Ok(());
    };
    let pki = Pki::new()?;
    let collector = Collector::start(&pki, &ch.url(), DB).await?;
    let mut client = agent_client(&pki, &collector, "node-a").await?;
    let mut stream = client.open().await?;
    let (batches, per_batch) = (40u64, 1000u32);
    // Frames encoded up front: the figure is the collector's, not this client's.
    let mut frames = Vec::new();
    for seq in 1..=batches {
        let events: Vec<_> = (0..per_batch).map(api_event).collect();
        frames.push(gatehouse_common::ingest::frame(&batch(
            "node-a", seq, &events,
        ))?);
    }
    let started = std::time::Instant::now();
    let mut acked = 0;
    for (i, frame) in frames.into_iter().enumerate() {
        stream.send_raw(frame).await?;
        // Keep two batches in flight (the collector runs with --max-in-flight=2).
        if i >= 1 {
            assert!(stream.next_ack().await?.is_some_and(|a| a.committed));
            acked += 1;
        }
    }
    while acked < batches {
        assert!(stream.next_ack().await?.is_some_and(|a| a.committed));
        acked += 1;
    }
    let elapsed = started.elapsed();
    let total = batches * u64::from(per_batch);
    assert_eq!(count(&ch, DB, "api_requests")?, total);
    eprintln!(
        "{total} events in {elapsed:?}: {:.0} events/s",
        total as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
