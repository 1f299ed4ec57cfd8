//! `GET|PUT /v1/policy` on the query API: members of `--policy-admin-groups` replace the
//! active policy (validated whole; a bad one is refused with its line numbers), query-group
//! members and admins read it. Every change attempt is an audit event in the audit store,
//! written before the change is applied, so no change goes unrecorded.

use super::{ApiBody, ApiState, QUERY_LOG_TARGET, json_response, status};
use crate::policy::{PolicyStore, ReplaceError};
use crate::store::AuditStore;
use bytes::Bytes;
use gatehouse_common::audit::{
    AnsweredBy, ApiRequestEvent, AuditEvent, AuthMethod, Decision, PolicyOutcome,
};
use gatehouse_common::oidc::Identity;
use gatehouse_common::policy::{POLICY_PATH, VERSION_HEADER};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use std::sync::Arc;

/// Largest policy body accepted.
const MAX_BODY: usize = 4 << 20;

/// Rule name recorded for changes decided by `--policy-admin-groups`.
pub const ADMIN_CHECK: &str = "policy-admin-groups";

/// What policy administration needs.
pub struct PolicyAdmin {
    /// The active policy and its file.
    pub policy: Arc<PolicyStore>,
    /// Groups whose members may replace it.
    pub admin_groups: Vec<String>,
    /// Where change events are recorded.
    pub audit: Arc<dyn AuditStore>,
}

/// Whether `path` is served here.
pub fn is_policy_path(path: &str) -> bool {
    path == POLICY_PATH
}

/// Serves `GET`/`PUT /v1/policy`.
pub async fn handle(state: &ApiState, req: Request<Incoming>) -> Response<ApiBody> {
    let Some(admin) = &state.policy_admin else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "this collector holds no policy (start it with --policy FILE)",
        );
    };
    let identity = match state.authenticator.authenticate(req.headers()).await {
        Ok(id) => id,
        Err(err) => return status(StatusCode::UNAUTHORIZED, "Unauthorized", &err.to_string()),
    };
    let is_admin = identity
        .groups
        .iter()
        .any(|g| admin.admin_groups.contains(g));
    match *req.method() {
        Method::GET => {
            let reader = is_admin
                || identity
                    .groups
                    .iter()
                    .any(|g| state.query_groups.contains(g));
            if !reader {
                return status(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    "only members of the query or policy admin groups may read the policy",
                );
            }
            let current = admin.policy.current();
            let mut resp = Response::new(
                Full::new(Bytes::from(current.source.clone()))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            );
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/yaml"),
            );
            if let Ok(v) = HeaderValue::from_str(&current.version) {
                resp.headers_mut().insert(VERSION_HEADER, v);
            }
            resp
        }
        Method::PUT => put(admin, &identity, is_admin, req).await,
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "use GET or PUT for /v1/policy",
        ),
    }
}

async fn put(
    admin: &PolicyAdmin,
    identity: &Arc<Identity>,
    is_admin: bool,
    req: Request<Incoming>,
) -> Response<ApiBody> {
    let previous = admin.policy.current().version.clone();
    let mut event = change_event(identity, &previous);
    if !is_admin {
        let message = format!(
            "user {:?} may not change the policy: only members of {} may (--policy-admin-groups)",
            identity.username,
            admin.admin_groups.join(", ")
        );
        record(admin, &mut event, Decision::Deny, 403, &message, None).await;
        return status(StatusCode::FORBIDDEN, "Forbidden", &message);
    }
    let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(err) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("reading the policy body: {err}"),
            );
        }
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the policy must be UTF-8 YAML",
        );
    };
    let policy = match PolicyStore::validate(text) {
        Ok(p) => p,
        Err(err) => {
            let message = format!("policy refused, the active one ({previous}) stays: {err}");
            record(admin, &mut event, Decision::Deny, 400, &message, None).await;
            return status(StatusCode::BAD_REQUEST, "Invalid", &message);
        }
    };
    let version = policy.version.clone();
    event.name = policy.name.clone();
    // Recorded first: a change the audit store cannot record is not made.
    if !record(admin, &mut event, Decision::Allow, 200, "", Some(&version)).await {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the audit store cannot record the change now; the policy was not changed",
        );
    }
    match admin.policy.replace(policy) {
        Ok(active) => {
            tracing::info!(
                target: QUERY_LOG_TARGET,
                user = %identity.username,
                from = %previous,
                to = %active.version,
                "policy replaced through the API"
            );
            json_response(
                StatusCode::OK,
                &serde_json::json!({"version": active.version, "previous": previous, "rules": active.rules().len()}),
            )
        }
        Err(err @ ReplaceError::Write { .. }) | Err(err @ ReplaceError::Invalid(_)) => {
            let message = format!("the policy was not changed: {err}");
            let mut failed = change_event(identity, &previous);
            record(admin, &mut failed, Decision::Deny, 500, &message, None).await;
            status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &message)
        }
    }
}

fn change_event(identity: &Identity, previous: &str) -> ApiRequestEvent {
    ApiRequestEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        request_id: uuid::Uuid::new_v4().to_string(),
        time: chrono::Utc::now(),
        node: "collector".into(),
        user: identity.username.clone(),
        groups: identity.groups.clone(),
        auth_method: AuthMethod::Oidc,
        method: "PUT".into(),
        path: POLICY_PATH.into(),
        is_resource_request: true,
        verb: "update".into(),
        api_group: "gatehouse.dev".into(),
        api_version: "v1".into(),
        resource: "policies".into(),
        decided_by: ADMIN_CHECK.into(),
        answered_by: AnsweredBy::Agent,
        policy: Some(PolicyOutcome {
            version: previous.to_string(),
            ..PolicyOutcome::default()
        }),
        ..ApiRequestEvent::default()
    }
}

/// Completes and stores `event`; `new_version` replaces the recorded version on success.
async fn record(
    admin: &PolicyAdmin,
    event: &mut ApiRequestEvent,
    decision: Decision,
    code: u16,
    error: &str,
    new_version: Option<&str>,
) -> bool {
    event.decision = decision;
    event.status_code = code;
    event.error = error.to_string();
    if let (Some(v), Some(p)) = (new_version, event.policy.as_mut()) {
        p.version = v.to_string();
    }
    match admin
        .audit
        .insert(&[AuditEvent::ApiRequest(event.clone())])
        .await
    {
        Ok(_) => true,
        Err(err) => {
            tracing::error!(target: QUERY_LOG_TARGET, error = %err, "policy change event not stored");
            false
        }
    }
}
