//! Row types of the ClickHouse tables the collector writes, built from
//! [`AuditEvent`](gatehouse_common::audit::AuditEvent)s.
//! Field order and names follow the columns in `schema.rs` (RowBinary is positional).

use chrono::{DateTime, Utc};
use gatehouse_common::audit::{ApiRequestEvent, SessionChunkEvent, SessionEndEvent};
use serde::{Serialize, Serializer};

/// A timestamp as the server's time column wants it: `DateTime` seconds (u32) on 18.16,
/// `DateTime64(6)` microseconds (i64) on servers that have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChTime {
    /// Seconds since the epoch (clamped to `DateTime`'s range).
    Secs(u32),
    /// Microseconds since the epoch.
    Micros(i64),
}

impl ChTime {
    /// `time` in the server's representation.
    pub fn new(time: DateTime<Utc>, datetime64: bool) -> Self {
        if datetime64 {
            Self::Micros(time.timestamp_micros())
        } else {
            Self::Secs(u32::try_from(time.timestamp().max(0)).unwrap_or(u32::MAX))
        }
    }

    /// Whole seconds (for range filters that work on both column types).
    pub fn secs(self) -> i64 {
        match self {
            Self::Secs(s) => i64::from(s),
            Self::Micros(us) => us.div_euclid(1_000_000),
        }
    }
}

impl Serialize for ChTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Secs(v) => s.serialize_u32(*v),
            Self::Micros(v) => s.serialize_i64(*v),
        }
    }
}

