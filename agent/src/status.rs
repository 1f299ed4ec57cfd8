//! Every error the agent answers with, turned into a `v1.Status` response here and only here.
//!
//! kubectl prints `reason: Unauthorized` as "error: You must be logged in to the server
//! (<message>)" and any other reason as "Error from server (<Reason>): <message>", so the
//! messages below are written for the engineer who reads them in a terminal.

use crate::{Body, full_body};
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

/// Why the agent answered a request itself instead of forwarding it.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No usable credential (missing, malformed, expired, wrong issuer or audience, ...).
    #[error("{0}")]
    Unauthenticated(String),
    /// The path is ambiguous (dot segments, empty segments, encoded separators, NUL).
    #[error("{0}")]
    BadRequest(String),
    /// The caller is not allowed to do this (e.g. `kubectl --as`).
    #[error("{0}")]
    Forbidden(String),
    /// The API server could not be reached.
    #[error("{0}")]
    UpstreamUnavailable(String),
    /// A bug or a local resource problem (e.g. unreadable token file).
    #[error("{0}")]
    Internal(String),
}

impl ProxyError {
    /// HTTP status code and `Status.reason`.
    pub fn code_and_reason(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            Self::UpstreamUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        }
    }

    /// The `v1.Status` object for this error.
    pub fn to_status(&self) -> serde_json::Value {
        let (code, reason) = self.code_and_reason();
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": reason,
            "code": code.as_u16(),
        })
    }

    /// The HTTP response carrying the `Status` as JSON.
    pub fn into_response(self) -> Response<Body> {
        let (code, _) = self.code_and_reason();
        let bytes = serde_json::to_vec(&self.to_status()).unwrap_or_default();
        let mut resp = Response::new(full_body(bytes));
        *resp.status_mut() = code;
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if code == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"gatehouse\""),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn unauthorized_is_a_kubernetes_status() -> Result<(), crate::BoxError> {
        let resp = ProxyError::Unauthenticated("token has expired".into()).into_response();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert!(resp.headers().contains_key(header::WWW_AUTHENTICATE));
        let body = resp.into_body().collect().await?.to_bytes();
        let status: serde_json::Value = serde_json::from_slice(&body)?;
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["apiVersion"], "v1");
        assert_eq!(status["reason"], "Unauthorized");
        assert_eq!(status["code"], 401);
        assert_eq!(status["message"], "token has expired");
        Ok(())
    }

    #[test]
    fn each_error_has_its_code() {
        let cases = [
            (ProxyError::BadRequest(String::new()), 400, "BadRequest"),
            (ProxyError::Forbidden(String::new()), 403, "Forbidden"),
            (
                ProxyError::UpstreamUnavailable(String::new()),
                503,
                "ServiceUnavailable",
            ),
            (ProxyError::Internal(String::new()), 500, "InternalError"),
        ];
        for (err, code, reason) in cases {
            let (c, r) = err.code_and_reason();
            assert_eq!((c.as_u16(), r), (code, reason));
        }
    }
}
