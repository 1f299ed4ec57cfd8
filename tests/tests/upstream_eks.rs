//! The agent's `eks` upstream credential end to end, against a real STS (moto's server on
//! loopback, behind a front that counts calls and verifies presigned URLs, see
//! `gatehouse_tests::sts`): IRSA web identity → AssumeRole into the agent's role → EKS
//! token → the emulator verifies it as aws-iam-authenticator does and maps the role.
//!
//! Needs the binaries (`cargo build --workspace --bins`) and moto (`cargo xtask setup`);
//! without moto every test prints `SKIP` and passes nothing else.

use aws_credential_types::Credentials;
use base64::Engine;
use bytes::Bytes;
use gatehouse_agent::upstream::eks::presign_token;
use gatehouse_tests::emulator::eks::{ArnMapping, EksAuthConfig, EksAuthenticator};
use gatehouse_tests::harness::kubeconfig::{self, Credential};
use gatehouse_tests::harness::kubectl::Kubectl;
use gatehouse_tests::harness::stack::{Stack, StackOptions};
use gatehouse_tests::sts::{Moto, StsFront};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const ACCOUNT: &str = "123456789012";
const CLUSTER: &str = "gatehouse-test";
const REGION: &str = "us-east-1";
const SESSION: &str = "gatehouse-node-a";
const DEV_POD: &str = "web-7d9f8b6c4-x2k9p";

fn role(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/{name}")
}

/// Moto, its front, and a stack whose agent runs in `eks` mode.
struct EksStack {
    stack: Stack,
    front: StsFront,
    authenticator: Arc<EksAuthenticator>,
    _moto: Moto,
    dir: tempfile::TempDir,
}

/// With `assume_role` the agent assumes `gatehouse-agent` (mapped); without, it uses the
/// IRSA role `gatehouse-irsa` itself (then the mapped one).
async fn eks_stack(sts_up_at_start: bool, assume_role: bool) -> anyhow::Result<Option<EksStack>> {
    let dir = tempfile::tempdir()?;
    let Some(moto) = Moto::launch(dir.path())? else {
        return Ok(None);
    };
    let front = StsFront::start(moto.addr()).await?;
    front.set_available(sts_up_at_start);
    // IRSA: kubelet projects a service-account token; moto does not check its signature.
    let web_identity = dir.path().join("irsa-token");
    std::fs::write(
        &web_identity,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2ln",
    )?;
    let mut options = StackOptions::new(dir.path().join("stack"));
    options.agent_args = vec![
        "--upstream-credential=eks".into(),
        format!("--eks-cluster-name={CLUSTER}"),
        format!("--aws-region={REGION}"),
        format!("--sts-endpoint={}", front.url()),
    ];
    if assume_role {
        options.agent_args.extend([
            format!("--assume-role-arn={}", role("gatehouse-agent")),
            format!("--role-session-name={SESSION}"),
            "--external-id=gatehouse-test-external-id".into(),
        ]);
    }
    let missing = dir.path().join("no-such-aws-file");
    options.agent_env = [
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            web_identity.display().to_string(),
        ),
        ("AWS_ROLE_ARN", role("gatehouse-irsa")),
        ("AWS_ROLE_SESSION_NAME", "irsa-session".into()),
        // The base chain's own STS call (AssumeRoleWithWebIdentity), as any AWS SDK.
        ("AWS_ENDPOINT_URL_STS", front.url()),
        ("AWS_CONFIG_FILE", missing.display().to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE", missing.display().to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let stack = Stack::start(options).await?;
    let authenticator = stack.emulator.enable_eks(EksAuthConfig {
        cluster_id: CLUSTER.into(),
        sts_endpoint: front.url(),
        mappings: vec![ArnMapping {
            arn: role(if assume_role {
                "gatehouse-agent"
            } else {
                "gatehouse-irsa"
            }),
            username: "gatehouse-agent:{{SessionName}}".into(),
            groups: vec!["gatehouse:agents".into()],
        }],
    })?;
    // The RBAC the docs prescribe: the impersonation ClusterRole bound to the role's group.
    let deploy = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let admin = admin_kubectl(&stack, dir.path())?;
    admin
        .run(&[
            "apply",
            "-f",
            &deploy
                .join("agent-impersonation-rbac.yaml")
                .display()
                .to_string(),
            "-f",
            &deploy
                .join("eks/impersonator-binding.yaml")
                .display()
                .to_string(),
        ])
        .await?
        .ok()?;
    Ok(Some(EksStack {
        stack,
        front,
        authenticator,
        _moto: moto,
        dir,
    }))
}

fn admin_kubectl(stack: &Stack, dir: &std::path::Path) -> anyhow::Result<Kubectl> {
    let path = dir.join("kubeconfig-emulator-admin");
    kubeconfig::write(&path, &[stack.emulator_admin_context()])?;
    Kubectl::v1_32(&path)
}

/// kubectl straight at the emulator with `token` (as the agent would present it).
fn direct_kubectl(s: &EksStack, name: &str, token: &str) -> anyhow::Result<Kubectl> {
    let mut context = s.stack.emulator_admin_context();
    context.name = name.into();
    context.credential = Credential::Token(token.into());
    let path = s.dir.path().join(format!("kubeconfig-{name}"));
    kubeconfig::write(&path, &[context])?;
    Kubectl::v1_32(&path)
}

/// Credentials of `role_arn` straight from STS (moto), as a test client would get them.
async fn assume(front: &StsFront, role_arn: &str) -> anyhow::Result<Credentials> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("Action", "AssumeRole")
        .append_pair("Version", "2011-06-15")
        .append_pair("RoleArn", role_arn)
        .append_pair("RoleSessionName", "test-client")
        .finish();
    let req = http::Request::post(format!("{}/", front.url()))
        .header("content-type", "application/x-www-form-urlencoded")
        // moto routes by the credential scope's service and ignores the signature.
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/sts/aws4_request, \
             SignedHeaders=host, Signature=0",
        )
        .body(Full::new(Bytes::from(body)))?;
    let resp = client.request(req).await?;
    let text = String::from_utf8(resp.into_body().collect().await?.to_bytes().to_vec())?;
    let field = |name: &str| -> anyhow::Result<String> {
        let open = format!("<{name}>");
        let start = text
            .find(&open)
            .ok_or_else(|| anyhow::anyhow!("no {name} in {text}"))?
            + open.len();
        let end = text[start..]
            .find('<')
            .ok_or_else(|| anyhow::anyhow!("bad XML"))?
            + start;
        Ok(text[start..end].to_string())
    };
    Ok(Credentials::new(
        field("AccessKeyId")?,
        field("SecretAccessKey")?,
        Some(field("SessionToken")?),
        None,
        "test",
    ))
}

