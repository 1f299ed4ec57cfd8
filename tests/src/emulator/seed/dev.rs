//! `Seed::Dev`: namespaces dev and prod with running pods, deployments, a secret, a
//! configmap, a service and team RBAC (engineers, sre-leads, security).

use super::{RBAC, binding, put, subject};
use crate::emulator::context::Shared;
use crate::emulator::status::ApiError;
use serde_json::{Value, json};

fn looping(message: &str) -> Value {
    json!([
        "sh",
        "-c",
        format!("while true; do echo \"$(date -u +%H:%M:%S) {message}\"; sleep 2; done")
    ])
}

fn pod(name: &str, app: &str, image: &str, message: &str) -> Value {
    json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": app, "image": image, "command": looping(message),
            "ports": [{"containerPort": 8080, "protocol": "TCP"}]}]},
    })
}

fn deployment(name: &str, replicas: u32, image: &str) -> Value {
    json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": name, "image": image}]}}},
    })
}

/// Loads the demo contents.
pub(super) async fn load(shared: &Shared) -> Result<(), ApiError> {
    for ns in ["dev", "prod", "gatehouse"] {
        put(
            shared,
            "",
            "namespaces",
            "",
            json!({"metadata": {"name": ns}}),
        )
        .await?;
        put(
            shared,
            "",
            "serviceaccounts",
            ns,
            json!({"metadata": {"name": "default"}}),
        )
        .await?;
    }
    put(
        shared,
        "",
        "serviceaccounts",
        "gatehouse",
        json!({"metadata": {"name": "gatehouse-agent"}}),
    )
    .await?;
    put(
        shared,
        "",
        "pods",
        "dev",
        pod(
            "web-7d9f8b6c4-x2k9p",
            "web",
            "nginx:1.27",
            "web: served GET / 200",
        ),
    )
    .await?;
    put(
        shared,
        "",
        "pods",
        "prod",
        pod(
            "api-5c8d7f9b6-q7r4t",
            "api",
            "ghcr.io/example/api:2.3.1",
            "api: handled request",
        ),
    )
    .await?;
    put(
        shared,
        "",
        "pods",
        "prod",
        pod("db-0", "db", "postgres:16", "db: checkpoint complete"),
    )
    .await?;
    put(
        shared,
        "",
        "pods",
        "kube-system",
        pod(
            "coredns-668d6bf9bc-4m2xv",
            "coredns",
            "registry.k8s.io/coredns/coredns:v1.11.3",
            "coredns: [INFO] plugin/reload",
        ),
    )
    .await?;
    put(
        shared,
        "apps",
        "deployments",
        "dev",
        deployment("web", 1, "nginx:1.27"),
    )
    .await?;
    put(
        shared,
        "apps",
        "deployments",
        "prod",
        deployment("api", 2, "ghcr.io/example/api:2.3.1"),
    )
    .await?;
    put(
        shared,
        "",
        "secrets",
        "prod",
        json!({"metadata": {"name": "db-credentials"}, "type": "Opaque",
        "data": {"username": "YXBw", "password": "czNjcjN0LXBAc3N3MHJk"}}),
    )
    .await?;
    put(shared, "", "configmaps", "dev", json!({"metadata": {"name": "web-config"}, "data": {"LOG_LEVEL": "debug", "FEATURE_FLAGS": "new-ui"}})).await?;
    put(shared, "", "services", "dev", json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}})).await?;
    let group = |name: &str| subject("Group", name, None);
    put(
        shared,
        RBAC,
        "rolebindings",
        "dev",
        binding(
            "engineers-edit",
            "ClusterRole",
            "edit",
            vec![group("engineers")],
        ),
    )
    .await?;
    put(
        shared,
        RBAC,
        "rolebindings",
        "prod",
        binding(
            "engineers-view",
            "ClusterRole",
            "view",
            vec![group("engineers")],
        ),
    )
    .await?;
    put(
        shared,
        RBAC,
        "clusterrolebindings",
        "",
        binding(
            "sre-leads-cluster-admin",
            "ClusterRole",
            "cluster-admin",
            vec![group("sre-leads")],
        ),
    )
    .await?;
    put(
        shared,
        RBAC,
        "clusterrolebindings",
        "",
        binding(
            "security-view",
            "ClusterRole",
            "view",
            vec![group("security")],
        ),
    )
    .await?;
    Ok(())
}
