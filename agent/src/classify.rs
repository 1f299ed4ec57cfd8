//! What a request is about ([`RequestInfo`]), and refusal of paths that could be read two ways.
//!
//! The API server cleans paths before routing; a proxy that matches rules on the raw path
//! and forwards it unchanged could be dodged by another spelling of the same URL. So the
//! agent refuses every spelling that is not already canonical, before anything else looks
//! at the path. The parse follows `k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`:
//! `/api/v1/...` and `/apis/{group}/{version}/...`, namespace scoping, subresources, the
//! legacy `watch`/`proxy` path verbs, `?watch=`, `deletecollection` and a
//! `fieldSelector=metadata.name=x` list/watch naming its object.

use gatehouse_common::audit::ExecParams;
use percent_encoding::percent_decode_str;

/// Longest raw path accepted; real API paths are far shorter, and a bound keeps every
/// later string operation cheap.
pub const MAX_PATH_LEN: usize = 4096;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    /// `..`, `.`, `//`, an encoded `/`, `\` or `.`, NUL, double encoding, non-ASCII or
    /// control bytes, or an over-long path.
    #[error(
        "ambiguous request path rejected by gatehouse: {0}; send the canonical path \
         (as kubectl does)"
    )]
    AmbiguousPath(&'static str),
    /// A resource path the API server itself could not route (e.g. `/api/v1/watch`).
    #[error("unable to determine kind and namespace from url {0:?}")]
    Unroutable(String),
}

/// Module result shorthand.
pub type Result<T> = std::result::Result<T, ClassifyError>;

/// The Kubernetes attributes of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// `true` for `/api/...` and `/apis/...` resource requests.
    pub is_resource_request: bool,
    /// The path, for non-resource requests (`/version`, `/openapi/v3/...`); empty otherwise.
    pub path: String,
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
    /// Exec/attach parameters, for `exec` and `attach` subresources.
    pub exec: Option<ExecParams>,
    /// `dryRun` values (e.g. `All`); empty when the request is real.
    pub dry_run: Vec<String>,
    /// `labelSelector`, decoded.
    pub label_selector: String,
    /// `fieldSelector`, decoded.
    pub field_selector: String,
    /// `follow=true` on a `log` subresource request.
    pub follow: bool,
}

impl RequestInfo {
    /// Whether the response stays open while data flows: a watch or a followed log.
    pub fn is_long_lived_stream(&self) -> bool {
        self.verb == "watch" || (self.subresource == "log" && self.follow)
    }
}

/// Refuses ambiguous spellings of `path` (the raw, still percent-encoded path).
pub fn check_path(path: &str) -> Result<()> {
    let bad = ClassifyError::AmbiguousPath;
    if path.len() > MAX_PATH_LEN {
        return Err(bad("path longer than 4096 bytes"));
    }
    if !path.starts_with('/') {
        return Err(bad("path must start with /"));
    }
    if path.contains('\0') {
        return Err(bad("NUL byte"));
    }
    if !path.is_ascii() {
        return Err(bad("non-ASCII byte in path"));
    }
    if path.bytes().any(|b| b.is_ascii_control()) {
        return Err(bad("control byte in path"));
    }
    if path.contains('\\') {
        return Err(bad("backslash"));
    }
    if path.len() > 1 && path.contains("//") {
        return Err(bad("empty path segment (//)"));
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
            return Err(bad(why));
        }
    }
    // Every `%` must start a valid escape, and no escape may decode to a control byte:
    // such paths have no single reading either.
    let bytes = path.as_bytes();
    for (i, _) in path.match_indices('%') {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            None => return Err(bad("malformed percent-encoding")),
            Some(b) if b.is_ascii_control() => return Err(bad("percent-encoded control byte")),
            Some(_) => {}
        }
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(bad("dot segment"));
    }
    Ok(())
}

