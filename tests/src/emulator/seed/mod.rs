//! Initial cluster contents: system namespaces, the default ClusterRoles and bindings,
//! the Gatehouse impersonator role, and (for `Seed::Dev`) a small demo cluster.

mod dev;

use super::context::Shared;
use super::objects;
use super::pods;
use super::resources::find;
use super::status::ApiError;
use super::store::ObjKey;
use serde_json::{Value, json};

/// What the emulator starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Seed {
    /// `default`, `kube-system`, `kube-public`, `kube-node-lease` namespaces and default RBAC.
    #[default]
    Empty,
    /// Empty plus namespaces `dev` and `prod` with running pods, deployments, a secret,
    /// a configmap and team RBAC (engineers, sre-leads, security).
    Dev,
}

const RBAC: &str = "rbac.authorization.k8s.io";
const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];

async fn put(
    shared: &Shared,
    group: &str,
    plural: &str,
    namespace: &str,
    obj: Value,
) -> Result<(), ApiError> {
    let def = find(group, "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("unknown resource {plural}")))?;
    let obj = objects::prepare_create(def, obj, namespace)?;
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let stored = shared
        .store
        .write(&ObjKey::new(def, namespace, &name), |_| Ok(Some(obj)))?;
    if let (Some(pod), "Pod") = (stored, def.kind) {
        pods::start(&shared.runtime, &pod).await;
    }
    Ok(())
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn view_rules() -> Vec<Value> {
    vec![
        rule(
            &[""],
            &[
                "configmaps",
                "endpoints",
                "persistentvolumeclaims",
                "pods",
                "pods/log",
                "pods/status",
                "replicationcontrollers",
                "services",
                "services/status",
                "serviceaccounts",
                "events",
                "namespaces",
                "namespaces/status",
                "resourcequotas",
                "limitranges",
            ],
            READ,
        ),
        rule(
            &["apps"],
            &[
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "statefulsets",
                "daemonsets",
            ],
            READ,
        ),
        rule(&["batch"], &["jobs", "cronjobs"], READ),
    ]
}

fn edit_rules() -> Vec<Value> {
    let mut rules = view_rules();
    rules.push(rule(
        &[""],
        &[
            "pods/attach",
            "pods/exec",
            "pods/portforward",
            "pods/proxy",
            "secrets",
            "services/proxy",
        ],
        READ,
    ));
    rules.push(rule(
        &[""],
        &[
            "pods",
            "pods/attach",
            "pods/exec",
            "pods/portforward",
            "pods/proxy",
            "configmaps",
            "secrets",
            "services",
            "serviceaccounts",
            "persistentvolumeclaims",
            "replicationcontrollers",
            "events",
        ],
        WRITE,
    ));
    rules.push(rule(&[""], &["serviceaccounts"], &["impersonate"]));
    rules.push(rule(
        &["apps"],
        &[
            "deployments",
            "deployments/scale",
            "deployments/rollback",
            "replicasets",
            "statefulsets",
            "daemonsets",
        ],
        WRITE,
    ));
    rules.push(rule(&["batch"], &["jobs", "cronjobs"], WRITE));
    rules
}

fn admin_rules() -> Vec<Value> {
    let mut rules = edit_rules();
    rules.push(rule(
        &[RBAC],
        &["roles", "rolebindings"],
        &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ],
    ));
    rules.push(rule(
        &["authorization.k8s.io"],
        &["localsubjectaccessreviews"],
        &["create"],
    ));
    rules
}

fn cluster_role(name: &str, rules: Vec<Value>) -> Value {
    json!({"metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}}, "rules": rules})
}

fn subject(kind: &str, name: &str, namespace: Option<&str>) -> Value {
    match namespace {
        Some(ns) => json!({"kind": kind, "name": name, "namespace": ns}),
        None => json!({"kind": kind, "apiGroup": RBAC, "name": name}),
    }
}

fn binding(name: &str, role_kind: &str, role: &str, subjects: Vec<Value>) -> Value {
    json!({"metadata": {"name": name}, "roleRef": {"apiGroup": RBAC, "kind": role_kind, "name": role}, "subjects": subjects})
}

async fn base(shared: &Shared) -> Result<(), ApiError> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
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
    put(shared, "", "nodes", "", json!({
        "metadata": {"name": pods::NODE_NAME, "labels": {"kubernetes.io/hostname": pods::NODE_NAME, "kubernetes.io/os": "linux"}},
        "spec": {},
        "status": {"nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Gatehouse emulator", "kernelVersion": "6.18",
            "containerRuntimeVersion": "containerd://1.7.0", "operatingSystem": "linux", "architecture": "amd64"},
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": pods::NODE_NAME}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}]}
    })).await?;
    let all = vec![
        json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}),
        json!({"nonResourceURLs": ["*"], "verbs": ["*"]}),
    ];
    let discovery = vec![
        json!({"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"], "verbs": ["get"]}),
    ];
    let public_info = vec![
        json!({"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}),
    ];
    let basic_user = vec![
        rule(
            &["authorization.k8s.io"],
            &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
            &["create"],
        ),
        rule(
            &["authentication.k8s.io"],
            &["selfsubjectreviews"],
            &["create"],
        ),
    ];
    let impersonator = vec![
        rule(
            &[""],
            &["users", "groups", "serviceaccounts"],
            &["impersonate"],
        ),
        rule(
            &["authentication.k8s.io"],
            &["uids", "userextras/*"],
            &["impersonate"],
        ),
    ];
    let roles = [
        ("cluster-admin", all),
        ("admin", admin_rules()),
        ("edit", edit_rules()),
        ("view", view_rules()),
        ("system:discovery", discovery),
        ("system:public-info-viewer", public_info),
        ("system:basic-user", basic_user),
        ("gatehouse-impersonator", impersonator),
    ];
    for (name, rules) in roles {
        put(shared, RBAC, "clusterroles", "", cluster_role(name, rules)).await?;
    }
    let authenticated = || subject("Group", "system:authenticated", None);
    let bindings = [
        binding(
            "cluster-admin",
            "ClusterRole",
            "cluster-admin",
            vec![subject("Group", "system:masters", None)],
        ),
        binding(
            "system:discovery",
            "ClusterRole",
            "system:discovery",
            vec![authenticated()],
        ),
        binding(
            "system:basic-user",
            "ClusterRole",
            "system:basic-user",
            vec![authenticated()],
        ),
        binding(
            "system:public-info-viewer",
            "ClusterRole",
            "system:public-info-viewer",
            vec![
                authenticated(),
                subject("Group", "system:unauthenticated", None),
            ],
        ),
        binding(
            "gatehouse-impersonator",
            "ClusterRole",
            "gatehouse-impersonator",
            vec![subject(
                "ServiceAccount",
                "gatehouse-agent",
                Some("gatehouse"),
            )],
        ),
    ];
    for b in bindings {
        put(shared, RBAC, "clusterrolebindings", "", b).await?;
    }
    Ok(())
}

/// Loads `seed` into a fresh emulator.
pub async fn load(shared: &Shared, seed: Seed) -> Result<(), ApiError> {
    base(shared).await?;
    if seed == Seed::Dev {
        dev::load(shared).await?;
    }
    Ok(())
}
