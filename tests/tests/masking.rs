//! Masking end to end through the real `gatehouse-agent`: kubectl 1.32 and 1.20 read a
//! Secret every way kubectl can (get, list, watch, Table, `-o yaml/json/jsonpath`, field
//! selector, `get --raw`) and never see its value; env values matched by a path rule and
//! `last-applied-configuration` annotations are masked; `pods/log` with an AWS key split
//! across two chunks is masked; gzip responses are decoded and masked.
//!
//! Needs the binaries: `cargo build --workspace --bins` (see `harness::stack`).

use base64::Engine as _;
use bytes::Bytes;
use gatehouse_tests::harness::kubeconfig;
use gatehouse_tests::harness::kubectl::Kubectl;
use gatehouse_tests::harness::stack::{Stack, StackOptions};
use gatehouse_tests::harness::tools;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::path::PathBuf;
use std::time::Duration;

/// The seeded `prod/db-credentials` password, base64 and plain.
const PASSWORD_B64: &str = "czNjcjN0LXBAc3N3MHJk";
const PASSWORD: &str = "s3cr3t-p@ssw0rd";
/// What masked `Secret.data` values become (base64 of `***MASKED***`).
const MARKER_B64: &str = "KioqTUFTS0VEKioq";
const MARKER: &str = "***MASKED***";
const AWS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";

async fn stack() -> anyhow::Result<(tempfile::TempDir, Stack)> {
    let dir = tempfile::tempdir()?;
    let stack = Stack::start(StackOptions::new(dir.path())).await?;
    Ok((dir, stack))
}

fn admin_kubeconfig(stack: &Stack) -> anyhow::Result<PathBuf> {
    let path = stack.dir().join("kubeconfig-admin");
    kubeconfig::write(&path, &[stack.emulator_admin_context()])?;
    Ok(path)
}

fn assert_masked(what: &str, out: &str) {
    assert!(
        !out.contains(PASSWORD_B64) && !out.contains(PASSWORD),
        "{what}: the secret leaked:\n{out}"
    );
}

/// Every read kubectl can make of a Secret, through the agent as bob (cluster-admin).
async fn secret_reads(stack: &Stack, kubectl: &Kubectl, admin: &Kubectl) -> anyhow::Result<()> {
    let ns = ["-n", "prod"];
    let get = |args: &[&str]| {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&ns);
        all.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let cases: Vec<(&str, Vec<String>, Option<&str>)> = vec![
        (
            "yaml",
            get(&["secret", "db-credentials", "-o", "yaml"]),
            Some(MARKER_B64),
        ),
        (
            "json",
            get(&["secret", "db-credentials", "-o", "json"]),
            Some(MARKER_B64),
        ),
        ("list", get(&["secrets", "-o", "json"]), Some(MARKER_B64)),
        (
            "table",
            get(&["secret", "db-credentials"]),
            Some("db-credentials"),
        ),
        ("table list", get(&["secrets"]), Some("db-credentials")),
        (
            "wide table",
            get(&["secrets", "-o", "wide", "--show-labels"]),
            Some("db-credentials"),
        ),
        (
            "jsonpath",
            get(&[
                "secret",
                "db-credentials",
                "-o",
                "jsonpath={.data.password}",
            ]),
            Some(MARKER_B64),
        ),
        (
            "field selector",
            get(&[
                "secrets",
                "--field-selector",
                "metadata.name=db-credentials",
                "-o",
                "yaml",
            ]),
            Some(MARKER_B64),
        ),
        (
            "raw object",
            vec![
                "get".into(),
                "--raw".into(),
                "/api/v1/namespaces/prod/secrets/db-credentials".into(),
            ],
            Some(MARKER_B64),
        ),
        (
            "raw list",
            vec![
                "get".into(),
                "--raw".into(),
                "/api/v1/secrets?fieldSelector=metadata.name%3Ddb-credentials".into(),
            ],
            Some(MARKER_B64),
        ),
        (
            "raw table",
            vec![
                "get".into(),
                "--raw".into(),
                "/api/v1/namespaces/prod/secrets?includeObject=Object&as=Table".into(),
            ],
            None,
        ),
    ];
    for (what, args, expect) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = kubectl.run(&args).await?.ok()?;
        assert_masked(what, &out.stdout);
        if let Some(expect) = expect {
            assert!(out.stdout.contains(expect), "{what}: {}", out.stdout);
        }
    }
    // The marker decodes to the plain marker, as `| base64 -d` shows it.
    let out = kubectl
        .run(
            &get(&[
                "secret",
                "db-credentials",
                "-o",
                "jsonpath={.data.password}",
            ])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        )
        .await?
        .ok()?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(out.stdout.trim())?;
    assert_eq!(decoded, MARKER.as_bytes());
    // The same read straight to the emulator shows the value: the test is not vacuous.
    let direct = admin
        .run(&[
            "get",
            "secret",
            "db-credentials",
            "-n",
            "prod",
            "-o",
            "yaml",
        ])
        .await?
        .ok()?;
    assert!(direct.stdout.contains(PASSWORD_B64), "{}", direct.stdout);

    // Watch: the event after an update arrives, masked.
    let mut watch = kubectl.spawn(&[
        "get",
        "secret",
        "db-credentials",
        "-n",
        "prod",
        "-w",
        "-o",
        "jsonpath={.metadata.resourceVersion} {.data.password}{\"\\n\"}",
    ])?;
    let first = watch
        .wait_line(Duration::from_secs(20), |l| !l.trim().is_empty())
        .await?;
    let new_value = base64::engine::general_purpose::STANDARD.encode("rotated-value-1");
    admin
        .run(&[
            "patch",
            "secret",
            "db-credentials",
            "-n",
            "prod",
            "-p",
            &format!("{{\"data\":{{\"password\":\"{new_value}\"}}}}"),
        ])
        .await?
        .ok()?;
    let first_rv = first
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let second = watch
        .wait_line(Duration::from_secs(20), |l| {
            l.split_whitespace().next().is_some_and(|rv| rv != first_rv)
        })
        .await?;
    let seen = watch.seen().to_vec();
    watch.stop().await;
    for line in &seen {
        assert_masked("watch", line);
        assert!(!line.contains(&new_value), "watch leaked: {line}");
    }
    assert!(first.contains(MARKER_B64), "{first}");
    assert!(second.contains(MARKER_B64), "{second}");
    assert!(
        stack
            .emulator
            .request_log()
            .iter()
            .any(|r| r.verb == "watch" && r.path.contains("secrets")),
        "no watch reached the emulator"
    );
    // Put the value back for the next kubectl version.
    admin
        .run(&[
            "patch",
            "secret",
            "db-credentials",
            "-n",
            "prod",
            "-p",
            &format!("{{\"data\":{{\"password\":\"{PASSWORD_B64}\"}}}}"),
        ])
        .await?
        .ok()?;
    Ok(())
}

