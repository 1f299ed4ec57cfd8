//! The Gatehouse policy language and its engine: YAML rules that allow, deny or require
//! approval for Kubernetes requests, compiled into an index and evaluated per request.
//!
//! # Layout
//! - [`model`]: the file as written (serde types; unknown fields rejected).
//! - [`compile`]: validation with line numbers, compilation to [`Policy`] (indexed rules).
//! - [`eval`]: [`Request`] → [`Decision`] (most restrictive match, default deny).
//! - [`glob`]: the `*`/`?` patterns names and namespaces are matched with.
//! - [`synthetic`]: generated N-rule policies for benchmarks.
//!
//! # Semantics
//! - A rule matches when a subject matches (a user glob matches the username, or a group
//!   glob matches one of the groups) and every `match` field given matches. Absent fields
//!   match anything, except `subresources`: as in RBAC, a rule about `pods` is not about
//!   `pods/exec`; name subresources explicitly (`*` = any, and none).
//! - `namespaces` and `names` match only requests that have one; cluster-scoped requests
//!   and collections do not match a rule listing them. A Namespace object's own namespace is
//!   its name (as in the API server), so `namespaces: [prod]` covers `kubectl delete ns prod`.
//! - `nonResourceURLs` rules match only non-resource requests (`/version`, `/apis`, ...),
//!   and resource rules only resource requests.
//! - `namespaceSelector.matchLabels`: when the evaluator does not know the namespace's
//!   labels (the agent usually does not), a rule with a selector matches only if its
//!   action is `deny` or `require_approval`. So an unknown label can never grant anything,
//!   and can only make a decision stricter.
//! - Decision: deny > require_approval > allow, then file order; nothing matching is a
//!   deny by `default-deny`. `record` and `trace` are on when any matching rule asks for
//!   them; `mask` is the first profile named by a matching rule (file order), so a
//!   masking rule applies whichever allow rule decides.

pub mod compile;
pub mod eval;
pub mod glob;
pub mod model;
pub mod synthetic;

pub use compile::{Policy, Rule, RuleOptions, version_of};
pub use eval::{DEFAULT_DENY_RULE, Decision, Request};

use serde::Serialize;
use std::time::Duration;

/// Path the collector serves the active policy on (its agent-authenticated ingest
/// listener): `GET /v1/policy?after=<version>&wait=<seconds>` answers `200` with the
/// policy text and an `ETag` of its version, or `304` when `after` is still current
/// when `wait` runs out.
pub const POLICY_PATH: &str = "/v1/policy";
/// Response header carrying the policy version (also in `ETag`, quoted).
pub const VERSION_HEADER: &str = "x-gatehouse-policy-version";

/// What a rule decides, ordered from least to most restrictive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Forward the request.
    Allow,
    /// Hold or refuse it until a human approves.
    RequireApproval,
    /// Refuse it.
    Deny,
}

impl Action {
    /// The name used in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::RequireApproval => "require_approval",
            Self::Deny => "deny",
        }
    }
}

/// How an approval is used once given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalMode {
    /// The request waits and proceeds when approved.
    Hold,
    /// The request is refused with an approval id; the identical request passes once
    /// approved, within the grant TTL.
    Grant,
}

/// Approval settings of a `require_approval` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalSpec {
    /// Groups whose members may approve.
    pub approvers: Vec<String>,
    /// Distinct approvers needed.
    pub min_approvals: u32,
    /// Hold or grant.
    pub mode: ApprovalMode,
    /// How long a grant is usable.
    #[serde(serialize_with = "secs")]
    pub grant_ttl: Duration,
    /// How long a held request waits.
    #[serde(serialize_with = "secs")]
    pub hold_timeout: Duration,
    /// Whether a justification is required.
    pub justification_required: bool,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// One problem in a policy file, at a 1-based line and column (0 = unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Line.
    pub line: u64,
    /// Column.
    pub column: u64,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            f.write_str(&self.message)
        } else {
            write!(
                f,
                "line {}, column {}: {}",
                self.line, self.column, self.message
            )
        }
    }
}

/// A policy that cannot be used, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid policy: {}", issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct PolicyError {
    /// The problems, in file order.
    pub issues: Vec<Issue>,
}

impl PolicyError {
    fn one(line: u64, column: u64, message: String) -> Self {
        Self {
            issues: vec![Issue {
                line,
                column,
                message,
            }],
        }
    }

    /// Line of the first problem (0 = unknown).
    pub fn line(&self) -> u64 {
        self.issues.first().map_or(0, |i| i.line)
    }
}

/// Module result shorthand.
pub type Result<T> = std::result::Result<T, PolicyError>;

#[cfg(test)]
mod tests;
