//! The inline stream tap: the hook through which a recorder (or a later live policy) sees
//! every byte of an upgraded session, in order per direction, before it is forwarded.

use gatehouse_common::audit::SessionEndEvent;
use http::HeaderMap;

/// Why a tap wants the session ended; becomes the session's `end_reason` (`tap: ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TapError(pub String);

/// Sees the bytes of one upgraded session (exec, attach, port-forward).
///
/// The relay calls these inline, on the relay task, with each chunk before it is written
/// to the other side, so a tap sees every byte in order per direction and nothing is
/// queued for it. Calls must therefore return quickly: a tap that needs slow work (disk,
/// network) hands the chunk to its own bounded buffer and drops or fails rather than
/// waiting. Returning an error ends the session with that error as the reason.
pub trait StreamTap: Send + 'static {
    /// The API server's 101 headers (the negotiated protocol), before any byte. An error
    /// refuses the session: kubectl gets the error instead of the upgrade.
    fn upgraded(&mut self, _headers: &HeaderMap) -> Result<(), TapError> {
        Ok(())
    }
    /// Bytes kubectl sent towards the API server (stdin, port-forward requests).
    fn client_to_upstream(&mut self, data: &[u8]) -> Result<(), TapError>;
    /// Bytes the API server sent towards kubectl (stdout/stderr, port-forward replies).
    fn upstream_to_client(&mut self, data: &[u8]) -> Result<(), TapError>;
    /// Whether the tap's own buffer is full: the relay then waits (without reading more
    /// from either side) until it is not, so a slow consumer slows the session down
    /// instead of growing memory.
    fn backlogged(&self) -> bool {
        false
    }
    /// Called once when the session has ended, with the event about to be emitted; the
    /// tap may add what it learnt (exit code, recording, byte counts).
    fn finish(&mut self, end: &mut SessionEndEvent);
}
