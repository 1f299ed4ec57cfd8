//! eBPF object embedding and loading (filled in by the eBPF build path).
