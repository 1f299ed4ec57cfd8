//! Watch streams: `{"type","object"}` events, flushed one per chunk, starting after the
//! requested resourceVersion (or with synthetic ADDED events), with selectors, Table
//! rows, bookmarks and `timeoutSeconds`.

use super::Body;
use super::context::Shared;
use super::handlers::{Call, present, table_requested};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{Event, EventType, resource_id};
use super::table::{self, IncludeObject};
use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// Longest a watch stays open without `timeoutSeconds` (the real server picks 30–60 min).
const MAX_WATCH: Duration = Duration::from_secs(1800);
/// How often bookmarks are sent when asked for.
const BOOKMARK_EVERY: Duration = Duration::from_secs(10);

struct Filter {
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        self.namespace.as_deref().is_none_or(|want| want == ns)
            && self.labels.matches(obj)
            && self.fields.matches(obj)
    }
}

struct Encoder {
    shared: Arc<Shared>,
    def: &'static super::resources::ResourceDef,
    table: Option<IncludeObject>,
}

impl Encoder {
    fn frame(&self, kind: &str, mut obj: Value) -> Bytes {
        // A deleted pod's processes are already gone: show its last stored state.
        if kind != "DELETED" {
            present(&self.shared, self.def, &mut obj);
        }
        let object = match self.table {
            Some(include) if kind != "ERROR" && kind != "BOOKMARK" => {
                let rv = obj
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                table::table(self.def, &[obj], &rv, None, include)
            }
            _ => obj,
        };
        let mut line =
            serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        self.frame(
            "BOOKMARK",
            json!({"kind": self.def.kind, "apiVersion": self.def.api_version(), "metadata": meta}),
        )
    }
}

/// Turns a store event into what this watcher sees (selector transitions included).
fn translate(filter: &Filter, event: &Event) -> Option<(&'static str, Value)> {
    let now = filter.matches(&event.object);
    let before = event.old.as_ref().is_some_and(|o| filter.matches(o));
    match event.kind {
        EventType::Added if now => Some(("ADDED", event.object.clone())),
        EventType::Modified if now && before => Some(("MODIFIED", event.object.clone())),
        EventType::Modified if now => Some(("ADDED", event.object.clone())),
        EventType::Modified if before => Some(("DELETED", event.object.clone())),
        EventType::Deleted if now => Some(("DELETED", event.object.clone())),
        _ => None,
    }
}

/// Starts a watch for `call` and returns the streaming response.
pub fn serve(shared: &Arc<Shared>, call: &Call) -> Result<Response<Body>, ApiError> {
    let mut filter = Filter {
        namespace: (call.def.namespaced && !call.namespace.is_empty())
            .then(|| call.namespace.clone()),
        labels: LabelSelector::parse(call.param("labelSelector").unwrap_or_default())?,
        fields: FieldSelector::parse(call.param("fieldSelector").unwrap_or_default())?,
    };
    if !call.name.is_empty() {
        // Legacy `/watch/.../{name}` path form.
        let mut fs = call.param("fieldSelector").unwrap_or_default().to_string();
        if !fs.is_empty() {
            fs.push(',');
        }
        fs.push_str(&format!("metadata.name={}", call.name));
        filter.fields = FieldSelector::parse(&fs)?;
    }
    let rv = match call.param("resourceVersion").unwrap_or_default() {
        "" | "0" => None,
        v => Some(
            v.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {v:?}")))?,
        ),
    };
    let send_initial = call.param("sendInitialEvents") == Some("true");
    let from = if send_initial { None } else { rv };
    let bookmarks = call.param("allowWatchBookmarks") == Some("true");
    let timeout = call
        .param("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(MAX_WATCH)
        .min(MAX_WATCH);
    let encoder = Encoder {
        shared: shared.clone(),
        def: call.def,
        table: table_requested(&call.accept)
            .then(|| IncludeObject::from_query(call.param("includeObject"))),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    match shared.store.subscribe(&resource_id(call.def), from) {
        Ok(sub) => {
            tokio::spawn(run(
                encoder,
                filter,
                sub,
                tx,
                timeout,
                bookmarks,
                send_initial,
            ));
        }
        Err(expired) => {
            // A real server answers 200 and sends one ERROR event with the 410 Status.
            let frame = encoder.frame("ERROR", expired.to_status());
            let _ = tx.try_send(frame);
        }
    }
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::io::Error>(Frame::data(b)), rx))
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed());
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache, private"),
    );
    Ok(resp)
}

async fn run(
    encoder: Encoder,
    filter: Filter,
    mut sub: super::store::Subscription,
    tx: mpsc::Sender<Bytes>,
    timeout: Duration,
    bookmarks: bool,
    send_initial: bool,
) {
    let mut last_rv = sub.rv;
    for obj in std::mem::take(&mut sub.current) {
        if filter.matches(&obj) && tx.send(encoder.frame("ADDED", obj)).await.is_err() {
            return;
        }
    }
    if send_initial && tx.send(encoder.bookmark(sub.rv, true)).await.is_err() {
        return;
    }
    for event in std::mem::take(&mut sub.backlog) {
        if let Some((kind, obj)) = translate(&filter, &event)
            && tx.send(encoder.frame(kind, obj)).await.is_err()
        {
            return;
        }
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            _ = tx.closed() => return,
            _ = ticker.tick(), if bookmarks => {
                if tx.send(encoder.bookmark(last_rv, false)).await.is_err() {
                    return;
                }
            }
            event = sub.rx.recv() => match event {
                Ok(event) => {
                    if event.rv <= sub.rv {
                        continue;
                    }
                    last_rv = event.rv;
                    if event.key.resource != filter_resource(&encoder) {
                        continue;
                    }
                    if let Some((kind, obj)) = translate(&filter, &event)
                        && tx.send(encoder.frame(kind, obj)).await.is_err()
                    {
                        return;
                    }
                }
                // Lagged or closed: end the stream; clients re-list and re-watch.
                Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

fn filter_resource(encoder: &Encoder) -> String {
    resource_id(encoder.def)
}
