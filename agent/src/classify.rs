//! What a request is about ([`RequestInfo`]), and refusal of paths that could be read two ways.
//!
//! The API server cleans paths before routing; a proxy that matches rules on the raw path
//! and forwards it unchanged could be dodged by another spelling of the same URL. So the
//! agent refuses every spelling that is not already canonical, before anything else looks
//! at the path. This first version parses the shape `requestinfo.go` uses for logging;
//! the full parser (legacy `/watch/` paths, `proxy` verbs, field selectors) comes later.

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    /// `..`, `.`, `//`, an encoded `/`, `\` or `.`, or NUL in the path.
    #[error("ambiguous request path rejected by gatehouse: {0}")]
    AmbiguousPath(&'static str),
}

/// Module result shorthand.
pub type Result<T> = std::result::Result<T, ClassifyError>;

/// The Kubernetes attributes of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// `true` for `/api/...` and `/apis/...` resource requests.
    pub is_resource_request: bool,
    /// Kubernetes verb (`get`, `list`, `watch`, `create`, ...), or the lower-case method.
    pub verb: String,
    /// API group (`""` for the core group).
    pub api_group: String,
    /// API version, e.g. `v1`.
    pub api_version: String,
    /// Plural resource name, e.g. `pods`.
    pub resource: String,
    /// Subresource, e.g. `exec` or `log`.
    pub subresource: String,
    /// Namespace, empty for cluster-scoped requests.
    pub namespace: String,
    /// Object name, empty for collections.
    pub name: String,
}

/// Refuses ambiguous spellings of `path` (the raw, still percent-encoded path).
pub fn check_path(path: &str) -> Result<()> {
    if !path.starts_with('/') {
        return Err(ClassifyError::AmbiguousPath("path must start with /"));
    }
    if path.contains('\0') {
        return Err(ClassifyError::AmbiguousPath("NUL byte"));
    }
    if path.contains('\\') {
        return Err(ClassifyError::AmbiguousPath("backslash"));
    }
    if path.len() > 1 && path.contains("//") {
        return Err(ClassifyError::AmbiguousPath("empty path segment (//)"));
    }
    let lower = path.to_ascii_lowercase();
    for (encoded, why) in [
        ("%2f", "percent-encoded /"),
        ("%5c", "percent-encoded \\"),
        ("%2e", "percent-encoded ."),
        ("%00", "percent-encoded NUL"),
        ("%25", "double percent-encoding"),
    ] {
        if lower.contains(encoded) {
            return Err(ClassifyError::AmbiguousPath(why));
        }
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(ClassifyError::AmbiguousPath("dot segment"));
    }
    Ok(())
}

/// Checks `path` and derives its [`RequestInfo`]; `query` is the raw query string.
pub fn classify(method: &http::Method, path: &str, query: Option<&str>) -> Result<RequestInfo> {
    check_path(path)?;
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let non_resource = || RequestInfo {
        verb: method.as_str().to_ascii_lowercase(),
        ..RequestInfo::default()
    };
    let (api_group, api_version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] if !rest.is_empty() => ("", *version, rest),
        ["apis", group, version, rest @ ..] if !rest.is_empty() => (*group, *version, rest),
        _ => return Ok(non_resource()),
    };
    let mut info = RequestInfo {
        is_resource_request: true,
        api_group: api_group.into(),
        api_version: api_version.into(),
        ..RequestInfo::default()
    };
    let mut rest = rest;
    let mut special_verb = None;
    if let [first @ ("watch" | "proxy"), tail @ ..] = rest {
        special_verb = Some(*first);
        rest = tail;
    }
    // `namespaces/{ns}/...` scopes the request, except `namespaces/{ns}` itself (and its
    // `status`/`finalize` subresources), which are the namespace object.
    if let ["namespaces", ns, tail @ ..] = rest
        && !tail.is_empty()
        && !matches!(tail, ["status" | "finalize"])
    {
        info.namespace = (*ns).into();
        rest = tail;
    }
    if let [resource, tail @ ..] = rest {
        info.resource = (*resource).into();
        if let [name, tail @ ..] = tail {
            info.name = (*name).into();
            if let [sub, ..] = tail {
                info.subresource = (*sub).into();
            }
        }
    }
    if info.resource == "namespaces" && !info.name.is_empty() && info.namespace.is_empty() {
        info.namespace = info.name.clone();
    }
    info.verb = match special_verb {
        Some(verb) => verb.into(),
        None => method_verb(method, &info, query),
    };
    Ok(info)
}

