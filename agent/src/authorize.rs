//! The authorize phase: the active policy decides a classified request for the verified
//! identity, including client impersonation (`kubectl --as/--as-group`), which passes only
//! when a rule allows `impersonate` on each target.
//!
//! Exec, attach and port-forward are decided with verb `create` whatever the HTTP method
//! (kubectl's WebSocket upgrade is a GET), as the API server authorizes them, so a rule
//! allowing `get` on pods can never open a shell.

use crate::authenticate::Identity;
use crate::classify::RequestInfo;
use gatehouse_common::audit::PolicyOutcome;
use gatehouse_common::policy::{Action, DEFAULT_DENY_RULE, Decision, Policy, Request};
use http::HeaderMap;
use std::sync::Arc;

/// Built-in name recorded when client impersonation is refused for want of a rule.
pub const IMPERSONATION_CHECK: &str = "impersonation";

/// A request the policy let through.
#[derive(Debug)]
pub struct Authorized {
    /// Who the request goes upstream as: the caller, or the impersonated user.
    pub forward_as: Arc<Identity>,
    /// The deciding rule.
    pub rule: String,
    /// Options and version, for the audit event (and the masking/recording phases).
    pub outcome: PolicyOutcome,
}

/// A request the policy refused.
#[derive(Debug)]
pub struct Refused {
    /// Deny, or require_approval.
    pub action: Action,
    /// The deciding rule (or [`IMPERSONATION_CHECK`]).
    pub rule: String,
    /// The message for the user.
    pub message: String,
    /// Options and version, for the audit event.
    pub outcome: PolicyOutcome,
}

/// The policy attributes of `info` for `identity`.
pub fn request<'a>(
    identity: &'a Identity,
    info: &'a RequestInfo,
    command: Option<&'a str>,
) -> Request<'a> {
    let session = matches!(info.subresource.as_str(), "exec" | "attach" | "portforward")
        && info.resource == "pods";
    Request {
        user: &identity.username,
        groups: &identity.groups,
        resource_request: info.is_resource_request,
        path: &info.path,
        verb: if session { "create" } else { &info.verb },
        api_group: &info.api_group,
        resource: &info.resource,
        subresource: &info.subresource,
        namespace: &info.namespace,
        name: &info.name,
        command,
        dry_run: !info.dry_run.is_empty(),
        namespace_labels: None,
    }
}

/// Decides `info` for `identity` under `policy`, impersonation headers included.
pub fn authorize(
    policy: &Policy,
    identity: &Arc<Identity>,
    info: &RequestInfo,
    headers: &HeaderMap,
) -> Result<Authorized, Box<Refused>> {
    let mut outcome = PolicyOutcome {
        version: policy.version.clone(),
        ..PolicyOutcome::default()
    };
    let forward_as = match impersonation(headers) {
        Impersonation::None => identity.clone(),
        Impersonation::Unsupported(message) => {
            return Err(Box::new(Refused {
                action: Action::Deny,
                rule: IMPERSONATION_CHECK.into(),
                message,
                outcome,
            }));
        }
        Impersonation::As { user, groups } => {
            check_impersonation(policy, identity, &user, &groups, &mut outcome)?;
            outcome.impersonated_user = Some(user.clone());
            outcome.impersonated_groups = groups.clone();
            Arc::new(Identity {
                username: user,
                groups,
                ..(**identity).clone()
            })
        }
    };
    let command = info.exec.as_ref().map(|e| e.command.join(" "));
    let decision = policy.evaluate(&request(&forward_as, info, command.as_deref()));
    fill(&mut outcome, &decision);
    match decision.action {
        Action::Allow => Ok(Authorized {
            forward_as,
            rule: decision.rule.to_string(),
            outcome,
        }),
        action => Err(Box::new(Refused {
            action,
            rule: decision.rule.to_string(),
            message: refusal_message(&decision),
            outcome,
        })),
    }
}

fn fill(outcome: &mut PolicyOutcome, decision: &Decision<'_>) {
    outcome.mask = decision.mask.map(str::to_string);
    outcome.record = decision.record;
    outcome.trace = decision.trace;
    outcome.approvers = decision
        .approval
        .map(|a| a.approvers.clone())
        .unwrap_or_default();
}

