//! The policy file as written (serde types), before validation and compilation.
//!
//! Every struct rejects unknown fields, so a typo (`verb:` for `verbs:`) is an error with a
//! line number rather than a rule that silently matches more than intended. Rules and the
//! fields validated after parsing are `Spanned`, so their errors point at the line too.

use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;

/// `apiVersion` every policy file must carry.
pub const API_VERSION: &str = "gatehouse.dev/v1";
/// `kind` every policy file must carry.
pub const KIND: &str = "Policy";

/// A whole policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyFile {
    /// Must be [`API_VERSION`].
    pub api_version: Spanned<String>,
    /// Must be [`KIND`].
    pub kind: Spanned<String>,
    /// Optional name and description.
    #[serde(default)]
    pub metadata: Metadata,
    /// The rules, in order (order breaks ties between equally restrictive matches).
    #[serde(default)]
    pub rules: Vec<Spanned<RuleSpec>>,
}

/// `metadata:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Policy name, shown by `gatehouse policy check`.
    #[serde(default)]
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// One rule as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleSpec {
    /// Unique name; every decision names its rule.
    pub name: Spanned<String>,
    /// Who the rule is about.
    pub subjects: Spanned<SubjectsSpec>,
    /// What requests it is about (absent: every resource request).
    #[serde(default, rename = "match")]
    pub matches: Option<Spanned<MatchSpec>>,
    /// `allow`, `deny` or `require_approval`.
    pub action: Spanned<String>,
    /// Masking profile applied to responses of matching requests.
    #[serde(default)]
    pub mask: Option<String>,
    /// Record exec/attach sessions (asciicast).
    #[serde(default)]
    pub record: bool,
    /// Trace processes and connections with eBPF.
    #[serde(default)]
    pub trace: bool,
    /// Text shown to the user (deny and require_approval messages).
    #[serde(default)]
    pub reason: Option<String>,
    /// Approval settings (require_approval only).
    #[serde(default)]
    pub approval: Option<Spanned<ApprovalSpecRaw>>,
}

/// `subjects:` — users and groups, as globs; at least one entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectsSpec {
    /// Usernames (`*` = every authenticated user).
    #[serde(default)]
    pub users: Vec<String>,
    /// Group names.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// `match:` — every given field must match; an absent field matches anything, except
/// `subresources` (absent = the main resource only, as in RBAC).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MatchSpec {
    /// Kubernetes verbs (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`, `impersonate`, ...; `*` = all).
    #[serde(default)]
    pub verbs: Option<Spanned<Vec<String>>>,
    /// API groups (`""` = core).
    #[serde(default)]
    pub api_groups: Option<Vec<String>>,
    /// Plural resource names.
    #[serde(default)]
    pub resources: Option<Vec<String>>,
    /// Subresources (`exec`, `log`, ...; `*` = any, also none). Absent: none, or `exec`
    /// when `commands` is given.
    #[serde(default)]
    pub subresources: Option<Vec<String>>,
    /// Namespaces (globs); only namespaced requests match.
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
    /// Object names (globs); collection requests have no name and do not match.
    #[serde(default)]
    pub names: Option<Vec<String>>,
    /// Labels the request's namespace must carry (see the module docs for unknown labels).
    #[serde(default)]
    pub namespace_selector: Option<LabelSelectorSpec>,
    /// Exec command patterns, matched against the `command` parameters joined by spaces.
    #[serde(default)]
    pub commands: Option<Vec<String>>,
    /// `true`: only dry-run requests; `false`: only real ones.
    #[serde(default)]
    pub dry_run: Option<bool>,
    /// Non-resource paths (`/version`, `/api*`); such a rule matches only them.
    #[serde(default, rename = "nonResourceURLs")]
    pub non_resource_urls: Option<Vec<String>>,
}

/// `namespaceSelector:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelectorSpec {
    /// Exact label values required.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// `approval:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApprovalSpecRaw {
    /// Groups whose members may approve.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Distinct approvers needed (default 1).
    #[serde(default)]
    pub min_approvals: Option<u32>,
    /// `hold` (default) or `grant`.
    #[serde(default)]
    pub mode: Option<String>,
    /// How long a grant stays usable (`15m`, `1h`; default 15m).
    #[serde(default)]
    pub grant_ttl: Option<String>,
    /// Whether the requester must give a justification.
    #[serde(default)]
    pub justification: bool,
    /// How long a held request waits for a decision (default 5m).
    #[serde(default)]
    pub hold_timeout: Option<String>,
}