fn method_verb(method: &http::Method, info: &RequestInfo, query: Option<&str>) -> String {
    let verb = match *method {
        http::Method::POST => "create",
        http::Method::GET | http::Method::HEAD => "get",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => return method.as_str().to_ascii_lowercase(),
    };
    match verb {
        "get" if info.name.is_empty() => {
            if is_watch(query) {
                "watch".into()
            } else {
                "list".into()
            }
        }
        "delete" if info.name.is_empty() => "deletecollection".into(),
        other => other.into(),
    }
}

fn is_watch(query: Option<&str>) -> bool {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.strip_prefix("watch="))
        .any(|value| !matches!(value, "false" | "0" | ""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn ambiguous_paths_are_rejected() {
        for path in [
            "/api/v1/namespaces/dev/pods/../secrets",
            "/api/v1/namespaces/dev/./pods",
            "/api/v1//namespaces/prod/secrets",
            "/api/v1/namespaces/prod%2fsecrets",
            "/api/v1/namespaces/prod%2Fsecrets",
            "/api/v1/namespaces/%2e%2e/secrets",
            "/api/v1/namespaces/prod/secrets\0",
            "/api/v1/namespaces/prod/secrets%00",
            "/api/v1/namespaces/prod%252fsecrets",
            "/api/v1/namespaces\\prod",
            "api/v1/pods",
        ] {
            assert!(check_path(path).is_err(), "{path:?} should be rejected");
        }
    }

    #[test]
    fn canonical_paths_pass() {
        for path in [
            "/",
            "/api",
            "/apis/apps/v1",
            "/api/v1/namespaces/dev/pods/web-0",
        ] {
            assert_eq!(check_path(path), Ok(()), "{path}");
        }
    }

    #[test]
    fn resource_requests_are_classified() -> Result<()> {
        let info = classify(&Method::GET, "/api/v1/namespaces/dev/pods", None)?;
        assert_eq!(
            (
                info.verb.as_str(),
                info.resource.as_str(),
                info.namespace.as_str()
            ),
            ("list", "pods", "dev")
        );
        let info = classify(
            &Method::GET,
            "/api/v1/namespaces/dev/pods",
            Some("watch=true"),
        )?;
        assert_eq!(info.verb, "watch");
        let info = classify(&Method::GET, "/api/v1/namespaces/dev/pods/web-0/exec", None)?;
        assert_eq!(
            (
                info.verb.as_str(),
                info.name.as_str(),
                info.subresource.as_str()
            ),
            ("get", "web-0", "exec")
        );
        let info = classify(
            &Method::POST,
            "/apis/apps/v1/namespaces/prod/deployments",
            None,
        )?;
        assert_eq!(
            (
                info.verb.as_str(),
                info.api_group.as_str(),
                info.resource.as_str()
            ),
            ("create", "apps", "deployments")
        );
        let info = classify(&Method::DELETE, "/api/v1/namespaces/dev/pods", None)?;
        assert_eq!(info.verb, "deletecollection");
        let info = classify(&Method::GET, "/api/v1/namespaces/dev", None)?;
        assert_eq!(
            (
                info.resource.as_str(),
                info.name.as_str(),
                info.namespace.as_str()
            ),
            ("namespaces", "dev", "dev")
        );
        let info = classify(&Method::GET, "/api/v1/watch/namespaces/dev/pods", None)?;
        assert_eq!(
            (info.verb.as_str(), info.resource.as_str()),
            ("watch", "pods")
        );
        let info = classify(&Method::GET, "/version", None)?;
        assert!(!info.is_resource_request);
        assert_eq!(info.verb, "get");
        Ok(())
    }
}