/// The user-facing text of a deny or require_approval decision.
pub fn refusal_message(decision: &Decision<'_>) -> String {
    let base = decision.message();
    match (decision.action, decision.approval) {
        (Action::RequireApproval, Some(approval)) => format!(
            "{base}: approval by a member of {} is required ({} approval{} needed, mode {}); \
             this gatehouse version cannot hold or grant approvals yet, so the request is refused",
            approval.approvers.join(", "),
            approval.min_approvals,
            if approval.min_approvals == 1 { "" } else { "s" },
            match approval.mode {
                gatehouse_common::policy::ApprovalMode::Hold => "hold",
                gatehouse_common::policy::ApprovalMode::Grant => "grant",
            },
        ),
        _ => base,
    }
}

enum Impersonation {
    None,
    As { user: String, groups: Vec<String> },
    Unsupported(String),
}

fn impersonation(headers: &HeaderMap) -> Impersonation {
    if !headers
        .keys()
        .any(|name| name.as_str().starts_with("impersonate-"))
    {
        return Impersonation::None;
    }
    let values = |name: &str| -> Option<Vec<String>> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    };
    if let Some(other) = headers.keys().find(|n| {
        let n = n.as_str();
        n.starts_with("impersonate-") && n != "impersonate-user" && n != "impersonate-group"
    }) {
        return Impersonation::Unsupported(format!(
            "gatehouse does not pass {other} through; impersonate with --as and --as-group only"
        ));
    }
    let (Some(users), Some(groups)) = (values("impersonate-user"), values("impersonate-group"))
    else {
        return Impersonation::Unsupported("impersonation headers must be ASCII".into());
    };
    match users.as_slice() {
        [user] if !user.is_empty() => Impersonation::As {
            user: user.clone(),
            groups,
        },
        [] => Impersonation::Unsupported(
            "--as-group needs --as: groups can only be impersonated with a user".into(),
        ),
        _ => Impersonation::Unsupported("exactly one Impersonate-User is allowed".into()),
    }
}