fn token_for(
    front: &StsFront,
    creds: &Credentials,
    cluster: &str,
    at: SystemTime,
) -> anyhow::Result<String> {
    let sts = url::Url::parse(&front.url())?;
    presign_token(creds, REGION, &sts, cluster, at).map_err(anyhow::Error::msg)
}

#[tokio::test]
async fn kubectl_through_the_agent_as_the_assumed_role() -> anyhow::Result<()> {
    let Some(s) = eks_stack(true, true).await? else {
        return Ok(());
    };
    let kubectl = Kubectl::v1_32(&s.stack.kubeconfig_for("alice")?)?;
    let out = kubectl.run(&["get", "pods", "-n", "dev"]).await?.ok()?;
    assert!(out.stdout.contains(DEV_POD), "{}", out.stdout);

    // The emulator saw the agent as its mapped role session, impersonating alice.
    let log = s.stack.emulator.request_log();
    let list = log
        .iter()
        .find(|r| r.path == "/api/v1/namespaces/dev/pods" && r.verb == "list")
        .ok_or_else(|| anyhow::anyhow!("no pod list in {log:#?}"))?;
    assert_eq!(list.user, format!("gatehouse-agent:{SESSION}"));
    assert_eq!(list.impersonated_user.as_deref(), Some("alice"));
    assert!(
        list.impersonated_groups.iter().any(|g| g == "engineers"),
        "{list:?}"
    );
    assert_eq!(list.code, 200);
    // Per-user RBAC still applies: alice may not read prod secrets.
    let out = kubectl
        .run(&["get", "secret", "db-credentials", "-n", "prod"])
        .await?;
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("Forbidden") && out.stderr.contains("alice"),
        "{}",
        out.stderr
    );

    // Web identity first, then the role; both at the real STS, once.
    let calls = s.front.all_calls();
    assert_eq!(s.front.calls("AssumeRoleWithWebIdentity"), 1, "{calls:?}");
    assert_eq!(s.front.calls("AssumeRole"), 1, "{calls:?}");
    let first = |a: &str| calls.iter().position(|c| c == a);
    assert!(
        first("AssumeRoleWithWebIdentity") < first("AssumeRole"),
        "{calls:?}"
    );
    assert!(s.front.calls("GetCallerIdentity") >= 1, "{calls:?}");
    assert!(s.front.refusals().is_empty(), "{:?}", s.front.refusals());
    // The agent never logs its token.
    let agent_log = std::fs::read_to_string(&s.stack.agent.log_path)?;
    assert!(!agent_log.contains("k8s-aws-v1."), "token in the agent log");
    s.stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn forged_expired_and_unmapped_tokens_are_refused() -> anyhow::Result<()> {
    let Some(s) = eks_stack(true, true).await? else {
        return Ok(());
    };
    let mapped = assume(&s.front, &role("gatehouse-agent")).await?;
    let now = SystemTime::now();

    // A good token, presented straight to the emulator, is accepted and mapped.
    let good = token_for(&s.front, &mapped, CLUSTER, now)?;
    let out = direct_kubectl(&s, "good", &good)?
        .run(&["auth", "whoami"])
        .await?
        .ok()?;
    assert!(
        out.stdout.contains("gatehouse-agent:test-client"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("gatehouse:agents"), "{}", out.stdout);

    // Tampered: a different X-Amz-Date passes every structural check, but not STS's
    // signature check.
    let url = String::from_utf8(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(good.trim_start_matches("k8s-aws-v1."))?,
    )?;
    let date = url::Url::parse(&url)?
        .query_pairs()
        .find(|(k, _)| k == "X-Amz-Date")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| anyhow::anyhow!("no date in {url}"))?;
    let earlier = chrono::NaiveDateTime::parse_from_str(&date, "%Y%m%dT%H%M%SZ")?
        - chrono::Duration::seconds(1);
    let tampered_url = url.replace(&date, &earlier.format("%Y%m%dT%H%M%SZ").to_string());
    let tampered = format!(
        "k8s-aws-v1.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tampered_url)
    );

    let unmapped = assume(&s.front, &role("someone-else")).await?;
    let cases = [
        (
            "wrong-cluster",
            token_for(&s.front, &mapped, "another-cluster", now)?,
            "SignatureDoesNotMatch",
        ),
        (
            "expired",
            token_for(
                &s.front,
                &mapped,
                CLUSTER,
                now - Duration::from_secs(20 * 60),
            )?,
            "expired",
        ),
        ("tampered", tampered, "SignatureDoesNotMatch"),
        (
            "unmapped",
            token_for(&s.front, &unmapped, CLUSTER, now)?,
            "is not mapped",
        ),
    ];
    for (name, token, reason) in cases {
        let before = s.authenticator.refusals().len();
        let out = direct_kubectl(&s, name, &token)?
            .run(&["get", "pods", "-n", "dev"])
            .await?;
        assert_ne!(out.code, 0, "{name} accepted: {}", out.stdout);
        assert!(
            out.stderr.contains("You must be logged in"),
            "{name}: {}",
            out.stderr
        );
        let refusals = s.authenticator.refusals();
        assert!(
            refusals[before..].iter().any(|r| r.contains(reason)),
            "{name}: wanted {reason:?} in {refusals:?}"
        );
    }
    s.stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn sts_outage_fails_closed_with_503_and_recovers() -> anyhow::Result<()> {
    let Some(s) = eks_stack(false, true).await? else {
        return Ok(());
    };
    let kubectl = Kubectl::v1_32(&s.stack.kubeconfig_for("alice")?)?;
    // kubectl prints the agent's Status message (`get` would stop at discovery with a
    // generic "unable to handle the request"; `--raw` shows what the agent said).
    let out = kubectl
        .run(&["get", "--raw", "/api/v1/namespaces/dev/pods"])
        .await?;
    eprintln!("kubectl during the STS outage: {}", out.stderr.trim());
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains("Error from server (ServiceUnavailable)")
            && out.stderr.contains("upstream credential")
            && out.stderr.contains("role/gatehouse-agent"),
        "{}",
        out.stderr
    );
    let out = kubectl.run(&["get", "pods", "-n", "dev"]).await?;
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("ServiceUnavailable"), "{}", out.stderr);
    // Nothing reached the API server without a credential.
    assert!(
        s.stack
            .emulator
            .request_log()
            .iter()
            .all(|r| r.path != "/api/v1/namespaces/dev/pods"),
        "forwarded without a credential"
    );

    s.front.set_available(true);
    // A failed renewal is remembered for a second (STS is not hammered); retry past it.
    let mut last = String::new();
    for _ in 0..20 {
        let out = kubectl.run(&["get", "pods", "-n", "dev"]).await?;
        if out.code == 0 {
            assert!(out.stdout.contains(DEV_POD), "{}", out.stdout);
            s.stack.shutdown().await;
            return Ok(());
        }
        last = out.stderr;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!("the agent did not recover after STS came back: {last}")
}

