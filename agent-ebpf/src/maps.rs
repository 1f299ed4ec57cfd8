//! Maps shared by every program in this object.

use aya_ebpf::{macros::map, maps::RingBuf};
use gatehouse_common::kernel::{EVENTS_MAP, ProcessExecEvent};

/// Size of the events ring buffer: a power of two and a multiple of the page size. 256 KiB
/// holds ~5,000 exec events, enough to ride out a burst while userspace is scheduled.
const EVENTS_BYTES: u32 = 256 * 1024;

/// Every probe's events, in commit order; userspace dispatches on `EventHeader::kind`.
///
/// The static's name is the map's name in the object; the assertion below keeps it equal to
/// `gatehouse_common::kernel::EVENTS_MAP`, the name the agent looks up.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

const _: () = assert!(
    str_eq(EVENTS_MAP, "EVENTS"),
    "rename the EVENTS static to EVENTS_MAP"
);

/// The kernel reserves ring buffer records 8-byte aligned; larger alignments cannot be honoured.
const _: () = assert!(align_of::<ProcessExecEvent>() <= 8);

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}
