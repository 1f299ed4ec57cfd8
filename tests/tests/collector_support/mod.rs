//! Shared parts of the collector tests: audit events to ship and a ClickHouse row counter.

#![allow(dead_code)]

use gatehouse_common::audit::{
    ApiRequestEvent, AuditEvent, Decision, ExecParams, SessionEndEvent, SessionKind,
};
use gatehouse_tests::clickhouse::ClickHouse;

/// An API request event with a fresh id (`n` varies the user and the time).
pub fn api_event(n: u32) -> AuditEvent {
    let time = chrono::DateTime::from_timestamp(1_760_000_000 + i64::from(n), 250_000_000)
        .unwrap_or_default();
    AuditEvent::ApiRequest(ApiRequestEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        request_id: uuid::Uuid::new_v4().to_string(),
        time,
        cluster: "test".into(),
        node: "node-a".into(),
        user: format!("user{}@example.com", n % 3),
        groups: vec!["dev".into(), "o'brien \\ 'quoted'".into()],
        method: "GET".into(),
        path: "/api/v1/namespaces/default/pods".into(),
        verb: "list".into(),
        resource: "pods".into(),
        namespace: "default".into(),
        decision: Decision::Allow,
        status_code: 200,
        latency_ms: 1.5,
        ..ApiRequestEvent::default()
    })
}

/// A session end event with a fresh id.
pub fn session_event() -> AuditEvent {
    let started = chrono::DateTime::from_timestamp(1_760_000_100, 0).unwrap_or_default();
    AuditEvent::SessionEnd(SessionEndEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        session_id: uuid::Uuid::new_v4().to_string(),
        cluster: "test".into(),
        node: "node-a".into(),
        user: "user0@example.com".into(),
        kind: SessionKind::Exec,
        namespace: "default".into(),
        pod: "web-0".into(),
        exec: Some(ExecParams {
            command: vec!["sh".into(), "-c".into(), "echo hi".into()],
            container: "web".into(),
            stdin: true,
            tty: true,
        }),
        started,
        ended: started + chrono::Duration::seconds(5),
        end_reason: "closed".into(),
        ..SessionEndEvent::default()
    })
}

/// `SELECT count()` of `database.table` (plain count: no FINAL, duplicates would show).
pub fn count(ch: &ClickHouse, database: &str, table: &str) -> anyhow::Result<u64> {
    Ok(ch
        .query(&format!("SELECT count() FROM `{database}`.`{table}`"))?
        .trim()
        .parse()?)
}
