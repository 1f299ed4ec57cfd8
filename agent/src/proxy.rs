//! The request path, assembled in one function: each phase says why it sits where it does.

use crate::Body;
use crate::audit::RequestContext;
use crate::authenticate::Authenticator;
use crate::classify;
use crate::forward::{Forwarder, headers};
use crate::status::ProxyError;
use http::{Request, Response};
use std::net::SocketAddr;

/// Everything a request needs, shared by all connections.
pub struct Proxy {
    authenticator: Authenticator,
    forwarder: Forwarder,
}

impl Proxy {
    /// A proxy from its two stateful parts.
    pub fn new(authenticator: Authenticator, forwarder: Forwarder) -> Self {
        Self {
            authenticator,
            forwarder,
        }
    }

    /// Open upgraded sessions, for the listener's drain at shutdown.
    pub fn sessions(&self) -> &crate::forward::session::Sessions {
        self.forwarder.sessions()
    }

    /// Serves one request end to end and writes its audit line.
    pub async fn handle(
        &self,
        req: Request<hyper::body::Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let mut ctx = RequestContext::new(&req, peer);
        let resp = match self.phases(req, &mut ctx).await {
            Ok(resp) => resp,
            Err(err) => {
                ctx.error = Some(err.to_string());
                err.into_response()
            }
        };
        ctx.finish(resp.status());
        resp
    }

    async fn phases(
        &self,
        req: Request<hyper::body::Incoming>,
        ctx: &mut RequestContext,
    ) -> Result<Response<Body>, ProxyError> {
        // 1. authenticate first: nothing about the cluster, not even a path error, is
        //    answered to an unknown caller.
        let identity = self
            .authenticator
            .authenticate_request(&req)
            .await
            .map_err(|e| ProxyError::Unauthenticated(e.to_string()))?;
        ctx.identity = Some(identity.clone());

        // 2. classify before any decision, refusing paths with two readings so that no
        //    spelling can dodge a rule added later.
        let info = classify::classify(req.method(), req.uri().path(), req.uri().query())
            .map_err(|e| ProxyError::BadRequest(e.to_string()))?;
        ctx.info = Some(info);

        // 3. authorize (placeholder until the policy engine): the user may act only as
        //    themselves, so client-sent impersonation (`kubectl --as`) is refused here,
        //    rather than silently stripped, so the user knows why.
        if let Some(header) = headers::client_impersonation(req.headers()) {
            return Err(ProxyError::Forbidden(format!(
                "user \"{}\" cannot impersonate through gatehouse (header {header}); \
                 requests already reach the cluster as you",
                identity.username
            )));
        }

        // 4. forward last, as the agent's credential impersonating the verified identity.
        self.forwarder
            // B1: `None` until the request path builds the session template (helper A).
            .forward(req, &identity, &ctx.request_id, None)
            .await
    }
}
