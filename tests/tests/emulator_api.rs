//! The emulator over real TLS: status codes, RBAC, impersonation, selectors, chunking,
//! strategic merge, watch from a resourceVersion, and the request log.

use anyhow::Context;
use bytes::Bytes;
use gatehouse_tests::emulator::{Emulator, EmulatorConfig, RuntimeConfig, Seed, UserInfo};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::time::Duration;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

struct Fixture {
    emulator: Emulator,
    client: HttpsClient,
    dir: tempfile::TempDir,
}

async fn start(seed: Seed) -> anyhow::Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let emulator = Emulator::start(EmulatorConfig {
        dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse()?,
        seed,
        runtime: RuntimeConfig {
            cgroup_root: None,
            work_dir: dir.path().join("runtime"),
        },
    })
    .await?;
    let ca = std::fs::read_to_string(emulator.ca_cert_path())?;
    let tls = gatehouse_tests::pki::client_config_trusting(&ca)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_only()
        .enable_http1()
        .build();
    let client = Client::builder(TokioExecutor::new()).build(connector);
    Ok(Fixture {
        emulator,
        client,
        dir,
    })
}

struct Req<'a> {
    method: &'a str,
    path: &'a str,
    token: Option<String>,
    headers: Vec<(&'a str, &'a str)>,
    body: Option<Value>,
    content_type: &'a str,
}

impl<'a> Req<'a> {
    fn new(method: &'a str, path: &'a str, token: &str) -> Self {
        Self {
            method,
            path,
            token: Some(token.to_string()),
            headers: Vec::new(),
            body: None,
            content_type: "application/json",
        }
    }
    fn header(mut self, k: &'a str, v: &'a str) -> Self {
        self.headers.push((k, v));
        self
    }
    fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
    fn content_type(mut self, ct: &'a str) -> Self {
        self.content_type = ct;
        self
    }
}

impl Fixture {
    fn admin(&self) -> String {
        self.emulator.admin_token()
    }

    async fn send(&self, req: Req<'_>) -> anyhow::Result<(u16, Value)> {
        let resp = self.raw(req).await?;
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
        Ok((code, value))
    }

    async fn raw(&self, req: Req<'_>) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
        let mut builder = http::Request::builder()
            .method(req.method)
            .uri(format!("{}{}", self.emulator.url(), req.path))
            .header("content-type", req.content_type);
        if let Some(token) = &req.token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        for (k, v) in &req.headers {
            builder = builder.header(*k, *v);
        }
        let body = req
            .body
            .map(|b| serde_json::to_vec(&b))
            .transpose()?
            .unwrap_or_default();
        Ok(self
            .client
            .request(builder.body(Full::new(Bytes::from(body)))?)
            .await?)
    }
}

fn configmap(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})
}

