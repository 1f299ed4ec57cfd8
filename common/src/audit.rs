//! Audit events: what the agent records about every request and every upgraded session.
//!
//! These are the wire and storage types shared by the agent (which fills them in), the
//! collector (which stores them) and the CLI (which prints them). Field names are the
//! column names of the audit store, so renaming one is a schema change.

use serde::{Deserialize, Serialize};

/// One audit event. Serialised with a `type` tag: `{"type":"api_request", ...}`.
/// Deserialised by [`event_de`]: the same format, without serde's buffering of every
/// field when the tag comes first (as `Serialize` writes it).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
// Both variants are large and most events are requests: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum AuditEvent {
    /// One HTTP request the agent answered or forwarded.
    ApiRequest(ApiRequestEvent),
    /// An exec, attach or port-forward session ended (joins its request on `session_id`).
    SessionEnd(SessionEndEvent),
    /// A piece of a session's asciicast v2 recording (joins its session on `session_id`).
    SessionChunk(SessionChunkEvent),
}

mod event_de {
    //! `Deserialize` for [`AuditEvent`]: serde's derive for an internally tagged enum
    //! buffers the whole object into an intermediate tree before choosing the variant
    //! (an allocation per field; most of the collector's decode time). When `type` is the
    //! first key, which is how every event is written, the rest of the object goes
    //! straight into the variant's struct; otherwise the object is buffered as JSON and
    //! decoded the slow way.

    use super::{ApiRequestEvent, AuditEvent, SessionChunkEvent, SessionEndEvent};
    use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
    use serde::{Deserialize, de::value::MapAccessDeserializer};
    use std::fmt;

    /// The `type` values.
    #[derive(Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        ApiRequest,
        SessionEnd,
        SessionChunk,
    }

    impl<'de> Deserialize<'de> for AuditEvent {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_map(EventVisitor)
        }
    }

    struct EventVisitor;

    /// A map key: whether it is `type` (and, if not, its text for the slow path).
    struct Key;

    impl<'de> DeserializeSeed<'de> for Key {
        type Value = Result<(), String>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Result<(), String>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a field name")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                    Ok(if v == "type" {
                        Ok(())
                    } else {
                        Err(v.to_owned())
                    })
                }
            }
            d.deserialize_str(V)
        }
    }

    impl<'de> Visitor<'de> for EventVisitor {
        type Value = AuditEvent;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an audit event object with a \"type\"")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AuditEvent, A::Error> {
            let first = map
                .next_key_seed(Key)?
                .ok_or_else(|| de::Error::missing_field("type"))?;
            match first {
                Ok(()) => {
                    let kind: Kind = map.next_value()?;
                    let rest = MapAccessDeserializer::new(map);
                    match kind {
                        Kind::ApiRequest => {
                            ApiRequestEvent::deserialize(rest).map(AuditEvent::ApiRequest)
                        }
                        Kind::SessionEnd => {
                            SessionEndEvent::deserialize(rest).map(AuditEvent::SessionEnd)
                        }
                        Kind::SessionChunk => {
                            SessionChunkEvent::deserialize(rest).map(AuditEvent::SessionChunk)
                        }
                    }
                }
                Err(name) => slow(name, map),
            }
        }
    }

    /// `type` was not first: buffer the object, then decode it.
    fn slow<'de, A: MapAccess<'de>>(first: String, mut map: A) -> Result<AuditEvent, A::Error> {
        let mut object = serde_json::Map::new();
        object.insert(first, map.next_value()?);
        while let Some(key) = map.next_key::<String>()? {
            let value: serde_json::Value = map.next_value()?;
            object.insert(key, value);
        }
        let kind = object
            .remove("type")
            .ok_or_else(|| de::Error::missing_field("type"))?;
        let kind = Kind::deserialize(kind).map_err(de::Error::custom)?;
        let rest = serde_json::Value::Object(object);
        match kind {
            Kind::ApiRequest => ApiRequestEvent::deserialize(rest).map(AuditEvent::ApiRequest),
            Kind::SessionEnd => SessionEndEvent::deserialize(rest).map(AuditEvent::SessionEnd),
            Kind::SessionChunk => {
                SessionChunkEvent::deserialize(rest).map(AuditEvent::SessionChunk)
            }
        }
        .map_err(de::Error::custom)
    }
}

impl AuditEvent {
    /// The event's unique id (the idempotency key at the collector).
    pub fn event_id(&self) -> &str {
        match self {
            Self::ApiRequest(e) => &e.event_id,
            Self::SessionEnd(e) => &e.event_id,
            Self::SessionChunk(e) => &e.event_id,
        }
    }
}

/// What the agent decided about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Forwarded upstream.
    Allow,
    /// Refused by the agent (authentication, classification, policy, ...).
    #[default]
    Deny,
    /// Held for, or refused pending, a human approval.
    RequireApproval,
}

impl Decision {
    /// Lower-case name, as serialised (metrics labels use it too).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::RequireApproval => "require_approval",
        }
    }
}

