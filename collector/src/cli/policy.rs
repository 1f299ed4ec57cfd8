//! `gatehouse policy check|test`: validating a policy file, and explaining which rule
//! decides a request given as a kubectl command line (or as explicit attributes).
//!
//! The kubectl parse covers the common verbs, resource short names, `TYPE/NAME`, `-n`,
//! `-A`, `--dry-run`, `-c`, `--` exec commands and `-w`; anything it cannot map is an
//! error that suggests `--verb/--resource/...` instead of a guess.

use gatehouse_common::policy::{Action, DEFAULT_DENY_RULE, Policy, Request, Rule};
use std::fmt::Write;

/// Why a kubectl command line could not be turned into a request.
#[derive(Debug, thiserror::Error)]
#[error("{0} (give the request as --verb/--resource/--namespace/--name instead)")]
pub struct ArgvError(String);

/// One request to explain, owned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestRequest {
    /// Verb as the agent decides it (`create` for exec/attach/port-forward).
    pub verb: String,
    /// API group.
    pub api_group: String,
    /// Plural resource.
    pub resource: String,
    /// Subresource.
    pub subresource: String,
    /// Namespace (empty for cluster scope; a Namespace's own name for namespaces).
    pub namespace: String,
    /// Object name.
    pub name: String,
    /// Exec command joined by spaces.
    pub command: Option<String>,
    /// Dry run.
    pub dry_run: bool,
    /// Non-resource path (then the resource fields are empty).
    pub path: Option<String>,
}

impl TestRequest {
    /// The engine's view of this request for `user`/`groups`.
    pub fn as_request<'a>(&'a self, user: &'a str, groups: &'a [String]) -> Request<'a> {
        Request {
            user,
            groups,
            resource_request: self.path.is_none(),
            path: self.path.as_deref().unwrap_or_default(),
            verb: &self.verb,
            api_group: &self.api_group,
            resource: &self.resource,
            subresource: &self.subresource,
            namespace: &self.namespace,
            name: &self.name,
            command: self.command.as_deref(),
            dry_run: self.dry_run,
            namespace_labels: None,
        }
    }
}

/// `(short or singular name, plural, API group, namespaced)`.
const RESOURCES: &[(&[&str], &str, &str, bool)] = &[
    (&["po", "pod"], "pods", "", true),
    (&["ns", "namespace"], "namespaces", "", false),
    (&["no", "node"], "nodes", "", false),
    (&["svc", "service"], "services", "", true),
    (&["cm", "configmap"], "configmaps", "", true),
    (&["secret"], "secrets", "", true),
    (&["sa", "serviceaccount"], "serviceaccounts", "", true),
    (&["ev", "event"], "events", "", true),
    (&["ep", "endpoint"], "endpoints", "", true),
    (
        &["pvc", "persistentvolumeclaim"],
        "persistentvolumeclaims",
        "",
        true,
    ),
    (&["pv", "persistentvolume"], "persistentvolumes", "", false),
    (&["deploy", "deployment"], "deployments", "apps", true),
    (&["ds", "daemonset"], "daemonsets", "apps", true),
    (&["sts", "statefulset"], "statefulsets", "apps", true),
    (&["rs", "replicaset"], "replicasets", "apps", true),
    (&["job"], "jobs", "batch", true),
    (&["cj", "cronjob"], "cronjobs", "batch", true),
    (&["ing", "ingress"], "ingresses", "networking.k8s.io", true),
    (
        &["netpol", "networkpolicy"],
        "networkpolicies",
        "networking.k8s.io",
        true,
    ),
    (&["role"], "roles", "rbac.authorization.k8s.io", true),
    (
        &["rolebinding"],
        "rolebindings",
        "rbac.authorization.k8s.io",
        true,
    ),
    (
        &["clusterrole"],
        "clusterroles",
        "rbac.authorization.k8s.io",
        false,
    ),
    (
        &["clusterrolebinding"],
        "clusterrolebindings",
        "rbac.authorization.k8s.io",
        false,
    ),
    (
        &["crd", "customresourcedefinition"],
        "customresourcedefinitions",
        "apiextensions.k8s.io",
        false,
    ),
    (
        &["hpa", "horizontalpodautoscaler"],
        "horizontalpodautoscalers",
        "autoscaling",
        true,
    ),
    (
        &["pdb", "poddisruptionbudget"],
        "poddisruptionbudgets",
        "policy",
        true,
    ),
    (
        &["sc", "storageclass"],
        "storageclasses",
        "storage.k8s.io",
        false,
    ),
];

