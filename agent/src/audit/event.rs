//! Turning a finished [`RequestContext`] into its `ApiRequestEvent`, and the
//! `SessionEndEvent` template an upgraded session's relay completes.

use super::RequestContext;
use gatehouse_common::audit::{
    AnsweredBy, ApiRequestEvent, AuthMethod, Decision, SessionEndEvent, SessionKind,
};

/// Where the agent runs, stamped on every event (`--cluster-name`, `--node-name`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Site {
    /// Cluster name.
    pub cluster: String,
    /// Node name.
    pub node: String,
}

/// How the response went, measured by the body wrappers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Outcome {
    /// HTTP status code sent.
    pub status_code: u16,
    /// Who answered.
    pub answered_by: AnsweredBy,
    /// Milliseconds to the response headers.
    pub latency_ms: f64,
    /// Milliseconds to the end (or drop) of the response body.
    pub duration_ms: f64,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes.
    pub bytes_out: u64,
}

/// The decision fields: `allow` by the placeholder until the policy engine, or `deny`
/// naming the built-in check that refused.
pub const NO_POLICY_YET: &str = "builtin:no-policy-yet";

/// The session kind of an exec/attach/portforward request, if it is one.
pub fn session_kind(ctx: &RequestContext) -> Option<SessionKind> {
    let info = ctx.info.as_ref()?;
    if info.resource != "pods" {
        return None;
    }
    match info.subresource.as_str() {
        "exec" => Some(SessionKind::Exec),
        "attach" => Some(SessionKind::Attach),
        "portforward" => Some(SessionKind::PortForward),
        _ => None,
    }
}

/// The `ApiRequestEvent` of `ctx`. No header is copied, so the `Authorization` token
/// cannot reach the event. Takes `ctx` by value: the request is over, so its strings move
/// into the event instead of being copied (this runs once per request).
pub fn api_request_event(ctx: RequestContext, site: &Site, out: Outcome) -> ApiRequestEvent {
    let info = ctx.info.unwrap_or_default();
    let (auth_method, user, groups) = match ctx.identity {
        // The identity is shared with the token cache, so its strings are copied.
        Some(id) => (id.auth_method, id.username.clone(), id.groups.clone()),
        None => (AuthMethod::None, String::new(), Vec::new()),
    };
    let (decision, decided_by) = match (ctx.denied_by, ctx.decision) {
        (Some(check), _) => (Decision::Deny, check.to_string()),
        (None, Some(decided)) => decided,
        (None, None) => (Decision::Allow, NO_POLICY_YET.to_string()),
    };
    ApiRequestEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        request_id: ctx.request_id,
        session_id: ctx.session_id,
        time: ctx.time,
        cluster: site.cluster.clone(),
        node: site.node.clone(),
        auth_method,
        user,
        groups,
        source: ctx.peer.to_string(),
        user_agent: ctx.user_agent,
        method: ctx.method.to_string(),
        path: ctx.uri_path,
        query: ctx.query,
        is_resource_request: info.is_resource_request,
        verb: info.verb,
        api_group: info.api_group,
        api_version: info.api_version,
        resource: info.resource,
        subresource: info.subresource,
        namespace: info.namespace,
        name: info.name,
        exec: info.exec,
        decision,
        decided_by,
        policy: ctx.policy,
        answered_by: out.answered_by,
        status_code: out.status_code,
        error: ctx.error.unwrap_or_default(),
        latency_ms: out.latency_ms,
        duration_ms: out.duration_ms,
        bytes_in: out.bytes_in,
        bytes_out: out.bytes_out,
    }
}