/// The policy's side of a decision: which policy version decided and the options of the
/// matching rules, so that masking, recording and tracing can be audited per request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PolicyOutcome {
    /// Content version of the policy that decided.
    pub version: String,
    /// Masking profile applied to the response, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<String>,
    /// Sessions are recorded.
    #[serde(default)]
    pub record: bool,
    /// Processes and connections are traced with eBPF.
    #[serde(default)]
    pub trace: bool,
    /// Groups that may approve (require_approval decisions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// The user the request was made as (`kubectl --as`), when a rule allowed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<String>,
    /// The groups it was made as (`kubectl --as-group`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub impersonated_groups: Vec<String>,
}

/// Who answered the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AnsweredBy {
    /// The Kubernetes API server (the agent forwarded it).
    Upstream,
    /// The agent itself (a refusal, or upstream unreachable).
    #[default]
    Agent,
}

/// How the caller was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// Not authenticated (the request was refused).
    #[default]
    None,
    /// OIDC ID token as a bearer token.
    Oidc,
    /// TLS client certificate (mTLS).
    ClientCertificate,
}

/// Parameters of an exec or attach request (from its query string).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ExecParams {
    /// `command` parameters in order (empty for attach).
    pub command: Vec<String>,
    /// `container` parameter (empty = the pod's default container).
    pub container: String,
    /// `stdin=true`.
    pub stdin: bool,
    /// `tty=true`.
    pub tty: bool,
}

/// One request, from arrival to the end of its response body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ApiRequestEvent {
    /// Unique id of this event.
    pub event_id: String,
    /// Unique id of the request (also in the agent's log lines about it).
    pub request_id: String,
    /// Session id for exec/attach/port-forward upgrades; later events join on it.
    pub session_id: Option<String>,
    /// When the request arrived (RFC 3339, UTC).
    pub time: chrono::DateTime<chrono::Utc>,
    /// Cluster name the agent serves (configuration).
    pub cluster: String,
    /// Node the agent runs on.
    pub node: String,
    /// Authenticated username (with prefix); empty when authentication failed.
    pub user: String,
    /// Authenticated groups (with prefix).
    pub groups: Vec<String>,
    /// How the user was authenticated.
    pub auth_method: AuthMethod,
    /// Client IP address and port.
    pub source: String,
    /// `User-Agent` header.
    pub user_agent: String,
    /// HTTP method.
    pub method: String,
    /// Path as sent.
    pub path: String,
    /// Raw query string as sent (holds exec commands, selectors, `dryRun`).
    pub query: String,
    /// `true` for `/api/...` and `/apis/...` resource requests.
    pub is_resource_request: bool,
    /// Kubernetes verb (`get`, `list`, `watch`, `create`, ...).
    pub verb: String,
    /// API group (`""` = core).
    pub api_group: String,
    /// API version.
    pub api_version: String,
    /// Plural resource.
    pub resource: String,
    /// Subresource (`exec`, `log`, `status`, ...).
    pub subresource: String,
    /// Namespace (empty for cluster scope).
    pub namespace: String,
    /// Object name (empty for collections).
    pub name: String,
    /// Exec/attach parameters, for those subresources.
    pub exec: Option<ExecParams>,
    /// The decision.
    pub decision: Decision,
    /// What decided: a policy rule name, or a built-in check such as `authentication`.
    pub decided_by: String,
    /// What the policy said beyond the decision (absent when no policy ran, e.g. a
    /// request refused at authentication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyOutcome>,
    /// Who answered.
    pub answered_by: AnsweredBy,
    /// HTTP status code returned to the client.
    pub status_code: u16,
    /// The agent's own error message when it answered itself (never contains a token).
    pub error: String,
    /// Milliseconds from arrival to the response headers.
    pub latency_ms: f64,
    /// Milliseconds from arrival to the end of the response body (streams: their end).
    pub duration_ms: f64,
    /// Request body bytes received from the client.
    pub bytes_in: u64,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
}

/// The kind of an upgraded session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    /// `pods/exec`.
    #[default]
    Exec,
    /// `pods/attach`.
    Attach,
    /// `pods/portforward`.
    PortForward,
}