/// `(plural, group, namespaced)` of a kubectl resource argument (`po`, `pod`, `pods`,
/// `deployments.apps`); unknown plurals are taken as written, namespaced, group from a
/// `.group` suffix.
fn resolve_resource(arg: &str) -> (String, String, bool) {
    let lower = arg.to_ascii_lowercase();
    let (base, group) = match lower.split_once('.') {
        Some((b, g)) => (b.to_string(), Some(g.to_string())),
        None => (lower.clone(), None),
    };
    for (names, plural, g, namespaced) in RESOURCES {
        if *plural == base || names.contains(&base.as_str()) {
            return (
                (*plural).into(),
                group.unwrap_or_else(|| (*g).into()),
                *namespaced,
            );
        }
    }
    (base, group.unwrap_or_default(), true)
}

/// The request a kubectl command line makes (its main request, not discovery).
pub fn kubectl_request(argv: &[String]) -> Result<TestRequest, ArgvError> {
    let mut args: Vec<&str> = argv.iter().map(String::as_str).collect();
    if args.first().is_some_and(|a| a.ends_with("kubectl")) {
        args.remove(0);
    }
    let mut namespace: Option<String> = None;
    let mut all_namespaces = false;
    let mut dry_run = false;
    let mut watch = false;
    let mut delete_all = false;
    let mut command: Vec<String> = Vec::new();
    let mut positional: Vec<String> = Vec::new();
    let mut i = 0;
    // Flags that take a value as the next argument (when not written with `=`).
    const VALUED: &[&str] = &[
        "-n",
        "--namespace",
        "-o",
        "--output",
        "-c",
        "--container",
        "-l",
        "--selector",
        "--field-selector",
        "-f",
        "--filename",
        "--image",
        "--context",
        "--kubeconfig",
        "--as",
        "--as-group",
        "--type",
        "-p",
        "--patch",
        "--replicas",
        "--sort-by",
        "--since",
        "--tail",
        "--address",
        "--grace-period",
        "--timeout",
    ];
    while i < args.len() {
        let a = args[i];
        i += 1;
        if a == "--" {
            command = args[i..].iter().map(|s| s.to_string()).collect();
            break;
        }
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with('-') => (f, Some(v.to_string())),
            _ => (a, None),
        };
        if !flag.starts_with('-') {
            positional.push(a.to_string());
            continue;
        }
        let mut value = || -> Result<String, ArgvError> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => {
                    let v = args
                        .get(i)
                        .ok_or_else(|| ArgvError(format!("{flag} needs a value")))?;
                    i += 1;
                    Ok(v.to_string())
                }
            }
        };
        match flag {
            "-n" | "--namespace" => namespace = Some(value()?),
            "-A" | "--all-namespaces" => all_namespaces = true,
            "-w" | "--watch" => watch = true,
            "--all" => delete_all = true,
            "--dry-run" => {
                let mode = inline.clone().unwrap_or_else(|| "client".into());
                dry_run = mode != "none";
            }
            // `logs -f` follows; elsewhere `-f` names manifests.
            "-f" if positional.first().is_some_and(|v| v == "logs") => {}
            "-f" | "--filename" => {
                return Err(ArgvError(
                    "-f manifests are not read; the resource is unknown".into(),
                ));
            }
            f if VALUED.contains(&f) => {
                value()?;
            }
            _ => {}
        }
    }
    let verb = positional
        .first()
        .cloned()
        .ok_or_else(|| ArgvError("no kubectl verb".into()))?;
    let rest = &positional[1..];
    // `TYPE NAME` or `TYPE/NAME`.
    let target = |rest: &[String]| -> Result<(String, String), ArgvError> {
        let first = rest
            .first()
            .ok_or_else(|| ArgvError(format!("kubectl {verb} needs a resource")))?;
        Ok(match first.split_once('/') {
            Some((t, n)) => (t.to_string(), n.to_string()),
            None => (first.clone(), rest.get(1).cloned().unwrap_or_default()),
        })
    };
    let pod_target = |rest: &[String]| -> Result<String, ArgvError> {
        let first = rest
            .first()
            .ok_or_else(|| ArgvError(format!("kubectl {verb} needs a pod")))?;
        Ok(match first.split_once('/') {
            Some((_, n)) => n.to_string(),
            None => first.clone(),
        })
    };
    let mut req = TestRequest {
        dry_run,
        ..TestRequest::default()
    };
    let (type_arg, name, k8s_verb, subresource) = match verb.as_str() {
        "get" | "describe" => {
            let (t, n) = target(rest)?;
            let v = if watch {
                "watch"
            } else if n.is_empty() {
                "list"
            } else {
                "get"
            };
            (t, n, v, "")
        }
        "delete" => {
            let (t, n) = target(rest)?;
            let v = if n.is_empty() || delete_all {
                "deletecollection"
            } else {
                "delete"
            };
            (t, n, v, "")
        }
        "create" => {
            // `kubectl create deployment NAME`, `kubectl create ns NAME`, `create secret generic NAME`.
            let t = rest
                .first()
                .cloned()
                .ok_or_else(|| ArgvError("kubectl create needs a resource (or -f)".into()))?;
            let n = match t.as_str() {
                "secret" | "service" | "svc" => rest.get(2).cloned().unwrap_or_default(),
                _ => rest.get(1).cloned().unwrap_or_default(),
            };
            (t, n, "create", "")
        }
        "edit" | "patch" | "label" | "annotate" | "set" | "apply" => {
            let (t, n) = target(if verb == "set" {
                &rest[1.min(rest.len())..]
            } else {
                rest
            })?;
            (t, n, "patch", "")
        }
        "replace" => {
            let (t, n) = target(rest)?;
            (t, n, "update", "")
        }
        "scale" => {
            let (t, n) = target(rest)?;
            (t, n, "patch", "scale")
        }
        "rollout" => {
            let (t, n) = target(&rest[1.min(rest.len())..])?;
            (t, n, "patch", "")
        }
        "cordon" | "uncordon" | "taint" => {
            let n = rest.first().cloned().unwrap_or_default();
            (
                "nodes".into(),
                n.trim_start_matches("node/").to_string(),
                "patch",
                "",
            )
        }
        "exec" => ("pods".into(), pod_target(rest)?, "create", "exec"),
        "cp" => {
            // `kubectl cp [ns/]pod:path local` (or reversed) is an exec of tar.
            let remote = rest
                .iter()
                .find(|a| a.contains(':'))
                .ok_or_else(|| ArgvError("kubectl cp needs a pod:path argument".into()))?;
            let pod = remote.split(':').next().unwrap_or_default();
            let pod = match pod.split_once('/') {
                Some((ns, p)) => {
                    namespace = Some(ns.to_string());
                    p.to_string()
                }
                None => pod.to_string(),
            };
            command = vec!["tar".into()];
            ("pods".into(), pod, "create", "exec")
        }
        "attach" => ("pods".into(), pod_target(rest)?, "create", "attach"),
        "logs" => ("pods".into(), pod_target(rest)?, "get", "log"),
        "port-forward" => ("pods".into(), pod_target(rest)?, "create", "portforward"),
        "debug" => (
            "pods".into(),
            pod_target(rest)?,
            "patch",
            "ephemeralcontainers",
        ),
        "run" => {
            let n = rest.first().cloned().unwrap_or_default();
            ("pods".into(), n, "create", "")
        }
        "version" | "api-resources" | "api-versions" | "cluster-info" => {
            req.verb = "get".into();
            req.path = Some("/version".into());
            return Ok(req);
        }
        other => return Err(ArgvError(format!("kubectl {other} is not understood here"))),
    };
    let (resource, group, namespaced) = resolve_resource(&type_arg);
    req.verb = k8s_verb.into();
    req.resource = resource;
    req.api_group = group;
    req.subresource = subresource.into();
    req.name = name;
    if subresource == "exec" {
        req.command = Some(command.join(" "));
    }
    req.namespace = if req.resource == "namespaces" {
        req.name.clone()
    } else if !namespaced || all_namespaces {
        String::new()
    } else {
        namespace.unwrap_or_else(|| "default".into())
    };
    Ok(req)
}

