//! Create-only review resources: SelfSubjectAccessReview, SelfSubjectRulesReview,
//! (Local)SubjectAccessReview, SelfSubjectReview (`kubectl auth whoami`) and TokenReview
//! (the collector checking an agent's service-account token).

use super::Body;
use super::authn::UserInfo;
use super::context::Shared;
use super::rbac::{self, Attributes};
use super::resources::ResourceDef;
use super::status::{ApiError, json_response};
use http::{Response, StatusCode};
use serde_json::{Value, json};

fn s(v: &Value, p: &str) -> String {
    v.pointer(p)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn attributes_of(spec: &Value) -> Attributes {
    if let Some(ra) = spec.get("resourceAttributes") {
        Attributes {
            verb: s(ra, "/verb"),
            resource_request: true,
            namespace: s(ra, "/namespace"),
            api_group: s(ra, "/group"),
            resource: s(ra, "/resource"),
            subresource: s(ra, "/subresource"),
            name: s(ra, "/name"),
            path: String::new(),
        }
    } else {
        let nra = spec
            .get("nonResourceAttributes")
            .cloned()
            .unwrap_or(json!({}));
        Attributes {
            verb: s(&nra, "/verb"),
            path: s(&nra, "/path"),
            ..Default::default()
        }
    }
}

fn user_of_spec(spec: &Value) -> UserInfo {
    UserInfo {
        username: s(spec, "/user"),
        uid: s(spec, "/uid"),
        groups: spec
            .get("groups")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|g| g.as_str().map(str::to_string))
            .collect(),
        extra: Default::default(),
    }
}

/// Answers a POST to a review resource as `user`.
pub fn create(
    shared: &Shared,
    def: &ResourceDef,
    user: &UserInfo,
    namespace: &str,
    content_type: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let mut review: Value = if content_type.starts_with("application/vnd.kubernetes.protobuf") {
        super::protobuf::decode(body)
            .map_err(|e| ApiError::new(415, "UnsupportedMediaType", e.to_string()))?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))?
    };
    let spec = review.get("spec").cloned().unwrap_or(json!({}));
    let status = match def.kind {
        "SelfSubjectAccessReview" | "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let subject = if def.kind == "SelfSubjectAccessReview" {
                user.clone()
            } else {
                user_of_spec(&spec)
            };
            let mut attrs = attributes_of(&spec);
            if def.kind == "LocalSubjectAccessReview" {
                attrs.namespace = namespace.to_string();
            }
            let allowed = rbac::authorize(&shared.store, &subject, &attrs);
            let mut st = json!({"allowed": allowed});
            if allowed {
                st["reason"] = json!("RBAC: allowed");
            }
            st
        }
        "SelfSubjectRulesReview" => {
            rbac::rules_review(&shared.store, user, &s(&spec, "/namespace"))
        }
        "SelfSubjectReview" => {
            json!({"userInfo": {"username": user.username, "uid": user.uid, "groups": user.groups, "extra": user.extra}})
        }
        "TokenReview" => {
            let token = s(&spec, "/token");
            let known = (!token.is_empty())
                .then(|| shared.tokens.authenticate(Some(&format!("Bearer {token}"))))
                .flatten();
            match known {
                Some(u) => json!({
                    "authenticated": true,
                    "user": {"username": u.username, "uid": u.uid, "groups": u.groups, "extra": u.extra},
                    "audiences": spec.get("audiences").cloned().unwrap_or(json!([])),
                }),
                None => json!({"authenticated": false, "error": "invalid bearer token"}),
            }
        }
        _ => return Err(ApiError::method_not_allowed()),
    };
    review["status"] = status;
    review["apiVersion"] = json!(def.api_version());
    review["kind"] = json!(def.kind);
    if !review.get("metadata").is_some_and(Value::is_object) {
        review["metadata"] = json!({});
    }
    review["metadata"]["creationTimestamp"] = Value::Null;
    Ok(json_response(StatusCode::CREATED, &review))
}
