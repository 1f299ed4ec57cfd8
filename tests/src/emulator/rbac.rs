//! RBAC evaluation over the stored Roles, ClusterRoles and their bindings.

use super::authn::UserInfo;
use super::store::Store;
use serde_json::{Value, json};

const RBAC: &str = "rbac.authorization.k8s.io";

/// What is being asked, as `authorizer.Attributes`.
#[derive(Debug, Clone, Default)]
pub struct Attributes {
    /// Verb (`get`, `impersonate`, …).
    pub verb: String,
    /// Resource request (else non-resource `path`).
    pub resource_request: bool,
    /// Namespace.
    pub namespace: String,
    /// API group.
    pub api_group: String,
    /// Resource.
    pub resource: String,
    /// Subresource.
    pub subresource: String,
    /// Name.
    pub name: String,
    /// Path, for non-resource requests.
    pub path: String,
}

fn strs(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Whether one PolicyRule allows `attrs` (rbac `RuleAllows`).
pub fn rule_allows(rule: &Value, attrs: &Attributes) -> bool {
    let verbs = strs(rule.get("verbs"));
    if !verbs.iter().any(|v| *v == "*" || *v == attrs.verb) {
        return false;
    }
    if !attrs.resource_request {
        return strs(rule.get("nonResourceURLs")).iter().any(|u| {
            *u == "*"
                || *u == attrs.path
                || u.strip_suffix('*')
                    .is_some_and(|prefix| attrs.path.starts_with(prefix))
        });
    }
    let groups = strs(rule.get("apiGroups"));
    if !groups.iter().any(|g| *g == "*" || *g == attrs.api_group) {
        return false;
    }
    let combined = if attrs.subresource.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}/{}", attrs.resource, attrs.subresource)
    };
    let resources = strs(rule.get("resources"));
    let resource_ok = resources.iter().any(|r| {
        *r == "*"
            || *r == combined
            || (!attrs.subresource.is_empty()
                && r.strip_prefix("*/") == Some(attrs.subresource.as_str()))
    });
    if !resource_ok {
        return false;
    }
    let names = strs(rule.get("resourceNames"));
    names.is_empty() || names.contains(&attrs.name.as_str())
}

