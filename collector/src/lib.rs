//! Gatehouse collector: the central service agents ship events to.
#![deny(missing_docs)]
