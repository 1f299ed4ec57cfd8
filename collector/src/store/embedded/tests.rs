//! Unit tests of the embedded store on real SQLite files in temp dirs.

use super::*;
use crate::store::query::{AuditQuery, Cursor, Page, PageRequest, RequestFilter, SessionFilter};
use gatehouse_common::audit::{ApiRequestEvent, Decision, SessionEndEvent, SessionKind};

const SECOND: i64 = 1_000_000;
const T0: i64 = 1_760_000_000;

fn time(secs: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

fn api(id: &str, secs: i64, user: &str, namespace: &str) -> AuditEvent {
    AuditEvent::ApiRequest(ApiRequestEvent {
        event_id: id.into(),
        time: time(secs),
        user: user.into(),
        groups: vec!["dev".into(), format!("team-{user}")],
        verb: "get".into(),
        resource: "pods".into(),
        namespace: namespace.into(),
        name: "web-0".into(),
        decision: Decision::Allow,
        status_code: 200,
        ..ApiRequestEvent::default()
    })
}

fn session(id: &str, session_id: &str, secs: i64) -> AuditEvent {
    AuditEvent::SessionEnd(SessionEndEvent {
        event_id: id.into(),
        session_id: session_id.into(),
        user: "alice".into(),
        kind: SessionKind::Exec,
        namespace: "dev".into(),
        pod: "web-0".into(),
        started: time(secs),
        ended: time(secs + 5),
        ..SessionEndEvent::default()
    })
}

fn open(dir: &Path) -> EmbeddedStore {
    match EmbeddedStore::open(dir, Duration::from_secs(10)) {
        Ok((store, _)) => store,
        Err(e) => panic!("open {}: {e}", dir.display()),
    }
}

fn ids(page: &Page<ApiRequestEvent>) -> Vec<&str> {
    page.items.iter().map(|e| e.event_id.as_str()).collect()
}

#[tokio::test]
async fn same_batch_twice_and_duplicates_within_a_batch_add_no_rows() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = open(dir.path());
    let batch = vec![
        api("a", T0, "alice", "dev"),
        api("b", T0 + 1, "bob", "dev"),
        api("a", T0, "alice", "dev"),
        session("s1", "sess-1", T0 + 2),
        session("s1", "sess-1", T0 + 2),
    ];
    let first = store.insert(&batch).await?;
    assert_eq!(
        first,
        InsertOutcome {
            inserted: 3,
            duplicates: 2
        }
    );
    let again = store.insert(&batch).await?;
    assert_eq!(
        again,
        InsertOutcome {
            inserted: 0,
            duplicates: 5
        }
    );
    let all = store
        .requests(&RequestFilter::default(), &PageRequest::default())
        .await?;
    assert_eq!(ids(&all), ["b", "a"]);
    let sessions = store
        .sessions(&SessionFilter::default(), &PageRequest::default())
        .await?;
    assert_eq!(sessions.items.len(), 1);
    assert_eq!(store.insert(&[]).await?, InsertOutcome::default());
    store.health().await?;
    Ok(())
}