/// A summary of a valid policy for `gatehouse policy check`.
pub fn summary(policy: &Policy) -> String {
    let mut counts = [0usize; 3];
    for rule in policy.rules() {
        counts[rule.action as usize] += 1;
    }
    format!(
        "policy {:?} is valid: version {}, {} rules ({} allow, {} require_approval, {} deny)",
        policy.name,
        policy.version,
        policy.rules().len(),
        counts[Action::Allow as usize],
        counts[Action::RequireApproval as usize],
        counts[Action::Deny as usize],
    )
}

/// Explains the decision for `req` made by `user` in `groups`.
pub fn explain(policy: &Policy, req: &TestRequest, user: &str, groups: &[String]) -> String {
    let r = req.as_request(user, groups);
    let decision = policy.evaluate(&r);
    let mut out = String::new();
    let _ = writeln!(out, "decision: {}", decision.action.as_str());
    let line = policy
        .rules()
        .iter()
        .find(|rule| rule.name == decision.rule)
        .map(|rule| format!(" (line {})", rule.line))
        .unwrap_or_default();
    let _ = writeln!(out, "rule:     {}{line}", decision.rule);
    let _ = writeln!(out, "message:  {}", decision.message());
    let _ = match &req.path {
        Some(path) => writeln!(
            out,
            "request:  user={user} groups={groups:?} verb={} path={path}",
            req.verb
        ),
        None => writeln!(
            out,
            "request:  user={user} groups={groups:?} verb={} apiGroup={:?} resource={} subresource={:?} namespace={:?} name={:?}{}{}",
            req.verb,
            req.api_group,
            req.resource,
            req.subresource,
            req.namespace,
            req.name,
            req.command
                .as_ref()
                .map(|c| format!(" command={c:?}"))
                .unwrap_or_default(),
            if req.dry_run { " dryRun" } else { "" },
        ),
    };
    if decision.action == Action::Allow {
        let _ = writeln!(
            out,
            "options:  mask={} record={} trace={}",
            decision.mask.unwrap_or("-"),
            decision.record,
            decision.trace
        );
    }
    if let Some(a) = decision.approval {
        let _ = writeln!(
            out,
            "approval: approvers={} minApprovals={} mode={:?} grantTtl={}s justification={}",
            a.approvers.join(","),
            a.min_approvals,
            a.mode,
            a.grant_ttl.as_secs(),
            a.justification_required
        );
    }
    let matches: Vec<&Rule> = policy.matching_rules(&r);
    if matches.is_empty() {
        let _ = writeln!(out, "no rule matches: {DEFAULT_DENY_RULE} applies");
    } else {
        let _ = writeln!(out, "matching rules (file order):");
        for rule in matches {
            let mark = if rule.name == decision.rule { "*" } else { " " };
            let _ = writeln!(
                out,
                "  {mark} {} (line {}): {}",
                rule.name,
                rule.line,
                rule.action.as_str()
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> TestRequest {
        let argv: Vec<String> = line.split_whitespace().map(String::from).collect();
        match kubectl_request(&argv) {
            Ok(r) => r,
            Err(e) => panic!("{line}: {e}"),
        }
    }

    #[test]
    fn kubectl_lines() {
        let r = parse("kubectl delete ns prod");
        assert_eq!(
            (
                r.verb.as_str(),
                r.resource.as_str(),
                r.namespace.as_str(),
                r.name.as_str()
            ),
            ("delete", "namespaces", "prod", "prod")
        );
        let r = parse("kubectl -n prod exec -it web-0 -c app -- sh -c id");
        assert_eq!(
            (
                r.verb.as_str(),
                r.subresource.as_str(),
                r.namespace.as_str(),
                r.name.as_str()
            ),
            ("create", "exec", "prod", "web-0")
        );
        assert_eq!(r.command.as_deref(), Some("sh -c id"));
        let r = parse("kubectl get deploy/web --namespace=dev");
        assert_eq!(
            (
                r.verb.as_str(),
                r.api_group.as_str(),
                r.resource.as_str(),
                r.name.as_str()
            ),
            ("get", "apps", "deployments", "web")
        );
        let r = parse("kubectl get pods -A -w");
        assert_eq!((r.verb.as_str(), r.namespace.as_str()), ("watch", ""));
        let r = parse("kubectl logs -f web-0 -n dev");
        assert_eq!((r.subresource.as_str(), r.verb.as_str()), ("log", "get"));
        let r = parse("kubectl apply --dry-run=server -n dev deployment web");
        assert!(r.dry_run);
        let r = parse("kubectl get clusterroles");
        assert_eq!((r.verb.as_str(), r.namespace.as_str()), ("list", ""));
        let r = parse("kubectl port-forward -n prod pod/db 5432");
        assert_eq!(
            (r.subresource.as_str(), r.name.as_str()),
            ("portforward", "db")
        );
        assert!(
            kubectl_request(&[
                "kubectl".into(),
                "apply".into(),
                "-f".into(),
                "x.yaml".into()
            ])
            .is_err()
        );
        assert!(kubectl_request(&["kubectl".into(), "frobnicate".into()]).is_err());
    }
}