/// Checks `path` and derives its [`RequestInfo`]; `query` is the raw query string.
pub fn classify(method: &http::Method, path: &str, query: Option<&str>) -> Result<RequestInfo> {
    check_path(path)?;
    let query = Query::parse(query.unwrap_or_default());
    // Segments are compared decoded, as the API server routes on the decoded path; the
    // checks above guarantee decoding cannot create `/`, `.`-segments or control bytes.
    let decoded: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let parts: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let non_resource = || RequestInfo {
        path: path.to_string(),
        verb: method.as_str().to_ascii_lowercase(),
        ..RequestInfo::default()
    };
    // `/api/v1` and `/apis/g/v` without a resource are discovery: non-resource requests.
    let (api_group, api_version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] if !rest.is_empty() => ("", *version, rest),
        ["apis", group, version, rest @ ..] if !rest.is_empty() => (*group, *version, rest),
        _ => return Ok(non_resource()),
    };
    let mut info = RequestInfo {
        is_resource_request: true,
        api_group: api_group.into(),
        api_version: api_version.into(),
        verb: method.as_str().to_ascii_lowercase(),
        ..RequestInfo::default()
    };
    let mut rest = rest;
    let mut special_verb = None;
    if let [first @ ("watch" | "proxy"), tail @ ..] = rest {
        if tail.is_empty() {
            return Err(ClassifyError::Unroutable(path.to_string()));
        }
        special_verb = Some(*first);
        rest = tail;
    }
    // `namespaces/{ns}/...` scopes the request, except `namespaces/{ns}` itself (and its
    // `status`/`finalize` subresources), which are the namespace object.
    if let ["namespaces", ns, tail @ ..] = rest {
        info.namespace = (*ns).into();
        if !tail.is_empty() && !matches!(tail, ["status" | "finalize", ..]) {
            rest = tail;
        }
    }
    if let [resource, tail @ ..] = rest {
        info.resource = (*resource).into();
        if let [name, tail @ ..] = tail {
            info.name = (*name).into();
            // The `proxy` path verb keeps the rest as the proxied path, not a subresource.
            if let ([sub, ..], false) = (tail, special_verb == Some("proxy")) {
                info.subresource = (*sub).into();
            }
        }
    }
    info.verb = match special_verb {
        Some(verb) => verb.into(),
        None => method_verb(method).unwrap_or(&info.verb).to_string(),
    };
    if info.name.is_empty() && info.verb == "delete" {
        info.verb = "deletecollection".into();
    }
    if info.name.is_empty() && info.verb == "get" {
        info.verb = if query.watch { "watch" } else { "list" }.into();
        // As the API server does: a list/watch selecting exactly one name is about it.
        if let Some(name) = exact_name(&query.field_selector) {
            info.name = name;
        }
    }
    if matches!(info.subresource.as_str(), "exec" | "attach") {
        info.exec = Some(query.exec.clone());
    }
    info.follow = query.follow && info.subresource == "log";
    info.dry_run = query.dry_run;
    info.label_selector = query.label_selector;
    info.field_selector = query.field_selector;
    Ok(info)
}

fn method_verb(method: &http::Method) -> Option<&'static str> {
    Some(match *method {
        http::Method::POST => "create",
        http::Method::GET | http::Method::HEAD => "get",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => return None,
    })
}

/// The query parameters classification reads, decoded.
#[derive(Default)]
struct Query {
    watch: bool,
    follow: bool,
    exec: ExecParams,
    dry_run: Vec<String>,
    label_selector: String,
    field_selector: String,
}

impl Query {
    fn parse(raw: &str) -> Self {
        let mut q = Query::default();
        for (key, value) in url::form_urlencoded::parse(raw.as_bytes()) {
            match key.as_ref() {
                "watch" => q.watch = parse_bool(&value),
                "follow" => q.follow = parse_bool(&value),
                "command" => q.exec.command.push(value.into_owned()),
                "container" => q.exec.container = value.into_owned(),
                "stdin" => q.exec.stdin = parse_bool(&value),
                "tty" => q.exec.tty = parse_bool(&value),
                "dryRun" => q.dry_run.push(value.into_owned()),
                "labelSelector" => q.label_selector = value.into_owned(),
                "fieldSelector" => q.field_selector = value.into_owned(),
                _ => {}
            }
        }
        q
    }
}