#[tokio::test]
async fn filters_order_and_cursor_pages() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = open(dir.path());
    // Three events share one timestamp: the event_id breaks the tie, descending.
    let mut events = vec![
        api("e1", T0, "alice", "dev"),
        api("e2", T0 + 10, "bob", "prod"),
        api("e3", T0 + 20, "alice", "prod"),
        api("e4", T0 + 20, "alice", "dev"),
        api("e5", T0 + 20, "alice", "dev"),
        api("e6", T0 + 30, "carol", "dev"),
    ];
    if let AuditEvent::ApiRequest(e) = &mut events[1] {
        e.decision = Decision::Deny;
        e.status_code = 403;
        e.verb = "delete".into();
        e.resource = "secrets".into();
        e.session_id = Some("sess-x".into());
    }
    store.insert(&events).await?;

    let all = |f: RequestFilter| {
        let store = &store;
        async move { store.requests(&f, &PageRequest::default()).await }
    };
    assert_eq!(
        ids(&all(RequestFilter::default()).await?),
        ["e6", "e5", "e4", "e3", "e2", "e1"]
    );
    let by_user = all(RequestFilter {
        user: Some("alice".into()),
        ..RequestFilter::default()
    })
    .await?;
    assert_eq!(ids(&by_user), ["e5", "e4", "e3", "e1"]);
    assert_eq!(by_user.next, None);
    let by_user_ns = all(RequestFilter {
        user: Some("alice".into()),
        namespace: Some("dev".into()),
        ..RequestFilter::default()
    })
    .await?;
    assert_eq!(ids(&by_user_ns), ["e5", "e4", "e1"]);
    let by_group = all(RequestFilter {
        group: Some("team-bob".into()),
        ..RequestFilter::default()
    })
    .await?;
    assert_eq!(ids(&by_group), ["e2"]);
    // Exact match, not a pattern: `%` matches nothing.
    let pattern = all(RequestFilter {
        user: Some("%".into()),
        ..RequestFilter::default()
    })
    .await?;
    assert!(pattern.items.is_empty());
    let denied = all(RequestFilter {
        decision: Some("deny".into()),
        status: Some(403),
        verb: Some("delete".into()),
        resource: Some("secrets".into()),
        session_id: Some("sess-x".into()),
        name: Some("web-0".into()),
        ..RequestFilter::default()
    })
    .await?;
    assert_eq!(ids(&denied), ["e2"]);
    let window = all(RequestFilter {
        since: Some(time(T0 + 10)),
        until: Some(time(T0 + 30)),
        ..RequestFilter::default()
    })
    .await?;
    assert_eq!(ids(&window), ["e5", "e4", "e3", "e2"]);

    // Pages of two, through the tie at T0+20, until `next` is None.
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = store
            .requests(&RequestFilter::default(), &PageRequest { limit: 2, after })
            .await?;
        pages += 1;
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|e| e.event_id.clone()));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(seen, ["e6", "e5", "e4", "e3", "e2", "e1"]);
    assert_eq!(
        pages, 3,
        "the full last page has no next (one row looked ahead)"
    );
    let cursor = Cursor {
        time_micros: (T0 + 20) * SECOND,
        event_id: "e4".into(),
    };
    let after_e4 = store
        .requests(
            &RequestFilter::default(),
            &PageRequest {
                limit: 0,
                after: Some(cursor),
            },
        )
        .await?;
    assert_eq!(ids(&after_e4), ["e3", "e2", "e1"]);
    Ok(())
}

#[tokio::test]
async fn sessions_filter_page_and_detail() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = open(dir.path());
    let mut upgrade = api("r1", T0 + 1, "alice", "dev");
    if let AuditEvent::ApiRequest(e) = &mut upgrade {
        e.session_id = Some("sess-1".into());
    }
    let mut later = api("r2", T0 + 3, "alice", "dev");
    if let AuditEvent::ApiRequest(e) = &mut later {
        e.session_id = Some("sess-1".into());
    }
    let mut port_forward = session("s2", "sess-2", T0 + 10);
    if let AuditEvent::SessionEnd(e) = &mut port_forward {
        e.kind = SessionKind::PortForward;
        e.pod = "db-0".into();
    }
    store
        .insert(&[later, upgrade, session("s1", "sess-1", T0), port_forward])
        .await?;

    let all = store
        .sessions(&SessionFilter::default(), &PageRequest::default())
        .await?;
    let order: Vec<&str> = all.items.iter().map(|s| s.event_id.as_str()).collect();
    assert_eq!(order, ["s2", "s1"]);
    let pf = store
        .sessions(
            &SessionFilter {
                kind: Some("port_forward".into()),
                pod: Some("db-0".into()),
                user: Some("alice".into()),
                namespace: Some("dev".into()),
                ..SessionFilter::default()
            },
            &PageRequest::default(),
        )
        .await?;
    assert_eq!(pf.items.len(), 1);
    let early = store
        .sessions(
            &SessionFilter {
                until: Some(time(T0 + 1)),
                ..SessionFilter::default()
            },
            &PageRequest::default(),
        )
        .await?;
    assert_eq!(early.items.len(), 1);
    assert_eq!(early.items[0].session_id, "sess-1");

    let detail = store
        .session("sess-1")
        .await?
        .ok_or_else(|| anyhow::anyhow!("sess-1 not found"))?;
    assert_eq!(detail.session.event_id, "s1");
    let requests: Vec<&str> = detail
        .requests
        .iter()
        .map(|r| r.event_id.as_str())
        .collect();
    assert_eq!(requests, ["r1", "r2"], "oldest first");
    assert!(store.session("no-such").await?.is_none());
    Ok(())
}