#[tokio::test]
async fn status_codes_for_crud() -> anyhow::Result<()> {
    let f = start(Seed::Empty).await?;
    let t = f.admin();
    let (code, body) = f
        .send(Req::new("GET", "/api/v1/namespaces/default/pods/nope", &t))
        .await?;
    assert_eq!((code, body["reason"].as_str()), (404, Some("NotFound")));
    assert_eq!(body["message"], json!("pods \"nope\" not found"));
    let cm = configmap("a", json!({}));
    let path = "/api/v1/namespaces/default/configmaps";
    assert_eq!(
        f.send(Req::new("POST", path, &t).json(cm.clone())).await?.0,
        201
    );
    let (code, body) = f.send(Req::new("POST", path, &t).json(cm.clone())).await?;
    assert_eq!(
        (code, body["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );
    let (code, body) = f
        .send(Req::new("POST", "/api/v1/namespaces/missing/configmaps", &t).json(cm))
        .await?;
    assert_eq!(
        (code, body["message"].as_str()),
        (404, Some("namespaces \"missing\" not found"))
    );
    let (code, body) = f
        .send(Req::new("POST", path, &t).json(configmap("Bad_Name", json!({}))))
        .await?;
    assert_eq!((code, body["reason"].as_str()), (422, Some("Invalid")));
    // Stale update → 409 Conflict; current resourceVersion → 200 with a new one.
    let (_, current) = f
        .send(Req::new(
            "GET",
            "/api/v1/namespaces/default/configmaps/a",
            &t,
        ))
        .await?;
    let mut stale = current.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    let (code, body) = f
        .send(Req::new("PUT", "/api/v1/namespaces/default/configmaps/a", &t).json(stale))
        .await?;
    assert_eq!((code, body["reason"].as_str()), (409, Some("Conflict")));
    let (code, updated) = f
        .send(Req::new("PUT", "/api/v1/namespaces/default/configmaps/a", &t).json(current.clone()))
        .await?;
    assert_eq!(code, 200);
    assert_ne!(
        updated["metadata"]["resourceVersion"],
        current["metadata"]["resourceVersion"]
    );
    let (code, _) = f
        .send(Req::new("GET", "/api/v1/pods", "wrong-token"))
        .await?;
    assert_eq!(code, 401);
    f.emulator.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn selectors_chunking_and_tables() -> anyhow::Result<()> {
    let f = start(Seed::Empty).await?;
    let t = f.admin();
    let path = "/api/v1/namespaces/default/configmaps";
    for (name, tier) in [("c1", "web"), ("c2", "db"), ("c3", "web")] {
        f.send(Req::new("POST", path, &t).json(configmap(name, json!({"tier": tier}))))
            .await?;
    }
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
            .collect()
    };
    let (_, list) = f
        .send(Req::new(
            "GET",
            &format!("{path}?labelSelector=tier%20in%20(web)"),
            &t,
        ))
        .await?;
    assert_eq!(names(&list), ["c1", "c3"]);
    let (_, list) = f
        .send(Req::new(
            "GET",
            &format!("{path}?labelSelector=tier!%3Dweb"),
            &t,
        ))
        .await?;
    assert_eq!(names(&list), ["c2"]);
    let (_, list) = f
        .send(Req::new(
            "GET",
            &format!("{path}?fieldSelector=metadata.name%3Dc2"),
            &t,
        ))
        .await?;
    assert_eq!(names(&list), ["c2"]);
    let (_, page) = f
        .send(Req::new("GET", &format!("{path}?limit=2"), &t))
        .await?;
    assert_eq!(names(&page), ["c1", "c2"]);
    let token = page["metadata"]["continue"]
        .as_str()
        .context("continue token")?
        .to_string();
    let (_, rest) = f
        .send(Req::new(
            "GET",
            &format!("{path}?limit=2&continue={token}"),
            &t,
        ))
        .await?;
    assert_eq!(names(&rest), ["c3"]);
    assert!(rest["metadata"].get("continue").is_none());
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
    let (_, table) = f
        .send(Req::new("GET", path, &t).header("accept", accept))
        .await?;
    assert_eq!(table["kind"], json!("Table"));
    assert_eq!(table["columnDefinitions"][1]["name"], json!("Data"));
    assert_eq!(table["rows"][0]["cells"][0], json!("c1"));
    assert_eq!(
        table["rows"][0]["object"]["kind"],
        json!("PartialObjectMetadata")
    );
    f.emulator.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn strategic_merge_patch_on_deployment() -> anyhow::Result<()> {
    let f = start(Seed::Dev).await?;
    let t = f.admin();
    let path = "/apis/apps/v1/namespaces/dev/deployments/web";
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "web", "image": "nginx:1.28", "env": [{"name": "A", "value": "1"}]},
        {"name": "sidecar", "image": "busybox"}
    ]}}}});
    let (code, body) = f
        .send(
            Req::new("PATCH", path, &t)
                .content_type("application/strategic-merge-patch+json")
                .json(patch),
        )
        .await?;
    assert_eq!(code, 200, "{body}");
    let containers = &body["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers.as_array().map(Vec::len), Some(2));
    assert_eq!(containers[0]["image"], json!("nginx:1.28"));
    assert_eq!(body["metadata"]["generation"], json!(2));
    let delete = json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}});
    let (_, body) = f
        .send(
            Req::new("PATCH", path, &t)
                .content_type("application/strategic-merge-patch+json")
                .json(delete),
        )
        .await?;
    assert_eq!(
        body["spec"]["template"]["spec"]["containers"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let (code, _) = f
        .send(
            Req::new("PATCH", path, &t)
                .content_type("application/apply-patch+yaml")
                .json(json!({})),
        )
        .await?;
    assert_eq!(code, 415);
    f.emulator.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn rbac_and_impersonation() -> anyhow::Result<()> {
    let f = start(Seed::Dev).await?;
    f.emulator.add_token(
        "bob-token",
        UserInfo {
            username: "bob".into(),
            uid: String::new(),
            groups: vec!["engineers".into(), "system:authenticated".into()],
            extra: Default::default(),
        },
    );
    let (code, _) = f
        .send(Req::new("GET", "/api/v1/namespaces/prod/pods", "bob-token"))
        .await?;
    assert_eq!(code, 200);
    let (code, body) = f
        .send(Req::new(
            "GET",
            "/api/v1/namespaces/prod/secrets",
            "bob-token",
        ))
        .await?;
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        json!(
            "secrets is forbidden: User \"bob\" cannot list resource \"secrets\" in API group \"\" in the namespace \"prod\""
        )
    );
    let (code, _) = f
        .send(Req::new(
            "DELETE",
            "/api/v1/namespaces/dev/pods/web-7d9f8b6c4-x2k9p",
            "bob-token",
        ))
        .await?;
    assert_eq!(code, 200);
    // bob cannot impersonate.
    let (code, body) = f
        .send(
            Req::new("GET", "/api/v1/namespaces/dev/pods", "bob-token")
                .header("impersonate-user", "alice"),
        )
        .await?;
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        json!(
            "users \"alice\" is forbidden: User \"bob\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        )
    );
    // The agent may, and the request is authorized as the impersonated user.
    let agent = f.emulator.agent_token();
    let as_alice = |path| {
        Req::new("GET", path, &agent)
            .header("impersonate-user", "alice")
            .header("impersonate-group", "security")
    };
    assert_eq!(f.send(as_alice("/api/v1/pods")).await?.0, 200);
    assert_eq!(
        f.send(as_alice("/api/v1/namespaces/prod/secrets")).await?.0,
        403
    );
    let (code, _) = f
        .send(Req::new("GET", "/api/v1/pods", &agent).header("impersonate-group", "x"))
        .await?;
    assert_eq!(code, 400);
    // SelfSubjectAccessReview as the impersonated user.
    let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"namespace": "dev", "verb": "create", "resource": "pods", "subresource": "exec"}}});
    let (_, body) = f
        .send(
            Req::new(
                "POST",
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                &agent,
            )
            .header("impersonate-user", "carol")
            .header("impersonate-group", "engineers")
            .json(review.clone()),
        )
        .await?;
    assert_eq!(body["status"]["allowed"], json!(true));
    let (_, body) = f
        .send(
            Req::new(
                "POST",
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                &agent,
            )
            .header("impersonate-user", "carol")
            .header("impersonate-group", "security")
            .json(review),
        )
        .await?;
    assert_eq!(body["status"]["allowed"], json!(false));
    let log = f.emulator.request_log();
    let record = log
        .iter()
        .find(|r| {
            r.path == "/api/v1/namespaces/prod/secrets"
                && r.user.starts_with("system:serviceaccount")
        })
        .context("logged")?;
    assert_eq!(record.impersonated_user.as_deref(), Some("alice"));
    assert_eq!(record.impersonated_groups, ["security"]);
    assert_eq!((record.verb.as_str(), record.code), ("list", 403));
    f.emulator.shutdown().await;
    Ok(())
}