/// Each target must be allowed: `impersonate` on users/<name> (or serviceaccounts in its
/// namespace for `system:serviceaccount:ns:name`) and on groups/<name> for each group.
fn check_impersonation(
    policy: &Policy,
    identity: &Identity,
    user: &str,
    groups: &[String],
    outcome: &mut PolicyOutcome,
) -> Result<(), Box<Refused>> {
    let mut targets: Vec<(&str, &str, &str)> = Vec::with_capacity(groups.len() + 1);
    match user
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
    {
        Some((ns, name)) => targets.push(("serviceaccounts", ns, name)),
        None => targets.push(("users", "", user)),
    }
    for g in groups {
        targets.push(("groups", "", g));
    }
    for (resource, namespace, name) in targets {
        let req = Request {
            user: &identity.username,
            groups: &identity.groups,
            resource_request: true,
            verb: "impersonate",
            resource,
            namespace,
            name,
            ..Request::default()
        };
        let decision = policy.evaluate(&req);
        if decision.action == Action::Allow {
            continue;
        }
        fill(outcome, &decision);
        let (rule, message) = if decision.rule == DEFAULT_DENY_RULE {
            (
                IMPERSONATION_CHECK.to_string(),
                format!(
                    "user \"{}\" cannot impersonate through gatehouse ({resource} \"{name}\"): no \
                     policy rule allows it; requests already reach the cluster as you",
                    identity.username
                ),
            )
        } else {
            (
                decision.rule.to_string(),
                format!(
                    "impersonating {resource} \"{name}\": {}",
                    refusal_message(&decision)
                ),
            )
        };
        return Err(Box::new(Refused {
            action: Action::Deny,
            rule,
            message,
            outcome: outcome.clone(),
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_common::audit::AuthMethod;
    use http::HeaderValue;

    const POLICY: &str = r#"apiVersion: gatehouse.dev/v1
kind: Policy
rules:
  - name: read
    subjects: {groups: [engineers]}
    match: {verbs: [get, list, watch]}
    action: allow
  - name: dev-exec
    subjects: {groups: [engineers]}
    match: {resources: [pods], subresources: [exec], namespaces: [dev]}
    action: allow
    record: true
  - name: prod-exec
    subjects: {groups: [engineers]}
    match: {resources: [pods], subresources: [exec], namespaces: [prod]}
    action: require_approval
    approval: {approvers: [sre-leads]}
  - name: as-viewer
    subjects: {users: [alice]}
    match: {verbs: [impersonate], resources: [users], names: [viewer]}
    action: allow
  - name: viewer-reads
    subjects: {users: [viewer]}
    match: {verbs: [get, list]}
    action: allow
"#;

    fn setup() -> (Policy, Arc<Identity>) {
        let policy = match Policy::parse(POLICY) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let id = Arc::new(Identity {
            username: "alice".into(),
            groups: vec!["engineers".into()],
            expires_at: 0,
            auth_method: AuthMethod::Oidc,
        });
        (policy, id)
    }

    fn info(method: http::Method, path: &str, query: Option<&str>) -> RequestInfo {
        match crate::classify::classify(&method, path, query) {
            Ok(i) => i,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn websocket_exec_is_create_and_not_allowed_by_get() {
        let (policy, id) = setup();
        let exec = info(
            http::Method::GET,
            "/api/v1/namespaces/staging/pods/web/exec",
            Some("command=sh&stdin=true"),
        );
        let refused = authorize(&policy, &id, &exec, &HeaderMap::new()).err();
        assert_eq!(refused.map(|r| r.rule), Some(DEFAULT_DENY_RULE.to_string()));
        let dev = info(
            http::Method::GET,
            "/api/v1/namespaces/dev/pods/web/exec",
            Some("command=sh"),
        );
        let ok = authorize(&policy, &id, &dev, &HeaderMap::new()).ok();
        assert_eq!(
            ok.map(|a| (a.rule, a.outcome.record)),
            Some(("dev-exec".to_string(), true))
        );
    }

    #[test]
    fn require_approval_is_refused_naming_approvers() {
        let (policy, id) = setup();
        let prod = info(
            http::Method::POST,
            "/api/v1/namespaces/prod/pods/web/exec",
            Some("command=sh"),
        );
        match authorize(&policy, &id, &prod, &HeaderMap::new()) {
            Err(r) => {
                assert_eq!(r.action, Action::RequireApproval);
                assert_eq!(r.rule, "prod-exec");
                assert!(r.message.contains("sre-leads"), "{}", r.message);
                assert_eq!(r.outcome.approvers, ["sre-leads"]);
            }
            Ok(a) => panic!("allowed by {}", a.rule),
        }
    }

    #[test]
    fn impersonation_needs_a_rule_and_decides_as_the_target() {
        let (policy, id) = setup();
        let get = info(http::Method::GET, "/api/v1/namespaces/dev/pods", None);
        let mut h = HeaderMap::new();
        h.insert("impersonate-user", HeaderValue::from_static("viewer"));
        let ok = authorize(&policy, &id, &get, &h).ok();
        assert_eq!(
            ok.map(|a| (a.forward_as.username.clone(), a.rule)),
            Some(("viewer".to_string(), "viewer-reads".to_string()))
        );
        h.insert("impersonate-user", HeaderValue::from_static("admin"));
        let r = authorize(&policy, &id, &get, &h).err();
        assert_eq!(r.map(|r| r.rule), Some(IMPERSONATION_CHECK.to_string()));
        let mut groups = HeaderMap::new();
        groups.insert("impersonate-user", HeaderValue::from_static("viewer"));
        groups.append(
            "impersonate-group",
            HeaderValue::from_static("system:masters"),
        );
        assert!(authorize(&policy, &id, &get, &groups).is_err());
        let mut lone = HeaderMap::new();
        lone.insert("impersonate-group", HeaderValue::from_static("x"));
        assert!(authorize(&policy, &id, &get, &lone).is_err_and(|r| r.rule == IMPERSONATION_CHECK));
        let mut uid = HeaderMap::new();
        uid.insert("impersonate-user", HeaderValue::from_static("viewer"));
        uid.insert("impersonate-uid", HeaderValue::from_static("0"));
        assert!(
            authorize(&policy, &id, &get, &uid)
                .is_err_and(|r| r.message.contains("impersonate-uid"))
        );
    }
}