/// Go's `strconv.ParseBool` truths, which the API server's query decoding uses.
fn parse_bool(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

/// `metadata.name` when the field selector requires an exact match on it (`=` or `==`
/// in any of its comma-joined terms) and the value is a valid path segment name.
fn exact_name(selector: &str) -> Option<String> {
    selector.split(',').find_map(|term| {
        let value = term.trim().strip_prefix("metadata.name")?;
        let value = value
            .strip_prefix("==")
            .or_else(|| value.strip_prefix('='))?;
        let valid =
            !value.is_empty() && value != "." && value != ".." && !value.contains(['/', '%']);
        valid.then(|| value.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn ambiguous_paths_are_rejected() {
        let long = format!("/api/v1/namespaces/{}", "a".repeat(MAX_PATH_LEN));
        for path in [
            "/api/v1/namespaces/dev/pods/../secrets",
            "/api/v1/namespaces/dev/./pods",
            "/api/v1/namespaces/dev/pods/..",
            "/api/v1//namespaces/prod/secrets",
            "/api/v1/namespaces/prod%2fsecrets",
            "/api/v1/namespaces/prod%2Fsecrets",
            "/api/v1/namespaces/%2e%2e/secrets",
            "/api/v1/namespaces/%2E/secrets",
            "/api/v1/namespaces/prod/secrets\0",
            "/api/v1/namespaces/prod/secrets%00",
            "/api/v1/namespaces/prod%252fsecrets",
            "/api/v1/namespaces/prod%5csecrets",
            "/api/v1/namespaces\\prod",
            "/api/v1/namespaces/pr\u{e9}d",
            "/api/v1/namespaces/prod\tx",
            "/api/v1/namespaces/prod%0a",
            "/api/v1/namespaces/prod%7F",
            "/api/v1/namespaces/prod%zz",
            "/api/v1/namespaces/prod%2",
            "api/v1/pods",
            long.as_str(),
        ] {
            assert!(check_path(path).is_err(), "{path:?} should be rejected");
            assert!(
                classify(&Method::GET, path, None).is_err(),
                "{path:?} should not classify"
            );
        }
    }

    #[test]
    fn canonical_paths_pass() {
        for path in [
            "/",
            "/api",
            "/apis/apps/v1",
            "/api/v1/namespaces/dev/pods/web-0",
            "/api/v1/namespaces/dev/services/web:80/proxy/a%20b",
            "/openapi/v3/apis/apps/v1",
        ] {
            assert_eq!(check_path(path), Ok(()), "{path}");
        }
    }

    /// (method, path, query) -> (verb, group, resource, subresource, namespace, name).
    #[test]
    fn requests_are_classified_like_the_api_server() -> Result<()> {
        type Row = (
            Method,
            &'static str,
            Option<&'static str>,
            [&'static str; 6],
        );
        let rows: Vec<Row> = vec![
            (
                Method::GET,
                "/api/v1/namespaces/dev/pods",
                None,
                ["list", "", "pods", "", "dev", ""],
            ),
            (
                Method::GET,
                "/api/v1/pods",
                None,
                ["list", "", "pods", "", "", ""],
            ),
            (
                Method::GET,
                "/api/v1/namespaces/dev/pods",
                Some("watch=true"),
                ["watch", "", "pods", "", "dev", ""],
            ),
            (
                Method::GET,
                "/api/v1/namespaces/dev/pods",
                Some("watch=1&resourceVersion=5"),
                ["watch", "", "pods", "", "dev", ""],
            ),
            (
                Method::GET,
                "/api/v1/namespaces/dev/pods",
                Some("watch=false"),
                ["list", "", "pods", "", "dev", ""],
            ),
            (
                Method::GET,
                "/api/v1/namespaces/dev/pods/web-0",
                None,
                ["get", "", "pods", "", "dev", "web-0"],
            ),
            (
                Method::HEAD,
                "/api/v1/namespaces/dev/pods/web-0",
                None,
                ["get", "", "pods", "", "dev", "web-0"],
            ),
            (
                Method::GET,
                "/api/v1/namespaces/dev/pods/web-0/log",
                Some("follow=true"),
                ["get", "", "pods", "log", "dev", "web-0"],
            ),
            (
                Method::POST,
                "/api/v1/namespaces/dev/pods/web-0/exec",
                None,
                ["create", "", "pods", "exec", "dev", "web-0"],
            ),
            (
                Method::GET,
                "/api/v1/namespaces/dev/pods/web-0/exec",
                None,
                ["get", "", "pods", "exec", "dev", "web-0"],
            ),
            (
                Method::POST,
                "/api/v1/namespaces/dev/pods/web-0/attach",
                None,
                ["create", "", "pods", "attach", "dev", "web-0"],
            ),
            (
                Method::POST,
                "/api/v1/namespaces/dev/pods/web-0/portforward",
                None,
                ["create", "", "pods", "portforward", "dev", "web-0"],
            ),
            (
                Method::POST,
                "/api/v1/namespaces/dev/pods/web-0/eviction",
                None,
                ["create", "", "pods", "eviction", "dev", "web-0"],
            ),
            (
                Method::POST,
                "/api/v1/namespaces/dev/pods/web-0/binding",
                None,
                ["create", "", "pods", "binding", "dev", "web-0"],
            ),
            (
                Method::PATCH,
                "/api/v1/namespaces/dev/pods/web-0/ephemeralcontainers",
                None,
                ["patch", "", "pods", "ephemeralcontainers", "dev", "web-0"],
            ),
            (
                Method::PUT,
                "/apis/apps/v1/namespaces/dev/deployments/web/status",
                None,
                ["update", "apps", "deployments", "status", "dev", "web"],
            ),
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/dev/deployments/web/scale",
                None,
                ["patch", "apps", "deployments", "scale", "dev", "web"],
            ),
            (
                Method::POST,
                "/apis/apps/v1/namespaces/prod/deployments",
                None,
                ["create", "apps", "deployments", "", "prod", ""],
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/dev/pods",
                None,
                ["deletecollection", "", "pods", "", "dev", ""],
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/dev/pods/web-0",
                None,
                ["delete", "", "pods", "", "dev", "web-0"],
            ),
            (
                Method::GET,
                "/api/v1/namespaces/dev",
                None,
                ["get", "", "namespaces", "", "dev", "dev"],
            ),
            (
                Method::GET,
                "/api/v1/namespaces",
                None,
                ["list", "", "namespaces", "", "", ""],
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/dev/status",
                None,
                ["update", "", "namespaces", "status", "dev", "dev"],
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/dev/finalize",
                None,
                ["update", "", "namespaces", "finalize", "dev", "dev"],
            ),
            (
                Method::GET,
                "/api/v1/nodes/n1",
                None,
                ["get", "", "nodes", "", "", "n1"],
            ),
            (
                Method::GET,
                "/apis/rbac.authorization.k8s.io/v1/clusterroles",
                None,
                [
                    "list",
                    "rbac.authorization.k8s.io",
                    "clusterroles",
                    "",
                    "",
                    "",
                ],
            ),
            (
                Method::GET,
                "/api/v1/watch/namespaces/dev/pods",
                None,
                ["watch", "", "pods", "", "dev", ""],
            ),
            (
                Method::GET,
                "/api/v1/watch/namespaces/dev/pods/web-0",
                None,
                ["watch", "", "pods", "", "dev", "web-0"],
            ),
            (
                Method::GET,
                "/apis/apps/v1/watch/deployments",
                None,
                ["watch", "apps", "deployments", "", "", ""],
            ),
            (
                Method::GET,
                "/api/v1/proxy/namespaces/dev/pods/web-0/healthz",
                None,
                ["proxy", "", "pods", "", "dev", "web-0"],
            ),
            (
                Method::GET,
                "/api/v1/namespaces/dev/services/web:80/proxy/metrics",
                None,
                ["get", "", "services", "proxy", "dev", "web:80"],
            ),
            (
                Method::GET,
                "/api/v1/namespaces/dev/pods",
                Some("fieldSelector=metadata.name%3Dweb-0"),
                ["list", "", "pods", "", "dev", "web-0"],
            ),
            (
                Method::GET,
                "/api/v1/namespaces/dev/pods",
                Some("fieldSelector=metadata.name%3D%3Dweb-0&watch=true"),
                ["watch", "", "pods", "", "dev", "web-0"],
            ),
            (
                Method::GET,
                "/api/v1/namespaces/dev/pods",
                Some("fieldSelector=status.phase%3DRunning%2Cmetadata.name%3Dweb-0"),
                ["list", "", "pods", "", "dev", "web-0"],
            ),
            (
                Method::GET,
                "/api/v1/namespaces/dev/pods",
                Some("fieldSelector=metadata.name%21%3Dweb-0"),
                ["list", "", "pods", "", "dev", ""],
            ),
            (
                Method::GET,
                "/api/v1/namespaces/dev/pods",
                Some("fieldSelector=metadata.name%3Da%2Fb"),
                ["list", "", "pods", "", "dev", ""],
            ),
            (
                Method::OPTIONS,
                "/api/v1/namespaces/dev/pods",
                None,
                ["options", "", "pods", "", "dev", ""],
            ),
        ];
        for (method, path, query, want) in rows {
            let info = classify(&method, path, query)?;
            let got = [
                info.verb.as_str(),
                info.api_group.as_str(),
                info.resource.as_str(),
                info.subresource.as_str(),
                info.namespace.as_str(),
                info.name.as_str(),
            ];
            assert_eq!(got, want, "{method} {path}?{query:?}");
            assert!(info.is_resource_request, "{path}");
        }
        Ok(())
    }

    #[test]
    fn non_resource_requests_keep_method_and_path() -> Result<()> {
        for (method, path, verb) in [
            (Method::GET, "/version", "get"),
            (Method::GET, "/healthz", "get"),
            (Method::GET, "/api", "get"),
            (Method::GET, "/api/v1", "get"),
            (Method::GET, "/apis", "get"),
            (Method::GET, "/apis/apps", "get"),
            (Method::GET, "/apis/apps/v1", "get"),
            (Method::GET, "/openapi/v2", "get"),
            (Method::GET, "/openapi/v3/apis/apps/v1", "get"),
            (Method::POST, "/version", "post"),
            (Method::HEAD, "/healthz", "head"),
        ] {
            let info = classify(&method, path, Some("timeout=32s"))?;
            assert!(!info.is_resource_request, "{path}");
            assert_eq!((info.verb.as_str(), info.path.as_str()), (verb, path));
            assert!(info.resource.is_empty(), "{path}");
        }
        Ok(())
    }

    #[test]
    fn path_verb_without_resource_is_refused() {
        for path in ["/api/v1/watch", "/apis/apps/v1/proxy"] {
            assert!(matches!(
                classify(&Method::GET, path, None),
                Err(ClassifyError::Unroutable(_))
            ));
        }
    }

    #[test]
    fn exec_params_are_extracted_in_order() -> Result<()> {
        // As kubectl 1.32 sends it: each argument its own encoded `command` parameter.
        let query = "command=sh&command=-c&command=echo+%22a+b%22+%26%26+ls%20%2Ftmp\
                     &container=app&stdin=true&stdout=true&tty=true";
        let info = classify(
            &Method::POST,
            "/api/v1/namespaces/dev/pods/web-0/exec",
            Some(query),
        )?;
        assert_eq!(
            info.exec,
            Some(ExecParams {
                command: vec!["sh".into(), "-c".into(), "echo \"a b\" && ls /tmp".into()],
                container: "app".into(),
                stdin: true,
                tty: true,
            })
        );
        let info = classify(
            &Method::POST,
            "/api/v1/namespaces/dev/pods/web-0/attach",
            Some("container=app&stdin=false&stdout=true"),
        )?;
        assert_eq!(
            info.exec,
            Some(ExecParams {
                container: "app".into(),
                ..ExecParams::default()
            })
        );
        let info = classify(
            &Method::GET,
            "/api/v1/namespaces/dev/pods",
            Some("command=x"),
        )?;
        assert_eq!(info.exec, None, "only exec/attach carry exec params");
        Ok(())
    }

    #[test]
    fn selectors_and_dry_run_are_decoded() -> Result<()> {
        let info = classify(
            &Method::POST,
            "/apis/apps/v1/namespaces/dev/deployments",
            Some("dryRun=All&fieldManager=kubectl-client-side-apply"),
        )?;
        assert_eq!(info.dry_run, vec!["All".to_string()]);
        let info = classify(
            &Method::GET,
            "/api/v1/namespaces/dev/pods",
            Some(
                "labelSelector=app%3Dweb%2Ctier+in+%28a%2Cb%29&fieldSelector=status.phase%3DRunning&limit=500",
            ),
        )?;
        assert_eq!(info.label_selector, "app=web,tier in (a,b)");
        assert_eq!(info.field_selector, "status.phase=Running");
        assert!(info.dry_run.is_empty());
        assert_eq!(info.name, "");
        Ok(())
    }

    #[test]
    fn watches_and_followed_logs_are_long_lived_streams() -> Result<()> {
        let get = http::Method::GET;
        for (path, query) in [
            ("/api/v1/namespaces/dev/pods", Some("watch=1")),
            ("/api/v1/pods", Some("watch=true&resourceVersion=10")),
            (
                "/apis/apps/v1/namespaces/dev/deployments",
                Some("fieldSelector=x&watch=True"),
            ),
            ("/api/v1/watch/namespaces/dev/pods", None),
            ("/apis/apps/v1/watch/deployments", None),
            (
                "/api/v1/namespaces/dev/pods/web/log",
                Some("follow=true&container=c"),
            ),
        ] {
            assert!(
                classify(&get, path, query)?.is_long_lived_stream(),
                "{path}?{query:?}"
            );
        }
        for (path, query) in [
            ("/api/v1/namespaces/dev/pods", None),
            ("/api/v1/namespaces/dev/pods", Some("watch=false")),
            ("/api/v1/namespaces/dev/pods/web/log", None),
            ("/api/v1/namespaces/dev/pods/web/log", Some("follow=false")),
            ("/api/v1/namespaces/dev/configmaps", Some("follow=true")),
            ("/apis/apps/v1/namespaces/watch/deployments", None),
            ("/version", None),
        ] {
            assert!(
                !classify(&get, path, query)?.is_long_lived_stream(),
                "{path}?{query:?}"
            );
        }
        Ok(())
    }
}