/// The `SessionEndEvent` template of a session request (everything known on arrival);
/// `None` for other requests or before `ctx.session_id` is set. The relay fills
/// protocol, started, ended, bytes and end_reason.
pub fn session_template(ctx: &RequestContext, site: &Site) -> Option<SessionEndEvent> {
    let kind = session_kind(ctx)?;
    let session_id = ctx.session_id.clone()?;
    let info = ctx.info.as_ref()?;
    let (user, groups) = match &ctx.identity {
        Some(id) => (id.username.clone(), id.groups.clone()),
        None => (String::new(), Vec::new()),
    };
    Some(SessionEndEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        session_id,
        request_id: ctx.request_id.clone(),
        cluster: site.cluster.clone(),
        node: site.node.clone(),
        user,
        groups,
        kind,
        namespace: info.namespace.clone(),
        pod: info.name.clone(),
        exec: info.exec.clone(),
        ..SessionEndEvent::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authenticate::Identity;
    use crate::classify::classify;
    use std::sync::Arc;

    const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.c2lnbmF0dXJl";

    fn ctx(method: http::Method, uri: &str) -> anyhow::Result<RequestContext> {
        let req = http::Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(http::header::USER_AGENT, "kubectl/v1.32.0")
            .body(())?;
        let mut ctx = RequestContext::new(&req, "127.0.0.1:40000".parse()?);
        ctx.identity = Some(Arc::new(Identity {
            username: "oidc:alice".into(),
            groups: vec!["oidc:dev".into()],
            expires_at: 0,
            auth_method: AuthMethod::Oidc,
        }));
        ctx.info = Some(classify(req.method(), req.uri().path(), req.uri().query())?);
        Ok(ctx)
    }

    fn site() -> Site {
        Site {
            cluster: "c1".into(),
            node: "n1".into(),
        }
    }

    #[test]
    fn event_carries_request_identity_and_outcome() -> anyhow::Result<()> {
        let ctx = ctx(http::Method::GET, "/api/v1/namespaces/dev/pods?watch=true")?;
        let out = Outcome {
            status_code: 200,
            answered_by: AnsweredBy::Upstream,
            latency_ms: 1.0,
            duration_ms: 5.0,
            bytes_in: 0,
            bytes_out: 42,
        };
        let ev = api_request_event(ctx, &site(), out);
        assert_eq!(
            (ev.user.as_str(), ev.verb.as_str(), ev.resource.as_str()),
            ("oidc:alice", "watch", "pods")
        );
        assert_eq!((ev.cluster.as_str(), ev.node.as_str()), ("c1", "n1"));
        assert_eq!(
            (ev.decision, ev.decided_by.as_str()),
            (Decision::Allow, NO_POLICY_YET)
        );
        assert_eq!(
            (ev.path.as_str(), ev.query.as_str()),
            ("/api/v1/namespaces/dev/pods", "watch=true")
        );
        assert_eq!(
            (ev.status_code, ev.bytes_out, ev.session_id),
            (200, 42, None)
        );
        Ok(())
    }

    #[test]
    fn denied_requests_name_the_check() -> anyhow::Result<()> {
        let mut ctx = ctx(http::Method::GET, "/api/v1/pods")?;
        ctx.denied_by = Some("impersonation");
        let ev = api_request_event(ctx, &site(), Outcome::default());
        assert_eq!(
            (ev.decision, ev.decided_by.as_str()),
            (Decision::Deny, "impersonation")
        );
        assert_eq!(ev.answered_by, AnsweredBy::Agent);
        Ok(())
    }

    #[test]
    fn the_bearer_token_never_reaches_an_event() -> anyhow::Result<()> {
        let mut ctx = ctx(
            http::Method::POST,
            "/api/v1/namespaces/dev/pods/web-0/exec?command=sh",
        )?;
        ctx.session_id = Some("s1".into());
        let tpl = session_template(&ctx, &site()).ok_or_else(|| anyhow::anyhow!("no template"))?;
        let ev = api_request_event(ctx, &site(), Outcome::default());
        for json in [serde_json::to_string(&ev)?, serde_json::to_string(&tpl)?] {
            assert!(!json.contains(TOKEN), "token leaked: {json}");
            assert!(
                !json.contains("c2VjcmV0LXBheWxvYWQ"),
                "token part leaked: {json}"
            );
        }
        Ok(())
    }

    #[test]
    fn session_template_for_exec_only() -> anyhow::Result<()> {
        let mut ctx = ctx(
            http::Method::POST,
            "/api/v1/namespaces/dev/pods/web-0/exec?command=ls&command=-l&container=app&tty=true",
        )?;
        assert_eq!(session_kind(&ctx), Some(SessionKind::Exec));
        assert!(
            session_template(&ctx, &site()).is_none(),
            "needs a session id"
        );
        ctx.session_id = Some("s1".into());
        let tpl = session_template(&ctx, &site()).ok_or_else(|| anyhow::anyhow!("no template"))?;
        assert_eq!(
            (
                tpl.session_id.as_str(),
                tpl.request_id.as_str(),
                tpl.pod.as_str(),
                tpl.namespace.as_str()
            ),
            ("s1", ctx.request_id.as_str(), "web-0", "dev")
        );
        assert_eq!(tpl.kind, SessionKind::Exec);
        let exec = tpl.exec.ok_or_else(|| anyhow::anyhow!("no exec params"))?;
        assert_eq!(
            (exec.command, exec.container.as_str(), exec.tty),
            (vec!["ls".to_string(), "-l".to_string()], "app", true)
        );
        let pf = self::ctx(
            http::Method::POST,
            "/api/v1/namespaces/dev/pods/web-0/portforward",
        )?;
        assert_eq!(session_kind(&pf), Some(SessionKind::PortForward));
        let logs = self::ctx(http::Method::GET, "/api/v1/namespaces/dev/pods/web-0/log")?;
        assert_eq!(session_kind(&logs), None);
        Ok(())
    }
}