/// Whether a binding subject names `user`.
fn subject_matches(subject: &Value, user: &UserInfo, binding_ns: &str) -> bool {
    let name = subject
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match subject.get("kind").and_then(Value::as_str) {
        Some("User") => user.username == name,
        Some("Group") => user.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let ns = subject
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            user.username == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

/// Rules granted to `user` in `namespace` (cluster-wide rules plus that namespace's).
pub fn rules_for(store: &Store, user: &UserInfo, namespace: &str) -> Vec<Value> {
    let mut rules = Vec::new();
    let mut add_role = |kind: &str, role_ns: &str, name: &str| {
        let (resource, ns) = if kind == "ClusterRole" {
            ("clusterroles", "")
        } else {
            ("roles", role_ns)
        };
        let key = super::store::ObjKey {
            resource: format!("{RBAC}/{resource}"),
            namespace: ns.to_string(),
            name: name.to_string(),
        };
        if let Some(role) = store.get(&key) {
            rules.extend(
                role.get("rules")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            );
        }
    };
    let (crbs, _) = store.list(&format!("{RBAC}/clusterrolebindings"), None);
    let rbs = if namespace.is_empty() {
        Vec::new()
    } else {
        store
            .list(&format!("{RBAC}/rolebindings"), Some(namespace))
            .0
    };
    for binding in crbs.iter().chain(rbs.iter()) {
        let binding_ns = binding
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let subjects = binding.get("subjects").and_then(Value::as_array);
        if !subjects
            .into_iter()
            .flatten()
            .any(|s| subject_matches(s, user, binding_ns))
        {
            continue;
        }
        let kind = binding
            .pointer("/roleRef/kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let name = binding
            .pointer("/roleRef/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        add_role(kind, binding_ns, name);
    }
    rules
}

/// The authorization decision: `system:masters` bypass, then RBAC.
pub fn authorize(store: &Store, user: &UserInfo, attrs: &Attributes) -> bool {
    user.is_master()
        || rules_for(store, user, &attrs.namespace)
            .iter()
            .any(|r| rule_allows(r, attrs))
}

/// The message of a 403, worded like the API server's.
pub fn forbidden_message(user: &UserInfo, attrs: &Attributes) -> String {
    let who = &user.username;
    if !attrs.resource_request {
        return format!(
            "forbidden: User {who:?} cannot {} path {:?}",
            attrs.verb, attrs.path
        );
    }
    let mut resource = attrs.resource.clone();
    if !attrs.subresource.is_empty() {
        resource = format!("{resource}/{}", attrs.subresource);
    }
    let scope = if attrs.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace {:?}", attrs.namespace)
    };
    let detail = format!(
        "User {who:?} cannot {} resource {resource:?} in API group {:?} {scope}",
        attrs.verb, attrs.api_group
    );
    let qualified = if attrs.api_group.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}.{}", attrs.resource, attrs.api_group)
    };
    if attrs.name.is_empty() {
        format!("{qualified} is forbidden: {detail}")
    } else {
        format!("{qualified} {:?} is forbidden: {detail}", attrs.name)
    }
}

/// The `ApiError` for a denied request.
pub fn forbidden(user: &UserInfo, attrs: &Attributes) -> super::status::ApiError {
    super::status::ApiError::forbidden(forbidden_message(user, attrs)).with_details(json!({
        "name": attrs.name, "group": attrs.api_group, "kind": attrs.resource,
    }))
}

/// `SelfSubjectRulesReview.status` for `user` in `namespace`.
pub fn rules_review(store: &Store, user: &UserInfo, namespace: &str) -> Value {
    let mut rules = rules_for(store, user, namespace);
    if user.is_master() {
        rules.push(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
        rules.push(json!({"verbs": ["*"], "nonResourceURLs": ["*"]}));
    }
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for rule in rules {
        if rule.get("nonResourceURLs").is_some() {
            non_resource_rules
                .push(json!({"verbs": rule["verbs"], "nonResourceURLs": rule["nonResourceURLs"]}));
        }
        if rule.get("resources").is_some() {
            let mut r = json!({"verbs": rule["verbs"], "apiGroups": rule.get("apiGroups").cloned().unwrap_or(json!([])), "resources": rule["resources"]});
            if let Some(names) = rule.get("resourceNames") {
                r["resourceNames"] = names.clone();
            }
            resource_rules.push(r);
        }
    }
    json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource_request: true,
            namespace: "dev".into(),
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            path: String::new(),
        }
    }

    #[test]
    fn rule_matching() {
        let rule =
            json!({"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]});
        assert!(rule_allows(&rule, &attrs("get", "", "pods", "", "x")));
        assert!(rule_allows(&rule, &attrs("get", "", "pods", "log", "x")));
        assert!(!rule_allows(&rule, &attrs("get", "", "pods", "exec", "x")));
        assert!(!rule_allows(&rule, &attrs("delete", "", "pods", "", "x")));
        assert!(!rule_allows(&rule, &attrs("get", "apps", "pods", "", "x")));
        let named = json!({"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["*"], "resourceNames": ["web"]});
        assert!(rule_allows(
            &named,
            &attrs("patch", "apps", "deployments", "scale", "web")
        ));
        assert!(!rule_allows(
            &named,
            &attrs("patch", "apps", "deployments", "scale", "db")
        ));
        let nonres = json!({"nonResourceURLs": ["/healthz", "/api/*"], "verbs": ["get"]});
        let mut a = attrs("get", "", "", "", "");
        a.resource_request = false;
        a.path = "/api/v1".into();
        assert!(rule_allows(&nonres, &a));
        a.path = "/version".into();
        assert!(!rule_allows(&nonres, &a));
    }

    #[test]
    fn forbidden_wording() {
        let user = UserInfo::new("u", &[]);
        let mut a = attrs("list", "", "pods", "", "");
        a.namespace = "ns".into();
        assert_eq!(
            forbidden_message(&user, &a),
            r#"pods is forbidden: User "u" cannot list resource "pods" in API group "" in the namespace "ns""#
        );
        let a = Attributes {
            verb: "impersonate".into(),
            resource_request: true,
            resource: "users".into(),
            name: "alice".into(),
            ..Default::default()
        };
        assert_eq!(
            forbidden_message(&UserInfo::new("x", &[]), &a),
            r#"users "alice" is forbidden: User "x" cannot impersonate resource "users" in API group "" at the cluster scope"#
        );
    }
}
