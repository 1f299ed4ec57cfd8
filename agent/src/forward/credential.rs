//! The agent's own upstream credential now lives in [`crate::upstream`]; these names stay
//! for code written against the earlier module.

pub use crate::upstream::credential::CredentialError;
pub use crate::upstream::token_file::TokenFile;
