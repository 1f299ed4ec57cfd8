//! Request classification exactly as the API server's `requestinfo.go` does it.

/// What a request is about, as RBAC sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// `/api/...` or `/apis/...` with at least a version and a resource.
    pub is_resource_request: bool,
    /// URL path.
    pub path: String,
    /// `get`, `list`, `watch`, `create`, … (lower-case method for non-resource requests).
    pub verb: String,
    /// `api` or `apis`.
    pub api_prefix: String,
    /// API group (`""` for core).
    pub api_group: String,
    /// API version.
    pub api_version: String,
    /// Namespace (empty for cluster scope).
    pub namespace: String,
    /// Plural resource.
    pub resource: String,
    /// Subresource (`exec`, `status`, …).
    pub subresource: String,
    /// Object name (also taken from an exact `metadata.name` field selector on list/watch).
    pub name: String,
    /// Path segments from the resource on.
    pub parts: Vec<String>,
}

/// Parses `method`, `path` and the query pairs.
pub fn parse(method: &str, path: &str, query: &[(String, String)]) -> RequestInfo {
    let mut info = RequestInfo {
        path: path.to_string(),
        verb: method.to_ascii_lowercase(),
        ..Default::default()
    };
    let mut parts: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|_| !path.trim_matches('/').is_empty())
        .map(str::to_string)
        .collect();
    if parts.len() < 3 || (parts[0] != "api" && parts[0] != "apis") {
        return info;
    }
    let prefix = parts.remove(0);
    if prefix == "apis" {
        if parts.len() < 3 {
            return RequestInfo {
                api_prefix: String::new(),
                ..info
            };
        }
        info.api_group = parts.remove(0);
    }
    info.api_prefix = prefix;
    info.is_resource_request = true;
    info.api_version = parts.remove(0);
    if parts.is_empty() {
        return info;
    }
    if parts[0] == "watch" || parts[0] == "proxy" {
        if parts.len() < 2 {
            // The server rejects this; classify it as the special verb with no resource.
            info.verb = parts.remove(0);
            return info;
        }
        info.verb = parts.remove(0);
    } else {
        info.verb = match method {
            "POST" => "create",
            "GET" | "HEAD" => "get",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "",
        }
        .to_string();
    }
    if parts[0] == "namespaces" && parts.len() > 1 {
        info.namespace = parts[1].clone();
        if parts.len() > 2 && parts[2] != "status" && parts[2] != "finalize" {
            parts.drain(..2);
        }
    }
    if parts.len() >= 3 && info.verb != "proxy" {
        info.subresource = parts[2].clone();
    }
    if parts.len() >= 2 {
        info.name = parts[1].clone();
    }
    info.resource = parts[0].clone();
    info.parts = parts;
    if info.name.is_empty() && info.verb == "get" {
        info.verb = if query_flag(query, "watch") {
            "watch"
        } else {
            "list"
        }
        .to_string();
        if let Some(name) = exact_name(query) {
            info.name = name;
        }
    }
    if info.name.is_empty() && info.verb == "delete" {
        info.verb = "deletecollection".into();
    }
    info
}

/// A boolean query parameter the way the API server decodes it (`""`, `0`, `false` = false).
pub fn query_flag(query: &[(String, String)], key: &str) -> bool {
    query
        .iter()
        .find(|(k, _)| k == key)
        .is_some_and(|(_, v)| !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false")))
}

/// The name an exact `fieldSelector=metadata.name=x` pins, if it is a valid path segment.
fn exact_name(query: &[(String, String)]) -> Option<String> {
    let selector = query.iter().find(|(k, _)| k == "fieldSelector")?.1.as_str();
    let mut found = None;
    for term in selector.split(',').filter(|t| !t.is_empty()) {
        let (key, value) = if let Some((k, v)) = term.split_once("==") {
            (k, v)
        } else if term.contains("!=") {
            continue;
        } else {
            term.split_once('=')?
        };
        if key.trim() == "metadata.name" {
            found = Some(value.trim().to_string());
        }
    }
    found.filter(|n| !n.is_empty() && n != "." && n != ".." && !n.contains('/') && !n.contains('%'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(method: &str, path: &str, query: &[(&str, &str)]) -> RequestInfo {
        let q: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(method, path, &q)
    }

    #[test]
    fn lists_watches_and_gets() {
        let i = p("GET", "/api/v1/namespaces/dev/pods", &[("limit", "500")]);
        assert_eq!(
            (i.verb.as_str(), i.namespace.as_str(), i.resource.as_str()),
            ("list", "dev", "pods")
        );
        let i = p("GET", "/api/v1/namespaces/dev/pods", &[("watch", "true")]);
        assert_eq!(i.verb, "watch");
        let i = p("GET", "/api/v1/namespaces/dev/pods", &[("watch", "false")]);
        assert_eq!(i.verb, "list");
        let i = p("GET", "/api/v1/watch/namespaces/dev/pods/web", &[]);
        assert_eq!((i.verb.as_str(), i.name.as_str()), ("watch", "web"));
        let i = p("GET", "/apis/apps/v1/namespaces/dev/deployments/web", &[]);
        assert_eq!(
            (i.verb.as_str(), i.api_group.as_str(), i.name.as_str()),
            ("get", "apps", "web")
        );
        let i = p(
            "GET",
            "/api/v1/pods",
            &[("fieldSelector", "metadata.name=x")],
        );
        assert_eq!(
            (i.verb.as_str(), i.name.as_str(), i.namespace.as_str()),
            ("list", "x", "")
        );
    }

    #[test]
    fn subresources_and_namespaces() {
        let i = p("POST", "/api/v1/namespaces/dev/pods/web/exec", &[]);
        assert_eq!(
            (i.verb.as_str(), i.subresource.as_str()),
            ("create", "exec")
        );
        let i = p("GET", "/api/v1/namespaces/dev/pods/web/exec", &[]);
        assert_eq!(i.verb, "get");
        let i = p("GET", "/api/v1/namespaces/dev", &[]);
        assert_eq!(
            (i.resource.as_str(), i.name.as_str(), i.namespace.as_str()),
            ("namespaces", "dev", "dev")
        );
        let i = p("PUT", "/api/v1/namespaces/dev/finalize", &[]);
        assert_eq!(
            (i.resource.as_str(), i.subresource.as_str()),
            ("namespaces", "finalize")
        );
        let i = p("DELETE", "/api/v1/namespaces/dev/pods", &[]);
        assert_eq!(i.verb, "deletecollection");
    }

    #[test]
    fn non_resource_requests() {
        let i = p("GET", "/version", &[]);
        assert!(!i.is_resource_request);
        assert_eq!(i.verb, "get");
        let i = p("GET", "/apis/apps", &[]);
        assert!(!i.is_resource_request);
        let i = p("GET", "/api/v1", &[]);
        assert!(!i.is_resource_request);
    }
}