/// An exec, attach or port-forward session, written when it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SessionEndEvent {
    /// Unique id of this event.
    pub event_id: String,
    /// The session (same as the `ApiRequestEvent.session_id` that opened it).
    pub session_id: String,
    /// The request that opened it.
    pub request_id: String,
    /// Cluster name.
    pub cluster: String,
    /// Node the agent runs on.
    pub node: String,
    /// Username.
    pub user: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Exec, attach or port-forward.
    pub kind: SessionKind,
    /// Negotiated subprotocol (`v5.channel.k8s.io`, `SPDY/3.1+portforward.k8s.io`, ...).
    pub protocol: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Exec/attach parameters.
    pub exec: Option<ExecParams>,
    /// When the session started (the 101 was sent).
    pub started: chrono::DateTime<chrono::Utc>,
    /// When it ended.
    pub ended: chrono::DateTime<chrono::Utc>,
    /// Bytes from kubectl to the API server (after the upgrade).
    pub bytes_from_client: u64,
    /// Bytes from the API server to kubectl.
    pub bytes_to_client: u64,
    /// Why it ended (`closed`, `client_eof`, `upstream_error: ...`, `agent_shutdown`, ...).
    pub end_reason: String,
    // --- recording (issue 6); `default` so events written before these fields decode ---
    /// Milliseconds from start to end.
    #[serde(default)]
    pub duration_ms: f64,
    /// Exit code from the error channel (`Success` = 0, `NonZeroExitCode` = its
    /// `ExitCode` cause); `None` if the session ended without one (or is a port-forward).
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Terminal size of the first resize, `WxH` (empty without a tty).
    #[serde(default)]
    pub terminal: String,
    /// stdin bytes the user sent (payload only, after framing).
    #[serde(default)]
    pub stdin_bytes: u64,
    /// stdout + stderr bytes the container sent (payload only).
    #[serde(default)]
    pub output_bytes: u64,
    /// `SessionChunk` events the recording was shipped as (0 = not recorded).
    #[serde(default)]
    pub recording_chunks: u64,
    /// Port-forward: one entry per forwarded port (metadata only; no payload is kept).
    #[serde(default)]
    pub ports: Vec<PortForwardStats>,
}

/// Bytes one port-forward port carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PortForwardStats {
    /// Container port.
    pub port: u16,
    /// Connections (data streams) opened to it.
    pub connections: u64,
    /// Bytes kubectl sent to the port.
    pub bytes_from_client: u64,
    /// Bytes the port sent back.
    pub bytes_to_client: u64,
}

/// One piece of a session's recording: complete lines of an asciicast v2 file, in order
/// by `seq` (seq 0 is the header line). Concatenated by `seq` they are the `.cast` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SessionChunkEvent {
    /// Unique id of this event.
    pub event_id: String,
    /// The session it belongs to.
    pub session_id: String,
    /// Cluster name.
    pub cluster: String,
    /// Pod namespace.
    pub namespace: String,
    /// Username.
    pub user: String,
    /// When the chunk was cut.
    pub time: chrono::DateTime<chrono::Utc>,
    /// Position in the recording, from 0 without holes (a missing one is a lost chunk).
    pub seq: u64,
    /// `header` (seq 0) or `events`.
    pub stream: String,
    /// asciicast v2 text: whole lines, each ending in `\n`.
    pub data: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_tagged_and_round_trip() -> Result<(), serde_json::Error> {
        let event = AuditEvent::ApiRequest(ApiRequestEvent {
            event_id: "e1".into(),
            verb: "list".into(),
            decision: Decision::Allow,
            ..ApiRequestEvent::default()
        });
        let json = serde_json::to_value(&event)?;
        assert_eq!(json["type"], "api_request");
        assert_eq!(json["decision"], "allow");
        assert_eq!(serde_json::from_value::<AuditEvent>(json)?, event);
        assert_eq!(event.event_id(), "e1");
        Ok(())
    }

    #[test]
    fn events_decode_with_the_tag_anywhere_and_bad_ones_are_errors() -> Result<(), serde_json::Error>
    {
        let api = AuditEvent::ApiRequest(ApiRequestEvent {
            event_id: "e1".into(),
            groups: vec!["a\"b".into()],
            exec: Some(ExecParams {
                command: vec!["sh".into()],
                ..ExecParams::default()
            }),
            ..ApiRequestEvent::default()
        });
        let session = AuditEvent::SessionEnd(SessionEndEvent {
            event_id: "s1".into(),
            kind: SessionKind::PortForward,
            ..SessionEndEvent::default()
        });
        for event in [api, session] {
            // As written (tag first): the direct path.
            let text = serde_json::to_string(&event)?;
            assert!(text.starts_with(r#"{"type":"#), "{text}");
            assert_eq!(serde_json::from_str::<AuditEvent>(&text)?, event);
            // Tag last (another writer): the buffered path.
            let (tag, rest) = text[1..].split_once(',').unwrap_or_default();
            let moved = format!("{{{rest}"); // rest ends with '}'
            let moved = format!("{},{tag}}}", &moved[..moved.len() - 1]);
            assert_eq!(serde_json::from_str::<AuditEvent>(&moved)?, event);
        }
        for bad in [
            r#"{}"#,
            r#"{"event_id":"x"}"#,
            r#"{"type":"nope","event_id":"x"}"#,
            r#"{"event_id":"x","type":"nope"}"#,
            r#"{"type":"api_request","event_id":5}"#,
            r#"{"type":"api_request"}"#,
            r#"[1]"#,
        ] {
            assert!(serde_json::from_str::<AuditEvent>(bad).is_err(), "{bad}");
        }
        Ok(())
    }
}