#[test]
fn migrates_an_empty_file_and_reopens_without_migrating() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let sub = dir.path().join("audit");
    let (store, report) = EmbeddedStore::open(&sub, Duration::from_secs(1))?;
    assert_eq!(
        (report.from_version, report.applied),
        (0, (1..=SCHEMA_VERSION).collect::<Vec<_>>())
    );
    drop(store);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&sub)?.permissions().mode() & 0o777, 0o700);
    assert_eq!(
        std::fs::metadata(sub.join(FILE_NAME))?.permissions().mode() & 0o777,
        0o600
    );
    let (_, report) = EmbeddedStore::open(&sub, Duration::from_secs(1))?;
    assert_eq!(report.from_version, SCHEMA_VERSION);
    assert!(report.applied.is_empty());
    let conn = Connection::open(sub.join(FILE_NAME))?;
    let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
    assert_eq!(mode, "wal");
    Ok(())
}

#[test]
fn refuses_a_newer_schema_and_a_foreign_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    drop(EmbeddedStore::open(dir.path(), Duration::from_secs(1))?);
    let conn = Connection::open(dir.path().join(FILE_NAME))?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)?;
    drop(conn);
    match EmbeddedStore::open(dir.path(), Duration::from_secs(1)) {
        Err(EmbeddedError::SchemaTooNew {
            found, supported, ..
        }) => assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION)),
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }

    let foreign = tempfile::tempdir()?;
    std::fs::write(
        foreign.path().join(FILE_NAME),
        "this is a text file, long enough to have a header of a hundred bytes or so .........\n",
    )?;
    let err = EmbeddedStore::open(foreign.path(), Duration::from_secs(1))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("is not an SQLite database"), "{err}");

    let file = foreign.path().join("plain-file");
    std::fs::write(&file, "x")?;
    let err = EmbeddedStore::open(&file, Duration::from_secs(1))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("store directory"), "{err}");
    Ok(())
}

#[tokio::test]
async fn prune_deletes_only_rows_past_retention() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = open(dir.path());
    let now = chrono::Utc::now().timestamp();
    store
        .insert(&[
            api("old", now - 10 * 86_400, "alice", "dev"),
            api("new", now - 60, "alice", "dev"),
            session("s-old", "sess-old", now - 10 * 86_400),
            session("s-new", "sess-new", now - 60),
        ])
        .await?;
    assert_eq!(
        store.prune(Duration::MAX).await?,
        0,
        "no panic, nothing deleted"
    );
    let deleted = store.prune(Duration::from_secs(86_400)).await?;
    assert_eq!(deleted, 2);
    let left = store
        .requests(&RequestFilter::default(), &PageRequest::default())
        .await?;
    assert_eq!(ids(&left), ["new"]);
    let sessions = store
        .sessions(&SessionFilter::default(), &PageRequest::default())
        .await?;
    assert_eq!(sessions.items.len(), 1);
    assert_eq!(sessions.items[0].event_id, "s-new");
    Ok(())
}
