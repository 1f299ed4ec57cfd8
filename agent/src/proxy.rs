//! The request path, assembled in one function: each phase says why it sits where it does.

use crate::Body;
use crate::audit::RequestContext;
use crate::audit::body::AuditedBody;
use crate::audit::event::{self, Outcome, Site};
use crate::audit::request_body::CountedRequestBody;
use crate::audit::sink::AuditSink;
use crate::authenticate::Authenticator;
use crate::classify;
use crate::forward::session::SessionStart;
use crate::forward::{Forwarder, headers};
use crate::status::ProxyError;
use gatehouse_common::audit::AnsweredBy;
use http::{Request, Response};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// Everything a request needs, shared by all connections.
pub struct Proxy {
    authenticator: Authenticator,
    forwarder: Forwarder,
    sink: Arc<dyn AuditSink>,
    site: Site,
    // --- spool ---
    spool: Option<Arc<crate::spool::Spool>>,
    // --- session recording (issue 6) ---
    recording: Option<crate::record::Recording>,
    session_limits: crate::forward::session::SessionLimits,
}

impl Proxy {
    /// A proxy from its stateful parts, the audit sink (usually a `FanOut`) and the
    /// cluster/node names stamped on events.
    pub fn new(
        authenticator: Authenticator,
        forwarder: Forwarder,
        sink: Arc<dyn AuditSink>,
        site: Site,
    ) -> Self {
        Self {
            authenticator,
            forwarder,
            sink,
            site,
            spool: None,
            recording: None,
            session_limits: Default::default(),
        }
    }

    // --- session recording (issue 6) ---
    /// Records every exec/attach/port-forward session through `recording`.
    pub fn with_recording(mut self, recording: crate::record::Recording) -> Self {
        self.recording = Some(recording);
        self
    }

    /// Idle timeout and maximum length of upgraded sessions.
    pub fn with_session_limits(mut self, limits: crate::forward::session::SessionLimits) -> Self {
        self.session_limits = limits;
        self
    }

    // --- spool ---
    /// Makes the request path check `spool` (already one of the sinks): with the
    /// fail-closed policy, a full spool refuses requests rather than serve them unrecorded.
    pub fn with_spool(mut self, spool: Arc<crate::spool::Spool>) -> Self {
        self.spool = Some(spool);
        self
    }

    /// The spool, if the agent records to one.
    pub fn spool(&self) -> Option<&Arc<crate::spool::Spool>> {
        self.spool.as_ref()
    }

    /// Open upgraded sessions, for the listener's drain at shutdown.
    pub fn sessions(&self) -> &crate::forward::session::Sessions {
        self.forwarder.sessions()
    }

    /// Serves one request end to end; its audit event is emitted when the response body
    /// ends or is dropped.
    pub async fn handle(
        &self,
        req: Request<hyper::body::Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let mut ctx = RequestContext::new(&req, peer);
        let bytes_in = Arc::new(AtomicU64::new(0));
        let req = req.map(|body| CountedRequestBody::new(body, bytes_in.clone()).boxed());
        let (resp, answered_by) = match self.phases(req, &mut ctx).await {
            Ok(resp) => (resp, AnsweredBy::Upstream),
            Err(err) => {
                ctx.error = Some(err.to_string());
                (err.into_response(), AnsweredBy::Agent)
            }
        };
        let started = ctx.started;
        let out = Outcome {
            status_code: resp.status().as_u16(),
            answered_by,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            ..Outcome::default()
        };
        let audit_event = event::api_request_event(ctx, &self.site, out);
        let (parts, body) = resp.into_parts();
        let body = AuditedBody::new(body, audit_event, out, self.sink.clone(), started)
            .with_request_bytes(bytes_in);
        Response::from_parts(parts, body.boxed())
    }

    async fn phases(
        &self,
        req: Request<Body>,
        ctx: &mut RequestContext,
    ) -> Result<Response<Body>, ProxyError> {
        // 0. nothing is served that cannot be recorded, when the policy says so.
        if let Some(spool) = &self.spool
            && !spool.accepts_requests()
        {
            ctx.denied_by = Some("audit_spool_full");
            return Err(ProxyError::UpstreamUnavailable(
                crate::spool::SPOOL_FULL_MESSAGE.into(),
            ));
        }
        // 1. authenticate first: nothing about the cluster, not even a path error, is
        //    answered to an unknown caller.
        let identity = self
            .authenticator
            .authenticate_request(&req)
            .await
            .map_err(|e| {
                ctx.denied_by = Some("authentication");
                ProxyError::Unauthenticated(e.to_string())
            })?;
        ctx.identity = Some(identity.clone());

        // 2. classify before any decision, refusing paths with two readings so that no
        //    spelling can dodge a rule added later.
        let info =
            classify::classify(req.method(), req.uri().path(), req.uri().query()).map_err(|e| {
                ctx.denied_by = Some("classification");
                ProxyError::BadRequest(e.to_string())
            })?;
        ctx.info = Some(info);
        if event::session_kind(ctx).is_some() {
            ctx.session_id = Some(uuid::Uuid::new_v4().to_string());
        }

        // 3. authorize (placeholder until the policy engine): the user may act only as
        //    themselves, so client-sent impersonation (`kubectl --as`) is refused here,
        //    rather than silently stripped, so the user knows why.
        if let Some(header) = headers::client_impersonation(req.headers()) {
            ctx.denied_by = Some("impersonation");
            return Err(ProxyError::Forbidden(format!(
                "user \"{}\" cannot impersonate through gatehouse (header {header}); \
                 requests already reach the cluster as you",
                identity.username
            )));
        }

        // 4. forward last, as the agent's credential impersonating the verified identity.
        // Exec, attach and port-forward: the relay finishes this template as the one
        // SessionEnd event of the session.
        let session = event::session_template(ctx, &self.site).map(|template| SessionStart {
            tap: self.recording.as_ref().map(|r| r.tap(&template)),
            template,
            sink: self.sink.clone(),
            limits: self.session_limits,
        });
        let long_lived = ctx
            .info
            .as_ref()
            .is_some_and(classify::RequestInfo::is_long_lived_stream);
        self.forwarder
            .forward(req, &identity, &ctx.request_id, long_lived, session)
            .await
    }
}