#[tokio::test]
async fn secret_reads_are_masked_for_kubectl_1_32() -> anyhow::Result<()> {
    let (_dir, stack) = stack().await?;
    let kubectl = Kubectl::v1_32(&stack.kubeconfig_for("bob")?)?;
    let admin = Kubectl::v1_32(&admin_kubeconfig(&stack)?)?;
    secret_reads(&stack, &kubectl, &admin).await?;
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn secret_reads_are_masked_for_kubectl_1_20() -> anyhow::Result<()> {
    if let Err(why) = tools::kubectl_1_20() {
        eprintln!("SKIP: kubectl 1.20 not available ({why}); run `cargo xtask setup`");
        return Ok(());
    }
    let (_dir, stack) = stack().await?;
    let kubectl = Kubectl::v1_20(&stack.kubeconfig_for("bob")?)?;
    let admin = Kubectl::v1_32(&admin_kubeconfig(&stack)?)?;
    secret_reads(&stack, &kubectl, &admin).await?;
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn env_values_and_last_applied_annotations_are_masked() -> anyhow::Result<()> {
    let (_dir, stack) = stack().await?;
    let kubectl = Kubectl::v1_32(&stack.kubeconfig_for("bob")?)?;
    let admin = Kubectl::v1_32(&admin_kubeconfig(&stack)?)?;
    let manifest = r#"
apiVersion: v1
kind: Pod
metadata: {name: envy, namespace: dev}
spec:
  containers:
    - name: app
      image: busybox
      command: ["sh", "-c", "sleep 3600"]
      env:
        - {name: DB_PASSWORD, value: hunter2-in-env}
        - {name: LOG_LEVEL, value: debug-level}
---
apiVersion: v1
kind: Secret
metadata: {name: applied, namespace: dev}
stringData: {token: applied-token-value}
"#;
    admin
        .run_with_stdin(&["apply", "-f", "-"], Some(manifest.as_bytes()))
        .await?
        .ok()?;
    // The annotation really holds the values (straight to the emulator).
    let direct = admin
        .run(&["get", "pod", "envy", "-n", "dev", "-o", "yaml"])
        .await?
        .ok()?;
    assert!(
        direct.stdout.contains("last-applied-configuration")
            && direct.stdout.contains("hunter2-in-env"),
        "{}",
        direct.stdout
    );
    for args in [
        &["get", "pod", "envy", "-n", "dev", "-o", "yaml"][..],
        &["get", "pods", "-n", "dev", "-o", "json"][..],
        &["get", "secret", "applied", "-n", "dev", "-o", "json"][..],
    ] {
        let out = kubectl.run(args).await?.ok()?;
        for secret in ["hunter2-in-env", "applied-token-value"] {
            assert!(
                !out.stdout.contains(secret),
                "{args:?} leaked {secret}:\n{}",
                out.stdout
            );
        }
        assert!(
            out.stdout.contains("last-applied-configuration"),
            "{}",
            out.stdout
        );
    }
    let out = kubectl
        .run(&["get", "pod", "envy", "-n", "dev", "-o", "json"])
        .await?
        .ok()?;
    let pod: serde_json::Value = serde_json::from_str(&out.stdout)?;
    let env = &pod["spec"]["containers"][0]["env"];
    assert_eq!(env[0]["value"], MARKER);
    assert_eq!(
        env[1]["value"], "debug-level",
        "non-secret env values are left alone"
    );
    let applied =
        pod["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .unwrap_or_default();
    let applied: serde_json::Value = serde_json::from_str(applied)?;
    assert_eq!(applied["spec"]["containers"][0]["env"][0]["value"], MARKER);
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn logs_with_a_key_split_across_chunks_are_masked() -> anyhow::Result<()> {
    let (_dir, stack) = stack().await?;
    let kubectl = Kubectl::v1_32(&stack.kubeconfig_for("bob")?)?;
    let admin = Kubectl::v1_32(&admin_kubeconfig(&stack)?)?;
    let manifest = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: leaky, namespace: dev}}
spec:
  containers:
    - name: app
      image: busybox
      command: ["sh", "-c", "echo 'start'; echo 'export AWS_ACCESS_KEY_ID={AWS_KEY} # id'; echo 'db password=hunter2-in-log ok'; echo 'end of log'; sleep 3600"]
"#
    );
    admin
        .run_with_stdin(&["apply", "-f", "-"], Some(manifest.as_bytes()))
        .await?
        .ok()?;
    // Frames of 31 bytes: the key line is split inside the key.
    stack.emulator.set_log_chunk_bytes(31);
    let mut plain = String::new();
    for _ in 0..100 {
        plain = kubectl
            .run(&["logs", "leaky", "-n", "dev"])
            .await?
            .ok()?
            .stdout;
        if plain.contains("end of log") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(plain.contains("end of log"), "{plain}");
    assert!(
        !plain.contains(AWS_KEY) && !plain.contains("hunter2-in-log"),
        "{plain}"
    );
    assert!(
        plain.contains(&format!("AWS_ACCESS_KEY_ID={MARKER} # id")),
        "{plain}"
    );
    assert!(plain.contains(&format!("password={MARKER} ok")), "{plain}");

    let mut follow = kubectl.spawn(&["logs", "-f", "leaky", "-n", "dev"])?;
    follow
        .wait_line(Duration::from_secs(20), |l| l.contains("end of log"))
        .await?;
    let seen = follow.seen().join("\n");
    follow.stop().await;
    assert!(!seen.contains(AWS_KEY), "{seen}");
    assert!(seen.contains(MARKER), "{seen}");

    // Straight to the emulator the key is there: the masking is the agent's.
    let direct = admin.run(&["logs", "leaky", "-n", "dev"]).await?.ok()?;
    assert!(direct.stdout.contains(AWS_KEY), "{}", direct.stdout);
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn gzip_responses_are_decoded_then_masked() -> anyhow::Result<()> {
    let (_dir, stack) = stack().await?;
    stack.emulator.set_gzip_min_bytes(0);
    let ca_pem = std::fs::read_to_string(stack.ca_cert_path())?;
    let mut roots = rustls::RootCertStore::empty();
    for pem in [
        ca_pem,
        std::fs::read_to_string(stack.emulator.ca_cert_path())?,
    ] {
        for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes()) {
            roots.add(cert?)?;
        }
    }
    // explicit provider: the workspace links both ring and aws-lc-rs (aws-sdk), so rustls
    // has no process default to pick.
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let token = stack
        .issuer
        .mint_dev("bob")
        .ok_or_else(|| anyhow::anyhow!("bob is a dev user"))??;
    let path = "/api/v1/namespaces/prod/secrets";
    let get = |base: &str, token: &str| {
        http::Request::get(format!("{}{path}", base.trim_end_matches('/')))
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .header(http::header::ACCEPT_ENCODING, "gzip")
            .header(
                http::header::ACCEPT,
                "application/vnd.kubernetes.protobuf, application/json",
            )
            .body(Empty::<Bytes>::new())
    };
    // Direct: the emulator compresses.
    let direct = client
        .request(get(&stack.emulator.url(), &stack.emulator.admin_token())?)
        .await?;
    assert_eq!(
        direct
            .headers()
            .get(http::header::CONTENT_ENCODING)
            .map(|v| v.as_bytes()),
        Some(&b"gzip"[..])
    );
    // Through the agent: decoded, masked, sent plain JSON (protobuf was not asked for).
    let resp = client.request(get(stack.agent_url(), &token)?).await?;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get(http::header::CONTENT_ENCODING).is_none());
    let content_type = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body = resp.into_body().collect().await?.to_bytes();
    let list: serde_json::Value = serde_json::from_slice(&body)?;
    assert_eq!(list["kind"], "SecretList");
    assert_eq!(list["items"][0]["data"]["password"], MARKER_B64);
    assert_masked("gzip list", &String::from_utf8_lossy(&body));

    // A client that accepts only protobuf gets JSON: protobuf cannot be masked by field.
    let only_protobuf = http::Request::get(format!(
        "{}{path}/db-credentials",
        stack.agent_url().trim_end_matches('/')
    ))
    .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
    .header(http::header::ACCEPT, "application/vnd.kubernetes.protobuf")
    .body(Empty::<Bytes>::new())?;
    let resp = client.request(only_protobuf).await?;
    assert_eq!(resp.status(), 200);
    let content_type = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let secret: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await?.to_bytes())?;
    assert_eq!(secret["data"]["password"], MARKER_B64);

    // kubectl (which asks for gzip itself) still works and sees masked data.
    let kubectl = Kubectl::v1_32(&stack.kubeconfig_for("bob")?)?;
    let out = kubectl
        .run(&["get", "secrets", "-n", "prod", "-o", "yaml"])
        .await?
        .ok()?;
    assert_masked("kubectl over gzip", &out.stdout);
    assert!(out.stdout.contains(MARKER_B64), "{}", out.stdout);
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn an_oversized_response_is_refused_not_sent_unmasked() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut options = StackOptions::new(dir.path());
    options.agent_args.push("--mask-body-limit=100".into());
    let stack = Stack::start(options).await?;
    let kubectl = Kubectl::v1_32(&stack.kubeconfig_for("bob")?)?;
    let out = kubectl
        .run(&["get", "secrets", "-n", "prod", "-o", "yaml"])
        .await?;
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert_masked("oversized", &out.stdout);
    assert!(out.stderr.contains("masking limit"), "{}", out.stderr);
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_profile_file_and_default_profile_flag_choose_what_is_masked() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let profiles = dir.path().join("mask-profiles.yaml");
    std::fs::write(
        &profiles,
        r#"
profiles:
  - name: flags-only
    kinds:
      - kind: ConfigMap
        paths: ["data.~^FEATURE_"]
    lastAppliedConfiguration: false
    text:
      detectors: []
"#,
    )?;
    let mut options = StackOptions::new(dir.path());
    options.agent_args.extend([
        format!("--mask-profiles={}", profiles.display()),
        "--default-mask-profile=flags-only".to_string(),
    ]);
    let stack = Stack::start(options).await?;
    let kubectl = Kubectl::v1_32(&stack.kubeconfig_for("bob")?)?;
    let out = kubectl
        .run(&["get", "configmap", "web-config", "-n", "dev", "-o", "json"])
        .await?
        .ok()?;
    let cm: serde_json::Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(cm["data"]["FEATURE_FLAGS"], MARKER, "{}", out.stdout);
    assert_eq!(cm["data"]["LOG_LEVEL"], "debug");
    // This profile has no Secret rule: the file's profile, not the built-in, applied.
    let out = kubectl
        .run(&[
            "get",
            "secret",
            "db-credentials",
            "-n",
            "prod",
            "-o",
            "jsonpath={.data.password}",
        ])
        .await?
        .ok()?;
    assert_eq!(out.stdout.trim(), PASSWORD_B64);
    stack.shutdown().await;
    Ok(())
}