async fn next_event(body: &mut hyper::body::Incoming, buf: &mut Vec<u8>) -> anyhow::Result<Value> {
    loop {
        if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            return Ok(serde_json::from_slice(&line)?);
        }
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await?
            .context("stream ended")??;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
    }
}

#[tokio::test]
async fn watch_from_resource_version() -> anyhow::Result<()> {
    let f = start(Seed::Empty).await?;
    let t = f.admin();
    let path = "/api/v1/namespaces/default/configmaps";
    let (_, created) = f
        .send(Req::new("POST", path, &t).json(configmap("w1", json!({}))))
        .await?;
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .context("rv")?
        .to_string();
    f.send(Req::new("POST", path, &t).json(configmap("w2", json!({}))))
        .await?;
    let watch_path = format!("{path}?watch=true&resourceVersion={rv}");
    let resp = f.raw(Req::new("GET", &watch_path, &t)).await?;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    let first = next_event(&mut body, &mut buf).await?;
    assert_eq!(
        (
            first["type"].as_str(),
            first["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("w2"))
    );
    f.send(Req::new("DELETE", &format!("{path}/w1"), &t))
        .await?;
    let second = next_event(&mut body, &mut buf).await?;
    assert_eq!(
        (
            second["type"].as_str(),
            second["object"]["metadata"]["name"].as_str()
        ),
        (Some("DELETED"), Some("w1"))
    );
    // A named watch at resourceVersion 0 starts with the current state.
    let resp = f
        .raw(Req::new(
            "GET",
            &format!("{path}?watch=true&resourceVersion=0&fieldSelector=metadata.name%3Dw2"),
            &t,
        ))
        .await?;
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    let first = next_event(&mut body, &mut buf).await?;
    assert_eq!(
        (
            first["type"].as_str(),
            first["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("w2"))
    );
    let log = f.emulator.request_log();
    assert!(log.iter().any(|r| r.verb == "watch" && r.code == 200));
    f.emulator.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn discovery_and_openapi() -> anyhow::Result<()> {
    let f = start(Seed::Empty).await?;
    let t = f.admin();
    let resp = f
        .raw(Req::new("GET", "/apis", &t).header(
            "accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        ))
        .await?;
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(ct.contains("as=APIGroupDiscoveryList"), "{ct}");
    let (_, legacy) = f.send(Req::new("GET", "/apis", &t)).await?;
    assert_eq!(legacy["kind"], json!("APIGroupList"));
    let (code, list) = f.send(Req::new("GET", "/apis/apps/v1", &t)).await?;
    assert_eq!(code, 200);
    assert_eq!(list["resources"][0]["name"], json!("deployments"));
    let resp = f
        .raw(Req::new("GET", "/openapi/v2", &t).header(
            "accept",
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
        ))
        .await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(f.send(Req::new("GET", "/openapi/v3", &t)).await?.0, 404);
    let mut anonymous = Req::new("GET", "/version", "");
    anonymous.token = None;
    assert_eq!(f.send(anonymous).await?.0, 200);
    f.emulator.shutdown().await;
    Ok(())
}

/// Runs the preinstalled kubectl 1.32 against the fixture.
fn kubectl(f: &Fixture, args: &[&str]) -> anyhow::Result<(bool, String)> {
    let dir = f.dir.path();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: e\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: a\n  user:\n    token: {}\ncontexts:\n- name: e\n  context: {{cluster: e, user: a}}\ncurrent-context: e\n",
            f.emulator.url(),
            f.emulator.ca_cert_path().display(),
            f.admin()
        ),
    )?;
    let cache = tempfile::tempdir()?;
    let out = std::process::Command::new("/usr/bin/kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(cache.path())
        .args(args)
        .output()
        .context("running /usr/bin/kubectl")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_apply_twice_with_default_validation() -> anyhow::Result<()> {
    let f = start(Seed::Empty).await?;
    let manifest = f.dir.path().join("cm.yaml");
    let write = |value: &str| {
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  namespace: default\ndata:\n  k: {value}\n"
            ),
        )
    };
    let path = manifest.to_string_lossy().to_string();
    write("one")?;
    let (ok, out) = tokio::task::block_in_place(|| kubectl(&f, &["apply", "-f", &path]))?;
    assert!(ok && out.contains("configmap/app created"), "{out}");
    write("two")?;
    let (ok, out) = tokio::task::block_in_place(|| kubectl(&f, &["apply", "-f", &path]))?;
    assert!(ok && out.contains("configmap/app configured"), "{out}");
    let (ok, out) = tokio::task::block_in_place(|| {
        kubectl(&f, &["get", "cm", "app", "-o", "jsonpath={.data.k}"])
    })?;
    assert!(ok && out == "two", "{out}");
    let (ok, out) = tokio::task::block_in_place(|| kubectl(&f, &["create", "namespace", "team"]))?;
    assert!(ok && out.contains("namespace/team created"), "{out}");
    let (ok, out) = tokio::task::block_in_place(|| {
        kubectl(&f, &["auth", "can-i", "get", "pods", "--as", "nobody"])
    })?;
    assert!(!ok && out.trim() == "no", "{out}");
    f.emulator.shutdown().await;
    Ok(())
}