/// The serde (wire) name of a unit enum variant, e.g. `port_forward`.
pub(crate) fn enum_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// One row of `api_requests`.
// The columns are the `ApiRequestEvent` fields, documented in `gatehouse_common::audit`.
#[allow(missing_docs)]
#[derive(Debug, Clone, Serialize, clickhouse::Row)]
pub struct ApiRequestRow {
    pub event_id: String,
    pub request_id: String,
    pub session_id: String,
    pub time: ChTime,
    pub cluster: String,
    pub node: String,
    pub user: String,
    pub groups: Vec<String>,
    pub auth_method: String,
    pub source: String,
    pub user_agent: String,
    pub method: String,
    pub path: String,
    pub query: String,
    pub is_resource_request: u8,
    pub verb: String,
    pub api_group: String,
    pub api_version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    pub exec_command: Vec<String>,
    pub exec_container: String,
    pub exec_stdin: u8,
    pub exec_tty: u8,
    pub decision: String,
    pub decided_by: String,
    pub answered_by: String,
    pub status_code: u16,
    pub error: String,
    pub latency_ms: f64,
    pub duration_ms: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl ApiRequestRow {
    /// The row for `e`.
    pub fn new(e: &ApiRequestEvent, datetime64: bool) -> Self {
        let exec = e.exec.clone().unwrap_or_default();
        Self {
            event_id: e.event_id.clone(),
            request_id: e.request_id.clone(),
            session_id: e.session_id.clone().unwrap_or_default(),
            time: ChTime::new(e.time, datetime64),
            cluster: e.cluster.clone(),
            node: e.node.clone(),
            user: e.user.clone(),
            groups: e.groups.clone(),
            auth_method: enum_name(&e.auth_method),
            source: e.source.clone(),
            user_agent: e.user_agent.clone(),
            method: e.method.clone(),
            path: e.path.clone(),
            query: e.query.clone(),
            is_resource_request: u8::from(e.is_resource_request),
            verb: e.verb.clone(),
            api_group: e.api_group.clone(),
            api_version: e.api_version.clone(),
            resource: e.resource.clone(),
            subresource: e.subresource.clone(),
            namespace: e.namespace.clone(),
            name: e.name.clone(),
            exec_command: exec.command,
            exec_container: exec.container,
            exec_stdin: u8::from(exec.stdin),
            exec_tty: u8::from(exec.tty),
            decision: e.decision.as_str().to_string(),
            decided_by: e.decided_by.clone(),
            answered_by: enum_name(&e.answered_by),
            status_code: e.status_code,
            error: e.error.clone(),
            latency_ms: e.latency_ms,
            duration_ms: e.duration_ms,
            bytes_in: e.bytes_in,
            bytes_out: e.bytes_out,
        }
    }
}

/// One row of `sessions` (from a `SessionEnd` event).
// The columns are the `SessionEndEvent` fields, documented in `gatehouse_common::audit`.
#[allow(missing_docs)]
#[derive(Debug, Clone, Serialize, clickhouse::Row)]
pub struct SessionRow {
    pub event_id: String,
    pub session_id: String,
    pub request_id: String,
    pub cluster: String,
    pub node: String,
    pub user: String,
    pub groups: Vec<String>,
    pub kind: String,
    pub protocol: String,
    pub namespace: String,
    pub pod: String,
    pub exec_command: Vec<String>,
    pub exec_container: String,
    pub exec_stdin: u8,
    pub exec_tty: u8,
    pub started: ChTime,
    pub ended: ChTime,
    pub bytes_from_client: u64,
    pub bytes_to_client: u64,
    pub end_reason: String,
    // --- migration 2: recording fields ---
    pub duration_ms: f64,
    pub exited: u8,
    pub exit_code: i32,
    pub terminal: String,
    pub stdin_bytes: u64,
    pub output_bytes: u64,
    pub recording_chunks: u64,
    /// `ports` as JSON (empty for exec/attach).
    pub ports: String,
}

impl SessionRow {
    /// The row for `e`.
    pub fn new(e: &SessionEndEvent, datetime64: bool) -> Self {
        let exec = e.exec.clone().unwrap_or_default();
        Self {
            event_id: e.event_id.clone(),
            session_id: e.session_id.clone(),
            request_id: e.request_id.clone(),
            cluster: e.cluster.clone(),
            node: e.node.clone(),
            user: e.user.clone(),
            groups: e.groups.clone(),
            kind: enum_name(&e.kind),
            protocol: e.protocol.clone(),
            namespace: e.namespace.clone(),
            pod: e.pod.clone(),
            exec_command: exec.command,
            exec_container: exec.container,
            exec_stdin: u8::from(exec.stdin),
            exec_tty: u8::from(exec.tty),
            started: ChTime::new(e.started, datetime64),
            ended: ChTime::new(e.ended, datetime64),
            bytes_from_client: e.bytes_from_client,
            bytes_to_client: e.bytes_to_client,
            end_reason: e.end_reason.clone(),
            duration_ms: e.duration_ms,
            exited: u8::from(e.exit_code.is_some()),
            exit_code: e.exit_code.unwrap_or(0),
            terminal: e.terminal.clone(),
            stdin_bytes: e.stdin_bytes,
            output_bytes: e.output_bytes,
            recording_chunks: e.recording_chunks,
            ports: if e.ports.is_empty() {
                String::new()
            } else {
                serde_json::to_string(&e.ports).unwrap_or_default()
            },
        }
    }
}

/// One row of `session_chunks` (from a `SessionChunk` event).
// The columns are the `SessionChunkEvent` fields, documented in `gatehouse_common::audit`.
#[allow(missing_docs)]
#[derive(Debug, Clone, Serialize, clickhouse::Row)]
pub struct ChunkRow {
    pub event_id: String,
    pub session_id: String,
    pub cluster: String,
    pub namespace: String,
    pub user: String,
    pub time: ChTime,
    pub seq: u64,
    pub stream: String,
    pub data: String,
}

impl ChunkRow {
    /// The row for `e`.
    pub fn new(e: &SessionChunkEvent, datetime64: bool) -> Self {
        Self {
            event_id: e.event_id.clone(),
            session_id: e.session_id.clone(),
            cluster: e.cluster.clone(),
            namespace: e.namespace.clone(),
            user: e.user.clone(),
            time: ChTime::new(e.time, datetime64),
            seq: e.seq,
            stream: e.stream.clone(),
            data: e.data.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_common::audit::{AnsweredBy, AuthMethod, Decision, SessionKind};

    #[test]
    fn enums_are_stored_by_their_wire_names() {
        let e = ApiRequestEvent {
            auth_method: AuthMethod::ClientCertificate,
            answered_by: AnsweredBy::Upstream,
            decision: Decision::RequireApproval,
            ..ApiRequestEvent::default()
        };
        let row = ApiRequestRow::new(&e, false);
        assert_eq!(row.auth_method, "client_certificate");
        assert_eq!(row.answered_by, "upstream");
        assert_eq!(row.decision, "require_approval");
        let s = SessionEndEvent {
            kind: SessionKind::PortForward,
            ..SessionEndEvent::default()
        };
        assert_eq!(SessionRow::new(&s, true).kind, "port_forward");
    }

    #[test]
    fn times_follow_the_server_type() {
        let t = DateTime::from_timestamp(1_700_000_000, 123_456_000).unwrap_or_default();
        assert_eq!(ChTime::new(t, false), ChTime::Secs(1_700_000_000));
        assert_eq!(ChTime::new(t, true), ChTime::Micros(1_700_000_000_123_456));
        assert_eq!(ChTime::new(t, true).secs(), 1_700_000_000);
        let before_epoch = DateTime::from_timestamp(-5, 0).unwrap_or_default();
        assert_eq!(ChTime::new(before_epoch, false), ChTime::Secs(0));
    }
}
