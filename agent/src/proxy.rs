//! The request path, assembled in one function: each phase says why it sits where it does.

use crate::Body;
use crate::audit::RequestContext;
use crate::audit::body::AuditedBody;
use crate::audit::event::{self, Outcome, Site};
use crate::audit::request_body::CountedRequestBody;
use crate::audit::sink::AuditSink;
use crate::authenticate::Authenticator;
use crate::authorize;
use crate::classify;
use crate::forward::Forwarder;
use crate::forward::session::SessionStart;
use crate::policy::ActivePolicy;
use crate::status::ProxyError;
use gatehouse_common::audit::{AnsweredBy, Decision};
use gatehouse_common::policy::Action;
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
    // --- masking ---
    masking: Option<Arc<crate::forward::mask::Masking>>,
    // --- policy ---
    policy: Arc<ActivePolicy>,
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
            masking: None,
            policy: ActivePolicy::empty(),
            recording: None,
            session_limits: Default::default(),
        }
    }

    // --- policy ---
    /// Decides requests with `policy`; without one every request is refused with 503.
    pub fn with_policy(mut self, policy: Arc<ActivePolicy>) -> Self {
        self.policy = policy;
        self
    }

    /// The active policy holder.
    pub fn policy(&self) -> &Arc<ActivePolicy> {
        &self.policy
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

    // --- masking ---
    /// Masks responses with `masking`'s profiles (the request's, or the default).
    pub fn with_masking(mut self, masking: Arc<crate::forward::mask::Masking>) -> Self {
        self.masking = Some(masking);
        self
    }

    /// The masking profiles, for the session taps.
    pub fn masking(&self) -> Option<&Arc<crate::forward::mask::Masking>> {
        self.masking.as_ref()
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
        mut req: Request<Body>,
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

        // 3. authorize after classification, on the attributes no spelling can dodge: the
        //    policy decides for the verified identity (a `--as` target only when a rule
        //    allows impersonating it). Without a policy nothing passes (fail closed).
        let Some(policy) = self.policy.get() else {
            ctx.denied_by = Some("policy_not_loaded");
            return Err(ProxyError::UpstreamUnavailable(
                crate::policy::NOT_LOADED_MESSAGE.into(),
            ));
        };
        let verdict = match &ctx.info {
            Some(info) => authorize::authorize(&policy, &identity, info, req.headers()),
            None => return Err(ProxyError::Internal("request was not classified".into())),
        };
        let identity = match verdict {
            Ok(ok) => {
                ctx.decision = Some((Decision::Allow, ok.rule));
                // the rule's `mask` profile; `None` leaves --default-mask-profile in force.
                ctx.mask_profile = ok.outcome.mask.clone();
                ctx.policy = Some(ok.outcome);
                ok.forward_as
            }
            Err(refused) => {
                let refused = *refused;
                ctx.decision = Some((audit_decision(refused.action), refused.rule));
                ctx.policy = Some(refused.outcome);
                return Err(ProxyError::Forbidden(refused.message));
            }
        };

        // mask: decided after policy (which may name the profile), set up before
        // forwarding (the API server must be asked for JSON), applied to the response.
        let mask_plan = match &self.masking {
            Some(masking) => masking.plan(ctx)?,
            None => None,
        };
        if let Some(plan) = &mask_plan {
            plan.prepare_request(req.headers_mut());
        }

        // 4. forward last, as the agent's credential impersonating the verified identity.
        // Exec, attach and port-forward: the relay finishes this template as the one
        // SessionEnd event of the session.
        // Recordings are masked with the request's profile's text detectors (the built-in
        // ones when it names none), whatever the user's own view shows.
        let recording_detectors = self
            .masking
            .as_ref()
            .and_then(|m| m.profile_for(ctx.mask_profile.as_deref()).ok().flatten())
            .and_then(|profile| profile.text.clone());
        let session = event::session_template(ctx, &self.site).map(|template| SessionStart {
            tap: self
                .recording
                .as_ref()
                .map(|r| r.tap(&template, recording_detectors)),
            template,
            sink: self.sink.clone(),
            limits: self.session_limits,
        });
        let long_lived = ctx
            .info
            .as_ref()
            .is_some_and(classify::RequestInfo::is_long_lived_stream);
        let resp = self
            .forwarder
            .forward(req, &identity, &ctx.request_id, long_lived, session)
            .await?;
        match mask_plan {
            Some(plan) => plan.respond(resp).await,
            None => Ok(resp),
        }
    }
}

/// The audit event's decision for a refusing policy action.
fn audit_decision(action: Action) -> Decision {
    match action {
        Action::Allow => Decision::Allow,
        Action::RequireApproval => Decision::RequireApproval,
        Action::Deny => Decision::Deny,
    }
}