#[tokio::test]
async fn one_sts_call_per_refresh_window_under_concurrent_load() -> anyhow::Result<()> {
    let Some(s) = eks_stack(true, true).await? else {
        return Ok(());
    };
    let ca = std::fs::read_to_string(s.stack.ca_cert_path())?;
    let tls = gatehouse_tests::pki::client_config_trusting(&ca)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_only()
        .enable_http1()
        .build();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let token = s
        .stack
        .issuer
        .mint_dev("alice")
        .ok_or_else(|| anyhow::anyhow!("no alice"))??;
    let url = format!("{}/api/v1/namespaces/dev/pods", s.stack.agent_url());
    let burst = |n: usize| {
        let calls = (0..n).map(|_| {
            let req = http::Request::get(&url)
                .header("authorization", format!("Bearer {token}"))
                .body(Empty::new());
            let client = client.clone();
            async move { anyhow::Ok(client.request(req?).await?.status().as_u16()) }
        });
        futures_util::future::join_all(calls)
    };
    // Cold cache: 64 requests arrive together; one credential fetch serves them all.
    let codes = burst(64).await;
    assert!(codes.iter().all(|c| matches!(c, Ok(200))), "{codes:?}");
    assert_eq!(
        s.front.calls("AssumeRoleWithWebIdentity"),
        1,
        "{:?}",
        s.front.all_calls()
    );
    assert_eq!(s.front.calls("AssumeRole"), 1, "{:?}", s.front.all_calls());
    // Warm: another 64, still inside the window: no STS call at all, the same token.
    let codes = burst(64).await;
    assert!(codes.iter().all(|c| matches!(c, Ok(200))), "{codes:?}");
    assert_eq!(s.front.calls("AssumeRoleWithWebIdentity"), 1);
    assert_eq!(s.front.calls("AssumeRole"), 1);
    // One token for all 128 requests: the emulator verified exactly one at STS.
    assert_eq!(
        s.front.calls("GetCallerIdentity"),
        1,
        "{:?}",
        s.front.all_calls()
    );
    s.stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_irsa_role_itself_without_assume_role() -> anyhow::Result<()> {
    let Some(s) = eks_stack(true, false).await? else {
        return Ok(());
    };
    let kubectl = Kubectl::v1_32(&s.stack.kubeconfig_for("bob")?)?;
    let out = kubectl.run(&["get", "pods", "-n", "dev"]).await?.ok()?;
    assert!(out.stdout.contains(DEV_POD), "{}", out.stdout);
    let log = s.stack.emulator.request_log();
    let list = log
        .iter()
        .find(|r| r.path == "/api/v1/namespaces/dev/pods" && r.verb == "list")
        .ok_or_else(|| anyhow::anyhow!("no pod list in {log:#?}"))?;
    assert_eq!(list.user, "gatehouse-agent:irsa-session");
    assert_eq!(list.impersonated_user.as_deref(), Some("bob"));
    assert_eq!(
        s.front.calls("AssumeRoleWithWebIdentity"),
        1,
        "{:?}",
        s.front.all_calls()
    );
    assert_eq!(s.front.calls("AssumeRole"), 0, "{:?}", s.front.all_calls());
    s.stack.shutdown().await;
    Ok(())
}
