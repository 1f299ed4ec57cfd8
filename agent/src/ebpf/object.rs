//! The eBPF object, embedded at compile time by `agent/build.rs`.

use super::{EbpfError, Result};

/// The object as `build.rs` copied it; empty when it was not built.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gatehouse-ebpf.o"));

/// Where `build.rs` looked for the object, for the error message.
const SOURCE: &str = env!("GATEHOUSE_EBPF_OBJECT_SOURCE");

/// The embedded object, or [`EbpfError::NotBuilt`] when the agent was built without it.
pub(super) fn bytes() -> Result<&'static [u8]> {
    if OBJECT.is_empty() {
        return Err(EbpfError::NotBuilt { searched: SOURCE });
    }
    Ok(OBJECT)
}
