//! The `EVENTS` ring buffer as an async reader of decoded [`KernelEvent`]s.

use std::borrow::Cow;

use aya::{
    Pod,
    maps::{MapData, RingBuf},
};
use futures_util::Stream;
use gatehouse_common::kernel::{EVENTS_MAP, EventHeader, ProcessExecEvent, kind};
use tokio::{
    io::{Interest, unix::AsyncFd},
    runtime::Handle,
};

use super::{EbpfError, Result};

/// One event from the kernel, decoded from its ring buffer record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KernelEvent {
    /// `sched:sched_process_exec`: a process committed to a new program image.
    ProcessExec(ProcessExecEvent),
}

impl KernelEvent {
    /// Decodes one ring buffer record; `None` for a record too short for its kind or of an
    /// unknown kind (an object newer than this agent).
    pub fn decode(record: &[u8]) -> Option<Self> {
        let header: EventHeader = read_pod(record)?;
        match header.kind {
            kind::PROCESS_EXEC => read_pod(record).map(Self::ProcessExec),
            _ => None,
        }
    }

    /// The header every event starts with (kind, pid, tgid, uid, cgroup id, time).
    pub fn header(&self) -> &EventHeader {
        match self {
            Self::ProcessExec(event) => &event.header,
        }
    }
}

/// `comm` as text: up to the first NUL, invalid UTF-8 replaced.
pub fn comm_lossy(comm: &[u8]) -> Cow<'_, str> {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end])
}

/// Copies a `T` out of the start of `bytes` (records carry no alignment promise to us).
fn read_pod<T: Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: `bytes` holds at least `size_of::<T>()` bytes, the read is unaligned-safe,
    // and `T: Pod` means every bit pattern is a valid `T`.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Async reader of the `EVENTS` ring buffer, shared by every program.
pub struct KernelEvents {
    ring: AsyncFd<RingBuf<MapData>>,
    undecodable: u64,
}

impl KernelEvents {
    pub(super) fn new(ring: RingBuf<MapData>, runtime: &Handle) -> Result<Self> {
        let _entered = runtime.enter();
        // SAFETY: the ring buffer owns its map's fd until it is dropped, and always reports
        // that same fd; the `AsyncFd` owns the ring buffer.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(
            |error| EbpfError::Poll {
                name: EVENTS_MAP,
                source: error.into_parts().1,
            },
        )?;
        Ok(Self {
            ring,
            undecodable: 0,
        })
    }

    /// Waits for the next event. Records that do not decode are counted
    /// ([`KernelEvents::undecodable`]), logged and skipped.
    pub async fn next(&mut self) -> Result<KernelEvent> {
        loop {
            let mut guard = self
                .ring
                .readable_mut()
                .await
                .map_err(|source| EbpfError::Poll {
                    name: EVENTS_MAP,
                    source,
                })?;
            while let Some(record) = guard.get_inner_mut().next() {
                match KernelEvent::decode(&record) {
                    Some(event) => return Ok(event),
                    None => {
                        self.undecodable += 1;
                        tracing::warn!(
                            len = record.len(),
                            total = self.undecodable,
                            "skipping undecodable eBPF event record"
                        );
                    }
                }
            }
            // Drained: wait for the kernel's next wakeup.
            guard.clear_ready();
        }
    }

    /// How many records were skipped because they did not decode.
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }

    /// The reader as a [`Stream`], for consumers that combine or forward streams.
    pub fn into_stream(self) -> impl Stream<Item = Result<KernelEvent>> {
        futures_util::stream::unfold(self, |mut events| async move {
            let next = events.next().await;
            Some((next, events))
        })
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_common::kernel::COMM_LEN;

    use super::*;

    fn exec_event() -> ProcessExecEvent {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"true");
        ProcessExecEvent {
            header: EventHeader {
                kind: kind::PROCESS_EXEC,
                pid: 42,
                tgid: 41,
                uid: 1000,
                cgroup_id: 7,
                ktime_ns: 123,
            },
            comm,
        }
    }

    fn bytes_of<T: Pod>(value: &T) -> Vec<u8> {
        // SAFETY: `T: Pod` has no padding-dependent invariants; we only read its bytes.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    #[test]
    fn decodes_process_exec_from_unaligned_record() {
        let event = exec_event();
        let mut record = vec![0u8];
        record.extend(bytes_of(&event));
        let decoded = KernelEvent::decode(&record[1..]);
        assert_eq!(decoded, Some(KernelEvent::ProcessExec(event)));
        assert_eq!(decoded.map(|e| e.header().tgid), Some(41));
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        let record = bytes_of(&exec_event());
        assert_eq!(KernelEvent::decode(&record[..record.len() - 1]), None);
        assert_eq!(KernelEvent::decode(&record[..4]), None);
        let mut unknown = exec_event();
        unknown.header.kind = u32::MAX;
        assert_eq!(KernelEvent::decode(&bytes_of(&unknown)), None);
    }

    #[test]
    fn comm_stops_at_nul() {
        assert_eq!(comm_lossy(&exec_event().comm), "true");
        assert_eq!(comm_lossy(b"sixteen-bytes-xx"), "sixteen-bytes-xx");
    }
}
