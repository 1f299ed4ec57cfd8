//! In-memory log of every request the emulator answered, for tests to assert on.

use std::sync::Mutex;

/// One answered request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// Authenticated user (empty if authentication failed).
    pub user: String,
    /// `Impersonate-User`, when honoured.
    pub impersonated_user: Option<String>,
    /// `Impersonate-Group` values, when honoured.
    pub impersonated_groups: Vec<String>,
    /// RequestInfo verb (`get`, `list`, `watch`, `create`, …).
    pub verb: String,
    /// HTTP method.
    pub method: String,
    /// URL path.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// Response status code.
    pub code: u16,
}

/// Append-only request log.
#[derive(Debug, Default)]
pub struct RequestLog {
    records: Mutex<Vec<RequestRecord>>,
}

impl RequestLog {
    /// Appends a record.
    pub fn push(&self, record: RequestRecord) {
        if let Ok(mut records) = self.records.lock() {
            records.push(record);
        }
    }

    /// A copy of all records so far.
    pub fn snapshot(&self) -> Vec<RequestRecord> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }
}
