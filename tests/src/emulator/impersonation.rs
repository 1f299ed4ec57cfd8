//! `Impersonate-*` headers: checked against the caller's `impersonate` permissions, then
//! the request proceeds as the impersonated user (like `filters/impersonation.go`).

use super::authn::UserInfo;
use super::rbac::{self, Attributes};
use super::status::ApiError;
use super::store::Store;
use http::HeaderMap;
use std::collections::BTreeMap;

/// The outcome of impersonation.
#[derive(Debug, Clone)]
pub struct Impersonated {
    /// The user the request now runs as.
    pub user: UserInfo,
    /// Whether impersonation took place.
    pub active: bool,
    /// Requested groups (for the request log).
    pub groups: Vec<String>,
}

fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .collect()
}

/// Applies the headers of one request for `caller`.
pub fn apply(
    store: &Store,
    caller: &UserInfo,
    headers: &HeaderMap,
) -> Result<Impersonated, ApiError> {
    let user = values(headers, "impersonate-user").into_iter().next();
    let groups = values(headers, "impersonate-group");
    let uid = values(headers, "impersonate-uid").into_iter().next();
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        if let Some(raw) = name.as_str().strip_prefix("impersonate-extra-") {
            let key = percent_encoding::percent_decode_str(raw)
                .decode_utf8_lossy()
                .to_lowercase();
            if let Ok(v) = value.to_str() {
                extra.entry(key).or_default().push(v.to_string());
            }
        }
    }
    let Some(username) = user else {
        if !groups.is_empty() || !extra.is_empty() || uid.is_some() {
            return Err(ApiError::bad_request(
                "requested user.Info impersonation without a user name: Impersonate-User is required with Impersonate-Group, Impersonate-Extra-* and Impersonate-Uid",
            ));
        }
        return Ok(Impersonated {
            user: caller.clone(),
            active: false,
            groups: Vec::new(),
        });
    };
    let mut checks: Vec<Attributes> = Vec::new();
    let check = |group: &str, resource: &str, namespace: &str, name: &str| Attributes {
        verb: "impersonate".into(),
        resource_request: true,
        namespace: namespace.into(),
        api_group: group.into(),
        resource: resource.into(),
        name: name.into(),
        ..Default::default()
    };
    let mut effective_groups = Vec::new();
    if let Some(sa) = username.strip_prefix("system:serviceaccount:") {
        let (ns, name) = sa.split_once(':').unwrap_or((sa, ""));
        checks.push(check("", "serviceaccounts", ns, name));
        effective_groups.push("system:serviceaccounts".to_string());
        effective_groups.push(format!("system:serviceaccounts:{ns}"));
    } else {
        checks.push(check("", "users", "", &username));
    }
    for group in &groups {
        checks.push(check("", "groups", "", group));
        effective_groups.push(group.clone());
    }
    if let Some(uid) = &uid {
        checks.push(check("authentication.k8s.io", "uids", "", uid));
    }
    for (key, vals) in &extra {
        for v in vals {
            checks.push(check(
                "authentication.k8s.io",
                &format!("userextras/{key}"),
                "",
                v,
            ));
        }
    }
    // Groups are checked before the user on the real server; order only changes which
    // denial is reported, so report the first failing check in header order.
    for attrs in &checks {
        if !rbac::authorize(store, caller, attrs) {
            return Err(rbac::forbidden(caller, attrs));
        }
    }
    if username != "system:anonymous"
        && !effective_groups.iter().any(|g| g == "system:authenticated")
    {
        effective_groups.push("system:authenticated".into());
    }
    Ok(Impersonated {
        user: UserInfo {
            username,
            uid: uid.unwrap_or_default(),
            groups: effective_groups,
            extra,
        },
        active: true,
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::store::ObjKey;
    use serde_json::json;

    fn store_with_role(rules: serde_json::Value) -> Result<Store, ApiError> {
        let store = Store::new();
        let rbac = "rbac.authorization.k8s.io";
        let key = |res: &str| ObjKey {
            resource: format!("{rbac}/{res}"),
            namespace: String::new(),
            name: "imp".into(),
        };
        store.write(&key("clusterroles"), |_| {
            Ok(Some(json!({"metadata": {"name": "imp"}, "rules": rules})))
        })?;
        store.write(&key("clusterrolebindings"), |_| {
            Ok(Some(json!({"metadata": {"name": "imp"}, "roleRef": {"kind": "ClusterRole", "name": "imp"},
                "subjects": [{"kind": "User", "name": "proxy"}]})))
        })?;
        Ok(store)
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn checks_each_impersonated_attribute() -> Result<(), ApiError> {
        let store = store_with_role(json!([
            {"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"]},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["userextras/scopes.example.com"], "verbs": ["impersonate"]},
        ]))?;
        let proxy = UserInfo::new("proxy", &["system:authenticated"]);
        let ok = apply(
            &store,
            &proxy,
            &headers(&[
                ("impersonate-user", "alice"),
                ("impersonate-extra-Scopes.Example%2ecom", "read"),
            ]),
        )?;
        assert_eq!(ok.user.username, "alice");
        assert_eq!(ok.user.groups, ["system:authenticated"]);
        assert_eq!(
            ok.user.extra.get("scopes.example.com"),
            Some(&vec!["read".to_string()])
        );
        let err = apply(
            &store,
            &proxy,
            &headers(&[
                ("impersonate-user", "alice"),
                ("impersonate-group", "admins"),
            ]),
        )
        .err()
        .map(|e| (e.code, e.message));
        assert_eq!(err, Some((403, r#"groups "admins" is forbidden: User "proxy" cannot impersonate resource "groups" in API group "" at the cluster scope"#.to_string())));
        let err = apply(&store, &proxy, &headers(&[("impersonate-group", "admins")]))
            .err()
            .map(|e| e.code);
        assert_eq!(err, Some(400));
        let none = apply(&store, &proxy, &HeaderMap::new())?;
        assert!(!none.active);
        Ok(())
    }
}
